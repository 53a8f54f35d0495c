"""Statistical quality of the counter-based generator (would catch a biased or
correlated stream, e.g. an unmixed ``index ^ key``)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage import counter_rng as crng

N = 1 << 20
INDEX = jnp.arange(N, dtype=jnp.uint32)


def draws(*coordinates, seed=7):
    return np.asarray(crng.uniform(crng.stream_key(seed, *coordinates), INDEX), np.float64)


def chi_square_ok(counts, expected):
    """Chi-square within 5 standard deviations of its mean (df = buckets - 1)."""
    df = len(counts) - 1
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    return abs(statistic - df) < 5 * np.sqrt(2 * df), statistic


def test_uniforms_are_uniform_in_256_buckets():
    counts = np.bincount((draws(0, 0, 0) * 256).astype(int), minlength=256)
    ok, statistic = chi_square_ok(counts, N / 256)
    assert ok, statistic


def test_every_output_bit_is_balanced():
    bits = np.asarray(crng.random_bits(crng.stream_key(3, 1, 2), INDEX))
    for bit in range(32):
        share = np.mean((bits >> bit) & 1)
        assert abs(share - 0.5) < 5 * 0.5 / np.sqrt(N), (bit, share)


@pytest.mark.parametrize(
    "other",
    [
        lambda u: u[1:],  # the next agent in the same stream
        lambda u: draws(0, 1, 0)[:-1],  # the same agent, next round
        lambda u: draws(1, 0, 0)[:-1],  # the same agent, next stage
        lambda u: draws(0, 0, 0, seed=8)[:-1],  # the same agent, next seed
    ],
    ids=["next-agent", "next-round", "next-stage", "next-seed"],
)
def test_neighbouring_streams_are_uncorrelated(other):
    u = draws(0, 0, 0)
    r = np.corrcoef(u[:-1], other(u))[0, 1]
    assert abs(r) < 5 / np.sqrt(N), r


def test_pairs_fill_the_unit_square_evenly():
    u = draws(2, 5, 1)
    cells = (u[0::2] * 16).astype(int) * 16 + (u[1::2] * 16).astype(int)
    ok, statistic = chi_square_ok(np.bincount(cells, minlength=256), (N / 2) / 256)
    assert ok, statistic


@pytest.mark.parametrize("upper", [2, 3, 7, 32])
def test_randint_is_uniform(upper):
    values = np.asarray(crng.randint(crng.stream_key(1, upper), INDEX, upper))
    assert values.min() == 0 and values.max() == upper - 1
    ok, statistic = chi_square_ok(np.bincount(values, minlength=upper), N / upper)
    assert ok, statistic


def test_normals_have_normal_moments_and_tails():
    z = np.asarray(crng.normal(crng.stream_key(5, 5), INDEX), np.float64)
    assert np.all(np.isfinite(z))
    assert abs(z.mean()) < 5 / np.sqrt(N)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / N)
    assert abs(np.mean(z**4) - 3) < 5 * np.sqrt(96 / N)
    # P(|Z| > 3) = 0.0027.
    assert abs(np.mean(np.abs(z) > 3) - 0.0027) < 5 * np.sqrt(0.0027 / N)


def test_stream_keys_do_not_collide_over_a_grid_of_coordinates():
    keys = {
        tuple(np.asarray(crng.stream_key(seed, stage, stream, r)).tolist())
        for seed in range(4)
        for stage in range(8)
        for stream in range(4)
        for r in range(8)
    }
    assert len(keys) == 4 * 8 * 4 * 8


def test_triple32_is_a_bijection_on_a_sample():
    x = np.asarray(crng.triple32(jnp.arange(1 << 16, dtype=jnp.uint32)))
    assert len(np.unique(x)) == 1 << 16


def test_normals_are_finite_for_every_word():
    # The top 24-bit word gave ndtri(1.0) = +inf (one draw in 2^24): clamped below 1.
    from jaxstage.counter_rng import normal_from_bits

    words = jnp.arange(2**24, dtype=jnp.uint32) << 8
    z = np.asarray(normal_from_bits(words))
    assert np.all(np.isfinite(z))
    assert z.max() < 5.3 and z.min() > -5.5


@pytest.mark.parametrize("upper", [2**24 + 1, 123_456_789, 10**8, 3 * 2**29, 2**31 - 1])
def test_index_below_is_the_exact_48_bit_floor(upper):
    """``index_below`` against Python's exact integers, extreme words included."""
    rng = np.random.default_rng(upper)
    first = rng.integers(0, 2**32, 50_000, dtype=np.uint64)
    second = rng.integers(0, 2**32, 50_000, dtype=np.uint64)
    first[:2], second[:2] = [0, 2**32 - 1], [0, 2**32 - 1]
    got = np.asarray(
        crng.index_below(
            jnp.asarray(first.astype(np.uint32)), jnp.asarray(second.astype(np.uint32)), upper
        )
    )
    words = [((int(f) >> 8) << 24) | (int(s) >> 8) for f, s in zip(first, second, strict=True)]
    np.testing.assert_array_equal(got, [(w * upper) >> 48 for w in words])
    assert got.min() >= 0 and got.max() < upper


