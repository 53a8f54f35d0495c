"""Private information (MODEL.md section 3, ``info_sharing="private"``): the model logic of
each agent's own estimate, written once for both kernels.

A kernel draws the randomness its own way (the reference kernel with ``jax.random``, the
fast kernel with counter-based streams keyed by agent index) and hands the draws here:

* ``info="distribution"``: an agent's estimated counts ``n * d_hat_i``
  (:func:`estimated_counts`) from its own sample of ``m`` agents (its sample's action
  counts, ``Multinomial(m, d)``) and/or its own Gaussian noise, clipped and renormalised;
  then the payoffs of staying and of each alternative at those counts, with section 1's
  deviation (:func:`best_reply_payoffs`), which the stage-end argmax takes as estimates;
* ``info="payoffs"``: an agent pools its own observations with those of its own sample of
  ``m`` agents (:func:`pooled_estimates`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxstage.decisions import clip_and_renormalise, mean_or_unavailable
from jaxstage.games import AnonymousGame, Params
from jaxstage.metrics import deviation_payoffs

__all__ = [
    "PRIVATE_BATCH_FLOATS",
    "estimated_counts",
    "best_reply_payoffs",
    "pooled_estimates",
]

#: Agents per batch of the best-reply payoffs' loop (``lax.map``): each agent's deviation
#: payoffs are ``(T, k, k)`` values, so a batch holds about this many floats.
PRIVATE_BATCH_FLOATS = 2**22


def estimated_counts(
    population: jax.Array,
    num_agents: int,
    *,
    sample_counts: jax.Array | None,
    sample_size: int | None,
    noise: jax.Array | None,
    noise_std: jax.Array,
) -> jax.Array:
    """``(B, k)`` float32 counts ``n * d_hat_i`` of each agent's own estimate of the stage
    actions' distribution.

    Args:
        population: ``(k,)`` float32 counts of the stage actions.
        num_agents: ``n``.
        sample_counts: ``(B, k)`` action counts of each agent's own sample of
            ``sample_size`` agents (any numeric dtype), or ``None`` (no sample: ``d``).
        sample_size: ``m``, with ``sample_counts``.
        noise: ``(B, k)`` standard normals of each agent's own noise, or ``None``.
        noise_std: the noise's standard deviation (``info_noise_std``).
    """
    n = num_agents
    if sample_counts is None:  # noise alone (no noise and no sample is exact, shared)
        d_hat = jnp.broadcast_to(population / n, noise.shape)
    else:
        d_hat = sample_counts.astype(jnp.float32) / sample_size
    if noise is not None:
        d_hat = jax.vmap(clip_and_renormalise)(d_hat + noise_std * noise)
    return d_hat * n


def best_reply_payoffs(
    game: AnonymousGame,
    game_params: Params,
    counts: jax.Array,
    types: jax.Array,
    actions: jax.Array,
    num_agents: int,
) -> jax.Array:
    """``(k, B)`` payoffs ``u(t_i, b, max(c_i - e_a + e_b, 0) / n)`` of every agent ``i``
    (type ``t_i``, on ``a``) at its own estimated counts ``c_i`` (``(B, k)``): section 1's
    deviation (:func:`jaxstage.metrics.deviation_payoffs`), agent by agent, in batches of
    about :data:`PRIVATE_BATCH_FLOATS` floats."""
    size, k = counts.shape
    num_types = game.num_types

    def one_agent(row):
        own_counts, kind, current = row
        return deviation_payoffs(game, game_params, own_counts, num_agents)[kind, current]

    batch = max(1, PRIVATE_BATCH_FLOATS // (num_types * k * k))
    types = jnp.broadcast_to(jnp.asarray(types, jnp.int32), (size,))
    rows = (counts, types, actions.astype(jnp.int32))
    return jax.lax.map(one_agent, rows, batch_size=min(batch, size)).T


def pooled_estimates(
    own_sums: jax.Array,
    own_counts: jax.Array,
    sample_sums: jax.Array,
    sample_counts: jax.Array,
) -> jax.Array:
    """``(k, B)`` estimates of agents who pool their own observations (``(k, B)`` payoff
    sums and counts) with those of their own samples of agents, weighted by observation
    counts; ``-inf`` where neither observed an action (never chosen)."""
    return mean_or_unavailable(own_sums + sample_sums, own_counts + sample_counts)
