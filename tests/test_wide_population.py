"""Populations past 2**31 - 1 agents: agent indices as two 32-bit words, counts summed
exactly over the shards as 64-bit values (``RunSpec.wide_counts``), on the loop over
rounds.

The wide counts are checked bitwise against the int32 path at small populations
(``plan.FORCED_WIDE_COUNTS``), their parts against NumPy's int64 arithmetic at indices
past 2**32, and the refusals before any tracing. A whole run past 2**32 agents is the
slow test at the end (in a subprocess with four CPU devices).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstage as js
from jaxstage import counter_rng as crng
from jaxstage import fast_blocks, plan, wide
from jaxstage.spec import RunSpec

LEARNERS = {
    "none": js.StageLearning(stage_length=5, explore_prob=0.1, update_prob=0.4),
    "payoffs": js.StageLearning(stage_length=3, explore_prob=0.1, update_prob=0.3, info="payoffs"),
    "distribution": js.StageLearning(
        stage_length=2, explore_prob=0.1, update_prob=0.3, info="distribution"
    ),
    "distribution-noisy": js.StageLearning(
        stage_length=2, explore_prob=0.1, update_prob=0.3, info="distribution", info_noise_std=0.05
    ),
}


def _fingerprint(result) -> list[np.ndarray]:
    return [
        result.distribution,
        result.distribution_by_type,
        result.nash_gap,
        result.best_reply_fraction,
        result.welfare,
        result.switched_fraction,
        result.played_distribution,
        result.realized_mean_payoff,
        result.final_actions,
    ]


def _assert_bitwise(a, b) -> None:
    for x, y in zip(_fingerprint(a), _fingerprint(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert np.asarray(x).dtype == np.asarray(y).dtype


@pytest.mark.parametrize("game_name", ["congestion", "adoption"])
@pytest.mark.parametrize("mode", sorted(LEARNERS))
@pytest.mark.parametrize("devices", [1, 2])
def test_wide_counts_give_the_int32_numbers_bitwise(monkeypatch, game_name, mode, devices):
    game = js.make_game(game_name)
    kwargs = dict(
        num_agents=30_011,
        num_stages=3,
        seed=4,
        fast_path="rounds",
        block_size=4096,
        devices=devices,
        return_actions=True,
    )
    plain = js.simulate(game, LEARNERS[mode], **kwargs)
    monkeypatch.setattr(plan, "FORCED_WIDE_COUNTS", True)
    widened = js.simulate(game, LEARNERS[mode], **kwargs)
    _assert_bitwise(plain, widened)


def test_wide_counts_give_the_int32_numbers_in_a_sweep(monkeypatch):
    game = js.make_game("congestion", num_actions=3)
    learner = js.StageLearning(stage_length=3, explore_prob=0.1, update_prob=0.5)
    kwargs = dict(num_agents=20_000, num_stages=2, seeds=[1, 2], fast_path="rounds")
    plain = js.sweep(game, learner, **kwargs)
    monkeypatch.setattr(plan, "FORCED_WIDE_COUNTS", True)
    widened = js.sweep(game, learner, **kwargs)
    for field in ("distribution", "nash_gap", "switched_fraction", "realized_mean_payoff"):
        np.testing.assert_array_equal(plain.stack(field), widened.stack(field))


def test_wide_counts_resume_from_a_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setattr(plan, "FORCED_WIDE_COUNTS", True)
    game = js.make_game("congestion")
    learner = js.StageLearning(stage_length=3, explore_prob=0.1, update_prob=0.5)
    kwargs = dict(num_agents=10_000, num_stages=4, seed=2, fast_path="rounds")
    whole = js.simulate(game, learner, **kwargs)
    js.simulate(game, learner, **kwargs, checkpoint_dir=tmp_path, checkpoint_every=2)
    resumed = js.resume(tmp_path)
    np.testing.assert_array_equal(whole.distribution, resumed.distribution)
    np.testing.assert_array_equal(whole.switched_fraction, resumed.switched_fraction)


def test_wide_psum_is_exact_near_the_int32_limit():
    devices = jax.devices()[:2]
    if len(devices) < 2:
        pytest.skip("needs two devices")
    mesh = jax.sharding.Mesh(np.asarray(devices), ("agents",))
    values = np.asarray([[2**31 - 1, 0, 65_535, 123_456_789], [2**31 - 1, 1, 1, 2**31 - 2]])

    def total(x):
        return wide.wide_psum(x[0], "agents")

    summed = jax.shard_map(
        total,
        mesh=mesh,
        in_specs=jax.sharding.PartitionSpec("agents"),
        out_specs=jax.sharding.PartitionSpec(),
        check_vma=False,
    )(jnp.asarray(values, jnp.int32))
    np.testing.assert_array_equal(wide.to_int64(jax.device_get(summed)), values.sum(axis=0))


def _spec(num_agents: int, block_size: int, num_shards: int, type_counts) -> RunSpec:
    return RunSpec(
        num_agents=num_agents,
        num_actions=2,
        type_counts=tuple(type_counts),
        info="none",
        info_sample_size=None,
        info_noisy=False,
        num_stages=1,
        chunk_stages=1,
        kernel="fast",
        block_size=block_size,
        max_stage_length=1,
        num_shards=num_shards,
        wide_counts=True,
    )


def test_block_words_types_and_padding_past_2_32():
    """Every block's first index (high and low words), validity and types on five shards
    of a population of 2**33 + 5 agents (the shards mapped with ``vmap`` over the mesh
    axis, as ``shard_map`` would run them), against NumPy int64 arithmetic: shards start
    past 2**32 and a type boundary lies past 2**32 + 2**31."""
    n, block, shards = 2**33 + 5, 2**22, 5
    types = (2**32 + 2**31 + 3, n - (2**32 + 2**31 + 3))
    spec = _spec(n, block, shards, types)
    local = spec.local_blocks
    assert local * block <= plan.MAX_PADDED_AGENTS
    # The first and the last eight agents of each block.
    offsets = np.concatenate([np.arange(8), block - 8 + np.arange(8)]).astype(np.uint32)

    def on_shard(_):
        def one(block_index):
            high, low = fast_blocks.block_words(spec, block_index)
            index = low + jnp.asarray(offsets)
            kinds = fast_blocks.types_of(spec, index, high)
            return high, low, fast_blocks._is_agent(spec, index, high), kinds

        return jax.vmap(one)(jnp.arange(local))

    out = jax.vmap(on_shard, axis_name=fast_blocks.AGENT_AXIS)(jnp.zeros(shards))
    high, low, valid, kinds = (np.asarray(x).reshape(shards * local, -1) for x in out)
    high, low = high[:, 0], low[:, 0]
    starts = np.arange(shards * local, dtype=np.int64) * block
    np.testing.assert_array_equal(high, starts >> 32)
    np.testing.assert_array_equal(low, starts & 0xFFFFFFFF)
    agents = starts[:, None] + offsets[None, :].astype(np.int64)
    np.testing.assert_array_equal(valid, agents < n)
    np.testing.assert_array_equal(kinds, (agents >= types[0]).astype(np.int32))
    assert high.max() == 2 and 0 < valid.sum() < valid.size  # past 2**33, and padding


def test_high_word_keys():
    """High word 0 keeps the plain seed's keys (every population below 2**32 keeps its
    numbers); other high words give other streams; per-agent high words give each
    agent its block's key."""
    seed, index = jnp.uint32(9), jnp.arange(4096, dtype=jnp.uint32)
    plain = crng.random_bits(crng.stream_key(seed, 3, 1), index)
    zero = crng.random_bits(crng.stream_key(crng.Seed(seed, jnp.uint32(0)), 3, 1), index)
    one = crng.random_bits(crng.stream_key(crng.Seed(seed, jnp.uint32(1)), 3, 1), index)
    two = crng.random_bits(crng.stream_key(crng.Seed(seed, jnp.uint32(2)), 3, 1), index)
    np.testing.assert_array_equal(plain, zero)
    assert np.mean(np.asarray(plain) == np.asarray(one)) < 0.01
    assert np.mean(np.asarray(one) == np.asarray(two)) < 0.01
    highs = jnp.asarray(np.repeat(np.arange(4, dtype=np.uint32), 1024))
    mixed = crng.random_bits(crng.stream_key(crng.Seed(seed, highs), 3, 1), index)
    by_block = [
        crng.random_bits(crng.stream_key(crng.Seed(seed, jnp.uint32(h)), 3, 1), index)
        for h in range(4)
    ]
    expected = np.concatenate(
        [np.asarray(b)[h * 1024 : (h + 1) * 1024] for h, b in enumerate(by_block)]
    )
    np.testing.assert_array_equal(mixed, expected)


