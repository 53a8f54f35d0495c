"""Per-run measures of the study: its convergence criterion, the distance to best-reply
dynamics (claim C5) and the distance to the mean-field trajectory (claims C2 and C5).
Definitions: the package docstring of :mod:`jaxstage.study`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "study_convergence",
    "br_trajectory",
    "br_distance",
    "br_reference",
    "mf_distance",
    "mf_reference_distance",
]


def study_convergence(
    in_equilibrium: Sequence[bool] | np.ndarray,
    rounds: Sequence[int] | np.ndarray,
    hold_stages: int,
) -> int | None:
    """The study's convergence round of one run (see :mod:`jaxstage.study`).

    Args:
        in_equilibrium: one flag per recorded state (index 0 = initial state).
        rounds: rounds played before each recorded state (same length).
        hold_stages: the equilibrium tail must have at least this many states.

    Returns:
        ``rounds[s]`` for the first state ``s`` from which the run stays in equilibrium to
        the end, when that tail has at least ``hold_stages`` states; else ``None``.

    Example:
        >>> study_convergence([False, True, False, True, True, True], [0, 10, 20, 30, 40, 50], 3)
        30
        >>> study_convergence([False, False, False, False, True], [0, 1, 2, 3, 4], 3) is None
        True
    """
    from jaxstage.metrics import convergence_stage

    flags = np.asarray(in_equilibrium, dtype=bool)
    if len(flags) != len(rounds):
        raise ValueError(f"{len(flags)} flags for {len(rounds)} rounds")
    stage = convergence_stage(flags, None)
    if stage is None or len(flags) - stage < hold_stages:
        return None
    return int(rounds[stage])


def br_trajectory(trajectory: np.ndarray, length: int, cycled: bool) -> np.ndarray:
    """Extend a best-reply trajectory to ``length`` states (stopped: hold; cycled: repeat).

    Args:
        trajectory: ``(steps + 1, k)`` recorded distributions, initial state first.
        length: number of states wanted.
        cycled: the dynamics stopped on a detected two-cycle.

    Returns:
        ``(length, k)``.
    """
    trajectory = np.asarray(trajectory, dtype=np.float64)[:length]
    if len(trajectory) >= length:
        return trajectory
    missing = length - len(trajectory)
    if cycled and len(trajectory) >= 2:
        last, before = trajectory[-1], trajectory[-2]
        tail = np.stack([before if i % 2 == 0 else last for i in range(missing)])
    else:
        tail = np.repeat(trajectory[-1:], missing, axis=0)
    return np.concatenate([trajectory, tail])


def br_distance(learners: np.ndarray, best_reply: np.ndarray) -> float:
    """Mean over stages ``1..S`` of the L1 distance between two ``(S+1, k)`` trajectories.

    Example:
        >>> br_distance(np.array([[.5, .5], [1., 0.], [1., 0.]]),
        ...             np.array([[.5, .5], [.5, .5], [1., 0.]]))
        0.5
    """
    return _mean_stage_l1(learners, best_reply)


def mf_distance(learners: np.ndarray, mean_field: np.ndarray) -> float:
    """Mean over stages ``1..S`` of the L1 distance between a run's ``(S+1, k)``
    distribution of stage actions and the mean-field trajectory (MODEL.md section 9).

    The initial state is left out as in :func:`br_distance`; it still counts through the
    stages it leads to (the mean field starts from the exact initial distribution, the
    run from its sample of it).

    Example:
        >>> mf_distance(np.array([[.5, .5], [.6, .4], [.7, .3]]),
        ...             np.array([[.5, .5], [.5, .5], [.8, .2]]))
        0.2
    """
    return _mean_stage_l1(learners, mean_field)


def mf_reference_distance(result: Any, reference: Any) -> float | None:
    """``mf_distance`` of one run against its setting's
    :class:`~jaxstage.study.mean_field_reference.MeanFieldReference`; ``None`` when the
    mean-field map does not apply to the setting (the reference says why)."""
    if reference.distribution is None:
        return None
    return mf_distance(result.distribution, reference.distribution)


def _mean_stage_l1(first: np.ndarray, second: np.ndarray) -> float:
    first, second = np.asarray(first, float), np.asarray(second, float)
    if first.shape != second.shape or first.shape[0] < 2:
        raise ValueError(
            f"trajectories must have the same shape with >= 2 states, got {first.shape} "
            f"and {second.shape}"
        )
    return float(np.mean(np.abs(first[1:] - second[1:]).sum(axis=1)))


def br_reference(
    game: Any, result: Any, update_prob: float, eps: float, seed: int
) -> tuple[float, int | None, bool]:
    """``(br_distance, br_steps or None, br_converged)`` of one run (:mod:`jaxstage.study`)."""
    from jaxstage.best_reply import best_reply_dynamics
    from jaxstage.games import type_counts

    states = result.distribution.shape[0]
    sizes = type_counts(game.type_shares, int(result.config["num_agents"]))
    by_type = np.asarray(result.distribution_by_type[0], dtype=np.float64)
    counts = np.rint(by_type * np.asarray(sizes, np.float64)[:, None]).astype(np.int64)
    if counts.shape[0] == 1:
        counts = counts[0]
    br = best_reply_dynamics(
        game,
        int(result.config["num_agents"]),
        mode="simultaneous",
        inertia=float(update_prob),
        eps=eps,
        initial=counts,
        max_steps=states - 1,
        seed=seed,
        max_records=states,
    )
    path = br_trajectory(br.trajectory, states, br.cycled)
    return (
        br_distance(result.distribution, path),
        (br.steps if br.converged else None),
        (br.converged),
    )
