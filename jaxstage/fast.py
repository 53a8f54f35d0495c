"""The fast stage kernel: agent blocks, two passes per stage, counter-based randomness.

It simulates the same model as the reference kernel of :mod:`jaxstage.simulation`, for
games with the default additive Gaussian noise, in every information mode:

* **Memory.** Between stages only the stage actions are held, as int8 (1 byte per agent,
  int16 beyond 128 actions: :func:`action_dtype`;
  types are recomputed from agent indices). Within a stage, agents are processed in
  blocks of ``block_size``, so temporaries are per block, not per population. The one
  population-sized scratch buffer, pass 1's kept events (only when it fits
  ``plan.REPLAY_BUDGET_BYTES``), is reused from stage to stage but carries nothing
  from one stage to the next.
* **Two passes.** A round's payoffs depend on that round's counts only, and every random
  number is a pure function of its coordinates (:mod:`jaxstage.counter_rng`). Pass 1
  computes every round's counts; pass 2 recomputes the same random numbers, now with the
  round payoffs known, to accumulate each agent's observations and take the stage-end
  decision. On the events path, at small update probabilities, it decides for the agents
  that adopt a candidate this stage only (:func:`adopter_capacity` of them at a time):
  the others keep their action, so their events, estimates and candidates are skipped.
  Pass 1 then keeps only the adopters' events (:class:`KeptAdopterEvents`), and the new
  action counts follow from the adopters' changes.
* **Exploration as events** (when every stage explores with probability at most
  ``events.MAX_EVENT_EXPLORE_PROB``, the usual case): only the exploring agent-rounds are
  drawn, as geometric skips (:mod:`jaxstage.events`); counts and own payoff sums follow
  from the stage actions and those events, so a stage costs ``O(k)`` per agent plus
  ``O(1)`` per exploration, independent of the stage length. Otherwise the kernel loops
  over rounds, drawing (seed, stage, round, agent)-keyed numbers for every agent-round.
* **Aggregated noise.** An agent's payoff noise enters its stage only through the sum
  over the rounds it played each action; ``m`` i.i.d. ``N(0, sigma^2)`` draws sum to
  ``N(0, m sigma^2)``, so one normal per (agent, action) replaces one per agent-round.
  This is exact in distribution, not bitwise equal to the reference kernel, which is why
  the tests compare the two statistically. The population's per-action payoff sums use
  the same identity.

* **Devices.** The blocks are split over ``spec.num_shards`` devices with ``shard_map``
  (:func:`on_shards`, mesh axis :data:`AGENT_AXIS`); each device runs both passes on its
  own blocks, and the round counts, stage counts and changes are summed over devices
  (``psum`` of integers) before the payoffs. On a CPU, XLA runs most of a stage on one
  thread, so one device per core (``jaxstage.use_cpu_cores``) runs the shards in parallel.

The numbers do not depend on the block size or the number of devices (tested bitwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import counter_rng as crng
from jaxstage import events as ev
from jaxstage import exact_sum
from jaxstage.decisions import (
    UNROLLED_UP_TO_ACTIONS,
    StageRecord,
    choose_candidates,
    choose_shared_candidates,
    clip_and_renormalise,
    mean_or_unavailable,
)
from jaxstage.finiteness import first_nonfinite_round, nonfinite_counts, with_published_check
from jaxstage.games import AnonymousGame
from jaxstage.metrics import deviation_payoffs
from jaxstage.spec import RunSpec
from jaxstage.wide import wide_sum, wide_to_float

__all__ = [
    "fast_stage",
    "fast_initial",
    "kept_events_buffer",
    "supports_fast",
    "choose_block_size",
]

#: The mesh axis the fast kernel splits the population over (``spec.num_shards`` devices,
#: each holding ``spec.local_blocks`` consecutive blocks). Every random number is keyed by
#: global agent indices and every cross-shard sum is exact, so the numbers do not depend
#: on the sharding (tested bitwise).
AGENT_AXIS = "agents"

# Stream identifiers: each (seed, stage, stream, sub-index) gives an independent stream.
_EXPLORE, _OWN_NOISE, _TIE, _UPDATE, _SAMPLE, _INFO_NOISE, _POP_NOISE, _INIT = range(8)


def action_dtype(num_actions: int) -> jnp.dtype:
    """The dtype of the stage actions held between stages: int8 while every action fits
    (up to 128 actions), int16 beyond (``games.MAX_ACTIONS`` is far below ``2**15``)."""
    if num_actions <= 128:
        return jnp.dtype(jnp.int8)
    if num_actions <= 2**15:
        return jnp.dtype(jnp.int16)
    raise ValueError(f"num_actions must be at most {2**15}, got {num_actions}")


def supports_fast(game: AnonymousGame) -> bool:
    """Whether ``game`` uses the default Gaussian noise model the fast kernel aggregates."""
    return game.uses_gaussian_noise()


#: Most event slots a block draws at once (their temporaries take about 50 bytes each).
MAX_BLOCK_SLOTS = 2**19
#: Most agents per block on the events path. Measured with ``benchmarks/throughput.py
#: --block-size`` at 2^20 agents, stage length 50, plain learning (2-core CPU): 32,768
#: agents per block ran 15 to 20% faster than the larger automatic sizes at k = 2, 4 and 8
#: (k = 2: 486 against 399 M agent-rounds/s for 2^18), within noise at 10^7 agents.
MAX_EVENT_BLOCK = 2**15
#: With ``spec.filter_adopters`` (``update_prob`` at most
#: ``plan.MAX_FILTERED_UPDATE_PROB``), pass 2 decides for the agents that adopt a
#: candidate this stage only (the others keep their action whatever they observed):
#: their events are gathered in order (so the sums are bitwise the same) into windows of
#: ``1 / ADOPTER_WINDOW_FRACTION`` of a batch's slots, one window when at most about 1/8
#: of the agents adopt.
ADOPTER_WINDOW_FRACTION = 8


def adopter_capacity(block_size: int, update_prob: float) -> int:
    """Adopters of a block decided at once: the expected number plus six standard
    deviations and 32, a multiple of 32 rounded up to a quarter octave (nearby update
    probabilities share a compiled program), at most the block. A block with more
    adopters takes another window."""
    expected = block_size * update_prob
    target = expected + 6.0 * math.sqrt(expected * (1.0 - update_prob)) + 32.0
    step = 2 ** max(5, math.floor(math.log2(target)) - 2)
    return int(min(math.ceil(target / step) * step, -(-block_size // 32) * 32))


#: Pass 1 counts each round's (type, own action, drawn action) transitions with one
#: scatter up to this many actions (a table of ``rounds * T * k^2`` cells), instead of two
#: scatters (departures, arrivals) into ``rounds * T * k``; the counts are the same.
#: Alternating runs (10 stages of 2^20 agents, stage length 50, best of 4 each, ad hoc
#: script): 1.06 to 1.18 times as fast at k = 8 (one and two devices) and k = 2, 1.01 and
#: 1.04 at k = 16; at k = 32, 1.14 and 0.89 (inconclusive: two scatters stay).
TRANSITIONS_UP_TO_ACTIONS = 16

#: From this many actions on, agents that share their estimates (exact published payoffs,
#: the distribution) take their candidates from a per-cell table of tied actions
#: (:func:`jaxstage.decisions.choose_shared_candidates`) instead of ``O(k)`` operations
#: each. Same candidates; the program no longer grows with k. At k = 32, published
#: payoffs, 2^20 agents, stage length 50 (``jax_log_compiles``; ad hoc script, two runs
#: each): XLA compiled the stage loop in 1.7 and 1.8 s instead of 3.1 s, and the first
#: call took 3.5 and 3.6 s instead of 4.3 and 4.6 s; the per-agent lookups ran 0 to 8%
#: slower at k = 2 to 32 (best of 4, 3 alternating runs), so smaller k keep the direct
#: rule.
SHARED_CANDIDATES_FROM_ACTIONS = 16


def adopter_event_capacity(
    block_size: int, event_capacity: int, events_per_agent: float, update_prob: float
) -> int:
    """Events of a block's adopters that pass 1 keeps for pass 2 (from the first batch):
    the expected number plus six standard deviations and 32, rounded up to an eighth of
    an octave, at most the block's slots. ``events_per_agent`` is the largest expected
    explorations of an agent in a stage; a block whose adopters have more events than
    kept draws them again in pass 2."""
    slots = event_slots_per_block(block_size, event_capacity)
    adopters = block_size * update_prob
    # Adopters ~ Binomial(block, u), events each with mean and variance at most lambda:
    # the variance of their sum is at most adopters * (lambda + lambda^2).
    spread = math.sqrt(adopters * (events_per_agent + events_per_agent**2))
    target = adopters * events_per_agent + 6.0 * spread + 32.0
    step = 2 ** max(5, math.floor(math.log2(target)) - 3)
    return int(min(math.ceil(target / step) * step, slots))


def choose_block_size(num_agents: int, num_actions: int, event_capacity: int = 0) -> int:
    """Agents per block: about 2**18 per-agent values of the widest temporary (k of them);
    on the events path at most :data:`MAX_EVENT_BLOCK` agents and at most
    :data:`MAX_BLOCK_SLOTS` exploration-event slots per batch. The numbers do not depend
    on it."""
    target = max(2**12, 2 ** (18 - max(0, math.ceil(math.log2(num_actions)) - 1)))
    if event_capacity:
        chunks = max(1, MAX_BLOCK_SLOTS // event_capacity)
        slots_limit = ev.EVENT_CHUNK * 2 ** math.floor(math.log2(chunks))
        target = min(target, MAX_EVENT_BLOCK, slots_limit)
    return int(min(target, 2 ** math.ceil(math.log2(max(num_agents, 1)))))


def chunks_per_block(block_size: int) -> int:
    """Event chunks a block overlaps (one more when blocks do not align with chunks)."""
    extra = 0 if block_size % ev.EVENT_CHUNK == 0 else 1  # a misaligned block straddles
    return -(-block_size // ev.EVENT_CHUNK) + extra


def event_slots_per_block(block_size: int, event_capacity: int) -> int:
    """Exploration-event slots one block draws per batch."""
    return chunks_per_block(block_size) * event_capacity


def kept_event_bytes(spec: RunSpec) -> int:
    """Bytes of pass 1's first batch of events kept for pass 2, one run: 8 per slot, or,
    with the adopter filter, 16 per kept adopter event and 4 per chunk."""
    rows = spec.num_blocks + spec.num_shards  # with each shard's spare row
    if spec.filter_adopters:
        chunks = chunks_per_block(spec.block_size)
        return rows * (16 * spec.adopter_event_capacity + 4 * chunks + 4)
    return 8 * rows * event_slots_per_block(spec.block_size, spec.event_capacity)


def _types_of(spec: RunSpec, index: jax.Array) -> jax.Array:
    boundaries = [sum(spec.type_counts[: j + 1]) for j in range(spec.num_types - 1)]
    types = jnp.zeros(index.shape, jnp.int32)
    for boundary in boundaries:
        types = types + (index >= boundary).astype(jnp.int32)
    return types


def _count(values: jax.Array, valid: jax.Array, size: int) -> jax.Array:
    """``(size,)`` int32 counts of ``values`` over the valid entries."""
    if size <= 2:
        # Two full-axis sums beat a scatter; from 3 values on, XLA's CPU backend runs the
        # unrolled sums 10 to 50 times slower than bincount (measured at 8 and 24 values).
        return jnp.stack([jnp.sum((values == v) & valid, dtype=jnp.int32) for v in range(size)])
    return jnp.bincount(jnp.where(valid, values, size), length=size + 1)[:size].astype(jnp.int32)


def _played(seed, stage, round_index, index, stage_actions, explore_prob, num_actions):
    """Actions played in one round: one hash decides exploration, a second the action."""
    bits = crng.random_bits(crng.stream_key(seed, stage, _EXPLORE, round_index), index)
    explore = (bits >> 8).astype(jnp.float32) * (1.0 / 2**24) < explore_prob
    second = crng.triple32(bits ^ jnp.uint32(0x5BD1E995))
    action = jnp.floor((second >> 8).astype(jnp.float32) * (num_actions / 2**24))
    return jnp.where(explore, action.astype(jnp.int32), stage_actions)


def shard_start(spec: RunSpec) -> jax.Array | int:
    """Global index of this shard's first agent: inside ``shard_map`` over
    :data:`AGENT_AXIS` when ``spec.num_shards > 1``, else 0."""
    if spec.num_shards == 1:
        return 0
    return jax.lax.axis_index(AGENT_AXIS) * (spec.local_blocks * spec.block_size)


def agent_mesh(num_shards: int) -> jax.sharding.Mesh:
    """A one-axis mesh (:data:`AGENT_AXIS`) of the default backend's first ``num_shards``
    devices (``plan.shard_count`` checks the count before tracing)."""
    return jax.sharding.Mesh(np.asarray(jax.devices()[:num_shards]), (AGENT_AXIS,))


def on_shards(spec: RunSpec, fn, in_specs, out_specs):
    """``fn`` run on each of ``spec.num_shards`` devices with ``shard_map`` (``fn``
    itself for one shard); ``in_specs`` and ``out_specs`` are ``PartitionSpec`` prefixes
    as there (``P(AGENT_AXIS)`` for agent arrays, ``P()`` for replicated values)."""
    if spec.num_shards == 1:
        return fn
    return jax.shard_map(
        fn,
        mesh=agent_mesh(spec.num_shards),
        in_specs=in_specs,
        out_specs=out_specs,
        # Population-level values are psums of exact integers (or of floats that are
        # zero on all shards but one), so they are the same on every shard.
        check_vma=False,
    )


def _total(spec: RunSpec, value):
    """``value`` summed over the shards (integer counts, or floats nonzero on one shard
    only: either way the sum is exact, so it does not depend on the sharding)."""
    return value if spec.num_shards == 1 else jax.lax.psum(value, AGENT_AXIS)


def _block(spec: RunSpec, actions: jax.Array, block: jax.Array):
    """Block ``block`` of this shard's ``actions``: the global index of its first agent,
    its agents' uint32 global indices, int32 stage actions, validity and types."""
    local_start = block * spec.block_size
    start = local_start + shard_start(spec)
    index = start.astype(jnp.uint32) + jnp.arange(spec.block_size, dtype=jnp.uint32)
    stage_actions = jax.lax.dynamic_slice(actions, (local_start,), (spec.block_size,))
    valid = index < spec.num_agents
    return start, index, stage_actions.astype(jnp.int32), valid, _types_of(spec, index)


