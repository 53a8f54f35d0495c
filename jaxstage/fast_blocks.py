"""The fast kernel's agent blocks, shards and random streams, shared by both passes.

A shard's stage actions are processed in blocks of ``spec.block_size`` agents
(:func:`agent_block`); types are recomputed from global agent indices
(:func:`types_of`) instead of being stored, and every random number is a pure function
of (seed, stage, stream, agent index) (:mod:`jaxstage.counter_rng`), so a block, a shard
or a later pass draws exactly the numbers any other layout would. Population-level
values are summed over the shards exactly (:func:`shard_total`). The agents path
(:mod:`jaxstage.agent_stage`) uses the same blocks, streams and sums.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import counter_rng as crng
from jaxstage import events as ev
from jaxstage.distributed import mesh_devices
from jaxstage.fast_layout import chunks_per_block
from jaxstage.spec import RunSpec
from jaxstage.wide import Wide, wide_from_counts, wide_psum

__all__ = [
    "AGENT_AXIS",
    "EXPLORE_STREAM",
    "OWN_NOISE_STREAM",
    "TIE_STREAM",
    "UPDATE_STREAM",
    "SAMPLE_STREAM",
    "INFO_NOISE_STREAM",
    "POP_NOISE_STREAM",
    "INIT_STREAM",
    "AgentBlock",
    "agent_block",
    "agent_mesh",
    "actions_sharding",
    "on_shards",
    "shard_start",
    "shard_total",
    "count_total",
    "shard_words",
    "block_words",
    "block_seed",
    "types_of",
    "count_values",
    "played_actions",
    "block_chunks",
    "in_block",
    "adopts",
    "adopters_among",
    "local_actions",
    "sample_indices",
    "WideIndex",
    "sample_words",
    "sampled_agents",
    "sampled_seed",
]


#: The mesh axis the fast kernel splits the population over (``spec.num_shards`` devices,
#: each holding ``spec.local_blocks`` consecutive blocks). Every random number is keyed by
#: global agent indices and every cross-shard sum is exact, so the numbers do not depend
#: on the sharding (tested bitwise).
AGENT_AXIS = "agents"

#: Stream identifiers: each (seed, stage, stream, sub-index) gives an independent stream
#: (the agents path's own exploration stream, ``agent_events.STREAM``, follows them).
EXPLORE_STREAM = 0
OWN_NOISE_STREAM = 1
TIE_STREAM = 2
UPDATE_STREAM = 3
SAMPLE_STREAM = 4
INFO_NOISE_STREAM = 5
POP_NOISE_STREAM = 6
INIT_STREAM = 7


def types_of(spec: RunSpec, index: jax.Array, high: jax.Array | None = None) -> jax.Array:
    """int32 type of each agent of global ``index`` (uint32; ``high * 2**32 + index``
    when ``high`` is given): types hold contiguous index ranges (``games.type_counts``),
    so a type is the number of boundaries at or below it."""
    boundaries = [sum(spec.type_counts[: j + 1]) for j in range(spec.num_types - 1)]
    types = jnp.zeros(index.shape, jnp.int32)
    for boundary in boundaries:
        types = types + _at_or_above(index, high, boundary).astype(jnp.int32)
    return types


def _at_or_above(index: jax.Array, high: jax.Array | None, bound: int) -> jax.Array:
    """Whether ``high * 2**32 + index`` (``index`` alone without ``high``) is ``>= bound``."""
    if high is None:
        return index >= bound
    bound_high, bound_low = jnp.uint32(bound >> 32), jnp.uint32(bound & 0xFFFFFFFF)
    return (high > bound_high) | ((high == bound_high) & (index >= bound_low))


def count_values(values: jax.Array, valid: jax.Array, size: int) -> jax.Array:
    """``(size,)`` int32 counts of ``values`` over the valid entries."""
    if size <= 2:
        # Two full-axis sums beat a scatter; from 3 values on, XLA's CPU backend runs the
        # unrolled sums 10 to 50 times slower than bincount (measured at 8 and 24 values).
        return jnp.stack([jnp.sum((values == v) & valid, dtype=jnp.int32) for v in range(size)])
    return jnp.bincount(jnp.where(valid, values, size), length=size + 1)[:size].astype(jnp.int32)


def played_actions(
    seed: jax.Array,
    stage: jax.Array,
    round_index: jax.Array,
    index: jax.Array,
    stage_actions: jax.Array,
    explore_prob: jax.Array,
    num_actions: int,
) -> jax.Array:
    """Actions played in one round: one hash decides exploration, a second the action."""
    bits = crng.random_bits(crng.stream_key(seed, stage, EXPLORE_STREAM, round_index), index)
    explore = (bits >> 8).astype(jnp.float32) * (1.0 / 2**24) < explore_prob
    second = crng.triple32(bits ^ jnp.uint32(0x5BD1E995))
    action = jnp.floor((second >> 8).astype(jnp.float32) * (num_actions / 2**24))
    return jnp.where(explore, action.astype(jnp.int32), stage_actions)


def shard_start(spec: RunSpec) -> jax.Array | int:
    """Global index of this shard's first agent: inside ``shard_map`` over
    :data:`AGENT_AXIS` when ``spec.num_shards > 1``, else 0."""
    if spec.num_shards == 1:
        return 0
    return jax.lax.axis_index(AGENT_AXIS) * (spec.local_blocks * spec.block_size)


def agent_mesh(num_shards: int, *, local: bool = False) -> jax.sharding.Mesh:
    """A one-axis mesh (:data:`AGENT_AXIS`) of ``num_shards`` devices of the default
    backend: its first ones in one process, dealt over the processes in a distributed run
    (:func:`jaxstage.distributed.mesh_devices`; ``plan.shard_count`` checks the count
    before tracing)."""
    return jax.sharding.Mesh(np.asarray(mesh_devices(num_shards, local=local)), (AGENT_AXIS,))


def actions_sharding(spec: RunSpec, ndim: int = 1) -> jax.sharding.Sharding | None:
    """How the programs lay out a state's actions (``(padded,)``, or a sweep's ``(rows,
    padded)`` when ``ndim`` is 2): split over :func:`agent_mesh` on their last axis;
    ``None`` for one shard (on the default device)."""
    if spec.kernel != "fast" or spec.num_shards == 1:
        return None
    axes = (None,) * (ndim - 1) + (AGENT_AXIS,)
    mesh = agent_mesh(spec.num_shards, local=spec.local_mesh)
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*axes))


def on_shards(spec: RunSpec, fn: Callable, in_specs, out_specs) -> Callable:
    """``fn`` run on each of ``spec.num_shards`` devices with ``shard_map`` (``fn``
    itself for one shard); ``in_specs`` and ``out_specs`` are ``PartitionSpec`` prefixes
    as there (``P(AGENT_AXIS)`` for agent arrays, ``P()`` for replicated values)."""
    if spec.num_shards == 1:
        return fn
    return jax.shard_map(
        fn,
        mesh=agent_mesh(spec.num_shards, local=spec.local_mesh),
        in_specs=in_specs,
        out_specs=out_specs,
        # Population-level values are psums of exact integers (or of floats that are
        # zero on all shards but one), so they are the same on every shard.
        check_vma=False,
    )


def shard_total(spec: RunSpec, value):
    """``value`` summed over the shards (integer counts, or floats nonzero on one shard
    only: either way the sum is exact, so it does not depend on the sharding)."""
    return value if spec.num_shards == 1 else jax.lax.psum(value, AGENT_AXIS)


def count_total(spec: RunSpec, counts: jax.Array) -> jax.Array | Wide:
    """A shard's int32 ``counts`` summed over the shards: int32 (:func:`shard_total`), or
    with ``spec.wide_counts`` exact :class:`~jaxstage.wide.Wide` values (a population past
    ``2**31 - 1`` agents, whose counts reach past int32; each shard's stay below
    ``2**31``)."""
    if not spec.wide_counts:
        return shard_total(spec, counts)
    if spec.num_shards == 1:
        return wide_from_counts(counts)
    return wide_psum(counts, AGENT_AXIS)


def shard_words(spec: RunSpec) -> tuple[jax.Array, jax.Array]:
    """uint32 high and low words of the global index of this shard's first agent (a
    table of every shard's, indexed by the mesh position: the product can pass 2**32)."""
    size = spec.local_blocks * spec.block_size
    starts = [shard * size for shard in range(spec.num_shards)]
    high = jnp.asarray(np.asarray([s >> 32 for s in starts], np.uint32))
    low = jnp.asarray(np.asarray([s & 0xFFFFFFFF for s in starts], np.uint32))
    if spec.num_shards == 1:
        return high[0], low[0]
    position = jax.lax.axis_index(AGENT_AXIS)
    return high[position], low[position]


