"""StageLearning configuration: validation and schedules."""

import numpy as np
import optax
import pytest

import jaxstage as js


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(stage_length=0), ValueError, "stage_length must be in \\[1, inf\\), got 0"),
        (dict(stage_length=2.5), TypeError, "stage_length must be an integer, got 2.5"),
        (dict(explore_prob=1.2), ValueError, "explore_prob must be a finite number in \\[0, 1\\]"),
        (dict(explore_prob=-0.1), ValueError, "got -0.1"),
        (dict(update_prob=float("nan")), ValueError, "update_prob must be a finite number"),
        (dict(info="gossip"), ValueError, "valid modes: none, distribution, payoffs"),
        (dict(info="none", info_sample_size=10), ValueError, "needs info='distribution'"),
        (dict(info="payoffs", info_sample_size=0), ValueError, "info_sample_size must be in"),
        (dict(info="payoffs", info_noise_std=0.1), ValueError, "needs info='distribution'"),
        (dict(info="distribution", info_noise_std=-1.0), ValueError, "info_noise_std must be"),
    ],
)
def test_bad_learner_settings_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        js.StageLearning(**kwargs)


def test_constant_settings_expand_per_stage():
    learner = js.StageLearning(stage_length=7, explore_prob=0.25)
    assert learner.stage_lengths(3).tolist() == [7, 7, 7]
    np.testing.assert_allclose(learner.explore_probs(3), [0.25] * 3)


def test_optax_schedules_are_evaluated_per_stage():
    decay = optax.exponential_decay(0.2, transition_steps=2, decay_rate=0.5)
    growth = optax.linear_schedule(2, 10, transition_steps=4)
    learner = js.StageLearning(stage_length=growth, explore_prob=decay)
    np.testing.assert_allclose(learner.explore_probs(5), 0.2 * 0.5 ** (np.arange(5) / 2), rtol=1e-6)
    assert learner.stage_lengths(6).tolist() == [2, 4, 6, 8, 10, 10]


def test_schedules_leaving_the_allowed_range_are_refused():
    learner = js.StageLearning(explore_prob=optax.linear_schedule(0.5, 1.5, 10))
    with pytest.raises(ValueError, match="explore_prob schedule must stay in \\[0, 1\\]"):
        learner.explore_probs(10)
    shrinking = js.StageLearning(stage_length=optax.linear_schedule(3, -3, 6))
    with pytest.raises(ValueError, match="stage_length schedule must give values in \\[1"):
        shrinking.stage_lengths(6)


def test_python_only_schedules_work_too():
    learner = js.StageLearning(stage_length=lambda s: 5 if int(s) < 2 else 9)
    assert learner.stage_lengths(4).tolist() == [5, 5, 9, 9]
