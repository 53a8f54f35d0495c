"""Count-level best-reply dynamics (``jaxstage.best_reply_dynamics``, MODEL.md section 4)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

import jaxstage as js
from jaxstage.best_reply import MAX_AGENTS, _pick_group, _uniform_below

# Module-level games and one max_steps: the compiled loop is keyed by the game object and
# the static step/record limits, so sharing them keeps the number of compilations small.
MAX_STEPS = 20_000
CONGESTION = js.make_game("congestion", num_actions=4)  # u_j = -j' d_j, j' = 1..4
MINORITY = js.make_game("minority", capacity=0.5)
BEAUTY = js.make_game("beauty_contest", num_actions=5, q=0.5)
ADOPTION = js.make_game("adoption")  # thresholds (0.1, 0.4, 0.8), shares (0.3, 0.4, 0.3)


def l1_to_nearest(distribution, equilibria):
    return min(float(np.abs(np.asarray(distribution) - eq).sum()) for eq in equilibria)


def payoff_fn_of(game):
    """The game's own expected payoffs as a NumPy function for the reference (cached)."""
    params = game.default_params()

    @functools.cache
    def cached(d):
        return np.asarray(game.expected_payoffs(params, jnp.asarray(d, jnp.float32)), float)

    return lambda d: cached(tuple(float(x) for x in d))


def exact_gap(game, counts):
    """The eps-Nash gap of ``counts`` computed by the NumPy reference."""
    return ref.nash_gap(payoff_fn_of(game), np.atleast_2d(counts))


def test_sequential_converges_on_congestion():
    n = 1000
    result = js.best_reply_dynamics(CONGESTION, n, max_steps=MAX_STEPS, seed=1)
    assert result.converged and not result.cycled
    assert result.counts.sum() == n and result.counts.shape == (1, 4)
    assert result.nash_gap <= 0.0
    assert exact_gap(CONGESTION, result.counts) <= 1e-6  # exact eps=0 equilibrium
    # Wardrop split d_j proportional to 1/j: (0.48, 0.24, 0.16, 0.12); finite n moves it by
    # O(k/n).
    np.testing.assert_allclose(CONGESTION.equilibria()[0], [0.48, 0.24, 0.16, 0.12], atol=1e-9)
    assert l1_to_nearest(result.distribution, CONGESTION.equilibria()) <= 0.01
    # From 250 per link to about (480, 240, 160, 120): 230 agents must arrive on link 0
    # (10 + 90 + 130 leave links 1..3) and a sequential step moves one agent.
    assert 230 <= result.steps <= MAX_STEPS
    assert result.trajectory.shape == (result.steps + 1, 4)
    np.testing.assert_allclose(result.trajectory[0], 0.25)
    np.testing.assert_allclose(result.trajectory[-1], result.distribution, atol=1e-6)
    # Each sequential step moves exactly one agent: L1 change 2/n per step.
    step_sizes = np.abs(np.diff(result.trajectory, axis=0)).sum(axis=1)
    np.testing.assert_allclose(step_sizes, 2 / n, atol=1e-5)


def test_start_at_equilibrium_takes_no_step():
    n = 1000
    first = js.best_reply_dynamics(CONGESTION, n, max_steps=MAX_STEPS, seed=2)
    again = js.best_reply_dynamics(CONGESTION, n, initial=first.counts, max_steps=MAX_STEPS)
    assert again.converged and again.steps == 0
    np.testing.assert_array_equal(again.counts, first.counts)
    assert again.trajectory.shape == (1, 4)
    # Minority, capacity 1/2, 50/50 at n = 100: a stayer who goes makes 51/100 > 1/2 (-1 < 0),
    # a goer who stays gets 0 < +1. An equilibrium: no step, and no cycle reported.
    result = js.best_reply_dynamics(MINORITY, 100, mode="simultaneous", max_steps=MAX_STEPS)
    assert result.steps == 0 and result.converged and not result.cycled
    np.testing.assert_array_equal(result.counts, [[50, 50]])


def test_simultaneous_without_inertia_cycles_on_minority():
    # Everyone stays: going alone gives d_go = 1/100 <= 1/2, +1 > 0, so all 100 go; then
    # d_go = 1 > 1/2, going pays -1 < 0 and all stay: back to the start after 2 steps.
    result = js.best_reply_dynamics(
        MINORITY, 100, mode="simultaneous", initial=0, max_steps=MAX_STEPS
    )
    assert result.cycled and not result.converged
    assert result.steps == 2
    np.testing.assert_allclose(result.trajectory, [[1, 0], [0, 1], [1, 0]])
    assert result.nash_gap == pytest.approx(1.0)


