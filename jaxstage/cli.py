"""The ``jaxstage`` command line: ``games``, ``run``, ``sweep``, ``br``, ``demo`` and ``study``.

* ``jaxstage games`` lists the built-in games with their parameters, Lipschitz constants,
  equilibria and what is known about their best-reply dynamics.
* ``jaxstage run`` simulates stage learning for one configuration (options, or a TOML
  file given by ``--config`` whose values the options override) and writes a results
  folder (see :mod:`jaxstage.results`).
* ``jaxstage sweep`` runs a grid of configurations of one population (lists of learner
  values, game parameters and seeds) in one compiled sweep, into one results folder
  (:mod:`jaxstage.cli_sweep`).
* ``jaxstage br`` runs count-level best-reply dynamics (MODEL.md section 4).
* ``jaxstage demo`` is the headline experiment: a million agents on the congestion game,
  learning without information and with published payoffs, in one results folder (an
  existing one, such as an earlier demo's, is only replaced with ``--overwrite``).
* ``jaxstage study`` runs the convergence-versus-population study of MODEL.md section 7
  (:mod:`jaxstage.study`): ``--quick`` at reduced scale, ``--full`` (default) up to 10^7
  agents; tables, plots and ``summary.md`` in one folder.

The ``run`` TOML file (``--config``) and its key-by-key merge with the options are
described in :mod:`jaxstage.cli_config`; the commands live in :mod:`jaxstage.cli_games`
(``games``, ``br``), :mod:`jaxstage.cli_run` (``run``, ``resume``),
:mod:`jaxstage.cli_demo` and :mod:`jaxstage.cli_study`. This module holds the parser and
:func:`main`, the entry point. Library errors (bad values) are reported as
``jaxstage: error: ...`` with exit status 2; set ``JAXSTAGE_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

import jaxstage as js
from jaxstage import distributed
from jaxstage.cli_config import (
    DEFAULT_GAME,
    RUN_DEFAULTS,
    load_config,
    parse_initial,
    parse_param,
)
from jaxstage.cli_demo import DEMO_AGENTS, DEMO_OUT, DEMO_SEED, cmd_demo
from jaxstage.cli_games import cmd_br, cmd_games
from jaxstage.cli_output import stdout_outliving_its_reader
from jaxstage.cli_run import cmd_resume, cmd_run
from jaxstage.cli_study import cmd_study, parse_claims
from jaxstage.cli_sweep import cmd_sweep
from jaxstage.learner import INFO_MODES, INFO_SHARING
from jaxstage.learners import LEARNERS
from jaxstage.sweep_rows import DISTRIBUTE_MODES

__all__ = ["main", "build_parser", "load_config", "parse_param", "parse_initial"]

# --------------------------------------------------------------------------- parser


def _count(text: str) -> int:
    """An integer option that also accepts ``1e6`` and ``1_000_000``."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def _add_game_options(parser: argparse.ArgumentParser, default_note: str) -> None:
    parser.add_argument(
        "--game", metavar="NAME", help=f"built-in game (see 'jaxstage games'); {default_note}"
    )
    parser.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="game parameter, VALUE parsed as JSON else as text "
        "(e.g. --param num_actions=4 --param b=[1,2,3,4]); repeatable",
    )


def _positive_int(text: str) -> int:
    """An argparse type: an integer (as :func:`_count` reads it) of at least 1."""
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _add_devices_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cpu-devices",
        type=_positive_int,
        metavar="N",
        help="JAX CPU devices to split the population over (default: one per core; "
        "results do not depend on it)",
    )


def _add_distributed_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group(
        "distributed run (one population over every device of every process; "
        "see docs/distributed.md)"
    )
    group.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="address of process 0's coordinator, the same in every process",
    )
    group.add_argument("--num-processes", type=_positive_int, metavar="P", help="processes in all")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, in [0, P - 1]")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a distributed run whose processes JAX detects (SLURM, Open MPI)",
    )
    group.add_argument(
        "--distributed-timeout",
        type=_positive_int,
        metavar="SECONDS",
        help=f"wait at most this long for every process to join, and to notice one that "
        f"died (default {distributed.DEFAULT_INITIALIZATION_TIMEOUT} and "
        f"{distributed.DEFAULT_HEARTBEAT_TIMEOUT})",
    )


