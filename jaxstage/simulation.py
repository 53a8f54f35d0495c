"""Stage learning on a population held as arrays: round step, stage end, run and sweep.

The kernels are written to read like MODEL.md sections 2 and 3; they are the reference
implementation (and the oracle of any faster path). Three kinds of input are kept apart:

* a static :class:`RunSpec` that fixes shapes and code paths (population, actions, types,
  information mode, sample size, number of stages): changing it recompiles;
* traced :class:`RunParams` (game coefficients, per-stage exploration and stage lengths,
  inertia, information noise, eps): changing them does not recompile, and sweeps batch
  over them (``vmap`` in the reference kernel, rows in turn with ``lax.map`` in the fast
  one);
* the random key. Randomness is keyed by (seed, stage, round): the key of round ``r`` of
  stage ``s`` is ``fold_in(fold_in(fold_in(stages_key, s), 0), r)``, so a run's numbers
  do not depend on how stages are chunked for progress reporting.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxstage import agent_events, agent_stage, events, fast
from jaxstage._validation import check_int, check_probability, check_real
from jaxstage.decisions import (
    StageRecord,
    choose_candidates,
    clip_and_renormalise,
    mean_or_unavailable,
)
from jaxstage.finiteness import PUBLISHED, check_metrics, check_stages, with_published_check
from jaxstage.games import AnonymousGame, Params, check_num_actions, type_counts
from jaxstage.learner import StageLearning
from jaxstage.metrics import (
    VECTORISED_DEVIATIONS_UP_TO,
    convergence_stage,
    count_metrics,
    deviation_payoffs,
    distance_to_equilibria,
)
from jaxstage.spec import RunSpec, needs_own_estimates
from jaxstage.wide import Wide, wide_add, wide_from_counts, wide_sum, wide_to_float, wide_zeros

__all__ = [
    "RunSpec",
    "RunParams",
    "StageRecord",
    "SimulationResult",
    "SweepResult",
    "simulate",
    "sweep",
    "estimate_memory_bytes",
    "choose_candidates",
    "play_round",
]

MAX_AGENTS = 2**31 - 1
#: The fast kernel pads the population to whole blocks per device; the padded agents'
#: int32 indices reach ``MAX_PADDED_AGENTS - 1``, so every population up to
#: :data:`MAX_AGENTS` fits with power-of-two blocks.
MAX_PADDED_AGENTS = 2**31
ACTION_DTYPE = jnp.int32


class RunParams(NamedTuple):
    """Traced parameters of one run (a sweep stacks them along a leading axis)."""

    game: Params  # dict of float32 arrays, the game's coefficients
    explore_prob: jax.Array  # (num_padded_stages,) float32
    stage_length: jax.Array  # (num_padded_stages,) int32
    update_prob: jax.Array  # () float32
    info_noise_std: jax.Array  # () float32
    eps: jax.Array  # () float32


class RoundTotals(NamedTuple):
    """What one stage's rounds accumulate."""

    own_sums: jax.Array | None  # (k, n) float32 payoff sums per action and agent
    own_counts: jax.Array | None  # (k, n) int32 observations per action and agent
    action_sums: jax.Array  # (k,) float32 payoff sum over all agent-rounds per action
    action_counts: Wide  # (k,) agent-rounds per action, exact past 2**31 (jaxstage.wide)
    last_counts: jax.Array  # (k,) int32 counts of played actions in the latest round
    nonfinite: jax.Array  # () int32, jaxstage.finiteness: 0 or 1 + the first bad round
    nonfinite_counts: jax.Array  # (k,) float32 that round's counts


