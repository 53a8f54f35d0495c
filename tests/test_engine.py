"""The step API (jaxstage.Simulation): a run advanced in pieces is bitwise the run
advanced at once, on every kernel and exploration path; states and records refuse what
does not belong to them."""

import dataclasses

import numpy as np
import pytest

import jaxstage as js
from jaxstage import plan

GAME = js.make_game("congestion", num_actions=3)
NUM_AGENTS = 3000
#: 45 stages: chunks of 3 (plan.chunk_stages), so the splits below stop inside chunks.
HORIZON = 45
SPLIT = (7, 11, 27)

PATHS = [("reference", "auto"), ("fast", "events"), ("fast", "rounds"), ("fast", "agents")]
LEARNERS = {
    "none": js.StageLearning(stage_length=10, explore_prob=0.1, update_prob=0.3),
    "payoffs-m": js.StageLearning(
        stage_length=10, explore_prob=0.1, update_prob=0.3, info="payoffs", info_sample_size=20
    ),
    "distribution-noise": js.StageLearning(
        stage_length=10,
        explore_prob=0.1,
        info="distribution",
        info_sample_size=20,
        info_noise_std=0.1,
    ),
}


def assert_same_result(
    a: js.SimulationResult, b: js.SimulationResult, free: tuple[str, ...] = ()
) -> None:
    """Bitwise the same result; the config may differ in its versions and ``free``."""
    skip = {"versions", *free}
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=field.name)
            assert np.asarray(x).dtype == np.asarray(y).dtype, field.name
        elif field.name == "config":
            assert {k: v for k, v in x.items() if k not in skip} == {
                k: v for k, v in y.items() if k not in skip
            }
        else:
            assert x == y, field.name


def simulation(learner, kernel="fast", fast_path="auto", **options):
    return js.Simulation(
        GAME, learner, NUM_AGENTS, HORIZON, kernel=kernel, fast_path=fast_path, **options
    )


def advanced_in_pieces(sim, seed, pieces, donate=False):
    state = sim.init(seed)
    records = None
    for piece in pieces:
        state, new = sim.advance(state, piece, donate=donate)
        records = new if records is None else records + new
    return state, records


CASES = [(kernel, path, "none") for kernel, path in PATHS] + [
    (kernel, path, name)
    for kernel, path in PATHS[1:]
    for name in ("payoffs-m", "distribution-noise")
    if (path, name) != ("rounds", "payoffs-m")  # the slowest to compile; events covers it
]


@pytest.mark.parametrize("kernel,fast_path,name", CASES)
def test_advanced_in_pieces_is_the_whole_run(kernel, fast_path, name):
    learner = LEARNERS[name]
    whole = js.simulate(
        GAME,
        learner,
        NUM_AGENTS,
        HORIZON,
        seed=11,
        kernel=kernel,
        fast_path=fast_path,
        return_actions=True,
    )
    sim = simulation(learner, kernel, fast_path)
    assert sim.spec.chunk_stages == 3  # the splits stop inside chunks
    state, records = advanced_in_pieces(sim, 11, SPLIT, donate=True)
    assert int(state.stage) == HORIZON and records.first_stage == 0
    assert_same_result(whole, sim.result(records, final=state))
    np.testing.assert_array_equal(state.metrics.best_reply_fraction, whole.best_reply_fraction[-1])


@pytest.mark.parametrize("kernel,fast_path", [("reference", "auto"), ("fast", "events")])
@pytest.mark.parametrize("horizon", [HORIZON, HORIZON - 1])
def test_stage_by_stage_is_the_whole_run(kernel, fast_path, horizon):
    # A last chunk that stops at the horizon inside a compiled chunk must play no stage
    # past it: with 45 stages no chunk skips past-the-end stages, with 44 the last does.
    sim = js.Simulation(
        GAME, LEARNERS["none"], NUM_AGENTS, horizon, kernel=kernel, fast_path=fast_path
    )
    state, one_call = sim.advance(sim.init(3))
    for pieces in ([1] * horizon, [horizon - 1, 1], [horizon - 2, 2]):
        last, records = advanced_in_pieces(sim, 3, pieces)
        assert_same_result(sim.result(one_call, final=state), sim.result(records, final=last))


def test_a_state_that_is_not_donated_can_be_advanced_again():
    sim = simulation(LEARNERS["none"], fast_path="rounds")
    state = sim.init(0)
    a, first = sim.advance(state, 5)
    b, again = sim.advance(state, 5)
    np.testing.assert_array_equal(np.asarray(a.actions), np.asarray(b.actions))
    assert_same_result(sim.result(first), sim.result(again))


