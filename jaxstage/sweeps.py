"""A batch of runs: :class:`Sweep`, the static configuration of a sweep (its rows' seeds,
learners and game parameters, the one kernel they share) and the step API over its
state, as :class:`~jaxstage.engine.Simulation` is for one run.

The rows share one compiled pipeline (``vmap``-ed in the reference kernel, rows one
after another in the fast kernel) and one state with a leading row axis. Row ``i`` gives
bitwise the numbers of ``simulate(..., seed=seeds[i])`` with that row's parameters and
the sweep's exploration path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import plan
from jaxstage._validation import check_int
from jaxstage.engine import (
    Pipeline,
    RunOptions,
    SimulationState,
    advance_to_horizon,
    host_actions,
    placed_actions,
    references_for,
    run_config,
)
from jaxstage.games import AnonymousGame
from jaxstage.learner import StageLearning
from jaxstage.learner_interface import Learner
from jaxstage.metrics import CountMetrics
from jaxstage.records import StageRecords, SweepResult, assemble_result
from jaxstage.spec import RunSpec

__all__ = ["Sweep", "SWEPT"]

#: The learner fields a sweep can vary by row.
SWEPT = ("explore_prob", "update_prob", "stage_length", "info_noise_std")


def _batched(name: str, values: Sequence[Any] | None, batch: int) -> list[Any] | None:
    if values is None:
        return None
    values = list(values)
    if len(values) == 1:
        return values * batch
    if len(values) != batch:
        raise ValueError(
            f"{name} has {len(values)} entries but the sweep has {batch} rows; "
            f"give {batch} entries or 1"
        )
    return values


def _row_learners(learner: StageLearning, rows: dict, batch: int, num_stages: int) -> list:
    """Each row's learner, validated like any StageLearning (so a bad row fails before
    anything is traced)."""
    learners = []
    for name in SWEPT:
        if rows[name] is not None and name not in learner.sweepable:
            raise ValueError(
                f"{name} cannot be swept with learner {learner.name!r}; its sweepable "
                f"fields: {', '.join(learner.sweepable)}"
            )
    for i in range(batch):
        changes = {name: rows[name][i] for name in SWEPT if rows[name] is not None}
        if changes.get("info_noise_std", 0) and not learner.info_noise_std:
            raise ValueError(
                "sweeping info_noise_std needs a learner with info_noise_std > 0 "
                "(it selects the noisy code path)"
            )
        learners.append(learner.with_values(**changes))
        plan.check_sample_counts(learners[-1], num_stages)
    return learners


class Sweep:
    """A sweep's static configuration, and the step API over its state.

    Args:
        game, learner, num_agents, num_stages, seeds, game_params, explore_prob,
        update_prob, stage_length, info_noise_std, eps, delta, hold_stages, initial,
        reference, memory_limit_bytes, kernel, block_size, fast_path, devices: as in
        :func:`jaxstage.sweep` (validated here, before anything is traced).
        longest_stage: the stage length the fast kernel's round buffers are sized for
            (default: the rows' longest). Sums over a stage's rounds can differ in their
            last bit with the buffer's length (rounded up to a power of two), so a sweep of
            some of another's rows passes that sweep's to give its rows bitwise
            (``jaxstage.sweep_rows``).

    Example:
        >>> import jaxstage as js
        >>> game = js.make_game("congestion", num_actions=3)
        >>> learner = js.StageLearning(stage_length=20, explore_prob=0.1)
        >>> batch = js.Sweep(game, learner, 10_000, 20, seeds=[0, 1], update_prob=[0.1, 0.3])
        >>> state, first = batch.advance(batch.init(), num_stages=7)
        >>> state, rest = batch.advance(state)
        >>> len(batch.result(first + rest))  # bitwise js.sweep(...)
        2
    """

    def __init__(
        self,
        game: AnonymousGame,
        learner: Learner,
        num_agents: int,
        num_stages: int,
        seeds: int | Sequence[int] = 0,
        *,
        game_params: Sequence[dict[str, Any]] | None = None,
        explore_prob: Sequence[float] | None = None,
        update_prob: Sequence[float] | None = None,
        stage_length: Sequence[int] | None = None,
        info_noise_std: Sequence[float] | None = None,
        eps: float = 0.05,
        delta: float = 0.05,
        hold_stages: int | None = None,
        initial: Any = "uniform",
        reference: Any = None,
        memory_limit_bytes: int | None = None,
        kernel: str = "auto",
        block_size: int | None = None,
        fast_path: str = "auto",
        devices: int | None = None,
        longest_stage: int | None = None,
    ) -> None:
        num_agents, num_stages, eps, delta, hold_stages = plan.validate_common(
            game, learner, num_agents, num_stages, eps, delta, hold_stages
        )
        if isinstance(game_params, dict):
            raise TypeError(
                "a sweep's game_params is a list of per-row dicts, e.g. [{'b': [1, 2]}, "
                "{'b': [2, 1]}] (one dict in a list applies to every row); got a dict"
            )
        seed_list = [seeds] if np.ndim(seeds) == 0 else list(seeds)
        lists = {
            "game_params": game_params,
            "explore_prob": explore_prob,
            "update_prob": update_prob,
            "stage_length": stage_length,
            "info_noise_std": info_noise_std,
        }
        batch = max([len(seed_list)] + [len(v) for v in lists.values() if v is not None])
        if batch < 1:
            raise ValueError("a sweep needs at least one row")
        seed_list = _batched("seeds", seed_list, batch)
        self.seeds = [check_int(s, "seed", low=0, high=2**32 - 1) for s in seed_list]
        rows = {name: _batched(name, values, batch) for name, values in lists.items()}
        kind, payload = plan.parse_initial(initial, num_agents, game.num_actions)
        self.learners = _row_learners(learner, rows, batch, num_stages)
        for row in self.learners:
            plan.check_learner_run(row, initial, num_stages)
        self.game_rows = [
            plan.check_game_params(
                game, None if rows["game_params"] is None else rows["game_params"][i], row=i
            )
            for i in range(batch)
        ]
        references = references_for(game, game_params is not None, reference)
        kernel = plan.resolve_kernel(kernel, game, fast_path, learner)
        max_length = max(row.stage_lengths(num_stages).max() for row in self.learners)
        if longest_stage is not None:
            max_length = check_int(longest_stage, "longest_stage", low=int(max_length))
        spec = plan.kernel_spec(
            kernel,
            game,
            learner,
            num_agents=num_agents,
            num_stages=num_stages,
            max_stage_length=max_length,
            block_size=block_size,
            learners=self.learners,
            fast_path=fast_path,
            devices=devices,
        )
        plan.check_memory(spec, learner, batch=batch, limit=memory_limit_bytes)
        padded = math.ceil(num_stages / spec.chunk_stages) * spec.chunk_stages
        row_params = [
            plan.run_params(self.game_rows[i], self.learners[i], num_stages, padded, eps)
            for i in range(batch)
        ]
        # Stack on the host: thousands of small device stacks would dominate a big sweep.
        params = jax.tree.map(
            lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs])), *row_params
        )
        self.game, self.learner = game, learner
        # What rebuilds this sweep (with the game and learner): a checkpoint's. As in
        # Simulation, the kernel and path are the resolved ones; blocks and devices are
        # not kept (the numbers do not depend on them).
        self.arguments = {
            "num_agents": num_agents,
            "num_stages": num_stages,
            "seeds": list(self.seeds),
            **{name: rows[name] for name in lists},
            "eps": eps,
            "delta": delta,
            "hold_stages": hold_stages,
            "initial": initial,
            "reference": reference,
            "kernel": kernel,
            "fast_path": spec.exploration_path if kernel == "fast" else "auto",
        }
        self.options = [
            RunOptions(
                num_agents, num_stages, eps, delta, hold_stages, initial, rows_game, references
            )
            for rows_game in self.game_rows
        ]
        self.pipeline = Pipeline(
            game=game,
            spec=spec,
            params=params,
            kind=kind,
            payload=jnp.asarray(payload),
            types=plan.types_array(spec),
            row_game_params=self.game_rows,
            batched=True,
            description=f"sweep of {batch} runs",
        )

    @property
    def spec(self) -> RunSpec:
        """The static configuration the kernels are compiled with."""
        return self.pipeline.spec

    @property
    def num_stages(self) -> int:
        """The horizon."""
        return self.options[0].num_stages

    @property
    def num_rows(self) -> int:
        return len(self.seeds)

    def init(self) -> SimulationState:
        """The state at stage 0 of every row (a leading row axis), from the rows' seeds."""
        return self.pipeline.init(np.asarray(self.seeds, np.uint32))

    def advance(
        self,
        state: SimulationState,
        num_stages: int | None = None,
        *,
        progress: bool = False,
        donate: bool = False,
    ) -> tuple[SimulationState, StageRecords]:
        """Every row of ``state`` moved on by ``num_stages`` stages (default: to the
        horizon), as :meth:`jaxstage.Simulation.advance`."""
        self._check_state(state)
        return advance_to_horizon(
            self.pipeline, state, num_stages, owner="sweep", progress=progress, donate=donate
        )

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, SimulationState):
            raise TypeError(f"state must be a SimulationState, got {type(state).__name__}")
        n = self.options[0].num_agents
        expected = (self.num_rows, self.spec.padded_agents if self.spec.kernel == "fast" else n)
        if tuple(np.shape(state.actions)) != expected:
            raise ValueError(
                f"state.actions has shape {tuple(np.shape(state.actions))}, but this "
                f"sweep's kernel holds {expected}: the state belongs to another run"
            )
        if not np.array_equal(np.asarray(state.seed), np.asarray(self.seeds, np.uint32)):
            raise ValueError("the state's seeds are not this sweep's: it belongs to another run")

    def configs(self) -> list[dict[str, Any]]:
        """Each row's configuration (``result[i].config``)."""
        return [
            run_config(self.game, row, options, self.spec, seed=seed)
            for row, options, seed in zip(self.learners, self.options, self.seeds, strict=True)
        ]

    def result(self, records: StageRecords) -> SweepResult:
        """The :class:`~jaxstage.records.SweepResult` of ``records`` (from stage 0)."""
        if not isinstance(records, StageRecords) or not records.batched:
            raise TypeError("records must be the StageRecords of this sweep's advance")
        if records.first_stage != 0:
            raise ValueError("a sweep's result needs its records from stage 0")
        if records.last_stage > self.num_stages:
            raise ValueError(
                f"records reach stage {records.last_stage}, past the horizon {self.num_stages}"
            )
        last = records.last_stage
        runs = []
        for i, config in enumerate(self.configs()):
            row = self.learners[i]
            runs.append(
                assemble_result(
                    records,
                    row=i,
                    spec=self.spec,
                    lengths=row.stage_lengths(self.num_stages)[:last],
                    rounds_before=0,
                    explore=row.explore_probs(self.num_stages)[:last],
                    config=config,
                    equilibria=self.options[i].references,
                    delta=self.options[i].delta,
                    hold_stages=self.options[i].hold_stages,
                    final_actions=None,
                )
            )
        return SweepResult(runs)

    def schedules(self) -> dict[str, np.ndarray]:
        """The rows' scheduled stage lengths and exploration probabilities, ``(rows, S)``
        float64 (a checkpoint's check of a resumed sweep)."""
        return {
            "stage_length": np.stack([r.stage_lengths(self.num_stages) for r in self.learners]),
            "explore_prob": np.stack([r.explore_probs(self.num_stages) for r in self.learners]),
        }

    def state_at(
        self,
        actions: np.ndarray,
        *,
        stage: int,
        seed: np.ndarray,
        key: np.ndarray,
        metrics: CountMetrics,
    ) -> SimulationState:
        """The state of ``(rows, num_agents)`` stage ``actions`` at ``stage`` (a
        checkpoint's), padded to this sweep's blocks and put on its devices."""
        n = self.options[0].num_agents
        shape = tuple(np.shape(actions))
        if shape != (self.num_rows, n):
            raise ValueError(f"actions must have shape ({self.num_rows}, {n}), got {shape}")
        stage = check_int(stage, "stage", low=0, high=self.num_stages)
        if self.spec.kernel == "fast":
            key = np.asarray(key, np.uint32).reshape(self.num_rows)
            placed = placed_actions(self.spec, self.game.num_actions, actions)
        else:
            placed = jnp.asarray(np.asarray(actions).astype(np.int32))
            key = np.asarray(key, np.uint32).reshape(self.num_rows, 2)
        seed = np.asarray(seed, np.uint32).reshape(self.num_rows)
        return SimulationState(placed, np.int32(stage), seed, jnp.asarray(key), metrics)

    def final_actions(self, state: SimulationState) -> np.ndarray:
        """The ``(rows, num_agents)`` stage actions of ``state`` (padding dropped), int8
        (int16 past 128 actions) as :meth:`jaxstage.Simulation.final_actions`."""
        return host_actions(state.actions, self.options[0].num_agents, self.game.num_actions)
