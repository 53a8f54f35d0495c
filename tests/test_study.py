"""Tests of the study runner's own logic (jaxstage/study/): convergence detection,
derived tables, the distance to best-reply dynamics, a tiny real study and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from jaxstage import study as st
from jaxstage.cli import main
from jaxstage.study import plots as study_plots
from jaxstage.study import runner
from jaxstage.tables import csv_text

# --------------------------------------------------------------------------- helpers


def run_row(
    rounds: float | None,
    *,
    experiment: str = "e",
    variant: str = "none",
    tau: int = 10,
    update: float = 0.1,
    n: int = 100,
    budget: int = 1000,
) -> dict:
    """A hand-made runs-table row; ``rounds=None`` = not converged."""
    return {
        "claims": "C1",
        "experiment": experiment,
        "game": "congestion",
        "variant": variant,
        "info": variant.split()[0],
        "stage_length": tau,
        "update_prob": update,
        "num_agents": n,
        "round_budget": budget,
        "converged": rounds is not None,
        "convergence_round": rounds,
        "final_nash_gap": 0.1,
        "br_distance": 0.2,
    }


def conv_row(share: float, median: float | None, **keys) -> dict:
    """A hand-made convergence-table row."""
    row = {
        "experiment": "e",
        "game": "congestion",
        "variant": "none",
        "info": "none",
        "stage_length": 10,
        "update_prob": 0.1,
        "num_agents": 100,
        "round_budget": 1000,
        "share_converged": share,
        "median_rounds": median,
    }
    row.update(keys)
    return row


# --------------------------------------------------------------------------- convergence


def test_convergence_needs_equilibrium_to_the_end():
    flags = [False, True, True, False, True, True, True, True]
    rounds = [0, 10, 20, 30, 40, 50, 60, 70]
    assert st.study_convergence(flags, rounds, hold_stages=3) == 40


def test_convergence_rejects_a_short_final_tail():
    # In equilibrium only in the last two states: not enough with hold_stages=3.
    flags = [False, False, False, True, True]
    assert st.study_convergence(flags, [0, 5, 10, 15, 20], hold_stages=3) is None
    assert st.study_convergence(flags, [0, 5, 10, 15, 20], hold_stages=2) == 15


def test_convergence_none_when_equilibrium_is_left():
    flags = [True, True, True, True, False]
    assert st.study_convergence(flags, [0, 1, 2, 3, 4], hold_stages=1) is None


def test_convergence_from_the_start_is_round_zero():
    assert st.study_convergence([True] * 4, [0, 7, 14, 21], hold_stages=4) == 0


def test_convergence_checks_lengths():
    with pytest.raises(ValueError, match="flags"):
        st.study_convergence([True, True], [0], hold_stages=1)


def test_default_hold_is_a_tenth_of_the_stages_at_least_three():
    exp = st.Experiment("e", ("C1",), "congestion", (100,), round_budget=1000)
    assert exp.stages(10) == 100
    assert exp.hold(10) == 10
    assert exp.hold(100) == 3
    assert st.Experiment("e", ("C1",), "congestion", (100,), hold_stages=7).hold(10) == 7


# --------------------------------------------------------------------------- medians


def test_median_with_failures_counts_non_converged_as_infinite():
    inf = math.inf
    assert st.median_with_failures([100, 300, 200]) == 200
    assert st.median_with_failures([100, 200, inf, inf]) == 200  # lower median
    assert st.median_with_failures([100, inf, inf]) is None
    assert st.median_with_failures([100, 200, 300, inf], 0.25) == 100
    assert st.median_with_failures([100, 200, 300, inf], 0.75) == 300
    assert st.median_with_failures([100, 200, 300, inf], 1.0) is None
    assert st.median_with_failures([]) is None


def test_convergence_table_with_non_converged_seeds():
    runs = [run_row(100), run_row(300), run_row(None), run_row(200), run_row(None)]
    runs += [run_row(50, n=1000), run_row(None, n=1000), run_row(None, n=1000)]
    table = {row["num_agents"]: row for row in st.convergence_table(runs)}
    small, big = table[100], table[1000]
    assert small["seeds"] == 5 and small["converged"] == 3
    assert small["share_converged"] == pytest.approx(0.6)
    assert small["median_rounds"] == 300  # 100, 200, 300, inf, inf
    assert small["q25_rounds"] == 200
    assert small["q75_rounds"] is None
    assert small["median_rounds_converged"] == 200
    assert big["median_rounds"] is None  # two of three failed
    assert big["median_rounds_converged"] == 50


def test_convergence_table_reads_csv_text():
    runs = [run_row(100), run_row(None)]
    text = [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in runs]
    (row,) = st.convergence_table(text)
    assert row["converged"] == 1
    assert row["median_rounds"] == 100
    assert row["stage_length"] == 10 and row["num_agents"] == 100


# --------------------------------------------------------------------------- shortest tau


def shortest(rows):
    return {
        r["num_agents"]: r["shortest_stage_length"] for r in st.shortest_stage_length_table(rows)
    }


def test_shortest_stage_length_none_qualifies():
    rows = [conv_row(0.8, 500, stage_length=t) for t in (1, 5, 10)]
    assert shortest(rows) == {100: None}


def test_shortest_stage_length_exactly_ninety_percent_qualifies():
    rows = [conv_row(0.8, 500, stage_length=2), conv_row(0.9, 500, stage_length=5)]
    rows.append(conv_row(1.0, 500, stage_length=10))
    assert shortest(rows) == {100: 5}
    # As read back from a CSV (text), 9 of 10 seeds.
    rows = [conv_row(str(9 / 10), "500", stage_length="5"), conv_row("0.5", "", stage_length="2")]
    assert shortest(rows) == {100: 5}


def test_shortest_stage_length_non_monotone():
    rows = [
        conv_row(0.5, None, stage_length=1),
        conv_row(1.0, 400, stage_length=2),
        conv_row(0.3, None, stage_length=5),
        conv_row(1.0, 300, stage_length=10),
    ]
    rows += [
        conv_row(0.2, None, stage_length=10, num_agents=1000),
        conv_row(0.95, 100, stage_length=5, num_agents=1000),
        conv_row(0.1, None, stage_length=2, num_agents=1000),
    ]
    table = {r["num_agents"]: r for r in st.shortest_stage_length_table(rows)}
    assert table[100]["shortest_stage_length"] == 2
    assert table[1000]["shortest_stage_length"] == 5
    assert table[1000]["stage_lengths_tried"] == "2;5;10"
    assert table[1000]["shares"] == "0.10;0.95;0.20"


# --------------------------------------------------------------------------- info speed-up


def test_info_speedup_own_best_and_same_setting():
    rows = [
        conv_row(1.0, 1000),  # none, tau 10, p 0.1
        conv_row(1.0, 2000, stage_length=20),
        conv_row(1.0, 100, variant="payoffs", info="payoffs", stage_length=1, update_prob=0.01),
        conv_row(0.2, None, variant="payoffs", info="payoffs"),  # at none's setting: herding
    ]
    table = {r["comparison"]: r for r in st.info_speedup_table(rows)}
    best, same = table["own best"], table["same setting"]
    assert best["speedup"] == pytest.approx(10.0)
    assert (best["stage_length"], best["update_prob"]) == (1, 0.01)
    assert (best["baseline_stage_length"], best["baseline_update_prob"]) == (10, 0.1)
    assert same["speedup"] == 0.0  # only the variant failed
    assert (same["stage_length"], same["update_prob"]) == (10, 0.1)


def test_info_speedup_non_converged_baseline_and_both():
    rows = [
        conv_row(0.0, None),
        conv_row(1.0, 250, variant="distribution", info="distribution"),
        conv_row(0.0, None, variant="payoffs", info="payoffs"),
    ]
    table = {r["variant"]: r for r in st.info_speedup_table(rows)}
    assert table["distribution"]["speedup"] == math.inf
    assert table["payoffs"]["speedup"] is None


def test_info_speedup_of_a_run_converged_at_round_zero():
    # A learner whose initial state is an equilibrium converges at round 0.
    rows = [conv_row(1.0, 400), conv_row(1.0, 0, variant="exp3", info="none")]
    assert st.info_speedup_table(rows)[0]["speedup"] == math.inf
    rows = [conv_row(1.0, 0), conv_row(1.0, 0, variant="exp3", info="none")]
    assert st.info_speedup_table(rows)[0]["speedup"] == 1.0


def test_info_speedup_uses_baseline_experiment_per_population():
    rows = [
        conv_row(1.0, 800, experiment="base"),
        conv_row(1.0, 400, experiment="base", num_agents=1000),
        conv_row(1.0, 200, experiment="noisy", variant="payoffs m=10", info="payoffs"),
        conv_row(1.0, 100, experiment="noisy", variant="payoffs m=10", num_agents=1000),
    ]
    base = st.Experiment("base", ("C3",), "congestion", (100, 1000))
    noisy = st.Experiment("noisy", ("C4",), "congestion", (100, 1000), baseline="base")
    table = st.info_speedup_table(rows, [base, noisy])
    got = {(r["num_agents"], r["comparison"]): r["speedup"] for r in table}
    assert got == {
        (100, "own best"): 4.0,
        (100, "same setting"): 4.0,
        (1000, "own best"): 4.0,
        (1000, "same setting"): 4.0,
    }


# --------------------------------------------------------------------------- br distance


def test_br_trajectory_holds_a_stopped_state_and_continues_a_cycle():
    path = np.array([[0.5, 0.5], [0.2, 0.8]])
    held = st.br_trajectory(path, 4, cycled=False)
    np.testing.assert_allclose(held, [[0.5, 0.5], [0.2, 0.8], [0.2, 0.8], [0.2, 0.8]])
    cycle = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    extended = st.br_trajectory(cycle, 6, cycled=True)
    np.testing.assert_allclose(extended[3:], [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(st.br_trajectory(cycle, 2, cycled=True), cycle[:2])


def test_br_distance_mean_l1_over_stages():
    learners = np.array([[0.5, 0.5], [0.6, 0.4], [0.7, 0.3]])
    br = np.array([[0.5, 0.5], [0.5, 0.5], [0.7, 0.3]])
    assert st.br_distance(learners, br) == pytest.approx((0.2 + 0.0) / 2)
    assert st.br_distance(learners, learners) == 0.0
    with pytest.raises(ValueError):
        st.br_distance(learners, br[:2])


# --------------------------------------------------------------------------- selection


def test_select_filters_claims_and_populations():
    study = st.quick_study()
    chosen = st.select(study, claims=["C3"], max_agents=1000, seeds=3)
    assert {e.name for e in chosen.experiments} == {"congestion_info"}
    assert chosen.experiments[0].populations == (1000,)
    assert chosen.seeds == 3
    with pytest.raises(ValueError, match="C9.*valid: C1"):
        st.select(study, claims=["C9"])
    with pytest.raises(ValueError, match="nothing to run"):
        st.select(study, max_agents=10)


def test_presets_are_valid_and_reach_their_scale():
    quick, full = st.quick_study(), st.full_study()
    quick.validate()
    full.validate()
    assert max(max(e.populations) for e in full.experiments) == 10**7
    assert min(min(e.populations) for e in full.experiments) == 10**2
    for study in (quick, full):
        assert study.seeds >= 10
        served = {c for e in study.experiments for c in e.claims}
        assert served == set(st.CLAIMS)


def test_large_experiments_continue_their_base_at_larger_populations():
    # A "_large" experiment is drawn in its base's plot panel: it must be the same
    # experiment (game, stage lengths, exploration, claims) at larger populations only,
    # with a subset of the base's settings.
    experiments = {e.name: e for e in st.full_study().experiments}
    large = [name for name in experiments if name.endswith("_large")]
    assert {"beauty_contest_large", "adoption_large", "random_linear_potential_large"} <= set(large)
    for name in large:
        exp, base = experiments[name], experiments[name.removesuffix("_large")]
        assert (exp.game, exp.game_params, exp.claims) == (base.game, base.game_params, base.claims)
        assert exp.explore_prob == base.explore_prob
        assert set(exp.update_probs) <= set(base.update_probs)
        assert min(exp.populations) > max(base.populations)
        assert max(exp.populations) == 10**7


def test_validate_names_the_bad_value():
    bad = st.Study("x", (st.Experiment("e", ("C7",), "congestion", (100,)),))
    with pytest.raises(ValueError, match="C7.*valid: C1, C2"):
        bad.validate()
    bad = st.Study("x", (st.Experiment("e", ("C1",), "nope", (100,)),))
    with pytest.raises(ValueError, match="'nope'.*congestion"):
        bad.validate()


# --------------------------------------------------------------------------- a tiny real study


TINY = st.Study(
    "tiny",
    (
        st.Experiment(
            "tiny_core",
            ("C1", "C5"),
            "congestion",
            (100,),
            stage_lengths=(5,),
            round_budget=20,
            series=True,
            series_seeds=1,
        ),
    ),
    seeds=2,
)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study") / "tiny"
    st.run_study(TINY, folder, progress=False, command="test", plots=True)
    return folder


def test_tiny_study_writes_every_table(tiny_study):
    names = {p.name for p in tiny_study.iterdir()}
    for name in ("runs.csv", "convergence.csv", "shortest_stage_length.csv", "config.json"):
        assert name in names
    assert {"summary.md", "series.csv", "rounds_vs_population.png"} <= names
    assert names <= st.STUDY_FILES
    assert not [p for p in tiny_study.parent.iterdir() if p.name.startswith(".")]


def test_tiny_study_runs_table(tiny_study):
    runs = st.read_csv(tiny_study / "runs.csv")
    assert list(runs[0]) == list(st.RUN_COLUMNS)
    assert len(runs) == 2
    assert sorted(r["seed"] for r in runs) == ["0", "1"]
    for row in runs:
        assert row["experiment"] == "tiny_core" and row["game"] == "congestion"
        assert row["num_agents"] == "100" and row["stage_length"] == "5"
        assert row["num_stages"] == "4" and row["round_budget"] == "20"
        assert row["claims"] == "C1;C5"
        assert row["converged"] in ("True", "False")
        assert (row["convergence_round"] == "") == (row["converged"] == "False")
        assert 0 <= float(row["final_best_reply_fraction"]) <= 1
        assert float(row["br_distance"]) >= 0
        assert row["jax_version"] and row["kernel"]
    (conv,) = st.read_csv(tiny_study / "convergence.csv")
    assert conv["seeds"] == "2"
    series = st.read_csv(tiny_study / "series.csv")
    assert len(series) == 5  # seed 0 only, initial state + 4 stages
    summary = (tiny_study / "summary.md").read_text()
    assert "## C1" in summary and "## C5" in summary and "tiny_core" in summary


def test_tiny_study_refuses_to_overwrite_without_flag(tiny_study):
    runs = st.read_csv(tiny_study / "runs.csv")
    with pytest.raises(ValueError, match="already holds a study"):
        st.write_study(tiny_study, TINY, runs, [], wall_seconds=1.0, command="x")
    st.write_study(
        tiny_study, TINY, runs, [], wall_seconds=1.0, command="again", overwrite=True, plots=False
    )
    assert "again" in (tiny_study / "config.json").read_text()
    assert not (tiny_study / "series.csv").exists()


def test_interrupted_write_leaves_no_folder(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(study_plots, "draw_plots", boom)
    runs = [run_row(100)]
    with pytest.raises(RuntimeError):
        st.write_study(tmp_path / "out", TINY, runs, [], wall_seconds=1.0, command="x")
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        st.check_study_folder(tmp_path, overwrite=True)
    with pytest.raises(ValueError, match="notes.txt"):
        st.write_study(tmp_path, TINY, [run_row(1)], [], wall_seconds=0, command="", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--claims", "C1,C9"], "C9"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--max-agents", "0"], "max_agents must be >= 1"),
        (["--quick", "--full"], "not allowed with"),
    ],
)
def test_cli_rejects_bad_input(argv, message, capsys, tmp_path):
    assert main(["study", "--out", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "C9" in message:
        assert "oscillation" in err  # names the allowed set
    assert not (tmp_path / "s").exists()


def test_cli_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("keep")
    assert main(["study", "--quick", "--out", str(tmp_path), "--overwrite"]) == 2
    assert "data.csv" in capsys.readouterr().err
    assert (tmp_path / "data.csv").read_text() == "keep"


def test_selecting_a_claim_brings_the_plain_baseline_it_needs():
    chosen = st.select(st.quick_study(), claims=["C4"])
    names = [e.name for e in chosen.experiments]
    assert "congestion_noisy_info" in names and "congestion_info" in names
    base = next(e for e in chosen.experiments if e.name == "congestion_info")
    assert [v.label for v in base.variants] == ["none"]
    assert all("C1" not in e.claims for e in chosen.experiments)


# --------------------------------------------------------------------------- interrupted runs

TWO_SWEEPS = st.Study(
    "two",
    (
        st.Experiment(
            "two_core", ("C1",), "congestion", (60, 120), stage_lengths=(5,), round_budget=20
        ),
    ),
    seeds=2,
)


class StopHereError(Exception):
    pass


REAL_RUN_SWEEP = st.run_sweep


def _interrupt_after(monkeypatch, sweeps: int) -> list[str]:
    """Make ``run_sweep`` fail after ``sweeps`` calls; returns the populations it ran."""
    real, calls = REAL_RUN_SWEEP, []

    def flaky(exp, variant, n, tau, seeds, **kwargs):
        if len(calls) == sweeps:
            raise StopHereError
        calls.append(n)
        return real(exp, variant, n, tau, seeds, **kwargs)

    monkeypatch.setattr(runner, "run_sweep", flaky)
    return calls


def _interrupted_after_one_sweep(tmp_path, monkeypatch):
    """A ``TWO_SWEEPS`` study folder whose run stopped after its first sweep."""
    folder = tmp_path / "study"
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(StopHereError):
        st.run_study(TWO_SWEEPS, folder, progress=False, plots=False)
    return folder


def _table_without_timing(folder) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k != "sweep_seconds"}
        for row in st.read_csv(folder / "runs.csv")
    ]


def test_an_interrupted_study_keeps_its_finished_sweeps_and_resumes(tmp_path, monkeypatch):
    whole = st.run_study(TWO_SWEEPS, tmp_path / "whole", progress=False, plots=False)
    folder = tmp_path / "study"
    calls = _interrupt_after(monkeypatch, 1)
    with pytest.raises(StopHereError):
        st.run_study(TWO_SWEEPS, folder, progress=False, plots=False)
    assert calls == [60]
    assert not folder.exists()  # nothing that looks complete
    journal = st.partial_folder(folder) / "sweeps.jsonl"
    assert len(journal.read_text().splitlines()) == 1

    with pytest.raises(ValueError, match="--resume"):  # neither resume nor overwrite
        st.run_study(TWO_SWEEPS, folder, progress=False, plots=False)

    calls = _interrupt_after(monkeypatch, 5)
    st.run_study(TWO_SWEEPS, folder, resume=True, progress=False, plots=False)
    assert calls == [120]  # the journalled sweep was not run again
    assert not st.partial_folder(folder).exists()
    assert _table_without_timing(folder) == _table_without_timing(whole)


def test_resume_refuses_a_journal_of_another_study(tmp_path, monkeypatch):
    folder = _interrupted_after_one_sweep(tmp_path, monkeypatch)
    other = st.select(TWO_SWEEPS, seeds=3)
    with pytest.raises(ValueError, match="different study definition"):
        st.run_study(other, folder, resume=True, progress=False, plots=False)
    # --overwrite discards the journal and starts again.
    calls = _interrupt_after(monkeypatch, 5)
    st.run_study(other, folder, overwrite=True, progress=False, plots=False)
    assert calls == [60, 120]


def test_a_line_cut_short_is_run_again(tmp_path, monkeypatch):
    folder = _interrupted_after_one_sweep(tmp_path, monkeypatch)
    journal = st.partial_folder(folder) / "sweeps.jsonl"
    journal.write_text(journal.read_text()[:-40])  # killed while writing
    calls = _interrupt_after(monkeypatch, 5)
    st.run_study(TWO_SWEEPS, folder, resume=True, progress=False, plots=False)
    assert calls == [60, 120]


def test_resuming_after_a_cut_short_line_keeps_later_sweeps(tmp_path, monkeypatch):
    """A cut-short last line is dropped on resume, so the next sweep's entry stays whole."""
    folder = _interrupted_after_one_sweep(tmp_path, monkeypatch)
    journal = st.partial_folder(folder) / "sweeps.jsonl"
    whole = journal.read_text()
    journal.write_text(whole + whole[:40])  # killed while writing the second sweep
    with pytest.raises(StopHereError):  # resumed, and interrupted again before it ran
        _interrupt_after(monkeypatch, 0)
        st.run_study(TWO_SWEEPS, folder, resume=True, progress=False, plots=False)
    assert journal.read_text() == whole
    calls = _interrupt_after(monkeypatch, 5)
    st.run_study(TWO_SWEEPS, folder, resume=True, progress=False, plots=False)
    assert calls == [120]


