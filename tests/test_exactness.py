"""Never silently wrong: action counts past int8, agent-round totals past int32,
non-finite payoffs, game-parameter overrides, unbounded samples and eager argument checks.

Each test here failed on the release before these fixes (noted per test)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstage as js
from jaxstage import fast
from jaxstage.finiteness import NonFinitePayoffError
from jaxstage.games import MAX_ACTIONS
from jaxstage.learner import MAX_INFO_SAMPLE_SIZE
from jaxstage.wide import Wide, wide_add, wide_from_counts, wide_sum, wide_to_float

KERNELS = ("fast", "reference")


def _value(wide: Wide) -> np.ndarray:
    return (np.asarray(wide.hi, np.uint64) << np.uint64(32)) + np.asarray(wide.lo, np.uint64)


# ----------------------------------------------------------------------------- actions


@pytest.mark.parametrize("kernel", KERNELS)
def test_everyone_on_action_199_of_200_stays_there(kernel):
    # Was 0.0 with the fast kernel: int8 stage actions wrapped 199 to -57.
    game = js.make_game("congestion", num_actions=200)
    learner = js.StageLearning(stage_length=2, explore_prob=0.0, update_prob=0.0)
    result = js.simulate(game, learner, 1000, 1, initial=199, kernel=kernel)
    np.testing.assert_array_equal(result.distribution[:, 199], [1.0, 1.0])


def test_high_actions_keep_their_share_from_a_uniform_start():
    # Was 0.0000 on actions 128 and above with the fast kernel (reference 0.36).
    game = js.make_game("congestion", num_actions=200)
    learner = js.StageLearning(stage_length=2, explore_prob=0.1)
    shares = [
        js.simulate(game, learner, 20_000, 2, kernel=kernel).distribution[:, 128:].sum(axis=1)
        for kernel in KERNELS
    ]
    for share in shares:
        assert abs(share[0] - 72 / 200) < 0.02  # binomial sd ~0.0034
    assert abs(shares[0][-1] - shares[1][-1]) < 0.03


@pytest.mark.parametrize("info", ["none", "distribution"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_a_thousand_and_twenty_four_actions_run_on_both_kernels(kernel, info):
    game = js.make_game("congestion", num_actions=MAX_ACTIONS)
    learner = js.StageLearning(stage_length=4, explore_prob=0.2, info=info)
    result = js.simulate(game, learner, 5000, 2, kernel=kernel, initial=MAX_ACTIONS - 1)
    assert result.distribution[0, -1] == 1.0
    assert np.all(result.distribution >= 0)
    np.testing.assert_allclose(result.distribution.sum(axis=1), 1.0, rtol=1e-12)
    # Explorers find the empty, cheap links: most leave the most expensive one.
    assert result.distribution[-1, -1] < 0.5
    assert np.all(np.isfinite(result.nash_gap))


def test_actions_past_the_limit_are_refused_with_the_limit_named():
    with pytest.raises(ValueError, match=f"num_actions must be in \\[2, {MAX_ACTIONS}\\], got"):
        js.make_game("congestion", num_actions=MAX_ACTIONS + 1)

    class Wide(js.games.AnonymousGame):
        num_actions = MAX_ACTIONS + 1

        def expected_payoffs(self, params, distribution):
            return -distribution[None, :]

    with pytest.raises(
        ValueError, match=f"num_actions of game 'game' must be in \\[2, {MAX_ACTIONS}"
    ):
        js.simulate(Wide(), js.StageLearning(), 100, 1)


def test_the_action_dtype_holds_every_action():
    assert fast.action_dtype(128) == jnp.int8
    assert fast.action_dtype(129) == jnp.int16
    assert jnp.iinfo(fast.action_dtype(MAX_ACTIONS)).max >= MAX_ACTIONS - 1


# ----------------------------------------------------------------------------- counts


def test_wide_sums_are_exact_past_int32():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 2**31 - 1, size=(300, 5), dtype=np.int64)
    counts[:, 0] = 2**31 - 1  # every term at the int32 limit
    total = jax.jit(lambda c: wide_sum(c, 0))(jnp.asarray(counts, jnp.int32))
    np.testing.assert_array_equal(_value(total), counts.sum(axis=0).astype(np.uint64))
    # Wide values summed again, and their float32 value.
    grand = wide_sum(total, 0)
    assert int(_value(grand)) == int(counts.sum())
    np.testing.assert_allclose(float(wide_to_float(grand)), counts.sum(), rtol=2**-22)


def test_wide_addition_carries():
    a = wide_from_counts(jnp.asarray([2**31 - 1, 5], jnp.int32))
    total = a
    for _ in range(3):
        total = wide_add(total, a)
    np.testing.assert_array_equal(_value(total), [4 * (2**31 - 1), 20])


def test_agent_round_totals_past_int32_stay_exact():
    # 2^22 agents x 600 rounds = 2.5e9 agent-rounds per stage, past 2^31: the int32 totals
    # wrapped, the published payoff averages became unavailable (nobody switched) and the
    # realised mean payoff was garbage.
    game = js.make_game("congestion", num_actions=2)  # u = (-d_0, -2 d_1)
    learner = js.StageLearning(stage_length=600, explore_prob=0.002, info="payoffs")
    result = js.simulate(game, learner, 2**22, 1, kernel="fast", fast_path="events")
    # From a uniform start link 0 pays -0.5 against -1: about half of the agents move.
    assert result.switched_fraction[0] > 0.45
    assert result.distribution[-1, 0] > 0.95
    # The realised mean over the stage's agent-rounds is the welfare of the start (few
    # explore), within the noise of 2.5e9 observations.
    assert abs(result.realized_mean_payoff[0] - result.welfare[0]) < 2e-3


# ----------------------------------------------------------------------------- non-finite


def _holed_game():
    """Finite at the vertices and the uniform point, NaN for 0.3 < d_0 < 0.45."""

    def payoffs(d):
        hole = (d[0] > 0.3) & (d[0] < 0.45)
        return jnp.where(hole, jnp.nan, -jnp.asarray([1.0, 2.0]) * d)

    return js.games.from_payoff_fn(payoffs, 2, name="holed")


@pytest.mark.parametrize("info", ["none", "payoffs", "distribution"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_a_hole_of_nan_payoffs_stops_the_run_naming_where(kernel, info):
    # Was: nash_gap NaN, best_reply_fraction 0.0 and the population drifting, no error.
    learner = js.StageLearning(stage_length=5, explore_prob=0.05, update_prob=0.3, info=info)
    with pytest.raises(NonFinitePayoffError, match="game 'holed' gave non-finite") as error:
        js.simulate(_holed_game(), learner, 2000, 20, kernel=kernel, initial=np.array([0.1, 0.9]))
    message = str(error.value)
    assert "in stage" in message or "after stage" in message
    assert "d = [0.3" in message or "d = [0.4" in message
    assert "action 0: nan" in message


def test_nan_in_one_rounds_payoffs_is_found_from_the_rounds():
    # Stage actions all on action 1 (d_0 = 0, finite), but exploration at 0.7 plays about
    # 35% on action 0 in every round: inside the hole.
    learner = js.StageLearning(stage_length=3, explore_prob=0.7, update_prob=0.0)
    for kernel in KERNELS:
        with pytest.raises(NonFinitePayoffError, match="in stage 0, in round 0, at its played"):
            js.simulate(_holed_game(), learner, 4000, 2, kernel=kernel, initial=1)


def test_a_sweep_names_the_row_with_non_finite_payoffs():
    def payoffs(d, p):
        hole = (d[0] > p["low"]) & (d[0] < 0.45)
        return jnp.where(hole, jnp.nan, -jnp.asarray([1.0, 2.0]) * d)

    game = js.games.from_payoff_fn(payoffs, 2, params={"low": 0.3}, name="holed")
    learner = js.StageLearning(stage_length=5, explore_prob=0.05, update_prob=0.3)
    rows = [{"low": 2.0}, {"low": 0.3}]  # row 0 has no hole
    for kernel in KERNELS:
        with pytest.raises(NonFinitePayoffError, match="\\(sweep row 1\\)"):
            js.sweep(
                game,
                learner,
                2000,
                20,
                game_params=rows,
                initial=np.array([0.1, 0.9]),
                kernel=kernel,
            )
    js.sweep(game, learner, 2000, 20, game_params=rows[:1], initial=np.array([0.1, 0.9]))


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "game_name, overrides, message",
    [
        ("congestion", {"p": -1.0}, "'p' of game 'congestion' must be > 0, got -1.0"),
        ("congestion", {"b": [1.0, 0.0, 2.0, 3.0]}, "'b' .* must be > 0 on every link"),
        ("minority", {"capacity": 1.5}, "'capacity' .* must be in \\(0, 1\\)"),
        ("beauty_contest", {"q": 2.0}, "'q' .* must be in \\(0, 1\\)"),
        ("adoption", {"value": 0.0}, "'value' .* must be > 0"),
        ("random_linear", {"noise_std": -0.1}, "'noise_std' .* must be >= 0"),
        ("congestion", {"a": [0.0, float("nan"), 0.0, 0.0]}, "'a' .* must be finite"),
    ],
)
def test_overrides_are_checked_like_the_constructor(game_name, overrides, message):
    # Was: game_params={"p": -1.0} ran although make_game(..., p=-1.0) is refused.
    game = js.make_game(game_name)
    learner = js.StageLearning(stage_length=2)
    with pytest.raises(ValueError, match=message):
        js.simulate(game, learner, 100, 1, game_params=overrides)
    with pytest.raises(ValueError, match=message + ".*\\(sweep row 1\\)"):
        js.sweep(game, learner, 100, 1, game_params=[{}, overrides])


def test_custom_game_overrides_are_checked_at_the_vertices():
    game = js.games.from_payoff_fn(
        lambda d, p: -p["scale"] * jnp.log(d + p["shift"]),
        2,
        params={"scale": 1.0, "shift": 1.0},
        name="logs",
    )
    learner = js.StageLearning(stage_length=2)
    js.simulate(game, learner, 100, 1, game_params={"shift": 0.5})  # finite: fine
    with pytest.raises(ValueError, match="game 'logs' returned non-finite payoffs .* vertex"):
        js.simulate(game, learner, 100, 1, game_params={"shift": 0.0})


def test_a_sweep_given_one_dict_of_game_params_says_what_it_wants():
    # Was: AttributeError from inside the sweep.
    game = js.make_game("congestion", num_actions=3)
    with pytest.raises(TypeError, match="list of per-row dicts"):
        js.sweep(game, js.StageLearning(), 100, 1, game_params={"b": [1, 2, 3]})


# ----------------------------------------------------------------------------- samples


def test_sample_sizes_are_bounded():
    # Was: m = 10^9 ran past 11 minutes at 5.4 GB for 1,000 agents.
    with pytest.raises(
        ValueError, match=f"info_sample_size must be in \\[1, {MAX_INFO_SAMPLE_SIZE}\\]"
    ):
        js.StageLearning(info="distribution", info_sample_size=10**9)
    learner = js.StageLearning(
        stage_length=5000, info="payoffs", info_sample_size=MAX_INFO_SAMPLE_SIZE
    )
    with pytest.raises(ValueError, match="above the exact int32 limit"):
        js.simulate(js.make_game("congestion"), learner, 100, 1)


# ----------------------------------------------------------------------------- arguments


def test_jax_scalars_are_accepted_like_numpy_scalars():
    game = js.make_game("congestion")
    learner = js.StageLearning(stage_length=jnp.int32(3), explore_prob=jnp.float32(0.1))
    a = js.simulate(game, learner, jnp.int32(500), jnp.int32(2), seed=jnp.uint32(4))
    b = js.simulate(game, js.StageLearning(stage_length=3, explore_prob=0.1), 500, 2, seed=4)
    np.testing.assert_array_equal(a.distribution, b.distribution)
    js.sweep(game, learner, 500, 1, seeds=jnp.int32(3))


@pytest.mark.parametrize(
    "payoffs",
    [
        lambda d: np.array([1.0 if d[0] > 0.5 else 0.0, 0.0]),  # Python control flow
        lambda d: -np.sin(d),  # NumPy on the distribution
        lambda d: jnp.asarray([float(d[0]), 0.0]),  # float() of a traced value
    ],
)
def test_payoff_functions_that_cannot_be_traced_are_refused_at_once(payoffs):
    # Was: accepted by the eager check, then a traceback from inside jit.
    with pytest.raises(TypeError, match="not under jax.jit.*jax.numpy"):
        js.games.from_payoff_fn(payoffs, 2)


@pytest.mark.slow
def test_the_largest_population_runs_on_the_fast_kernel():
    # Was refused: 2^31 - 1 (a prime) pads to 2^31 agents with any power-of-two block.
    # One device holds all 2^31 padded agents (the int32 edge); about 5 GB, a minute.
    game = js.make_game("congestion", num_actions=2)  # u = (-d_0, -2 d_1)
    learner = js.StageLearning(stage_length=2, explore_prob=0.01, update_prob=0.1)
    result = js.simulate(game, learner, 2**31 - 1, 1, initial=1, kernel="fast", devices=1)
    # Who explored link 0 at least once (1 - 0.995^2) found it better; a tenth adopt it.
    moved = 0.1 * (1 - 0.995**2)
    assert abs(result.distribution[-1, 0] - moved) < 1e-5
    assert result.distribution[-1].sum() == 1.0
    assert abs(result.switched_fraction[0] - moved) < 1e-5


def test_the_reference_kernel_has_no_float_scatter_off_the_cpu():
    # A GPU runs float scatter-adds as atomics in a changing order: the population's
    # payoff sums by action are a masked reduction there, the same sums.
    from jaxstage.reference import payoff_sums as _payoff_sums

    played = jnp.asarray(np.random.default_rng(1).integers(0, 5, 1000), jnp.int32)
    payoffs = jnp.asarray(np.random.default_rng(2).normal(size=1000), jnp.float32)
    fn = jax.jit(lambda a, b: _payoff_sums(a, b, 5))
    cuda = fn.trace(played, payoffs).lower(lowering_platforms=("cuda",)).as_text()
    assert "scatter" not in cuda and "reduce" in cuda
    assert "scatter" in fn.trace(played, payoffs).lower(lowering_platforms=("cpu",)).as_text()
    expected = np.bincount(np.asarray(played), np.asarray(payoffs, np.float64), minlength=5)
    np.testing.assert_allclose(np.asarray(fn(played, payoffs)), expected, rtol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_hole_in_an_agents_own_estimate_stops_the_run_naming_it(kernel):
    """Private samples of m = 10 agents from d_0 = 0.1 land on d_hat_0 = 0.4, inside the
    hole, for about 1% of the agents (and d_hat_0 = 0.3 for 6%, one deviation away): the
    error names an agent's own estimate, and reports one (a multiple of 1/10), not the
    population's d."""
    learner = js.StageLearning(
        stage_length=5,
        explore_prob=0.05,
        update_prob=0.3,
        info="distribution",
        info_sample_size=10,
        info_sharing="private",
    )
    with pytest.raises(NonFinitePayoffError, match="an agent's own estimate") as error:
        js.simulate(_holed_game(), learner, 2000, 3, kernel=kernel, initial=np.array([0.1, 0.9]))
    assert "in stage 0" in str(error.value)
    # 0.3 is finite itself: a deviation from it (c - e_1 + e_0) is inside the hole.
    assert "d = [0.4, 0.6]" in str(error.value) or "d = [0.3, 0.7]" in str(error.value)
