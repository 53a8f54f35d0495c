"""The ``jaxstage`` command line: ``games``, ``run``, ``br``, ``demo`` and ``study``.

* ``jaxstage games`` lists the built-in games with their parameters, Lipschitz constants,
  equilibria and what is known about their best-reply dynamics.
* ``jaxstage run`` simulates stage learning for one configuration (options, or a TOML
  file given by ``--config`` whose values the options override) and writes a results
  folder (see :mod:`jaxstage.results`).
* ``jaxstage br`` runs count-level best-reply dynamics (MODEL.md section 4).
* ``jaxstage demo`` is the headline experiment: a million agents on the congestion game,
  learning without information and with published payoffs, in one results folder (an
  existing one, such as an earlier demo's, is only replaced with ``--overwrite``).
* ``jaxstage study`` runs the convergence-versus-population study of MODEL.md section 7
  (:mod:`jaxstage.study`): ``--quick`` at reduced scale, ``--full`` (default) up to 10^7
  agents; tables, plots and ``summary.md`` in one folder.

A TOML configuration has three tables, all optional::

    [game]
    name = "congestion"      # a built-in game; the other keys are its parameters
    num_actions = 4
    b = [1, 2, 3, 4]

    [learner]                # StageLearning fields
    stage_length = 50
    explore_prob = 0.05
    update_prob = 0.05
    info = "none"            # info_sample_size, info_noise_std too

    [run]
    agents = 100000
    stages = 200
    seed = 0
    eps = 0.05
    delta = 0.05
    hold_stages = 10         # optional: hold window for convergence (default: to the end)
    initial = "uniform"      # or an action index, or a list of probabilities
    out = "results/my-run"   # relative to the current directory, not to the file

Command-line options override the file key by key; ``--game`` naming a different game
than the file drops the file's game parameters (they belong to the other game), while
``--param`` entries are merged over them. Library errors (bad values) are reported as
``jaxstage: error: ...`` with exit status 2; set ``JAXSTAGE_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import jaxstage as js
from jaxstage import checkpoint
from jaxstage.games import GAMES, list_games, make_game
from jaxstage.learner import INFO_MODES
from jaxstage.results import check_output_folder, write_best_reply, write_results
from jaxstage.resumable import rebuilt_game, run_with_checkpoints

__all__ = ["main", "build_parser", "load_config", "parse_param", "parse_initial"]

# --------------------------------------------------------------------------- demo constants
# The demo: one game, two information modes, the same horizon in rounds for both.
# Tune here; nothing else in this module depends on the values.

DEMO_GAME = "congestion"
DEMO_GAME_PARAMS: dict[str, Any] = {"num_actions": 4}
DEMO_AGENTS = 1_000_000
DEMO_ROUNDS = 600  # each run plays this many rounds: DEMO_ROUNDS // stage_length stages
# Exact published payoffs give every agent the same estimates, so the switching share must
# be small or the population herds and overshoots; in exchange one-round stages suffice.
DEMO_LEARNERS: dict[str, dict[str, Any]] = {
    "none": {"stage_length": 10, "explore_prob": 0.05, "update_prob": 0.1, "info": "none"},
    "payoffs": {"stage_length": 1, "explore_prob": 0.05, "update_prob": 0.01, "info": "payoffs"},
}
DEMO_SEED = 0
DEMO_EPS = 0.05
DEMO_DELTA = 0.05
DEMO_OUT = "results/demo"

# --------------------------------------------------------------------------- run defaults

RUN_DEFAULTS: dict[str, Any] = {
    "agents": 10_000,
    "stages": 100,
    "seed": 0,
    "eps": 0.05,
    "delta": 0.05,
    "hold_stages": None,
    "initial": "uniform",
    "out": None,  # default: results/<game>_<info>_n<agents>_seed<seed>
}
CONFIG_TABLES = ("game", "learner", "run")
LEARNER_KEYS = (
    "stage_length",
    "explore_prob",
    "update_prob",
    "info",
    "info_sample_size",
    "info_noise_std",
)
DEFAULT_GAME = "congestion"


# --------------------------------------------------------------------------- parsing helpers


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


def parse_param(text: str) -> tuple[str, Any]:
    """Parse a ``--param KEY=VALUE``: the value as JSON, else as a plain string.

    Example:
        >>> parse_param("b=[1, 2, 3]")
        ('b', [1, 2, 3])
        >>> parse_param("noise=coin")
        ('noise', 'coin')
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--param expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_initial(value: Any, num_actions: int) -> Any:
    """Turn an ``--initial`` / ``initial =`` value into what the library accepts.

    Args:
        value: ``"uniform"``, an action index (int or its text), a list of probabilities
            or their comma-separated text.
        num_actions: the game's number of actions.

    Returns:
        ``"uniform"``, an ``int`` or a float array of ``num_actions`` probabilities.

    Raises:
        ValueError: naming the value when it is none of these, or the probabilities are
            not ``num_actions`` non-negative numbers summing to 1.
    """
    if isinstance(value, bool):
        raise ValueError(f"initial must be 'uniform', an action or probabilities, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text == "uniform":
            return "uniform"
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        try:
            probs = [float(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(
                f"invalid initial {value!r}: expected 'uniform', an action index or "
                f"comma-separated probabilities such as 0.5,0.3,0.2"
            ) from None
    elif isinstance(value, (list, tuple)):
        try:
            probs = [float(part) for part in value]
        except (TypeError, ValueError):
            raise ValueError(f"invalid initial {value!r}: probabilities must be numbers") from None
    else:
        raise ValueError(f"invalid initial {value!r}: expected 'uniform', an action or a list")
    array = np.asarray(probs, dtype=np.float64)
    if array.size != num_actions:
        raise ValueError(
            f"invalid initial {value!r}: {array.size} probabilities given for a game with "
            f"{num_actions} actions"
        )
    if not np.all(np.isfinite(array)) or np.any(array < 0) or abs(array.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"invalid initial {value!r}: probabilities must be non-negative and sum to 1 "
            f"(sum {array.sum():g})"
        )
    return array


def _valid_game_params(name: str) -> list[str]:
    return list(GAMES[name]().param_docs()) if name in GAMES else []


def _check_keys(table: dict[str, Any], valid: Sequence[str], where: str, path: str) -> None:
    unknown = [key for key in table if key not in valid]
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))} in {where}; "
            f"valid keys: {', '.join(valid)}"
        )