def _join_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` when the command was asked to join a run."""
    given = [getattr(args, name, None) for name in ("coordinator", "num_processes", "process_id")]
    auto = getattr(args, "distributed", False)
    if not auto and all(value is None for value in given):
        if getattr(args, "distributed_timeout", None) is not None:
            raise ValueError("--distributed-timeout needs --coordinator or --distributed")
        return
    if auto and any(value is not None for value in given):
        raise ValueError(
            "--distributed detects the processes: leave out --coordinator, --num-processes "
            "and --process-id (or give all three without --distributed)"
        )
    if not auto and any(value is None for value in given):
        raise ValueError("give --coordinator, --num-processes and --process-id together")
    timeout = args.distributed_timeout
    distributed.initialize(
        *given,
        initialization_timeout=timeout or distributed.DEFAULT_INITIALIZATION_TIMEOUT,
        heartbeat_timeout=timeout or distributed.DEFAULT_HEARTBEAT_TIMEOUT,
    )
    if not distributed.is_main_process():  # process 0 prints; errors still reach stderr
        # At the descriptor, so that the runtime's own messages (gloo's) are silenced too.
        sys.stdout.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _add_simulation_options(command: argparse.ArgumentParser, *, sweep: bool) -> None:
    """The options of ``run``; ``sweep`` takes lists of learner values and seeds."""
    command.add_argument(
        "--config",
        metavar="FILE.toml",
        help="TOML file: [game], [learner], [run]" + (", [sweep]" if sweep else ""),
    )
    _add_game_options(command, f"default {DEFAULT_GAME}")
    command.add_argument(
        "--agents", type=_count, metavar="N", help=f"population (default {RUN_DEFAULTS['agents']})"
    )
    command.add_argument(
        "--stages", type=_count, metavar="S", help=f"stages (default {RUN_DEFAULTS['stages']})"
    )

    def learner_value(option: str, value_type, metavar: str, what: str) -> None:
        if sweep:  # parsed by jaxstage.cli_sweep: one value, or the values of an axis
            value_type, metavar, what = str, "LIST", f"{what} (comma-separated values)"
        command.add_argument(option, type=value_type, metavar=metavar, help=what)

    command.add_argument(
        "--learner",
        choices=tuple(LEARNERS),
        help="the learner (default stage: stage learning; eps-greedy and exp3 run on the "
        "reference kernel, docs/learners.md)",
    )
    learner_value("--stage-length", _count, "TAU", "rounds per stage (between records)")
    learner_value("--explore", float, "P", "exploration probability (exp3: gamma)")
    command.add_argument("--eta", type=float, metavar="ETA", help="exp3: learning rate")
    learner_value("--update-prob", float, "P", "adoption probability")
    command.add_argument("--info", choices=INFO_MODES, help="statistical information")
    command.add_argument(
        "--info-sample-size", type=_count, metavar="M", help="noisy info: sample size"
    )
    learner_value("--info-noise-std", float, "STD", "noisy distribution info")
    command.add_argument(
        "--info-sharing",
        choices=INFO_SHARING,
        help="noisy info: one estimate published to all (shared, the default) or each "
        "agent its own sample and noise (private; the fast kernel's agents path)",
    )
    command.add_argument("--seed", type=_count, help="random seed (default 0)")
    if sweep:
        command.add_argument(
            "--seeds",
            metavar="N|LIST",
            help="N seeds from --seed on (default 1), or a comma-separated list of seeds",
        )
        command.add_argument(
            "--vary",
            action="append",
            metavar="KEY=[V,...]",
            help="sweep a numeric game parameter over a JSON list of values "
            "(e.g. --vary noise_std=[0.1,0.5]); repeatable",
        )
        command.add_argument(
            "--distribute",
            choices=DISTRIBUTE_MODES,
            help="in a distributed run: deal the rows to the processes, or split every "
            "row's agents (default auto: rows when there are enough, unless checkpointed)",
        )
    command.add_argument("--eps", type=float, help="eps of eps-best replies (default 0.05)")
    command.add_argument("--delta", type=float, help="share allowed off eps-best (default 0.05)")
    command.add_argument(
        "--hold-stages", type=_count, metavar="H", help="convergence hold window (default: to end)"
    )
    command.add_argument(
        "--initial",
        metavar="INIT",
        help="'uniform' (default), an action index, or comma-separated probabilities",
    )
    command.add_argument("--out", metavar="FOLDER", help="results folder")
    command.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    command.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_devices_option(command)
    _add_distributed_options(command)
    command.add_argument("--no-plot", action="store_true", help="do not write plot.png")
    command.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="K",
        help="write a checkpoint every K stages (continue a killed run with `jaxstage resume`)",
    )
    command.add_argument(
        "--checkpoint-dir", metavar="FOLDER", help="checkpoints folder (default: <out>.checkpoints)"
    )
    command.add_argument(
        "--keep-checkpoints", action="store_true", help="keep them once the results are written"
    )
    command.add_argument(
        "--resume",
        metavar="FOLDER",
        help=f"continue the {'sweep' if sweep else 'run'} whose results folder (or "
        "checkpoints folder) this is",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jaxstage`` command."""
    parser = argparse.ArgumentParser(
        prog="jaxstage",
        description="Stage learning in very large anonymous games, simulated with JAX.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"jaxstage {js.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    games = commands.add_parser("games", help="list the built-in games", allow_abbrev=False)
    games.set_defaults(handler=cmd_games)

    run = commands.add_parser(
        "run",
        help="simulate stage learning and write a results folder",
        description="Simulate stage learning. Options override the --config file; "
        "unset options take the file's value, else the default.",
        allow_abbrev=False,
    )
    _add_simulation_options(run, sweep=False)
    run.set_defaults(handler=cmd_run)

    sweep = commands.add_parser(
        "sweep",
        help="run a grid of configurations in one compiled sweep and write a results folder",
        description="Run every combination of the values given (comma-separated learner "
        "values, --seeds, --vary) as the rows of one sweep of one population size. Options "
        "override the --config file; see jaxstage.cli_sweep for its [sweep] table.",
        allow_abbrev=False,
    )
    _add_simulation_options(sweep, sweep=True)
    sweep.set_defaults(handler=cmd_sweep)

    resume = commands.add_parser(
        "resume",
        help="continue a run from its last checkpoint and write its results folder",
        description="Continue a `jaxstage run --checkpoint-every K` from the last checkpoint "
        "in FOLDER; the results are bitwise those of the run uninterrupted.",
        allow_abbrev=False,
    )
    resume.add_argument("checkpoint_dir", metavar="FOLDER", help="the run's checkpoints folder")
    resume.add_argument("--out", metavar="FOLDER", help="results folder (default: the run's)")
    resume.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    resume.add_argument("--no-progress", action="store_true", help="no progress bar")
    resume.add_argument("--no-plot", action="store_true", help="do not write plot.png")
    resume.add_argument(
        "--keep-checkpoints", action="store_true", help="keep them once the results are written"
    )
    resume.add_argument(
        "--allow-other-versions",
        action="store_true",
        help="resume although jaxstage, jax or the backend changed (numbers may differ)",
    )
    _add_devices_option(resume)
    _add_distributed_options(resume)
    resume.set_defaults(handler=cmd_resume)

    br = commands.add_parser("br", help="count-level best-reply dynamics", allow_abbrev=False)
    _add_game_options(br, f"default {DEFAULT_GAME}")
    br.add_argument("--agents", type=_count, default=10_000, metavar="N", help="population")
    br.add_argument("--mode", choices=("sequential", "simultaneous"), default="sequential")
    br.add_argument("--inertia", type=float, default=1.0, help="switching probability (simult.)")
    br.add_argument("--eps", type=float, default=0.0, help="eps of eps-best replies (default 0)")
    br.add_argument("--initial", default="uniform", metavar="INIT", help="as for 'run'")
    br.add_argument(
        "--max-steps",
        type=_count,
        metavar="STEPS",
        help="give up after this many steps (default: the library's, which grows with N)",
    )
    br.add_argument("--record-every", type=_count, default=1, metavar="STEPS")
    br.add_argument("--seed", type=_count, default=0)
    br.add_argument("--out", metavar="FOLDER", help="write summary.json and trajectory.csv")
    br.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    br.set_defaults(handler=cmd_br)

    demo = commands.add_parser(
        "demo",
        help=f"{DEMO_AGENTS:,} agents on the congestion game, without and with information",
        allow_abbrev=False,
    )
    demo.add_argument("--agents", type=_count, default=DEMO_AGENTS, metavar="N")
    demo.add_argument("--out", metavar="FOLDER", help=f"results folder (default {DEMO_OUT})")
    demo.add_argument(
        "--overwrite", action="store_true", help="replace an existing folder (an earlier demo)"
    )
    demo.add_argument("--seed", type=_count, default=DEMO_SEED)
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_devices_option(demo)
    demo.add_argument("--no-plot", action="store_true", help="do not write plot.png")
    demo.set_defaults(handler=cmd_demo)

    study = commands.add_parser(
        "study",
        help="the convergence-versus-population study (claims C1-C5 of MODEL.md)",
        allow_abbrev=False,
    )
    size = study.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="every claim at reduced scale (a few minutes)"
    )
    size.add_argument("--full", action="store_true", help="10^2..10^7 agents (the default)")
    size.add_argument(
        "--definition",
        metavar="FILE",
        help="run the study defined in FILE (TOML, see docs/study.md; e.g. an edited copy "
        "from --write-definition)",
    )
    study.add_argument(
        "--write-definition",
        metavar="FILE",
        help="write the built-in definition (--quick or --full) to FILE, a new file, to "
        "edit and run with --definition; runs nothing",
    )
    study.add_argument(
        "--out",
        metavar="FOLDER",
        help="study folder (default results/study-quick, results/study, or "
        "results/study-NAME for --definition)",
    )
    study.add_argument("--seeds", type=_count, metavar="N", help="seeds per setting (default 10)")
    study.add_argument(
        "--max-agents", type=_count, metavar="N", help="drop populations larger than N"
    )
    study.add_argument(
        "--claims",
        type=parse_claims,
        metavar="C1,C3,...",
        help="only experiments serving these claims",
    )
    study.add_argument(
        "--experiments",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        metavar="NAME,...",
        help="only these experiments (names as in summary.md; unknown names are refused)",
    )
    study.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing study folder (and discard an interrupted run's journal)",
    )
    study.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: skip the sweeps journalled in FOLDER.partial/ "
        "and continue the sweep it was killed in from its last checkpoint",
    )
    study.add_argument(
        "--checkpoint-every",
        type=_count,
        metavar="K",
        help="checkpoint the running sweep every K stages (default: a tenth of each "
        "sweep of 10^6 agents or more over its rows; 0: none, a killed sweep is run "
        "again from its start)",
    )
    study.add_argument(
        "--reuse",
        action="append",
        metavar="FOLDER",
        help="take the sweeps a finished study folder already ran (same experiment and "
        "variant definition, same seeds) instead of running them again; repeatable",
    )
    study.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_devices_option(study)
    _add_distributed_options(study)
    study.set_defaults(handler=cmd_study)
    return parser


def _use_cpu_cores(count: int | None) -> None:
    """``count`` JAX CPU devices (default one per core: the fast kernel runs a shard on
    each). When JAX has already started in this process (``main`` called from Python), a
    default count leaves it as it is and an explicit one must match it."""
    if count is not None:
        try:
            js.use_cpu_cores(count)
        except RuntimeError as error:  # JAX started with another count: say which
            raise ValueError(f"--cpu-devices {count}: {error}") from None
        return
    with contextlib.suppress(RuntimeError):
        js.use_cpu_cores()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxstage`` command line.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for a usage or value error (printed as
        ``jaxstage: error: ...``), 1 for an I/O error, 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help, --version or a usage error
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    args.argv_rest = list(sys.argv[2:] if argv is None else argv[1:])
    try:
        _use_cpu_cores(getattr(args, "cpu_devices", None))
        _join_distributed(args)
        with stdout_outliving_its_reader():  # `jaxstage run | head` still writes its folder
            return int(args.handler(args))
    except (ValueError, TypeError) as error:
        if os.environ.get("JAXSTAGE_DEBUG"):
            raise
        print(f"jaxstage: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``jaxstage games | head``): not an error worth reporting.
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except OSError as error:
        if os.environ.get("JAXSTAGE_DEBUG"):
            raise
        print(f"jaxstage: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jaxstage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
