"""The fast kernel's agents path: a stage as two passes over whole blocks of agents,
designed for GPUs (``fast_path="agents"``).

The events path (:mod:`jaxstage.events`) is built for CPU caches: small blocks, event
batches drawn by a data-dependent loop, scatters into adjacent words. On a GPU each of
those loops and conditionals is a host round trip per iteration, and the scatters are
contended atomics. This path computes the same model with

* **a per-agent event stream** (:mod:`jaxstage.agent_events`): agent ``i``'s explorations
  are a fixed number ``E`` of geometric skips along its own rounds, so every agent does
  the same work and there is no loop whose trip count depends on the data;
* **blocks sized from device memory** (:func:`choose_agent_block`): on a GPU the whole
  shard is one block whenever its per-agent temporaries fit, two at 10^9 agents on an
  H200; the loop over blocks has a static trip count;
* **pass 1** (:func:`block_round_counts`): per-round counts of (type, played action) are
  the stage-action counts plus, per event, ``-1`` on (round, type, stage action) and
  ``+1`` on (round, type, drawn action), added as int32 into tile-private histograms
  (:func:`histogram`: a tile is ``spec.tile_size`` consecutive agents with its own bins,
  so atomic adds rarely meet; masked events are dropped, not sent to a dump bin) and
  then summed over tiles; few bins take one-hot sums instead. Integer sums give the same
  bits in any order;
* **pass 2** (:func:`own_sums`): each agent's own payoff sums from its events as in the
  events path (the stage action's sum is the shared per-type sum over rounds minus the
  rounds explored elsewhere, with one ``N(0, m sigma^2)``; one ``N(0, sigma^2)`` per
  exploration elsewhere), added per agent in event order (no scatter, no float atomics),
  then the shared decision rule, for every agent (no adopter filter: the update draw
  masks the result).

Everything population-level (round payoffs, the population's payoff sums and noise,
published information, the record) is :mod:`jaxstage.fast`'s. Random numbers are keyed
by global agent index, so the numbers do not depend on blocks, tiles or devices (tested
bitwise). In a program for a GPU the stage has no data-dependent loop, no conditional,
no float atomics and no float matrix products.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstage import agent_events as ae
from jaxstage import agent_private, distributed, fast, private_info
from jaxstage import counter_rng as crng
from jaxstage import events as ev
from jaxstage import fast_blocks as fb
from jaxstage.decisions import UNROLLED_UP_TO_ACTIONS, choose_candidates, clip_and_renormalise
from jaxstage.fast_pass2 import own_estimates
from jaxstage.finiteness import PRIVATE_ESTIMATE, first_bad_estimate, with_published_check
from jaxstage.metrics import deviation_payoffs
from jaxstage.spec import RunSpec

__all__ = [
    "agent_stage",
    "agent_counts_by_type",
    "choose_agent_block",
    "choose_tile_size",
    "histogram",
    "TileHistogram",
    "block_round_counts",
    "own_sums",
    "AGENT_BYTES",
    "DEFAULT_DEVICE_MEMORY",
]

#: Device memory assumed when the backend reports none (a deviceless compile, or a
#: device without ``memory_stats``), by platform: an H200's 141 GB for CUDA. The CPU
#: takes the host's available memory (``plan.available_memory_bytes``).
DEFAULT_DEVICE_MEMORY = {"cuda": 141 * 10**9, "gpu": 141 * 10**9, "rocm": 64 * 2**30}
#: Share of the device memory a block's temporaries may take (the rest: the stage
#: actions, twice, and XLA's own buffers).
MEMORY_FRACTION = 0.75
#: Per-agent bytes of a block's temporaries, as ``(fixed, per action)``: an estimate
#: (pass 2's ``(k, B)`` float32 sums and int32 counts and the estimates made of them,
#: plus per-agent words of the event chain), to be checked against XLA's buffer
#: assignment (``compiled.memory_analysis()``) on the target.
AGENT_BYTES = (64, 16)
#: Off a CPU, events are unrolled up to this many per agent (XLA fuses the chain into
#: its consumers); more, and every count on a CPU, take a ``fori_loop`` with a static
#: trip count (the same arithmetic, so the same numbers).
UNROLLED_UP_TO_EVENTS = 32
#: Whether pass 2 unrolls its events off a CPU. The H200 compile (2^20 agents, k = 8,
#: E = 22, stage length 50): unrolled, 74 kernels a stage but XLA materialises every
#: event's position, payoff and mask (temporaries of 298 bytes per agent: four blocks at
#: 10^9 agents) and compiles in 42 s; looped, 31 kernels plus 9 per event (229) with
#: 105 bytes per agent (two blocks at 10^9) in 4.5 s, but each event reads and writes
#: the per-agent sums (estimated 3.3 kB of traffic per agent and stage against about
#: 0.6 kB). Looped until a GPU can time both.
UNROLL_PASS_2 = False
#: Up to this many bins, histograms are one-hot sums (a reduction per bin) on a GPU
#: instead of scatters.
ONE_HOT_UP_TO_BINS = 32
#: Fewest agents per tile of a tile-private histogram (tiles also hold at least as many
#: agents as bins, so that the partial histograms take at most one int32 per agent).
MIN_TILE = 2**12
#: No agent (an index past every population of the agents path).
NO_AGENT = 2**32 - 1


def choose_tile_size(block_size: int, bins: int, platform: str) -> int:
    """Agents per tile of pass 1's histograms: the whole block on a CPU (its scatter
    adds in order, without atomics), else a power of two of at least :data:`MIN_TILE`
    agents and at least ``bins``, at most the block (which it divides)."""
    if platform == "cpu":
        return block_size
    tile = max(MIN_TILE, 2 ** math.ceil(math.log2(max(bins, 1))))
    while tile > 1 and block_size % tile:
        tile //= 2
    return max(1, min(tile, block_size))


def device_memory_bytes(platform: str, available_cpu: int) -> int:
    """Memory of one device of ``platform``: its ``bytes_limit`` when this process has
    such a device, else :data:`DEFAULT_DEVICE_MEMORY` (``available_cpu`` for a CPU)."""
    if platform == "cpu":
        return int(available_cpu)
    memory = int(DEFAULT_DEVICE_MEMORY.get(platform, DEFAULT_DEVICE_MEMORY["cuda"]))
    try:
        device = jax.local_devices()[0]
        if device.platform == platform or (platform == "gpu" and device.platform == "cuda"):
            stats = device.memory_stats() or {}
            if "bytes_limit" in stats:
                memory = int(stats["bytes_limit"])
    except Exception:  # noqa: BLE001 - no such backend here (a deviceless compile)
        pass
    # Block sizes follow from it: every process of a distributed run must agree.
    return distributed.agreed_min(memory)


def choose_agent_block(
    num_agents: int, num_actions: int, num_shards: int, memory_bytes: int, tile_multiple: int
) -> int:
    """Agents per block: a shard's agents in as few blocks as fit
    :data:`MEMORY_FRACTION` of ``memory_bytes`` (less the stage actions, held twice) at
    :data:`AGENT_BYTES` each, equal blocks rounded up to a multiple of
    ``tile_multiple``. The numbers do not depend on it."""
    local = -(-num_agents // num_shards)
    action_bytes = 2 * fast.action_dtype(num_actions).itemsize * local
    budget = max(MEMORY_FRACTION * memory_bytes - action_bytes, 2**20)
    per_agent = AGENT_BYTES[0] + AGENT_BYTES[1] * num_actions
    blocks = max(1, math.ceil(local * per_agent / budget))
    size = -(-local // blocks)
    return int(-(-size // tile_multiple) * tile_multiple)


def histogram(cells: jax.Array, valid: jax.Array, bins: int, tile: int) -> jax.Array:
    """``(bins,)`` int32 counts of ``cells`` (``(B,)`` in ``[0, bins)``) over the valid
    entries, ``tile`` agents sharing a partial histogram.

    Exact on every backend and the same integers whatever the tiling. On a CPU, one
    bincount-style scatter (it adds in order); elsewhere, one reduction of one-hot rows
    up to :data:`ONE_HOT_UP_TO_BINS` bins, else :class:`TileHistogram`.
    """

    def scattered(cells, valid, tile):
        return TileHistogram.zeros(cells.shape[0], bins, tile).add(cells, valid).total()

    def elsewhere(cells, valid):
        if bins > ONE_HOT_UP_TO_BINS:
            return scattered(cells, valid, tile)
        one_hot = (cells[None, :] == jnp.arange(bins)[:, None]) & valid[None, :]
        return jnp.sum(one_hot, axis=1, dtype=jnp.int32)

    return ev.on_cpu_or_elsewhere(
        cells, valid, cpu=lambda c, v: scattered(c, v, c.shape[0]), elsewhere=elsewhere
    )


class TileHistogram(NamedTuple):
    """int32 counts of ``bins`` cells for ``size`` agents, each tile of ``tile``
    consecutive agents adding into bins of its own (so that a GPU's atomic adds rarely
    meet), summed over tiles at the end. Integer sums: the same bits in any order and
    for any tiling. Several :meth:`add` calls update one buffer in place."""

    partial: jax.Array  # (tiles * bins,) int32
    bins: int
    tile: int

    @classmethod
    def zeros(cls, size: int, bins: int, tile: int) -> TileHistogram:
        tiles = -(-size // tile)
        if tiles * bins >= 2**31:
            raise ValueError(f"{tiles} tiles of {bins} bins do not fit int32 indices")
        return cls(jnp.zeros(tiles * bins, jnp.int32), bins, tile)

    def add(self, cells: jax.Array, valid: jax.Array, value: int = 1) -> TileHistogram:
        """Adds ``value`` at each valid ``(B,)`` cell; masked entries are dropped (an
        out-of-range index, never wrapped), so no dump bin collects them."""
        base = (jnp.arange(cells.shape[0], dtype=jnp.int32) // self.tile) * self.bins
        target = jnp.where(valid, base + cells, -1)
        partial = self.partial.at[target].add(value, mode="drop", wrap_negative_indices=False)
        return self._replace(partial=partial)

    def total(self) -> jax.Array:
        """``(bins,)`` int32 counts."""
        return self.partial.reshape(-1, self.bins).sum(axis=0, dtype=jnp.int32)


def _fold_events(stream: ae.Stream, body, state, unroll: bool = True):
    """``state`` folded through ``body(j, bits, position, state)`` over events ``j < E``
    in order; returns ``(last position, state)``. Unrolled up to
    :data:`UNROLLED_UP_TO_EVENTS` events, else a ``fori_loop`` of static trip count
    (the same arithmetic, so the same numbers)."""

    def one(j, carry):
        position, state = carry
        bits, position = stream.advance(position, j)
        return position, body(j, bits, position, state)

    carry = (stream.start(), state)

    def looped():
        return jax.lax.fori_loop(0, stream.num_events, one, carry)

    def unrolled():
        unrolled_carry = carry
        for j in range(stream.num_events):
            unrolled_carry = one(j, unrolled_carry)
        return unrolled_carry

    if not unroll or stream.num_events > UNROLLED_UP_TO_EVENTS:
        return looped()
    # A CPU compiles the unrolled chain several times slower (45 against 19 s for a
    # 10^4-agent run at E = 16, k = 4, on a loaded 2-core machine) and gains nothing
    # from the fusion a GPU needs: it keeps the loop.
    return ev.on_cpu_or_elsewhere(cpu=looped, elsewhere=unrolled)


def block_round_counts(spec: RunSpec, stream: ae.Stream, stage_actions, valid, types):
    """Pass 1 for one block: ``(max_stage_length + 1, T * k)`` int32, the per-round
    changes by events in rows ``< max_stage_length`` and the stage-action counts by type
    in the last row, and how many of the block's agents need more than ``E`` events."""
    k, width, rounds = spec.num_actions, spec.num_types * spec.num_actions, spec.max_stage_length
    tile = spec.tile_size
    own = types * k + stage_actions
    base = histogram(own, valid, width, tile)

    size = stage_actions.shape[0]
    start = TileHistogram.zeros(size, 2 * rounds * width, tile)

    def moves_of(j, bits, position, partial):
        action = ae.event_action(bits, k)
        moved = valid & stream.inside(position) & (action != stage_actions)
        row = jnp.where(moved, position, 0) * width + types * k
        # Departures in the first half of the bins (subtracted at the end), arrivals in
        # the second: every event's updates go into one buffer, updated in place.
        moves = start._replace(partial=partial).add(row + stage_actions, moved)
        return moves.add(rounds * width + row + action, moved).partial

    # A loop on every backend: unrolled, XLA materialised every event's position and
    # cells at once for the scatters (E int32 words and more per agent: about 180 of
    # pass 1's bytes per agent at E = 22 in the H200 compile); the loop keeps one.
    last, partial = _fold_events(stream, moves_of, start.partial, unroll=False)
    moves = start._replace(partial=partial).total()
    overflow = jnp.sum(valid & stream.overflow(last), dtype=jnp.int32)
    changes = (moves[rounds * width :] - moves[: rounds * width]).reshape(rounds, width)
    return jnp.concatenate([changes, base[None, :]]), overflow