def play_round(
    game: AnonymousGame,
    game_params: Params,
    key: jax.Array,
    stage_actions: jax.Array,
    agent_types: jax.Array,
    explore_prob: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One round: exploration, counts of played actions, realised payoffs.

    Returns:
        ``(played, counts, payoffs)``: ``(n,)`` int actions played, ``(k,)`` int32 counts,
        ``(n,)`` float32 realised payoffs drawn given those counts.
    """
    n = stage_actions.shape[0]
    k = game.num_actions
    explore_key, action_key, noise_key = jax.random.split(key, 3)
    explore = jax.random.uniform(explore_key, (n,)) < explore_prob
    random_actions = jax.random.randint(action_key, (n,), 0, k, dtype=stage_actions.dtype)
    played = jnp.where(explore, random_actions, stage_actions)
    counts = jnp.bincount(played, length=k).astype(jnp.int32)
    expected = game.expected_payoffs(game_params, counts.astype(jnp.float32) / n)
    payoffs = game.realized_payoffs(game_params, noise_key, expected, agent_types, played)
    return played, counts, payoffs.astype(jnp.float32)


def _counts_by_type(spec: RunSpec, actions: jax.Array, types: jax.Array | None) -> jax.Array:
    k = spec.num_actions
    if types is None:
        return jnp.bincount(actions, length=k).astype(jnp.int32)[None, :]
    flat = types * k + actions.astype(jnp.int32)
    return jnp.bincount(flat, length=spec.num_types * k).astype(jnp.int32).reshape(-1, k)


def _payoff_sums(played: jax.Array, payoffs: jax.Array, k: int) -> jax.Array:
    """``(k,)`` sums of the round's payoffs by played action. On a CPU a weighted
    ``bincount`` (a scatter-add, run in index order there); elsewhere a masked reduction,
    since a GPU runs float scatter-adds as atomics whose order, and so whose rounding,
    changes from run to run (``events.on_cpu_or_elsewhere``)."""

    def by_scatter(played, payoffs):
        return jnp.bincount(played, payoffs, length=k)

    def by_reduction(played, payoffs):
        mine = played[None, :] == jnp.arange(k, dtype=played.dtype)[:, None]
        return jnp.sum(jnp.where(mine, payoffs[None, :], 0.0), axis=1)

    return events.on_cpu_or_elsewhere(played, payoffs, cpu=by_scatter, elsewhere=by_reduction)


def _play_stage_rounds(game, spec, params, rounds_key, actions, agent_types, stage):
    n, k = spec.num_agents, spec.num_actions
    own = spec.needs_own_estimates
    explore_prob = params.explore_prob[stage]
    action_index = jnp.arange(k, dtype=actions.dtype)[:, None]

    def one_round(r, totals: RoundTotals) -> RoundTotals:
        key = jax.random.fold_in(rounds_key, r)
        played, counts, payoffs = play_round(
            game, params.game, key, actions, agent_types, explore_prob
        )
        # Recomputed from the k counts (XLA shares it with play_round's).
        expected = game.expected_payoffs(params.game, counts.astype(jnp.float32) / n)
        first_bad = (totals.nonfinite == 0) & ~jnp.all(jnp.isfinite(expected))
        own_sums, own_counts = totals.own_sums, totals.own_counts
        if own:
            onehot = played[None, :] == action_index  # (k, n)
            own_sums = own_sums + jnp.where(onehot, payoffs[None, :], 0.0)
            own_counts = own_counts + onehot.astype(jnp.int32)
        return RoundTotals(
            own_sums=own_sums,
            own_counts=own_counts,
            action_sums=totals.action_sums + _payoff_sums(played, payoffs, k),
            action_counts=wide_add(totals.action_counts, wide_from_counts(counts)),
            last_counts=counts,
            nonfinite=jnp.where(first_bad, r + 1, totals.nonfinite),
            nonfinite_counts=jnp.where(
                first_bad, counts.astype(jnp.float32), totals.nonfinite_counts
            ),
        )

    start = RoundTotals(
        own_sums=jnp.zeros((k, n), jnp.float32) if own else None,
        own_counts=jnp.zeros((k, n), jnp.int32) if own else None,
        action_sums=jnp.zeros(k, jnp.float32),
        action_counts=wide_zeros(k),
        last_counts=jnp.zeros(k, jnp.int32),
        nonfinite=jnp.int32(0),
        nonfinite_counts=jnp.zeros(k, jnp.float32),
    )
    return jax.lax.fori_loop(0, params.stage_length[stage], one_round, start)


def _published_distribution(spec, params, key, actions):
    """Counts ``n * d_hat`` the system publishes (exact ints when exact)."""
    n, k = spec.num_agents, spec.num_actions
    sample_key, noise_key = jax.random.split(key)
    if spec.info_sample_size is None and not spec.info_noisy:
        return jnp.bincount(actions, length=k).astype(jnp.int32)
    if spec.info_sample_size is None:
        d_hat = jnp.bincount(actions, length=k).astype(jnp.float32) / n
    else:
        sampled = jax.random.randint(sample_key, (spec.info_sample_size,), 0, n)
        d_hat = jnp.bincount(actions[sampled], length=k).astype(jnp.float32)
        d_hat = d_hat / spec.info_sample_size
    if spec.info_noisy:
        noise = jax.random.normal(noise_key, (k,))
        d_hat = clip_and_renormalise(d_hat + params.info_noise_std * noise)
    return d_hat * n


def _stage_end_estimates(game, spec, params, key, actions, agent_types, totals: RoundTotals):
    """``(k, n)`` per-agent payoff estimates for the stage-end argmax (MODEL.md 2-3), and
    with ``info="distribution"`` the published counts and the ``(T, k, k)`` payoffs at
    them (``None`` otherwise)."""
    n = spec.num_agents
    if spec.info != "distribution":
        return _estimates_from_payoffs(spec, key, totals), None, None
    # Best reply to the published counts with the payoff model.
    published = _published_distribution(spec, params, key, actions)
    dev = deviation_payoffs(game, params.game, published, n)  # (T, k, k)
    by_alternative = jnp.transpose(dev, (2, 0, 1))  # (k, T, k): [b, type, current]
    return by_alternative[:, agent_types, actions.astype(jnp.int32)], published, dev


def _estimates_from_payoffs(spec, key, totals: RoundTotals):
    """``(k, n)`` estimates from observed payoffs: one's own, the population's or a
    sample's (``info`` ``"none"`` or ``"payoffs"``)."""
    n, k = spec.num_agents, spec.num_actions
    if spec.info == "none":
        return mean_or_unavailable(totals.own_sums, totals.own_counts)
    if spec.info == "payoffs":
        if spec.info_sample_size is None:
            published = mean_or_unavailable(totals.action_sums, wide_to_float(totals.action_counts))
            return jnp.broadcast_to(published[:, None], (k, n))
        sampled = jax.random.randint(key, (spec.info_sample_size,), 0, n)
        sample_sums = jnp.sum(totals.own_sums[:, sampled], axis=1, keepdims=True)
        sample_counts = jnp.sum(totals.own_counts[:, sampled], axis=1, keepdims=True)
    return mean_or_unavailable(totals.own_sums + sample_sums, totals.own_counts + sample_counts)


def run_stage(
    game: AnonymousGame,
    spec: RunSpec,
    params: RunParams,
    actions: jax.Array,
    types: jax.Array | None,
    stages_key: jax.Array,
    stage: jax.Array,
) -> tuple[jax.Array, StageRecord]:
    """One stage: ``stage_length[stage]`` rounds, then the stage-end update and metrics."""
    stage_key = jax.random.fold_in(stages_key, stage)
    rounds_key, end_key = jax.random.fold_in(stage_key, 0), jax.random.fold_in(stage_key, 1)
    agent_types = jnp.int32(0) if types is None else types
    totals = _play_stage_rounds(game, spec, params, rounds_key, actions, agent_types, stage)

    info_key, tie_key, update_key = jax.random.split(end_key, 3)
    estimates, published, dev = _stage_end_estimates(
        game, spec, params, info_key, actions, agent_types, totals
    )
    nonfinite, nonfinite_at = totals.nonfinite, totals.nonfinite_counts
    if dev is not None:
        nonfinite = with_published_check(nonfinite, dev)
        nonfinite_at = jnp.where(nonfinite == PUBLISHED, published, nonfinite_at)
    candidates = choose_candidates(jax.random.uniform(tie_key, actions.shape), estimates, actions)
    adopt = jax.random.uniform(update_key, actions.shape) < params.update_prob
    new_actions = jnp.where(adopt, candidates, actions)

    metrics = count_metrics(
        game, params.game, _counts_by_type(spec, new_actions, types), params.eps
    )
    record = StageRecord(
        metrics=metrics,
        played_counts=totals.last_counts,
        switched_fraction=jnp.mean((new_actions != actions).astype(jnp.float32)),
        realized_mean_payoff=jnp.sum(totals.action_sums)
        / jnp.maximum(wide_to_float(wide_sum(totals.action_counts, 0)), 1.0),
        nonfinite=nonfinite,
        nonfinite_counts=nonfinite_at.astype(jnp.float32),
    )
    return new_actions, record


def _scan_stages(spec, stage_fn, actions, first_stage):
    """``spec.chunk_stages`` stages in a ``lax.scan``; stages past the end are skipped."""

    def one_stage(current, offset):
        stage = first_stage + offset

        def active(a):
            return stage_fn(a, stage)

        def idle(a):
            shapes = jax.eval_shape(active, a)[1]
            return a, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        if spec.num_stages % spec.chunk_stages == 0 or spec.exploration_path == "agents":
            # No chunk runs past the end (on the agents path the driver gives the last
            # chunk its own length, ``_chunk_spec``: a GPU would copy the conditional's
            # predicate to the host every stage): without a conditional, XLA writes the stage's
            # new actions straight into the carry (through one, it kept an extra copy of
            # the population's actions: 1 byte per agent more at peak).
            return active(current)
        return jax.lax.cond(stage < spec.num_stages, active, idle, current)

    return jax.lax.scan(one_stage, actions, jnp.arange(spec.chunk_stages))


def _run_chunk(game, spec, params, actions, types, stages_key, first_stage):
    def stage_fn(a, stage):
        return run_stage(game, spec, params, a, types, stages_key, stage)

    return _scan_stages(spec, stage_fn, actions, first_stage)


def _initial_actions(spec: RunSpec, kind: str, payload: jax.Array, key: jax.Array):
    n, k = spec.num_agents, spec.num_actions
    if kind == "uniform":
        return jax.random.randint(key, (n,), 0, k, dtype=ACTION_DTYPE)
    if kind == "action":
        return jnp.full((n,), payload, dtype=ACTION_DTYPE)
    if kind == "distribution":
        logits = jnp.where(payload > 0, jnp.log(jnp.maximum(payload, 1e-30)), -jnp.inf)
        return jax.random.categorical(key, logits, shape=(n,)).astype(ACTION_DTYPE)
    return payload.astype(ACTION_DTYPE)


def _initial_state(game, spec, params, kind, payload, types, seed_key):
    init_key, stages_key = jax.random.split(seed_key)
    actions = _initial_actions(spec, kind, payload, init_key)
    metrics = count_metrics(game, params.game, _counts_by_type(spec, actions, types), params.eps)
    return actions, stages_key, metrics


def _fast_run_chunk(game, spec, params, actions, types, seed, first_stage):
    if spec.exploration_path == "agents":
        return _agents_run_chunk(game, spec, params, actions, seed, first_stage)

    def on_shard(params, actions, seed, first_stage):
        def stage_fn(carry, stage):
            actions, kept = carry
            actions, kept, counts, record = fast.fast_stage(
                game, spec, params, actions, seed, stage, kept
            )
            return (actions, kept), (counts, record)

        # The kept-events buffer (each shard's own) is carried through the chunk's stages
        # and reused in place.
        start = (actions, fast.kept_events_buffer(spec))
        (actions, _), records = _scan_stages(spec, stage_fn, start, first_stage)
        return actions, records

    agents, replicated = P(fast.AGENT_AXIS), P()
    run = fast.on_shards(
        spec, on_shard, (replicated, agents, replicated, replicated), (agents, replicated)
    )
    # The metrics are computed from these counts by ``_with_metrics``, outside this
    # (possibly sharded) program, so that even their rounding does not depend on it.
    actions, (counts, records) = run(params, actions, seed, first_stage)
    return actions, records._replace(metrics=counts)


def _agents_run_chunk(game, spec, params, actions, seed, first_stage):
    """:func:`_fast_run_chunk` on the agents path; ``records.metrics`` holds ``(counts,
    overflow)``, the second the agents of each stage that needed more than
    ``spec.agent_events`` events (split off by :func:`_with_overflow_check`)."""

    def on_shard(params, actions, seed, first_stage):
        def stage_fn(actions, stage):
            actions, counts, record, overflow = agent_stage.agent_stage(
                game, spec, params, actions, seed, stage
            )
            return actions, (counts, overflow, record)

        return _scan_stages(spec, stage_fn, actions, first_stage)

    agents, replicated = P(fast.AGENT_AXIS), P()
    run = fast.on_shards(
        spec, on_shard, (replicated, agents, replicated, replicated), (agents, replicated)
    )
    actions, (counts, overflow, records) = run(params, actions, seed, first_stage)
    return actions, records._replace(metrics=(counts, overflow))


def _fast_initial_state(game, spec, params, kind, payload, types, seed):
    def on_shard(payload):
        actions = fast.fast_initial(spec, kind, payload, seed)
        if spec.exploration_path == "agents":  # no contended scatter on a GPU
            return actions, agent_stage.agent_counts_by_type(spec, actions)
        return actions, fast.fast_counts_by_type(spec, actions)

    agents, replicated = P(fast.AGENT_AXIS), P()
    if kind == "actions":  # one action per agent: padded, then split like the population
        payload = jnp.pad(payload, (0, spec.padded_agents - spec.num_agents))
    payload_spec = agents if kind == "actions" else replicated
    initial = fast.on_shards(spec, on_shard, (payload_spec,), (agents, replicated))
    actions, counts = initial(payload)
    return actions, seed, counts  # metrics by ``_with_metrics``


def _stage_metrics(game, params, counts):
    """``count_metrics`` of ``(stages, T, k)`` counts."""
    return jax.vmap(lambda c: count_metrics(game, params.game, c, params.eps))(counts)


_jit_stage_metrics = jax.jit(_stage_metrics, static_argnums=0)
_jit_stage_metrics_batched = jax.jit(
    jax.vmap(_stage_metrics, in_axes=(None, 0, 0)), static_argnums=0
)


def _with_metrics(game, params, initial_fn, chunk_fn, batched):
    """The fast kernel's ``initial_fn`` and ``chunk_fn`` with metrics from their counts,
    computed on the host's counts by one single-device program (the same whatever the
    sharding of the kernel's program, where XLA may fuse, and round, them differently)."""
    metrics = _jit_stage_metrics_batched if batched else _jit_stage_metrics

    def initial():
        actions, key, counts = initial_fn()
        counts = jax.device_get(counts)[..., None, :, :]  # one "stage"
        first = (lambda m: m[:, 0]) if batched else (lambda m: m[0])
        return actions, key, jax.tree.map(first, metrics(game, params, counts))

    def chunk(actions, key, first):
        actions, records = chunk_fn(actions, key, first)
        counts = jax.device_get(records.metrics)
        return actions, records._replace(metrics=metrics(game, params, counts))

    return initial, chunk


def _rows_in_turn(fn, in_axes):
    """``jax.vmap(fn, in_axes)`` computed one row after another (``lax.map``).

    The fast kernel's sweeps use it: its blocks, event loops and scatters are sized for
    one population, and vectorising them over rows ran 1.4 to 1.8x slower per agent-round
    (10 rows of 10^5 and 10^6 agents, ``benchmarks/sweep_rows.py``) and multiplied the
    temporaries by the batch. Row ``i`` is then exactly the single run ``i``.
    """

    def batched(*args):
        rows = tuple(arg for arg, axis in zip(args, in_axes, strict=True) if axis == 0)

        def one_row(row):
            values = iter(row)
            pairs = zip(args, in_axes, strict=True)
            return fn(*(next(values) if axis == 0 else arg for arg, axis in pairs))

        return jax.lax.map(one_row, rows)

    return batched


def _compiled(initial_fn, chunk_fn, batch=jax.vmap):
    """Jitted single and batched (``batch`` over params, actions and keys) versions."""
    return (
        jax.jit(initial_fn, static_argnums=(0, 1, 3)),
        # The stage actions passed in are the previous chunk's, never used again: donated,
        # their buffer takes the new ones (one copy of the population less at peak).
        jax.jit(chunk_fn, static_argnums=(0, 1), donate_argnums=(3,)),
        jax.jit(
            batch(initial_fn, in_axes=(None, None, 0, None, None, None, 0)),
            static_argnums=(0, 1, 3),
        ),
        jax.jit(
            batch(chunk_fn, in_axes=(None, None, 0, 0, None, 0, None)),
            static_argnums=(0, 1),
        ),
    )


_jit_initial, _jit_chunk, _jit_initial_batched, _jit_chunk_batched = _compiled(
    _initial_state, _run_chunk
)
_FAST = _compiled(_fast_initial_state, _fast_run_chunk, batch=_rows_in_turn)
_REFERENCE = (_jit_initial, _jit_chunk, _jit_initial_batched, _jit_chunk_batched)
KERNELS = ("auto", "reference", "fast")
#: How the fast kernel draws exploration (see ``simulate``).
FAST_PATHS = ("auto", "events", "rounds", "agents")
#: Platforms on which ``fast_path="auto"`` takes the agents path (designed for GPUs).
AGENTS_PATH_PLATFORMS = ("cuda", "rocm", "gpu")
#: Tests only: force the agents path's events per agent and stage (``E``); the driver
#: still doubles it while some agent needs more, so the numbers are those of any ``E``.
_FORCED_AGENT_EVENTS: int | None = None


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class SimulationResult:
    """Per-stage trajectory of one run; index 0 of state arrays is the initial state.

    Attributes:
        distribution: ``(S+1, k)`` distribution of stage actions at the start and after
            each of the ``S`` stages.
        distribution_by_type: ``(S+1, T, k)`` the same within each type.
        best_reply_fraction: ``(S+1,)`` share of agents at an eps-best reply.
        best_reply_fraction_by_type: ``(S+1, T)``.
        nash_gap: ``(S+1,)`` eps-Nash gap (largest gain of a deviation of any agent).
        expected_payoffs: ``(S+1, T, k)`` ``u(theta, a, d)`` at the stage actions.
        welfare: ``(S+1,)`` mean expected payoff of the agents.
        distance_to_equilibrium: ``(S+1,)`` L1 distance to the nearest reference
            equilibrium, or ``None`` when the game has none and none was given.
        played_distribution: ``(S, k)`` distribution of played actions in each stage's
            last round (explorations included).
        switched_fraction: ``(S,)`` share of agents whose stage action changed.
        realized_mean_payoff: ``(S,)`` mean realised payoff over the stage's agent-rounds.
        explore_prob: ``(S,)`` and stage_length: ``(S,)`` as scheduled.
        rounds: ``(S+1,)`` rounds played before each recorded state.
        in_equilibrium: ``(S+1,)`` whether at least ``1 - delta`` play an eps-best reply.
        convergence_stage: first index from which the run stays in (eps, delta)
            equilibrium (for ``hold_stages`` states, when given), or ``None``.
        convergence_round: ``rounds[convergence_stage]`` or ``None`` (not converged).
        config: the full configuration of the run (game, learner, population, seed...).
        final_actions: ``(n,)`` final stage actions if requested, else ``None``.
    """

    distribution: np.ndarray
    distribution_by_type: np.ndarray
    best_reply_fraction: np.ndarray
    best_reply_fraction_by_type: np.ndarray
    nash_gap: np.ndarray
    expected_payoffs: np.ndarray
    welfare: np.ndarray
    distance_to_equilibrium: np.ndarray | None
    played_distribution: np.ndarray
    switched_fraction: np.ndarray
    realized_mean_payoff: np.ndarray
    explore_prob: np.ndarray
    stage_length: np.ndarray
    rounds: np.ndarray
    in_equilibrium: np.ndarray
    convergence_stage: int | None
    convergence_round: int | None
    config: dict[str, Any]
    final_actions: np.ndarray | None = None

    @property
    def converged(self) -> bool:
        return self.convergence_round is not None

    @property
    def num_stages(self) -> int:
        return len(self.stage_length)

    def to_frame(self) -> Any:
        """The tidy table of ``results.csv`` as a pandas ``DataFrame``, one row per state.

        Same rows and columns as :func:`jaxstage.results.result_rows` (and the CSV written
        by :func:`jaxstage.results.write_results`), with typed columns: see
        :func:`jaxstage.results.rows_to_frame`.

        Returns:
            A ``pandas.DataFrame``.

        Raises:
            ImportError: pandas is not installed (``pip install "jaxstage[frame]"``).
        """
        from jaxstage import results  # results imports this module

        return results.rows_to_frame(results.table_rows(self))

    def summary(self) -> str:
        """A few readable lines: convergence, final distribution, gap."""
        cfg = self.config
        final = np.array2string(self.distribution[-1], precision=4, separator=", ")
        held = (
            f", held for the last {len(self.rounds) - self.convergence_stage} of "
            f"{len(self.rounds)} recorded states"
            if self.converged and cfg.get("hold_stages") is None
            else ""
        )
        lines = [
            f"game {cfg['game']['name']}, {cfg['num_agents']:,} agents, "
            f"info={cfg['learner']['info']}, {self.num_stages} stages "
            f"({int(self.rounds[-1]):,} rounds), seed {cfg['seed']}",
            (
                f"converged at round {self.convergence_round:,} (stage {self.convergence_stage}"
                f"{held})"
                if self.converged
                else f"not converged within {int(self.rounds[-1]):,} rounds"
            )
            + f" for eps={cfg['eps']}, delta={cfg['delta']}",
            f"final distribution {final}",
            f"final share at eps-best reply {self.best_reply_fraction[-1]:.4f}, "
            f"eps-Nash gap {self.nash_gap[-1]:.4g}",
        ]
        if self.distance_to_equilibrium is not None:
            lines.append(
                f"L1 distance to the nearest reference equilibrium "
                f"{self.distance_to_equilibrium[-1]:.4g}"
            )
        return "\n".join(lines)


@dataclasses.dataclass
class SweepResult:
    """A batch of runs made in one compiled call; ``runs[i]`` is row ``i``."""

    runs: list[SimulationResult]

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int) -> SimulationResult:
        return self.runs[index]

    @property
    def convergence_rounds(self) -> list[int | None]:
        return [run.convergence_round for run in self.runs]

    def stack(self, field: str) -> np.ndarray:
        """Stack one array field over the runs: ``(batch, ...)``."""
        return np.stack([getattr(run, field) for run in self.runs])

    def to_frame(self, *, labels: Sequence[str] | None = None) -> Any:
        """The tidy table of ``results.csv`` of all rows as a pandas ``DataFrame``.

        Every run's rows (see :meth:`SimulationResult.to_frame`) led by ``run`` (the row
        index of the sweep) and ``label`` columns, as written by
        :func:`jaxstage.results.write_results`.

        Args:
            labels: one label per run; default :func:`jaxstage.results.run_labels`.

        Returns:
            A ``pandas.DataFrame``.

        Raises:
            ImportError: pandas is not installed (``pip install "jaxstage[frame]"``).
            ValueError: the labels do not match the runs.
        """
        from jaxstage import results  # results imports this module

        return results.rows_to_frame(results.table_rows(self, labels=labels))