def test_simultaneous_without_inertia_cycles_on_congestion():
    # From 25 per link (u = -0.25, -0.5, -0.75, -1), link 0 after a move costs 0.26: every
    # agent off link 0 moves there; then link 0 costs 1 and everyone leaves for link 1
    # (2 * 1/100 = 0.02 is the cheapest), then back to link 0 (0.01 < 2): a 2-cycle.
    result = js.best_reply_dynamics(
        CONGESTION, 100, mode="simultaneous", inertia=1.0, max_steps=MAX_STEPS
    )
    assert result.cycled and not result.converged
    assert result.steps <= 4
    np.testing.assert_allclose(result.trajectory[1], [1, 0, 0, 0])
    np.testing.assert_allclose(result.trajectory[2], [0, 1, 0, 0])
    assert result.nash_gap > 0.5


@pytest.mark.parametrize(
    ("game", "n"), [(BEAUTY, 400), (ADOPTION, 1000)], ids=["beauty_contest", "adoption"]
)
def test_simultaneous_with_inertia_converges(game, n):
    for seed in range(3):
        result = js.best_reply_dynamics(
            game, n, mode="simultaneous", inertia=0.3, max_steps=MAX_STEPS, seed=seed
        )
        assert result.converged and not result.cycled, (seed, result.steps)
        assert result.steps >= 1
        assert exact_gap(game, result.counts) <= 1e-6
        assert l1_to_nearest(result.distribution, game.equilibria()) <= 0.01, result.distribution


def test_typed_counts_keep_type_sizes():
    result = js.best_reply_dynamics(
        ADOPTION, 1000, mode="simultaneous", inertia=0.3, max_steps=MAX_STEPS, seed=5
    )
    np.testing.assert_array_equal(result.counts.sum(axis=1), [300, 400, 300])
    # Equilibrium by type: a type adopts iff its threshold is below the adopting share.
    d_adopt = result.distribution[1]
    thresholds = np.array([0.1, 0.4, 0.8])
    adopting = result.counts[:, 1] > 0
    assert np.all(thresholds[adopting] <= d_adopt + 1e-9)
    assert np.all(thresholds[~adopting] >= d_adopt - 1e-9)


def test_sequential_steps_agree_with_reference():
    """n = 20 congestion, eps = 0, from counts (2, 12, 4, 2): JAX vs NumPy reference.

    Compared: the mean number of steps, the mean final distribution and the mean state
    after the first step. Costs b_j c_j / 20 are (0.1, 1.2, 0.6, 0.4); moving to link 0
    costs 3/20 = 0.15, the unique best reply of every agent off link 0 (link 1 would cost
    at least 2 * 13/20, link 2 3 * 5/20, link 3 4 * 3/20), so all 18 agents off link 0
    are unhappy and the first mover comes from link g with probability c_g / 18.
    """
    n, runs, ref_runs = 20, 200, 600
    start = np.array([[2, 12, 4, 2]])
    first_step = np.array([3, 12 - 12 / 18, 4 - 4 / 18, 2 - 2 / 18]) / n  # by hand
    jax_steps, jax_final, jax_first = [], [], []
    for seed in range(runs):
        result = js.best_reply_dynamics(
            CONGESTION, n, initial=start, max_steps=MAX_STEPS, seed=seed
        )
        assert result.converged
        jax_steps.append(result.steps)
        jax_final.append(result.distribution)
        jax_first.append(result.trajectory[1])
    payoff = payoff_fn_of(CONGESTION)
    rng = np.random.default_rng(0)
    ref_steps, ref_final, ref_first = [], [], []
    for _ in range(ref_runs):
        out = ref.best_reply_dynamics(rng, payoff, start, 0.0, max_steps=MAX_STEPS)
        assert out["converged"]
        ref_steps.append(out["steps"])
        ref_final.append(out["counts"][0] / n)
        out = ref.best_reply_dynamics(rng, payoff, start, 0.0, max_steps=1)
        ref_first.append(out["counts"][0] / n)
    # The number of steps is random (which unhappy agent moves, ties), not a constant.
    assert np.std(ref_steps) > 0
    comparisons = [("steps", jax_steps, ref_steps, None)]
    for j in range(4):
        comparisons.append(
            (f"final d[{j}]", np.array(jax_final)[:, j], np.array(ref_final)[:, j], None)
        )
        comparisons.append(
            (f"first d[{j}]", np.array(jax_first)[:, j], np.array(ref_first)[:, j], first_step[j])
        )
    for name, a, b, by_hand in comparisons:
        a, b = np.asarray(a, float), np.asarray(b, float)
        se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        # trajectory rows are float32: 1e-6 absolute slack
        assert abs(a.mean() - b.mean()) <= 4.5 * se + 1e-6, (name, a.mean(), b.mean(), se)
        if by_hand is not None:
            se = a.std(ddof=1) / np.sqrt(a.size)
            assert abs(a.mean() - by_hand) <= 4.5 * se + 1e-6, (name, a.mean(), by_hand, se)


