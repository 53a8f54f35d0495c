"""Checkpoints of a run: a state and its records on disk, written so that a kill at any
moment leaves the last complete checkpoint readable, and read back only into the run
that wrote them.

A checkpoint folder holds one sub-folder per checkpoint and a ``LATEST`` file naming the
newest complete one::

    folder/
        LATEST                  "ckpt-0000000040"
        ckpt-0000000040/
            manifest.json       format, stage, seed, key, what rebuilds the run, versions,
                                the sha256 of each file (written last)
            actions.npy         (num_agents,) stage actions, a sweep's (rows, num_agents)
                                (the kernel's dtype: int8, int16 past 128 actions, or int32)
            records.npz         the StageRecords since stage 0 and the run's schedules
            initial.npy         only when the run started from an array of actions

A checkpoint is written into a hidden staging folder, flushed to disk, renamed into
place and only then named by ``LATEST`` (replaced atomically); older checkpoints are
removed after that (the newest ``keep`` stay). The files are plain NumPy and JSON:
readable without jaxstage, and with no dependency beyond NumPy (see
``docs/architecture.md`` for why not Orbax).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jaxstage.decisions import StageRecord
from jaxstage.metrics import CountMetrics
from jaxstage.records import StageRecords

__all__ = ["Checkpoint", "CheckpointError", "latest", "load", "save", "check_folder"]

FORMAT = "jaxstage-checkpoint"
FORMAT_VERSION = 1
LATEST = "LATEST"
MANIFEST = "manifest.json"
#: The only names jaxstage writes into a checkpoint (and the only ones it removes).
FILES = frozenset({MANIFEST, "actions.npy", "records.npz", "initial.npy"})
#: The actions of agents ``[start, stop)`` of a population split over processes, one file
#: per shard, written by the process holding it (:mod:`jaxstage.checkpoint_parts`).
PART = re.compile(r"actions\.part-(\d{13})-(\d{13})\.npy")
_NAME = re.compile(r"ckpt-(\d{10})")
_STAGING = re.compile(r"\.ckpt-(\d{10})\.partial-(\d+)")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read, or that belongs to another run."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back (:func:`load`).

    Attributes:
        path: its folder.
        manifest: ``manifest.json``.
        actions: the ``(num_agents,)`` stage actions at ``stage`` (a sweep's
            ``(rows, num_agents)``); of a distributed run, an
            :class:`~jaxstage.checkpoint_parts.ActionParts` that reads them on demand
            (``np.asarray`` reads them all).
        records: the :class:`~jaxstage.records.StageRecords` from stage 0 to ``stage``.
        schedules: the run's scheduled ``stage_length`` and ``explore_prob`` (float64,
            one per stage of the horizon), to check a resumed learner against.
        initial: the initial actions when the run started from an array, else ``None``.
    """

    path: Path
    manifest: dict[str, Any]
    actions: Any  # np.ndarray, or checkpoint_parts.ActionParts
    records: StageRecords
    schedules: dict[str, np.ndarray]
    initial: np.ndarray | None

    @property
    def stage(self) -> int:
        return int(self.manifest["stage"])


# --------------------------------------------------------------------------- records


def _flatten_records(records: StageRecords) -> dict[str, np.ndarray]:
    arrays = {f"initial.{k}": np.asarray(v) for k, v in records.initial._asdict().items()}
    for name, value in records.stages._asdict().items():
        if name == "metrics":
            for k, v in value._asdict().items():
                arrays[f"stages.metrics.{k}"] = np.asarray(v)
        else:
            arrays[f"stages.{name}"] = np.asarray(value)
    return arrays


def _unflatten_records(arrays, first_stage: int, seed: Any, batched: bool) -> StageRecords:
    def group(prefix, cls):
        return cls(**{k: arrays[f"{prefix}{k}"] for k in cls._fields})

    metrics = group("stages.metrics.", CountMetrics)
    others = {k: arrays[f"stages.{k}"] for k in StageRecord._fields if k != "metrics"}
    return StageRecords(
        first_stage=first_stage,
        seed=np.asarray(seed, np.uint32),
        initial=group("initial.", CountMetrics),
        stages=StageRecord(metrics=metrics, **others),
        batched=batched,
    )


# --------------------------------------------------------------------------- files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write(path: Path, write) -> None:
    with open(path, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def _remove_checkpoint(folder: Path) -> None:
    """Remove a checkpoint folder jaxstage wrote: only its own file names; a folder
    holding anything else is left alone."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    if any(not _own_file(e.name) or not e.is_file(follow_symlinks=False) for e in entries):
        return
    for entry in entries:
        os.unlink(entry.path)
    folder.rmdir()


def _own_file(name: str) -> bool:
    return name in FILES or PART.fullmatch(name) is not None


def _checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints in ``folder``, oldest first."""
    found = []
    for entry in os.scandir(folder):
        complete = (Path(entry.path) / MANIFEST).is_file()
        if _NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False) and complete:
            found.append(Path(entry.path))
    return sorted(found)


