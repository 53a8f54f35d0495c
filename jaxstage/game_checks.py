"""The checks of a game's definition, run in order by :func:`jaxstage.testing.check_game`.

Each check looks at one thing a game author can get wrong (its attributes, parameters,
payoff shapes, behaviour under ``jax.jit`` and ``jax.vmap``, finiteness on the simplex,
its noise model and its declared Lipschitz constant) and raises a
:class:`GameCheckError` naming the check, the game and the bad value;
:func:`definition_checks` lists them in the order the kernels depend on them.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage.game_base import MAX_ACTIONS, AnonymousGame, Params, type_counts

__all__ = [
    "GameCheckError",
    "NotApplicableError",
    "SHARE_SLACK",
    "definition_checks",
    "fail_check",
]

#: Slack on sums of shares: equilibria are given in float64, payoffs are float32.
SHARE_SLACK = 1e-6


class GameCheckError(AssertionError):
    """A game failed one check of :func:`check_game`.

    Attributes:
        check: the name of the failed check (see :mod:`jaxstage.testing`).
        game: the name of the game.
    """

    def __init__(self, check: str, game: str, message: str):
        self.check = check
        self.game = game
        super().__init__(f"check {check!r} failed for game {game!r}: {message}")


class NotApplicableError(Exception):
    """Raised by a check that does not apply to this game (``check_game`` lists it as
    skipped, with the message as the reason)."""


def fail_check(check: str, game: AnonymousGame, message: str) -> GameCheckError:
    """The :class:`GameCheckError` of ``check`` for ``game`` (to raise)."""
    return GameCheckError(check, str(getattr(game, "name", type(game).__name__)), message)


def _payoffs_fn(game: AnonymousGame) -> Callable[[Params, jax.Array], jax.Array]:
    return lambda params, distribution: game.expected_payoffs(params, distribution)


def _expected_shape(game: AnonymousGame) -> tuple[int, int]:
    return (game.num_types, game.num_actions)


# --------------------------------------------------------------------------- attributes


def _check_attributes(game: AnonymousGame, params: Params) -> None:
    name, k = getattr(game, "name", None), getattr(game, "num_actions", None)
    if not isinstance(name, str) or not name:
        raise fail_check("attributes", game, f"name must be a non-empty str, got {name!r}")
    # bool is an int subclass, and a float 2.0 would break every shape built from k.
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise fail_check("attributes", game, f"num_actions must be an int, got {k!r}")
    if not 2 <= k <= MAX_ACTIONS:
        raise fail_check("attributes", game, f"num_actions must be in [2, {MAX_ACTIONS}], got {k}")
    shares = np.asarray(game.type_shares, dtype=np.float64)
    if shares.ndim != 1 or shares.size == 0 or not np.all(np.isfinite(shares)):
        raise fail_check("attributes", game, f"type_shares must be finite shares, got {shares}")
    if np.any(shares <= 0) or abs(shares.sum() - 1.0) > SHARE_SLACK:
        raise fail_check(
            "attributes", game, f"type_shares must be > 0 and sum to 1, got {shares.tolist()}"
        )
    _check_labels(game, "action_names", game.action_names, k)
    _check_labels(game, "type_names", game.type_names, shares.size)


def _check_labels(game: AnonymousGame, what: str, labels: Any, size: int) -> None:
    if labels is None:
        return
    labels = tuple(labels)
    if len(labels) != size or not all(isinstance(label, str) for label in labels):
        raise fail_check("attributes", game, f"{what} must be {size} strs, got {labels!r}")
    # Result tables name their columns after the labels (falling back to indices when
    # they repeat), so repeated labels would silently lose the names.
    if len(set(labels)) != size:
        raise fail_check("attributes", game, f"{what} must be distinct, got {labels!r}")


def _check_hashable(game: AnonymousGame, params: Params) -> None:
    try:
        hash(game)
    except TypeError as error:
        raise fail_check(
            "hashable", game, f"games are static arguments of jax.jit and must hash: {error}"
        ) from error
    if not game == game:  # compiled code is cached by equality
        raise fail_check("hashable", game, "game == game is False")


# --------------------------------------------------------------------------- params


def _check_params(game: AnonymousGame, params: Params) -> None:
    for key, value in params.items():
        array = np.asarray(value)
        if not isinstance(key, str) or not np.issubdtype(array.dtype, np.floating):
            raise fail_check(
                "params", game, f"parameter {key!r} must be a float array, got {array.dtype}"
            )
        if not np.all(np.isfinite(array)):
            raise fail_check(
                "params", game, f"parameter {key!r} must be finite, got {array.tolist()}"
            )
    try:
        game.check_params({key: np.asarray(value) for key, value in params.items()})
    except ValueError as error:
        raise fail_check("params", game, f"check_params refuses the defaults: {error}") from error
    _check_param_docs(game)
    _check_config(game)


def _constructor_args(game: AnonymousGame) -> set[str] | None:
    """Named arguments of the game's constructor; ``None`` when it takes ``**kwargs``."""
    if type(game).__init__ is object.__init__:
        return set()
    parameters = inspect.signature(type(game).__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters} - {"self"}


