"""Exact on every backend: the fast kernel's walk and pass 2 as a GPU runs them.

A GPU rounds float32 matrix products to TF32 and compiles float scatter-adds to atomic
adds in a changing order. The walk's integer running sums and pass 2's fixed-point sums
(``fast_cell_sums.fixed_point_cell_sums``) avoid both; a CPU keeps its faster float32 versions
(``events.on_cpu_or_elsewhere``). Most tests here run on a CPU: they call the GPU
versions directly, lower programs for CUDA without a GPU, or, with the CUDA plugin
installed, compile them for an H200 (``/work/shared/gpu/README.md``); the last ones need
a GPU and are skipped without one.
"""

import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstage as js
from jaxstage import decisions, exact_sum, fast, fast_cell_sums, plan
from jaxstage import events as ev

U = 2.0**-24
H200_TARGET = "/work/shared/gpu/h200_target.txtpb"


def elsewhere_everywhere(*args, cpu, elsewhere):
    """``events.on_cpu_or_elsewhere`` as a GPU program lowers it."""
    return elsewhere(*args)


# ------------------------------------------------------------------------------ pass 2


def cell_sums_of(cell_sums, cells: int, batches):
    """Add ``(cell, payoff, counted)`` batches one after the other; read them back."""
    acc = cell_sums.zeros(cells)
    for cell, payoff, counted in batches:
        acc = cell_sums.add(acc, jnp.asarray(cell), jnp.asarray(payoff), jnp.asarray(counted))
    return [np.asarray(x) for x in cell_sums.read(acc)]


def random_batches(rng, cells: int, events: int, batch: int):
    """Events of a block's pass 2: payoffs ``-1 - d + 0.1 z`` (a congestion game), about
    ``events / cells`` of them per cell, a few masked out (to the spare last cell)."""
    cell = rng.integers(0, cells - 1, events)
    counted = rng.random(events) < 0.95
    cell = np.where(counted, cell, cells - 1).astype(np.int32)
    payoff = (-1.0 - rng.random(events) + 0.1 * rng.normal(size=events)).astype(np.float32)
    return [
        (cell[i : i + batch], payoff[i : i + batch], counted[i : i + batch])
        for i in range(0, events, batch)
    ]


def shuffled(rng, batches):
    """The same events, in another order, in batches of the same sizes."""
    cell, payoff, counted = (np.concatenate(parts) for parts in zip(*batches, strict=True))
    order = rng.permutation(cell.size)
    sizes = np.cumsum([len(b[0]) for b in batches])[:-1]
    return list(zip(*(np.split(x[order], sizes) for x in (cell, payoff, counted)), strict=True))


def test_pass2_sums_do_not_depend_on_the_order_of_the_adds():
    """Pass 2's fixed-point cells give the same bits for any order of the events (the
    order a GPU's atomic adds happen to take); its float32 cells do not."""
    rng = np.random.default_rng(0)
    cells = 8 * 512 + 1
    batches = random_batches(rng, cells, 40_000, 8192)
    bound = fast_cell_sums.payoff_bound(
        jnp.full((64, 1, 8), -2.0, jnp.float32), jnp.int32(50), jnp.float32(0.1)
    )
    fixed = fast_cell_sums.fixed_point_cell_sums(exact_sum.scale(bound, exact_sum.layout(64)))
    first = cell_sums_of(fixed, cells, batches)
    float_first = cell_sums_of(fast_cell_sums.FLOAT_CELL_SUMS, cells, batches)
    np.testing.assert_array_equal(first[1], float_first[1])  # the counts agree
    np.testing.assert_allclose(first[0], float_first[0], rtol=1e-5, atol=1e-5)
    float_changed = False
    for _ in range(3):
        again = shuffled(rng, batches)
        for got, want in zip(cell_sums_of(fixed, cells, again), first, strict=True):
            np.testing.assert_array_equal(got, want)
        float_again = cell_sums_of(fast_cell_sums.FLOAT_CELL_SUMS, cells, again)
        float_changed |= bool(np.any(float_again[0] != float_first[0]))
    assert float_changed, "float32 sums should change with the order"


