"""Whether a game's declared equilibria are equilibria: the ``equilibria`` check of
:func:`jaxstage.testing.check_game`, and :func:`equilibrium_gaps`.

An equilibrium is judged by the one-agent deviations of a large finite population
(MODEL.md section 1), so a discontinuous payoff is judged on the side a deviation lands
on. With agent types the check asks whether the types can be spread over the actions
so that every agent plays a best reply (Hall's condition).
"""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
import numpy as np

from jaxstage.game_base import AnonymousGame, Params
from jaxstage.game_checks import SHARE_SLACK, NotApplicableError, fail_check
from jaxstage.metrics import best_reply_gaps, deviation_payoffs

__all__ = ["MAX_HALL_SET", "equilibrium_gaps", "check_equilibria"]

#: Most subsets enumerated by the Hall condition of a typed equilibrium (2^16).
MAX_HALL_SET = 16


def equilibrium_gaps(
    game: AnonymousGame, params: Params, distribution: np.ndarray, num_agents: int
) -> np.ndarray:
    """Best deviation gain of each (type, action) at a distribution of ``num_agents``.

    The gains are those of MODEL.md section 1, ``max_b u(b, (c - e_a + e_b) / n) -
    u(a, c / n)``, at the real-valued counts ``c = n d``: a discontinuous payoff (the step
    of the minority game) is then judged on the side a deviation lands on, as for a
    finite population, without rounding ``d`` to counts of ``n`` agents.

    Args:
        game: the game.
        params: its numeric parameters.
        distribution: ``(num_actions,)`` the action distribution.
        num_agents: the population size ``n`` of a deviation ``1 / n``.

    Returns:
        ``(num_types, num_actions)`` float64 gains (``<= 0``: a best reply).
    """
    counts = jnp.asarray(np.asarray(distribution) * num_agents, jnp.float32)
    dev = deviation_payoffs(game, params, counts, num_agents)
    return np.asarray(best_reply_gaps(dev), dtype=np.float64)


def _hall_shortfall(shares: np.ndarray, demand: np.ndarray, allowed: np.ndarray) -> float:
    """Largest ``share(U) - demand(N(U))`` over sets of types ``U``, where ``N(U)`` are the
    actions some type of ``U`` may play: the types can be spread over the actions to
    give exactly ``demand`` iff it is ``<= 0`` (Hall's condition; both sides sum to 1)."""
    worst = -math.inf
    for size in range(1, len(shares) + 1):
        for group in itertools.combinations(range(len(shares)), size):
            reachable = np.any(allowed[list(group)], axis=0)
            worst = max(worst, shares[list(group)].sum() - demand[reachable].sum())
    return worst


def _check_one_equilibrium(game, params, index, equilibrium, tol, num_agents) -> None:
    eq = np.asarray(equilibrium, dtype=np.float64)
    where = f"equilibrium {index} {eq.tolist()}"
    if eq.shape != (game.num_actions,) or not np.all(np.isfinite(eq)):
        raise fail_check("equilibria", game, f"{where} must be {game.num_actions} finite shares")
    if np.any(eq < -SHARE_SLACK) or abs(eq.sum() - 1.0) > SHARE_SLACK:
        raise fail_check("equilibria", game, f"{where} is not in the simplex (>= 0, sum to 1)")
    gaps = equilibrium_gaps(game, params, np.clip(eq, 0.0, None), num_agents)
    allowed = gaps <= tol
    support = eq > SHARE_SLACK
    shares = np.asarray(game.type_shares, dtype=np.float64)
    if game.num_types == 1:
        bad = support & ~allowed[0]
        if np.any(bad):
            action = int(np.argmax(np.where(bad, gaps[0], -np.inf)))
            raise fail_check(
                "equilibria",
                game,
                f"{where}: action {action} is played but a deviation gains "
                f"{gaps[0, action]:.4g} > tolerance {tol}",
            )
        return
    if game.num_types > MAX_HALL_SET:
        raise NotApplicableError(f"more than {MAX_HALL_SET} types: equilibria not checked")
    shortfall = _hall_shortfall(shares, eq, allowed)
    if shortfall > SHARE_SLACK:
        raise fail_check(
            "equilibria",
            game,
            f"{where}: no split of the types over the actions makes every agent play a "
            f"best reply within tolerance {tol} (a set of types lacks {shortfall:.4g} of "
            f"the population on its best replies); gains by (type, action): {gaps.tolist()}",
        )


def check_equilibria(game: AnonymousGame, params: Params, tol: float, num_agents: int) -> None:
    """The ``equilibria`` check: every declared equilibrium lies in the simplex and is
    an equilibrium within payoff tolerance ``tol`` for ``num_agents`` agents."""
    equilibria = game.equilibria(params)
    if not equilibria:
        raise NotApplicableError("no equilibrium declared")
    for index, equilibrium in enumerate(equilibria):
        _check_one_equilibrium(game, params, index, equilibrium, tol, num_agents)
