"""``jaxstage sweep``: a grid of runs of one population, in one compiled sweep.

The options are ``run``'s, and the learner's and the seed take lists: every combination
of the values given is one row of :func:`jaxstage.sweep` (one population size, one game;
the rows differ in their learner values, game parameters and seeds)::

    jaxstage sweep --agents 1e5 --stages 100 --explore 0.02,0.05,0.1 \\
        --update-prob 0.1,1 --seeds 10 --vary noise_std=[0.1,0.5]

is 3 x 2 x 2 x 10 = 120 rows. Rows are ordered as the grid's axes: game parameters (in
the order given), then ``stage_length``, ``explore_prob``, ``update_prob``,
``info_noise_std``, and the seed innermost. ``--seeds N`` is the ``N`` seeds ``SEED`` to
``SEED + N - 1`` (``--seed``, default 0); ``--seeds 3,7,11`` lists them. A value given
once is the learner's (or the game's) for every row, as in ``run``.

The ``--config`` file is ``run``'s, with one more table (the options override it key by
key)::

    [sweep]
    seeds = 10                        # or a list of seeds
    explore_prob = [0.02, 0.05, 0.1]  # stage_length, update_prob, info_noise_std too
    [sweep.game]                      # numeric game parameters, a list of values each
    noise_std = [0.1, 0.5]

The results folder is ``run``'s with one run per row (:func:`jaxstage.results.write_results`:
``results.csv`` with ``run`` and ``label`` columns, ``summary.json``, ``config.json``), the
labels naming each row's values of the axes that vary. ``plot.png`` overlays the runs and
is left out above :data:`MAX_PLOTTED_RUNS` rows, where it could not be read.
``--checkpoint-every K`` checkpoints the whole sweep (``jaxstage resume``, or ``sweep
--resume``, continues it to the same results). In a distributed run (``--coordinator``,
``--distributed``) ``--distribute`` chooses what goes to the processes: ``rows`` deals
the rows (not with checkpoints), ``agents`` splits every row's population, ``auto`` (the
default) takes ``rows`` when there are at least as many rows as processes and nothing is
checkpointed; the results are bitwise the same.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jaxstage as js
from jaxstage import distributed
from jaxstage.cli_config import (
    CONFIG_TABLES,
    convergence_options,
    game_from,
    learner_options,
    output_folders,
    parse_initial,
    read_config,
    run_options,
    settle_checkpoints,
)
from jaxstage.learners import learner_label, make_learner
from jaxstage.results import write_results
from jaxstage.resumable import run_with_checkpoints

__all__ = ["LEARNER_AXES", "MAX_PLOTTED_RUNS", "cmd_sweep", "finish_sweep", "sweep_grid"]

#: The learner's swept values: (``StageLearning`` field, option, label, integer or not).
LEARNER_AXES = (
    ("stage_length", "--stage-length", "tau", True),
    ("explore_prob", "--explore", "explore", False),
    ("update_prob", "--update-prob", "update", False),
    ("info_noise_std", "--info-noise-std", "noise", False),
)
_ATTRIBUTE = {"stage_length": "stage_length", "explore_prob": "explore"}

#: Above this many rows ``plot.png`` is not drawn: the curves would hide each other.
MAX_PLOTTED_RUNS = 12

_SWEEP_KEYS = ("seeds", "game", *(name for name, *_ in LEARNER_AXES))


def _number(text: str, integer: bool, option: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not a number") from None
    if not integer:
        return value
    if not value.is_integer():
        raise ValueError(f"{option}: {text!r} is not an integer")
    return int(value)


def parse_values(text: str, *, integer: bool, option: str) -> list[int | float]:
    """A comma-separated option value, e.g. ``"0.02,0.05"``, as numbers."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise ValueError(f"{option} expects comma-separated numbers, got {text!r}")
    return [_number(part, integer, option) for part in parts]


def _file_values(value: Any, *, integer: bool, where: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError(f"{where} lists no values")
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ValueError(f"{where} must be numbers, got {item!r}")
        if integer and float(item) != int(item):
            raise ValueError(f"{where} must be integers, got {item!r}")
    return [int(item) for item in values] if integer else [float(item) for item in values]


def _distinct(values: Sequence[Any], where: str) -> list[Any]:
    keys = [json.dumps(value) for value in values]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"{where} repeats {', '.join(repeated)}: each row would run twice")
    return list(values)