# --------------------------------------------------------------------------- memory


def estimate_memory_bytes(
    num_agents: int,
    num_actions: int,
    learner: StageLearning,
    batch: int = 1,
    kernel: str = "reference",
    block_size: int | None = None,
    event_capacity: int | None = None,
    devices: int = 1,
    spec: RunSpec | None = None,
) -> int:
    """Upper estimate of the device memory a run needs (all devices together).

    A ``spec`` of the agents path (``spec.exploration_path == "agents"``) is sized by
    :func:`agents_memory_bytes` (its blocks, tiles and stage length; the other arguments
    but ``learner`` and ``batch`` are then taken from it).

    Reference kernel: the stage actions and their copies, the per-round temporaries
    (random bits, played actions, payoffs) and, when the information mode needs them, the
    per-agent ``(k, n)`` accumulators and stage-end estimates. Fast kernel: int8 stage
    actions (int16 past 128 actions) of every row (held twice while a stage rewrites
    them) plus one row's per-block
    temporaries (a sweep runs its rows one after another), including the
    exploration-event slots of a batch (``event_capacity``: as the run would choose from
    ``learner`` when not given), once per device the population is split over.
    """
    if spec is not None and spec.kernel == "fast" and spec.exploration_path == "agents":
        return agents_memory_bytes(spec, learner, batch)
    if kernel == "fast":
        capacity = _exploration_path([learner], 1) if event_capacity is None else event_capacity
        block = block_size or fast.choose_block_size(num_agents, num_actions, capacity)
        per_block = block * (96 + 48 * num_actions)
        per_block += 64 * fast.event_slots_per_block(block, capacity)
        if learner.info_sample_size is not None:
            per_block += 64 * min(fast.MAX_BLOCK_SLOTS, learner.info_sample_size * capacity)
        action_bytes = fast.action_dtype(num_actions).itemsize
        held = batch * 3 * action_bytes * (num_agents + block)
        return int(held + devices * per_block + _deviation_bytes(num_actions) + 64 * 2**20)
    per_agent = 64 + 16 * num_actions
    if needs_own_estimates(learner.info, learner.info_sample_size):
        per_agent += 24 * num_actions
    return int(batch * num_agents * per_agent + batch * _deviation_bytes(num_actions) + 64 * 2**20)