KILLED_STUDY = """
import os, signal, sys
from jaxstage import checkpoint
from jaxstage import study as st

saved = checkpoint.save

def save(*args, **kwargs):  # SIGKILL after the second sweep's checkpoint of stage 2
    path = saved(*args, **kwargs)
    second = kwargs["manifest"]["extra"]["study_sweep"].endswith("|120|5")
    if second and kwargs["records"].last_stage >= 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

checkpoint.save = save
two = st.Study(
    "two",
    (st.Experiment("two_core", ("C1",), "congestion", (60, 120), stage_lengths=(5,),
                   round_budget=20),),
    seeds=2,
)
st.run_study(two, sys.argv[1], progress=False, plots=False, checkpoint_every=1)
"""


def test_a_study_killed_in_a_sweep_resumes_it_from_its_checkpoint(tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import jaxstage as js

    whole = st.run_study(
        TWO_SWEEPS, tmp_path / "whole", progress=False, plots=False, checkpoint_every=0
    )
    folder = tmp_path / "study"
    script = tmp_path / "killed.py"
    script.write_text(KILLED_STUDY)
    env = dict(os.environ, PYTHONPATH=str(Path(js.__file__).parents[1]))
    done = subprocess.run([sys.executable, str(script), str(folder)], env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    partial = st.partial_folder(folder)
    assert len((partial / "sweeps.jsonl").read_text().splitlines()) == 1
    assert (partial / st.SWEEP_CHECKPOINTS / "LATEST").read_text().strip() == "ckpt-0000000002"
    resumed = []
    real_resume = js.resume
    monkeypatch.setattr(js, "resume", lambda *a, **k: resumed.append(a) or real_resume(*a, **k))
    st.run_study(TWO_SWEEPS, folder, resume=True, progress=False, plots=False)
    assert len(resumed) == 1  # the second sweep went on from its checkpoint
    assert not partial.exists()
    assert _table_without_timing(folder) == _table_without_timing(whole)
    assert (folder / "convergence.csv").read_bytes() == (whole / "convergence.csv").read_bytes()


def test_stale_sweep_checkpoints_are_not_resumed(tmp_path, monkeypatch):
    """Checkpoints of another sweep (left by a kill after its journal line) are cleared."""
    folder = _interrupted_after_one_sweep(tmp_path, monkeypatch)
    stale = st.partial_folder(folder) / st.SWEEP_CHECKPOINTS
    import jaxstage as js

    js.sweep(
        js.make_game("congestion"),
        js.StageLearning(stage_length=5),
        60,
        3,
        seeds=[0, 1],
        checkpoint_dir=stale,
        checkpoint_every=1,
    )
    calls = _interrupt_after(monkeypatch, 5)
    st.run_study(TWO_SWEEPS, folder, resume=True, progress=False, plots=False)
    assert calls == [120] and not st.partial_folder(folder).exists()
    with pytest.raises(ValueError, match=r"checkpoint_every.*\[0, "):
        st.run_study(TWO_SWEEPS, tmp_path / "x", progress=False, checkpoint_every=-1)


def test_selecting_experiments_by_name():
    chosen = st.select(st.full_study(), experiments=["congestion_core"], max_agents=10**4)
    assert [e.name for e in chosen.experiments] == ["congestion_core"]
    assert chosen.experiments[0].populations == (100, 1000, 10_000)
    # A named experiment with a baseline brings the baseline's plain learner along.
    with_baseline = st.select(st.full_study(), experiments=["congestion_info"])
    names = [e.name for e in with_baseline.experiments]
    assert names == ["congestion_core", "congestion_info"]
    with pytest.raises(ValueError, match=r"unknown experiment\(s\) \['nope'\].*congestion_core"):
        st.select(st.full_study(), experiments=["nope"])


# --------------------------------------------------------------------------- reusing sweeps

WITH_SERIES = dataclasses.replace(
    TWO_SWEEPS,
    experiments=(dataclasses.replace(TWO_SWEEPS.experiments[0], series=True, series_seeds=1),),
)


def _text(folder, name) -> str:
    """A table's text with the timing column blanked (it differs from run to run)."""
    rows = st.read_csv(folder / name)
    return csv_text([{**row, "sweep_seconds": ""} for row in rows])


def test_an_extended_study_reuses_finished_sweeps_and_equals_a_fresh_one(tmp_path, monkeypatch):
    fresh = st.run_study(WITH_SERIES, tmp_path / "fresh", progress=False, plots=False)
    smaller = st.select(WITH_SERIES, max_agents=60)
    first = st.run_study(smaller, tmp_path / "first", progress=False, plots=False)
    calls = _interrupt_after(monkeypatch, 5)
    extended = st.run_study(
        WITH_SERIES, tmp_path / "extended", progress=False, plots=False, reuse=[first]
    )
    assert calls == [120]  # only the new population ran
    for name in ("runs.csv", "series.csv", "convergence.csv"):
        assert _text(extended, name) == _text(fresh, name)
    # The reused sweep keeps its own timing, and the folder says where it came from.
    first_runs, extended_runs = (st.read_csv(f / "runs.csv") for f in (first, extended))
    assert extended_runs[0]["sweep_seconds"] == first_runs[0]["sweep_seconds"]
    config = json.loads((extended / "config.json").read_text())
    assert config["reused_sweeps"] == {str(first): ["two_core|none|60|5"]}
    assert config["reused_sweep_seconds"] == pytest.approx(
        float(first_runs[0]["sweep_seconds"]), abs=0.05
    )
    assert "1 sweeps were taken from the finished study" in (extended / "summary.md").read_text()


@pytest.mark.parametrize(
    "change",
    [{"round_budget": 25}, {"explore_prob": 0.1}, {"update_probs": (0.2,)}],
    ids=["round_budget", "explore_prob", "update_probs"],
)
def test_a_sweep_defined_differently_is_run_again(tmp_path, monkeypatch, change):
    first = st.run_study(TWO_SWEEPS, tmp_path / "first", progress=False, plots=False)
    changed = dataclasses.replace(
        TWO_SWEEPS, experiments=(dataclasses.replace(TWO_SWEEPS.experiments[0], **change),)
    )
    calls = _interrupt_after(monkeypatch, 5)
    st.run_study(changed, tmp_path / "second", progress=False, plots=False, reuse=[first])
    assert calls == [60, 120]


def test_other_seeds_are_run_again(tmp_path, monkeypatch):
    first = st.run_study(TWO_SWEEPS, tmp_path / "first", progress=False, plots=False)
    calls = _interrupt_after(monkeypatch, 5)
    more_seeds = st.select(TWO_SWEEPS, seeds=3)
    st.run_study(more_seeds, tmp_path / "second", progress=False, plots=False, reuse=[first])
    assert calls == [60, 120]


def test_reuse_of_a_folder_that_is_not_a_study_is_refused_before_running(tmp_path, monkeypatch):
    calls = _interrupt_after(monkeypatch, 5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a finished study folder"):
        st.run_study(
            TWO_SWEEPS, tmp_path / "out", progress=False, plots=False, reuse=[tmp_path / "empty"]
        )
    assert calls == []
    assert not (tmp_path / "out").exists()
    assert not st.partial_folder(tmp_path / "out").exists()


def test_reused_sweeps_are_journalled_so_resume_needs_no_reuse(tmp_path, monkeypatch):
    first = st.run_study(
        st.select(TWO_SWEEPS, max_agents=60), tmp_path / "first", progress=False, plots=False
    )
    folder = tmp_path / "extended"
    _interrupt_after(monkeypatch, 0)  # the new population's sweep is interrupted
    with pytest.raises(StopHereError):
        st.run_study(TWO_SWEEPS, folder, progress=False, plots=False, reuse=[first])
    calls = _interrupt_after(monkeypatch, 5)
    st.run_study(TWO_SWEEPS, folder, resume=True, progress=False, plots=False)
    assert calls == [120]
    config = json.loads((folder / "config.json").read_text())
    assert config["reused_sweeps"] == {str(first): ["two_core|none|60|5"]}


def test_cli_reuse_of_a_missing_folder(tmp_path, capsys):
    code = main(
        ["study", "--quick", "--out", str(tmp_path / "o"), "--reuse", str(tmp_path / "none")]
    )
    assert code == 2
    assert "not a finished study folder" in capsys.readouterr().err


def test_redraw_plots_from_the_tables_only(tmp_path):
    folder = st.run_study(WITH_SERIES, tmp_path / "study", progress=False, plots=False)
    tables = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".png"}
    for png in folder.glob("*.png"):
        png.unlink()
    written = st.redraw_plots(folder)
    assert {p.name for p in written} >= {"rounds_vs_population.png", "oscillation.png"}
    assert all(p.stat().st_size > 1000 for p in written)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".png"} == tables
    with pytest.raises(ValueError, match="not a finished study folder"):
        st.redraw_plots(tmp_path / "nowhere")


# --------------------------------------------------------------------------- folder safety


def _foreign_partial(tmp_path):
    """``S.partial`` made by the user, not by jaxstage (the name is an ordinary one)."""
    partial = st.partial_folder(tmp_path / "S")
    partial.mkdir()
    (partial / "thesis.txt").write_text("years of work")
    return partial


def test_overwrite_never_deletes_a_partial_folder_jaxstage_did_not_make(tmp_path, monkeypatch):
    partial = _foreign_partial(tmp_path)
    calls = _interrupt_after(monkeypatch, 5)
    for flags in ({"overwrite": True}, {"resume": True}, {}):
        with pytest.raises(ValueError, match=r"S\.partial.*thesis\.txt") as error:
            st.run_study(TWO_SWEEPS, tmp_path / "S", progress=False, plots=False, **flags)
        assert "--overwrite" not in str(error.value)  # it would not help
    assert calls == []  # refused before any sweep
    assert (partial / "thesis.txt").read_text() == "years of work"
    # A journal folder that holds a journal and more is not removed either.
    (partial / "sweeps.jsonl").write_text("")
    with pytest.raises(ValueError, match="thesis.txt"):
        st.check_study_folder(tmp_path / "S", overwrite=True)
    assert (partial / "thesis.txt").exists()


def test_cli_overwrite_keeps_a_foreign_partial_folder(tmp_path, capsys):
    partial = _foreign_partial(tmp_path)
    assert main(["study", "--quick", "--out", str(tmp_path / "S"), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert str(partial) in err and "thesis.txt" in err
    assert (partial / "thesis.txt").read_text() == "years of work"
    (partial / "thesis.txt").unlink()
    partial.rmdir()
    partial.write_text("a file of that name")
    assert main(["study", "--quick", "--out", str(tmp_path / "S"), "--overwrite"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert partial.read_text() == "a file of that name"


def test_the_end_of_a_study_removes_only_the_journal(tmp_path, monkeypatch):
    folder = tmp_path / "S"
    real, partial = REAL_RUN_SWEEP, st.partial_folder(folder)

    def adds_a_file(exp, variant, n, tau, seeds, **kwargs):
        (partial / "notes.txt").write_text("mine")  # dropped in while the study ran
        return real(exp, variant, n, tau, seeds, **kwargs)

    monkeypatch.setattr(runner, "run_sweep", adds_a_file)
    with pytest.warns(RuntimeWarning, match="notes.txt"):
        st.run_study(TWO_SWEEPS, folder, progress=False, plots=False)
    assert (folder / "runs.csv").exists()
    assert sorted(p.name for p in partial.iterdir()) == ["notes.txt"]


def test_study_location_must_be_writable(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"cannot write output folder .*file.*not a folder"):
        st.check_study_folder(tmp_path / "file" / "S")
    assert main(["study", "--quick", "--out", str(tmp_path / "file" / "S")]) == 2
    assert "cannot write output folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="empty string"):
        st.check_study_folder("")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_symlinked_study_folder_is_written_through(tmp_path):
    runs = [run_row(100)]
    real = st.write_study(
        tmp_path / "real", TINY, runs, [], wall_seconds=0, command="one", plots=False
    )
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    st.write_study(link, TINY, runs, [], wall_seconds=0, command="two", overwrite=True, plots=False)
    assert link.is_symlink()
    assert "two" in (real / "config.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
