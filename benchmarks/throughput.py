"""Throughput of ``jaxstage.simulate`` (fast and reference kernels) against baselines.

For each configuration the same stage learning (congestion game, Gaussian noise) is run by

* ``jaxstage.simulate`` with ``kernel="fast"`` and ``kernel="reference"``: once to compile
  (compile time = first call minus second), then again, timed. ``simulate`` returns host
  arrays, so the timing includes all device work (as ``block_until_ready`` would) and the
  per-stage metrics. The reference kernel is the naive design: per-agent ``(k, n)``
  accumulators, JAX's default PRNG, one pass per round;
* a vectorised NumPy implementation of the same learner (the baseline), in the same run;
* a hardware floor: one counter-based random word per agent-round in the fast kernel's
  blocked loop, reduced so nothing is stored.

Reports agent-rounds per second as a table and as JSON, with the device and versions.

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
import jax.numpy as jnp
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


def hardware_floor(num_agents, num_rounds, block_size=2**16):
    """Agent-rounds per second of the cheapest possible round: one counter-based random
    word per agent-round, reduced so that nothing is stored (the same blocked loop as the
    fast kernel, with no game, no counts and no decisions)."""
    from jaxstage import counter_rng as crng

    blocks = -(-num_agents // block_size)

    @jax.jit
    def floor_run(seed):
        def one_block(block, total):
            index = (block * block_size).astype(jnp.uint32) + jnp.arange(
                block_size, dtype=jnp.uint32
            )

            def one_round(r, total):
                bits = crng.random_bits(crng.stream_key(seed, r), index)
                return total ^ jnp.bitwise_xor.reduce(bits)

            return jax.lax.fori_loop(0, num_rounds, one_round, total)

        return jax.lax.fori_loop(0, blocks, one_block, jnp.uint32(0))

    floor_run(jnp.uint32(0)).block_until_ready()
    start = time.perf_counter()
    floor_run(jnp.uint32(1)).block_until_ready()
    return blocks * block_size * num_rounds / (time.perf_counter() - start)


def time_jaxstage(num_agents, num_actions, stage_length, explore_prob, num_stages, info, kernel):
    game = js.make_game("congestion", num_actions=num_actions)
    learner = js.StageLearning(
        stage_length=stage_length, explore_prob=explore_prob, update_prob=0.1, info=info
    )
    start = time.perf_counter()
    js.simulate(game, learner, num_agents, num_stages, seed=0, kernel=kernel)
    first = time.perf_counter() - start
    start = time.perf_counter()
    js.simulate(game, learner, num_agents, num_stages, seed=1, kernel=kernel)
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
    parser.add_argument("--kernels", nargs="+", default=["fast", "reference"])
    parser.add_argument("--numpy-max-agents", type=float, default=1e6)
    parser.add_argument("--reference-max-agents", type=float, default=1e7)
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
            floor_rate = hardware_floor(agents, args.stage_length * args.stages)
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
                rates, compiles = {}, {}
                for kernel in args.kernels:
                    if kernel == "reference" and agents > args.reference_max_agents:
                        continue
                    first, warm = time_jaxstage(
                        agents,
                        actions,
                        args.stage_length,
                        args.explore,
                        args.stages,
                        info,
                        kernel,
                    )
                    rates[kernel] = agent_rounds / warm
                    compiles[kernel] = round(first - warm, 3)
                rows.append(
                    {
                        "agents": agents,
                        "actions": actions,
                        "stage_length": args.stage_length,
                        "stages": args.stages,
                        "explore_prob": args.explore,
                        "info": info,
                        "compile_s": compiles,
                        "agent_rounds_per_s": rates,
                        "numpy_agent_rounds_per_s": numpy_rate,
                        "floor_agent_rounds_per_s": floor_rate,
                    }
                )
                cells = "  ".join(f"{name} {rate / 1e6:8.2f} M/s" for name, rate in rates.items())
                numpy_text = "-" if numpy_rate is None else f"{numpy_rate / 1e6:.2f} M/s"
                ratios = []
                if "fast" in rates and "reference" in rates:
                    ratios.append(f"fast/reference {rates['fast'] / rates['reference']:.1f}x")
                if "fast" in rates and numpy_rate:
                    ratios.append(f"fast/numpy {rates['fast'] / numpy_rate:.1f}x")
                if "fast" in rates:
                    ratios.append(f"fast/floor {rates['fast'] / floor_rate:.2f}")
                print(
                    f"n={agents:>11,} k={actions:>2} info={info:<8} {cells}  numpy {numpy_text}"
                    f"  floor {floor_rate / 1e6:.0f} M/s"
                    f"  {'  '.join(ratios)}  compile {compiles}",
                    flush=True,
                )
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"environment": environment, "rows": rows}, handle, indent=2)
    print(f"environment: {environment}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