def _check_param_docs(game: AnonymousGame) -> None:
    docs = game.param_docs()
    if not isinstance(docs, Mapping):
        raise fail_check("params", game, f"param_docs() must be a dict, got {type(docs).__name__}")
    for key, doc in docs.items():
        if not isinstance(doc, str) or not doc.strip():
            raise fail_check("params", game, f"param_docs()[{key!r}] must be a non-empty str")
    args = _constructor_args(game)
    unknown = sorted(set(docs) - args) if args is not None else []
    if unknown:
        raise fail_check(
            "params",
            game,
            f"param_docs() documents {unknown}, which the constructor does not take "
            f"(it takes {sorted(args)})",
        )


def _check_config(game: AnonymousGame) -> None:
    config = game.config()
    if not isinstance(config, Mapping) or config.get("name") != game.name:
        raise fail_check("params", game, f"config() must be a dict with name {game.name!r}")
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise fail_check(
            "params", game, f"config() must be JSON-ready (results record it): {error}"
        ) from error


def _check_noise_std(game: AnonymousGame, params: Params) -> None:
    if not isinstance(params, Mapping) or "noise_std" not in params:
        raise fail_check("noise_std", game, "default_params() must be a dict with 'noise_std'")
    noise = np.asarray(params["noise_std"])
    if noise.shape != ():
        raise fail_check("noise_std", game, f"noise_std must be a scalar, got shape {noise.shape}")
    if not math.isfinite(float(noise)) or float(noise) < 0:
        raise fail_check(
            "noise_std", game, f"noise_std must be finite and >= 0, got {float(noise)}"
        )


# --------------------------------------------------------------------------- payoffs


def _uniform(game: AnonymousGame) -> jax.Array:
    return jnp.full(game.num_actions, 1.0 / game.num_actions, jnp.float32)


def _check_payoff_shape(game: AnonymousGame, params: Params) -> None:
    try:
        value = game.expected_payoffs(params, _uniform(game))
    except Exception as error:  # noqa: BLE001 - re-raised with the check's name
        raise fail_check(
            "payoff_shape", game, f"expected_payoffs failed at the uniform distribution: {error!r}"
        ) from error
    shape = getattr(value, "shape", None)
    if shape != _expected_shape(game):
        raise fail_check(
            "payoff_shape",
            game,
            f"expected_payoffs must return shape (num_types, num_actions) = "
            f"{_expected_shape(game)}, got {shape}",
        )
    if value.dtype != jnp.float32:
        raise fail_check(
            "payoff_shape", game, f"expected_payoffs must be float32, got {value.dtype}"
        )


