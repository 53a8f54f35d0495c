"""Tests of the study's distance to the mean-field trajectory (jaxstage/study/
mean_field_reference.py, ``mf_distance`` in measures.py, its tables, report and plot)."""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import numpy as np
import pytest

from jaxstage import study as st
from jaxstage.mean_field import mean_field_trajectory
from jaxstage.study import mean_field_reference as mfr
from jaxstage.study import measures
from jaxstage.study.tables import convergence_table, log_log_slope, mf_distance_slopes_table


class FakeRun(NamedTuple):
    """The one field of a simulation result that ``mf_distance`` reads."""

    distribution: np.ndarray  # (S+1, k)


def setting(**changes) -> mfr.MeanFieldSetting:
    base = mfr.MeanFieldSetting(
        game="congestion",
        game_params="{}",
        info="none",
        info_sample_size=None,
        info_noise_std=0.0,
        stage_length=20,
        explore_prob=0.1,
        update_prob=0.3,
        num_stages=4,
    )
    return base._replace(**changes)


def row_of(s: mfr.MeanFieldSetting, **extra) -> dict:
    """A runs-table row of setting ``s``, as ``run_sweep`` writes it."""
    return s._asdict() | {"experiment": "e", "variant": "none", "num_agents": 100} | extra


# --------------------------------------------------------------------------- the measure


def test_mf_distance_is_the_mean_l1_over_stages_one_to_s():
    run = np.array([[0.5, 0.5], [0.6, 0.4], [0.9, 0.1]])
    limit = np.array([[0.0, 1.0], [0.5, 0.5], [0.8, 0.2]])  # stage 0 is left out
    assert st.mf_distance(run, limit) == pytest.approx((0.2 + 0.2) / 2)
    assert st.mf_distance(run, run) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        st.mf_distance(run, limit[:2])


def test_a_run_on_the_mean_field_trajectory_is_at_distance_zero_and_a_shift_is_known():
    cache: dict = {}
    reference = mfr.mean_field_reference(setting(), cache)
    assert reference.reason is None
    # The reference is the mean-field trajectory from the exact uniform start.
    import jaxstage as js

    game = js.make_game("congestion")
    learner = js.StageLearning(stage_length=20, explore_prob=0.1, update_prob=0.3)
    np.testing.assert_array_equal(
        reference.distribution, mean_field_trajectory(game, learner, 4).distribution
    )
    on_it = FakeRun(reference.distribution.copy())
    assert measures.mf_reference_distance(on_it, reference) == 0.0
    # Move 0.05 of the mass from action 0 to action 3 after every stage: L1 0.1 each.
    shifted = reference.distribution.copy()
    shifted[1:, 0] -= 0.05
    shifted[1:, 3] += 0.05
    assert measures.mf_reference_distance(FakeRun(shifted), reference) == pytest.approx(0.1)


def test_the_reference_is_computed_once_per_setting(monkeypatch):
    computed = []
    real = mfr._compute_reference

    def counting(s):
        computed.append(s)
        return real(s)

    monkeypatch.setattr(mfr, "_compute_reference", counting)
    cache: dict = {}
    for _ in range(3):  # populations and seeds share a setting
        mfr.mean_field_reference(setting(), cache)
    mfr.mean_field_reference(setting(update_prob=0.1), cache)
    assert computed == [setting(), setting(update_prob=0.1)]


def test_a_sweep_computes_one_reference_for_all_its_rows(monkeypatch):
    computed = []
    real = mfr._compute_reference
    monkeypatch.setattr(mfr, "_compute_reference", lambda s: computed.append(s) or real(s))
    exp = st.Experiment(
        "e", ("C5",), "congestion", (50,), stage_lengths=(5,), update_probs=(0.1, 0.3),
        round_budget=15,
    )  # fmt: skip
    cache: dict = {}
    for n in (50, 80):
        runs, _, _ = st.run_sweep(exp, st.NONE, n, 5, 2, mean_fields=cache)
        assert all(r["mf_distance"] > 0 for r in runs)
    assert len(computed) == 2  # two update_probs; two populations and two seeds share each


