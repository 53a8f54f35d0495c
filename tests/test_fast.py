"""The fast kernel: same model as the reference kernel, layout-independent, lean."""

import dataclasses

import jax
import numpy as np
import pytest

import jaxstage as js
from jaxstage import events as ev
from jaxstage import fast, fast_pass1, fast_pass2, fast_population, kernels, plan

#: tests/conftest.py gives the suite two CPU devices; a host whose default backend is one
#: GPU has one device of it, and the split tests run on multi-device hosts only.
NEEDS_TWO_DEVICES = pytest.mark.skipif(
    jax.device_count() < 2,
    reason=f"needs two devices of the default backend ({jax.default_backend()}: "
    f"{jax.device_count()})",
)

LEARNERS = {
    "none": js.StageLearning(stage_length=6, explore_prob=0.2, update_prob=0.3),
    # Above events.MAX_EVENT_EXPLORE_PROB: the fast kernel loops over rounds instead.
    "none-heavy": js.StageLearning(stage_length=4, explore_prob=0.7, update_prob=0.3),
    "payoffs": js.StageLearning(stage_length=3, explore_prob=0.1, update_prob=0.2, info="payoffs"),
    "payoffs-sampled": js.StageLearning(
        stage_length=3, explore_prob=0.1, update_prob=0.2, info="payoffs", info_sample_size=30
    ),
    "distribution": js.StageLearning(
        stage_length=2, explore_prob=0.1, update_prob=0.2, info="distribution"
    ),
    "distribution-noisy": js.StageLearning(
        stage_length=2,
        explore_prob=0.1,
        update_prob=0.2,
        info="distribution",
        info_sample_size=40,
        info_noise_std=0.05,
    ),
}


@pytest.mark.parametrize(
    "game_name, mode, path",
    [
        ("congestion", "none", "events"),
        ("congestion", "none", "rounds"),
        ("congestion", "none-heavy", "rounds"),
        ("adoption", "none", "events"),
        ("adoption", "payoffs-sampled", "events"),
        ("adoption", "payoffs-sampled", "rounds"),
        ("adoption", "distribution-noisy", "events"),
        ("adoption", "distribution-noisy", "rounds"),
    ],
)
def test_results_do_not_depend_on_the_block_size(game_name, mode, path):
    game = js.make_game(game_name)
    runs = [
        js.simulate(
            game,
            LEARNERS[mode],
            1000,
            3,
            seed=4,
            kernel="fast",
            block_size=size,
            return_actions=True,
            fast_path=path,
        )
        for size in (1000, 128, 37)
    ]
    for other in runs[1:]:
        _assert_same_numbers(runs[0], other)


def _assert_same_numbers(one, other):
    """Two runs' trajectories (and final actions, when kept) are bitwise equal."""
    if one.final_actions is not None or other.final_actions is not None:
        np.testing.assert_array_equal(one.final_actions, other.final_actions)
    for field in (
        "distribution_by_type",
        "nash_gap",
        "realized_mean_payoff",
        "played_distribution",
        "switched_fraction",
    ):
        np.testing.assert_array_equal(getattr(one, field), getattr(other, field))


@pytest.mark.parametrize(
    "game_name, mode, path, update_prob",
    [
        ("congestion", "none", "events", 0.1),  # the adopter filter, replayed events
        ("congestion", "none", "events", 0.3),
        ("congestion", "none-heavy", "rounds", 0.3),
        ("congestion", "payoffs", "events", 0.2),
        ("adoption", "payoffs-sampled", "events", 0.2),
        ("adoption", "payoffs-sampled", "rounds", 0.2),
        ("adoption", "distribution-noisy", "events", 0.2),
        ("adoption", "distribution", "rounds", 0.2),
    ],
)
@NEEDS_TWO_DEVICES
def test_results_do_not_depend_on_the_number_of_devices(game_name, mode, path, update_prob):
    game = js.make_game(game_name)
    learner = dataclasses.replace(LEARNERS[mode], update_prob=update_prob)
    runs = [
        js.simulate(
            game,
            learner,
            2500,  # 5 blocks of 512: two devices hold 3 blocks each, one of them empty
            3,
            seed=7,
            kernel="fast",
            block_size=512,
            return_actions=True,
            fast_path=path,
            devices=devices,
        )
        for devices in (1, 2)
    ]
    assert [run.config["devices"] for run in runs] == [1, 2]
    _assert_same_numbers(*runs)