def agents_memory_bytes(spec: RunSpec, learner: StageLearning, batch: int = 1) -> int:
    """Upper estimate of the device memory of the agents path (all devices together).

    Per device, one block's temporaries at ``agent_stage.AGENT_BYTES`` per agent (the
    fixed part, plus the per-action part when agents estimate from their own
    observations: pass 2's ``(k, B)`` sums and counts; shared estimates have none), the
    sampled agents' own sums at the same rate
    (``info_sample_size``), pass 1's tile-private histograms (int32 departures and
    arrivals by round, type and action: ``4 * 2 * max_stage_length * T * k`` bytes per
    tile of ``spec.tile_size`` agents) and its ``(max_stage_length + 1, T * k)`` counts;
    for all devices, the int8 (int16) stage actions of every row plus the row a stage
    rewrites (a chunk reads one buffer and writes another); nothing is kept between the
    passes. ``AGENT_BYTES`` is an upper bound of XLA's buffer assignment in the H200
    compile (stage length 50, p = 0.05): own estimates, 106 bytes per agent at 2^20
    agents and 123 at 10^9 with k = 8 (192 estimated), 12,337 at k = 1024 (16,448);
    shared estimates about 19 at k = 8 and 25 at k = 1024 (64). tests/test_agents_path.py
    checks it on the CPU.
    """
    k, width = spec.num_actions, spec.num_types * spec.num_actions
    per_agent = agent_stage.AGENT_BYTES[0]
    if spec.needs_own_estimates:
        per_agent += agent_stage.AGENT_BYTES[1] * k
    block = spec.block_size
    tiles = -(-block // max(spec.tile_size, 1))
    rounds = spec.max_stage_length
    per_block = block * per_agent
    per_block += 4 * 2 * rounds * width * tiles + 4 * (rounds + 1) * width
    if learner.info_sample_size is not None:
        per_block += learner.info_sample_size * per_agent
    action_bytes = fast.action_dtype(k).itemsize
    held = (batch + 1) * action_bytes * spec.padded_agents
    shards = spec.num_shards
    return int(held + shards * (per_block + _deviation_bytes(k) + 64 * 2**20))


def _deviation_bytes(num_actions: int) -> int:
    """The metrics' deviation payoffs (``metrics.deviation_payoffs``): ``k^3`` values at
    once up to ``VECTORISED_DEVIATIONS_UP_TO`` actions, ``k^2`` at a time beyond (with
    their distributions and a few temporaries: 16 bytes each)."""
    k = num_actions
    live = k**3 if k <= VECTORISED_DEVIATIONS_UP_TO else k**2
    return 16 * live


def available_memory_bytes() -> int:
    """Memory the default device can still use (GPU: its limit; CPU: MemAvailable)."""
    device = jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def memory_available_bytes(platform: str | None = None) -> int:
    """Memory one device of ``platform`` (default: the default backend) can use: this
    process's device's free memory on its own backend (``available_memory_bytes``: a
    GPU's limit less what is in use, a CPU's MemAvailable), else, for a backend this
    process has no device of (a deviceless compile for an H200), that device's memory
    (``agent_stage.device_memory_bytes``). Never the host's memory for a GPU run."""
    platform = jax.default_backend() if platform is None else platform
    if platform == jax.default_backend():
        return available_memory_bytes()
    return agent_stage.device_memory_bytes(platform, available_memory_bytes())


def _check_memory(num_agents, num_actions, learner, batch, limit, spec, platform=None):
    """Refuses a run estimated to need more memory than ``limit`` (bytes of one device;
    default :func:`memory_available_bytes` of ``platform``, the backend the spec's
    programs run on). Off a CPU each of the ``spec.num_shards`` devices has that memory;
    a CPU's devices share the host's."""
    platform = jax.default_backend() if platform is None else platform
    agents = spec.kernel == "fast" and spec.exploration_path == "agents"
    needed = estimate_memory_bytes(
        num_agents,
        num_actions,
        learner,
        batch,
        spec.kernel,
        spec.block_size,
        spec.event_capacity,
        spec.num_shards,
        spec=spec,
    )
    if spec.replay_events and not agents:  # pass 1's events kept for pass 2 (one row)
        needed += fast.kept_event_bytes(spec)
    per_device = memory_available_bytes(platform) if limit is None else int(limit)
    devices = 1 if platform == "cpu" else spec.num_shards
    available = per_device * devices
    if needed > available:
        path = f"{spec.kernel} kernel"
        if spec.kernel == "fast":
            path = f"fast kernel's {spec.exploration_path} path"
        where = f"{devices} {platform} device(s)" if platform != "cpu" else "the CPU"
        raise ValueError(
            f"num_agents={num_agents:,} (batch {batch}) needs about {needed / 2**30:.2f} GiB "
            f"with {num_actions} actions, info={learner.info!r} and the {path}, "
            f"but only {available / 2**30:.2f} GiB is available on {where}; use fewer "
            f"agents or a smaller batch"
        )


# --------------------------------------------------------------------------- driver


def _parse_initial(initial: Any, num_agents: int, num_actions: int) -> tuple[str, np.ndarray]:
    if isinstance(initial, str):
        if initial != "uniform":
            raise ValueError(
                f"initial must be 'uniform', an action index, a probability vector of "
                f"{num_actions} entries or an integer array of {num_agents} actions; "
                f"got {initial!r}"
            )
        return "uniform", np.zeros((), np.int32)
    if isinstance(initial, (int, np.integer)) and not isinstance(initial, bool):
        action = check_int(initial, "initial action", low=0, high=num_actions - 1)
        return "action", np.asarray(action, np.int32)
    array = np.asarray(initial)
    if array.ndim == 1 and np.issubdtype(array.dtype, np.integer) and array.size == num_agents:
        if array.min() < 0 or array.max() >= num_actions:
            raise ValueError(
                f"initial actions must lie in [0, {num_actions - 1}], got values in "
                f"[{array.min()}, {array.max()}]"
            )
        return "actions", array.astype(np.int32)
    if array.ndim == 1 and array.size == num_actions and np.issubdtype(array.dtype, np.floating):
        probs = array.astype(np.float64)
        if not np.all(np.isfinite(probs)) or np.any(probs < 0) or abs(probs.sum() - 1) > 1e-6:
            raise ValueError(
                f"initial distribution must be non-negative and sum to 1, got {probs.tolist()}"
            )
        return "distribution", (probs / probs.sum()).astype(np.float32)
    raise ValueError(
        f"initial must be 'uniform', an action index in [0, {num_actions - 1}], a float "
        f"probability vector of {num_actions} entries or an integer array of {num_agents} "
        f"actions; got an array of shape {array.shape} and dtype {array.dtype}"
    )


def _check_game_params(
    game: AnonymousGame, overrides: dict | None, row: int | None = None
) -> Params:
    """The game's parameters with ``overrides`` merged in, checked as the game's own
    constructor checks them (``game.check_params``); ``row`` names a sweep's row."""
    defaults = game.default_params()
    if overrides is None:
        return defaults
    where = "" if row is None else f" (sweep row {row})"
    if not isinstance(overrides, dict):
        raise TypeError(
            f"game_params{where} must be a dict of parameter values, got {type(overrides).__name__}"
        )
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for game {game.name!r}{where}; valid: "
            f"{sorted(defaults)}"
        )
    merged = {name: np.asarray(value, np.float32) for name, value in defaults.items()}
    for name, value in overrides.items():
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"game parameter {name!r}{where} must be numeric, got {value!r}"
            ) from error
        if array.shape != defaults[name].shape:
            raise ValueError(
                f"game parameter {name!r}{where} must have shape {defaults[name].shape}, got "
                f"{array.shape}"
            )
        merged[name] = array
    try:
        game.check_params(merged)
    except ValueError as error:
        raise ValueError(f"{error}{where}") from None
    return {name: jnp.asarray(value) for name, value in merged.items()}


