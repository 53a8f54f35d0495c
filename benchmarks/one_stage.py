"""One stage of the fast kernel at a given population: wall time and (with
``/usr/bin/time -v``) peak resident memory.

Usage::

    /usr/bin/time -v .venv/bin/python benchmarks/one_stage.py 1e9 2 2   # agents, k, tau
    /usr/bin/time -v .venv/bin/python benchmarks/one_stage.py 1e9 2 2 1  # ... on one device

The population is split over JAX CPU devices, one per core unless a fourth argument says
how many (``jaxstage.use_cpu_cores``).
"""

import sys
import time

import jaxstage as js


def main() -> None:
    num_agents, num_actions, stage_length = (
        int(float(sys.argv[1])),
        int(sys.argv[2]),
        int(sys.argv[3]),
    )
    devices = js.use_cpu_cores(int(sys.argv[4]) if len(sys.argv) > 4 else None)
    game = js.make_game("congestion", num_actions=num_actions)
    learner = js.StageLearning(stage_length=stage_length, explore_prob=0.05, update_prob=0.05)
    start = time.perf_counter()
    result = js.simulate(game, learner, num_agents, 1, seed=0, kernel="fast")
    elapsed = time.perf_counter() - start
    print(
        f"n={num_agents:,} k={num_actions} tau={stage_length}, {devices} device(s): "
        f"{elapsed:.1f} s including "
        f"compilation, {num_agents * stage_length / elapsed / 1e6:.1f} M agent-rounds/s, "
        f"final distribution {result.distribution[-1].round(4)}"
    )


if __name__ == "__main__":
    main()
