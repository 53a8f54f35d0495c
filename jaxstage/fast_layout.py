"""The fast kernel's layout: block sizes, event and adopter capacities, the action dtype.

Plain Python on a run's sizes, no tracing: :mod:`jaxstage.plan` sizes a run (and checks
its memory) with these before anything is compiled, and the traced passes
(:mod:`jaxstage.fast_pass1`, :mod:`jaxstage.fast_pass2`) take the results from the
:class:`~jaxstage.spec.RunSpec`. None of these sizes changes the numbers (tested
bitwise); they trade memory against launches and compilation.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxstage import events as ev
from jaxstage.games import AnonymousGame
from jaxstage.spec import RunSpec

__all__ = [
    "action_dtype",
    "supports_fast",
    "MAX_BLOCK_SLOTS",
    "MAX_EVENT_BLOCK",
    "adopter_capacity",
    "adopter_event_capacity",
    "choose_block_size",
    "chunks_per_block",
    "event_slots_per_block",
    "kept_event_bytes",
]


def action_dtype(num_actions: int) -> jnp.dtype:
    """The dtype of the stage actions held between stages: int8 while every action fits
    (up to 128 actions), int16 beyond (``games.MAX_ACTIONS`` is far below ``2**15``)."""
    if num_actions <= 128:
        return jnp.dtype(jnp.int8)
    if num_actions <= 2**15:
        return jnp.dtype(jnp.int16)
    raise ValueError(f"num_actions must be at most {2**15}, got {num_actions}")


def supports_fast(game: AnonymousGame) -> bool:
    """Whether ``game`` uses the default Gaussian noise model the fast kernel aggregates."""
    return game.uses_gaussian_noise()


#: Most event slots a block draws at once (their temporaries take about 50 bytes each).
MAX_BLOCK_SLOTS = 2**19
#: Most agents per block on the events path. Measured with ``benchmarks/throughput.py
#: --block-size`` at 2^20 agents, stage length 50, plain learning (2-core CPU): 32,768
#: agents per block ran 15 to 20% faster than the larger automatic sizes at k = 2, 4 and 8
#: (k = 2: 486 against 399 M agent-rounds/s for 2^18), within noise at 10^7 agents.
MAX_EVENT_BLOCK = 2**15


def adopter_capacity(block_size: int, update_prob: float) -> int:
    """Adopters of a block decided at once: the expected number plus six standard
    deviations and 32, a multiple of 32 rounded up to a quarter octave (nearby update
    probabilities share a compiled program), at most the block. A block with more
    adopters takes another window."""
    expected = block_size * update_prob
    target = expected + 6.0 * math.sqrt(expected * (1.0 - update_prob)) + 32.0
    step = 2 ** max(5, math.floor(math.log2(target)) - 2)
    return int(min(math.ceil(target / step) * step, -(-block_size // 32) * 32))


def adopter_event_capacity(
    block_size: int, event_capacity: int, events_per_agent: float, update_prob: float
) -> int:
    """Events of a block's adopters that pass 1 keeps for pass 2 (from the first batch):
    the expected number plus six standard deviations and 32, rounded up to an eighth of
    an octave, at most the block's slots. ``events_per_agent`` is the largest expected
    explorations of an agent in a stage; a block whose adopters have more events than
    kept draws them again in pass 2."""
    slots = event_slots_per_block(block_size, event_capacity)
    adopters = block_size * update_prob
    # Adopters ~ Binomial(block, u), events each with mean and variance at most lambda:
    # the variance of their sum is at most adopters * (lambda + lambda^2).
    spread = math.sqrt(adopters * (events_per_agent + events_per_agent**2))
    target = adopters * events_per_agent + 6.0 * spread + 32.0
    step = 2 ** max(5, math.floor(math.log2(target)) - 3)
    return int(min(math.ceil(target / step) * step, slots))


def choose_block_size(num_agents: int, num_actions: int, event_capacity: int = 0) -> int:
    """Agents per block: about 2**18 per-agent values of the widest temporary (k of them);
    on the events path at most :data:`MAX_EVENT_BLOCK` agents and at most
    :data:`MAX_BLOCK_SLOTS` exploration-event slots per batch. The numbers do not depend
    on it."""
    target = max(2**12, 2 ** (18 - max(0, math.ceil(math.log2(num_actions)) - 1)))
    if event_capacity:
        chunks = max(1, MAX_BLOCK_SLOTS // event_capacity)
        slots_limit = ev.EVENT_CHUNK * 2 ** math.floor(math.log2(chunks))
        target = min(target, MAX_EVENT_BLOCK, slots_limit)
    return int(min(target, 2 ** math.ceil(math.log2(max(num_agents, 1)))))


def chunks_per_block(block_size: int) -> int:
    """Event chunks a block overlaps (one more when blocks do not align with chunks)."""
    extra = 0 if block_size % ev.EVENT_CHUNK == 0 else 1  # a misaligned block straddles
    return -(-block_size // ev.EVENT_CHUNK) + extra


def event_slots_per_block(block_size: int, event_capacity: int) -> int:
    """Exploration-event slots one block draws per batch."""
    return chunks_per_block(block_size) * event_capacity


def kept_event_bytes(spec: RunSpec) -> int:
    """Bytes of pass 1's first batch of events kept for pass 2, one run: 8 per slot, or,
    with the adopter filter, 16 per kept adopter event and 4 per chunk."""
    rows = spec.num_blocks + spec.num_shards  # with each shard's spare row
    if spec.filter_adopters:
        chunks = chunks_per_block(spec.block_size)
        return rows * (16 * spec.adopter_event_capacity + 4 * chunks + 4)
    return 8 * rows * event_slots_per_block(spec.block_size, spec.event_capacity)
