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

This module runs a stage (:func:`fast_stage`) and draws the initial actions
(:func:`fast_initial`); the parts live in modules of their own, and the names other
modules use are re-exported here:

* :mod:`jaxstage.fast_layout`: block sizes, event and adopter capacities, the action
  dtype (plain Python: ``plan`` sizes a run with them before tracing);
* :mod:`jaxstage.fast_blocks`: agent blocks, shards (``shard_map``) and random streams;
* :mod:`jaxstage.fast_pass1`: pass 1, the counts by round, and the events kept for pass 2;
* :mod:`jaxstage.fast_pass2`: pass 2, each agent's own payoff sums
  (:mod:`jaxstage.fast_cell_sums`: how they are added on each backend);
* :mod:`jaxstage.fast_population`: the round payoffs, published information, shared
  candidates and the stage record, the same on every shard;
* :mod:`jaxstage.fast_adopters`: the adopter filter's decisions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxstage import counter_rng as crng
from jaxstage import events as ev
from jaxstage.decisions import UNROLLED_UP_TO_ACTIONS, StageRecord, choose_candidates
from jaxstage.fast_adopters import adopter_decisions
from jaxstage.fast_blocks import (
    AGENT_AXIS,
    INIT_STREAM,
    TIE_STREAM,
    actions_sharding,
    adopts,
    agent_block,
    agent_mesh,
    block_seed,
    block_words,
    count_total,
    count_values,
    on_shards,
    sampled_agents,
    shard_start,
    shard_total,
)
from jaxstage.fast_layout import (
    MAX_BLOCK_SLOTS,
    MAX_EVENT_BLOCK,
    action_dtype,
    adopter_capacity,
    adopter_event_capacity,
    choose_block_size,
    chunks_per_block,
    event_slots_per_block,
    kept_event_bytes,
    supports_fast,
)
from jaxstage.fast_pass1 import (
    TRANSITIONS_UP_TO_ACTIONS,
    KeptAdopterEvents,
    event_round_counts,
    kept_events_buffer,
    kept_row,
    round_counts,
)
from jaxstage.fast_pass2 import (
    ADOPTER_WINDOW_FRACTION,
    block_own_sums,
    own_estimates,
    sample_own_sums,
)
from jaxstage.fast_population import (
    SHARED_CANDIDATES_FROM_ACTIONS,
    StagePopulation,
    published_payoffs,
    shared_candidates,
    stage_population,
    stage_record,
)
from jaxstage.spec import RunSpec
from jaxstage.wide import Wide, wide_map

__all__ = [
    "fast_stage",
    "fast_initial",
    "fast_counts_by_type",
    # Re-exported from the modules above, for plan, engine, kernels and the agents path.
    # The thresholds are read where they are defined: setting one here changes nothing.
    "AGENT_AXIS",
    "actions_sharding",
    "agent_mesh",
    "on_shards",
    "action_dtype",
    "supports_fast",
    "choose_block_size",
    "chunks_per_block",
    "event_slots_per_block",
    "kept_event_bytes",
    "adopter_capacity",
    "adopter_event_capacity",
    "MAX_BLOCK_SLOTS",
    "MAX_EVENT_BLOCK",
    "ADOPTER_WINDOW_FRACTION",
    "TRANSITIONS_UP_TO_ACTIONS",
    "SHARED_CANDIDATES_FROM_ACTIONS",
    "KeptAdopterEvents",
    "kept_events_buffer",
    "StagePopulation",
    "stage_population",
    "published_payoffs",
    "shared_candidates",
    "stage_record",
]


