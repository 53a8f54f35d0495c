"""How the commands read their configuration: option values and ``run``'s TOML file.

:func:`load_config` reads and checks a ``--config`` file, :func:`parse_param` and
:func:`parse_initial` turn option values into what the library accepts, :func:`game_from`
builds the game from ``--game``/``--param`` over the file's ``[game]``, and
:func:`out_folder` resolves ``--out``.

A TOML configuration has three tables, all optional::

    [game]
    name = "congestion"      # a built-in game; the other keys are its parameters
    num_actions = 4
    b = [1, 2, 3, 4]

    [learner]                # StageLearning fields
    stage_length = 50
    explore_prob = 0.05
    update_prob = 0.05
    info = "none"            # info_sample_size, info_noise_std, info_sharing too

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
``--param`` entries are merged over them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxstage import checkpoint
from jaxstage.game_base import AnonymousGame
from jaxstage.games import GAMES, make_game

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
    "name",
    "eta",
    "stage_length",
    "explore_prob",
    "update_prob",
    "info",
    "info_sample_size",
    "info_noise_std",
    "info_sharing",
)
DEFAULT_GAME = "congestion"


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


def load_config(
    path: str | os.PathLike[str], tables: Sequence[str] = CONFIG_TABLES
) -> dict[str, dict[str, Any]]:
    """Read and check a TOML run configuration (tables ``game``, ``learner``, ``run``).

    Args:
        path: the ``.toml`` file.
        tables: the tables allowed (``jaxstage sweep`` adds ``sweep``, whose keys it
            checks itself).

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
    unknown = [key for key in data if key not in tables]
    if unknown:
        raise ValueError(
            f"{path_text}: unknown table(s) or key(s) {', '.join(map(repr, unknown))}; "
            f"valid tables: {', '.join(f'[{t}]' for t in tables)}"
        )
    config: dict[str, dict[str, Any]] = {}
    for table in tables:
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


def game_from(args: argparse.Namespace, file_game: dict[str, Any]) -> AnonymousGame:
    """The game of ``--game``/``--param`` (``args``) over a file's ``[game]`` table.

    Another game than the file's drops the file's parameters: they are that game's.
    """
    file_name = file_game.get("name")
    name = args.game or file_name or DEFAULT_GAME
    params = {k: v for k, v in file_game.items() if k != "name"} if name == file_name else {}
    for text in args.param or []:
        key, value = parse_param(text)
        params[key] = value
    return make_game(name, **params)


def out_folder(value: Any, default: str | None, option: str = "--out") -> Any:
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


def read_config(
    args: argparse.Namespace, tables: tuple[str, ...] = CONFIG_TABLES
) -> dict[str, dict[str, Any]]:
    """The ``--config`` file's tables (each empty when there is no file)."""
    if args.config is not None and not args.config.strip():
        raise ValueError("--config names no file: give the path of a TOML file, or leave it out")
    return load_config(args.config, tables) if args.config else {t: {} for t in tables}


def learner_options(args: argparse.Namespace, file_learner: dict[str, Any]) -> dict[str, Any]:
    """:func:`jaxstage.learners.make_learner` keywords (``name`` included): the file's
    ``[learner]`` with the options over it."""
    options = dict(file_learner)
    given = {
        "name": getattr(args, "learner", None),
        "eta": getattr(args, "eta", None),
        "stage_length": args.stage_length,
        "explore_prob": args.explore,
        "update_prob": args.update_prob,
        "info": args.info,
        "info_sample_size": args.info_sample_size,
        "info_noise_std": args.info_noise_std,
        "info_sharing": args.info_sharing,
    }
    options.update({k: v for k, v in given.items() if v is not None})
    return options


def run_options(args: argparse.Namespace, file_run: dict[str, Any]) -> dict[str, Any]:
    """The ``[run]`` values: defaults, then the file's, then the options."""
    run = {**RUN_DEFAULTS, **file_run}
    for key in RUN_DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            run[key] = value
    return run


def checkpoint_folder(args: argparse.Namespace, out: Any) -> Path | None:
    """The checkpoints folder of ``run``: none without ``--checkpoint-every``; by
    default ``<out>.checkpoints`` beside the results folder."""
    if args.checkpoint_every is None:
        if args.checkpoint_dir is not None:
            raise ValueError("--checkpoint-dir needs --checkpoint-every (stages between them)")
        return None
    folder = out_folder(args.checkpoint_dir, f"{os.fspath(out).rstrip('/')}.checkpoints")
    folder = checkpoint.check_folder(folder)
    if os.path.abspath(folder) == os.path.abspath(out):
        raise ValueError("--checkpoint-dir must not be the results folder (--out)")
    return folder


def settle_checkpoints(args: argparse.Namespace, checkpoints: Path | None) -> None:
    """Once the results are written their checkpoints are no longer needed: removed,
    unless ``--keep-checkpoints``."""
    if checkpoints is None:
        return
    if args.keep_checkpoints:
        print(f"checkpoints kept in {checkpoints}")
    else:
        checkpoint.remove(checkpoints)


def output_folders(
    args: argparse.Namespace, run: dict[str, Any], default_out: str
) -> tuple[Any, Path | None]:
    """The results folder (``--out``, else the file's ``out``, else ``default_out``),
    checked before a long run rather than after it, and the checkpoints folder."""
    from jaxstage.results import check_output_folder  # the results module is heavy

    out = out_folder(run["out"], default_out, "--out (or out = in [run])")
    if not isinstance(out, (str, os.PathLike)):
        raise ValueError(f"out must be a folder name, got {out!r}")
    check_output_folder(out, overwrite=args.overwrite)
    return out, checkpoint_folder(args, out)


def convergence_options(run: dict[str, Any], initial: Any) -> dict[str, Any]:
    """The keywords of ``simulate`` / ``sweep`` that ``[run]`` sets besides the size."""
    return {
        "eps": run["eps"],
        "delta": run["delta"],
        "hold_stages": run["hold_stages"],
        "initial": initial,
    }
