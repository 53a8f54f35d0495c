"""The sparse exploration events of the fast kernel: the stream is the model's Bernoulli
exploration, and it does not depend on batch sizes or block layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstage as js
from jaxstage import counter_rng as crng
from jaxstage import events as ev
from jaxstage import plan


def explorations(num_chunks, explore_prob, stage_length, capacity, num_actions=5, seed=3):
    """Dense ``(agents, rounds)`` matrix: -1 where the agent does not explore, else the
    drawn action; every event is checked to land in an empty cell."""
    key = crng.stream_key(seed, 7, 0)
    chunks = jnp.arange(num_chunks, dtype=jnp.int32)
    agents = num_chunks * ev.EVENT_CHUNK

    def consume(events, grid):
        cell = jnp.where(
            events.inside, events.agent * stage_length + events.round, agents * stage_length
        ).ravel()
        return grid.at[cell].set(events.action.ravel(), mode="drop")

    grid = ev.for_each_batch(
        key=key,
        chunks=chunks,
        explore_prob=jnp.float32(explore_prob),
        stage_length=jnp.int32(stage_length),
        capacity=capacity,
        num_actions=num_actions,
        consume=lambda events, state: (
            consume(events, state[0]),
            state[1] + jnp.sum(events.inside, dtype=jnp.int32),
        ),
        state=(jnp.full(agents * stage_length, -1, jnp.int32), jnp.int32(0)),
    )
    matrix = np.asarray(grid[0]).reshape(agents, stage_length)
    assert int(grid[1]) == int(np.sum(matrix >= 0)), "two events landed in the same cell"
    return matrix


@pytest.mark.parametrize("explore_prob, stage_length", [(0.05, 50), (0.3, 8), (0.01, 400)])
def test_events_are_independent_bernoulli_cells(explore_prob, stage_length):
    matrix = explorations(
        16, explore_prob, stage_length, ev.event_capacity(explore_prob * stage_length)
    )
    explored = matrix >= 0
    cells = explored.size
    # Overall rate within 5 standard errors.
    rate = explored.mean()
    assert abs(rate - explore_prob) < 5 * np.sqrt(explore_prob * (1 - explore_prob) / cells)
    # Per-agent counts are Binomial(tau, p): variance ratio near 1 (no clumping).
    per_agent = explored.sum(axis=1)
    expected_var = stage_length * explore_prob * (1 - explore_prob)
    assert abs(per_agent.var() / expected_var - 1) < 0.1
    # Every round equally likely (chi-square over rounds, tau - 1 degrees of freedom).
    per_round = explored.sum(axis=0)
    mean = per_round.mean()
    chi2 = np.sum((per_round - mean) ** 2 / mean)
    assert chi2 < stage_length - 1 + 6 * np.sqrt(2 * (stage_length - 1))
    # No correlation between neighbouring rounds or neighbouring agents, including the
    # pairs that straddle an event-chunk boundary.
    x = explored.astype(float) - rate
    scale = rate * (1 - rate)
    tolerance = 5 / np.sqrt(cells)
    assert abs(np.mean(x[:, 1:] * x[:, :-1]) / scale) < tolerance
    assert abs(np.mean(x[1:] * x[:-1]) / scale) < tolerance
    boundary = np.arange(ev.EVENT_CHUNK - 1, x.shape[0] - 1, ev.EVENT_CHUNK)
    straddle = np.mean(x[boundary] * x[boundary + 1]) / scale
    assert abs(straddle) < 5 / np.sqrt(len(boundary) * stage_length)
    # The drawn actions are uniform.
    actions = np.bincount(matrix[explored], minlength=5)
    expected = explored.sum() / 5
    assert np.sum((actions - expected) ** 2 / expected) < 4 + 6 * np.sqrt(8)


def test_events_do_not_depend_on_the_batch_size():
    """A chunk that overflows its batch continues its walk in the next one: tiny batches
    (many overflows) give exactly the events of one large batch."""
    large = explorations(4, 0.2, 30, ev.event_capacity(6.0))
    for capacity in (32, 96):
        np.testing.assert_array_equal(explorations(4, 0.2, 30, capacity), large)


def test_no_exploration_and_full_exploration():
    assert np.all(explorations(2, 0.0, 20, 64) == -1)
    assert np.all(explorations(2, 1.0, 20, ev.event_capacity(20.0)) >= 0)


def test_event_capacity_covers_the_expected_events():
    for rate in (0.0, 0.01, 0.5, 2.5, 40.0):
        capacity = ev.event_capacity(rate)
        expected = ev.EVENT_CHUNK * rate
        assert capacity % 32 == 0
        target = expected + 5 * np.sqrt(expected) + 32
        assert target <= capacity <= max(1.3 * target, target + 32)
    with pytest.raises(ValueError, match="expected events per agent"):
        ev.event_capacity(-1.0)


def test_kernel_path_follows_the_exploration_probability():
    game = js.make_game("congestion", num_actions=3)

    def capacity(learner):
        spec = plan.kernel_spec(
            "fast",
            game,
            learner,
            num_agents=1000,
            num_stages=3,
            max_stage_length=8,
            block_size=None,
            fast_path="events",
        )
        return spec.event_capacity

    assert capacity(js.StageLearning(stage_length=8, explore_prob=0.1)) > 0
    with pytest.raises(ValueError, match="explore_prob <= 0.5"):
        capacity(js.StageLearning(stage_length=8, explore_prob=0.6))
    # Stages too long for exact float32 running sums need the loop over rounds.
    long_stage = (ev.MAX_GRID // ev.EVENT_CHUNK) + 1
    with pytest.raises(ValueError, match="stage_length <="):
        capacity(js.StageLearning(stage_length=long_stage, explore_prob=0.001))


def test_running_sums_are_exact_and_saturate():
    rng = np.random.default_rng(0)
    steps = rng.integers(1, 2000, size=(3, 256)).astype(np.int32)
    grid = jnp.int32(200_000)
    got = np.asarray(jax.jit(ev._running_sum)(jnp.asarray(steps), grid))
    np.testing.assert_array_equal(got, np.minimum(np.cumsum(steps, axis=1), 200_000))


@pytest.mark.parametrize("divisor", [1, 3, 7, 50, 1000, 16384])
def test_float_divmod_is_exact(divisor):
    cells = np.concatenate([np.arange(0, 2**16), np.arange(ev.MAX_GRID - 2**16, ev.MAX_GRID)])
    quotient, remainder = jax.jit(ev._divmod)(jnp.asarray(cells, jnp.int32), jnp.int32(divisor))
    np.testing.assert_array_equal(np.asarray(quotient), cells // divisor)
    np.testing.assert_array_equal(np.asarray(remainder), cells % divisor)


@pytest.mark.parametrize("info, sample", [("none", None), ("payoffs", 40)])
def test_replaying_kept_events_equals_drawing_them_again(monkeypatch, info, sample):
    """Pass 2 may replay pass 1's first batch of events or draw it again: same numbers."""
    game = js.make_game("adoption")
    learner = js.StageLearning(
        stage_length=6, explore_prob=0.2, update_prob=0.5, info=info, info_sample_size=sample
    )

    def run():
        return js.simulate(
            game, learner, 3000, 3, seed=5, kernel="fast", return_actions=True, fast_path="events"
        )

    def replays():
        spec = plan.kernel_spec(
            "fast",
            game,
            learner,
            num_agents=3000,
            num_stages=3,
            max_stage_length=6,
            block_size=None,
            fast_path="events",
        )
        return spec.replay_events

    assert replays()
    replayed = run()
    monkeypatch.setattr(plan, "REPLAY_BUDGET_BYTES", 0)
    assert not replays()
    drawn = run()
    np.testing.assert_array_equal(replayed.final_actions, drawn.final_actions)
    np.testing.assert_array_equal(replayed.switched_fraction, drawn.switched_fraction)