def test_solve_equilibrium_congestion():
    eq = js.solve_equilibrium(CONGESTION, 10_000, max_steps=MAX_STEPS)
    assert eq is not None and eq.shape == (4,)
    assert eq.sum() == pytest.approx(1.0)
    assert l1_to_nearest(eq, CONGESTION.equilibria()) <= 0.002
    # n = 10**6 needs about 230_000 moves from the uniform start: more than MAX_STEPS, so
    # it is reported as None, not as a wrong answer.
    assert js.solve_equilibrium(CONGESTION, 1_000_000, max_steps=MAX_STEPS) is None


def test_solve_equilibrium_default_step_budget():
    eq = js.solve_equilibrium(CONGESTION, 2_000)
    assert eq is not None
    assert l1_to_nearest(eq, CONGESTION.equilibria()) <= 0.01


# --------------------------------------------------------------------------- large populations

TWO_LINKS = js.make_game("congestion", num_actions=2)  # costs d_0 and 2 d_1


def two_link_gap(counts):
    """The eps-Nash gap of two-link congestion counts in float64 (the exact payoffs)."""
    return ref.nash_gap(lambda d: -np.array([1.0, 2.0]) * np.asarray(d)[None, :], counts)


def assert_counts_valid(result, n):
    """Counts non-negative and summing to ``n`` at the end and after every recorded step."""
    assert result.counts.min() >= 0 and result.counts.sum() == n
    assert result.trajectory_counts.min() >= 0
    np.testing.assert_array_equal(result.trajectory_counts.sum(axis=1), n)
    np.testing.assert_array_equal(result.trajectory_counts[-1], result.counts.sum(axis=0))
    # The float32 rows are the exact counts over n, rounded as the loop always recorded them.
    np.testing.assert_array_equal(
        result.trajectory,
        result.trajectory_counts.astype(np.float32) * (np.float32(1) / np.float32(n)),
    )


def test_simultaneous_above_2_24_agents_moves_every_unhappy_agent():
    """The reported bug: 2**24 + 3 agents on link 0 gave counts (-1, 2**24 + 4) (float32
    counts). With inertia 1 all of them are unhappy (link 1 alone costs 2 / n) and all
    move, then all move back: a 2-cycle, counts exact throughout."""
    n = 2**24 + 3
    one = js.best_reply_dynamics(TWO_LINKS, n, mode="simultaneous", initial=0, max_steps=1)
    np.testing.assert_array_equal(one.counts, [[0, n]])
    assert_counts_valid(one, n)
    np.testing.assert_array_equal(one.trajectory_counts, [[n, 0], [0, n]])
    assert one.steps == 1 and not one.converged
    assert one.nash_gap == pytest.approx(2.0)  # on link 1 (cost 2), link 0 costs 1 / n
    cycle = js.best_reply_dynamics(TWO_LINKS, n, mode="simultaneous", initial=0, max_steps=9)
    assert cycle.cycled and not cycle.converged and cycle.steps == 2
    np.testing.assert_array_equal(cycle.trajectory_counts, [[n, 0], [0, n], [n, 0]])
    assert_counts_valid(cycle, n)


def test_simultaneous_at_the_largest_population_stays_exact():
    """2**31 - 1 agents, uniform start (2**30, 2**30 - 1): the link-1 agents all move to
    link 0, then everyone swings between the links. Before the fix the first step gave
    (-2**31, -1) and a gap of -inf reported as converged."""
    n = MAX_AGENTS
    assert n == 2**31 - 1
    result = js.best_reply_dynamics(TWO_LINKS, n, mode="simultaneous", max_steps=10)
    assert_counts_valid(result, n)
    np.testing.assert_array_equal(
        result.trajectory_counts, [[2**30, 2**30 - 1], [n, 0], [0, n], [n, 0]]
    )
    assert result.cycled and not result.converged
    assert np.isfinite(result.nash_gap) and result.nash_gap == pytest.approx(1.0)
    assert two_link_gap(result.counts) == pytest.approx(1.0)


