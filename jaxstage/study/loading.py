"""Study definitions as TOML files: the built-in ones, a user's copy, and the checks.

A definition is a TOML file (schema: docs/study.md) with a few top-level keys and one
``[[experiments]]`` table per :class:`~jaxstage.study.Experiment`, each with optional
``[[experiments.variants]]`` tables. The built-in definitions, ``quick`` and ``full``,
are package data (``jaxstage/study/definitions/*.toml``); :func:`write_definition`
copies one out to edit, :func:`load_study` reads a built-in or a user's file.

Every key and value is checked when the file is read, before anything runs: an unknown
key, a value of the wrong type or out of range is refused with a message naming the file,
the experiment, the key, the value and what is allowed; then :meth:`Study.validate`
checks the whole study (games, claims, baselines, learner settings).

Populations are a list of integers or a range of powers of ten:
``populations = { powers = [2, 5] }`` is ``[100, 1000, 10000, 100000]``. The top-level
``max_exponent`` (optional) caps every such range, and ``"max"`` as a range's upper end
means it: ``{ powers = [7, "max"] }`` is empty while ``max_exponent < 7``.

Example:
    >>> study = load_study("quick", seeds=3)
    >>> study.name, study.seeds, study.experiments[0].populations
    ('quick', 3, (100, 1000, 10000, 100000))
    >>> load_study("full", max_exponent=4).experiments[0].populations
    (100, 1000, 10000)
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from jaxstage.study.definition import Experiment, InfoVariant, Study

__all__ = [
    "BUILTIN_DEFINITIONS",
    "OVERRIDES",
    "load_study",
    "parse_definition",
    "definition_text",
    "write_definition",
    "quick_study",
    "full_study",
]

#: The definitions shipped with jaxstage (``jaxstage/study/definitions/<name>.toml``).
BUILTIN_DEFINITIONS = ("quick", "full")

#: Top-level keys :func:`load_study` may override (``load_study("full", seeds=3)``).
OVERRIDES = ("name", "seeds", "max_exponent")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class _Where:
    """Where a value sits (``'my.toml': experiment 'core': key 'seeds'``), for messages."""

    def __init__(self, source: str, experiment: str | None = None, variant: str | None = None):
        self.source, self.experiment, self.variant = source, experiment, variant

    def at(self, key: str) -> str:
        parts = [repr(self.source)]
        if self.experiment is not None:
            parts.append(f"experiment {self.experiment!r}")
        if self.variant is not None:
            parts.append(f"variant {self.variant!r}")
        return ": ".join(parts) + f": key {key!r}"


# --------------------------------------------------------------------------- values


def _int(value: Any, where: str, low: int | None = None) -> int:
    # TOML booleans are not integers here, even though Python's bool is one.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{where} must be an integer >= {low}, got {value}")
    return value


def _real(value: Any, where: str) -> float:
    # An integer is taken as the float it means: ``update_probs = [1, 0.1]`` must give the
    # same definition (and the same config.json) as ``[1.0, 0.1]``.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}")
    return value


def _list(value: Any, where: str, item: Callable[[Any, str], Any]) -> tuple:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where} must be a non-empty list, got {value!r}")
    return tuple(item(v, f"{where}, entry {i + 1},") for i, v in enumerate(value))


def _populations(value: Any, where: str, max_exponent: int | None) -> tuple[int, ...]:
    """A list of populations, or ``{powers = [low, high]}`` capped at ``max_exponent``."""
    if not isinstance(value, dict):
        return _list(value, where, lambda v, w: _int(v, w, low=1))
    if set(value) != {"powers"}:
        raise ValueError(
            f"{where} must be a list of integers or {{ powers = [low, high] }}, got {value!r}"
        )
    span = value["powers"]
    if not isinstance(span, list) or len(span) != 2:
        raise ValueError(f"{where}: powers must be [low, high], got {span!r}")
    low = _int(span[0], f"{where}: powers low", low=0)
    if span[1] == "max":
        if max_exponent is None:
            raise ValueError(f'{where}: powers [{low}, "max"] needs the top-level key max_exponent')
        high = max_exponent
    else:
        high = _int(span[1], f'{where}: powers high (an integer or "max")', low=0)
        if high < low:
            raise ValueError(f"{where}: powers [{low}, {high}] must have low <= high")
        if max_exponent is not None:
            high = min(high, max_exponent)
    if high > 9:  # 10^10 agents is past the engine's limit of 2^31 - 1
        raise ValueError(f"{where}: powers of ten go up to 10^9, got 10^{high}")
    return tuple(10**e for e in range(low, high + 1))


def _known(table: dict[str, Any], allowed: dict[str, Any], where: _Where, what: str) -> None:
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise ValueError(
            f"{where.at(unknown[0])}: unknown {what} key; allowed: {', '.join(allowed)}"
        )


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a table, got {value!r}")
    return value


# --------------------------------------------------------------------------- the schema

_TOP = {"name": None, "seeds": None, "max_exponent": None, "experiments": None}
_VARIANT = {
    "label": _text,
    "info": _text,
    "sample_size": lambda v, w: _int(v, w, low=1),
    "noise_std": _real,
    "sharing": _text,
    "stage_lengths": lambda v, w: _list(v, w, lambda x, y: _int(x, y, low=1)),
    "update_probs": lambda v, w: _list(v, w, _real),
    "learner": _text,
    "explore_prob": _real,
    "eta": _real,
}
_EXPERIMENT = {
    "name": _text,
    "claims": lambda v, w: _list(v, w, _text),
    "game": _text,
    "game_params": _table,
    "populations": None,  # needs max_exponent: read by _populations
    "variants": None,  # tables of _VARIANT keys
    "stage_lengths": _VARIANT["stage_lengths"],
    "update_probs": _VARIANT["update_probs"],
    "explore_prob": _real,
    "round_budget": lambda v, w: _int(v, w, low=1),
    "eps": _real,
    "delta": _real,
    "hold_stages": lambda v, w: _int(v, w, low=1),
    "baseline": _text,
    "series": _flag,
    "series_seeds": lambda v, w: _int(v, w, low=1),
}
_REQUIRED = ("name", "claims", "game", "populations")


def _variant(table: Any, where: _Where, index: int) -> InfoVariant:
    table = _table(table, f"{where.at('variants')}, entry {index + 1},")
    if "label" not in table:
        raise ValueError(f"{where.at('variants')}, entry {index + 1}, needs a label")
    label = _text(table["label"], where.at("label"))
    here = _Where(where.source, where.experiment, label)
    _known(table, _VARIANT, here, "variant")
    return InfoVariant(**{key: _VARIANT[key](value, here.at(key)) for key, value in table.items()})


def _experiment(table: Any, source: str, index: int, max_exponent: int | None) -> Experiment:
    table = _table(table, f"{source!r}: experiments[{index}]")
    name = table.get("name", f"#{index + 1}")
    where = _Where(source, str(name))
    _known(table, _EXPERIMENT, where, "experiment")
    missing = [key for key in _REQUIRED if key not in table]
    if missing:
        raise ValueError(f"{source!r}: experiment {name!r} needs the key(s) {missing}")
    fields: dict[str, Any] = {}
    for key, value in table.items():
        if key == "populations":
            fields[key] = _populations(value, where.at(key), max_exponent)
        elif key == "variants":
            if not isinstance(value, list) or not value:
                raise ValueError(f"{where.at(key)} must be [[experiments.variants]] tables")
            fields[key] = tuple(_variant(v, where, i) for i, v in enumerate(value))
        else:
            fields[key] = _EXPERIMENT[key](value, where.at(key))
    return Experiment(**fields)


def parse_definition(
    data: dict[str, Any], *, source: str = "<definition>", drop_empty: bool = True
) -> Study:
    """A :class:`Study` from a parsed TOML definition (overrides already applied).

    Args:
        data: the TOML document as :func:`tomllib.loads` returns it.
        source: the file it came from, for messages.
        drop_empty: leave out experiments that ``max_exponent`` left without any
            population (as :func:`~jaxstage.study.select` leaves out those that
            ``max_agents`` empties); ``False`` keeps them, as :func:`full_study` always
            did (such a study does not validate).

    Raises:
        ValueError: an unknown key, a missing one, or a value of the wrong type or out of
            range, named with its file, experiment and key; then anything
            :meth:`Study.validate` refuses.
    """
    top = _Where(source)
    _known(data, _TOP, top, "top-level")
    for key in ("name", "experiments"):
        if key not in data:
            raise ValueError(f"{source!r}: needs the top-level key {key!r}")
    name = _text(data["name"], top.at("name"))
    if not _NAME.fullmatch(name):
        # The name becomes part of the default output folder's name.
        raise ValueError(f"{top.at('name')} must be letters, digits, '_', '-' or '.', got {name!r}")
    seeds = _int(data.get("seeds", 10), top.at("seeds"), low=1)
    max_exponent = data.get("max_exponent")
    if max_exponent is not None:
        max_exponent = _int(max_exponent, top.at("max_exponent"), low=0)
    tables = data["experiments"]
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{top.at('experiments')} must be one or more [[experiments]] tables")
    experiments = tuple(_experiment(t, source, i, max_exponent) for i, t in enumerate(tables))
    if drop_empty:
        experiments = tuple(e for e in experiments if e.populations)
    study = Study(name, experiments, seeds)
    if drop_empty:
        study.validate()
    return study


# --------------------------------------------------------------------------- files


def _builtin(name: str) -> Any:
    """The packaged definition file (importlib.resources: works from a wheel, a zip or an
    editable install alike)."""
    if name not in BUILTIN_DEFINITIONS:
        raise ValueError(
            f"unknown built-in study definition {name!r}; built-in: "
            f"{', '.join(BUILTIN_DEFINITIONS)} (or give the path of a .toml file)"
        )
    return resources.files("jaxstage.study").joinpath("definitions", f"{name}.toml")


def definition_text(name: str) -> str:
    """The TOML text of a built-in definition (``"quick"`` or ``"full"``), comments kept."""
    return _builtin(name).read_text(encoding="utf-8")


def _read(definition: str | os.PathLike[str]) -> tuple[str, str]:
    """``(text, source)`` of a built-in name or a file path."""
    if isinstance(definition, str) and definition in BUILTIN_DEFINITIONS:
        return definition_text(definition), f"built-in {definition}"
    path = Path(definition)
    if not path.is_file():
        raise ValueError(
            f"study definition {str(path)!r} is not a file; give a .toml file or a built-in "
            f"name ({', '.join(BUILTIN_DEFINITIONS)})"
        )
    return path.read_text(encoding="utf-8"), str(path)


def _overridden(data: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    bad = [key for key in overrides if key not in OVERRIDES]
    if bad:
        raise ValueError(
            f"unknown override(s) {bad} of {source!r}; allowed: {', '.join(OVERRIDES)}"
        )
    # ``None`` leaves a key as the file has it, so callers can pass optional flags through.
    return data | {key: value for key, value in overrides.items() if value is not None}


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{source!r} is not valid TOML: {error}") from None


def load_study(definition: str | os.PathLike[str], **overrides: Any) -> Study:
    """Read a study definition: a built-in name (:data:`BUILTIN_DEFINITIONS`) or the path
    of a TOML file (e.g. one written by :func:`write_definition` and edited).

    Args:
        definition: ``"quick"``, ``"full"`` or a path.
        **overrides: top-level keys to replace (:data:`OVERRIDES`: ``name``, ``seeds``,
            ``max_exponent``); ``None`` keeps the file's value.

    Returns:
        The validated :class:`Study`; experiments that ``max_exponent`` leaves without a
        population are left out.

    Raises:
        ValueError: not a built-in name nor a file, not TOML, an unknown override, or
            any refusal of :func:`parse_definition` (naming the file, key and value).
    """
    text, source = _read(definition)
    data = _overridden(_parse_toml(text, source), overrides, source)
    return parse_definition(data, source=source)


def write_definition(name: str, path: str | os.PathLike[str]) -> Path:
    """Copy the built-in definition ``name`` to ``path`` (a new file), to edit and run.

    Raises:
        ValueError: ``name`` is not built in, or ``path`` exists (never replaced: it may
            be the user's edited copy) or cannot be created.
    """
    text = definition_text(name)
    target = Path(path)
    try:
        with open(target, "x", encoding="utf-8") as handle:  # "x": never an existing file
            handle.write(text)
    except FileExistsError:
        raise ValueError(
            f"{str(target)!r} already exists; choose another file name (it is never replaced)"
        ) from None
    except OSError as error:
        raise ValueError(f"cannot write {str(target)!r}: {error.strerror or error}") from None
    return target


def _builtin_study(name: str, **overrides: Any) -> Study:
    source = f"built-in {name}"
    data = _overridden(_parse_toml(definition_text(name), source), overrides, source)
    return parse_definition(data, source=source, drop_empty=False)


def quick_study(seeds: int = 10) -> Study:
    """Every claim at reduced scale (populations 10^2..10^5); under 10 minutes on 2 CPU
    cores, most of it compilation (about 5 s per sweep). Read from ``quick.toml``."""
    return _builtin_study("quick", seeds=seeds)


def full_study(seeds: int = 10, max_exponent: int = 7) -> Study:
    """Populations 10^2..10^``max_exponent`` for the core experiment (C1, C2, C5), for
    exact information (C3), for noisy information (C4) and for the stage-length search
    (C2; its two shortest stage lengths only from 10^7 on), for the other games (from 10^7
    on with update_prob 0.3 only), 10^3..10^5 for the oscillating cases. Read from
    ``full.toml`` (its comments say why each setting); experiments that ``max_exponent``
    leaves without a population are kept, empty, as they always were (use
    :func:`load_study` for a study that runs as it is).
    """
    return _builtin_study("full", seeds=seeds, max_exponent=max_exponent)
