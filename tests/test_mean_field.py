"""The mean-field map of stage learning (jaxstage.mean_field, MODEL.md section 9): cases
worked by hand, an independent enumeration of exploration patterns, Monte Carlo checks of
the quadrature, agreement with large simulated populations, and the refusals."""

import itertools
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxstage as js
from jaxstage import mean_field as mf
from jaxstage import stage_candidates
from jaxstage.game_base import AnonymousGame, type_counts
from jaxstage.mean_field import (
    candidate_matrix,
    gaussian_argmax_probabilities,
    mean_field_map,
    mean_field_trajectory,
)


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


# ------------------------------------------------------------------ worked by hand


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_one_round_stage_tries_exactly_the_action_played(sigma):
    # tau = 1: the only tried action is the one played, whatever the payoffs.
    p = 0.3
    m = candidate_matrix([0.0, 1.0], noise_std=sigma, stage_length=1, explore_prob=p)
    np.testing.assert_allclose(m.probs, [[1 - p / 2, p / 2], [p / 2, 1 - p / 2]], atol=1e-12)
    assert m.truncated_mass == 0.0


@pytest.mark.parametrize("mu", [(0.0, 0.3), (0.2, -0.1), (0.5, 0.5)])
def test_two_rounds_with_noise_compare_two_single_payoffs(mu):
    # On a: (a, a) keeps a; (a, b) in either order compares one payoff of each,
    # P(b wins) = Phi((mu_b - mu_a) / (sigma sqrt(2))); (b, b) leaves only b tried.
    p, sigma = 0.2, 0.5
    m = candidate_matrix(mu, noise_std=sigma, stage_length=2, explore_prob=p)
    stay, move = 1 - p / 2, p / 2
    for a, b in [(0, 1), (1, 0)]:
        wins = normal_cdf((mu[b] - mu[a]) / (sigma * math.sqrt(2.0)))
        assert m.probs[a, b] == pytest.approx(move**2 + 2 * stay * move * wins, abs=1e-10)
        assert m.probs[a, a] == pytest.approx(1 - m.probs[a, b], abs=1e-10)


def test_three_rounds_use_the_variance_of_unequal_counts():
    # m = (2, 1) and (1, 2): the gap of the averages has std sigma sqrt(1/2 + 1).
    mu0, mu1, p, sigma = 0.1, 0.35, 0.25, 0.4
    m = candidate_matrix([mu0, mu1], noise_std=sigma, stage_length=3, explore_prob=p)
    stay, move = 1 - p / 2, p / 2
    wins = normal_cdf((mu1 - mu0) / (sigma * math.sqrt(1 / 2 + 1)))
    expected = 3 * stay**2 * move * wins + 3 * stay * move**2 * wins + move**3
    assert m.probs[0, 1] == pytest.approx(expected, abs=1e-10)


def test_exact_averages_break_ties_by_keeping_the_current_action():
    # sigma = 0, equal payoffs, tau = 2: an agent moves only when its own action is
    # untried, i.e. both rounds explore the other action.
    p = 0.4
    m = candidate_matrix([0.5, 0.5], noise_std=0.0, stage_length=2, explore_prob=p)
    np.testing.assert_allclose(m.probs[0, 1], (p / 2) ** 2, atol=1e-15)
    np.testing.assert_allclose(m.probs[1, 0], (p / 2) ** 2, atol=1e-15)
    # Without a tie the better action wins as soon as it is tried.
    m = candidate_matrix([0.0, 1.0], noise_std=0.0, stage_length=2, explore_prob=p)
    np.testing.assert_allclose(m.probs[0, 1], 1 - (1 - p / 2) ** 2, atol=1e-15)
    np.testing.assert_allclose(m.probs[1, 0], (p / 2) ** 2, atol=1e-15)


