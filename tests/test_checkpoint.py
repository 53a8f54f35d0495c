"""Checkpoints and resume: a run killed at any moment (SIGKILL included, in the middle of
writing a checkpoint) and resumed gives bitwise the uninterrupted run's numbers; a
checkpoint is refused by a run it does not belong to, with what differs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_engine import assert_same_result

import jaxstage as js
from jaxstage import checkpoint
from jaxstage.cli import main
from jaxstage.resumable import run_with_checkpoints

GAME = js.make_game("congestion", num_actions=3)
LEARNER = js.StageLearning(stage_length=10, explore_prob=0.1, update_prob=0.3)
RUN = {"num_agents": 3000, "num_stages": 23, "seed": 4}


def whole(**options):
    return js.simulate(GAME, LEARNER, **RUN, return_actions=True, **options)


def checkpointed(folder, every=5, **options):
    return js.simulate(
        GAME,
        LEARNER,
        **RUN,
        return_actions=True,
        checkpoint_dir=folder,
        checkpoint_every=every,
        **options,
    )


def point_latest_at(folder: Path, stage: int) -> None:
    (folder / checkpoint.LATEST).write_text(f"ckpt-{stage:010d}\n")


PATHS = [("reference", "auto"), ("fast", "events"), ("fast", "rounds"), ("fast", "agents")]


@pytest.mark.parametrize("kernel,fast_path", PATHS)
def test_checkpointed_and_resumed_runs_are_the_whole_run(tmp_path, kernel, fast_path):
    expected = whole(kernel=kernel, fast_path=fast_path)
    folder = tmp_path / "ck"
    assert_same_result(expected, checkpointed(folder, 5, kernel=kernel, fast_path=fast_path))
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["LATEST", "ckpt-0000000020", "ckpt-0000000023"]  # the newest two
    assert_same_result(expected, js.resume(folder, return_actions=True))  # at the end
    point_latest_at(folder, 20)
    assert_same_result(expected, js.resume(folder, return_actions=True))


def test_resume_from_every_checkpoint_with_other_blocks_and_devices(tmp_path):
    expected = whole(fast_path="events")
    sim = js.Simulation(
        GAME, LEARNER, RUN["num_agents"], RUN["num_stages"], fast_path="events", devices=2
    )
    folder = tmp_path / "ck"
    run_with_checkpoints(sim, folder, seed=RUN["seed"], every=4, keep=10)
    assert sorted(p.name for p in folder.glob("ckpt-*"))[::5] == [
        "ckpt-0000000004",
        "ckpt-0000000023",
    ]
    for stage in (4, 8, 12, 16, 20):
        point_latest_at(folder, stage)
        resumed = js.resume(folder, return_actions=True, devices=1, block_size=512)
        assert_same_result(expected, resumed, free=("block_size", "devices"))
        assert resumed.config["block_size"] == 512 and resumed.config["devices"] == 1


def test_a_dead_writers_staging_folder_is_removed(tmp_path):
    folder = tmp_path / "ck"
    checkpointed(folder, 10)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    stale = folder / f".ckpt-0000000030.partial-{int(dead.stdout)}"
    stale.mkdir()
    (stale / "actions.npy").write_bytes(b"half")
    point_latest_at(folder, 20)
    js.resume(folder)
    assert not stale.exists()


def test_initial_actions_and_scheduled_learners_resume(tmp_path):
    rng = np.random.default_rng(0)
    initial = rng.integers(0, 3, RUN["num_agents"])
    scheduled = js.StageLearning(
        stage_length=lambda s: 5 + s % 3, explore_prob=lambda s: 0.2 / (1 + s), update_prob=0.5
    )
    run = dict(RUN, initial=initial, return_actions=True, fast_path="events")
    expected = js.simulate(GAME, scheduled, **run)
    folder = tmp_path / "ck"
    js.simulate(GAME, scheduled, **run, checkpoint_dir=folder, checkpoint_every=6)
    point_latest_at(folder, 18)
    with pytest.raises(checkpoint.CheckpointError, match="schedule for explore_prob, stage_length"):
        js.resume(folder)
    other = js.StageLearning(
        stage_length=lambda s: 5 + s % 3, explore_prob=lambda s: 0.2 / (2 + s), update_prob=0.5
    )
    other.explore_prob.__name__ = scheduled.explore_prob.__name__
    with pytest.raises(checkpoint.CheckpointError, match="explore_prob schedule differs"):
        js.resume(folder, learner=other)
    assert_same_result(expected, js.resume(folder, learner=scheduled, return_actions=True))


KILLED_RUN = """
import os, signal, sys
import jaxstage as js
from jaxstage import checkpoint
kill_at, folder, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
saved = checkpoint.save
replace = os.replace
calls = []

