"""Runs that survive interruption: :func:`run_with_checkpoints` (what
``simulate(..., checkpoint_dir=...)`` does) and :func:`resume`.

A checkpoint (:mod:`jaxstage.checkpoint`) records what rebuilds its run: the game's and
the learner's configurations, the arguments of the simulation (with the kernel and
exploration path resolved: they fix the random numbers), the scheduled stage lengths
and exploration probabilities, the configuration a result records, and the versions.
:func:`resume` rebuilds the run from it (or takes the game and learner it is given),
refuses one that differs in anything that changes the numbers, saying what differs, and
continues from the state of the checkpoint. Random numbers are keyed by the absolute
stage, so the resumed run gives bitwise the numbers of an uninterrupted one, whatever
the device count or block size it resumes with.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxstage import checkpoint, checkpoint_parts, distributed
from jaxstage._validation import check_int
from jaxstage.engine import Simulation, SimulationState, run_config, run_to_end, versions
from jaxstage.games import GAMES, AnonymousGame, make_game
from jaxstage.learner import StageLearning
from jaxstage.records import SimulationResult, StageRecords, SweepResult
from jaxstage.sweeps import Sweep

__all__ = ["resume", "run_with_checkpoints"]

#: Versions whose change may change the numbers: a resume across them is refused unless
#: ``allow_other_versions``.
PINNED_VERSIONS = ("jaxstage", "jax", "jaxlib", "backend")
#: Configuration entries a resume may change: they do not change the numbers.
FREE_CONFIG = ("versions", "block_size", "devices", "processes")


def _json(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists, NumPy scalars as numbers)."""

    def default(x):
        if isinstance(x, np.ndarray | np.generic):
            return x.tolist()
        raise TypeError(f"not JSON-friendly: {type(x).__name__}")

    return json.loads(json.dumps(value, default=default))


Run = Simulation | Sweep


def _arguments(run: Run) -> tuple[dict[str, Any], np.ndarray | None]:
    """The run's arguments for the manifest, and the initial actions array (kept in
    ``initial.npy``) when it started from one."""
    arguments = dict(run.arguments)
    initial = arguments["initial"]
    array = None
    if not isinstance(initial, str | int | np.integer) and np.ndim(initial) == 1:
        values = np.asarray(initial)
        if np.issubdtype(values.dtype, np.integer):
            array, arguments["initial"] = values.astype(np.int32), {"file": "initial.npy"}
    return _json(arguments), array


def _configs(run: Run, seed: Any) -> list[dict[str, Any]]:
    """The configuration each run of ``run`` records (a sweep's: one per row)."""
    if isinstance(run, Sweep):
        return run.configs()
    return [run_config(run.game, run.learner, run.options, run.spec, seed=int(seed))]


def _manifest(run: Run, state: SimulationState, every: int, keep: int, extra: dict) -> dict:
    """What every checkpoint of ``run`` records (the stage, seed and file digests are
    added by :func:`jaxstage.checkpoint.save`): the same at every checkpoint of a run,
    since the key does not change along it."""
    arguments, _ = _arguments(run)
    return {
        "kind": "sweep" if isinstance(run, Sweep) else "simulation",
        "horizon": run.num_stages,
        "every": every,
        "keep": keep,
        "arguments": arguments,
        "game": _json(run.game.config()),
        "learner": _json(run.learner.config()),
        "configs": _json(_configs(run, state.seed)),
        "key": np.asarray(jax.device_get(state.key)).astype(np.int64).tolist(),
        "versions": versions(),
        "extra": _json(extra),
    }


def _schedules(run: Run) -> dict[str, np.ndarray]:
    if isinstance(run, Sweep):
        return run.schedules()
    return {
        "stage_length": run.learner.stage_lengths(run.num_stages).astype(np.float64),
        "explore_prob": run.learner.explore_probs(run.num_stages).astype(np.float64),
    }


def _writer(run: Run, state: SimulationState, folder: Path, every: int, extra: dict, keep: int):
    manifest = _manifest(run, state, every, keep, extra)
    schedules = _schedules(run)
    _, initial = _arguments(run)
    num_agents = run.options[0].num_agents if isinstance(run, Sweep) else run.options.num_agents
    # Process 0's pid names the staging folder every process writes its parts into.
    writer_pid = os.getpid()
    if distributed.process_count() > 1:
        writer_pid = distributed.allgather_objects(writer_pid)[0]

    def write(state: SimulationState, records: StageRecords) -> None:
        files = dict(manifest=manifest, records=records, schedules=schedules, initial=initial)
        if checkpoint_parts.is_split_over_processes(state.actions):
            checkpoint_parts.save_parts(
                folder,
                actions=state.actions,
                num_agents=num_agents,
                dtype=state.actions.dtype,
                keep=keep,
                writer_pid=writer_pid,
                **files,
            )
        else:
            # One copy of the population on every process: process 0 alone writes it,
            # and the others wait, so that none reads a checkpoint it has not finished.
            actions = run.final_actions(state)  # a view of the host copy where it can be
            if distributed.is_main_process():
                checkpoint.save(folder, actions=actions, keep=keep, **files)
        distributed.barrier(f"jaxstage-checkpoint-{records.last_stage}")

    return write