@pytest.mark.parametrize("game_name", ["congestion", "adoption"])
def test_transition_counts_change_no_number(monkeypatch, game_name):
    # Pass 1's one scatter of (type, own, drawn) transitions against its two scatters of
    # departures and arrivals: the same integer counts, so every number is the same.
    game = js.make_game(game_name)
    learner = js.StageLearning(stage_length=7, explore_prob=0.3, update_prob=0.3)

    def run():
        return js.simulate(
            game, learner, 3000, 3, seed=5, kernel="fast", fast_path="events", block_size=512
        )

    with_transitions = run()
    monkeypatch.setattr(fast_pass1, "TRANSITIONS_UP_TO_ACTIONS", 0)
    jax.clear_caches()  # the static threshold is read at tracing
    direct = run()
    _assert_same_numbers(with_transitions, direct)


@NEEDS_TWO_DEVICES
def test_sweeps_do_not_depend_on_the_number_of_devices():
    game = js.make_game("adoption")
    learner = js.StageLearning(stage_length=5, explore_prob=0.1, update_prob=0.3)
    sweeps = [
        js.sweep(game, learner, 3000, 3, seeds=[1, 2], kernel="fast", block_size=512, devices=d)
        for d in (1, 2)
    ]
    for one, two in zip(sweeps[0], sweeps[1], strict=True):
        _assert_same_numbers(one, two)


def test_devices_are_checked_before_running():
    game, learner = js.make_game("minority"), js.StageLearning(stage_length=2)
    count = jax.device_count()
    with pytest.raises(ValueError, match=f"devices must be in \\[1, {count}\\], got {count + 1}"):
        js.simulate(game, learner, 5000, 1, kernel="fast", devices=count + 1)
    with pytest.raises(ValueError, match="devices=2 applies to the fast kernel only"):
        js.simulate(js.make_game("minority", noise="coin"), learner, 5000, 1, devices=2)
    # By default: every device, at most one per block.
    assert js.simulate(game, learner, 100, 1, kernel="fast").config["devices"] == 1
    filtered = js.StageLearning(stage_length=2, update_prob=0.1)  # the adopter filter
    assert js.simulate(game, filtered, 5000, 1, block_size=512).config["devices"] == count
    # ... also where pass 2 decides for every agent from its own events (update_prob 1).
    assert js.simulate(game, learner, 5000, 1, block_size=512).config["devices"] == count
    with pytest.raises(ValueError, match="count must be an integer in \\[1, 4096\\], got 0"):
        js.use_cpu_cores(0)
    cpus = jax.local_device_count("cpu")  # the default backend may be a GPU's
    with pytest.raises(RuntimeError, match=f"JAX has started with {cpus} CPU device"):
        js.use_cpu_cores(cpus + 1)
    assert js.use_cpu_cores(cpus) == cpus  # what JAX already has: fine


GAMES = {
    "congestion": js.make_game("congestion", num_actions=3),
    "minority": js.make_game("minority", smoothness=0.1),
    "beauty_contest": js.make_game("beauty_contest", num_actions=5),
    "adoption": js.make_game("adoption"),
    "random_linear": js.make_game("random_linear", num_actions=3),
}


# Every information mode on an untyped and a typed game; every other game in plain mode.
AGREEMENT = [(g, m) for g in ("congestion", "adoption") for m in LEARNERS] + [
    (g, "none") for g in ("minority", "random_linear")
]