def parse_seeds(value: Any, first: int, where: str) -> list[int]:
    """``--seeds`` / ``seeds =``: a count ``N`` (seeds ``first .. first + N - 1``) or a
    list of seeds (text ``"3,7,11"``, or a TOML list)."""
    if isinstance(value, str):
        text = value.strip()
        if "," not in text:
            value = _number(text, True, where)
        else:
            return _distinct(parse_values(text, integer=True, option=where), where)
    if isinstance(value, list):
        return _distinct(_file_values(value, integer=True, where=where), where)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a number of seeds >= 1 or a list, got {value!r}")
    return list(range(first, first + value))


def parse_vary(text: str) -> tuple[str, list[Any]]:
    """``--vary KEY=[V1,V2,...]``: a game parameter and its values (JSON list)."""
    key, sep, values = text.partition("=")
    key = key.strip()
    try:
        parsed = json.loads(values) if sep else None
    except json.JSONDecodeError:
        parsed = None
    if not key or not isinstance(parsed, list) or not parsed:
        raise ValueError(
            f"--vary expects KEY=[V1,V2,...] (a JSON list of values), got {text!r}; e.g. "
            "--vary noise_std=[0.1,0.5] or --vary 'b=[[1,2,3],[2,3,4]]'"
        )
    return key, parsed


def _game_axes(args: argparse.Namespace, table: Any, game: Any, path: str) -> dict[str, list]:
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [sweep.game] must be a table, got {table!r}")
    axes: dict[str, list] = {}
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: [sweep.game] {key} must be a non-empty list of values")
        axes[key] = values
    for text in args.vary or []:
        key, values = parse_vary(text)
        axes[key] = values
    numeric = list(game.default_params())
    for key, values in axes.items():
        if key not in numeric:
            raise ValueError(
                f"game parameter {key!r} cannot be swept in game {game.name!r}: its numeric "
                f"parameters are {', '.join(numeric)} (others change the game: give them "
                "with --param, one value)"
            )
        _distinct(values, f"the values of game parameter {key}")
    return axes


def sweep_grid(axes: dict[str, list], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The rows of the grid: every combination of the axes' values, the seed innermost.

    Example:
        >>> sweep_grid({"explore_prob": [0.1, 0.2]}, [0, 1])  # doctest: +NORMALIZE_WHITESPACE
        [{'explore_prob': 0.1, 'seed': 0}, {'explore_prob': 0.1, 'seed': 1},
         {'explore_prob': 0.2, 'seed': 0}, {'explore_prob': 0.2, 'seed': 1}]
    """
    names = [*axes, "seed"]
    return [
        dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values(), seeds)
    ]


def _labels(rows: list[dict[str, Any]], short: dict[str, str]) -> list[str]:
    varying = [name for name in rows[0] if len({json.dumps(row[name]) for row in rows}) > 1]
    if not varying:
        return [f"seed={rows[0]['seed']}"]
    return [", ".join(f"{short.get(n, n)}={row[n]}" for n in varying) for row in rows]


def _sweep_options(args: argparse.Namespace, config: dict[str, dict[str, Any]], game: Any):
    """The learner, the grid's axes and the seeds, from the options over the file."""
    path = args.config or "--config"
    table = config["sweep"]
    unknown = [key for key in table if key not in _SWEEP_KEYS]
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))} in [sweep]; valid keys: "
            f"{', '.join(_SWEEP_KEYS)}"
        )
    # The learner axes' option values are text here: the loop below replaces each given one.
    learner = learner_options(args, config["learner"])
    axes = _game_axes(args, table.get("game", {}), game, path)
    for name, option, _, integer in LEARNER_AXES:
        text = getattr(args, _ATTRIBUTE.get(name, name))
        if text is not None:
            values = parse_values(text, integer=integer, option=option)
        elif name in table:
            values = _file_values(table[name], integer=integer, where=f"{path}: [sweep] {name}")
        else:
            continue
        _distinct(values, option)
        learner.pop(name, None)
        if len(values) == 1:
            learner[name] = values[0]
        else:
            axes[name] = values
    return learner, axes


