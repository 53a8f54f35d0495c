"""Other learners on the engine (MODEL.md section 8): the learner interface, eps-greedy
with running averages and EXP3.

* Stage learning run through its interface hooks (``jaxstage.learner_kernel``) gives
  the reference kernel's numbers bit for bit: the interface carries the whole model.
* eps-greedy and EXP3 agree in law with the NumPy references of ``tests/numpy_reference.py``
  (written from MODEL.md, float64, loops over agents): the distribution of current
  actions after each recorded stage, over many seeds, with the statistics of
  ``tests/test_reference_agreement.py``.
* Hand-checked updates, float32 safeguards (compensated sums, shifted log-weights, the
  overflow error) and the refusals.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

import jaxstage as js
from jaxstage import finiteness
from jaxstage.eps_greedy import EpsGreedy, EpsGreedyState
from jaxstage.exp3 import Exp3, Exp3State
from jaxstage.learner import StageLearning

Z = 4.5
K = 3
N = 8
LINEAR = js.games.from_payoff_fn(
    lambda d, p: p["base"] - p["slope"] * d,
    K,
    noise_std=0.5,
    name="linear3",
    params={"base": [0.0, 0.0, 0.0], "slope": [1.0, 2.0, 3.0]},
)


def linear_payoff(d):
    return (np.zeros(K) - np.array([1.0, 2.0, 3.0]) * np.asarray(d, float))[None, :]


def assert_same_mean(a, b, what):
    a, b = np.asarray(a, float), np.asarray(b, float)
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    diff = abs(a.mean() - b.mean())
    assert diff <= Z * se + 1e-9, f"{what}: jax {a.mean():.4f} vs reference {b.mean():.4f}"


# --------------------------------------------------------------------------- interface


@pytest.mark.parametrize(
    ("game", "learner"),
    [
        (js.make_game("congestion", num_actions=3), StageLearning(5, 0.2, update_prob=0.6)),
        (js.make_game("adoption", noise_std=0.3), StageLearning(3, 0.3)),
    ],
)
def test_stage_learning_through_its_hooks_is_the_reference_kernel_bit_for_bit(game, learner):
    def run(through_hooks):
        sim = js.Simulation(game, learner, 500, 6, kernel="reference")
        if through_hooks:
            sim.pipeline.spec = sim.spec._replace(learner=StageLearning)
        state = sim.init(seed=4)
        state, records = sim.advance(state)
        return sim.result(records, final=state)

    plain, hooked = run(False), run(True)
    for field in ("distribution", "best_reply_fraction", "played_distribution"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(hooked, field))
    np.testing.assert_array_equal(plain.switched_fraction, hooked.switched_fraction)
    np.testing.assert_array_equal(plain.realized_mean_payoff, hooked.realized_mean_payoff)
    np.testing.assert_array_equal(plain.final_actions, hooked.final_actions)
    assert plain.switched_fraction.max() > 0  # the stages did something


def test_the_learner_interface_is_what_the_engine_checks():
    with pytest.raises(TypeError, match="must be a jaxstage learner"):
        js.simulate(LINEAR, object(), 10, 1)


# --------------------------------------------------------------------------- eps-greedy


def jax_current_actions(learner, num_stages, seeds, initial):
    """``(stages + 1, runs, k)`` distributions of current actions over seeds."""
    result = js.sweep(LINEAR, learner, N, num_stages, seeds=list(seeds), initial=initial)
    return np.stack([run.distribution for run in result.runs], axis=1)


def reference_distributions(by_round, stage_length):
    """``(stages, runs, k)`` from ``(runs, rounds, n)`` current actions by round."""
    at_stage_ends = by_round[:, stage_length - 1 :: stage_length]
    return np.stack([np.mean(at_stage_ends == j, axis=2) for j in range(K)], axis=-1).transpose(
        1, 0, 2
    )


def test_eps_greedy_agrees_with_the_numpy_reference():
    x0 = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    learner = EpsGreedy(explore_prob=0.3, stage_length=2)
    jax_d = jax_current_actions(learner, 3, range(400), x0)[1:]
    rng = np.random.default_rng(0)
    runs = [
        ref.eps_greedy(rng, linear_payoff, 0.5, x0, np.zeros(N, int), K, 6, 0.3)["by_round"]
        for _ in range(400)
    ]
    ref_d = reference_distributions(np.array(runs), 2)
    for stage in range(3):
        for j in range(K):
            assert_same_mean(jax_d[stage, :, j], ref_d[stage, :, j], f"stage {stage} d[{j}]")
    # The greedy rule moves agents off the crowded, steep actions: not a vacuous match.
    assert jax_d[-1, :, 0].mean() > 0.45  # from 3/8 at the start


def test_eps_greedy_keeps_its_initial_action_until_it_observes_something():
    learner = EpsGreedy(explore_prob=0.0, stage_length=1)
    # With no exploration every agent only ever plays, and so only ever tries, its
    # initial action: its greedy action never changes.
    result = js.simulate(LINEAR, learner, 9, 4, initial=np.arange(9) % 3)
    np.testing.assert_array_equal(result.distribution, np.full((5, 3), 1 / 3))
    assert np.all(result.switched_fraction == 0)


def test_eps_greedy_running_sums_are_compensated():
    # 2**20 observations of 0.1 in one agent's sum: the plain float32 sum drifts by about
    # 2e-3 relative, the compensated one stays at float32's resolution.
    rounds, payoff = 2**20, np.float32(0.1)
    state = EpsGreedy.init_state({}, jnp.zeros(1, jnp.int32), 2)
    played = jnp.zeros(1, jnp.int32)
    payoffs = jnp.full(1, payoff)

    def one(i, s):
        return EpsGreedy.observe({}, s, jax.random.key(0), played, payoffs, 0.0)

    state = jax.jit(lambda s: jax.lax.fori_loop(0, rounds, one, s))(state)
    average = float(state.sums[0, 0]) / int(state.counts[0, 0])
    assert int(state.counts[0, 0]) == rounds
    assert abs(average - float(payoff)) < 1e-7
    plain = jax.jit(lambda: jax.lax.fori_loop(0, rounds, lambda i, s: s + payoff, jnp.float32(0)))()
    assert abs(float(plain) / rounds - float(payoff)) > 1e-5  # what the test guards against


def test_eps_greedy_observe_by_hand():
    state = EpsGreedyState(
        actions=jnp.array([0, 1], jnp.int32),
        sums=jnp.array([[2.0, 0.0], [1.0, 3.0]]),
        compensation=jnp.zeros((2, 2)),
        counts=jnp.array([[2, 0], [1, 1]], jnp.int32),
    )
    # Agent 0 sees 0.0 on action 1: averages (1, 0.5): greedy stays 0. Agent 1 sees 3.0
    # on action 0: averages (3, 3), a tie with its greedy 1, which it keeps.
    new = EpsGreedy.observe(
        {}, state, jax.random.key(1), jnp.array([1, 0]), jnp.array([0.0, 3.0]), 0.1
    )
    np.testing.assert_array_equal(new.actions, [0, 1])
    np.testing.assert_array_equal(new.counts, [[2, 1], [2, 1]])
    np.testing.assert_allclose(new.sums, [[2.0, 3.0], [1.0, 3.0]])


# --------------------------------------------------------------------------- EXP3


def test_exp3_agrees_with_the_numpy_reference():
    learner = Exp3(eta=0.4, gamma=0.3, stage_length=2)
    jax_d = jax_current_actions(learner, 3, range(400), "uniform")
    rng = np.random.default_rng(1)
    runs = [
        ref.exp3(rng, linear_payoff, 0.5, np.zeros(N, int), K, 6, 0.4, 0.3)["by_round"]
        for _ in range(400)
    ]
    ref_d = reference_distributions(np.array(runs), 2)
    np.testing.assert_array_equal(jax_d[0], np.tile([1.0, 0.0, 0.0], (400, 1)))  # w = 0
    for stage in range(3):
        for j in range(K):
            assert_same_mean(jax_d[stage + 1, :, j], ref_d[stage, :, j], f"stage {stage} d[{j}]")
    assert jax_d[-1, :, 0].mean() < 0.9  # the weights moved agents off action 0


def test_exp3_observe_by_hand():
    # k = 2, w = (0, 0), gamma = 0.2: p = (0.5, 0.5). Agent 0 plays 1 and gets 1.0:
    # w_1 += 0.1 * 1.0 / 0.5 = 0.2, then w is shifted to (-0.2, 0) and the current
    # action is 1. Agent 1 plays 0 and gets -1.0: w_0 = -0.2, current action 1.
    state = Exp3State(jnp.zeros(2, jnp.int32), jnp.zeros((2, 2), jnp.float32))
    new = Exp3.observe(
        {"eta": 0.1}, state, jax.random.key(0), jnp.array([1, 0]), jnp.array([1.0, -1.0]), 0.2
    )
    np.testing.assert_allclose(new.log_weights, [[-0.2, -0.2], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(new.actions, [1, 1])
    probabilities = js.exp3.exp3_probabilities(new.log_weights, 0.2)
    expected = 0.8 * np.exp([-0.2, 0.0]) / np.exp([-0.2, 0.0]).sum() + 0.1
    np.testing.assert_allclose(probabilities[:, 0], expected, rtol=1e-6)


def test_exp3_plays_its_probabilities():
    # Play 200,000 agents with given log-weights: the shares of actions played match p.
    w = jnp.log(jnp.array([0.1, 0.3, 0.6]))[:, None] * jnp.ones((1, 200_000))
    state = Exp3State(jnp.zeros(200_000, jnp.int32), w)
    keys = (jax.random.key(1), jax.random.key(2))
    played = Exp3.play({"eta": 1.0}, state, keys, jnp.float32(0.3))
    shares = np.bincount(np.asarray(played), minlength=3) / 200_000
    expected = 0.7 * np.array([0.1, 0.3, 0.6]) + 0.1
    np.testing.assert_allclose(shares, expected, atol=5 * np.sqrt(0.25 / 200_000))


def test_exp3_with_gamma_one_ties_every_action():
    result = js.simulate(LINEAR, Exp3(eta=1.0, gamma=1.0, stage_length=2), 20, 2)
    np.testing.assert_array_equal(result.distribution[:, 0], 1.0)  # lowest index on ties


def test_exp3_overflow_stops_the_run():
    game = js.make_game("congestion", num_actions=2)
    with pytest.raises(finiteness.NonFiniteLearnerStateError, match="lower eta"):
        js.simulate(game, Exp3(eta=3e38, gamma=0.01, stage_length=2), 50, 3)


# --------------------------------------------------------------------------- the engine


@pytest.mark.parametrize(
    "learner",
    [EpsGreedy(explore_prob=0.1, stage_length=3), Exp3(eta=0.2, gamma=0.1, stage_length=3)],
)
def test_sweep_rows_and_advances_are_the_single_run(learner):
    game = js.make_game("congestion", num_actions=3)
    single = js.simulate(game, learner, 300, 8, seed=5)
    batch = js.sweep(game, learner, 300, 8, seeds=[2, 5], explore_prob=[0.3, 0.1])
    np.testing.assert_array_equal(batch[1].distribution, single.distribution)
    np.testing.assert_array_equal(batch[1].realized_mean_payoff, single.realized_mean_payoff)
    assert not np.array_equal(batch[0].distribution, single.distribution)
    sim = js.Simulation(game, learner, 300, 8)
    state, first = sim.advance(sim.init(seed=5), 3)
    state, rest = sim.advance(state)
    np.testing.assert_array_equal(sim.result(first + rest).distribution, single.distribution)
    assert single.config["learner"]["name"] == learner.name


def test_learners_record_their_configuration():
    result = js.simulate(LINEAR, Exp3(eta=0.3, gamma=0.1, stage_length=4), 10, 2)
    assert result.config["learner"] == {
        "name": "exp3",
        "info": "none",
        "eta": 0.3,
        "gamma": 0.1,
        "stage_length": 4,
    }
    np.testing.assert_array_equal(result.explore_prob, np.float32(0.1))
    np.testing.assert_array_equal(result.rounds, [0, 4, 8])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Exp3(eta=0.0), "eta must be > 0"),
        (lambda: Exp3(gamma=0.0), r"gamma must be in \(0, 1\]"),
        (lambda: Exp3(gamma=1.5), "gamma"),
        (lambda: EpsGreedy(explore_prob=-0.1), "explore_prob"),
        (lambda: EpsGreedy(stage_length=0), "stage_length"),
        (lambda: js.simulate(LINEAR, Exp3(), 10, 1, initial=0), "zero log-weights"),
        (lambda: js.simulate(LINEAR, EpsGreedy(), 10, 1, kernel="fast"), "reference kernel"),
        (lambda: js.simulate(LINEAR, Exp3(), 10, 1, fast_path="events"), "reference kernel"),
        (lambda: js.simulate(LINEAR, EpsGreedy(), 10, 1, checkpoint_dir="/x"), "checkpoint"),
        (lambda: js.sweep(LINEAR, EpsGreedy(), 10, 1, update_prob=[0.5]), "cannot be swept"),
        (lambda: js.simulate(LINEAR, EpsGreedy(), 2**31, 1), "reference kernel, up to"),
    ],
)
def test_bad_learner_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
