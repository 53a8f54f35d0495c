"""Counter-based random numbers keyed by (seed, stage, round, stream, agent index).

Every random number of the fast kernel is a pure function of its coordinates, so results
do not depend on how agents are split into blocks, chunks or devices, and any number can
be recomputed instead of stored (the two-pass stage of :mod:`jaxstage.fast` relies on
that). The mixing function is ``triple32`` from Chris Wellons' hash prospector, an
invertible 32-bit hash with very low avalanche bias; a value is
``triple32(triple32(index ^ key_a) + key_b)`` where the two 32-bit words of the key are
themselves hashed from the coordinates. On a CPU this costs a few integer operations per
number, several times less than JAX's default threefry generator.

Conversions:

* uniforms in ``[0, 1)`` take the top 24 bits (every float32 value ``j / 2**24``);
* an integer in ``[0, k)`` is ``floor(u * k)``: bucket sizes differ by at most one part in
  ``2**24 / k`` (``5e-7`` relative for ``k = 8``);
* normals are ``ndtri`` of a uniform on the open interval ``(0, 1)``.

Agent indices are 32-bit words. Past ``2**32`` agents an agent's index is
``high * 2**32 + lo``: its streams take the key of :class:`Seed` ``(seed, high)``, which
is the plain seed's key when ``high == 0`` (so every population below ``2**32`` keeps
its numbers, bitwise) and otherwise the key of the same coordinates extended by
``high``. The fast kernel's blocks are powers of two aligned on their size, so a block
never straddles a multiple of ``2**32`` and its ``high`` is one scalar.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Seed",
    "triple32",
    "stream_key",
    "index_below",
    "index_words_below",
    "scaled_below",
    "random_bits",
    "uniform",
    "randint",
    "normal",
]

_BELOW_ONE = 1.0 - 2.0**-24
_INV_2_24 = 1.0 / 2**24


def triple32(x: jax.Array) -> jax.Array:
    """The ``triple32`` 32-bit integer hash (a bijection of uint32)."""
    x = jnp.asarray(x, jnp.uint32)
    x = x ^ (x >> 17)
    x = x * jnp.uint32(0xED5AD4BB)
    x = x ^ (x >> 11)
    x = x * jnp.uint32(0xAC4C1B51)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x31848BAB)
    return x ^ (x >> 14)


#: Separates the coordinates of a stream from the high word of the agents' indices.
HIGH_WORD_MARK = 0x48494748


class Seed(NamedTuple):
    """A run's seed for the agents whose global index is ``high * 2**32 + lo``
    (``high``: a uint32 scalar for a block, or one word per agent)."""

    value: jax.Array
    high: jax.Array


def stream_key(seed: jax.Array | int | Seed, *coordinates: jax.Array | int) -> jax.Array:
    """A ``(2,)`` uint32 key for the stream at the given coordinates (stage, round, ...);
    for a :class:`Seed` whose ``high`` is an array, ``(2, *high.shape)`` keys."""
    if isinstance(seed, Seed):
        high = jnp.asarray(seed.high, jnp.uint32)
        base = stream_key(seed.value, *coordinates)
        extended = stream_key(seed.value, *coordinates, HIGH_WORD_MARK, high)
        return jnp.where(high == 0, base.reshape(base.shape + (1,) * high.ndim), extended)
    state = triple32(jnp.asarray(seed, jnp.uint32) ^ jnp.uint32(0x9E3779B9))
    for coordinate in coordinates:
        state = triple32(state + triple32(jnp.asarray(coordinate, jnp.uint32) + 0x632BE5AB))
    return jnp.stack([state, triple32(state ^ jnp.uint32(0x85EBCA6B))])


def random_bits(key: jax.Array, index: jax.Array) -> jax.Array:
    """32 random bits for each ``index`` (uint32 agent indices) of the stream ``key``
    (``(2,)``, or ``(2, *index.shape)``: one key per index)."""
    return triple32(triple32(jnp.asarray(index, jnp.uint32) ^ key[0]) + key[1])


def uniform(key: jax.Array, index: jax.Array) -> jax.Array:
    """Uniforms in ``[0, 1)`` with 24-bit resolution, float32."""
    return (random_bits(key, index) >> 8).astype(jnp.float32) * _INV_2_24


def randint(key: jax.Array, index: jax.Array, upper: int) -> jax.Array:
    """Integers in ``[0, upper)`` as int32 (``floor(u * upper)``)."""
    return jnp.floor(uniform(key, index) * upper).astype(jnp.int32)


def normal(key: jax.Array, index: jax.Array) -> jax.Array:
    """Standard normals, float32, from the inverse normal CDF of an open-interval uniform.

    For the top 24-bit word ``(2**24 - 0.5) / 2**24`` rounds to 1.0 in float32, where
    ``ndtri`` is ``+inf`` (one draw in ``2**24``): it is clamped to the largest float32
    below 1 (``z = 5.29``); every other word keeps its value, so every finite draw is
    unchanged."""
    return normal_from_bits(random_bits(key, index))


def normal_from_bits(bits: jax.Array) -> jax.Array:
    """The standard normal :func:`normal` makes of 32 random bits (their top 24)."""
    open_uniform = ((bits >> 8).astype(jnp.float32) + 0.5) * _INV_2_24
    return jax.scipy.special.ndtri(jnp.minimum(open_uniform, _BELOW_ONE))


def scaled_below(bits: jax.Array, upper: int) -> jax.Array:
    """uint32 ``floor(w * upper / 2**32)`` of uint32 words ``w``, exactly (for
    ``1 <= upper <= 2**32 - 1``): the ranks below ``r`` take ``ceil(r * 2**32 / upper)``
    words, so any range of ranks is hit with its share of ``upper`` to within
    ``2**-32``."""
    if not 1 <= upper < 2**32:
        raise ValueError(f"upper must be in [1, 2**32), got {upper}")
    return _product(jnp.asarray(bits, jnp.uint32), jnp.uint32(upper))[0]


def _product(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The exact 64-bit product of uint32 ``x`` and ``y`` as (high, low) uint32 words,
    from 16-bit halves (each partial product fits 32 bits)."""
    x1, x0 = x >> 16, x & 0xFFFF
    y1, y0 = y >> 16, y & 0xFFFF
    low = x0 * y0
    middle_a, middle_b = x1 * y0, x0 * y1
    middle = middle_a + middle_b
    middle_carry = (middle < middle_a).astype(jnp.uint32)  # the sum wrapped past 2**32
    shifted = middle << 16
    lo = low + shifted
    carry = (lo < low).astype(jnp.uint32)
    hi = x1 * y1 + (middle >> 16) + (middle_carry << 16) + carry
    return hi, lo


