"""What a run returns: the per-stage records of the driver and the result types built
from them (:class:`SimulationResult`, one run; :class:`SweepResult`, a batch of runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxstage.decisions import (
    StageRecord,
)
from jaxstage.metrics import (
    CountMetrics,
    convergence_stage,
    distance_to_equilibria,
)
from jaxstage.spec import RunSpec


@dataclasses.dataclass
class SimulationResult:
    """Per-stage trajectory of one run; index 0 of state arrays is the initial state.

    Attributes:
        distribution: ``(S+1, k)`` distribution of stage actions at the start and after
            each of the ``S`` stages.
        distribution_by_type: ``(S+1, T, k)`` the same within each type.
        best_reply_fraction: ``(S+1,)`` share of agents at an eps-best reply.
        best_reply_fraction_by_type: ``(S+1, T)``.
        nash_gap: ``(S+1,)`` eps-Nash gap (largest gain of a deviation of any agent).
        expected_payoffs: ``(S+1, T, k)`` ``u(theta, a, d)`` at the stage actions.
        welfare: ``(S+1,)`` mean expected payoff of the agents.
        distance_to_equilibrium: ``(S+1,)`` L1 distance to the nearest reference
            equilibrium, or ``None`` when the game has none and none was given.
        played_distribution: ``(S, k)`` distribution of played actions in each stage's
            last round (explorations included).
        switched_fraction: ``(S,)`` share of agents whose stage action changed.
        realized_mean_payoff: ``(S,)`` mean realised payoff over the stage's agent-rounds.
        explore_prob: ``(S,)`` and stage_length: ``(S,)`` as scheduled.
        rounds: ``(S+1,)`` rounds played before each recorded state.
        in_equilibrium: ``(S+1,)`` whether at least ``1 - delta`` play an eps-best reply.
        convergence_stage: first index from which the run stays in (eps, delta)
            equilibrium (for ``hold_stages`` states, when given), or ``None``.
        convergence_round: ``rounds[convergence_stage]`` or ``None`` (not converged).
        config: the full configuration of the run (game, learner, population, seed...).
        final_actions: ``(n,)`` final stage actions if requested (int8, int16 past 128
            actions), else ``None``.
    """

    distribution: np.ndarray
    distribution_by_type: np.ndarray
    best_reply_fraction: np.ndarray
    best_reply_fraction_by_type: np.ndarray
    nash_gap: np.ndarray
    expected_payoffs: np.ndarray
    welfare: np.ndarray
    distance_to_equilibrium: np.ndarray | None
    played_distribution: np.ndarray
    switched_fraction: np.ndarray
    realized_mean_payoff: np.ndarray
    explore_prob: np.ndarray
    stage_length: np.ndarray
    rounds: np.ndarray
    in_equilibrium: np.ndarray
    convergence_stage: int | None
    convergence_round: int | None
    config: dict[str, Any]
    final_actions: np.ndarray | None = None

    @property
    def converged(self) -> bool:
        return self.convergence_round is not None

    @property
    def num_stages(self) -> int:
        return len(self.stage_length)

    def to_frame(self) -> Any:
        """The tidy table of ``results.csv`` as a pandas ``DataFrame``, one row per state.

        Same rows and columns as :func:`jaxstage.results.result_rows` (and the CSV written
        by :func:`jaxstage.results.write_results`), with typed columns: see
        :func:`jaxstage.results.rows_to_frame`.

        Returns:
            A ``pandas.DataFrame``.

        Raises:
            ImportError: pandas is not installed (``pip install "jaxstage[frame]"``).
        """
        from jaxstage import results  # results imports this module

        return results.rows_to_frame(results.table_rows(self))

    def summary(self) -> str:
        """A few readable lines: convergence, final distribution, gap."""
        cfg = self.config
        final = np.array2string(self.distribution[-1], precision=4, separator=", ")
        held = (
            f", held for the last {len(self.rounds) - self.convergence_stage} of "
            f"{len(self.rounds)} recorded states"
            if self.converged and cfg.get("hold_stages") is None
            else ""
        )
        lines = [
            f"game {cfg['game']['name']}, {cfg['num_agents']:,} agents, "
            f"{_learner_text(cfg['learner'])}, {self.num_stages} stages "
            f"({int(self.rounds[-1]):,} rounds), seed {cfg['seed']}",
            (
                f"converged at round {self.convergence_round:,} (stage {self.convergence_stage}"
                f"{held})"
                if self.converged
                else f"not converged within {int(self.rounds[-1]):,} rounds"
            )
            + f" for eps={cfg['eps']}, delta={cfg['delta']}",
            f"final distribution {final}",
            f"final share at eps-best reply {self.best_reply_fraction[-1]:.4f}, "
            f"eps-Nash gap {self.nash_gap[-1]:.4g}",
        ]
        if self.distance_to_equilibrium is not None:
            lines.append(
                f"L1 distance to the nearest reference equilibrium "
                f"{self.distance_to_equilibrium[-1]:.4g}"
            )
        return "\n".join(lines)


def _learner_text(learner: dict[str, Any]) -> str:
    name = learner.get("name")
    return f"info={learner['info']}" if name is None else f"learner {name}"


@dataclasses.dataclass
class SweepResult:
    """A batch of runs made in one compiled call; ``runs[i]`` is row ``i``."""

    runs: list[SimulationResult]

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int) -> SimulationResult:
        return self.runs[index]

    @property
    def convergence_rounds(self) -> list[int | None]:
        return [run.convergence_round for run in self.runs]

    def stack(self, field: str) -> np.ndarray:
        """Stack one array field over the runs: ``(batch, ...)``."""
        return np.stack([getattr(run, field) for run in self.runs])

    def to_frame(self, *, labels: Sequence[str] | None = None) -> Any:
        """The tidy table of ``results.csv`` of all rows as a pandas ``DataFrame``.

        Every run's rows (see :meth:`SimulationResult.to_frame`) led by ``run`` (the row
        index of the sweep) and ``label`` columns, as written by
        :func:`jaxstage.results.write_results`.

        Args:
            labels: one label per run; default :func:`jaxstage.results.run_labels`.

        Returns:
            A ``pandas.DataFrame``.

        Raises:
            ImportError: pandas is not installed (``pip install "jaxstage[frame]"``).
            ValueError: the labels do not match the runs.
        """
        from jaxstage import results  # results imports this module

        return results.rows_to_frame(results.table_rows(self, labels=labels))


@dataclasses.dataclass(frozen=True)
class StageRecords:
    """What the driver records of consecutive stages (host arrays), from the state at
    ``first_stage`` to the state at ``last_stage``; a sweep's have a leading row axis.

    Attributes:
        first_stage: the stage of the state the records start from.
        seed: ``()`` uint32 (a sweep's ``(rows,)``), the run's seed.
        initial: the :class:`~jaxstage.metrics.CountMetrics` of that state.
        stages: a :class:`~jaxstage.decisions.StageRecord` with a stage axis (after the
            row axis), one entry per stage played: the metrics of the state after it,
            the played counts of its last round, its switched share and realised payoff.
        batched: whether the arrays have a leading row axis.

    Records of consecutive advances add up: ``first + rest``.
    """

    first_stage: int
    seed: np.ndarray
    initial: CountMetrics
    stages: StageRecord
    batched: bool = False

    @property
    def num_stages(self) -> int:
        return int(np.shape(self.stages.switched_fraction)[-1])

    @property
    def last_stage(self) -> int:
        return self.first_stage + self.num_stages

    def __add__(self, other: StageRecords) -> StageRecords:
        if not isinstance(other, StageRecords) or other.batched != self.batched:
            return NotImplemented
        if other.first_stage != self.last_stage:
            raise ValueError(
                f"records of stages {self.first_stage}..{self.last_stage} can only be "
                f"followed by records from stage {self.last_stage}, got records from "
                f"stage {other.first_stage}"
            )
        stages = concatenate_stages([self.stages, other.stages], batched=self.batched)
        return dataclasses.replace(self, stages=stages)


def concatenate_stages(stages: Sequence[StageRecord], *, batched: bool) -> StageRecord:
    """Consecutive stages' records as one, along the stage axis (after a sweep's row
    axis)."""
    axis = 1 if batched else 0
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=axis), *stages)


def assemble_result(
    records: StageRecords,
    *,
    row: int | None,
    spec: RunSpec,
    lengths: np.ndarray,
    rounds_before: int,
    explore: np.ndarray,
    config: dict[str, Any],
    equilibria: Sequence[np.ndarray],
    delta: float,
    hold_stages: int | None,
    final_actions: np.ndarray | None,
) -> SimulationResult:
    """One run's result from ``records`` (row ``row`` of a sweep's, else ``None``);
    ``lengths`` and ``explore`` are the scheduled values of the recorded stages and
    ``rounds_before`` the rounds played before the first recorded state."""

    def take(array):
        array = np.asarray(array)
        return array if row is None else array[row]

    def per_stage(get):
        return take(get(records.stages))

    def state_series(get):
        initial = take(get(records.initial))[None]
        return np.concatenate([initial, take(get(records.stages.metrics))])

    counts = state_series(lambda m: m.counts_by_type).astype(np.int64)  # (S+1, T, k)
    type_sizes = np.asarray(spec.type_counts, np.float64)
    distribution = counts.sum(axis=1) / spec.num_agents
    share = state_series(lambda m: m.best_reply_fraction).astype(np.float64)
    in_equilibrium = share >= 1.0 - delta
    stage = convergence_stage(in_equilibrium, hold_stages)
    lengths = np.asarray(lengths)
    rounds = rounds_before + np.concatenate([[0], np.cumsum(lengths.astype(np.int64))])
    played = per_stage(lambda r: r.played_counts).astype(np.float64) / spec.num_agents
    return SimulationResult(
        distribution=distribution,
        distribution_by_type=counts / type_sizes[None, :, None],
        best_reply_fraction=share,
        best_reply_fraction_by_type=state_series(lambda m: m.best_reply_fraction_by_type),
        nash_gap=state_series(lambda m: m.nash_gap),
        expected_payoffs=state_series(lambda m: m.expected_payoffs),
        welfare=state_series(lambda m: m.welfare),
        distance_to_equilibrium=distance_to_equilibria(distribution, equilibria),
        played_distribution=played,
        switched_fraction=per_stage(lambda r: r.switched_fraction),
        realized_mean_payoff=per_stage(lambda r: r.realized_mean_payoff),
        explore_prob=np.asarray(explore, np.float64),
        stage_length=np.asarray(lengths, np.int64),
        rounds=rounds,
        in_equilibrium=in_equilibrium,
        convergence_stage=stage,
        convergence_round=None if stage is None else int(rounds[stage]),
        config=config,
        final_actions=final_actions,
    )
