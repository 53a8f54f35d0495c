"""Exploration as a per-agent event stream: the agents path's random stream, without a
loop over rounds or a data-dependent loop over events.

**The definition.** In stage ``s`` agent ``i`` (its global index) has ``tau`` rounds and
explores in each with probability ``p`` (the stage's ``explore_prob``). Its explorations
are geometric skips along its own rounds: for ``j = 0, 1, ...``

* ``bits_ij = crng.random_bits(key_j, i)``, ``key_j = crng.stream_key(seed, s,``
  :data:`STREAM` ``, j)`` (``E + 1`` scalar keys per stage, then one hash per agent);
* ``U_ij = (floor(bits_ij / 2**8) + 1) / 2**24``, in ``(0, 1]``;
* ``G_ij = floor(log(U_ij) / log(1 - p))`` in float32 (``0`` when ``p = 1``: every round;
  never an event when ``p = 0``);
* ``position_ij = sum_{l <= j} (G_il + 1) - 1``; event ``j`` is an exploration in round
  ``position_ij`` when ``position_ij < tau``.

Geometric gaps are those of independent Bernoulli(``p``) rounds, so every (agent, round)
explores independently with probability ``p`` (to the 24-bit resolution of ``U``), as in
MODEL.md section 2. The explored action and the payoff-noise normal of an event derive
from ``bits_ij`` exactly as :mod:`jaxstage.events` derives them from a slot's word
(:func:`event_action`, :func:`event_noise`: its salts and its normal).

**Bounded events, exact results.** A stage's program computes events ``j < E`` only
(``E`` static, :func:`max_events`), and event ``E`` too: an agent whose event ``E`` is
still inside the stage (:func:`Stream.overflow`) needs more than ``E``, which the stage
counts (its record's overflow count). ``E`` is chosen so that this has probability below
:data:`OVERFLOW_PROBABILITY` over the whole run; when it happens anyway the driver runs
again with ``E`` doubled (``simulation.simulate``), up to the longest stage, where no
agent can need more (positions increase by at least one per event). Events past an
agent's last are masked, and every sum over events runs in event order adding zeros for
masked ones, so the numbers do not depend on ``E``: a run is bitwise what an unbounded
``E`` gives.

**Integer bounds.** ``G`` is capped at ``cap`` (the padded longest stage,
``spec.max_stage_length <= 2**30``) before conversion, and positions saturate at
``cap`` (``>= tau``, so saturation never turns an event valid): every int32 value stays at
most ``cap + 1 <= 2**30 + 1``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstage import counter_rng as crng
from jaxstage import events as ev

__all__ = [
    "STREAM",
    "OVERFLOW_PROBABILITY",
    "MAX_CAP",
    "max_events",
    "binomial_tail_bound",
    "event_keys",
    "skips",
    "event_action",
    "event_noise",
    "Stream",
    "stream",
]

#: The stream identifier of the agents path's exploration (the fast kernel's streams,
#: ``fast_blocks.*_STREAM``, are 0 to 7): ``crng.stream_key(seed, stage, STREAM, j)``
#: is event ``j``'s key.
STREAM = 8
#: Probability, over a whole run, that some agent of some stage needs more than ``E``
#: events (then the run is repeated with a larger ``E``: the results are exact anyway).
OVERFLOW_PROBABILITY = 1e-9
#: Largest saturation point of the positions (int32: every value stays below ``2**31``).
MAX_CAP = 2**30

_INV_2_24 = 1.0 / 2**24


def binomial_tail_bound(trials: int, prob: float, events: int) -> float:
    """An upper bound on ``P(Binomial(trials, prob) > events)``, in float64.

    For ``x >= events + 1`` beyond the mode, consecutive terms shrink at least by the
    ratio ``r = (trials - events - 1) / (events + 2) * prob / (1 - prob)`` (the ratio of
    terms ``x + 1`` to ``x`` decreases in ``x``), so the tail is at most its first term
    over ``1 - r``. Returns 1.0 where that does not apply (``r >= 1``).
    """
    if events >= trials or prob <= 0.0:
        return 0.0
    if prob >= 1.0:
        return 1.0
    x = events + 1
    log_term = (
        math.lgamma(trials + 1)
        - math.lgamma(x + 1)
        - math.lgamma(trials - x + 1)
        + x * math.log(prob)
        + (trials - x) * math.log1p(-prob)
    )
    ratio = (trials - x) / (x + 1) * prob / (1.0 - prob)
    if ratio >= 1.0:
        return 1.0
    return min(1.0, math.exp(log_term) / (1.0 - ratio))


def max_events(
    agent_stages: int, longest: int, prob: float, target: float = OVERFLOW_PROBABILITY
) -> int:
    """``E``: the fewest events per agent and stage such that ``agent_stages`` agents (all
    padded agents times stages times sweep rows) of stages of at most ``longest`` rounds,
    exploring with probability at most ``prob``, need more than ``E`` with probability
    below ``target`` (union bound over agent-stages; a binomial tail is increasing in
    both ``longest`` and ``prob``). Rounded up to an eighth of an octave, so that nearby
    rates share a compiled program; at least 1 and at most ``longest`` (which no agent can
    exceed: then it is exact by construction).

    Example: ``max_events(10**9 * 1000, 50, 0.05) == 20`` (2.5 expected events).
    """
    if longest < 1:
        raise ValueError(f"longest must be at least 1, got {longest}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    agent_stages = max(1, int(agent_stages))
    events = max(0, math.floor(longest * prob))
    while events < longest and agent_stages * binomial_tail_bound(longest, prob, events) >= target:
        events += 1
    events = max(1, events)
    step = 2 ** max(0, math.floor(math.log2(events)) - 3)
    return int(min(longest, math.ceil(events / step) * step))


def event_keys(seed: jax.Array, stage: jax.Array, count: int) -> jax.Array:
    """``(count, 2)`` uint32 stream keys of events ``0 .. count - 1`` of a stage."""
    return jax.vmap(lambda j: crng.stream_key(seed, stage, STREAM, j))(
        jnp.arange(count, dtype=jnp.uint32)
    )


def skips(bits: jax.Array, explore_prob: jax.Array, cap: int) -> jax.Array:
    """int32 ``min(G, cap)`` of the definition: rounds skipped before the event."""
    return _skips(bits, *_skip_constants(explore_prob, cap), cap)


def _skip_constants(explore_prob: jax.Array, cap: int) -> tuple[jax.Array, jax.Array]:
    """The per-stage scalars of :func:`skips`: the log-rate divisor and the least gap
    (``cap`` when ``p = 0``: past every stage, else 0). Computed once per stage, outside
    the loops over events: recomputed inside, XLA's H200 compile of 5 * 10^8-agent blocks
    gave each its own scalar kernel in every iteration of both passes (2 of 7 kernels an
    event), where at 2^20 agents it fused them."""
    explore_prob = jnp.asarray(explore_prob, jnp.float32)
    log_stay = jnp.log1p(-explore_prob)  # -inf when p = 1: log(U) / -inf is -0, skip 0
    least = jnp.where(explore_prob > 0, 0.0, float(cap)).astype(jnp.float32)
    return jnp.minimum(log_stay, -1e-30), least


def _skips(bits: jax.Array, divisor: jax.Array, least: jax.Array, cap: int) -> jax.Array:
    uniform = ((bits >> 8).astype(jnp.float32) + 1.0) * _INV_2_24  # (0, 1], exact
    gap = jnp.floor(jnp.log(uniform) / divisor)  # >= 0 (or -0)
    # p = 0: ``least`` is cap (a U of exactly 1 would give gap 0); else max(gap, 0) is gap
    # as an integer (-0 and 0 both convert to 0).
    return jnp.minimum(jnp.maximum(gap, least), cap).astype(jnp.int32)


def event_action(bits: jax.Array, num_actions: int) -> jax.Array:
    """int32 action an event draws (uniform over all ``k``), as ``events.decode`` does."""
    return ev.action_of_word(bits, num_actions)


def event_noise(bits: jax.Array) -> jax.Array:
    """The event's standard normal (its payoff noise), as ``events.Events.noise``."""
    return ev.noise_of_word(bits)


