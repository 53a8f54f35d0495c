"""Peak resident memory of writing checkpoints and of resuming from one, at scale.

Usage::

    .venv/bin/python benchmarks/checkpoint_memory.py --agents 1e9 --devices 8 \\
        --out benchmarks/checkpoint_memory_cpu.json [--baseline-src /path/to/old/checkout]

Two child processes, each under ``/usr/bin/time -v`` (its "Maximum resident set size" is
the peak reported): ``write`` runs ``js.simulate`` for two stages with a checkpoint after
each (``checkpoint_every=1``); ``resume`` points the folder's ``LATEST`` back at stage 1
and runs ``js.resume`` to the end (reading the checkpoint, placing the state, one stage,
one more checkpoint). Both must give the same final distribution. With
``--baseline-src`` the same two children also run with that checkout of jaxstage on
``PYTHONPATH`` (a previous release, say), the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from peak_memory import run_child


def child(args: argparse.Namespace) -> None:
    import jax

    import jaxstage as js

    js.use_cpu_cores(args.devices)
    game = js.make_game("congestion", num_actions=args.actions)
    learner = js.StageLearning(stage_length=args.stage_length, explore_prob=args.explore)
    begun = time.perf_counter()
    if args.child == "write":
        result = js.simulate(
            game, learner, args.agents, 2, seed=0, checkpoint_dir=args.folder, checkpoint_every=1
        )
    else:
        (Path(args.folder) / "LATEST").write_text("ckpt-0000000001\n")
        result = js.resume(args.folder)
    seconds = time.perf_counter() - begun
    print(
        json.dumps(
            {
                "seconds": seconds,
                "final_distribution": result.distribution[-1].tolist(),
                "jax": jax.__version__,
                "jaxstage_file": js.__file__,
            }
        ),
        flush=True,
    )


def measure(args: argparse.Namespace, mode: str, folder: Path, source: str | None) -> dict:
    arguments = [__file__, "--child", mode, "--folder", str(folder)]
    arguments += ["--agents", str(args.agents), "--devices", str(args.devices)]
    arguments += ["--actions", str(args.actions), "--stage-length", str(args.stage_length)]
    arguments += ["--explore", str(args.explore)]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = source
    return run_child(arguments, agents=args.agents, what=f"{mode} child", env=env)


def measure_both(args: argparse.Namespace, source: str | None) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="jaxstage-ckmem-")) / "ck"
    try:
        write = measure(args, "write", folder, source)
        resume = measure(args, "resume", folder, source)
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    same = write["final_distribution"] == resume["final_distribution"]
    return {"write": write, "resume": resume, "resumed_equals_written": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=lambda v: int(float(v)), default=10**9)
    parser.add_argument("--actions", type=int, default=2)
    parser.add_argument("--stage-length", type=int, default=4)
    parser.add_argument("--explore", type=float, default=0.05)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--baseline-src", help="a checkout of jaxstage to measure beside")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=("write", "resume"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    report = {
        "command": ["benchmarks/checkpoint_memory.py", *sys.argv[1:]],
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "agents": args.agents,
            "actions": args.actions,
            "stage_length": args.stage_length,
            "explore_prob": args.explore,
            "update_prob": 1.0,
            "devices": args.devices,
            "stages": 2,
            "checkpoint_every": 1,
            "game": "congestion",
        },
        "this_checkout": measure_both(args, None),
    }
    if args.baseline_src:
        report["baseline"] = {"source": args.baseline_src, **measure_both(args, args.baseline_src)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
