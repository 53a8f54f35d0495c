"""Throughput of ``jaxstage.simulate`` against a vectorised NumPy stage learner.

For each configuration the same stage learning (congestion game, Gaussian noise,
``info="none"`` unless said otherwise) is run by

* ``jaxstage.simulate``: once to compile (timed as compile + run), then again, timed;
  ``simulate`` returns host arrays, so the timing includes the device work
  (equivalent to ``block_until_ready``) and the per-stage metrics;
* a vectorised NumPy implementation of the same learner (per-round arrays over agents,
  a Python loop over rounds and over the few actions), timed on the same machine in the
  same run: the baseline.

Reports agent-rounds per second, as a table and as JSON, with the device and versions.

Usage::

    .venv/bin/python benchmarks/throughput.py                 # default grid
    .venv/bin/python benchmarks/throughput.py --agents 1e5 1e6 --actions 2 8 --out b.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np
import optax

import jaxstage as js


def numpy_stage_learning(num_agents, num_actions, stage_length, explore_prob, num_stages, seed=0):
    """The baseline: plain stage learning on the congestion game, vectorised with NumPy."""
    rng = np.random.default_rng(seed)
    slopes = np.arange(1, num_actions + 1, dtype=np.float32)
    actions = rng.integers(num_actions, size=num_agents)
    for _ in range(num_stages):
        sums = np.zeros((num_actions, num_agents), np.float32)
        counts = np.zeros((num_actions, num_agents), np.int32)
        for _ in range(stage_length):
            explore = rng.random(num_agents) < explore_prob
            played = np.where(explore, rng.integers(num_actions, size=num_agents), actions)
            share = np.bincount(played, minlength=num_actions) / num_agents
            payoff = -(slopes * share)[played] + 0.1 * rng.standard_normal(num_agents)
            for action in range(num_actions):
                mask = played == action
                sums[action] += np.where(mask, payoff, 0.0)
                counts[action] += mask
        estimates = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
        best = estimates.argmax(axis=0)
        keep = estimates[actions, np.arange(num_agents)] == estimates.max(axis=0)
        actions = np.where(keep, actions, best)
    return actions


def time_jaxstage(num_agents, num_actions, stage_length, explore_prob, num_stages, info):
    game = js.make_game("congestion", num_actions=num_actions)
    learner = js.StageLearning(
        stage_length=stage_length, explore_prob=explore_prob, update_prob=0.1, info=info
    )
    start = time.perf_counter()
    js.simulate(game, learner, num_agents, num_stages, seed=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    js.simulate(game, learner, num_agents, num_stages, seed=1)
    warm = time.perf_counter() - start
    return first, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--actions", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--stage-length", type=int, default=50)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--explore", type=float, default=0.05)
    parser.add_argument("--info", nargs="+", default=["none", "payoffs"])
    parser.add_argument("--numpy-max-agents", type=float, default=1e6)
    parser.add_argument("--out", default="benchmarks/throughput.json")
    args = parser.parse_args()

    device = jax.devices()[0]
    environment = {
        "device": f"{device.platform}:{device.device_kind}",
        "jax": jax.__version__,
        "numpy": np.__version__,
        "optax": optax.__version__,
        "jaxstage": js.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    rows = []
    for agents in (int(a) for a in args.agents):
        for actions in args.actions:
            agent_rounds = agents * args.stage_length * args.stages
            numpy_rate = None
            if agents <= args.numpy_max_agents:
                numpy_learner_stages = max(1, args.stages // 2)
                start = time.perf_counter()
                numpy_stage_learning(
                    agents, actions, args.stage_length, args.explore, numpy_learner_stages
                )
                elapsed = time.perf_counter() - start
                numpy_rate = agents * args.stage_length * numpy_learner_stages / elapsed
            for info in args.info:
                first, warm = time_jaxstage(
                    agents, actions, args.stage_length, args.explore, args.stages, info
                )
                rows.append(
                    {
                        "agents": agents,
                        "actions": actions,
                        "stage_length": args.stage_length,
                        "stages": args.stages,
                        "explore_prob": args.explore,
                        "info": info,
                        "compile_s": round(first - warm, 3),
                        "run_s": round(warm, 3),
                        "agent_rounds_per_s": agent_rounds / warm,
                        "numpy_agent_rounds_per_s": numpy_rate,
                        "speedup_vs_numpy": None
                        if numpy_rate is None
                        else agent_rounds / warm / numpy_rate,
                    }
                )
                row = rows[-1]
                numpy_text = "-" if numpy_rate is None else f"{numpy_rate / 1e6:8.2f}"
                speedup = "-" if numpy_rate is None else f"{row['speedup_vs_numpy']:.1f}x"
                print(
                    f"n={agents:>10,} k={actions:>2} info={info:<8} "
                    f"jaxstage {row['agent_rounds_per_s'] / 1e6:8.2f} M/s  "
                    f"numpy {numpy_text} M/s  speed-up {speedup:>6}  "
                    f"compile {row['compile_s']:.2f} s",
                    flush=True,
                )
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"environment": environment, "rows": rows}, handle, indent=2)
    print(f"environment: {environment}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