def _add(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x + y`` of uint32 words as (carry, low word)."""
    total = x + y
    return (total < x).astype(jnp.uint32), total


def index_words_below(
    first: jax.Array, second: jax.Array, upper: int
) -> tuple[jax.Array, jax.Array]:
    """:func:`index_below` for ``1 <= upper < 2**48``: ``floor(w * upper / 2**48)`` as
    uint32 (high, low) words of the index (``high * 2**32 + low``), the same index as
    :func:`index_below` where both apply.

    ``w = W1 * 2**32 + W0`` (``W1 < 2**16``) and ``upper = U1 * 2**32 + U0`` (``U1 <
    2**16``) give a 96-bit product of three words from four exact 64-bit partial
    products; the index is its bits 48 to 95."""
    if not 1 <= upper < 2**48:
        raise ValueError(f"upper must be in [1, 2**48), got {upper}")
    a, b = first >> 8, second >> 8
    w1, w0 = a >> 8, ((a & 0xFF) << 24) | b
    u1, u0 = jnp.uint32(upper >> 32), jnp.uint32(upper & 0xFFFFFFFF)
    p00_hi, p00_lo = _product(w0, u0)
    p01_hi, p01_lo = _product(w0, u1)  # weight 2**32
    p10_hi, p10_lo = _product(w1, u0)  # weight 2**32
    p11_lo = w1 * u1  # weight 2**64; < 2**32
    carry_a, word1 = _add(p00_hi, p01_lo)
    carry_b, word1 = _add(word1, p10_lo)
    word2 = p01_hi + p10_hi + p11_lo + carry_a + carry_b  # < 2**32: the product < 2**96
    del p00_lo  # bits 0..31 fall below bit 48
    return word2 >> 16, (word2 << 16) | (word1 >> 16)


def index_below(first: jax.Array, second: jax.Array, upper: int) -> jax.Array:
    """int32 ``floor(w * upper / 2**48)`` of the 48-bit word ``w = a * 2**24 + b`` made of
    the top 24 bits ``a`` of ``first`` and ``b`` of ``second`` (uint32 random words), for
    ``1 <= upper < 2**31``: an index in ``[0, upper)`` whose buckets differ by at most
    one part in ``2**48 / upper`` (``floor(u * upper)`` of a 24-bit uniform reaches only
    ``2**24`` values). Computed exactly in 32-bit integers: it equals
    ``(a * upper + floor(b * upper / 2**24)) >> 24``."""
    a, b = first >> 8, second >> 8
    n = jnp.uint32(upper)
    a_hi, a_lo = _product(a, n)  # < 2**55
    b_hi, b_lo = _product(b, n)  # < 2**55
    rest = (b_hi << 8) | (b_lo >> 24)  # floor(b * n / 2**24) < 2**31
    lo = a_lo + rest
    hi = a_hi + (lo < rest).astype(jnp.uint32)
    return ((hi << 8) | (lo >> 24)).astype(jnp.int32)
