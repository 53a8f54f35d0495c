"""Compile simulate's programs for an NVIDIA H200 without a GPU and report what they launch.

Run through ``scripts/gpu-compile`` (it sets up ``.venv-gpu``, with the CUDA plugin that
gives compile-only H200 devices from ``scripts/h200_target.txtpb``). For each
configuration (congestion game, k = 8, stage length 50, exploration 0.05, update
probabilities 1 and 0.1; every information mode at 2^20 agents, plain learning at 10^9),
every program ``simulate`` would run (``jaxstage.programs``) is compiled for one H200, and
``--out DIR`` receives, per configuration and program, the optimised HLO
(``*.hlo.txt``), the kernels' PTX (``*.ptx``, every kernel file of the program, from
XLA's dump) and XLA's thunk sequence (``*.thunks.txt``), and ``report.json``: counts
(``jaxstage.hlo_report``), temporary memory and a cost-model estimate (never a
measurement). ``--check`` exits 1, naming each failure, when a stage program has a loop
without a known trip count or a conditional, when any program has a host callback,
TF32 instructions or float atomics, or when kernels grow with the population: kernels
per stage per block and event-loop iteration (``E`` on the agents path) at 10^9 agents
more than 1.5 times those at 2^20, or 10^9 agents in more than 2 memory-sized blocks
(``kernel_growth`` in report.json has the figures and the formula).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time

# Compile-only: JAX's own backend stays the CPU (no CUDA driver is looked for), the H200
# devices come from the target description.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxstage as js  # noqa: E402
from jaxstage import engine, plan  # noqa: E402
from jaxstage import hlo_report as hr  # noqa: E402
from jaxstage import programs as pr  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "scripts", "h200_target.txtpb")
SMALL, LARGE = 2**20, 10**9
NUM_STAGES = 100  # chunks of 5 stages (plan.chunk_stages)
STAGE_LENGTH = 50
#: (name, learner keywords) of each information mode.
INFO_MODES = {
    "none": {},
    "payoffs": {"info": "payoffs"},
    "payoffs-sampled": {"info": "payoffs", "info_sample_size": 1000},
    "distribution": {"info": "distribution"},
    "distribution-noisy": {"info": "distribution", "info_noise_std": 0.01},
}
UPDATE_PROBS = (1.0, 0.1)
#: Kernels per stage per block, per event-loop iteration on the agents path ("per block-
#: event"), at 10^9 agents may be at most this many times those at 2^20: kernels that grow
#: with the population (the previous design's CPU-cache-sized blocks went from about
#: 2,000 kernels a stage to 1.8 million) fail it; the memory-sized blocks and ``E``'s
#: logarithmic growth with agents x stages are divided out. Not exactly 1: XLA's fusion
#: decisions depend on shapes (at blocks of 5 x 10^8 agents it leaves one slice of the
#: event keys out of the event loop's main fusion: 1.27x on the agents path).
MAX_KERNEL_GROWTH = 1.5
#: Blocks the 10^9-agent run may take on the target (memory-sized blocks).
MAX_LARGE_BLOCKS = 2


@dataclasses.dataclass(frozen=True)
class Config:
    num_agents: int
    info: str
    update_prob: float

    @property
    def name(self) -> str:
        agents = (
            "n2p20" if self.num_agents == SMALL else f"n{self.num_agents:.0e}".replace("+0", "")
        )
        return f"{agents}-{self.info}-u{self.update_prob:g}"

    def learner(self) -> js.StageLearning:
        return js.StageLearning(
            stage_length=STAGE_LENGTH,
            explore_prob=0.05,
            update_prob=self.update_prob,
            **INFO_MODES[self.info],
        )


def configs(large_infos: list[str]) -> list[Config]:
    small = [Config(SMALL, info, u) for info in INFO_MODES for u in UPDATE_PROBS]
    return small + [Config(LARGE, info, u) for info in large_infos for u in UPDATE_PROBS]


def h200_sharding(target: str) -> NamedSharding:
    with open(target) as file:
        topology = topologies.get_topology_desc(
            platform="cuda", target_config=file.read(), topology="1x1x1"
        )
    mesh = topologies.make_mesh(topology, (1,), ("x",))
    return NamedSharding(mesh, P())


def target_field(target: str, field: str) -> float:
    with open(target) as file:
        for line in file:
            if line.strip().startswith(field + ":"):
                return float(line.split(":", 1)[1])
    raise ValueError(f"no {field} in {target}")


def compile_program(program: pr.Program, out_dir: str, stem: str) -> dict:
    """Compile for the H200, write its HLO, PTX and thunks; its record for the report."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-compile-dump-") as dump:
        compiled = pr.lower(program).compile(compiler_options={"xla_dump_to": dump})
        seconds = time.perf_counter() - started
        hlo = compiled.as_text()
        ptx_files = sorted(glob.glob(os.path.join(dump, "*.ptx")))
        ptx_texts = [pathlib.Path(path).read_text() for path in ptx_files]
        thunks = sorted(glob.glob(os.path.join(dump, "*thunk_sequence_after_thunk_passes.txt")))
        thunk_text = "".join(pathlib.Path(path).read_text() for path in thunks)
    with open(os.path.join(out_dir, stem + ".hlo.txt"), "w") as file:
        file.write(hlo)
    with open(os.path.join(out_dir, stem + ".ptx"), "w") as file:
        for path, text in zip(ptx_files, ptx_texts, strict=True):
            file.write(f"// ===== {os.path.basename(path)}\n{text}\n")
    with open(os.path.join(out_dir, stem + ".thunks.txt"), "w") as file:
        file.write(thunk_text)
    counts = hr.hlo_counts(hlo)
    ptx = hr.ptx_counts(ptx_texts)
    # A chunk program runs once per chunk of spec.chunk_stages stages: program.calls of
    # them a run (a shorter last chunk may have a program of its own).
    spec = program.spec
    calls_per_stage = program.calls / spec.num_stages if program.per_chunk else 0.0
    record = dict(hr.program_summary(counts, ptx, calls_per_stage))
    record["driver_host_syncs_per_call"] = program.host_syncs
    memory = compiled.memory_analysis()
    record["memory"] = {
        name: int(getattr(memory, name + "_in_bytes"))
        for name in ("temp_size", "argument_size", "output_size", "alias_size")
    }
    record["compile_seconds"] = round(seconds, 2)
    record["files"] = {kind: f"{stem}.{kind}" for kind in ("hlo.txt", "ptx", "thunks.txt")}
    return record


