"""``jaxstage run`` and ``jaxstage resume``: one simulation, checkpointed or not.

``resume`` also continues the checkpoints of ``jaxstage sweep`` (:mod:`jaxstage.cli_sweep`).

``run`` builds the configuration (:mod:`jaxstage.cli_config`), simulates and writes a
results folder; with ``--checkpoint-every`` it writes checkpoints beside it, which
``resume`` (or ``run --resume``) continues from, to the same results.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import jaxstage as js
from jaxstage import checkpoint, distributed
from jaxstage.cli_config import (
    convergence_options,
    game_from,
    learner_options,
    out_folder,
    output_folders,
    parse_initial,
    read_config,
    run_options,
    settle_checkpoints,
)
from jaxstage.cli_output import print_equilibria
from jaxstage.cli_sweep import finish_sweep
from jaxstage.game_base import AnonymousGame
from jaxstage.learners import learner_label, make_learner
from jaxstage.results import check_output_folder, write_results
from jaxstage.resumable import rebuilt_game, run_with_checkpoints

#: ``run`` options that ``--resume`` takes besides the folder (the rest is the run's own).
_RESUME_KEEPS = {
    "resume",
    "overwrite",
    "no_progress",
    "no_plot",
    "keep_checkpoints",
    "cpu_devices",
    *("coordinator", "num_processes", "process_id", "distributed", "distributed_timeout"),
    "command",
    "handler",
    "argv_rest",
}


def resume_from_folder(args: argparse.Namespace) -> int:
    """``run --resume D`` (or ``sweep --resume D``): ``resume`` of the checkpoints of the
    run whose results folder is ``D`` (``D.checkpoints``), or of ``D`` itself when it
    holds the checkpoints."""
    given = sorted(
        f"--{k.replace('_', '-')}"
        for k, v in vars(args).items()
        if k not in _RESUME_KEEPS and v not in (None, False)
    )
    if given:
        raise ValueError(f"--resume continues a run as it was started: drop {', '.join(given)}")
    folder = Path(args.resume)
    if not (folder / checkpoint.LATEST).exists():
        folder = Path(f"{os.fspath(args.resume).rstrip('/')}.checkpoints")
    resume_args = argparse.Namespace(
        checkpoint_dir=folder,
        out=None,
        overwrite=args.overwrite,
        no_progress=args.no_progress,
        no_plot=args.no_plot,
        keep_checkpoints=args.keep_checkpoints,
        allow_other_versions=False,
    )
    return cmd_resume(resume_args)


def cmd_run(args: argparse.Namespace) -> int:
    """``jaxstage run``: simulate one configuration and write its results folder."""
    if args.resume is not None:
        return resume_from_folder(args)
    file_config = read_config(args)
    game = game_from(args, file_config["game"])
    learner = make_learner(**learner_options(args, file_config["learner"]))
    run = run_options(args, file_config["run"])
    initial = parse_initial(run["initial"], game.num_actions)
    label = learner_label(learner)
    default_out = f"results/{game.name}_{label}_n{run['agents']}_seed{run['seed']}"
    out, checkpoints = output_folders(args, run, default_out)
    options = convergence_options(run, initial)
    if checkpoints is None:
        result = js.simulate(
            game,
            learner,
            run["agents"],
            run["stages"],
            run["seed"],
            progress=not args.no_progress,
            **options,
        )
    else:  # the manifests name the results folder, for `jaxstage resume`
        sim = js.Simulation(game, learner, run["agents"], run["stages"], **options)
        result = run_with_checkpoints(
            sim,
            checkpoints,
            seed=run["seed"],
            every=args.checkpoint_every,
            progress=not args.no_progress,
            extra={"out": os.path.abspath(out)},
        )
    return _finish_run(args, game, result, out, checkpoints)


def _finish_run(
    args: argparse.Namespace,
    game: AnonymousGame,
    result: js.SimulationResult,
    out: Any,
    checkpoints: Path | None,
) -> int:
    if not distributed.is_main_process():  # process 0 writes the results
        return 0
    print(result.summary())
    print_equilibria(game, result.distribution[-1])
    folder = write_results(result, out, plot=not args.no_plot, overwrite=args.overwrite)
    print(f"results written to {folder}")
    settle_checkpoints(args, checkpoints)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """``jaxstage resume``: continue a checkpointed run and write its results folder."""
    # The manifest only: js.resume reads and checks the files, once.
    path, manifest = checkpoint.read_manifest(args.checkpoint_dir)
    kind = manifest.get("kind", "simulation")
    extra = manifest.get("extra", {})
    if kind not in ("simulation", "sweep") or (kind == "sweep" and "labels" not in extra):
        raise ValueError(
            f"{args.checkpoint_dir} holds the checkpoints of a {kind} that `jaxstage run` "
            "or `jaxstage sweep` did not write, which `jaxstage resume` does not write "
            "results of: continue it with jaxstage.resume() in Python (a study's: "
            "`jaxstage study --resume`)"
        )
    out = out_folder(args.out, extra.get("out"))
    if out is None:
        raise ValueError(
            f"{args.checkpoint_dir} was not written by `jaxstage run`: give the results "
            "folder with --out"
        )
    check_output_folder(out, overwrite=args.overwrite)
    result = js.resume(
        args.checkpoint_dir,
        progress=not args.no_progress,
        allow_other_versions=args.allow_other_versions,
    )
    if kind == "sweep":
        return finish_sweep(args, result, extra["labels"], out, path.parent)
    game = rebuilt_game(manifest["game"])
    return _finish_run(args, game, result, out, path.parent)
