"""The fast kernel's agents path (``fast_path="agents"``): its per-agent event stream
against a NumPy re-implementation of its definition, the stream's law, pass 1's counts,
agreement with the NumPy reference in every information mode, and bitwise equality across
blocks, devices, sweeps and the bound ``E`` on events per agent."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_reference_agreement as agreement

import jaxstage as js
from jaxstage import agent_events as ae
from jaxstage import agent_private, agent_stage, engine, plan, simulation
from jaxstage import counter_rng as crng
from jaxstage.spec import RunSpec

AGENTS = functools.partial(simulation.simulate, kernel="fast", fast_path="agents")
AGENTS_SWEEP = functools.partial(simulation.sweep, kernel="fast", fast_path="agents")


# --------------------------------------------------------------------------- the stream

M32 = np.uint64(0xFFFFFFFF)


def np_triple32(x):
    x = np.asarray(x, np.uint64) & M32
    x ^= x >> np.uint64(17)
    x = (x * np.uint64(0xED5AD4BB)) & M32
    x ^= x >> np.uint64(11)
    x = (x * np.uint64(0xAC4C1B51)) & M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x31848BAB)) & M32
    return x ^ (x >> np.uint64(14))


def np_stream_key(seed, *coordinates):
    state = np_triple32(np.uint64(seed) ^ np.uint64(0x9E3779B9))
    for c in coordinates:
        state = np_triple32((state + np_triple32(np.uint64(c) + np.uint64(0x632BE5AB))) & M32)
    return state, np_triple32(state ^ np.uint64(0x85EBCA6B))


def np_stream(seed, stage, index, p, tau, num_events, k):
    """The definition of ``agent_events`` in NumPy (float64 logs): ``(E, n)`` positions,
    actions, and a mask of the (agent, event) pairs whose skip is within 1e-4 of a
    positive integer (where float32 and float64 may round differently)."""
    index = np.asarray(index, np.uint64)
    position = np.full(index.shape, -1, np.int64)
    positions, actions, close = [], [], []
    for j in range(num_events):
        key0, key1 = np_stream_key(seed, stage, ae.STREAM, j)
        bits = np_triple32((np_triple32(index ^ key0) + key1) & M32)
        u = ((bits >> np.uint64(8)).astype(np.float64) + 1.0) / 2**24
        if p >= 1.0:
            gap = np.zeros(index.shape)
        elif p <= 0.0:
            gap = np.full(index.shape, np.inf)
        else:
            gap = np.log(u) / np.log1p(-p)
        # Near a positive integer float32 and float64 may floor differently (a skip of
        # about 0 floors to 0 in both: the ratio is never negative).
        close.append((np.abs(gap - np.round(gap)) < 1e-4) & (np.round(gap) >= 1))
        position = position + np.minimum(np.floor(gap), 10**9).astype(np.int64) + 1
        positions.append(position.copy())
        second = np_triple32(bits ^ np.uint64(0x5BD1E995))
        actions.append(np.floor((second >> np.uint64(8)).astype(np.float64) * k / 2**24))
    return np.stack(positions), np.stack(actions).astype(np.int64), np.stack(close)


def jax_stream(seed, stage, index, p, tau, num_events, k, cap=64):
    stream = ae.stream(
        jnp.uint32(seed), jnp.int32(stage), jnp.asarray(index), p, tau, num_events, cap
    )
    position = stream.start()
    positions, actions = [], []
    for j in range(num_events):
        bits, position = stream.advance(position, j)
        positions.append(position)
        actions.append(ae.event_action(bits, k))
    overflow = stream.overflow(position)
    return np.stack(positions), np.stack(actions), np.asarray(overflow), stream


def test_stream_matches_its_definition_in_numpy():
    index = np.arange(3000, 3400, dtype=np.uint32)
    for p in (0.05, 0.3):
        tau, num_events, k = 50, 40, 7
        want_pos, want_act, close = np_stream(5, 3, index, p, tau, num_events, k)
        got_pos, got_act, _, _ = jax_stream(5, 3, index, p, tau, num_events, k)
        exact = ~np.cumsum(close, axis=0).astype(bool)  # before any near-integer skip
        assert exact.mean() > 0.99
        cap = 64
        np.testing.assert_array_equal(got_pos[exact], np.minimum(want_pos, cap)[exact])
        inside = (want_pos < tau) & exact
        np.testing.assert_array_equal(got_act[inside], want_act[inside])


def test_exploration_is_bernoulli_per_agent_round():
    n, tau, p, k = 20_000, 40, 0.1, 4
    positions, actions, overflow, _ = jax_stream(1, 0, np.arange(n), p, tau, 30, k)
    assert not overflow.any()
    inside = positions < tau
    explored = np.zeros((n, tau), bool)
    agent = np.broadcast_to(np.arange(n), positions.shape)
    explored[agent[inside], positions[inside]] = True
    assert inside.sum() == explored.sum()  # positions strictly increase
    per_agent = explored.sum(axis=1)
    mean, var = tau * p, tau * p * (1 - p)
    assert abs(per_agent.mean() - mean) < 5 * np.sqrt(var / n)
    assert abs(per_agent.var() / var - 1) < 0.05
    per_round = explored.mean(axis=0)  # each round explored with probability p
    assert np.all(np.abs(per_round - p) < 5 * np.sqrt(p * (1 - p) / n))
    drawn = np.bincount(actions[inside], minlength=k) / inside.sum()
    assert np.all(np.abs(drawn - 1 / k) < 0.01)


def test_no_exploration_and_exploration_every_round():
    index = np.arange(300)
    positions, _, overflow, _ = jax_stream(2, 1, index, 0.0, 30, 5, 3)
    assert np.all(positions >= 30) and not overflow.any()
    positions, _, overflow, _ = jax_stream(2, 1, index, 1.0, 30, 30, 3, cap=32)
    np.testing.assert_array_equal(positions, np.arange(30)[:, None].repeat(300, 1))
    assert not overflow.any()  # E = tau: exact by construction
    _, _, overflow, _ = jax_stream(2, 1, index, 1.0, 30, 29, 3, cap=32)
    assert overflow.all()


def test_max_events_bounds_the_overflow_probability():
    for agent_stages, tau, p in [(10**6, 50, 0.05), (10**12, 50, 0.05), (10**9, 1000, 0.5)]:
        e = ae.max_events(agent_stages, tau, p)
        assert agent_stages * ae.binomial_tail_bound(tau, p, e) < ae.OVERFLOW_PROBABILITY
        assert e <= tau
    assert ae.max_events(10**9, 50, 1.0) == 50
    assert ae.max_events(10**9, 50, 0.0) == 1
    # The bound is a bound: the exact tail of Binomial(20, 0.3) beyond 12.
    from math import comb

    exact = sum(comb(20, x) * 0.3**x * 0.7 ** (20 - x) for x in range(13, 21))
    assert exact <= ae.binomial_tail_bound(20, 0.3, 12) <= 2 * exact


# --------------------------------------------------------------------------- pass 1


def test_round_counts_equal_a_recount_of_the_stream():
    n, k, tau, p, cap = 3000, 5, 20, 0.2, 32
    spec = RunSpec(
        num_agents=n,
        num_actions=k,
        type_counts=(1000, 2000),
        info="none",
        info_sample_size=None,
        info_noisy=False,
        num_stages=1,
        chunk_stages=1,
        kernel="fast",
        block_size=n,
        max_stage_length=cap,
        fast_path="agents",
        agent_events=16,
        tile_size=n,
    )
    rng = np.random.default_rng(0)
    stage_actions = rng.integers(0, k, n)
    valid = np.arange(n) < n - 7  # a padded tail
    types = (np.arange(n) >= 1000).astype(np.int32)
    positions, actions, overflow, stream = jax_stream(4, 2, np.arange(n), p, tau, 16, k, cap)
    counts, over = jax.jit(lambda s, v, t: agent_stage.block_round_counts(spec, stream, s, v, t))(
        jnp.asarray(stage_actions, jnp.int32), jnp.asarray(valid), jnp.asarray(types)
    )
    counts = np.asarray(counts)
    assert int(over) == int((overflow & valid).sum())
    base = np.zeros((2, k), np.int64)
    np.add.at(base, (types[valid], stage_actions[valid]), 1)
    np.testing.assert_array_equal(counts[cap].reshape(2, k), base)
    played = np.broadcast_to(stage_actions, (tau, n)).copy()
    inside = (positions < tau) & valid[None, :]
    for j, i in zip(*np.nonzero(inside), strict=True):
        played[positions[j, i], i] = actions[j, i]
    want = np.zeros((tau, 2, k), np.int64)
    for r in range(tau):
        np.add.at(want[r], (types[valid], played[r, valid]), 1)
    got = counts[:tau].reshape(tau, 2, k) + counts[cap].reshape(1, 2, k)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(counts[tau:cap], 0)


@pytest.mark.parametrize("tile", [1, 7, 64, 1000])
def test_tile_histograms_are_bincounts(tile):
    rng = np.random.default_rng(tile)
    cells = rng.integers(0, 50, 1000)
    valid = rng.random(1000) < 0.7
    hist = agent_stage.TileHistogram.zeros(1000, 50, tile)
    got = hist.add(jnp.asarray(cells), jnp.asarray(valid)).total()
    np.testing.assert_array_equal(got, np.bincount(cells[valid], minlength=50))
    np.testing.assert_array_equal(
        agent_stage.histogram(jnp.asarray(cells), jnp.asarray(valid), 50, tile),
        np.bincount(cells[valid], minlength=50),
    )


# --------------------------------------------------------------------------- whole runs

GAME = js.make_game("congestion", num_actions=3)


def learner(info="none", m=None, noise=0.0, **kw):
    kw = {"stage_length": 12, "explore_prob": 0.1, "update_prob": 0.7, **kw}
    return js.StageLearning(info=info, info_sample_size=m, info_noise_std=noise, **kw)


def assert_same_run(a, b):
    for name in ("distribution_by_type", "switched_fraction", "realized_mean_payoff"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.played_distribution, b.played_distribution)
    if a.final_actions is not None:
        np.testing.assert_array_equal(a.final_actions, b.final_actions)


MODES = [
    ("none", None, 0.0, "shared"),
    ("payoffs", None, 0.0, "shared"),
    ("payoffs", 40, 0.0, "shared"),
    ("distribution", None, 0.0, "shared"),
    ("distribution", 40, 0.1, "shared"),
    ("payoffs", 6, 0.0, "private"),
    ("distribution", 7, 0.0, "private"),
    ("distribution", None, 0.1, "private"),
    ("distribution", 7, 0.05, "private"),
]


@pytest.mark.parametrize("info,m,noise,sharing", MODES)
def test_same_bits_whatever_blocks_and_devices(info, m, noise, sharing):
    rule = learner(info, m, noise, info_sharing=sharing)
    run = functools.partial(AGENTS, GAME, rule, 3000, 3, seed=3)
    one = run(devices=1, return_actions=True)
    assert one.config["fast_path"] == "agents"
    assert_same_run(one, run(devices=1, block_size=384, return_actions=True))
    if jax.device_count() >= 2:  # a GPU machine may hold one device: blocks alone there
        assert_same_run(one, run(devices=2, return_actions=True))
        assert_same_run(one, run(devices=2, block_size=384, return_actions=True))


def test_forced_small_event_bound_gives_the_same_bits(monkeypatch):
    """E = 1 overflows (about 1.2 events per agent and stage): the driver reruns with E
    doubled until no agent needs more, and the numbers are those of the default E."""
    game = js.make_game("congestion", num_actions=4)
    run = functools.partial(AGENTS, game, learner(), 2000, 5, seed=7, return_actions=True)
    default = run()
    seen = []
    chunk_spec = engine.chunk_spec
    monkeypatch.setattr(
        engine, "chunk_spec", lambda s, f, e: seen.append(s.agent_events) or chunk_spec(s, f, e)
    )
    monkeypatch.setattr(plan, "FORCED_AGENT_EVENTS", 1)
    forced = run()
    assert seen[0] == 1 and max(seen) > 1  # it overflowed and ran again
    assert_same_run(default, forced)


def test_sweep_rows_equal_single_runs():
    base = learner("payoffs", 30)
    result = AGENTS_SWEEP(
        GAME, base, 1500, 3, seeds=[1, 2], explore_prob=[0.05, 0.3], update_prob=[1.0, 0.2]
    )
    for i, (p, u) in enumerate([(0.05, 1.0), (0.3, 0.2)]):
        row_learner = js.StageLearning(
            stage_length=12, explore_prob=p, update_prob=u, info="payoffs", info_sample_size=30
        )
        assert result[i].config["fast_path"] == "agents"
        assert_same_run(result[i], AGENTS(GAME, row_learner, 1500, 3, seed=i + 1))


def test_varying_stage_lengths_and_the_last_short_chunk():
    """Stage lengths vary per stage (traced); 23 stages in chunks of 2 leave a last chunk
    of one stage, compiled with its own length (no conditional)."""
    lengths = js.StageLearning(
        stage_length=lambda s: 3 + (s % 4) * 5, explore_prob=0.2, update_prob=0.5
    )
    result = AGENTS(GAME, lengths, 500, 23, seed=1)
    assert result.distribution.shape == (24, 3)
    np.testing.assert_array_equal(result.stage_length[:4], [3, 8, 13, 18])
    assert np.all(np.isfinite(result.realized_mean_payoff))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_no_exploration_and_exploration_every_round_runs(p):
    result = AGENTS(
        GAME, learner(explore_prob=p, update_prob=1.0), 600, 2, seed=0, return_actions=True
    )
    if p == 0.0:  # only the own action is ever observed: nobody switches
        np.testing.assert_array_equal(result.switched_fraction, 0.0)
    else:  # every round explores: played counts are uniform draws, ~n / k each
        assert np.all(np.abs(result.played_distribution - 1 / 3) < 0.1)


@pytest.mark.parametrize("k", [2, 8, 129, 1024])
def test_many_actions_smoke(k):
    game = js.make_game("congestion", num_actions=k)
    result = AGENTS(game, learner(), 700 if k < 1024 else 300, 2, seed=k)
    assert result.distribution.shape == (3, k)
    np.testing.assert_allclose(result.distribution.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(np.isfinite(result.realized_mean_payoff))


def test_auto_picks_agents_on_a_gpu_platform_only():
    spec = plan.kernel_spec(
        "fast",
        GAME,
        learner(),
        num_agents=10**6,
        num_stages=10,
        max_stage_length=12,
        block_size=None,
        platform="cuda",
        memory_bytes=141 * 10**9,
    )
    # One block per device: the test session's two CPU devices, or the GPUs present.
    assert spec.fast_path == "agents" and spec.num_blocks == min(2, jax.device_count())
    assert spec.block_size % spec.tile_size == 0 and spec.agent_events >= 1
    cpu = plan.kernel_spec(
        "fast",
        GAME,
        learner(),
        num_agents=10**6,
        num_stages=10,
        max_stage_length=12,
        block_size=None,
        platform="cpu",
    )
    assert cpu.exploration_path in ("events", "rounds")
    big = plan.kernel_spec(
        "fast",
        js.make_game("congestion", num_actions=8),
        js.StageLearning(stage_length=50, explore_prob=0.05),
        num_agents=10**9,
        num_stages=100,
        max_stage_length=50,
        block_size=None,
        devices=1,
        platform="cuda",
        memory_bytes=141 * 10**9,
    )
    assert big.num_blocks <= 2, big


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="agents"):
        simulation.simulate(GAME, learner(), 100, 1, fast_path="nope")
    with pytest.raises(ValueError, match="fast kernel only"):
        simulation.simulate(GAME, learner(), 100, 1, kernel="reference", fast_path="agents")
    with pytest.raises(ValueError, match="num_events"):
        ae.stream(jnp.uint32(0), jnp.int32(0), jnp.arange(4), 0.1, 10, 20, 16)
    with pytest.raises(ValueError, match="cap"):
        ae.stream(jnp.uint32(0), jnp.int32(0), jnp.arange(4), 0.1, 10, 2, 2**31)
    with pytest.raises(ValueError, match="prob"):
        ae.max_events(10, 10, 1.5)
    with pytest.raises(ValueError, match="block_size"):
        AGENTS(GAME, learner(), 100, 1, block_size=0)


# --------------------------------------------------------------------------- the reference

AGREEMENT = [
    pytest.param(agreement.test_none_sweep_agrees_with_reference, id="none"),
    pytest.param(agreement.test_payoffs_exact_agrees_with_reference, id="payoffs exact"),
    pytest.param(
        agreement.test_payoffs_sampled_agrees_with_reference,
        id="payoffs sampled",
        marks=pytest.mark.slow,  # 15 s here; the bitwise tests run the mode too
    ),
    pytest.param(
        agreement.test_distribution_exact_agrees_with_reference_and_hand, id="distribution"
    ),
    pytest.param(
        agreement.test_distribution_sampled_agrees_with_reference, id="distribution sampled"
    ),
    pytest.param(
        functools.partial(agreement.test_distribution_noisy_agrees_with_reference, 4),
        id="distribution noisy",
    ),
    pytest.param(
        agreement.test_typed_none_agrees_with_reference, id="types", marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize("check", AGREEMENT)
def test_agrees_with_the_numpy_reference(check, monkeypatch):
    """``tests/test_reference_agreement.py``'s comparisons, run on the agents path."""
    monkeypatch.setattr(js, "simulate", AGENTS)
    monkeypatch.setattr(js, "sweep", AGENTS_SWEEP)
    check()


