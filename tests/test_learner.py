"""StageLearning configuration: validation and schedules."""

import numpy as np
import optax
import pytest

import jaxstage as js
from jaxstage import plan


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
        (dict(info="payoffs", info_sharing="gossip"), ValueError, "shared, private, got 'gossip'"),
        (dict(info_sharing="private"), ValueError, "private' needs info='distribution'"),
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


def test_info_sharing_is_recorded_only_when_private():
    """Shared runs keep the configuration of earlier releases (so their checkpoints and
    result folders compare equal); private ones say so, and rebuild the same learner."""
    shared = js.StageLearning(info="payoffs", info_sample_size=5)
    assert "info_sharing" not in shared.config() and not shared.private_estimates
    private = js.StageLearning(info="payoffs", info_sample_size=5, info_sharing="private")
    assert private.config()["info_sharing"] == "private" and private.private_estimates
    assert js.StageLearning(**private.config()) == private
    exact = js.StageLearning(info="distribution", info_sharing="private")
    assert not exact.private_estimates  # exact information is the same for everyone


def test_private_estimates_run_on_the_agents_path():
    """``kernel="auto"`` takes the fast kernel's agents path, on every platform; the
    other exploration paths refuse private estimates, and the reference kernel runs them
    too."""
    game = js.make_game("congestion", num_actions=3)
    private = js.StageLearning(
        stage_length=3, info="distribution", info_noise_std=0.1, info_sharing="private"
    )
    result = js.simulate(game, private, 500, 1)
    assert result.config["kernel"] == "fast" and result.config["fast_path"] == "agents"
    assert js.simulate(game, private, 500, 1, kernel="reference").config["kernel"] == "reference"
    for path in ("events", "rounds"):
        with pytest.raises(ValueError, match=f"fast_path='{path}': private information"):
            js.simulate(game, private, 500, 1, fast_path=path)


@pytest.mark.parametrize(
    "kwargs",
    [dict(info="payoffs", info_sample_size=5), dict(info="distribution", info_sample_size=7,
                                                     info_noise_std=0.02)],
    ids=["payoffs", "distribution"],
)  # fmt: skip
def test_private_runs_are_bitwise_the_same_as_a_sweep_row_and_in_steps(kwargs):
    game = js.make_game("congestion", num_actions=3)
    learner = js.StageLearning(
        stage_length=4, explore_prob=0.1, update_prob=0.5, info_sharing="private", **kwargs
    )
    one = js.simulate(game, learner, 3000, 4, seed=1)
    row = js.sweep(game, learner, 3000, 4, seeds=[0, 1])[1]
    sim = js.Simulation(game, learner, 3000, 4)
    state, first = sim.advance(sim.init(1), 2)
    _, second = sim.advance(state, 2)
    stepped = sim.result(first + second)
    for other in (row, stepped):
        np.testing.assert_array_equal(one.distribution, other.distribution)
        np.testing.assert_array_equal(one.switched_fraction, other.switched_fraction)


def test_auto_takes_the_reference_kernel_for_large_private_samples_on_a_cpu():
    game = js.make_game("congestion", num_actions=3)
    big = plan.PRIVATE_SAMPLES_ON_REFERENCE_FROM + 1
    for m, kernel in [(plan.PRIVATE_SAMPLES_ON_REFERENCE_FROM, "fast"), (big, "reference")]:
        row = js.StageLearning(info="distribution", info_sample_size=m, info_sharing="private")
        assert plan.resolve_kernel("auto", game, learner=row, platform="cpu") == kernel
        assert plan.resolve_kernel("auto", game, learner=row, platform="cuda") == "fast"
        assert plan.resolve_kernel("fast", game, learner=row, platform="cpu") == "fast"
    payoffs = js.StageLearning(info="payoffs", info_sample_size=big, info_sharing="private")
    assert plan.resolve_kernel("auto", game, learner=payoffs, platform="cpu") == "fast"
