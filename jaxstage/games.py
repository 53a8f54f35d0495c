"""Large anonymous games: expected payoffs from the action distribution, plus noise.

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

Example:
    >>> import jax.numpy as jnp
    >>> import jaxstage as js
    >>> game = js.games.from_payoff_fn(lambda d: -d, num_actions=3, noise_std=0.1)
    >>> game.expected_payoffs(game.default_params(), jnp.ones(3) / 3).shape
    (1, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage._validation import (
    check_finite_array,
    check_int,
    check_positive,
    check_probability_vector,
    check_real,
)

Params = dict[str, jax.Array]
PayoffFn = Callable[..., jax.Array]

#: Most actions a game may have. Stage actions are stored as int8 up to 128 actions and
#: as int16 beyond (``jaxstage.fast.action_dtype``). What bounds ``k`` is the metrics: the
#: deviation payoffs ``u(b, (c - e_a + e_b) / n)`` of MODEL.md section 1 evaluate the game
#: at ``k^2`` distributions per stage, ``k^3`` numbers (10^9 at 1024 actions).
MAX_ACTIONS = 1024

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


def _vector(value: float | Sequence[float], size: int, what: str) -> np.ndarray:
    """Broadcast a scalar or sequence to a float vector of ``size``, naming bad input."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(size, float(array))
    if array.shape != (size,):
        raise ValueError(f"{what} must be a scalar or have {size} entries, got shape {array.shape}")
    check_finite_array(array, what)
    return array


def _noise_param(noise_std: float) -> float:
    return check_real(noise_std, "noise_std", low=0.0)


class Congestion(AnonymousGame):
    """Parallel links / load balancing: action j costs ``a_j + b_j * d_j ** p``.

    Payoff ``u(j, d) = -(a_j + b_j * d_j ** p)``. A potential game: sequential best-reply
    dynamics converge; simultaneous switching without inertia oscillates (everyone leaves
    the crowded link together).

    Args:
        num_actions: number of links ``k >= 2``.
        a: free-flow cost per link (scalar or ``k`` values), default ``0``.
        b: congestion coefficient per link, ``> 0``; default ``1, 2, ..., k`` so the
            links differ.
        p: congestion exponent ``> 0`` (``1`` = linear).
        noise_std: std of additive Gaussian payoff noise, ``>= 0``.

    Equilibrium: the Wardrop split with equal cost ``lam`` on every used link,
    ``d_j = ((lam - a_j) / b_j) ** (1 / p)``, found by bisection on ``lam``.
    Lipschitz: ``p * max_j b_j`` for ``p >= 1``; not Lipschitz for ``p < 1``.
    """

    name = "congestion"
    best_reply_note = "sequential converge (potential game); simultaneous without inertia oscillate"

    def __init__(
        self,
        num_actions: int = 4,
        a: float | Sequence[float] = 0.0,
        b: float | Sequence[float] | None = None,
        p: float = 1.0,
        noise_std: float = 0.1,
    ):
        self.num_actions = check_num_actions(num_actions)
        k = self.num_actions
        self.a = _vector(a, k, "a")
        self.b = _vector(np.arange(1, k + 1) if b is None else b, k, "b")
        if np.any(self.b <= 0):
            raise ValueError(f"b must be > 0 on every link, got {self.b.tolist()}")
        self.p = check_positive(p, "p")
        self.noise_std = _noise_param(noise_std)
        self.action_names = tuple(f"link{j}" for j in range(k))

    def default_params(self) -> Params:
        return {
            "a": jnp.asarray(self.a, jnp.float32),
            "b": jnp.asarray(self.b, jnp.float32),
            "p": jnp.asarray(self.p, jnp.float32),
            "noise_std": jnp.asarray(self.noise_std, jnp.float32),
        }

    def _param_errors(self, params):
        return [("b", "> 0 on every link", params["b"] > 0), ("p", "> 0", params["p"] > 0)]

    def expected_payoffs(self, params: Params, distribution: jax.Array) -> jax.Array:
        cost = params["a"] + params["b"] * distribution ** params["p"]
        return -cost[None, :]

    def static_key(self) -> tuple:
        return (self.num_actions,)

    def lipschitz(self, params: Params | None = None) -> float | None:
        if self.p < 1:
            return None
        return float(self.p * self.b.max())

    def equilibria(self, params: Params | None = None) -> list[np.ndarray]:
        # Bisection on the common cost level: total load is increasing in lam.
        def load(lam: float) -> np.ndarray:
            return np.clip((lam - self.a) / self.b, 0.0, None) ** (1.0 / self.p)

        low, high = float(self.a.min()), float((self.a + self.b).max())
        for _ in range(200):
            mid = 0.5 * (low + high)
            if load(mid).sum() < 1.0:
                low = mid
            else:
                high = mid
        share = load(0.5 * (low + high))
        return [share / share.sum()]

    def param_docs(self) -> dict[str, str]:
        return {
            "num_actions": "number of links k >= 2 (default 4)",
            "a": "free-flow cost per link, scalar or k values (default 0)",
            "b": "congestion coefficient per link, > 0 (default 1..k)",
            "p": "congestion exponent > 0 (default 1)",
            "noise_std": "std of Gaussian payoff noise >= 0 (default 0.1)",
        }

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_actions": self.num_actions,
            "a": self.a.tolist(),
            "b": self.b.tolist(),
            "p": self.p,
            "noise_std": self.noise_std,
        }


