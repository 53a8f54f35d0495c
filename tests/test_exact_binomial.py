"""Exact integer binomial draws (``jaxstage.exact_binomial``).

Statistical checks compare the sample mean and variance of ``S`` draws with
``Binomial(n, p)``'s ``n p`` and ``n p q``, each within ``Z = 5`` standard errors: the
mean's is ``sqrt(n p q / S)``, the sample variance's ``n p q * sqrt(2 / (S - 1) + kappa / S)``
with ``kappa = (1 - 6 p q) / (n p q)`` the excess kurtosis. Keys are fixed, so the tests
are deterministic; a correct sampler fails one with probability about ``6e-7``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.exact_binomial import (
    FLOAT32_EXACT_TRIALS,
    MAX_TRIALS,
    _chunk_layout,
    chunk_slots,
    exact_binomial,
)

Z = 5.0
INT32_MAX = 2**31 - 1


@functools.partial(jax.jit, static_argnames=("samples", "max_total", "max_trials"))
def _samples(seed, counts, p, *, samples, max_total, max_trials=MAX_TRIALS):
    """``(samples, *counts.shape)`` independent draws, one key each."""
    keys = jax.random.split(jax.random.key(seed), samples)
    draw = functools.partial(exact_binomial, max_total=max_total, max_trials=max_trials)
    return jax.vmap(lambda key: draw(key, counts, p))(keys)


def draws(counts, p, samples, *, seed=0, max_trials=MAX_TRIALS):
    counts = jnp.asarray(counts, jnp.int32)
    out = _samples(
        seed,
        counts,
        jnp.float32(p),
        samples=samples,
        max_total=int(np.sum(np.asarray(counts, np.int64))),
        max_trials=max_trials,
    )
    return np.asarray(out, dtype=np.int64)


def assert_binomial_moments(sample, n, p):
    """Mean and variance of ``sample`` within ``Z`` standard errors of Binomial(n, p)."""
    p = float(np.float32(p))  # the probability the draws used
    size = sample.size
    mean, var = n * p, n * p * (1 - p)
    assert sample.min() >= 0 and sample.max() <= n
    if var == 0:
        np.testing.assert_array_equal(sample, mean)
        return
    kurtosis = (1 - 6 * p * (1 - p)) / var
    mean_se = np.sqrt(var / size)
    var_se = var * np.sqrt(2 / (size - 1) + kurtosis / size)
    assert abs(sample.mean() - mean) <= Z * mean_se, (n, p, sample.mean(), mean, mean_se)
    assert abs(sample.var(ddof=1) - var) <= Z * var_se, (n, p, sample.var(ddof=1), var, var_se)


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("counts", "max_trials"),
    [
        ([0, 5, 13, 7, 0, 1, 3, 6], 3),
        ([0, 0, 0], 4),
        ([12], 4),
        ([INT32_MAX], MAX_TRIALS),
        ([2**30, 2**30 - 1], MAX_TRIALS),
        ([0, INT32_MAX, 0], FLOAT32_EXACT_TRIALS),
        ([MAX_TRIALS - 1, MAX_TRIALS, MAX_TRIALS + 1, INT32_MAX - 3 * MAX_TRIALS], MAX_TRIALS),
    ],
)
def test_chunks_partition_every_count_exactly(counts, max_trials):
    """Each count's chunks sum to it, none exceeds ``max_trials``, owners are sorted and
    the slots from ``chunk_slots`` suffice (the unused ones hold 0 trials)."""
    total = sum(counts)
    slots = chunk_slots(total, len(counts), max_trials)
    owner, trials = _chunk_layout(jnp.asarray(counts, jnp.int32), slots, max_trials)
    owner, trials = np.asarray(owner), np.asarray(trials, np.int64)
    assert owner.shape == trials.shape == (slots,)
    assert np.all(np.diff(owner) >= 0) and owner.min() >= 0 and owner.max() < len(counts)
    assert trials.min() >= 0 and trials.max() <= max_trials
    np.testing.assert_array_equal(np.bincount(owner, trials, len(counts)), counts)


def test_one_chunk_is_the_plain_jax_draw_bit_for_bit():
    """Counts whose total fits one chunk are drawn exactly as before the fix."""
    counts = jnp.array([[0, 7, 400], [MAX_TRIALS - 500, 90, 3]], jnp.int32)
    key = jax.random.key(3)
    for p in (0.3, 1.0, 1e-6):
        old = jnp.round(jax.random.binomial(key, counts.astype(jnp.float32), jnp.float32(p)))
        new = exact_binomial(key, counts, jnp.float32(p), max_total=MAX_TRIALS)
        assert new.dtype == jnp.int32
        np.testing.assert_array_equal(new, old.astype(jnp.int32))


@pytest.mark.parametrize(
    "counts",
    [[INT32_MAX], [2**24 + 3, 2**24 - 1, 2**24], [INT32_MAX - 2**24, 2**24]],
    ids=["2**31-1", "around 2**24", "two large"],
)
def test_draws_never_exceed_their_count(counts):
    """``0 <= draw <= count`` for every draw, including p = 0, 1 and near them, and all
    trials succeed at p = 1 (every unhappy agent moves with inertia 1)."""
    for p in (0.0, 1e-9, 0.5, 1 - 2**-24, 1.0):
        sample = draws(counts, p, 8, seed=11)
        assert sample.min() >= 0 and np.all(sample <= np.asarray(counts)), (p, sample)
        if p == 0.0:
            assert not sample.any()
        if p == 1.0:
            np.testing.assert_array_equal(sample, np.broadcast_to(counts, sample.shape))


# --------------------------------------------------------------------------- distribution


@pytest.mark.parametrize(
    ("n", "p", "samples", "max_trials"),
    [
        (0, 0.3, 100, MAX_TRIALS),
        (1000, 0.3, 20_000, MAX_TRIALS),
        # Many small chunks (143 of 7 trials): the summing machinery at full power.
        (1000, 0.3, 20_000, 7),
        (1000, 0.01, 20_000, 7),
        (1000, 0.999, 20_000, 7),
        (2**24 + 3, 1e-3, 2_000, MAX_TRIALS),
        (2**24 + 3, 0.5, 2_000, MAX_TRIALS),
        (2**24 + 3, 1 - 1e-6, 2_000, MAX_TRIALS),
        (INT32_MAX, 1e-9, 100, MAX_TRIALS),
        (INT32_MAX, 0.3, 100, MAX_TRIALS),
        (INT32_MAX, 1 - 2**-23, 100, MAX_TRIALS),
    ],
)
def test_mean_and_variance_match_the_binomial(n, p, samples, max_trials):
    sample = draws([n], p, samples, seed=n % 1000 + 1, max_trials=max_trials)[:, 0]
    assert_binomial_moments(sample, n, p)


def test_unequal_counts_in_one_call_each_follow_their_binomial():
    """A group of 5 beside one of ``2**31 - 6``: the slots are shared, the draws are not."""
    counts = [INT32_MAX - 5, 5]
    sample = draws(counts, 0.4, 100, seed=5)
    assert_binomial_moments(sample[:, 0], counts[0], 0.4)
    sample = draws([5, 2**24 + 3], 0.4, 2_000, seed=6)
    assert_binomial_moments(sample[:, 0], 5, 0.4)
    assert_binomial_moments(sample[:, 1], 2**24 + 3, 0.4)


@pytest.mark.parametrize("p", [0.001, 0.3, 0.5])
def test_jax_sampler_is_unbiased_at_the_chunk_size(p):
    """The chunk size rests on this: 10**6 float32 draws of ``MAX_TRIALS`` trials match
    the binomial's moments within ``Z`` standard errors (JAX's BTRS is off by 27 standard
    errors at ``2**24 - 1`` trials and p = 0.001 in as many draws)."""
    size = 1_000_000
    sample = jax.random.binomial(
        jax.random.key(7), jnp.full((size,), MAX_TRIALS, jnp.float32), jnp.float32(p)
    )
    assert_binomial_moments(np.asarray(sample, np.int64), MAX_TRIALS, p)


# --------------------------------------------------------------------------- validation


def test_validation():
    with pytest.raises(ValueError, match=r"max_trials must be an integer in \[1, 16777215\]"):
        chunk_slots(10, 1, 2**24)
    with pytest.raises(ValueError, match="max_trials"):
        exact_binomial(jax.random.key(0), jnp.array([3]), 0.5, max_total=3, max_trials=0)
    with pytest.raises(TypeError, match="counts must be integers"):
        exact_binomial(jax.random.key(0), jnp.array([3.0]), 0.5, max_total=3)
    with pytest.raises(ValueError, match="max_total >= 0"):
        chunk_slots(-1, 1)
    assert chunk_slots(INT32_MAX, 2) == 2**15 + 2
    assert chunk_slots(0, 3, 5) == 3
