"""Count-level best-reply dynamics (``jaxstage.best_reply_dynamics``, MODEL.md section 4)."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

import jaxstage as js

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