class Minority(AnonymousGame):
    """Minority / El Farol bar: going pays ``+1`` at or below capacity, ``-1`` above.

    Actions: ``0 = stay`` (pays 0), ``1 = go``. With ``smoothness = 0`` going pays
    ``+1`` if ``d_go <= capacity`` else ``-1``; with ``smoothness = w > 0`` it pays
    ``tanh((capacity - d_go) / w)``.

    Noise: ``"gaussian"`` adds ``noise_std * N(0, 1)``; ``"coin"`` is a game-specific
    model where a goer's realised payoff is ``+1`` or ``-1`` with mean equal to the
    expected payoff (a night at the bar is good or bad), and staying pays exactly 0.

    Args:
        capacity: the bar's capacity as a share of the population, in ``(0, 1)``.
        smoothness: ``0`` for the step payoff, ``> 0`` for the tanh version.
        noise: ``"gaussian"`` or ``"coin"``.
        noise_std: std of the Gaussian noise, ``>= 0``.

    Equilibrium: ``d_go = capacity``. Simultaneous best replies oscillate (everyone goes
    when the bar was empty): the honest negative case. Lipschitz: ``1 / (2 w)`` for the
    smooth version, none for the step.
    """

    name = "minority"
    num_actions = 2
    action_names = ("stay", "go")
    best_reply_note = "sequential converge; simultaneous without inertia oscillate"

    def __init__(
        self,
        capacity: float = 0.6,
        smoothness: float = 0.0,
        noise: str = "gaussian",
        noise_std: float = 0.1,
    ):
        self.capacity = check_real(
            capacity, "capacity", low=0.0, high=1.0, open_low=True, open_high=True
        )
        self.smoothness = check_real(smoothness, "smoothness", low=0.0)
        if noise not in ("gaussian", "coin"):
            raise ValueError(f"noise must be 'gaussian' or 'coin', got {noise!r}")
        self.noise = noise
        self.noise_std = _noise_param(noise_std)

    def default_params(self) -> Params:
        return {
            "capacity": jnp.asarray(self.capacity, jnp.float32),
            "smoothness": jnp.asarray(self.smoothness, jnp.float32),
            "noise_std": jnp.asarray(self.noise_std, jnp.float32),
        }

    def _param_errors(self, params):
        capacity = params["capacity"]
        return [
            ("capacity", "in (0, 1)", (capacity > 0) & (capacity < 1)),
            ("smoothness", ">= 0", params["smoothness"] >= 0),
        ]

    def expected_payoffs(self, params: Params, distribution: jax.Array) -> jax.Array:
        slack = params["capacity"] - distribution[1]
        width = params["smoothness"]
        # Compare with a tiny tolerance so that d_go = capacity exactly counts as "at".
        step = jnp.where(slack >= -1e-7, 1.0, -1.0)
        smooth = jnp.tanh(slack / jnp.where(width > 0, width, 1.0))
        go = jnp.where(width > 0, smooth, step)
        return jnp.stack([jnp.zeros_like(go), go])[None, :]

    def realized_payoffs(self, params, key, expected, types, actions):
        if self.noise == "gaussian":
            return super().realized_payoffs(params, key, expected, types, actions)
        mean = expected[types, actions]
        win = jax.random.uniform(key, actions.shape) < 0.5 * (1.0 + mean)
        return jnp.where(actions == 1, jnp.where(win, 1.0, -1.0), 0.0).astype(mean.dtype)

    def static_key(self) -> tuple:
        return (self.noise,)

    def uses_gaussian_noise(self) -> bool:
        return self.noise == "gaussian"

    def lipschitz(self, params: Params | None = None) -> float | None:
        return None if self.smoothness == 0 else 1.0 / (2.0 * self.smoothness)

    def equilibria(self, params: Params | None = None) -> list[np.ndarray]:
        return [np.array([1.0 - self.capacity, self.capacity])]

    def param_docs(self) -> dict[str, str]:
        return {
            "capacity": "capacity as a share of agents, in (0, 1) (default 0.6)",
            "smoothness": "0 = step payoff, w > 0 = tanh((capacity - d_go)/w) (default 0)",
            "noise": "'gaussian' (additive) or 'coin' (+1/-1 with the expected mean)",
            "noise_std": "std of Gaussian payoff noise >= 0 (default 0.1)",
        }

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capacity": self.capacity,
            "smoothness": self.smoothness,
            "noise": self.noise,
            "noise_std": self.noise_std,
        }