def test_exact_averages_draw_uniformly_among_tied_actions_when_the_current_is_not():
    # mu = (1, 1, 0), tau = 2, sigma = 0. From 2 (worst): (0 and 1 tried, tied) -> 1/2
    # each. From 0 (tied best): it moves to 1 only when 0 is untried and 1 tried.
    p = 0.6
    r = p / 3
    m = candidate_matrix([1.0, 1.0, 0.0], noise_std=0.0, stage_length=2, explore_prob=p)
    stay2 = 1 - p + r
    to0_from2 = 2 * r * stay2 + r**2 + 0.5 * 2 * r**2  # (0,2) (0,0) and half of (0,1)
    assert m.probs[2, 0] == pytest.approx(to0_from2, abs=1e-15)
    assert m.probs[2, 1] == pytest.approx(to0_from2, abs=1e-15)
    assert m.probs[0, 1] == pytest.approx((2 * r) ** 2 - r**2, abs=1e-15)  # {1,2}^2 - {2}^2
    assert m.probs[0, 2] == pytest.approx(r**2, abs=1e-15)


@pytest.mark.parametrize(
    "k, tau, p, q, info",
    [
        (3, 10, 0.1, 1.0, "none"),
        (4, 7, 0.2, 0.5, "none"),
        (5, 4, 0.3, 0.7, "none"),
        (3, 10, 0.1, 1.0, "distribution"),
        (3, 10, 0.1, 1.0, "payoffs"),
    ],
)
def test_a_symmetric_tie_stays_put_under_exact_averages(k, tau, p, q, info):
    # Equal links at equal loads: every payoff ties and the state is a fixed point. The
    # map's float64 rounding must not pick a link (with exact ties it did, by 0.1 to 0.2).
    game = js.make_game("congestion", num_actions=k, b=[1.0] * k, noise_std=0.0)
    learner = js.StageLearning(stage_length=tau, explore_prob=p, update_prob=q, info=info)
    path = mean_field_trajectory(game, learner, 20)
    np.testing.assert_allclose(path.distribution, 1 / k, atol=1e-13)


def test_a_whole_step_of_a_two_link_congestion_game_by_hand():
    game = js.make_game("congestion", num_actions=2, noise_std=0.4)  # cost b_j d_j, b=(1,2)
    learner = js.StageLearning(stage_length=2, explore_prob=0.2, update_prob=0.5)
    d = np.array([0.3, 0.7])
    p, q, sigma = 0.2, 0.5, 0.4
    played = (1 - p) * d + p / 2
    mu = -np.array([1.0, 2.0]) * played
    stay, move = 1 - p / 2, p / 2

    def switch(a, b):
        wins = normal_cdf((mu[b] - mu[a]) / (sigma * math.sqrt(2.0)))
        return q * (move**2 + 2 * stay * move * wins)

    expected_1 = d[0] * switch(0, 1) + d[1] * (1 - switch(1, 0))
    step = mean_field_map(game, learner, d)
    np.testing.assert_allclose(step.stage_payoffs[0], mu, atol=1e-6)  # float32 coefficients
    assert step.distribution[1] == pytest.approx(expected_1, abs=1e-9)
    assert step.distribution.sum() == pytest.approx(1.0, abs=1e-9)


def test_exact_distribution_information_is_a_best_reply_with_inertia():
    game = js.make_game("congestion", num_actions=2)
    learner = js.StageLearning(
        stage_length=5, explore_prob=0.3, update_prob=0.25, info="distribution"
    )
    # u = (-0.7, -0.6): action 1 is the best reply; a quarter of those on 0 move.
    step = mean_field_map(game, learner, [0.7, 0.3])
    np.testing.assert_allclose(step.distribution, [0.7 * 0.75, 0.3 + 0.7 * 0.25], atol=1e-12)
    # Equal costs (b = (1, 1) at d = (1/2, 1/2)): everyone tied keeps its action.
    tied = js.make_game("congestion", num_actions=2, b=[1.0, 1.0])
    np.testing.assert_allclose(mean_field_map(tied, learner, [0.5, 0.5]).distribution, [0.5, 0.5])


