"""Binomial draws on integer counts, exact for any count the counts' dtype can hold.

``jax.random.binomial`` works on floating-point counts. In float32 (JAX's default) a
count above ``2**24`` is rounded before the draw, so a group of ``16_777_219`` agents is
drawn as if it had ``16_777_220`` and can lose more agents than it has. Here every count
``c`` is split into chunks of at most ``max_trials`` trials (full chunks, then the
remainder), all chunks of all counts are drawn by one vectorised
``jax.random.binomial`` call in float32, and the chunk draws are summed back per count as
integers. A sum of independent ``Binomial(t_i, p)`` with ``sum_i t_i = c`` is
``Binomial(c, p)``: the distribution is exactly the one asked for.

Why each chunk draw ``k`` lies in ``[0, t]``: for ``t <= 2**24 - 1`` float32 holds ``t``
and ``t + 1`` exactly, and JAX's sampler (TensorFlow's) cannot then leave ``[0, t]``:

* inversion (used when ``t * q <= 10``, ``q = min(p, 1 - p)``) counts geometric gaps,
  each an integer ``>= 1``, while their running sum is ``<= t``. Those partial sums are
  integers ``<= t < 2**24``, hence exact, and the ``j``-th is ``>= j``, so at most ``t``
  gaps are counted. The sum that passes ``t`` is ``>= t + 1`` before rounding and stays
  so after (``t + 1`` is representable, rounding is monotone). At ``t = 2**24`` the sum
  ``2**24 + 1`` would round back to ``2**24`` and one gap too many could be counted: the
  reason for the ``- 1`` in :data:`FLOAT32_EXACT_TRIALS`;
* BTRS (otherwise) rejects every proposal outside ``[0, t]`` except in its squeeze
  region, whose largest proposal ``t q + 1.35 + 1.86 sigma`` is below ``t`` (and the
  smallest above 0) by several units already at ``t q = 10``, far more than float32
  rounding moves it;
* for ``p >= 1/2`` it returns ``t - k`` for such a ``k``, exact in float32.

The draws are integral floats below ``2**24``: converting them to integers is exact.

Why the per-count sums cannot overflow: every chunk draw is ``>= 0`` and ``<=`` its
chunk's trials, so every partial sum of a count's draws, in whatever order the reduction
adds them, lies in ``[0, c]``, and ``c`` is itself a value of the counts' dtype. Chunk
offsets ``i * max_trials`` are only formed for ``i < ceil(c / max_trials)``, so they are
``<= c - 1``. Hence ``0 <= draw <= c`` by construction; nothing is clamped.

The chunk size. :data:`FLOAT32_EXACT_TRIALS` is the largest chunk the argument above
allows, but JAX's float32 BTRS is measurably biased well before it: in 10**6 draws per
case its mean is off by 0.027 standard deviations at ``t = 2**24 - 1``, ``p = 0.001``
(variance, at ``p = 0.3``, by 6 %), and by 0.0066 at ``t = 2**20`` (10**7 draws); a sum of
many biased chunks adds the biases (``c = 2**31 - 1`` in chunks of ``2**24 - 1`` is off
by 0.3 standard deviations). At ``t = 2**16`` nothing is detectable in 10**7 draws per
case (``p`` in 0.001, 0.01, 0.3, 0.5, mean and variance within 2 standard errors), so
that is :data:`MAX_TRIALS`, the default.

The limit. The counts of one call must sum to at most ``max_total`` (static): it sets
the number of chunk slots, ``ceil(max_total / max_trials) + counts.size``, and so the
cost of a draw, linear in ``max_total``: 32_770 slots for two groups of ``2**31 - 1``
agents in all. Counts beyond int32 (``2**40`` agents) need int64 counts
(``jax_enable_x64``); the construction and the proofs are unchanged, the slots grow to
``2**24``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["FLOAT32_EXACT_TRIALS", "MAX_TRIALS", "exact_binomial", "chunk_slots"]

FLOAT32_EXACT_TRIALS = 2**24 - 1
"""Largest chunk a float32 draw keeps within ``[0, t]``: float32 holds every integer up
to ``2**24``, so both ``t`` and ``t + 1`` are exact."""

MAX_TRIALS = 2**16
"""Default chunk size: the largest power of two at which JAX's float32 sampler shows no
bias (module docstring)."""


def chunk_slots(max_total: int, size: int, max_trials: int = MAX_TRIALS) -> int:
    """Chunk slots enough for ``size`` counts that sum to at most ``max_total``.

    Count ``c`` needs ``ceil(c / t)`` chunks, fewer than ``c / t + 1``; over all counts
    that is fewer than ``max_total / t + size``, so ``ceil(max_total / t) + size`` slots
    always suffice, whatever the split of the total.
    """
    _check_max_trials(max_trials)
    if max_total < 0 or size < 1:
        raise ValueError(f"need max_total >= 0 and size >= 1, got {max_total} and {size}")
    return math.ceil(max_total / max_trials) + size


def exact_binomial(
    key: jax.Array,
    counts: jax.Array,
    p: jax.Array | float,
    *,
    max_total: int,
    max_trials: int = MAX_TRIALS,
) -> jax.Array:
    """``Binomial(counts, p)`` as integers of the counts' dtype, each ``<= counts``.

    When ``max_total <= max_trials`` (every count fits one chunk) this is the single draw
    ``round(jax.random.binomial(key, counts.astype(float32), p))`` bit for bit, so small
    populations keep their results. Otherwise the counts are cut into chunks drawn by
    one call and summed back (module docstring: why this is exact and cannot overflow).

    Args:
        key: a PRNG key.
        counts: non-negative integer counts whose sum is at most ``max_total`` (a
            precondition: traced values cannot be checked; trials beyond the last slot
            would be lost).
        p: success probability in ``[0, 1]``, a scalar or an array broadcastable to
            ``counts``.
        max_total: static bound on ``sum(counts)``: the limit of this call.
        max_trials: static chunk size, in ``[1, FLOAT32_EXACT_TRIALS]``.

    Returns:
        An array of ``counts``' shape and dtype with ``0 <= draw <= counts``.
    """
    counts = jnp.asarray(counts)
    if not jnp.issubdtype(counts.dtype, jnp.integer):
        raise TypeError(f"counts must be integers, got dtype {counts.dtype}")
    slots = chunk_slots(max_total, counts.size, max_trials)
    p = jnp.broadcast_to(jnp.asarray(p, jnp.float32), counts.shape)
    if max_total <= max_trials:
        return _draw(key, counts, p).astype(counts.dtype)
    flat = counts.reshape(-1)
    owner, trials = _chunk_layout(flat, slots, max_trials)
    draws = _draw(key, trials, p.reshape(-1)[owner]).astype(counts.dtype)
    sums = jax.ops.segment_sum(draws, owner, flat.size, indices_are_sorted=True)
    return sums.reshape(counts.shape)


def _chunk_layout(counts: jax.Array, slots: int, max_trials: int) -> tuple[jax.Array, jax.Array]:
    """``(owner, trials)`` of ``slots`` chunk slots for the flat ``counts``.

    Count ``g`` owns ``ceil(c_g / t)`` consecutive slots, in order of ``g``: ``t`` trials
    each, the last one the remainder; the slots after the last count's hold 0 trials (and
    belong to the last count, so they add 0 to it). The trials of count ``g``'s slots
    sum to ``c_g`` exactly.
    """
    t = jnp.asarray(max_trials, counts.dtype)
    needed = counts // t + (counts % t > 0).astype(counts.dtype)  # ceil without c + t - 1
    ends = jnp.cumsum(needed)  # < slots (chunk_slots), far from overflow
    slot = jnp.arange(slots, dtype=counts.dtype)
    owner = jnp.searchsorted(ends, slot, side="right").astype(counts.dtype)
    used = owner < counts.size
    owner = jnp.minimum(owner, counts.size - 1)
    # The chunk index within its count: 0 <= index < needed[owner] on used slots, so
    # index * t <= c - 1 cannot overflow; unused slots get index 0 and 0 trials.
    index = jnp.where(used, slot - (ends[owner] - needed[owner]), 0)
    trials = jnp.clip(counts[owner] - index * t, 0, t)
    return owner, jnp.where(used, trials, 0)


def _draw(key: jax.Array, trials: jax.Array, p: jax.Array) -> jax.Array:
    """Float32 draws of integer ``trials <= FLOAT32_EXACT_TRIALS``, as integral floats."""
    return jnp.round(jax.random.binomial(key, trials.astype(jnp.float32), p, dtype=jnp.float32))


def _check_max_trials(max_trials: int) -> None:
    if not isinstance(max_trials, int) or not 1 <= max_trials <= FLOAT32_EXACT_TRIALS:
        raise ValueError(
            f"max_trials must be an integer in [1, {FLOAT32_EXACT_TRIALS}], got {max_trials!r}"
        )
