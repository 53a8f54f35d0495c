"""``jaxstage.testing.check_game``: every built-in game passes, every check can fail."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstage as js
from jaxstage import kernel_checks, testing
from jaxstage.games import AnonymousGame, TechnologyAdoption

ALL_CHECKS = (
    "attributes",
    "hashable",
    "noise_std",
    "params",
    "payoff_shape",
    "jit",
    "vmap",
    "payoff_finite",
    "noise",
    "lipschitz",
    "equilibria",
    "simulate_reference",
    "simulate_fast",
    "kernels_agree",
)


def assert_complete(report, game):
    """Every check either passed or was skipped, and only for a stated reason."""
    assert report.game == game.name
    assert set(report.passed) | set(report.skipped) == set(ALL_CHECKS)
    assert not set(report.passed) & set(report.skipped)
    if game.lipschitz() is not None:
        assert "lipschitz" in report.passed
    if game.equilibria():
        assert "equilibria" in report.passed
    assert ("simulate_fast" in report.passed) == game.uses_gaussian_noise()


@pytest.mark.parametrize("name", js.list_games())
def test_every_built_in_game_passes(name):
    game = js.make_game(name)
    assert_complete(js.testing.check_game(game), game)


def test_a_game_with_its_own_noise_passes_on_the_reference_kernel():
    game = js.make_game("minority", noise="coin", smoothness=0.05)
    report = js.testing.check_game(game)
    assert_complete(report, game)
    assert "simulate_fast" in report.skipped


def test_a_payoff_function_game_passes():
    game = js.games.from_payoff_fn(
        lambda d, p: p["base"] - p["slope"] * d,
        3,
        name="linear3",
        params={"base": [0.0, 0.1, 0.2], "slope": [1.0, 2.0, 3.0]},
        lipschitz=3.0,
        action_names=["x", "y", "z"],
    )
    assert_complete(js.testing.check_game(game), game)


def test_without_kernels_the_simulations_are_skipped():
    report = js.testing.check_game(js.make_game("congestion"), run_kernels=False)
    assert report.skipped == {"kernels": "run_kernels=False"}
    assert "simulate_reference" not in report.passed
    assert "ok   equilibria" in str(report)


# --------------------------------------------------------------------------- broken games


class Linear(AnonymousGame):
    """A valid game: action j costs ``(j + 1) d_j``; the broken games below change one thing."""

    name = "linear"
    num_actions = 3

    def default_params(self):
        return {
            "slope": jnp.asarray([1.0, 2.0, 3.0], jnp.float32),
            "noise_std": jnp.asarray(0.1, jnp.float32),
        }

    def expected_payoffs(self, params, distribution):
        return -(params["slope"] * distribution)[None, :]

    def lipschitz(self, params=None):
        return 3.0

    def equilibria(self, params=None):
        return [np.array([6.0, 3.0, 2.0]) / 11.0]  # equal costs 6/11 on every link


def test_the_valid_user_class_passes_on_both_kernels():
    assert_complete(js.testing.check_game(Linear()), Linear())


class OneAction(Linear):
    num_actions = 1


class FloatActions(Linear):
    num_actions = 3.0


class ShortActionNames(Linear):
    action_names = ("a", "b")


class RepeatedTypeNames(TechnologyAdoption):
    def __init__(self):
        super().__init__()
        self.type_names = ("cheap", "cheap", "dear")


class NoHash(Linear):
    def __eq__(self, other):
        return self is other


class NegativeNoise(Linear):
    def default_params(self):
        return {**super().default_params(), "noise_std": jnp.asarray(-0.1, jnp.float32)}


class IntegerParams(Linear):
    def default_params(self):
        return {**super().default_params(), "slope": jnp.asarray([1, 2, 3], jnp.int32)}


class DocumentsUnknownArgument(Linear):
    def param_docs(self):
        return {"slopes": "cost slope of each link"}


class ConfigOfAnotherGame(Linear):
    def config(self):
        return {"name": "congestion"}


class WrongShape(Linear):
    def expected_payoffs(self, params, distribution):
        return -(params["slope"] * distribution)  # (k,), not (num_types, k)


class IntegerPayoffs(Linear):
    def expected_payoffs(self, params, distribution):
        return jnp.argsort(distribution)[None, :]


class PythonControlFlow(Linear):
    def expected_payoffs(self, params, distribution):
        if distribution[0] > 0.5:  # a Python branch on a traced value
            return -distribution[None, :]
        return super().expected_payoffs(params, distribution)


class HostCallback(Linear):
    def expected_payoffs(self, params, distribution):
        shape = jax.ShapeDtypeStruct(distribution.shape, distribution.dtype)
        # No vmap_method: jit-able, but the metrics' vmap over distributions fails.
        return jax.pure_callback(lambda d: -np.asarray(d), shape, distribution)[None, :]


class NanAtTheCorners(Linear):
    def expected_payoffs(self, params, distribution):
        return (distribution * jnp.log(distribution))[None, :]  # 0 * log 0 = NaN


class WrongNoiseShape(Linear):
    def realized_payoffs(self, params, key, expected, types, actions):
        return expected[types, actions][:, None]


class ClaimsGaussianNoise(Linear):
    def realized_payoffs(self, params, key, expected, types, actions):
        noise = jax.random.uniform(key, actions.shape)  # not N(0, 1), not centred
        return expected[types, actions] + params["noise_std"] * noise

    def uses_gaussian_noise(self):
        return True


class UnderstatedLipschitz(Linear):
    def lipschitz(self, params=None):
        return 0.5


class WrongEquilibrium(Linear):
    def equilibria(self, params=None):
        return [np.ones(3) / 3]


class EquilibriumOffTheSimplex(Linear):
    def equilibria(self, params=None):
        return [np.array([0.6, 0.3, 0.2])]


class WrongTypedEquilibrium(TechnologyAdoption):
    def equilibria(self, params=None):
        # Half adopting: then the two cheapest types (70%) all gain by adopting.
        return [np.array([0.5, 0.5])]


BROKEN = [
    (OneAction, "attributes", "num_actions must be in \\[2, 1024\\], got 1"),
    (FloatActions, "attributes", "num_actions must be an int, got 3.0"),
    (ShortActionNames, "attributes", "action_names must be 3 strs"),
    (RepeatedTypeNames, "attributes", "type_names must be distinct"),
    (NoHash, "hashable", "must hash"),
    (NegativeNoise, "noise_std", "must be finite and >= 0, got -0.1"),
    (IntegerParams, "params", "parameter 'slope' must be a float array, got int32"),
    (DocumentsUnknownArgument, "params", "documents \\['slopes'\\]"),
    (ConfigOfAnotherGame, "params", "config\\(\\) must be a dict with name 'linear'"),
    (WrongShape, "payoff_shape", "must return shape .* \\(1, 3\\), got \\(3,\\)"),
    (IntegerPayoffs, "payoff_shape", "must be float32, got int32"),
    (PythonControlFlow, "jit", "not under jax.jit"),
    (HostCallback, "vmap", "fails under jax.vmap"),
    (NanAtTheCorners, "payoff_finite", "at distribution \\[1.0, 0.0, 0.0\\] is .*nan"),
    (WrongNoiseShape, "noise", "must be \\(4096,\\) floats, got \\(4096, 1\\)"),
    (ClaimsGaussianNoise, "noise", "not N\\(0, 1\\)"),
    (UnderstatedLipschitz, "lipschitz", "more than lipschitz\\(\\) = 0.5"),
    (WrongEquilibrium, "equilibria", "action 2 is played but a deviation gains 0.66"),
    (EquilibriumOffTheSimplex, "equilibria", "not in the simplex"),
    (WrongTypedEquilibrium, "equilibria", "no split of the types"),
]


@pytest.mark.parametrize("cls, check, message", BROKEN, ids=[c.__name__ for c, _, _ in BROKEN])
def test_each_check_fails_on_a_broken_game(cls, check, message):
    game = cls()
    with pytest.raises(testing.GameCheckError, match=message) as caught:
        testing.check_game(game, run_kernels=False)
    assert caught.value.check == check
    assert caught.value.game == game.name
    assert str(caught.value).startswith(f"check {check!r} failed for game {game.name!r}")
    assert isinstance(caught.value, AssertionError)  # pytest reports it as a failure


def test_equilibrium_tolerance_is_the_stated_one():
    # Uniform play of Linear: link 2 costs 1, link 0 costs 1/3; the gain is 2/3 - 1/n.
    gaps = testing.equilibrium_gaps(Linear(), Linear().default_params(), np.ones(3) / 3, 100)
    np.testing.assert_allclose(gaps[0], [0.0, 1 / 3 - 0.01, 2 / 3 - 0.01], atol=1e-6)
    testing.check_game(WrongEquilibrium(), run_kernels=False, equilibrium_tol=0.7)


def test_the_step_of_the_minority_game_is_judged_by_one_agent_deviations():
    game = js.make_game("minority", capacity=0.123456789)
    gaps = testing.equilibrium_gaps(game, game.default_params(), game.equilibria()[0], 10**5)
    assert np.all(gaps <= 0)  # goers gain 1 at the capacity, a stayer going would lose 1


def _corrupt(monkeypatch, kernel, field, change):
    simulate = kernel_checks.simulate

    def corrupted(*args, **kwargs):
        result = simulate(*args, **kwargs)
        if kwargs["kernel"] == kernel:
            setattr(result, field, change(np.array(getattr(result, field), dtype=float)))
        return result

    monkeypatch.setattr(kernel_checks, "simulate", corrupted)


def test_a_non_finite_record_fails_the_kernel_check(monkeypatch):
    _corrupt(monkeypatch, "reference", "welfare", lambda w: w * np.nan)
    with pytest.raises(testing.GameCheckError, match="record welfare is not finite") as caught:
        testing.check_game(Linear())
    assert caught.value.check == "simulate_reference"


def test_agents_moving_without_exploration_fail_the_kernel_check(monkeypatch):
    _corrupt(monkeypatch, "fast", "switched_fraction", lambda s: s + 0.5)
    with pytest.raises(testing.GameCheckError, match="without exploration agents moved") as caught:
        testing.check_game(Linear())
    assert caught.value.check == "simulate_fast"


def test_kernels_disagreeing_on_the_initial_state_fail(monkeypatch):
    _corrupt(monkeypatch, "fast", "nash_gap", lambda g: g + 0.01)
    with pytest.raises(testing.GameCheckError, match="initial nash_gap") as caught:
        testing.check_game(Linear())
    assert caught.value.check == "kernels_agree"
