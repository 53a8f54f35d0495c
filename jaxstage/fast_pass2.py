"""The fast kernel's pass 2: each agent's own payoff sums and observation counts.

With the round payoffs known from pass 1, pass 2 draws the same random numbers again
(every one is a pure function of its coordinates) to accumulate what each agent
observed: by exploration events (:func:`event_own_sums`; the stage action's sum is the
shared per-type sum over the rounds minus the rounds explored elsewhere, with one
``N(0, m sigma^2)`` for its noise) or, when exploration is too frequent for events, by
looping over the rounds (:func:`own_sums_by_rounds`). The events' payoffs are added into
cells as :mod:`jaxstage.fast_cell_sums` chooses for the backend.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxstage import counter_rng as crng
from jaxstage import events as ev
from jaxstage import exact_sum
from jaxstage.decisions import UNROLLED_UP_TO_ACTIONS, mean_or_unavailable
from jaxstage.fast_blocks import (
    EXPLORE_STREAM,
    OWN_NOISE_STREAM,
    AgentBlock,
    WideIndex,
    block_chunks,
    in_block,
    local_actions,
    played_actions,
    sampled_seed,
    shard_total,
    types_of,
)
from jaxstage.fast_cell_sums import (
    FLOAT_CELL_SUMS,
    CellSums,
    cell_sums_for_backend,
    fixed_point_cell_sums,
    payoff_bound,
)
from jaxstage.fast_layout import MAX_BLOCK_SLOTS
from jaxstage.spec import RunSpec

__all__ = [
    "ADOPTER_WINDOW_FRACTION",
    "event_own_sums",
    "materialised",
    "block_own_sums",
    "sample_own_sums",
    "own_sums_by_rounds",
    "own_estimates",
]


#: With ``spec.filter_adopters`` (``update_prob`` at most
#: ``plan.MAX_FILTERED_UPDATE_PROB``), pass 2 decides for the agents that adopt a
#: candidate this stage only (the others keep their action whatever they observed):
#: their events are gathered in order (so the sums are bitwise the same) into windows of
#: ``1 / ADOPTER_WINDOW_FRACTION`` of a batch's slots, one window when at most about 1/8
#: of the agents adopt.
ADOPTER_WINDOW_FRACTION = 8


def event_own_sums(
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    *,
    chunks: jax.Array,
    column_of: Callable[[ev.Events], tuple[jax.Array, jax.Array]],
    own: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    round_payoffs: jax.Array,
    stage_length: jax.Array,
    first: Callable[[], ev.Walk] | None = None,
    keep: Callable[[ev.Events], jax.Array] | None = None,
    listed: Callable[[], object] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Pass 2 from exploration events: ``(k, columns)`` payoff sums and observation counts.

    ``own = (index, stage_actions, valid, types)`` describes the agents of the columns;
    ``column_of(events)`` gives each event's column and whether it belongs to one;
    ``first`` returns the chunks' first batch when pass 1 kept it. ``keep(events)``, when
    given, is a cheap superset of the events that belong to a column: when few do, they
    are gathered (in order) before ``column_of`` and the accumulation. ``listed``, when
    given, returns pass 1's list of the first batch's events of a superset of the columns
    (:class:`KeptAdopterEvents`): they are added from it, and only later batches are drawn
    (all of them when the list overflowed).

    The events' payoffs are scatter-added into cells as :class:`CellSums` chooses for the
    backend (:func:`cell_sums_for_backend`): in float32 on a CPU, in fixed point
    elsewhere, so that no backend's sums depend on the order of its scatter-adds.
    """
    k, num_types = spec.num_actions, spec.num_types
    index, stage_actions, valid, types = own
    columns = index.shape[0]
    table = round_payoffs.reshape(-1)
    noise_std = params.game["noise_std"]

    def summed(cell_sums: CellSums):
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
            row = (events.round * num_types + types_of(spec, agent)) * k
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
            key=crng.stream_key(seed, stage, EXPLORE_STREAM),
            chunks=chunks,
            explore_prob=params.explore_prob[stage],
            stage_length=stage_length,
            capacity=spec.event_capacity,
            num_actions=k,
            consume=consume,
            state=start,
            first=first,
            resume=resume,
            materialise=listed is None,  # with the list, later batches are rare
        )
        return (*cell_sums.read(explored), *cell_sums.read(forgone))

    def in_fixed_point():
        bound = payoff_bound(round_payoffs, stage_length, noise_std)
        grid = exact_sum.scale(bound, exact_sum.layout(spec.max_stage_length))
        return summed(fixed_point_cell_sums(grid))

    sums, counts, lost, missing = cell_sums_for_backend(
        lambda: summed(FLOAT_CELL_SUMS), in_fixed_point
    )
    sums, counts = sums.reshape(k, columns), counts.reshape(k, columns)
    in_stage = (jnp.arange(spec.max_stage_length) < stage_length)[:, None, None]
    stage_totals = jnp.sum(jnp.where(in_stage, round_payoffs, 0.0), axis=0)  # (T, k)
    stayed = stage_length - missing

    def stage_action_sum():
        noise = crng.normal(crng.stream_key(seed, stage, OWN_NOISE_STREAM), index)
        return (
            stage_totals[types, stage_actions]
            - lost
            + noise_std * jnp.sqrt(stayed.astype(jnp.float32)) * noise
        )

    own_sum = materialised(stage_action_sum, stage_length)
    is_own = jnp.arange(k)[:, None] == stage_actions[None, :]
    sums = jnp.where(is_own, own_sum[None, :], sums)
    counts = jnp.where(is_own, stayed[None, :], counts)
    return sums, jnp.where(valid[None, :], counts, 0)