def fast_stage(
    game,
    spec: RunSpec,
    params,
    actions: jax.Array,
    seed: jax.Array,
    stage: jax.Array,
    kept: ev.Walk | KeptAdopterEvents | None = None,
) -> tuple[jax.Array, ev.Walk | KeptAdopterEvents | None, jax.Array, StageRecord]:
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
        counts_by_round = round_counts(spec, params, seed, stage, actions, stage_length)
        counts_by_round = count_total(spec, counts_by_round)
    else:
        counts_by_round, stage_counts_by_type, kept = event_round_counts(
            spec, params, seed, stage, actions, stage_length, kept
        )
        stage_counts_by_type = shard_total(spec, stage_counts_by_type)
        # Every shard needs the whole population's counts; from here on, the round
        # payoffs and every population-level value are the same on all shards.
        counts_by_round = shard_total(spec, counts_by_round)
    population = stage_population(game, spec, params, seed, stage, counts_by_round)
    round_payoffs = population.round_payoffs
    action_sums, action_counts = population.action_sums, population.action_counts
    nonfinite = population.nonfinite

    if spec.event_capacity == 0:
        stage_counts = count_total(spec, _stage_action_counts(spec, actions))
    else:
        stage_counts = stage_counts_by_type.reshape(num_types, k).sum(axis=0)
    samples = None  # sampled payoffs: the sampled agents' (sums, counts), pooled into all
    if spec.info == "payoffs" and spec.info_sample_size is not None:
        samples = sample_own_sums(
            spec,
            params,
            seed,
            stage,
            actions=actions,
            sampled=sampled_agents(spec, seed, stage),
            round_payoffs=round_payoffs,
            stage_length=stage_length,
        )
    published = by_alternative = None
    if spec.info == "distribution":
        published, by_alternative, nonfinite = published_payoffs(
            game,
            spec,
            params,
            seed,
            stage,
            actions=actions,
            stage_counts=stage_counts,
            nonfinite=nonfinite,
        )

    if spec.filter_adopters:
        new_actions, switched, changed_counts = adopter_decisions(
            spec,
            params,
            seed,
            stage,
            actions=actions,
            kept=kept,
            round_payoffs=round_payoffs,
            stage_length=stage_length,
            samples=samples,
        )
        switched = shard_total(spec, switched)
        new_counts = stage_counts_by_type + shard_total(spec, changed_counts)
    else:
        shared = None if spec.needs_own_estimates else (action_sums, action_counts, by_alternative)

        def decide(block):
            block_view = agent_block(spec, actions, block)
            _, index, current, valid, types = block_view
            agents_seed = block_seed(spec, seed, block)
            first = None if kept is None else kept_row(kept, block)
            adopt = adopts(params, agents_seed, stage, index)
            ties = crng.uniform(crng.stream_key(agents_seed, stage, TIE_STREAM), index)
            if spec.needs_own_estimates:  # plain learning, sampled payoffs
                sums, counts = block_own_sums(
                    spec,
                    params,
                    agents_seed,
                    stage,
                    block=block_view,
                    round_payoffs=round_payoffs,
                    stage_length=stage_length,
                    first=first,
                )
                estimates = own_estimates(sums, counts, samples)
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
        switched, new_counts = _changes(spec, actions, new_actions)
        switched, new_counts = count_total(spec, switched), count_total(spec, new_counts)
    record = stage_record(spec, population, stage_length, switched, nonfinite, published)
    return new_actions, kept, _by_type(spec, new_counts), record