def test_simultaneous_with_inertia_at_the_largest_population_converges_truly():
    """Inertia 1/2 from the uniform start with eps = 1e-3: the reported convergence holds
    for the exact (float64) payoffs of the final counts, and every step keeps counts valid."""
    n, eps = MAX_AGENTS, 1e-3
    for seed in range(2):
        result = js.best_reply_dynamics(
            TWO_LINKS, n, mode="simultaneous", inertia=0.5, eps=eps, max_steps=200, seed=seed
        )
        assert_counts_valid(result, n)
        exact = two_link_gap(result.counts)
        assert np.isfinite(result.nash_gap) and result.nash_gap == pytest.approx(exact, abs=1e-5)
        assert result.converged and exact <= eps, (seed, result.steps, exact)
        # From 1/2 the unhappy link-1 agents move by halves to d_0 = 2/3 within 1e-3.
        assert 2 <= result.steps <= 200
        assert abs(result.distribution[0] - 2 / 3) <= eps


def test_sequential_at_the_largest_population_moves_one_agent_per_step():
    n = MAX_AGENTS
    result = js.best_reply_dynamics(TWO_LINKS, n, initial=0, max_steps=5)
    assert_counts_valid(result, n)
    np.testing.assert_array_equal(result.trajectory_counts[:, 1], np.arange(6))
    assert not result.converged and np.isfinite(result.nash_gap)


def test_small_simultaneous_runs_are_bitwise_unchanged_by_the_fix():
    """Totals up to 2**16 agents draw as before the exact binomial (one draw per group):
    steps, counts, gap and trajectory bits recorded with the code before the fix."""
    cases = [
        (BEAUTY, 400, 0.3, 1, MAX_STEPS, 30, [[400, 0, 0, 0, 0]], 0.0, 103337542250),
        (ADOPTION, 1000, 0.3, 5, MAX_STEPS, 16, [[0, 300], [0, 400], [300, 0]], 0.0, 35889602385),
        (
            CONGESTION,
            2**16,
            0.5,
            0,
            50,
            50,
            [[4439, 34844, 17624, 8629]],
            0.99560546875,
            213116251136,
        ),
    ]
    for game, n, inertia, seed, max_steps, steps, counts, gap, bits in cases:
        result = js.best_reply_dynamics(
            game, n, mode="simultaneous", inertia=inertia, seed=seed, max_steps=max_steps
        )
        assert result.steps == steps and result.nash_gap == gap, game.name
        np.testing.assert_array_equal(result.counts, counts)
        assert int(result.trajectory.view(np.uint32).sum(dtype=np.uint64)) == bits, game.name


def test_pick_group_draws_in_proportion_to_integer_weights():
    """Exact integer weights: zero weights never drawn, others in proportion (Z = 5)."""
    weights = jnp.array([0, 3, 0, 5, 2], jnp.int32)
    size = 100_000
    keys = jax.random.split(jax.random.key(0), size)
    picks = np.asarray(jax.jit(jax.vmap(lambda key: _pick_group(key, weights)))(keys))
    share = np.bincount(picks, minlength=5) / size
    expected = np.array([0, 3, 0, 5, 2]) / 10
    assert share[0] == 0 and share[2] == 0
    np.testing.assert_allclose(share, expected, atol=5 * np.sqrt(0.25 / size))
    # Weights near 2**31: no float rounding, the sum is exact in int32.
    big = jnp.array([2**30, 0, 2**30 - 1], jnp.int32)
    picks = np.asarray(jax.jit(jax.vmap(lambda key: _pick_group(key, big)))(keys))
    assert set(np.unique(picks)) == {0, 2}
    assert abs(np.mean(picks == 0) - 2**30 / (2**31 - 1)) <= 5 * np.sqrt(0.25 / size)
    assert int(_pick_group(jax.random.key(1), jnp.array([0, 0, 0, 7], jnp.int32))) == 3


