"""The jaxstage command line, called in-process through ``main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxstage as js
from jaxstage import cli_demo
from jaxstage.cli import main, parse_initial, parse_param

SMALL = ["--agents", "1000", "--stages", "4", "--stage-length", "5", "--no-progress"]


def _error(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


# --------------------------------------------------------------------------- games, usage


def test_games_lists_every_game(capsys):
    assert main(["games"]) == 0
    out = capsys.readouterr().out
    for name in js.list_games():
        assert f"\n{name}\n" in f"\n{out}"
        for param in js.make_game(name).param_docs():
            assert param in out
    assert out.count("Lipschitz constant") == len(js.list_games())
    assert out.count("best-reply dynamics:") == len(js.list_games())
    assert "[0.48, 0.24, 0.16, 0.12]" in out  # the congestion equilibrium


def test_usage_errors_return_2(capsys):
    assert main([]) == 2
    assert main(["run", "--agents", "many"]) == 2
    assert "expected an integer, got 'many'" in capsys.readouterr().err
    assert main(["run", "--info", "gossip"]) == 2
    assert main(["--help"]) == 0
    assert "games" in capsys.readouterr().out


def test_cpu_devices_option(tmp_path, capsys):
    assert main(["run", *SMALL, "--cpu-devices", "0"]) == 2
    assert "must be an integer >= 1, got 0" in _error(capsys)
    count = len(jax.devices("cpu"))
    # In this process JAX has started already: another count is refused, naming both.
    assert main(["run", *SMALL, "--cpu-devices", str(count + 1), "--out", str(tmp_path)]) == 2
    err = _error(capsys)
    assert f"--cpu-devices {count + 1}" in err and f"JAX has started with {count}" in err
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--cpu-devices", str(count), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["runs"][0]["devices"] >= 1


def test_python_dash_m_smoke():
    done = subprocess.run(
        [sys.executable, "-m", "jaxstage", "games"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "congestion" in done.stdout and "minority" in done.stdout


# --------------------------------------------------------------------------- run


def test_a_reader_that_goes_away_does_not_stop_the_results(tmp_path):
    """`jaxstage run ... | head -1`: the pipe closes after the first line; the run still
    writes its folder and exits 0 (it used to stop at its next print, writing nothing)."""
    command = [sys.executable, "-m", "jaxstage", "run", *SMALL, "--no-plot", "--out", "out"]
    command += ["--cpu-devices", "1"]
    run = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = run.stdout.readline()
    run.stdout.close()  # the reader goes away
    _, stderr = run.communicate(timeout=300)
    assert first.startswith(b"game congestion")
    assert run.returncode == 0, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json",
        "results.csv",
        "summary.json",
    ]


def test_run_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", *SMALL, "--param", "num_actions=3", "--param", "b=[1,2,3]", "--out", str(out)]
    assert main([*argv, "--initial", "0.2,0.3,0.5", "--seed", "4"]) == 0
    stdout = capsys.readouterr().out
    assert "game congestion, 1,000 agents, info=none, 4 stages (20 rounds), seed 4" in stdout
    assert "converged" in stdout and "eps-Nash gap" in stdout
    assert f"results written to {out}" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "plot.png",
        "results.csv",
        "summary.json",
    ]
    config = json.loads((out / "config.json").read_text())["runs"][0]
    assert config["game"]["b"] == [1.0, 2.0, 3.0] and config["seed"] == 4
    assert config["initial"] == [0.2, 0.3, 0.5]
    assert config["learner"]["stage_length"] == 5

    # The same folder again: refused before simulating, then nothing changed.
    assert main([*argv, "--no-plot"]) == 2
    err = _error(capsys)
    assert str(out) in err and "--overwrite" in err


def test_run_default_folder_and_no_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *SMALL, "--game", "minority", "--info", "payoffs", "--no-plot"]) == 0
    folder = tmp_path / "results" / "minority_payoffs_n1000_seed0"
    assert f"results written to {folder.relative_to(tmp_path)}" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "results.csv",
        "summary.json",
    ]
    header = (folder / "results.csv").read_text().splitlines()[0]
    assert "dist_stay,dist_go" in header


def test_config_file_with_overrides(tmp_path, capsys):
    out = tmp_path / "from-file"
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[game]
name = "minority"
capacity = 0.5
noise = "coin"

[learner]
stage_length = 4
explore_prob = 0.2
info = "distribution"
info_sample_size = 50

[run]
agents = 500
stages = 3
seed = 7
eps = 0.1
initial = [0.3, 0.7]
out = "{out.as_posix()}"
"""
    )
    assert main(["run", "--config", str(config), "--agents", "600", "--seed", "3"]) == 0
    assert "600 agents" in capsys.readouterr().out
    recorded = json.loads((out / "config.json").read_text())["runs"][0]
    assert recorded["num_agents"] == 600 and recorded["seed"] == 3  # the options win
    assert recorded["num_stages"] == 3 and recorded["eps"] == 0.1  # the file's values
    assert recorded["game"]["capacity"] == 0.5 and recorded["game"]["noise"] == "coin"
    assert recorded["learner"]["info"] == "distribution"
    assert recorded["learner"]["info_sample_size"] == 50
    assert recorded["learner"]["stage_length"] == 4
    assert recorded["initial"] == [0.3, 0.7]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[game]\nname = "congestion"\nlanes = 3\n', "'lanes' in [game]"),
        (
            "[learner]\ntau = 3\n",
            "'tau' in [learner]; valid keys: name, eta, stage_length, explore_prob",
        ),
        ("[run]\nagents = 10\npopulation = 3\n", "'population' in [run]; valid keys: agents"),
        ("[runs]\nagents = 10\n", "'runs'; valid tables: [game], [learner], [run]"),
        ("agents = 10\n", "'agents'; valid tables"),
        ("[game]\nnum_actions = 3\n", "[game] needs a name"),
        ('[game]\nname = "congestion"\n[run]\nagents = "many"\n', "num_agents must be an integer"),
    ],
)
def test_config_errors(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["run", "--config", str(path), "--no-progress"]) == 2
    err = _error(capsys)
    assert err.startswith("jaxstage: error: ")
    assert expected in err


