"""Any learner of :mod:`jaxstage.learner_interface` on the reference kernel's round.

The round is the reference kernel's (:mod:`jaxstage.reference`): the learner chooses the
played actions, their counts give the expected payoffs, the game draws the realised
payoffs, and every agent observes its own. Random numbers are keyed as there: round ``r``
of stage ``s`` has key ``k_r = fold_in(fold_in(fold_in(stages_key, s), 0), r)``, split
in three: the first two are the learner's ``play`` keys, the third the payoff noise's;
``fold_in(k_r, 3)`` is ``observe``'s. A stage end has ``fold_in(fold_in(stages_key, s),
1)``. So :class:`~jaxstage.StageLearning` run through its hooks here gives the
reference kernel's numbers bit for bit (``tests/test_learners.py``).

The state the engine carries is the learner's state pytree; its ``actions`` field (the
current actions) is what the metrics of each recorded state are computed from.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxstage.decisions import StageRecord
from jaxstage.finiteness import LEARNER_STATE
from jaxstage.metrics import count_metrics
from jaxstage.reference import ACTION_DTYPE, counts_by_type_of, initial_actions, payoff_sums
from jaxstage.spec import RunParams, RunSpec
from jaxstage.wide import Wide, wide_add, wide_from_counts, wide_sum, wide_to_float, wide_zeros

__all__ = ["initial_state", "run_stage", "run_chunk"]


class Totals(NamedTuple):
    """What a stage's rounds accumulate besides the learner's state."""

    action_sums: jax.Array  # (k,) float32 payoff sums per played action
    action_counts: Wide  # (k,) agent-rounds per action
    last_counts: jax.Array  # (k,) int32 counts of the latest round
    nonfinite: jax.Array  # () int32, jaxstage.finiteness
    nonfinite_counts: jax.Array  # (k,) float32


def _learner_params(params: RunParams) -> dict:
    return {} if params.learner is None else params.learner


def _play_rounds(game, spec: RunSpec, params: RunParams, rounds_key, state, agent_types, stage):
    learner, n, k = spec.learner, spec.num_agents, spec.num_actions
    hyper = _learner_params(params)
    explore_prob = params.explore_prob[stage]

    def one_round(r, carry):
        state, totals = carry
        key = jax.random.fold_in(rounds_key, r)
        explore_key, action_key, noise_key = jax.random.split(key, 3)
        played = learner.play(hyper, state, (explore_key, action_key), explore_prob)
        counts = jnp.bincount(played, length=k).astype(jnp.int32)
        expected = game.expected_payoffs(params.game, counts.astype(jnp.float32) / n)
        payoffs = game.realized_payoffs(params.game, noise_key, expected, agent_types, played)
        payoffs = payoffs.astype(jnp.float32)
        state = learner.observe(
            hyper, state, jax.random.fold_in(key, 3), played, payoffs, explore_prob
        )
        first_bad = (totals.nonfinite == 0) & ~jnp.all(jnp.isfinite(expected))
        totals = Totals(
            action_sums=totals.action_sums + payoff_sums(played, payoffs, k),
            action_counts=wide_add(totals.action_counts, wide_from_counts(counts)),
            last_counts=counts,
            nonfinite=jnp.where(first_bad, r + 1, totals.nonfinite),
            nonfinite_counts=jnp.where(
                first_bad, counts.astype(jnp.float32), totals.nonfinite_counts
            ),
        )
        return state, totals

    start = Totals(
        action_sums=jnp.zeros(k, jnp.float32),
        action_counts=wide_zeros(k),
        last_counts=jnp.zeros(k, jnp.int32),
        nonfinite=jnp.int32(0),
        nonfinite_counts=jnp.zeros(k, jnp.float32),
    )
    return jax.lax.fori_loop(0, params.stage_length[stage], one_round, (state, start))


def run_stage(
    game, spec: RunSpec, params: RunParams, state: Any, types, stages_key, stage
) -> tuple[Any, StageRecord]:
    """One stage: ``stage_length[stage]`` rounds, the learner's stage end, the metrics of
    the current actions."""
    stage_key = jax.random.fold_in(stages_key, stage)
    rounds_key, end_key = jax.random.fold_in(stage_key, 0), jax.random.fold_in(stage_key, 1)
    agent_types = jnp.int32(0) if types is None else types
    before = state.actions
    state, totals = _play_rounds(game, spec, params, rounds_key, state, agent_types, stage)
    state = spec.learner.end_stage(_learner_params(params), state, end_key, params.update_prob)
    nonfinite = jnp.where(
        (totals.nonfinite == 0) & ~spec.learner.state_is_finite(state),
        LEARNER_STATE,
        totals.nonfinite,
    ).astype(jnp.int32)
    metrics = count_metrics(
        game, params.game, counts_by_type_of(spec, state.actions, types), params.eps
    )
    record = StageRecord(
        metrics=metrics,
        played_counts=totals.last_counts,
        switched_fraction=jnp.mean((state.actions != before).astype(jnp.float32)),
        realized_mean_payoff=jnp.sum(totals.action_sums)
        / jnp.maximum(wide_to_float(wide_sum(totals.action_counts, 0)), 1.0),
        nonfinite=nonfinite,
        nonfinite_counts=jnp.where(
            nonfinite == LEARNER_STATE, totals.last_counts, totals.nonfinite_counts
        ).astype(jnp.float32),
    )
    return state, record


def initial_state(game, spec: RunSpec, params: RunParams, kind, payload, types, seed_key):
    """The learner's state at stage 0 (initial actions drawn as the reference kernel
    draws them), the stages' key and the metrics of its current actions."""
    init_key, stages_key = jax.random.split(seed_key)
    actions = initial_actions(spec, kind, payload, init_key).astype(ACTION_DTYPE)
    state = spec.learner.init_state(_learner_params(params), actions, spec.num_actions)
    counts = counts_by_type_of(spec, state.actions, types)
    return state, stages_key, count_metrics(game, params.game, counts, params.eps)


def run_chunk(game, spec: RunSpec, params: RunParams, state, types, stages_key, first_stage):
    from jaxstage.reference import scan_stages

    def stage_fn(current, stage):
        return run_stage(game, spec, params, current, types, stages_key, stage)

    return scan_stages(spec, stage_fn, state, first_stage)