BIG = 2**32 + 1  # past int32: wide counts, and more than two devices of 2**31 agents


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel="reference"), "reference kernel's limit"),
        (dict(fast_path="events"), "events path's limit"),
        (dict(fast_path="agents"), "agents path's limit"),
        (dict(block_size=3 * 2**20), "must be a power of two"),
        (dict(), "at least 3 devices"),
    ],
)
def test_past_int32_refusals_come_before_any_work(kwargs, message):
    game = js.make_game("congestion")
    learner = js.StageLearning(stage_length=2)
    with pytest.raises(ValueError, match=message):
        js.simulate(game, learner, num_agents=BIG, num_stages=1, **kwargs)


def test_sampled_information_runs_past_int32():
    """Sampled information is planned past 2**31 - 1 (on the loop over rounds): what
    stops this one is the devices, not the sample."""
    learner = js.StageLearning(stage_length=2, info="payoffs", info_sample_size=10)
    with pytest.raises(ValueError, match="at least 3 devices"):
        js.simulate(js.make_game("congestion"), learner, num_agents=BIG, num_stages=1)


SAMPLED = {
    "payoffs": js.StageLearning(
        stage_length=2, explore_prob=0.2, update_prob=0.5, info="payoffs", info_sample_size=500
    ),
    "distribution": js.StageLearning(
        stage_length=1, explore_prob=0.1, update_prob=0.5, info="distribution",
        info_sample_size=300, info_noise_std=0.02,
    ),
}  # fmt: skip


