"""The reference kernel: one stage of rounds and its stage-end update, as MODEL.md
sections 2 and 3 read.

It is the readable implementation of the model (and the oracle of any faster path).
Three kinds of input are kept apart:

* a static :class:`~jaxstage.spec.RunSpec` that fixes shapes and code paths (population,
  actions, types, information mode, sample size, number of stages): changing it
  recompiles;
* traced :class:`~jaxstage.spec.RunParams` (game coefficients, per-stage exploration and
  stage lengths, inertia, information noise, eps): changing them does not recompile, and
  sweeps batch over them;
* the random key. Randomness is keyed by (seed, stage, round): the key of round ``r`` of
  stage ``s`` is ``fold_in(fold_in(fold_in(stages_key, s), 0), r)``, so a run's numbers
  do not depend on how its stages are chunked or split between calls.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstage import events, private_info
from jaxstage.decisions import (
    StageRecord,
    choose_candidates,
    clip_and_renormalise,
    mean_or_unavailable,
)
from jaxstage.finiteness import (
    PRIVATE_ESTIMATE,
    PUBLISHED,
    first_bad_estimate,
    with_published_check,
)
from jaxstage.games import AnonymousGame, Params
from jaxstage.metrics import (
    count_metrics,
    deviation_payoffs,
)
from jaxstage.spec import RunParams, RunSpec
from jaxstage.wide import Wide, wide_add, wide_from_counts, wide_sum, wide_to_float, wide_zeros

ACTION_DTYPE = jnp.int32


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


def counts_by_type_of(spec: RunSpec, actions: jax.Array, types: jax.Array | None) -> jax.Array:
    k = spec.num_actions
    if types is None:
        return jnp.bincount(actions, length=k).astype(jnp.int32)[None, :]
    flat = types * k + actions.astype(jnp.int32)
    return jnp.bincount(flat, length=spec.num_types * k).astype(jnp.int32).reshape(-1, k)


def payoff_sums(played: jax.Array, payoffs: jax.Array, k: int) -> jax.Array:
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
            action_sums=totals.action_sums + payoff_sums(played, payoffs, k),
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


def _private_counts(spec, params, key, population):
    """``(n, k)`` float32 counts ``n * d_hat_i`` of every agent's own estimate of the
    stage actions' distribution (``info_sharing="private"``, :mod:`jaxstage.private_info`):
    its own sample of ``m`` agents drawn with replacement, whose counts are
    ``Multinomial(m, d)`` (drawn as such, ``O(k)`` per agent instead of ``m`` draws),
    and/or its own Gaussian noise."""
    n, k = spec.num_agents, spec.num_actions
    sample_key, noise_key = jax.random.split(key)
    sample = None
    if spec.info_sample_size is not None:
        d = population / n
        sample = jax.random.multinomial(sample_key, spec.info_sample_size, d, shape=(n, k))
    noise = jax.random.normal(noise_key, (n, k)) if spec.info_noisy else None
    return private_info.estimated_counts(
        population,
        n,
        sample_counts=sample,
        sample_size=spec.info_sample_size,
        noise=noise,
        noise_std=params.info_noise_std,
    )


def _private_sample_sums(spec, key, totals: RoundTotals):
    """``(k, n)`` payoff sums and observation counts of every agent's own sample of ``m``
    agents drawn with replacement (``info="payoffs"``, ``info_sharing="private"``): ``m``
    gathers per agent, ``O(n m k)`` per stage."""
    n, k, m = spec.num_agents, spec.num_actions, spec.info_sample_size

    def one_agent(agent):
        sampled = jax.random.randint(jax.random.fold_in(key, agent), (m,), 0, n)
        return totals.own_sums[:, sampled].sum(axis=1), totals.own_counts[:, sampled].sum(axis=1)

    batch = max(1, private_info.PRIVATE_BATCH_FLOATS // (k * m))
    sums, counts = jax.lax.map(one_agent, jnp.arange(n), batch_size=min(batch, n))
    return sums.T, counts.T


def _stage_end_estimates(game, spec, params, key, actions, agent_types, totals: RoundTotals):
    """``(k, n)`` per-agent payoff estimates for the stage-end argmax (MODEL.md 2-3), and
    with ``info="distribution"`` the published counts and the ``(T, k, k)`` payoffs at
    them (``None`` otherwise; with private estimates every agent's ``(n, k)`` estimated
    counts and ``None``)."""
    n = spec.num_agents
    if spec.info != "distribution":
        return _estimates_from_payoffs(spec, key, totals), None, None
    if spec.info_private:
        population = jnp.bincount(actions, length=spec.num_actions).astype(jnp.float32)
        own = _private_counts(spec, params, key, population)
        scores = private_info.best_reply_payoffs(
            game, params.game, own, agent_types, actions, spec.num_agents
        )
        return scores, own, None
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
        if spec.info_private:
            sample_sums, sample_counts = _private_sample_sums(spec, key, totals)
        else:
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
    if spec.info_private and spec.info == "distribution":  # ``published``: own estimates
        bad, _, at = first_bad_estimate(estimates, published)
        nonfinite = jnp.where((nonfinite == 0) & bad, PRIVATE_ESTIMATE, nonfinite)
        nonfinite_at = jnp.where(nonfinite == PRIVATE_ESTIMATE, at, nonfinite_at)
    elif dev is not None:
        nonfinite = with_published_check(nonfinite, dev)
        nonfinite_at = jnp.where(nonfinite == PUBLISHED, published, nonfinite_at)
    candidates = choose_candidates(jax.random.uniform(tie_key, actions.shape), estimates, actions)
    adopt = jax.random.uniform(update_key, actions.shape) < params.update_prob
    new_actions = jnp.where(adopt, candidates, actions)

    metrics = count_metrics(
        game, params.game, counts_by_type_of(spec, new_actions, types), params.eps
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


def scan_stages(spec, stage_fn, actions, first_stage):
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


def run_chunk(game, spec, params, actions, types, stages_key, first_stage):
    def stage_fn(a, stage):
        return run_stage(game, spec, params, a, types, stages_key, stage)

    return scan_stages(spec, stage_fn, actions, first_stage)


def initial_actions(spec: RunSpec, kind: str, payload: jax.Array, key: jax.Array):
    n, k = spec.num_agents, spec.num_actions
    if kind == "uniform":
        return jax.random.randint(key, (n,), 0, k, dtype=ACTION_DTYPE)
    if kind == "action":
        return jnp.full((n,), payload, dtype=ACTION_DTYPE)
    if kind == "distribution":
        logits = jnp.where(payload > 0, jnp.log(jnp.maximum(payload, 1e-30)), -jnp.inf)
        return jax.random.categorical(key, logits, shape=(n,)).astype(ACTION_DTYPE)
    return payload.astype(ACTION_DTYPE)


def initial_state(game, spec, params, kind, payload, types, seed_key):
    init_key, stages_key = jax.random.split(seed_key)
    actions = initial_actions(spec, kind, payload, init_key)
    metrics = count_metrics(game, params.game, counts_by_type_of(spec, actions, types), params.eps)
    return actions, stages_key, metrics
