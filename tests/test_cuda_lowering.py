"""Every program simulate and sweep would run lowers for CUDA, with the CPU jaxlib.

``jaxstage.programs`` enumerates the very jitted objects and static specs a run calls;
each is lowered here with ``lowering_platforms=("cuda",)`` (StableHLO, no GPU needed),
for every information mode, every exploration path of ``plan.FAST_PATHS`` (and the
events path's adopter filter and replay), 1 and 2 shards (conftest gives 2 CPU devices),
the reference kernel, and sweeps. The chunk program of the path a GPU run takes by
default must have no host callback and no conditional (a host sync each). Compiling for
an H200 and reading what it would launch is ``scripts/gpu-compile`` (docs/gpu.md).
"""

import functools
import re

import pytest

import jaxstage as js
from jaxstage import kernels, plan, programs

GAME = js.make_game("congestion", num_actions=4)
NUM_STAGES = 25  # chunks of 2 stages, the last of 1: a shorter last chunk is lowered too
INFO_MODES = {
    "none": {},
    "payoffs": {"info": "payoffs"},
    "payoffs-sampled": {"info": "payoffs", "info_sample_size": 64},
    "distribution": {"info": "distribution"},
    "distribution-noisy": {"info": "distribution", "info_noise_std": 0.05},
}
#: Every path of FAST_PATHS but "auto" (lowered below as a GPU run takes it, for every
#: information mode), and the events path's adopter filter.
PATHS = [path for path in plan.FAST_PATHS if path != "auto"] + ["events-adopters"]
#: (agents, block size) of one and of two shards (two blocks, one a device).
SHARDS = {1: (3000, None), 2: (2**13, 2**12)}


def learner(info: str, update_prob: float = 1.0) -> js.StageLearning:
    return js.StageLearning(
        stage_length=8, explore_prob=0.05, update_prob=update_prob, **INFO_MODES[info]
    )


def fast_path_and_learner(path: str, info: str):
    if path == "events-adopters":  # pass 2 for the adopters only: update_prob <= 0.2
        return "events", learner(info, update_prob=0.1)
    return path, learner(info)


def lowered_texts(program_list) -> dict[str, str]:
    return {p.name: programs.lower(p, "cuda").as_text() for p in program_list}


def check_path_variant(path: str, spec) -> None:
    """The spec really is the path variant the test is named after (none skipped)."""
    if path in ("events", "events-adopters"):
        assert spec.exploration_path == "events"
        assert spec.filter_adopters == (path == "events-adopters" and spec.needs_own_estimates)
        # Pass 1's events are kept for pass 2 whenever agents keep their own estimates.
        assert spec.replay_events == spec.needs_own_estimates
    else:
        assert spec.exploration_path == path