class BeautyContest(AnonymousGame):
    """Beauty contest: guess ``q`` times the mean guess; payoff ``-|a - q * mean(d)|``.

    Actions are the guesses ``0, 1, ..., k-1``; ``mean(d) = sum_j j d_j``.

    Args:
        num_actions: number of guesses ``k >= 2``.
        q: the multiplier, in ``(0, 1)``.
        noise_std: std of additive Gaussian payoff noise, ``>= 0``.

    Equilibrium: everyone guesses 0 (iterated dominance in the continuum). With discrete
    guesses, consensus on ``j`` is also a pure equilibrium whenever ``j (1 - q) <= 1/2``
    (the target ``q j`` is still closest to ``j``); both are listed. Best-reply dynamics
    converge. Lipschitz: ``q (k - 1) / 2``.
    """

    name = "beauty_contest"
    best_reply_note = "dominance solvable: converge"

    def __init__(self, num_actions: int = 11, q: float = 0.5, noise_std: float = 0.1):
        self.num_actions = check_num_actions(num_actions)
        self.q = check_real(q, "q", low=0.0, high=1.0, open_low=True, open_high=True)
        self.noise_std = _noise_param(noise_std)

    def default_params(self) -> Params:
        return {
            "q": jnp.asarray(self.q, jnp.float32),
            "noise_std": jnp.asarray(self.noise_std, jnp.float32),
        }

    def _param_errors(self, params):
        return [("q", "in (0, 1)", (params["q"] > 0) & (params["q"] < 1))]

    def expected_payoffs(self, params: Params, distribution: jax.Array) -> jax.Array:
        guesses = jnp.arange(self.num_actions, dtype=distribution.dtype)
        target = params["q"] * jnp.sum(guesses * distribution)
        return -jnp.abs(guesses - target)[None, :]

    def static_key(self) -> tuple:
        return (self.num_actions,)

    def lipschitz(self, params: Params | None = None) -> float | None:
        return self.q * (self.num_actions - 1) / 2.0

    def equilibria(self, params: Params | None = None) -> list[np.ndarray]:
        consensus = [j for j in range(self.num_actions) if j * (1.0 - self.q) <= 0.5]
        return [np.eye(self.num_actions)[j] for j in consensus]

    def param_docs(self) -> dict[str, str]:
        return {
            "num_actions": "number of guesses k >= 2, guesses 0..k-1 (default 11)",
            "q": "multiplier in (0, 1) (default 0.5)",
            "noise_std": "std of Gaussian payoff noise >= 0 (default 0.1)",
        }

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_actions": self.num_actions,
            "q": self.q,
            "noise_std": self.noise_std,
        }


