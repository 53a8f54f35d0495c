"""Where a fast-kernel stage spends its time: XLA operations ranked by total duration.

Runs ``jaxstage.simulate`` on the game of ``benchmarks/throughput.py`` once to compile,
then once more under ``jax.profiler.trace``, and sums the durations of the leaf XLA
thunks (fusions, scatters, copies; loops and conditionals, which contain others, are
left out) over the traced run. Optionally dumps the optimised HLO (``--dump``) so a
fusion's name can be looked up in ``*_fast_run_chunk.cpu_after_optimizations.txt``, and
its LLVM IR in ``*<fusion>_kernel_module.ir-with-opt.ll`` (vector types such as
``<8 x float>`` there mean the fusion was vectorised).

Usage::

    .venv/bin/python benchmarks/profile_stage.py --agents 1048576 --actions 8 \\
        --stage-length 50 --stages 5 [--info none] [--fast-path auto] [--update-prob 0.1] \\
        [--devices 1] [--dump DIR]

Times come from one traced run on a shared machine: read them as shares, not rates.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile

_CONTAINERS = ("while", "cond", "call")


def leaf_times(trace_dir: str) -> tuple[collections.Counter, collections.Counter]:
    """Total microseconds and call counts of each leaf XLA operation in a trace."""
    files = sorted(
        glob.glob(os.path.join(trace_dir, "**", "*perfetto_trace.json.gz"), recursive=True)
    )
    if not files:
        raise SystemExit(f"no perfetto trace under {trace_dir}")
    with gzip.open(files[-1]) as handle:
        data = json.load(handle)
    events = data["traceEvents"] if isinstance(data, dict) else data
    total: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name.startswith("$") or not name:
            continue
        if any(word in name for word in ("Thunk", "Pjit", "PjRt", "np.", "Execute")):
            continue
        if name.split(".")[0] in _CONTAINERS:
            continue
        total[name] += event.get("dur", 0)
        calls[name] += 1
    return total, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=float, default=2**20)
    parser.add_argument("--actions", type=int, default=8)
    parser.add_argument("--stage-length", type=int, default=50)
    parser.add_argument("--stages", type=int, default=5)
    parser.add_argument("--info", default="none", choices=["none", "payoffs", "distribution"])
    parser.add_argument("--fast-path", default="auto", choices=["auto", "events", "rounds"])
    parser.add_argument("--block-size", type=int, help="agents per block (default: automatic)")
    parser.add_argument(
        "--update-prob", type=float, help="update probability (default: the benchmarks' 0.1)"
    )
    parser.add_argument(
        "--devices", type=int, default=1, help="JAX CPU devices (jaxstage.use_cpu_cores)"
    )
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--dump", metavar="DIR", help="also dump the optimised HLO and LLVM IR")
    args = parser.parse_args()
    if args.dump:  # must be set before JAX initialises its backend
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={args.dump} --xla_dump_hlo_as_text"
        )

    import jax
    import numpy as np
    from throughput import GAME, UPDATE_PROB  # the game and inertia of every benchmark

    import jaxstage as js

    js.use_cpu_cores(args.devices)
    update_prob = UPDATE_PROB if args.update_prob is None else args.update_prob
    game = js.make_game(GAME, num_actions=args.actions)
    learner = js.StageLearning(
        stage_length=args.stage_length, explore_prob=0.05, update_prob=update_prob, info=args.info
    )

    def run(seed: int) -> None:
        result = js.simulate(
            game,
            learner,
            int(args.agents),
            args.stages,
            seed=seed,
            kernel="fast",
            fast_path=args.fast_path,
            block_size=args.block_size,
        )
        np.asarray(result.nash_gap)

    run(0)  # compile
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            run(1)
        total, calls = leaf_times(trace_dir)
    overall = sum(total.values())
    print(
        f"agents={int(args.agents):,} k={args.actions} tau={args.stage_length} "
        f"stages={args.stages} info={args.info} fast_path={args.fast_path} "
        f"update_prob={update_prob} devices={args.devices}; jax {jax.__version__}"
    )
    print(f"leaf XLA operations: {overall / 1e3:,.1f} ms in all (summed over threads)")
    for name, micros in total.most_common(args.top):
        print(
            f"{micros / 1e3:9.1f} ms {100 * micros / overall:5.1f}%  {calls[name]:6d} calls  {name}"
        )


if __name__ == "__main__":
    sys.exit(main())
