"""Stage learners end at the known equilibria of the built-in games."""

import numpy as np
import pytest

import jaxstage as js


def nearest(distribution, equilibria):
    return min(np.abs(distribution - eq).sum() for eq in equilibria)


def test_plain_stage_learning_reaches_the_wardrop_split_of_congestion():
    game = js.make_game("congestion", num_actions=4)  # equilibrium (12, 6, 4, 3) / 25
    learner = js.StageLearning(stage_length=10, explore_prob=0.05, update_prob=0.1)
    # Exploration (5% uniform) shifts the learned split a little towards uniform, which
    # leaves an eps-Nash gap of about 0.05 (measured on both kernels): test at eps = 0.1.
    result = js.simulate(game, learner, num_agents=20_000, num_stages=60, seed=0, eps=0.1)
    assert result.converged
    assert nearest(result.distribution[-1], [[0.48, 0.24, 0.16, 0.12]]) < 0.06


@pytest.mark.parametrize("info", ["distribution", "payoffs"])
def test_adoption_ends_in_one_of_its_equilibria(info):
    game = js.make_game("adoption")
    learner = js.StageLearning(
        stage_length=10, explore_prob=0.1 if info == "payoffs" else 0.0, update_prob=0.3, info=info
    )
    result = js.simulate(game, learner, num_agents=20_000, num_stages=40, seed=0, eps=0.01)
    assert result.converged
    # Hand-listed equilibria: nobody, the cheapest type, two types, everyone adopts.
    hand = [[1.0, 0.0], [0.7, 0.3], [0.3, 0.7], [0.0, 1.0]]
    assert nearest(result.distribution[-1], hand) < 0.01
    # Within each type, agents act alike: each type's adoption share is 0 or 1.
    by_type = result.distribution_by_type[-1, :, 1]
    assert np.all(np.minimum(by_type, 1 - by_type) < 0.01)


def test_beauty_contest_reaches_a_consensus_equilibrium():
    game = js.make_game("beauty_contest")  # q = 0.5: consensus on 0 or 1
    learner = js.StageLearning(
        stage_length=2, explore_prob=0.0, update_prob=0.3, info="distribution"
    )
    result = js.simulate(game, learner, num_agents=20_000, num_stages=30, seed=0)
    assert result.converged
    assert nearest(result.distribution[-1], np.eye(11)[:2]) < 0.01


def test_random_linear_potential_game_matches_the_solver():
    game = js.make_game("random_linear")
    solved = js.solve_equilibrium(game, 100_000)
    assert solved is not None
    learner = js.StageLearning(
        stage_length=2, explore_prob=0.0, update_prob=0.1, info="distribution"
    )
    result = js.simulate(game, learner, num_agents=20_000, num_stages=60, seed=0, reference=solved)
    assert result.converged
    assert result.distance_to_equilibrium[-1] < 0.01
