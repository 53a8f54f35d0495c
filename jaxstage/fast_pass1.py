"""The fast kernel's pass 1: every round's counts of (type, played action).

A round's payoffs depend on that round's counts only, so pass 1 counts the whole
population's played actions in every round of the stage before any payoff is known
(:func:`round_counts` draws every agent-round; :func:`event_round_counts` starts from
the stage actions and moves the counts by the exploration events of
:mod:`jaxstage.events`). On the events path it also keeps each block's first batch of
events for pass 2 (:func:`kept_events_buffer`; with the adopter filter, the adopting
agents' events only: :class:`KeptAdopterEvents`), so that pass 2 need not draw them again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstage import counter_rng as crng
from jaxstage import events as ev
from jaxstage.fast_blocks import (
    EXPLORE_STREAM,
    adopters_among,
    agent_block,
    block_chunks,
    block_seed,
    count_values,
    in_block,
    played_actions,
    types_of,
)
from jaxstage.fast_layout import chunks_per_block
from jaxstage.spec import RunSpec

__all__ = [
    "TRANSITIONS_UP_TO_ACTIONS",
    "KeptAdopterEvents",
    "kept_events_buffer",
    "kept_row",
    "round_counts",
    "event_round_counts",
    "adopters_events",
]


#: Pass 1 counts each round's (type, own action, drawn action) transitions with one
#: scatter up to this many actions (a table of ``rounds * T * k^2`` cells), instead of two
#: scatters (departures, arrivals) into ``rounds * T * k``; the counts are the same.
#: Alternating runs (10 stages of 2^20 agents, stage length 50, best of 4 each, ad hoc
#: script): 1.06 to 1.18 times as fast at k = 8 (one and two devices) and k = 2, 1.01 and
#: 1.04 at k = 16; at k = 32, 1.14 and 0.89 (inconclusive: two scatters stay).
TRANSITIONS_UP_TO_ACTIONS = 16


def round_counts(
    spec: RunSpec, params, seed: jax.Array, stage: jax.Array, actions: jax.Array, stage_length
) -> jax.Array:
    """Pass 1: ``(max_stage_length, T * k)`` counts of (type, played action) per round."""
    k, width = spec.num_actions, spec.num_types * spec.num_actions

    def one_block(block, counts):
        _, index, stage_actions, valid, types = agent_block(spec, actions, block)
        agents_seed = block_seed(spec, seed, block)

        def one_round(r, counts):
            played = played_actions(
                agents_seed, stage, r, index, stage_actions, params.explore_prob[stage], k
            )
            return counts.at[r].add(count_values(types * k + played, valid, width))

        return jax.lax.fori_loop(0, stage_length, one_round, counts)

    start = jnp.zeros((spec.max_stage_length, width), jnp.int32)
    return jax.lax.fori_loop(0, spec.local_blocks, one_block, start)


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


def kept_row(kept: ev.Walk | KeptAdopterEvents, block: jax.Array) -> Callable[[], object]:
    """A thunk reading block ``block``'s kept first batch (``first`` of ``for_each_batch``)."""
    return lambda: jax.tree.map(lambda all_: all_[block], kept)


def event_round_counts(
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    actions: jax.Array,
    stage_length,
    kept: ev.Walk | KeptAdopterEvents | None,
) -> tuple[jax.Array, jax.Array, ev.Walk | KeptAdopterEvents | None]:
    """Pass 1 from exploration events: stage-action counts in every round, moved by events,
    the ``(T * k,)`` stage-action counts, and ``kept`` (:func:`kept_events_buffer`) holding
    each block's first batch of events."""
    k, width, rounds = spec.num_actions, spec.num_types * spec.num_actions, spec.max_stage_length
    key = crng.stream_key(seed, stage, EXPLORE_STREAM)
    # Up to TRANSITIONS_UP_TO_ACTIONS actions, one scatter counts each round's (type, own
    # action, drawn action) transitions; else two scatters move the counts directly.
    transitions = k <= TRANSITIONS_UP_TO_ACTIONS
    unused = rounds * width * (k if transitions else 1)  # collects masked-out updates

    def one_block(block, state):
        base, moves, kept = state
        start, _, stage_actions, valid, types = agent_block(spec, actions, block)
        base = base + count_values(types * k + stage_actions, valid, width)
        chunks = block_chunks(spec, start)

        def consume(events, moves):
            ok = in_block(spec, events, start)
            agent = jnp.where(ok, events.agent, 0)
            # From the block's int32 stage actions: a 32-bit gather is vectorised, the
            # int8 gather from the population is not.
            own = stage_actions[jnp.where(ok, events.agent - start, 0)]
            cell = events.round * width + types_of(spec, agent) * k
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
                    one = adopters_events(spec, params, seed, stage, start, walk, events)
                kept = jax.tree.map(
                    lambda all_, one: jax.lax.dynamic_update_index_in_dim(all_, one, row, 0),
                    kept,
                    one,
                )
                return moves, kept

        moves, kept = ev.for_each_batch(
            key=key,
            chunks=chunks,
            explore_prob=explore_prob,
            stage_length=stage_length,
            capacity=spec.event_capacity,
            num_actions=k,
            consume=lambda events, state: (consume(events, state[0]), state[1]),
            state=(moves, kept),
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


def adopters_events(
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    start: jax.Array,
    walk: ev.Walk,
    events: ev.Events,
) -> KeptAdopterEvents:
    """The events of one batch that belong to adopting agents of the block starting at
    ``start``, listed in slot order (the order pass 2 adds them in)."""
    adopting = adopters_among(spec, params, seed, stage, events, start)
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