def block_words(spec: RunSpec, block: jax.Array) -> tuple[jax.Array, jax.Array]:
    """uint32 high and low words of the global index of the first agent of this shard's
    block ``block``. Blocks are powers of two aligned on their size (``plan`` checks it
    with ``spec.wide_counts``), so every agent of a block has the same high word."""
    shard_high, shard_low = shard_words(spec)
    low = shard_low + (block * spec.block_size).astype(jnp.uint32)  # local: < 2**31
    return shard_high + (low < shard_low).astype(jnp.uint32), low


def block_seed(spec: RunSpec, seed: jax.Array, block: jax.Array) -> jax.Array | crng.Seed:
    """The seed of the per-agent streams of block ``block``: ``seed`` itself, or with
    ``spec.wide_counts`` a :class:`~jaxstage.counter_rng.Seed` of the block's high word
    (the same keys while it is 0)."""
    if not spec.wide_counts:
        return seed
    return crng.Seed(seed, block_words(spec, block)[0])


def _is_agent(spec: RunSpec, index: jax.Array, high: jax.Array | None) -> jax.Array:
    """Whether global index ``(high, index)`` is a real agent, not padding."""
    if high is None:
        return index < spec.num_agents
    return ~_at_or_above(index, high, spec.num_agents)


class AgentBlock(NamedTuple):
    """One block of a shard's agents (:func:`agent_block`)."""

    start: jax.Array  # () int32 global index of its first agent (its low word, bitcast,
    # with ``spec.wide_counts``: only the events path reads it, and it is refused there)
    index: jax.Array  # (block_size,) uint32 global agent indices (their low words)
    actions: jax.Array  # (block_size,) int32 stage actions
    valid: jax.Array  # (block_size,) bool: a real agent, not padding
    types: jax.Array  # (block_size,) int32


