"""Throughput on a GPU within a deadline: step (c) of ``benchmarks/gpu_check``.

Measures the fast kernel (``simulate``'s default exploration path on this backend, kind
``fast``; then the events path, kind ``fast-events``) against the naive JAX kernel of
``benchmarks/throughput.py`` (kind ``naive``) on the same device, in the same run, at
10^6, 10^8 and 10^9 agents, 2 and 8 actions, update probability 1 and 0.1 (congestion game,
stage length 50, exploration 0.05, no information). Each measurement is
``throughput.measure`` in its own child process (``throughput.run_child``): called once
to compile and warm up, then timed ``repeats`` times; the JSON keeps every timed call.

A GPU lease is short, so the run has a deadline: measurements go cheapest first within
two tiers (fast and naive at every size, then the events path), and one is skipped, with
its reason in the JSON, when what is left would not hold it: its time is predicted from
the same kind's run at the previous size (scaled by agent-rounds), its device memory from
that run's peak (the naive kernel's first size from its arrays). Results are written after
every measurement (``--out``, and the same files in ``--mirror``, the folder the device
tool brings back), so a run stopped by a timeout keeps what it measured. SIGINT or SIGTERM
(the script's ``timeout -s INT``) stops it the same way.

``--dry-run`` measures tiny populations (10^3 and 10^4, update probability 0.1) on
whatever backend JAX has, so that a machine without a GPU runs every step of the script.

Usage::

    python benchmarks/gpu_check.py --deadline-s 300 --out benchmarks/gpu_h200.json
    JAX_PLATFORMS=cpu python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_dry.json
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402 - beside this file, not a package

STAGE_LENGTH = 50
EXPLORE = 0.05
ACTIONS = (2, 8)
UPDATE_PROBS = (1.0, 0.1)
SIZES = (10**6, 10**8, 10**9)
#: The dry run: every kind and step at two tiny sizes, one update probability (about 12
#: children of 5 to 20 s each on a 2-core CPU).
DRY_SIZES = (10**3, 10**4)
DRY_UPDATE_PROBS = (0.1,)
#: Tier 1 at every size first (the fast kernel's default path and the baseline), then
#: tier 2: a GPU lease that runs short keeps the comparison at 10^9 before the second path.
TIERS = (("fast", "naive"), ("fast-events",))
#: Agent-rounds per timed call: enough that a GPU call runs far past launch overheads
#: (10^6 agents: 200 stages of the fast kernel, 20 of the naive one).
MIN_AGENT_ROUNDS = {"fast": 1e10, "naive": 1e9}
DRY_MIN_AGENT_ROUNDS = {"fast": 2e6, "naive": 1e6}
#: ``--kinds`` choices: the fast kernel on each path, and the baseline.
KINDS = ("fast", "fast-agents", "fast-events", "fast-rounds", "naive")
#: No child runs longer than this, whatever is left (one stuck kernel cannot eat the lease).
MAX_CHILD_S = 150
#: Seconds kept back from the deadline to write the results.
RESERVE_S = 5
#: A child needs at least this long (start, compile, three calls) to be worth starting.
MIN_CHILD_S = 15
#: Largest share of the device's free memory a measurement is predicted to use.
MEMORY_SHARE = 0.9


def naive_bytes(agents: int, actions: int) -> int:
    """Device memory the naive kernel is expected to need before any run of it: its
    ``(agents, actions)`` float32 sums and counts twice (a scan's carry in and out) and
    about ten ``(agents,)`` words of per-round draws, played actions and payoffs."""
    return agents * (16 * actions + 40)


def plan(sizes, kinds=None, update_probs=UPDATE_PROBS) -> list[dict]:
    """Every measurement, in the order it runs (``kinds``: only those, in tier order)."""
    order = []
    tiers = [[kind for kind in tier if not kinds or kind in kinds] for tier in TIERS]
    if kinds:  # a kind of no tier (fast-agents, fast-rounds) runs after them
        tiers.append([kind for kind in kinds if not any(kind in tier for tier in TIERS)])
    for tier in tiers:
        for agents in sizes:
            for actions in ACTIONS:
                for update_prob in update_probs:
                    for kind in tier:
                        order.append(
                            dict(kind=kind, agents=agents, actions=actions, update_prob=update_prob)
                        )
    return order


def child_config(item: dict, min_agent_rounds: dict, devices: int, large: int) -> dict:
    agents, kind = item["agents"], item["kind"]
    wanted = min_agent_rounds["naive" if kind == "naive" else "fast"]
    stages = max(1, math.ceil(wanted / (agents * STAGE_LENGTH)))
    # The largest population: two timed calls of the fast kernel, one of the naive one.
    repeats = 3 if agents < large else 1 if kind == "naive" else 2
    return dict(
        item,
        stage_length=STAGE_LENGTH,
        explore=EXPLORE,
        info="none",
        repeats=repeats,
        block_size=None,
        devices=devices,
        stages=stages,
    )


def key(item: dict) -> tuple:
    return item["agents"], item["actions"], item["update_prob"]


def predict(config: dict, done: dict) -> tuple[float | None, float | None, str]:
    """Seconds and device bytes a child should take, from the same kind's largest smaller
    run with the same actions and update probability; ``(None, None, "")`` if none ran."""
    earlier = [
        (agents, entry)
        for (kind, agents, actions, update_prob), entry in done.items()
        if kind == config["kind"]
        and actions == config["actions"]
        and update_prob == config["update_prob"]
        and agents < config["agents"]
        and "error" not in entry["result"]
    ]
    if not earlier:
        return None, None, ""
    agents, entry = max(earlier, key=lambda pair: pair[0])
    result, before = entry["result"], entry["config"]
    scale = (config["agents"] * config["stages"]) / (agents * before["stages"])
    calls_before = 1 + before["repeats"]
    fixed = max(0.0, entry["wall_s"] - calls_before * result["seconds"])  # start, compile
    seconds = fixed + (1 + config["repeats"]) * result["seconds"] * scale
    peak = result.get("peak_device_bytes")
    peak = None if peak is None else peak * config["agents"] / agents
    return seconds, peak, f"n={agents:,}"


def skip_reason(config: dict, done: dict, left_s: float, free_bytes: int | None) -> str | None:
    seconds, peak, basis = predict(config, done)
    if config["kind"] != "naive":
        # The fast kernel sizes its blocks from the device's memory
        # (agent_stage.choose_agent_block): its peak does not scale with the population,
        # so an extrapolation would skip runs that fit. Only the naive kernel's arrays do.
        peak = None
    elif peak is None:
        peak, basis = naive_bytes(config["agents"], config["actions"]), "its arrays"
    if peak is not None and free_bytes and peak > MEMORY_SHARE * free_bytes:
        return (
            f"predicted device memory {peak / 2**30:,.1f} GiB (from {basis}) > "
            f"{MEMORY_SHARE:.0%} of the {free_bytes / 2**30:,.1f} GiB free"
        )
    if left_s < MIN_CHILD_S:
        return f"time budget: {left_s:.0f} s left"
    if seconds is not None and seconds > min(left_s, MAX_CHILD_S):
        return (
            f"time budget: predicted {seconds:,.0f} s (from {basis}) > "
            f"{min(left_s, MAX_CHILD_S):.0f} s available"
        )
    return None


def gpu_description() -> dict:
    """``nvidia-smi``'s name, driver and memory of each GPU (empty without it)."""
    if not shutil.which("nvidia-smi"):
        return {}
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"nvidia_smi": done.stdout.strip().splitlines()}