# --------------------------------------------------------------------------- missing values


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"info": "distribution", "info_sample_size": 10}, "info_sample_size=10"),
        ({"info": "distribution", "info_noise_std": 0.01}, "info_noise_std=0.01"),
        ({"game": "minority", "game_params": '{"noise": "coin"}'}, "additive Gaussian"),
    ],
    ids=["sampled", "noisy", "coin noise"],
)
def test_no_deterministic_limit_gives_a_missing_value_and_the_reason(changes, message):
    reference = mfr.mean_field_reference(setting(**changes), {})
    assert reference.distribution is None
    assert message in reference.reason
    assert measures.mf_reference_distance(FakeRun(np.ones((5, 4)) / 4), reference) is None


def test_a_setting_too_expensive_is_refused_before_computing(monkeypatch):
    monkeypatch.setattr(mfr, "MEAN_FIELD_MAX_WORK", 10.0)
    started = time.perf_counter()
    reference = mfr.mean_field_reference(setting(num_stages=1000), {})
    assert reference.distribution is None and "max_work" in reference.reason
    assert time.perf_counter() - started < 5


def test_exact_information_has_a_reference():
    reference = mfr.mean_field_reference(setting(info="distribution", stage_length=1), {})
    assert reference.reason is None and reference.distribution.shape == (5, 4)


def test_missing_reasons_once_per_reason_and_for_reused_rows():
    sampled = setting(info="distribution", info_sample_size=10)
    rows = [
        row_of(setting(), mf_distance=0.01),
        row_of(sampled, mf_distance=None, seed=0),
        row_of(sampled, mf_distance="", seed=1, num_agents=1000),  # as read from CSV
    ]
    old = {k: v for k, v in row_of(setting(), experiment="old").items()}  # no mf_distance
    reasons = mfr.missing_mean_field_reasons(
        rows + [old], {}, {("old", "none", 100, 20): "docs/study/full"}
    )
    assert len(reasons) == 2
    (sampled_reason,) = [r for r in reasons if "info_sample_size=10" in r]
    assert reasons[sampled_reason] == [f"e: {sampled.label()}"]  # once, not per row
    (reused_reason,) = [r for r in reasons if "reused" in r]
    assert "docs/study/full" in reused_reason
    assert reasons[reused_reason] == [f"old: {setting().label()}"]


def test_a_row_read_back_from_csv_has_the_same_setting():
    s = setting(info="payoffs", game_params='{"symmetric": true}', game="random_linear")
    text = {k: ("" if v is None else str(v)) for k, v in row_of(s).items()}
    assert mfr.setting_of_row(text) == s


# --------------------------------------------------------------------------- tables


def conv(n: int, distance, experiment: str = "e", **keys) -> dict:
    return {
        "experiment": experiment,
        "game": "congestion",
        "variant": "none",
        "info": "none",
        "claims": "C5",
        "stage_length": 10,
        "update_prob": 0.1,
        "num_agents": n,
        "median_mf_distance": distance,
    } | keys


def test_convergence_table_carries_median_mf_distance():
    rows = [
        {**row, "converged": True, "convergence_round": 10, "round_budget": 100}
        | {"final_nash_gap": 0.1, "br_distance": 0.2, "claims": "C5", "info": "none"}
        for row in (
            {"experiment": "e", "game": "g", "variant": "none", "stage_length": 10}
            | {"update_prob": 0.1, "num_agents": 100, "mf_distance": d}
            for d in (0.1, 0.3, 0.2)
        )
    ]
    (row,) = convergence_table(rows)
    assert row["median_mf_distance"] == pytest.approx(0.2)
    for row in rows:
        row.pop("mf_distance")  # an older study's rows: missing, not an error
    assert convergence_table(rows)[0]["median_mf_distance"] is None