class TechnologyAdoption(AnonymousGame):
    """Technology adoption with agent types: adopting pays ``v * d_adopt - theta_type``.

    Actions: ``0 = keep`` (pays 0), ``1 = adopt``. Each type has its own adoption cost
    ``theta``; ``shares`` are the population shares of the types.

    Args:
        value: network value ``v > 0`` of adoption.
        thresholds: adoption cost ``theta`` of each type (finite).
        shares: population share of each type (positive, sum to 1).
        noise_std: std of additive Gaussian payoff noise, ``>= 0``.

    Equilibria (monotone best replies, several): sort the types by cost; adoption by the
    ``j`` cheapest types is an equilibrium when each of them gains (``theta <= v D_j``,
    ``D_j`` their total share) and the next does not (``theta_{j+1} >= v D_j``); ``j = 0``
    (nobody) needs ``theta_min >= 0``. Lipschitz: ``v / 2``.
    """

    name = "adoption"
    num_actions = 2
    action_names = ("keep", "adopt")
    best_reply_note = "monotone best replies: converge, several equilibria"

    def __init__(
        self,
        value: float = 1.0,
        thresholds: Sequence[float] = (0.1, 0.4, 0.8),
        shares: Sequence[float] = (0.3, 0.4, 0.3),
        noise_std: float = 0.1,
    ):
        self.value = check_positive(value, "value")
        self.thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        check_finite_array(self.thresholds, "thresholds")
        self.type_shares = check_probability_vector(shares, "shares")
        if len(self.type_shares) != len(self.thresholds):
            raise ValueError(
                f"shares has {len(self.type_shares)} entries but thresholds has "
                f"{len(self.thresholds)}: give one share per type"
            )
        if np.any(np.asarray(self.type_shares) <= 0):
            raise ValueError(f"every type share must be > 0, got {list(self.type_shares)}")
        self.type_names = tuple(f"theta={t:g}" for t in self.thresholds)
        self.noise_std = _noise_param(noise_std)

    def default_params(self) -> Params:
        return {
            "value": jnp.asarray(self.value, jnp.float32),
            "thresholds": jnp.asarray(self.thresholds, jnp.float32),
            "noise_std": jnp.asarray(self.noise_std, jnp.float32),
        }

    def _param_errors(self, params):
        return [("value", "> 0", params["value"] > 0)]

    def expected_payoffs(self, params: Params, distribution: jax.Array) -> jax.Array:
        adopt = params["value"] * distribution[1] - params["thresholds"]
        return jnp.stack([jnp.zeros_like(adopt), adopt], axis=1)

    def static_key(self) -> tuple:
        return (len(self.type_shares),)

    def lipschitz(self, params: Params | None = None) -> float | None:
        return self.value / 2.0

    def equilibria(self, params: Params | None = None) -> list[np.ndarray]:
        order = np.argsort(self.thresholds, kind="stable")
        costs = self.thresholds[order]
        shares = np.asarray(self.type_shares)[order]
        found = []
        for adopters in range(len(costs) + 1):
            mass = shares[:adopters].sum()
            adopters_gain = adopters == 0 or costs[adopters - 1] <= self.value * mass
            next_stays = adopters == len(costs) or costs[adopters] >= self.value * mass
            if adopters_gain and next_stays:
                found.append(np.array([1.0 - mass, mass]))
        return found

    def param_docs(self) -> dict[str, str]:
        return {
            "value": "network value v > 0 of adoption (default 1)",
            "thresholds": "adoption cost theta per type (default [0.1, 0.4, 0.8])",
            "shares": "population share per type, sum to 1 (default [0.3, 0.4, 0.3])",
            "noise_std": "std of Gaussian payoff noise >= 0 (default 0.1)",
        }

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "thresholds": self.thresholds.tolist(),
            "shares": list(self.type_shares),
            "noise_std": self.noise_std,
        }


