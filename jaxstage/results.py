"""Results on disk: tidy tables, configuration, summaries and a plot of a run.

A results folder written by :func:`write_results` holds

* ``results.csv``: one row per recorded state of each run (see :func:`result_rows`);
  with several runs the tables are concatenated and lead with ``run`` and ``label``
  columns;
* ``config.json``: ``{"runs": [config, ...]}``, the full configuration of every run
  (game, learner, population, seed, eps/delta, library versions);
* ``summary.json``: ``{"runs": [summary, ...]}``, per run the convergence round (or
  ``null``), the converged flag, the final distribution, eps-Nash gap and share at an
  eps-best reply;
* ``plot.png``: the distribution of stage actions over rounds (with the reference
  equilibrium dashed) and the share of agents at an eps-best reply against the
  ``1 - delta`` threshold, runs overlaid.

Folders are written atomically: everything is built in a hidden temporary sibling and
renamed into place at the end, so an interrupted write never leaves a folder that looks
complete. An existing non-empty folder is only replaced with ``overwrite=True``, and only
when it holds nothing but files this module writes (so a mistaken ``--out ~`` cannot
delete anything else). The folder check (:func:`check_output_folder`, run before any
simulation) also proves that the location is writable, by creating and removing an empty
probe folder, so a bad ``--out`` is reported before a long run rather than after it.

A folder given as a symbolic link is written *through* the link: the folder it points to
is replaced and the link kept (a link to nothing is refused).

A process killed while writing leaves its hidden staging folder
``.<name>.partial-<pid>-<host>-<hex>`` behind. The next write into the same parent folder
removes such leftovers, and only those: folders named that way by a process of this host
that is no longer alive, holding nothing but files jaxstage writes (a retired
``.<name>.old-...`` folder is removed only once ``<name>`` exists again, since until then it
may be the only copy of the earlier results). Anything else is never touched.

Example:
    >>> import tempfile, pathlib
    >>> import jaxstage as js
    >>> from jaxstage.results import result_rows, write_results
    >>> game = js.make_game("congestion", num_actions=3)
    >>> result = js.simulate(game, js.StageLearning(stage_length=5), 500, 2, seed=0)
    >>> len(result_rows(result))
    3
    >>> folder = write_results(result, pathlib.Path(tempfile.mkdtemp()) / "run", plot=False)
    >>> sorted(p.name for p in folder.iterdir())
    ['config.json', 'results.csv', 'summary.json']
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from jaxstage.best_reply import BestReplyResult
from jaxstage.games import GAMES
from jaxstage.simulation import SimulationResult, SweepResult

__all__ = [
    "RESULT_FILES",
    "result_rows",
    "run_summary",
    "run_labels",
    "table_rows",
    "best_reply_rows",
    "table_columns",
    "rows_to_frame",
    "write_results",
    "write_best_reply",
    "check_output_folder",
]

#: Every file name this module writes; an existing folder holding only these may be replaced.
RESULT_FILES = frozenset(
    {"results.csv", "config.json", "summary.json", "plot.png", "trajectory.csv"}
)

Results = SimulationResult | SweepResult | Sequence[SimulationResult]


# --------------------------------------------------------------------------- labels


def _column_safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", str(label))


def _unique_or_indices(names: Sequence[str] | None, size: int) -> list[str]:
    if names is None or len(names) != size:
        return [str(j) for j in range(size)]
    safe = [_column_safe(name) for name in names]
    return safe if len(set(safe)) == size else [str(j) for j in range(size)]


def _labels_of(result: SimulationResult) -> tuple[list[str], list[str]]:
    actions, types = result.config.get("action_names"), result.config.get("type_names")
    num_actions = result.distribution.shape[1]
    num_types = result.best_reply_fraction_by_type.shape[1]
    return _unique_or_indices(actions, num_actions), _unique_or_indices(types, num_types)


# --------------------------------------------------------------------------- rows


def _number(value: Any) -> Any:
    """A plain Python scalar; values that are exact float32 get their short float32 repr.

    Most metrics come off the device as float32; writing ``0.05`` rather than
    ``0.05000000074505806`` keeps the table readable and still round-trips the float32.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    if math.isfinite(value) and float(np.float32(value)) == value:
        return float(str(np.float32(value)))
    return value