@pytest.mark.parametrize("mode", sorted(SAMPLED))
@pytest.mark.parametrize(
    "num_agents, devices",
    [(30_011, 1), (30_011, 2), (2**24 + 4099, 2)],
    ids=["small-1", "small-2", "past-2**24-2"],
)
def test_sampled_information_with_wide_counts_gives_the_int32_numbers(
    monkeypatch, mode, num_agents, devices
):
    """The sampled agents as index words (``fast_blocks.sample_words``), their shards
    found by word arithmetic and their streams keyed per agent by the high word: the
    int32 path's numbers bitwise, below and past 2**24 (the 48-bit draw)."""
    game = js.make_game("congestion", num_actions=3)
    kwargs = dict(num_agents=num_agents, num_stages=2, seed=5, fast_path="rounds", devices=devices)
    plain = js.simulate(game, SAMPLED[mode], **kwargs)
    monkeypatch.setattr(plan, "FORCED_WIDE_COUNTS", True)
    widened = js.simulate(game, SAMPLED[mode], **kwargs)
    _assert_bitwise(plain, widened)


def test_local_actions_finds_word_indices_across_2_32(monkeypatch):
    """A shard that starts 100 agents below 2**32 holds the agents of both high words;
    ``local_actions`` of word indices against NumPy int64, padding and neighbours of the
    shard included."""
    start = 2**32 - 100
    monkeypatch.setattr(
        fast_blocks,
        "shard_words",
        lambda spec: (jnp.uint32(start >> 32), jnp.uint32(start & 0xFFFFFFFF)),
    )
    spec = _spec(2**33, 1024, 4, (2**33,))
    actions = jnp.asarray(np.arange(1000) % 7, jnp.int8)
    agents = np.asarray(
        [0, start - 1, start, start + 99, 2**32, start + 999, start + 1000, 2**33 - 1,
         2**32 + 2**31, start + 500, 2**32 - 1, 2**32 + 899, 2**32 + 900],
        np.int64,
    )  # fmt: skip
    words = fast_blocks.WideIndex(
        jnp.asarray((agents >> 32).astype(np.uint32)),
        jnp.asarray((agents & 0xFFFFFFFF).astype(np.uint32)),
    )
    got, here = fast_blocks.local_actions(spec, actions, words)
    local = agents - start
    expected_here = (local >= 0) & (local < 1000)
    np.testing.assert_array_equal(here, expected_here)
    expected = np.where(expected_here, np.asarray(actions)[np.clip(local, 0, 999)], 0)
    np.testing.assert_array_equal(np.where(here, got, 0), expected)


