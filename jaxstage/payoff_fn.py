"""Games defined by a user's expected-payoff function: :func:`from_payoff_fn`.

The function is checked when the game is built, eagerly at the uniform distribution and
every vertex of the simplex and once traced as the kernels will call it, so that a wrong
shape, a non-finite payoff or code that cannot run under ``jax.jit`` fails there, with
the game's name, instead of deep inside a compiled kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage._validation import check_probability_vector, check_real
from jaxstage.game_base import AnonymousGame, Params, check_noise_std, check_num_actions

__all__ = ["PayoffFn", "PayoffFnGame", "from_payoff_fn"]

PayoffFn = Callable[..., jax.Array]


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
        *,
        params: Mapping[str, Any] | None,
        lipschitz: float | None,
        equilibria: Sequence[Sequence[float]] | None,
        action_names: Sequence[str] | None,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.num_actions = check_num_actions(num_actions)
        self.noise_std = check_noise_std(noise_std)
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
        fn,
        num_actions,
        noise_std,
        name,
        params=params,
        lipschitz=lipschitz,
        equilibria=equilibria,
        action_names=action_names,
    )
