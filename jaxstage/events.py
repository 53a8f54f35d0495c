"""Exploration as sparse events: the fast kernel's cost per stage without a loop over rounds.

With exploration probability ``p`` an agent explores in about ``p * tau`` of its ``tau``
rounds and plays its stage action in all others. Everything a stage needs follows from the
exploration events alone:

* **Counts.** Round ``t``'s counts are the stage-action counts, minus each agent exploring
  in round ``t`` on its stage action's entry, plus one on the action it drew.
* **Own observations.** A non-exploring round pays the agent ``u_t[s_i]`` plus noise, so
  the sum of its stage-action payoffs is ``sum_t u_t[s_i]`` (one per type, shared by all)
  minus the rounds in which it explored elsewhere; an exploration on ``a != s_i`` adds
  ``u_t[a]``. An exploration that draws ``s_i`` itself changes nothing.
* **Noise.** The ``m`` noise draws on the stage action sum to one ``N(0, m sigma^2)``;
  each exploration elsewhere gets its own ``N(0, sigma^2)``.

So a stage costs ``O(k)`` per agent plus ``O(1)`` per exploration event, whatever ``tau``.

**How events are drawn** (the definition of this path's random stream). Agents are grouped
in fixed *event chunks* of :data:`EVENT_CHUNK` consecutive agent indices. The ``tau``
rounds of the chunk's agents form a grid of ``EVENT_CHUNK * tau`` cells (agent-major);
geometric skips ``G_j = floor(log(U_j) / log(1 - p))`` walk the grid, the ``j``-th event
sitting at cell ``sum_{l <= j} (G_l + 1) - 1``. The gaps of a geometric skip are exactly
those of independent Bernoulli(``p``) cells, so every (agent, round) explores
independently with probability ``p`` (up to the 24-bit resolution of ``U``), as in
MODEL.md. ``U_j`` and the drawn action are counter-based functions of
``(seed, stage, chunk, j)``: events depend on neither the block size nor the order of
processing. Slots are drawn in batches of ``capacity`` per chunk (the expected events plus
five standard deviations); a chunk with more events simply takes another batch.

**Exact on every backend.** The walk's running sums, :func:`compact`'s counts and the
decoding's division are exact integer results wherever the program runs
(:func:`on_cpu_or_elsewhere`): float32 matrix products and reciprocals on a CPU, where
they are fast and exact, integer scans and division on other backends (a GPU would round
the products' operands to TF32). Both give the same bits, so the events are the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstage import counter_rng as crng

__all__ = [
    "EVENT_CHUNK",
    "MAX_EVENT_EXPLORE_PROB",
    "event_capacity",
    "Events",
    "Walk",
    "draw",
    "decode",
    "for_each_batch",
    "compact",
    "for_each_window",
    "on_cpu_or_elsewhere",
    "action_of_word",
    "noise_of_word",
]

#: Agents per event chunk: part of the definition of the event stream, not a tuning knob.
EVENT_CHUNK = 512
#: Largest grid (``EVENT_CHUNK * stage_length``) the walk's running sums keep exact (the
#: CPU's float32 ones: :func:`_running_sum_by_products`).
MAX_GRID = 2**23
#: Above this exploration probability the kernel loops over rounds instead (events would
#: then outnumber rounds' worth of work).
MAX_EVENT_EXPLORE_PROB = 0.5

#: A bound on ``|Events.noise()|`` over all ``2**24`` words (the largest is
#: ``|ndtri(2**-25)| = 5.42``; a power of two, so that ``noise_std * MAX_ABS_NOISE`` is
#: exact): pass 2 sizes its fixed-point sums from it (:mod:`jaxstage.exact_sum`).
MAX_ABS_NOISE = 8.0

_INV_2_24 = 1.0 / 2**24
_BELOW_ONE = 1.0 - 2.0**-24
_ACTION_SALT = 0x5BD1E995
_NOISE_SALT = 0x27D4EB2F


def event_capacity(max_events_per_agent: float) -> int:
    """Slots per chunk and batch: ``lambda + 5 sqrt(lambda) + 32`` for the largest expected
    events of a chunk in any stage, rounded up to a quarter octave so that nearby rates
    share a compiled program."""
    if not 0 <= max_events_per_agent < 2**20:
        raise ValueError(
            f"expected events per agent must be in [0, 2**20), got {max_events_per_agent}"
        )
    expected = EVENT_CHUNK * max_events_per_agent
    target = expected + 5.0 * math.sqrt(expected) + 32.0
    step = 2 ** max(5, math.floor(math.log2(target)) - 2)  # a multiple of 32 (running sums)
    return int(math.ceil(target / step) * step)


class Events(NamedTuple):
    """One batch of event slots for ``c`` chunks: arrays of shape ``(c, capacity)``."""

    agent: jax.Array  # int32 global agent index (meaningless where not ``inside``)
    round: jax.Array  # int32 round within the stage
    action: jax.Array  # int32 action drawn by the exploration
    inside: jax.Array  # bool: the slot is an exploration within this stage
    bits: jax.Array  # uint32 the slot's random word (further draws derive from it)

    def noise(self) -> jax.Array:
        """A standard normal per event (for its payoff noise), finite: ``|z| <=``
        :data:`MAX_ABS_NOISE`."""
        return noise_of_word(self.bits)


def action_of_word(bits: jax.Array, num_actions: int) -> jax.Array:
    """The int32 action in ``[0, num_actions)`` an event slot with random word ``bits``
    draws (uniform over all actions); the agents path (:mod:`jaxstage.agent_events`)
    derives its events' actions the same way."""
    second = crng.triple32(bits ^ jnp.uint32(_ACTION_SALT))
    action = jnp.floor((second >> 8).astype(jnp.float32) * (num_actions * _INV_2_24))
    return action.astype(jnp.int32)


