"""The fast kernel's population-level values of a stage, the same on every shard.

From the whole population's counts by round (pass 1, summed over the shards): the round
payoffs, the population's payoff sums and their aggregated noise
(:func:`stage_population`), the published information of ``info="distribution"``
(:func:`published_payoffs`), the candidates of agents whose estimates are shared
(:func:`shared_candidates`) and the stage's record (:func:`stage_record`). The events,
rounds and agents paths (:mod:`jaxstage.agent_stage`) all use these, so their records
are computed alike.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import counter_rng as crng
from jaxstage.decisions import (
    StageRecord,
    choose_candidates,
    choose_shared_candidates,
    clip_and_renormalise,
    mean_or_unavailable,
)
from jaxstage.fast_blocks import (
    INFO_NOISE_STREAM,
    POP_NOISE_STREAM,
    count_values,
    local_actions,
    sampled_agents,
    shard_total,
)
from jaxstage.finiteness import first_nonfinite_round, nonfinite_counts, with_published_check
from jaxstage.games import AnonymousGame
from jaxstage.metrics import deviation_payoffs
from jaxstage.spec import RunSpec
from jaxstage.wide import Wide, wide_map, wide_sum, wide_to_float

__all__ = [
    "SHARED_CANDIDATES_FROM_ACTIONS",
    "StagePopulation",
    "stage_population",
    "published_counts",
    "published_payoffs",
    "shared_candidates",
    "stage_record",
]


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


class StagePopulation(NamedTuple):
    """A stage's population-level values from its counts by round (both fast paths)."""

    played_counts: jax.Array | Wide  # (R, k) played actions per round (int32, or Wide)
    round_payoffs: jax.Array  # (R, T, k) float32 expected payoffs per round
    action_counts: jax.Array  # (k,) float32 agent-rounds per action in the stage
    total_rounds: jax.Array  # () float32 agent-rounds in the stage
    action_sums: jax.Array  # (k,) float32 realised payoff sums per action
    nonfinite: jax.Array  # () int32 ``finiteness`` code of the round payoffs


def stage_population(
    game: AnonymousGame,
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    counts_by_round: jax.Array,
) -> StagePopulation:
    """Round payoffs, the population's payoff sums and their noise, from the whole
    population's ``(max_stage_length, T * k)`` counts of (type, played action)."""
    n, k, num_types = spec.num_agents, spec.num_actions, spec.num_types
    stage_length = params.stage_length[stage]
    shape = (spec.max_stage_length, num_types, k)
    in_stage = (jnp.arange(spec.max_stage_length) < stage_length)[:, None, None]
    if isinstance(counts_by_round, Wide):  # past 2**31 - 1 agents (``spec.wide_counts``)
        counts_by_round = wide_map(lambda words: words.reshape(shape), counts_by_round)
        played_counts = wide_sum(counts_by_round, 1)  # (R, k)
        played_fractions = wide_to_float(played_counts) / population_size(spec)
        counts_in_stage = wide_map(lambda words: jnp.where(in_stage, words, 0), counts_by_round)
        counts_by_round = wide_to_float(counts_by_round)  # only multiplied by payoffs below
    else:
        counts_by_round = counts_by_round.reshape(shape)
        played_counts = jnp.sum(counts_by_round, axis=1)  # (R, k)
        played_fractions = played_counts.astype(jnp.float32) / n
        counts_in_stage = jnp.where(in_stage, counts_by_round, 0)
    round_payoffs = jax.vmap(lambda d: game.expected_payoffs(params.game, d))(
        played_fractions
    )  # (R, T, k)
    # Agent-rounds per action reach n * stage_length, past int32: summed exactly in 64
    # bits, then float32 (exact to 2**24, as the int32 sum was where it did not overflow).
    action_rounds = wide_sum(counts_in_stage, (0, 1))  # (k,)
    action_counts = wide_to_float(action_rounds)
    total_rounds = wide_to_float(wide_sum(action_rounds, 0))
    nonfinite = first_nonfinite_round(round_payoffs, stage_length)
    population_noise = crng.normal(
        crng.stream_key(seed, stage, POP_NOISE_STREAM), jnp.arange(k, dtype=jnp.uint32)
    )
    action_sums = jnp.sum(jnp.where(in_stage, counts_by_round * round_payoffs, 0.0), axis=(0, 1))
    action_sums = (
        action_sums + params.game["noise_std"] * jnp.sqrt(action_counts) * population_noise
    )
    return StagePopulation(
        played_counts, round_payoffs, action_counts, total_rounds, action_sums, nonfinite
    )