def cmd_sweep(args: argparse.Namespace) -> int:
    """``jaxstage sweep``: run a grid of configurations and write one results folder."""
    if args.resume is not None:
        from jaxstage.cli_run import resume_from_folder  # it imports this module

        return resume_from_folder(args)
    config = read_config(args, (*CONFIG_TABLES, "sweep"))
    game = game_from(args, config["game"])
    learner_kwargs, axes = _sweep_options(args, config, game)
    learner = make_learner(**learner_kwargs)
    run = run_options(args, config["run"])
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds, run["seed"], "--seeds")
    else:
        where = f"{args.config}: [sweep] seeds"
        seeds = parse_seeds(config["sweep"].get("seeds", 1), run["seed"], where)
    rows = sweep_grid(axes, seeds)
    short = {name: label for name, _, label, _ in LEARNER_AXES}
    labels = _labels(rows, short)
    initial = parse_initial(run["initial"], game.num_actions)
    label = learner_label(learner)
    default_out = f"results/{game.name}_{label}_n{run['agents']}_sweep{len(rows)}"
    out, checkpoints = output_folders(args, run, default_out)
    distribute = args.distribute or "auto"
    if distribute == "rows" and checkpoints is not None:
        raise ValueError(
            "--distribute rows cannot checkpoint (each process holds other rows): use "
            "--distribute agents (or auto) with --checkpoint-every"
        )
    game_keys = [key for key in axes if key not in short]
    options: dict[str, Any] = {
        "game_params": [{k: row[k] for k in game_keys} for row in rows] if game_keys else None,
        **{name: [row[name] for row in rows] for name in axes if name in short},
        **convergence_options(run, initial),
    }
    seeds_of_rows = [row["seed"] for row in rows]
    if checkpoints is None:
        result = js.sweep(
            game,
            learner,
            run["agents"],
            run["stages"],
            seeds_of_rows,
            progress=not args.no_progress,
            distribute=distribute,
            **options,
        )
    else:  # the manifests name the results folder and the labels, for `jaxstage resume`
        batch = js.Sweep(game, learner, run["agents"], run["stages"], seeds_of_rows, **options)
        result = run_with_checkpoints(
            batch,
            checkpoints,
            every=args.checkpoint_every,
            progress=not args.no_progress,
            extra={"out": os.path.abspath(out), "labels": labels},
        )
    return finish_sweep(args, result, labels, out, checkpoints)


def _row_line(label: str, run: js.SimulationResult) -> str:
    converged = (
        f"converged at round {run.convergence_round:,}"
        if run.convergence_round is not None
        else "not converged"
    )
    gap = float(run.nash_gap[-1])
    share = float(run.best_reply_fraction[-1])
    gap_text = f"{gap:.4g}" if math.isfinite(gap) else "nan"
    return f"  {label}: {converged}; final eps-Nash gap {gap_text}, {share:.1%} at eps-best"


def finish_sweep(
    args: argparse.Namespace,
    result: js.SweepResult,
    labels: Sequence[str] | None,
    out: Any,
    checkpoints: Path | None,
) -> int:
    """Print one line per row and write the results folder (process 0 only); remove
    the checkpoints unless ``--keep-checkpoints``."""
    if not distributed.is_main_process():
        return 0
    labels = list(labels) if labels is not None else [f"run {i}" for i in range(len(result))]
    converged = sum(run.converged for run in result.runs)
    print(f"{len(result)} runs, {converged} converged:")
    for label, run in zip(labels, result.runs, strict=True):
        print(_row_line(label, run))
    plot = not args.no_plot and len(result) <= MAX_PLOTTED_RUNS
    folder = write_results(result, out, plot=plot, overwrite=args.overwrite, labels=labels)
    print(f"results written to {folder}")
    if not args.no_plot and not plot:
        print(f"plot.png left out: {len(result)} runs (more than {MAX_PLOTTED_RUNS}) overlaid")
    settle_checkpoints(args, checkpoints)
    return 0