def noise_of_word(bits: jax.Array) -> jax.Array:
    """The standard normal (payoff noise) of an event slot with random word ``bits``,
    finite: ``|z| <=`` :data:`MAX_ABS_NOISE`."""
    return _normal_from_word(crng.triple32(bits ^ jnp.uint32(_NOISE_SALT)))


def _normal_from_word(word: jax.Array) -> jax.Array:
    """``ndtri`` of the open uniform ``(j + 0.5) / 2**24`` of the word's top 24 bits ``j``.

    In float32 that uniform rounds to 1.0 for the top word ``j = 2**24 - 1`` (``ndtri``
    would give ``+inf``, one event in ``2**24``): it is clamped to the largest float32
    below 1 (``z = 5.29``); every other word keeps its value.
    """
    open_uniform = ((word >> 8).astype(jnp.float32) + 0.5) * _INV_2_24
    return jax.scipy.special.ndtri(jnp.minimum(open_uniform, _BELOW_ONE))


def _running_sum(steps: jax.Array, grid: jax.Array) -> jax.Array:
    """Row-wise running sums of ``(c, capacity)`` non-negative int32 steps, capped at
    ``grid``: exact on every backend (:func:`on_cpu_or_elsewhere`).

    Steps are first capped at ``grid + 1``, which changes no capped sum: a sum below
    ``grid`` has only steps below ``grid``, and a larger step takes the sum past it.
    """
    capped = jnp.minimum(steps, grid + 1)
    return on_cpu_or_elsewhere(
        capped, grid, cpu=_running_sum_by_products, elsewhere=_running_sum_by_saturating_scan
    )


def on_cpu_or_elsewhere(*args, cpu: Callable, elsewhere: Callable):
    """``cpu(*args)`` in a program lowered for a CPU, ``elsewhere(*args)`` for any other
    backend (``jax.lax.platform_dependent``: the choice is made when the program is
    lowered, the compiler sees one version only).

    The walk's running sums and :func:`compact`'s counts have a float32 matrix-product
    version that is fast and exact on a CPU (XLA's CPU dots are plain float32) and an
    integer version that is exact everywhere. A GPU runs float32 dots as TF32 by default
    (sm_80 on: 10 mantissa bits, integers exact only to 2048) and a TPU in bfloat16
    passes, so the products are kept off every backend but the CPU. Both versions give
    the same integers (tested bitwise), so results do not depend on the choice. Pass 2
    of the fast kernel chooses its sums with it too
    (``fast_cell_sums.cell_sums_for_backend``).
    """
    return jax.lax.platform_dependent(*args, cpu=cpu, default=elsewhere)


def _running_sum_by_products(capped: jax.Array, grid: jax.Array) -> jax.Array:
    """The CPU version of :func:`_running_sum`: float32 triangular products, several
    times faster than a scan or ``cumsum`` on a CPU. Integers up to ``2**24`` are exact in
    float32 and ``grid <= MAX_GRID`` keeps every sum that matters (below ``grid``) exact;
    larger sums only need to stay at or above ``grid``, which rounding of non-negative
    terms cannot undo."""
    sums = _row_sums(capped.astype(jnp.float32))
    return jnp.minimum(sums, grid.astype(jnp.float32)).astype(jnp.int32)