def check_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` as a place for a new run's checkpoints: absent, empty, or holding only
    what an interrupted checkpoint write left. A folder with checkpoints is refused (the
    run would replace them: resume it instead), as is one with other files."""
    path = Path(folder)
    if not str(folder):
        raise ValueError("checkpoint_dir must name a folder, got an empty string")
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_dir {str(path)!r} exists and is not a folder")
    if not path.exists():
        return path
    if _checkpoints(path) or (path / LATEST).exists():
        raise CheckpointError(
            f"checkpoint_dir {str(path)!r} holds the checkpoints of a run: resume it "
            f"(jaxstage.resume({str(path)!r}) or `jaxstage resume {path}`), or give an "
            "empty folder"
        )
    others = [e.name for e in os.scandir(path) if not _STAGING.fullmatch(e.name)]
    if others:
        raise ValueError(
            f"checkpoint_dir {str(path)!r} is not empty (it holds {sorted(others)[:5]}): "
            "give a new or empty folder, so that no file of yours is overwritten"
        )
    return path


def checkpoint_name(stage: int) -> str:
    return f"ckpt-{stage:010d}"


def staging_path(folder: Path, name: str, writer_pid: int) -> Path:
    """Where the writer of process id ``writer_pid`` stages checkpoint ``name``."""
    return folder / f".{name}.partial-{writer_pid}"


def new_staging(folder: Path, staging: Path) -> None:
    """An empty staging folder (a previous one of the same writer, interrupted, removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    if staging.exists():
        shutil.rmtree(staging)  # this process's own, from an interrupted call
    staging.mkdir()


def finish_staging(
    folder: Path,
    staging: Path,
    name: str,
    *,
    manifest: dict[str, Any],
    records: StageRecords,
    schedules: dict[str, np.ndarray],
    initial: np.ndarray | None,
    digests: dict[str, str] | None = None,
) -> Path:
    """Write the records, schedules, initial actions and manifest into ``staging``
    (which holds the actions already) and rename it into place; ``digests`` are the
    sha256 of files other processes wrote (not read again here)."""
    arrays = _flatten_records(records)
    arrays.update({f"schedule.{k}": np.asarray(v) for k, v in schedules.items()})
    _write(staging / "records.npz", lambda f: np.savez(f, **arrays))
    if initial is not None:
        _write(staging / "initial.npy", lambda f: np.save(f, np.asarray(initial)))
    digests = dict(digests or {})
    files = sorted(p.name for p in staging.iterdir())
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stage": records.last_stage,
        "first_stage": records.first_stage,
        "seed": np.asarray(records.seed).tolist(),  # a sweep's: one per row
        "batched": records.batched,
        **manifest,
        "files": {file: digests.get(file) or _sha256(staging / file) for file in files},
    }
    text = json.dumps(full, indent=1, sort_keys=True).encode()
    _write(staging / MANIFEST, lambda f: f.write(text))
    _fsync_folder(staging)
    target = folder / name
    if target.exists():  # the same stage again (a replay): the same bits
        _remove_checkpoint(target)
    os.replace(staging, target)
    return target


def publish(folder: Path, name: str, keep: int) -> None:
    """Name checkpoint ``name`` in ``LATEST`` (atomically), then remove all but the newest
    ``keep`` checkpoints and the staging folders of dead writers."""
    pointer = folder / f".{LATEST}.partial-{os.getpid()}"
    _write(pointer, lambda f: f.write(f"{name}\n".encode()))
    os.replace(pointer, folder / LATEST)
    _fsync_folder(folder)
    for old in _checkpoints(folder)[:-keep] if keep > 0 else []:
        if old.name != name:
            _remove_checkpoint(old)
    _remove_dead_staging(folder)


def save(
    folder: str | os.PathLike[str],
    *,
    manifest: dict[str, Any],
    actions: np.ndarray,
    records: StageRecords,
    schedules: dict[str, np.ndarray],
    initial: np.ndarray | None = None,
    keep: int = 2,
) -> Path:
    """Write a checkpoint of ``records.last_stage`` into ``folder`` and name it in
    ``LATEST``; then remove all but the newest ``keep`` checkpoints.

    ``manifest`` is what the run records (JSON-friendly); the format, stage, seed and
    file digests are added here. Returns the checkpoint's path. (A population split over
    the processes of a distributed run is saved by
    :func:`jaxstage.checkpoint_parts.save_parts`, each process its own shards.)
    """
    folder = Path(folder)
    name = checkpoint_name(records.last_stage)
    staging = staging_path(folder, name, os.getpid())
    new_staging(folder, staging)
    with removed_on_failure(staging):
        _write(staging / "actions.npy", lambda f: np.save(f, np.asarray(actions)))
        target = finish_staging(
            folder,
            staging,
            name,
            manifest=manifest,
            records=records,
            schedules=schedules,
            initial=initial,
        )
    publish(folder, name, keep)
    return target


@contextlib.contextmanager
def removed_on_failure(staging: Path) -> Iterator[None]:
    """Remove the staging folder when writing it fails: a checkpoint is whole or absent
    (and a writer that is killed instead leaves it to :func:`publish`'s clean-up)."""
    try:
        yield
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove_dead_staging(folder: Path) -> None:
    """Remove the staging folders of writers that were killed (a ``finally`` does not
    run after SIGKILL): only this module's names, of processes of this host that are no
    longer alive, holding nothing but checkpoint files."""
    from jaxstage.results import _process_alive

    for entry in list(os.scandir(folder)):
        match = _STAGING.fullmatch(entry.name)
        dead = match is not None and not _process_alive(int(match[2]))
        if dead and entry.is_dir(follow_symlinks=False):
            _remove_checkpoint(Path(entry.path))


def latest(folder: str | os.PathLike[str]) -> Path:
    """The checkpoint ``LATEST`` names in ``folder``."""
    folder = Path(folder)
    pointer = folder / LATEST
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint folder at {str(folder)!r}")
    if not pointer.is_file():
        raise CheckpointError(
            f"{str(folder)!r} holds no complete checkpoint (no {LATEST} file): the run "
            "was stopped before its first checkpoint, or this is not a checkpoint folder"
        )
    name = pointer.read_text().strip()
    if not _NAME.fullmatch(name) or not (folder / name / MANIFEST).is_file():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint there")
    return folder / name


def remove(folder: str | os.PathLike[str]) -> None:
    """Remove a checkpoint folder's checkpoints, ``LATEST`` and interrupted writes, and
    the folder when nothing else is left in it (no other file is touched)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in list(os.scandir(folder)):
        path = Path(entry.path)
        if _NAME.fullmatch(entry.name) or _STAGING.fullmatch(entry.name):
            if entry.is_dir(follow_symlinks=False):
                _remove_checkpoint(path)
        elif entry.name == LATEST and entry.is_file(follow_symlinks=False):
            path.unlink()
    with contextlib.suppress(OSError):  # something else is in it: keep it
        folder.rmdir()


def read_manifest(folder: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The path and ``manifest.json`` of the checkpoint ``LATEST`` names in ``folder``
    (or of ``folder`` itself when it is a checkpoint), its files not read."""
    path = Path(folder)
    if not (path / MANIFEST).is_file() or not _NAME.fullmatch(path.name):
        path = latest(path)
    try:
        return path, json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path / MANIFEST}: {error}") from error


def load(folder: str | os.PathLike[str]) -> Checkpoint:
    """The checkpoint ``LATEST`` names in ``folder`` (or ``folder`` itself when it is a
    checkpoint), its files checked against the digests of its manifest."""
    path, manifest = read_manifest(folder)
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a jaxstage checkpoint")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {manifest.get('format_version')}; this jaxstage "
            f"reads format {FORMAT_VERSION}"
        )
    parted = "actions_parts" in manifest
    for file, digest in manifest["files"].items():
        if parted and PART.fullmatch(file):
            continue  # each process checks the parts it reads (checkpoint_parts)
        if not (path / file).is_file() or _sha256(path / file) != digest:
            raise CheckpointError(f"{path / file} is missing or does not match its manifest")
    if parted:
        from jaxstage.checkpoint_parts import ActionParts

        actions = ActionParts.of_checkpoint(path, manifest)
    else:
        # Memory-mapped: a resumed state is placed from it shard by shard, so a population
        # of 10**10 agents is not read into memory beside the devices' copy.
        actions = np.load(path / "actions.npy", mmap_mode="r", allow_pickle=False)
    with np.load(path / "records.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    batched = bool(manifest.get("batched", False))
    records = _unflatten_records(arrays, manifest["first_stage"], manifest["seed"], batched)
    if records.last_stage != manifest["stage"]:
        raise CheckpointError(f"{path}: records end at {records.last_stage}, not its stage")
    schedules = {k[len("schedule.") :]: v for k, v in arrays.items() if k.startswith("schedule.")}
    initial = None
    if (path / "initial.npy").is_file():
        initial = np.load(path / "initial.npy", allow_pickle=False)
    return Checkpoint(path, manifest, actions, records, schedules, initial)