def _chunk_stages(num_stages: int) -> int:
    # About 20 progress updates per run; chunks keep one compiled program per run length.
    return max(1, math.ceil(num_stages / 20))


def _padded(values: np.ndarray, length: int) -> np.ndarray:
    return np.concatenate([values, np.repeat(values[-1:], length - len(values))])


def _validate_common(game, learner, num_agents, num_stages, eps, delta, hold_stages):
    if not isinstance(game, AnonymousGame):
        raise TypeError(
            f"game must be an AnonymousGame (see jaxstage.make_game), got {type(game).__name__}"
        )
    if not isinstance(learner, StageLearning):
        raise TypeError(f"learner must be a jaxstage.StageLearning, got {type(learner).__name__}")
    check_num_actions(game.num_actions, f"num_actions of game {game.name!r}")
    num_agents = check_int(num_agents, "num_agents", low=1, high=MAX_AGENTS)
    num_stages = check_int(num_stages, "num_stages", low=1)
    _check_sample_counts(learner, num_stages)
    eps = check_real(eps, "eps", low=0.0)
    delta = check_probability(delta, "delta")
    if hold_stages is not None:
        hold_stages = check_int(hold_stages, "hold_stages", low=1, high=num_stages + 1)
    return num_agents, num_stages, eps, delta, hold_stages


def _check_sample_counts(learner: StageLearning, num_stages: int) -> None:
    """With sampled payoffs, an agent pools the sample's observations of a stage with its
    own, at most ``(info_sample_size + 1) * stage_length``, in int32 counts: refuse runs
    where they could overflow (rather than let them wrap)."""
    m = learner.info_sample_size
    if m is None or learner.info != "payoffs":
        return
    longest = int(learner.stage_lengths(num_stages).max())
    pooled = (m + 1) * longest
    if pooled > np.iinfo(np.int32).max:
        raise ValueError(
            f"info_sample_size={m:,} with stage_length up to {longest:,} gives up to "
            f"{pooled:,} pooled observations per agent and stage, above the exact int32 "
            f"limit {np.iinfo(np.int32).max:,}; use a smaller sample or shorter stages"
        )


def _spec(game, learner, num_agents, num_stages) -> RunSpec:
    return RunSpec(
        num_agents=num_agents,
        num_actions=game.num_actions,
        type_counts=tuple(int(c) for c in type_counts(game.type_shares, num_agents)),
        info=learner.info,
        info_sample_size=learner.info_sample_size,
        info_noisy=learner.info_noise_std > 0,
        num_stages=num_stages,
        chunk_stages=_chunk_stages(num_stages),
    )


def _resolve_kernel(kernel: str, game: AnonymousGame, fast_path: str = "auto") -> str:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid kernels: {', '.join(KERNELS)}")
    if fast_path not in FAST_PATHS:
        raise ValueError(f"unknown fast_path {fast_path!r}; valid paths: {', '.join(FAST_PATHS)}")
    if fast_path != "auto" and (kernel == "reference" or not fast.supports_fast(game)):
        raise ValueError(
            f"fast_path={fast_path!r} applies to the fast kernel only, and game {game.name!r} "
            f"with kernel={kernel!r} runs the reference kernel; leave fast_path='auto'"
        )
    if kernel == "auto":
        return "fast" if fast.supports_fast(game) else "reference"
    if kernel == "fast" and not fast.supports_fast(game):
        raise ValueError(
            f"kernel='fast' needs the default Gaussian noise model, but game {game.name!r} "
            f"defines its own realized_payoffs; use kernel='reference' (or 'auto')"
        )
    return kernel


def _exploration_extremes(
    learners: Sequence[StageLearning], num_stages: int
) -> tuple[float, float, float]:
    """The largest exploration probability, expected explorations per agent and stage
    length of any stage of any row."""
    most_likely, most_events, longest = 0.0, 0.0, 0.0
    for row in learners:
        probs = np.asarray(row.explore_probs(num_stages), np.float64)
        lengths = np.asarray(row.stage_lengths(num_stages), np.float64)
        most_likely = max(most_likely, float(probs.max()))
        most_events = max(most_events, float((probs * lengths).max()))
        longest = max(longest, float(lengths.max()))
    return most_likely, most_events, longest


def _exploration_path(
    learners: Sequence[StageLearning], num_stages: int, fast_path: str = "auto"
) -> int:
    """The fast kernel's ``event_capacity``: 0 to loop over rounds, else the event slots per
    chunk and batch, sized for the stage with the most expected explorations per agent.

    ``"events"`` needs every stage to explore with probability at most
    ``events.MAX_EVENT_EXPLORE_PROB`` and to be at most ``events.MAX_GRID /
    events.EVENT_CHUNK`` rounds long; ``"auto"`` takes it then and only when
    :func:`_events_cheaper` says so.
    """
    most_likely, most_events, longest = _exploration_extremes(learners, num_stages)
    too_long = longest * events.EVENT_CHUNK > events.MAX_GRID
    possible = most_likely <= events.MAX_EVENT_EXPLORE_PROB and not too_long
    if fast_path == "events" and not possible:
        raise ValueError(
            f"fast_path='events' needs explore_prob <= {events.MAX_EVENT_EXPLORE_PROB} and "
            f"stage_length <= {events.MAX_GRID // events.EVENT_CHUNK:,} in every stage; got "
            f"explore_prob up to {most_likely:g} and stage_length up to {longest:,.0f}"
        )
    if fast_path == "rounds" or not possible:
        return 0
    if fast_path == "auto" and not _events_cheaper(learners, num_stages):
        return 0
    return events.event_capacity(most_events)


#: Shortest mean stage length from which ``fast_path="auto"`` draws exploration as events,
#: by whether agents keep their own payoff estimates. Read off ``benchmarks/throughput.py
#: --preset paths`` (2**20 agents, exploration 0.05, 2-core CPU; README, "Exploration
#: paths and stage lengths"; stage lengths 1, 4, 16, 64): with own estimates events won at
#: every measured stage length and number of actions (at 2 and 3 actions, stage lengths 1
#: and 4, by 45 to 95% in a second run; the previous release's kernel lost there, and
#: took events from 8 with 2 or 3 actions); without own estimates events won from stage
#: length 4 on, and the rounds loop at 1 (by 5 to 48% in this release's run).
EVENTS_FROM_STAGE_LENGTH = {"own": 1, "shared": 4}


def _events_cheaper(learners: Sequence[StageLearning], num_stages: int) -> bool:
    """Whether drawing exploration as events is expected to cost less than looping over
    rounds (:data:`EVENTS_FROM_STAGE_LENGTH`); the mean stage length over all stages and
    rows decides, as the cost of both paths is roughly linear in it."""
    own = needs_own_estimates(learners[0].info, learners[0].info_sample_size)
    regime = "own" if own else "shared"
    mean_length = float(np.mean([row.stage_lengths(num_stages).mean() for row in learners]))
    return mean_length >= EVENTS_FROM_STAGE_LENGTH[regime]


#: Largest ``update_prob`` (over a sweep's rows) for which pass 2 of the events path
#: decides for the adopting agents only (``fast.adopter_capacity``); above it, gathering
#: them costs more than it saves. Either way the numbers are the same.
#: ``benchmarks/adopter_filter.py --update-probs 0.1 0.2 0.3`` (2^20 agents, k = 8, stage
#: length 50; medians of 3, filter on against off, 2-core CPU), two runs: +9% and +13% at
#: 0.1, +21% and +3% at 0.2, -11% and +11% at 0.3 (within the machine's noise).
MAX_FILTERED_UPDATE_PROB = 0.2

#: Most memory the fast kernel spends keeping pass 1's exploration events for pass 2
#: (and never more than a quarter of the memory available).
REPLAY_BUDGET_BYTES = 2**29