def _state_of(run: Run, saved: checkpoint.Checkpoint) -> SimulationState:
    batched = saved.records.batched
    last = jax.tree.map(lambda x: x[:, -1] if batched else x[-1], saved.records.stages.metrics)
    return run.state_at(
        saved.actions,
        stage=saved.stage,
        seed=np.asarray(saved.manifest["seed"], np.uint32),
        key=np.asarray(saved.manifest["key"], np.uint32),
        metrics=last,
    )


def _result(run: Run, records: StageRecords, final: SimulationState | None):
    if isinstance(run, Sweep):
        return run.result(records)
    return run.result(records, final=final)


def run_with_checkpoints(
    run: Run,
    folder: str | os.PathLike[str],
    *,
    seed: int = 0,
    every: int | None = None,
    progress: bool = False,
    return_actions: bool = False,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> SimulationResult | SweepResult:
    """``run`` (a :class:`~jaxstage.Simulation` started from ``seed``, or a
    :class:`~jaxstage.Sweep`, whose rows have their seeds) played to its horizon, a
    checkpoint written into ``folder`` (new or empty) every ``every`` stages (default: a
    tenth of the run, rounded up) and at the end; ``extra`` (JSON-friendly) is kept in
    the manifests (the command line keeps its output folder there)."""
    if not isinstance(run.learner, StageLearning):
        raise ValueError(
            f"checkpoints hold stage learning's stage actions only; learner {run.learner.name!r}"
            " cannot be checkpointed (leave checkpoint_dir and --checkpoint-every unset)"
        )
    folder = checkpoint.check_folder(folder)
    horizon = run.num_stages
    every = math.ceil(horizon / 10) if every is None else every
    every = check_int(every, "checkpoint_every", low=1, high=horizon)
    if isinstance(run, Sweep):
        if return_actions:
            raise ValueError("a sweep's result keeps no final actions: return_actions=False")
        start = run.init
    else:
        seed = check_int(seed, "seed", low=0, high=2**32 - 1)
        start = lambda: run.init(seed)  # noqa: E731
    state = start()
    write = _writer(run, state, folder, every, extra or {}, keep)

    def restart():
        try:
            saved = checkpoint.load(folder)
        except checkpoint.CheckpointError:  # none written yet
            return start(), None
        return _state_of(run, saved), saved.records

    state, records = run_to_end(
        run.pipeline,
        state,
        progress=progress,
        restart=restart,
        on_advance=write,
        every=every,
    )
    return _result(run, records, state if return_actions else None)


def rebuilt_game(saved: dict[str, Any], game: AnonymousGame | None = None) -> AnonymousGame:
    """The game of a saved ``game.config()``: ``game`` checked against it, or (``None``)
    the built-in game rebuilt from it."""
    if game is None:
        name = saved.get("name")
        if name not in GAMES:
            raise checkpoint.CheckpointError(
                f"the checkpoint's game {name!r} is not a built-in game: pass the game it "
                "ran with, resume(..., game=...)"
            )
        game = make_game(name, **{k: v for k, v in saved.items() if k != "name"})
    if not isinstance(game, AnonymousGame):
        raise TypeError(f"game must be an AnonymousGame, got {type(game).__name__}")
    if _json(game.config()) != saved:
        raise checkpoint.CheckpointError(
            f"the game differs from the checkpoint's: {_differences(saved, game.config())}"
        )
    return game


def _rebuilt_learner(saved: dict[str, Any], learner: StageLearning | None) -> StageLearning:
    if learner is None:
        scheduled = [k for k, v in saved.items() if str(v).startswith("schedule:")]
        if scheduled:
            raise checkpoint.CheckpointError(
                f"the checkpoint's learner has a schedule for {', '.join(scheduled)}, "
                "which a checkpoint cannot hold: pass the learner it ran with, "
                "resume(..., learner=...)"
            )
        learner = StageLearning(**saved)
    if not isinstance(learner, StageLearning):
        raise TypeError(f"learner must be a jaxstage.StageLearning, got {type(learner).__name__}")
    if _json(learner.config()) != saved:
        raise checkpoint.CheckpointError(
            f"the learner differs from the checkpoint's: {_differences(saved, learner.config())}"
        )
    return learner


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> str:
    now = _json(now)
    keys = sorted(set(saved) | set(now))
    changed = [
        f"{k}: {saved.get(k, '(absent)')!r} in the checkpoint, {now.get(k, '(absent)')!r} now"
        for k in keys
        if saved.get(k) != now.get(k)
    ]
    return "; ".join(changed)


def _check_versions(saved: dict[str, str], allow: bool) -> None:
    now = versions()
    changed = {k: (saved.get(k), now.get(k)) for k in PINNED_VERSIONS if saved.get(k) != now.get(k)}
    if changed and not allow:
        listed = "; ".join(f"{k} {a} then, {b} now" for k, (a, b) in changed.items())
        raise checkpoint.CheckpointError(
            f"the checkpoint was written with other versions ({listed}): the resumed "
            "stages may not give the numbers an uninterrupted run would; pass "
            "allow_other_versions=True to resume anyway"
        )


def resume(
    checkpoint_dir: str | os.PathLike[str],
    *,
    game: AnonymousGame | None = None,
    learner: StageLearning | None = None,
    progress: bool = False,
    return_actions: bool = False,
    memory_limit_bytes: int | None = None,
    block_size: int | None = None,
    devices: int | None = None,
    allow_other_versions: bool = False,
) -> SimulationResult | SweepResult:
    """Continue the run (or sweep) whose checkpoints are in ``checkpoint_dir`` to its
    horizon.

    The run is rebuilt from its last checkpoint; it keeps writing checkpoints there at
    the same interval. The result is bitwise that of the run uninterrupted.

    Args:
        checkpoint_dir: the folder given as ``simulate(..., checkpoint_dir=...)`` or
            ``sweep(..., checkpoint_dir=...)``.
        game: the game the run used; needed only when it is not built in (then its
            ``config()`` must equal the checkpoint's).
        learner: the learner; needed only when it has a schedule (checked against the
            scheduled values of every stage).
        progress, return_actions, memory_limit_bytes: as in :func:`jaxstage.simulate`
            (a sweep has no ``return_actions``).
        block_size, devices: as in :func:`jaxstage.simulate`; they may differ from the
            interrupted run's (the numbers do not depend on them).
        allow_other_versions: resume although jaxstage, jax, jaxlib or the backend
            differ from the checkpoint's (the numbers may then differ).

    Returns:
        The :class:`~jaxstage.SimulationResult` of the whole run, or the
        :class:`~jaxstage.SweepResult` of the whole sweep.

    Raises:
        jaxstage.checkpoint.CheckpointError: no complete checkpoint, a damaged one, or
            a run that differs from the checkpoint's (the message says what differs).
    """
    saved = checkpoint.load(checkpoint_dir)
    manifest = saved.manifest
    _check_versions(manifest["versions"], allow_other_versions)
    game = rebuilt_game(manifest["game"], game)
    learner = _rebuilt_learner(manifest["learner"], learner)
    arguments = dict(manifest["arguments"])
    if isinstance(arguments["initial"], dict):
        arguments["initial"] = saved.initial
    build = Sweep if manifest.get("kind") == "sweep" else Simulation
    if build is Sweep and return_actions:
        raise ValueError("a sweep's result keeps no final actions: return_actions=False")
    run = build(
        game,
        learner,
        **arguments,
        memory_limit_bytes=memory_limit_bytes,
        block_size=block_size,
        devices=devices,
    )
    _check_schedules(_schedules(run), saved.schedules)
    # Checkpoints of jaxstage 0.x before sweeps had one "config".
    before = manifest["configs"] if "configs" in manifest else [manifest["config"]]
    now = _configs(run, manifest["seed"])
    strip = lambda c: {k: v for k, v in _json(c).items() if k not in FREE_CONFIG}  # noqa: E731
    for row, (then, config) in enumerate(zip(before, now, strict=True)):
        if strip(config) != strip(then):
            where = f"row {row} of the sweep" if build is Sweep else "the run"
            raise checkpoint.CheckpointError(
                f"{where} differs from the checkpoint's: "
                + _differences(strip(then), strip(config))
            )
    state = _state_of(run, saved)
    folder = saved.path.parent  # checkpoint_dir, or the folder of the checkpoint named
    every, keep = int(manifest["every"]), int(manifest["keep"])
    write = _writer(run, state, folder, every, manifest["extra"], keep)

    def restart():
        again = checkpoint.load(folder)
        return _state_of(run, again), again.records

    state, records = run_to_end(
        run.pipeline,
        state,
        saved.records,
        progress=progress,
        restart=restart,
        on_advance=write,
        every=every,
    )
    return _result(run, records, state if return_actions else None)


def _check_schedules(now: dict[str, np.ndarray], then: dict[str, np.ndarray]) -> None:
    for name, values in now.items():
        if values.shape != then[name].shape or not np.array_equal(values, then[name]):
            if values.shape != then[name].shape:
                raise checkpoint.CheckpointError(
                    f"the {name} schedules have shape {values.shape} now, "
                    f"{then[name].shape} in the checkpoint"
                )
            at = tuple(int(i) for i in np.argwhere(values != then[name])[0])
            where = f"row {at[0]}, stage {at[1]}" if len(at) == 2 else f"stage {at[0]}"
            raise checkpoint.CheckpointError(
                f"the learner's {name} schedule differs from the checkpoint's at {where}: "
                f"{values[at]} now, {then[name][at]} then"
            )