@pytest.mark.parametrize("shards", list(SHARDS))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("info", list(INFO_MODES))
def test_simulate_programs_lower_for_cuda(info, path, shards):
    fast_path, row = fast_path_and_learner(path, info)
    num_agents, block_size = SHARDS[shards]
    program_list = programs.simulate_programs(
        GAME,
        row,
        num_agents,
        NUM_STAGES,
        fast_path=fast_path,
        devices=shards,
        block_size=block_size,
        platform="cuda",
    )
    spec = programs.chunk_program(program_list).spec
    assert spec.kernel == "fast" and spec.num_shards == shards
    check_path_variant(path, spec)
    names = [p.name for p in program_list]
    assert names[:4] == ["initial", "initial_metrics", "chunk", "chunk_metrics"]
    texts = lowered_texts(program_list)
    assert all("func.func public @main" in text for text in texts.values())
    if shards == 2:  # split over the agents axis: a manual (shard_map) computation
        assert "sdy.manual_computation" in texts["chunk"] or "shard_map" in texts["chunk"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("info", ["none", "payoffs-sampled", "distribution-noisy"])
def test_sweep_programs_lower_for_cuda(info, path):
    fast_path, row = fast_path_and_learner(path, info)
    rows = [row, row.__class__(**{**row.__dict__, "explore_prob": 0.02})]
    program_list = programs.sweep_programs(
        GAME, row, 3000, NUM_STAGES, learners=rows, fast_path=fast_path, platform="cuda"
    )
    check_path_variant(path, programs.chunk_program(program_list).spec)
    texts = lowered_texts(program_list)
    assert {"initial", "chunk", "chunk_metrics"} <= set(texts)


def test_two_shard_sweep_lowers_for_cuda():
    program_list = programs.sweep_programs(
        GAME,
        learner("none"),
        2**13,
        NUM_STAGES,
        batch=2,
        devices=2,
        block_size=2**12,
        platform="cuda",
    )
    assert programs.chunk_program(program_list).spec.num_shards == 2
    lowered_texts(program_list)


@pytest.mark.parametrize("info", list(INFO_MODES))
def test_reference_kernel_programs_lower_for_cuda(info):
    for program_list in (
        programs.simulate_programs(GAME, learner(info), 500, NUM_STAGES, kernel="reference"),
        programs.sweep_programs(GAME, learner(info), 500, NUM_STAGES, kernel="reference"),
    ):
        assert [p.name for p in program_list] == ["initial", "chunk"]
        assert programs.chunk_program(program_list).spec.kernel == "reference"
        lowered_texts(program_list)


def test_programs_are_the_runs_jitted_objects():
    program_list = programs.simulate_programs(GAME, learner("none"), 3000, 4, devices=1)
    by_name = {p.name: p for p in program_list}
    assert by_name["initial"].fn is kernels.FAST[0]
    assert by_name["chunk"].fn is kernels.FAST[1]
    assert by_name["chunk_metrics"].fn is kernels.jit_stage_metrics
    swept = programs.sweep_programs(GAME, learner("none"), 3000, 4, devices=1)
    assert {p.name: p.fn for p in swept}["chunk"] is kernels.FAST[3]
    reference = programs.simulate_programs(GAME, learner("none"), 300, 4, kernel="reference")
    assert reference[1].fn is kernels.REFERENCE[1]
    assert by_name["chunk"].calls == 4 and by_name["initial"].calls == 1  # 1-stage chunks


# ------------------------------------------------- the chunk program a GPU run takes

CALLBACK = re.compile(r"custom_call\s*@\w*callback|callback_target|python_gpu_callback")
DEFAULT_PATH = plan.kernel_spec(
    "fast",
    GAME,
    learner("none"),
    num_agents=2**20,
    num_stages=100,
    max_stage_length=50,
    block_size=None,
    platform="cuda",
).exploration_path


def test_the_default_gpu_path_is_one_lowered_above():
    assert DEFAULT_PATH in PATHS


@functools.cache
def default_cuda_chunk(info: str, update_prob: float) -> str:
    """StableHLO for CUDA of the chunk program of a run of 2^16 agents, 100 stages (whole
    chunks of 5), as ``simulate`` would run it on a GPU (``fast_path="auto"``)."""
    program_list = programs.simulate_programs(
        GAME, learner(info, update_prob), 2**16, 100, devices=1, platform="cuda"
    )
    assert programs.chunk_program(program_list).spec.exploration_path == DEFAULT_PATH
    return programs.lower(programs.chunk_program(program_list), "cuda").as_text()


def data_dependent_branches(stablehlo: str) -> list[str]:
    """The ``stablehlo.case`` and ``stablehlo.if`` ops whose index is not a constant.

    ``jax.lax.platform_dependent`` (``events.on_cpu_or_elsewhere``) lowers to a case on
    a constant platform index, chained through a second case on the first's result, even
    for one platform: XLA folds both away. Any other branch is data-dependent: a GPU
    copies its index to the host (a sync) each time it runs."""
    found = []
    for function in re.split(r"\n\s*func\.func ", stablehlo):
        definitions = dict(re.findall(r"(%[\w#]+)(?::\d+)? = (.*)", function))
        static = set()
        for name, op, index in re.findall(
            r"(%[\w#]+) = \"stablehlo\.(case|if)\"\((%[\w#]+)\)", function
        ):
            if definitions.get(index, "").startswith("stablehlo.constant") or index in static:
                static.add(name)
            else:
                found.append(f"{name} = stablehlo.{op}({index})")
    return found


def test_constant_platform_cases_are_not_branches():
    text = """func.func public @main() {
    %c = stablehlo.constant dense<1> : tensor<i32>
    %0 = "stablehlo.case"(%c) ({
    %1 = "stablehlo.case"(%0) ({
    %2 = stablehlo.compare LT, %a, %b
    %3 = "stablehlo.if"(%2) ({
  }
  func.func private @other() {
    %0 = stablehlo.convert %x : (tensor<i1>) -> tensor<i32>
    %1 = "stablehlo.case"(%0) ({
"""
    assert data_dependent_branches(text) == [
        "%3 = stablehlo.if(%2)",
        "%1 = stablehlo.case(%0)",
    ]


SETTINGS = [(info, u) for info in INFO_MODES for u in (1.0, 0.1)]


@pytest.mark.parametrize(("info", "update_prob"), SETTINGS)
def test_default_cuda_chunk_has_no_host_callback(info, update_prob):
    assert not CALLBACK.search(default_cuda_chunk(info, update_prob))


@pytest.mark.parametrize(("info", "update_prob"), SETTINGS)
def test_default_cuda_chunk_has_no_data_dependent_branch(info, update_prob):
    branches = data_dependent_branches(default_cuda_chunk(info, update_prob))
    assert not branches, f"{DEFAULT_PATH} path chunk program has {branches}"


PRIVATE_MODES = {
    "payoffs-private": {"info": "payoffs", "info_sample_size": 8},
    "distribution-private-sampled": {"info": "distribution", "info_sample_size": 16},
    "distribution-private-noisy": {"info": "distribution", "info_noise_std": 0.05},
}


def private_learner(info: str) -> js.StageLearning:
    return js.StageLearning(
        stage_length=8, explore_prob=0.05, info_sharing="private", **PRIVATE_MODES[info]
    )


@pytest.mark.parametrize("shards", list(SHARDS))
@pytest.mark.parametrize("info", list(PRIVATE_MODES))
def test_private_programs_lower_for_cuda_on_the_agents_path(info, shards):
    num_agents, block_size = SHARDS[shards]
    program_list = programs.simulate_programs(
        GAME,
        private_learner(info),
        num_agents,
        NUM_STAGES,
        devices=shards,
        block_size=block_size,
        platform="cuda",
    )
    spec = programs.chunk_program(program_list).spec
    assert spec.exploration_path == "agents" and spec.info_private
    assert spec.num_shards == shards
    chunk = programs.lower(programs.chunk_program(program_list), "cuda").as_text()
    assert not CALLBACK.search(chunk)
    assert not data_dependent_branches(chunk)
