"""The anonymous-game interface: :class:`AnonymousGame`, its parameters and types.

A game fixes shapes (number of actions, agent types) at construction and keeps its
numeric coefficients in a separate ``params`` dict of arrays, so that sweeps can vary
them (``jax.vmap``) without recompiling. Every payoff is a function of the *overall*
action distribution ``d = counts / n`` (anonymity); games with agent types return one
row of payoffs per type.

Conventions used throughout the package:

* ``expected_payoffs(params, distribution) -> (num_types, num_actions)``.
* Realised payoffs are the expected payoff of the agent's (type, action) plus noise drawn
  by ``realized_payoffs``; the default is additive Gaussian noise with std
  ``params["noise_std"]``.
* Agent types are assigned to contiguous blocks of agent indices by largest-remainder
  rounding of ``type_shares`` (see :func:`type_counts`); since payoffs are anonymous the
  order of agents carries no meaning.

The built-in games are in :mod:`jaxstage.builtin_games`, games from a payoff function in
:mod:`jaxstage.payoff_fn`; :mod:`jaxstage.games` gathers them all (import from there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage._validation import check_int, check_real

Params = dict[str, jax.Array]

#: Most actions a game may have. Stage actions are stored as int8 up to 128 actions and
#: as int16 beyond (``jaxstage.fast.action_dtype``). What bounds ``k`` is the metrics: the
#: deviation payoffs ``u(b, (c - e_a + e_b) / n)`` of MODEL.md section 1 evaluate the game
#: at ``k^2`` distributions per stage, ``k^3`` numbers (10^9 at 1024 actions).
MAX_ACTIONS = 1024

__all__ = [
    "AnonymousGame",
    "Params",
    "MAX_ACTIONS",
    "check_num_actions",
    "check_noise_std",
    "type_counts",
]


def check_num_actions(value: object, name: str = "num_actions") -> int:
    """An action count in ``[2, MAX_ACTIONS]``."""
    return check_int(value, name, low=2, high=MAX_ACTIONS)


def type_counts(type_shares: Sequence[float], num_agents: int) -> np.ndarray:
    """Numbers of agents of each type: largest-remainder rounding of ``shares * n``.

    Deterministic, sums exactly to ``num_agents``; ties in the remainders go to the lower
    type index.
    """
    shares = np.asarray(type_shares, dtype=np.float64)
    exact = shares * num_agents
    counts = np.floor(exact).astype(np.int64)
    missing = int(num_agents - counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:missing]] += 1
    return counts


class AnonymousGame:
    """Base class of an anonymous game.

    Subclasses set ``name``, ``num_actions`` and optionally ``type_shares`` and
    ``type_names``, and implement :meth:`expected_payoffs` and :meth:`default_params`.
    Override :meth:`realized_payoffs` for a noise model other than additive Gaussian.

    Attributes:
        name: registry name of the game.
        num_actions: number of actions ``k``, shared by all agents.
        type_shares: population shares of the agent types (sum to 1); ``(1.0,)`` means
            a game without types.
        action_names: optional labels for the actions, used in tables and plots.
        best_reply_note: what is known about best-reply dynamics in this game.
    """

    name: str = "game"
    num_actions: int = 2
    type_shares: tuple[float, ...] = (1.0,)
    action_names: tuple[str, ...] | None = None
    type_names: tuple[str, ...] | None = None
    best_reply_note: str = "unknown"

    @property
    def num_types(self) -> int:
        return len(self.type_shares)

    def default_params(self) -> Params:
        """The numeric (traced) parameters of this game, as a dict of float32 arrays."""
        return {"noise_std": jnp.asarray(0.0, jnp.float32)}

    def expected_payoffs(self, params: Params, distribution: jax.Array) -> jax.Array:
        """Expected payoff ``u(theta, a, d)`` of every type and action.

        Args:
            params: the game's numeric parameters (see :meth:`default_params`).
            distribution: ``(num_actions,)`` float, the overall action distribution.

        Returns:
            ``(num_types, num_actions)`` float array.
        """
        raise NotImplementedError

    def realized_payoffs(
        self,
        params: Params,
        key: jax.Array,
        expected: jax.Array,
        types: jax.Array,
        actions: jax.Array,
    ) -> jax.Array:
        """Realised payoff of each agent in one round, given that round's payoffs.

        Args:
            params: numeric parameters.
            key: PRNG key for this round's noise.
            expected: ``(num_types, num_actions)`` expected payoffs at this round's counts.
            types: ``(n,)`` int type of each agent (or a scalar 0 for untyped games).
            actions: ``(n,)`` int action each agent played this round.

        Returns:
            ``(n,)`` float32 realised payoffs; the default adds ``noise_std * N(0, 1)``.
        """
        mean = expected[types, actions]
        noise = jax.random.normal(key, actions.shape, dtype=mean.dtype)
        return mean + params["noise_std"] * noise

    def check_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Raise ``ValueError`` unless ``params`` (every entry of :meth:`default_params`,
        as host arrays, e.g. with overrides merged in) are values the constructor would
        accept. Games add their own constraints in :meth:`_param_errors`."""
        for name, value in params.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"game parameter {name!r} of game {self.name!r} must be finite, got "
                    f"{np.asarray(value).tolist()}"
                )
        problems = [("noise_std", ">= 0", np.asarray(params["noise_std"]) >= 0)]
        problems += self._param_errors(params)
        for name, allowed, ok in problems:
            if not np.all(ok):
                raise ValueError(
                    f"game parameter {name!r} of game {self.name!r} must be {allowed}, got "
                    f"{np.asarray(params[name]).tolist()}"
                )

    def _param_errors(self, params: Mapping[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
        """``(name, allowed range, ok)`` for each constraint beyond finiteness and
        ``noise_std >= 0`` (none by default)."""
        return []

    def uses_gaussian_noise(self) -> bool:
        """Whether realised payoffs are expected payoffs plus ``N(0, noise_std^2)`` noise.

        The fast kernel needs this (it draws the sum of an agent's noise over a stage in
        one go); it is true unless a subclass overrides :meth:`realized_payoffs`.
        """
        return type(self).realized_payoffs is AnonymousGame.realized_payoffs

    def lipschitz(self, params: Params | None = None) -> float | None:
        """Lipschitz constant ``L`` in ``|u(a,d) - u(a,d')| <= L ||d - d'||_1``, if known."""
        return None

    def equilibria(self, params: Params | None = None) -> list[np.ndarray]:
        """Known equilibrium action distributions (large-``n`` limit), each ``(num_actions,)``.

        Empty when none is known analytically: use :func:`jaxstage.solve_equilibrium`.
        """
        return []

    def param_docs(self) -> dict[str, str]:
        """One line of documentation per parameter accepted by the constructor."""
        return {}

    def describe(self) -> str:
        """A short human-readable description (used by ``jaxstage games``)."""
        doc = (type(self).__doc__ or "").strip().splitlines()
        return doc[0] if doc else self.name

    def config(self) -> dict[str, Any]:
        """Constructor arguments that recreate this game (recorded with results)."""
        return {"name": self.name}

    def static_key(self) -> tuple | None:
        """What, besides ``params``, fixes the compiled code of this game.

        Games are static arguments of the compiled kernels. Two games with equal keys
        share compiled code, so a new ``make_game(...)`` with other coefficients does not
        recompile. ``None`` (the default, safe for user subclasses whose attributes may
        enter ``expected_payoffs``) compares games by identity.
        """
        return None

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        key = self.static_key()
        return key is not None and type(other) is type(self) and other.static_key() == key

    def __hash__(self) -> int:
        key = self.static_key()
        return id(self) if key is None else hash((type(self), key))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def check_noise_std(noise_std: float) -> float:
    """A game's ``noise_std`` argument: a real ``>= 0``."""
    return check_real(noise_std, "noise_std", low=0.0)
