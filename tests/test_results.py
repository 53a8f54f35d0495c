"""Results on disk: tidy rows, CSV/JSON files, the plot, atomic writes, overwrite rules."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxstage as js
from jaxstage import folders, results, results_plot
from jaxstage.results import result_rows, run_labels, write_best_reply, write_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUM_STAGES = 6


def _relabelled(result: js.SimulationResult, **learner) -> js.SimulationResult:
    config = {**result.config, "learner": {**result.config["learner"], **learner}}
    return dataclasses.replace(result, config=config)


@pytest.fixture(scope="module")
def congestion_runs() -> list[js.SimulationResult]:
    """One real run and a copy posing as a second information mode (one compile only)."""
    game = js.make_game("congestion", num_actions=3)
    learner = js.StageLearning(stage_length=5, explore_prob=0.1, update_prob=0.2)
    result = js.simulate(game, learner, 1000, NUM_STAGES, seed=1)
    other = _relabelled(result, info="payoffs")
    other = dataclasses.replace(other, distribution=result.distribution[:, ::-1].copy())
    return [result, other]


@pytest.fixture(scope="module")
def adoption_run() -> js.SimulationResult:
    """A synthetic result of the typed adoption game (shapes and config as simulate's)."""
    game = js.make_game("adoption")
    rng = np.random.default_rng(0)
    stages, k, t = 3, game.num_actions, game.num_types
    distribution = rng.dirichlet(np.ones(k), stages + 1)
    share = rng.uniform(size=stages + 1)
    return js.SimulationResult(
        distribution=distribution,
        distribution_by_type=np.repeat(distribution[:, None], t, axis=1),
        best_reply_fraction=share,
        best_reply_fraction_by_type=rng.uniform(size=(stages + 1, t)).astype(np.float32),
        nash_gap=rng.uniform(size=stages + 1).astype(np.float32),
        expected_payoffs=np.zeros((stages + 1, t, k), np.float32),
        welfare=np.zeros(stages + 1, np.float32),
        distance_to_equilibrium=None,
        played_distribution=distribution[1:],
        switched_fraction=np.zeros(stages, np.float32),
        realized_mean_payoff=np.zeros(stages, np.float32),
        explore_prob=np.full(stages, 0.1),
        stage_length=np.full(stages, 4),
        rounds=4 * np.arange(stages + 1),
        in_equilibrium=share >= 0.95,
        convergence_stage=None,
        convergence_round=None,
        config={
            "game": game.config(),
            "action_names": list(game.action_names),
            "type_names": list(game.type_names),
            "learner": js.StageLearning().config(),
            "num_agents": 1000,
            "seed": 0,
            "eps": 0.05,
            "delta": 0.05,
            "reference_equilibria": [],
        },
    )


def _read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- rows


def test_rows_columns_and_count(congestion_runs):
    result = congestion_runs[0]
    rows = result_rows(result)
    assert len(rows) == NUM_STAGES + 1
    actions = ["link0", "link1", "link2"]
    expected = (
        ["game", "num_agents", "info", "seed", "stage", "round", "stage_length", "explore_prob"]
        + [f"dist_{a}" for a in actions]
        + [f"played_{a}" for a in actions]
        + ["best_reply_fraction", "nash_gap", "welfare", "realized_mean_payoff"]
        + ["switched_fraction", "distance_to_equilibrium", "in_equilibrium"]
    )
    assert all(list(row) == expected for row in rows)
    first, last = rows[0], rows[-1]
    assert (first["game"], first["num_agents"], first["info"], first["seed"]) == (
        "congestion",
        1000,
        "none",
        1,
    )
    for key in ["stage_length", "explore_prob", "played_link0", "switched_fraction"]:
        assert math.isnan(first[key])
    assert [row["stage"] for row in rows] == list(range(NUM_STAGES + 1))
    assert [row["round"] for row in rows] == [5 * s for s in range(NUM_STAGES + 1)]
    assert last["stage_length"] == 5 and last["explore_prob"] == pytest.approx(0.1)
    np.testing.assert_allclose(
        [last[f"dist_{a}"] for a in actions], result.distribution[-1], rtol=1e-6
    )
    np.testing.assert_allclose(
        [last[f"played_{a}"] for a in actions], result.played_distribution[-1], rtol=1e-6
    )
    assert last["nash_gap"] == pytest.approx(float(result.nash_gap[-1]), rel=1e-6)
    assert last["in_equilibrium"] is bool(result.in_equilibrium[-1])
    assert all(isinstance(row["in_equilibrium"], bool) for row in rows)


def test_rows_per_type_columns(adoption_run):
    row = result_rows(adoption_run)[-1]
    assert {"dist_keep", "dist_adopt", "played_keep", "played_adopt"} <= set(row)
    by_type = [key for key in row if key.startswith("best_reply_fraction_")]
    assert by_type == [
        "best_reply_fraction_theta=0.1",
        "best_reply_fraction_theta=0.4",
        "best_reply_fraction_theta=0.8",
    ]
    np.testing.assert_allclose(
        [row[key] for key in by_type], adoption_run.best_reply_fraction_by_type[-1], rtol=1e-6
    )


def test_rows_fall_back_to_indices_and_skip_missing_distance(congestion_runs):
    config = {
        **congestion_runs[0].config,
        "game": {"name": "mine", "custom": True},
        "action_names": None,
        "type_names": None,
    }
    result = dataclasses.replace(congestion_runs[0], config=config, distance_to_equilibrium=None)
    row = result_rows(result)[0]
    assert [key for key in row if key.startswith("dist_")] == ["dist_0", "dist_1", "dist_2"]
    assert "distance_to_equilibrium" not in row
    with pytest.raises(TypeError, match="SimulationResult"):
        result_rows("not a result")


def test_run_labels(congestion_runs):
    assert run_labels(congestion_runs) == ["info=none", "info=payoffs"]
    same = [congestion_runs[0], congestion_runs[0]]
    assert run_labels(same) == ["run 0", "run 1"]
    reseeded = dataclasses.replace(
        congestion_runs[0], config={**congestion_runs[0].config, "seed": 9}
    )
    assert run_labels([congestion_runs[0], reseeded]) == ["seed=1", "seed=9"]


# --------------------------------------------------------------------------- files


def test_write_single_run(tmp_path, congestion_runs):
    result = congestion_runs[0]
    folder = write_results(result, tmp_path / "out")
    assert folder == tmp_path / "out"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.json", "plot.png", "results.csv", "summary.json"]
    assert (folder / "plot.png").read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left

    table = _read_csv(folder / "results.csv")
    assert len(table) == NUM_STAGES + 1
    assert list(table[0]) == list(result_rows(result)[0])
    assert table[0]["explore_prob"] == "" and table[0]["played_link0"] == ""
    assert table[-1]["in_equilibrium"] in ("True", "False")
    np.testing.assert_allclose(
        [float(table[-1][f"dist_link{j}"]) for j in range(3)], result.distribution[-1]
    )

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["num_runs"] == 1
    run = summary["runs"][0]
    assert run["converged"] == result.converged
    assert run["convergence_round"] == result.convergence_round
    np.testing.assert_allclose(run["final_distribution"], result.distribution[-1])
    assert run["final_best_reply_fraction"] == pytest.approx(result.best_reply_fraction[-1])
    assert run["final_nash_gap"] == pytest.approx(float(result.nash_gap[-1]), rel=1e-6)

    config = json.loads((folder / "config.json").read_text())
    assert config["runs"][0]["game"]["name"] == "congestion"
    assert "jax" in config["runs"][0]["versions"]


def test_write_several_runs(tmp_path, congestion_runs):
    folder = write_results(js.SweepResult(list(congestion_runs)), tmp_path / "both")
    table = _read_csv(folder / "results.csv")
    assert len(table) == 2 * (NUM_STAGES + 1)
    assert list(table[0])[:2] == ["run", "label"]
    assert {(row["run"], row["label"], row["info"]) for row in table} == {
        ("0", "info=none", "none"),
        ("1", "info=payoffs", "payoffs"),
    }
    summary = json.loads((folder / "summary.json").read_text())
    assert [run["label"] for run in summary["runs"]] == ["info=none", "info=payoffs"]
    assert len(json.loads((folder / "config.json").read_text())["runs"]) == 2
    assert (folder / "plot.png").read_bytes()[:8] == PNG_MAGIC

    labelled = write_results(congestion_runs, tmp_path / "labelled", plot=False, labels=["a", "b"])
    assert {row["label"] for row in _read_csv(labelled / "results.csv")} == {"a", "b"}
    assert not (labelled / "plot.png").exists()


def test_write_rejects_bad_input(tmp_path, congestion_runs):
    with pytest.raises(TypeError, match="SimulationResult"):
        write_results("nope", tmp_path / "x")
    with pytest.raises(ValueError, match="at least one run"):
        write_results([], tmp_path / "x")
    with pytest.raises(ValueError, match="labels"):
        write_results(congestion_runs, tmp_path / "x", labels=["only one"])
    assert not (tmp_path / "x").exists()


def test_pandas_reads_results(tmp_path, congestion_runs, adoption_run):
    pd = pytest.importorskip("pandas")
    folder = write_results(congestion_runs, tmp_path / "out", plot=False)
    frame = pd.read_csv(folder / "results.csv")
    assert frame.shape[0] == 2 * (NUM_STAGES + 1)
    assert frame["in_equilibrium"].dtype == bool
    assert frame["explore_prob"].isna().sum() == 2
    typed = write_results(adoption_run, tmp_path / "typed", plot=False)
    assert "best_reply_fraction_theta=0.4" in pd.read_csv(typed / "results.csv").columns


# --------------------------------------------------------------------------- atomicity


def _explode(*args, **kwargs):
    raise RuntimeError("plot failed")


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, congestion_runs):
    monkeypatch.setattr(results_plot, "plot_runs", _explode)
    with pytest.raises(RuntimeError, match="plot failed"):
        write_results(congestion_runs[0], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a staging folder


def test_interrupted_overwrite_keeps_old_folder(tmp_path, monkeypatch, congestion_runs):
    folder = write_results(congestion_runs[0], tmp_path / "out", plot=False)
    before = (folder / "summary.json").read_text()
    monkeypatch.setattr(results_plot, "plot_runs", _explode)
    with pytest.raises(RuntimeError):
        write_results(congestion_runs[1], folder, overwrite=True)
    assert (folder / "summary.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_refuses_to_overwrite(tmp_path, congestion_runs):
    folder = write_results(congestion_runs[0], tmp_path / "out", plot=False)
    with pytest.raises(ValueError, match=r"out.*not empty.*overwrite"):
        write_results(congestion_runs[1], folder, plot=False)
    write_results(congestion_runs[1], folder, plot=False, overwrite=True)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["runs"][0]["info"] == "payoffs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    empty = tmp_path / "empty"
    empty.mkdir()
    write_results(congestion_runs[0], empty, plot=False)  # an empty folder is fine
    assert (empty / "results.csv").exists()


def test_overwrite_never_deletes_foreign_files(tmp_path, congestion_runs):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="notes.txt"):
        write_results(congestion_runs[0], folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        write_results(congestion_runs[0], tmp_path / "file")


# --------------------------------------------------------------------------- best reply


def test_write_best_reply(tmp_path):
    game = js.make_game("congestion", num_actions=3)
    result = js.best_reply_dynamics(game, 300, seed=0)
    folder = write_best_reply(result, tmp_path / "br", record_every=1)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "summary.json",
        "trajectory.csv",
    ]
    table = _read_csv(folder / "trajectory.csv")
    assert len(table) == len(result.trajectory)
    assert list(table[0]) == ["record", "step", "dist_link0", "dist_link1", "dist_link2"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["converged"] is True and summary["steps"] == result.steps
    np.testing.assert_allclose(summary["final_distribution"], result.distribution)
    np.testing.assert_allclose(summary["reference_equilibria"][0], game.equilibria()[0])
    with pytest.raises(ValueError, match="not empty"):
        write_best_reply(result, folder)
    with pytest.raises(TypeError, match="BestReplyResult"):
        write_best_reply("nope", tmp_path / "other")


# --------------------------------------------------------------------------- folder safety


def test_unwritable_location_is_refused_up_front(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = {
        tmp_path / "file" / "run": "is not a folder",  # a path under a regular file
        tmp_path / "file" / "a" / "run": "is not a folder",
    }
    if Path("/proc/self").is_dir():  # a virtual file system: no folders can be made there
        cases[Path("/proc/jaxstage-test")] = "cannot create a folder in '/proc'"
    for folder, reason in cases.items():
        with pytest.raises(ValueError, match="cannot write output folder") as error:
            results.check_output_folder(folder)
        assert str(folder) in str(error.value) and reason in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no probe left behind
    results.check_output_folder(tmp_path / "new" / "deeper" / "run")  # parents made later
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_refused_up_front(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=r"cannot write output folder .*locked.*Permission"):
            results.check_output_folder(locked / "run")
    finally:
        locked.chmod(0o755)


def test_read_only_file_system_is_refused_up_front(tmp_path, monkeypatch):
    """As a read-only mount answers (root included): creating any entry fails with EROFS."""
    real_mkdir = Path.mkdir

    def read_only_mkdir(self, *args, **kwargs):
        if self.parent == tmp_path:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    with pytest.raises(ValueError, match=r"cannot write output folder .*run.*Read-only"):
        results.check_output_folder(tmp_path / "run")
    with pytest.raises(ValueError, match="Read-only"):
        write_best_reply(js.best_reply_dynamics(js.make_game("congestion"), 30), tmp_path / "br")


@pytest.mark.parametrize("name", ["", ".", "..", "out/.."])
def test_folder_names_that_name_no_folder_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="must (name a folder|end in a folder name)"):
        results.check_output_folder(name)
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_stale_staging_folders_of_dead_processes_are_cleaned_up(tmp_path, congestion_runs):
    dead, host = _dead_pid(), folders.host_tag()
    stale = tmp_path / f".out.partial-{dead}-{host}-0123abcd"  # killed while writing
    legacy = tmp_path / f".other.partial-{dead}-89abcdef"  # older versions: no host tag
    for folder in (stale, legacy):
        folder.mkdir()
        (folder / "results.csv").write_text("cut short")
    kept = {
        # a live process (this one) may still be writing it
        tmp_path / f".out.partial-{os.getpid()}-{host}-11111111": "results.csv",
        # another host's PIDs say nothing here
        tmp_path / f".out.partial-{dead}-ffffffff-22222222": "results.csv",
        # something that is not a jaxstage file
        tmp_path / f".out.partial-{dead}-{host}-33333333": "notes.txt",
        # the only copy of earlier results (killed between the two renames)
        tmp_path / f".gone.old-{dead}-{host}-44444444": "summary.json",
        # not jaxstage's name pattern
        tmp_path / f".out.partial-{dead}": "results.csv",
        tmp_path / "out.partial-1-0123abcd": "results.csv",
    }
    for folder, name in kept.items():
        folder.mkdir()
        (folder / name).write_text("keep")
    write_results(congestion_runs[0], tmp_path / "out", plot=False)
    assert not stale.exists() and not legacy.exists()
    for folder, name in kept.items():
        assert (folder / name).read_text() == "keep", folder
    assert {p.name for p in tmp_path.iterdir()} == {"out", *(p.name for p in kept)}


def test_a_retired_folder_is_removed_once_its_successor_exists(tmp_path, congestion_runs):
    dead, host = _dead_pid(), folders.host_tag()
    write_results(congestion_runs[0], tmp_path / "done", plot=False)
    retired = tmp_path / f".done.old-{dead}-{host}-0123abcd"  # killed before removing it
    retired.mkdir()
    (retired / "summary.json").write_text("{}")
    write_results(congestion_runs[0], tmp_path / "next", plot=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done", "next"]


def test_symlinked_folder_is_written_through_and_kept(tmp_path, congestion_runs):
    real = write_results(congestion_runs[0], tmp_path / "data" / "run", plot=False)
    link = tmp_path / "latest"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(ValueError, match=r"latest.*a link to .*run.*not empty"):
        write_results(congestion_runs[1], link, plot=False)
    write_results(congestion_runs[1], link, plot=False, overwrite=True)
    assert link.is_symlink() and link.resolve() == real.resolve()
    summary = json.loads((real / "summary.json").read_text())
    assert summary["runs"][0]["info"] == "payoffs"  # the linked folder has the new results
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "latest"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["run"]

    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "to-empty").symlink_to(empty, target_is_directory=True)
    write_results(congestion_runs[0], tmp_path / "to-empty", plot=False)
    assert (tmp_path / "to-empty").is_symlink() and (empty / "results.csv").exists()

    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"'.*dangling' is a symbolic link to '.*nowhere'"):
        write_results(congestion_runs[0], tmp_path / "dangling", plot=False)
    assert not (tmp_path / "nowhere").exists()


def test_a_symlinked_file_is_not_a_result_file(tmp_path, congestion_runs):
    folder = write_results(congestion_runs[0], tmp_path / "out", plot=False)
    mine = tmp_path / "mine.csv"
    mine.write_text("keep me")
    (folder / "results.csv").unlink()
    (folder / "results.csv").symlink_to(mine)
    with pytest.raises(ValueError, match="results.csv"):
        write_results(congestion_runs[0], folder, plot=False, overwrite=True)
    assert mine.read_text() == "keep me"


def test_something_that_appears_in_the_old_folder_is_kept(tmp_path, monkeypatch, congestion_runs):
    folder = write_results(congestion_runs[0], tmp_path / "out", plot=False)
    real_replace = os.replace

    def replace_after_a_late_file(src, dst):
        if os.fspath(src) == os.fspath(folder):  # right after the last check
            (folder / "late.txt").write_text("mine")
        real_replace(src, dst)

    monkeypatch.setattr(folders.os, "replace", replace_after_a_late_file)
    with pytest.warns(RuntimeWarning, match="late.txt"):
        write_results(congestion_runs[1], folder, plot=False, overwrite=True)
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert (kept / "late.txt").read_text() == "mine"