def own_sums(
    spec: RunSpec,
    params,
    seed,
    stage,
    *,
    stream: ae.Stream,
    stage_actions: jax.Array,
    valid: jax.Array,
    types: jax.Array,
    round_payoffs: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Pass 2 for some agents (those of ``stream``): ``(k, n)`` float32 payoff sums and
    int32 observation counts of the stage, from their events (the events path's
    identities: :mod:`jaxstage.events`), added in event order."""
    k, num_types = spec.num_actions, spec.num_types
    stage_length = stream.stage_length
    table = round_payoffs.reshape(-1)
    noise_std = params.game["noise_std"]
    n = stream.index.shape[0]
    unrolled = k <= UNROLLED_UP_TO_ACTIONS

    def add(j, bits, position, state):
        explored, explored_counts, lost, missing = state
        action = ae.event_action(bits, k)
        away = valid & stream.inside(position) & (action != stage_actions)
        row = (jnp.where(away, position, 0) * num_types + types) * k
        paid = table[row + action] + noise_std * ae.event_noise(bits)
        if unrolled:
            here = [away & (action == a) for a in range(k)]
            explored = [s + jnp.where(h, paid, 0.0) for s, h in zip(explored, here, strict=True)]
            explored_counts = [
                c + h.astype(jnp.int32) for c, h in zip(explored_counts, here, strict=True)
            ]
        else:
            here = away[None, :] & (action[None, :] == jnp.arange(k)[:, None])
            explored = explored + jnp.where(here, paid[None, :], 0.0)
            explored_counts = explored_counts + here.astype(jnp.int32)
        lost = lost + jnp.where(away, table[row + stage_actions], 0.0)
        return explored, explored_counts, lost, missing + away.astype(jnp.int32)

    if unrolled:
        zeros = ([jnp.zeros(n, jnp.float32)] * k, [jnp.zeros(n, jnp.int32)] * k)
    else:
        zeros = (jnp.zeros((k, n), jnp.float32), jnp.zeros((k, n), jnp.int32))
    start = (*zeros, jnp.zeros(n, jnp.float32), jnp.zeros(n, jnp.int32))
    _, (explored, explored_counts, lost, missing) = _fold_events(stream, add, start, UNROLL_PASS_2)
    if unrolled:
        explored, explored_counts = jnp.stack(explored), jnp.stack(explored_counts)

    in_stage = (jnp.arange(spec.max_stage_length) < stage_length)[:, None, None]
    stage_totals = jnp.sum(jnp.where(in_stage, round_payoffs, 0.0), axis=0)  # (T, k)
    stayed = stage_length - missing
    noise = crng.normal(crng.stream_key(seed, stage, fb.OWN_NOISE_STREAM), stream.index)
    own_sum = (
        stage_totals[types, stage_actions]
        - lost
        + noise_std * jnp.sqrt(stayed.astype(jnp.float32)) * noise
    )
    is_own = jnp.arange(k)[:, None] == stage_actions[None, :]
    sums = jnp.where(is_own, own_sum[None, :], explored)
    counts = jnp.where(is_own, stayed[None, :], explored_counts)
    return sums, jnp.where(valid[None, :], counts, 0)


class _Stage(NamedTuple):
    """What every block of a stage shares."""

    seed: jax.Array
    stage: jax.Array
    explore_prob: jax.Array
    stage_length: jax.Array


def _stream_of(spec: RunSpec, context: _Stage, index: jax.Array) -> ae.Stream:
    return ae.stream(
        context.seed,
        context.stage,
        index,
        context.explore_prob,
        context.stage_length,
        spec.agent_events,
        spec.max_stage_length,
    )


def _own_sums_of(spec: RunSpec, params, context: _Stage, round_payoffs, index, actions, valid):
    """:func:`own_sums` of the agents of uint32 global ``index`` on stage ``actions``."""
    return own_sums(
        spec,
        params,
        context.seed,
        context.stage,
        stream=_stream_of(spec, context, index),
        stage_actions=actions,
        valid=valid,
        types=fb.types_of(spec, index),
        round_payoffs=round_payoffs,
    )


def _over_blocks(spec: RunSpec, body, state):
    """``body(block, state)`` over this shard's blocks (no loop for one block)."""
    if spec.local_blocks == 1:
        return body(jnp.int32(0), state)
    return jax.lax.fori_loop(0, spec.local_blocks, body, state)


def _sample_own_sums(spec, params, context, actions, round_payoffs):
    """``(k,)`` payoff sums and counts of the sampled agents' own observations, by
    :func:`own_sums` on the sampled indices (each from the shard holding it)."""
    sampled = fb.sample_indices(spec, context.seed, context.stage)
    index = sampled.astype(jnp.uint32)
    sampled_actions, here = fb.local_actions(spec, actions, sampled)
    sums, counts = _own_sums_of(spec, params, context, round_payoffs, index, sampled_actions, here)
    sums = fb.shard_total(spec, jnp.where(here[None, :], sums, 0.0))
    return sums.sum(axis=1), fb.shard_total(spec, counts).sum(axis=1)


def published_payoffs(
    game, spec: RunSpec, params, seed, stage, *, actions, stage_counts, nonfinite
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``fast.published_payoffs`` with the sampled agents' actions counted by
    :func:`histogram` (one-hot sums or tile-private bins on a GPU) instead of
    ``fast_blocks.count_values``'s bincount, a scatter of up to ``info_sample_size``
    agents into ``k`` bins whose atomic adds contend. Integer counts, so the same bits;
    the arithmetic after the count is ``fast_population.published_counts``'s, operation
    for operation (kept in step by tests/test_agents_path.py, which compares the two)."""
    if spec.info_sample_size is None:  # the whole population's counts: no count here
        return fast.published_payoffs(
            game,
            spec,
            params,
            seed,
            stage,
            actions=actions,
            stage_counts=stage_counts,
            nonfinite=nonfinite,
        )
    n, k = spec.num_agents, spec.num_actions
    sampled, here = fb.local_actions(spec, actions, fb.sample_indices(spec, seed, stage))
    # Tiles of at least MIN_TILE agents and k bins, as pass 1's (choose_tile_size); the
    # sample need not fill its last tile.
    tile = max(MIN_TILE, 2 ** math.ceil(math.log2(max(k, 1))))
    d_hat = fb.shard_total(spec, histogram(sampled, here, k, tile)).astype(jnp.float32)
    d_hat = d_hat / spec.info_sample_size
    if spec.info_noisy:
        noise = crng.normal(
            crng.stream_key(seed, stage, fb.INFO_NOISE_STREAM), jnp.arange(k, dtype=jnp.uint32)
        )
        d_hat = clip_and_renormalise(d_hat + params.info_noise_std * noise)
    published = d_hat * n
    by_alternative = jnp.transpose(
        deviation_payoffs(game, params.game, published, n), (2, 0, 1)
    )  # (k, T, k): [b, type, current]
    return published, by_alternative, with_published_check(nonfinite, by_alternative)


def agent_stage(game, spec: RunSpec, params, actions: jax.Array, seed, stage):
    """One stage of the agents path on this shard's stage actions.

    Returns ``(new_actions, new_counts, record, overflow)``: ``new_counts`` the ``(T, k)``
    counts of the new stage actions (``record.metrics`` is left ``None``, as
    ``fast.fast_stage`` leaves it), ``overflow`` how many agents needed more than
    ``spec.agent_events`` events (int32, whole population; the driver reruns when it is
    not 0).
    """
    k, num_types, width = spec.num_actions, spec.num_types, spec.num_types * spec.num_actions
    rounds = spec.max_stage_length
    stage_length = params.stage_length[stage]
    context = _Stage(seed, stage, params.explore_prob[stage], stage_length)

    def pass_1(block, state):
        counts, overflow = state
        _, index, stage_actions, valid, types = fb.agent_block(spec, actions, block)
        more, over = block_round_counts(
            spec, _stream_of(spec, context, index), stage_actions, valid, types
        )
        return counts + more, overflow + over

    start = (jnp.zeros((rounds + 1, width), jnp.int32), jnp.int32(0))
    counts, overflow = fb.shard_total(spec, _over_blocks(spec, pass_1, start))
    stage_counts_by_type = counts[rounds]
    in_stage = (jnp.arange(rounds) < stage_length)[:, None]
    counts_by_round = jnp.where(in_stage, stage_counts_by_type[None, :], 0) + counts[:rounds]

    population = fast.stage_population(game, spec, params, seed, stage, counts_by_round)
    round_payoffs = population.round_payoffs
    nonfinite = population.nonfinite
    stage_counts = stage_counts_by_type.reshape(num_types, k).sum(axis=0)
    samples = None  # a shared sample's (sums, counts); private samples are per agent
    if spec.info == "payoffs" and spec.info_sample_size is not None and not spec.info_private:
        samples = _sample_own_sums(spec, params, context, actions, round_payoffs)
    published = by_alternative = None
    if spec.info == "distribution" and not spec.info_private:
        published, by_alternative, nonfinite = published_payoffs(
            game,
            spec,
            params,
            seed,
            stage,
            actions=actions,
            stage_counts=stage_counts,
            nonfinite=nonfinite,
        )
    shared = (population.action_sums, population.action_counts, by_alternative)
    private_distribution = spec.info_private and spec.info == "distribution"
    tables = None
    if spec.info_private and spec.info == "payoffs":
        tables = _own_sums_tables(spec, params, context, actions, round_payoffs)
        population_tables = tuple(agent_private.population_table(spec, t) for t in tables)

    def pass_2(block, state):
        new_actions, switched, new_counts, bad = state
        _, index, current, valid, types = fb.agent_block(spec, actions, block)
        ties = crng.uniform(crng.stream_key(seed, stage, fb.TIE_STREAM), index)
        if private_distribution:
            scores, own = agent_private.private_distribution_scores(
                game,
                spec,
                params,
                seed,
                stage,
                index=index,
                current=current,
                types=types,
                stage_counts=stage_counts,
            )
            found, position, at = first_bad_estimate(scores, own, valid)
            keep = bad[0] != jnp.uint32(NO_AGENT)  # an earlier block's agent comes first
            bad = (
                jnp.where(keep | ~found, bad[0], index[position]),
                jnp.where(keep | ~found, bad[1], at),
            )
            candidates = choose_candidates(ties, scores, current)
        elif tables is not None:  # private sampled payoffs: own rows plus the sample's
            rows = (block * spec.block_size, 0)
            size = (spec.block_size, k)
            own = [jax.lax.dynamic_slice(t, rows, size).T for t in tables]
            sample = agent_private.sampled_table_sums(
                spec,
                seed,
                stage,
                index=index,
                table_sums=population_tables[0],
                table_counts=population_tables[1],
            )
            estimates = private_info.pooled_estimates(*own, *sample)
            candidates = choose_candidates(ties, estimates, current)
        elif spec.needs_own_estimates:
            sums, obs = _own_sums_of(spec, params, context, round_payoffs, index, current, valid)
            candidates = choose_candidates(ties, own_estimates(sums, obs, samples), current)
        else:
            candidates = fast.shared_candidates(spec, *shared, ties, types, current)
        adopt = fb.adopts(params, seed, stage, index)
        chosen = jnp.where(adopt & valid, candidates, current)
        switched = switched + jnp.sum((chosen != current) & valid, dtype=jnp.int32)
        new_counts = new_counts + histogram(types * k + chosen, valid, width, spec.tile_size)
        chosen = chosen.astype(actions.dtype)
        if spec.local_blocks == 1:
            return chosen, switched, new_counts, bad
        start = block * spec.block_size
        new_actions = jax.lax.dynamic_update_slice(new_actions, chosen, (start,))
        return new_actions, switched, new_counts, bad

    # The first agent (lowest index) whose own estimate gave non-finite payoffs, and
    # that estimate (private distributions).
    no_bad = (jnp.uint32(NO_AGENT), jnp.zeros(k, jnp.float32))
    start = (jnp.zeros_like(actions), jnp.int32(0), jnp.zeros(width, jnp.int32), no_bad)
    new_actions, switched, new_counts, bad = _over_blocks(spec, pass_2, start)
    switched, new_counts = fb.shard_total(spec, (switched, new_counts))
    if private_distribution:
        first_agent, at = bad
        if spec.num_shards > 1:  # the lowest index over the shards, and its estimate
            lowest = jax.lax.pmin(first_agent, fb.AGENT_AXIS)
            at = fb.shard_total(spec, jnp.where(first_agent == lowest, at, 0.0))
            first_agent = lowest
        found = first_agent != jnp.uint32(NO_AGENT)
        nonfinite = jnp.where((nonfinite == 0) & found, PRIVATE_ESTIMATE, nonfinite)
        nonfinite = nonfinite.astype(jnp.int32)
        published = at  # reported by nonfinite_counts for PUBLISHED and PRIVATE_ESTIMATE
    record = fast.stage_record(spec, population, stage_length, switched, nonfinite, published)
    return new_actions, new_counts.reshape(num_types, k), record, overflow


def _own_sums_tables(spec: RunSpec, params, context: _Stage, actions, round_payoffs):
    """This shard's ``(local agents, k)`` tables of every agent's own payoff sums and
    observation counts (private sampled payoffs: agents read their samples' rows)."""
    k = spec.num_actions
    size = spec.local_blocks * spec.block_size

    def one_block(block, tables):
        _, index, current, valid, _ = fb.agent_block(spec, actions, block)
        sums, counts = _own_sums_of(spec, params, context, round_payoffs, index, current, valid)
        rows = (block * spec.block_size, 0)
        return tuple(
            jax.lax.dynamic_update_slice(t, v.T, rows)
            for t, v in zip(tables, (sums, counts), strict=True)
        )

    start = (jnp.zeros((size, k), jnp.float32), jnp.zeros((size, k), jnp.int32))
    return _over_blocks(spec, one_block, start)


def agent_counts_by_type(spec: RunSpec, actions: jax.Array) -> jax.Array:
    """``(T, k)`` counts of the stage actions (of every shard), by :func:`histogram`
    (``fast.fast_counts_by_type``'s bincount is a contended scatter on a GPU)."""
    k, width = spec.num_actions, spec.num_types * spec.num_actions

    def one_block(block, counts):
        _, _, current, valid, types = fb.agent_block(spec, actions, block)
        return counts + histogram(types * k + current, valid, width, spec.tile_size)

    counts = _over_blocks(spec, one_block, jnp.zeros(width, jnp.int32))
    return fb.shard_total(spec, counts).reshape(spec.num_types, k)