def test_exact_payoff_information_pools_the_types_of_the_agent_rounds():
    # Adoption: keep pays 0, adopt pays v x - theta_t. The published average of adopt
    # weights each type by its share of the agent-rounds on adopt.
    thresholds, shares = [0.1, 0.4, 0.8], [0.3, 0.4, 0.3]
    game = js.make_game("adoption", thresholds=thresholds, shares=shares)
    p = 0.2
    learner = js.StageLearning(stage_length=3, explore_prob=p, info="payoffs")
    d = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    played = (1 - p) * d + p / 2
    x = np.dot(shares, played[:, 1])
    weights = np.array(shares) * played[:, 1]
    published = np.dot(weights, x - np.array(thresholds)) / weights.sum()
    # Adopting pays the cheapest type, but the pooled average is negative: all keep.
    assert x - thresholds[0] > 0 and published < 0
    step = mean_field_map(game, learner, d)
    np.testing.assert_allclose(step.by_type[:, 0], 1.0, atol=1e-12)  # q = 1: all move
    # With exact distribution information each type best-replies on its own.
    own = mean_field_map(game, js.StageLearning(info="distribution"), d).by_type[:, 1]
    overall = np.dot(shares, d[:, 1])
    np.testing.assert_allclose(own, (overall - np.array(thresholds) > 0).astype(float))


# ----------------------------------------------------- independent pattern enumeration


def enumerated_candidates(mu, sigma, tau, p):
    """Candidate matrix by listing every count vector m ~ Multinomial(tau, pi^(a))."""
    mu = np.asarray(mu, float)
    k = mu.size
    out = np.zeros((k, k))
    for a in range(k):
        pi = np.full(k, p / k)
        pi[a] = 1 - p + p / k
        for m in itertools.product(range(tau + 1), repeat=k):
            if sum(m) != tau:
                continue
            weight = math.factorial(tau) * np.prod(
                [pi[j] ** m[j] / math.factorial(m[j]) for j in range(k)]
            )
            tried = np.flatnonzero(np.array(m) > 0)
            if sigma == 0:
                best = mu[tried].max()
                tied = tried[mu[tried] == best]
                if a in tied:
                    out[a, a] += weight
                else:
                    out[a, tied] += weight / tied.size
            else:
                stds = sigma / np.sqrt(np.array(m)[tried])
                out[a, tried] += weight * gaussian_argmax_probabilities(
                    mu[tried], stds, tolerance=1e-13
                )
    return out


@pytest.mark.parametrize("p", [0.15, 0.6, 1.0])
@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_pattern_sums_equal_an_enumeration_of_every_pattern(sigma, p):
    # Ties at sigma = 0 (actions 0 and 2), and p = 1 where the own action may go untried.
    mu = [0.4, -0.2, 0.4, 0.1]
    tau = 4
    m = candidate_matrix(mu, noise_std=sigma, stage_length=tau, explore_prob=p, tolerance=1e-12)
    assert m.truncated_mass == 0.0 and m.max_other_explorations == tau
    np.testing.assert_allclose(m.probs, enumerated_candidates(mu, sigma, tau, p), atol=1e-11)


# ---------------------------------------------------------------- accuracy and mass


def test_rows_are_distributions_and_the_truncated_mass_is_the_binomial_tail():
    k, tau, p, tol = 8, 50, 0.1, 1e-9
    mu = np.linspace(-1.0, 1.0, k) ** 2
    m = candidate_matrix(mu, noise_std=0.3, stage_length=tau, explore_prob=p, tolerance=tol)
    kept = m.max_other_explorations
    assert 0 < kept < tau  # the tail was cut
    p_other = p * (k - 1) / k
    tail = sum(
        math.comb(tau, e) * p_other**e * (1 - p_other) ** (tau - e)
        for e in range(kept + 1, tau + 1)
    )
    assert m.truncated_mass == pytest.approx(tail, rel=1e-9)
    assert 0 < m.truncated_mass <= tol / 2
    assert np.all(m.probs >= 0)
    np.testing.assert_allclose(m.probs.sum(axis=1), 1 - m.truncated_mass, atol=tol)