class RandomLinear(AnonymousGame):
    """Random linear anonymous game: ``u(d) = b + W d`` with ``W`` and ``b`` drawn.

    ``W`` has i.i.d. ``N(0, scale^2)`` entries (symmetrised when ``symmetric``) and ``b``
    i.i.d. ``N(0, scale^2)``, drawn with NumPy from ``game_seed`` so a game is
    reproducible by its parameters.

    Args:
        num_actions: ``k >= 2``.
        symmetric: symmetric ``W`` makes it a potential game (potential
            ``b.d + d'Wd/2``), where best-reply dynamics converge; a general ``W`` may cycle.
        scale: std of the entries, ``> 0``.
        game_seed: seed of the draw (an integer ``>= 0``).
        noise_std: std of additive Gaussian payoff noise, ``>= 0``.

    Equilibrium: none analytic; use :func:`jaxstage.solve_equilibrium`.
    Lipschitz: ``max |W_ij|``.
    """

    name = "random_linear"

    def __init__(
        self,
        num_actions: int = 5,
        symmetric: bool = True,
        scale: float = 1.0,
        game_seed: int = 0,
        noise_std: float = 0.1,
    ):
        self.num_actions = check_num_actions(num_actions)
        if not isinstance(symmetric, bool):
            raise TypeError(f"symmetric must be a bool, got {symmetric!r}")
        self.symmetric = symmetric
        self.scale = check_positive(scale, "scale")
        self.game_seed = check_int(game_seed, "game_seed", low=0)
        self.noise_std = _noise_param(noise_std)
        rng = np.random.default_rng(self.game_seed)
        weights = rng.normal(0.0, self.scale, (self.num_actions, self.num_actions))
        if symmetric:
            weights = 0.5 * (weights + weights.T)
        self.weights = weights
        self.bias = rng.normal(0.0, self.scale, self.num_actions)
        self.best_reply_note = "potential game: converge" if symmetric else "general W: may cycle"

    def default_params(self) -> Params:
        return {
            "weights": jnp.asarray(self.weights, jnp.float32),
            "bias": jnp.asarray(self.bias, jnp.float32),
            "noise_std": jnp.asarray(self.noise_std, jnp.float32),
        }

    def expected_payoffs(self, params: Params, distribution: jax.Array) -> jax.Array:
        # HIGHEST: on GPUs a default-precision float32 product runs as TF32 (10 mantissa
        # bits), far coarser than the float32 payoffs everywhere else.
        product = jnp.dot(params["weights"], distribution, precision=jax.lax.Precision.HIGHEST)
        return (params["bias"] + product)[None, :]

    def static_key(self) -> tuple:
        return (self.num_actions,)

    def lipschitz(self, params: Params | None = None) -> float | None:
        return float(np.abs(self.weights).max())

    def param_docs(self) -> dict[str, str]:
        return {
            "num_actions": "k >= 2 (default 5)",
            "symmetric": "true: symmetric W, a potential game (default true)",
            "scale": "std of the entries of W and b, > 0 (default 1)",
            "game_seed": "seed of the draw of W and b (default 0)",
            "noise_std": "std of Gaussian payoff noise >= 0 (default 0.1)",
        }

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_actions": self.num_actions,
            "symmetric": self.symmetric,
            "scale": self.scale,
            "game_seed": self.game_seed,
            "noise_std": self.noise_std,
        }


