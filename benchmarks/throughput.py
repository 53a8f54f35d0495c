"""Throughput and peak memory of ``jaxstage.simulate`` against baselines measured in the same run.

Every measurement runs in its own child process, so that its peak resident memory
(``VmHWM``) is its own. For each configuration (congestion game with Gaussian noise,
``update_prob`` 0.1 unless ``--update-prob`` or the preset says otherwise, uniform start):

* ``fast``: ``jaxstage.simulate(kernel="fast")``, the default kernel, in a process with
  ``--devices`` JAX CPU devices (default: one per core, ``jaxstage.use_cpu_cores``);
  ``simulate`` splits the population over them, at most one per block of agents (its
  default; the JSON records how many it used). Called once to compile, then timed (best
  of ``--repeats``); compile time is the first call minus the best timed call.
  ``simulate`` returns host arrays, so the timing includes all device work (as
  ``block_until_ready`` would) and the per-stage metrics.
* ``fast-single``: the same on one device (JAX's default on a CPU).
* ``reference``: the readable kernel of ``jaxstage.simulation`` (the specification).
* ``naive``: the naive JAX design named in issue 3, written here in 30 lines: per-agent
  one-hot ``(agents, actions)`` accumulators, JAX's default PRNG, ``lax.scan`` over
  rounds, the whole run one ``jit``-compiled function (timed like ``fast``);
* ``numpy``: the same learner vectorised with NumPy (one stage, timed once);
* ``floor``: a hardware floor: one counter-based random word per agent-round in a blocked
  loop, reduced so that nothing is stored.

Reports agent-rounds per second (agents x rounds / wall seconds), compile seconds and peak
memory as a table and as JSON, with the device, CPU and versions.

Usage::

    .venv/bin/python benchmarks/throughput.py --preset target      # issue 3's configuration
    .venv/bin/python benchmarks/throughput.py --preset grid --out benchmarks/grid_cpu.json
    .venv/bin/python benchmarks/throughput.py --agents 1e6 --actions 8 --stage-lengths 50
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

GAME = "congestion"
UPDATE_PROB = 0.1
NOISE_STD = 0.1  # the congestion game's default


def probability(text: str) -> float:
    """An argparse type: a probability in [0, 1], refused with the bad value otherwise."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# ----------------------------------------------------------------------------- baselines


def numpy_stage_learning(
    num_agents, num_actions, stage_length, explore_prob, num_stages, seed=0, update_prob=UPDATE_PROB
):
    """The NumPy baseline: plain stage learning on the congestion game, vectorised."""
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
            payoff = -(slopes * share)[played] + NOISE_STD * rng.standard_normal(num_agents)
            for action in range(num_actions):
                mask = played == action
                sums[action] += np.where(mask, payoff, 0.0)
                counts[action] += mask
        estimates = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
        best = estimates.argmax(axis=0)
        keep = estimates[actions, np.arange(num_agents)] == estimates.max(axis=0)
        adopt = rng.random(num_agents) < update_prob
        actions = np.where(keep | ~adopt, actions, best)
    return actions


def naive_jax_run(
    num_agents, num_actions, stage_length, explore_prob, num_stages, update_prob=UPDATE_PROB
):
    """The naive JAX baseline of issue 3, jit-compiled: returns ``run(key) -> actions``."""
    import jax
    import jax.numpy as jnp

    slopes = jnp.arange(1, num_actions + 1, dtype=jnp.float32)

    def one_round(carry, key):
        actions, sums, counts = carry
        explore_key, action_key, noise_key = jax.random.split(key, 3)
        explore = jax.random.uniform(explore_key, (num_agents,)) < explore_prob
        drawn = jax.random.randint(action_key, (num_agents,), 0, num_actions)
        played = jnp.where(explore, drawn, actions)
        share = jnp.bincount(played, length=num_actions) / num_agents
        noise = NOISE_STD * jax.random.normal(noise_key, (num_agents,))
        payoff = -(slopes * share)[played] + noise
        one_hot = jax.nn.one_hot(played, num_actions, dtype=jnp.float32)  # (agents, actions)
        return (actions, sums + one_hot * payoff[:, None], counts + one_hot), None

    def one_stage(actions, key):
        round_keys = jax.random.split(key, stage_length + 1)
        zeros = jnp.zeros((num_agents, num_actions), jnp.float32)
        (_, sums, counts), _ = jax.lax.scan(one_round, (actions, zeros, zeros), round_keys[1:])
        estimates = jnp.where(counts > 0, sums / jnp.maximum(counts, 1), -jnp.inf)
        best = jnp.argmax(estimates, axis=1)
        keep = jnp.take_along_axis(estimates, actions[:, None], 1)[:, 0] >= estimates.max(1)
        adopt = jax.random.uniform(round_keys[0], (num_agents,)) < update_prob
        return jnp.where(keep | ~adopt, actions, best), None

    @jax.jit
    def run(key):
        init_key, stages_key = jax.random.split(key)
        actions = jax.random.randint(init_key, (num_agents,), 0, num_actions)
        final, _ = jax.lax.scan(one_stage, actions, jax.random.split(stages_key, num_stages))
        return final

    return run