def agent_block(spec: RunSpec, actions: jax.Array, block: jax.Array) -> AgentBlock:
    """Block ``block`` of this shard's ``actions``: the global index of its first agent,
    its agents' uint32 global indices, int32 stage actions, validity and types."""
    block = jnp.asarray(block, jnp.int32)
    local_start = block * spec.block_size
    high = None
    if spec.wide_counts:
        high, low = block_words(spec, block)
        start = jax.lax.bitcast_convert_type(low, jnp.int32)
    else:
        start = local_start + shard_start(spec)
        low = start.astype(jnp.uint32)
    index = low + jnp.arange(spec.block_size, dtype=jnp.uint32)
    stage_actions = jax.lax.dynamic_slice(actions, (local_start,), (spec.block_size,))
    valid = _is_agent(spec, index, high)
    types = types_of(spec, index, high)
    return AgentBlock(start, index, stage_actions.astype(jnp.int32), valid, types)


def block_chunks(spec: RunSpec, start: jax.Array) -> jax.Array:
    """Event chunks overlapping the block that starts at agent ``start``."""
    num_chunks = chunks_per_block(spec.block_size)
    return start // ev.EVENT_CHUNK + jnp.arange(num_chunks, dtype=jnp.int32)


def in_block(spec: RunSpec, events: ev.Events, start: jax.Array) -> jax.Array:
    """Which events are explorations of an agent of the block that starts at ``start``."""
    agent = events.agent
    # As an offset: ``start + block_size`` reaches 2**31 (wraps in int32) for the last
    # block of a population padded to 2**31 agents.
    offset = agent - start
    in_range = (offset >= 0) & (offset < spec.block_size) & (agent < spec.num_agents)
    return events.inside & in_range


def adopts(params, seed: jax.Array, stage: jax.Array, index: jax.Array) -> jax.Array:
    """Whether each agent (uint32 ``index``) adopts its candidate at the end of ``stage``."""
    return crng.uniform(crng.stream_key(seed, stage, UPDATE_STREAM), index) < params.update_prob


def adopters_among(
    spec: RunSpec, params, seed: jax.Array, stage: jax.Array, events: ev.Events, start: jax.Array
) -> jax.Array:
    """Which events are explorations of adopting agents of the block that starts at
    ``start``: a hash per event, cheaper than a gather from the block's adopters."""
    inside = in_block(spec, events, start)
    return inside & adopts(params, seed, stage, events.agent.astype(jnp.uint32))


class WideIndex(NamedTuple):
    """Global agent indices ``high * 2**32 + low`` as uint32 words (past ``2**31``)."""

    high: jax.Array
    low: jax.Array