@pytest.mark.parametrize("path", ["events", "rounds"])
@pytest.mark.parametrize("game_name, mode", AGREEMENT)
def test_fast_and_reference_kernels_agree_in_distribution(game_name, mode, path):
    """Mean trajectory over 24 seeds of each kernel, within 5 combined standard errors, for
    both ways the fast kernel draws exploration."""
    game, learner = GAMES[game_name], LEARNERS[mode]
    if path == "events" and learner.explore_prob > 0.5:
        pytest.skip("above events.MAX_EVENT_EXPLORE_PROB only the loop over rounds runs")
    seeds = list(range(24))
    out = {}
    for kernel in ("reference", "fast"):
        swept = js.sweep(
            game,
            learner,
            400,
            4,
            seeds=seeds,
            kernel=kernel,
            initial="uniform",
            fast_path=path if kernel == "fast" else "auto",
        )
        out[kernel] = np.concatenate(
            [
                swept.stack("distribution_by_type").reshape(len(seeds), -1),
                swept.stack("switched_fraction"),
                swept.stack("realized_mean_payoff"),
            ],
            axis=1,
        )
    ref, fast = out["reference"], out["fast"]
    error = np.sqrt(ref.var(axis=0, ddof=1) / len(seeds) + fast.var(axis=0, ddof=1) / len(seeds))
    gap = np.abs(ref.mean(axis=0) - fast.mean(axis=0))
    assert np.all(gap <= 5 * error + 0.02), (gap.max(), np.argmax(gap - 5 * error))


def test_fast_kernel_is_deterministic_and_compiles_once():
    game = js.make_game("congestion", num_actions=3)
    learner = js.StageLearning(stage_length=5, explore_prob=0.1, update_prob=0.3)
    first = js.simulate(game, learner, 500, 3, seed=1, kernel="fast", fast_path="events")
    size = kernels.FAST[1]._cache_size()
    again = js.simulate(game, learner, 500, 3, seed=1, kernel="fast", fast_path="events")
    np.testing.assert_array_equal(first.realized_mean_payoff, again.realized_mean_payoff)
    # Stage lengths 5 and 7 share the round buffer of 8 rounds, and 0.5 and 0.49 expected
    # explorations per stage share the event batch size: no recompilation. (Update
    # probabilities up to plan.MAX_FILTERED_UPDATE_PROB compile apart: they size
    # the windows of adopters.)
    other = js.StageLearning(stage_length=7, explore_prob=0.07, update_prob=0.25)
    js.simulate(
        game,
        other,
        500,
        3,
        seed=2,
        kernel="fast",
        game_params={"noise_std": 1.0},
        fast_path="events",
    )
    assert kernels.FAST[1]._cache_size() == size
    assert first.config["kernel"] == "fast"


def test_fast_sweep_rows_equal_single_runs():
    game = js.make_game("minority", smoothness=0.1)
    learner = js.StageLearning(stage_length=4, explore_prob=0.1, update_prob=0.3)
    swept = js.sweep(game, learner, 300, 3, seeds=[0, 1], update_prob=[0.3, 0.8], kernel="fast")
    for i, update in enumerate([0.3, 0.8]):
        single = js.simulate(
            game,
            js.StageLearning(stage_length=4, explore_prob=0.1, update_prob=update),
            300,
            3,
            seed=i,
            kernel="fast",
        )
        np.testing.assert_array_equal(swept[i].distribution, single.distribution)
        np.testing.assert_allclose(
            swept[i].realized_mean_payoff, single.realized_mean_payoff, rtol=1e-6
        )


def test_kernel_choice_and_errors():
    coin = js.make_game("minority", noise="coin")
    learner = js.StageLearning(stage_length=2)
    assert js.simulate(coin, learner, 50, 1).config["kernel"] == "reference"
    assert js.simulate(js.make_game("minority"), learner, 50, 1).config["kernel"] == "fast"
    with pytest.raises(ValueError, match="kernel='fast' needs the default Gaussian noise"):
        js.simulate(coin, learner, 50, 1, kernel="fast")
    with pytest.raises(ValueError, match="valid kernels: auto, reference, fast"):
        js.simulate(coin, learner, 50, 1, kernel="gpu")
    with pytest.raises(ValueError, match="block_size must be in \\[1, 1073741824\\]"):
        js.simulate(js.make_game("minority"), learner, 50, 1, kernel="fast", block_size=0)


