"""Float sums that do not depend on the order of their terms: fixed-point int32 limbs.

Pass 2 of the fast kernel scatter-adds each agent's exploration payoffs into per-(agent,
action) cells. Float addition is not associative, and a GPU compiles a float scatter-add
to atomic adds whose order changes from run to run, so the sums (and, at near-ties, the
decisions) would change too. Integer addition is associative: each term is quantised to a
fixed-point grid, split into int32 *limbs*, the limbs are scatter-added (any order gives
the same bits), and each exact sum is converted back to float32 once.

**The grid.** A stage bounds its terms: ``|x| <= bound`` (for pass 2, the largest
``|round payoff|`` of the stage plus ``|noise_std| * events.MAX_ABS_NOISE``). With
``2**(E - 1) <= bound < 2**E`` (``frexp``), terms are multiples of the quantum
``q = 2**(E - F)`` after rounding to nearest, ``F = b + (m - 1) * (b + 1)`` bits for
``m`` limbs of ``b`` bits (:class:`Layout`). ``y = x / q`` (exact: a power of two) has
``|y| < 2**F``; the limbs are ``l_0 = round(y / 2**((m - 1) L))``, then the same on the
remainder with ``L = b + 1`` bits less, ..., ``l_{m-1} = round(remainder)``, so
``|l_0| <= 2**b`` and, each remainder being at most half a step, ``|l_j| <= 2**(L - 1) =
2**b`` for the others. Each remainder ``y - l * 2**s`` is exact in float32 (Sterbenz:
``l * 2**s`` is within ``2**(s - 1)`` of ``y``, so within a factor of two of it, or ``l =
0``), so the limbs represent ``round(y)`` exactly.

**No overflow** (proof). A cell of pass 2 receives at most ``max_terms`` terms (an agent
explores at most once per round, and a stage has at most ``spec.max_stage_length``
rounds), so each limb's sum has ``|s_j| <= max_terms * 2**b``. :func:`layout` takes the
largest ``b`` with ``(max_terms + 1) * 2**b + max_terms <= 2**31 - 1``. The conversion
(:func:`from_limbs`) splits each lower limb's sum into a carry (an arithmetic shift by
``L``, at most ``max_terms / 2 + 2`` in magnitude with the carry it received) and a rest
in ``[-2**b, 2**b)``, and adds the carry one limb up: no int32 value ever exceeds
``max_terms * 2**b + max_terms / 2 + 3 <= 2**31 - 1`` in magnitude.

**Error bound.** Let ``S`` be the exact sum of the float32 terms (``N <= max_terms`` of
them) and ``u = 2**-24``. Quantisation moves each term by at most ``q / 2 <= bound *
2**-F`` (or ``2**(-65 - F)`` for bounds below ``2**-64``); :func:`layout` takes the
fewest limbs with ``max_terms * 2**-F <= u``, so the quantised sum ``S_q`` is within
``u * bound`` of ``S``: less than half a float32 ulp of the largest possible term. The
conversion rounds at most ``2m - 1`` times (each limb to float32, exact for ``b <= 24``,
and ``m - 1`` additions, least significant first), each time by at most ``u`` of a value
at most ``|S_q| (1 + 2**(1 - L))``, so it is within ``1.01 (2m - 1) u |S_q|`` of ``S_q``.
In all, ``|result - S| <= u * bound + 1.01 (2m - 1) u (|S| + u * bound)``: for pass 2's
two limbs about ``u * bound + 3 u |S|``. Sequential float32 summation, which the atomic
adds did in some order, is only bounded by ``(N - 1) u sum |x_i|``. A non-finite bound (a
non-finite payoff in the stage) makes every result NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Layout", "Scale", "layout", "scale", "to_limbs", "from_limbs"]

_INT32_MAX = 2**31 - 1
#: Bits of a float32 significand: the quantisation error is held below ``2**-24`` of the
#: bound, whatever the number of terms.
_FLOAT32_BITS = 24
#: Smallest exponent ``E`` of a bound: keeps ``2**(F - E)`` a normal float32.
_MIN_EXPONENT = -64


class Layout(NamedTuple):
    """Static fixed-point layout for sums of at most ``max_terms`` terms."""

    limbs: int  # m: int32 limbs per term
    limb_bits: int  # b: every limb of a term is at most 2**b in magnitude

    @property
    def shift(self) -> int:
        """``L``: the weight of each limb over the next one is ``2**L``."""
        return self.limb_bits + 1

    @property
    def value_bits(self) -> int:
        """``F``: a term of magnitude ``bound`` is about ``2**F`` quanta."""
        return self.limb_bits + (self.limbs - 1) * self.shift


def layout(max_terms: int) -> Layout:
    """The layout for sums of at most ``max_terms`` terms, each limb's sum provably within
    int32 and the quantisation error within ``2**-24`` of the bound (module docstring).

    Example: ``layout(64)`` is two limbs of 24 bits (49 bits in all).
    """
    if not 1 <= max_terms <= 2**20:
        raise ValueError(f"max_terms must be in [1, 2**20], got {max_terms}")
    limb_bits = 0
    while (max_terms + 1) * 2 ** (limb_bits + 1) + max_terms <= _INT32_MAX:
        limb_bits += 1
    limbs = 1
    while Layout(limbs, limb_bits).value_bits < _FLOAT32_BITS + math.log2(max_terms):
        limbs += 1
    result = Layout(limbs, limb_bits)
    if result.value_bits - _MIN_EXPONENT > 126:
        raise ValueError(f"max_terms={max_terms} needs a {result.value_bits}-bit grid")
    return result


class Scale(NamedTuple):
    """A stage's fixed-point grid (traced scalars) for a :class:`Layout`."""

    layout: Layout  # static
    inverse_quantum: jax.Array  # () float32 2**(F - E): terms times this are quanta
    top_weight: jax.Array  # () float32 2**(E - b): the value of one unit of limb 0, or NaN


