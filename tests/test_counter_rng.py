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
