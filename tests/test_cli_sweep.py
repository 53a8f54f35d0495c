"""``jaxstage sweep``: the grid, its results folder against ``js.sweep``, the ``[sweep]``
table, checkpoints and ``jaxstage resume``, and the refusals."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import jaxstage as js
from jaxstage import checkpoint
from jaxstage.cli import main
from jaxstage.cli_sweep import MAX_PLOTTED_RUNS, parse_seeds, sweep_grid
from jaxstage.results import run_summary

BASE = ["sweep", "--agents", "1500", "--stages", "4", "--stage-length", "5", "--no-progress"]
GAME = js.make_game("congestion", num_actions=4)


def _summary(folder) -> list[dict]:
    return json.loads((folder / "summary.json").read_text())["runs"]


def _error(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_the_grid_is_every_combination_seed_innermost():
    rows = sweep_grid({"noise_std": [0.1, 0.5], "update_prob": [0.1, 1.0]}, [7, 8])
    assert len(rows) == 8
    assert rows[0] == {"noise_std": 0.1, "update_prob": 0.1, "seed": 7}
    assert rows[1] == {"noise_std": 0.1, "update_prob": 0.1, "seed": 8}
    assert rows[-1] == {"noise_std": 0.5, "update_prob": 1.0, "seed": 8}
    assert parse_seeds("3", 5, "--seeds") == [5, 6, 7]
    assert parse_seeds("3,9", 5, "--seeds") == [3, 9]
    assert parse_seeds([4, 2], 0, "seeds") == [4, 2]


def test_the_folder_holds_the_rows_of_the_python_sweep(tmp_path, capsys):
    out = tmp_path / "grid"
    args = [*BASE, "--explore", "0.05,0.2", "--update-prob", "0.3", "--seeds", "2"]
    assert main([*args, "--vary", "noise_std=[0.1,0.4]", "--out", str(out), "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert "8 runs" in printed and "noise_std=0.4, explore=0.2, seed=1" in printed
    learner = js.StageLearning(stage_length=5, update_prob=0.3)
    expected = js.sweep(
        GAME,
        learner,
        1500,
        4,
        seeds=[0, 1] * 4,
        explore_prob=[0.05, 0.05, 0.2, 0.2] * 2,
        game_params=[{"noise_std": 0.1}] * 4 + [{"noise_std": 0.4}] * 4,
    )
    rows = _summary(out)
    assert [row["label"] for row in rows][:3] == [
        "noise_std=0.1, explore=0.05, seed=0",
        "noise_std=0.1, explore=0.05, seed=1",
        "noise_std=0.1, explore=0.2, seed=0",
    ]
    for row, run in zip(rows, expected.runs, strict=True):
        assert {**row, "run": None, "label": None} == {
            "run": None,
            "label": None,
            **json.loads(json.dumps(run_summary(run))),
        }
    configs = json.loads((out / "config.json").read_text())["runs"]
    assert [c["learner"]["explore_prob"] for c in configs[:4]] == [0.05, 0.05, 0.2, 0.2]
    assert configs[5]["game_params"]["noise_std"] == pytest.approx(0.4, rel=1e-7)  # float32
    assert {c["learner"]["update_prob"] for c in configs} == {0.3}
    assert not (out / "plot.png").exists()


def test_plot_is_left_out_above_its_limit(tmp_path, capsys):
    assert main([*BASE, "--seeds", "2", "--out", str(tmp_path / "few")]) == 0
    assert (tmp_path / "few" / "plot.png").exists()
    many = str(MAX_PLOTTED_RUNS + 1)
    assert main([*BASE, "--agents", "200", "--seeds", many, "--out", str(tmp_path / "many")]) == 0
    assert not (tmp_path / "many" / "plot.png").exists()
    assert "plot.png left out" in capsys.readouterr().out
    assert len(_summary(tmp_path / "many")) == MAX_PLOTTED_RUNS + 1


def test_the_sweep_table_and_options_over_it(tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text(
        '[game]\nname = "congestion"\nnum_actions = 3\n'
        "[learner]\nstage_length = 5\nexplore_prob = 0.1\n"
        "[run]\nagents = 1000\nstages = 3\nseed = 4\n"
        "[sweep]\nseeds = 2\nupdate_prob = [0.2, 1.0]\n[sweep.game]\nnoise_std = [0.1, 0.5]\n"
    )
    base = ["sweep", "--config", str(config), "--no-progress", "--no-plot"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    rows = _summary(tmp_path / "a")
    assert len(rows) == 8 and [row["seed"] for row in rows[:2]] == [4, 5]
    assert rows[0]["label"] == "noise_std=0.1, update=0.2, seed=4"
    # An option replaces the file's axis; one value is the learner's for every row.
    assert main([*base, "--update-prob", "0.5", "--seeds", "9", "--out", str(tmp_path / "b")]) == 0
    rows = _summary(tmp_path / "b")
    configs = json.loads((tmp_path / "b" / "config.json").read_text())["runs"]
    assert len(rows) == 2 * 9 and {c["learner"]["update_prob"] for c in configs} == {0.5}
    assert [row["seed"] for row in rows[:9]] == list(range(4, 13))
    text = config.read_text()
    config.write_text(text.replace("[sweep]\n", "[sweep]\ncolour = 1\n"))
    assert main([*base, "--out", str(tmp_path / "c")]) == 2
    assert "unknown key(s) 'colour' in [sweep]" in _error(capsys)
    config.write_text(text + "b = 2\n")  # in [sweep.game]: not a list
    assert main([*base, "--out", str(tmp_path / "c")]) == 2
    assert "[sweep.game] b must be a non-empty list" in _error(capsys)


def test_checkpointed_sweep_resumes_to_the_same_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [*BASE, "--stages", "6", "--explore", "0.05,0.2", "--seeds", "2", "--no-plot"]
    assert main([*args, "--out", "whole"]) == 0
    assert main([*args, "--out", "cut", "--checkpoint-every", "2", "--keep-checkpoints"]) == 0
    folder = tmp_path / "cut.checkpoints"
    assert checkpoint.read_manifest(folder)[1]["kind"] == "sweep"
    (folder / checkpoint.LATEST).write_text("ckpt-0000000004\n")  # as if killed at stage 4
    shutil.rmtree(tmp_path / "cut")
    assert main(["sweep", "--resume", "cut", "--no-progress", "--no-plot"]) == 0
    for name in ("results.csv", "summary.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not folder.exists()  # removed once the results were written
    # `jaxstage resume` continues it as well, into the folder the sweep named.
    assert main([*args, "--out", "again", "--checkpoint-every", "3", "--keep-checkpoints"]) == 0
    shutil.rmtree(tmp_path / "again")
    assert main(["resume", "again.checkpoints", "--no-progress", "--no-plot"]) == 0
    assert (tmp_path / "again" / "results.csv").read_bytes() == (
        tmp_path / "whole" / "results.csv"
    ).read_bytes()
    assert main(["sweep", "--resume", "cut", "--seeds", "3"]) == 2  # not as it was started
    assert "drop --seeds" in _error(capsys)


def test_resume_still_refuses_a_python_sweeps_checkpoints(tmp_path, capsys):
    folder = tmp_path / "ck"
    learner = js.StageLearning(stage_length=5)
    js.sweep(GAME, learner, 1000, 2, seeds=[0, 1], checkpoint_dir=folder, checkpoint_every=1)
    assert main(["resume", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert "did not write" in _error(capsys)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--explore", "0.1,x"], "--explore: 'x' is not a number"),
        (["--explore", "0.1,"], "comma-separated numbers"),
        (["--explore", "0.1,0.1"], "--explore repeats 0.1"),
        (["--stage-length", "2.5,3"], "'2.5' is not an integer"),
        (["--seeds", "0"], "number of seeds >= 1"),
        (["--seeds", "2,2"], "--seeds repeats 2"),
        (["--vary", "noise_std=0.1"], "a JSON list of values"),
        (["--vary", "noise_std=[]"], "a JSON list of values"),
        (["--vary", "num_actions=[2,3]"], "numeric parameters are a, b, p, noise_std"),
        (["--explore", "0.1,1.5"], "1.5"),
        (["--checkpoint-every", "2", "--distribute", "rows"], "--distribute rows cannot"),
        (["--checkpoint-dir", "x"], "needs --checkpoint-every"),
    ],
)
def test_bad_sweeps_are_named_errors(tmp_path, capsys, flags, message):
    assert main([*BASE, "--out", str(tmp_path / "out"), *flags]) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_an_existing_folder_is_refused_before_running(tmp_path, capsys, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")

    def no_sweep(*args, **kwargs):
        raise AssertionError("the sweep ran before its folder was checked")

    monkeypatch.setattr(js, "sweep", no_sweep)
    assert main([*BASE, "--out", str(tmp_path / "out"), "--overwrite"]) == 2
    assert "mine.txt" in _error(capsys)
    assert os.listdir(tmp_path / "out") == ["mine.txt"]