def _kernel_spec(
    kernel,
    game,
    learner,
    num_agents,
    num_stages,
    max_stage_length,
    block_size,
    learners=None,
    fast_path="auto",
    devices=None,
    platform=None,
    memory_bytes=None,
):
    """The run's :class:`RunSpec`; ``platform`` is the backend the run's programs are
    compiled for (``None``: ``jax.default_backend()``), which picks the fast kernel's
    design (a deviceless compile for a GPU passes ``"cuda"``): ``fast_path="auto"`` takes
    the agents path on :data:`AGENTS_PATH_PLATFORMS`. ``memory_bytes`` is one device's
    memory, which sizes the agents path's blocks (``None``: the device's ``bytes_limit``
    or ``agent_stage.DEFAULT_DEVICE_MEMORY`` for the platform; a CPU's available
    memory)."""
    platform = jax.default_backend() if platform is None else platform
    spec = _spec(game, learner, num_agents, num_stages)
    if kernel == "reference":
        if devices not in (None, 1):
            raise ValueError(
                f"devices={devices} applies to the fast kernel only; this run takes the "
                f"reference kernel (game {game.name!r}): leave devices unset or 1"
            )
        return spec
    rows = learners or [learner]
    if fast_path == "agents" or (fast_path == "auto" and platform in AGENTS_PATH_PLATFORMS):
        return _agents_spec(
            spec, rows, max_stage_length, block_size, devices, platform, memory_bytes
        )
    event_capacity = _exploration_path(rows, num_stages, fast_path)
    if block_size is None:
        block_size = fast.choose_block_size(num_agents, game.num_actions, event_capacity)
    block_size = check_int(block_size, "block_size", low=1, high=2**30)
    blocks = math.ceil(num_agents / block_size)
    adopters = _adopter_capacity(spec, rows, event_capacity, block_size)
    num_shards = _num_shards(devices, blocks)
    padded = math.ceil(blocks / num_shards) * num_shards * block_size  # whole blocks each
    if padded > MAX_PADDED_AGENTS:
        # Agent indices are int32: every padded agent's index must stay below 2**31.
        raise ValueError(
            f"num_agents={num_agents:,} with block_size={block_size:,} on {num_shards} "
            f"device(s) pads to {padded:,} agents, above the fast kernel's limit of "
            f"{MAX_PADDED_AGENTS:,}; use a block size that divides num_agents more closely "
            f"or fewer devices"
        )
    largest_update_prob = max(row.update_prob for row in rows)
    sized = spec._replace(
        block_size=block_size,
        event_capacity=event_capacity,
        adopter_capacity=adopters,
        num_shards=num_shards,
        adopter_event_capacity=fast.adopter_event_capacity(
            block_size,
            event_capacity,
            _exploration_extremes(rows, num_stages)[1],
            largest_update_prob,
        )
        if adopters
        else 0,
    )
    kept_bytes = fast.kept_event_bytes(sized)  # sweeps run their rows one after another
    return sized._replace(
        kernel="fast",
        replay_events=bool(
            event_capacity
            and spec.needs_own_estimates
            and kept_bytes <= min(REPLAY_BUDGET_BYTES, available_memory_bytes() // 4)
        ),
        # Rounded up to a power of two: other stage lengths in the same range reuse the
        # compiled program (the round buffer is the only shape that depends on it).
        max_stage_length=int(2 ** math.ceil(math.log2(max(int(max_stage_length), 1)))),
    )


def _agents_spec(spec, rows, max_stage_length, block_size, devices, platform, memory_bytes):
    """:func:`_kernel_spec` for the agents path (:mod:`jaxstage.agent_stage`)."""
    n, num_stages = spec.num_agents, spec.num_stages
    longest = max(int(max_stage_length), 1)
    cap = int(2 ** math.ceil(math.log2(longest)))  # <= 2**30: stage lengths are checked
    width = spec.num_types * spec.num_actions
    bins = 2 * cap * width  # pass 1's histogram of departures and arrivals
    if block_size is None:
        num_shards = _num_shards(devices, n)
        if memory_bytes is None:
            memory_bytes = agent_stage.device_memory_bytes(platform, available_memory_bytes())
        tile = agent_stage.choose_tile_size(2**30, bins, platform)
        multiple = 128 if platform == "cpu" else tile
        block_size = agent_stage.choose_agent_block(
            n, spec.num_actions, num_shards, int(memory_bytes), multiple
        )
    block_size = check_int(block_size, "block_size", low=1, high=2**30)
    blocks = math.ceil(n / block_size)
    num_shards = _num_shards(devices, blocks)
    padded = math.ceil(blocks / num_shards) * num_shards * block_size
    if padded > MAX_PADDED_AGENTS:
        raise ValueError(
            f"num_agents={n:,} with block_size={block_size:,} on {num_shards} "
            f"device(s) pads to {padded:,} agents, above the fast kernel's limit of "
            f"{MAX_PADDED_AGENTS:,}; use a block size that divides num_agents more closely "
            f"or fewer devices"
        )
    most_likely = _exploration_extremes(rows, num_stages)[0]
    num_events = agent_events.max_events(padded * num_stages * len(rows), longest, most_likely)
    if _FORCED_AGENT_EVENTS is not None:
        num_events = max(1, min(int(_FORCED_AGENT_EVENTS), longest))
    return spec._replace(
        kernel="fast",
        fast_path="agents",
        block_size=block_size,
        num_shards=num_shards,
        max_stage_length=cap,
        agent_events=num_events,
        tile_size=agent_stage.choose_tile_size(block_size, bins, platform),
    )


def _num_shards(devices: int | None, blocks: int) -> int:
    """Devices the fast kernel splits the population over: ``devices``, or by default
    every device of the default backend, at most one per block of agents. The numbers
    do not depend on the choice."""
    count = jax.device_count()
    if devices is None:
        return max(1, min(count, blocks))
    return check_int(devices, "devices", low=1, high=count)


def _adopter_capacity(spec: RunSpec, rows, event_capacity: int, block_size: int) -> int:
    """``RunSpec.adopter_capacity``: 0 (decide for every agent) unless the events path
    keeps own estimates and every row's ``update_prob`` is at most
    :data:`MAX_FILTERED_UPDATE_PROB`."""
    largest = max(row.update_prob for row in rows)
    if not (event_capacity and spec.needs_own_estimates and largest <= MAX_FILTERED_UPDATE_PROB):
        return 0
    return fast.adopter_capacity(block_size, largest)


def _types_array(spec: RunSpec) -> jax.Array | None:
    if spec.num_types == 1 or spec.kernel == "fast":
        return None
    return jnp.asarray(np.repeat(np.arange(spec.num_types, dtype=np.int32), spec.type_counts))


def _run_params(
    game_params,
    learner,
    num_stages,
    padded,
    eps,
    explore=None,
    update=None,
    length=None,
    info_noise=None,
) -> RunParams:
    explore_probs = learner.explore_probs(num_stages) if explore is None else explore
    lengths = learner.stage_lengths(num_stages) if length is None else length
    return RunParams(
        game=game_params,
        explore_prob=jnp.asarray(_padded(np.asarray(explore_probs, np.float32), padded)),
        stage_length=jnp.asarray(_padded(np.asarray(lengths, np.int32), padded)),
        update_prob=jnp.asarray(learner.update_prob if update is None else update, jnp.float32),
        info_noise_std=jnp.asarray(
            learner.info_noise_std if info_noise is None else info_noise, jnp.float32
        ),
        eps=jnp.asarray(eps, jnp.float32),
    )


def _progress_bar(total: int, enabled: bool, description: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="stage", disable=not enabled, desc=description, leave=False)


def _drive(spec, initial_fn, chunk_fn, progress, description, check):
    """Run all chunks; returns host arrays with a leading batch axis. ``check(metrics,
    record, first, done)`` sees each chunk's host arrays (``record`` ``None`` for the
    initial state) and raises to stop the run."""
    actions, stages_key, initial_metrics = initial_fn()
    initial_metrics = jax.device_get(initial_metrics)
    check(initial_metrics, None, 0, 1)
    records = []
    with _progress_bar(spec.num_stages, progress, description) as bar:
        for first in range(0, spec.num_stages, spec.chunk_stages):
            actions, record = chunk_fn(actions, stages_key, first)
            records.append(jax.device_get(record))
            done = min(spec.chunk_stages, spec.num_stages - first)
            check(records[-1].metrics, records[-1], first, done)
            bar.update(done)
            share = np.asarray(records[-1].metrics.best_reply_fraction)[..., done - 1]
            bar.set_postfix(best_reply=f"{float(np.mean(share)):.3f}")
    return actions, initial_metrics, records


class _EventsOverflowError(Exception):
    """Some agent of a chunk needed more than ``spec.agent_events`` events (agents path):
    the run is repeated with more (:func:`_with_reruns`)."""


def _chunk_spec(spec: RunSpec, first: int) -> RunSpec:
    """The spec the chunk of stages from ``first`` is compiled with: on the agents path
    a last chunk that is shorter has its own (static) length, so that no stage loop needs
    a conditional to skip stages past the end (at most one more program per run)."""
    if spec.exploration_path != "agents":
        return spec
    return spec._replace(chunk_stages=min(spec.chunk_stages, spec.num_stages - first))


def _with_overflow_check(spec: RunSpec, chunk_fn, check):
    """On the agents path: ``chunk_fn`` with the overflow counts split off its records'
    ``metrics``, and ``check`` raising :class:`_EventsOverflowError` (on the host, after each
    chunk, like the finiteness check) when any agent needed more events than computed."""
    if spec.exploration_path != "agents":
        return chunk_fn, check
    overflows = []

    def chunk(actions, key, first):
        actions, records = chunk_fn(actions, key, first)
        counts, overflow = records.metrics
        overflows.append(overflow)
        return actions, records._replace(metrics=counts)

    def checked(metrics, record, first, done):
        if record is not None and np.any(np.asarray(jax.device_get(overflows[-1])) > 0):
            raise _EventsOverflowError
        check(metrics, record, first, done)

    return chunk, checked


def _with_reruns(spec: RunSpec, run):
    """``run(spec)``, and the spec it ran with. On the agents path a run in which some
    agent needed more than ``spec.agent_events`` events (probability below
    ``agent_events.OVERFLOW_PROBABILITY`` by the choice of ``E``) runs again with ``E``
    doubled, up to the longest stage: the numbers do not depend on ``E``, so the result
    is bitwise that of an unbounded ``E``."""
    while True:
        try:
            return run(spec), spec
        except _EventsOverflowError:
            if spec.agent_events >= spec.max_stage_length:  # cannot happen: positions grow
                raise RuntimeError("agents path: more events than rounds in a stage") from None
            spec = spec._replace(agent_events=min(2 * spec.agent_events, spec.max_stage_length))


def _finiteness_check(game, spec: RunSpec, row_params: Sequence[Params], batched: bool):
    """The ``check`` of :func:`_drive`: :class:`~jaxstage.finiteness.NonFinitePayoffError`
    at the first stage (of the first row) whose payoffs or metrics were not finite."""

    def check(metrics, record, first, done):
        for i, params in enumerate(row_params):
            row = i if batched else None

            def take(array, stages=None, i=i):
                array = np.asarray(array)
                array = array[i] if batched else array
                return array if stages is None else array[:stages]

            if record is None:  # the initial state: one unbatched-in-time entry
                states = (take(metrics.expected_payoffs)[None], take(metrics.nash_gap)[None])
                counts = take(metrics.counts_by_type)[None]
                check_metrics(game, params, *states, counts, 0, spec.num_agents, row)
                continue
            codes, at = take(record.nonfinite, done), take(record.nonfinite_counts, done)
            check_stages(game, params, codes, at, first, spec.num_agents, row)
            check_metrics(
                game,
                params,
                take(metrics.expected_payoffs, done),
                take(metrics.nash_gap, done),
                take(metrics.counts_by_type, done),
                first + 1,
                spec.num_agents,
                row,
            )

    return check


def _assemble(
    spec,
    batch_index,
    initial_metrics,
    records,
    lengths,
    explore,
    config,
    equilibria,
    delta,
    hold_stages,
    final_actions,
    batched,
) -> SimulationResult:
    """Build one run's result from (possibly batched) host arrays."""

    def row(array):
        array = np.asarray(array)
        return array[batch_index] if batched else array

    def per_stage(get):
        # records are chunks of (batch?, chunk, ...): select the row, concat, trim padding.
        parts = [row(get(r)) for r in records]
        return np.concatenate(parts, axis=0)[: spec.num_stages]

    def state_series(get):
        initial = row(get(initial_metrics))[None]
        return np.concatenate([initial, per_stage(lambda r: get(r.metrics))])

    counts = state_series(lambda m: m.counts_by_type).astype(np.int64)  # (S+1, T, k)
    type_sizes = np.asarray(spec.type_counts, np.float64)
    distribution = counts.sum(axis=1) / spec.num_agents
    share = state_series(lambda m: m.best_reply_fraction).astype(np.float64)
    in_equilibrium = share >= 1.0 - delta
    stage = convergence_stage(in_equilibrium, hold_stages)
    rounds = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))])
    played = per_stage(lambda r: r.played_counts).astype(np.float64) / spec.num_agents
    return SimulationResult(
        distribution=distribution,
        distribution_by_type=counts / type_sizes[None, :, None],
        best_reply_fraction=share,
        best_reply_fraction_by_type=state_series(lambda m: m.best_reply_fraction_by_type),
        nash_gap=state_series(lambda m: m.nash_gap),
        expected_payoffs=state_series(lambda m: m.expected_payoffs),
        welfare=state_series(lambda m: m.welfare),
        distance_to_equilibrium=distance_to_equilibria(distribution, equilibria),
        played_distribution=played,
        switched_fraction=per_stage(lambda r: r.switched_fraction),
        realized_mean_payoff=per_stage(lambda r: r.realized_mean_payoff),
        explore_prob=np.asarray(explore, np.float64),
        stage_length=np.asarray(lengths, np.int64),
        rounds=rounds,
        in_equilibrium=in_equilibrium,
        convergence_stage=stage,
        convergence_round=None if stage is None else int(rounds[stage]),
        config=config,
        final_actions=None if final_actions is None else row(final_actions),
    )