# --------------------------------------------------------------------------- published counts


@pytest.mark.parametrize("elsewhere", [False, True], ids=["cpu", "gpu-version"])
@pytest.mark.parametrize(("k", "m", "noise"), [(3, 40, 0.0), (3, 40, 0.1), (40, 9000, 0.05)])
def test_sampled_published_counts_are_fasts(k, m, noise, elsewhere, monkeypatch):
    """The agents path's sampled distribution (a histogram: one-hot sums up to 32 actions,
    tile-private bins beyond, off a CPU) is bitwise ``fast.published_payoffs``'s
    (a bincount)."""
    from jaxstage import events, fast

    game = js.make_game("congestion", num_actions=k)
    row = learner("distribution", m, noise)
    spec = plan.kernel_spec(
        "fast",
        game,
        row,
        num_agents=5000,
        num_stages=3,
        max_stage_length=12,
        block_size=None,
        fast_path="agents",
        devices=1,
    )
    padded = -(-3 // spec.chunk_stages) * spec.chunk_stages
    params = plan.run_params(game.default_params(), row, 3, padded, 0.05)
    actions = jnp.asarray(
        np.random.default_rng(k).integers(0, k, spec.padded_agents), fast.action_dtype(k)
    )
    stage_counts = jnp.bincount(actions[: spec.num_agents].astype(jnp.int32), length=k)
    args = (game, spec, params, jnp.uint32(7), jnp.int32(1))
    kwargs = {"actions": actions, "stage_counts": stage_counts, "nonfinite": jnp.int32(0)}
    want = jax.jit(fast.published_payoffs, static_argnums=(0, 1))(*args, **kwargs)
    if elsewhere:  # the GPU version of the histogram, run on the CPU
        monkeypatch.setattr(events, "on_cpu_or_elsewhere", lambda *a, cpu, elsewhere: elsewhere(*a))
    got = jax.jit(agent_stage.published_payoffs, static_argnums=(0, 1))(*args, **kwargs)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------- memory

BIG_GAME = js.make_game("congestion", num_actions=8)
BIG_LEARNER = js.StageLearning(stage_length=50, explore_prob=0.05)


def test_memory_estimate_bounds_the_compiled_program_on_the_cpu():
    """The agents path's estimate bounds XLA's buffer assignment of every program of a
    run (temporaries, arguments and outputs; ``memory_analysis`` on the CPU), and not by
    much past its fixed 64 MiB slack (the H200 figures: docs/gpu.md)."""
    from jaxstage import programs

    private = [
        (8, 2**16, dict(info="payoffs", info_sample_size=10, info_sharing="private")),
        (8, 2**16, dict(info="distribution", info_sample_size=50, info_sharing="private")),
    ]
    cases = [(8, 2**16, "none"), (129, 2**14, "none"), (129, 2**14, "distribution")]
    for k, n, info in [(k, n, dict(info=info)) for k, n, info in cases] + private:
        game = js.make_game("congestion", num_actions=k)
        row = js.StageLearning(stage_length=50, explore_prob=0.05, **info)
        run = programs.simulate_programs(game, row, n, 10, fast_path="agents")
        spec = run[0].spec
        peak = 0
        for program in run:
            memory = programs.lower(program).compile().memory_analysis()
            peak = max(
                peak,
                memory.temp_size_in_bytes
                + memory.argument_size_in_bytes
                + memory.output_size_in_bytes
                - memory.alias_size_in_bytes,
            )
        estimate = plan.estimate_memory_bytes(n, k, row, spec=spec)
        slack = spec.num_shards * (64 * 2**20 + plan.deviation_bytes(k))
        assert peak <= estimate, (k, info, peak, estimate)
        assert estimate - slack <= 4 * peak, (k, info, peak, estimate)


def _big_spec(memory_bytes):
    return plan.kernel_spec(
        "fast",
        BIG_GAME,
        BIG_LEARNER,
        num_agents=10**9,
        num_stages=100,
        max_stage_length=50,
        block_size=None,
        fast_path="agents",
        devices=1,
        platform="cuda",
        memory_bytes=memory_bytes,
    )


def test_a_billion_agents_fit_an_h200():
    """10^9 agents, k = 8: two blocks of about 96 GB estimated (the H200 compile's
    temporaries: 61.5 GB) plus 2 GB of stage actions, below an H200's 141 GB (the rounds
    path's estimate, 240 GB, would refuse it). The device's memory, not this host's."""
    spec = _big_spec(141 * 10**9)
    needed = plan.estimate_memory_bytes(10**9, 8, BIG_LEARNER, spec=spec)
    assert spec.num_blocks == 2 and 62 * 10**9 < needed < 141 * 10**9, needed
    plan.check_memory(spec, BIG_LEARNER, batch=1, limit=141 * 10**9, platform="cuda")
    # No limit: the platform's device memory (agent_stage.DEFAULT_DEVICE_MEMORY here, with
    # no CUDA device), whatever this host has.
    assert plan.memory_available_bytes("cuda") == 141 * 10**9
    plan.check_memory(spec, BIG_LEARNER, batch=1, limit=None, platform="cuda")


def test_a_run_that_cannot_fit_the_device_is_refused_by_name():
    spec = _big_spec(1.5 * 10**9)  # less than the 2 GB of stage actions, in and out
    with pytest.raises(ValueError, match=r"num_agents=1,000,000,000 .* agents path.* cuda"):
        plan.check_memory(spec, BIG_LEARNER, batch=1, limit=1.5 * 10**9, platform="cuda")
    # A batch of rows holds every row's actions: 100 rows of 10^9 int8 do not fit.
    with pytest.raises(ValueError, match=r"batch 100"):
        plan.check_memory(_big_spec(None), BIG_LEARNER, batch=100, limit=None, platform="cuda")


# --------------------------------------------------------------------------- private


def _private_spec(n: int, k: int, info: str, m: int, stages: int = 1) -> RunSpec:
    return RunSpec(
        num_agents=n,
        num_actions=k,
        type_counts=(n,),
        info=info,
        info_sample_size=m,
        info_noisy=False,
        num_stages=stages,
        chunk_stages=1,
        info_private=True,
    )


def test_scaled_below_is_the_exact_high_word():
    words = np.array([0, 1, 2**31, 2**32 - 1, 123456789, 3_000_000_000], np.uint64)
    for upper in (1, 7, 1000, 2**31 - 1, 2**32 - 1):
        got = np.asarray(crng.scaled_below(jnp.asarray(words, jnp.uint32), upper))
        np.testing.assert_array_equal(got, (words * upper) >> 32)
    with pytest.raises(ValueError, match="upper must be in"):
        crng.scaled_below(jnp.uint32(1), 2**32)


@pytest.mark.parametrize("m", [12, agent_private.DRAWS_UP_TO + 488], ids=["drawn", "multinomial"])
def test_private_sample_counts_follow_the_multinomial_law(m):
    """Each agent's m draws (12: one by one; 1000: as a multinomial) hit action b with
    probability c_b / n (an action nobody plays is never drawn): mean and variance per
    action over 2^16 agents against Multinomial(m, c / n), within 5 standard errors, and
    every row sums to m."""
    counts = np.array([700, 0, 2100, 200], np.int32)  # n = 3000
    n = int(counts.sum())
    spec = _private_spec(n, 4, "distribution", m, stages=1)
    index = jnp.arange(2**16, dtype=jnp.uint32)
    drawn = np.asarray(
        agent_private.sample_action_counts(
            spec, jnp.uint32(5), jnp.int32(2), index, jnp.asarray(counts)
        )
    )
    np.testing.assert_array_equal(drawn.sum(axis=0), m)
    np.testing.assert_array_equal(drawn[1], 0)
    p = counts / n
    size = drawn.shape[1]
    for b in (0, 2, 3):
        mean, var = m * p[b], m * p[b] * (1 - p[b])
        assert abs(drawn[b].mean() - mean) < 5 * np.sqrt(var / size), b
        assert abs(drawn[b].var() - var) < 5 * var * np.sqrt(2 / size) + 1e-9, b
    # Two actions' counts covary as -m p_a p_b.
    cov, want = np.cov(drawn[0], drawn[2])[0, 1], -m * p[0] * p[2]
    assert abs(cov - want) < 5 * np.sqrt(2 / size) * np.sqrt(
        m * p[0] * (1 - p[0]) * m * p[2] * (1 - p[2])
    )


def test_private_samples_are_independent_across_agents_and_stages():
    spec = _private_spec(1000, 2, "distribution", 20, stages=2)
    index = jnp.arange(4096, dtype=jnp.uint32)
    counts = jnp.asarray([500, 500], jnp.int32)
    one = np.asarray(agent_private.sample_action_counts(spec, jnp.uint32(1), 0, index, counts))
    two = np.asarray(agent_private.sample_action_counts(spec, jnp.uint32(1), 1, index, counts))
    assert abs(np.corrcoef(one[0], two[0])[0, 1]) < 0.06  # stages
    assert abs(np.corrcoef(one[0, :-1], one[0, 1:])[0, 1]) < 0.06  # neighbouring agents


def test_private_payoff_samples_pool_the_sampled_agents_own_sums():
    """The agents path's pooled sums are, agent by agent, its own sums plus the rows of
    the agents its draws name, recomputed here from the same table."""
    spec = _private_spec(50, 3, "payoffs", 4, stages=1)
    rng = np.random.default_rng(0)
    sums = rng.normal(size=(50, 3)).astype(np.float32)
    obs = rng.integers(0, 5, size=(50, 3)).astype(np.int32)
    index = jnp.arange(50, dtype=jnp.uint32)
    seed, stage = jnp.uint32(9), jnp.int32(3)
    got_sums, got_counts = agent_private.sampled_table_sums(
        spec, seed, stage, index=index, table_sums=jnp.asarray(sums), table_counts=jnp.asarray(obs)
    )
    want_sums, want_counts = np.zeros((3, 50), np.float32), np.zeros((3, 50), np.int32)
    for j in range(4):
        picked = np.asarray(agent_private.sampled_agent_indices(spec, seed, stage, index, j))
        assert picked.min() >= 0 and picked.max() < 50
        want_sums += sums[picked].T
        want_counts += obs[picked].T
    np.testing.assert_array_equal(np.asarray(got_sums), want_sums)
    np.testing.assert_array_equal(np.asarray(got_counts), want_counts)