class Stream(NamedTuple):
    """A stage's events for some agents: the keys and what each event needs."""

    keys: jax.Array  # (E + 1, 2) uint32 event keys (the last one checks for overflow)
    index: jax.Array  # (n,) uint32 global agent indices
    explore_prob: jax.Array  # () float32
    divisor: jax.Array  # () float32, :func:`_skip_constants`
    least: jax.Array  # () float32, :func:`_skip_constants`
    stage_length: jax.Array  # () int32 tau (traced)
    cap: int  # saturation point of positions, >= every stage length

    @property
    def num_events(self) -> int:
        """``E``."""
        return self.keys.shape[0] - 1

    def bits(self, j: int | jax.Array) -> jax.Array:
        """``(n,)`` uint32 words of event ``j``."""
        return crng.random_bits(self.keys[j], self.index)

    def advance(self, position: jax.Array, j: int | jax.Array) -> tuple[jax.Array, jax.Array]:
        """Event ``j``'s ``(bits, position)`` from event ``j - 1``'s position (``-1``
        before the first), saturating at ``cap``."""
        bits = self.bits(j)
        step = _skips(bits, self.divisor, self.least, self.cap) + 1  # at most cap + 1
        remaining = self.cap - position  # at most cap + 1
        return bits, jnp.where(step >= remaining, self.cap, position + step)

    def inside(self, position: jax.Array) -> jax.Array:
        """Whether an event at ``position`` is an exploration of this stage."""
        return position < self.stage_length

    def overflow(self, last_position: jax.Array) -> jax.Array:
        """Whether each agent needs more than ``E`` events, from event ``E - 1``'s
        position (event ``E`` still inside the stage)."""
        return self.inside(self.advance(last_position, self.num_events)[1])

    def start(self) -> jax.Array:
        """The position before the first event."""
        return jnp.full(self.index.shape, -1, jnp.int32)


def stream(
    seed: jax.Array,
    stage: jax.Array,
    index: jax.Array,
    explore_prob: jax.Array,
    stage_length: jax.Array,
    num_events: int,
    cap: int,
) -> Stream:
    """The stream of ``num_events`` events (plus the overflow check) of agents ``index``."""
    if not 1 <= cap <= MAX_CAP:
        raise ValueError(f"cap must be in [1, {MAX_CAP}], got {cap}")
    if not 1 <= num_events <= cap:
        raise ValueError(f"num_events must be in [1, cap={cap}], got {num_events}")
    explore_prob = jnp.asarray(explore_prob, jnp.float32)
    divisor, least = _skip_constants(explore_prob, cap)
    return Stream(
        keys=event_keys(seed, stage, num_events + 1),
        index=jnp.asarray(index, jnp.uint32),
        explore_prob=explore_prob,
        divisor=divisor,
        least=least,
        stage_length=jnp.asarray(stage_length, jnp.int32),
        cap=cap,
    )