def test_a_finer_lattice_and_wider_window_change_nothing(monkeypatch):
    mu = [0.3, -0.4, 0.0, 0.25, 0.1]
    args = dict(noise_std=0.7, stage_length=20, explore_prob=0.3)
    base = candidate_matrix(mu, **args, tolerance=1e-13).probs
    monkeypatch.setattr(stage_candidates, "NODES_PER_STD", 4.0)
    np.testing.assert_allclose(
        candidate_matrix(mu, **args, tolerance=1e-14).probs, base, atol=1e-13
    )
    # Half the nodes (the lattice error grows to about exp(-2 pi^2)): visibly worse.
    monkeypatch.setattr(stage_candidates, "NODES_PER_STD", 1.0)
    coarse = candidate_matrix(mu, **args, tolerance=1e-13).probs
    assert np.abs(coarse - base).max() > 1e-11


@pytest.mark.parametrize("k", [3, 4])
def test_gaussian_argmax_agrees_with_monte_carlo(k):
    rng = np.random.default_rng(k)
    means = rng.normal(0.0, 0.5, k)
    stds = rng.uniform(0.2, 1.0, k)
    exact = gaussian_argmax_probabilities(means, stds)
    assert exact.sum() == pytest.approx(1.0, abs=1e-9)
    draws = 1_000_000
    samples = means + stds * rng.standard_normal((draws, k))
    seen = np.bincount(samples.argmax(axis=1), minlength=k) / draws
    sd = np.sqrt(exact * (1 - exact) / draws)
    assert np.all(np.abs(seen - exact) < 5 * sd + 1e-12), (seen, exact)


def test_candidate_matrix_agrees_with_agents_simulated_in_numpy():
    # Round by round: explore with p (uniform over k), Gaussian payoffs, argmax of the
    # averages of tried actions. Independent of the pattern sums.
    mu = np.array([0.2, 0.0, 0.35])
    sigma, tau, p, draws = 0.4, 5, 0.3, 200_000
    k = mu.size
    exact = candidate_matrix(mu, noise_std=sigma, stage_length=tau, explore_prob=p).probs
    rng = np.random.default_rng(7)
    for a in range(k):
        explore = rng.random((draws, tau)) < p
        played = np.where(explore, rng.integers(0, k, (draws, tau)), a)
        payoff = mu[played] + sigma * rng.standard_normal((draws, tau))
        onehot = played[:, :, None] == np.arange(k)
        counts = onehot.sum(axis=1)
        sums = np.where(onehot, payoff[:, :, None], 0.0).sum(axis=1)
        averages = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
        seen = np.bincount(averages.argmax(axis=1), minlength=k) / draws
        sd = np.sqrt(exact[a] * (1 - exact[a]) / draws)
        assert np.all(np.abs(seen - exact[a]) < 5 * sd + 1e-12), (a, seen, exact[a])


def test_trajectory_rows_are_distributions_and_report_what_was_truncated():
    game = js.make_game("random_linear", num_actions=8, noise_std=0.3)
    learner = js.StageLearning(stage_length=50, explore_prob=0.1, update_prob=0.5)
    path = mean_field_trajectory(game, learner, 3)
    assert path.distribution.shape == (4, 8) and path.by_type.shape == (4, 1, 8)
    assert np.all(path.distribution >= 0)
    assert np.all(path.truncated_mass > 0) and np.all(path.truncated_mass <= 1e-9)
    lost = np.concatenate([[0.0], np.cumsum(path.truncated_mass)])
    np.testing.assert_allclose(path.distribution.sum(axis=1), 1 - lost, atol=1e-9)
    assert path.stage_length.tolist() == [50] * 3 and path.tolerance == mf.DEFAULT_TOLERANCE
    assert np.all((path.max_other_explorations > 0) & (path.max_other_explorations < 50))