def local_actions(
    spec: RunSpec, actions: jax.Array, agents: jax.Array | WideIndex
) -> tuple[jax.Array, jax.Array]:
    """The int32 stage actions of global ``agents`` (int32, or :class:`WideIndex`) held
    by this shard, and which are."""
    last = actions.shape[0] - 1  # the size may be 2**31
    if isinstance(agents, WideIndex):
        start_high, start_low = shard_words(spec)
        borrow = (agents.low < start_low).astype(jnp.uint32)
        offset = agents.low - start_low  # the low word of agents - start
        here = (agents.high - start_high - borrow == 0) & (offset <= jnp.uint32(last))
        local = offset.astype(jnp.int32)  # < 2**31 where here
    else:
        local = agents - shard_start(spec)
        here = (local >= 0) & (local <= last)
    return actions[jnp.where(here, local, 0)].astype(jnp.int32), here


def sample_indices(spec: RunSpec, seed: jax.Array, stage: jax.Array) -> jax.Array:
    """int32 global indices of the ``spec.info_sample_size`` agents sampled (with
    replacement) for sampled information at ``stage``: ``floor(u * n)`` of a 24-bit
    uniform up to :data:`SAMPLE_24_BITS_UP_TO` agents, where it reaches every agent, and
    of a 48-bit one beyond (:func:`jaxstage.counter_rng.index_below`)."""
    if spec.num_agents > SAMPLE_24_BITS_UP_TO:
        return crng.index_below(*_sample_bits(spec, seed, stage), spec.num_agents)
    draws = jnp.arange(spec.info_sample_size, dtype=jnp.uint32)
    uniform = crng.uniform(crng.stream_key(seed, stage, SAMPLE_STREAM), draws)
    return jnp.minimum(jnp.floor(uniform * spec.num_agents), spec.num_agents - 1).astype(jnp.int32)


def _sample_bits(spec: RunSpec, seed: jax.Array, stage: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two uint32 words of each sampled agent's 48-bit draw (past
    :data:`SAMPLE_24_BITS_UP_TO` agents): the first from the 24-bit draw's stream."""
    draws = jnp.arange(spec.info_sample_size, dtype=jnp.uint32)
    first = crng.random_bits(crng.stream_key(seed, stage, SAMPLE_STREAM), draws)
    second = crng.random_bits(crng.stream_key(seed, stage, SAMPLE_STREAM, 1), draws)
    return first, second


def sample_words(spec: RunSpec, seed: jax.Array, stage: jax.Array) -> WideIndex:
    """The agents of :func:`sample_indices` as :class:`WideIndex` words, for any
    population to ``2**40`` (the same agents where both apply: past
    :data:`SAMPLE_24_BITS_UP_TO` the same 48-bit draw, its index kept in two words)."""
    if spec.num_agents <= SAMPLE_24_BITS_UP_TO:
        low = sample_indices(spec, seed, stage).astype(jnp.uint32)
        return WideIndex(jnp.zeros_like(low), low)
    return WideIndex(*crng.index_words_below(*_sample_bits(spec, seed, stage), spec.num_agents))


def sampled_agents(spec: RunSpec, seed: jax.Array, stage: jax.Array) -> jax.Array | WideIndex:
    """The agents sampled for sampled information at ``stage``: as :class:`WideIndex`
    words on the loop over rounds with ``spec.wide_counts`` (populations past ``2**31``
    run there only), else int32 indices (:func:`sample_indices`)."""
    if spec.wide_counts and spec.exploration_path == "rounds":
        return sample_words(spec, seed, stage)
    return sample_indices(spec, seed, stage)


def sampled_seed(seed: jax.Array, sampled: jax.Array | WideIndex) -> jax.Array | crng.Seed:
    """The seed of the sampled agents' own streams: per agent, by the high word of its
    index, for :class:`WideIndex` (the same keys while it is 0), else ``seed``."""
    return crng.Seed(seed, sampled.high) if isinstance(sampled, WideIndex) else seed


#: Up to this many agents a sampled agent is ``floor(u * n)`` of a 24-bit uniform, which
#: reaches every agent (the numbers of every such run, the committed study's included,
#: are those of earlier releases); beyond, 24 bits would reach only ``2**24`` evenly
#: spaced agents, so two words make a 48-bit uniform.
SAMPLE_24_BITS_UP_TO = 2**24
