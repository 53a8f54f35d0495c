"""Exact 64-bit counts from 32-bit integers: totals of agent-rounds.

JAX runs with 32-bit integers by default (``jax_enable_x64`` off), and a stage's
agent-rounds of one action reach ``num_agents * stage_length``: past ``2**31`` already at
``2.2e8`` agents and stage length 10. Each round's count fits int32 (at most
``num_agents < 2**31``); their sum is kept exact here as an unsigned 64-bit value in two
uint32 words, ``hi * 2**32 + lo``, added with an explicit carry. Integer addition with
carry is associative, so a reduction gives the same bits in any order, on any backend.
The value is turned into float32 once, where it is used (means, noise scales).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Wide",
    "wide_zeros",
    "wide_from_counts",
    "wide_add",
    "wide_sum",
    "wide_to_float",
    "wide_map",
    "wide_psum",
    "to_int64",
    "host_counts",
]


class Wide(NamedTuple):
    """Non-negative integers ``hi * 2**32 + lo`` (uint32 words of the same shape)."""

    hi: jax.Array
    lo: jax.Array


def wide_zeros(shape) -> Wide:
    return Wide(jnp.zeros(shape, jnp.uint32), jnp.zeros(shape, jnp.uint32))


def wide_from_counts(counts: jax.Array) -> Wide:
    """Non-negative int32 (or uint32) counts as :class:`Wide` values."""
    return Wide(jnp.zeros(counts.shape, jnp.uint32), counts.astype(jnp.uint32))


def wide_add(a: Wide, b: Wide) -> Wide:
    """``a + b``, exact while the result is below ``2**64``: the low words wrap modulo
    ``2**32`` and the wrap is the carry (``lo < b.lo`` exactly when it wrapped)."""
    lo = a.lo + b.lo
    carry = (lo < b.lo).astype(jnp.uint32)
    return Wide(a.hi + b.hi + carry, lo)


def wide_sum(counts: jax.Array | Wide, axis: int | tuple[int, ...]) -> Wide:
    """Exact sums of non-negative int32 ``counts`` (or :class:`Wide` values) over
    ``axis``, as :class:`Wide`.

    A variadic ``lax.reduce`` with :func:`wide_add` as its (associative, commutative)
    combiner: exact while every sum stays below ``2**64`` (``2**32`` terms of at most
    ``2**32`` each, for instance).
    """
    value = counts if isinstance(counts, Wide) else wide_from_counts(counts)
    ndim = value.lo.ndim
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % ndim for a in axes)
    zero = (jnp.uint32(0), jnp.uint32(0))

    def combine(x, y):
        return tuple(wide_add(Wide(*x), Wide(*y)))

    hi, lo = jax.lax.reduce((value.hi, value.lo), zero, combine, axes)
    return Wide(hi, lo)


def wide_to_float(value: Wide) -> jax.Array:
    """``hi * 2**32 + lo`` as float32: exact up to ``2**24``, else within two roundings
    (relative error below ``2**-23``); the same bits for the same integer."""
    return value.hi.astype(jnp.float32) * jnp.float32(2.0**32) + value.lo.astype(jnp.float32)


def wide_map(fn, *values: Wide) -> Wide:
    """``fn`` applied to the high and to the low words alike (a reshape, a ``take``, a
    ``where`` with a mask): only for functions that move words, never for arithmetic."""
    return Wide(fn(*(v.hi for v in values)), fn(*(v.lo for v in values)))


def wide_psum(counts: jax.Array, axis_name: str) -> Wide:
    """Exact sum over the mesh axis ``axis_name`` of non-negative int32 ``counts`` (each
    below ``2**31``), as :class:`Wide`: the counts' 16-bit halves are summed apart (two
    integer psums that cannot overflow below ``2**15`` shards) and recombined with a
    carry. Integer sums, so the same bits in any order and on any sharding."""
    counts = counts.astype(jnp.uint32)
    high = jax.lax.psum(counts >> 16, axis_name)  # < shards * 2**15
    low = jax.lax.psum(counts & jnp.uint32(0xFFFF), axis_name)  # < shards * 2**16
    return wide_add(Wide(high >> 16, high << 16), wide_from_counts(low))


def to_int64(value: Wide) -> np.ndarray:
    """Host :class:`Wide` words (NumPy or device arrays) as exact int64 counts."""
    hi = np.asarray(value.hi).astype(np.int64)
    return (hi << 32) | np.asarray(value.lo).astype(np.int64)


def host_counts(tree):
    """``tree`` (fetched to the host) with every :class:`Wide` value as int64 counts."""
    return jax.tree.map(
        lambda x: to_int64(x) if isinstance(x, Wide) else x,
        tree,
        is_leaf=lambda x: isinstance(x, Wide),
    )