def test_slopes_fit_log_distance_on_log_population():
    assert log_log_slope([100, 10_000, 10**6], [0.1, 0.01, 0.001]) == pytest.approx(-0.5)
    rows = [conv(n, 2.0 * n**-0.5) for n in (100, 1000, 10_000)]
    rows += [conv(10**5, 2.0 * 10**-2.5, experiment="e_large")]  # joins its base
    rows += [conv(100, 0.1, update_prob=0.3)]  # one population: no slope
    rows += [conv(100, None, variant="m=10"), conv(1000, "", variant="m=10")]  # missing
    (slope,) = mf_distance_slopes_table(rows)
    assert slope["slope"] == pytest.approx(-0.5)
    assert slope["expected_slope"] == -0.5
    assert (slope["min_agents"], slope["max_agents"], slope["points"]) == (100, 10**5, 4)
    assert slope["populations"] == "100;1000;10000;100000"
    with pytest.raises(ValueError, match="two distinct"):
        log_log_slope([100, 100], [0.1, 0.2])


# --------------------------------------------------------------------------- a tiny study

MIXED = st.Study(
    "mixed",
    (
        st.Experiment(
            "mf_core", ("C1", "C5"), "congestion", (60, 240), stage_lengths=(5,), round_budget=20
        ),
        st.Experiment(
            "mf_sampled",
            ("C4",),
            "congestion",
            (60,),
            variants=(st.InfoVariant("distribution m=10", "distribution", sample_size=10),),
            stage_lengths=(5,),
            round_budget=20,
        ),
    ),
    seeds=2,
)


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study") / "mixed"
    return st.run_study(MIXED, folder, progress=False, command="test", plots=True)


def test_the_study_tables_carry_mf_distance(mixed_study):
    runs = st.read_csv(mixed_study / "runs.csv")
    assert "mf_distance" in runs[0]
    core = [r for r in runs if r["experiment"] == "mf_core"]
    assert len(core) == 4 and all(float(r["mf_distance"]) > 0 for r in core)
    assert all(r["mf_distance"] == "" for r in runs if r["experiment"] == "mf_sampled")
    convergence = st.read_csv(mixed_study / "convergence.csv")
    assert all("median_mf_distance" in r for r in convergence)
    (slope,) = st.read_csv(mixed_study / "mf_distance_slopes.csv")
    assert (slope["experiment"], slope["min_agents"], slope["max_agents"]) == (
        "mf_core",
        "60",
        "240",
    )
    assert float(slope["slope"]) < 0
    assert (mixed_study / "mf_distance.png").stat().st_size > 1000


def test_the_reason_for_a_missing_mf_distance_is_recorded_once(mixed_study):
    config = json.loads((mixed_study / "config.json").read_text())
    assert "mean-field trajectory" in config["mf_distance"]
    ((reason, labels),) = config["mf_distance_missing"].items()
    assert "info_sample_size=10" in reason and len(labels) == 1
    summary = (mixed_study / "summary.md").read_text()
    assert summary.count("info_sample_size=10: sampled information") == 1
    assert "median_mf_distance" in summary and "Distance to the mean-field" in summary


def test_reusing_a_folder_written_before_mf_distance_says_so(mixed_study, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "series.csv"):
        if (mixed_study / name).exists():
            (old / name).write_bytes((mixed_study / name).read_bytes())
    rows = st.read_csv(mixed_study / "runs.csv")
    columns = [c for c in rows[0] if c != "mf_distance"]
    from jaxstage.tables import write_csv

    write_csv(old / "runs.csv", [{c: r[c] for c in columns} for r in rows], columns)
    new = st.run_study(MIXED, tmp_path / "new", progress=False, plots=False, reuse=[old])
    runs = st.read_csv(new / "runs.csv")
    assert all(r["mf_distance"] == "" for r in runs)
    missing = json.loads((new / "config.json").read_text())["mf_distance_missing"]
    (reused,) = [r for r in missing if "reused" in r]
    assert str(old) in reused and len(missing[reused]) == 1  # mf_core's one setting
    # Everything else is taken as written.
    kept = [{c: r[c] for c in columns} for r in runs]
    assert kept == [{c: r[c] for c in columns} for r in rows]