def test_fast_kernel_memory_estimate_stays_under_4_bytes_per_agent():
    learner = js.StageLearning()
    for actions in (2, 8, 32):
        needed = js.estimate_memory_bytes(10**9, actions, learner, kernel="fast")
        assert needed < 4 * 10**9, (actions, needed / 1e9)
    assert js.estimate_memory_bytes(10**9, 8, learner) > 50 * 10**9  # reference kernel


def test_initial_conditions_on_the_fast_kernel():
    game = js.make_game("congestion", num_actions=3)
    learner = js.StageLearning(stage_length=2)
    drawn = js.simulate(game, learner, 6000, 1, initial=np.array([0.5, 0.0, 0.5]), kernel="fast")
    assert drawn.distribution[0, 1] == 0.0 and abs(drawn.distribution[0, 0] - 0.5) < 0.03
    uniform = js.simulate(game, learner, 6000, 1, kernel="fast")
    np.testing.assert_allclose(uniform.distribution[0], [1 / 3] * 3, atol=0.03)
    given = js.simulate(game, learner, 10, 1, initial=np.arange(10) % 3, kernel="fast")
    np.testing.assert_allclose(given.distribution[0], [0.4, 0.3, 0.3])


def test_fast_kernel_refuses_a_padded_population_past_int32():
    # 2^31 - 1 agents pad to 2^31 with power-of-two blocks (allowed, the largest index is
    # 2^31 - 1: tests/test_exactness.py runs it); blocks of 3 * 2^16 pad past 2^31.
    with pytest.raises(ValueError, match="pads to 2,147,549,184 agents, above the fast kernel"):
        js.simulate(
            js.make_game("minority"),
            js.StageLearning(),
            2**31 - 1,
            1,
            kernel="fast",
            block_size=3 * 2**16,
            devices=1,
        )


def test_exploration_path_is_chosen_by_cost_and_can_be_forced():
    game = js.make_game("congestion", num_actions=4)
    few = js.make_game("congestion", num_actions=2)

    def path(game, learner, **kwargs):
        return js.simulate(game, learner, 300, 2, **kwargs).config["fast_path"]

    own = js.StageLearning(stage_length=2, explore_prob=0.05)
    shared = js.StageLearning(stage_length=2, explore_prob=0.05, info="distribution")
    longer = js.StageLearning(stage_length=50, explore_prob=0.05, info="distribution")
    four = {"stage_length": 4, "explore_prob": 0.05}
    if jax.default_backend() != "cpu":  # a GPU's default is the agents path whatever the cost
        assert path(game, own) == path(game, shared) == "agents"
        assert path(game, shared, fast_path="events") == "events"
        assert path(game, own, fast_path="rounds") == "rounds"
        return
    assert path(game, own) == "events"  # own estimates: events from length 1
    assert path(few, js.StageLearning(stage_length=1, explore_prob=0.05)) == "events"
    assert path(game, shared) == "rounds"  # shared information: rounds up to length 3
    assert path(game, js.StageLearning(**four, info="distribution")) == "events"
    assert path(game, longer) == "events"
    assert path(game, shared, fast_path="events") == "events"
    assert path(game, own, fast_path="rounds") == "rounds"
    assert js.simulate(game, own, 300, 2, kernel="reference").config["fast_path"] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fast_path": "gpu"}, "unknown fast_path 'gpu'"),
        ({"fast_path": "events", "kernel": "reference"}, "applies to the fast kernel only"),
    ],
)
def test_bad_exploration_paths_are_refused(kwargs, message):
    game = js.make_game("congestion", num_actions=4)
    learner = js.StageLearning(stage_length=2, explore_prob=0.05)
    with pytest.raises(ValueError, match=message):
        js.simulate(game, learner, 300, 2, **kwargs)