def result_rows(result: SimulationResult) -> list[dict[str, Any]]:
    """The trajectory of one run as a tidy table: one row per recorded state.

    Row ``i`` describes the state after stage ``i`` (row 0 is the initial state, before
    any round). Columns, in order:

    * ``game``, ``num_agents``, ``info``, ``seed``: identify the run;
    * ``stage``, ``round`` (rounds played before this state), ``stage_length`` and
      ``explore_prob`` of the stage that led to it (NaN at stage 0);
    * ``dist_<action>``: distribution of stage actions (action names of the game where
      known, else indices);
    * ``played_<action>``: distribution of played actions (explorations included) in the
      stage's last round (NaN at stage 0);
    * ``best_reply_fraction`` and, for games with several types,
      ``best_reply_fraction_<type>``;
    * ``nash_gap``, ``welfare``, ``realized_mean_payoff`` and ``switched_fraction``
      (the last two NaN at stage 0);
    * ``distance_to_equilibrium`` when the run had a reference equilibrium;
    * ``in_equilibrium``: at least ``1 - delta`` of the agents at an eps-best reply.

    Args:
        result: a :class:`~jaxstage.SimulationResult`.

    Returns:
        A list of ``num_stages + 1`` dicts with the same keys, values plain Python
        ``str``/``int``/``float``/``bool`` (NaN marks a value that does not exist).
    """
    if not isinstance(result, SimulationResult):
        raise TypeError(f"result must be a SimulationResult, got {type(result).__name__}")
    config = result.config
    action_labels, type_labels = _labels_of(result)
    nan = float("nan")
    identity = {
        "game": config.get("game", {}).get("name", ""),
        "num_agents": config.get("num_agents"),
        "info": config.get("learner", {}).get("info", ""),
        "seed": config.get("seed"),
    }
    rows = []
    for i in range(len(result.rounds)):
        row: dict[str, Any] = dict(identity)
        row["stage"] = i
        row["round"] = int(result.rounds[i])
        row["stage_length"] = int(result.stage_length[i - 1]) if i > 0 else nan
        row["explore_prob"] = _number(result.explore_prob[i - 1]) if i > 0 else nan
        for j, label in enumerate(action_labels):
            row[f"dist_{label}"] = _number(result.distribution[i, j])
        for j, label in enumerate(action_labels):
            row[f"played_{label}"] = _number(result.played_distribution[i - 1, j]) if i else nan
        row["best_reply_fraction"] = _number(result.best_reply_fraction[i])
        if len(type_labels) > 1:
            for t, label in enumerate(type_labels):
                row[f"best_reply_fraction_{label}"] = _number(
                    result.best_reply_fraction_by_type[i, t]
                )
        row["nash_gap"] = _number(result.nash_gap[i])
        row["welfare"] = _number(result.welfare[i])
        row["realized_mean_payoff"] = _number(result.realized_mean_payoff[i - 1]) if i else nan
        row["switched_fraction"] = _number(result.switched_fraction[i - 1]) if i else nan
        if result.distance_to_equilibrium is not None:
            row["distance_to_equilibrium"] = _number(result.distance_to_equilibrium[i])
        row["in_equilibrium"] = bool(result.in_equilibrium[i])
        rows.append(row)
    return rows