def published_payoffs(
    game: AnonymousGame,
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    *,
    actions: jax.Array,
    stage_counts: jax.Array,
    nonfinite: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``info="distribution"``: the published counts ``n * d_hat``, the ``(k, T, k)``
    payoffs ``[b, type, current]`` of deviating to each ``b`` at them, and ``nonfinite``
    with their check."""
    published = published_counts(spec, params, seed, stage, actions, stage_counts)
    if isinstance(published, Wide):  # float32 counts: ``c - e_a + e_b`` rounds past 2**24
        published = wide_to_float(published)
    by_alternative = jnp.transpose(
        deviation_payoffs(game, params.game, published, spec.num_agents), (2, 0, 1)
    )  # (k, T, k): [b, type, current]
    return published, by_alternative, with_published_check(nonfinite, by_alternative)


def shared_candidates(
    spec: RunSpec,
    action_sums: jax.Array,
    action_counts: jax.Array,
    by_alternative: jax.Array | None,
    ties: jax.Array,
    types: jax.Array,
    current: jax.Array,
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
    spec: RunSpec,
    population: StagePopulation,
    stage_length: jax.Array,
    switched: jax.Array,
    nonfinite: jax.Array,
    published: jax.Array | None,
) -> StageRecord:
    """The stage's :class:`StageRecord` (``metrics`` left ``None``: the caller computes
    them from the new counts, outside ``shard_map``)."""
    played_counts = population.played_counts
    last_round = jnp.maximum(stage_length - 1, 0)
    if isinstance(played_counts, Wide):
        last = wide_map(lambda words: jnp.take(words, last_round, axis=0), played_counts)
    else:
        last = jnp.take(played_counts, last_round, axis=0)
    return StageRecord(
        metrics=None,  # from the new counts, by the caller (outside ``shard_map``)
        played_counts=last,
        switched_fraction=as_float(switched) / population_size(spec),
        realized_mean_payoff=jnp.sum(population.action_sums)
        / jnp.maximum(population.total_rounds, 1.0),
        nonfinite=nonfinite,
        nonfinite_counts=nonfinite_counts(nonfinite, as_float(played_counts), published),
    )


def population_size(spec: RunSpec) -> int | np.float32:
    """``n`` to divide or scale float32 values by: the Python int (a weak type JAX rounds
    to float32 itself), or past int32 its float32 (JAX cannot hold it as an integer)."""
    return np.float32(spec.num_agents) if spec.wide_counts else spec.num_agents


def as_float(counts: jax.Array | Wide) -> jax.Array:
    """float32 of int32 or :class:`~jaxstage.wide.Wide` counts (the same bits for the
    same integer below ``2**31``)."""
    return wide_to_float(counts) if isinstance(counts, Wide) else counts.astype(jnp.float32)


def published_counts(
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    actions: jax.Array,
    stage_counts: jax.Array,
) -> jax.Array:
    """``n * d_hat`` of the stage actions (exact integer counts when exact)."""
    n, k = population_size(spec), spec.num_actions
    if spec.info_sample_size is None and not spec.info_noisy:
        return stage_counts
    if spec.info_sample_size is None:
        d_hat = as_float(stage_counts) / n
    else:
        sampled, here = local_actions(spec, actions, sampled_agents(spec, seed, stage))
        d_hat = shard_total(spec, count_values(sampled, here, k)).astype(jnp.float32)
        d_hat = d_hat / spec.info_sample_size
    if spec.info_noisy:
        noise = crng.normal(
            crng.stream_key(seed, stage, INFO_NOISE_STREAM), jnp.arange(k, dtype=jnp.uint32)
        )
        d_hat = clip_and_renormalise(d_hat + params.info_noise_std * noise)
    return d_hat * n
