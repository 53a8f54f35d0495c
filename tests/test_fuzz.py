"""Property-based tests of the public API and the command line (``hypothesis``).

Configurations are drawn across the valid ranges, edges included (k in {2, 127, 128, 129,
1024}, populations at the int32 and float32 limits on the count-level paths, tiny and
largest samples), and checked against invariants that need no reference: distributions
sum to 1 and counts to n, nothing is negative or NaN, a population that cannot move stays
put, and the two kernels agree in distribution. ``derandomize`` makes every CI run draw
the same examples; ``max_examples`` keeps the file to a few minutes on two cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxstage as js
from jaxstage.cli import main
from jaxstage.learner import MAX_INFO_SAMPLE_SIZE

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=8,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ACTIONS = st.sampled_from([2, 3, 127, 128, 129, 1024])
GAMES = st.sampled_from(["congestion", "beauty_contest", "random_linear"])


STAGE_LENGTHS = st.integers(1, 6)


@st.composite
def learners(draw, stage_length=STAGE_LENGTHS, shared_luck=True):
    info = draw(st.sampled_from(["none", "distribution", "payoffs"]))
    sample = None
    if info != "none" and shared_luck and draw(st.booleans()):
        sample = draw(st.sampled_from([1, 2, 17, 5000, MAX_INFO_SAMPLE_SIZE]))
    noise = 0.0
    if info == "distribution" and shared_luck and draw(st.booleans()):
        noise = draw(st.sampled_from([0.01, 0.5]))
    return js.StageLearning(
        stage_length=draw(stage_length),
        explore_prob=draw(st.sampled_from([0.0, 0.01, 0.3, 0.6, 1.0])),
        update_prob=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        info=info,
        info_sample_size=sample,
        info_noise_std=noise,
    )


def _game(name: str, k: int):
    return js.make_game(name, num_actions=k)


def _check_invariants(result: js.SimulationResult, n: int) -> None:
    d = result.distribution
    assert np.all(d >= 0)
    np.testing.assert_allclose(d.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    counts = d * n
    np.testing.assert_allclose(counts, np.rint(counts), rtol=0, atol=1e-6 * n)
    played = result.played_distribution
    assert np.all(played >= 0)
    np.testing.assert_allclose(played.sum(axis=1), 1.0, atol=1e-12)
    for name in ("nash_gap", "welfare", "realized_mean_payoff", "best_reply_fraction"):
        assert np.all(np.isfinite(getattr(result, name))), name
    assert np.all((result.best_reply_fraction >= 0) & (result.best_reply_fraction <= 1))
    assert np.all((result.switched_fraction >= 0) & (result.switched_fraction <= 1))


@FUZZ
@given(
    game=GAMES,
    k=ACTIONS,
    n=st.one_of(st.integers(1, 50), st.integers(51, 3000)),
    learner=learners(),
    kernel=st.sampled_from(["fast", "reference"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_valid_run_keeps_the_invariants(game, k, n, learner, kernel, seed):
    result = js.simulate(_game(game, k), learner, n, 2, seed=seed, kernel=kernel)
    _check_invariants(result, n)


@settings(FUZZ, max_examples=5)
@given(
    k=ACTIONS,
    n=st.integers(2, 3000),
    learner=learners(),
    kernel=st.sampled_from(["fast", "reference"]),
    start=st.integers(0, 1023),
)
def test_a_population_that_cannot_move_stays_put(k, n, learner, kernel, start):
    # Nobody adopts (update_prob 0), or nobody explores and each sees only its own action.
    still = learner.__class__(**{**learner.config(), "update_prob": 0.0})
    initial = start % k
    result = js.simulate(_game("congestion", k), still, n, 2, initial=initial, kernel=kernel)
    assert np.all(result.distribution[:, initial] == 1.0)
    assert np.all(result.switched_fraction == 0.0)
    blind = js.StageLearning(stage_length=learner.stage_length, explore_prob=0.0)
    result = js.simulate(_game("congestion", k), blind, n, 2, initial=initial, kernel=kernel)
    assert np.all(result.distribution[:, initial] == 1.0)


@settings(FUZZ, max_examples=4)
@given(
    k=st.sampled_from([2, 3, 8, 129]),
    # Without samples or noise: a shared sample moves everyone by its own luck.
    learner=learners(stage_length=st.integers(2, 6), shared_luck=False),
    seed=st.integers(0, 1000),
)
def test_the_kernels_agree_in_distribution(k, learner, seed):
    # Different random numbers, the same model: 20,000 agents after two stages.
    game = _game("congestion", k)
    n = 10_000
    finals = [
        js.simulate(game, learner, n, 2, seed=seed, kernel=kernel).distribution[-1]
        for kernel in ("fast", "reference")
    ]
    # Four standard deviations of the difference of two samples of n, summed over actions.
    shares = np.maximum((finals[0] + finals[1]) / 2, 1 / n)
    assert np.abs(finals[0] - finals[1]).sum() <= 4 * np.sqrt(2 * shares / n).sum()


@settings(FUZZ, max_examples=10)
@given(
    n=st.sampled_from([1, 2, 2**24 - 1, 2**24, 2**24 + 3, 2**31 - 1]),
    mode=st.sampled_from(["sequential", "simultaneous"]),
    inertia=st.sampled_from([0.3, 1.0]),
    initial=st.sampled_from(["uniform", 0, 1]),
    k=st.sampled_from([2, 3]),
)
def test_best_reply_counts_stay_exact_at_the_dtype_limits(n, mode, inertia, initial, k):
    game = _game("congestion", k)
    result = js.best_reply_dynamics(
        game, n, mode=mode, inertia=inertia, initial=initial, max_steps=3, seed=1
    )
    counts = np.asarray(result.counts, np.int64)
    assert np.all(counts >= 0)
    assert counts.sum() == n
    assert np.isfinite(result.nash_gap)
    assert np.all(result.trajectory[np.isfinite(result.trajectory)] >= 0)


@settings(FUZZ, max_examples=8)
@given(
    k=st.sampled_from([2, 128, 129]),
    n=st.integers(1, 500),
    info=st.sampled_from(["none", "distribution", "payoffs"]),
    extra=st.sampled_from(
        [[], ["--explore", "0.6"], ["--update-prob", "0.0"], ["--seed", "4294967295"]]
    ),
)
def test_the_command_line_runs_any_valid_configuration(tmp_path_factory, k, n, info, extra):
    out = tmp_path_factory.mktemp("run") / "out"
    argv = ["run", "--game", "congestion", "--param", f"num_actions={k}", "--agents", str(n)]
    argv += ["--stages", "2", "--stage-length", "3", "--info", info, "--no-progress"]
    argv += ["--no-plot", "--out", str(out), *extra]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())["runs"][0]
    assert config["num_agents"] == n


@settings(FUZZ, max_examples=8)
@given(
    flag=st.sampled_from(["--agents", "--stages", "--stage-length", "--explore"]),
    value=st.sampled_from(["0", "-1", "nan", "1e99", "abc", "2147483648", ""]),
)
def test_the_command_line_refuses_bad_values_without_a_traceback(capsys, flag, value):
    if flag == "--explore" and value == "0":
        return  # valid
    argv = [
        "run",
        "--game",
        "congestion",
        flag,
        value,
        "--stages",
        "1",
        "--no-progress",
        "--no-plot",
    ]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_smallest_populations_run(n):
    result = js.simulate(_game("congestion", 2), js.StageLearning(stage_length=2), n, 3)
    _check_invariants(result, n)