def test_no_exploration_freezes_plain_stage_learning():
    game = js.make_game("congestion", num_actions=3)
    learner = js.StageLearning(stage_length=7, explore_prob=0.0)
    d = [0.2, 0.5, 0.3]
    np.testing.assert_allclose(mean_field_map(game, learner, d).distribution, d, atol=1e-12)


# ------------------------------------------------- initial states, types, schedules


def test_initial_forms_and_zero_stages():
    game = js.make_game("adoption")  # 3 types, 2 actions
    learner = js.StageLearning(stage_length=3, explore_prob=0.1)
    uniform = mean_field_trajectory(game, learner, 0)
    assert uniform.by_type.shape == (1, 3, 2) and uniform.truncated_mass.shape == (0,)
    np.testing.assert_allclose(uniform.by_type[0], 0.5)
    np.testing.assert_allclose(
        mean_field_trajectory(game, learner, 0, initial=1).by_type[0, :, 1], 1.0
    )
    vector = mean_field_trajectory(game, learner, 0, initial=[0.25, 0.75]).by_type[0]
    np.testing.assert_allclose(vector, [[0.25, 0.75]] * 3)
    per_type = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    path = mean_field_trajectory(game, learner, 2, initial=per_type)
    np.testing.assert_allclose(path.by_type[0], per_type)
    np.testing.assert_allclose(
        path.distribution, np.einsum("t,stk->sk", game.type_shares, path.by_type)
    )


def test_schedules_are_applied_stage_by_stage():
    game = js.make_game("congestion", num_actions=3, noise_std=0.2)
    decay = optax.exponential_decay(0.3, transition_steps=1, decay_rate=0.5)
    learner = js.StageLearning(
        stage_length=lambda s: 3 + 2 * s, explore_prob=decay, update_prob=0.5
    )
    path = mean_field_trajectory(game, learner, 3, initial=[0.6, 0.3, 0.1])
    assert path.stage_length.tolist() == [3, 5, 7]
    np.testing.assert_allclose(path.explore_prob, 0.3 * 0.5 ** np.arange(3), rtol=1e-6)
    for s in range(3):
        fixed = js.StageLearning(
            stage_length=int(path.stage_length[s]),
            explore_prob=float(path.explore_prob[s]),
            update_prob=0.5,
        )
        step = mean_field_map(game, fixed, path.by_type[s])
        np.testing.assert_allclose(step.by_type, path.by_type[s + 1], atol=1e-15)
        np.testing.assert_allclose(
            mean_field_map(game, learner, path.by_type[s], stage=s).by_type, step.by_type
        )


# --------------------------------------------------- agreement with large populations


def l1_gap(result, path):
    return float(np.abs(result.distribution_by_type - path.by_type).sum(axis=-1).max())


def one_step_z_scores(game, learner, result, num_agents):
    """(prediction from the simulated state - next simulated state) / its sampling sd bound."""
    sizes = type_counts(game.type_shares, num_agents)[:, None]
    scores = []
    for s in range(result.num_stages):
        predicted = mean_field_map(game, learner, result.distribution_by_type[s]).by_type
        # A count's variance is at most n P (1 - P); at least 1 keeps rare actions fair.
        sd = np.sqrt(np.maximum(predicted * (1 - predicted), 1 / sizes) / sizes)
        scores.append((result.distribution_by_type[s + 1] - predicted) / sd)
    return np.array(scores)