def test_records_from_a_later_state_start_there():
    learner = LEARNERS["none"]
    sim = simulation(learner, fast_path="events")
    whole = sim.result(sim.advance(sim.init(4))[1])
    state, _ = sim.advance(sim.init(4), 7)
    _, rest = sim.advance(state, 10)
    part = sim.result(rest)
    assert part.config["first_stage"] == 7 and "first_stage" not in whole.config
    np.testing.assert_array_equal(part.distribution, whole.distribution[7:18])
    np.testing.assert_array_equal(part.rounds, whole.rounds[7:18])
    np.testing.assert_array_equal(part.switched_fraction, whole.switched_fraction[7:17])
    np.testing.assert_array_equal(part.stage_length, whole.stage_length[7:17])


def test_agents_path_overflow_is_replayed_from_the_undonated_state(monkeypatch):
    learner = LEARNERS["none"]
    expected = advanced_in_pieces(simulation(learner, fast_path="agents"), 8, [20, 25])
    monkeypatch.setattr(plan, "FORCED_AGENT_EVENTS", 1)
    sim = simulation(learner, fast_path="agents")
    assert sim.spec.agent_events == 1
    state, records = advanced_in_pieces(sim, 8, [20, 25])
    assert sim.spec.agent_events > 1  # it overflowed, grew and replayed
    assert_same_result(sim.result(records, final=state), sim.result(expected[1], final=expected[0]))


def test_bad_advances_are_refused_before_running():
    sim = simulation(LEARNERS["none"], fast_path="events")
    state = sim.init(0)
    with pytest.raises(ValueError, match=r"num_stages.*\[1, 45\]"):
        sim.advance(state, 46)
    with pytest.raises(ValueError, match=r"num_stages"):
        sim.advance(state, 0)
    with pytest.raises(TypeError, match="SimulationState"):
        sim.advance(np.zeros(3), 1)
    end, _ = sim.advance(state)
    with pytest.raises(ValueError, match="nothing is left"):
        sim.advance(end, 1)
    other = js.Simulation(GAME, LEARNERS["none"], 5000, HORIZON, fast_path="events")
    with pytest.raises(ValueError, match="another simulation"):
        sim.advance(other.init(0), 1)
    with pytest.raises(ValueError, match="seed"):
        sim.init(-1)


def test_records_add_only_when_consecutive():
    sim = simulation(LEARNERS["none"], fast_path="events")
    state, first = sim.advance(sim.init(0), 5)
    _, rest = sim.advance(state, 5)
    assert (first + rest).num_stages == 10 and (first + rest).last_stage == 10
    with pytest.raises(ValueError, match="followed by records from stage 10, got .* stage 0"):
        rest + first
    with pytest.raises(ValueError, match="followed by records from stage 5, got .* stage 0"):
        first + first
    with pytest.raises(TypeError):
        first + 1


@pytest.mark.parametrize("kernel,fast_path", PATHS)
def test_a_sweep_advanced_in_pieces_is_the_whole_sweep(kernel, fast_path):
    options = dict(seeds=[1, 2], update_prob=[0.3, 1.0], kernel=kernel, fast_path=fast_path)
    expected = js.sweep(GAME, LEARNERS["none"], NUM_AGENTS, 20, **options)
    batch = js.Sweep(GAME, LEARNERS["none"], NUM_AGENTS, 20, **options)
    state, first = batch.advance(batch.init(), 7)
    state, rest = batch.advance(state, donate=True)
    got = batch.result(first + rest)
    assert int(state.stage) == 20 and batch.final_actions(state).shape == (2, NUM_AGENTS)
    for a, b in zip(expected, got, strict=True):
        assert_same_result(a, b)
    # Row i is simulate with row i's parameters and the sweep's path.
    path = got[1].config["fast_path"] or "auto"
    alone = js.simulate(
        GAME,
        dataclasses.replace(LEARNERS["none"], update_prob=1.0),
        NUM_AGENTS,
        20,
        seed=2,
        kernel=kernel,
        fast_path=path,
    )
    assert_same_result(alone, got[1])


def test_a_sweep_refuses_what_is_not_its_own():
    batch = js.Sweep(GAME, LEARNERS["none"], NUM_AGENTS, 10, seeds=[1, 2], fast_path="events")
    other = js.Sweep(GAME, LEARNERS["none"], NUM_AGENTS, 10, seeds=[1, 3], fast_path="events")
    with pytest.raises(ValueError, match="seeds are not this sweep's"):
        batch.advance(other.init(), 2)
    state, records = batch.advance(batch.init(), 4)
    with pytest.raises(ValueError, match="needs its records from stage 0"):
        batch.result(batch.advance(state, 2)[1])
    with pytest.raises(ValueError, match=r"num_stages.*\[1, 6\]"):
        batch.advance(state, 7)
    with pytest.raises(TypeError, match="this sweep's advance"):
        batch.result(
            simulation(LEARNERS["none"]).advance(simulation(LEARNERS["none"]).init(0), 1)[1]
        )
    with pytest.raises(ValueError, match="update_prob has 2 entries but the sweep has 3 rows"):
        js.Sweep(GAME, LEARNERS["none"], NUM_AGENTS, 10, seeds=[1, 2, 3], update_prob=[0.1, 0.2])
