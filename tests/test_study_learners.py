"""Other learners in the study (MODEL.md section 8): variants with ``learner = ...`` run
through the same sweeps, tables and convergence rule as stage learning, their rows equal
a direct simulation of the same learner, and the built-in experiments compare every
learner on the converging games at a stated grid."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import jaxstage as js
from jaxstage import study as st
from jaxstage.study.definition import sweep_update_probs, variant_data, variant_learner
from jaxstage.study.mean_field_reference import OTHER_LEARNER, missing_mean_field_reasons
from jaxstage.tables import write_csv

EPS = st.InfoVariant("eps-greedy eps=0.1", learner="eps-greedy", explore_prob=0.1)
EXP3 = st.InfoVariant("exp3 eta=0.2", learner="exp3", eta=0.2)
LEARNERS_STUDY = st.Study(
    "tiny_learners",
    (
        st.Experiment(
            "tiny_learners",
            ("learners",),
            "congestion",
            (60,),
            variants=(st.InfoVariant("none"), EPS, EXP3),
            stage_lengths=(5,),
            update_probs=(0.5,),
            round_budget=30,
            hold_stages=2,
        ),
    ),
    seeds=2,
)


@pytest.fixture(scope="module")
def learners_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("learners") / "tiny"
    st.run_study(LEARNERS_STUDY, folder, progress=False, command="test", plots=True)
    return folder


def test_variant_data_records_the_learner_fields_only_when_set():
    assert variant_data(st.InfoVariant("none")) == {
        "label": "none",
        "info": "none",
        "sample_size": None,
        "noise_std": 0.0,
        "stage_lengths": None,
        "update_probs": None,
    }
    data = variant_data(EXP3)
    assert (data["learner"], data["eta"]) == ("exp3", 0.2)
    assert "explore_prob" not in data and "sharing" not in data
    assert variant_data(EPS)["explore_prob"] == 0.1


def test_variant_learner_builds_each_learner_with_the_variant_settings():
    exp = LEARNERS_STUDY.experiments[0]
    assert variant_learner(exp, EPS, 5) == js.EpsGreedy(explore_prob=0.1, stage_length=5)
    # EXP3's gamma is the experiment's explore_prob where the variant sets none.
    assert variant_learner(exp, EXP3, 5) == js.Exp3(eta=0.2, gamma=0.05, stage_length=5)
    assert variant_learner(exp, exp.variants[0], 5) == js.StageLearning(
        stage_length=5, explore_prob=0.05, update_prob=0.5
    )
    assert sweep_update_probs(exp, EPS) == (None,)
    assert sweep_update_probs(exp, exp.variants[0]) == (0.5,)


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        (st.InfoVariant("x", learner="sarsa"), r"unknown learner 'sarsa'; valid: stage, eps"),
        (
            st.InfoVariant("x", learner="eps-greedy", info="payoffs"),
            r"learner 'eps-greedy' takes no info, sharing or update_probs",
        ),
        (
            st.InfoVariant("x", learner="exp3", update_probs=(0.1,)),
            r"learner 'exp3' takes no info, sharing or update_probs",
        ),
        (st.InfoVariant("x", learner="exp3", eta=-1.0), r"eta must be"),
        (st.InfoVariant("x", learner="exp3", explore_prob=0.0), r"gamma must be in \(0, 1\]"),
        (st.InfoVariant("x", eta=0.1), r"eta is EXP3's; learner is 'stage'"),
        (
            st.InfoVariant("x", learner="eps-greedy", explore_prob=1.5),
            r"explore_prob must be .*got 1.5",
        ),
    ],
)
def test_a_bad_learner_variant_is_refused_before_anything_runs(variant, message):
    exp = dataclasses.replace(LEARNERS_STUDY.experiments[0], variants=(variant,))
    with pytest.raises(ValueError, match=message) as error:
        dataclasses.replace(LEARNERS_STUDY, experiments=(exp,)).validate()
    assert "experiment 'tiny_learners'" in str(error.value)


def test_a_learner_variant_loads_from_toml(tmp_path):
    path = tmp_path / "def.toml"
    path.write_text(
        'name = "t"\nseeds = 1\n[[experiments]]\nname = "e"\nclaims = ["learners"]\n'
        'game = "congestion"\npopulations = [60]\n[[experiments.variants]]\n'
        'label = "exp3"\nlearner = "exp3"\neta = 0.3\nexplore_prob = 0.1\n',
        encoding="utf-8",
    )
    (exp,) = st.load_study(path).experiments
    assert exp.variants == (st.InfoVariant("exp3", learner="exp3", eta=0.3, explore_prob=0.1),)


def test_learner_rows_equal_a_direct_simulation_of_the_learner(learners_folder):
    runs = st.read_csv(learners_folder / "runs.csv")
    assert list(runs[0]) == list(st.RUN_COLUMNS)
    assert len(runs) == 6  # three variants, two seeds, one update_prob (stage) or none
    game = js.make_game("congestion")
    learners = {
        "eps-greedy eps=0.1": js.EpsGreedy(explore_prob=0.1, stage_length=5),
        "exp3 eta=0.2": js.Exp3(eta=0.2, gamma=0.05, stage_length=5),
        "none": js.StageLearning(stage_length=5, update_prob=0.5),
    }
    for row in runs:
        learner = learners[row["variant"]]
        direct = js.simulate(game, learner, num_agents=60, num_stages=6, seed=int(row["seed"]))
        assert row["learner"] == learner.name
        assert float(row["final_nash_gap"]) == pytest.approx(float(direct.nash_gap[-1]), rel=1e-7)
        flags = np.asarray(direct.in_equilibrium)
        expected = st.study_convergence(flags, direct.rounds, 2)
        assert row["convergence_round"] == ("" if expected is None else str(expected))
        if learner.name == "stage":
            assert row["update_prob"] == "0.5" and row["br_distance"] != ""
            assert row["mf_distance"] != "" and row["eta"] == ""
        else:
            # No update_prob; best-reply dynamics and the mean field model stage learning.
            assert row["update_prob"] == row["br_distance"] == row["mf_distance"] == ""
            assert row["eta"] == ("0.2" if learner.name == "exp3" else "")
            assert row["explore_prob"] == ("0.1" if learner.name == "eps-greedy" else "0.05")


def test_the_summary_compares_each_learner_with_stage_learning(learners_folder):
    summary = (learners_folder / "summary.md").read_text(encoding="utf-8")
    assert "## learners" in summary
    speedup = st.read_csv(learners_folder / "info_speedup.csv")
    assert {(r["variant"], r["learner"]) for r in speedup} == {
        ("eps-greedy eps=0.1", "eps-greedy"),
        ("exp3 eta=0.2", "exp3"),
    }
    # Without an update_prob a learner has no "same setting" as stage learning's.
    assert {r["comparison"] for r in speedup} == {"own best"}
    conv = {r["variant"]: r for r in st.read_csv(learners_folder / "convergence.csv")}
    assert conv["exp3 eta=0.2"]["learner"] == "exp3" and conv["none"]["learner"] == "stage"


def test_learner_sweeps_are_reused_and_old_rows_read_as_stage_learning(
    learners_folder, tmp_path, monkeypatch
):
    ran = []
    real = st.runner.run_sweep
    monkeypatch.setattr(st.runner, "run_sweep", lambda *a, **k: ran.append(a[1]) or real(*a, **k))
    again = st.run_study(
        LEARNERS_STUDY, tmp_path / "again", progress=False, command="test", plots=False,
        reuse=[learners_folder],
    )  # fmt: skip
    assert ran == []
    columns = ("variant", "seed", "convergence_round", "final_nash_gap", "learner", "eta")
    pick = [{c: r[c] for c in columns} for r in st.read_csv(again / "runs.csv")]
    assert pick == [{c: r[c] for c in columns} for r in st.read_csv(learners_folder / "runs.csv")]
    # A folder written before the learner columns existed: its rows are stage learning's.
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text((learners_folder / "config.json").read_text())
    rows = [
        {c: v for c, v in r.items() if c not in ("learner", "eta")}
        for r in st.read_csv(learners_folder / "runs.csv")
        if r["variant"] == "none"
    ]
    write_csv(old / "runs.csv", rows)
    found = st.journal.reusable_sweeps(LEARNERS_STUDY, [old])
    assert list(found) == ["tiny_learners|none|60|5"]
    assert {r["learner"] for r in next(iter(found.values()))["runs"]} == {"stage"}


def test_missing_mean_field_distances_of_other_learners_say_why(learners_folder):
    runs = st.read_csv(learners_folder / "runs.csv")
    reasons = missing_mean_field_reasons(runs, {})
    assert reasons == {
        OTHER_LEARNER: ["tiny_learners: eps-greedy eps=0.1", "tiny_learners: exp3 eta=0.2"]
    }
    config = json.loads((learners_folder / "config.json").read_text(encoding="utf-8"))
    assert config["study"]["experiments"][0]["variants"][2]["learner"] == "exp3"


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_builtin_learner_experiments_run_every_learner_at_the_game_setting(mode):
    study = st.quick_study() if mode == "quick" else st.full_study()
    by_name = {e.name: e for e in study.experiments}
    bases = {
        "learners_congestion": "congestion_core",
        "learners_beauty_contest": "beauty_contest",
        "learners_adoption": "adoption",
        "learners_random_linear_potential": "random_linear_potential",
    }
    assert {n for n in by_name if n.startswith("learners_")} == set(bases)
    for name, base_name in bases.items():
        exp, base = by_name[name], by_name[base_name]
        assert exp.claims == ("learners",)
        settings = ("game", "game_params", "stage_lengths", "update_probs", "explore_prob")
        assert [getattr(exp, f) for f in settings] == [getattr(base, f) for f in settings]
        grid = [(v.learner, v.explore_prob, v.eta) for v in exp.variants]
        assert grid == [
            ("stage", None, None),
            ("eps-greedy", 0.02, None),
            ("eps-greedy", 0.05, None),
            ("eps-greedy", 0.1, None),
            ("exp3", 0.05, 0.05),
            ("exp3", 0.05, 0.2),
        ]
        assert exp.round_budget == base.round_budget
        assert max(exp.populations) == 10_000 and min(exp.populations) == 100


def test_a_study_checkpointing_every_stage_runs_other_learners_without(learners_folder, tmp_path):
    """Only stage learning's sweeps can be checkpointed; the others run without, and
    give the same rows."""
    folder = st.run_study(
        LEARNERS_STUDY, tmp_path / "ck", progress=False, command="test", plots=False,
        checkpoint_every=1,
    )  # fmt: skip
    columns = ("variant", "seed", "convergence_round", "final_nash_gap")
    pick = [{c: r[c] for c in columns} for r in st.read_csv(folder / "runs.csv")]
    assert pick == [{c: r[c] for c in columns} for r in st.read_csv(learners_folder / "runs.csv")]