def _versions() -> dict[str, str]:
    import optax

    from jaxstage import __version__

    return {
        "jaxstage": __version__,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
        "numpy": np.__version__,
        "optax": optax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
    }


def _config(
    game,
    learner,
    num_agents,
    num_stages,
    seed,
    eps,
    delta,
    hold_stages,
    initial,
    game_params,
    reference,
    spec,
):
    initial_text = initial if isinstance(initial, (str, int)) else np.asarray(initial).tolist()
    if isinstance(initial_text, list) and len(initial_text) > 64:
        initial_text = f"array of {len(initial_text)} actions"
    return {
        "game": game.config(),
        "action_names": None if game.action_names is None else list(game.action_names),
        "type_names": None if game.type_names is None else list(game.type_names),
        "game_params": {k: np.asarray(v).tolist() for k, v in game_params.items()},
        "learner": learner.config(),
        "num_agents": num_agents,
        "num_stages": num_stages,
        "seed": seed,
        "eps": eps,
        "delta": delta,
        "hold_stages": hold_stages,
        "initial": initial_text,
        "reference_equilibria": [np.asarray(e).tolist() for e in reference],
        "kernel": spec.kernel,
        "block_size": spec.block_size if spec.kernel == "fast" else None,
        "devices": spec.num_shards,
        "fast_path": None if spec.kernel != "fast" else spec.exploration_path,
        "versions": _versions(),
    }


def _references(game, game_params_overridden: bool, reference):
    if reference is not None:
        refs = np.atleast_2d(np.asarray(reference, dtype=np.float64))
        if refs.shape[1] != game.num_actions:
            raise ValueError(
                f"reference must have {game.num_actions} entries per equilibrium, "
                f"got shape {refs.shape}"
            )
        return list(refs)
    # The analytic equilibria describe the game's constructor parameters; with swept
    # parameters they would be wrong, so none is used then.
    return [] if game_params_overridden else game.equilibria()


def simulate(
    game: AnonymousGame,
    learner: StageLearning,
    num_agents: int,
    num_stages: int,
    seed: int = 0,
    *,
    eps: float = 0.05,
    delta: float = 0.05,
    hold_stages: int | None = None,
    initial: Any = "uniform",
    game_params: dict[str, Any] | None = None,
    reference: Any = None,
    return_actions: bool = False,
    progress: bool = False,
    memory_limit_bytes: int | None = None,
    kernel: str = "auto",
    block_size: int | None = None,
    fast_path: str = "auto",
    devices: int | None = None,
) -> SimulationResult:
    """Run stage learning on ``num_agents`` agents for ``num_stages`` stages.

    Args:
        game: an anonymous game (``jaxstage.make_game`` or ``games.from_payoff_fn``).
        learner: the :class:`~jaxstage.StageLearning` configuration.
        num_agents: population size, in ``[1, 2**31 - 1]``.
        num_stages: number of stages ``S >= 1``.
        seed: integer seed; the same seed gives the same numbers.
        eps: the eps of eps-best replies, ``>= 0``.
        delta: share of agents allowed off an eps-best reply, in ``[0, 1]``.
        hold_stages: ``None`` to require the (eps, delta)-equilibrium to hold until the
            end of the run, or the number of consecutive recorded states it must hold.
        initial: ``"uniform"`` (each agent i.i.d. uniform), an action index (everyone on
            it), a float probability vector of ``k`` entries (each agent i.i.d. from it) or
            an integer array of ``num_agents`` actions.
        game_params: overrides of the game's numeric parameters (``game.default_params()``).
        reference: reference equilibrium distribution(s) for the L1 distance; default:
            the game's own (none when ``game_params`` overrides them).
        return_actions: keep the final ``(n,)`` stage actions in the result.
        progress: show a progress bar.
        memory_limit_bytes: refuse runs estimated to need more (default: available memory).
        kernel: ``"fast"`` (blocked two-pass kernel with counter-based randomness, for
            games with the default Gaussian noise), ``"reference"`` (the readable kernel
            that is the specification) or ``"auto"`` (fast when the game allows it). The
            kernels draw different random numbers: the same seed gives the same numbers
            for the same kernel.
        block_size: agents per block of the fast kernel (default: chosen from the
            population and the number of actions); results do not depend on it.
        fast_path: how the fast kernel draws exploration: ``"events"`` (only the
            exploring agent-rounds, as geometric skips; cost independent of the stage
            length), ``"rounds"`` (a loop over rounds, every agent-round drawn),
            ``"agents"`` (designed for GPUs: a fixed number of geometric skips per agent,
            blocks sized from device memory, no data-dependent loops or conditionals;
            :mod:`jaxstage.agent_stage`; runs on any backend) or ``"auto"`` (``"agents"``
            on a GPU, else the CPU path estimated to be cheaper; see the README's
            kernels section). The paths draw different random numbers.
        devices: how many devices of the default backend the fast kernel splits the
            population over (``shard_map``; each holds whole blocks of agents), in
            ``[1, jax.device_count()]``. Default: all of them, at most one per block. The
            numbers do not depend on it. On a CPU, JAX sees one device unless configured
            otherwise: :func:`jaxstage.use_cpu_cores` gives it one per core.

    Returns:
        A :class:`SimulationResult`.

    Example:
        >>> import jaxstage as js
        >>> game = js.make_game("congestion", num_actions=3)
        >>> learner = js.StageLearning(stage_length=20, explore_prob=0.1, update_prob=0.2)
        >>> result = js.simulate(game, learner, num_agents=10_000, num_stages=5, seed=0)
        >>> result.distribution.shape
        (6, 3)
    """
    num_agents, num_stages, eps, delta, hold_stages = _validate_common(
        game, learner, num_agents, num_stages, eps, delta, hold_stages
    )
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    kind, payload = _parse_initial(initial, num_agents, game.num_actions)
    params_game = _check_game_params(game, game_params)
    references = _references(game, game_params is not None, reference)
    kernel = _resolve_kernel(kernel, game, fast_path)
    lengths = learner.stage_lengths(num_stages)
    spec = _kernel_spec(
        kernel,
        game,
        learner,
        num_agents,
        num_stages,
        lengths.max(),
        block_size,
        None,
        fast_path,
        devices,
    )
    _check_memory(
        num_agents,
        game.num_actions,
        learner,
        1,
        memory_limit_bytes,
        spec,
    )
    padded = math.ceil(num_stages / spec.chunk_stages) * spec.chunk_stages
    params = _run_params(params_game, learner, num_stages, padded, eps)
    types = _types_array(spec)
    payload = jnp.asarray(payload)
    jit_initial, jit_chunk = (_FAST if kernel == "fast" else _REFERENCE)[:2]
    seed_key = jnp.uint32(seed) if kernel == "fast" else jax.random.key(seed)

    def run(spec):
        def initial_fn():
            return jit_initial(game, spec, params, kind, payload, types, seed_key)

        def chunk_fn(actions, stages_key, first):
            chunk_spec = _chunk_spec(spec, first)
            return jit_chunk(game, chunk_spec, params, actions, types, stages_key, jnp.int32(first))

        check = _finiteness_check(game, spec, [params_game], batched=False)
        chunk_fn, check = _with_overflow_check(spec, chunk_fn, check)
        if kernel == "fast":
            initial_fn, chunk_fn = _with_metrics(game, params, initial_fn, chunk_fn, batched=False)
        description = f"{game.name} info={learner.info}"
        return _drive(spec, initial_fn, chunk_fn, progress, description, check)

    (actions, initial_metrics, records), spec = _with_reruns(spec, run)
    config = _config(
        game,
        learner,
        num_agents,
        num_stages,
        seed,
        eps,
        delta,
        hold_stages,
        initial,
        params_game,
        references,
        spec,
    )
    return _assemble(
        spec,
        None,
        initial_metrics,
        records,
        learner.stage_lengths(num_stages),
        learner.explore_probs(num_stages),
        config,
        references,
        delta,
        hold_stages,
        np.asarray(actions)[:num_agents].astype(np.int32) if return_actions else None,
        batched=False,
    )


