"""The convergence-versus-population study (MODEL.md section 7, issue 4).

A study is a declarative list of :class:`Experiment` s, each tagged with the claims it
serves (``C1``..``C5`` of MODEL.md section 7, plus ``"oscillation"``). For every game,
population, information variant and stage length of an experiment, all seeds (and all
values of the experiment's ``update_probs`` grid) run in one batched :func:`jaxstage.sweep`
call. Each run gives one row of the tidy ``runs`` table (:data:`RUN_COLUMNS`); the derived
tables are pure functions of that table:

* :func:`convergence_table`: seeds, share converged and quantiles of rounds to converge
  per (experiment, game, variant, stage length, update_prob, population);
* :func:`shortest_stage_length_table`: the smallest stage length converging in at least
  90% of seeds within the round budget, per (experiment, game, variant, update_prob,
  population);
* :func:`info_speedup_table`: median rounds without information over median rounds with
  each information variant, per population.

**Convergence in the study** (:func:`study_convergence`): a run converged when the
population is in an (eps, delta)-equilibrium from some recorded state ``s`` to the end of
the run *and* that tail is at least ``hold_stages`` states long (so a run that merely ends
in equilibrium by chance in its last stage does not count). Its convergence round is the
number of rounds played before state ``s``. Non-converged runs are never dropped: medians
and quantiles are over *all* seeds, a non-converged seed counting as ``+inf`` rounds, so a
median is "not converged" (empty in the tables) when half or more of the seeds failed.

**Distance to best-reply dynamics** (:func:`br_distance`, claim C5): from the run's exact
initial counts, count-level simultaneous best-reply dynamics with inertia ``update_prob``
and the run's ``eps`` (MODEL.md section 4) take one step per stage. When they stop (at an
equilibrium) their state is held; when they stop on a detected two-cycle the cycle is
continued. ``br_distance`` is the mean over stages ``s = 1..S`` of the L1 distance
``sum_a |d_learn[s, a] - d_br[s, a]|`` between the learners' distribution of stage
actions after stage ``s`` and the dynamics' distribution after step ``s``.

**Distance to the mean-field trajectory** (:func:`mf_distance`, claims C2 and C5): the
same mean over stages ``1..S`` of the L1 distance, to the deterministic ``n -> infinity``
trajectory of the run's game, learner and number of stages (MODEL.md section 9,
:func:`jaxstage.mean_field.mean_field_trajectory`) from the exact uniform distribution
(the runs start from uniform draws, so their initial sampling is part of the distance).
It is computed once per setting (:mod:`~jaxstage.study.mean_field_reference`), and is
missing (empty) where the map does not apply: sampled or noisy information, noise that
is not additive Gaussian, or a setting above
:data:`~jaxstage.study.mean_field_reference.MEAN_FIELD_MAX_WORK`; config.json and
summary.md say why, once per reason. ``mf_distance_slopes.csv``
(:func:`mf_distance_slopes_table`) fits the slope of log(median distance) on log(n) per
setting: ``-1/2`` where sampling noise dominates.

:func:`run_study` runs a study and writes its folder atomically (see
:func:`write_study`): ``runs.csv``, ``convergence.csv``, ``shortest_stage_length.csv``,
``info_speedup.csv``, ``mf_distance_slopes.csv``, ``series.csv`` (time series of the
oscillation experiments), ``config.json``, ``summary.md`` and PNG plots.

**Definitions are data**: TOML files (schema in docs/study.md). :func:`load_study` reads
a built-in one (``"quick"``, ``"full"``) or a user's file; :func:`write_definition`
copies a built-in one out to edit; :func:`quick_study` and :func:`full_study` are the
built-in ones with their parameters as overrides.

The modules, one idea each: :mod:`~jaxstage.study.definition` (the types, their checks,
:func:`select`), :mod:`~jaxstage.study.loading` (TOML files), :mod:`~jaxstage.study.measures`
(per-run measures), :mod:`~jaxstage.study.mean_field_reference` (the mean-field
trajectory of each setting, cached), :mod:`~jaxstage.study.runner` (running, :func:`run_study`),
:mod:`~jaxstage.study.journal` (resume and reuse), :mod:`~jaxstage.study.tables` (derived
tables), :mod:`~jaxstage.study.report` (``summary.md``), :mod:`~jaxstage.study.plots` and
:mod:`~jaxstage.study.output` (the folder and its atomic write, through
:mod:`jaxstage.folders`), :mod:`~jaxstage.study.processes` (a study over several
processes: only process 0 writes).
"""

from jaxstage.study.definition import (
    CLAIMS,
    NONE,
    Experiment,
    InfoVariant,
    Study,
    select,
    sweep_keys,
)
from jaxstage.study.journal import (
    JOURNAL_FILES,
    SWEEP_CHECKPOINTS,
    partial_folder,
    reusable_sweeps,
)
from jaxstage.study.loading import (
    BUILTIN_DEFINITIONS,
    OVERRIDES,
    definition_text,
    full_study,
    load_study,
    parse_definition,
    quick_study,
    write_definition,
)
from jaxstage.study.mean_field_reference import MeanFieldReference, MeanFieldSetting
from jaxstage.study.measures import br_distance, br_trajectory, mf_distance, study_convergence
from jaxstage.study.output import RUN_COLUMNS, STUDY_FILES, check_study_folder, write_study
from jaxstage.study.plots import redraw_plots
from jaxstage.study.report import summary_markdown
from jaxstage.study.runner import (
    SweepCheckpoints,
    run_experiment,
    run_study,
    run_sweep,
    sweep_result,
)
from jaxstage.study.tables import (
    CONVERGED_SHARE,
    CONVERGENCE_KEYS,
    convergence_table,
    info_speedup_table,
    median_with_failures,
    mf_distance_slopes_table,
    shortest_stage_length_table,
)
from jaxstage.tables import read_csv

__all__ = [
    "CLAIMS",
    "RUN_COLUMNS",
    "STUDY_FILES",
    "InfoVariant",
    "Experiment",
    "Study",
    "BUILTIN_DEFINITIONS",
    "load_study",
    "write_definition",
    "definition_text",
    "quick_study",
    "full_study",
    "select",
    "study_convergence",
    "br_trajectory",
    "br_distance",
    "mf_distance",
    "MeanFieldSetting",
    "MeanFieldReference",
    "mf_distance_slopes_table",
    "median_with_failures",
    "convergence_table",
    "shortest_stage_length_table",
    "info_speedup_table",
    "run_experiment",
    "run_sweep",
    "partial_folder",
    "run_study",
    "write_study",
    "check_study_folder",
    "NONE",
    "sweep_keys",
    "JOURNAL_FILES",
    "SWEEP_CHECKPOINTS",
    "SweepCheckpoints",
    "reusable_sweeps",
    "OVERRIDES",
    "parse_definition",
    "redraw_plots",
    "summary_markdown",
    "sweep_result",
    "CONVERGED_SHARE",
    "CONVERGENCE_KEYS",
    "read_csv",
]