def _power_of_two(exponent: jax.Array) -> jax.Array:
    """``2.0**exponent`` as float32, exactly, for int32 ``exponent`` in ``[-126, 127]``."""
    return jax.lax.bitcast_convert_type((exponent + 127) << 23, jnp.float32)


def scale(bound: jax.Array, fixed: Layout) -> Scale:
    """The grid for terms of magnitude at most ``bound`` (a traced float32 scalar)."""
    _, exponent = jnp.frexp(jnp.asarray(bound, jnp.float32))  # bound < 2**exponent
    exponent = jnp.clip(exponent.astype(jnp.int32), _MIN_EXPONENT, 128)
    finite = jnp.isfinite(bound)
    top = jnp.where(finite, _power_of_two(exponent - fixed.limb_bits), jnp.nan)
    return Scale(fixed, _power_of_two(fixed.value_bits - exponent), top)


def to_limbs(values: jax.Array, grid: Scale) -> jax.Array:
    """``values`` (float32, ``|x| <= bound``) as ``(..., m)`` int32 limbs, most significant
    first, of their nearest multiples of the quantum."""
    fixed = grid.layout
    remainder = values * grid.inverse_quantum  # exact: a power of two
    limbs = []
    for j in range(fixed.limbs - 1, 0, -1):
        weight = 2.0 ** (j * fixed.shift)
        limb = jnp.round(remainder * (1.0 / weight))
        remainder = remainder - limb * weight  # exact (module docstring)
        limbs.append(limb)
    limbs.append(jnp.round(remainder))
    return jnp.stack(limbs, axis=-1).astype(jnp.int32)


def from_limbs(sums: jax.Array, grid: Scale) -> jax.Array:
    """Float32 values of ``(..., m)`` int32 limb sums (any number of terms up to the
    layout's ``max_terms``): carries first, so that every limb but the first is in
    ``[-2**b, 2**b)``, then one rounding per limb from the least significant up."""
    fixed = grid.layout
    limbs = [sums[..., j] for j in range(fixed.limbs)]
    half, width = 2**fixed.limb_bits, 2**fixed.shift
    for j in range(fixed.limbs - 1, 0, -1):
        carry = limbs[j] >> fixed.shift  # floor division: arithmetic shift
        rest = limbs[j] & (width - 1)  # in [0, 2**L)
        high = rest >= half
        limbs[j] = jnp.where(high, rest - width, rest)
        limbs[j - 1] = limbs[j - 1] + carry + high.astype(jnp.int32)
    value = limbs[-1].astype(jnp.float32)
    for limb in reversed(limbs[:-1]):
        value = limb.astype(jnp.float32) + value * (1.0 / width)
    return value * grid.top_weight
