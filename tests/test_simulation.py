"""simulate and sweep: API contract, hand-computed stages, determinism, compile-once, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxstage as js
from jaxstage import kernels

LINEAR_TWO_LINKS = js.games.from_payoff_fn(lambda d: -d, 2, noise_std=0.0, name="two-links")


def small_run(game=None, learner=None, **kwargs):
    game = game or js.make_game("congestion", num_actions=3)
    learner = learner or js.StageLearning(stage_length=8, explore_prob=0.1, update_prob=0.3)
    options = dict(num_agents=600, num_stages=5, seed=0) | kwargs
    return js.simulate(game, learner, **options)


def test_public_api_contract_shapes():
    game = js.games.from_payoff_fn(lambda d: -(1.0 + jnp.arange(3)) * d, 3, noise_std=0.1)
    learner = js.StageLearning(stage_length=10, explore_prob=0.05, update_prob=1.0, info="none")
    result = js.simulate(game, learner, num_agents=1000, num_stages=6, seed=0, eps=0.05, delta=0.05)
    assert result.distribution.shape == (7, 3)
    assert result.best_reply_fraction.shape == (7,)
    assert result.nash_gap.shape == (7,)
    assert result.convergence_round is None or isinstance(result.convergence_round, int)
    np.testing.assert_allclose(result.distribution.sum(axis=1), 1.0)
    assert result.rounds.tolist() == [0, 10, 20, 30, 40, 50, 60]


def test_no_exploration_and_no_noise_keeps_every_action():
    # Each agent only ever observes its own action, which is then its only candidate.
    result = small_run(
        LINEAR_TWO_LINKS,
        js.StageLearning(stage_length=3, explore_prob=0.0),
        num_agents=50,
        initial=np.arange(50) % 2,
        return_actions=True,
    )
    np.testing.assert_array_equal(result.final_actions, np.arange(50) % 2)
    assert np.all(result.switched_fraction == 0.0)


@pytest.mark.parametrize("info", ["payoffs", "distribution"])
def test_exact_information_moves_everyone_to_the_best_reply(info):
    # 7 of 10 agents on link 0 with u = -d, no exploration or noise. Published payoffs are
    # -0.7 and -0.3 ; with the distribution, an agent on link 0 gets -0.4 by switching
    # (counts 6, 4) against -0.7 by staying, an agent on link 1 gets -0.8 by switching
    # against -0.3. Either way everyone ends on link 1.
    initial = np.array([0] * 7 + [1] * 3)
    learner = js.StageLearning(stage_length=2, explore_prob=0.0, update_prob=1.0, info=info)
    result = small_run(
        LINEAR_TWO_LINKS, learner, num_agents=10, num_stages=1, initial=initial, return_actions=True
    )
    np.testing.assert_array_equal(result.final_actions, np.ones(10))
    np.testing.assert_allclose(result.switched_fraction, [0.7])


def test_update_prob_zero_freezes_the_population():
    learner = js.StageLearning(stage_length=5, explore_prob=0.5, update_prob=0.0)
    result = small_run(learner=learner, return_actions=True, initial=np.arange(600) % 3)
    np.testing.assert_array_equal(result.final_actions, np.arange(600) % 3)


def test_metrics_match_an_independent_computation_from_the_final_actions():
    game = js.make_game("minority", capacity=0.3, noise_std=0.2)
    learner = js.StageLearning(stage_length=10, explore_prob=0.1, update_prob=0.3)
    result = small_run(game, learner, num_agents=100, return_actions=True, eps=0.0)
    n_go = int(result.final_actions.sum())
    assert result.distribution[-1, 1] == pytest.approx(n_go / 100)
    # Step payoff, capacity 30 of 100: goers are content iff n_go <= 30, stayers iff
    # n_go + 1 > 30.
    goers_ok, stayers_ok = n_go <= 30, n_go + 1 > 30
    expected_share = (n_go * goers_ok + (100 - n_go) * stayers_ok) / 100
    assert result.best_reply_fraction[-1] == pytest.approx(expected_share)


def test_same_seed_same_numbers_and_other_seed_differs():
    first, again, other = small_run(seed=5), small_run(seed=5), small_run(seed=6)
    for field in ("distribution", "nash_gap", "realized_mean_payoff", "switched_fraction"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert not np.array_equal(first.realized_mean_payoff, other.realized_mean_payoff)


def test_changing_traced_parameters_does_not_recompile():
    game = js.make_game("congestion", num_actions=3)
    small_run(game)
    size = kernels.jit_chunk._cache_size()
    small_run(game, js.StageLearning(stage_length=11, explore_prob=0.3, update_prob=0.9))
    small_run(game, game_params={"b": [2.0, 1.0, 0.5], "noise_std": 0.5})
    small_run(game, eps=0.2, seed=9)
    assert kernels.jit_chunk._cache_size() == size


def test_equal_games_share_compiled_code_and_user_games_do_not():
    first = js.make_game("congestion", num_actions=3, b=[1.0, 1.0, 1.0])
    same_shape = js.make_game("congestion", num_actions=3, b=[3.0, 2.0, 1.0], noise_std=0.4)
    assert first == same_shape and hash(first) == hash(same_shape)
    assert first != js.make_game("congestion", num_actions=4)
    assert js.make_game("minority", noise="coin") != js.make_game("minority")
    small_run(first)
    size = kernels.jit_chunk._cache_size()
    result = small_run(same_shape)
    assert kernels.jit_chunk._cache_size() == size
    # The second game's own coefficients were used, not the first's.
    np.testing.assert_allclose(
        result.expected_payoffs[:, 0], -np.array([3.0, 2.0, 1.0]) * result.distribution, rtol=1e-5
    )
    fn_game = js.games.from_payoff_fn(lambda d: -d, 2)
    assert fn_game != js.games.from_payoff_fn(lambda d: d, 2)


def test_sweep_rows_equal_single_runs():
    game = js.make_game("congestion", num_actions=3)
    learner = js.StageLearning(stage_length=6, explore_prob=0.1, update_prob=0.3)
    rows = [(0, 0.3, 6, 1.0), (1, 0.7, 9, 0.5), (2, 0.3, 4, 2.0)]
    swept = js.sweep(
        game,
        learner,
        400,
        5,
        seeds=[r[0] for r in rows],
        update_prob=[r[1] for r in rows],
        stage_length=[r[2] for r in rows],
        game_params=[{"b": [1.0, 2.0, r[3]]} for r in rows],
    )
    assert len(swept) == 3
    for i, (seed, update, length, b2) in enumerate(rows):
        single = js.simulate(
            game,
            js.StageLearning(stage_length=length, explore_prob=0.1, update_prob=update),
            400,
            5,
            seed=seed,
            game_params={"b": [1.0, 2.0, b2]},
            # The sweep takes one exploration path for all its rows (from their mean stage
            # length); a single run with stage length 9 alone would take the other one.
            fast_path=swept[i].config["fast_path"],
        )
        np.testing.assert_array_equal(swept[i].distribution, single.distribution)
        np.testing.assert_allclose(swept[i].nash_gap, single.nash_gap, rtol=1e-6)
        np.testing.assert_allclose(
            swept[i].realized_mean_payoff, single.realized_mean_payoff, rtol=1e-5
        )
        assert swept[i].rounds.tolist() == single.rounds.tolist()


def test_sweep_compiles_once_for_new_values():
    game = js.make_game("minority")
    learner = js.StageLearning(stage_length=4, explore_prob=0.1, update_prob=0.3)
    js.sweep(game, learner, 300, 3, seeds=[0, 1], explore_prob=[0.1, 0.2])
    size = kernels.jit_chunk_batched._cache_size()
    js.sweep(
        game,
        learner,
        300,
        3,
        seeds=[5, 6],
        explore_prob=[0.4, 0.0],
        game_params=[{"capacity": 0.3}, {"capacity": 0.7}],
    )
    assert kernels.jit_chunk_batched._cache_size() == size


INFOS = [
    dict(info="none"),
    dict(info="payoffs"),
    dict(info="payoffs", info_sample_size=20),
    dict(info="distribution"),
    dict(info="distribution", info_sample_size=15, info_noise_std=0.05),
]


# Every built-in game once and every information mode on every game shape: each game is
# paired with one mode (in turn), and the typed game (adoption) runs all modes.
PAIRS = [(name, INFOS[i % len(INFOS)]) for i, name in enumerate(js.list_games())]
PAIRS += [("adoption", info) for info in INFOS if ("adoption", info) not in PAIRS]


@pytest.mark.parametrize(
    "name, info", PAIRS, ids=[f"{g}-{'-'.join(map(str, i.values()))}" for g, i in PAIRS]
)
def test_every_game_and_information_mode_gives_finite_results(name, info):
    learner = js.StageLearning(stage_length=4, explore_prob=0.2, update_prob=0.5, **info)
    result = small_run(js.make_game(name), learner, num_agents=300, num_stages=3)
    for field in (
        "distribution",
        "best_reply_fraction",
        "nash_gap",
        "welfare",
        "realized_mean_payoff",
        "switched_fraction",
        "played_distribution",
    ):
        assert np.all(np.isfinite(getattr(result, field))), field
    assert np.all((result.best_reply_fraction >= 0) & (result.best_reply_fraction <= 1))
    assert np.all(result.nash_gap >= 0)


def test_minority_without_inertia_oscillates_and_is_reported_not_converged():
    game = js.make_game("minority", capacity=0.5, noise_std=0.0)
    learner = js.StageLearning(
        stage_length=2, explore_prob=0.0, update_prob=1.0, info="distribution"
    )
    result = small_run(game, learner, num_agents=1000, num_stages=8, initial=0)
    # Everyone stays home, the bar is empty, everyone goes, it is full, everyone stays...
    np.testing.assert_allclose(result.distribution[:, 1], [0, 1, 0, 1, 0, 1, 0, 1, 0])
    assert result.convergence_round is None and not result.converged


def test_initial_conditions():
    action = small_run(initial=2, num_stages=1)
    np.testing.assert_allclose(action.distribution[0], [0, 0, 1])
    drawn = small_run(initial=np.array([0.5, 0.5, 0.0]), num_agents=4000, num_stages=1)
    assert drawn.distribution[0, 2] == 0.0
    assert abs(drawn.distribution[0, 0] - 0.5) < 0.04
    uniform = small_run(num_agents=6000, num_stages=1)
    np.testing.assert_allclose(uniform.distribution[0], [1 / 3] * 3, atol=0.04)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_agents=0), ValueError, "num_agents must be in \\[1, 1099511627776\\], got 0"),
        (dict(num_agents=2**40 + 1), ValueError, "num_agents must be in"),
        (dict(num_stages=0), ValueError, "num_stages must be in \\[1, inf\\), got 0"),
        (dict(seed=-1), ValueError, "seed must be in"),
        (dict(eps=-0.1), ValueError, "eps must be a finite number in \\[0, inf\\)"),
        (dict(delta=1.5), ValueError, "delta must be a finite number in \\[0, 1\\], got 1.5"),
        (dict(initial="random"), ValueError, "initial must be 'uniform'"),
        (dict(initial=3), ValueError, "initial action must be in \\[0, 2\\], got 3"),
        (dict(initial=np.array([0.5, 0.6, 0.0])), ValueError, "must be non-negative and sum"),
        (dict(initial=np.full(600, 5)), ValueError, "initial actions must lie in \\[0, 2\\]"),
        (dict(game_params={"c": 1.0}), ValueError, "unknown parameter\\(s\\) \\['c'\\]"),
        (dict(game_params={"b": [1.0, 2.0]}), ValueError, "must have shape \\(3,\\)"),
        (dict(game_params={"noise_std": -1.0}), ValueError, "'noise_std' .* must be >= 0"),
        (dict(hold_stages=0), ValueError, "hold_stages must be in"),
    ],
)
def test_bad_run_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        small_run(**kwargs)


def test_wrong_types_are_refused():
    learner = js.StageLearning()
    with pytest.raises(TypeError, match="game must be an AnonymousGame"):
        js.simulate("congestion", learner, 10, 1)
    with pytest.raises(TypeError, match="learner must be a jaxstage learner .StageLearning"):
        js.simulate(js.make_game("minority"), {"stage_length": 5}, 10, 1)


def test_population_that_does_not_fit_is_refused_before_allocating():
    learner = js.StageLearning()
    with pytest.raises(ValueError, match="needs about .* GiB .* only 0.00 GiB is available"):
        js.simulate(js.make_game("minority"), learner, 10**6, 1, memory_limit_bytes=1000)
    with pytest.raises(ValueError, match="needs about .* the reference kernel"):
        js.simulate(
            js.make_game("congestion", num_actions=32), learner, 2**31 - 1, 1, kernel="reference"
        )
    # 2 bytes per agent (1.86 GiB at 10^9), 64 MiB of runtime and the per-block temporaries
    # (a few tens of MiB, depending on the block size).
    with pytest.raises(ValueError, match=r"needs about 1\.9\d GiB .* the fast kernel"):
        js.simulate(js.make_game("congestion"), learner, 10**9, 1, memory_limit_bytes=2**30)


def test_estimated_memory_grows_with_population_and_actions():
    learner = js.StageLearning()
    small = js.estimate_memory_bytes(10**6, 2, learner)
    assert js.estimate_memory_bytes(10**7, 2, learner) > 9 * (small - 64 * 2**20)
    assert js.estimate_memory_bytes(10**6, 8, learner) > small


def test_sweep_argument_errors():
    game, learner = js.make_game("minority"), js.StageLearning()
    with pytest.raises(ValueError, match="update_prob has 2 entries but the sweep has 3 rows"):
        js.sweep(game, learner, 10, 1, seeds=[0, 1, 2], update_prob=[0.1, 0.2])
    with pytest.raises(ValueError, match="explore_prob must be a finite number in \\[0, 1\\]"):
        js.sweep(game, learner, 10, 1, seeds=[0, 1], explore_prob=[0.1, 2.0])


def test_convergence_round_is_reported_for_a_converging_run():
    # Everyone starts on link 0 of two equal links; 2% of the unhappy switch each stage,
    # so the share on link 0 falls as 0.98**s to 1/2 in about 34 stages and then
    # alternates within one 2% step of it: payoff gaps stay below 0.05.
    game = js.make_game("congestion", num_actions=2, b=[1.0, 1.0], noise_std=0.0)
    learner = js.StageLearning(
        stage_length=1, explore_prob=0.0, update_prob=0.02, info="distribution"
    )
    result = small_run(
        game, learner, num_agents=1000, num_stages=60, initial=0, eps=0.05, delta=0.0
    )
    assert result.converged
    assert 20 <= result.convergence_stage <= 45
    assert result.convergence_round == result.rounds[result.convergence_stage]
    stage = result.convergence_stage
    assert np.all(result.in_equilibrium[stage:]) and not result.in_equilibrium[stage - 1]
    np.testing.assert_allclose(result.distribution[-1], [0.5, 0.5], atol=0.03)