def test_order_of_float_adds_flips_a_near_tie_and_fixed_point_does_not():
    """An agent on action 0 explored actions 1 and 2 three times each. Action 1 paid
    (1, 0, 0); action 2 paid (1, 0.75u, 0.75u), u = 2**-24, which is more. Added 1 first,
    float32 loses both small terms (action 2 ties action 1 and the tie-break picks 1);
    added last, they count. Fixed point picks action 2 in either order."""
    small = np.float32(0.75 * U)
    action_1 = [(1, 1.0), (1, 0.0), (1, 0.0)]
    orders = {
        "large first": action_1 + [(2, 1.0), (2, small), (2, small)],
        "large last": action_1 + [(2, small), (2, small), (2, 1.0)],
    }
    grid = exact_sum.scale(jnp.float32(1.0), exact_sum.layout(64))

    def candidate(cell_sums, events):
        cell, payoff = (np.asarray(x) for x in zip(*events, strict=True))
        batch = [(cell.astype(np.int32), payoff.astype(np.float32), np.ones(cell.size, bool))]
        sums, counts = cell_sums_of(cell_sums, 4, batch)  # cells 0..2, then the spare
        estimates = decisions.mean_or_unavailable(jnp.asarray(sums), jnp.asarray(counts))
        estimates = estimates.at[0].set(-5.0)[:, None]  # the stage action, far behind
        zero = jnp.zeros(1, jnp.int32)
        return int(decisions.choose_candidates(jnp.zeros(1), estimates, zero)[0])

    by_float = {name: candidate(fast_cell_sums.FLOAT_CELL_SUMS, e) for name, e in orders.items()}
    assert by_float == {"large first": 1, "large last": 2}
    fixed = fast_cell_sums.fixed_point_cell_sums(grid)
    assert {name: candidate(fixed, e) for name, e in orders.items()} == {
        "large first": 2,
        "large last": 2,
    }


@pytest.fixture
def fresh_compilation():
    """Monkeypatched branches reach programs traced afresh only."""
    jax.clear_caches()
    yield
    jax.clear_caches()


@pytest.mark.parametrize(
    "learner",
    [
        js.StageLearning(stage_length=8, explore_prob=0.1, update_prob=1.0),
        js.StageLearning(stage_length=8, explore_prob=0.1, update_prob=0.1),  # adopters only
        js.StageLearning(
            stage_length=4, explore_prob=0.2, update_prob=0.5, info="payoffs", info_sample_size=50
        ),
    ],
    ids=["all-update", "adopters", "sampled-payoffs"],
)
def test_gpu_program_decides_like_the_cpu_program(monkeypatch, fresh_compilation, learner):
    """The whole fast kernel with every non-CPU version in place (integer walk, fixed-
    point pass 2), run on this CPU: the sums differ from float32 ones in their last bits
    only (at most a few float32 roundings), so the decisions are the same here."""
    game = js.make_game("congestion", num_actions=5)

    def run():
        return js.simulate(
            game, learner, 3000, 4, seed=3, kernel="fast", fast_path="events", return_actions=True
        )

    on_cpu = run()
    jax.clear_caches()
    monkeypatch.setattr(ev, "on_cpu_or_elsewhere", elsewhere_everywhere)
    as_on_gpu = run()
    np.testing.assert_array_equal(as_on_gpu.final_actions, on_cpu.final_actions)
    np.testing.assert_array_equal(as_on_gpu.switched_fraction, on_cpu.switched_fraction)


# ------------------------------------------------------------------- lowered for CUDA


def stage_program(learner, num_agents=2**15):
    """A jitted ``fast_stage`` of the congestion game (k = 8) and its arguments."""
    game = js.make_game("congestion", num_actions=8)
    spec = plan.kernel_spec(
        "fast",
        game,
        learner,
        num_agents=num_agents,
        num_stages=4,
        max_stage_length=learner.stage_length,
        block_size=None,
        fast_path="events",
    )
    params = plan.run_params(game.default_params(), learner, 4, 4, 0.05)
    actions = jnp.zeros(spec.padded_agents, jnp.int8)

    def stage(params, actions, seed, index, kept):
        return fast.fast_stage(game, spec, params, actions, seed, index, kept)

    args = (params, actions, jnp.uint32(1), jnp.int32(0), fast.kept_events_buffer(spec))
    return jax.jit(stage), args


def scatter_add_types(stablehlo: str) -> set[str]:
    """Element types of the scatter-adds of a StableHLO module's text."""
    types = set()
    for match in re.finditer(r'"stablehlo\.scatter"', stablehlo):
        region = stablehlo[match.end() : stablehlo.find("stablehlo.return", match.end())]
        block = re.search(r"\^bb0\(%\w+: tensor<(\w+)>", region)
        if block and "stablehlo.add" in region:
            types.add(block.group(1))
    return types


