"""Pieces both kernels share: the stage-end decision rule and the per-stage record."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstage.metrics import CountMetrics

__all__ = [
    "StageRecord",
    "choose_candidates",
    "choose_shared_candidates",
    "mean_or_unavailable",
    "clip_and_renormalise",
]


class StageRecord(NamedTuple):
    """What is recorded at the end of each stage."""

    metrics: CountMetrics  # of the stage actions after the update
    played_counts: jax.Array  # (k,) int32, played actions in the stage's last round
    switched_fraction: jax.Array  # () float32
    realized_mean_payoff: jax.Array  # () float32, over all agent-rounds of the stage
    # () int32: 0 when every expected payoff of the stage was finite, else where it was
    # not, and the (k,) float32 counts there (``jaxstage.finiteness``).
    nonfinite: jax.Array
    nonfinite_counts: jax.Array


def choose_candidates(uniforms: jax.Array, estimates: jax.Array, current: jax.Array) -> jax.Array:
    """Argmax of each agent's estimates with the tie rule of MODEL.md section 2.

    Per-agent arrays are action-major, ``(k, n)``, and reductions over the few actions
    are unrolled into elementwise operations: on a CPU, XLA's reductions over a short
    axis are 10 to 50 times slower than that.

    Args:
        uniforms: ``(n,)`` uniforms in ``[0, 1)`` for tie-breaking.
        estimates: ``(k, n)`` payoff estimates, ``-inf`` for actions without an estimate.
        current: ``(n,)`` current stage actions.

    Returns:
        ``(n,)`` candidates: the current action if it ties for the best, otherwise one of
        the best actions drawn uniformly: the ``floor(u * num_tied)``-th of them for one
        uniform ``u`` per agent.
    """
    k = estimates.shape[0]
    if k > UNROLLED_UP_TO_ACTIONS:
        return _choose_candidates_vectorised(uniforms, estimates, current)
    best = estimates[0]
    for action in range(1, k):
        best = jnp.maximum(best, estimates[action])
    # Both in buffers of their own: fused into the choice below, XLA's CPU backend
    # evaluated ``best`` (and the k estimates under it) again at each of its 2k uses.
    estimates, best = jax.lax.optimization_barrier((estimates, best))
    tied = [estimates[action] == best for action in range(k)]
    num_tied = sum(t.astype(jnp.int32) for t in tied)
    keep = tied[0] & (current == 0)
    for action in range(1, k):
        keep = keep | (tied[action] & (current == action))
    # u < 1 in float32, so u * m < m for every m <= 2**24: the pick is a valid rank.
    pick = jnp.floor(uniforms * num_tied).astype(jnp.int32)
    drawn = jnp.zeros_like(current)
    rank = jnp.full(current.shape, -1, jnp.int32)
    for action in range(k):
        rank = rank + tied[action].astype(jnp.int32)
        drawn = jnp.where(tied[action] & (rank == pick), action, drawn).astype(current.dtype)
    return jnp.where(keep, current, drawn)


#: Up to this many actions loops over actions are unrolled into elementwise operations
#: (faster on a CPU at small k: :func:`choose_candidates`, and the fast kernel's per-round
#: sums, noise and initial draw); beyond, they reduce or vectorise over an action axis, so
#: that the program does not grow with k (1024 actions would unroll 1024 times).
UNROLLED_UP_TO_ACTIONS = 32


def _choose_candidates_vectorised(
    uniforms: jax.Array, estimates: jax.Array, current: jax.Array
) -> jax.Array:
    """:func:`choose_candidates` with reductions over the action axis: the same
    candidates (maxima, equalities and ranks are exact)."""
    tied = estimates == jnp.max(estimates, axis=0, keepdims=True)  # (k, n)
    num_tied = jnp.sum(tied, axis=0, dtype=jnp.int32)
    current32 = current.astype(jnp.int32)
    keep = jnp.take_along_axis(tied, current32[None, :], axis=0)[0]
    pick = jnp.floor(uniforms * num_tied).astype(jnp.int32)
    rank = jnp.cumsum(tied, axis=0, dtype=jnp.int32) - 1
    hit = tied & (rank == pick[None, :])
    drawn = jnp.argmax(hit, axis=0).astype(current.dtype)
    return jnp.where(keep, current, drawn)


def choose_shared_candidates(
    uniforms: jax.Array, cell_estimates: jax.Array, cell: jax.Array, current: jax.Array
) -> jax.Array:
    """:func:`choose_candidates` for agents whose estimates depend only on a few cells
    (published payoffs: one cell; the distribution: one per type and current action).

    The tied set and its order are computed once per cell, so each agent costs a few
    lookups instead of ``O(k)`` operations, and the program does not grow with ``k``.
    The candidates are exactly those of :func:`choose_candidates` on the same uniforms.

    Args:
        uniforms: ``(n,)`` uniforms in ``[0, 1)`` for tie-breaking.
        cell_estimates: ``(cells, k)`` payoff estimates of each cell.
        cell: ``(n,)`` each agent's cell.
        current: ``(n,)`` current stage actions.
    """
    k = cell_estimates.shape[1]
    tied = cell_estimates == jnp.max(cell_estimates, axis=1, keepdims=True)
    num_tied = jnp.sum(tied, axis=1, dtype=jnp.int32)
    # ordered[c, r]: the tied action of rank r (counted in increasing order) in cell c.
    rank = jnp.where(tied, jnp.cumsum(tied, axis=1, dtype=jnp.int32) - 1, k)  # k: dropped
    cells = jnp.arange(tied.shape[0])[:, None]
    actions = jnp.broadcast_to(jnp.arange(k, dtype=current.dtype), tied.shape)
    ordered = jnp.zeros(tied.shape, current.dtype).at[cells, rank].set(actions, mode="drop")
    keep = tied.ravel()[cell * k + current]
    pick = jnp.floor(uniforms * num_tied[cell]).astype(jnp.int32)
    return jnp.where(keep, current, ordered.ravel()[cell * k + pick])


def mean_or_unavailable(sums: jax.Array, counts: jax.Array) -> jax.Array:
    """Average payoff per action, ``-inf`` (never chosen) where nothing was observed."""
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1), -jnp.inf)


def clip_and_renormalise(noisy: jax.Array) -> jax.Array:
    """A noisy distribution clipped at 0 and renormalised; uniform if everything clips."""
    k = noisy.shape[-1]
    clipped = jnp.maximum(noisy, 0.0)
    total = jnp.sum(clipped)
    return jnp.where(total > 0, clipped / jnp.where(total > 0, total, 1.0), 1.0 / k)