def run_summary(result: SimulationResult) -> dict[str, Any]:
    """The headline numbers of one run, JSON-ready (what ``summary.json`` holds per run).

    Args:
        result: a :class:`~jaxstage.SimulationResult`.

    Returns:
        A dict: game, num_agents, info, seed, eps, delta, num_stages, total_rounds,
        converged, convergence_round and convergence_stage (``None`` when not converged),
        final_distribution, final_nash_gap, final_best_reply_fraction,
        final_distance_to_equilibrium (``None`` without a reference) and
        reference_equilibria.
    """
    config = result.config
    distance = result.distance_to_equilibrium
    return {
        "game": config.get("game", {}).get("name"),
        "num_agents": config.get("num_agents"),
        "info": config.get("learner", {}).get("info"),
        "seed": config.get("seed"),
        "eps": config.get("eps"),
        "delta": config.get("delta"),
        "num_stages": result.num_stages,
        "total_rounds": int(result.rounds[-1]),
        "converged": result.converged,
        "convergence_round": result.convergence_round,
        "convergence_stage": result.convergence_stage,
        "final_distribution": [_number(x) for x in result.distribution[-1]],
        "final_nash_gap": _number(result.nash_gap[-1]),
        "final_best_reply_fraction": _number(result.best_reply_fraction[-1]),
        "final_distance_to_equilibrium": None if distance is None else _number(distance[-1]),
        "reference_equilibria": config.get("reference_equilibria", []),
    }


_LABEL_KEYS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("info", lambda c: c.get("learner", {}).get("info")),
    ("n", lambda c: c.get("num_agents")),
    ("seed", lambda c: c.get("seed")),
    ("game", lambda c: c.get("game", {}).get("name")),
    ("tau", lambda c: c.get("learner", {}).get("stage_length")),
    ("explore", lambda c: c.get("learner", {}).get("explore_prob")),
    ("update", lambda c: c.get("learner", {}).get("update_prob")),
    ("sample", lambda c: c.get("learner", {}).get("info_sample_size")),
    ("noise", lambda c: c.get("learner", {}).get("info_noise_std")),
    ("stages", lambda c: c.get("num_stages")),
)


def run_labels(results: Sequence[SimulationResult]) -> list[str]:
    """Short labels telling runs apart, e.g. ``["info=none", "info=payoffs"]``.

    Uses the first of info mode, population, seed, game, stage length, exploration,
    inertia, sample size, noise and number of stages that differ between the runs, adding
    more until the labels are unique; ``"run i"`` when nothing tells them apart.

    Args:
        results: the runs.

    Returns:
        One label per run.
    """
    configs = [r.config for r in results]
    if len(configs) == 1:
        return [f"info={configs[0].get('learner', {}).get('info')}"]
    chosen: list[tuple[str, Callable[[dict[str, Any]], Any]]] = []
    for key, get in _LABEL_KEYS:
        if len({json.dumps(get(c), default=str) for c in configs}) > 1:
            chosen.append((key, get))
            labels = [", ".join(f"{k}={g(c)}" for k, g in chosen) for c in configs]
            if len(set(labels)) == len(labels):
                return labels
    return [f"run {i}" for i in range(len(configs))]


# --------------------------------------------------------------------------- writing


