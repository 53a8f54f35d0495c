"""Fixed-point sums: exact limbs, no int32 overflow at the layout's limit, the documented
error bound, and the same bits in any order of the terms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage import exact_sum as xs

U = 2.0**-24


def fixed_point_sums(terms: np.ndarray, bound: float, max_terms: int) -> np.ndarray:
    """Row sums of ``(rows, terms)`` float32 terms through int32 limbs."""
    grid = xs.scale(jnp.float32(bound), xs.layout(max_terms))
    limbs = xs.to_limbs(jnp.asarray(terms, jnp.float32), grid)
    return np.asarray(xs.from_limbs(jnp.sum(limbs, axis=1), grid))


@pytest.mark.parametrize("max_terms", [1, 8, 64, 1024, 16384, 2**20])
def test_layout_bounds_the_limb_sums_and_the_quantisation_error(max_terms):
    fixed = xs.layout(max_terms)
    # The conversion's largest int32 value (module docstring) stays in range.
    assert max_terms * 2**fixed.limb_bits + max_terms / 2 + 3 <= 2**31 - 1
    # The quantisation error of a sum is at most u * bound.
    assert max_terms * 2.0**-fixed.value_bits <= U
    # Fewest limbs: one less would not hold the error.
    fewer = xs.Layout(fixed.limbs - 1, fixed.limb_bits)
    assert fixed.limbs == 1 or max_terms * 2.0**-fewer.value_bits > U


def test_layout_refuses_too_many_terms():
    with pytest.raises(ValueError, match="max_terms"):
        xs.layout(2**20 + 1)


@pytest.mark.parametrize("max_terms", [8, 64, 16384])
def test_limbs_are_in_range_and_represent_the_quantised_term(max_terms):
    """Each limb is at most 2**b; the limbs' value is the term rounded to the quantum."""
    rng = np.random.default_rng(max_terms)
    fixed = xs.layout(max_terms)
    bound = 3.7
    values = np.concatenate(
        [rng.uniform(-bound, bound, 10_000), [bound, -bound, 0.0, 1e-30, -1e-30, 2.0**-40]]
    ).astype(np.float32)
    grid = xs.scale(jnp.float32(bound), fixed)
    limbs = np.asarray(xs.to_limbs(jnp.asarray(values), grid)).astype(np.int64)
    assert np.max(np.abs(limbs)) <= 2**fixed.limb_bits
    weights = 2 ** (fixed.shift * np.arange(fixed.limbs - 1, -1, -1, dtype=np.int64))
    quanta = limbs @ weights
    exponent = math.frexp(bound)[1]
    exact = values.astype(np.float64) * 2.0 ** (fixed.value_bits - exponent)
    assert np.max(np.abs(quanta - exact)) <= 0.5


@pytest.mark.parametrize("max_terms", [8, 64, 16384])
def test_largest_sums_do_not_overflow(max_terms):
    """``max_terms`` terms of ``+bound`` (or ``-bound``) in one cell: exact, no wrap."""
    fixed = xs.layout(max_terms)
    bound = float(np.float32(2.5))
    for sign in (1.0, -1.0):
        terms = np.full((1, max_terms), sign * bound, np.float32)
        grid = xs.scale(jnp.float32(bound), fixed)
        limb_sums = jnp.sum(xs.to_limbs(jnp.asarray(terms), grid), axis=1)
        assert int(jnp.max(jnp.abs(limb_sums))) <= max_terms * 2**fixed.limb_bits
        got = float(xs.from_limbs(limb_sums, grid)[0])
        assert got == sign * bound * max_terms


@pytest.mark.parametrize("max_terms", [8, 64, 16384])
@pytest.mark.parametrize("kind", ["uniform", "cancelling", "tiny and large"])
def test_error_is_within_the_documented_bound(max_terms, kind):
    """``|result - S| <= u * bound + 1.01 (2m - 1) u (|S| + u * bound)`` against exact
    (``math.fsum``) sums of the float32 terms."""
    rng = np.random.default_rng(max_terms)
    bound = 10.0 ** rng.uniform(-3, 3)
    rows = 200
    terms = rng.uniform(-bound, bound, (rows, max_terms)).astype(np.float32)
    if kind == "cancelling":
        half = max_terms // 2
        terms[:, half : 2 * half] = -terms[:, :half]
    elif kind == "tiny and large":
        terms[:, 1:] *= 2.0**-30
    exact = np.array([math.fsum(row) for row in terms.astype(np.float64)])
    got = fixed_point_sums(terms, bound, max_terms).astype(np.float64)
    limbs = xs.layout(max_terms).limbs
    allowed = U * bound + 1.01 * (2 * limbs - 1) * U * (np.abs(exact) + U * bound)
    assert np.all(np.abs(got - exact) <= allowed)


def test_sums_are_the_same_bits_in_any_order():
    """Permuting the terms of each cell never changes a bit (float32 sums do change)."""
    rng = np.random.default_rng(7)
    terms = rng.normal(size=(500, 64)).astype(np.float32) * np.float32(3.0)
    grid = xs.scale(jnp.float32(20.0), xs.layout(64))
    limbs = xs.to_limbs(jnp.asarray(terms), grid)
    first = np.asarray(xs.from_limbs(jnp.sum(limbs, axis=1), grid))
    float_first = np.sum(terms, axis=1, dtype=np.float32)
    float_changed = False
    for _ in range(5):
        order = rng.permutation(64)
        again = np.asarray(xs.from_limbs(jnp.sum(limbs[:, order], axis=1), grid))
        np.testing.assert_array_equal(again, first)
        float_again = np.cumsum(terms[:, order], axis=1, dtype=np.float32)[:, -1]
        float_changed |= bool(np.any(float_again != float_first))
    assert float_changed  # the test can tell order-dependent sums apart


def test_non_finite_bound_gives_nan():
    grid = xs.scale(jnp.float32(np.inf), xs.layout(64))
    limbs = xs.to_limbs(jnp.asarray([1.0, 2.0], jnp.float32), grid)
    assert np.all(np.isnan(np.asarray(xs.from_limbs(limbs, grid))))


def test_tiny_and_huge_bounds():
    """Bounds from 0 to near float32's largest keep the grid's powers of two normal;
    below ``2**-64`` the quantum stays at ``2**(-64 - F)`` (module docstring)."""
    fixed = xs.layout(64)
    for bound in (0.0, 1e-30, 1e-10, 1e30, 3e38):
        grid = xs.scale(jnp.float32(bound), fixed)
        values = jnp.asarray([bound, -bound / 3, 0.0], jnp.float32)
        got = np.asarray(xs.from_limbs(xs.to_limbs(values, grid), grid))
        assert np.all(np.isfinite(got))
        quantum = 2.0 ** (max(math.frexp(bound)[1], -64) - fixed.value_bits)
        np.testing.assert_allclose(got, np.asarray(values), rtol=3 * U, atol=quantum / 2)


def test_jit_traces_once_for_every_bound():
    traces = []

    @jax.jit
    def round_trip(values, bound):
        traces.append(1)
        grid = xs.scale(bound, xs.layout(64))
        return xs.from_limbs(xs.to_limbs(values, grid), grid)

    for bound in (1.0, 7.0, 1e6):
        round_trip(jnp.ones(3, jnp.float32), jnp.float32(bound))
    assert len(traces) == 1
