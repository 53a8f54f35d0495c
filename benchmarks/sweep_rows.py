"""How a sweep's rows should run: one after another (``lax.map``, what ``sweep`` does) or
vectorised (``vmap``), against the same number of single runs, measured in one run, on
``--devices`` JAX CPU devices (default one per core; the population split over them) and,
for ``lax.map``, on one device too.

For each configuration: ``rows`` seeds of plain stage learning on the congestion game
(4 links, exploration 0.05, update 0.1), timed after a compiling call (best of
``--repeats``); ``simulate`` and ``sweep`` return host arrays, so the timing includes all
device work. Also checks that both batched forms give bitwise the same trajectories.

Usage::

    .venv/bin/python benchmarks/sweep_rows.py --agents 1e5 1e6 --rows 10 --stage-length 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np

import jaxstage as js
from jaxstage import kernels


def _best_time(function, repeats: int) -> float:
    function()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(agents: int, rows: int, stage_length: int, stages: int, repeats: int) -> dict:
    game = js.make_game("congestion")
    learner = js.StageLearning(stage_length=stage_length, explore_prob=0.05, update_prob=0.1)
    seeds = list(range(rows))
    in_turn = kernels.FAST
    vectorised = kernels.compiled(
        kernels.fast_initial_state, kernels.fast_run_chunk, batch=jax.vmap
    )
    out, trajectories = {}, {}
    for name, compiled in (("lax.map (sweep)", in_turn), ("vmap", vectorised)):
        kernels.FAST = compiled
        try:

            def run(label=name):
                trajectories[label] = js.sweep(game, learner, agents, stages, seeds=seeds)

            out[name] = _best_time(run, repeats)
        finally:
            kernels.FAST = in_turn
    out["lax.map, one device"] = _best_time(
        lambda: js.sweep(game, learner, agents, stages, seeds=seeds, devices=1), repeats
    )
    out["single runs"] = _best_time(
        lambda: [js.simulate(game, learner, agents, stages, seed=s) for s in seeds], repeats
    )
    same = all(
        np.array_equal(a.distribution, b.distribution) and np.array_equal(a.nash_gap, b.nash_gap)
        for a, b in zip(trajectories["lax.map (sweep)"], trajectories["vmap"], strict=True)
    )
    agent_rounds = rows * agents * stage_length * stages
    return {
        "agents": agents,
        "rows": rows,
        "stage_length": stage_length,
        "stages": stages,
        "bitwise_equal": same,
        "agent_rounds_per_s": {name: agent_rounds / seconds for name, seconds in out.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=float, nargs="+", default=[1e5, 1e6])
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--stage-length", type=int, default=100)
    parser.add_argument("--stages", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/sweep_rows.json")
    parser.add_argument(
        "--devices", type=int, help="JAX CPU devices (default: one per core of this process)"
    )
    args = parser.parse_args()
    js.use_cpu_cores(args.devices)  # before any JAX computation
    device = jax.devices()[0]
    results = []
    for agents in [int(a) for a in args.agents]:
        row = measure(agents, args.rows, args.stage_length, args.stages, args.repeats)
        rates = "  ".join(f"{k} {v / 1e6:,.1f} M/s" for k, v in row["agent_rounds_per_s"].items())
        print(f"n={agents:,} rows={args.rows}: {rates}  bitwise equal: {row['bitwise_equal']}")
        results.append(row)
    environment = {
        "device": f"{device.platform}:{device.device_kind}",
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "jaxstage": js.__version__,
        "python": sys.version.split()[0],
    }
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"environment": environment, "command": sys.argv, "rows": results}, handle)
        handle.write("\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