def _json_ready(value: Any) -> Any:
    """Recursively convert numpy values to Python ones and non-finite floats to ``None``."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(_json_ready(data), handle, indent=2, allow_nan=False)
        handle.write("\n")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _csv_cell(value: Any) -> Any:
    if _missing(value):
        return ""  # read back as NaN by pandas, as a missing value by everything else
    if isinstance(value, float):
        return repr(value)
    return value


def table_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The columns of a table: the union of the rows' keys, in order of first appearance."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _column_dtype(values: Sequence[Any]) -> str | None:
    """The pandas dtype of a column of plain values; ``None`` lets pandas decide (text)."""
    present = [v for v in values if not _missing(v)]
    if present and all(isinstance(v, bool) for v in present):
        return "bool" if len(present) == len(values) else "boolean"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        # Integers with a missing entry (stage_length at stage 0) stay integers.
        return "int64" if len(present) == len(values) else "Int64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float64"
    return None


def rows_to_frame(rows: Sequence[dict[str, Any]]) -> Any:
    """A tidy table as a pandas ``DataFrame``: the columns of :func:`table_columns`.

    Integer columns are ``int64`` (nullable ``Int64`` when a value is missing), real ones
    ``float64`` (NaN where missing), flags ``bool``, names pandas' text dtype.

    Args:
        rows: the rows (e.g. :func:`table_rows`).

    Returns:
        A ``pandas.DataFrame`` with one row per row.

    Raises:
        ImportError: pandas is not installed.
    """
    try:
        import pandas as pd
    except ImportError as error:
        raise ImportError('to_frame needs pandas: pip install "jaxstage[frame]"') from error
    columns = table_columns(rows)
    data = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        dtype = _column_dtype(values)
        if dtype in ("Int64", "boolean"):  # nullable dtypes take None, not NaN
            values = [None if _missing(v) else v for v in values]
        data[column] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(data, columns=columns)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = table_columns(rows)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_cell(value) for key, value in row.items()})


def _folder_path(folder: str | os.PathLike[str]) -> Path:
    """``folder`` as a path, refusing names that cannot be a results folder.

    ``Path("")`` is the current folder, so an empty name would silently write (or refuse
    to write) somewhere the user did not name; ``.`` and ``..`` have no name of their own
    for the hidden staging sibling, which would land inside the target itself.
    """
    text = os.fspath(folder)
    if not isinstance(text, str):
        raise TypeError(f"output folder must be a str or path, got {folder!r}")
    if text == "":
        raise ValueError("output folder must name a folder, got an empty string ''")
    path = Path(text)
    if path.name in ("", ".", ".."):
        raise ValueError(
            f"output folder must end in a folder name, got {text!r}; name the folder itself "
            f"(e.g. {os.path.join(text, 'run')!r})"
        )
    return path


def _link_target(path: Path) -> Path:
    """The folder that a write to ``path`` really creates or replaces.

    ``path`` itself, or for a symbolic link the folder it points to: a link is kept and
    written through (replacing the link by a folder would leave the linked folder stale
    and surprise whoever set the link up). A link to nothing is refused, since writing
    would create its target somewhere the user may not expect (an unmounted disk).
    """
    if not path.is_symlink():
        return path
    real = Path(os.path.realpath(path))
    if not real.exists():
        raise ValueError(
            f"output folder {str(path)!r} is a symbolic link to {str(real)!r}, which does "
            f"not exist; create that folder or remove the link"
        )
    return real


def _named(path: Path, real: Path) -> str:
    """``'path'``, or ``'path' (a link to 'real')`` when a link is written through."""
    return repr(str(path)) if path == real else f"{str(path)!r} (a link to {str(real)!r})"


def _host_tag() -> str:
    """8 hex digits naming this host, so stale-folder cleanup only judges local PIDs."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _new_tag() -> str:
    """``<pid>-<host>-<hex>``: unique, and enough to tell later whether its writer lives."""
    return f"{os.getpid()}-{_host_tag()}-{uuid.uuid4().hex[:8]}"


#: Hidden folders :func:`_atomic_folder` and :func:`_check_writable` make: a staging folder
#: (``partial``), a retired previous folder (``old``) or a write probe. Folders of versions
#: before the host tag have no ``<host>``.
_OWN_NAME = re.compile(
    r"\.(?:(?P<name>.+)\.(?P<kind>partial|old)|jaxstage-(?P<probe>probe))"
    r"-(?P<pid>\d+)-(?:(?P<host>[0-9a-f]{8})-)?[0-9a-f]{8}"
)


def _check_writable(folder: Path, where: Path) -> None:
    """Prove that a folder can be made in ``where`` (or, when it does not exist yet, in its
    nearest existing ancestor, under which it will be created) before any simulation runs.

    Permission bits alone cannot tell (read-only mounts, ``/proc``, ACLs, running as root),
    so an empty, uniquely named probe folder is created and removed there: exactly the
    operation the write makes at the end, when a failure would lose the whole run.

    Raises:
        ValueError: naming ``folder``, the location and the reason.
    """
    ancestor = where
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(
            f"cannot write output folder {str(folder)!r}: {str(ancestor)!r} is not a folder"
        )
    probe = ancestor / f".jaxstage-probe-{_new_tag()}"
    try:
        probe.mkdir()
    except OSError as error:
        raise ValueError(
            f"cannot write output folder {str(folder)!r}: cannot create a folder in "
            f"{str(ancestor)!r} ({error.strerror or error})"
        ) from None
    with contextlib.suppress(OSError):  # just made and empty; else a later write removes it
        probe.rmdir()


