"""Running a study: one batched sweep at a time, each journalled as it finishes.

:func:`run_study` checks the folder, runs (or resumes, or reuses) every sweep and writes
the folder at the end; :func:`run_sweep` turns one sweep's runs into rows of the runs
table; :func:`sweep_result` is the one call of :func:`jaxstage.sweep`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxstage import checkpoint, distributed, folders
from jaxstage._validation import check_int
from jaxstage.resumable import run_with_checkpoints
from jaxstage.study.definition import (
    Experiment,
    InfoVariant,
    Study,
    sweep_keys,
    sweep_update_probs,
    variant_learner,
)
from jaxstage.study.journal import (
    SWEEP_CHECKPOINTS,
    append_entry,
    journal_entries,
    open_journal,
    partial_folder,
    remove_journal,
    reusable_sweeps,
    sweep_id,
)
from jaxstage.study.mean_field_reference import (
    MeanFieldReference,
    MeanFieldSetting,
    mean_field_reference,
    missing_mean_field_reasons,
    setting_of_row,
)
from jaxstage.study.measures import br_reference, mf_reference_distance, study_convergence
from jaxstage.study.output import check_study_folder, write_study
from jaxstage.study.processes import agreed, on_main
from jaxstage.tables import plain_number

__all__ = ["sweep_result", "run_sweep", "run_experiment", "run_study", "SweepCheckpoints"]


def sweep_result(
    exp: Experiment,
    variant: InfoVariant,
    n: int,
    tau: int,
    seeds: int,
    kernel: str,
    *,
    checkpoints: SweepCheckpoints | None = None,
) -> tuple[Any, Any, list[float], list[int]]:
    """One batched sweep: rows are (update_prob, seed) pairs.

    The study's only call of :func:`jaxstage.sweep`. With ``checkpoints`` the sweep is
    checkpointed into ``checkpoints.folder`` (every ``checkpoints.every`` stages, default
    a tenth of the sweep), and resumed from there when that folder holds this sweep's
    checkpoints: a study killed in a long sweep continues it from its last checkpoint,
    with bitwise the numbers of an uninterrupted sweep. Sweeps of other learners than
    stage learning are never checkpointed (they cannot be): a killed one runs again.

    Returns:
        ``(game, result, row_probs, row_seeds)``: the game, the
        :class:`~jaxstage.SweepResult` and the update_prob (``None`` for a learner
        without one) and seed of each row.
    """
    import jaxstage as js

    game = js.make_game(exp.game, **exp.game_params)
    probs = sweep_update_probs(exp, variant)
    learner = variant_learner(exp, variant, tau)
    row_probs = [p for p in probs for _ in range(seeds)]
    row_seeds = [s for _ in probs for s in range(seeds)]
    rows = (row_probs, row_seeds)
    options = {"seeds": row_seeds, "eps": exp.eps, "delta": exp.delta, "kernel": kernel}
    if variant.learner == "stage":
        options["update_prob"] = row_probs
    else:
        options.pop("kernel")  # other learners run on the reference kernel only
    if variant.learner != "stage":
        checkpoints = None  # only stage learning's runs can be checkpointed (docs/learners.md)
    if checkpoints is not None and checkpoints.held(sweep_id(exp, variant, n, tau)):
        try:
            return game, js.resume(checkpoints.folder, game=game, learner=learner), *rows
        except checkpoint.CheckpointError as error:  # damaged, or other versions
            if distributed.is_main_process():
                warnings.warn(
                    f"the checkpoints of sweep {sweep_id(exp, variant, n, tau)} cannot be "
                    f"resumed ({error}); the sweep is run again from its start",
                    RuntimeWarning,
                    stacklevel=2,
                )
    if checkpoints is None or not checkpoints.wanted(n * len(row_seeds)):
        result = js.sweep(game, learner, n, exp.stages(tau), **options)
    else:
        # Process 0 removes stale checkpoints; the others wait, then all check the folder.
        on_main(checkpoints.clear, "clear the sweep checkpoints")
        batch = js.Sweep(game, learner, n, exp.stages(tau), **options)
        every = checkpoints.every or math.ceil(batch.num_stages / 10)
        result = run_with_checkpoints(
            batch,
            checkpoints.folder,
            every=min(every, batch.num_stages),
            extra={"study_sweep": sweep_id(exp, variant, n, tau)},
        )
    return game, result, *rows


#: The smallest sweep (agents over all rows) a study checkpoints by default.
CHECKPOINTED_AGENTS = 10**6


@dataclasses.dataclass(frozen=True)
class SweepCheckpoints:
    """Where a study checkpoints the sweep it is running (one at a time), and how often
    (``every`` stages; ``None``: a tenth of each sweep, and only sweeps of at least
    :data:`CHECKPOINTED_AGENTS` agents over all rows: smaller ones take seconds, less than
    their checkpoints would cost)."""

    folder: Path
    every: int | None = None

    def wanted(self, agents: int) -> bool:
        """Whether a sweep of ``agents`` agents (all rows) is checkpointed."""
        return self.every is not None or agents >= CHECKPOINTED_AGENTS

    def holds(self, key: str) -> bool:
        """Whether ``folder`` holds checkpoints of the sweep ``key``."""
        try:
            _, manifest = checkpoint.read_manifest(self.folder)
        except checkpoint.CheckpointError:
            return False
        return manifest.get("extra", {}).get("study_sweep") == key

    def held(self, key: str) -> bool:
        """:meth:`holds` as every process agrees (a collective): all resume the sweep, or
        none, even should one process not see the folder as the others do."""
        return distributed.agreed_min(int(self.holds(key))) == 1

    def clear(self) -> None:
        """Remove the checkpoints (only checkpoint files: :func:`jaxstage.checkpoint.remove`).
        In a run of several processes, call it on process 0 only (:func:`on_main`)."""
        checkpoint.remove(self.folder)


def run_experiment(
    exp: Experiment,
    seeds: int,
    *,
    kernel: str = "auto",
    on_sweep: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every sweep of one experiment.

    Returns:
        ``(runs, series)``: one row per run (columns :data:`RUN_COLUMNS`) and, for
        experiments with ``series=True``, one row per recorded state of the first
        ``series_seeds`` seeds of each sweep row group.
    """
    runs: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    mean_fields: dict[MeanFieldSetting, MeanFieldReference] = {}
    for variant, n, tau in sweep_keys(exp):
        more_runs, more_series, seconds = run_sweep(
            exp, variant, n, tau, seeds, kernel=kernel, mean_fields=mean_fields
        )
        runs.extend(more_runs)
        series.extend(more_series)
        if on_sweep is not None and distributed.is_main_process():
            on_sweep(f"{exp.name} {variant.label} n={n:,} tau={tau}: {seconds:.1f} s")
    return runs, series