def test_events_path_refuses_what_it_cannot_draw():
    game = js.make_game("congestion", num_actions=4)
    heavy = js.StageLearning(stage_length=2, explore_prob=0.7)
    with pytest.raises(ValueError, match=r"explore_prob <= 0.5.*explore_prob up to 0.7"):
        js.simulate(game, heavy, 300, 2, fast_path="events")


@pytest.mark.parametrize("update_prob", [0.1, 1.0])
@pytest.mark.parametrize(
    "game_name, info, sample", [("congestion", "none", None), ("adoption", "payoffs", 30)]
)
def test_pass_two_skipping_non_adopters_changes_no_number(
    monkeypatch, update_prob, game_name, info, sample
):
    """Only adopters' events are accumulated, in their order: bitwise the same run as
    accumulating every event, with one window or many (adoption: two types)."""
    game = js.make_game(game_name, **({"num_actions": 3} if game_name == "congestion" else {}))
    learner = js.StageLearning(
        stage_length=8,
        explore_prob=0.2,
        update_prob=update_prob,
        info=info,
        info_sample_size=sample,
    )

    def run(filtered, fraction=8, capacity=None, listed=None, replay=True, slots=None):
        # Forced on or off whatever the update probability.
        monkeypatch.setattr(plan, "MAX_FILTERED_UPDATE_PROB", 1.0 if filtered else -1.0)
        monkeypatch.setattr(fast_pass2, "ADOPTER_WINDOW_FRACTION", fraction)
        if capacity is not None:  # adopters decided ``capacity`` at a time
            monkeypatch.setattr(fast, "adopter_capacity", lambda *_: capacity)
        if listed is not None:  # pass 1 keeps this many of a block's adopters' events
            monkeypatch.setattr(fast, "adopter_event_capacity", lambda *_: listed)
        monkeypatch.setattr(plan, "REPLAY_BUDGET_BYTES", 2**29 if replay else 0)
        if slots is not None:  # each chunk's events drawn ``slots`` at a time
            monkeypatch.setattr(plan.events, "event_capacity", lambda *_: slots)
        jax.clear_caches()  # the window fraction is read when tracing
        result = js.simulate(
            game, learner, 3000, 4, seed=9, kernel="fast", return_actions=True, fast_path="events"
        )
        spec = plan.kernel_spec(
            "fast",
            game,
            learner,
            num_agents=3000,
            num_stages=4,
            max_stage_length=8,
            block_size=None,
            fast_path="events",
        )
        assert spec.filter_adopters == filtered
        assert spec.replay_events == replay
        if capacity is not None:
            assert spec.adopter_capacity == capacity
        if listed is not None:
            assert spec.adopter_event_capacity == listed
        if slots is not None:
            assert spec.event_capacity == slots
        return result

    every_event = run(False)
    assert np.mean(every_event.switched_fraction) > 0  # decisions happen
    # One window of events and of adopters; many windows of events; many of adopters;
    # pass 1's list of adopters' events too short for some blocks (drawn again); no list;
    # many batches of events after the listed first one.
    cases = (
        dict(fraction=8),
        dict(fraction=64),
        dict(fraction=8, capacity=32),
        dict(fraction=8, listed=64),
        dict(fraction=8, replay=False),
        dict(fraction=8, slots=64),
    )
    for case in cases:
        filtered = run(True, **case)
        np.testing.assert_array_equal(filtered.final_actions, every_event.final_actions)
        np.testing.assert_array_equal(filtered.switched_fraction, every_event.switched_fraction)
        np.testing.assert_array_equal(
            filtered.realized_mean_payoff, every_event.realized_mean_payoff
        )
        # The new counts follow from the adopters' changes alone: the same metrics.
        np.testing.assert_array_equal(filtered.nash_gap, every_event.nash_gap)
        np.testing.assert_array_equal(
            filtered.distribution_by_type, every_event.distribution_by_type
        )