def _changes(spec: RunSpec, old: jax.Array, new: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Agents whose stage action changed, and ``(T * k,)`` counts of the new actions."""
    k, width = spec.num_actions, spec.num_types * spec.num_actions

    def one_block(block, state):
        switched, counts = state
        _, _, before, valid, types = agent_block(spec, old, block)
        after = jax.lax.dynamic_slice(new, (block * spec.block_size,), (spec.block_size,))
        after = after.astype(jnp.int32)
        switched = switched + jnp.sum((after != before) & valid, dtype=jnp.int32)
        return switched, counts + count_values(types * k + after, valid, width)

    start = (jnp.int32(0), jnp.zeros(width, jnp.int32))
    return jax.lax.fori_loop(0, spec.local_blocks, one_block, start)


def _by_type(spec: RunSpec, counts: jax.Array | Wide) -> jax.Array | Wide:
    """``(T * k,)`` counts (int32 or :class:`~jaxstage.wide.Wide`) as ``(T, k)``."""
    shape = (spec.num_types, spec.num_actions)
    if isinstance(counts, Wide):
        return wide_map(lambda words: words.reshape(shape), counts)
    return counts.reshape(shape)


def _stage_action_counts(spec, actions):
    def one_block(block, counts):
        _, _, current, valid, _ = agent_block(spec, actions, block)
        return counts + count_values(current, valid, spec.num_actions)

    return jax.lax.fori_loop(
        0, spec.local_blocks, one_block, jnp.zeros(spec.num_actions, jnp.int32)
    )


def fast_initial(spec: RunSpec, kind: str, payload: jax.Array, seed: jax.Array) -> jax.Array:
    """This shard's initial stage actions (:func:`action_dtype`) from counter-based draws
    (``payload``, for ``kind="actions"``, is this shard's part of the padded actions)."""
    size = spec.local_blocks * spec.block_size
    k, dtype = spec.num_actions, action_dtype(spec.num_actions)
    if kind == "action":
        return jnp.full(size, payload, jnp.int32).astype(dtype)
    if kind not in ("uniform", "distribution"):
        return payload.astype(jnp.int32).astype(dtype)
    if not spec.wide_counts:
        index = jnp.asarray(shard_start(spec), jnp.uint32) + jnp.arange(size, dtype=jnp.uint32)
        return _initial_draws(kind, payload, seed, index, k).astype(dtype)

    # Block by block, each with the high word of its agents' indices (one scalar): drawn
    # for the whole shard at once, the per-agent keys took more memory than the actions.
    def one_block(block, actions):
        high, low = block_words(spec, block)
        index = low + jnp.arange(spec.block_size, dtype=jnp.uint32)
        drawn = _initial_draws(kind, payload, crng.Seed(seed, high), index, k).astype(dtype)
        return jax.lax.dynamic_update_slice(actions, drawn, (block * spec.block_size,))

    return jax.lax.fori_loop(0, spec.local_blocks, one_block, jnp.zeros(size, dtype))


def _initial_draws(kind: str, payload: jax.Array, seed, index: jax.Array, k: int) -> jax.Array:
    """int32 initial actions of the agents of uint32 ``index``: uniform over the ``k``
    actions, or (``kind="distribution"``) from the distribution ``payload``."""
    if kind == "uniform":
        return crng.randint(crng.stream_key(seed, 0, INIT_STREAM), index, k)
    u = crng.uniform(crng.stream_key(seed, 0, INIT_STREAM), index)
    cumulative = jnp.cumsum(payload)
    if k <= UNROLLED_UP_TO_ACTIONS:
        actions = jnp.zeros(index.shape, jnp.int32)
        for j in range(k - 1):
            actions = actions + (u >= cumulative[j]).astype(jnp.int32)
    else:  # the same count of cumulative[j] <= u, by binary search
        actions = jnp.searchsorted(cumulative[: k - 1], u, side="right").astype(jnp.int32)
    # Never land on a zero-probability action through rounding of the last bucket.
    return jnp.minimum(actions, jnp.max(jnp.where(payload > 0, jnp.arange(k), 0)))


def fast_counts_by_type(spec: RunSpec, actions: jax.Array) -> jax.Array:
    """``(T, k)`` counts of the stage actions, block by block (of every shard)."""
    k = spec.num_actions

    def one_block(block, counts):
        _, _, current, valid, types = agent_block(spec, actions, block)
        return counts + count_values(types * k + current, valid, spec.num_types * k)

    counts = jax.lax.fori_loop(
        0, spec.local_blocks, one_block, jnp.zeros(spec.num_types * k, jnp.int32)
    )
    return _by_type(spec, count_total(spec, counts))
