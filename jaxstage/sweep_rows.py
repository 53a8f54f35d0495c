"""A sweep's rows dealt over the processes of a distributed run.

When a sweep's rows are small populations, splitting each over every device of every
process would pay a cross-process reduction per round for little work. Instead each
process runs a contiguous share of the rows on its own devices, with no collective, and
the results are gathered at the end: every process gets the whole
:class:`~jaxstage.records.SweepResult`. Row ``i`` is bitwise what a one-process sweep
gives: the rows are checked and the kernel and exploration path resolved on the whole
sweep first (the path is chosen from every row), then each process plans only its rows
with the whole sweep's round buffer (sums over a stage's rounds depend, in their last
bit, on its length; the numbers do not depend on the block size or the devices).
"""

from __future__ import annotations

import jax

from jaxstage import distributed
from jaxstage.engine import run_to_end
from jaxstage.records import SweepResult
from jaxstage.sweeps import SWEPT, Sweep

__all__ = ["DISTRIBUTE_MODES", "choose_mode", "row_share", "sweep_rows_over_processes"]

#: ``jaxstage.sweep(distribute=...)``: ``"agents"`` splits every row's population over
#: every device of every process; ``"rows"`` deals the rows to the processes; ``"auto"``
#: takes ``"rows"`` in a distributed run when there are at least as many rows as
#: processes and nothing is checkpointed.
DISTRIBUTE_MODES = ("auto", "agents", "rows")

#: A sweep's own memory check of all its rows on one host is skipped for the validation
#: of the whole sweep in rows mode: each process checks its own rows.
_UNCHECKED = 2**62


def choose_mode(distribute: str, num_rows: int, checkpointed: bool) -> str:
    """``"agents"`` or ``"rows"`` (see :data:`DISTRIBUTE_MODES`); one process: agents."""
    if distribute not in DISTRIBUTE_MODES:
        raise ValueError(f"distribute must be one of {DISTRIBUTE_MODES}, got {distribute!r}")
    processes = jax.process_count()
    if distribute == "rows" and checkpointed:
        raise ValueError(
            "distribute='rows' cannot checkpoint (each process holds other rows): use "
            "distribute='agents' with checkpoint_dir"
        )
    if distribute == "auto":
        rows = processes > 1 and num_rows >= processes and not checkpointed
        return "rows" if rows else "agents"
    return "agents" if processes == 1 else distribute


def row_share(num_rows: int, process: int, processes: int) -> range:
    """The contiguous rows process ``process`` of ``processes`` runs (sizes differ by at
    most one; a process may have none when rows are fewer than processes)."""
    return range(process * num_rows // processes, (process + 1) * num_rows // processes)


def sweep_rows_over_processes(
    whole: Sweep, *, progress: bool, memory_limit_bytes: int | None, block_size, devices
) -> SweepResult:
    """The result of the sweep ``whole`` (checked and resolved on every row, its memory
    unchecked), each process running its :func:`row_share` on its own devices."""
    share = row_share(whole.num_rows, jax.process_index(), jax.process_count())
    runs = []
    if len(share):
        arguments = dict(whole.arguments)
        sliced = {
            name: None if arguments[name] is None else arguments[name][share.start : share.stop]
            for name in ("game_params", *SWEPT)
        }
        arguments.update(sliced, seeds=arguments["seeds"][share.start : share.stop])
        with distributed.process_local():
            mine = Sweep(
                whole.game,
                whole.learner,
                **arguments,
                memory_limit_bytes=memory_limit_bytes,
                block_size=block_size,
                devices=devices,
                longest_stage=whole.spec.max_stage_length if whole.spec.kernel == "fast" else None,
            )
            _, records = run_to_end(
                mine.pipeline, mine.init(), progress=progress, restart=lambda: (mine.init(), None)
            )
            runs = mine.result(records).runs
    gathered = distributed.allgather_objects(runs)
    return SweepResult([run for process_runs in gathered for run in process_runs])


def validating_limit() -> int:
    """The memory limit of the whole sweep built only to check and resolve its rows."""
    return _UNCHECKED