def _round_counts(spec, params, seed, stage, actions, stage_length):
    """Pass 1: ``(max_stage_length, T * k)`` counts of (type, played action) per round."""
    k, width = spec.num_actions, spec.num_types * spec.num_actions

    def one_block(block, counts):
        _, index, stage_actions, valid, types = _block(spec, actions, block)

        def one_round(r, counts):
            played = _played(seed, stage, r, index, stage_actions, params.explore_prob[stage], k)
            return counts.at[r].add(_count(types * k + played, valid, width))

        return jax.lax.fori_loop(0, stage_length, one_round, counts)

    start = jnp.zeros((spec.max_stage_length, width), jnp.int32)
    return jax.lax.fori_loop(0, spec.local_blocks, one_block, start)


def _block_chunks(spec: RunSpec, start: jax.Array) -> jax.Array:
    """Event chunks overlapping the block that starts at agent ``start``."""
    num_chunks = chunks_per_block(spec.block_size)
    return start // ev.EVENT_CHUNK + jnp.arange(num_chunks, dtype=jnp.int32)


def _in_block(spec: RunSpec, events: ev.Events, start: jax.Array) -> jax.Array:
    """Which events are explorations of an agent of the block that starts at ``start``."""
    agent = events.agent
    # As an offset: ``start + block_size`` reaches 2**31 (wraps in int32) for the last
    # block of a population padded to 2**31 agents.
    offset = agent - start
    in_range = (offset >= 0) & (offset < spec.block_size) & (agent < spec.num_agents)
    return events.inside & in_range


