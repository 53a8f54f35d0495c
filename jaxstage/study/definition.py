"""What a study is: experiments, their information variants, and how to narrow them.

The definitions themselves are data (``definitions/*.toml``, read by
:mod:`jaxstage.study.loading`); this module holds the types they become, the checks run
on them before anything runs (:meth:`Study.validate`) and :func:`select`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

__all__ = [
    "CLAIMS",
    "InfoVariant",
    "Experiment",
    "Study",
    "select",
    "sweep_keys",
    "sweep_update_probs",
    "variant_learner",
    "variant_data",
    "experiment_data",
]

#: Claims an experiment may serve (MODEL.md section 7, plus the oscillating cases and
#: the comparison of learners, MODEL.md section 8).
CLAIMS = ("C1", "C2", "C3", "C4", "C5", "oscillation", "learners")


@dataclasses.dataclass(frozen=True)
class InfoVariant:
    """One information variant of an experiment (MODEL.md section 3).

    Attributes:
        label: name in the tables (e.g. ``"none"``, ``"payoffs m=100"``).
        info: ``"none"``, ``"distribution"`` or ``"payoffs"``.
        sample_size: ``None`` for exact information, else the sample size ``m``.
        noise_std: Gaussian noise on the published distribution (distribution only).
        sharing: ``"shared"`` (one estimate published to all) or ``"private"`` (each
            agent its own sample and noise: ``StageLearning(info_sharing=...)``).
        stage_lengths: stage lengths for this variant (default: the experiment's); for a
            learner without stages, the rounds between recorded states.
        update_probs: update probabilities for this variant (default: the experiment's);
            stage learning only.
        learner: a learner of :data:`jaxstage.learners.LEARNERS` (``"stage"``,
            ``"eps-greedy"``, ``"exp3"``); any other than ``"stage"`` has no information
            and no update_prob (MODEL.md section 8).
        explore_prob: this variant's exploration probability (EXP3: its ``gamma``);
            default: the experiment's.
        eta: EXP3's learning rate (EXP3 only; default ``jaxstage.Exp3``'s).
    """

    label: str
    info: str = "none"
    sample_size: int | None = None
    noise_std: float = 0.0
    stage_lengths: tuple[int, ...] | None = None
    update_probs: tuple[float, ...] | None = None
    sharing: str = "shared"
    learner: str = "stage"
    explore_prob: float | None = None
    eta: float | None = None


NONE = InfoVariant("none")

#: Fields a variant records only when they differ from these defaults, as folders
#: written before the fields existed record them (so that ``--reuse`` still finds their
#: sweeps).
_LATER_FIELDS = {"sharing": "shared", "learner": "stage", "explore_prob": None, "eta": None}


def variant_data(variant: InfoVariant) -> dict[str, Any]:
    """A variant as JSON-ready data, the fields added later only where not the default."""
    data = dataclasses.asdict(variant)
    for field, default in _LATER_FIELDS.items():
        if data[field] == default:
            del data[field]
    return data


def sweep_update_probs(exp: Experiment, variant: InfoVariant) -> tuple[float | None, ...]:
    """The update probabilities of a variant's sweeps: ``(None,)`` for a learner without
    one (one row per seed), else the variant's or the experiment's."""
    if variant.learner != "stage":
        return (None,)
    return variant.update_probs or exp.update_probs


def variant_learner(exp: Experiment, variant: InfoVariant, tau: int) -> Any:
    """The learner of a variant's sweep at stage length ``tau`` (for stage learning: at
    the first update_prob, the sweep's rows set the others)."""
    from jaxstage.learners import make_learner

    explore = exp.explore_prob if variant.explore_prob is None else variant.explore_prob
    if variant.learner != "stage":
        options = {} if variant.eta is None else {"eta": variant.eta}
        return make_learner(variant.learner, stage_length=tau, explore_prob=explore, **options)
    if variant.eta is not None:
        raise ValueError(f"variant {variant.label!r}: eta is EXP3's; learner is 'stage'")
    return make_learner(
        "stage",
        stage_length=tau,
        explore_prob=explore,
        update_prob=sweep_update_probs(exp, variant)[0],
        info=variant.info,
        info_sample_size=variant.sample_size,
        info_noise_std=variant.noise_std,
        info_sharing=variant.sharing,
    )


def experiment_data(exp: Experiment) -> dict[str, Any]:
    """An experiment as JSON-ready data, its variants by :func:`variant_data`."""
    data = dataclasses.asdict(exp)
    data["variants"] = [variant_data(v) for v in exp.variants]
    return data


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: a game, populations, variants and stage lengths, many seeds.

    Attributes:
        name: unique name (a column of every table).
        claims: the claims it serves, a subset of :data:`CLAIMS`.
        game: built-in game name; ``game_params``: its constructor parameters.
        populations: numbers of agents.
        variants: information variants; the speed-up table compares each with the
            variant labelled ``"none"`` (of this experiment, or of ``baseline``).
        stage_lengths: stage lengths ``tau`` to run (each variant may override).
        update_probs: update probabilities; all values run in the same batched sweep.
        explore_prob: exploration probability.
        round_budget: rounds per run; a run has ``round_budget // tau`` stages.
        eps, delta: the (eps, delta)-equilibrium of the convergence criterion.
        hold_stages: minimum number of final states in equilibrium to count as converged
            (default: a tenth of the stages, at least 3).
        baseline: name of another experiment whose ``"none"`` variant is the baseline.
        series: also record the per-stage time series (nash gap, share at an eps-best
            reply) of the first ``series_seeds`` seeds, for plots.
    """

    name: str
    claims: tuple[str, ...]
    game: str
    populations: tuple[int, ...]
    game_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    variants: tuple[InfoVariant, ...] = (NONE,)
    stage_lengths: tuple[int, ...] = (10,)
    update_probs: tuple[float, ...] = (0.1,)
    explore_prob: float = 0.05
    round_budget: int = 1000
    eps: float = 0.05
    delta: float = 0.05
    hold_stages: int | None = None
    baseline: str | None = None
    series: bool = False
    series_seeds: int = 3

    def stages(self, tau: int) -> int:
        """Number of stages of a run with stage length ``tau``."""
        return max(1, self.round_budget // tau)

    def hold(self, tau: int) -> int:
        """The minimum equilibrium tail (in recorded states) for stage length ``tau``."""
        if self.hold_stages is not None:
            return self.hold_stages
        return max(3, self.stages(tau) // 10)


def sweep_keys(exp: Experiment) -> list[tuple[InfoVariant, int, int]]:
    """The sweeps of an experiment, in run order: ``(variant, population, stage length)``."""
    return [
        (variant, n, tau)
        for variant in exp.variants
        for n in exp.populations
        for tau in (variant.stage_lengths or exp.stage_lengths)
    ]


@dataclasses.dataclass(frozen=True)
class Study:
    """A named list of experiments run with ``seeds`` seeds each (seeds ``0..seeds-1``)."""

    name: str
    experiments: tuple[Experiment, ...]
    seeds: int = 10

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad value and the allowed set.

        Every game and learner of the study is built here (cheap, no simulation), so a
        bad game parameter or learner setting is reported before the first sweep, not
        hours into a study.
        """
        from jaxstage.games import GAMES
        from jaxstage.learner import INFO_MODES
        from jaxstage.learners import LEARNERS

        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must be unique, got {names}")
        for exp in self.experiments:
            bad = [c for c in exp.claims if c not in CLAIMS]
            if bad or not exp.claims:
                raise ValueError(
                    f"experiment {exp.name!r}: unknown claim(s) {bad}; valid: {', '.join(CLAIMS)}"
                )
            if exp.game not in GAMES:
                raise ValueError(
                    f"experiment {exp.name!r}: unknown game {exp.game!r}; "
                    f"valid: {', '.join(sorted(GAMES))}"
                )
            if not exp.populations or min(exp.populations) < 1:
                raise ValueError(f"experiment {exp.name!r}: populations must be >= 1")
            if exp.round_budget < 1:
                raise ValueError(f"experiment {exp.name!r}: round_budget must be >= 1")
            if exp.baseline is not None and exp.baseline not in names:
                raise ValueError(
                    f"experiment {exp.name!r}: baseline {exp.baseline!r} is not an "
                    f"experiment of the study ({', '.join(names)})"
                )
            labels = [v.label for v in exp.variants]
            if not labels or len(set(labels)) != len(labels):
                # A label names its sweeps in the journal and the tables: two alike would
                # mix their rows.
                raise ValueError(
                    f"experiment {exp.name!r}: variant labels must be unique and at least "
                    f"one, got {labels}"
                )
            for variant in exp.variants:
                if variant.learner not in LEARNERS:
                    raise ValueError(
                        f"experiment {exp.name!r}: unknown learner {variant.learner!r}; "
                        f"valid: {', '.join(LEARNERS)}"
                    )
                if variant.learner != "stage" and (
                    variant.info != "none" or variant.update_probs or variant.sharing != "shared"
                ):
                    raise ValueError(
                        f"experiment {exp.name!r}: variant {variant.label!r}: learner "
                        f"{variant.learner!r} takes no info, sharing or update_probs "
                        "(stage learning's)"
                    )
                if variant.info not in INFO_MODES:
                    raise ValueError(
                        f"experiment {exp.name!r}: unknown info {variant.info!r}; "
                        f"valid: {', '.join(INFO_MODES)}"
                    )
                taus = variant.stage_lengths or exp.stage_lengths
                probs = variant.update_probs or exp.update_probs
                if not taus or min(taus) < 1:
                    raise ValueError(f"experiment {exp.name!r}: stage lengths must be >= 1")
                if not probs or any(not 0 < p <= 1 for p in probs):
                    raise ValueError(
                        f"experiment {exp.name!r}: update_probs must lie in (0, 1], got {probs}"
                    )
            _check_buildable(exp)

    def config(self) -> dict[str, Any]:
        """The whole definition as JSON-ready data."""
        return {
            "name": self.name,
            "seeds": self.seeds,
            "experiments": [experiment_data(e) for e in self.experiments],
        }


def _check_buildable(exp: Experiment) -> None:
    """Build the experiment's game and learners and check its convergence settings, as
    the sweeps will; any refusal is re-raised as ``ValueError`` naming the experiment."""
    from jaxstage import _validation as check
    from jaxstage.best_reply import MAX_AGENTS  # the study runs best-reply dynamics too
    from jaxstage.games import make_game

    try:
        for n in exp.populations:
            check.check_int(n, "num_agents", low=1, high=MAX_AGENTS)
        check.check_real(exp.eps, "eps", low=0.0)
        check.check_probability(exp.delta, "delta")
        check.check_int(exp.series_seeds, "series_seeds", low=1)
        if exp.hold_stages is not None:
            check.check_int(exp.hold_stages, "hold_stages", low=1)
        make_game(exp.game, **exp.game_params)
        for variant in exp.variants:
            for tau in variant.stage_lengths or exp.stage_lengths:
                variant_learner(exp, variant, tau)
    except (TypeError, ValueError) as error:
        raise ValueError(f"experiment {exp.name!r}: {error}") from None


def select(
    study: Study,
    *,
    claims: Iterable[str] | None = None,
    max_agents: int | None = None,
    seeds: int | None = None,
    experiments: Iterable[str] | None = None,
) -> Study:
    """A study restricted to experiments serving ``claims`` (and named in ``experiments``)
    and to populations <= ``max_agents``.

    Raises:
        ValueError: an unknown claim or experiment, ``max_agents < 1`` or ``seeds < 1``
            (before anything runs), or nothing left to run.
    """
    names = None if experiments is None else list(experiments)
    if names is not None:
        known = [e.name for e in study.experiments]
        bad = [name for name in names if name not in known]
        if bad or not names:
            raise ValueError(
                f"unknown experiment(s) {bad or names} in study {study.name!r}; valid: "
                f"{', '.join(known)}"
            )
    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if max_agents is not None and max_agents < 1:
        raise ValueError(f"max_agents must be >= 1, got {max_agents}")
    wanted = None if claims is None else list(claims)
    if wanted is not None:
        bad = [c for c in wanted if c not in CLAIMS]
        if bad or not wanted:
            raise ValueError(f"unknown claim(s) {bad or wanted}; valid: {', '.join(CLAIMS)}")
    kept: list[Experiment] = []
    for exp in study.experiments:
        if wanted is not None and not set(exp.claims) & set(wanted):
            continue
        if names is not None and exp.name not in names:
            continue
        populations = tuple(n for n in exp.populations if max_agents is None or n <= max_agents)
        if populations:
            kept.append(dataclasses.replace(exp, populations=populations))
    # Add the baselines the selected experiments need (their plain learner is the
    # reference of the speed-up table), or drop an experiment whose baseline has no
    # population left.
    by_name = {e.name: e for e in study.experiments}
    for exp in list(kept):
        if not exp.baseline or exp.baseline in {e.name for e in kept}:
            continue
        base = by_name[exp.baseline]
        populations = tuple(n for n in base.populations if max_agents is None or n <= max_agents)
        plain = tuple(v for v in base.variants if v.label == "none")
        if populations and plain:
            kept.insert(0, dataclasses.replace(base, populations=populations, variants=plain))
        else:
            kept = [e for e in kept if e.name != exp.name]
    if not kept:
        raise ValueError(
            f"nothing to run: no experiment serves claims {wanted} with populations <= {max_agents}"
        )
    return dataclasses.replace(
        study,
        experiments=tuple(kept),
        seeds=study.seeds if seeds is None else seeds,
    )
