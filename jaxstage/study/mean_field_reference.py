"""The study's mean-field reference (MODEL.md section 9): for each distinct setting of its
runs, the deterministic ``n -> infinity`` trajectory of stage learning, computed once, or
the reason there is none.

A setting (:class:`MeanFieldSetting`) is everything a run's limit depends on: the game and
its parameters, the learner (information, stage length, exploration, update_prob) and the
number of stages; not the population or the seed, so every population and seed of a
setting shares one trajectory. The study's runs start from ``initial="uniform"`` (each
agent draws its action uniformly), so the limit starts from the exact uniform
distribution: the initial sampling error of a finite population is part of its distance.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "MEAN_FIELD_TOLERANCE",
    "MEAN_FIELD_MAX_WORK",
    "MeanFieldSetting",
    "MeanFieldReference",
    "setting_of_row",
    "mean_field_reference",
    "missing_mean_field_reasons",
]

#: Accuracy of each stage's map in L1 (:func:`jaxstage.mean_field.mean_field_trajectory`):
#: far below the smallest distances measured (``~1e-3`` at ``10^7`` agents).
MEAN_FIELD_TOLERANCE = 1e-9
#: The most work one stage of a reference may cost (units of
#: :func:`jaxstage.mean_field.pattern_sum_work`, about 1 s on one core); above it the
#: setting's ``mf_distance`` is missing, refused before anything is computed. A study's
#: trajectories have up to a few hundred stages: ten times the module's default per stage
#: would let one setting take an hour.
MEAN_FIELD_MAX_WORK = 3e8


#: Why a run of another learner than stage learning has no ``mf_distance``.
OTHER_LEARNER = "the mean-field map (MODEL.md section 9) is stage learning's"


class MeanFieldSetting(NamedTuple):
    """What the mean-field limit of a study run depends on (hashable: a cache key)."""

    game: str
    game_params: str  # JSON of the game's constructor parameters, sorted keys
    info: str
    info_sample_size: int | None
    info_noise_std: float
    stage_length: int
    explore_prob: float
    update_prob: float
    num_stages: int
    initial: str = "uniform"

    def label(self) -> str:
        """A one-line name for tables and config.json."""
        params = "" if self.game_params in ("", "{}") else f" {self.game_params}"
        info = self.info
        if self.info_sample_size is not None:
            info += f" m={self.info_sample_size}"
        if self.info_noise_std:
            info += f" std={self.info_noise_std:g}"
        return (
            f"{self.game}{params}, info={info}, tau={self.stage_length}, "
            f"p={self.explore_prob:g}, update_prob={self.update_prob:g}, "
            f"{self.num_stages} stages"
        )


class MeanFieldReference(NamedTuple):
    """The limit trajectory of one setting, or why there is none.

    Attributes:
        distribution: ``(S+1, k)`` float64, the mean-field distribution of stage actions at
            the start and after each stage; ``None`` when the map does not apply.
        reason: ``None``, or why the map does not apply (the refusal's message).
        seconds: time spent computing it.
    """

    distribution: np.ndarray | None  # (S+1, k) float64
    reason: str | None
    seconds: float


def _blank_to_none(value: Any) -> Any:
    return None if value in (None, "") else value


def setting_of_row(row: dict[str, Any]) -> MeanFieldSetting:
    """The setting of a runs-table row, as :func:`~jaxstage.study.run_sweep` builds it
    or as read back from CSV (numbers as text)."""
    sample = _blank_to_none(row["info_sample_size"])
    noise = _blank_to_none(row["info_noise_std"])
    params = row["game_params"]
    if not isinstance(params, str):
        params = json.dumps(params, sort_keys=True)
    return MeanFieldSetting(
        game=str(row["game"]),
        game_params=params or "{}",
        info=str(row["info"]),
        info_sample_size=None if sample is None else int(float(sample)),
        info_noise_std=0.0 if noise is None else float(noise),
        stage_length=int(float(row["stage_length"])),
        explore_prob=float(row["explore_prob"]),
        update_prob=float(row["update_prob"]),
        num_stages=int(float(row["num_stages"])),
    )


def _game_and_learner(setting: MeanFieldSetting) -> tuple[Any, Any]:
    import jaxstage as js

    game = js.make_game(setting.game, **json.loads(setting.game_params))
    learner = js.StageLearning(
        stage_length=setting.stage_length,
        explore_prob=setting.explore_prob,
        update_prob=setting.update_prob,
        info=setting.info,
        info_sample_size=setting.info_sample_size,
        info_noise_std=setting.info_noise_std,
    )
    return game, learner


def _compute_reference(setting: MeanFieldSetting) -> MeanFieldReference:
    from jaxstage.mean_field import mean_field_trajectory

    started = time.perf_counter()
    game, learner = _game_and_learner(setting)
    try:
        path = mean_field_trajectory(
            game,
            learner,
            setting.num_stages,
            initial=setting.initial,
            tolerance=MEAN_FIELD_TOLERANCE,
            max_work=MEAN_FIELD_MAX_WORK,
        )
    except ValueError as error:  # sampled or noisy information, other noise, too costly
        return MeanFieldReference(None, str(error), time.perf_counter() - started)
    return MeanFieldReference(path.distribution, None, time.perf_counter() - started)


def mean_field_reference(
    setting: MeanFieldSetting, cache: dict[MeanFieldSetting, MeanFieldReference]
) -> MeanFieldReference:
    """The reference of ``setting``, computed on its first request and kept in ``cache``
    (one dict for a whole study: every population and seed of a setting shares it)."""
    if setting not in cache:
        cache[setting] = _compute_reference(setting)
    return cache[setting]


def _setup_refusal(setting: MeanFieldSetting) -> str | None:
    """Why the map cannot apply to ``setting`` at all (information, noise model), found
    without computing a stage; ``None`` when it may (cost is not checked)."""
    from jaxstage.mean_field import mean_field_trajectory

    game, learner = _game_and_learner(setting)
    try:
        mean_field_trajectory(game, learner, 0, initial=setting.initial)
    except ValueError as error:
        return str(error)
    return None


def missing_mean_field_reasons(
    runs: list[dict[str, Any]],
    cache: dict[MeanFieldSetting, MeanFieldReference],
    reused_from: dict[tuple, str] | None = None,
) -> dict[str, list[str]]:
    """Why ``mf_distance`` is missing, once per reason: ``{reason: [setting labels]}``.

    A row without an ``mf_distance`` key at all was taken from a study folder written
    before the measure existed (``reused_from`` maps its ``(experiment, variant,
    num_agents, stage_length)`` to that folder): where the map could apply, the reason is
    that reuse (its distribution is not stored, so the distance cannot be measured
    without running the sweep again); where it cannot (information, noise model), that
    reason, found without computing anything. Any other missing value is explained by
    the setting's reference (refusals are found before anything is computed).
    """
    reasons: dict[str, list[str]] = {}
    reused_from = reused_from or {}
    refusals: dict[MeanFieldSetting, str | None] = {}
    for row in runs:
        if row.get("mf_distance") not in (None, ""):
            continue
        if row.get("learner") not in (None, "", "stage"):
            reasons.setdefault(OTHER_LEARNER, [])
            label = f"{row['experiment']}: {row['variant']}"
            if label not in reasons[OTHER_LEARNER]:
                reasons[OTHER_LEARNER].append(label)
            continue
        setting = setting_of_row(row)
        if "mf_distance" not in row:
            sweep = (row["experiment"], row["variant"], row["num_agents"], row["stage_length"])
            folder = reused_from.get(sweep, "another study folder")
            if setting not in refusals:
                refusals[setting] = _setup_refusal(setting)
            reason = refusals[setting] or (
                f"reused from {folder}, written before mf_distance existed (runs.csv "
                f"keeps no distributions): run the sweep again to measure it"
            )
        else:
            reason = mean_field_reference(setting, cache).reason or "not computed"
        label = f"{row['experiment']}: {setting.label()}"
        labels = reasons.setdefault(reason, [])
        if label not in labels:
            labels.append(label)
    return reasons
