"""The sparse exploration events of the fast kernel: the stream is the model's Bernoulli
exploration, and it does not depend on batch sizes or block layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstage as js
from jaxstage import counter_rng as crng
from jaxstage import events as ev
from jaxstage import simulation


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
        key,
        chunks,
        jnp.float32(explore_prob),
        jnp.int32(stage_length),
        capacity,
        num_actions,
        lambda events, state: (
            consume(events, state[0]),
            state[1] + jnp.sum(events.inside, dtype=jnp.int32),
        ),
        (jnp.full(agents * stage_length, -1, jnp.int32), jnp.int32(0)),
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
        spec = simulation._kernel_spec("fast", game, learner, 1000, 3, 8, None, fast_path="events")
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
        spec = simulation._kernel_spec("fast", game, learner, 3000, 3, 6, None, fast_path="events")
        return spec.replay_events

    assert replays()
    replayed = run()
    monkeypatch.setattr(simulation, "REPLAY_BUDGET_BYTES", 0)
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
