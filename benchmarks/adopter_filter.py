"""Pass 2's adopter filter on and off, alternating, at given update probabilities.

The fast kernel's events path accumulates only the adopting agents' events when every
row's ``update_prob`` is at most ``jaxstage.plan.MAX_FILTERED_UPDATE_PROB``; the
numbers are the same either way. This measures both settings (forced through that
constant) in alternating child processes on issue 3's configuration (2^20 agents, k = 8,
stage length 50, exploration 0.05, congestion game; best of 3 timed calls of 8 stages
each), to place the limit.

Usage::

    .venv/bin/python benchmarks/adopter_filter.py --update-probs 0.1 0.3 0.5 1.0 \\
        --rounds 3 --out benchmarks/adopter_filter_cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from throughput import GAME, probability  # the game of every benchmark

_CHILD = r"""
import sys, time
import jaxstage as js
from jaxstage import plan
plan.MAX_FILTERED_UPDATE_PROB = 1.0 if sys.argv[2] == "on" else -1.0
n, k, tau, stages = 2**20, 8, 50, 8
game = js.make_game(sys.argv[3], num_actions=k)
learner = js.StageLearning(stage_length=tau, explore_prob=0.05, update_prob=float(sys.argv[1]))
js.simulate(game, learner, n, stages, seed=0)
times = []
for seed in range(1, 4):
    start = time.perf_counter()
    js.simulate(game, learner, n, stages, seed=seed)
    times.append(time.perf_counter() - start)
print(n * tau * stages / min(times) / 1e6)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-probs", type=probability, nargs="+", default=[0.1, 0.3, 0.5, 1.0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/adopter_filter.json")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    rows = []
    for update_prob in args.update_probs:
        rates: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.rounds):
            for mode in ("on", "off"):
                command = [sys.executable, "-c", _CHILD, str(update_prob), mode, GAME]
                out = subprocess.run(command, capture_output=True, text=True, check=True)
                rates[mode].append(float(out.stdout.strip().splitlines()[-1]))
        medians = {mode: sorted(values)[len(values) // 2] for mode, values in rates.items()}
        rows.append({"update_prob": update_prob, "M_agent_rounds_per_s": rates, "median": medians})
        print(
            f"update_prob {update_prob:g}: filter on {medians['on']:.1f}, off "
            f"{medians['off']:.1f} M agent-rounds/s (median of {args.rounds}; "
            f"on {rates['on']}, off {rates['off']})",
            flush=True,
        )
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"command": sys.argv, "rows": rows}, handle, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
