"""Speed of private information (``info_sharing="private"``) against shared, per mode.

Usage::

    .venv/bin/python benchmarks/private_info.py --agents 1e4 1e5 --repeats 3 \\
        --out benchmarks/private_info_cpu.json

Congestion game (4 links), stage length 10, exploration 0.05, ``update_prob`` 0.01 (the
study's C4 setting), 5 stages a call. Each mode runs shared and private, each on the fast
kernel (what ``"auto"`` picks: the events path for shared, the agents path for private)
and on the reference kernel (the like-for-like baseline). A call is warmed up
once (compilation excluded), then timed ``--repeats`` times with the result blocked on;
agent-rounds per second, best and worst of the repeats.
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

MODES = {
    "distribution m=100": dict(info="distribution", info_sample_size=100),
    "distribution m=256": dict(info="distribution", info_sample_size=256),
    "distribution m=1000": dict(info="distribution", info_sample_size=1000),
    "distribution m=10000": dict(info="distribution", info_sample_size=10_000),
    "distribution std=0.01": dict(info="distribution", info_noise_std=0.01),
    "payoffs m=10": dict(info="payoffs", info_sample_size=10),
    "payoffs m=100": dict(info="payoffs", info_sample_size=100),
}
STAGES, TAU = 5, 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=lambda v: int(float(v)), nargs="+", default=[10**4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import jax

    import jaxstage as js

    game = js.make_game("congestion")
    rows = []
    for n in args.agents:
        for name, kwargs in MODES.items():
            common = dict(stage_length=TAU, explore_prob=0.05, update_prob=0.01, **kwargs)
            shared = js.StageLearning(**common)
            private = js.StageLearning(**common, info_sharing="private")
            for label, learner, kernel in (
                ("shared, auto (fast)", shared, "auto"),
                ("shared, reference", shared, "reference"),
                ("private, auto (fast)", private, "auto"),
                ("private, reference", private, "reference"),
            ):
                rates = simulate_rates(
                    game, learner, n, num_stages=STAGES, kernel=kernel, repeats=args.repeats
                )
                row = {"agents": n, "mode": name, "run": label, "rates": rates}
                row.update(best=max(rates), worst=min(rates))
                rows.append(row)
                print(f"{n:>9,} {name:<22} {label:<20} {max(rates) / 1e6:8.2f} M/s "
                      f"(worst {min(rates) / 1e6:.2f})", flush=True)  # fmt: skip
    report = {
        "command": ["benchmarks/private_info.py", *sys.argv[1:]],
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "versions": {"jax": jax.__version__, "jaxstage": js.__version__},
        "config": {
            "game": "congestion",
            "stage_length": TAU,
            "explore_prob": 0.05,
            "update_prob": 0.01,
            "stages_per_call": STAGES,
        },  # fmt: skip
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