@pytest.mark.parametrize(
    "upper", [1, 3, 2**24 + 1, 2**31 - 1, 2**31, 2**32 + 5, 10**10, 2**40, 2**48 - 1]
)
def test_index_words_below_is_the_exact_48_bit_floor(upper):
    """``index_words_below`` (populations to 2**40) against Python's exact integers,
    extreme words included, and the same index as ``index_below`` below 2**31."""
    rng = np.random.default_rng(upper % 2**32)
    first = rng.integers(0, 2**32, 20_000, dtype=np.uint64)
    second = rng.integers(0, 2**32, 20_000, dtype=np.uint64)
    first[:3], second[:3] = [0, 2**32 - 1, 2**32 - 1], [0, 2**32 - 1, 0]
    first, second = jnp.asarray(first.astype(np.uint32)), jnp.asarray(second.astype(np.uint32))
    high, low = crng.index_words_below(first, second, upper)
    got = np.asarray(high).astype(object) * 2**32 + np.asarray(low).astype(object)
    words = [((int(f) >> 8) << 24) | (int(s) >> 8) for f, s in zip(first, second, strict=True)]
    np.testing.assert_array_equal(got, [(w * upper) >> 48 for w in words])
    if upper < 2**31:
        np.testing.assert_array_equal(crng.index_below(first, second, upper), np.asarray(low))
    with pytest.raises(ValueError, match="upper"):
        crng.index_words_below(first, second, 2**48)


def test_sampled_agents_past_2_24_reach_every_agent():
    """Past 2**24 agents a 24-bit uniform reached only every sixth agent of 10**8 (its
    draws are multiples of 10**8 / 2**24 = 5.96, rounded down); the 48-bit draws reach
    every residue. Up to 2**24 agents the draws are those of earlier releases."""
    from jaxstage import fast_blocks
    from jaxstage.spec import RunSpec

    def spec(n):
        return RunSpec(
            num_agents=n, num_actions=2, type_counts=(n,), info="payoffs",
            info_sample_size=2**20, info_noisy=False, num_stages=1, chunk_stages=1,
        )  # fmt: skip

    sampled = np.asarray(fast_blocks.sample_indices(spec(10**8), jnp.uint32(3), jnp.int32(1)))
    assert sampled.min() >= 0 and sampled.max() < 10**8
    assert np.all(np.bincount(sampled % 6, minlength=6) > 0.16 * sampled.size)
    # The 24-bit draws all fell on this lattice of 2**24 agents; the 48-bit ones rarely do.
    lattice = np.floor(np.arange(2**24, dtype=np.float64) / 2**24 * 10**8).astype(np.int64)
    assert np.mean(np.isin(sampled, lattice)) < 0.25
    small = np.asarray(fast_blocks.sample_indices(spec(2**24), jnp.uint32(3), jnp.int32(1)))
    u = np.asarray(
        crng.uniform(
            crng.stream_key(jnp.uint32(3), jnp.int32(1), fast_blocks.SAMPLE_STREAM),
            jnp.arange(2**20, dtype=jnp.uint32),
        )
    )
    np.testing.assert_array_equal(small, np.minimum(np.floor(u * 2**24), 2**24 - 1))