def _check_jit(game: AnonymousGame, params: Params) -> None:
    eager = np.asarray(game.expected_payoffs(params, _uniform(game)))
    try:
        traced = np.asarray(jax.jit(_payoffs_fn(game))(params, _uniform(game)))
    except jax.errors.JAXTypeError as error:
        raise fail_check(
            "jit",
            game,
            f"expected_payoffs works on concrete arrays but not under jax.jit, where the "
            f"kernels call it ({type(error).__name__}): use jnp.where or jax.lax.cond instead "
            f"of Python if/while on traced values, jnp instead of numpy or math functions",
        ) from error
    except Exception as error:  # noqa: BLE001 - re-raised with the check's name
        raise fail_check("jit", game, f"expected_payoffs fails under jax.jit: {error!r}") from error
    if not np.allclose(traced, eager, rtol=1e-5, atol=1e-6, equal_nan=True):
        raise fail_check("jit", game, f"jit gives {traced.tolist()}, eager gives {eager.tolist()}")


def _simplex_points(game: AnonymousGame, rng: np.random.Generator, count: int) -> np.ndarray:
    """Centre, corners, random interior points and empirical distributions of 1-7 agents."""
    k = game.num_actions
    corners = np.eye(k)
    interior = rng.dirichlet(np.ones(k), size=count)
    sparse = rng.dirichlet(np.full(k, 0.1), size=count)  # near the faces
    empirical = [rng.multinomial(n, np.ones(k) / k, size=count) / n for n in range(2, 8)]
    points = [np.full((1, k), 1.0 / k), corners, interior, sparse, *empirical]
    return np.concatenate(points).astype(np.float32)


def _batched(game: AnonymousGame, params: Params, points: np.ndarray) -> np.ndarray:
    one = _payoffs_fn(game)
    return np.asarray(jax.jit(jax.vmap(lambda d: one(params, d)))(jnp.asarray(points)))


def _check_vmap(game: AnonymousGame, params: Params) -> None:
    points = np.stack([np.asarray(_uniform(game)), np.eye(game.num_actions, dtype=np.float32)[0]])
    try:
        batch = _batched(game, params, points)
        stacked = jax.tree.map(lambda v: jnp.stack([v, v]), params)
        by_params = np.asarray(jax.vmap(_payoffs_fn(game), in_axes=(0, None))(stacked, points[0]))
    except Exception as error:  # noqa: BLE001 - re-raised with the check's name
        raise fail_check(
            "vmap", game, f"expected_payoffs fails under jax.vmap: {error!r}"
        ) from error
    want = (len(points), *_expected_shape(game))
    if batch.shape != want or by_params.shape != (2, *_expected_shape(game)):
        raise fail_check(
            "vmap",
            game,
            f"a batch of {len(points)} distributions gives shape {batch.shape} (want {want}); "
            f"a batch of 2 parameter sets gives {by_params.shape}",
        )
    singles = np.stack([np.asarray(game.expected_payoffs(params, jnp.asarray(p))) for p in points])
    if not np.allclose(batch, singles, rtol=1e-5, atol=1e-6, equal_nan=True):
        raise fail_check("vmap", game, "vmap over distributions changes the payoffs")


def _check_payoff_finite(game: AnonymousGame, params: Params, rng: np.random.Generator) -> None:
    points = _simplex_points(game, rng, count=8)
    values = _batched(game, params, points)
    bad = ~np.all(np.isfinite(values.reshape(len(points), -1)), axis=1)
    if np.any(bad):
        first = int(np.argmax(bad))
        raise fail_check(
            "payoff_finite",
            game,
            f"expected_payoffs at distribution {points[first].tolist()} is "
            f"{values[first].tolist()}; payoffs must be finite on the whole simplex",
        )