def test_uniform_below_is_exactly_uniform():
    """At 3 * 2**29 ``jax.random.randint`` gives [0, 2**30) probability 3/4 instead of
    2/3 (one 32-bit word modulo the span); the rejection sampler gives 2/3 (Z = 5)."""
    size = 100_000
    keys = jax.random.split(jax.random.key(2), size)

    def sample(bound):
        draw = jax.jit(jax.vmap(lambda key: _uniform_below(key, jnp.int32(bound))))
        return np.asarray(draw(keys), np.int64)

    values = sample(3 * 2**29)
    assert values.min() >= 0 and values.max() < 3 * 2**29
    assert abs(np.mean(values < 2**30) - 2 / 3) <= 5 * np.sqrt(2 / 9 / size)
    values = sample(2**31 - 1)
    assert values.min() >= 0 and values.max() < 2**31 - 1
    assert abs(values.mean() / (2**31 - 2) - 0.5) <= 5 * np.sqrt(1 / 12 / size)
    values = sample(3)
    np.testing.assert_allclose(np.bincount(values) / size, 1 / 3, atol=5 * np.sqrt(2 / 9 / size))
    assert not sample(1).any()


def test_record_interval_beyond_int32_records_the_start_only():
    """An interval above 2**31 - 1 used to overflow the loop's int32 step arithmetic."""
    result = js.best_reply_dynamics(CONGESTION, 100, record_every=2**40, max_steps=MAX_STEPS)
    assert result.converged and result.trajectory.shape == (1, 4)
    np.testing.assert_array_equal(result.trajectory_counts, [[25, 25, 25, 25]])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "zigzag"}, ValueError, "unknown mode 'zigzag'"),
        ({"inertia": 0.0}, ValueError, r"inertia must be in \(0, 1\]"),
        ({"inertia": 1.5}, ValueError, r"inertia .*got 1\.5"),
        ({"inertia": -0.2}, ValueError, r"inertia .*got -0\.2"),
        ({"eps": -0.1}, ValueError, r"eps .*got -0\.1"),
        ({"eps": float("nan")}, ValueError, r"eps .*got nan"),
        ({"initial": [3, 3, 3, 2]}, ValueError, r"initial counts .*got \[3, 3, 3, 2\]"),
        ({"initial": [-1, 4, 4, 3]}, ValueError, r"initial counts .*got \[-1, 4, 4, 3\]"),
        ({"initial": [0.5, 0.5]}, ValueError, r"initial distribution .*got \[0\.5, 0\.5\]"),
        ({"initial": [0.5, 0.6, 0.0, 0.0]}, ValueError, r"initial distribution .*0\.6"),
        ({"initial": 7}, ValueError, r"initial action must be in \[0, 3\], got 7"),
        ({"initial": "random"}, ValueError, "'random'"),
        ({"max_steps": -1}, ValueError, r"max_steps .*got -1"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer, got 1\.5"),
        ({"record_every": 0}, ValueError, r"record_every .*got 0"),
    ],
)
def test_best_reply_dynamics_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        js.best_reply_dynamics(CONGESTION, 12, **kwargs)


def test_best_reply_dynamics_validation_population_and_game():
    with pytest.raises(ValueError, match=r"num_agents .*got 0"):
        js.best_reply_dynamics(CONGESTION, 0)
    with pytest.raises(ValueError, match=r"num_agents .*got 2147483648"):
        js.best_reply_dynamics(CONGESTION, 2**31)
    with pytest.raises(TypeError, match=r"num_agents must be an integer, got 2\.5"):
        js.best_reply_dynamics(CONGESTION, 2.5)
    with pytest.raises(TypeError, match="game must be an AnonymousGame, got str"):
        js.best_reply_dynamics("congestion", 10)
    # Typed game: counts must match the type sizes (3, 4, 3 at n = 10).
    with pytest.raises(ValueError, match=r"sum per type to \[3, 4, 3\]"):
        js.best_reply_dynamics(ADOPTION, 10, initial=np.array([[3, 0], [0, 3], [2, 2]]))


def test_initial_counts_of_the_wrong_shape_name_the_expected_shape():
    with pytest.raises(ValueError, match="initial counts must be .* of shape \\(1, 2\\)"):
        js.initial_counts(js.make_game("minority"), 10, np.array([5, 5, 0]))
    adoption = js.make_game("adoption")  # 3 types: a flat vector is ambiguous, refused
    with pytest.raises(ValueError, match="of shape \\(3, 2\\)"):
        js.initial_counts(adoption, 10, np.array([3, 0, 4, 0, 3, 0]))
    np.testing.assert_array_equal(
        js.initial_counts(adoption, 10, np.array([[3, 0], [4, 0], [3, 0]])),
        [[3, 0], [4, 0], [3, 0]],
    )
