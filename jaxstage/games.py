"""Large anonymous games: expected payoffs from the action distribution, plus noise.

A game's shapes, parameters, payoff and noise conventions are described once, in
:mod:`jaxstage.game_base`.

This module is where games are imported from; it gathers the interface
(:mod:`jaxstage.game_base`: :class:`AnonymousGame`, :func:`type_counts`), the built-in
games (:mod:`jaxstage.builtin_games`), games from a payoff function
(:mod:`jaxstage.payoff_fn`) and holds the registry of built-in games by name
(:data:`GAMES`, :func:`make_game`).

Example:
    >>> import jax.numpy as jnp
    >>> import jaxstage as js
    >>> game = js.games.from_payoff_fn(lambda d: -d, num_actions=3, noise_std=0.1)
    >>> game.expected_payoffs(game.default_params(), jnp.ones(3) / 3).shape
    (1, 3)
"""

from __future__ import annotations

from typing import Any

from jaxstage.builtin_games import (
    BeautyContest,
    Congestion,
    Minority,
    RandomLinear,
    TechnologyAdoption,
)
from jaxstage.game_base import (
    MAX_ACTIONS,
    AnonymousGame,
    Params,
    check_num_actions,
    type_counts,
)
from jaxstage.payoff_fn import PayoffFn, PayoffFnGame, from_payoff_fn

__all__ = [
    "AnonymousGame",
    "Congestion",
    "Minority",
    "BeautyContest",
    "TechnologyAdoption",
    "RandomLinear",
    "PayoffFnGame",
    "from_payoff_fn",
    "make_game",
    "list_games",
    "type_counts",
    "GAMES",
    "MAX_ACTIONS",
    "check_num_actions",
    "Params",
    "PayoffFn",
]


GAMES: dict[str, type[AnonymousGame]] = {
    "congestion": Congestion,
    "minority": Minority,
    "beauty_contest": BeautyContest,
    "adoption": TechnologyAdoption,
    "random_linear": RandomLinear,
}


def list_games() -> list[str]:
    """Names accepted by :func:`make_game`."""
    return sorted(GAMES)


def make_game(name: str, **params: Any) -> AnonymousGame:
    """Build a built-in game by name.

    Args:
        name: one of :func:`list_games`.
        **params: the game's constructor arguments (see ``jaxstage games``).

    Raises:
        ValueError: for an unknown name (the message lists the valid names) or a bad
            parameter value.
        TypeError: for a parameter the game does not take.

    Example:
        >>> import jaxstage as js
        >>> js.make_game("congestion", num_actions=3).num_actions
        3
    """
    if name not in GAMES:
        raise ValueError(f"unknown game {name!r}; valid names: {', '.join(list_games())}")
    cls = GAMES[name]
    try:
        return cls(**params)
    except TypeError as error:
        valid = ", ".join(cls().param_docs())
        raise TypeError(f"game {name!r}: {error}; valid parameters: {valid}") from error
