"""Built-in and user-defined games: payoffs, equilibria, Lipschitz constants, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstage as js
from jaxstage.games import AnonymousGame, type_counts


def payoffs(game, distribution, params=None):
    params = game.default_params() if params is None else params
    return np.asarray(game.expected_payoffs(params, jnp.asarray(distribution, jnp.float32)))


# Every built-in game with its defaults, and variants of their other shapes.
ALL_GAMES = [js.make_game(name) for name in js.list_games()] + [
    js.make_game("congestion", num_actions=3, a=[0.0, 0.2, 0.5], b=[1.0, 2.0, 0.5], p=2.0),
    js.make_game("minority", smoothness=0.05, noise="coin"),
    js.make_game("random_linear", symmetric=False, num_actions=3, game_seed=4),
]


def test_unknown_game_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: adoption, beauty_contest, congestion"):
        js.make_game("prisoners_dilemma")


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(TypeError, match="valid parameters: num_actions, a, b, p, noise_std"):
        js.make_game("congestion", links=3)


@pytest.mark.parametrize("game", ALL_GAMES, ids=lambda g: repr(g)[:40])
def test_payoffs_have_one_row_per_type_and_are_finite(game):
    rng = np.random.default_rng(0)
    for _ in range(5):
        d = rng.dirichlet(np.ones(game.num_actions))
        u = payoffs(game, d)
        assert u.shape == (game.num_types, game.num_actions)
        assert np.all(np.isfinite(u))


@pytest.mark.parametrize("game", ALL_GAMES, ids=lambda g: repr(g)[:40])
def test_lipschitz_constant_bounds_payoff_changes(game):
    bound = game.lipschitz()
    if bound is None:
        pytest.skip("no Lipschitz constant for this game")
    rng = np.random.default_rng(1)
    for _ in range(200):
        d, e = rng.dirichlet(np.ones(game.num_actions), size=2)
        change = np.abs(payoffs(game, d) - payoffs(game, e)).max()
        assert change <= bound * np.abs(d - e).sum() + 1e-5


def test_congestion_payoff_formula_by_hand():
    game = js.make_game("congestion", num_actions=2, a=[1.0, 0.0], b=[2.0, 3.0], p=2.0)
    # -(1 + 2 * 0.25**2) = -1.125 ; -(0 + 3 * 0.75**2) = -1.6875
    np.testing.assert_allclose(payoffs(game, [0.25, 0.75]), [[-1.125, -1.6875]], rtol=1e-6)


@pytest.mark.parametrize(
    "params, expected",
    [
        # a = 0, p = 1: d_j proportional to 1 / b_j: (12, 6, 4, 3) / 25.
        (dict(num_actions=4), [0.48, 0.24, 0.16, 0.12]),
        # costs d0 = d1 + 0.5 and d0 + d1 = 1.
        (dict(num_actions=2, a=[0.0, 0.5], b=[1.0, 1.0]), [0.75, 0.25]),
        # d0**2 = 4 d1**2, so d0 = 2 d1.
        (dict(num_actions=2, b=[1.0, 4.0], p=2.0), [2 / 3, 1 / 3]),
        # the slow link is never used: cost 2 at zero load > 1 on the other.
        (dict(num_actions=2, a=[0.0, 2.0], b=[1.0, 1.0]), [1.0, 0.0]),
    ],
)
def test_congestion_equilibrium_matches_hand_computation(params, expected):
    (equilibrium,) = js.make_game("congestion", **params).equilibria()
    np.testing.assert_allclose(equilibrium, expected, atol=1e-9)


def test_minority_payoffs_and_equilibrium():
    game = js.make_game("minority", capacity=0.4)
    np.testing.assert_allclose(payoffs(game, [0.7, 0.3]), [[0.0, 1.0]])
    np.testing.assert_allclose(payoffs(game, [0.6, 0.4]), [[0.0, 1.0]])  # at capacity
    np.testing.assert_allclose(payoffs(game, [0.5, 0.5]), [[0.0, -1.0]])
    smooth = js.make_game("minority", capacity=0.4, smoothness=0.1)
    np.testing.assert_allclose(payoffs(smooth, [0.5, 0.5]), [[0.0, np.tanh(-1.0)]], rtol=1e-6)
    np.testing.assert_allclose(game.equilibria()[0], [0.6, 0.4])


def test_minority_coin_noise_is_plus_minus_one_with_the_expected_mean():
    game = js.make_game("minority", smoothness=0.1, noise="coin")
    params = game.default_params()
    expected = jnp.asarray([[0.0, 0.3]])
    actions = jnp.asarray(np.repeat([0, 1], 50_000))
    realized = np.asarray(game.realized_payoffs(params, jax.random.key(0), expected, 0, actions))
    stay, go = realized[:50_000], realized[50_000:]
    assert np.all(stay == 0.0)
    assert set(np.unique(go)) == {-1.0, 1.0}
    # mean 0.3, std of one draw sqrt(1 - 0.09): 5 standard errors is about 0.021.
    assert abs(go.mean() - 0.3) < 0.021


def test_beauty_contest_payoffs_and_equilibria():
    game = js.make_game("beauty_contest", num_actions=5, q=0.5)
    # mean = 0*0.5 + 4*0.5 = 2, target 1: payoffs -|j - 1|.
    np.testing.assert_allclose(payoffs(game, [0.5, 0, 0, 0, 0.5]), [[-1, 0, -1, -2, -3]])
    # consensus on j is an equilibrium iff j (1 - q) <= 1/2: j in {0, 1}.
    found = game.equilibria()
    assert len(found) == 2
    np.testing.assert_allclose(found[0], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(found[1], [0, 1, 0, 0, 0])


def test_adoption_payoffs_types_and_equilibria():
    game = js.make_game("adoption")  # value 1, thresholds (0.1, 0.4, 0.8), shares .3 .4 .3
    assert game.num_types == 3
    np.testing.assert_allclose(
        payoffs(game, [0.5, 0.5]), [[0, 0.4], [0, 0.1], [0, -0.3]], atol=1e-6
    )
    # Nobody (0.1 >= 0), the cheapest type (0.1 <= 0.3, 0.4 >= 0.3), two types
    # (0.4 <= 0.7, 0.8 >= 0.7) and everyone (0.8 <= 1).
    expected = [[1.0, 0.0], [0.7, 0.3], [0.3, 0.7], [0.0, 1.0]]
    np.testing.assert_allclose(np.array(game.equilibria()), expected, atol=1e-12)
    # With a high cost for the last type, full adoption is no equilibrium.
    costly = js.make_game("adoption", thresholds=[0.1, 0.4, 1.5])
    assert not any(np.allclose(eq, [0.0, 1.0]) for eq in costly.equilibria())


def test_random_linear_is_reproducible_and_symmetric():
    first = js.make_game("random_linear", num_actions=4, game_seed=3)
    again = js.make_game("random_linear", num_actions=4, game_seed=3)
    other = js.make_game("random_linear", num_actions=4, game_seed=4)
    np.testing.assert_array_equal(first.weights, again.weights)
    assert not np.allclose(first.weights, other.weights)
    np.testing.assert_allclose(first.weights, first.weights.T)
    d = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(payoffs(first, d)[0], first.bias + first.weights @ d, rtol=1e-5)
    general = js.make_game("random_linear", num_actions=4, symmetric=False)
    assert not np.allclose(general.weights, general.weights.T)


def test_type_counts_sum_exactly_and_follow_shares():
    counts = type_counts((0.3, 0.4, 0.3), 10)
    assert counts.tolist() == [3, 4, 3]
    counts = type_counts((1 / 3, 1 / 3, 1 / 3), 100)
    assert counts.sum() == 100 and sorted(counts.tolist()) == [33, 33, 34]


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("congestion", dict(num_actions=1), "num_actions must be in \\[2, 1024\\], got 1"),
        ("congestion", dict(b=[1, 0, 1, 1]), "b must be > 0"),
        ("congestion", dict(p=-1.0), "p must be a finite number in \\(0, inf\\), got -1.0"),
        ("congestion", dict(noise_std=-0.1), "noise_std must be a finite number in \\[0, inf\\)"),
        ("congestion", dict(a=[1.0, 2.0]), "a must be a scalar or have 4 entries"),
        ("minority", dict(capacity=1.5), "capacity must be a finite number in \\(0, 1\\)"),
        ("minority", dict(noise="uniform"), "noise must be 'gaussian' or 'coin'"),
        ("beauty_contest", dict(q=1.0), "q must be a finite number in \\(0, 1\\), got 1.0"),
        ("adoption", dict(shares=[0.5, 0.5]), "shares has 2 entries but thresholds has 3"),
        ("adoption", dict(shares=[0.5, 0.6, 0.1]), "shares must sum to 1"),
        ("random_linear", dict(scale=0.0), "scale must be a finite number in \\(0, inf\\)"),
    ],
)
def test_bad_game_parameters_are_named(name, params, message):
    with pytest.raises(ValueError, match=message):
        js.make_game(name, **params)


def test_from_payoff_fn_and_its_checks():
    game = js.games.from_payoff_fn(lambda d: -(1.0 + jnp.arange(3)) * d, 3, noise_std=0.0)
    np.testing.assert_allclose(payoffs(game, [0.5, 0.25, 0.25]), [[-0.5, -0.5, -0.75]])
    with pytest.raises(ValueError, match="must map a distribution of shape \\(3,\\) to payoffs"):
        js.games.from_payoff_fn(lambda d: d[:2], 3)
    with pytest.raises(ValueError, match="non-finite payoffs .* at the vertex e_0"):
        js.games.from_payoff_fn(lambda d: jnp.log(d), 2)
    with pytest.raises(TypeError, match="failed at the uniform distribution"):
        js.games.from_payoff_fn(lambda d: d @ jnp.ones((5, 5)), 2)
    with pytest.raises(ValueError, match="noise_std must be a finite number"):
        js.games.from_payoff_fn(lambda d: d, 2, noise_std=float("nan"))
    with pytest.raises(TypeError, match="fn must be callable"):
        js.games.from_payoff_fn("not a function", 2)


def test_from_payoff_fn_with_sweepable_params():
    game = js.games.from_payoff_fn(
        lambda d, p: p["bias"] - p["slope"] * d, 2, params={"bias": [0.0, 0.1], "slope": 1.0}
    )
    params = {**game.default_params(), "slope": jnp.float32(2.0)}
    np.testing.assert_allclose(payoffs(game, [0.5, 0.5], params), [[-1.0, -0.9]], rtol=1e-6)


class ShiftedNoiseGame(AnonymousGame):
    """A class-based game with its own noise: payoffs shifted by exactly +1 every round."""

    name = "shifted"
    num_actions = 2

    def expected_payoffs(self, params, distribution):
        return -distribution[None, :]

    def realized_payoffs(self, params, key, expected, types, actions):
        return expected[types, actions] + 1.0


def test_class_based_game_with_own_noise_runs():
    game = ShiftedNoiseGame()
    learner = js.StageLearning(stage_length=5, explore_prob=0.2, update_prob=0.5)
    result = js.simulate(game, learner, num_agents=1000, num_stages=4, seed=0)
    # Mean realised payoff = mean expected payoff of the played actions + 1 > 0.
    assert np.all(result.realized_mean_payoff > 0.0)
    assert np.all(np.isfinite(result.nash_gap))