def load_config(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read and check a TOML run configuration (tables ``game``, ``learner``, ``run``).

    Args:
        path: the ``.toml`` file.

    Returns:
        ``{"game": {...}, "learner": {...}, "run": {...}}`` (missing tables empty).

    Raises:
        ValueError: unreadable or malformed file (naming it), an unknown table or key
            (listing the valid ones), or a game name that is not a string.
    """
    path_text = os.fspath(path)
    try:
        with open(path_text, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ValueError(f"cannot read config file {path_text!r}: {error.strerror}") from None
    except UnicodeDecodeError as error:  # tomllib decodes the bytes itself, naming no file
        raise ValueError(
            f"config file {path_text!r} is not UTF-8 text (TOML must be UTF-8): byte "
            f"{error.object[error.start]:#04x} at offset {error.start}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"malformed TOML in config file {path_text!r}: {error}") from None
    unknown = [key for key in data if key not in CONFIG_TABLES]
    if unknown:
        raise ValueError(
            f"{path_text}: unknown table(s) or key(s) {', '.join(map(repr, unknown))}; "
            f"valid tables: {', '.join(f'[{t}]' for t in CONFIG_TABLES)}"
        )
    config: dict[str, dict[str, Any]] = {}
    for table in CONFIG_TABLES:
        value = data.get(table, {})
        if not isinstance(value, dict):
            raise ValueError(f"{path_text}: {table!r} must be a table ([{table}]), got {value!r}")
        config[table] = dict(value)
    game = config["game"]
    if "name" in game:
        if not isinstance(game["name"], str):
            raise ValueError(f"{path_text}: [game] name must be a string, got {game['name']!r}")
        valid = _valid_game_params(game["name"])
        if valid:  # an unknown name is reported by make_game, with the valid names
            _check_keys(game, ["name", *valid], f"[game] (game {game['name']!r})", path_text)
    elif game:
        raise ValueError(f"{path_text}: [game] needs a name to go with its parameters")
    _check_keys(config["learner"], LEARNER_KEYS, "[learner]", path_text)
    _check_keys(config["run"], list(RUN_DEFAULTS), "[run]", path_text)
    return config


def _game_from(args: argparse.Namespace, file_game: dict[str, Any]):
    file_name = file_game.get("name")
    name = args.game or file_name or DEFAULT_GAME
    params = {k: v for k, v in file_game.items() if k != "name"} if name == file_name else {}
    for text in args.param or []:
        key, value = parse_param(text)
        params[key] = value
    return make_game(name, **params)


def _format_vector(values: Any) -> str:
    return np.array2string(np.asarray(values, dtype=np.float64), precision=4, separator=", ")


def _print_equilibria(game: Any, final: np.ndarray | None = None) -> None:
    equilibria = game.equilibria()
    if not equilibria:
        print("reference equilibrium: none known analytically")
        return
    if final is None or len(equilibria) == 1:
        nearest = equilibria[0]
    else:
        nearest = min(equilibria, key=lambda e: float(np.abs(np.asarray(e) - final).sum()))
    which = "" if len(equilibria) == 1 else f" (nearest of {len(equilibria)})"
    print(f"reference equilibrium{which} {_format_vector(nearest)}")


def _out_folder(value: Any, default: str | None, option: str = "--out") -> Any:
    """The output folder given as ``value`` (``--out`` or a file's ``out``), else ``default``.

    An empty name is refused rather than taken as "not given": ``--out ""`` (an unset
    shell variable, say) silently writing to the default folder would put results where
    the user did not ask, or overwrite a folder the user meant to keep.
    """
    if value is None:
        return default
    if isinstance(value, str) and value == "":
        raise ValueError(f"{option} must name a folder, got an empty string ''")
    return value


# --------------------------------------------------------------------------- commands


def _cmd_games(args: argparse.Namespace) -> int:
    for name in list_games():
        game = make_game(name)
        print(name)
        print(f"  {game.describe().replace('``', '')}")
        actions = game.action_names or tuple(str(j) for j in range(game.num_actions))
        print(f"  actions (default parameters): {', '.join(actions)}")
        if game.num_types > 1:
            types = game.type_names or tuple(str(t) for t in range(game.num_types))
            print(f"  types: {', '.join(types)} with shares {list(game.type_shares)}")
        print("  parameters:")
        docs = game.param_docs()
        width = max((len(key) for key in docs), default=0)
        for key, doc in docs.items():
            print(f"    {key:<{width}}  {doc}")
        lipschitz = game.lipschitz()
        print(
            "  Lipschitz constant: "
            + ("not Lipschitz / unknown" if lipschitz is None else f"{lipschitz:g}")
        )
        equilibria = game.equilibria()
        if equilibria:
            listed = "; ".join(_format_vector(e) for e in equilibria)
            print(f"  equilibria (default parameters): {listed}")
        else:
            print(f"  equilibria: none analytic (find one with: jaxstage br --game {name})")
        print(f"  best-reply dynamics: {game.best_reply_note}")
        print()
    return 0


#: ``run`` options that ``--resume`` takes besides the folder (the rest is the run's own).
_RESUME_KEEPS = {
    "resume",
    "overwrite",
    "no_progress",
    "no_plot",
    "keep_checkpoints",
    "cpu_devices",
    "command",
    "handler",
    "argv_rest",
}


def _resume_run(args: argparse.Namespace) -> int:
    """``run --resume D``: ``resume`` of the checkpoints of the run whose results folder
    is ``D`` (``D.checkpoints``), or of ``D`` itself when it holds the checkpoints."""
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
    return _cmd_resume(resume_args)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        return _resume_run(args)
    if args.config is not None and not args.config.strip():
        raise ValueError("--config names no file: give the path of a TOML file, or leave it out")
    file_config = load_config(args.config) if args.config else {t: {} for t in CONFIG_TABLES}
    game = _game_from(args, file_config["game"])

    learner_kwargs = dict(file_config["learner"])
    overrides = {
        "stage_length": args.stage_length,
        "explore_prob": args.explore,
        "update_prob": args.update_prob,
        "info": args.info,
        "info_sample_size": args.info_sample_size,
        "info_noise_std": args.info_noise_std,
    }
    learner_kwargs.update({k: v for k, v in overrides.items() if v is not None})
    learner = js.StageLearning(**learner_kwargs)

    run = {**RUN_DEFAULTS, **file_config["run"]}
    for key in RUN_DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            run[key] = value
    initial = parse_initial(run["initial"], game.num_actions)
    default_out = f"results/{game.name}_{learner.info}_n{run['agents']}_seed{run['seed']}"
    out = _out_folder(run["out"], default_out, "--out (or out = in [run])")
    if not isinstance(out, (str, os.PathLike)):
        raise ValueError(f"out must be a folder name, got {out!r}")
    check_output_folder(out, overwrite=args.overwrite)  # fail before a long run, not after
    checkpoints = _checkpoint_folder(args, out)
    options = {
        "eps": run["eps"],
        "delta": run["delta"],
        "hold_stages": run["hold_stages"],
        "initial": initial,
    }
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


def _checkpoint_folder(args: argparse.Namespace, out: Any) -> Path | None:
    """The checkpoints folder of ``run``: none without ``--checkpoint-every``; by
    default ``<out>.checkpoints`` beside the results folder."""
    if args.checkpoint_every is None:
        if args.checkpoint_dir is not None:
            raise ValueError("--checkpoint-dir needs --checkpoint-every (stages between them)")
        return None
    folder = _out_folder(args.checkpoint_dir, f"{os.fspath(out).rstrip('/')}.checkpoints")
    folder = checkpoint.check_folder(folder)
    if os.path.abspath(folder) == os.path.abspath(out):
        raise ValueError("--checkpoint-dir must not be the results folder (--out)")
    return folder


def _finish_run(args, game, result, out, checkpoints) -> int:
    print(result.summary())
    _print_equilibria(game, result.distribution[-1])
    folder = write_results(result, out, plot=not args.no_plot, overwrite=args.overwrite)
    print(f"results written to {folder}")
    if checkpoints is not None:
        if args.keep_checkpoints:
            print(f"checkpoints kept in {checkpoints}")
        else:  # the results are written: they are no longer needed
            checkpoint.remove(checkpoints)
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    # The manifest only: js.resume reads and checks the files, once.
    path, manifest = checkpoint.read_manifest(args.checkpoint_dir)
    if manifest.get("kind", "simulation") != "simulation":
        raise ValueError(
            f"{args.checkpoint_dir} holds the checkpoints of a {manifest['kind']}, which "
            "`jaxstage resume` does not write results of: continue it with "
            "jaxstage.resume() in Python (a study's: `jaxstage study --resume`)"
        )
    extra = manifest.get("extra", {})
    out = _out_folder(args.out, extra.get("out"))
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
    game = rebuilt_game(manifest["game"])
    return _finish_run(args, game, result, out, path.parent)


def _cmd_br(args: argparse.Namespace) -> int:
    game = _game_from(args, {})
    initial = parse_initial(args.initial, game.num_actions)
    out = _out_folder(args.out, None)
    if out is not None:
        check_output_folder(out, overwrite=args.overwrite)
    result = js.best_reply_dynamics(
        game,
        args.agents,
        mode=args.mode,
        inertia=args.inertia,
        eps=args.eps,
        initial=initial,
        max_steps=args.max_steps,
        seed=args.seed,
        record_every=args.record_every,
    )
    print(
        f"game {game.name}, {args.agents:,} agents, {args.mode} best-reply dynamics"
        + (f" with inertia {args.inertia:g}" if args.mode == "simultaneous" else "")
        + f", eps={args.eps:g}, seed {args.seed}"
    )
    print(f"converged: {'yes' if result.converged else 'no'}")
    print(f"cycled: {'yes' if result.cycled else 'no'}")
    limit = result.config.get("max_steps")
    gave_up = limit is not None and result.steps >= limit and not result.converged
    print(f"steps: {result.steps:,}" + (f" (gave up at max_steps={limit:,})" if gave_up else ""))
    print(f"final distribution {_format_vector(result.distribution)}")
    print(f"eps-Nash gap {result.nash_gap:.4g}")
    _print_equilibria(game, result.distribution)
    if out is not None:
        folder = write_best_reply(
            result, out, record_every=args.record_every, overwrite=args.overwrite
        )
        print(f"results written to {folder}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    game = js.make_game(DEMO_GAME, **DEMO_GAME_PARAMS)
    out = _out_folder(args.out, DEMO_OUT)
    check_output_folder(out, overwrite=args.overwrite)  # fail before the runs, not after
    print(
        f"demo: {args.agents:,} agents on the {DEMO_GAME} game {DEMO_GAME_PARAMS}, "
        f"{DEMO_ROUNDS:,} rounds per information mode, eps={DEMO_EPS}, delta={DEMO_DELTA}"
    )
    _print_equilibria(game)
    runs, labels = [], []
    for mode, fields in DEMO_LEARNERS.items():
        learner = js.StageLearning(**fields)
        num_stages = max(1, DEMO_ROUNDS // int(fields["stage_length"]))
        settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(learner).items())
        print(f"\n== info={mode}: StageLearning({settings}), {num_stages} stages")
        result = js.simulate(
            game,
            learner,
            args.agents,
            num_stages,
            args.seed,
            eps=DEMO_EPS,
            delta=DEMO_DELTA,
            progress=not args.no_progress,
        )
        print(result.summary())
        _print_equilibria(game, result.distribution[-1])
        runs.append(result)
        labels.append(f"info={mode}")

    print()
    rounds = {label: run.convergence_round for label, run in zip(labels, runs, strict=True)}
    for label, value in rounds.items():
        if value is None:
            print(f"{label}: not converged within {DEMO_ROUNDS:,} rounds")
        else:
            print(f"{label}: converged at round {value:,}")
    if len(runs) == 2 and all(v is not None for v in rounds.values()):
        (first, a), (second, b) = rounds.items()
        if a and b:
            faster = f"{a / b:.3g}x fewer" if b <= a else f"{b / a:.3g}x more"
            print(f"{second} needed {faster} rounds than {first}")
    folder = write_results(
        runs, out, plot=not args.no_plot, overwrite=args.overwrite, labels=labels
    )
    print(f"results written to {folder}")
    return 0


# --------------------------------------------------------------------------- study

STUDY_OUT = {"quick": "results/study-quick", "full": "results/study"}


def _claims(text: str) -> list[str]:
    """``--claims C1,C3``: a comma-separated list of claims of :data:`jaxstage.study.CLAIMS`."""
    from jaxstage.study import CLAIMS

    claims = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in claims if c not in CLAIMS]
    if bad or not claims:
        raise argparse.ArgumentTypeError(
            f"unknown claim(s) {bad or [text]}; valid: {', '.join(CLAIMS)}"
        )
    return claims


def _cmd_study(args: argparse.Namespace) -> int:
    from jaxstage import study as st

    mode = "quick" if args.quick else "full"
    if args.write_definition is not None:
        # Only a copy of a built-in definition: run options here would be silently lost.
        given = [
            option
            for option, value in (
                ("--definition", args.definition),
                ("--out", args.out),
                ("--seeds", args.seeds),
                ("--max-agents", args.max_agents),
                ("--claims", args.claims),
                ("--experiments", args.experiments),
                ("--reuse", args.reuse),
                ("--overwrite", args.overwrite or None),
                ("--resume", args.resume or None),
                ("--checkpoint-every", args.checkpoint_every),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                f"--write-definition copies a built-in definition (--quick or --full) and "
                f"runs nothing; it takes none of {', '.join(given)}"
            )
        written = st.write_definition(mode, args.write_definition)
        print(
            f"wrote the {mode} study definition to {written}; edit it, then run "
            f"'jaxstage study --definition {written}'"
        )
        return 0
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    base = st.load_study(mode if args.definition is None else args.definition)
    chosen = st.select(
        base,
        claims=args.claims,
        max_agents=args.max_agents,
        seeds=args.seeds,
        experiments=args.experiments,
    )
    chosen.validate()
    default_out = STUDY_OUT[mode] if args.definition is None else f"results/study-{base.name}"
    out = _out_folder(args.out, default_out)
    st.check_study_folder(out, overwrite=args.overwrite)
    sweeps = sum(len(st.sweep_keys(e)) for e in chosen.experiments)
    print(
        f"study {base.name}: {len(chosen.experiments)} experiments, {sweeps} sweeps of "
        f"{chosen.seeds} seeds; writing {out}",
        file=sys.stderr,
    )
    folder = st.run_study(
        chosen,
        out,
        overwrite=args.overwrite,
        resume=args.resume,
        progress=not args.no_progress,
        reuse=args.reuse or (),
        checkpoint_every=args.checkpoint_every,
        command=" ".join(["jaxstage", "study"] + list(args.argv_rest)),
    )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    print(f"wrote {folder} in {config['wall_seconds']:.0f} s (see {folder / 'summary.md'})")
    return 0


# --------------------------------------------------------------------------- parser


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
    games.set_defaults(handler=_cmd_games)

    run = commands.add_parser(
        "run",
        help="simulate stage learning and write a results folder",
        description="Simulate stage learning. Options override the --config file; "
        "unset options take the file's value, else the default.",
        allow_abbrev=False,
    )
    run.add_argument("--config", metavar="FILE.toml", help="TOML file: [game], [learner], [run]")
    _add_game_options(run, f"default {DEFAULT_GAME}")
    run.add_argument(
        "--agents", type=_count, metavar="N", help=f"population (default {RUN_DEFAULTS['agents']})"
    )
    run.add_argument(
        "--stages", type=_count, metavar="S", help=f"stages (default {RUN_DEFAULTS['stages']})"
    )
    run.add_argument("--stage-length", type=_count, metavar="TAU", help="rounds per stage")
    run.add_argument("--explore", type=float, metavar="P", help="exploration probability")
    run.add_argument("--update-prob", type=float, metavar="P", help="adoption probability")
    run.add_argument("--info", choices=INFO_MODES, help="statistical information")
    run.add_argument("--info-sample-size", type=_count, metavar="M", help="noisy info: sample size")
    run.add_argument("--info-noise-std", type=float, metavar="STD", help="noisy distribution info")
    run.add_argument("--seed", type=_count, help="random seed (default 0)")
    run.add_argument("--eps", type=float, help="eps of eps-best replies (default 0.05)")
    run.add_argument("--delta", type=float, help="share allowed off eps-best (default 0.05)")
    run.add_argument(
        "--hold-stages", type=_count, metavar="H", help="convergence hold window (default: to end)"
    )
    run.add_argument(
        "--initial",
        metavar="INIT",
        help="'uniform' (default), an action index, or comma-separated probabilities",
    )
    run.add_argument("--out", metavar="FOLDER", help="results folder")
    run.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_devices_option(run)
    run.add_argument("--no-plot", action="store_true", help="do not write plot.png")
    run.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="K",
        help="write a checkpoint every K stages (continue a killed run with `jaxstage resume`)",
    )
    run.add_argument(
        "--checkpoint-dir", metavar="FOLDER", help="checkpoints folder (default: <out>.checkpoints)"
    )
    run.add_argument(
        "--keep-checkpoints", action="store_true", help="keep them once the results are written"
    )
    run.add_argument(
        "--resume",
        metavar="FOLDER",
        help="continue the run whose results folder (or checkpoints folder) this is",
    )
    run.set_defaults(handler=_cmd_run)

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
    resume.set_defaults(handler=_cmd_resume)

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
    br.set_defaults(handler=_cmd_br)

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
    demo.set_defaults(handler=_cmd_demo)

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
        "--claims", type=_claims, metavar="C1,C3,...", help="only experiments serving these claims"
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
    study.set_defaults(handler=_cmd_study)
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