def cpu_figures_jax() -> dict:
    """The jax version of each CPU figure beside this file (``*_cpu.json``): the GPU
    figures are comparable with them only where the versions agree."""
    versions = {}
    for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "*_cpu.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                versions[os.path.basename(path)] = json.load(handle)["environment"]["jax"]
        except (OSError, KeyError, ValueError):
            continue
    return versions


def rate_text(result: dict, config: dict) -> str:
    if "error" in result:
        return f"ERROR ({result['error']})"
    agent_rounds = config["agents"] * config["stage_length"] * config["stages"]
    rates = sorted(agent_rounds / s / 1e6 for s in result.get("timed_s") or [result["seconds"]])
    spread = f" [{rates[0]:,.1f}-{rates[-1]:,.1f}]" if len(rates) > 1 else ""
    peak = result.get("peak_device_bytes") or result.get("peak_rss_bytes") or 0
    compile_s = result.get("compile_s")
    compile_text = "" if compile_s is None else f" compile {compile_s:.1f} s"
    return f"{rates[-1]:,.1f} M/s{spread}{compile_text} peak {peak / 2**30:.2f} GiB"


def summary(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"gpu_check {'(dry run) ' if report['dry_run'] else ''}on {env['device']} "
        f"x{env['device_count']}, jax {env['jax']} / jaxlib {env['jaxlib']} "
        f"{env['jax_plugins'] or ''}, jaxstage {env['jaxstage']}, python {env['python']}",
        f"congestion game, stage length {STAGE_LENGTH}, exploration {EXPLORE}, info none; "
        "agent-rounds per second, best of the timed calls [range], M = 10^6",
    ]
    for row in report["rows"]:
        results, configs = row["results"], row["configs"]
        cells = []
        for kind, result in results.items():
            label = kind
            if kind.startswith("fast") and "fast_path" in result:
                label = f"{kind}({result['fast_path']})"
            cells.append(f"{label} {rate_text(result, configs[kind])}")
        ratios = []
        fast = _rate(results.get("fast"), configs.get("fast"))
        for other in ("naive", "fast-events"):
            base = _rate(results.get(other), configs.get(other))
            if fast and base:
                ratios.append(f"fast/{other} {fast / base:.3g}x")
        lines.append(
            f"n={row['agents']:>13,} k={row['actions']} update={row['update_prob']:<3}: "
            + "; ".join(cells)
            + (f"  | {' '.join(ratios)}" if ratios else "")
        )
    for skipped in report["skipped"]:
        lines.append(
            f"skipped {skipped['kind']} n={skipped['agents']:,} k={skipped['actions']} "
            f"update={skipped['update_prob']}: {skipped['reason']}"
        )
    state = "complete" if report["complete"] else "INCOMPLETE (stopped early)"
    lines.append(f"{state}: {report['elapsed_s']:.0f} s")
    return "\n".join(lines) + "\n"


