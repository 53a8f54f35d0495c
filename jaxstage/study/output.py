"""The study folder: what it may hold, the check before a study runs, and its atomic
write (tables, config.json, summary.md, plots)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxstage import folders
from jaxstage.study import plots as study_plots
from jaxstage.study.definition import Study
from jaxstage.study.journal import check_journal_folder, partial_folder
from jaxstage.study.mean_field_reference import MEAN_FIELD_MAX_WORK, MEAN_FIELD_TOLERANCE
from jaxstage.study.report import summary_markdown
from jaxstage.study.tables import (
    EXPECTED_MF_SLOPE,
    convergence_table,
    info_speedup_table,
    mf_distance_slopes_table,
    shortest_stage_length_table,
)
from jaxstage.tables import write_csv

__all__ = ["RUN_COLUMNS", "STUDY_FILES", "check_study_folder", "write_study"]

#: Columns of ``runs.csv``, in order.
RUN_COLUMNS = (
    "claims",
    "experiment",
    "game",
    "game_params",
    "num_agents",
    "variant",
    "learner",
    "eta",
    "info",
    "info_sample_size",
    "info_noise_std",
    "stage_length",
    "explore_prob",
    "update_prob",
    "num_stages",
    "round_budget",
    "eps",
    "delta",
    "hold_stages",
    "seed",
    "converged",
    "convergence_round",
    "final_nash_gap",
    "final_best_reply_fraction",
    "final_distance_to_equilibrium",
    "br_distance",
    "br_steps",
    "br_converged",
    "mf_distance",
    "kernel",
    "sweep_seconds",
    "jaxstage_version",
    "jax_version",
)

#: Every file a study folder may hold; an existing folder holding anything else is
#: never replaced.
STUDY_FILES = frozenset(
    {
        "runs.csv",
        "convergence.csv",
        "shortest_stage_length.csv",
        "info_speedup.csv",
        "mf_distance_slopes.csv",
        "series.csv",
        "config.json",
        "summary.md",
        "rounds_vs_population.png",
        "shortest_stage_length.png",
        "info_speedup.png",
        "br_distance.png",
        "mf_distance.png",
        "oscillation.png",
    }
)

#: A study folder, for the checks of :mod:`jaxstage.folders`.
STUDY_FOLDER = folders.FolderKind(
    files=STUDY_FILES,
    files_label="study files",
    replace_verb="write the study into",
    not_empty="already holds a study",
)


def _check_study_output(folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """The checks of the study folder itself (the ``check`` of its atomic write).

    Raises:
        ValueError: see :func:`check_study_folder`.
    """
    return folders.check_folder(folder, STUDY_FOLDER, overwrite=overwrite)


def check_study_folder(folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check that a study may be written to ``folder``; called before anything runs.

    Besides the folder itself, its journal folder (:func:`partial_folder`) is checked:
    when it exists it must be one jaxstage made (:func:`check_journal_folder`), and the
    place where it is made must be writable, so no mistake surfaces after hours of sweeps.
    That proof makes (and removes) a probe folder: in a run of several processes, only
    process 0 calls it (:func:`~jaxstage.study.processes.on_main`).

    Raises:
        ValueError: ``folder`` is empty, ``.`` or ``..``, a file or a link to nothing; or a
            non-empty folder without ``overwrite``; or it holds anything but study files
            (:data:`STUDY_FILES`), which is never replaced; or it (or the journal folder)
            cannot be written there; or ``<folder>.partial`` exists and holds anything but
            a journal (never used or deleted).
    """
    path = _check_study_output(folder, overwrite=overwrite)
    partial = partial_folder(path)
    check_journal_folder(partial)
    folders.check_writable(
        partial, partial.parent
    )  # beside ``folder`` (a link's target may differ)
    return path


def write_study(
    folder: str | os.PathLike[str],
    study: Study,
    runs: Sequence[dict[str, Any]],
    series: Sequence[dict[str, Any]],
    *,
    wall_seconds: float,
    command: str,
    overwrite: bool = False,
    plots: bool = True,
    reused: Sequence[dict[str, Any]] = (),
    mf_missing: dict[str, list[str]] | None = None,
) -> Path:
    """Write the tables, configuration, summary and plots of a study, atomically.

    ``reused`` lists the sweeps taken from other study folders (:func:`reusable_sweeps`);
    config.json and summary.md name them and their own run time. ``mf_missing`` says,
    once per reason, why ``mf_distance`` is missing for the settings listed
    (:func:`~jaxstage.study.mean_field_reference.missing_mean_field_reasons`);
    config.json and summary.md hold it.
    """
    from jaxstage.engine import versions as run_versions

    convergence = convergence_table(runs)
    shortest = shortest_stage_length_table(convergence)
    speedup = info_speedup_table(convergence, study.experiments)
    slopes = mf_distance_slopes_table(convergence)
    mf_missing = mf_missing or {}
    config = {
        "study": study.config(),
        "versions": run_versions(),
        "command": command,
        "wall_seconds": round(wall_seconds, 1),
        "reused_sweeps": {
            folder: sorted(e["sweep"] for e in reused if e["reused_from"] == folder)
            for folder in sorted({e["reused_from"] for e in reused})
        },
        "reused_sweep_seconds": round(sum(e["seconds"] for e in reused), 1),
        "convergence": (
            "converged: in (eps, delta)-equilibrium from some state to the end of the run, "
            "for at least hold_stages states; medians over all seeds with non-converged "
            "seeds as +inf"
        ),
        "br_distance": (
            "mean over stages 1..S of the L1 distance between the learners' distribution "
            "and simultaneous best-reply dynamics (inertia = update_prob, one step per "
            "stage, same initial counts; held when stopped, two-cycle continued)"
        ),
        "mf_distance": (
            "mean over stages 1..S of the L1 distance between the learners' distribution "
            "and the mean-field trajectory (MODEL.md section 9) of the same game, learner "
            "and number of stages from the exact uniform distribution (runs start from "
            "uniform draws: the initial sampling is part of the distance), computed once "
            f"per setting to {MEAN_FIELD_TOLERANCE:g} in L1 per stage, refused above "
            f"{MEAN_FIELD_MAX_WORK:g} units of work per stage; mf_distance_slopes.csv: "
            "least-squares slope of log(median mf_distance) on log(num_agents), "
            f"{EXPECTED_MF_SLOPE} where sampling noise dominates"
        ),
        "mf_distance_missing": mf_missing,
    }
    with folders.atomic_folder(folder, overwrite, _check_study_output, STUDY_FILES) as staging:
        write_csv(staging / "runs.csv", runs, RUN_COLUMNS)
        write_csv(staging / "convergence.csv", convergence)
        write_csv(staging / "shortest_stage_length.csv", shortest)
        write_csv(staging / "info_speedup.csv", speedup)
        write_csv(staging / "mf_distance_slopes.csv", slopes)
        if series:
            write_csv(staging / "series.csv", series)
        with open(staging / "config.json", "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, default=str)
            handle.write("\n")
        (staging / "summary.md").write_text(
            summary_markdown(
                study,
                convergence,
                shortest,
                speedup,
                wall_seconds,
                command,
                reused,
                slopes=slopes,
                mf_missing=mf_missing,
            ),
            encoding="utf-8",
        )
        if plots:
            study_plots.draw_plots(staging, convergence, shortest, speedup, series, slopes)
    return Path(folder)