def materialised(compute: Callable[[], object], anchor: jax.Array) -> object:
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


def block_own_sums(
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    *,
    block: AgentBlock,
    round_payoffs: jax.Array,
    stage_length: jax.Array,
    first: Callable[[], ev.Walk] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Pass 2 for one block of agents, by events or by rounds."""
    start, index, stage_actions, valid, types = block
    if spec.event_capacity == 0:
        return own_sums_by_rounds(
            spec,
            params,
            seed,
            stage,
            index=index,
            stage_actions=stage_actions,
            valid=valid,
            types=types,
            round_payoffs=round_payoffs,
            stage_length=stage_length,
        )

    def column_of(events):
        return events.agent - start, in_block(spec, events, start)

    return event_own_sums(
        spec,
        params,
        seed,
        stage,
        chunks=block_chunks(spec, start),
        column_of=column_of,
        own=(index, stage_actions, valid, types),
        round_payoffs=round_payoffs,
        stage_length=stage_length,
        first=first,
    )


def sample_own_sums(
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    *,
    actions: jax.Array,
    sampled: jax.Array,
    round_payoffs: jax.Array,
    stage_length: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """``(k,)`` payoff sums and counts of the sampled agents' own observations."""
    if spec.event_capacity == 0:
        wide = isinstance(sampled, WideIndex)
        index, high = (sampled.low, sampled.high) if wide else (sampled.astype(jnp.uint32), None)
        sampled_actions, here = local_actions(spec, actions, sampled)
        sums, counts = own_sums_by_rounds(
            spec,
            params,
            sampled_seed(seed, sampled),
            stage,
            index=index,
            stage_actions=sampled_actions,
            valid=here,
            types=types_of(spec, index, high),
            round_payoffs=round_payoffs,
            stage_length=stage_length,
        )
        # Each sampled agent's sums come from the shard holding it (zeros elsewhere).
        sums = shard_total(spec, jnp.where(here[None, :], sums, 0.0))
        return sums.sum(axis=1), shard_total(spec, counts).sum(axis=1)

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
        member_actions, here = local_actions(spec, actions, members)
        member_real = member_real & here  # the members this shard holds
        own = (index, member_actions, member_real, types_of(spec, index))

        def column_of(events):
            mine = events.inside & (events.agent == members[:, None]) & member_real[:, None]
            return jnp.broadcast_to(rows, events.agent.shape), mine

        sums, counts = event_own_sums(
            spec,
            params,
            seed,
            stage,
            chunks=members // ev.EVENT_CHUNK,
            column_of=column_of,
            own=own,
            round_payoffs=round_payoffs,
            stage_length=stage_length,
        )
        # Each member's sums come from the shard holding it (zeros elsewhere): exact.
        sums = shard_total(spec, jnp.where(member_real[None, :], sums, 0.0))
        return totals[0] + sums.sum(axis=1), totals[1] + shard_total(spec, counts).sum(axis=1)

    k = spec.num_actions
    start = (jnp.zeros(k, jnp.float32), jnp.zeros(k, jnp.int32))
    return jax.lax.fori_loop(0, num_groups, one_group, start)


def own_sums_by_rounds(
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    *,
    index: jax.Array,
    stage_actions: jax.Array,
    valid: jax.Array,
    types: jax.Array,
    round_payoffs: jax.Array,
    stage_length: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Pass 2 for some agents: ``(k, B)`` payoff sums and observation counts."""
    k = spec.num_actions

    def one_round(r, totals):
        sums, counts = totals
        played = played_actions(seed, stage, r, index, stage_actions, params.explore_prob[stage], k)
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
        return crng.normal(crng.stream_key(seed, stage, OWN_NOISE_STREAM, a), index)

    if k > UNROLLED_UP_TO_ACTIONS:
        noise = jax.vmap(action_noise)(jnp.arange(k))
    else:
        noise = jnp.stack([action_noise(a) for a in range(k)])
    sums = sums + params.game["noise_std"] * jnp.sqrt(counts.astype(jnp.float32)) * noise
    return sums, jnp.where(valid[None, :], counts, 0)


def own_estimates(
    sums: jax.Array, counts: jax.Array, samples: tuple[jax.Array, jax.Array] | None
) -> jax.Array:
    """``(k, columns)`` own estimates, pooled with ``samples``, the sampled agents'
    ``(sums, counts)`` (sampled payoffs), when given."""
    if samples is not None:
        sums, counts = sums + samples[0][:, None], counts + samples[1][:, None]
    return mean_or_unavailable(sums, counts)