class KeptAdopterEvents(NamedTuple):
    """Pass 1's first batch of a block's events, of its adopting agents only, in slot
    order (the adopter filter's replay; with a leading axis over blocks in the buffer)."""

    agent: jax.Array  # (capacity,) int32 global agent index
    round: jax.Array  # (capacity,) int32
    action: jax.Array  # (capacity,) int32
    bits: jax.Array  # (capacity,) uint32 the event's random word (its payoff noise)
    total: jax.Array  # () int32 the adopters' events in the batch (more than kept: all lost)
    last_cells: jax.Array  # (chunks,) int32 where each chunk's walk stopped


def kept_events_buffer(spec: RunSpec) -> ev.Walk | KeptAdopterEvents | None:
    """Room for pass 1's first batch of events of every block (``None`` without replay):
    every slot's walk, or with the adopter filter the adopters' events only.

    It is carried through the stages of a chunk (``plan.chunk_stages``) and
    overwritten in place, so it is filled once per chunk instead of once per stage (about
    12 ms per stage at 2^20 agents, k = 8: ``benchmarks/profile_stage.py`` on commit
    79aff78). Runs of up to 20 stages have one-stage chunks and gain nothing.
    """
    if not spec.replay_events:
        return None
    # A spare last row takes the rare later batches (written unconditionally, unread).
    rows, chunks = spec.local_blocks + 1, chunks_per_block(spec.block_size)
    if spec.filter_adopters:
        listed = (rows, spec.adopter_event_capacity)
        return KeptAdopterEvents(
            agent=jnp.zeros(listed, jnp.int32),
            round=jnp.zeros(listed, jnp.int32),
            action=jnp.zeros(listed, jnp.int32),
            bits=jnp.zeros(listed, jnp.uint32),
            total=jnp.zeros(rows, jnp.int32),
            last_cells=jnp.zeros((rows, chunks), jnp.int32),
        )
    shape = (rows, chunks, spec.event_capacity)
    return ev.Walk(jnp.zeros(shape, jnp.int32), jnp.zeros(shape, jnp.uint32))


def _kept_row(kept: ev.Walk | KeptAdopterEvents, block: jax.Array):
    """A thunk reading block ``block``'s kept first batch (``first`` of ``for_each_batch``)."""
    return lambda: jax.tree.map(lambda all_: all_[block], kept)


def _event_round_counts(spec, params, seed, stage, actions, stage_length, kept):
    """Pass 1 from exploration events: stage-action counts in every round, moved by events,
    the ``(T * k,)`` stage-action counts, and ``kept`` (:func:`kept_events_buffer`) holding
    each block's first batch of events."""
    k, width, rounds = spec.num_actions, spec.num_types * spec.num_actions, spec.max_stage_length
    key = crng.stream_key(seed, stage, _EXPLORE)
    # Up to TRANSITIONS_UP_TO_ACTIONS actions, one scatter counts each round's (type, own
    # action, drawn action) transitions; else two scatters move the counts directly.
    transitions = k <= TRANSITIONS_UP_TO_ACTIONS
    unused = rounds * width * (k if transitions else 1)  # collects masked-out updates

    def one_block(block, state):
        base, moves, kept = state
        start, _, stage_actions, valid, types = _block(spec, actions, block)
        base = base + _count(types * k + stage_actions, valid, width)
        chunks = _block_chunks(spec, start)

        def consume(events, moves):
            ok = _in_block(spec, events, start)
            agent = jnp.where(ok, events.agent, 0)
            # From the block's int32 stage actions: a 32-bit gather is vectorised, the
            # int8 gather from the population is not.
            own = stage_actions[jnp.where(ok, events.agent - start, 0)]
            cell = events.round * width + _types_of(spec, agent) * k
            if transitions:  # drawing one's own action is on the diagonal: it cancels
                transition = jnp.where(ok, (cell + own) * k + events.action, unused).ravel()
                return moves.at[transition].add(1)
            moved = ok & (events.action != own)
            # Two scatters: one scatter of the concatenated updates timed slower (ad hoc).
            leave = jnp.where(moved, cell + own, unused).ravel()
            arrive = jnp.where(moved, cell + events.action, unused).ravel()
            return moves.at[leave].add(-1).at[arrive].add(1)

        explore_prob = params.explore_prob[stage]
        keep_first = None
        if spec.replay_events:
            # Keep the first batch (almost always all of the block's events) for pass 2;
            # later batches go to the spare last row, so the write needs no conditional.
            def keep_first(first_slot, walk, events, state):
                moves, kept = state
                row = jnp.where(first_slot == 0, block, spec.local_blocks)
                one = walk
                if spec.filter_adopters:
                    one = _adopters_events(spec, params, seed, stage, start, walk, events)
                kept = jax.tree.map(
                    lambda all_, one: jax.lax.dynamic_update_index_in_dim(all_, one, row, 0),
                    kept,
                    one,
                )
                return moves, kept

        moves, kept = ev.for_each_batch(
            key,
            chunks,
            explore_prob,
            stage_length,
            spec.event_capacity,
            k,
            lambda events, state: (consume(events, state[0]), state[1]),
            (moves, kept),
            on_walk=keep_first,
        )
        return base, moves, kept

    start = (jnp.zeros(width, jnp.int32), jnp.zeros(unused + 1, jnp.int32), kept)
    base, moves, kept = jax.lax.fori_loop(0, spec.local_blocks, one_block, start)
    in_stage = (jnp.arange(rounds) < stage_length)[:, None]
    if transitions:  # [round, type, own, drawn]: arrivals minus departures
        table = moves[:unused].reshape(rounds, spec.num_types, k, k)
        moves = (table.sum(axis=2) - table.sum(axis=3)).reshape(rounds, width)
    else:
        moves = moves[:unused].reshape(rounds, width)
    counts = jnp.where(in_stage, base[None, :], 0) + moves
    return counts, base, kept