def stage_summary(config: Config, spec, records: dict[str, dict]) -> dict:
    """Everything one stage launches (the per-chunk programs, divided by the chunk's
    stages) and the cost model's estimate for it."""
    per_chunk = [r for r in records.values() if r["calls_per_stage"] > 0]
    kernels = sum(r["kernels_per_stage"] for r in per_chunk)
    syncs = sum(
        r["host_syncs_per_stage"] + r["driver_host_syncs_per_call"] * r["calls_per_stage"]
        for r in per_chunk
    )
    moved = sum(r["bytes_per_stage"] for r in per_chunk)
    operations = sum(r["operations_per_stage"] for r in per_chunk)
    agent_rounds = float(config.num_agents) * STAGE_LENGTH
    return {
        "kernels_per_stage": kernels,
        "host_syncs_per_stage": syncs,
        "bytes_per_stage": moved,
        "operations_per_stage": operations,
        "estimate": hr.estimate(kernels, syncs, moved, operations, agent_rounds),
    }


def memory_record(game, learner, spec, records: dict[str, dict], device_bytes: int) -> dict:
    """simulate's memory estimate (``plan.estimate_memory_bytes``: what it refuses
    runs by) against XLA's buffer assignment of the largest program (temporaries,
    arguments and outputs, less what the outputs alias)."""
    compiled = max(
        r["memory"]["temp_size"]
        + r["memory"]["argument_size"]
        + r["memory"]["output_size"]
        - r["memory"]["alias_size"]
        for r in records.values()
    )
    estimate = plan.estimate_memory_bytes(
        spec.num_agents,
        game.num_actions,
        learner,
        1,
        spec.kernel,
        spec.block_size,
        spec.event_capacity,
        spec.num_shards,
        spec=spec,
    )
    return {
        "estimate_bytes": int(estimate),
        "compiled_bytes": int(compiled),
        "estimate_over_compiled": estimate / compiled,
        "device_bytes": device_bytes,
    }


