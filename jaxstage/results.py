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

Folders are written atomically, and an existing one is replaced only when it holds
nothing but files this module writes (:data:`RESULT_FILES`), so a mistaken ``--out ~``
cannot delete anything else; a symbolic link is written through. The folder check
(:func:`check_output_folder`, run before any simulation) also proves that the location
is writable. How, and how leftovers of killed writes are cleaned up: :mod:`jaxstage.folders`.
The plot is drawn by :func:`jaxstage.results_plot.plot_runs`.

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

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxstage import folders
from jaxstage.best_reply import BestReplyResult
from jaxstage.games import GAMES
from jaxstage.simulation import SimulationResult, SweepResult
from jaxstage.tables import is_missing, plain_number, table_columns, write_csv

# checkpoint.py imports it from here (whether a staging folder's writer is still alive).
_process_alive = folders.process_alive

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

#: A results folder, for the checks of :mod:`jaxstage.folders`.
RESULTS_FOLDER = folders.FolderKind(
    files=RESULT_FILES,
    files_label="jaxstage result files",
    replace_verb="replace output folder",
    not_empty="already exists and is not empty",
)

#: ``results.csv`` has always ended its lines in CRLF (the csv module's default); kept, so
#: a folder written again compares equal byte for byte.
_LINE_END = "\r\n"

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
        row["explore_prob"] = plain_number(result.explore_prob[i - 1]) if i > 0 else nan
        for j, label in enumerate(action_labels):
            row[f"dist_{label}"] = plain_number(result.distribution[i, j])
        for j, label in enumerate(action_labels):
            row[f"played_{label}"] = (
                plain_number(result.played_distribution[i - 1, j]) if i else nan
            )
        row["best_reply_fraction"] = plain_number(result.best_reply_fraction[i])
        if len(type_labels) > 1:
            for t, label in enumerate(type_labels):
                row[f"best_reply_fraction_{label}"] = plain_number(
                    result.best_reply_fraction_by_type[i, t]
                )
        row["nash_gap"] = plain_number(result.nash_gap[i])
        row["welfare"] = plain_number(result.welfare[i])
        row["realized_mean_payoff"] = plain_number(result.realized_mean_payoff[i - 1]) if i else nan
        row["switched_fraction"] = plain_number(result.switched_fraction[i - 1]) if i else nan
        if result.distance_to_equilibrium is not None:
            row["distance_to_equilibrium"] = plain_number(result.distance_to_equilibrium[i])
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
        "final_distribution": [plain_number(x) for x in result.distribution[-1]],
        "final_nash_gap": plain_number(result.nash_gap[-1]),
        "final_best_reply_fraction": plain_number(result.best_reply_fraction[-1]),
        "final_distance_to_equilibrium": None if distance is None else plain_number(distance[-1]),
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


def _column_dtype(values: Sequence[Any]) -> str | None:
    """The pandas dtype of a column of plain values; ``None`` lets pandas decide (text)."""
    present = [v for v in values if not is_missing(v)]
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
            values = [None if is_missing(v) else v for v in values]
        data[column] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(data, columns=columns)


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
    return folders.check_folder(folder, RESULTS_FOLDER, overwrite=overwrite)


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
            row[f"dist_{label}"] = plain_number(value)
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
    with folders.atomic_folder(folder, overwrite, check_output_folder, RESULT_FILES) as staging:
        write_csv(staging / "results.csv", rows, line_end=_LINE_END)
        _write_json(staging / "config.json", {"runs": [run.config for run in runs]})
        _write_json(staging / "summary.json", {"num_runs": len(runs), "runs": summaries})
        if plot:
            from jaxstage import results_plot  # matplotlib only when plotting

            results_plot.plot_runs(runs, labels, staging / "plot.png")
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
        "final_distribution": [plain_number(x) for x in result.distribution],
        "nash_gap": plain_number(result.nash_gap),
        "reference_equilibria": _reference_equilibria(config.get("game", {})),
        "config": config,
    }
    with folders.atomic_folder(folder, overwrite, check_output_folder, RESULT_FILES) as staging:
        write_csv(staging / "trajectory.csv", rows, line_end=_LINE_END)
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