class PayoffFnGame(AnonymousGame):
    """A game defined by a user's expected-payoff function of the distribution.

    Built by :func:`from_payoff_fn`; see there.
    """

    def __init__(
        self,
        fn: PayoffFn,
        num_actions: int,
        noise_std: float,
        name: str,
        params: Mapping[str, Any] | None,
        lipschitz: float | None,
        equilibria: Sequence[Sequence[float]] | None,
        action_names: Sequence[str] | None,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.num_actions = check_num_actions(num_actions)
        self.noise_std = _noise_param(noise_std)
        self.name = str(name)
        self.user_params = {
            key: jnp.asarray(value, jnp.float32) for key, value in (params or {}).items()
        }
        if "noise_std" in self.user_params:
            raise ValueError("'noise_std' is reserved: pass it as the noise_std argument")
        self._lipschitz = None if lipschitz is None else check_real(lipschitz, "lipschitz", low=0.0)
        self._equilibria = [
            np.asarray(check_probability_vector(eq, "equilibria entry")) for eq in equilibria or []
        ]
        for eq in self._equilibria:
            if eq.shape != (self.num_actions,):
                raise ValueError(
                    f"equilibria entries must have {self.num_actions} entries, got {eq.shape}"
                )
        if action_names is not None:
            if len(action_names) != self.num_actions:
                raise ValueError(
                    f"action_names has {len(action_names)} names for {self.num_actions} actions"
                )
            self.action_names = tuple(str(a) for a in action_names)
        self._check_payoff_fn()

    def _call(self, params: Params, distribution: jax.Array) -> jax.Array:
        if self.user_params:
            user = {k: v for k, v in params.items() if k != "noise_std"}
            return self.fn(distribution, user)
        return self.fn(distribution)

    def _check_payoff_fn(self, params: Params | None = None) -> None:
        # Evaluate eagerly (no tracing) at the uniform distribution and at every vertex of
        # the simplex: learners can reach all of them. Then trace it once, as the kernels
        # will: NumPy calls and Python control flow on the distribution pass the eager
        # check and would otherwise fail from inside ``jit`` with a tracer error.
        k = self.num_actions
        points = {"the uniform distribution": np.full(k, 1.0 / k)}
        points.update({f"the vertex e_{j}": np.eye(k)[j] for j in range(k)})
        params = self.default_params() if params is None else params
        for where, point in points.items():
            try:
                value = np.asarray(self._call(params, jnp.asarray(point, jnp.float32)))
            except Exception as error:  # noqa: BLE001 - re-raised with context
                raise TypeError(
                    f"payoff function of game {self.name!r} failed at {where}: {error}"
                ) from error
            if value.shape != (k,):
                raise ValueError(
                    f"payoff function of game {self.name!r} must map a distribution of shape "
                    f"({k},) to payoffs of shape ({k},); got shape {value.shape} at {where}"
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"payoff function of game {self.name!r} returned non-finite payoffs "
                    f"{value.tolist()} at {where}; payoffs must be finite on the whole simplex"
                )
        traced = jax.ShapeDtypeStruct((k,), jnp.float32)
        try:
            jax.eval_shape(lambda p, d: self._call(p, d), params, traced)
        except jax.errors.JAXTypeError as error:
            raise TypeError(
                f"payoff function of game {self.name!r} works on concrete arrays but not "
                f"under jax.jit, where the kernels call it: {type(error).__name__}. Write it "
                f"with jax.numpy on the distribution (jnp.where or jax.lax.cond instead of "
                f"Python if/while on its values, jnp functions instead of numpy or math "
                f"ones, no float() or int() of it)"
            ) from error
        except Exception as error:  # noqa: BLE001 - re-raised with context
            raise TypeError(
                f"payoff function of game {self.name!r} failed when traced by jax.jit "
                f"(as the kernels call it): {type(error).__name__}: {error}"
            ) from error

    def check_params(self, params: Mapping[str, np.ndarray]) -> None:
        """The base checks, then the payoff function checked again at ``params`` (its
        coefficients may make it fail or leave the finite range)."""
        super().check_params(params)
        self._check_payoff_fn({name: jnp.asarray(v, jnp.float32) for name, v in params.items()})

    def default_params(self) -> Params:
        return {**self.user_params, "noise_std": jnp.asarray(self.noise_std, jnp.float32)}

    def static_key(self) -> tuple:
        shapes = tuple((k, v.shape) for k, v in sorted(self.user_params.items()))
        return (self.fn, self.num_actions, shapes)

    def expected_payoffs(self, params: Params, distribution: jax.Array) -> jax.Array:
        return jnp.asarray(self._call(params, distribution), distribution.dtype)[None, :]

    def lipschitz(self, params: Params | None = None) -> float | None:
        return self._lipschitz

    def equilibria(self, params: Params | None = None) -> list[np.ndarray]:
        return list(self._equilibria)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_actions": self.num_actions,
            "noise_std": self.noise_std,
            "custom": True,
        }


def from_payoff_fn(
    fn: PayoffFn,
    num_actions: int,
    noise_std: float = 0.1,
    name: str = "custom",
    *,
    params: Mapping[str, Any] | None = None,
    lipschitz: float | None = None,
    equilibria: Sequence[Sequence[float]] | None = None,
    action_names: Sequence[str] | None = None,
) -> PayoffFnGame:
    """Define an anonymous game from its expected-payoff function.

    Args:
        fn: ``fn(d) -> u`` mapping a ``(num_actions,)`` distribution to ``(num_actions,)``
            expected payoffs, written with ``jax.numpy``. With ``params`` given it is
            called as ``fn(d, params)`` so that the coefficients can be swept.
        num_actions: number of actions ``k >= 2``.
        noise_std: std of the additive Gaussian noise on realised payoffs, ``>= 0``.
        name: a label used in results.
        params: optional dict of numeric coefficients passed to ``fn``; they become traced
            parameters (sweepable without recompiling).
        lipschitz: the Lipschitz constant if known.
        equilibria: known equilibrium distributions, if any.
        action_names: optional labels.

    Returns:
        The game. ``fn`` is checked eagerly at the uniform distribution and the vertices of
        the simplex: a wrong output shape or a non-finite payoff raises ``ValueError``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxstage as js
        >>> game = js.games.from_payoff_fn(lambda d: -(1.0 + jnp.arange(3)) * d, 3)
        >>> game.num_actions
        3
    """
    return PayoffFnGame(
        fn, num_actions, noise_std, name, params, lipschitz, equilibria, action_names
    )


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
