"""Distributed runs on loopback: 1 process x 1 device, 1 x 2 and 2 processes x 1 device
give bitwise the same results (``jax.distributed`` with gloo collectives); checkpoints
move between process counts; a process that dies stops the others in time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("XLA_FLAGS", None)
    return env


def start(cases, folder: Path, processes: int, devices: int, tag: str):
    job = folder / f"{tag}.job.json"
    job.write_text(json.dumps(cases))
    out = folder / f"{tag}.out"
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(job),
                str(out),
                str(i),
                str(processes),
                str(port),
                str(devices),
            ],
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]
    return procs, out


def launch(cases, folder: Path, processes: int, devices: int, tag: str, timeout: float = 400):
    procs, out = start(cases, folder, processes, devices, tag)
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    reports = [json.loads(Path(f"{out}.{i}").read_text()) for i in range(processes)]
    for report in reports:
        assert report["processes"] == processes and report["devices"] == processes * devices
    return [report["results"] for report in reports]


GAME = {"game": "congestion", "game_kwargs": {"num_actions": 4}}
RUN = {"num_agents": 100_000, "num_stages": 3, "seed": 3, "block_size": 2**13}

INFO_MODES = {
    "none": {},
    "payoffs": {"info": "payoffs"},
    "distribution": {"info": "distribution"},
    "sampled": {"info": "distribution", "info_sample_size": 200},
    "noisy": {"info": "distribution", "info_noise_std": 0.05},
}


def population_cases() -> list[dict]:
    cases = []
    for name, info in INFO_MODES.items():
        learner = {"stage_length": 10, **info}
        cases.append(
            {
                "name": f"simulate-{name}",
                "call": "simulate",
                "kwargs": {**GAME, **RUN, "learner": learner, "return_actions": True},
            }
        )
    for path in ("rounds", "agents"):
        cases.append(
            {
                "name": f"simulate-{path}",
                "call": "simulate",
                "kwargs": {
                    **GAME,
                    **RUN,
                    "learner": {"stage_length": 10, "info": "payoffs"},
                    "fast_path": path,
                },
            }
        )
    cases.append(
        {
            "name": "simulate-update0.1",
            "call": "simulate",
            "kwargs": {**GAME, **RUN, "learner": {"stage_length": 10, "update_prob": 0.1}},
        }
    )
    cases.append(
        {
            "name": "simulate-initial-array",
            "call": "simulate",
            "kwargs": {**GAME, **RUN, "learner": {"stage_length": 10}, "initial": 2},
        }
    )
    cases.append(
        {
            "name": "simulate-reference",
            "call": "simulate",
            "kwargs": {
                **GAME,
                "num_agents": 5_000,
                "num_stages": 3,
                "seed": 1,
                "learner": {"stage_length": 10},
                "kernel": "reference",
            },
        }
    )
    run = {k: v for k, v in RUN.items() if k != "seed"}
    for distribute in ("rows", "agents"):
        cases.append(
            {
                "name": f"sweep-lengths-{distribute}",
                "call": "sweep",
                "kwargs": {
                    **GAME,
                    **run,
                    "seeds": [4, 5, 6],
                    "learner": {"info": "payoffs"},
                    "stage_length": [5, 10, 20],
                    "update_prob": [1.0, 0.1, 0.5],
                    "distribute": distribute,
                },
            }
        )
    cases.append(
        {
            "name": "sweep-agents-path-rows",
            "call": "sweep",
            "kwargs": {
                **GAME,
                **run,
                "seeds": [7, 8],
                "learner": {"stage_length": 10, "info": "distribution"},
                "fast_path": "agents",
                "distribute": "rows",
            },
        }
    )
    for name in ("none", "noisy"):
        cases.append(
            {
                "name": f"sweep-{name}",
                "call": "sweep",
                "kwargs": {
                    **GAME,
                    **run,
                    "seeds": [1, 2, 3],
                    "learner": {"stage_length": 10, **INFO_MODES[name]},
                    "explore_prob": [0.05, 0.1, 0.2],
                },
            }
        )
    return cases


@pytest.fixture(scope="module")
def population_reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    cases = population_cases()
    return {
        layout: launch(cases, folder, *layout, tag=f"p{layout[0]}d{layout[1]}")
        for layout in [(1, 1), (1, 2), (2, 1)]
    }


def test_every_case_ran(population_reports):
    for results in population_reports[(1, 1)]:
        errors = {name: r for name, r in results.items() if isinstance(r, str)}
        assert not errors


@pytest.mark.parametrize("layout", [(1, 2), (2, 1)], ids=["1x2", "2x1"])
def test_layouts_give_bitwise_the_same_results(population_reports, layout):
    expected = population_reports[(1, 1)][0]
    for results in population_reports[layout]:  # every process has the whole result
        for name in expected:
            assert results[name] == expected[name], name


SWEEP_ROWS = {"seeds": [1, 2, 3], "explore_prob": [0.05, 0.1, 0.2]}


@pytest.mark.parametrize("call", ["simulate", "sweep"])
def test_a_distributed_checkpoint_resumes_on_another_process_count(tmp_path, call):
    learner = {"stage_length": 10, "info": "payoffs"}
    run = {**GAME, **RUN, "num_stages": 6, "learner": learner}
    if call == "sweep":
        run = {**{k: v for k, v in run.items() if k != "seed"}, **SWEEP_ROWS}
    case = {"name": "run", "call": call, "kwargs": run}
    uninterrupted = launch([case], tmp_path, 1, 1, "plain")[0]["run"]
    folder = tmp_path / "ck"
    checkpointed = {**run, "checkpoint_dir": str(folder), "checkpoint_every": 2}
    written = launch([{**case, "kwargs": checkpointed}], tmp_path, 2, 1, "written")
    assert [r["run"] for r in written] == [uninterrupted] * 2
    # Point LATEST at the checkpoint of stage 4 and drop the final one: what a run killed
    # between its last two checkpoints leaves.
    final = (folder / "LATEST").read_text().strip()
    assert final == "ckpt-0000000006"
    # Each process wrote its own shards: no process gathered the population.
    parts = sorted(p.name for p in (folder / final).glob("actions.part-*.npy"))
    manifest = json.loads((folder / final / "manifest.json").read_text())
    assert len(parts) == 2 and manifest["actions_parts"] == parts
    assert not (folder / final / "actions.npy").exists()
    shutil.rmtree(folder / final)
    (folder / "LATEST").write_text("ckpt-0000000004")
    for processes, devices in [(1, 1), (1, 2), (2, 1)]:
        copy = tmp_path / f"ck{processes}{devices}"
        shutil.copytree(folder, copy)
        resume = {"name": "run", "call": "resume", "kwargs": {"checkpoint_dir": str(copy)}}
        resumed = launch([resume], tmp_path, processes, devices, f"resumed{processes}{devices}")
        assert [r["run"] for r in resumed] == [uninterrupted] * processes
    # A damaged part is refused by whichever process reads it.
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    part = sorted((damaged / "ckpt-0000000004").glob("actions.part-*.npy"))[-1]
    part.write_bytes(part.read_bytes()[:-1] + b"\x07")
    resume = {"name": "run", "call": "resume", "kwargs": {"checkpoint_dir": str(damaged)}}
    (refused,) = [r["run"] for r in launch([resume], tmp_path, 1, 1, "damaged")]
    assert refused.startswith("error: CheckpointError") and "does not match" in refused


def test_each_host_checks_memory_against_its_own_share(tmp_path):
    case = {"name": "memory", "call": "memory_share", "kwargs": {**GAME, **RUN}}
    (one,) = launch([case], tmp_path, 1, 1, "one")[0]["memory"]
    two = launch([case], tmp_path, 2, 1, "two")
    assert one.startswith("refused: ") and "use fewer agents" in one
    assert [r["memory"] for r in two] == [["fits"], ["fits"]]


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


#: The worker's heartbeat timeout (seconds), and the slack allowed on a slow machine.
HEARTBEAT, SLACK = 10, 30


@pytest.mark.parametrize("victim", [0, 1], ids=["coordinator", "worker"])
def test_a_killed_process_stops_the_others_in_time(tmp_path, victim):
    long_run = {**GAME, **RUN, "num_stages": 100_000, "learner": {"stage_length": 10}}
    procs, out = start(
        [{"name": "long", "call": "simulate", "kwargs": long_run}], tmp_path, 2, 1, "kill"
    )
    try:
        for i in range(2):
            _wait_for(Path(f"{out}.{i}.started"), 120)
        time.sleep(3)  # into the stages
        procs[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        survivor = procs[1 - victim]
        log = survivor.communicate(timeout=HEARTBEAT + SLACK)[0]
        waited = time.monotonic() - killed_at
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert survivor.returncode != 0
    assert waited < HEARTBEAT + SLACK
    assert "another task died" in log


def test_a_process_that_never_joins_is_an_error_in_time(tmp_path):
    job = tmp_path / "job.json"
    job.write_text("[]")
    env = {**environment(), "JAXSTAGE_TEST_JOIN_TIMEOUT": "5"}
    command = [sys.executable, str(WORKER), str(job), str(tmp_path / "out"), "0", "2"]
    started = time.monotonic()
    done = subprocess.run(
        [*command, str(free_port()), "1"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert time.monotonic() - started < 5 + SLACK
    assert "DEADLINE_EXCEEDED" in done.stderr and "RegisterTask" in done.stderr


def _cli(args, port: int, processes: int, cwd: Path):
    base = [sys.executable, "-m", "jaxstage", *args, "--cpu-devices", "1"]
    if processes > 1:
        base += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes)]
    return [
        subprocess.Popen(
            base + (["--process-id", str(i)] if processes > 1 else []),
            cwd=cwd,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]


def test_the_command_line_runs_over_two_processes_and_process_0_writes(tmp_path):
    run = ["run", "--agents", "50000", "--stages", "3", "--stage-length", "10", "--no-plot"]
    outputs = {}
    for processes in (1, 2):
        out = f"out{processes}"
        procs = _cli([*run, "--out", out, "--no-progress"], free_port(), processes, tmp_path)
        outputs[processes] = [p.communicate(timeout=300) for p in procs]
        for p, (_, stderr) in zip(procs, outputs[processes], strict=True):
            assert p.returncode == 0, stderr[-3000:]
    for name in ("results.csv", "summary.json"):
        one = (tmp_path / "out1" / name).read_bytes()
        assert (tmp_path / "out2" / name).read_bytes() == one, name
    config = json.loads((tmp_path / "out2" / "config.json").read_text())["runs"][0]
    assert config["processes"] == 2 and config["devices"] == 2
    assert "results written to out2" in outputs[2][0][0]
    assert outputs[2][1][0] == ""  # process 1 prints nothing


def _finish(procs) -> list[tuple[str, str]]:
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    return outputs


def test_the_sweep_command_over_two_processes_writes_the_one_process_folder(tmp_path):
    """``jaxstage sweep`` with its rows dealt to 2 processes, and with every row's agents
    split over them and checkpointed (then resumed on 1 process), writes the folder of
    the 1-process sweep, byte for byte."""
    sweep = ["sweep", "--agents", "50000", "--stages", "4", "--stage-length", "10"]
    sweep += ["--explore", "0.05,0.1", "--seeds", "2", "--no-plot", "--no-progress"]
    cases = {
        "one": ([], 1),
        "rows": (["--distribute", "rows"], 2),
        "agents": (["--checkpoint-every", "2", "--keep-checkpoints"], 2),
    }
    for name, (flags, processes) in cases.items():
        _finish(_cli([*sweep, *flags, "--out", name], free_port(), processes, tmp_path))
    folder = tmp_path / "agents.checkpoints"
    manifest = json.loads((folder / "ckpt-0000000002" / "manifest.json").read_text())
    assert len(manifest["actions_parts"]) == 2  # one part per process's shard: nothing gathered
    (folder / "LATEST").write_text("ckpt-0000000002\n")
    shutil.rmtree(tmp_path / "agents")
    _finish(_cli(["resume", str(folder), "--no-progress", "--no-plot"], 0, 1, tmp_path))
    for name in ("results.csv", "summary.json"):
        one = (tmp_path / "one" / name).read_bytes()
        assert (tmp_path / "rows" / name).read_bytes() == one, name
        assert (tmp_path / "agents" / name).read_bytes() == one, name


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--coordinator", "127.0.0.1:1234"], "together"),
        (["--num-processes", "2", "--process-id", "0"], "together"),
        (["--distributed-timeout", "5"], "needs --coordinator"),
        (["--distributed", "--process-id", "0"], "leave out"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
        (["--coordinator", "h:99999", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
        (["--coordinator", "h:1234", "--num-processes", "2", "--process-id", "2"], "[0, 1]"),
    ],
)
def test_bad_distributed_flags_are_errors_before_joining(flags, message, capsys):
    from jaxstage.cli import main

    assert main(["run", "--agents", "100", "--stages", "1", *flags]) == 2
    assert message in capsys.readouterr().err


def test_distributed_detects_a_slurm_job(tmp_path):
    """``--distributed`` under SLURM's environment (faked here on loopback: the job's
    first node is 127.0.0.1; JAX takes the port from the job id)."""
    port = next(p for p in range(61440 + os.getpid() % 4000, 65536) if _port_is_free(p))
    run = ["run", "--agents", "50000", "--stages", "2", "--stage-length", "10", "--no-plot"]
    outputs = []
    procs = []
    for i in range(2):
        env = {
            **environment(),
            "SLURM_JOB_ID": str(port - 61440 + 4096 * 7),  # JAX: port = id % 4096 + 61440
            "SLURM_STEP_NODELIST": "127.0.0.1",
            "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(i),
            "SLURM_LOCALID": str(i),
        }
        command = [sys.executable, "-m", "jaxstage", *run, "--out", "slurm", "--no-progress"]
        procs.append(
            subprocess.Popen(
                [*command, "--cpu-devices", "1", "--distributed"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    config = json.loads((tmp_path / "slurm" / "config.json").read_text())["runs"][0]
    assert config["processes"] == 2
    assert "results written to slurm" in outputs[0][0]
