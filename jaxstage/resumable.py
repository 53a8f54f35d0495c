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

from jaxstage import checkpoint
from jaxstage._validation import check_int
from jaxstage.engine import Simulation, SimulationState, run_config, run_to_end, versions
from jaxstage.games import GAMES, AnonymousGame, make_game
from jaxstage.learner import StageLearning
from jaxstage.records import SimulationResult, StageRecords

__all__ = ["resume", "run_with_checkpoints"]

#: Versions whose change may change the numbers: a resume across them is refused unless
#: ``allow_other_versions``.
PINNED_VERSIONS = ("jaxstage", "jax", "jaxlib", "backend")
#: Configuration entries a resume may change: they do not change the numbers.
FREE_CONFIG = ("versions", "block_size", "devices")


def _json(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists, NumPy scalars as numbers)."""

    def default(x):
        if isinstance(x, np.ndarray | np.generic):
            return x.tolist()
        raise TypeError(f"not JSON-friendly: {type(x).__name__}")

    return json.loads(json.dumps(value, default=default))


def _arguments(sim: Simulation) -> tuple[dict[str, Any], np.ndarray | None]:
    """The simulation's arguments for the manifest, and the initial actions array (kept
    in ``initial.npy``) when it started from one."""
    arguments = dict(sim.arguments)
    initial = arguments["initial"]
    array = None
    if not isinstance(initial, str | int | np.integer) and np.ndim(initial) == 1:
        values = np.asarray(initial)
        if np.issubdtype(values.dtype, np.integer):
            array, arguments["initial"] = values.astype(np.int32), {"file": "initial.npy"}
    return _json(arguments), array


def _manifest(sim: Simulation, state: SimulationState, every: int, keep: int, extra: dict) -> dict:
    arguments, _ = _arguments(sim)
    config = run_config(sim.game, sim.learner, sim.options, sim.spec, seed=int(state.seed))
    return {
        "horizon": sim.num_stages,
        "every": every,
        "keep": keep,
        "arguments": arguments,
        "game": _json(sim.game.config()),
        "learner": _json(sim.learner.config()),
        "config": _json(config),
        "key": np.asarray(jax.device_get(state.key)).astype(np.int64).tolist(),
        "versions": versions(),
        "extra": _json(extra),
    }


def _schedules(sim: Simulation) -> dict[str, np.ndarray]:
    return {
        "stage_length": sim.learner.stage_lengths(sim.num_stages).astype(np.float64),
        "explore_prob": sim.learner.explore_probs(sim.num_stages).astype(np.float64),
    }


def _writer(sim: Simulation, folder: Path, every: int, extra: dict, keep: int):
    _, initial = _arguments(sim)

    def write(state: SimulationState, records: StageRecords) -> None:
        checkpoint.save(
            folder,
            manifest=_manifest(sim, state, every, keep, extra),
            actions=sim.final_actions(state).astype(np.asarray(state.actions).dtype),
            records=records,
            schedules=_schedules(sim),
            initial=initial,
            keep=keep,
        )

    return write


def _state_of(sim: Simulation, saved: checkpoint.Checkpoint) -> SimulationState:
    last = jax.tree.map(lambda x: x[-1], saved.records.stages.metrics)
    return sim.state_at(
        saved.actions,
        stage=saved.stage,
        seed=int(saved.manifest["seed"]),
        key=np.asarray(saved.manifest["key"], np.uint32),
        metrics=last,
    )


def run_with_checkpoints(
    sim: Simulation,
    seed: int,
    folder: str | os.PathLike[str],
    *,
    every: int | None = None,
    progress: bool = False,
    return_actions: bool = False,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> SimulationResult:
    """``sim`` run from ``seed`` to its horizon, a checkpoint written into ``folder``
    (new or empty) every ``every`` stages (default: a tenth of the run, rounded up) and
    at the end; ``extra`` (JSON-friendly) is kept in the manifests (the command line
    keeps its output folder there)."""
    folder = checkpoint.check_folder(folder)
    horizon = sim.num_stages
    every = math.ceil(horizon / 10) if every is None else every
    every = check_int(every, "checkpoint_every", low=1, high=horizon)
    write = _writer(sim, folder, every, extra or {}, keep)

    def restart():
        try:
            saved = checkpoint.load(folder)
        except checkpoint.CheckpointError:  # none written yet
            return sim.init(seed), None
        return _state_of(sim, saved), saved.records

    state, records = run_to_end(
        sim.pipeline,
        sim.init(seed),
        progress=progress,
        restart=restart,
        on_advance=write,
        every=every,
    )
    return sim.result(records, final=state if return_actions else None)


def _rebuilt_game(saved: dict[str, Any], game: AnonymousGame | None) -> AnonymousGame:
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
) -> SimulationResult:
    """Continue the run whose checkpoints are in ``checkpoint_dir`` to its horizon.

    The run is rebuilt from its last checkpoint; it keeps writing checkpoints there at
    the same interval. The result is bitwise that of the run uninterrupted.

    Args:
        checkpoint_dir: the folder given as ``simulate(..., checkpoint_dir=...)``.
        game: the game the run used; needed only when it is not built in (then its
            ``config()`` must equal the checkpoint's).
        learner: the learner; needed only when it has a schedule (checked against the
            scheduled values of every stage).
        progress, return_actions, memory_limit_bytes: as in :func:`jaxstage.simulate`.
        block_size, devices: as in :func:`jaxstage.simulate`; they may differ from the
            interrupted run's (the numbers do not depend on them).
        allow_other_versions: resume although jaxstage, jax, jaxlib or the backend
            differ from the checkpoint's (the numbers may then differ).

    Returns:
        The :class:`~jaxstage.SimulationResult` of the whole run.

    Raises:
        jaxstage.checkpoint.CheckpointError: no complete checkpoint, a damaged one, or
            a run that differs from the checkpoint's (the message says what differs).
    """
    saved = checkpoint.load(checkpoint_dir)
    manifest = saved.manifest
    _check_versions(manifest["versions"], allow_other_versions)
    game = _rebuilt_game(manifest["game"], game)
    learner = _rebuilt_learner(manifest["learner"], learner)
    arguments = dict(manifest["arguments"])
    if isinstance(arguments["initial"], dict):
        arguments["initial"] = saved.initial
    sim = Simulation(
        game,
        learner,
        **arguments,
        memory_limit_bytes=memory_limit_bytes,
        block_size=block_size,
        devices=devices,
    )
    for name, values in _schedules(sim).items():
        if not np.array_equal(values, saved.schedules[name]):
            stage = int(np.argmax(values != saved.schedules[name]))
            raise checkpoint.CheckpointError(
                f"the learner's {name} schedule differs from the checkpoint's at stage "
                f"{stage}: {values[stage]} now, {saved.schedules[name][stage]} then"
            )
    seed = int(manifest["seed"])
    config = run_config(game, learner, sim.options, sim.spec, seed=seed)
    strip = lambda c: {k: v for k, v in _json(c).items() if k not in FREE_CONFIG}  # noqa: E731
    if strip(config) != strip(manifest["config"]):
        raise checkpoint.CheckpointError(
            "the run differs from the checkpoint's: "
            + _differences(strip(manifest["config"]), strip(config))
        )
    state = _state_of(sim, saved)
    folder = saved.path.parent  # checkpoint_dir, or the folder of the checkpoint named
    write = _writer(sim, folder, int(manifest["every"]), manifest["extra"], int(manifest["keep"]))

    def restart():
        again = checkpoint.load(folder)
        return _state_of(sim, again), again.records

    state, records = run_to_end(
        sim.pipeline,
        state,
        saved.records,
        progress=progress,
        restart=restart,
        on_advance=write,
        every=int(manifest["every"]),
    )
    return sim.result(records, final=state if return_actions else None)