def _adopters_events(spec, params, seed, stage, start, walk, events) -> KeptAdopterEvents:
    """The events of one batch that belong to adopting agents of the block starting at
    ``start``, listed in slot order (the order pass 2 adds them in)."""
    adopting = _adopters_among(spec, params, seed, stage, events, start)
    capacity = spec.adopter_event_capacity
    order, total = ev.compact(adopting, capacity)
    take = order[:capacity]

    def listed(values):
        return values.ravel()[take]

    return KeptAdopterEvents(
        agent=listed(events.agent),
        round=listed(events.round),
        action=listed(events.action),
        bits=listed(events.bits),
        total=total,
        last_cells=walk.cells[:, -1],
    )


def _adopters_among(spec, params, seed, stage, events, start) -> jax.Array:
    """Which events are explorations of adopting agents of the block that starts at
    ``start``: a hash per event, cheaper than a gather from the block's adopters."""
    inside = _in_block(spec, events, start)
    return inside & _adopts(params, seed, stage, events.agent.astype(jnp.uint32))


def _event_own_sums(
    spec,
    params,
    seed,
    stage,
    actions,
    chunks,
    column_of,
    own,
    round_payoffs,
    stage_length,
    first=None,
    keep=None,
    listed=None,
):
    """Pass 2 from exploration events: ``(k, columns)`` payoff sums and observation counts.

    ``own = (index, stage_actions, valid, types)`` describes the agents of the columns;
    ``column_of(events)`` gives each event's column and whether it belongs to one;
    ``first`` returns the chunks' first batch when pass 1 kept it. ``keep(events)``, when
    given, is a cheap superset of the events that belong to a column: when few do, they
    are gathered (in order) before ``column_of`` and the accumulation. ``listed``, when
    given, returns pass 1's list of the first batch's events of a superset of the columns
    (:class:`KeptAdopterEvents`): they are added from it, and only later batches are drawn
    (all of them when the list overflowed).

    The events' payoffs are scatter-added into cells as :class:`_CellSums` chooses for the
    backend (:func:`_cell_sums_for_backend`): in float32 on a CPU, in fixed point
    elsewhere, so that no backend's sums depend on the order of its scatter-adds.
    """
    k, num_types = spec.num_actions, spec.num_types
    index, stage_actions, valid, types = own
    columns = index.shape[0]
    table = round_payoffs.reshape(-1)
    noise_std = params.game["noise_std"]

    def summed(cell_sums: _CellSums):
        """The whole event loop with one way of adding into cells: ``(k * columns,)``
        sums and counts of explored payoffs, ``(columns,)`` sums and counts of the stage
        action's payoffs forgone to explorations."""

        def consume(events, state):
            if keep is None or listed is not None:
                # With pass 1's list, only the rare later batches (or a block whose list
                # overflowed) are drawn here: adding them whole, without gathering the
                # columns' events first, keeps the program (and its compilation) smaller.
                return accumulate(events, *column_of(events), state)

            def picked_only(picked, on, state):
                column, ok = column_of(picked)
                return accumulate(picked, column, ok & on, state)

            window = max(32, events.agent.size // ADOPTER_WINDOW_FRACTION)
            return ev.for_each_window(keep(events), events, window, picked_only, state)

        def accumulate(events, column, ok, state):
            explored, forgone = state
            agent = jnp.where(ok, events.agent, 0)
            stage_action = stage_actions[jnp.where(ok, column, 0)]  # int32: a vectorised gather
            away = ok & (events.action != stage_action)
            row = (events.round * num_types + _types_of(spec, agent)) * k
            paid = table[row + events.action] + noise_std * events.noise()
            cell = jnp.where(away, events.action * columns + column, k * columns).ravel()
            explored = cell_sums.add(explored, cell, paid, away)
            own_cell = jnp.where(away, column, columns).ravel()
            return explored, cell_sums.add(forgone, own_cell, table[row + stage_action], away)

        start = (cell_sums.zeros(k * columns + 1), cell_sums.zeros(columns + 1))
        resume = None
        if listed is not None:
            kept = listed()
            capacity = kept.agent.shape[0]
            complete = kept.total <= capacity
            inside = (jnp.arange(capacity) < kept.total) & complete
            events = ev.Events(kept.agent, kept.round, kept.action, inside, kept.bits)
            start = accumulate(events, *column_of(events), start)
            # Then the batches after the first, or every batch if the list is incomplete.
            resume = (
                jnp.where(complete, spec.event_capacity, 0),
                jnp.where(complete, kept.last_cells, -1),
            )
        explored, forgone = ev.for_each_batch(
            crng.stream_key(seed, stage, _EXPLORE),
            chunks,
            params.explore_prob[stage],
            stage_length,
            spec.event_capacity,
            k,
            consume,
            start,
            first,
            resume=resume,
            materialise=listed is None,  # with the list, later batches are rare
        )
        return (*cell_sums.read(explored), *cell_sums.read(forgone))

    def in_fixed_point():
        bound = _payoff_bound(round_payoffs, stage_length, noise_std)
        grid = exact_sum.scale(bound, exact_sum.layout(spec.max_stage_length))
        return summed(_fixed_point_cell_sums(grid))

    sums, counts, lost, missing = _cell_sums_for_backend(
        lambda: summed(_FLOAT_CELL_SUMS), in_fixed_point
    )
    sums, counts = sums.reshape(k, columns), counts.reshape(k, columns)
    in_stage = (jnp.arange(spec.max_stage_length) < stage_length)[:, None, None]
    stage_totals = jnp.sum(jnp.where(in_stage, round_payoffs, 0.0), axis=0)  # (T, k)
    stayed = stage_length - missing

    def stage_action_sum():
        noise = crng.normal(crng.stream_key(seed, stage, _OWN_NOISE), index)
        return (
            stage_totals[types, stage_actions]
            - lost
            + noise_std * jnp.sqrt(stayed.astype(jnp.float32)) * noise
        )

    own_sum = _materialised(stage_action_sum, stage_length)
    is_own = jnp.arange(k)[:, None] == stage_actions[None, :]
    sums = jnp.where(is_own, own_sum[None, :], sums)
    counts = jnp.where(is_own, stayed[None, :], counts)
    return sums, jnp.where(valid[None, :], counts, 0)


class _CellSums(NamedTuple):
    """How pass 2 adds payoffs and their observations into cells (a spare last cell
    takes the masked-out events), and reads the float32 sums and int32 counts back."""

    zeros: Callable[[int], object]  # cells -> accumulator
    add: Callable[[object, jax.Array, jax.Array, jax.Array], object]  # (acc, cell, x, counted)
    read: Callable[[object], tuple[jax.Array, jax.Array]]  # sums, counts of all but the spare


def _float_cell_sums() -> _CellSums:
    """Float32 ``(payoff, 1)`` pairs, one scatter for both (float32 counts are exact far
    beyond any stage length); masked-out events go whole to the spare cell. XLA's CPU
    scatter adds the updates of a cell in their order (slot order), so the sums are
    reproducible there and do not depend on the block size (tested bitwise)."""

    def add(acc, cell, payoffs, counted):
        ones = jnp.ones(payoffs.size, jnp.float32)
        return acc.at[cell].add(jnp.stack([payoffs.ravel(), ones], axis=1))

    def read(acc):
        return acc[:-1, 0], acc[:-1, 1].astype(jnp.int32)

    return _CellSums(lambda cells: jnp.zeros((cells, 2), jnp.float32), add, read)


_FLOAT_CELL_SUMS = _float_cell_sums()


def _fixed_point_cell_sums(grid: exact_sum.Scale) -> _CellSums:
    """Exact int32 limbs of each payoff on ``grid`` and a 1, one scatter for all: integer
    addition is associative, so the sums are the same bits in any order of the adds (a
    GPU's atomic adds), within :mod:`jaxstage.exact_sum`'s error bound of the exact sums.
    Masked-out events add zeros, so no cell, the spare one included, can overflow."""
    width = grid.layout.limbs + 1

    def add(acc, cell, payoffs, counted):
        return acc.at[cell].add(_limbs_and_count(payoffs, counted, grid))

    def read(acc):
        return exact_sum.from_limbs(acc[:-1, :-1], grid), acc[:-1, -1]

    return _CellSums(lambda cells: jnp.zeros((cells, width), jnp.int32), add, read)


def _cell_sums_for_backend(on_cpu: Callable, elsewhere: Callable):
    """``on_cpu()`` (float32 sums) in a program lowered for a CPU, ``elsewhere()`` (fixed
    point) for any other backend.

    A GPU compiles a float scatter-add to atomic adds whose order changes from run to
    run, so near-ties would flip decisions between runs; fixed point makes the sums
    independent of the order. On a CPU the float32 sums are already reproducible, and
    fixed point costs more: with one scatter per limb (a scatter of rows of several
    computed int32 columns ran 3.5 times as slow), ``jaxstage.simulate`` of 2^20 agents,
    k = 8, stage length 50, ``explore_prob`` 0.05, ``update_prob`` 1 took 1.26 times the
    CPU time (median of 3 interleaved pairs of runs, ad hoc script).
    """
    return ev.on_cpu_or_elsewhere(cpu=on_cpu, elsewhere=elsewhere)


def _payoff_bound(round_payoffs: jax.Array, stage_length: jax.Array, noise_std) -> jax.Array:
    """A bound on every payoff pass 2 adds, for its fixed-point grid: the largest
    ``|u|`` of the stage's rounds plus ``|noise_std| * events.MAX_ABS_NOISE``.

    It holds in float32 (proof): a payoff is ``fl(u + fl(sigma z))``, or ``fl(u + sigma
    z)`` where XLA fuses a multiply-add, with ``|z| <= 5.42``; ``fl(|sigma| * 8)`` is
    exact (a power of two) and above ``|sigma z|`` even after its rounding, and rounding
    is monotone, so the payoff is at most ``fl(max |u| + 8 |sigma|)`` in magnitude.
    """
    rounds = round_payoffs.shape[0]
    in_stage = (jnp.arange(rounds) < stage_length)[:, None, None]
    largest = jnp.max(jnp.where(in_stage, jnp.abs(round_payoffs), 0.0))
    return largest + jnp.abs(noise_std) * ev.MAX_ABS_NOISE


def _limbs_and_count(payoffs: jax.Array, counted: jax.Array, grid) -> jax.Array:
    """``(size, m + 1)`` int32 rows to scatter-add: the fixed-point limbs of each payoff,
    then 1 (its observation); zeros where not ``counted``. One scatter adds both."""
    limbs = exact_sum.to_limbs(jnp.where(counted, payoffs, 0.0).ravel(), grid)
    return jnp.concatenate([limbs, counted.astype(jnp.int32).reshape(-1, 1)], axis=1)


def _materialised(compute, anchor: jax.Array):
    """``compute()``, evaluated once into a buffer of its own.

    XLA's CPU backend fuses cheap-looking elementwise work (hashing, ``ndtri``) into each
    consumer, and into every element of a larger consumer: a per-agent value broadcast to
    ``(k, agents)`` was computed k times. A conditional's results are materialised, so
    ``compute`` runs as both branches of one, on ``anchor >= 0`` (``anchor`` a traced,
    non-negative scalar that XLA cannot fold; both branches give the same value). It
    replaces carrying each block's own-action noise one block ahead through the loop
    over blocks (the earlier way to materialise it), in every pass-2 path alike.
    """
    return jax.lax.cond(anchor >= 0, compute, compute)


def _adopts(params, seed, stage, index: jax.Array) -> jax.Array:
    """Whether each agent (uint32 ``index``) adopts its candidate at the end of ``stage``."""
    return crng.uniform(crng.stream_key(seed, stage, _UPDATE), index) < params.update_prob


def _block_own_sums(
    spec,
    params,
    seed,
    stage,
    actions,
    block_view,
    round_payoffs,
    stage_length,
    first=None,
):
    """Pass 2 for one block of agents, by events or by rounds."""
    start, index, stage_actions, valid, types = block_view
    if spec.event_capacity == 0:
        return _own_sums(
            spec,
            params,
            seed,
            stage,
            index,
            stage_actions,
            valid,
            types,
            round_payoffs,
            stage_length,
        )

    def column_of(events):
        return events.agent - start, _in_block(spec, events, start)

    return _event_own_sums(
        spec,
        params,
        seed,
        stage,
        actions,
        _block_chunks(spec, start),
        column_of,
        (index, stage_actions, valid, types),
        round_payoffs,
        stage_length,
        first,
    )


def _sample_own_sums(spec, params, seed, stage, actions, sampled, round_payoffs, stage_length):
    """``(k,)`` payoff sums and counts of the sampled agents' own observations."""
    if spec.event_capacity == 0:
        index = sampled.astype(jnp.uint32)
        sampled_actions, here = _local_actions(spec, actions, sampled)
        own = (index, sampled_actions, here, _types_of(spec, index))
        sums, counts = _own_sums(spec, params, seed, stage, *own, round_payoffs, stage_length)
        # Each sampled agent's sums come from the shard holding it (zeros elsewhere).
        sums = _total(spec, jnp.where(here[None, :], sums, 0.0))
        return sums.sum(axis=1), _total(spec, counts).sum(axis=1)

    # Each sampled agent walks its whole event chunk: a group of sampled agents at a time
    # keeps the slots drawn at once bounded.
    group = max(1, MAX_BLOCK_SLOTS // spec.event_capacity)
    group = min(group, sampled.shape[0])
    num_groups = -(-sampled.shape[0] // group)
    padding = num_groups * group - sampled.shape[0]
    padded = jnp.pad(sampled, (0, padding))
    real = jnp.arange(num_groups * group) < sampled.shape[0]
    rows = jnp.arange(group, dtype=jnp.int32)[:, None]

    def one_group(g, totals):
        members = jax.lax.dynamic_slice(padded, (g * group,), (group,))
        member_real = jax.lax.dynamic_slice(real, (g * group,), (group,))
        index = members.astype(jnp.uint32)
        member_actions, here = _local_actions(spec, actions, members)
        member_real = member_real & here  # the members this shard holds
        own = (index, member_actions, member_real, _types_of(spec, index))

        def column_of(events):
            mine = events.inside & (events.agent == members[:, None]) & member_real[:, None]
            return jnp.broadcast_to(rows, events.agent.shape), mine

        sums, counts = _event_own_sums(
            spec,
            params,
            seed,
            stage,
            actions,
            members // ev.EVENT_CHUNK,
            column_of,
            own,
            round_payoffs,
            stage_length,
        )
        # Each member's sums come from the shard holding it (zeros elsewhere): exact.
        sums = _total(spec, jnp.where(member_real[None, :], sums, 0.0))
        return totals[0] + sums.sum(axis=1), totals[1] + _total(spec, counts).sum(axis=1)

    k = spec.num_actions
    start = (jnp.zeros(k, jnp.float32), jnp.zeros(k, jnp.int32))
    return jax.lax.fori_loop(0, num_groups, one_group, start)


def _own_sums(
    spec, params, seed, stage, index, stage_actions, valid, types, round_payoffs, stage_length
):
    """Pass 2 for some agents: ``(k, B)`` payoff sums and observation counts."""
    k = spec.num_actions

    def one_round(r, totals):
        sums, counts = totals
        played = _played(seed, stage, r, index, stage_actions, params.explore_prob[stage], k)
        payoff_table = round_payoffs[r]  # (T, k)
        if k > UNROLLED_UP_TO_ACTIONS:
            here = played[None, :] == jnp.arange(k)[:, None]  # (k, B)
            value = payoff_table[types] if spec.num_types > 1 else payoff_table[0][None, :]
            value = jnp.broadcast_to(value, (index.shape[0], k)).T
            return sums + jnp.where(here, value, 0.0), counts + here.astype(jnp.int32)
        new_sums, new_counts = [], []
        for action in range(k):
            here = played == action
            value = payoff_table[types, action] if spec.num_types > 1 else payoff_table[0, action]
            new_sums.append(sums[action] + jnp.where(here, value, 0.0))
            new_counts.append(counts[action] + here.astype(jnp.int32))
        return jnp.stack(new_sums), jnp.stack(new_counts)

    shape = (k, index.shape[0])
    sums, counts = jax.lax.fori_loop(
        0, stage_length, one_round, (jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.int32))
    )

    def action_noise(a):
        return crng.normal(crng.stream_key(seed, stage, _OWN_NOISE, a), index)

    if k > UNROLLED_UP_TO_ACTIONS:
        noise = jax.vmap(action_noise)(jnp.arange(k))
    else:
        noise = jnp.stack([action_noise(a) for a in range(k)])
    sums = sums + params.game["noise_std"] * jnp.sqrt(counts.astype(jnp.float32)) * noise
    return sums, jnp.where(valid[None, :], counts, 0)


def _local_actions(spec, actions, agents):
    """The int32 stage actions of global ``agents`` held by this shard, and which are."""
    local = agents - shard_start(spec)
    here = (local >= 0) & (local <= actions.shape[0] - 1)  # the size may be 2**31
    return actions[jnp.where(here, local, 0)].astype(jnp.int32), here


def _sample_indices(spec, seed, stage):
    draws = crng.uniform(
        crng.stream_key(seed, stage, _SAMPLE), jnp.arange(spec.info_sample_size, dtype=jnp.uint32)
    )
    return jnp.minimum(jnp.floor(draws * spec.num_agents), spec.num_agents - 1).astype(jnp.int32)


def _published_counts(spec, params, seed, stage, actions, stage_counts):
    """``n * d_hat`` of the stage actions (exact integer counts when exact)."""
    n, k = spec.num_agents, spec.num_actions
    if spec.info_sample_size is None and not spec.info_noisy:
        return stage_counts
    if spec.info_sample_size is None:
        d_hat = stage_counts.astype(jnp.float32) / n
    else:
        sampled, here = _local_actions(spec, actions, _sample_indices(spec, seed, stage))
        d_hat = _total(spec, _count(sampled, here, k)).astype(jnp.float32)
        d_hat = d_hat / spec.info_sample_size
    if spec.info_noisy:
        noise = crng.normal(
            crng.stream_key(seed, stage, _INFO_NOISE), jnp.arange(k, dtype=jnp.uint32)
        )
        d_hat = clip_and_renormalise(d_hat + params.info_noise_std * noise)
    return d_hat * n


def fast_stage(
    game,
    spec: RunSpec,
    params,
    actions: jax.Array,
    seed: jax.Array,
    stage: jax.Array,
    kept: ev.Walk | None = None,
):
    """One stage on this shard's stage actions (:func:`action_dtype`; ``(padded_agents,)``
    unsharded).

    ``kept`` is :func:`kept_events_buffer` when ``spec.replay_events`` (else ``None``).
    Returns ``(new_actions, kept, new_counts, record)``: ``new_counts`` are the ``(T, k)``
    counts of the new stage actions, from which the caller computes ``record.metrics``
    (left ``None`` here): outside ``shard_map``, the same program computes them whatever
    the sharding, so even their float rounding does not depend on it.
    """
    k, num_types = spec.num_actions, spec.num_types
    stage_length = params.stage_length[stage]

    if spec.event_capacity == 0:
        counts_by_round = _round_counts(spec, params, seed, stage, actions, stage_length)
    else:
        counts_by_round, stage_counts_by_type, kept = _event_round_counts(
            spec, params, seed, stage, actions, stage_length, kept
        )
        stage_counts_by_type = _total(spec, stage_counts_by_type)
    # Every shard needs the whole population's counts; from here on, the round payoffs
    # and every population-level value are the same on all shards.
    population = stage_population(game, spec, params, seed, stage, _total(spec, counts_by_round))
    round_payoffs = population.round_payoffs
    action_sums, action_counts = population.action_sums, population.action_counts
    nonfinite = population.nonfinite

    if spec.event_capacity == 0:
        stage_counts = _total(spec, _stage_action_counts(spec, actions))
    else:
        stage_counts = stage_counts_by_type.reshape(num_types, k).sum(axis=0)
    samples = None  # sampled payoffs: the sampled agents' (sums, counts), pooled into all
    if spec.info == "payoffs" and spec.info_sample_size is not None:
        samples = _sample_own_sums(
            spec,
            params,
            seed,
            stage,
            actions,
            _sample_indices(spec, seed, stage),
            round_payoffs,
            stage_length,
        )
    published = by_alternative = None
    if spec.info == "distribution":
        published, by_alternative, nonfinite = published_payoffs(
            game, spec, params, seed, stage, actions, stage_counts, nonfinite
        )

    if spec.filter_adopters:
        new_actions, switched, changed_counts = _adopter_decisions(
            spec, params, seed, stage, actions, kept, round_payoffs, stage_length, samples
        )
        switched = _total(spec, switched)
        new_counts = stage_counts_by_type + _total(spec, changed_counts)
    else:
        shared = None if spec.needs_own_estimates else (action_sums, action_counts, by_alternative)

        def decide(block):
            block_view = _block(spec, actions, block)
            start, index, current, valid, types = block_view
            first = None if kept is None else _kept_row(kept, block)
            adopt = _adopts(params, seed, stage, index)
            ties = crng.uniform(crng.stream_key(seed, stage, _TIE), index)
            if spec.needs_own_estimates:  # plain learning, sampled payoffs
                sums, counts = _block_own_sums(
                    spec,
                    params,
                    seed,
                    stage,
                    actions,
                    block_view,
                    round_payoffs,
                    stage_length,
                    first,
                )
                estimates = _own_estimates(sums, counts, samples)
                candidates = choose_candidates(ties, estimates, current)
            else:
                candidates = shared_candidates(spec, *shared, ties, types, current)
            return jnp.where(adopt & valid, candidates, current)

        def decide_and_write(block, state):
            pending, new_actions = state
            chosen = decide(block)
            # The previous block's decision, written one block late: as a loop carry it is
            # computed in a fusion of its own. Written at once, the whole decision was fused
            # into the in-place write, a fusion XLA's CPU backend emits as slow scalar code
            # (k = 2, events path, 5 stages of 2^20 agents: 329 ms, now 75 + a plain copy).
            previous = jnp.maximum(block - 1, 0) * spec.block_size
            new_actions = jax.lax.dynamic_update_slice(
                new_actions, pending.astype(actions.dtype), (previous,)
            )
            return chosen, new_actions

        state = (jnp.zeros(spec.block_size, jnp.int32), jnp.zeros_like(actions))
        last, new_actions = jax.lax.fori_loop(0, spec.local_blocks, decide_and_write, state)
        last_start = (spec.local_blocks - 1) * spec.block_size
        new_actions = jax.lax.dynamic_update_slice(
            new_actions, last.astype(actions.dtype), (last_start,)
        )
        # Counted in a second pass over the int8 actions: counting ``chosen`` inside
        # ``decide`` let XLA's CPU backend fuse the whole decision into each consumer and
        # compute it three times (seen in a profile at k = 3).
        switched, new_counts = _total(spec, _changes(spec, actions, new_actions))
    record = stage_record(spec, population, stage_length, switched, nonfinite, published)
    return new_actions, kept, new_counts.reshape(num_types, k), record


class StagePopulation(NamedTuple):
    """A stage's population-level values from its counts by round (both fast paths)."""

    played_counts: jax.Array  # (R, k) int32 played actions per round
    round_payoffs: jax.Array  # (R, T, k) float32 expected payoffs per round
    action_counts: jax.Array  # (k,) float32 agent-rounds per action in the stage
    total_rounds: jax.Array  # () float32 agent-rounds in the stage
    action_sums: jax.Array  # (k,) float32 realised payoff sums per action
    nonfinite: jax.Array  # () int32 ``finiteness`` code of the round payoffs


def stage_population(game, spec: RunSpec, params, seed, stage, counts_by_round) -> StagePopulation:
    """Round payoffs, the population's payoff sums and their noise, from the whole
    population's ``(max_stage_length, T * k)`` counts of (type, played action)."""
    n, k, num_types = spec.num_agents, spec.num_actions, spec.num_types
    stage_length = params.stage_length[stage]
    counts_by_round = counts_by_round.reshape(spec.max_stage_length, num_types, k)
    played_counts = jnp.sum(counts_by_round, axis=1)  # (R, k)
    round_payoffs = jax.vmap(
        lambda c: game.expected_payoffs(params.game, c.astype(jnp.float32) / n)
    )(played_counts)  # (R, T, k)
    in_stage = (jnp.arange(spec.max_stage_length) < stage_length)[:, None, None]
    counts_in_stage = jnp.where(in_stage, counts_by_round, 0)
    # Agent-rounds per action reach n * stage_length, past int32: summed exactly in 64
    # bits, then float32 (exact to 2**24, as the int32 sum was where it did not overflow).
    action_rounds = wide_sum(counts_in_stage, (0, 1))  # (k,)
    action_counts = wide_to_float(action_rounds)
    total_rounds = wide_to_float(wide_sum(action_rounds, 0))
    nonfinite = first_nonfinite_round(round_payoffs, stage_length)
    population_noise = crng.normal(
        crng.stream_key(seed, stage, _POP_NOISE), jnp.arange(k, dtype=jnp.uint32)
    )
    action_sums = jnp.sum(jnp.where(in_stage, counts_by_round * round_payoffs, 0.0), axis=(0, 1))
    action_sums = (
        action_sums + params.game["noise_std"] * jnp.sqrt(action_counts) * population_noise
    )
    return StagePopulation(
        played_counts, round_payoffs, action_counts, total_rounds, action_sums, nonfinite
    )


def published_payoffs(game, spec: RunSpec, params, seed, stage, actions, stage_counts, nonfinite):
    """``info="distribution"``: the published counts ``n * d_hat``, the ``(k, T, k)``
    payoffs ``[b, type, current]`` of deviating to each ``b`` at them, and ``nonfinite``
    with their check."""
    published = _published_counts(spec, params, seed, stage, actions, stage_counts)
    by_alternative = jnp.transpose(
        deviation_payoffs(game, params.game, published, spec.num_agents), (2, 0, 1)
    )  # (k, T, k): [b, type, current]
    return published, by_alternative, with_published_check(nonfinite, by_alternative)


def shared_candidates(
    spec: RunSpec, action_sums, action_counts, by_alternative, ties, types, current
) -> jax.Array:
    """Candidates of agents whose estimates are shared (exact published payoffs: one
    cell; the distribution: one per type and current action), for ``(n,)`` agents."""
    k, num_types = spec.num_actions, spec.num_types
    if spec.info == "payoffs":  # exact payoffs
        cell_estimates = mean_or_unavailable(action_sums, action_counts)[None, :]
        cell = jnp.zeros_like(current)
    else:  # [type * k + current, alternative]
        cell_estimates = by_alternative.reshape(k, num_types * k).T
        cell = types * k + current
    if k >= SHARED_CANDIDATES_FROM_ACTIONS:  # estimates by (type, action) at most
        return choose_shared_candidates(ties, cell_estimates, cell, current)
    if spec.info == "payoffs":
        shape = (k, current.shape[0])
        estimates = jnp.broadcast_to(cell_estimates[0][:, None], shape)
    else:
        estimates = by_alternative[:, types, current]
    return choose_candidates(ties, estimates, current)


def stage_record(
    spec: RunSpec, population: StagePopulation, stage_length, switched, nonfinite, published
) -> StageRecord:
    """The stage's :class:`StageRecord` (``metrics`` left ``None``: the caller computes
    them from the new counts, outside ``shard_map``)."""
    played_counts = population.played_counts
    last = jnp.take(played_counts, jnp.maximum(stage_length - 1, 0), axis=0)
    return StageRecord(
        metrics=None,  # from the new counts, by the caller (outside ``shard_map``)
        played_counts=last,
        switched_fraction=switched.astype(jnp.float32) / spec.num_agents,
        realized_mean_payoff=jnp.sum(population.action_sums)
        / jnp.maximum(population.total_rounds, 1.0),
        nonfinite=nonfinite,
        nonfinite_counts=nonfinite_counts(nonfinite, played_counts, published),
    )


def _own_estimates(sums, counts, samples) -> jax.Array:
    """``(k, columns)`` own estimates, pooled with ``samples``, the sampled agents'
    ``(sums, counts)`` (sampled payoffs), when given."""
    if samples is not None:
        sums, counts = sums + samples[0][:, None], counts + samples[1][:, None]
    return mean_or_unavailable(sums, counts)


def _adopter_decisions(
    spec, params, seed, stage, actions, kept, round_payoffs, stage_length, samples
):
    """Stage-end actions when only adopters are decided (``spec.filter_adopters``).

    An agent that does not adopt keeps its action whatever it observed, so each block's
    adopters are gathered (in index order, ``spec.adopter_capacity`` at a time, almost
    always one window) and only their events, estimates and candidates are computed;
    every sum is added in the same order as for the whole block, so the numbers are
    bitwise those of deciding for every agent. Returns the new actions, how many agents
    switched, and the ``(T * k,)`` change in the counts of stage actions (only adopters
    change, so the new counts need no pass over the population).
    """
    capacity, size = spec.adopter_capacity, spec.block_size
    rows = -(-size // ev.EVENT_CHUNK)  # the mask in rows of a chunk, as compact wants
    tie_key = crng.stream_key(seed, stage, _TIE)
    slots = jnp.arange(capacity, dtype=jnp.int32)

    k, width = spec.num_actions, spec.num_types * spec.num_actions

    def one_block(block, state):
        start, index, current, valid, _ = _block(spec, actions, block)
        adopt = _adopts(params, seed, stage, index) & valid
        mask = jnp.pad(adopt, (0, rows * ev.EVENT_CHUNK - size)).reshape(rows, -1)
        order, total = ev.compact(mask, capacity)
        first = None if kept is None else _kept_row(kept, block)
        chunks = _block_chunks(spec, start)

        def one_window(carry):
            w, (new_actions, switched, changed) = carry
            position = jax.lax.dynamic_slice(order, (w * capacity,), (capacity,))
            on = w * capacity + slots < total
            # Each agent's column in this window, ``capacity`` for everyone else.
            column = (
                jnp.full(size, capacity, jnp.int32)
                .at[jnp.where(on, position, size)]
                .set(slots, mode="drop")
            )

            def column_of(events):
                inside = _in_block(spec, events, start)
                picked = column[jnp.where(inside, events.agent - start, 0)]
                return picked, inside & (picked < capacity)

            def keep(events):  # cheaper than the gather of column_of
                return _adopters_among(spec, params, seed, stage, events, start)

            agent = index[position]
            stage_action = current[position]
            sums, counts = _event_own_sums(
                spec,
                params,
                seed,
                stage,
                actions,
                chunks,
                column_of,
                (agent, stage_action, on, _types_of(spec, agent)),
                round_payoffs,
                stage_length,
                keep=keep,
                listed=first,
            )
            estimates = _own_estimates(sums, counts, samples)
            chosen = choose_candidates(crng.uniform(tie_key, agent), estimates, stage_action)
            # Into this shard's actions; -1 (dropped, not wrapped) for the empty columns: an
            # index past the end would not fit int32 when a shard holds 2**31 agents.
            target = jnp.where(on, block * size + position, -1)
            new_actions = new_actions.at[target].set(
                chosen.astype(actions.dtype), mode="drop", wrap_negative_indices=False
            )
            moved = on & (chosen != stage_action)
            cell = _types_of(spec, agent) * k
            changed = changed + _count(cell + chosen, moved, width)
            changed = changed - _count(cell + stage_action, moved, width)
            return w + 1, (new_actions, switched + jnp.sum(moved, dtype=jnp.int32), changed)

        more = lambda carry: carry[0] * capacity < total  # noqa: E731
        return jax.lax.while_loop(more, one_window, (jnp.int32(0), state))[1]

    start = (actions, jnp.int32(0), jnp.zeros(width, jnp.int32))
    return jax.lax.fori_loop(0, spec.local_blocks, one_block, start)


def _changes(spec: RunSpec, old: jax.Array, new: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Agents whose stage action changed, and ``(T * k,)`` counts of the new actions."""
    k, width = spec.num_actions, spec.num_types * spec.num_actions

    def one_block(block, state):
        switched, counts = state
        _, _, before, valid, types = _block(spec, old, block)
        after = jax.lax.dynamic_slice(new, (block * spec.block_size,), (spec.block_size,))
        after = after.astype(jnp.int32)
        switched = switched + jnp.sum((after != before) & valid, dtype=jnp.int32)
        return switched, counts + _count(types * k + after, valid, width)

    start = (jnp.int32(0), jnp.zeros(width, jnp.int32))
    return jax.lax.fori_loop(0, spec.local_blocks, one_block, start)


def _stage_action_counts(spec, actions):
    def one_block(block, counts):
        _, _, current, valid, _ = _block(spec, actions, block)
        return counts + _count(current, valid, spec.num_actions)

    return jax.lax.fori_loop(
        0, spec.local_blocks, one_block, jnp.zeros(spec.num_actions, jnp.int32)
    )


def fast_initial(spec: RunSpec, kind: str, payload: jax.Array, seed: jax.Array) -> jax.Array:
    """This shard's initial stage actions (:func:`action_dtype`) from counter-based draws
    (``payload``, for ``kind="actions"``, is this shard's part of the padded actions)."""
    size = spec.local_blocks * spec.block_size
    index = jnp.asarray(shard_start(spec), jnp.uint32) + jnp.arange(size, dtype=jnp.uint32)
    k = spec.num_actions
    if kind == "uniform":
        actions = crng.randint(crng.stream_key(seed, 0, _INIT), index, k)
    elif kind == "action":
        actions = jnp.full(index.shape, payload, jnp.int32)
    elif kind == "distribution":
        u = crng.uniform(crng.stream_key(seed, 0, _INIT), index)
        cumulative = jnp.cumsum(payload)
        if k <= UNROLLED_UP_TO_ACTIONS:
            actions = jnp.zeros(index.shape, jnp.int32)
            for j in range(k - 1):
                actions = actions + (u >= cumulative[j]).astype(jnp.int32)
        else:  # the same count of cumulative[j] <= u, by binary search
            actions = jnp.searchsorted(cumulative[: k - 1], u, side="right").astype(jnp.int32)
        # Never land on a zero-probability action through rounding of the last bucket.
        actions = jnp.minimum(actions, jnp.max(jnp.where(payload > 0, jnp.arange(k), 0)))
    else:
        actions = payload.astype(jnp.int32)
    return actions.astype(action_dtype(k))


def fast_counts_by_type(spec: RunSpec, actions: jax.Array) -> jax.Array:
    """``(T, k)`` counts of the stage actions, block by block (of every shard)."""
    k = spec.num_actions

    def one_block(block, counts):
        _, _, current, valid, types = _block(spec, actions, block)
        return counts + _count(types * k + current, valid, spec.num_types * k)

    counts = jax.lax.fori_loop(
        0, spec.local_blocks, one_block, jnp.zeros(spec.num_types * k, jnp.int32)
    )
    return _total(spec, counts).reshape(spec.num_types, k)
