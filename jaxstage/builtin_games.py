"""The built-in games: congestion, minority, beauty contest, technology adoption and
random linear games.

Each is an :class:`~jaxstage.game_base.AnonymousGame` with its parameters checked at
construction, its known equilibria and Lipschitz constant, and the documentation of its
parameters (``jaxstage games``). :data:`jaxstage.games.GAMES` names them for
:func:`jaxstage.games.make_game`.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from jaxstage.game_base import AnonymousGame, Params, check_noise_std, check_num_actions

__all__ = ["Congestion", "Minority", "BeautyContest", "TechnologyAdoption", "RandomLinear"]


def _vector(value: float | Sequence[float], size: int, what: str) -> np.ndarray:
    """Broadcast a scalar or sequence to a float vector of ``size``, naming bad input."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(size, float(array))
    if array.shape != (size,):
        raise ValueError(f"{what} must be a scalar or have {size} entries, got shape {array.shape}")
    check_finite_array(array, what)
    return array


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
        self.noise_std = check_noise_std(noise_std)
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
        self.noise_std = check_noise_std(noise_std)

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
        self.noise_std = check_noise_std(noise_std)

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
        self.noise_std = check_noise_std(noise_std)

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
        self.noise_std = check_noise_std(noise_std)
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