def test_malformed_and_missing_config(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text("[run\nagents = 10\n")
    assert main(["run", "--config", str(path)]) == 2
    err = _error(capsys)
    assert "malformed TOML" in err and "broken.toml" in err
    assert main(["run", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read config file" in _error(capsys)


def test_unknown_game_lists_valid_names(capsys):
    assert main(["run", "--game", "chess", "--no-progress"]) == 2
    err = _error(capsys)
    assert "unknown game 'chess'" in err
    for name in js.list_games():
        assert name in err
    assert main(["run", "--param", "lanes=3", "--no-progress"]) == 2
    assert "valid parameters: num_actions, a, b, p, noise_std" in _error(capsys)


def test_bad_values_are_named(tmp_path, capsys):
    assert main(["run", "--initial", "0.5,0.6,0,0", "--no-progress"]) == 2
    assert "'0.5,0.6,0,0'" in _error(capsys)
    assert main(["run", "--initial", "0.5,0.5", "--no-progress"]) == 2
    assert "2 probabilities given for a game with 4 actions" in _error(capsys)
    assert main(["run", "--explore", "1.5", "--no-progress"]) == 2
    assert "explore_prob must be a finite number in [0, 1], got 1.5" in _error(capsys)
    assert main(["run", "--param", "p", "--no-progress"]) == 2
    assert "--param expects KEY=VALUE, got 'p'" in _error(capsys)
    (tmp_path / "file").write_text("x")
    assert main(["run", "--out", str(tmp_path / "file"), "--no-progress"]) == 2
    assert "not a folder" in _error(capsys)


def test_parse_param_and_initial():
    assert parse_param("num_actions=4") == ("num_actions", 4)
    assert parse_param("b=[1,2,3,4]") == ("b", [1, 2, 3, 4])
    assert parse_param("symmetric=false") == ("symmetric", False)
    assert parse_param("noise=coin") == ("noise", "coin")
    assert parse_param("name=a=b") == ("name", "a=b")
    assert parse_initial("uniform", 3) == "uniform"
    assert parse_initial(" 2 ", 3) == 2 and parse_initial(1, 3) == 1
    np.testing.assert_allclose(parse_initial("0.2,0.3,0.5", 3), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(parse_initial([0, 1, 0], 3), [0.0, 1.0, 0.0])
    for bad in ["abc", "0.5,-0.5,1", True, {"a": 1}]:
        with pytest.raises(ValueError, match="invalid initial|initial must"):
            parse_initial(bad, 3)


# --------------------------------------------------------------------------- br


def test_br_reports_a_cycle(capsys):
    argv = ["br", "--game", "minority", "--mode", "simultaneous", "--agents", "1000"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "converged: no" in out and "cycled: yes" in out
    assert "steps:" in out and "final distribution" in out and "eps-Nash gap" in out


def test_br_writes_folder(tmp_path, capsys):
    out = tmp_path / "br"
    argv = ["br", "--param", "num_actions=3", "--agents", "600", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "converged: yes" in stdout and f"results written to {out}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] is True
    np.testing.assert_allclose(summary["final_distribution"], [6 / 11, 3 / 11, 2 / 11], atol=2e-3)
    lines = (out / "trajectory.csv").read_text().splitlines()
    assert lines[0] == "record,step,dist_link0,dist_link1,dist_link2"
    assert len(lines) == summary["steps"] + 2  # header, initial state, one row per step
    assert main([*argv, "--mode", "sideways"]) == 2
    assert main(["br", "--inertia", "0", "--no-such"]) == 2


# --------------------------------------------------------------------------- demo


def test_demo_small(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_demo, "DEMO_ROUNDS", 100)  # none: 2 stages, payoffs: 20
    out = tmp_path / "demo"
    out.mkdir()
    (out / "results.csv").write_text("stale\n")  # a previous demo: replaced with --overwrite
    argv = ["demo", "--agents", "1000", "--out", str(out), "--no-progress", "--overwrite"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "== info=none" in stdout and "== info=payoffs" in stdout
    assert stdout.count("reference equilibrium [0.48, 0.24, 0.16, 0.12]") == 3
    assert "info=none: " in stdout and "info=payoffs: " in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [run["label"] for run in summary["runs"]] == ["info=none", "info=payoffs"]
    assert [run["total_rounds"] for run in summary["runs"]] == [100, 100]
    assert (out / "plot.png").exists()
    assert (out / "results.csv").read_text().startswith("run,label,game,")


def _no_simulation(monkeypatch) -> None:
    """Make any simulation fail loudly: the checks under test must come before one."""

    def refuse(*args, **kwargs):
        raise AssertionError("a simulation started before the output folder was checked")

    monkeypatch.setattr(js, "simulate", refuse)
    monkeypatch.setattr(js, "best_reply_dynamics", refuse)


def test_demo_refuses_an_existing_folder_without_overwrite(tmp_path, monkeypatch, capsys):
    _no_simulation(monkeypatch)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "results.csv").write_text("an earlier demo\n")
    assert main(["demo", "--agents", "1000", "--out", str(out), "--no-progress"]) == 2
    err = _error(capsys)
    assert str(out) in err and "not empty" in err and "--overwrite" in err
    assert (out / "results.csv").read_text() == "an earlier demo\n"


# --------------------------------------------------------------------------- output folders

COMMANDS = {
    "run": ["run", *SMALL],
    "br": ["br", "--agents", "100"],
    "demo": ["demo", "--agents", "1000", "--no-progress"],
    "study": ["study", "--quick", "--no-progress"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_empty_out_is_refused(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _no_simulation(monkeypatch)
    assert main([*COMMANDS[command], "--out", ""]) == 2
    err = _error(capsys)
    assert err.startswith("jaxstage: error: --out") and "must name a folder, got an empty" in err
    assert list(tmp_path.iterdir()) == []  # not the default folder either


def test_empty_out_in_a_config_file_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _no_simulation(monkeypatch)
    (tmp_path / "run.toml").write_text('[run]\nout = ""\n')
    assert main(["run", "--config", "run.toml", "--no-progress"]) == 2
    assert "out = in [run]) must name a folder" in _error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_unwritable_out_is_refused_before_running(command, tmp_path, monkeypatch, capsys):
    _no_simulation(monkeypatch)
    (tmp_path / "file").write_text("x")
    outs = [tmp_path / "file" / "out"]
    if Path("/proc/self").is_dir():
        outs.append(Path("/proc/jaxstage-test"))
    for out in outs:
        assert main([*COMMANDS[command], "--out", str(out)]) == 2
        err = _error(capsys)
        assert f"cannot write output folder {str(out)!r}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_config_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[game]\nname = "congestion" # caf\u00e9\n'.encode("latin-1"))
    assert main(["run", "--config", str(path), "--no-progress"]) == 2
    err = _error(capsys)
    assert str(path) in err and "not UTF-8" in err and "0xe9" in err


def test_empty_config_is_refused(capsys):
    assert main(["run", "--config", "", *SMALL, "--no-plot"]) == 2
    assert "--config names no file" in _error(capsys)
