"""The convergence-versus-population study (MODEL.md section 7, issue 4).

A study is a declarative list of :class:`Experiment` s, each tagged with the claims it
serves (``C1``..``C5`` of MODEL.md section 7, plus ``"oscillation"``). For every game,
population, information variant and stage length of an experiment, all seeds (and all
values of the experiment's ``update_probs`` grid) run in one batched :func:`jaxstage.sweep`
call. Each run gives one row of the tidy ``runs`` table (:data:`RUN_COLUMNS`); the derived
tables are pure functions of that table:

* :func:`convergence_table`: seeds, share converged and quantiles of rounds to converge
  per (experiment, game, variant, stage length, update_prob, population);
* :func:`shortest_stage_length_table`: the smallest stage length converging in at least
  90% of seeds within the round budget, per (experiment, game, variant, update_prob,
  population);
* :func:`info_speedup_table`: median rounds without information over median rounds with
  each information variant, per population.

**Convergence in the study** (:func:`study_convergence`): a run converged when the
population is in an (eps, delta)-equilibrium from some recorded state ``s`` to the end of
the run *and* that tail is at least ``hold_stages`` states long (so a run that merely ends
in equilibrium by chance in its last stage does not count). Its convergence round is the
number of rounds played before state ``s``. Non-converged runs are never dropped: medians
and quantiles are over *all* seeds, a non-converged seed counting as ``+inf`` rounds, so a
median is "not converged" (empty in the tables) when half or more of the seeds failed.

**Distance to best-reply dynamics** (:func:`br_distance`, claim C5): from the run's exact
initial counts, count-level simultaneous best-reply dynamics with inertia ``update_prob``
and the run's ``eps`` (MODEL.md section 4) take one step per stage. When they stop (at an
equilibrium) their state is held; when they stop on a detected two-cycle the cycle is
continued. ``br_distance`` is the mean over stages ``s = 1..S`` of the L1 distance
``sum_a |d_learn[s, a] - d_br[s, a]|`` between the learners' distribution of stage
actions after stage ``s`` and the dynamics' distribution after step ``s``.

:func:`run_study` runs a study and writes its folder atomically (see
:func:`write_study`): ``runs.csv``, ``convergence.csv``, ``shortest_stage_length.csv``,
``info_speedup.csv``, ``series.csv`` (time series of the oscillation experiments),
``config.json``, ``summary.md`` and PNG plots.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CLAIMS",
    "RUN_COLUMNS",
    "STUDY_FILES",
    "InfoVariant",
    "Experiment",
    "Study",
    "quick_study",
    "full_study",
    "select",
    "study_convergence",
    "br_trajectory",
    "br_distance",
    "median_with_failures",
    "convergence_table",
    "shortest_stage_length_table",
    "info_speedup_table",
    "run_experiment",
    "run_sweep",
    "partial_folder",
    "run_study",
    "write_study",
    "check_study_folder",
]

#: Claims an experiment may serve (MODEL.md section 7, plus the oscillating cases).
CLAIMS = ("C1", "C2", "C3", "C4", "C5", "oscillation")

#: Columns of ``runs.csv``, in order.
RUN_COLUMNS = (
    "claims",
    "experiment",
    "game",
    "game_params",
    "num_agents",
    "variant",
    "info",
    "info_sample_size",
    "info_noise_std",
    "stage_length",
    "explore_prob",
    "update_prob",
    "num_stages",
    "round_budget",
    "eps",
    "delta",
    "hold_stages",
    "seed",
    "converged",
    "convergence_round",
    "final_nash_gap",
    "final_best_reply_fraction",
    "final_distance_to_equilibrium",
    "br_distance",
    "br_steps",
    "br_converged",
    "kernel",
    "sweep_seconds",
    "jaxstage_version",
    "jax_version",
)

#: Every file a study folder may hold; an existing folder holding anything else is
#: never replaced.
STUDY_FILES = frozenset(
    {
        "runs.csv",
        "convergence.csv",
        "shortest_stage_length.csv",
        "info_speedup.csv",
        "series.csv",
        "config.json",
        "summary.md",
        "rounds_vs_population.png",
        "shortest_stage_length.png",
        "info_speedup.png",
        "br_distance.png",
        "oscillation.png",
    }
)

#: Share of seeds that must converge for a stage length to count as converging.
CONVERGED_SHARE = 0.9


# --------------------------------------------------------------------------- definitions


@dataclasses.dataclass(frozen=True)
class InfoVariant:
    """One information variant of an experiment (MODEL.md section 3).

    Attributes:
        label: name in the tables (e.g. ``"none"``, ``"payoffs m=100"``).
        info: ``"none"``, ``"distribution"`` or ``"payoffs"``.
        sample_size: ``None`` for exact information, else the sample size ``m``.
        noise_std: Gaussian noise on the published distribution (distribution only).
        stage_lengths: stage lengths for this variant (default: the experiment's).
        update_probs: update probabilities for this variant (default: the experiment's).
    """

    label: str
    info: str = "none"
    sample_size: int | None = None
    noise_std: float = 0.0
    stage_lengths: tuple[int, ...] | None = None
    update_probs: tuple[float, ...] | None = None


NONE = InfoVariant("none")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: a game, populations, variants and stage lengths, many seeds.

    Attributes:
        name: unique name (a column of every table).
        claims: the claims it serves, a subset of :data:`CLAIMS`.
        game: built-in game name; ``game_params``: its constructor parameters.
        populations: numbers of agents.
        variants: information variants; the speed-up table compares each with the
            variant labelled ``"none"`` (of this experiment, or of ``baseline``).
        stage_lengths: stage lengths ``tau`` to run (each variant may override).
        update_probs: update probabilities; all values run in the same batched sweep.
        explore_prob: exploration probability.
        round_budget: rounds per run; a run has ``round_budget // tau`` stages.
        eps, delta: the (eps, delta)-equilibrium of the convergence criterion.
        hold_stages: minimum number of final states in equilibrium to count as converged
            (default: a tenth of the stages, at least 3).
        baseline: name of another experiment whose ``"none"`` variant is the baseline.
        series: also record the per-stage time series (nash gap, share at an eps-best
            reply) of the first ``series_seeds`` seeds, for plots.
    """

    name: str
    claims: tuple[str, ...]
    game: str
    populations: tuple[int, ...]
    game_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    variants: tuple[InfoVariant, ...] = (NONE,)
    stage_lengths: tuple[int, ...] = (10,)
    update_probs: tuple[float, ...] = (0.1,)
    explore_prob: float = 0.05
    round_budget: int = 1000
    eps: float = 0.05
    delta: float = 0.05
    hold_stages: int | None = None
    baseline: str | None = None
    series: bool = False
    series_seeds: int = 3

    def stages(self, tau: int) -> int:
        """Number of stages of a run with stage length ``tau``."""
        return max(1, self.round_budget // tau)

    def hold(self, tau: int) -> int:
        """The minimum equilibrium tail (in recorded states) for stage length ``tau``."""
        if self.hold_stages is not None:
            return self.hold_stages
        return max(3, self.stages(tau) // 10)


@dataclasses.dataclass(frozen=True)
class Study:
    """A named list of experiments run with ``seeds`` seeds each (seeds ``0..seeds-1``)."""

    name: str
    experiments: tuple[Experiment, ...]
    seeds: int = 10

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad value and the allowed set."""
        from jaxstage.games import GAMES
        from jaxstage.learner import INFO_MODES

        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must be unique, got {names}")
        for exp in self.experiments:
            bad = [c for c in exp.claims if c not in CLAIMS]
            if bad or not exp.claims:
                raise ValueError(
                    f"experiment {exp.name!r}: unknown claim(s) {bad}; valid: {', '.join(CLAIMS)}"
                )
            if exp.game not in GAMES:
                raise ValueError(
                    f"experiment {exp.name!r}: unknown game {exp.game!r}; "
                    f"valid: {', '.join(sorted(GAMES))}"
                )
            if not exp.populations or min(exp.populations) < 1:
                raise ValueError(f"experiment {exp.name!r}: populations must be >= 1")
            if exp.round_budget < 1:
                raise ValueError(f"experiment {exp.name!r}: round_budget must be >= 1")
            if exp.baseline is not None and exp.baseline not in names:
                raise ValueError(
                    f"experiment {exp.name!r}: baseline {exp.baseline!r} is not an "
                    f"experiment of the study ({', '.join(names)})"
                )
            for variant in exp.variants:
                if variant.info not in INFO_MODES:
                    raise ValueError(
                        f"experiment {exp.name!r}: unknown info {variant.info!r}; "
                        f"valid: {', '.join(INFO_MODES)}"
                    )
                taus = variant.stage_lengths or exp.stage_lengths
                probs = variant.update_probs or exp.update_probs
                if not taus or min(taus) < 1:
                    raise ValueError(f"experiment {exp.name!r}: stage lengths must be >= 1")
                if not probs or any(not 0 < p <= 1 for p in probs):
                    raise ValueError(
                        f"experiment {exp.name!r}: update_probs must lie in (0, 1], got {probs}"
                    )

    def config(self) -> dict[str, Any]:
        """The whole definition as JSON-ready data."""
        return {
            "name": self.name,
            "seeds": self.seeds,
            "experiments": [dataclasses.asdict(e) for e in self.experiments],
        }


def _powers(low: int, high: int) -> tuple[int, ...]:
    return tuple(10**e for e in range(low, high + 1))


def _info_variants(taus: tuple[int, ...], probs: tuple[float, ...]) -> tuple[InfoVariant, ...]:
    """C3: plain stage learning at its tuned setting (tau 100, update 0.1) and exact
    information on its own grid (short stages, small update_prob: exactly shared
    information makes everyone switch together), which also contains the plain setting."""
    grid = {"stage_lengths": taus, "update_probs": probs}
    return (
        InfoVariant("none", stage_lengths=(CONGESTION_TAU,), update_probs=(0.1,)),
        InfoVariant("distribution", "distribution", **grid),
        InfoVariant("payoffs", "payoffs", **grid),
    )


def _noisy_variants(
    sizes: tuple[int, ...], stds: tuple[float, ...], payoff_sizes: tuple[int, ...], grid: dict
) -> tuple[InfoVariant, ...]:
    """C4: distribution from a sample of m agents or with Gaussian noise, payoffs from a
    sample of m agents; the baseline is the C3 experiment's plain learner."""
    return (
        tuple(InfoVariant(f"distribution m={m}", "distribution", m, **grid) for m in sizes)
        + tuple(InfoVariant(f"distribution std={s}", "distribution", None, s, **grid) for s in stds)
        + tuple(InfoVariant(f"payoffs m={m}", "payoffs", m, **grid) for m in payoff_sizes)
    )


#: Settings tuned at 10^4 agents (6 seeds, eps = delta = 0.05) before the study was fixed;
#: with shorter stages the congestion learners' payoff estimates are too noisy for eps 0.05
#: (their eps-Nash gap sits at 0.04-0.06), with larger update_prob they herd.
CONGESTION_TAU = 100
EXPLORE_MANY_ACTIONS = 0.1  # beauty contest (11 actions), adoption, random linear


def quick_study(seeds: int = 10) -> Study:
    """Every claim at reduced scale (populations 10^2..10^5); under 10 minutes on 2 CPU
    cores, most of it compilation (about 5 s per sweep)."""
    noisy = {"stage_lengths": (10,), "update_probs": (0.01,)}
    converging = {"update_probs": (0.1, 0.3), "explore_prob": EXPLORE_MANY_ACTIONS}
    return Study(
        "quick",
        (
            Experiment(
                "congestion_core",
                ("C1", "C2", "C5"),
                "congestion",
                _powers(2, 5),
                stage_lengths=(CONGESTION_TAU,),
                round_budget=2000,
            ),
            Experiment(
                "congestion_tau_search",
                ("C2",),
                "congestion",
                (1000, 10_000),
                stage_lengths=(20, 50, 100),
                round_budget=2000,
            ),
            Experiment(
                "beauty_contest",
                ("C1", "C5"),
                "beauty_contest",
                (100, 10_000),
                stage_lengths=(20,),
                round_budget=2000,
                **converging,
            ),
            Experiment(
                "adoption",
                ("C1", "C5"),
                "adoption",
                (100, 10_000),
                stage_lengths=(50,),
                round_budget=2000,
                **converging,
            ),
            Experiment(
                "random_linear_potential",
                ("C1", "C5"),
                "random_linear",
                (100, 10_000),
                game_params={"symmetric": True},
                stage_lengths=(20,),
                round_budget=2000,
                **converging,
            ),
            Experiment(
                "congestion_info",
                ("C3",),
                "congestion",
                (1000, 10_000),
                variants=_info_variants((1, CONGESTION_TAU), (0.01, 0.1)),
                round_budget=2000,
            ),
            Experiment(
                "congestion_noisy_info",
                ("C4",),
                "congestion",
                (10_000,),
                variants=_noisy_variants((100, 1000), (0.01,), (10, 100), noisy),
                baseline="congestion_info",
                round_budget=2000,
            ),
            Experiment(
                "minority_oscillation",
                ("oscillation",),
                "minority",
                (1000, 10_000),
                update_probs=(1.0, 0.1),
                round_budget=500,
                series=True,
            ),
            Experiment(
                "congestion_oscillation",
                ("oscillation",),
                "congestion",
                (1000, 10_000),
                update_probs=(1.0, 0.1),
                round_budget=500,
                series=True,
            ),
        ),
        seeds,
    )


def full_study(seeds: int = 10, max_exponent: int = 7) -> Study:
    """Populations 10^2..10^``max_exponent`` for the core experiment (C1, C2, C5), for
    exact information (C3), for noisy information (C4) and for the stage-length search
    (C2; its two shortest stage lengths only from 10^7 on), for the other games (from 10^7
    on with update_prob 0.3 only), 10^3..10^5 for the oscillating cases (docs/study.md has
    the measured run time on 2 CPU cores).

    Information is compared with the core experiment's plain learner. From 10^6 agents
    on, only the fastest exact settings (one-round stages, small update_prob) and the
    noisy variants that helped at 10^3..10^5 (distribution noise of std 0.001, payoffs
    sampled from 100 agents; update_prob 0.01, their better one) are run.
    """
    big = _powers(2, max_exponent)
    mid = _powers(2, min(max_exponent, 6))
    small = _powers(2, min(max_exponent, 5))
    exact_grid = {"stage_lengths": (1, 10, CONGESTION_TAU), "update_probs": (0.003, 0.01, 0.1)}
    exact_fast = {"stage_lengths": (1,), "update_probs": (0.01,)}
    noisy = {"stage_lengths": (10,), "update_probs": (0.003, 0.01)}
    noisy_fast = {"stage_lengths": (10,), "update_probs": (0.01,)}
    converging = {"update_probs": (0.1, 0.3), "explore_prob": EXPLORE_MANY_ACTIONS}
    # Beyond 10^6 only update_prob 0.3, which converged in every seed of the three games
    # at 10^3..10^6 (0.1 never did in the beauty contest): half the cost.
    converging_large = {"update_probs": (0.3,), "explore_prob": EXPLORE_MANY_ACTIONS}
    beyond_mid = tuple(n for n in big if n > mid[-1])
    return Study(
        "full",
        (
            Experiment(
                "congestion_core",
                ("C1", "C2", "C5"),
                "congestion",
                big,
                stage_lengths=(CONGESTION_TAU,),
                round_budget=2000,
            ),
            Experiment(
                "congestion_tau_search",
                ("C2",),
                "congestion",
                mid,
                stage_lengths=(10, 20, 50, 100, 200),
                round_budget=3000,
            ),
            Experiment(
                "congestion_tau_search_large",
                ("C2",),
                "congestion",
                beyond_mid,
                stage_lengths=(10, 20),
                round_budget=3000,
            ),
            Experiment(
                "beauty_contest",
                ("C1", "C5"),
                "beauty_contest",
                mid,
                stage_lengths=(20,),
                round_budget=2000,
                **converging,
            ),
            Experiment(
                "adoption",
                ("C1", "C5"),
                "adoption",
                mid,
                stage_lengths=(50,),
                round_budget=2000,
                **converging,
            ),
            Experiment(
                "random_linear_potential",
                ("C1", "C5"),
                "random_linear",
                mid,
                game_params={"symmetric": True},
                stage_lengths=(20,),
                round_budget=2000,
                **converging,
            ),
            Experiment(
                "beauty_contest_large",
                ("C1", "C5"),
                "beauty_contest",
                beyond_mid,
                stage_lengths=(20,),
                round_budget=2000,
                **converging_large,
            ),
            Experiment(
                "random_linear_potential_large",
                ("C1", "C5"),
                "random_linear",
                beyond_mid,
                game_params={"symmetric": True},
                stage_lengths=(20,),
                round_budget=2000,
                **converging_large,
            ),
            Experiment(
                "adoption_large",
                ("C1", "C5"),
                "adoption",
                beyond_mid,
                stage_lengths=(50,),
                round_budget=2000,
                **converging_large,
            ),
            Experiment(
                "congestion_info",
                ("C3",),
                "congestion",
                small,
                variants=(
                    InfoVariant("distribution", "distribution", **exact_grid),
                    InfoVariant("payoffs", "payoffs", **exact_grid),
                ),
                baseline="congestion_core",
                round_budget=2000,
            ),
            Experiment(
                "congestion_info_large",
                ("C3",),
                "congestion",
                tuple(n for n in big if n > small[-1]),
                variants=(
                    InfoVariant("distribution", "distribution", **exact_fast),
                    InfoVariant("payoffs", "payoffs", **exact_fast),
                ),
                baseline="congestion_core",
                round_budget=500,
            ),
            Experiment(
                "congestion_noisy_info",
                ("C4",),
                "congestion",
                _powers(3, min(max_exponent, 5)),
                variants=_noisy_variants(
                    (100, 1000, 10_000), (0.001, 0.01, 0.05), (10, 100), noisy
                ),
                baseline="congestion_core",
                round_budget=2000,
            ),
            Experiment(
                "congestion_noisy_info_large",
                ("C4",),
                "congestion",
                tuple(n for n in big if n > small[-1]),
                variants=(
                    InfoVariant(
                        "distribution std=0.001", "distribution", None, 0.001, **noisy_fast
                    ),
                    InfoVariant("payoffs m=100", "payoffs", 100, **noisy_fast),
                ),
                baseline="congestion_core",
                round_budget=2000,
            ),
            Experiment(
                "minority_oscillation",
                ("oscillation",),
                "minority",
                _powers(3, min(max_exponent, 5)),
                update_probs=(1.0, 0.1),
                round_budget=500,
                series=True,
            ),
            Experiment(
                "minority_smooth_oscillation",
                ("oscillation",),
                "minority",
                _powers(3, min(max_exponent, 5)),
                game_params={"smoothness": 0.1},
                update_probs=(1.0, 0.1),
                round_budget=500,
                series=True,
            ),
            Experiment(
                "congestion_oscillation",
                ("oscillation",),
                "congestion",
                _powers(3, min(max_exponent, 5)),
                update_probs=(1.0, 0.1),
                round_budget=500,
                series=True,
            ),
        ),
        seeds,
    )


def select(
    study: Study,
    *,
    claims: Iterable[str] | None = None,
    max_agents: int | None = None,
    seeds: int | None = None,
    experiments: Iterable[str] | None = None,
) -> Study:
    """A study restricted to experiments serving ``claims`` (and named in ``experiments``)
    and to populations <= ``max_agents``.

    Raises:
        ValueError: an unknown claim or experiment, ``max_agents < 1`` or ``seeds < 1``
            (before anything runs), or nothing left to run.
    """
    names = None if experiments is None else list(experiments)
    if names is not None:
        known = [e.name for e in study.experiments]
        bad = [name for name in names if name not in known]
        if bad or not names:
            raise ValueError(
                f"unknown experiment(s) {bad or names} in study {study.name!r}; valid: "
                f"{', '.join(known)}"
            )
    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if max_agents is not None and max_agents < 1:
        raise ValueError(f"max_agents must be >= 1, got {max_agents}")
    wanted = None if claims is None else list(claims)
    if wanted is not None:
        bad = [c for c in wanted if c not in CLAIMS]
        if bad or not wanted:
            raise ValueError(f"unknown claim(s) {bad or wanted}; valid: {', '.join(CLAIMS)}")
    kept: list[Experiment] = []
    for exp in study.experiments:
        if wanted is not None and not set(exp.claims) & set(wanted):
            continue
        if names is not None and exp.name not in names:
            continue
        populations = tuple(n for n in exp.populations if max_agents is None or n <= max_agents)
        if populations:
            kept.append(dataclasses.replace(exp, populations=populations))
    # Add the baselines the selected experiments need (their plain learner is the
    # reference of the speed-up table), or drop an experiment whose baseline has no
    # population left.
    by_name = {e.name: e for e in study.experiments}
    for exp in list(kept):
        if not exp.baseline or exp.baseline in {e.name for e in kept}:
            continue
        base = by_name[exp.baseline]
        populations = tuple(n for n in base.populations if max_agents is None or n <= max_agents)
        plain = tuple(v for v in base.variants if v.label == "none")
        if populations and plain:
            kept.insert(0, dataclasses.replace(base, populations=populations, variants=plain))
        else:
            kept = [e for e in kept if e.name != exp.name]
    if not kept:
        raise ValueError(
            f"nothing to run: no experiment serves claims {wanted} with populations <= {max_agents}"
        )
    return dataclasses.replace(
        study,
        experiments=tuple(kept),
        seeds=study.seeds if seeds is None else seeds,
    )


# --------------------------------------------------------------------------- per-run measures


def study_convergence(
    in_equilibrium: Sequence[bool] | np.ndarray,
    rounds: Sequence[int] | np.ndarray,
    hold_stages: int,
) -> int | None:
    """The study's convergence round of one run (see the module docstring).

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
    learners, best_reply = np.asarray(learners, float), np.asarray(best_reply, float)
    if learners.shape != best_reply.shape or learners.shape[0] < 2:
        raise ValueError(
            f"trajectories must have the same shape with >= 2 states, got {learners.shape} "
            f"and {best_reply.shape}"
        )
    return float(np.mean(np.abs(learners[1:] - best_reply[1:]).sum(axis=1)))


def _br_reference(game, result, update_prob: float, eps: float, seed: int) -> tuple:
    """``(br_distance, br_steps or None, br_converged)`` of one run (module docstring)."""
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


# --------------------------------------------------------------------------- running


def _cell(value: Any) -> Any:
    """A plain Python value for the tables (numpy scalars converted, float32 shortened)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isfinite(value) and float(np.float32(value)) == value:
            return float(str(np.float32(value)))
        return value
    return value


def _sweep_runs(exp: Experiment, variant: InfoVariant, n: int, tau: int, seeds: int, kernel: str):
    """One batched sweep: rows are (update_prob, seed) pairs. Returns (result, probs, seeds)."""
    import jaxstage as js

    game = js.make_game(exp.game, **exp.game_params)
    probs = variant.update_probs or exp.update_probs
    learner = js.StageLearning(
        stage_length=tau,
        explore_prob=exp.explore_prob,
        update_prob=probs[0],
        info=variant.info,
        info_sample_size=variant.sample_size,
        info_noise_std=variant.noise_std,
    )
    row_probs = [p for p in probs for _ in range(seeds)]
    row_seeds = [s for _ in probs for s in range(seeds)]
    result = js.sweep(
        game,
        learner,
        n,
        exp.stages(tau),
        seeds=row_seeds,
        update_prob=row_probs,
        eps=exp.eps,
        delta=exp.delta,
        kernel=kernel,
    )
    return game, result, row_probs, row_seeds


def run_experiment(
    exp: Experiment,
    seeds: int,
    *,
    kernel: str = "auto",
    on_sweep: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every sweep of one experiment.

    Returns:
        ``(runs, series)``: one row per run (columns :data:`RUN_COLUMNS`) and, for
        experiments with ``series=True``, one row per recorded state of the first
        ``series_seeds`` seeds of each sweep row group.
    """
    runs: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    for variant, n, tau in _sweep_keys(exp):
        more_runs, more_series, seconds = run_sweep(exp, variant, n, tau, seeds, kernel=kernel)
        runs.extend(more_runs)
        series.extend(more_series)
        if on_sweep is not None:
            on_sweep(f"{exp.name} {variant.label} n={n:,} tau={tau}: {seconds:.1f} s")
    return runs, series


def run_sweep(
    exp: Experiment,
    variant: InfoVariant,
    n: int,
    tau: int,
    seeds: int,
    *,
    kernel: str = "auto",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """One batched sweep of ``exp`` (all update probabilities and seeds) at one variant,
    population and stage length. Returns ``(runs, series, seconds)`` as :func:`run_experiment`.
    """
    from jaxstage.engine import versions as run_versions

    versions = run_versions()
    runs: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    started = time.perf_counter()
    game, result, row_probs, row_seeds = _sweep_runs(exp, variant, n, tau, seeds, kernel)
    seconds = time.perf_counter() - started
    for run, prob, seed in zip(result.runs, row_probs, row_seeds, strict=True):
        hold = exp.hold(tau)
        convergence = study_convergence(run.in_equilibrium, run.rounds, hold)
        distance, steps, br_ok = _br_reference(game, run, prob, exp.eps, seed)
        final_distance = run.distance_to_equilibrium
        runs.append(
            {
                "claims": ";".join(exp.claims),
                "experiment": exp.name,
                "game": exp.game,
                "game_params": json.dumps(exp.game_params, sort_keys=True),
                "num_agents": n,
                "variant": variant.label,
                "info": variant.info,
                "info_sample_size": variant.sample_size,
                "info_noise_std": variant.noise_std,
                "stage_length": tau,
                "explore_prob": exp.explore_prob,
                "update_prob": prob,
                "num_stages": exp.stages(tau),
                "round_budget": exp.round_budget,
                "eps": exp.eps,
                "delta": exp.delta,
                "hold_stages": hold,
                "seed": seed,
                "converged": convergence is not None,
                "convergence_round": convergence,
                "final_nash_gap": _cell(run.nash_gap[-1]),
                "final_best_reply_fraction": _cell(run.best_reply_fraction[-1]),
                "final_distance_to_equilibrium": None
                if final_distance is None
                else _cell(final_distance[-1]),
                "br_distance": distance,
                "br_steps": steps,
                "br_converged": br_ok,
                "kernel": run.config.get("kernel"),
                "sweep_seconds": round(seconds, 3),
                "jaxstage_version": versions["jaxstage"],
                "jax_version": versions["jax"],
            }
        )
        if exp.series and seed < exp.series_seeds:
            for s in range(len(run.rounds)):
                series.append(
                    {
                        "experiment": exp.name,
                        "game": exp.game,
                        "num_agents": n,
                        "variant": variant.label,
                        "stage_length": tau,
                        "update_prob": prob,
                        "seed": seed,
                        "stage": s,
                        "round": int(run.rounds[s]),
                        "nash_gap": _cell(run.nash_gap[s]),
                        "best_reply_fraction": _cell(run.best_reply_fraction[s]),
                        "distribution": json.dumps(
                            [round(float(x), 6) for x in run.distribution[s]]
                        ),
                    }
                )
    return runs, series, seconds


def _sweep_keys(exp: Experiment) -> list[tuple[InfoVariant, int, int]]:
    return [
        (variant, n, tau)
        for variant in exp.variants
        for n in exp.populations
        for tau in (variant.stage_lengths or exp.stage_lengths)
    ]


# --------------------------------------------------------------------------- reuse

#: Columns of ``runs.csv`` and ``series.csv`` that hold text, not numbers.
_TEXT_COLUMNS = frozenset(
    {
        "claims",
        "experiment",
        "game",
        "game_params",
        "variant",
        "info",
        "kernel",
        "jaxstage_version",
        "jax_version",
        "distribution",
    }
)


def _typed_cell(column: str, text: str) -> Any:
    """A cell of a study table read back as the value :func:`run_sweep` wrote."""
    if column in _TEXT_COLUMNS:
        return text
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    number = float(text)
    return int(number) if number.is_integer() and "." not in text and "e" not in text else number


def _typed_rows(path: Path) -> list[dict[str, Any]]:
    return [{k: _typed_cell(k, v) for k, v in row.items()} for row in read_csv(path)]


def _json_data(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _same_sweep_definition(exp: Experiment, found: dict[str, Any], variant: InfoVariant) -> bool:
    """Whether ``found`` (an experiment of another study's config.json) defines the sweep
    of ``variant`` exactly as ``exp`` does; populations may differ."""
    ours = _json_data(dataclasses.asdict(exp))
    for key in ("populations", "variants"):
        ours.pop(key)
    theirs = {k: v for k, v in found.items() if k not in ("populations", "variants")}
    if ours != theirs:
        return False
    wanted = _json_data(dataclasses.asdict(variant))
    return any(v == wanted for v in found.get("variants", []))


def reusable_sweeps(study: Study, folders: Sequence[str | os.PathLike[str]]) -> dict[str, dict]:
    """Sweeps of ``study`` that finished studies in ``folders`` already ran.

    A sweep (experiment, variant, population, stage length) is taken from a folder when
    that folder's study ran an experiment of the same name with the same definition
    (every field but the populations and the other variants), the same variant, the same
    number of seeds, and holds all of the sweep's rows. Its rows are taken as written,
    with the jaxstage and jax versions that produced them; nothing checks that the
    simulation is unchanged since, so reuse only results of the same release. The first
    folder holding a sweep wins.

    Raises:
        ValueError: a folder is not a finished study folder (no config.json or runs.csv).
    """
    found: dict[str, dict] = {}
    wanted = {
        _sweep_id(exp, variant, n, tau): (exp, variant, n, tau)
        for exp in study.experiments
        for variant, n, tau in _sweep_keys(exp)
    }
    for folder in folders:
        path = Path(folder)
        config_path, runs_path = path / "config.json", path / "runs.csv"
        if not config_path.is_file() or not runs_path.is_file():
            raise ValueError(
                f"cannot reuse {str(path)!r}: not a finished study folder "
                f"(needs config.json and runs.csv)"
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config["study"]["seeds"] != study.seeds:
            continue
        definitions = {e["name"]: e for e in config["study"]["experiments"]}
        series_path = path / "series.csv"
        series = _typed_rows(series_path) if series_path.is_file() else []
        rows_by_sweep = _group(
            _typed_rows(runs_path), ("experiment", "variant", "num_agents", "stage_length")
        )
        series_by_sweep = _group(series, ("experiment", "variant", "num_agents", "stage_length"))
        for sweep_id, (exp, variant, n, tau) in wanted.items():
            if sweep_id in found or exp.name not in definitions:
                continue
            if not _same_sweep_definition(exp, definitions[exp.name], variant):
                continue
            key = (exp.name, variant.label, n, tau)
            rows = rows_by_sweep.get(key, [])
            if len(rows) != study.seeds * len(variant.update_probs or exp.update_probs):
                continue
            found[sweep_id] = {
                "sweep": sweep_id,
                "seconds": float(rows[0]["sweep_seconds"]),
                "runs": rows,
                "series": series_by_sweep.get(key, []),
                "reused_from": str(path),
            }
    return found


# --------------------------------------------------------------------------- derived tables


def _is_true(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1")


def _rounds_or_inf(row: dict[str, Any]) -> float:
    if not _is_true(row["converged"]) or row.get("convergence_round") in (None, ""):
        return math.inf
    return float(row["convergence_round"])


def median_with_failures(values: Sequence[float], q: float = 0.5) -> float | None:
    """The ``q`` quantile of rounds, non-converged seeds counted as ``+inf``.

    Uses the lower-median convention for an even count (the ``ceil(q * N)``-th smallest
    value, at least the first), so the result is a value some seed achieved.
    ``None`` when that value is ``+inf`` (too many seeds did not converge) or there are
    no values.

    Example:
        >>> median_with_failures([100, 200, math.inf, math.inf])
        200.0
        >>> median_with_failures([100, math.inf, math.inf, math.inf]) is None
        True
    """
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return None
    index = max(0, math.ceil(q * len(ordered)) - 1)
    value = ordered[index]
    return None if math.isinf(value) else value


def _group(rows: Iterable[dict[str, Any]], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(_norm(row[k]) for k in keys), []).append(row)
    return groups


def _norm(value: Any) -> Any:
    """Values read back from CSV as text compare equal to the originals."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _median(values: Sequence[float]) -> float | None:
    finite = [float(v) for v in values if v not in (None, "") and math.isfinite(float(v))]
    return float(np.median(finite)) if finite else None


CONVERGENCE_KEYS = ("experiment", "game", "variant", "stage_length", "update_prob", "num_agents")


def convergence_table(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convergence against population: one row per (experiment, game, variant, stage
    length, update_prob, population).

    Columns: the keys, ``round_budget``, ``seeds``, ``converged``, ``share_converged``,
    ``median_rounds``, ``q25_rounds``, ``q75_rounds`` (over all seeds, non-converged as
    ``+inf``, see :func:`median_with_failures`; ``None`` = not converged),
    ``median_rounds_converged`` (over the converged seeds only), ``median_final_nash_gap``,
    ``median_br_distance``.
    """
    table = []
    for key, rows in _group(runs, CONVERGENCE_KEYS).items():
        rounds = [_rounds_or_inf(r) for r in rows]
        finite = [r for r in rounds if math.isfinite(r)]
        table.append(
            dict(zip(CONVERGENCE_KEYS, key, strict=True))
            | {
                "claims": rows[0]["claims"],
                "info": rows[0]["info"],
                "round_budget": _norm(rows[0]["round_budget"]),
                "seeds": len(rows),
                "converged": len(finite),
                "share_converged": len(finite) / len(rows),
                "median_rounds": median_with_failures(rounds, 0.5),
                "q25_rounds": median_with_failures(rounds, 0.25),
                "q75_rounds": median_with_failures(rounds, 0.75),
                "median_rounds_converged": float(np.median(finite)) if finite else None,
                "median_final_nash_gap": _median([r["final_nash_gap"] for r in rows]),
                "median_br_distance": _median([r["br_distance"] for r in rows]),
            }
        )
    return table


def shortest_stage_length_table(
    convergence: Sequence[dict[str, Any]], threshold: float = CONVERGED_SHARE
) -> list[dict[str, Any]]:
    """Per (experiment, game, variant, update_prob, population): the smallest stage length
    whose share of converged seeds is at least ``threshold`` within the round budget.

    Stage lengths are not assumed monotone: the smallest qualifying one is reported even
    when a longer one fails. ``shortest_stage_length`` is ``None`` when none qualifies.
    ``stage_lengths_tried`` and ``shares`` list what was run (ascending stage length).
    """
    keys = ("experiment", "game", "variant", "update_prob", "num_agents")
    table = []
    for key, rows in _group(convergence, keys).items():
        rows = sorted(rows, key=lambda r: float(r["stage_length"]))
        qualifying = [
            _norm(r["stage_length"])
            for r in rows
            if float(r["share_converged"]) >= threshold - 1e-12
        ]
        table.append(
            dict(zip(keys, key, strict=True))
            | {
                "round_budget": _norm(rows[0]["round_budget"]),
                "threshold": threshold,
                "shortest_stage_length": qualifying[0] if qualifying else None,
                "stage_lengths_tried": ";".join(str(_norm(r["stage_length"])) for r in rows),
                "shares": ";".join(f"{float(r['share_converged']):.2f}" for r in rows),
            }
        )
    return table


def _best_setting(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the smallest median rounds (ties: higher share, shorter tau)."""
    if not rows:
        return None

    def score(r):
        median = r["median_rounds"]
        median = math.inf if median in (None, "") else float(median)
        return (median, -float(r["share_converged"]), float(r["stage_length"]))

    return min(rows, key=score)


def _ratio(baseline: Any, other: Any) -> float | None:
    """``baseline / other`` for median rounds; ``inf`` when only the baseline failed,
    ``0`` when only ``other`` failed, ``None`` when both failed."""
    b = math.inf if baseline in (None, "") else float(baseline)
    o = math.inf if other in (None, "") else float(other)
    if math.isinf(b) and math.isinf(o):
        return None
    if math.isinf(b):
        return math.inf
    if math.isinf(o):
        return 0.0
    return b / o


def info_speedup_table(
    convergence: Sequence[dict[str, Any]], experiments: Sequence[Experiment] = ()
) -> list[dict[str, Any]]:
    """Speed-up of each information variant over the ``"none"`` variant, per population.

    For each experiment with a ``"none"`` variant (or a ``baseline`` experiment, looked up
    in ``experiments``), each other variant and each population, two rows:

    * ``comparison="own best"``: each side at its own best setting (the stage length and
      update_prob with the smallest median rounds among those run);
    * ``comparison="same setting"``: the variant at the baseline's best setting (only when
      that setting was run for the variant).

    ``speedup = median_rounds(none) / median_rounds(variant)``; ``inf`` when only the
    baseline did not converge (lower bound: ``round_budget / median_rounds(variant)``),
    ``0`` when only the variant did not, ``None`` when neither did.
    """
    baselines = {e.name: e.baseline for e in experiments}
    by_exp = _group(convergence, ("experiment",))
    table = []
    for (name,), rows in by_exp.items():
        base_rows = [r for r in rows if r["variant"] == "none"]
        if not base_rows and baselines.get(name):
            base_rows = [r for r in by_exp.get((baselines[name],), []) if r["variant"] == "none"]
        if not base_rows:
            continue
        variants = sorted({r["variant"] for r in rows if r["variant"] != "none"})
        populations = sorted({_norm(r["num_agents"]) for r in rows})
        for n in populations:
            base = _best_setting([r for r in base_rows if _norm(r["num_agents"]) == n])
            if base is None:
                continue
            for variant in variants:
                mine = [r for r in rows if r["variant"] == variant and _norm(r["num_agents"]) == n]
                best = _best_setting(mine)
                same = [
                    r
                    for r in mine
                    if _norm(r["stage_length"]) == _norm(base["stage_length"])
                    and _norm(r["update_prob"]) == _norm(base["update_prob"])
                ]
                for comparison, row in (
                    ("own best", best),
                    ("same setting", same[0] if same else None),
                ):
                    if row is None:
                        continue
                    table.append(
                        {
                            "experiment": name,
                            "game": row["game"],
                            "num_agents": n,
                            "variant": variant,
                            "info": row["info"],
                            "comparison": comparison,
                            "stage_length": _norm(row["stage_length"]),
                            "update_prob": _norm(row["update_prob"]),
                            "median_rounds": row["median_rounds"],
                            "share_converged": row["share_converged"],
                            "baseline_stage_length": _norm(base["stage_length"]),
                            "baseline_update_prob": _norm(base["update_prob"]),
                            "baseline_median_rounds": base["median_rounds"],
                            "baseline_share_converged": base["share_converged"],
                            "round_budget": _norm(row["round_budget"]),
                            "speedup": _ratio(base["median_rounds"], row["median_rounds"]),
                        }
                    )
    return table


# --------------------------------------------------------------------------- writing


def _check_study_output(folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """The checks of the study folder itself (the ``check`` of its atomic write).

    Raises:
        ValueError: see :func:`check_study_folder`.
    """
    from jaxstage.results import _check_writable, _folder_path, _link_target, _named

    path = _folder_path(folder)
    real = _link_target(path)  # a link is written through, and kept
    if real.exists() and not real.is_dir():
        raise ValueError(f"output folder {_named(path, real)} exists and is not a folder")
    if real.is_dir():
        entries = sorted(entry.name for entry in real.iterdir())
        foreign = [
            n
            for n in entries
            if n not in STUDY_FILES or (real / n).is_symlink() or not (real / n).is_file()
        ]
        if foreign:
            raise ValueError(
                f"refusing to write the study into {_named(path, real)}: it holds "
                f"{foreign[:5]}, which are not study files ({', '.join(sorted(STUDY_FILES))})"
            )
        if entries and not overwrite:
            raise ValueError(
                f"output folder {_named(path, real)} already holds a study; pass --overwrite "
                f"(overwrite=True) or choose another folder"
            )
    _check_writable(path, real.parent)
    return path


def check_study_folder(folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check that a study may be written to ``folder``; called before anything runs.

    Besides the folder itself, its journal folder (:func:`partial_folder`) is checked:
    when it exists it must be one jaxstage made (:func:`_check_journal_folder`), and the
    place where it is made must be writable, so no mistake surfaces after hours of sweeps.

    Raises:
        ValueError: ``folder`` is empty, ``.`` or ``..``, a file or a link to nothing; or a
            non-empty folder without ``overwrite``; or it holds anything but study files
            (:data:`STUDY_FILES`), which is never replaced; or it (or the journal folder)
            cannot be written there; or ``<folder>.partial`` exists and holds anything but
            a journal (never used or deleted).
    """
    from jaxstage.results import _check_writable

    path = _check_study_output(folder, overwrite=overwrite)
    partial = partial_folder(path)
    _check_journal_folder(partial)
    _check_writable(partial, partial.parent)  # beside ``folder`` (a link's target may differ)
    return path


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return "inf" if math.isinf(value) else repr(value)
    return value


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return out.getvalue()


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a study table back (all values as text; empty = missing)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _fmt(value: Any, digits: int = 3) -> str:
    if value in (None, ""):
        return "—"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}g}" if not value.is_integer() else f"{int(value):,}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _md_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(no rows)\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(
    study: Study,
    convergence: Sequence[dict[str, Any]],
    shortest: Sequence[dict[str, Any]],
    speedup: Sequence[dict[str, Any]],
    wall_seconds: float,
    command: str,
    reused: Sequence[dict[str, Any]] = (),
) -> str:
    """The derived numbers per claim as markdown tables (no interpretation)."""
    parts = [
        f"# Study `{study.name}`: derived tables\n",
        f"Command: `{command}`; {study.seeds} seeds per setting; total wall time "
        f"{wall_seconds:.0f} s.\n",
    ]
    for folder in sorted({e["reused_from"] for e in reused}):
        taken = [e for e in reused if e["reused_from"] == folder]
        parts.append(
            f"{len(taken)} sweeps were taken from the finished study `{folder}` instead "
            f"of run again (their own run time, {sum(e['seconds'] for e in taken):.0f} s, "
            "is not in the wall time above).\n"
        )
    parts += [
        "Rounds: medians and quartiles over all seeds, a non-converged seed counting as "
        "+inf (— = not converged in at least that share of seeds). A run converged when "
        "at least 1-delta of the agents play an eps-best reply from some stage to the end "
        "of the run, for at least `hold_stages` recorded states.\n",
    ]
    conv_cols = (
        "experiment",
        "variant",
        "stage_length",
        "update_prob",
        "num_agents",
        "round_budget",
        "share_converged",
        "median_rounds",
        "q25_rounds",
        "q75_rounds",
        "median_final_nash_gap",
        "median_br_distance",
    )
    for claim in CLAIMS:
        names = [e.name for e in study.experiments if claim in e.claims]
        if not names:
            continue
        parts.append(f"## {claim}\n")
        if claim == "C2":
            rows = [r for r in shortest if r["experiment"] in names]
            parts.append(
                f"Shortest stage length converging in >= {CONVERGED_SHARE:.0%} of seeds "
                "within the round budget:\n"
            )
            parts.append(
                _md_table(
                    rows,
                    (
                        "experiment",
                        "variant",
                        "update_prob",
                        "num_agents",
                        "round_budget",
                        "shortest_stage_length",
                        "stage_lengths_tried",
                        "shares",
                    ),
                )
            )
        if claim in ("C3", "C4"):
            rows = [r for r in speedup if r["experiment"] in names]
            parts.append(
                "Speed-up = median rounds (none) / median rounds (variant); `own best`: each "
                "at its own best (stage length, update_prob) among those run; `same setting`: "
                "the variant at the plain learner's best setting.\n"
            )
            parts.append(
                _md_table(
                    rows,
                    (
                        "experiment",
                        "num_agents",
                        "variant",
                        "comparison",
                        "stage_length",
                        "update_prob",
                        "median_rounds",
                        "share_converged",
                        "baseline_stage_length",
                        "baseline_update_prob",
                        "baseline_median_rounds",
                        "speedup",
                    ),
                )
            )
        rows = [r for r in convergence if r["experiment"] in names]
        parts.append(_md_table(rows, conv_cols))
    return "\n".join(parts)


def _log_scale(ax: Any, axis: str) -> None:
    """Log scale on ``axis`` when the plotted data has finite positive values there
    (matplotlib refuses a log axis without any)."""
    usable = False
    for line in ax.lines:
        x = np.asarray(line.get_xdata(), dtype=float)
        y = np.asarray(line.get_ydata(), dtype=float)
        values = x if axis == "x" else y
        usable |= bool(np.any(np.isfinite(x) & np.isfinite(y) & (values > 0)))
    if usable:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _panel(experiment: str) -> str:
    """The plot panel of an experiment: its own, or its base's for a "_large" one."""
    return experiment.removesuffix("_large")


def _plots(
    folder: Path,
    convergence: Sequence[dict[str, Any]],
    shortest: Sequence[dict[str, Any]],
    speedup: Sequence[dict[str, Any]],
    series: Sequence[dict[str, Any]],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def num(value):
        return math.nan if value in (None, "") else float(value)

    def lines(rows, keys):
        return _group(rows, keys).items()

    # Rounds to converge against population, one panel per experiment, an experiment's
    # "_large" counterpart (more agents, fewer settings) drawn in its panel.
    experiments = sorted({_panel(r["experiment"]) for r in convergence})
    if experiments:
        cols = min(3, len(experiments))
        rows_n = math.ceil(len(experiments) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.6 * rows_n), squeeze=False)
        for ax, name in zip(axes.flat, experiments, strict=False):
            mine = [r for r in convergence if _panel(r["experiment"]) == name]
            for key, group in lines(mine, ("variant", "stage_length", "update_prob")):
                group = sorted(group, key=lambda r: float(r["num_agents"]))
                n = np.array([float(r["num_agents"]) for r in group])
                budget = np.array([float(r["round_budget"]) for r in group])
                med = np.array([num(r["median_rounds"]) for r in group])
                # A quartile that did not converge is above the budget: drawn to it.
                q25 = np.array([num(r["q25_rounds"]) for r in group])
                q75 = np.array([num(r["q75_rounds"]) for r in group])
                low = med - np.where(np.isnan(q25), budget, q25)
                high = np.where(np.isnan(q75), budget, q75) - med
                label = f"{key[0]}, tau={key[1]}, p={key[2]}"
                bars = ax.errorbar(n, med, yerr=[low, high], marker="o", capsize=3, label=label)
                failed = np.isnan(med)
                if failed.any():  # median not converged: an x at the budget
                    color = bars[0].get_color()
                    ax.plot(n[failed], budget[failed], "x", color=color, markersize=8)
            ax.plot([], [], "kx", label="x: median not converged (at budget)")
            _log_scale(ax, "x")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("agents")
            ax.set_ylabel("median rounds to converge")
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(experiments) :]:
            ax.set_visible(False)
        fig.tight_layout()
        fig.savefig(folder / "rounds_vs_population.png", dpi=110)
        plt.close(fig)

    # Only where several stage lengths were tried: with one, "shortest" says nothing.
    searched = [r for r in shortest if len(str(r["stage_lengths_tried"]).split(";")) > 1]
    if searched:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, group in lines(searched, ("experiment", "variant", "update_prob")):
            group = sorted(group, key=lambda r: float(r["num_agents"]))
            n = np.array([float(r["num_agents"]) for r in group])
            tau = np.array([num(r["shortest_stage_length"]) for r in group])
            longest = max(float(t) for r in group for t in str(r["stage_lengths_tried"]).split(";"))
            (line,) = ax.plot(n, tau, marker="o", label=f"{key[0]} {key[1]} p={key[2]}")
            failed = np.isnan(tau)
            if failed.any():  # no stage length tried converges: an x above the longest
                ax.plot(n[failed], np.full(failed.sum(), 2 * longest), "x", color=line.get_color())
        ax.plot([], [], "kx", label="x: none of the stage lengths tried")
        _log_scale(ax, "x")
        _log_scale(ax, "y")
        ax.set_xlabel("agents")
        ax.set_ylabel(f"shortest tau with >= {CONVERGED_SHARE:.0%} converged")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "shortest_stage_length.png", dpi=110)
        plt.close(fig)

    own_best = [r for r in speedup if r["comparison"] == "own best"]
    if own_best:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        # One line per variant: an experiment's populations continued by its "_large"
        # counterpart join up. Distinct colours and markers for up to 20 variants.
        colours = plt.get_cmap("tab20").colors
        for i, (key, group) in enumerate(lines(own_best, ("variant",))):
            group = sorted(group, key=lambda r: float(r["num_agents"]))
            ax.plot(
                [float(r["num_agents"]) for r in group],
                [num(r["speedup"]) if num(r["speedup"]) < math.inf else np.nan for r in group],
                marker="osD^v<>ph*"[i % 10],
                color=colours[i % len(colours)],
                label=key[0],
            )
        _log_scale(ax, "x")
        _log_scale(ax, "y")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xlabel("agents")
        ax.set_ylabel("speed-up over no information (own best settings)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(folder / "info_speedup.png", dpi=110)
        plt.close(fig)

    with_br = [
        r
        for r in convergence
        if r.get("median_br_distance") not in (None, "") and "C5" in str(r.get("claims", ""))
    ]
    if with_br:
        fig, ax = plt.subplots(figsize=(6, 4))
        with_br = [{**r, "panel": _panel(r["experiment"])} for r in with_br]
        for key, group in lines(with_br, ("panel", "variant", "stage_length", "update_prob")):
            if len(group) < 2:
                continue
            group = sorted(group, key=lambda r: float(r["num_agents"]))
            ax.plot(
                [float(r["num_agents"]) for r in group],
                [num(r["median_br_distance"]) for r in group],
                marker="o",
                label=f"{key[0]} {key[1]} tau={key[2]} p={key[3]}",
            )
        _log_scale(ax, "x")
        ax.set_xlabel("agents")
        ax.set_ylabel("median L1 distance to best-reply dynamics")
        if ax.lines:
            ax.legend(fontsize=5)
        fig.tight_layout()
        fig.savefig(folder / "br_distance.png", dpi=110)
        plt.close(fig)

    if series:
        panels = sorted({(r["experiment"], _norm(r["num_agents"])) for r in series})
        fig, axes = plt.subplots(
            len(panels), 2, figsize=(12, 2.4 * len(panels)), squeeze=False, sharex=False
        )

        def first_share(row):
            shares = row["distribution"]
            return float((json.loads(shares) if isinstance(shares, str) else shares)[0])

        for (gap_ax, share_ax), (name, n) in zip(axes, panels, strict=True):
            mine = [r for r in series if r["experiment"] == name and _norm(r["num_agents"]) == n]
            for key, group in lines(mine, ("update_prob", "seed")):
                rounds = [float(r["round"]) for r in group]
                label = f"update_prob={key[0]}, seed {key[1]}"
                gap_ax.plot(rounds, [num(r["nash_gap"]) for r in group], lw=0.8, label=label)
                share_ax.plot(rounds, [first_share(r) for r in group], lw=0.8, label=label)
            gap_ax.set_title(f"{name}, {n:,} agents", fontsize=9)
            gap_ax.set_ylabel("eps-Nash gap")
            share_ax.set_title(f"{name}, {n:,} agents: share of action 0", fontsize=9)
            share_ax.set_ylabel("share of action 0")
            gap_ax.legend(fontsize=6)
        axes[-1, 0].set_xlabel("round")
        axes[-1, 1].set_xlabel("round")
        fig.tight_layout()
        fig.savefig(folder / "oscillation.png", dpi=110)
        plt.close(fig)


def redraw_plots(folder: str | os.PathLike[str]) -> list[Path]:
    """Draw the PNG plots of a finished study folder again from its tables (after a
    change to the plotting code; the tables are not touched). Returns the files written.

    Raises:
        ValueError: ``folder`` is not a finished study folder.
    """
    path = Path(folder)
    needed = ("convergence.csv", "shortest_stage_length.csv", "info_speedup.csv", "config.json")
    if not all((path / name).is_file() for name in needed):
        raise ValueError(
            f"{str(path)!r} is not a finished study folder (needs {', '.join(needed)})"
        )
    series = read_csv(path / "series.csv") if (path / "series.csv").is_file() else []
    before = {p.name: p.stat().st_mtime_ns for p in path.glob("*.png")}
    _plots(  # the plots read numbers from text, as written
        path,
        read_csv(path / "convergence.csv"),
        read_csv(path / "shortest_stage_length.csv"),
        read_csv(path / "info_speedup.csv"),
        series,
    )
    return sorted(p for p in path.glob("*.png") if before.get(p.name) != p.stat().st_mtime_ns)


def write_study(
    folder: str | os.PathLike[str],
    study: Study,
    runs: Sequence[dict[str, Any]],
    series: Sequence[dict[str, Any]],
    *,
    wall_seconds: float,
    command: str,
    overwrite: bool = False,
    plots: bool = True,
    reused: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write the tables, configuration, summary and plots of a study, atomically.

    ``reused`` lists the sweeps taken from other study folders (:func:`reusable_sweeps`);
    config.json and summary.md name them and their own run time.
    """
    from jaxstage.engine import versions as run_versions

    convergence = convergence_table(runs)
    shortest = shortest_stage_length_table(convergence)
    speedup = info_speedup_table(convergence, study.experiments)
    config = {
        "study": study.config(),
        "versions": run_versions(),
        "command": command,
        "wall_seconds": round(wall_seconds, 1),
        "reused_sweeps": {
            folder: sorted(e["sweep"] for e in reused if e["reused_from"] == folder)
            for folder in sorted({e["reused_from"] for e in reused})
        },
        "reused_sweep_seconds": round(sum(e["seconds"] for e in reused), 1),
        "convergence": (
            "converged: in (eps, delta)-equilibrium from some state to the end of the run, "
            "for at least hold_stages states; medians over all seeds with non-converged "
            "seeds as +inf"
        ),
        "br_distance": (
            "mean over stages 1..S of the L1 distance between the learners' distribution "
            "and simultaneous best-reply dynamics (inertia = update_prob, one step per "
            "stage, same initial counts; held when stopped, two-cycle continued)"
        ),
    }
    from jaxstage.results import _atomic_folder

    with _atomic_folder(folder, overwrite, _check_study_output, STUDY_FILES) as staging:
        (staging / "runs.csv").write_text(_csv_text(runs, RUN_COLUMNS), encoding="utf-8")
        (staging / "convergence.csv").write_text(_csv_text(convergence), encoding="utf-8")
        (staging / "shortest_stage_length.csv").write_text(_csv_text(shortest), encoding="utf-8")
        (staging / "info_speedup.csv").write_text(_csv_text(speedup), encoding="utf-8")
        if series:
            (staging / "series.csv").write_text(_csv_text(series), encoding="utf-8")
        with open(staging / "config.json", "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, default=str)
            handle.write("\n")
        (staging / "summary.md").write_text(
            summary_markdown(study, convergence, shortest, speedup, wall_seconds, command, reused),
            encoding="utf-8",
        )
        if plots:
            _plots(staging, convergence, shortest, speedup, series)
    return Path(folder)


def partial_folder(folder: str | os.PathLike[str]) -> Path:
    """Where a running study journals its finished sweeps: ``<folder>.partial``."""
    path = Path(folder)
    return path.with_name(path.name + ".partial")


def _sweep_id(exp: Experiment, variant: InfoVariant, n: int, tau: int) -> str:
    return f"{exp.name}|{variant.label}|{n}|{tau}"


#: The files a study's journal folder holds; one holding anything else is not jaxstage's.
JOURNAL_FILES = frozenset({"sweeps.jsonl", "study.json"})


def _check_journal_folder(partial: Path) -> bool:
    """Whether the journal folder ``partial`` exists; refuse it if jaxstage did not make it.

    ``<folder>.partial`` is a plain name a user may well have used; it is only ever read,
    rewritten or deleted when it is a real folder holding nothing but the journal files
    (:data:`JOURNAL_FILES`, an empty folder counting as a journal cut short at its start).

    Raises:
        ValueError: naming the folder and what in it is not a journal file.
    """
    if not os.path.lexists(partial):
        return False
    if partial.is_symlink() or not partial.is_dir():
        kind = "a symbolic link" if partial.is_symlink() else "not a folder"
        raise ValueError(
            f"{str(partial)!r} is in the way of the study's journal: it is {kind}, not a "
            f"journal folder made by jaxstage; move it away or choose another --out"
        )
    foreign = sorted(
        entry.name
        for entry in os.scandir(partial)
        if entry.name not in JOURNAL_FILES or not entry.is_file(follow_symlinks=False)
    )
    if foreign:
        raise ValueError(
            f"refusing to use or remove {str(partial)!r}: it holds {foreign[:5]}, which are "
            f"not files of a study journal ({', '.join(sorted(JOURNAL_FILES))}); move them "
            f"away or choose another --out"
        )
    return True


def _remove_journal(partial: Path) -> None:
    """Delete the journal folder: its journal files one by one, then the folder if empty.

    Never a recursive delete: whatever else appeared in it is kept, with a warning.
    """
    for name in sorted(JOURNAL_FILES):
        (partial / name).unlink(missing_ok=True)
    try:
        partial.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        left = sorted(p.name for p in partial.iterdir()) if partial.is_dir() else []
        warnings.warn(
            f"kept {str(partial)!r}: it holds {left[:5]}, which are not study journal files",
            RuntimeWarning,
            stacklevel=3,
        )


def _open_journal(study: Study, folder: Path, *, resume: bool, overwrite: bool):
    """The partial folder's journal, and the sweeps it already holds (``resume``).

    Raises:
        ValueError: a partial folder exists and neither ``resume`` nor ``overwrite`` is
            given, or it belongs to a different study definition, or it holds anything
            but journal files (:func:`_check_journal_folder`; never used or deleted).
    """
    partial = partial_folder(folder)
    journal, definition = partial / "sweeps.jsonl", partial / "study.json"
    wanted = json.dumps(study.config(), sort_keys=True, default=str)
    done: dict[str, dict[str, Any]] = {}
    if _check_journal_folder(partial):
        if resume:
            found = definition.read_text(encoding="utf-8") if definition.is_file() else None
            if found != wanted:
                raise ValueError(
                    f"cannot resume from {str(partial)!r}: it was written by a different "
                    f"study definition (or is damaged); pass --overwrite to start again"
                )
            for line in journal.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by an interruption: the sweep is run again
                done[entry["sweep"]] = entry
            # Keep only whole entries: new ones must not be appended to a cut-short line.
            entries = "".join(json.dumps(entry, default=str) + "\n" for entry in done.values())
            journal.write_text(entries, encoding="utf-8")
        elif overwrite:
            _remove_journal(partial)
        else:
            raise ValueError(
                f"{str(partial)!r} holds an interrupted run of a study; pass --resume to "
                f"continue it or --overwrite to start again"
            )
    if not done:
        partial.mkdir(parents=True, exist_ok=True)
        definition.write_text(wanted, encoding="utf-8")
        journal.write_text("", encoding="utf-8")
    return journal, done


def run_study(
    study: Study,
    folder: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    kernel: str = "auto",
    plots: bool = True,
    command: str | None = None,
    reuse: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Validate, run every sweep of ``study`` and write its folder.

    The folder is checked before anything runs and written atomically at the end, so an
    interrupted study leaves no complete-looking folder. Each finished sweep is appended
    to a journal in ``<folder>.partial/`` (:func:`partial_folder`); with ``resume`` a
    study interrupted earlier skips the sweeps it journalled (same definition only). The
    journal is removed once the folder is written (its files only: a ``<folder>.partial``
    holding anything else is refused up front and never deleted). ``wall_seconds`` counts
    the sweeps' own run time, journalled ones included.

    ``reuse`` names finished study folders whose matching sweeps are taken instead of
    run again (:func:`reusable_sweeps`), so a study can be extended (more populations,
    more experiments) without repeating its finished sweeps; their run time is reported
    apart, as ``reused_sweep_seconds`` in config.json.
    """
    from tqdm.auto import tqdm

    study.validate()
    folder = check_study_folder(folder, overwrite=overwrite)
    reusable = reusable_sweeps(study, reuse)
    journal, done = _open_journal(study, folder, resume=resume, overwrite=overwrite)
    command = command or " ".join(["jaxstage"] + sys.argv[1:])
    started = time.perf_counter()
    earlier_seconds = sum(entry["seconds"] for entry in done.values() if "reused_from" not in entry)
    runs: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    reused: list[dict[str, Any]] = []
    keys = [(exp, *key) for exp in study.experiments for key in _sweep_keys(exp)]
    with tqdm(total=len(keys), unit="sweep", disable=not progress, desc=study.name) as bar:
        for exp, variant, n, tau in keys:
            sweep_id = _sweep_id(exp, variant, n, tau)
            if sweep_id in done:
                entry = done[sweep_id]
            else:
                if sweep_id in reusable:
                    entry = reusable[sweep_id]
                else:
                    more_runs, more_series, seconds = run_sweep(
                        exp, variant, n, tau, study.seeds, kernel=kernel
                    )
                    entry = {
                        "sweep": sweep_id,
                        "seconds": seconds,
                        "runs": more_runs,
                        "series": more_series,
                    }
                with open(journal, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry, default=str) + "\n")
            runs.extend(entry["runs"])
            series.extend(entry["series"])
            bar.update(1)
            bar.set_postfix_str(f"{exp.name} {variant.label} n={n:,} tau={tau}"[:60])
            if "reused_from" in entry:
                reused.append(entry)
    written = write_study(
        folder,
        study,
        runs,
        series,
        wall_seconds=earlier_seconds + time.perf_counter() - started,
        command=command,
        overwrite=overwrite,
        plots=plots,
        reused=reused,
    )
    _remove_journal(partial_folder(folder))  # the journal files only, never anything else
    return written
