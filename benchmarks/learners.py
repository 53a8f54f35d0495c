"""Speed of the other learners (eps-greedy, EXP3) against stage learning, per population.

Usage::

    .venv/bin/python benchmarks/learners.py --agents 1e5 1e6 --repeats 3 \\
        --out benchmarks/learners_cpu.json

Congestion game (4 links), 5 recorded stages of 20 rounds a call. eps-greedy and EXP3 run
on the reference kernel (the only one that hosts them); stage learning is measured on
the same reference kernel (the like-for-like baseline) and on the kernel ``"auto"``
picks, the fast one, at the model's default ``update_prob=1`` and at the study's 0.1
(which flatters the fast kernel: it skips the agents that do not update). A call is
warmed up once (compilation excluded), then timed ``--repeats`` times with the result
blocked on; agent-rounds per second, best and worst of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simulate_rates import simulate_rates  # noqa: E402 - beside this file, not a package

STAGES, TAU = 5, 20


def learners() -> list[tuple[str, object, str]]:
    """``(label, learner, kernel)`` of each measured run."""
    import jaxstage as js

    return [
        ("eps-greedy eps=0.05, reference", js.EpsGreedy(0.05, stage_length=TAU), "auto"),
        ("exp3 eta=0.05 gamma=0.05, reference", js.Exp3(0.05, 0.05, stage_length=TAU), "auto"),
        ("stage update_prob=1, reference",
         js.StageLearning(stage_length=TAU, update_prob=1.0), "reference"),
        ("stage update_prob=1, auto (fast)",
         js.StageLearning(stage_length=TAU, update_prob=1.0), "auto"),
        ("stage update_prob=0.1, auto (fast)",
         js.StageLearning(stage_length=TAU, update_prob=0.1), "auto"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=lambda v: int(float(v)), nargs="+", default=[10**5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import jax

    import jaxstage as js

    game = js.make_game("congestion")
    rows = []
    for n in args.agents:
        for label, learner, kernel in learners():
            rates = simulate_rates(
                game, learner, n, num_stages=STAGES, kernel=kernel, repeats=args.repeats
            )
            row = {"agents": n, "run": label, "rates": rates, "best": max(rates)}
            row["worst"] = min(rates)
            rows.append(row)
            print(f"{n:>10,} {label:<38} {max(rates) / 1e6:9.2f} M/s "
                  f"(worst {min(rates) / 1e6:.2f})", flush=True)  # fmt: skip
    report = {
        "command": ["benchmarks/learners.py", *sys.argv[1:]],
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "device": str(jax.devices()[0]),
        "versions": {"jax": jax.__version__, "jaxstage": js.__version__},
        "config": {"game": "congestion", "stage_length": TAU, "stages_per_call": STAGES},
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
