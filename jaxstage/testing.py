"""A conformance check for anonymous games: run your own game through :func:`check_game`.

:func:`check_game` checks what a game author can get wrong, in the order the kernels
depend on it, and stops at the first failure with a :class:`GameCheckError` naming the
check, the game and the bad value:

* ``attributes``: ``name``, ``num_actions`` (an int in ``[2, MAX_ACTIONS]``), the type
  shares and names, the action names;
* ``hashable``: games are static arguments of the compiled kernels;
* ``noise_std``: ``default_params()["noise_std"]`` is a finite scalar ``>= 0``;
* ``params``: ``default_params`` is a dict of finite float arrays, that the game's own
  ``check_params`` accepts; ``param_docs`` names constructor arguments; ``config``
  records the game's name and is JSON-ready;
* ``payoff_shape``: ``expected_payoffs`` maps a ``(k,)`` distribution to
  ``(num_types, k)`` float32 payoffs;
* ``jit``: it traces under ``jax.jit`` (both the distribution and the parameters traced,
  as in the kernels) and gives the eager values;
* ``vmap``: it maps over a batch of distributions (the metrics evaluate the ``k^2``
  deviation-adjusted distributions at once) and over a batch of parameters (sweeps);
* ``payoff_finite``: finite on the simplex: its centre, its corners, random interior
  points and the empirical distributions ``c / n`` of populations of 1 to 7 agents;
* ``noise``: ``realized_payoffs`` gives ``(n,)`` finite floats under ``jit``; for a game
  declaring Gaussian noise (the fast kernel relies on it), the residuals are
  ``N(0, noise_std^2)``;
* ``lipschitz``: the declared constant is finite, ``>= 0`` and bounds the payoff changes
  between random pairs of distributions;
* ``equilibria``: each declared equilibrium lies in the simplex and is an approximate
  equilibrium (see :func:`equilibrium_gaps`);
* ``simulate_reference`` and ``simulate_fast`` (``run_kernels=True``; the fast kernel for
  games with the default Gaussian noise only): a small run gives records of the right
  shapes, finite, with shares in ``[0, 1]``; without exploration no agent moves;
* ``kernels_agree``: the two kernels draw different random numbers, so only what does not
  depend on them is compared: the metrics of the same initial actions.

Example:
    >>> import jax.numpy as jnp
    >>> import jaxstage as js
    >>> game = js.games.from_payoff_fn(lambda d: -(1.0 + jnp.arange(3)) * d, 3)
    >>> report = js.testing.check_game(game, run_kernels=False)
    >>> "payoff_finite" in report.passed
    True
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import fast
from jaxstage.games import MAX_ACTIONS, AnonymousGame, Params, type_counts
from jaxstage.learner import StageLearning
from jaxstage.metrics import best_reply_gaps, deviation_payoffs
from jaxstage.simulation import SimulationResult, simulate

__all__ = ["GameCheckError", "GameCheckReport", "check_game", "equilibrium_gaps"]

#: Most subsets enumerated by the Hall condition of a typed equilibrium (2^16).
MAX_HALL_SET = 16
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


@dataclasses.dataclass(frozen=True)
class GameCheckReport:
    """What :func:`check_game` checked.

    Attributes:
        game: the name of the game.
        passed: the checks passed, in order.
        skipped: the checks that did not apply, with the reason.
    """

    game: str
    passed: tuple[str, ...]
    skipped: Mapping[str, str]

    def __str__(self) -> str:
        lines = [f"game {self.game!r}: {len(self.passed)} checks passed"]
        lines += [f"  ok   {name}" for name in self.passed]
        lines += [f"  skip {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


class _NotApplicableError(Exception):
    """Raised by a check that does not apply to this game."""


def _fail(check: str, game: AnonymousGame, message: str) -> GameCheckError:
    return GameCheckError(check, str(getattr(game, "name", type(game).__name__)), message)


def _payoffs_fn(game: AnonymousGame) -> Callable[[Params, jax.Array], jax.Array]:
    return lambda params, distribution: game.expected_payoffs(params, distribution)


def _expected_shape(game: AnonymousGame) -> tuple[int, int]:
    return (game.num_types, game.num_actions)


# --------------------------------------------------------------------------- attributes


def _check_attributes(game: AnonymousGame, params: Params) -> None:
    name, k = getattr(game, "name", None), getattr(game, "num_actions", None)
    if not isinstance(name, str) or not name:
        raise _fail("attributes", game, f"name must be a non-empty str, got {name!r}")
    # bool is an int subclass, and a float 2.0 would break every shape built from k.
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise _fail("attributes", game, f"num_actions must be an int, got {k!r}")
    if not 2 <= k <= MAX_ACTIONS:
        raise _fail("attributes", game, f"num_actions must be in [2, {MAX_ACTIONS}], got {k}")
    shares = np.asarray(game.type_shares, dtype=np.float64)
    if shares.ndim != 1 or shares.size == 0 or not np.all(np.isfinite(shares)):
        raise _fail("attributes", game, f"type_shares must be finite shares, got {shares}")
    if np.any(shares <= 0) or abs(shares.sum() - 1.0) > SHARE_SLACK:
        raise _fail(
            "attributes", game, f"type_shares must be > 0 and sum to 1, got {shares.tolist()}"
        )
    _check_labels(game, "action_names", game.action_names, k)
    _check_labels(game, "type_names", game.type_names, shares.size)


def _check_labels(game: AnonymousGame, what: str, labels: Any, size: int) -> None:
    if labels is None:
        return
    labels = tuple(labels)
    if len(labels) != size or not all(isinstance(label, str) for label in labels):
        raise _fail("attributes", game, f"{what} must be {size} strs, got {labels!r}")
    # Result tables name their columns after the labels (falling back to indices when
    # they repeat), so repeated labels would silently lose the names.
    if len(set(labels)) != size:
        raise _fail("attributes", game, f"{what} must be distinct, got {labels!r}")


def _check_hashable(game: AnonymousGame, params: Params) -> None:
    try:
        hash(game)
    except TypeError as error:
        raise _fail(
            "hashable", game, f"games are static arguments of jax.jit and must hash: {error}"
        ) from error
    if not game == game:  # compiled code is cached by equality
        raise _fail("hashable", game, "game == game is False")


# --------------------------------------------------------------------------- params


def _check_params(game: AnonymousGame, params: Params) -> None:
    for key, value in params.items():
        array = np.asarray(value)
        if not isinstance(key, str) or not np.issubdtype(array.dtype, np.floating):
            raise _fail(
                "params", game, f"parameter {key!r} must be a float array, got {array.dtype}"
            )
        if not np.all(np.isfinite(array)):
            raise _fail("params", game, f"parameter {key!r} must be finite, got {array.tolist()}")
    try:
        game.check_params({key: np.asarray(value) for key, value in params.items()})
    except ValueError as error:
        raise _fail("params", game, f"check_params refuses the defaults: {error}") from error
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
        raise _fail("params", game, f"param_docs() must be a dict, got {type(docs).__name__}")
    for key, doc in docs.items():
        if not isinstance(doc, str) or not doc.strip():
            raise _fail("params", game, f"param_docs()[{key!r}] must be a non-empty str")
    args = _constructor_args(game)
    unknown = sorted(set(docs) - args) if args is not None else []
    if unknown:
        raise _fail(
            "params",
            game,
            f"param_docs() documents {unknown}, which the constructor does not take "
            f"(it takes {sorted(args)})",
        )


def _check_config(game: AnonymousGame) -> None:
    config = game.config()
    if not isinstance(config, Mapping) or config.get("name") != game.name:
        raise _fail("params", game, f"config() must be a dict with name {game.name!r}")
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise _fail(
            "params", game, f"config() must be JSON-ready (results record it): {error}"
        ) from error


def _check_noise_std(game: AnonymousGame, params: Params) -> None:
    if not isinstance(params, Mapping) or "noise_std" not in params:
        raise _fail("noise_std", game, "default_params() must be a dict with 'noise_std'")
    noise = np.asarray(params["noise_std"])
    if noise.shape != ():
        raise _fail("noise_std", game, f"noise_std must be a scalar, got shape {noise.shape}")
    if not math.isfinite(float(noise)) or float(noise) < 0:
        raise _fail("noise_std", game, f"noise_std must be finite and >= 0, got {float(noise)}")


# --------------------------------------------------------------------------- payoffs


def _uniform(game: AnonymousGame) -> jax.Array:
    return jnp.full(game.num_actions, 1.0 / game.num_actions, jnp.float32)


def _check_payoff_shape(game: AnonymousGame, params: Params) -> None:
    try:
        value = game.expected_payoffs(params, _uniform(game))
    except Exception as error:  # noqa: BLE001 - re-raised with the check's name
        raise _fail(
            "payoff_shape", game, f"expected_payoffs failed at the uniform distribution: {error!r}"
        ) from error
    shape = getattr(value, "shape", None)
    if shape != _expected_shape(game):
        raise _fail(
            "payoff_shape",
            game,
            f"expected_payoffs must return shape (num_types, num_actions) = "
            f"{_expected_shape(game)}, got {shape}",
        )
    if value.dtype != jnp.float32:
        raise _fail("payoff_shape", game, f"expected_payoffs must be float32, got {value.dtype}")


def _check_jit(game: AnonymousGame, params: Params) -> None:
    eager = np.asarray(game.expected_payoffs(params, _uniform(game)))
    try:
        traced = np.asarray(jax.jit(_payoffs_fn(game))(params, _uniform(game)))
    except jax.errors.JAXTypeError as error:
        raise _fail(
            "jit",
            game,
            f"expected_payoffs works on concrete arrays but not under jax.jit, where the "
            f"kernels call it ({type(error).__name__}): use jnp.where or jax.lax.cond instead "
            f"of Python if/while on traced values, jnp instead of numpy or math functions",
        ) from error
    except Exception as error:  # noqa: BLE001 - re-raised with the check's name
        raise _fail("jit", game, f"expected_payoffs fails under jax.jit: {error!r}") from error
    if not np.allclose(traced, eager, rtol=1e-5, atol=1e-6, equal_nan=True):
        raise _fail("jit", game, f"jit gives {traced.tolist()}, eager gives {eager.tolist()}")


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
        raise _fail("vmap", game, f"expected_payoffs fails under jax.vmap: {error!r}") from error
    want = (len(points), *_expected_shape(game))
    if batch.shape != want or by_params.shape != (2, *_expected_shape(game)):
        raise _fail(
            "vmap",
            game,
            f"a batch of {len(points)} distributions gives shape {batch.shape} (want {want}); "
            f"a batch of 2 parameter sets gives {by_params.shape}",
        )
    singles = np.stack([np.asarray(game.expected_payoffs(params, jnp.asarray(p))) for p in points])
    if not np.allclose(batch, singles, rtol=1e-5, atol=1e-6, equal_nan=True):
        raise _fail("vmap", game, "vmap over distributions changes the payoffs")


def _check_payoff_finite(game: AnonymousGame, params: Params, rng: np.random.Generator) -> None:
    points = _simplex_points(game, rng, count=8)
    values = _batched(game, params, points)
    bad = ~np.all(np.isfinite(values.reshape(len(points), -1)), axis=1)
    if np.any(bad):
        first = int(np.argmax(bad))
        raise _fail(
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
        raise _fail("noise", game, f"realized_payoffs fails under jax.jit: {error!r}") from error
    if value.shape != (n,) or not np.issubdtype(value.dtype, np.floating):
        raise _fail(
            "noise",
            game,
            f"realized_payoffs of {n} agents must be ({n},) floats, got "
            f"{value.shape} {value.dtype}",
        )
    if not np.all(np.isfinite(value)):
        raise _fail("noise", game, "realized_payoffs are not finite")
    if game.uses_gaussian_noise():
        _check_gaussian(game, params, realized, np.asarray(expected)[types, actions])


def _check_gaussian(game, params, realized, mean) -> None:
    # The fast kernel draws an agent's noise over a stage as one Gaussian, trusting
    # uses_gaussian_noise(): the residuals of unit noise must look N(0, 1).
    unit = np.asarray(realized({**params, "noise_std": jnp.float32(1.0)})) - mean
    n = unit.size
    if abs(unit.mean()) > 5 / math.sqrt(n) or abs(unit.std() - 1) > 5 / math.sqrt(2 * n):
        raise _fail(
            "noise",
            game,
            f"uses_gaussian_noise() is True but realized payoffs minus expected ones at "
            f"noise_std=1 have mean {unit.mean():.4f} and std {unit.std():.4f}, not N(0, 1)",
        )


def _check_lipschitz(game: AnonymousGame, params: Params, rng: np.random.Generator) -> None:
    bound = game.lipschitz(params)
    if bound is None:
        raise _NotApplicableError("no Lipschitz constant declared")
    if not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound < 0:
        raise _fail("lipschitz", game, f"lipschitz() must be None or finite >= 0, got {bound!r}")
    pairs = rng.dirichlet(np.ones(game.num_actions), size=(32, 2)).astype(np.float32)
    first = _batched(game, params, pairs[:, 0])
    second = _batched(game, params, pairs[:, 1])
    change = np.abs(first - second).reshape(len(pairs), -1).max(axis=1)
    allowed = bound * np.abs(pairs[:, 0] - pairs[:, 1]).sum(axis=1)
    # float32 payoffs: allow a few ulps of the payoff scale on top of the bound.
    slack = 1e-5 + 1e-6 * np.abs(first).max()
    worst = int(np.argmax(change - allowed))
    if change[worst] > allowed[worst] + slack:
        raise _fail(
            "lipschitz",
            game,
            f"payoffs change by {change[worst]:.4g} between {pairs[worst, 0].tolist()} and "
            f"{pairs[worst, 1].tolist()}, more than lipschitz() = {bound} times their L1 "
            f"distance ({allowed[worst]:.4g})",
        )


# --------------------------------------------------------------------------- equilibria


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
        raise _fail("equilibria", game, f"{where} must be {game.num_actions} finite shares")
    if np.any(eq < -SHARE_SLACK) or abs(eq.sum() - 1.0) > SHARE_SLACK:
        raise _fail("equilibria", game, f"{where} is not in the simplex (>= 0, sum to 1)")
    gaps = equilibrium_gaps(game, params, np.clip(eq, 0.0, None), num_agents)
    allowed = gaps <= tol
    support = eq > SHARE_SLACK
    shares = np.asarray(game.type_shares, dtype=np.float64)
    if game.num_types == 1:
        bad = support & ~allowed[0]
        if np.any(bad):
            action = int(np.argmax(np.where(bad, gaps[0], -np.inf)))
            raise _fail(
                "equilibria",
                game,
                f"{where}: action {action} is played but a deviation gains "
                f"{gaps[0, action]:.4g} > tolerance {tol}",
            )
        return
    if game.num_types > MAX_HALL_SET:
        raise _NotApplicableError(f"more than {MAX_HALL_SET} types: equilibria not checked")
    shortfall = _hall_shortfall(shares, eq, allowed)
    if shortfall > SHARE_SLACK:
        raise _fail(
            "equilibria",
            game,
            f"{where}: no split of the types over the actions makes every agent play a "
            f"best reply within tolerance {tol} (a set of types lacks {shortfall:.4g} of "
            f"the population on its best replies); gains by (type, action): {gaps.tolist()}",
        )


def _check_equilibria(game, params, tol: float, num_agents: int) -> None:
    equilibria = game.equilibria(params)
    if not equilibria:
        raise _NotApplicableError("no equilibrium declared")
    for index, equilibrium in enumerate(equilibria):
        _check_one_equilibrium(game, params, index, equilibrium, tol, num_agents)


# --------------------------------------------------------------------------- kernels


def _record_shapes(game: AnonymousGame, stages: int) -> dict[str, tuple[int, ...]]:
    k, t, s = game.num_actions, game.num_types, stages
    return {
        "distribution": (s + 1, k),
        "distribution_by_type": (s + 1, t, k),
        "best_reply_fraction": (s + 1,),
        "best_reply_fraction_by_type": (s + 1, t),
        "nash_gap": (s + 1,),
        "expected_payoffs": (s + 1, t, k),
        "welfare": (s + 1,),
        "played_distribution": (s, k),
        "switched_fraction": (s,),
        "realized_mean_payoff": (s,),
        "explore_prob": (s,),
        "stage_length": (s,),
        "rounds": (s + 1,),
        "in_equilibrium": (s + 1,),
    }


def _run(game, kernel: str, learner, num_agents, num_stages, seed) -> SimulationResult:
    check = f"simulate_{kernel}"
    try:
        # The same initial actions on both kernels, so that their initial records agree.
        initial = np.arange(num_agents) % game.num_actions
        return simulate(game, learner, num_agents, num_stages, seed, initial=initial, kernel=kernel)
    except Exception as error:  # noqa: BLE001 - re-raised with the check's name
        raise _fail(check, game, f"simulate(kernel={kernel!r}) failed: {error!r}") from error


def _check_records(game: AnonymousGame, kernel: str, result: SimulationResult) -> None:
    check = f"simulate_{kernel}"
    for field, shape in _record_shapes(game, result.num_stages).items():
        value = np.asarray(getattr(result, field))
        if value.shape != shape:
            raise _fail(check, game, f"record {field} has shape {value.shape}, want {shape}")
        if value.dtype != np.bool_ and not np.all(np.isfinite(value)):
            raise _fail(check, game, f"record {field} is not finite: {value.tolist()}")
    for field in ("best_reply_fraction", "switched_fraction", "distribution"):
        value = np.asarray(getattr(result, field))
        if np.any(value < 0) or np.any(value > 1):
            raise _fail(check, game, f"record {field} leaves [0, 1]: {value.tolist()}")


def _check_still(game: AnonymousGame, kernel: str, result: SimulationResult) -> None:
    # Without exploration an agent observes its own stage action only: no one can move.
    if np.any(result.switched_fraction != 0) or np.any(
        result.distribution != result.distribution[0]
    ):
        raise _fail(
            f"simulate_{kernel}",
            game,
            f"without exploration agents moved: distributions {result.distribution.tolist()}",
        )


def _check_kernel(game, kernel: str, num_agents: int, num_stages: int, seed: int):
    exploring = StageLearning(stage_length=3, explore_prob=0.3, update_prob=0.5)
    result = _run(game, kernel, exploring, num_agents, num_stages, seed)
    _check_records(game, kernel, result)
    still = StageLearning(stage_length=3, explore_prob=0.0, update_prob=1.0)
    _check_still(game, kernel, _run(game, kernel, still, num_agents, 1, seed))
    return result


_INITIAL_METRICS = ("distribution", "nash_gap", "best_reply_fraction", "welfare")


def _check_kernels_agree(game, reference: SimulationResult, fast_run: SimulationResult) -> None:
    # Different random numbers: only the metrics of the shared initial actions must agree.
    for field in (*_INITIAL_METRICS, "expected_payoffs"):
        want, got = getattr(reference, field)[0], getattr(fast_run, field)[0]
        if not np.allclose(want, got, rtol=1e-5, atol=1e-6):
            raise _fail(
                "kernels_agree",
                game,
                f"initial {field}: reference kernel {np.asarray(want).tolist()}, fast kernel "
                f"{np.asarray(got).tolist()}",
            )


# --------------------------------------------------------------------------- entry point


def check_game(
    game: AnonymousGame,
    *,
    run_kernels: bool = True,
    equilibrium_tol: float = 1e-3,
    equilibrium_agents: int = 100_000,
    num_agents: int = 128,
    num_stages: int = 2,
    seed: int = 0,
) -> GameCheckReport:
    """Check that ``game`` is a well-formed anonymous game the kernels can run.

    Runs the checks listed in :mod:`jaxstage.testing`, in order, at the game's default
    parameters, and stops at the first failure.

    Args:
        game: the game, a built-in one or your own :class:`~jaxstage.AnonymousGame`.
        run_kernels: also run a small simulation on the reference kernel and, for games
            with the default Gaussian noise, on the fast kernel (a few seconds of
            compilation each).
        equilibrium_tol: a declared equilibrium passes when every action it plays is a
            best reply within this payoff tolerance.
        equilibrium_agents: the population ``n`` whose one-agent deviations ``1 / n`` judge
            the equilibria (see :func:`equilibrium_gaps`).
        num_agents: population of the small simulations.
        num_stages: stages of the small simulations.
        seed: seed of the random points and of the simulations.

    Returns:
        A :class:`GameCheckReport` listing the checks passed and those that did not apply.

    Raises:
        GameCheckError: an ``AssertionError`` naming the failed check, the game and the
            bad value.

    Example:
        >>> import jaxstage as js
        >>> js.testing.check_game(js.make_game("minority"), run_kernels=False).skipped
        {'lipschitz': 'no Lipschitz constant declared', 'kernels': 'run_kernels=False'}
    """
    rng = np.random.default_rng(seed)
    try:
        params = game.default_params()
    except Exception as error:  # noqa: BLE001 - re-raised with the check's name
        raise _fail("params", game, f"default_params() failed: {error!r}") from error
    checks: list[tuple[str, Callable[[], Any]]] = [
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
        (
            "equilibria",
            lambda: _check_equilibria(game, params, equilibrium_tol, equilibrium_agents),
        ),
    ]
    passed: list[str] = []
    skipped: dict[str, str] = {}
    for name, check in checks:
        try:
            check()
        except _NotApplicableError as reason:
            skipped[name] = str(reason)
        else:
            passed.append(name)
    if run_kernels:
        passed += _check_kernels(game, num_agents=num_agents, num_stages=num_stages, seed=seed)
        if not fast.supports_fast(game):
            skipped["simulate_fast"] = "own noise model: the reference kernel only"
            skipped["kernels_agree"] = "one kernel only"
    else:
        skipped["kernels"] = "run_kernels=False"
    return GameCheckReport(game=game.name, passed=tuple(passed), skipped=skipped)


def _check_kernels(
    game: AnonymousGame, *, num_agents: int, num_stages: int, seed: int
) -> list[str]:
    """Run both kernels where they apply; the names of the checks passed."""
    reference = _check_kernel(game, "reference", num_agents, num_stages, seed)
    if not fast.supports_fast(game):
        return ["simulate_reference"]
    fast_run = _check_kernel(game, "fast", num_agents, num_stages, seed)
    _check_kernels_agree(game, reference, fast_run)
    return ["simulate_reference", "simulate_fast", "kernels_agree"]
