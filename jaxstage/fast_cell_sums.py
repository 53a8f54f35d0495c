"""How the fast kernel's pass 2 adds payoffs into cells: float32 on a CPU, fixed point
elsewhere, so that no backend's sums depend on the order of its scatter-adds.

A GPU compiles a float scatter-add to atomic adds whose order changes from run to run;
a near-tie would then flip a decision between runs. Integer limbs on a fixed-point grid
(:mod:`jaxstage.exact_sum`) add to the same bits in any order. On a CPU the scatter adds
in slot order, so float32 is already reproducible and cheaper
(:func:`cell_sums_for_backend`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstage import events as ev
from jaxstage import exact_sum

__all__ = [
    "CellSums",
    "float_cell_sums",
    "FLOAT_CELL_SUMS",
    "fixed_point_cell_sums",
    "cell_sums_for_backend",
    "payoff_bound",
    "limbs_and_count",
]


class CellSums(NamedTuple):
    """How pass 2 adds payoffs and their observations into cells (a spare last cell
    takes the masked-out events), and reads the float32 sums and int32 counts back."""

    zeros: Callable[[int], object]  # cells -> accumulator
    add: Callable[[object, jax.Array, jax.Array, jax.Array], object]  # (acc, cell, x, counted)
    read: Callable[[object], tuple[jax.Array, jax.Array]]  # sums, counts of all but the spare


def float_cell_sums() -> CellSums:
    """Float32 ``(payoff, 1)`` pairs, one scatter for both (float32 counts are exact far
    beyond any stage length); masked-out events go whole to the spare cell. XLA's CPU
    scatter adds the updates of a cell in their order (slot order), so the sums are
    reproducible there and do not depend on the block size (tested bitwise)."""

    def add(acc, cell, payoffs, counted):
        ones = jnp.ones(payoffs.size, jnp.float32)
        return acc.at[cell].add(jnp.stack([payoffs.ravel(), ones], axis=1))

    def read(acc):
        return acc[:-1, 0], acc[:-1, 1].astype(jnp.int32)

    return CellSums(lambda cells: jnp.zeros((cells, 2), jnp.float32), add, read)


FLOAT_CELL_SUMS = float_cell_sums()


def fixed_point_cell_sums(grid: exact_sum.Scale) -> CellSums:
    """Exact int32 limbs of each payoff on ``grid`` and a 1, one scatter for all: integer
    addition is associative, so the sums are the same bits in any order of the adds (a
    GPU's atomic adds), within :mod:`jaxstage.exact_sum`'s error bound of the exact sums.
    Masked-out events add zeros, so no cell, the spare one included, can overflow."""
    width = grid.layout.limbs + 1

    def add(acc, cell, payoffs, counted):
        return acc.at[cell].add(limbs_and_count(payoffs, counted, grid))

    def read(acc):
        return exact_sum.from_limbs(acc[:-1, :-1], grid), acc[:-1, -1]

    return CellSums(lambda cells: jnp.zeros((cells, width), jnp.int32), add, read)


def cell_sums_for_backend(on_cpu: Callable, elsewhere: Callable) -> object:
    """``on_cpu()`` (float32 sums) in a program lowered for a CPU, ``elsewhere()`` (fixed
    point) for any other backend.

    A GPU compiles a float scatter-add to atomic adds whose order changes from run to
    run, so near-ties would flip decisions between runs; fixed point makes the sums
    independent of the order. On a CPU the float32 sums are already reproducible, and
    fixed point costs more: with one scatter per limb (a scatter of rows of several
    computed int32 columns ran 3.5 times as slow), ``jaxstage.simulate`` of 2^20 agents,
    k = 8, stage length 50, ``explore_prob`` 0.05, ``update_prob`` 1 took 1.26 times the
    CPU time (median of 3 interleaved pairs of runs, ad hoc script).
    """
    return ev.on_cpu_or_elsewhere(cpu=on_cpu, elsewhere=elsewhere)


def payoff_bound(round_payoffs: jax.Array, stage_length: jax.Array, noise_std) -> jax.Array:
    """A bound on every payoff pass 2 adds, for its fixed-point grid: the largest
    ``|u|`` of the stage's rounds plus ``|noise_std| * events.MAX_ABS_NOISE``.

    It holds in float32 (proof): a payoff is ``fl(u + fl(sigma z))``, or ``fl(u + sigma
    z)`` where XLA fuses a multiply-add, with ``|z| <= 5.42``; ``fl(|sigma| * 8)`` is
    exact (a power of two) and above ``|sigma z|`` even after its rounding, and rounding
    is monotone, so the payoff is at most ``fl(max |u| + 8 |sigma|)`` in magnitude.
    """
    rounds = round_payoffs.shape[0]
    in_stage = (jnp.arange(rounds) < stage_length)[:, None, None]
    largest = jnp.max(jnp.where(in_stage, jnp.abs(round_payoffs), 0.0))
    return largest + jnp.abs(noise_std) * ev.MAX_ABS_NOISE


def limbs_and_count(payoffs: jax.Array, counted: jax.Array, grid: exact_sum.Scale) -> jax.Array:
    """``(size, m + 1)`` int32 rows to scatter-add: the fixed-point limbs of each payoff,
    then 1 (its observation); zeros where not ``counted``. One scatter adds both."""
    limbs = exact_sum.to_limbs(jnp.where(counted, payoffs, 0.0).ravel(), grid)
    return jnp.concatenate([limbs, counted.astype(jnp.int32).reshape(-1, 1)], axis=1)