STAGES = {
    "all-update": js.StageLearning(stage_length=50, explore_prob=0.05, update_prob=1.0),
    "adopters": js.StageLearning(stage_length=50, explore_prob=0.05, update_prob=0.1),
    "sampled-payoffs": js.StageLearning(
        stage_length=50, explore_prob=0.05, info="payoffs", info_sample_size=100
    ),
}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_lowered_for_cuda_has_no_float_products_or_float_scatter_adds(name):
    """Lowered for CUDA, a whole stage has no ``dot_general`` (the walk's running sums
    are integer scans) and scatter-adds integers only (pass 2 in fixed point). Lowered
    for a CPU, the float32 versions are there: the checks see them."""
    program, args = stage_program(STAGES[name])
    traced = program.trace(*args)
    cuda = traced.lower(lowering_platforms=("cuda",)).as_text()
    assert "dot_general" not in cuda
    assert scatter_add_types(cuda) <= {"i32", "ui32"}
    cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    assert "dot_general" in cpu
    assert "f32" in scatter_add_types(cpu)


H200_SCRIPT = textwrap.dedent(
    """
    import re, sys
    import jax
    from jax.experimental import topologies
    from jax.sharding import NamedSharding, PartitionSpec
    sys.path.insert(0, {tests!r})
    import test_exactness_gpu as t

    topology = topologies.get_topology_desc(
        platform="cuda", target_config=open({target!r}).read(), topology="1x1x1"
    )
    mesh = topologies.make_mesh(topology, (1,), ("x",))
    shard = NamedSharding(mesh, PartitionSpec())
    program, args = t.stage_program(t.STAGES[{name!r}])
    shapes = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shard), args
    )
    hlo = program.trace(*shapes).lower().compile().as_text()
    print("DOTS", len(re.findall(r" dot\\(", hlo)))
    print("FLOAT_SCATTERS", len(re.findall(r"= f32\\[[^\\]]*\\]\\S* scatter\\(", hlo)))
    """
)


def cuda_plugin_installed() -> bool:
    try:
        return importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(
    not cuda_plugin_installed() or not os.path.exists(H200_TARGET),
    reason="needs jax-cuda12-plugin and jax-cuda12-pjrt (same version as jax) and the "
    "H200 target description",
)
@pytest.mark.parametrize("name", ["all-update", "adopters"])
def test_stage_compiled_for_an_h200_has_no_tf32_products_or_float_atomics(tmp_path, name):
    """XLA's optimised H200 program (compiled without a GPU): no dot, no float32
    scatter, and no ``mma`` (tensor-core, TF32) instruction in its PTX."""
    script = H200_SCRIPT.format(tests=os.path.dirname(__file__), target=H200_TARGET, name=name)
    environment = dict(
        os.environ,
        JAX_SKIP_CUDA_CONSTRAINTS_CHECK="1",
        XLA_FLAGS=f"--xla_dump_to={tmp_path}",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DOTS 0" in done.stdout and "FLOAT_SCATTERS 0" in done.stdout, done.stdout
    ptx = [path.read_text() for path in tmp_path.glob("*.ptx")]
    assert ptx, "no PTX dumped"
    assert not any("mma." in text or "tf32" in text for text in ptx)


# ------------------------------------------------------------------------- on a GPU


def gpu_devices():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


needs_gpu = pytest.mark.skipif(not gpu_devices(), reason="needs a GPU")


@needs_gpu
def test_walk_on_a_gpu_equals_the_walk_on_a_cpu():
    """The same cells, events and lists on both backends (each with its own versions)."""

    def walk(key, chunks, last, explore_prob, stage_length):
        cells = ev.draw(key, chunks, 1536, last, explore_prob, stage_length, 1536)
        events = ev.decode(chunks, cells, stage_length, 8)
        order, total = ev.compact(events.inside & (events.agent % 3 == 0), 64)
        return cells.cells, events.agent, events.round, events.action, order, total

    rng = np.random.default_rng(1)
    for explore_prob, stage_length in [(0.05, 50), (0.001, 4000), (0.3, 8)]:
        grid = ev.EVENT_CHUNK * stage_length
        args = (
            jnp.asarray([12345, 678], jnp.uint32),
            jnp.arange(64, dtype=jnp.int32),
            jnp.asarray(rng.integers(-1, grid, 64), jnp.int32),
            jnp.float32(explore_prob),
            jnp.int32(stage_length),
        )
        cpu = jax.jit(walk)(*jax.device_put(args, jax.devices("cpu")[0]))
        gpu = jax.jit(walk)(*jax.device_put(args, gpu_devices()[0]))
        for got, want in zip(gpu, cpu, strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@needs_gpu
@pytest.mark.parametrize("name", ["all-update", "adopters"])
def test_gpu_runs_are_bitwise_reproducible(name):
    """Two runs of the same seed on a GPU: the same bits (atomic adds of integers)."""
    game = js.make_game("congestion", num_actions=8)

    def run():
        return js.simulate(game, STAGES[name], 2**18, 6, seed=2, kernel="fast", return_actions=True)

    first, second = run(), run()
    np.testing.assert_array_equal(first.final_actions, second.final_actions)
    np.testing.assert_array_equal(first.switched_fraction, second.switched_fraction)