def spec_record(game, learner, spec) -> dict:
    record = spec._asdict()
    record["type_counts"] = list(record["type_counts"])
    # The path as a run's result names it (engine.run_config), so the two cannot differ.
    options = engine.RunOptions(
        spec.num_agents, spec.num_stages, 0.05, 0.05, None, "uniform", game.default_params(), []
    )
    config = engine.run_config(game, learner, options, spec, seed=0)
    record["fast_path"] = config["fast_path"]
    return record


def check(report: dict) -> list[str]:
    """The ``--check`` failures of a report, one readable line each."""
    failures = []
    for name, entry in report["configurations"].items():
        if entry["refused_by_simulate"]:
            failures.append(
                f"{name}: simulate would refuse this run on the target: "
                f"{entry['refused_by_simulate']} (compiled anyway, for the report)"
            )
        for program, record in entry["programs"].items():
            where = f"{name}/{program}"
            if record["calls_per_stage"] > 0:  # a stage program: run every chunk
                if record["loops_unknown_trip_count"]:
                    loops = [
                        loop["op_name"] or loop["name"]
                        for loop in record["loops"]
                        if loop["trip_count"] is None
                    ]
                    failures.append(
                        f"{where}: {record['loops_unknown_trip_count']} while loop(s) without "
                        f"a known trip count (a host sync each iteration): {loops}"
                    )
                if record["conditionals"]:
                    failures.append(
                        f"{where}: {record['conditionals']} conditional(s) in the stage program "
                        f"({record['conditionals_run']:g} run per call, each a host sync)"
                    )
            if record["host_callbacks"]:
                failures.append(
                    f"{where}: {record['host_callbacks']} host callback(s): "
                    f"{record['host_callback_targets']}"
                )
            ptx = record["ptx"]
            if ptx["tf32_instructions"]:
                failures.append(f"{where}: {ptx['tf32_instructions']} TF32 instruction(s) in PTX")
            if ptx["float_atomics"]:
                failures.append(f"{where}: float atomics in PTX: {ptx['float_atomics']}")
    report["kernel_growth"] = growth = kernel_growth(report)
    for setting in growth["settings"]:
        if setting["passed"]:
            continue
        where = f"info={setting['info']} update_prob={setting['update_prob']:g}"
        small, large = setting[str(SMALL)], setting[str(LARGE)]
        if large["blocks"] > MAX_LARGE_BLOCKS:
            failures.append(
                f"{where}: {LARGE:,} agents take {large['blocks']} blocks on the target, "
                f"more than {MAX_LARGE_BLOCKS}"
            )
        if setting["growth"] > MAX_KERNEL_GROWTH:
            failures.append(
                f"{where}: {large['kernels_per_block_event']:,.2f} kernels per stage per "
                f"block-event at {LARGE:,} agents ({large['kernels_per_stage']:,.0f} a "
                f"stage, {large['blocks']} block(s), E = {large['events']}), "
                f"{setting['growth']:.3f}x the {small['kernels_per_block_event']:,.2f} at "
                f"{SMALL:,} ({small['kernels_per_stage']:,.0f}, {small['blocks']} block(s), "
                f"E = {small['events']}), more than {MAX_KERNEL_GROWTH:g}x"
            )
    return failures