@pytest.mark.parametrize("density", [0.0, 0.03, 0.5, 1.0])
# One group of 1024 entries; several, with a last partial group of 32 (3,000 entries);
# the shape of a block's events at k = 8 (64 chunks of 1,536 slots).
@pytest.mark.parametrize("shape", [(5, 96), (3, 1000), (64, 1536)])
def test_compact_lists_the_kept_entries_in_order(density, shape):
    rng = np.random.default_rng(1)
    keep = rng.random(shape) < density
    window = 64
    order, total = jax.jit(ev.compact, static_argnums=1)(jnp.asarray(keep), window)
    expected = np.flatnonzero(keep.ravel())
    assert int(total) == expected.size
    assert order.shape[0] >= expected.size + window  # room for a last, partial window
    np.testing.assert_array_equal(np.asarray(order)[: expected.size], expected)


@pytest.mark.parametrize("window", [7, 32, 1000])
def test_for_each_window_visits_each_kept_entry_once_in_order(window):
    rng = np.random.default_rng(2)
    keep = rng.random((4, 64)) < 0.3
    values = rng.integers(0, 1000, size=(4, 64)).astype(np.int32)

    def body(picked, valid, state):
        seen, count = state
        position = count + jnp.cumsum(valid) - 1
        seen = seen.at[jnp.where(valid, position, seen.shape[0] - 1)].set(picked)
        return seen, count + jnp.sum(valid, dtype=jnp.int32)

    start = (jnp.full(keep.size + 1, -1, jnp.int32), jnp.int32(0))
    seen, count = ev.for_each_window(jnp.asarray(keep), jnp.asarray(values), window, body, start)
    expected = values.ravel()[keep.ravel()]
    assert int(count) == expected.size
    np.testing.assert_array_equal(np.asarray(seen)[: expected.size], expected)