def save(*args, **kwargs):
    path = saved(*args, **kwargs)
    if mode == "after" and kwargs["records"].last_stage >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

def dying_replace(src, dst):  # killed between the rename of a checkpoint and LATEST
    calls.append(dst)
    if mode == "during" and str(dst).endswith(f"ckpt-{kill_at:010d}"):
        replace(src, dst)
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst)

checkpoint.save = save
checkpoint.os.replace = dying_replace
game = js.make_game("congestion", num_actions=3)
learner = js.StageLearning(stage_length=10, explore_prob=0.1, update_prob=0.3)
js.simulate(game, learner, 3000, 23, seed=4, checkpoint_dir=folder, checkpoint_every=5)
"""


@pytest.mark.parametrize("mode", ["after", "during"])
def test_a_killed_process_resumes_bitwise(tmp_path, mode):
    folder = tmp_path / "ck"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED_RUN))
    env = dict(os.environ, PYTHONPATH=str(Path(js.__file__).parents[1]))
    done = subprocess.run(
        [sys.executable, str(script), "10", str(folder), mode], env=env, capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    latest = checkpoint.load(folder)
    # Killed after checkpoint 10 was complete, or after its rename but before LATEST:
    # then LATEST still names checkpoint 5.
    assert latest.stage == (10 if mode == "after" else 5)
    assert_same_result(whole(), js.resume(folder, return_actions=True))


def test_refusals(tmp_path):
    folder = tmp_path / "ck"
    checkpointed(folder, 10)
    with pytest.raises(checkpoint.CheckpointError, match="holds the checkpoints of a run"):
        checkpointed(folder, 10)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"not empty .*notes.txt"):
        checkpointed(mine, 10)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="checkpoint_every needs a checkpoint_dir"):
        js.simulate(GAME, LEARNER, **RUN, checkpoint_every=3)
    with pytest.raises(ValueError, match=r"checkpoint_every.*\[1, 23\]"):
        checkpointed(tmp_path / "new", 24)
    with pytest.raises(checkpoint.CheckpointError, match="no complete checkpoint"):
        js.resume(mine)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint folder"):
        js.resume(tmp_path / "absent")

    other = js.StageLearning(stage_length=10, explore_prob=0.2, update_prob=0.3)
    with pytest.raises(checkpoint.CheckpointError, match=r"explore_prob: 0.1 .* 0.2 now"):
        js.resume(folder, learner=other)
    with pytest.raises(checkpoint.CheckpointError, match="game differs"):
        js.resume(folder, game=js.make_game("congestion", num_actions=4))


def test_damaged_or_other_version_checkpoints_are_refused(tmp_path):
    folder = tmp_path / "ck"
    checkpointed(folder, 10)
    last = checkpoint.latest(folder)
    manifest = json.loads((last / checkpoint.MANIFEST).read_text())
    manifest["versions"]["jax"] = "0.0.1"
    (last / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(checkpoint.CheckpointError, match=r"jax 0.0.1 then"):
        js.resume(folder)
    resumed = js.resume(folder, allow_other_versions=True, return_actions=True)
    assert_same_result(whole(), resumed)
    actions = np.load(last / "actions.npy")
    np.save(last / "actions.npy", (actions + 1) % 3)
    with pytest.raises(checkpoint.CheckpointError, match="does not match its manifest"):
        js.resume(folder)


def test_custom_games_need_the_game(tmp_path):
    def payoffs(d):
        return -d

    game = js.from_payoff_fn(payoffs, num_actions=3, name="mine")
    folder = tmp_path / "ck"
    run = dict(RUN, kernel="reference", return_actions=True)
    expected = js.simulate(game, LEARNER, **run)
    js.simulate(game, LEARNER, **run, checkpoint_dir=folder, checkpoint_every=10)
    point_latest_at(folder, 20)
    with pytest.raises(checkpoint.CheckpointError, match="not a built-in game"):
        js.resume(folder)
    assert_same_result(expected, js.resume(folder, game=game, return_actions=True))


SWEEP = {"num_agents": 2000, "num_stages": 11, "seeds": [3, 4, 5], "update_prob": [0.2, 0.5, 1.0]}


def assert_same_sweep(expected, got, free=()):
    assert len(expected) == len(got)
    for a, b in zip(expected, got, strict=True):
        assert_same_result(a, b, free=free)


@pytest.mark.parametrize("kernel,fast_path", PATHS)
def test_checkpointed_sweeps_resume_bitwise(tmp_path, kernel, fast_path):
    options = dict(SWEEP, kernel=kernel, fast_path=fast_path)
    expected = js.sweep(GAME, LEARNER, **options)
    folder = tmp_path / "ck"
    got = js.sweep(GAME, LEARNER, **options, checkpoint_dir=folder, checkpoint_every=3)
    assert_same_sweep(expected, got)
    assert sorted(p.name for p in folder.glob("ckpt-*")) == ["ckpt-0000000009", "ckpt-0000000011"]
    saved = checkpoint.load(folder)
    assert saved.actions.shape == (3, 2000) and saved.manifest["seed"] == [3, 4, 5]
    point_latest_at(folder, 9)
    resumed = js.resume(folder, devices=1)
    assert isinstance(resumed, js.SweepResult)
    assert_same_sweep(expected, resumed, free=("devices", "block_size"))


def test_sweep_refusals(tmp_path):
    folder = tmp_path / "ck"
    js.sweep(GAME, LEARNER, **SWEEP, checkpoint_dir=folder, checkpoint_every=5)
    with pytest.raises(ValueError, match="a sweep's result keeps no final actions"):
        js.resume(folder, return_actions=True)
    other = js.StageLearning(stage_length=12, explore_prob=0.1, update_prob=0.3)
    with pytest.raises(checkpoint.CheckpointError, match=r"stage_length: 10 .* 12 now"):
        js.resume(folder, learner=other)
    assert main(["resume", str(folder), "--out", str(tmp_path / "out")]) == 2  # not a run's
    with pytest.raises(checkpoint.CheckpointError, match="holds the checkpoints of a run"):
        js.sweep(GAME, LEARNER, **SWEEP, checkpoint_dir=folder)
    with pytest.raises(ValueError, match="checkpoint_every needs a checkpoint_dir"):
        js.sweep(GAME, LEARNER, **SWEEP, checkpoint_every=3)


KILLED_SWEEP = """
import os, signal, sys
import jaxstage as js
from jaxstage import checkpoint
saved = checkpoint.save