def test_populations_past_the_limit_are_refused():
    with pytest.raises(ValueError, match="num_agents"):
        js.simulate(js.make_game("congestion"), js.StageLearning(), 2**40 + 1, 1)


_PAST_2_32 = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jaxstage as js
    from jaxstage import fast_blocks
    js.use_cpu_cores(int(sys.argv[1]))
    n = 2**32 + 2**21 + 7
    game = js.make_game("congestion", num_actions=2)
    learner = js.StageLearning(stage_length=1, explore_prob=0.05, update_prob=1.0)
    sim = js.Simulation(game, learner, num_agents=n, num_stages=1)
    state = sim.init(11)
    # Agents 0 .. 2**20 and 2**32 .. 2**32 + 2**20: equal initial actions would mean the
    # high word of the index is ignored by the random streams.
    probe = {}
    for shard in state.actions.addressable_shards:
        start = shard.index[0].start or 0
        data = np.asarray(shard.data)
        for name, at in (("low", 0), ("high", 2**32)):
            if start <= at < start + data.shape[0]:
                probe[name] = data[at - start : at - start + 2**20].astype(int).tolist()
    state, records = sim.advance(state, 1, donate=True)
    result = sim.result(records)
    del state
    # Sampled published payoffs: a sample of 2**16 agents, some of them past 2**32.
    sampled = js.StageLearning(
        stage_length=1, explore_prob=0.05, update_prob=1.0, info="payoffs",
        info_sample_size=2**16,
    )
    sampled_sim = js.Simulation(game, sampled, num_agents=n, num_stages=1)
    words = fast_blocks.sample_words(sampled_sim.spec, np.uint32(11), np.int32(0))
    _, sampled_records = sampled_sim.advance(sampled_sim.init(11), 1, donate=True)
    sampled_result = sampled_sim.result(sampled_records)
    print(json.dumps(dict(
        sampled_distribution=sampled_result.distribution.tolist(),
        sampled_switched=sampled_result.switched_fraction.tolist(),
        sampled_past_2_32=int(np.sum(np.asarray(words.high) > 0)),
        counts=np.asarray(records.stages.metrics.counts_by_type).tolist(),
        distribution=result.distribution.tolist(),
        switched=result.switched_fraction.tolist(),
        played=result.played_distribution.tolist(),
        same_initial=float(np.mean(np.asarray(probe["low"]) == np.asarray(probe["high"]))),
        devices=result.config["devices"],
    )))
    """
)


@pytest.mark.slow
def test_a_run_past_2_32_agents_is_exact_and_layout_free(tmp_path):
    """2**32 + 2**21 + 7 agents (4.3 GB of int8 actions), one stage, on 3 and on 4 CPU
    devices: the same numbers bitwise; the stage's counts sum to n exactly; agents past
    2**32 draw their own streams; with sampled published payoffs (a sample reaching past
    2**32) the same numbers too."""
    script = tmp_path / "past.py"
    script.write_text(_PAST_2_32)
    env = {**os.environ, "XLA_FLAGS": ""}
    outputs = []
    for devices in (3, 4):
        done = subprocess.run(
            [sys.executable, str(script), str(devices)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    three, four = outputs
    assert (three["devices"], four["devices"]) == (3, 4)
    for key in ("counts", "distribution", "switched", "played"):
        assert three[key] == four[key]
    for key in ("sampled_distribution", "sampled_switched"):
        assert three[key] == four[key]
    assert three["sampled_past_2_32"] > 0  # the draw reaches agents past 2**32
    assert three["sampled_switched"][-1] > 0
    n = 2**32 + 2**21 + 7
    assert int(np.sum(three["counts"])) == n
    assert abs(three["same_initial"] - 0.5) < 0.01  # k = 2: half agree by chance
    assert abs(three["distribution"][0][0] - 0.5) < 1e-4  # uniform initial actions
