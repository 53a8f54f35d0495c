"""Small simulations of a game on both kernels: the ``simulate_reference``,
``simulate_fast`` and ``kernels_agree`` checks of :func:`jaxstage.testing.check_game`.

A run must give records of the right shapes, finite, with shares in ``[0, 1]``, and
without exploration no agent may move. The two kernels draw different random numbers,
so only the metrics of the same initial actions are compared.
"""

from __future__ import annotations

import numpy as np

from jaxstage.fast_layout import supports_fast
from jaxstage.game_base import AnonymousGame
from jaxstage.game_checks import fail_check
from jaxstage.learner import StageLearning
from jaxstage.simulation import SimulationResult, simulate

__all__ = ["check_kernels"]


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
        raise fail_check(check, game, f"simulate(kernel={kernel!r}) failed: {error!r}") from error


def _check_records(game: AnonymousGame, kernel: str, result: SimulationResult) -> None:
    check = f"simulate_{kernel}"
    for field, shape in _record_shapes(game, result.num_stages).items():
        value = np.asarray(getattr(result, field))
        if value.shape != shape:
            raise fail_check(check, game, f"record {field} has shape {value.shape}, want {shape}")
        if value.dtype != np.bool_ and not np.all(np.isfinite(value)):
            raise fail_check(check, game, f"record {field} is not finite: {value.tolist()}")
    for field in ("best_reply_fraction", "switched_fraction", "distribution"):
        value = np.asarray(getattr(result, field))
        if np.any(value < 0) or np.any(value > 1):
            raise fail_check(check, game, f"record {field} leaves [0, 1]: {value.tolist()}")


def _check_still(game: AnonymousGame, kernel: str, result: SimulationResult) -> None:
    # Without exploration an agent observes its own stage action only: no one can move.
    if np.any(result.switched_fraction != 0) or np.any(
        result.distribution != result.distribution[0]
    ):
        raise fail_check(
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
            raise fail_check(
                "kernels_agree",
                game,
                f"initial {field}: reference kernel {np.asarray(want).tolist()}, fast kernel "
                f"{np.asarray(got).tolist()}",
            )


def check_kernels(game: AnonymousGame, *, num_agents: int, num_stages: int, seed: int) -> list[str]:
    """Run both kernels where they apply; the names of the checks passed."""
    reference = _check_kernel(game, "reference", num_agents, num_stages, seed)
    if not supports_fast(game):
        return ["simulate_reference"]
    fast_run = _check_kernel(game, "fast", num_agents, num_stages, seed)
    _check_kernels_agree(game, reference, fast_run)
    return ["simulate_reference", "simulate_fast", "kernels_agree"]