def _running_sum_by_saturating_scan(capped: jax.Array, grid: jax.Array) -> jax.Array:
    """The integer version of :func:`_running_sum`: a prefix scan of the saturating sum
    ``min(a + b, grid)``. For non-negative terms it is associative (both groupings give
    ``min(a + b + c, grid)``), so the scan gives ``min(running sum, grid)`` exactly (the
    first entry, which no sum touches, is capped after), and no partial sum exceeds
    ``2 * grid + 2 <= 2**24 + 2``: int32 cannot overflow however many slots a row has (a
    plain ``cumsum`` would, past ``2**31``)."""

    def saturating_sum(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.minimum(a + b, grid)

    return jnp.minimum(jax.lax.associative_scan(saturating_sum, capped, axis=1), grid)


def _triangular_product(terms: jax.Array, triangle: jax.Array) -> jax.Array:
    """``terms @ triangle`` in float32 arithmetic (``Precision.HIGHEST``: never TF32 or
    bfloat16), the one matrix product of the CPU running sums (a test replaces it with
    an emulated TF32 product)."""
    return jnp.matmul(terms, triangle, precision=jax.lax.Precision.HIGHEST)


def _row_sums(terms: jax.Array) -> jax.Array:
    """Row-wise inclusive running sums of ``(c, capacity)`` float32 terms, ``capacity`` a
    multiple of 32: two triangular matrix products (within groups of 32, then across)."""
    rows, capacity = terms.shape
    group = 32
    within = _triangular_product(
        terms.reshape(rows, -1, group), jnp.triu(jnp.ones((group, group), jnp.float32))
    )
    groups = capacity // group
    before = _triangular_product(
        within[:, :, -1], jnp.triu(jnp.ones((groups, groups), jnp.float32), 1)
    )
    return (within + before[:, :, None]).reshape(rows, capacity)


def _flat_counts(flags: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Inclusive int32 running counts of a flat ``(size,)`` bool array, and their total:
    exact on every backend (:func:`on_cpu_or_elsewhere`) for ``size < 2**24``."""
    return on_cpu_or_elsewhere(
        flags, cpu=_flat_counts_by_products, elsewhere=_flat_counts_by_cumsum
    )


def _flat_counts_by_cumsum(flags: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The integer version of :func:`_flat_counts`: an int32 ``cumsum`` (at most ``size``)."""
    inclusive = jnp.cumsum(flags.astype(jnp.int32))
    return inclusive, inclusive[-1]


def _flat_counts_by_products(flags: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The CPU version of :func:`_flat_counts`: float32 running sums of 0/1 terms (exact
    below ``2**24``) in three levels of 32 (two triangular products, then a ``cumsum``
    over groups of 1024 entries).

    Every broadcast is over a trailing axis of 32, so XLA's CPU backend indexes it with
    shifts and vectorises the fusion. Broadcasting per-row offsets over rows of a chunk's
    capacity (1536 at k = 8) compiled to scalar code with an integer division per entry:
    in ad hoc timing (a (64, 1536) mask, 10% kept) the positions took 2.1 instead of 4.0
    to 4.4 ns per entry, the whole ``compact`` 4.1 instead of 6.0 to 6.2.
    """
    group = 32
    size = flags.shape[0]
    groups = -(-size // group)
    supergroups = -(-groups // group)
    triangle = jnp.triu(jnp.ones((group, group), jnp.float32))
    terms = jnp.pad(flags.astype(jnp.float32), (0, groups * group - size))
    within = _triangular_product(terms.reshape(groups, group), triangle)
    totals = jnp.pad(within[:, -1], (0, supergroups * group - groups)).reshape(supergroups, group)
    totals_within = _triangular_product(totals, triangle)
    super_totals = totals_within[:, -1]
    before_super = jnp.cumsum(super_totals) - super_totals
    before_group = (totals_within - totals + before_super[:, None]).ravel()[:groups]
    inclusive = (within + before_group[:, None]).ravel()[:size]
    return inclusive.astype(jnp.int32), jnp.sum(super_totals).astype(jnp.int32)


#: Most entries of a :func:`compact` mask (float32 running counts are exact below it).
MAX_COMPACT_SIZE = 2**24 - 1


def compact(keep: jax.Array, window: int) -> tuple[jax.Array, jax.Array]:
    """The flat indices of the ``True`` entries of a mask, in row-major order, then zeros
    up to a multiple of ``window`` past them; and how many there are.

    Exact on every backend for masks of up to :data:`MAX_COMPACT_SIZE` entries (checked).
    """
    flat = keep.ravel()
    size = flat.shape[0]
    if size > MAX_COMPACT_SIZE:
        raise ValueError(f"compact takes at most {MAX_COMPACT_SIZE} entries, got {size}")
    inclusive, total = _flat_counts(flat)
    position = inclusive - 1
    target = jnp.where(flat, position, size + window)  # out of range: dropped
    order = (
        jnp.zeros(size + window, jnp.int32)
        .at[target]
        .set(jnp.arange(size, dtype=jnp.int32), mode="drop")
    )
    return order, total


def for_each_window(
    keep: jax.Array,
    items: object,
    window: int,
    body: Callable[[object, jax.Array, object], object],
    state: object,
) -> object:
    """Fold ``body(picked, valid, state)`` over the entries of ``items`` (a pytree of
    arrays shaped like the ``(c, capacity)`` mask ``keep``) where ``keep`` holds, in
    row-major order, ``window`` entries at a time; ``valid`` masks a last, partial window.
    Skipping the unwanted entries this way costs a running sum and a scatter per entry."""
    order, total = compact(keep, window)
    flat = jax.tree.map(lambda x: x.ravel(), items)

    def one_window(carry):
        w, state = carry
        take = jax.lax.dynamic_slice(order, (w * window,), (window,))
        valid = w * window + jnp.arange(window) < total
        return w + 1, body(jax.tree.map(lambda x: x[take], flat), valid, state)

    more = lambda carry: carry[0] * window < total  # noqa: E731
    return jax.lax.while_loop(more, one_window, (jnp.int32(0), state))[1]


def _divmod(cells: jax.Array, divisor: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact ``divmod`` of non-negative int32 ``cells < 2**24`` by a traced divisor, on
    every backend (:func:`on_cpu_or_elsewhere`)."""
    return on_cpu_or_elsewhere(
        cells, divisor, cpu=_divmod_by_reciprocal, elsewhere=_divmod_by_integers
    )


def _divmod_by_integers(cells: jax.Array, divisor: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Integer ``divmod``: exact whatever the backend's float32 division rounds to."""
    return cells // divisor, cells % divisor


def _divmod_by_reciprocal(cells: jax.Array, divisor: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The CPU version of :func:`_divmod`: a float32 quotient, corrected by one where it
    rounded across a multiple (CPUs have no vector integer division; in ad hoc timing this
    was several times faster than ``//`` and ``%``). Exact with a correctly rounded
    float32 division, which a CPU has."""
    quotient = jnp.floor(cells.astype(jnp.float32) * (1.0 / divisor.astype(jnp.float32)))
    quotient = quotient.astype(jnp.int32)
    remainder = cells - quotient * divisor
    quotient = jnp.where(remainder < 0, quotient - 1, quotient)
    quotient = jnp.where(remainder >= divisor, quotient + 1, quotient)
    return quotient, cells - quotient * divisor


class Walk(NamedTuple):
    """The raw draws of one batch of slots, ``(c, capacity)`` each: enough to rebuild its
    :class:`Events` (so a batch can be kept and replayed instead of drawn twice)."""

    cells: jax.Array  # int32 grid cell of each slot's event, ``>= grid`` when past the end
    bits: jax.Array  # uint32 each slot's random word


def draw(key, chunks, first_slot, last_cell, explore_prob, stage_length, capacity) -> Walk:
    """Slots ``first_slot ..`` of each chunk, continuing its walk from ``last_cell``."""
    grid = (EVENT_CHUNK * stage_length).astype(jnp.int32)
    chunk_key = crng.triple32(chunks.astype(jnp.uint32) ^ key[0])
    slots = jnp.asarray(first_slot).astype(jnp.uint32) + jnp.arange(capacity, dtype=jnp.uint32)
    bits = crng.triple32(crng.triple32(slots[None, :] ^ chunk_key[:, None]) + key[1])
    open_uniform = ((bits >> 8).astype(jnp.float32) + 0.5) * _INV_2_24
    log_stay = jnp.log1p(-explore_prob)  # -inf when p = 1: every gap is 0
    skips = jnp.where(
        explore_prob > 0, jnp.floor(jnp.log(open_uniform) / jnp.minimum(log_stay, -1e-30)), grid
    )
    steps = jnp.minimum(skips, grid).astype(jnp.int32) + 1
    # The walk continues from ``last_cell``: added to each chunk's first step with a
    # select, not an in-place update, which kept XLA from fully vectorising the fused draw.
    first = jnp.arange(capacity)[None, :] == 0
    steps = steps + jnp.where(first, jnp.asarray(last_cell)[..., None], 0)
    return Walk(cells=_running_sum(steps, grid), bits=bits)


def decode(chunks: jax.Array, walk: Walk, stage_length: jax.Array, num_actions: int) -> Events:
    """The events of a batch of slots."""
    inside = walk.cells < EVENT_CHUNK * stage_length
    agent_in_chunk, round_index = _divmod(jnp.where(inside, walk.cells, 0), stage_length)
    return Events(
        agent=(chunks[:, None] * EVENT_CHUNK + agent_in_chunk).astype(jnp.int32),
        round=round_index,
        action=action_of_word(walk.bits, num_actions),
        inside=inside,
        bits=walk.bits,
    )


def for_each_batch(
    *,
    key: jax.Array,
    chunks: jax.Array,
    explore_prob: jax.Array,
    stage_length: jax.Array,
    capacity: int,
    num_actions: int,
    consume: Callable[[Events, object], object],
    state: object,
    first: Callable[[], Walk] | None = None,
    on_walk: Callable[[jax.Array, Walk, Events, object], object] | None = None,
    resume: tuple[jax.Array, jax.Array] | None = None,
    materialise: bool = True,
) -> object:
    """Fold ``consume(events, state)`` over every exploration event of the given chunks.

    Args:
        key: the ``(2,)`` stream key of the stage's exploration.
        chunks: ``(c,)`` int32 chunk indices (repeats allowed).
        explore_prob, stage_length: the stage's values (traced scalars).
        capacity: slots per chunk and batch (:func:`event_capacity`).
        num_actions: ``k``.
        consume: adds one batch of events (mask with ``events.inside``) to ``state``.
        state: the initial accumulator.
        first: returns the chunks' first batch, already drawn (replayed, not drawn
            again). It is called inside the branch of a ``lax.cond`` that picks it, so a
            slice of a kept buffer is read straight into the branch's result; given as an
            array, XLA sliced it and then copied it out of the conditional (4% of a stage
            at 2^20 agents, k = 8, tau = 50: ``benchmarks/profile_stage.py``).
        on_walk: ``on_walk(first_slot, walk, events, state)`` sees each drawn batch
            before it is consumed (pass 1 keeps the first one for pass 2 this way, without
            a copy).
        resume: ``(first_slot, last_cells)`` to start the walks from instead of their
            beginning (``last_cells`` as kept from the batch before ``first_slot``).
        materialise: draw and decode through a conditional (below). ``False`` for
            batches that are rarely drawn: one copy of the draw in the program instead of
            two, which compiles faster.

    ``consume`` is traced once, which keeps compilation short: consuming the first batch
    before the loop, instead of choosing it with a conditional, traced it twice and made
    the first call about 0.5 s longer.
    """

    def more(carry):
        _, last_cell, _ = carry
        return jnp.any(last_cell < EVENT_CHUNK * stage_length)

    def next_batch(carry):
        first_slot, last_cell, state = carry

        def fresh():
            return draw(key, chunks, first_slot, last_cell, explore_prob, stage_length, capacity)

        def decoded(source):
            def walk_and_events():
                walk = source()
                return walk, decode(chunks, walk, stage_length, num_actions)

            return walk_and_events

        # Through a conditional even without ``first``: its results are materialised.
        # Drawn in place, the walk was fused into its consumers and computed again in
        # each: without replay (2^20 agents, k = 8, tau = 50) the conditional made whole
        # runs 1.23 times as fast (median of 8 interleaved pairs, ad hoc script). The
        # events are decoded in the branches for the same reason: decoded outside, the
        # decoding was fused into three consumers of pass 1 (1.06 times as fast with
        # replay, 1.08 without, same measure).
        if materialise or first is not None:
            walk, events = jax.lax.cond(
                first_slot == 0, decoded(fresh if first is None else first), decoded(fresh)
            )
        else:
            walk, events = decoded(fresh)()
        if on_walk is not None:
            state = on_walk(first_slot, walk, events, state)
        return first_slot + capacity, walk.cells[:, -1], consume(events, state)

    if resume is None:
        resume = (jnp.int32(0), jnp.full(chunks.shape, -1, jnp.int32))
    first_slot, last_cells = resume
    start = (jnp.asarray(first_slot, jnp.int32), jnp.asarray(last_cells, jnp.int32), state)
    return jax.lax.while_loop(more, next_batch, start)[2]