# ------------------------------------------------------------------ exact on every backend


def tf32(x: jax.Array) -> jax.Array:
    """``x`` rounded to TF32 (10 explicit mantissa bits, ties to even): what a GPU's
    tensor cores read from float32 operands at XLA's default precision."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    bias = jnp.uint32(0xFFF) + ((bits >> 13) & 1)
    return jax.lax.bitcast_convert_type((bits + bias) & jnp.uint32(0xFFFFE000), jnp.float32)


def tf32_product(terms, triangle):
    """An emulated TF32 matrix product: rounded operands, float32 accumulation."""
    return jnp.matmul(tf32(terms), tf32(triangle), precision=jax.lax.Precision.HIGHEST)


def exact_running_sum(steps, grid):
    """The reference: int64 running sums, capped at ``grid`` (NumPy)."""
    sums = np.cumsum(np.asarray(steps, np.int64), axis=1)
    return jnp.asarray(np.minimum(sums, int(grid)), jnp.int32)


def elsewhere_everywhere(*args, cpu, elsewhere):
    """``events.on_cpu_or_elsewhere`` as a GPU program lowers it."""
    return elsewhere(*args)


def walk_cells(explore_prob, stage_length, first_slot, last_cells):
    """The cells of one batch of 64 chunks (a block of 32,768 agents), drawn eagerly."""
    capacity = ev.event_capacity(explore_prob * stage_length)
    key = crng.stream_key(11, 3, 0)
    chunks = jnp.arange(64, dtype=jnp.int32)
    walk = ev.draw(
        key,
        chunks,
        first_slot * capacity,
        jnp.asarray(last_cells, jnp.int32),
        jnp.float32(explore_prob),
        jnp.int32(stage_length),
        capacity,
    )
    return np.asarray(walk.cells)


# A first batch at the kernel's usual rates; skips above 2048 (explore_prob 0.001); a
# later batch, whose walks continue from cells far past 2048.
WALKS = [(0.05, 50, 0, -1), (0.001, 4000, 0, -1), (0.05, 200, 1, "far")]


@pytest.mark.parametrize("explore_prob, stage_length, first_slot, last", WALKS)
def test_walk_is_exact_under_an_emulated_tf32_product(
    monkeypatch, explore_prob, stage_length, first_slot, last
):
    """What a GPU computes (the integer running sums, not the float32 products) gives the
    exact integer walk even where float32 products would run as TF32; the products, as
    the walk used them everywhere before, do not."""
    grid = ev.EVENT_CHUNK * stage_length
    if last == "far":
        last = np.random.default_rng(5).integers(grid // 2, grid - 1, size=64)
    monkeypatch.setattr(ev, "_running_sum", exact_running_sum)
    exact = walk_cells(explore_prob, stage_length, first_slot, last)
    monkeypatch.undo()

    monkeypatch.setattr(ev, "_triangular_product", tf32_product)
    with monkeypatch.context() as gpu:
        gpu.setattr(ev, "on_cpu_or_elsewhere", elsewhere_everywhere)
        np.testing.assert_array_equal(
            walk_cells(explore_prob, stage_length, first_slot, last), exact
        )
    by_products = walk_cells(explore_prob, stage_length, first_slot, last)
    if (explore_prob, first_slot) != (0.05, 0):  # operands above 2048: TF32 rounds them
        assert np.any(by_products != exact), "the TF32 emulation should move some events"


@pytest.mark.parametrize("density", [0.0, 0.03, 0.5, 1.0])
def test_compact_is_exact_under_an_emulated_tf32_product(monkeypatch, density):
    """compact's products only see 0/1 flags and counts of at most 32, which TF32 (and
    bfloat16) hold exactly; its integer version lists the same entries."""
    keep = np.random.default_rng(3).random((64, 1536)) < density
    expected = np.flatnonzero(keep.ravel())
    monkeypatch.setattr(ev, "_triangular_product", tf32_product)
    for select in (ev.on_cpu_or_elsewhere, elsewhere_everywhere):
        monkeypatch.setattr(ev, "on_cpu_or_elsewhere", select)
        order, total = ev.compact(jnp.asarray(keep), 64)
        assert int(total) == expected.size
        np.testing.assert_array_equal(np.asarray(order)[: expected.size], expected)


def random_steps(rng, shape, grid):
    """Walk steps like ``draw``'s: geometric skips plus one, saturated steps of
    ``grid + 1`` past the end, and a first step that continues an earlier walk."""
    explore_prob = rng.choice([0.5, 0.05, 0.001, 1e-6])
    steps = np.minimum(rng.geometric(explore_prob, size=shape), grid + 1)
    steps[:, 0] += rng.integers(-1, grid, size=shape[0])
    return jnp.asarray(steps, jnp.int32)


@pytest.mark.parametrize("shape", [(64, 1536), (64, 96), (4, 32768), (1, 32)])
def test_integer_running_sums_equal_the_cpu_products_bitwise(shape):
    rng = np.random.default_rng(shape[1])
    for grid in (ev.EVENT_CHUNK, 25_600, ev.MAX_GRID):
        steps = random_steps(rng, shape, grid)
        grid = jnp.int32(grid)
        capped = jnp.minimum(steps, grid + 1)
        by_products = jax.jit(ev._running_sum_by_products)(capped, grid)
        by_scan = jax.jit(ev._running_sum_by_saturating_scan)(capped, grid)
        np.testing.assert_array_equal(np.asarray(by_scan), np.asarray(by_products))
        np.testing.assert_array_equal(np.asarray(by_scan), exact_running_sum(steps, grid))


@pytest.mark.parametrize("size", [96, 3000, 64 * 1536, 2**19])
def test_integer_flat_counts_equal_the_cpu_products_bitwise(size):
    rng = np.random.default_rng(size)
    for density in (0.0, 0.01, 0.3, 1.0):
        flags = jnp.asarray(rng.random(size) < density)
        by_products = jax.jit(ev._flat_counts_by_products)(flags)
        by_cumsum = jax.jit(ev._flat_counts_by_cumsum)(flags)
        for got, want in zip(by_cumsum, by_products, strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("divisor", [1, 3, 7, 50, 1000, 16384])
def test_integer_divmod_equals_the_cpu_reciprocal_bitwise(divisor):
    cells = jnp.asarray(np.random.default_rng(divisor).integers(0, ev.MAX_GRID, 2**16), jnp.int32)
    by_reciprocal = jax.jit(ev._divmod_by_reciprocal)(cells, jnp.int32(divisor))
    by_integers = jax.jit(ev._divmod_by_integers)(cells, jnp.int32(divisor))
    for got, want in zip(by_integers, by_reciprocal, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("explore_prob, stage_length, first_slot, last", WALKS)
def test_the_events_of_a_gpu_program_equal_those_of_a_cpu_program(
    monkeypatch, explore_prob, stage_length, first_slot, last
):
    """Walk, decoding and compaction with every non-CPU version in place of the CPU one
    (on this CPU): the same cells, events and lists, bit for bit."""
    grid = ev.EVENT_CHUNK * stage_length
    if last == "far":
        last = np.random.default_rng(6).integers(grid // 2, grid - 1, size=64)
    chunks = jnp.arange(64, dtype=jnp.int32)

    def events_and_list():
        walk = ev.Walk(jnp.asarray(walk_cells(explore_prob, stage_length, first_slot, last)), None)
        walk = walk._replace(bits=jnp.zeros(walk.cells.shape, jnp.uint32))
        events = ev.decode(chunks, walk, jnp.int32(stage_length), 8)
        order, total = ev.compact(events.inside & (events.agent % 3 == 0), 64)
        return [np.asarray(x) for x in (walk.cells, events.agent, events.round, order, total)]

    on_cpu = events_and_list()
    monkeypatch.setattr(ev, "on_cpu_or_elsewhere", elsewhere_everywhere)
    for got, want in zip(events_and_list(), on_cpu, strict=True):
        np.testing.assert_array_equal(got, want)


def test_event_noise_is_finite_for_every_word():
    """All 2**24 words: finite, within MAX_ABS_NOISE, and unchanged but for the top one
    (whose open uniform rounds to 1.0 in float32)."""
    words = jnp.arange(2**24, dtype=jnp.uint32) << 8
    z = np.asarray(jax.jit(ev._normal_from_word)(words))
    assert np.all(np.isfinite(z))
    assert np.max(np.abs(z)) <= ev.MAX_ABS_NOISE
    assert 5.4 < np.max(np.abs(z)) < 5.5  # ndtri(2**-25)
    unclamped = jax.jit(
        lambda words: jax.scipy.special.ndtri(((words >> 8).astype(jnp.float32) + 0.5) / 2**24)
    )(words)
    differs = np.flatnonzero(z != np.asarray(unclamped))
    np.testing.assert_array_equal(differs, [2**24 - 1])


def test_walk_lowered_for_a_gpu_has_no_matrix_products():
    """Lowered for CUDA (no GPU needed), the walk, decoding and compaction contain no
    ``dot_general``: nothing there for TF32 to round. Lowered for a CPU, they do."""

    def walk(key, chunks, explore_prob, stage_length):
        cells = ev.draw(
            key, chunks, 0, jnp.full(64, -1, jnp.int32), explore_prob, stage_length, 1536
        )
        events = ev.decode(chunks, cells, stage_length, 8)
        return ev.compact(events.inside, 64), events.agent

    args = (
        crng.stream_key(1, 2, 0),
        jnp.arange(64, dtype=jnp.int32),
        jnp.float32(0.05),
        jnp.int32(50),
    )
    traced = jax.jit(walk).trace(*args)
    assert "dot_general" not in traced.lower(lowering_platforms=("cuda",)).as_text()
    assert "dot_general" in traced.lower(lowering_platforms=("cpu",)).as_text()
