"""What a study keeps between sweeps: the journal of an unfinished run, and the sweeps
that finished studies already ran.

**The journal.** A running study appends every finished sweep to
``<folder>.partial/sweeps.jsonl`` (:func:`partial_folder`), beside ``study.json``, the
definition it belongs to; ``resume`` skips the sweeps journalled by the same definition.
The journal folder is only ever read, rewritten or deleted when it holds nothing but
journal files (:data:`JOURNAL_FILES`) and the checkpoints of the sweep being run
(:data:`SWEEP_CHECKPOINTS`), and deleted file by file, never recursively.

**Reuse.** :func:`reusable_sweeps` finds, in finished study folders, the sweeps a study
would run again.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxstage import checkpoint
from jaxstage.study.definition import (
    Experiment,
    InfoVariant,
    Study,
    experiment_data,
    sweep_keys,
    sweep_update_probs,
    variant_data,
)
from jaxstage.study.tables import group_rows
from jaxstage.tables import read_csv

__all__ = [
    "JOURNAL_FILES",
    "SWEEP_CHECKPOINTS",
    "partial_folder",
    "sweep_id",
    "check_journal_folder",
    "remove_journal",
    "open_journal",
    "journal_entries",
    "append_entry",
    "reusable_sweeps",
]


def partial_folder(folder: str | os.PathLike[str]) -> Path:
    """Where a running study journals its finished sweeps: ``<folder>.partial``."""
    path = Path(folder)
    return path.with_name(path.name + ".partial")


def sweep_id(exp: Experiment, variant: InfoVariant, n: int, tau: int) -> str:
    return f"{exp.name}|{variant.label}|{n}|{tau}"


#: The files a study's journal folder holds; one holding anything else is not jaxstage's.
JOURNAL_FILES = frozenset({"sweeps.jsonl", "study.json"})
#: The folder in it that holds the checkpoints of the sweep being run
#: (:mod:`jaxstage.checkpoint`: only its own file names are ever removed from it).
SWEEP_CHECKPOINTS = "sweep.checkpoints"


def check_journal_folder(partial: Path) -> bool:
    """Whether the journal folder ``partial`` exists; refuse it if jaxstage did not make it.

    ``<folder>.partial`` is a plain name a user may well have used; it is only ever read,
    rewritten or deleted when it is a real folder holding nothing but the journal files
    (:data:`JOURNAL_FILES`, an empty folder counting as a journal cut short at its start).

    Raises:
        ValueError: naming the folder and what in it is not a journal file.
    """
    if not os.path.lexists(partial):
        return False
    if partial.is_symlink() or not partial.is_dir():
        kind = "a symbolic link" if partial.is_symlink() else "not a folder"
        raise ValueError(
            f"{str(partial)!r} is in the way of the study's journal: it is {kind}, not a "
            f"journal folder made by jaxstage; move it away or choose another --out"
        )
    foreign = sorted(
        entry.name
        for entry in os.scandir(partial)
        if not (entry.name in JOURNAL_FILES and entry.is_file(follow_symlinks=False))
        and not (entry.name == SWEEP_CHECKPOINTS and entry.is_dir(follow_symlinks=False))
    )
    if foreign:
        raise ValueError(
            f"refusing to use or remove {str(partial)!r}: it holds {foreign[:5]}, which are "
            f"not files of a study journal ({', '.join(sorted(JOURNAL_FILES))}); move them "
            f"away or choose another --out"
        )
    return True


def remove_journal(partial: Path) -> None:
    """Delete the journal folder: its journal files one by one, then the folder if empty.

    Never a recursive delete: whatever else appeared in it is kept, with a warning.
    """
    checkpoint.remove(partial / SWEEP_CHECKPOINTS)  # checkpoint files only
    for name in sorted(JOURNAL_FILES):
        (partial / name).unlink(missing_ok=True)
    try:
        partial.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        left = sorted(p.name for p in partial.iterdir()) if partial.is_dir() else []
        warnings.warn(
            f"kept {str(partial)!r}: it holds {left[:5]}, which are not study journal files",
            RuntimeWarning,
            stacklevel=3,
        )


def journal_entries(journal: Path) -> dict[str, dict[str, Any]]:
    """The whole entries of the journal file ``journal``, by sweep, up to the first line
    cut short by an interruption (that sweep is run again)."""
    done: dict[str, dict[str, Any]] = {}
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break
        done[entry["sweep"]] = entry
    return done


def append_entry(journal: Path, entry: dict[str, Any]) -> None:
    """Append one finished sweep to the journal file, on disk before it returns."""
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def open_journal(study: Study, folder: Path, *, resume: bool, overwrite: bool):
    """The partial folder's journal, and the sweeps it already holds (``resume``).

    It may rewrite, remove or make the journal: in a run of several processes only
    process 0 calls it; the others then read the journal (:func:`journal_entries`).

    Raises:
        ValueError: a partial folder exists and neither ``resume`` nor ``overwrite`` is
            given, or it belongs to a different study definition, or it holds anything
            but journal files (:func:`check_journal_folder`; never used or deleted).
    """
    partial = partial_folder(folder)
    journal, definition = partial / "sweeps.jsonl", partial / "study.json"
    wanted = json.dumps(study.config(), sort_keys=True, default=str)
    done: dict[str, dict[str, Any]] = {}
    if check_journal_folder(partial):
        if resume:
            found = definition.read_text(encoding="utf-8") if definition.is_file() else None
            if found != wanted:
                raise ValueError(
                    f"cannot resume from {str(partial)!r}: it was written by a different "
                    f"study definition (or is damaged); pass --overwrite to start again"
                )
            done = journal_entries(journal)
            # Keep only whole entries: new ones must not be appended to a cut-short line.
            entries = "".join(json.dumps(entry, default=str) + "\n" for entry in done.values())
            journal.write_text(entries, encoding="utf-8")
        elif overwrite:
            remove_journal(partial)
        else:
            raise ValueError(
                f"{str(partial)!r} holds an interrupted run of a study; pass --resume to "
                f"continue it or --overwrite to start again"
            )
    if not done:
        partial.mkdir(parents=True, exist_ok=True)
        definition.write_text(wanted, encoding="utf-8")
        journal.write_text("", encoding="utf-8")
    return journal, done


# --------------------------------------------------------------------------- reuse

#: Columns of ``runs.csv`` and ``series.csv`` that hold text, not numbers.
_TEXT_COLUMNS = frozenset(
    {
        "claims",
        "experiment",
        "game",
        "game_params",
        "variant",
        "learner",
        "info",
        "kernel",
        "jaxstage_version",
        "jax_version",
        "distribution",
    }
)


def _typed_cell(column: str, text: str) -> Any:
    """A cell of a study table read back as the value :func:`run_sweep` wrote."""
    if column in _TEXT_COLUMNS:
        return text
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    number = float(text)
    return int(number) if number.is_integer() and "." not in text and "e" not in text else number


def _typed_rows(path: Path) -> list[dict[str, Any]]:
    return [{k: _typed_cell(k, v) for k, v in row.items()} for row in read_csv(path)]


def _json_data(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _same_sweep_definition(exp: Experiment, found: dict[str, Any], variant: InfoVariant) -> bool:
    """Whether ``found`` (an experiment of another study's config.json) defines the sweep
    of ``variant`` exactly as ``exp`` does; populations may differ."""
    ours = _json_data(experiment_data(exp))
    for key in ("populations", "variants"):
        ours.pop(key)
    theirs = {k: v for k, v in found.items() if k not in ("populations", "variants")}
    if ours != theirs:
        return False
    wanted = _json_data(variant_data(variant))
    return any(v == wanted for v in found.get("variants", []))


def reusable_sweeps(study: Study, folders: Sequence[str | os.PathLike[str]]) -> dict[str, dict]:
    """Sweeps of ``study`` that finished studies in ``folders`` already ran.

    A sweep (experiment, variant, population, stage length) is taken from a folder when
    that folder's study ran an experiment of the same name with the same definition
    (every field but the populations and the other variants), the same variant, the same
    number of seeds, and holds all of the sweep's rows. Its rows are taken as written,
    with the jaxstage and jax versions that produced them; nothing checks that the
    simulation is unchanged since, so reuse only results of the same release. The first
    folder holding a sweep wins.

    Raises:
        ValueError: a folder is not a finished study folder (no config.json or runs.csv).
    """
    found: dict[str, dict] = {}
    wanted = {
        sweep_id(exp, variant, n, tau): (exp, variant, n, tau)
        for exp in study.experiments
        for variant, n, tau in sweep_keys(exp)
    }
    for folder in folders:
        path = Path(folder)
        config_path, runs_path = path / "config.json", path / "runs.csv"
        if not config_path.is_file() or not runs_path.is_file():
            raise ValueError(
                f"cannot reuse {str(path)!r}: not a finished study folder "
                f"(needs config.json and runs.csv)"
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config["study"]["seeds"] != study.seeds:
            continue
        definitions = {e["name"]: e for e in config["study"]["experiments"]}
        series_path = path / "series.csv"
        series = _typed_rows(series_path) if series_path.is_file() else []
        rows_by_sweep = group_rows(
            _typed_rows(runs_path), ("experiment", "variant", "num_agents", "stage_length")
        )
        series_by_sweep = group_rows(
            series, ("experiment", "variant", "num_agents", "stage_length")
        )
        for key_id, (exp, variant, n, tau) in wanted.items():
            if key_id in found or exp.name not in definitions:
                continue
            if not _same_sweep_definition(exp, definitions[exp.name], variant):
                continue
            key = (exp.name, variant.label, n, tau)
            rows = rows_by_sweep.get(key, [])
            if len(rows) != study.seeds * len(sweep_update_probs(exp, variant)):
                continue
            for row in rows:  # folders written before other learners existed
                row.setdefault("learner", "stage")
                row.setdefault("eta", None)
            found[key_id] = {
                "sweep": key_id,
                "seconds": float(rows[0]["sweep_seconds"]),
                "runs": rows,
                "series": series_by_sweep.get(key, []),
                "reused_from": str(path),
            }
    return found