def save(*args, **kwargs):
    path = saved(*args, **kwargs)
    if kwargs["records"].last_stage >= 6:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

checkpoint.save = save
game = js.make_game("congestion", num_actions=3)
learner = js.StageLearning(stage_length=10, explore_prob=0.1, update_prob=0.3)
js.sweep(game, learner, 2000, 11, seeds=[3, 4, 5], update_prob=[0.2, 0.5, 1.0],
         checkpoint_dir=sys.argv[1], checkpoint_every=3)
"""


def test_a_killed_sweep_resumes_bitwise(tmp_path):
    folder = tmp_path / "ck"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED_SWEEP))
    env = dict(os.environ, PYTHONPATH=str(Path(js.__file__).parents[1]))
    done = subprocess.run([sys.executable, str(script), str(folder)], env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert checkpoint.load(folder).stage == 6
    assert_same_sweep(js.sweep(GAME, LEARNER, **SWEEP), js.resume(folder))


@pytest.mark.parametrize("how", ["resume", "run --resume"])
def test_cli_run_killed_then_resumed(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    base = ["run", "--agents", "3000", "--stages", "12", "--no-progress", "--no-plot"]
    assert main([*base, "--out", "whole"]) == 0
    assert main([*base, "--out", "cut", "--checkpoint-every", "4", "--keep-checkpoints"]) == 0
    folder = tmp_path / "cut.checkpoints"
    point_latest_at(folder, 8)
    (tmp_path / "cut" / "results.csv").unlink()
    for name in os.listdir(tmp_path / "cut"):
        os.unlink(tmp_path / "cut" / name)
    os.rmdir(tmp_path / "cut")
    again = ["resume", str(folder)] if how == "resume" else ["run", "--resume", "cut"]
    assert main([*again, "--no-progress", "--no-plot"]) == 0
    assert (tmp_path / "cut" / "results.csv").read_text() == (
        tmp_path / "whole" / "results.csv"
    ).read_text()
    assert not folder.exists()  # removed once the results were written
    assert main([*base, "--out", "x", "--checkpoint-dir", "x.ck"]) == 2  # no --checkpoint-every
    assert main(["run", "--resume", "cut", "--agents", "5"]) == 2  # not as it was started
