"""Equilibrium metrics computed from action counts alone (MODEL.md sections 1 and 5).

Everything here is exact for every population size: the payoff an agent would get by
deviating is evaluated at the deviation-adjusted counts ``c - e_a + e_b``, never at the
large-``n`` approximation ``c``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage.games import AnonymousGame, Params

__all__ = [
    "deviation_payoffs",
    "best_reply_gaps",
    "nash_gap",
    "best_reply_fraction",
    "CountMetrics",
    "count_metrics",
    "convergence_stage",
    "distance_to_equilibria",
]


#: Up to this many actions the deviation payoffs of every current action are evaluated
#: at once (``k^3`` values); beyond, one current action at a time.
VECTORISED_DEVIATIONS_UP_TO = 64


def deviation_payoffs(
    game: AnonymousGame, params: Params, counts: jax.Array, num_agents: int | jax.Array
) -> jax.Array:
    """Payoff of every (type, current action, alternative action) at the given counts.

    Args:
        game: the game.
        params: its numeric parameters.
        counts: ``(num_actions,)`` overall action counts (integers, or a real-valued
            estimate ``n * d_hat``).
        num_agents: the population size ``n``.

    Returns:
        ``dev`` of shape ``(num_types, k, k)`` with
        ``dev[t, a, b] = u(t, b, max(c - e_a + e_b, 0) / n)``; ``dev[t, a, a]`` is the
        payoff of staying. The clip at 0 only acts when ``c_a = 0`` (no agent to move).
    """
    k = counts.shape[-1]
    n = jnp.asarray(num_agents, jnp.float32)
    eye = jnp.eye(k, dtype=counts.dtype)

    def from_action(a_row: jax.Array) -> jax.Array:
        """``(T, k)`` payoffs of moving from the action of ``a_row`` (``e_a``) to each b."""
        # adjusted[b, :] = c - e_a + e_b, exact in integer arithmetic when counts are ints.
        adjusted = jnp.maximum(counts[None, :] - a_row[None, :] + eye, 0)
        payoffs = jax.vmap(lambda d: game.expected_payoffs(params, d))(
            adjusted.astype(jnp.float32) / n
        )  # payoffs[b, t, j]; keep j == b (the action switched to)
        return jnp.diagonal(payoffs, axis1=0, axis2=2)  # (t, b)

    if k <= VECTORISED_DEVIATIONS_UP_TO:
        switched = jax.vmap(from_action)(eye)  # (a, t, b)
    else:
        # One current action at a time: k^2 values live instead of k^3.
        switched = jax.lax.map(from_action, eye)
    return jnp.transpose(switched, (1, 0, 2))


def best_reply_gaps(dev: jax.Array) -> jax.Array:
    """``(num_types, k)`` gain of the best deviation for an agent of type t playing a."""
    return jnp.max(dev, axis=-1) - jnp.diagonal(dev, axis1=1, axis2=2)


def nash_gap(gaps: jax.Array, counts_by_type: jax.Array) -> jax.Array:
    """eps-Nash gap: the largest gain over (type, action) groups that have agents."""
    return jnp.max(jnp.where(counts_by_type > 0, gaps, -jnp.inf))


def best_reply_fraction(
    gaps: jax.Array, counts_by_type: jax.Array, eps: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Share of agents at an eps-best reply, overall and per type.

    An agent plays an eps-best reply when its best deviation gains at most ``eps``.

    Returns:
        ``(overall, by_type)`` with shapes ``()`` and ``(num_types,)``.
    """
    at_best = (gaps <= eps).astype(jnp.float32)
    counts = counts_by_type.astype(jnp.float32)
    per_type = jnp.sum(counts * at_best, axis=1)
    type_sizes = jnp.sum(counts, axis=1)
    overall = jnp.sum(per_type) / jnp.sum(type_sizes)
    return overall, per_type / jnp.maximum(type_sizes, 1.0)


class CountMetrics(NamedTuple):
    """Metrics of one population state, from its counts alone."""

    counts_by_type: jax.Array  # (num_types, k) int32
    expected_payoffs: jax.Array  # (num_types, k) float32, u(theta, a, c / n)
    nash_gap: jax.Array  # () float32
    best_reply_fraction: jax.Array  # () float32
    best_reply_fraction_by_type: jax.Array  # (num_types,) float32
    welfare: jax.Array  # () float32, mean expected payoff of the agents


def count_metrics(
    game: AnonymousGame,
    params: Params,
    counts_by_type: jax.Array,
    eps: float | jax.Array,
) -> CountMetrics:
    """All count-level metrics of MODEL.md section 5 for one state.

    Example:
        >>> import jax.numpy as jnp, jaxstage as js
        >>> game = js.make_game("minority", capacity=0.5, noise_std=0.0)
        >>> m = js.metrics.count_metrics(game, game.default_params(), jnp.array([[5, 5]]), 0.0)
        >>> float(m.best_reply_fraction)
        1.0
    """
    counts = jnp.sum(counts_by_type, axis=0)
    num_agents = jnp.sum(counts)
    dev = deviation_payoffs(game, params, counts, num_agents)
    gaps = best_reply_gaps(dev)
    expected = jnp.diagonal(dev, axis1=1, axis2=2)
    overall, by_type = best_reply_fraction(gaps, counts_by_type, eps)
    welfare = jnp.sum(counts_by_type * expected) / num_agents
    return CountMetrics(
        counts_by_type=counts_by_type,
        expected_payoffs=expected,
        nash_gap=nash_gap(gaps, counts_by_type),
        best_reply_fraction=overall,
        best_reply_fraction_by_type=by_type,
        welfare=welfare,
    )


def convergence_stage(
    in_equilibrium: Sequence[bool] | np.ndarray, hold_stages: int | None = None
) -> int | None:
    """First index from which the population stays in equilibrium.

    Args:
        in_equilibrium: one bool per recorded state (index 0 = initial state).
        hold_stages: ``None``: must hold until the end of the run; an integer ``h >= 1``:
            must hold for ``h`` consecutive states (the first such window counts), and
            the window must fit inside the run.

    Returns:
        The index, or ``None`` when the run never got there.

    Example:
        >>> convergence_stage([False, True, False, True, True])
        3
        >>> convergence_stage([False, True, False, True, True], hold_stages=1)
        1
    """
    flags = np.asarray(in_equilibrium, dtype=bool)
    if hold_stages is None:
        if flags.size == 0 or not flags[-1]:
            return None
        failures = np.flatnonzero(~flags)
        return 0 if failures.size == 0 else int(failures[-1] + 1)
    if hold_stages < 1:
        raise ValueError(f"hold_stages must be >= 1, got {hold_stages}")
    run = 0
    for index, flag in enumerate(flags):
        run = run + 1 if flag else 0
        if run == hold_stages:
            return index - hold_stages + 1
    return None


def distance_to_equilibria(
    distributions: np.ndarray, equilibria: Sequence[np.ndarray]
) -> np.ndarray | None:
    """L1 distance of each distribution (rows) to the nearest reference equilibrium."""
    if not equilibria:
        return None
    refs = np.stack([np.asarray(e, dtype=np.float64) for e in equilibria])
    gaps = np.abs(np.asarray(distributions, np.float64)[:, None, :] - refs[None]).sum(-1)
    return gaps.min(axis=1)