def run_sweep(
    exp: Experiment,
    variant: InfoVariant,
    n: int,
    tau: int,
    seeds: int,
    *,
    kernel: str = "auto",
    checkpoints: SweepCheckpoints | None = None,
    mean_fields: dict[MeanFieldSetting, MeanFieldReference] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """One batched sweep of ``exp`` (all update probabilities and seeds) at one variant,
    population and stage length, checkpointed as :func:`sweep_result` says. Returns
    ``(runs, series, seconds)`` as :func:`run_experiment` (a resumed sweep's seconds are
    those of its resumed part, and leave out the mean-field references).

    ``mean_fields`` caches the mean-field trajectory of each setting
    (:func:`~jaxstage.study.mean_field_reference.mean_field_reference`): pass one dict
    for all the sweeps of a study so that each setting's is computed once.
    """
    from jaxstage.engine import versions as run_versions

    versions = run_versions()
    runs: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    started = time.perf_counter()
    game, result, row_probs, row_seeds = sweep_result(
        exp, variant, n, tau, seeds, kernel, checkpoints=checkpoints
    )
    seconds = time.perf_counter() - started
    mean_fields = {} if mean_fields is None else mean_fields
    learner = variant_learner(exp, variant, tau)
    for run, prob, seed in zip(result.runs, row_probs, row_seeds, strict=True):
        hold = exp.hold(tau)
        convergence = study_convergence(run.in_equilibrium, run.rounds, hold)
        stage = variant.learner == "stage"
        # Best-reply dynamics with inertia update_prob and the mean-field map model stage
        # learning (MODEL.md sections 5 and 9): for other learners both are left empty.
        distance, steps, br_ok = (
            br_reference(game, run, prob, exp.eps, seed) if stage else (None, None, None)
        )
        final_distance = run.distance_to_equilibrium
        row = {
            "claims": ";".join(exp.claims),
            "experiment": exp.name,
            "game": exp.game,
            "game_params": json.dumps(exp.game_params, sort_keys=True),
            "num_agents": n,
            "variant": variant.label,
            "learner": variant.learner,
            "eta": getattr(learner, "eta", None),
            "info": variant.info,
            "info_sample_size": variant.sample_size,
            "info_noise_std": variant.noise_std,
            "stage_length": tau,
            "explore_prob": exp.explore_prob
            if variant.explore_prob is None
            else variant.explore_prob,
            "update_prob": prob,
            "num_stages": exp.stages(tau),
            "round_budget": exp.round_budget,
            "eps": exp.eps,
            "delta": exp.delta,
            "hold_stages": hold,
            "seed": seed,
            "converged": convergence is not None,
            "convergence_round": convergence,
            "final_nash_gap": plain_number(run.nash_gap[-1]),
            "final_best_reply_fraction": plain_number(run.best_reply_fraction[-1]),
            "final_distance_to_equilibrium": None
            if final_distance is None
            else plain_number(final_distance[-1]),
            "br_distance": distance,
            "br_steps": steps,
            "br_converged": br_ok,
            "kernel": run.config.get("kernel"),
            "sweep_seconds": round(seconds, 3),
            "jaxstage_version": versions["jaxstage"],
            "jax_version": versions["jax"],
        }
        if stage:
            reference = mean_field_reference(setting_of_row(row), mean_fields)
            row["mf_distance"] = mf_reference_distance(run, reference)
        else:
            row["mf_distance"] = None
        runs.append(row)
        if exp.series and seed < exp.series_seeds:
            for s in range(len(run.rounds)):
                series.append(
                    {
                        "experiment": exp.name,
                        "game": exp.game,
                        "num_agents": n,
                        "variant": variant.label,
                        "stage_length": tau,
                        "update_prob": prob,
                        "seed": seed,
                        "stage": s,
                        "round": int(run.rounds[s]),
                        "nash_gap": plain_number(run.nash_gap[s]),
                        "best_reply_fraction": plain_number(run.best_reply_fraction[s]),
                        "distribution": json.dumps(
                            [round(float(x), 6) for x in run.distribution[s]]
                        ),
                    }
                )
    return runs, series, seconds


def run_study(
    study: Study,
    folder: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    kernel: str = "auto",
    plots: bool = True,
    command: str | None = None,
    reuse: Sequence[str | os.PathLike[str]] = (),
    checkpoint_every: int | None = None,
) -> Path:
    """Validate, run every sweep of ``study`` and write its folder.

    The folder is checked before anything runs and written atomically at the end, so an
    interrupted study leaves no complete-looking folder. Each finished sweep is appended
    to a journal in ``<folder>.partial/`` (:func:`partial_folder`); with ``resume`` a
    study interrupted earlier skips the sweeps it journalled (same definition only). The
    journal is removed once the folder is written (its files only: a ``<folder>.partial``
    holding anything else is refused up front and never deleted). ``wall_seconds`` counts
    the sweeps' own run time, journalled ones included.

    ``reuse`` names finished study folders whose matching sweeps are taken instead of
    run again (:func:`reusable_sweeps`), so a study can be extended (more populations,
    more experiments) without repeating its finished sweeps; their run time is reported
    apart, as ``reused_sweep_seconds`` in config.json.

    The sweep being run is checkpointed into ``<folder>.partial/sweep.checkpoints``
    every ``checkpoint_every`` stages (default: a tenth of each sweep of at least
    :data:`CHECKPOINTED_AGENTS` agents over its rows; ``0``: no checkpoints), so a study
    killed in the middle of a sweep resumes that sweep from its last checkpoint,
    bitwise, instead of from its start.

    In a run of several processes (:mod:`jaxstage.distributed`) every process calls it
    with the same arguments and runs every sweep with the others, but only process 0
    checks and writes files (the folder, the journal, the sweep checkpoints) and shows
    progress; the others wait for each write before they go on
    (:mod:`jaxstage.study.processes`), and a refusal on process 0 stops them all. The
    tables are bitwise those of one process (but for ``sweep_seconds``).
    """
    from tqdm.auto import tqdm

    study.validate()
    if checkpoint_every is not None:
        check_int(checkpoint_every, "checkpoint_every", low=0, high=2**31 - 1)
    folder, reusable, journal, done = _open_study(
        study, folder, overwrite=overwrite, resume=resume, reuse=reuse
    )
    command = command or " ".join(["jaxstage"] + sys.argv[1:])
    started = time.perf_counter()
    earlier_seconds = sum(entry["seconds"] for entry in done.values() if "reused_from" not in entry)
    runs: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    reused: list[dict[str, Any]] = []
    mean_fields: dict[MeanFieldSetting, MeanFieldReference] = {}
    keys = [(exp, *key) for exp in study.experiments for key in sweep_keys(exp)]
    checkpoints = None
    if checkpoint_every != 0:
        folder_of = partial_folder(folder) / SWEEP_CHECKPOINTS
        checkpoints = SweepCheckpoints(folder_of, checkpoint_every)
    shown = progress and distributed.is_main_process()
    with tqdm(total=len(keys), unit="sweep", disable=not shown, desc=study.name) as bar:
        for exp, variant, n, tau in keys:
            key_id = sweep_id(exp, variant, n, tau)
            if key_id in done:
                entry = done[key_id]
            else:
                if key_id in reusable:
                    entry = reusable[key_id]
                else:
                    more_runs, more_series, seconds = run_sweep(
                        exp,
                        variant,
                        n,
                        tau,
                        study.seeds,
                        kernel=kernel,
                        checkpoints=checkpoints,
                        mean_fields=mean_fields,
                    )
                    entry = {
                        "sweep": key_id,
                        "seconds": seconds,
                        "runs": more_runs,
                        "series": more_series,
                    }
                on_main(
                    lambda entry=entry: _journal(journal, entry, checkpoints), "journal the sweep"
                )
            runs.extend(entry["runs"])
            series.extend(entry["series"])
            bar.update(1)
            bar.set_postfix_str(f"{exp.name} {variant.label} n={n:,} tau={tau}"[:60])
            if "reused_from" in entry:
                reused.append(entry)
    missing = missing_mean_field_reasons(runs, mean_fields, _reused_sweeps(reused))
    wall_seconds = earlier_seconds + time.perf_counter() - started

    def finish() -> None:
        write_study(
            folder,
            study,
            runs,
            series,
            wall_seconds=wall_seconds,
            command=command,
            overwrite=overwrite,
            plots=plots,
            reused=reused,
            mf_missing=missing,
        )
        remove_journal(partial_folder(folder))  # the journal files only, never anything else

    # Every process returns once the folder is complete, so any of them may read it.
    on_main(finish, "write the study folder")
    return Path(folder)


def _reused_sweeps(reused: Sequence[dict[str, Any]]) -> dict[tuple, str]:
    """``(experiment, variant, num_agents, stage_length)`` of each reused row: its folder."""
    return {
        (row["experiment"], row["variant"], row["num_agents"], row["stage_length"]): entry[
            "reused_from"
        ]
        for entry in reused
        for row in entry["runs"]
    }


def _journal(journal: Path, entry: dict[str, Any], checkpoints: SweepCheckpoints | None) -> None:
    """Journal a finished sweep; its checkpoints are then done with (process 0 only)."""
    append_entry(journal, entry)
    if checkpoints is not None:
        checkpoints.clear()


def _open_study(
    study: Study,
    folder: str | os.PathLike[str],
    *,
    overwrite: bool,
    resume: bool,
    reuse: Sequence[str | os.PathLike[str]],
) -> tuple[Path, dict[str, dict], Path, dict[str, dict]]:
    """Check the study folder, find the reusable sweeps and open the journal:
    ``(folder, reusable, journal, journalled sweeps)``.

    Process 0 checks and writes (the checks make probe folders, the journal is rewritten
    or made); once it has, the others read what it found from the same files, so every
    process runs the same sweeps."""

    def start() -> tuple[Path, dict[str, dict], Path, dict[str, dict]]:
        path = check_study_folder(folder, overwrite=overwrite)
        reusable = reusable_sweeps(study, reuse)
        journal, done = open_journal(study, path, resume=resume, overwrite=overwrite)
        return path, reusable, journal, done

    if distributed.process_count() == 1:
        return start()
    opened = on_main(start, "check and open the study folder")

    def read() -> tuple[Path, dict[str, dict], Path, dict[str, dict]]:
        if opened is not None:
            return opened
        path = folders.folder_path(folder)
        journal = partial_folder(path) / "sweeps.jsonl"
        return path, reusable_sweeps(study, reuse), journal, journal_entries(journal)

    return agreed(read, "read the study journal")