def check_output_folder(folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check that results may be written to ``folder``; call it before a long run.

    Args:
        folder: the results folder to be written (a symbolic link is written through:
            the folder it points to is checked and replaced, the link kept).
        overwrite: allow replacing an existing non-empty folder.

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``folder`` is empty, ``.`` or ``..``, a file, a link to nothing, or a
            non-empty folder and ``overwrite`` is false, or it holds something other than
            result files (never replaced), or its location is not writable (a read-only
            or virtual file system, a path under a regular file, no permission).
    """
    path = _folder_path(folder)
    real = _link_target(path)
    if real.exists() and not real.is_dir():
        raise ValueError(f"output folder {_named(path, real)} exists and is not a folder")
    if real.is_dir():
        entries = sorted(entry.name for entry in real.iterdir())
        if entries and not overwrite:
            raise ValueError(
                f"output folder {_named(path, real)} already exists and is not empty; "
                f"pass overwrite=True (--overwrite) or choose another folder"
            )
        foreign = [
            name
            for name in entries
            if name not in RESULT_FILES or (real / name).is_symlink() or not (real / name).is_file()
        ]
        if foreign:
            raise ValueError(
                f"refusing to replace output folder {_named(path, real)}: it holds "
                f"{foreign[:5]}, which are not jaxstage result files "
                f"({', '.join(sorted(RESULT_FILES))})"
            )
    _check_writable(path, real.parent)
    return path


def _jaxstage_files() -> frozenset[str]:
    """Every file name a results or study folder may hold (imported late: no cycle)."""
    from jaxstage.study import STUDY_FILES

    return RESULT_FILES | STUDY_FILES


def _remove_if_only(folder: Path, allowed: frozenset[str]) -> list[str]:
    """Delete ``folder`` if it holds nothing but plain files named in ``allowed``.

    Returns the entries that are not such files, in which case nothing is deleted: a
    folder jaxstage made can only hold files jaxstage wrote, so anything else means it is
    not (only) ours. Files are unlinked one by one (no recursive delete that could follow
    into something unexpected).
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    foreign = sorted(
        entry.name
        for entry in entries
        if entry.name not in allowed or not entry.is_file(follow_symlinks=False)
    )
    if foreign:
        return foreign
    try:
        for entry in entries:
            os.unlink(entry.path)
        folder.rmdir()
    except OSError:
        pass  # something appeared meanwhile, or no permission: keep the rest
    return []


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still be running (when unsure: yes)."""
    if os.name != "posix" or pid <= 0 or pid == os.getpid():
        return True  # os.kill(pid, 0) terminates the process on Windows; never risk it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def _remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the hidden folders interrupted writes of dead processes left in ``parent``.

    A kill during the final write leaves its staging folder behind (a ``finally`` cannot
    run after ``SIGKILL``); without this, every such kill would leave one for good. Only
    folders named as this module names them (:data:`_OWN_NAME`), written on this host by
    a process that is no longer alive, that are real folders holding nothing but files
    jaxstage writes are removed. A retired ``old`` folder is removed only when the folder
    it was retired from exists again: before that it may be the only copy of the earlier
    results. A probe folder is removed only when empty.

    Returns:
        The folders removed.
    """
    host, removed = _host_tag(), []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = _OWN_NAME.fullmatch(entry.name)
        if match is None or match["host"] not in (None, host):
            continue
        if not entry.is_dir(follow_symlinks=False) or _process_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        if match["kind"] == "old" and not os.path.lexists(parent / match["name"]):
            continue
        allowed = frozenset() if match["probe"] else _jaxstage_files()
        if not _remove_if_only(path, allowed) and not os.path.lexists(path):
            removed.append(path)
    return removed


@contextmanager
def _atomic_folder(
    folder: str | os.PathLike[str],
    overwrite: bool,
    check: Callable[..., Path] = check_output_folder,
    allowed: frozenset[str] = RESULT_FILES,
) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; rename it to ``folder`` on success.

    On any exception the temporary folder is removed and ``folder`` is left as it was.
    An existing ``folder`` is moved aside, the new one renamed in, then the old removed,
    so a complete-looking folder is always either the old or the new one. ``check`` is
    the folder check (``check(folder, overwrite=...)``), run before and at the end;
    ``allowed`` the file names it accepts, the only ones deleted from the old folder.
    A symbolic link is written through (:func:`_link_target`). Staging folders that
    killed writes left in the same parent are cleaned up first
    (:func:`_remove_stale_staging`).
    """
    target = check(folder, overwrite=overwrite)
    real = _link_target(target)
    real.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(real.parent)
    tag = _new_tag()
    staging = real.parent / f".{real.name}.partial-{tag}"
    staging.mkdir()
    try:
        yield staging
        check(target, overwrite=overwrite)  # nothing appeared meanwhile
        if real.is_dir() and any(real.iterdir()):
            retired = real.parent / f".{real.name}.old-{tag}"
            os.replace(real, retired)
            try:
                os.replace(staging, real)
            except BaseException:
                os.replace(retired, real)
                raise
            foreign = _remove_if_only(retired, allowed)
            if foreign:  # appeared after the check: keep them, and say where
                warnings.warn(
                    f"kept the previous {str(real)!r} as {str(retired)!r}: it holds "
                    f"{foreign[:5]}, which jaxstage did not write",
                    RuntimeWarning,
                    stacklevel=3,
                )
        else:
            os.replace(staging, real)  # rename(2) replaces an empty directory
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # made just above: only ours inside
        raise


def _as_runs(result_or_results: Results) -> tuple[list[SimulationResult], bool]:
    if isinstance(result_or_results, SimulationResult):
        return [result_or_results], False
    if isinstance(result_or_results, SweepResult):
        runs = list(result_or_results.runs)
    elif isinstance(result_or_results, Sequence) and not isinstance(result_or_results, str):
        runs = list(result_or_results)
    else:
        raise TypeError(
            "write_results needs a SimulationResult, a SweepResult or a sequence of "
            f"SimulationResult, got {type(result_or_results).__name__}"
        )
    if not runs:
        raise ValueError("write_results needs at least one run")
    for run in runs:
        if not isinstance(run, SimulationResult):
            raise TypeError(f"every run must be a SimulationResult, got {type(run).__name__}")
    return runs, True


def table_rows(
    result_or_results: Results, *, labels: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The tidy table of ``results.csv``: :func:`result_rows` of each run, concatenated.

    Args:
        result_or_results: a :class:`~jaxstage.SimulationResult`, a
            :class:`~jaxstage.SweepResult` or a sequence of results; several runs lead
            every row with ``run`` (the index) and ``label`` columns.
        labels: one label per run; default :func:`run_labels`.

    Returns:
        The rows, dicts of plain Python values (NaN marks a value that does not exist).

    Raises:
        TypeError: not a result, or a sequence holding something else.
        ValueError: no runs, or the labels do not match the runs.
    """
    runs, several = _as_runs(result_or_results)
    labels = run_labels(runs) if labels is None else [str(label) for label in labels]
    if len(labels) != len(runs):
        raise ValueError(f"labels has {len(labels)} entries for {len(runs)} runs")
    rows: list[dict[str, Any]] = []
    for index, (run, label) in enumerate(zip(runs, labels, strict=True)):
        for row in result_rows(run):
            rows.append({"run": index, "label": label, **row} if several else row)
    return rows


def best_reply_rows(
    result: BestReplyResult, *, record_every: int | None = None
) -> list[dict[str, Any]]:
    """The tidy table of ``trajectory.csv``: one row per recorded count vector.

    Columns ``record``, ``step`` (when the recording interval is known), then
    ``dist_<action>``.

    Args:
        result: the :class:`~jaxstage.BestReplyResult`.
        record_every: the ``record_every`` the dynamics ran with; default:
            ``result.config["record_every"]`` if recorded, else no ``step`` column.

    Returns:
        The rows, dicts of plain Python values.

    Raises:
        TypeError: ``result`` is not a :class:`~jaxstage.BestReplyResult`.
    """
    if not isinstance(result, BestReplyResult):
        raise TypeError(f"result must be a BestReplyResult, got {type(result).__name__}")
    config = result.config
    record_every = config.get("record_every") if record_every is None else record_every
    labels = _unique_or_indices(config.get("action_names"), result.distribution.shape[0])
    rows = []
    for index, distribution in enumerate(np.asarray(result.trajectory)):
        row: dict[str, Any] = {"record": index}
        if record_every is not None:
            row["step"] = index * int(record_every)
        for label, value in zip(labels, distribution, strict=True):
            row[f"dist_{label}"] = _number(value)
        rows.append(row)
    return rows


def write_results(
    result_or_results: Results,
    folder: str | os.PathLike[str],
    *,
    plot: bool = True,
    overwrite: bool = False,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write one run or several into a results folder, atomically.

    Args:
        result_or_results: a :class:`~jaxstage.SimulationResult`, a
            :class:`~jaxstage.SweepResult` or a sequence of results (several runs get
            ``run`` and ``label`` columns in ``results.csv`` and are overlaid in the plot).
        folder: the folder to create (parents are created as needed).
        plot: also write ``plot.png``.
        overwrite: replace an existing non-empty folder (only one holding nothing but
            result files, see :data:`RESULT_FILES`).
        labels: one label per run for the table and the plot legend; default
            :func:`run_labels`.

    Returns:
        The folder written.

    Raises:
        ValueError: the folder fails :func:`check_output_folder` (exists and is not empty
            without ``overwrite``, holds other files, cannot be written there), or the
            labels do not match the runs.
    """
    runs, _ = _as_runs(result_or_results)
    rows = table_rows(result_or_results, labels=labels)
    labels = run_labels(runs) if labels is None else [str(label) for label in labels]
    summaries = [{"run": i, "label": labels[i], **run_summary(r)} for i, r in enumerate(runs)]
    with _atomic_folder(folder, overwrite) as staging:
        _write_csv(staging / "results.csv", rows)
        _write_json(staging / "config.json", {"runs": [run.config for run in runs]})
        _write_json(staging / "summary.json", {"num_runs": len(runs), "runs": summaries})
        if plot:
            _plot_runs(runs, labels, staging / "plot.png")
    return Path(folder)


def write_best_reply(
    result: BestReplyResult,
    folder: str | os.PathLike[str],
    *,
    record_every: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the outcome of :func:`~jaxstage.best_reply_dynamics` into a folder, atomically.

    Writes ``summary.json`` (converged, cycled, steps, final counts, distribution and gap,
    reference equilibria of the game where known, configuration), ``config.json`` and
    ``trajectory.csv`` (columns ``record``, ``step`` when the recording interval is known,
    then ``dist_<action>``).

    Args:
        result: the :class:`~jaxstage.BestReplyResult`.
        folder: the folder to create.
        record_every: the ``record_every`` the dynamics ran with (for the ``step``
            column); default: ``result.config["record_every"]`` if recorded, else no
            ``step`` column.
        overwrite: replace an existing non-empty folder of result files.

    Returns:
        The folder written.
    """
    rows = best_reply_rows(result, record_every=record_every)
    config = result.config
    summary = {
        "converged": result.converged,
        "cycled": result.cycled,
        "steps": result.steps,
        "final_counts": np.asarray(result.counts).tolist(),
        "final_distribution": [_number(x) for x in result.distribution],
        "nash_gap": _number(result.nash_gap),
        "reference_equilibria": _reference_equilibria(config.get("game", {})),
        "config": config,
    }
    with _atomic_folder(folder, overwrite) as staging:
        _write_csv(staging / "trajectory.csv", rows)
        _write_json(staging / "summary.json", summary)
        _write_json(staging / "config.json", config)
    return Path(folder)


def _reference_equilibria(game_config: dict[str, Any]) -> list[list[float]]:
    name = game_config.get("name")
    if name not in GAMES or game_config.get("custom"):
        return []
    try:
        game = GAMES[name](**{k: v for k, v in game_config.items() if k != "name"})
    except Exception:  # noqa: BLE001 - informative only
        return []
    return [np.asarray(e, dtype=np.float64).tolist() for e in game.equilibria()]


# --------------------------------------------------------------------------- plot

_RUN_STYLES = ("-", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))


def _nearest_equilibrium(result: SimulationResult) -> np.ndarray | None:
    refs = result.config.get("reference_equilibria") or []
    if not refs:
        return None
    refs_array = np.asarray(refs, dtype=np.float64)
    distance = np.abs(refs_array - result.distribution[-1][None]).sum(axis=1)
    return refs_array[int(np.argmin(distance))]


def _plot_runs(runs: Sequence[SimulationResult], labels: Sequence[str], path: Path) -> None:
    """Two panels: distribution of stage actions, and share at an eps-best reply."""
    # The object-oriented API with an explicit Agg canvas: no pyplot, no global backend
    # switch, so writing results never disturbs an interactive matplotlib session.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    first = runs[0]
    action_labels, _ = _labels_of(first)
    num_actions = len(action_labels)
    figure = Figure(figsize=(9, 7), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    palette = [f"C{j % 10}" for j in range(num_actions)]
    # Runs get colours the action palette does not start with (black first).
    run_colors = ["black", *(f"C{(num_actions + i) % 10}" for i in range(len(runs) - 1))]

    for index, run in enumerate(runs):
        style = _RUN_STYLES[index % len(_RUN_STYLES)]
        for j in range(num_actions):
            top.plot(run.rounds, run.distribution[:, j], color=palette[j], linestyle=style)
        bottom.plot(
            run.rounds,
            run.best_reply_fraction,
            color=run_colors[index],
            linestyle="-" if len(runs) > 1 else style,
            label=f"{labels[index]}: "
            + (
                f"converged at round {run.convergence_round:,}"
                if run.convergence_round is not None
                else "not converged"
            ),
        )
        if run.convergence_round is not None:
            bottom.axvline(run.convergence_round, color=run_colors[index], linewidth=0.8, alpha=0.6)
    equilibrium = _nearest_equilibrium(first)
    if equilibrium is not None:
        for j in range(num_actions):
            top.axhline(equilibrium[j], color=palette[j], linestyle="--", linewidth=1, alpha=0.7)

    handles = [Line2D([], [], color=palette[j], label=action_labels[j]) for j in range(num_actions)]
    if equilibrium is not None:
        handles.append(Line2D([], [], color="gray", linestyle="--", label="equilibrium"))
    if len(runs) > 1:
        handles += [
            Line2D([], [], color="gray", linestyle=_RUN_STYLES[i % len(_RUN_STYLES)], label=label)
            for i, label in enumerate(labels)
        ]
    top.legend(handles=handles, fontsize="small", ncol=2, loc="best")
    top.set_ylabel("share of agents (stage action)")
    top.set_ylim(-0.02, 1.02)

    deltas = sorted({float(run.config.get("delta", 0.05)) for run in runs})
    for delta in deltas:
        bottom.axhline(
            1 - delta, color="gray", linestyle="--", linewidth=1, label=f"1 - delta = {1 - delta:g}"
        )
    epsilons = sorted({run.config.get("eps") for run in runs}, key=str)
    eps_text = ", ".join(f"{e:g}" if isinstance(e, (int, float)) else str(e) for e in epsilons)
    bottom.set_ylabel(f"share at an eps-best reply (eps={eps_text})")
    bottom.set_xlabel("round")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(fontsize="small", loc="lower right")

    longest = [float(run.rounds[-1]) for run in runs if run.rounds[-1] > 0]
    if longest and max(longest) >= 5 * min(longest):
        # Runs of very different lengths: linear up to the shortest first stage, log above.
        first_stage = min(float(run.rounds[1]) for run in runs)
        bottom.set_xscale("symlog", linthresh=max(first_stage, 1.0))

    config = first.config
    figure.suptitle(
        f"{config.get('game', {}).get('name', 'game')}, {config.get('num_agents', 0):,} agents"
    )
    figure.savefig(path, dpi=120)