def _scale(entry: dict) -> dict:
    """One configuration's blocks, ``E`` and kernels per stage, per block and per
    block-event (per block and event-loop iteration: the agents path loops over ``E``
    events; other paths count one), from its recorded spec."""
    spec, kernels = entry["spec"], entry["stage"]["kernels_per_stage"]
    blocks = -(-spec["num_agents"] // spec["block_size"]) if spec["block_size"] else 1
    events = spec["agent_events"] if spec["fast_path"] == "agents" else 1
    return {
        "blocks": blocks,
        "events": events,
        "kernels_per_stage": kernels,
        "kernels_per_block": kernels / blocks,
        "kernels_per_block_event": kernels / (blocks * events),
    }


def kernel_growth(report: dict) -> dict:
    """The kernels-per-stage rule of ``--check``, per (info, update_prob) setting with
    both populations: its figures, the growth and the verdict (``passed``)."""
    by_setting: dict[tuple, dict[int, dict]] = {}
    for entry in report["configurations"].values():
        config = entry["config"]
        setting = (config["info"], config["update_prob"])
        by_setting.setdefault(setting, {})[config["num_agents"]] = entry
    settings = []
    for (info, update), entries in sorted(by_setting.items()):
        if SMALL not in entries or LARGE not in entries:
            continue
        small, large = _scale(entries[SMALL]), _scale(entries[LARGE])
        growth = large["kernels_per_block_event"] / small["kernels_per_block_event"]
        settings.append(
            {
                "info": info,
                "update_prob": update,
                str(SMALL): small,
                str(LARGE): large,
                "growth": growth,
                # The previous rule's figure, kept for comparison (its limit was 2).
                "kernels_per_stage_ratio": large["kernels_per_stage"] / small["kernels_per_stage"],
                "passed": growth <= MAX_KERNEL_GROWTH and large["blocks"] <= MAX_LARGE_BLOCKS,
            }
        )
    return {
        "formula": (
            "growth = (kernels_per_stage / (blocks * E)) at 10^9 agents / the same at 2^20, "
            f"blocks = ceil(num_agents / spec.block_size), E = spec.agent_events on the "
            f"agents path (else 1); passes when growth <= {MAX_KERNEL_GROWTH:g} and blocks "
            f"at 10^9 <= {MAX_LARGE_BLOCKS}"
        ),
        "settings": settings,
    }


def versions() -> dict:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    # The working tree's package, whatever its commit (git_dirty): which code was compiled.
    source = hashlib.sha256()
    for path in sorted(pathlib.Path(ROOT, "jaxstage").glob("*.py")):
        source.update(path.name.encode() + b"\0" + path.read_bytes())
    return {
        "jaxstage_source_sha256": source.hexdigest(),
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "jax-cuda12-plugin": version("jax-cuda12-plugin"),
        "jax-cuda12-pjrt": version("jax-cuda12-pjrt"),
        "jaxstage": js.__version__,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": sys.version.split()[0],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the HLO, PTX and report.json")
    parser.add_argument(
        "--path",
        "--fast-path",
        dest="path",
        default="auto",
        choices=plan.FAST_PATHS,
        help="the fast kernel's path (default auto: what simulate picks for a GPU)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 on any failed check")
    parser.add_argument(
        "--large-info",
        nargs="*",
        default=["none"],
        choices=list(INFO_MODES),
        help="information modes compiled at 10^9 agents too (default: none)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="compile only the configurations whose name contains this text",
    )
    parser.add_argument("--target", default=TARGET, help="XLA GPU target description")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("jax_plugins.xla_cuda12") is None:
        print(
            "gpu-compile: the CUDA plugin is not installed (jax-cuda12-plugin and "
            "jax-cuda12-pjrt of jax's version); run scripts/gpu-compile, which sets up "
            ".venv-gpu",
            file=sys.stderr,
        )
        return 2
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    sharding = h200_sharding(args.target)
    device = sharding.mesh.devices.flat[0]
    memory_bytes = int(target_field(args.target, "device_memory_size"))
    game = js.make_game("congestion", num_actions=8)
    report = {
        "command": shlex.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "versions": versions(),
        "target": {
            "file": os.path.relpath(args.target, ROOT),
            "sha256": hashlib.sha256(pathlib.Path(args.target).read_bytes()).hexdigest(),
            "device_kind": device.device_kind,
            "device_memory_bytes": memory_bytes,
        },
        "fast_path": args.path,
        "cost_model": {
            **hr.H200.as_dict(),
            "formula": "seconds per stage = kernels * launch_s + host_syncs * host_sync_s "
            "+ max(bytes / bytes_per_s, operations / operations_per_s); an estimate from "
            "the compiled program's counts, not a measurement",
        },
        "unknown_trip_count_assumed": 1,
        "configurations": {},
    }
    chosen = [c for c in configs(args.large_info) if args.only is None or args.only in c.name]
    for config in chosen:
        options = dict(
            fast_path=args.path,
            devices=1,
            platform="cuda",
            device_memory_bytes=memory_bytes,
            sharding=sharding,
        )
        learner = config.learner()
        refused = None
        try:
            programs = pr.simulate_programs(game, learner, config.num_agents, NUM_STAGES, **options)
        except ValueError as error:  # simulate's own refusal (its memory estimate)
            refused = str(error)
            print(
                f"gpu-compile: {config.name}: simulate would refuse it: {refused}", file=sys.stderr
            )
            programs = pr.simulate_programs(
                game, learner, config.num_agents, NUM_STAGES, check_memory=False, **options
            )
        spec = programs[0].spec
        out_dir = os.path.join(args.out, config.name)
        os.makedirs(out_dir, exist_ok=True)
        records = {}
        for program in programs:
            records[program.name] = compile_program(program, out_dir, program.name)
            print(
                f"gpu-compile: {config.name}/{program.name}: "
                f"{records[program.name]['kernels']:,.0f} kernels a call, compiled in "
                f"{records[program.name]['compile_seconds']:.1f} s",
                file=sys.stderr,
            )
        for record in records.values():
            record["files"] = {k: f"{config.name}/{v}" for k, v in record["files"].items()}
        report["configurations"][config.name] = {
            "config": {
                "game": "congestion",
                "num_actions": 8,
                "num_agents": config.num_agents,
                "num_stages": NUM_STAGES,
                "stage_length": STAGE_LENGTH,
                "explore_prob": 0.05,
                "update_prob": config.update_prob,
                **{"info": "none", **INFO_MODES[config.info]},
                "info_name": config.info,
            },
            "refused_by_simulate": refused,
            "memory": memory_record(game, learner, spec, records, memory_bytes),
            "spec": spec_record(game, config.learner(), spec),
            "stage": stage_summary(config, spec, records),
            "programs": records,
        }
    failures = check(report)
    report["check"] = {"failures": failures, "passed": not failures}
    report["seconds"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(args.out, "report.json"), "w") as file:
        json.dump(report, file, indent=1)
    print(summary(report), file=sys.stderr)
    if args.check and failures:
        print(f"gpu-compile --check: {len(failures)} failure(s):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


def summary(report: dict) -> str:
    lines = [
        f"{'configuration':34} {'path':7} {'blocks':>6} {'E':>3} {'est. GB':>8} "
        f"{'XLA GB':>7} {'kernels/stage':>13} {'syncs/stage':>11} "
        f"{'loops ?':>7} {'conds':>5} {'atomics':>8} {'float at.':>9} {'tf32':>5} "
        f"{'est. agent-rounds/s':>19}"
    ]
    for name, entry in report["configurations"].items():
        chunk = entry["programs"]["chunk"]
        atomics = sum(sum(r["ptx"]["atomics"].values()) for r in entry["programs"].values())
        float_atomics = sum(
            sum(r["ptx"]["float_atomics"].values()) for r in entry["programs"].values()
        )
        tf32 = sum(r["ptx"]["tf32_instructions"] for r in entry["programs"].values())
        stage, scale, memory = entry["stage"], _scale(entry), entry["memory"]
        lines.append(
            f"{name:34} {str(entry['spec']['fast_path']):7} {scale['blocks']:6} "
            f"{scale['events']:3} {memory['estimate_bytes'] / 1e9:8.2f} "
            f"{memory['compiled_bytes'] / 1e9:7.2f} {stage['kernels_per_stage']:13,.0f} "
            f"{stage['host_syncs_per_stage']:11,.1f} {chunk['loops_unknown_trip_count']:7} "
            f"{chunk['conditionals']:5} {atomics:8} {float_atomics:9} {tf32:5} "
            f"{stage['estimate']['agent_rounds_per_second']:19.3g}"
        )
    growth = report.get("kernel_growth", {"settings": []})
    for setting in growth["settings"]:
        small, large = setting[str(SMALL)], setting[str(LARGE)]
        lines.append(
            f"kernel growth info={setting['info']} u={setting['update_prob']:g}: "
            f"{small['kernels_per_block_event']:.2f} -> {large['kernels_per_block_event']:.2f} "
            f"kernels per block-event ({setting['growth']:.3f}x, limit {MAX_KERNEL_GROWTH:g}; "
            f"{large['blocks']} blocks at {LARGE:,}, limit {MAX_LARGE_BLOCKS}; per stage "
            f"{setting['kernels_per_stage_ratio']:.2f}x): "
            f"{'pass' if setting['passed'] else 'FAIL'}"
        )
    lines.append(f"({report['seconds']} s; report.json has the rest)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
