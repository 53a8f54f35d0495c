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

The checks live in :mod:`jaxstage.game_checks` (the game's definition),
:mod:`jaxstage.equilibrium_checks` (its declared equilibria) and
:mod:`jaxstage.kernel_checks` (the small simulations); this module runs them in order.

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
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxstage.equilibrium_checks import check_equilibria, equilibrium_gaps
from jaxstage.fast_layout import supports_fast
from jaxstage.game_base import AnonymousGame
from jaxstage.game_checks import GameCheckError, NotApplicableError, definition_checks, fail_check
from jaxstage.kernel_checks import check_kernels

__all__ = ["GameCheckError", "GameCheckReport", "check_game", "equilibrium_gaps"]


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
        raise fail_check("params", game, f"default_params() failed: {error!r}") from error
    checks: list[tuple[str, Callable[[], Any]]] = definition_checks(game, params, rng)
    checks.append(
        (
            "equilibria",
            lambda: check_equilibria(game, params, equilibrium_tol, equilibrium_agents),
        )
    )
    passed: list[str] = []
    skipped: dict[str, str] = {}
    for name, check in checks:
        try:
            check()
        except NotApplicableError as reason:
            skipped[name] = str(reason)
        else:
            passed.append(name)
    if run_kernels:
        passed += check_kernels(game, num_agents=num_agents, num_stages=num_stages, seed=seed)
        if not supports_fast(game):
            skipped["simulate_fast"] = "own noise model: the reference kernel only"
            skipped["kernels_agree"] = "one kernel only"
    else:
        skipped["kernels"] = "run_kernels=False"
    return GameCheckReport(game=game.name, passed=tuple(passed), skipped=skipped)
