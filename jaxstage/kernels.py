"""The compiled programs of both kernels: the initial state and a chunk of stages, single
and batched, and the metrics the fast kernel computes from its counts.

Each kernel is four jitted programs (:func:`compiled`): the initial state, a chunk of
stages, and both batched over a sweep's rows. The fast kernel's programs return action
counts; their metrics are computed by one single-device program on the host's counts, so
that their rounding does not depend on how the population is sharded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxstage import agent_stage, fast, learner_kernel, reference
from jaxstage.metrics import (
    count_metrics,
)
from jaxstage.reference import scan_stages


def initial_state(game, spec, params, kind, payload, types, seed_key):
    """The reference kernel's initial state: stage actions, or with another learner
    (``spec.learner``) its state (:mod:`jaxstage.learner_kernel`)."""
    if spec.learner is not None:
        return learner_kernel.initial_state(game, spec, params, kind, payload, types, seed_key)
    return reference.initial_state(game, spec, params, kind, payload, types, seed_key)


def run_chunk(game, spec, params, actions, types, stages_key, first_stage):
    """The reference kernel's chunk of stages (of ``spec.learner``'s hooks when set)."""
    if spec.learner is not None:
        return learner_kernel.run_chunk(game, spec, params, actions, types, stages_key, first_stage)
    return reference.run_chunk(game, spec, params, actions, types, stages_key, first_stage)


def fast_run_chunk(game, spec, params, actions, types, seed, first_stage):
    if spec.exploration_path == "agents":
        return agents_run_chunk(game, spec, params, actions, seed, first_stage)

    def on_shard(params, actions, seed, first_stage):
        def stage_fn(carry, stage):
            actions, kept = carry
            actions, kept, counts, record = fast.fast_stage(
                game, spec, params, actions, seed, stage, kept
            )
            return (actions, kept), (counts, record)

        # The kept-events buffer (each shard's own) is carried through the chunk's stages
        # and reused in place.
        start = (actions, fast.kept_events_buffer(spec))
        (actions, _), records = scan_stages(spec, stage_fn, start, first_stage)
        return actions, records

    agents, replicated = P(fast.AGENT_AXIS), P()
    run = fast.on_shards(
        spec, on_shard, (replicated, agents, replicated, replicated), (agents, replicated)
    )
    # The metrics are computed from these counts by ``engine.Pipeline``, outside this
    # (possibly sharded) program, so that even their rounding does not depend on it.
    actions, (counts, records) = run(params, actions, seed, first_stage)
    return actions, records._replace(metrics=counts)


def agents_run_chunk(game, spec, params, actions, seed, first_stage):
    """:func:`fast_run_chunk` on the agents path; ``records.metrics`` holds ``(counts,
    overflow)``, the second the agents of each stage that needed more than
    ``spec.agent_events`` events (split off by :meth:`jaxstage.engine.Pipeline.advance`)."""

    def on_shard(params, actions, seed, first_stage):
        def stage_fn(actions, stage):
            actions, counts, record, overflow = agent_stage.agent_stage(
                game, spec, params, actions, seed, stage
            )
            return actions, (counts, overflow, record)

        return scan_stages(spec, stage_fn, actions, first_stage)

    agents, replicated = P(fast.AGENT_AXIS), P()
    run = fast.on_shards(
        spec, on_shard, (replicated, agents, replicated, replicated), (agents, replicated)
    )
    actions, (counts, overflow, records) = run(params, actions, seed, first_stage)
    return actions, records._replace(metrics=(counts, overflow))


def fast_initial_state(game, spec, params, kind, payload, types, seed):
    def on_shard(payload):
        actions = fast.fast_initial(spec, kind, payload, seed)
        if spec.exploration_path == "agents":  # no contended scatter on a GPU
            return actions, agent_stage.agent_counts_by_type(spec, actions)
        return actions, fast.fast_counts_by_type(spec, actions)

    agents, replicated = P(fast.AGENT_AXIS), P()
    if kind == "actions":  # one action per agent: padded, then split like the population
        payload = jnp.pad(payload, (0, spec.padded_agents - spec.num_agents))
    payload_spec = agents if kind == "actions" else replicated
    initial = fast.on_shards(spec, on_shard, (payload_spec,), (agents, replicated))
    actions, counts = initial(payload)
    return actions, seed, counts  # metrics by ``engine.Pipeline.init``


def stage_metrics(game, params, counts):
    """``count_metrics`` of ``(stages, T, k)`` counts."""
    return jax.vmap(lambda c: count_metrics(game, params.game, c, params.eps))(counts)


jit_stage_metrics = jax.jit(stage_metrics, static_argnums=0)
jit_stage_metrics_batched = jax.jit(jax.vmap(stage_metrics, in_axes=(None, 0, 0)), static_argnums=0)


def rows_in_turn(fn, in_axes):
    """``jax.vmap(fn, in_axes)`` computed one row after another (``lax.map``).

    The fast kernel's sweeps use it: its blocks, event loops and scatters are sized for
    one population, and vectorising them over rows ran 1.4 to 1.8x slower per agent-round
    (10 rows of 10^5 and 10^6 agents, ``benchmarks/sweep_rows.py``) and multiplied the
    temporaries by the batch. Row ``i`` is then exactly the single run ``i``.
    """

    def batched(*args):
        rows = tuple(arg for arg, axis in zip(args, in_axes, strict=True) if axis == 0)

        def one_row(row):
            values = iter(row)
            pairs = zip(args, in_axes, strict=True)
            return fn(*(next(values) if axis == 0 else arg for arg, axis in pairs))

        return jax.lax.map(one_row, rows)

    return batched


def compiled(initial_fn, chunk_fn, batch=jax.vmap):
    """Jitted single and batched (``batch`` over params, actions and keys) versions."""
    return (
        jax.jit(initial_fn, static_argnums=(0, 1, 3)),
        # The stage actions passed in are the previous chunk's, never used again: donated,
        # their buffer takes the new ones (one copy of the population less at peak).
        jax.jit(chunk_fn, static_argnums=(0, 1), donate_argnums=(3,)),
        jax.jit(
            batch(initial_fn, in_axes=(None, None, 0, None, None, None, 0)),
            static_argnums=(0, 1, 3),
        ),
        jax.jit(
            batch(chunk_fn, in_axes=(None, None, 0, 0, None, 0, None)),
            static_argnums=(0, 1),
        ),
    )


jit_initial, jit_chunk, jit_initial_batched, jit_chunk_batched = compiled(initial_state, run_chunk)
FAST = compiled(fast_initial_state, fast_run_chunk, batch=rows_in_turn)
#: The fast kernel's chunk of one stage, its input not donated. Donated, XLA's CPU
#: backend held the population three times (the input, reserved for the output; a copy of
#: it, read by the stage; the new actions, copied into the output at the end), 3.0 bytes
#: per agent; not donated, twice (the input, which the caller then drops, and the new
#: actions). Peak RSS of ``simulate`` at 5e8 agents, k = 2, rounds path: 1.83 GB donated,
#: 1.33 GB kept (one stage); 1.36 GB donated, 2.32 GB kept (25 stages, chunks of
#: several stages, where the loop over stages takes the donated input's buffer).
fast_single_stage_chunk = jax.jit(fast_run_chunk, static_argnums=(0, 1))
REFERENCE = (jit_initial, jit_chunk, jit_initial_batched, jit_chunk_batched)
