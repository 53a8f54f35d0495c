"""Checkpoints of a population split over the processes of a distributed run: each
process writes the shards it holds, and reads back only the agents it will hold.

Gathering a population of 10^10 agents into one process to write it would need 10 GB
more on that host at every checkpoint. Instead, in a checkpoint of a distributed run the
stage actions are one file per shard, ``actions.part-<start>-<stop>.npy`` with agents
``[start, stop)`` (a sweep's with every row), written and hashed by the process holding the
shard; process 0 writes the rest (records, manifest) as for one process
(:mod:`jaxstage.checkpoint`), after a barrier, and the manifest lists the parts. The parts
cover the population whatever the layout, so a checkpoint written by ``P`` processes is
read by any number: :class:`ActionParts` reads (and checks against its digest) only the
parts overlapping what is asked for.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxstage import checkpoint, distributed
from jaxstage.checkpoint import CheckpointError

__all__ = ["ActionParts", "part_name", "save_parts", "is_split_over_processes"]


def part_name(start: int, stop: int) -> str:
    return f"actions.part-{start:013d}-{stop:013d}.npy"


def is_split_over_processes(actions: Any) -> bool:
    """Whether ``actions`` (a state's) has shards on other processes."""
    return isinstance(actions, jax.Array) and not actions.is_fully_addressable


def _own_parts(actions: jax.Array, num_agents: int) -> list[tuple[int, int, np.ndarray]]:
    """This process's shards as ``(start, stop, data)`` over the real agents (one copy of
    each: replicas other than the first are skipped)."""
    parts = []
    for shard in actions.addressable_shards:
        if shard.replica_id != 0:
            continue
        *rows, agents = shard.index
        if any(r != slice(None) and (r.start, r.stop) != (None, None) for r in rows):
            raise ValueError("a checkpoint's parts split agents only, not rows")
        start = agents.start or 0
        stop = min(agents.stop if agents.stop is not None else num_agents, num_agents)
        if start < stop:
            parts.append((start, stop, np.asarray(shard.data)[..., : stop - start]))
    return parts


def save_parts(
    folder: str | os.PathLike[str],
    *,
    manifest: dict[str, Any],
    actions: jax.Array,
    num_agents: int,
    dtype: np.dtype,
    records,
    schedules: dict[str, np.ndarray],
    initial: np.ndarray | None,
    keep: int,
    writer_pid: int,
) -> None:
    """:func:`jaxstage.checkpoint.save` for ``actions`` split over the processes (a
    collective: every process calls it). ``writer_pid`` is process 0's pid, whose staging
    folder every process writes its parts into."""
    folder = Path(folder)
    name = checkpoint.checkpoint_name(records.last_stage)
    staging = checkpoint.staging_path(folder, name, writer_pid)
    main = distributed.is_main_process()
    if main:
        checkpoint.new_staging(folder, staging)
    distributed.barrier(f"jaxstage-{name}-staging")
    written = {}
    for start, stop, data in _own_parts(actions, num_agents):
        data = data.astype(dtype, copy=False)
        file = part_name(start, stop)
        checkpoint._write(staging / file, lambda f, data=data: np.save(f, data))
        written[file] = checkpoint._sha256(staging / file)
    digests: dict[str, str] = {}
    for theirs in distributed.allgather_objects(written):  # also the barrier: every part is written
        digests.update(theirs)
    if main:
        shape = [*actions.shape[:-1], num_agents]
        parts = sorted(digests)
        full = {**manifest, "actions_parts": parts, "actions_shape": shape}
        full["actions_dtype"] = np.dtype(dtype).name
        with checkpoint.removed_on_failure(staging):
            checkpoint.finish_staging(
                folder,
                staging,
                name,
                manifest=full,
                records=records,
                schedules=schedules,
                initial=initial,
                digests=digests,
            )
        checkpoint.publish(folder, name, keep)


@dataclasses.dataclass(frozen=True)
class ActionParts:
    """The stage actions of a checkpoint written in parts, read on demand.

    ``shape`` is ``(num_agents,)`` or a sweep's ``(rows, num_agents)``; :meth:`read` gives
    agents ``[start, stop)``; ``np.asarray(parts)`` all of them."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    parts: tuple[tuple[str, int, int, str], ...]  # (file, start, stop, sha256)

    @classmethod
    def of_checkpoint(cls, path: Path, manifest: dict[str, Any]) -> ActionParts:
        parts = []
        for file in manifest["actions_parts"]:
            match = checkpoint.PART.fullmatch(file)
            if match is None or file not in manifest["files"]:
                raise CheckpointError(f"{path}: {file!r} is not an actions part it lists")
            parts.append((file, int(match[1]), int(match[2]), manifest["files"][file]))
        parts.sort(key=lambda part: part[1])
        shape = tuple(int(x) for x in manifest["actions_shape"])
        covered = 0
        for _, start, stop, _ in parts:
            if start != covered:
                raise CheckpointError(f"{path}: its action parts leave a gap at agent {covered}")
            covered = stop
        if covered != shape[-1]:
            raise CheckpointError(f"{path}: its action parts end at {covered}, not {shape[-1]}")
        return cls(path, shape, np.dtype(manifest["actions_dtype"]), tuple(parts))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Agents ``[start, stop)`` (every row), each part read checked against its digest."""
        out = np.empty((*self.shape[:-1], stop - start), self.dtype)
        for file, first, last, digest in self.parts:
            low, high = max(start, first), min(stop, last)
            if low >= high:
                continue
            path = self.path / file
            if not path.is_file() or checkpoint._sha256(path) != digest:
                raise CheckpointError(f"{path} is missing or does not match its manifest")
            data = np.load(path, allow_pickle=False, mmap_mode="r")
            if data.shape != (*self.shape[:-1], last - first):
                raise CheckpointError(f"{path} has shape {data.shape}, not its manifest's")
            out[..., low - start : high - start] = data[..., low - first : high - first]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.read(0, self.shape[-1])
        return array if dtype is None else array.astype(dtype)


def placed(actions: ActionParts | np.ndarray, padded: int, sharding, dtype) -> jax.Array:
    """A checkpoint's actions padded to ``padded`` agents, as ``dtype``, laid out with
    ``sharding``: each process reads only the agents of its own shards."""
    shape = (*actions.shape[:-1], padded)
    n = actions.shape[-1]

    def shard(index) -> np.ndarray:
        *rows, agents = index
        start, stop = agents.start or 0, agents.stop if agents.stop is not None else padded
        out = np.zeros((*shape[:-1], stop - start), dtype)
        if start < n:
            real = min(stop, n)
            if isinstance(actions, ActionParts):
                out[..., : real - start] = actions.read(start, real)
            else:
                out[..., : real - start] = actions[..., start:real]
        return out[tuple(rows)] if rows else out

    return jax.make_array_from_callback(shape, sharding, shard)
