"""Strong and weak scaling of one population over processes on loopback (``jax.distributed``).

For each process count ``P`` (default 1, 2 and 4) the benchmark starts ``P`` child
processes on this machine, each with ``--devices-per-process`` JAX CPU devices (default 1),
joined by ``jaxstage.distributed.initialize`` on 127.0.0.1 with gloo collectives. Each
child builds a :class:`jaxstage.Simulation`, advances it once to compile (timed apart),
then ``--repeats`` times from the same initial state; the best and worst timed advance give
agent-rounds per second (agents x rounds / wall seconds; ``advance`` returns host records,
so the timing includes all device work). In the same run:

* ``baseline``: one process with ``P`` devices (``shard_map`` within a process), the
  in-process alternative to ``P`` processes;
* ``strong``: a fixed population (``--agents``) over ``P`` processes;
* ``weak``: ``--agents-per-process`` agents per process (``P`` times as many in all).

Every layout gives bitwise the same numbers (``tests/test_distributed.py``); the JSON
records a hash of each run's final distribution to show it. On a machine with fewer cores
than ``P x devices`` the processes share cores: the figures then measure the overhead of
the distributed runtime, not a speed-up (a 2-core machine cannot run 4 processes faster
than 2).

Usage::

    .venv/bin/python benchmarks/scaling.py --out benchmarks/scaling_cpu.json
    .venv/bin/python benchmarks/scaling.py --processes 1 2 --agents 4e6 --repeats 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time


def _count(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return int(value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(args: argparse.Namespace) -> None:
    """One process of a measurement: prints one JSON line (process 0)."""
    import jax

    jax.config.update("jax_num_cpu_devices", args.devices_per_process)
    import numpy as np

    import jaxstage as js

    if args.num_processes > 1:
        js.distributed.initialize(
            f"127.0.0.1:{args.port}", args.num_processes, args.process_id, heartbeat_timeout=60
        )
    game = js.make_game("congestion", num_actions=args.actions)
    learner = js.StageLearning(
        stage_length=args.stage_length, explore_prob=0.05, update_prob=args.update_prob
    )
    sim = js.Simulation(game, learner, args.num_agents, args.stages)
    state = sim.init(0)
    started = time.perf_counter()
    _, records = sim.advance(state, args.stages)
    first = time.perf_counter() - started
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        sim.advance(state, args.stages)
        times.append(time.perf_counter() - started)
    rounds = args.stages * args.stage_length
    digest = hashlib.sha256(np.asarray(records.stages.metrics.counts_by_type).tobytes())
    if js.distributed.is_main_process():
        report = {
            "processes": args.num_processes,
            "devices": jax.device_count(),
            "num_agents": args.num_agents,
            "fast_path": sim.spec.exploration_path,
            "best_seconds": min(times),
            "worst_seconds": max(times),
            "compile_seconds": max(first - min(times), 0.0),
            "agent_rounds_per_s_best": args.num_agents * rounds / min(times),
            "agent_rounds_per_s_worst": args.num_agents * rounds / max(times),
            "counts_sha256": digest.hexdigest()[:16],
        }
        print("RESULT " + json.dumps(report), flush=True)


def measure(args: argparse.Namespace, *, processes: int, devices: int, agents: int) -> dict:
    """One layout: ``processes`` children with ``devices`` devices each."""
    port = _free_port()
    command = [sys.executable, os.path.abspath(__file__), "--worker"]
    common = [
        "--num-agents", str(agents), "--stages", str(args.stages),
        "--stage-length", str(args.stage_length), "--actions", str(args.actions),
        "--update-prob", str(args.update_prob), "--repeats", str(args.repeats),
        "--devices-per-process", str(devices), "--num-processes", str(processes),
        "--port", str(port),
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env.get("PYTHONPATH", "")]
    )
    children = [
        subprocess.Popen(
            [*command, *common, "--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    outputs = [child.communicate(timeout=args.timeout) for child in children]
    for child, (_, stderr) in zip(children, outputs, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"a child failed ({child.returncode}):\n{stderr[-3000:]}")
    line = next(x for x in outputs[0][0].splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def versions() -> dict[str, str]:
    import importlib.metadata

    names = ("jax", "jaxlib", "numpy")
    return {name: importlib.metadata.version(name) for name in names} | {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": str(len(os.sched_getaffinity(0))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=_count, nargs="+", default=[1, 2, 4])
    parser.add_argument("--agents", type=_count, default=2**22, help="strong scaling: in all")
    parser.add_argument("--agents-per-process", type=_count, default=2**21, help="weak scaling")
    parser.add_argument("--devices-per-process", type=_count, default=1)
    parser.add_argument("--stages", type=_count, default=4)
    parser.add_argument("--stage-length", type=_count, default=50)
    parser.add_argument("--actions", type=_count, default=8)
    parser.add_argument("--update-prob", type=float, default=1.0, help="the model's default")
    parser.add_argument("--repeats", type=_count, default=3)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", help="JSON file for the results")
    # A child's options.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--num-agents", type=_count, help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=_count, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    for p in args.processes:
        layouts = [
            ("baseline", 1, p * args.devices_per_process, args.agents),
            ("strong", p, args.devices_per_process, args.agents),
            ("weak", p, args.devices_per_process, p * args.agents_per_process),
        ]
        for kind, processes, devices, agents in layouts:
            if kind == "baseline" and p == 1:
                continue  # the same as strong at P = 1
            row = {
                "kind": kind,
                **measure(args, processes=processes, devices=devices, agents=agents),
            }
            rows.append(row)
            print(
                f"{kind:8s} P={row['processes']} devices={row['devices']} "
                f"n={row['num_agents']:>10,}: {row['agent_rounds_per_s_worst'] / 1e6:7.0f} to "
                f"{row['agent_rounds_per_s_best'] / 1e6:7.0f} M agent-rounds/s "
                f"(compile {row['compile_seconds']:.1f} s, counts {row['counts_sha256']})",
                flush=True,
            )
    report = {
        "benchmark": "scaling",
        "command": " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
        "configuration": {
            "game": "congestion",
            "actions": args.actions,
            "stages": args.stages,
            "stage_length": args.stage_length,
            "explore_prob": 0.05,
            "update_prob": args.update_prob,
            "repeats": args.repeats,
            "devices_per_process": args.devices_per_process,
        },
        "versions": versions(),
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as file:
            json.dump(report, file, indent=2)
            file.write("\n")


if __name__ == "__main__":
    main()