def _rate(result, config) -> float | None:
    if not result or "error" in result:
        return None
    return config["agents"] * config["stage_length"] * config["stages"] / result["seconds"]


def write(report: dict, out: str, mirror: str | None) -> None:
    text = summary(report)
    targets = [out] + ([os.path.join(mirror, os.path.basename(out))] if mirror else [])
    for path in targets:
        for target, body in ((path, json.dumps(report, indent=2)), (_txt(path), text)):
            temporary = target + ".part"  # never a half-written file after a kill
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(body)
            os.replace(temporary, target)


def _txt(path: str) -> str:
    return os.path.splitext(path)[0] + ".txt"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    # A job started in the background of a non-interactive shell (as a remote runner may
    # start the script) comes in with SIGINT ignored, which Python keeps: take it back, and
    # SIGTERM too, so that either stops the run with what ran written.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file; the summary goes beside (.txt)")
    parser.add_argument("--mirror", help="a folder that gets a copy of both after each write")
    parser.add_argument("--deadline-s", type=float, default=300, help="seconds from now")
    parser.add_argument("--dry-run", action="store_true", help="tiny populations, any backend")
    parser.add_argument(
        "--sizes", type=float, nargs="+", help="populations (default 1e6 1e8 1e9; dry: 1e3 1e4)"
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, help="default: fast naive fast-events")
    args = parser.parse_args()
    start = time.monotonic()
    deadline = start + args.deadline_s

    import jax

    from jaxstage import plan as kernel_plan
    from jaxstage.devices import cpu_core_count

    backend = jax.default_backend()
    # CPU devices only matter on a CPU backend; a GPU's fast kernel runs on the GPU.
    devices = cpu_core_count() if backend == "cpu" else 1
    env = throughput.environment(devices)
    env |= gpu_description()
    env["xla_env"] = {name: value for name, value in os.environ.items() if name.startswith("XLA")}
    env["cpu_figures_jax"] = cpu_figures_jax()
    free_bytes = kernel_plan.available_memory_bytes()
    env["free_device_bytes_at_start"] = free_bytes
    print(f"environment: {json.dumps(env)}", flush=True)
    if backend != "gpu" and not args.dry_run:
        print(f"gpu_check.py: the default backend is {backend!r}, not a GPU", file=sys.stderr)
        return 2
    sizes = [int(n) for n in args.sizes] if args.sizes else DRY_SIZES if args.dry_run else SIZES
    min_agent_rounds = DRY_MIN_AGENT_ROUNDS if args.dry_run else MIN_AGENT_ROUNDS
    report = {
        "environment": env,
        "command": sys.argv,
        "dry_run": args.dry_run,
        "configuration": dict(
            game=throughput.GAME,
            stage_length=STAGE_LENGTH,
            explore=EXPLORE,
            info="none",
            noise_std=throughput.NOISE_STD,
        ),
        "rows": [],
        "skipped": [],
        "complete": False,
        "elapsed_s": 0.0,
    }
    rows: dict[tuple, dict] = {}
    done: dict[tuple, dict] = {}
    todo = plan(sizes, args.kinds, DRY_UPDATE_PROBS if args.dry_run else UPDATE_PROBS)
    try:
        for index, item in enumerate(todo):
            config = child_config(item, min_agent_rounds, devices, max(sizes))
            left = deadline - RESERVE_S - time.monotonic()
            reason = skip_reason(config, done, left, free_bytes)
            stamp = time.strftime("%H:%M:%S", time.gmtime())
            label = (
                f"[{stamp} +{time.monotonic() - start:4.0f}s] {index + 1}/{len(todo)} "
                f"{item['kind']:<11} n={item['agents']:>13,} k={item['actions']} "
                f"update={item['update_prob']:<3}"
            )
            if reason:
                report["skipped"].append(dict(item, reason=reason))
                print(f"{label} skipped: {reason}", flush=True)
            else:
                began = time.monotonic()
                result = throughput.run_child(config, min(left, MAX_CHILD_S))
                wall = time.monotonic() - began
                result["wall_s"] = wall
                done[(item["kind"], *key(item))] = dict(result=result, config=config, wall_s=wall)
                if key(item) not in rows:
                    rows[key(item)] = dict(
                        agents=item["agents"],
                        actions=item["actions"],
                        update_prob=item["update_prob"],
                        results={},
                        configs={},
                    )
                    report["rows"].append(rows[key(item)])
                rows[key(item)]["results"][item["kind"]] = result
                rows[key(item)]["configs"][item["kind"]] = config
                print(f"{label} {rate_text(result, config)} ({wall:.0f} s)", flush=True)
            report["elapsed_s"] = time.monotonic() - start
            write(report, args.out, args.mirror)
        report["complete"] = True
    except KeyboardInterrupt:  # the script's timeout: keep what ran
        print("gpu_check.py: interrupted; writing what ran", file=sys.stderr)
    report["rows"].sort(key=lambda row: (row["agents"], row["actions"], -row["update_prob"]))
    report["elapsed_s"] = time.monotonic() - start
    write(report, args.out, args.mirror)
    print(summary(report), end="", flush=True)
    print(f"written to {args.out} and {_txt(args.out)}", flush=True)
    return 0 if report["complete"] else 130  # as a shell reports an interrupted command


if __name__ == "__main__":
    sys.exit(main())