def _batched(name: str, values: Sequence[Any] | None, batch: int) -> list[Any] | None:
    if values is None:
        return None
    values = list(values)
    if len(values) == 1:
        return values * batch
    if len(values) != batch:
        raise ValueError(
            f"{name} has {len(values)} entries but the sweep has {batch} rows; "
            f"give {batch} entries or 1"
        )
    return values


def sweep(
    game: AnonymousGame,
    learner: StageLearning,
    num_agents: int,
    num_stages: int,
    seeds: int | Sequence[int] = 0,
    *,
    game_params: Sequence[dict[str, Any]] | None = None,
    explore_prob: Sequence[float] | None = None,
    update_prob: Sequence[float] | None = None,
    stage_length: Sequence[int] | None = None,
    info_noise_std: Sequence[float] | None = None,
    eps: float = 0.05,
    delta: float = 0.05,
    hold_stages: int | None = None,
    initial: Any = "uniform",
    reference: Any = None,
    progress: bool = False,
    memory_limit_bytes: int | None = None,
    kernel: str = "auto",
    block_size: int | None = None,
    fast_path: str = "auto",
    devices: int | None = None,
) -> SweepResult:
    """Run a batch of runs in one compiled call (``vmap``-ed in the reference kernel, rows
    one after another in the fast kernel).

    The batch size ``B`` is the longest of ``seeds`` and the per-row parameter lists; each
    list has ``B`` entries or one (broadcast). Row ``i`` equals
    ``simulate(..., seed=seeds[i])`` with the parameters of row ``i`` and the sweep's
    exploration path (``fast_path=result[i].config["fast_path"]``: the fast kernel takes
    one path for all rows, chosen from the platform and their mean stage length); the
    learner gives the defaults for what is not swept (a constant ``explore_prob`` /
    ``stage_length`` row replaces the learner's schedule for that row).

    Args:
        game, learner, num_agents, num_stages, eps, delta, hold_stages, initial,
        reference, progress, memory_limit_bytes, kernel, block_size, fast_path, devices:
        as in :func:`simulate`.
        seeds: one seed per row (or one for all rows).
        game_params: per-row overrides of the game's numeric parameters.
        explore_prob, update_prob, stage_length, info_noise_std: per-row learner values.

    Returns:
        A :class:`SweepResult`; ``result[i]`` is a :class:`SimulationResult`.
    """
    num_agents, num_stages, eps, delta, hold_stages = _validate_common(
        game, learner, num_agents, num_stages, eps, delta, hold_stages
    )
    if isinstance(game_params, dict):
        raise TypeError(
            "a sweep's game_params is a list of per-row dicts, e.g. [{'b': [1, 2]}, "
            "{'b': [2, 1]}] (one dict in a list applies to every row); got a dict"
        )
    seed_list = [seeds] if np.ndim(seeds) == 0 else list(seeds)
    lists = {
        "game_params": game_params,
        "explore_prob": explore_prob,
        "update_prob": update_prob,
        "stage_length": stage_length,
        "info_noise_std": info_noise_std,
    }
    batch = max([len(seed_list)] + [len(v) for v in lists.values() if v is not None])
    if batch < 1:
        raise ValueError("a sweep needs at least one row")
    seed_list = _batched("seeds", seed_list, batch)
    seed_list = [check_int(s, "seed", low=0, high=2**32 - 1) for s in seed_list]
    rows = {name: _batched(name, values, batch) for name, values in lists.items()}
    kind, payload = _parse_initial(initial, num_agents, game.num_actions)

    # Per-row learners: validated like any StageLearning, so bad rows fail before tracing.
    learners = []
    for i in range(batch):
        changes = {}
        for name in ("explore_prob", "update_prob", "stage_length", "info_noise_std"):
            if rows[name] is not None:
                changes[name] = rows[name][i]
        if changes.get("info_noise_std", 0) and not learner.info_noise_std:
            raise ValueError(
                "sweeping info_noise_std needs a learner with info_noise_std > 0 "
                "(it selects the noisy code path)"
            )
        learners.append(dataclasses.replace(learner, **changes))
        _check_sample_counts(learners[-1], num_stages)
    game_rows = [
        _check_game_params(
            game, None if rows["game_params"] is None else rows["game_params"][i], row=i
        )
        for i in range(batch)
    ]
    references = _references(game, game_params is not None, reference)

    kernel = _resolve_kernel(kernel, game, fast_path)
    max_length = max(row.stage_lengths(num_stages).max() for row in learners)
    spec = _kernel_spec(
        kernel,
        game,
        learner,
        num_agents,
        num_stages,
        max_length,
        block_size,
        learners,
        fast_path,
        devices,
    )
    _check_memory(
        num_agents,
        game.num_actions,
        learner,
        batch,
        memory_limit_bytes,
        spec,
    )
    padded = math.ceil(num_stages / spec.chunk_stages) * spec.chunk_stages
    row_params = [
        _run_params(game_rows[i], learners[i], num_stages, padded, eps) for i in range(batch)
    ]
    # Stack on the host: thousands of small device stacks would dominate a big sweep.
    params = jax.tree.map(
        lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs])), *row_params
    )
    types = _types_array(spec)
    payload = jnp.asarray(payload)
    seeds_array = jnp.asarray(np.asarray(seed_list, np.uint32))
    keys = seeds_array if kernel == "fast" else jax.vmap(jax.random.key)(seeds_array)
    jit_initial, jit_chunk = (_FAST if kernel == "fast" else _REFERENCE)[2:]

    def run(spec):
        def initial_fn():
            return jit_initial(game, spec, params, kind, payload, types, keys)

        def chunk_fn(actions, stages_key, first):
            chunk_spec = _chunk_spec(spec, first)
            return jit_chunk(game, chunk_spec, params, actions, types, stages_key, jnp.int32(first))

        check = _finiteness_check(game, spec, game_rows, batched=True)
        chunk_fn, check = _with_overflow_check(spec, chunk_fn, check)
        if kernel == "fast":
            initial_fn, chunk_fn = _with_metrics(game, params, initial_fn, chunk_fn, batched=True)
        return _drive(spec, initial_fn, chunk_fn, progress, f"sweep of {batch} runs", check)

    (_, initial_metrics, records), spec = _with_reruns(spec, run)
    runs = []
    for i in range(batch):
        config = _config(
            game,
            learners[i],
            num_agents,
            num_stages,
            seed_list[i],
            eps,
            delta,
            hold_stages,
            initial,
            game_rows[i],
            references,
            spec,
        )
        runs.append(
            _assemble(
                spec,
                i,
                initial_metrics,
                records,
                learners[i].stage_lengths(num_stages),
                learners[i].explore_probs(num_stages),
                config,
                references,
                delta,
                hold_stages,
                None,
                batched=True,
            )
        )
    return SweepResult(runs)