def hardware_floor_run(num_agents, num_rounds, block_size=2**16):
    """One counter-based random word per agent-round, blocked, reduced: ``run(seed)``."""
    import jax
    import jax.numpy as jnp

    from jaxstage import counter_rng as crng

    blocks = -(-num_agents // block_size)

    @jax.jit
    def run(seed):
        def one_block(block, total):
            start = (block * block_size).astype(jnp.uint32)
            index = start + jnp.arange(block_size, dtype=jnp.uint32)

            def one_round(r, total):
                return total ^ jnp.bitwise_xor.reduce(
                    crng.random_bits(crng.stream_key(seed, r), index)
                )

            return jax.lax.fori_loop(0, num_rounds, one_round, total)

        return jax.lax.fori_loop(0, blocks, one_block, jnp.uint32(0))

    return run, blocks * block_size * num_rounds


# ----------------------------------------------------------------------------- one child


def measure(config: dict) -> dict:
    """Run one measurement in this process; returns rate, compile time and peak memory."""
    import jax

    kind = config["kind"]
    n, k, tau, p, stages = (
        config[name] for name in ("agents", "actions", "stage_length", "explore", "stages")
    )
    agent_rounds = n * tau * stages
    update_prob = config.get("update_prob", UPDATE_PROB)
    repeats = config["repeats"]
    compile_s, chosen_path, timed = None, [None], None
    if kind in ("fast", "fast-events", "fast-rounds", "fast-agents", "fast-single", "reference"):
        import jaxstage as js

        devices = 1 if kind in ("fast-single", "reference") else config.get("devices") or 1
        js.use_cpu_cores(devices)

        game = js.make_game(GAME, num_actions=k)
        learner = js.StageLearning(
            stage_length=tau, explore_prob=p, update_prob=update_prob, info=config["info"]
        )

        kernel, _, path = kind.partition("-")
        path = "" if path == "single" else path

        chosen_path = []

        # ``simulate``'s default devices: every CPU device JAX has, at most one per block.
        blocks = {"block_size": config.get("block_size")} if kernel == "fast" else {}
        used_devices = []

        def call(seed):
            result = js.simulate(
                game,
                learner,
                n,
                stages,
                seed=seed,
                kernel=kernel,
                fast_path=path or "auto",
                **blocks,
            )
            chosen_path.append(result.config["fast_path"])
            used_devices.append(result.config["devices"])

        first = _timed(call, 0)
        timed = [_timed(call, 1 + r) for r in range(repeats)]
        best = min(timed)
        compile_s = first - best
    elif kind == "naive":
        run = naive_jax_run(n, k, tau, p, stages, update_prob)
        first = _timed(lambda s: run(jax.random.key(s)).block_until_ready(), 0)
        timed = [
            _timed(lambda s: run(jax.random.key(s)).block_until_ready(), 1 + r)
            for r in range(repeats)
        ]
        best = min(timed)
        compile_s = first - best
    elif kind == "numpy":
        best = _timed(
            lambda s: numpy_stage_learning(n, k, tau, p, stages, seed=s, update_prob=update_prob), 0
        )
    elif kind == "floor":
        run, agent_rounds = hardware_floor_run(n, tau * stages)
        _timed(lambda s: run(jax.numpy.uint32(s)).block_until_ready(), 0)
        best = min(
            _timed(lambda s: run(jax.numpy.uint32(s)).block_until_ready(), 1 + r)
            for r in range(repeats)
        )
    else:
        raise ValueError(f"unknown measurement kind {kind!r}")
    extra = {"fast_path": chosen_path[0]} if kind.startswith("fast") else {}
    if kind.startswith("fast"):
        extra["devices"] = used_devices[0]  # as simulate chose: at most one per block
    if timed is not None:  # every timed call, for the range of repeats
        extra["timed_s"] = timed
    return extra | {
        "agent_rounds_per_s": agent_rounds / best,
        "seconds": best,
        "compile_s": compile_s,
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_device_bytes": _peak_device_bytes(),
    }


def _peak_device_bytes() -> int | None:
    """Peak bytes the default device's allocator held (a GPU's; None where JAX keeps no
    such count, as on a CPU, whose peak is ``peak_rss_bytes``)."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = {}
    return stats.get("peak_bytes_in_use")


def _timed(function, seed) -> float:
    start = time.perf_counter()
    function(seed)
    return time.perf_counter() - start


def run_child(config: dict, timeout: float) -> dict:
    """``measure(config)`` in a fresh Python process (its own peak memory)."""
    command = [sys.executable, __file__, "--child", json.dumps(config)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver


def environment(devices: int) -> dict:
    import jax
    import optax

    import jaxstage as js

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    backend = jax.default_backend()
    # A GPU's JAX plugin (jax-cuda12-plugin, jax-cuda13-pjrt, ...) decides what runs
    # there, so its version belongs beside jaxlib's.
    plugins = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith("jax-cuda") or name.startswith("jax-rocm"):
            plugins[name] = dist.version
    return {
        "device": f"{device.platform}:{device.device_kind}",
        "backend": backend,
        "device_count": jax.device_count(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        # --devices makes CPU devices only: on a GPU the fast kernel has the GPU's own.
        "fast_devices": devices if backend == "cpu" else jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "jax_plugins": plugins,
        "numpy": np.__version__,
        "optax": optax.__version__,
        "jaxstage": js.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


PRESETS = {
    # Issue 3's configuration: 2**20 agents, 8 actions, stage length 50, exploration 0.05,
    # at the model's default update_prob 1 (every agent decides at every stage end) and at
    # 0.1, where the adopter filter skips the decisions of the 90% that keep their action.
    "target": dict(
        agents=[2**20],
        actions=[8],
        stage_lengths=[50],
        info=["none", "payoffs"],
        update_probs=[1.0, 0.1],
    ),
    # Populations, action counts and stage lengths around it.
    "grid": dict(
        agents=[10**4, 10**5, 10**6, 10**7],
        actions=[2, 8, 32],
        stage_lengths=[10, 50, 200],
        info=["none"],
    ),
    # The two exploration paths of the fast kernel against each other (what
    # jaxstage.plan.EVENTS_FROM_STAGE_LENGTH is read from).
    "paths": dict(
        agents=[2**20],
        actions=[2, 4, 8],
        stage_lengths=[1, 4, 16, 64],
        info=["none", "distribution"],
        kinds=["fast-events", "fast-rounds"],
        min_agent_rounds=5e7,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named grid")
    parser.add_argument("--agents", type=float, nargs="+")
    parser.add_argument("--actions", type=int, nargs="+")
    parser.add_argument("--stage-lengths", type=int, nargs="+")
    parser.add_argument("--info", nargs="+", choices=["none", "payoffs", "distribution"])
    parser.add_argument("--explore", type=float, default=0.05)
    parser.add_argument(
        "--update-prob",
        type=probability,
        nargs="+",
        help="update probabilities (default: the preset's, else 0.1)",
    )
    parser.add_argument(
        "--min-agent-rounds",
        type=float,
        help="stages per timed fast run: enough for this many agent-rounds (at least 1; "
        "default 2e8 or the preset's)",
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=[
            "fast",
            "fast-single",
            "fast-events",
            "fast-rounds",
            "fast-agents",
            "reference",
            "naive",
            "numpy",
        ],
        help="what to measure (default: fast, fast-single, reference, naive, numpy; the "
        "preset's own)",
    )
    parser.add_argument("--baseline-max-agents", type=float, default=2**20 * 1.01)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times each row's kinds are measured in turn (each kind's best round is kept)",
    )
    parser.add_argument(
        "--block-size", type=int, help="agents per block of the fast kernel (default: automatic)"
    )
    parser.add_argument(
        "--devices",
        type=int,
        help="JAX CPU devices of the fast kernel (default: one per core of this process); "
        "on a GPU backend the fast kernel runs on the GPU's own devices",
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", default="benchmarks/throughput.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    grid = dict(PRESETS[args.preset]) if args.preset else dict(PRESETS["target"])
    grid.setdefault("kinds", ["fast", "fast-single", "reference", "naive", "numpy"])
    from jaxstage.devices import cpu_core_count  # no JAX computation in this process

    devices = args.devices or cpu_core_count()
    if devices < 1:
        parser.error(f"--devices must be at least 1, got {devices}")
    grid.setdefault("min_agent_rounds", 2e8)
    grid.setdefault("update_probs", [UPDATE_PROB])
    if args.update_prob is not None:
        grid["update_probs"] = args.update_prob
    for name in ("agents", "actions", "stage_lengths", "info", "kinds", "min_agent_rounds"):
        if getattr(args, name) is not None:
            grid[name] = getattr(args, name)
    env = environment(devices)
    print(f"environment: {env}", flush=True)
    rows = []
    floors: dict[int, dict] = {}
    for update_prob, agents, actions, tau, info in itertools.product(
        grid["update_probs"],
        [int(a) for a in grid["agents"]],
        grid["actions"],
        grid["stage_lengths"],
        grid["info"],
    ):
        fast_stages = max(1, int(np.ceil(grid["min_agent_rounds"] / (agents * tau))))
        base = dict(
            agents=agents,
            actions=actions,
            stage_length=tau,
            explore=args.explore,
            update_prob=update_prob,
            info=info,
            repeats=args.repeats,
            block_size=args.block_size,
            devices=devices,
        )
        if agents not in floors:
            floors[agents] = run_child(
                dict(base, kind="floor", stages=max(1, 200 // tau) if tau < 200 else 1),
                args.timeout,
            )
        row = dict(base, game=GAME, results={})
        row["auto_path"] = _auto_path(actions, tau, args.explore, info)
        row["results"]["floor"] = floors[agents]
        row["setting"] = _setting(update_prob)
        # The kinds take turns, ``--rounds`` times: on a shared machine each kind's best
        # round is compared with the others' best rounds, and every round's rate is kept.
        for _ in range(args.rounds):
            for kind in grid["kinds"]:
                baseline = not kind.startswith("fast")
                if baseline and agents > args.baseline_max_agents:
                    continue
                if kind in ("numpy", "naive") and info != "none":
                    continue  # the baselines implement plain stage learning only
                stages = 1 if kind == "numpy" else 2 if baseline else fast_stages
                result = run_child(dict(base, kind=kind, stages=stages), args.timeout)
                result["stages"] = stages
                previous = row["results"].get(kind)
                rates = (previous or {}).get("rates_over_rounds", []) + [_rate(result)]
                if previous is None or (_rate(result) or 0) > (_rate(previous) or 0):
                    row["results"][kind] = result
                row["results"][kind]["rates_over_rounds"] = rates
        rows.append(row)
        print(_line(row), flush=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"environment": env, "command": sys.argv, "rows": rows}, handle, indent=2)
    print(f"written to {args.out}")


def _setting(update_prob: float) -> str:
    """What a row's update probability stands for (a label for its reader)."""
    if update_prob == 1.0:
        return "the model's default: every agent decides at every stage end"
    from jaxstage import plan

    if update_prob <= plan.MAX_FILTERED_UPDATE_PROB:
        return "few adopters: the adopter filter skips the others' decisions"
    return "inertia above the adopter filter's limit"


def _auto_path(actions: int, stage_length: int, explore: float, info: str) -> str:
    """The exploration path ``fast_path="auto"`` takes for this configuration."""
    import jaxstage as js
    from jaxstage import plan

    learner = js.StageLearning(stage_length=stage_length, explore_prob=explore, info=info)
    return "events" if plan.event_capacity_for([learner], 1) else "rounds"


def _rate(result: dict | None) -> float | None:
    return None if not result or "error" in result else result["agent_rounds_per_s"]


def _line(row: dict) -> str:
    results = row["results"]
    cells = []
    for kind, result in results.items():
        if "error" in result:
            cells.append(f"{kind} ERROR ({result['error']})")
            continue
        peak = result["peak_rss_bytes"] / 2**30
        extra = f" peak {peak:.2f} GiB" if kind.startswith("fast") else ""
        label = f"{kind}({result['fast_path']})" if kind == "fast" else kind
        rates = [r for r in result.get("rates_over_rounds", []) if r]
        spread = f" ({min(rates) / 1e6:,.1f}-{max(rates) / 1e6:,.1f})" if len(rates) > 1 else ""
        cells.append(f"{label} {result['agent_rounds_per_s'] / 1e6:,.1f}{spread} M/s{extra}")
    fast = _rate(results.get("fast"))
    ratios = [
        f"fast/{kind} {fast / _rate(results[kind]):.2g}x"
        for kind in ("fast-single", "reference", "naive", "numpy", "floor")
        if fast and _rate(results.get(kind))
    ]
    compile_s = (results.get("fast") or {}).get("compile_s")
    compile_text = f"  compile {compile_s:.1f} s" if compile_s is not None else ""
    return (
        f"u={row['update_prob']:<4g} n={row['agents']:>13,} k={row['actions']:>2} "
        f"tau={row['stage_length']:>4} "
        f"info={row['info']:<8} auto={row['auto_path']:<6} "
        + "  ".join(cells)
        + "  |  "
        + "  ".join(ratios)
        + compile_text
    )


if __name__ == "__main__":
    main()