def check_agreement(game, learner, *, num_stages=6, seeds=(0, 1, 2)):
    path = mean_field_trajectory(game, learner, num_stages)
    small = [
        l1_gap(js.simulate(game, learner, num_agents=10**4, num_stages=num_stages, seed=s), path)
        for s in seeds
    ]
    large_run = js.simulate(game, learner, num_agents=10**6, num_stages=num_stages, seed=0)
    large = l1_gap(large_run, path)
    # Sampling noise of a share is at most 0.5 / sqrt(n_type); a few of those, carried
    # through the stages, bound the gap. Measured: about 2 to 5 / sqrt(n).
    assert max(small) < 10 / math.sqrt(10**4), small
    assert large < 10 / math.sqrt(10**6), large
    assert large < np.mean(small) / 2.5, (large, small)  # 10 in expectation
    # One stage at a time from the simulated state: no bias beyond sampling noise.
    z = one_step_z_scores(game, learner, large_run, 10**6)
    assert np.abs(z).max() < 5, z
    return small, large


@pytest.mark.parametrize(
    "name, game_args, learner_args",
    [
        ("congestion", dict(num_actions=3), dict(stage_length=20, update_prob=0.3)),
        ("adoption", dict(noise_std=0.3), dict(stage_length=10, update_prob=0.5)),  # 3 types
    ],
)
def test_simulated_populations_approach_the_map_as_they_grow(name, game_args, learner_args):
    learner = js.StageLearning(explore_prob=0.1, **learner_args)
    check_agreement(js.make_game(name, **game_args), learner)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, game_args, learner_args",
    [
        (
            "beauty_contest",
            dict(num_actions=5, noise_std=0.5),
            dict(stage_length=10, update_prob=0.5),
        ),
        (
            "minority",
            dict(smoothness=0.1, noise_std=0.3),
            dict(stage_length=5, explore_prob=0.2, update_prob=0.3),
        ),
        (
            "congestion",
            dict(num_actions=3),
            dict(stage_length=10, update_prob=0.3, info="distribution"),
        ),
        ("adoption", dict(noise_std=0.3), dict(stage_length=10, update_prob=0.3, info="payoffs")),
    ],
)
def test_more_simulated_populations_approach_the_map(name, game_args, learner_args):
    learner_args = {"explore_prob": 0.1, **learner_args}
    check_agreement(js.make_game(name, **game_args), js.StageLearning(**learner_args), seeds=(0, 1))


# ------------------------------------------------------------------------ refusals


class CountingGame(AnonymousGame):
    """Two actions, Gaussian noise; counts its payoff evaluations."""

    name = "counting"
    num_actions = 2

    def __init__(self, noise_std=0.5):
        self.calls = 0
        self.noise_std = noise_std

    def default_params(self):
        return {"noise_std": jnp.asarray(self.noise_std, jnp.float32)}

    def expected_payoffs(self, params, distribution):
        self.calls += 1
        return jnp.stack([distribution[0], 1.0 - distribution[0]])[None, :]


class VectorNoiseGame(CountingGame):
    def default_params(self):
        return {"noise_std": jnp.asarray([0.1, 0.2], jnp.float32)}


@pytest.mark.parametrize(
    "learner, message",
    [
        (dict(info="payoffs", info_sample_size=100), "info_sample_size=100: sampled"),
        (dict(info="distribution", info_sample_size=10), "allowed: info_sample_size=None"),
        (dict(info="distribution", info_noise_std=0.1), "info_noise_std=0.1: noisy"),
    ],
)
def test_information_without_a_deterministic_limit_is_refused(learner, message):
    game = js.make_game("congestion", num_actions=3)
    with pytest.raises(ValueError, match=message):
        mean_field_trajectory(game, js.StageLearning(**learner), 3)


def test_noise_models_other_than_gaussian_are_refused_without_information():
    coin = js.make_game("minority", noise="coin")
    with pytest.raises(ValueError, match="uses_gaussian_noise\\(\\) is False"):
        mean_field_trajectory(coin, js.StageLearning(), 2)
    # Exact information does not depend on the noise model: accepted.
    path = mean_field_trajectory(coin, js.StageLearning(info="distribution"), 2)
    assert path.distribution.shape == (3, 2)
    with pytest.raises(ValueError, match="must be one number"):
        mean_field_trajectory(VectorNoiseGame(), js.StageLearning(), 2)