def _check_noise(game: AnonymousGame, params: Params, rng: np.random.Generator) -> None:
    n = 4096
    types = jnp.asarray(np.repeat(np.arange(game.num_types), type_counts(game.type_shares, n)))
    actions = jnp.asarray(rng.integers(0, game.num_actions, n), jnp.int32)
    expected = game.expected_payoffs(params, _uniform(game))

    def realized(p):
        return game.realized_payoffs(p, jax.random.key(0), expected, types, actions)

    try:
        value = np.asarray(jax.jit(realized)(params))
    except Exception as error:  # noqa: BLE001 - re-raised with the check's name
        raise fail_check(
            "noise", game, f"realized_payoffs fails under jax.jit: {error!r}"
        ) from error
    if value.shape != (n,) or not np.issubdtype(value.dtype, np.floating):
        raise fail_check(
            "noise",
            game,
            f"realized_payoffs of {n} agents must be ({n},) floats, got "
            f"{value.shape} {value.dtype}",
        )
    if not np.all(np.isfinite(value)):
        raise fail_check("noise", game, "realized_payoffs are not finite")
    if game.uses_gaussian_noise():
        _check_gaussian(game, params, realized, np.asarray(expected)[types, actions])


def _check_gaussian(game, params, realized, mean) -> None:
    # The fast kernel draws an agent's noise over a stage as one Gaussian, trusting
    # uses_gaussian_noise(): the residuals of unit noise must look N(0, 1).
    unit = np.asarray(realized({**params, "noise_std": jnp.float32(1.0)})) - mean
    n = unit.size
    if abs(unit.mean()) > 5 / math.sqrt(n) or abs(unit.std() - 1) > 5 / math.sqrt(2 * n):
        raise fail_check(
            "noise",
            game,
            f"uses_gaussian_noise() is True but realized payoffs minus expected ones at "
            f"noise_std=1 have mean {unit.mean():.4f} and std {unit.std():.4f}, not N(0, 1)",
        )


def _check_lipschitz(game: AnonymousGame, params: Params, rng: np.random.Generator) -> None:
    bound = game.lipschitz(params)
    if bound is None:
        raise NotApplicableError("no Lipschitz constant declared")
    if not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound < 0:
        raise fail_check(
            "lipschitz", game, f"lipschitz() must be None or finite >= 0, got {bound!r}"
        )
    pairs = rng.dirichlet(np.ones(game.num_actions), size=(32, 2)).astype(np.float32)
    first = _batched(game, params, pairs[:, 0])
    second = _batched(game, params, pairs[:, 1])
    change = np.abs(first - second).reshape(len(pairs), -1).max(axis=1)
    allowed = bound * np.abs(pairs[:, 0] - pairs[:, 1]).sum(axis=1)
    # float32 payoffs: allow a few ulps of the payoff scale on top of the bound.
    slack = 1e-5 + 1e-6 * np.abs(first).max()
    worst = int(np.argmax(change - allowed))
    if change[worst] > allowed[worst] + slack:
        raise fail_check(
            "lipschitz",
            game,
            f"payoffs change by {change[worst]:.4g} between {pairs[worst, 0].tolist()} and "
            f"{pairs[worst, 1].tolist()}, more than lipschitz() = {bound} times their L1 "
            f"distance ({allowed[worst]:.4g})",
        )


def definition_checks(
    game: AnonymousGame, params: Params, rng: np.random.Generator
) -> list[tuple[str, Callable[[], None]]]:
    """``(name, check)`` of each check of the game's definition at ``params``, in the
    order :func:`jaxstage.testing.check_game` runs them (the later ones call what the
    earlier ones checked; the random ones draw from ``rng`` in this order)."""
    return [
        ("attributes", lambda: _check_attributes(game, params)),
        ("hashable", lambda: _check_hashable(game, params)),
        ("noise_std", lambda: _check_noise_std(game, params)),
        ("params", lambda: _check_params(game, params)),
        ("payoff_shape", lambda: _check_payoff_shape(game, params)),
        ("jit", lambda: _check_jit(game, params)),
        ("vmap", lambda: _check_vmap(game, params)),
        ("payoff_finite", lambda: _check_payoff_finite(game, params, rng)),
        ("noise", lambda: _check_noise(game, params, rng)),
        ("lipschitz", lambda: _check_lipschitz(game, params, rng)),
    ]
