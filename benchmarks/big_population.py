"""One stage of a population past 2**31 agents: wall time and peak resident memory.

Usage::

    .venv/bin/python benchmarks/big_population.py --agents 1e10 --devices 8 \\
        --out benchmarks/big_population_cpu.json

Each configuration runs in a child process under ``/usr/bin/time -v`` (its "Maximum
resident set size" is the peak memory reported) and does what a user would: build a
``js.Simulation``, draw the initial state, advance one stage with the state donated, and
build the result. The initial state, the stage (excluding nothing: one stage is all there
is, so its compilation is in its time, reported apart from a second, warm stage when
``--stages 2``) and the whole child are timed. The fast kernel needs at least
``ceil(n / 2**31)`` devices past 2**31 agents (``jaxstage.use_cpu_cores``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from peak_memory import run_child


def child(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    import jaxstage as js

    devices = js.use_cpu_cores(args.devices)
    game = js.make_game("congestion", num_actions=args.actions)
    learner = js.StageLearning(
        stage_length=args.stage_length, explore_prob=args.explore, update_prob=args.update_prob
    )
    start = time.perf_counter()
    sim = js.Simulation(game, learner, num_agents=args.agents, num_stages=args.stages)
    state = sim.init(args.seed)
    jax.block_until_ready(state.actions)
    initial_s = time.perf_counter() - start
    stage_s, records = [], None
    for _ in range(args.stages):
        begun = time.perf_counter()
        state, new = sim.advance(state, 1, donate=True)
        jax.block_until_ready(state.actions)
        stage_s.append(time.perf_counter() - begun)
        records = new if records is None else records + new
    result = sim.result(records)
    counts = np.asarray(records.stages.metrics.counts_by_type)
    print(
        json.dumps(
            {
                "devices": devices,
                "fast_path": result.config["fast_path"],
                "block_size": result.config.get("block_size"),
                "initial_s": initial_s,
                "stage_s": stage_s,
                "agent_rounds_per_s_last_stage": args.agents * args.stage_length / stage_s[-1],
                "counts_sum_equals_n": bool(int(counts[-1].sum()) == args.agents),
                "distribution": result.distribution.tolist(),
                "switched_fraction": result.switched_fraction.tolist(),
                "jax": jax.__version__,
                "jaxstage": js.__version__,
            }
        ),
        flush=True,
    )


def measure(args: argparse.Namespace) -> dict:
    return run_child(
        [
            __file__,
            "--child",
            *("--agents", str(args.agents), "--actions", str(args.actions)),
            *("--stage-length", str(args.stage_length), "--devices", str(args.devices)),
            *("--update-prob", str(args.update_prob), "--explore", str(args.explore)),
            *("--stages", str(args.stages), "--seed", str(args.seed)),
        ],
        agents=args.agents,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=lambda v: int(float(v)), default=10**10)
    parser.add_argument("--actions", type=int, default=2)
    parser.add_argument("--stage-length", type=int, default=4)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--update-prob", type=float, default=1.0)  # the model's default
    parser.add_argument("--explore", type=float, default=0.05)
    parser.add_argument("--stages", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    row = measure(args)
    report = {
        "command": ["benchmarks/big_population.py", *sys.argv[1:]],
        "machine": {"cpu_count": __import__("os").cpu_count(), "python": platform.python_version()},
        "config": {
            "agents": args.agents,
            "actions": args.actions,
            "stage_length": args.stage_length,
            "devices": args.devices,
            "update_prob": args.update_prob,
            "explore_prob": args.explore,
            "stages": args.stages,
            "game": "congestion",
            "info": "none",
        },
        "result": row,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