def test_adopter_capacity_covers_a_block_of_adopters():
    # Six standard deviations (and 32) above the expected adopters, at most the block.
    for block, update_prob in ((32768, 0.1), (32768, 0.2), (4096, 0.05), (1000, 0.2)):
        capacity = fast.adopter_capacity(block, update_prob)
        expected = block * update_prob
        spread = (expected * (1 - update_prob)) ** 0.5
        assert capacity % 32 == 0
        target = expected + 6 * spread + 32
        assert min(target, block) <= capacity <= 1.25 * target + 32  # a quarter octave
    assert fast.adopter_capacity(64, 1.0) == 64
    assert fast.adopter_capacity(50, 1.0) == 64  # rounded up to a multiple of 32


def test_adopter_event_capacity_covers_a_block_of_adopters_events():
    # Six standard deviations (and 32) above the expected events of a block's adopters,
    # at most the block's event slots (then every event fits).
    for block, rate, update_prob in ((32768, 2.5, 0.1), (32768, 0.5, 0.01), (4096, 10.0, 0.2)):
        capacity = ev.event_capacity(rate)
        kept = fast.adopter_event_capacity(block, capacity, rate, update_prob)
        adopters = block * update_prob
        target = adopters * rate + 6 * (adopters * (rate + rate**2)) ** 0.5 + 32
        slots = fast.event_slots_per_block(block, capacity)
        assert min(target, slots) <= kept <= min(1.125 * target + 32, slots)
    # Sampled adopters' events: their total is within the capacity far more often than not.
    rng = np.random.default_rng(3)
    adopters = rng.binomial(32768, 0.1, size=2000)
    totals = np.array([rng.binomial(50, 0.05, size=a).sum() for a in adopters])
    assert totals.max() <= fast.adopter_event_capacity(32768, ev.event_capacity(2.5), 2.5, 0.1)


def test_adopter_filter_is_chosen_by_the_largest_update_probability():
    game = js.make_game("congestion", num_actions=4)
    learner = js.StageLearning(stage_length=10, explore_prob=0.05, update_prob=0.1)

    def filtered(*learners):
        spec = plan.kernel_spec(
            "fast",
            game,
            learners[0],
            num_agents=10_000,
            num_stages=3,
            max_stage_length=10,
            block_size=None,
            learners=learners,
            platform="cpu",  # the events path's filter (a GPU's default path has none)
        )
        return spec.filter_adopters

    limit = plan.MAX_FILTERED_UPDATE_PROB
    assert filtered(learner)
    assert not filtered(dataclasses.replace(learner, update_prob=min(1.0, limit + 0.1)))
    # A sweep filters only when every row's update probability is small.
    assert not filtered(learner, dataclasses.replace(learner, update_prob=1.0))
    # Exact published payoffs and the distribution keep no own estimates: nothing to filter.
    shared = dataclasses.replace(learner, info="distribution")
    assert not filtered(shared)
    # The loop over rounds has no events to filter.
    rounds = plan.kernel_spec(
        "fast",
        game,
        learner,
        num_agents=10_000,
        num_stages=3,
        max_stage_length=10,
        block_size=None,
        fast_path="rounds",
    )
    assert not rounds.filter_adopters


@pytest.mark.parametrize("info", ["payoffs", "distribution"])
def test_shared_candidate_table_changes_no_number(monkeypatch, info):
    """Agents that share their estimates take candidates from a per-cell table from
    ``fast_population.SHARED_CANDIDATES_FROM_ACTIONS`` actions on: the same run as without it."""
    game = js.make_game("adoption") if info == "distribution" else js.make_game("beauty_contest")
    learner = js.StageLearning(stage_length=6, explore_prob=0.2, update_prob=0.5, info=info)

    def run(table_from):
        monkeypatch.setattr(fast_population, "SHARED_CANDIDATES_FROM_ACTIONS", table_from)
        jax.clear_caches()  # read when tracing
        return js.simulate(game, learner, 2000, 4, seed=5, kernel="fast", return_actions=True)

    direct, table = run(10**6), run(1)
    assert np.mean(direct.switched_fraction) > 0  # decisions happen
    np.testing.assert_array_equal(table.final_actions, direct.final_actions)
    np.testing.assert_array_equal(table.switched_fraction, direct.switched_fraction)