def test_too_expensive_stages_are_refused_before_any_computation():
    game = CountingGame()
    cheap = mf.pattern_sum_work(2, 2, 0.1, mf.DEFAULT_TOLERANCE)
    costly = mf.pattern_sum_work(2, 400, 0.1, mf.DEFAULT_TOLERANCE)
    learner = js.StageLearning(stage_length=lambda s: 2 if s < 3 else 400, explore_prob=0.1)
    with pytest.raises(ValueError, match="stage 3: .*stage_length=400.*above max_work"):
        mean_field_trajectory(game, learner, 5, max_work=math.sqrt(cheap * costly))
    assert game.calls == 0
    with pytest.raises(ValueError, match="k=8 actions, stage_length=50"):
        candidate_matrix(
            np.zeros(8), noise_std=1.0, stage_length=50, explore_prob=0.1, max_work=1e6
        )


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_stages=-1), ValueError, "num_stages must be in \\[0, inf\\), got -1"),
        (dict(num_stages=2.5), TypeError, "num_stages must be an integer"),
        (dict(initial="random"), ValueError, "initial must be None or 'uniform'.*got 'random'"),
        (dict(initial=3), ValueError, "initial action must be in \\[0, 2\\], got 3"),
        (dict(initial=True), TypeError, "initial must be"),
        (dict(initial=0.5), TypeError, "an index is an integer"),
        (dict(initial=[0.5, 0.6, -0.1]), ValueError, "non-negative with each row summing to 1"),
        (dict(initial=[0.5, 0.4, 0.0]), ValueError, "summing to 1"),
        (dict(initial=[0.5, 0.5]), ValueError, "got an array of shape \\(2,\\)"),
        (dict(initial=np.zeros(1000, int)), ValueError, "got an array of shape \\(1000,\\)"),
        (dict(tolerance=0.0), ValueError, "tolerance must be a finite number in \\[1e-14, 0.01\\]"),
        (dict(tolerance=0.1), ValueError, "tolerance must be"),
        (dict(max_work=0), ValueError, "max_work must be"),
        (dict(params={"c": 1.0}), ValueError, "unknown parameter"),
        (
            dict(params={"noise_std": -1.0}),
            ValueError,
            "'noise_std' of game 'congestion' must be >= 0",
        ),
    ],
)
def test_bad_inputs_are_named(kwargs, error, message):
    game = js.make_game("congestion", num_actions=3)
    arguments = {"num_stages": 2, **kwargs}
    with pytest.raises(error, match=message):
        mean_field_trajectory(game, js.StageLearning(), **arguments)


def test_bad_arguments_of_the_building_blocks_are_named():
    game = js.make_game("congestion", num_actions=3)
    with pytest.raises(TypeError, match="game must be an AnonymousGame"):
        mean_field_trajectory("congestion", js.StageLearning(), 1)
    with pytest.raises(TypeError, match="learner must be a jaxstage.StageLearning"):
        mean_field_map(game, {"stage_length": 5}, [1 / 3] * 3)
    with pytest.raises(ValueError, match="distribution_by_type must be"):
        mean_field_map(game, js.StageLearning(), [[0.5, 0.5]])
    with pytest.raises(ValueError, match="explore_prob schedule must stay in \\[0, 1\\]"):
        mean_field_map(game, js.StageLearning(explore_prob=lambda s: 2.0 * s), [1 / 3] * 3, stage=1)
    with pytest.raises(ValueError, match="payoffs must be finite"):
        candidate_matrix([0.0, np.inf], noise_std=0.1, stage_length=2, explore_prob=0.1)
    with pytest.raises(ValueError, match="stage_length must be in"):
        candidate_matrix([0.0, 1.0], noise_std=0.1, stage_length=0, explore_prob=0.1)
    with pytest.raises(ValueError, match="stds must be > 0"):
        gaussian_argmax_probabilities([0.0, 1.0], [1.0, 0.0])
