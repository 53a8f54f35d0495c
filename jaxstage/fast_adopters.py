"""The fast kernel's adopter filter: stage-end decisions for the adopting agents only.

At small update probabilities (``spec.filter_adopters``) most agents keep their action
whatever they observed, so pass 2 gathers each block's adopters and computes their
events, estimates and candidates only; pass 1 has kept the adopters' events
(:class:`~jaxstage.fast_pass1.KeptAdopterEvents`), and the new action counts follow from
the adopters' changes. Every sum is added in the order it would be for the whole block,
so the numbers are bitwise those of deciding for every agent (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxstage import counter_rng as crng
from jaxstage import events as ev
from jaxstage.decisions import choose_candidates
from jaxstage.fast_blocks import (
    TIE_STREAM,
    adopters_among,
    adopts,
    agent_block,
    block_chunks,
    count_values,
    in_block,
    types_of,
)
from jaxstage.fast_pass1 import KeptAdopterEvents, kept_row
from jaxstage.fast_pass2 import event_own_sums, own_estimates
from jaxstage.spec import RunSpec

__all__ = ["adopter_decisions"]


def adopter_decisions(
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    *,
    actions: jax.Array,
    kept: KeptAdopterEvents | None,
    round_payoffs: jax.Array,
    stage_length: jax.Array,
    samples: tuple[jax.Array, jax.Array] | None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Stage-end actions when only adopters are decided (``spec.filter_adopters``).

    An agent that does not adopt keeps its action whatever it observed, so each block's
    adopters are gathered (in index order, ``spec.adopter_capacity`` at a time, almost
    always one window) and only their events, estimates and candidates are computed;
    every sum is added in the same order as for the whole block, so the numbers are
    bitwise those of deciding for every agent. Returns the new actions, how many agents
    switched, and the ``(T * k,)`` change in the counts of stage actions (only adopters
    change, so the new counts need no pass over the population).
    """
    capacity, size = spec.adopter_capacity, spec.block_size
    rows = -(-size // ev.EVENT_CHUNK)  # the mask in rows of a chunk, as compact wants
    tie_key = crng.stream_key(seed, stage, TIE_STREAM)
    slots = jnp.arange(capacity, dtype=jnp.int32)

    k, width = spec.num_actions, spec.num_types * spec.num_actions

    def one_block(block, state):
        start, index, current, valid, _ = agent_block(spec, actions, block)
        adopt = adopts(params, seed, stage, index) & valid
        mask = jnp.pad(adopt, (0, rows * ev.EVENT_CHUNK - size)).reshape(rows, -1)
        order, total = ev.compact(mask, capacity)
        first = None if kept is None else kept_row(kept, block)
        chunks = block_chunks(spec, start)

        def one_window(carry):
            w, (new_actions, switched, changed) = carry
            position = jax.lax.dynamic_slice(order, (w * capacity,), (capacity,))
            on = w * capacity + slots < total
            # Each agent's column in this window, ``capacity`` for everyone else.
            column = (
                jnp.full(size, capacity, jnp.int32)
                .at[jnp.where(on, position, size)]
                .set(slots, mode="drop")
            )

            def column_of(events):
                inside = in_block(spec, events, start)
                picked = column[jnp.where(inside, events.agent - start, 0)]
                return picked, inside & (picked < capacity)

            def keep(events):  # cheaper than the gather of column_of
                return adopters_among(spec, params, seed, stage, events, start)

            agent = index[position]
            stage_action = current[position]
            sums, counts = event_own_sums(
                spec,
                params,
                seed,
                stage,
                chunks=chunks,
                column_of=column_of,
                own=(agent, stage_action, on, types_of(spec, agent)),
                round_payoffs=round_payoffs,
                stage_length=stage_length,
                keep=keep,
                listed=first,
            )
            estimates = own_estimates(sums, counts, samples)
            chosen = choose_candidates(crng.uniform(tie_key, agent), estimates, stage_action)
            # Into this shard's actions; -1 (dropped, not wrapped) for the empty columns: an
            # index past the end would not fit int32 when a shard holds 2**31 agents.
            target = jnp.where(on, block * size + position, -1)
            new_actions = new_actions.at[target].set(
                chosen.astype(actions.dtype), mode="drop", wrap_negative_indices=False
            )
            moved = on & (chosen != stage_action)
            cell = types_of(spec, agent) * k
            changed = changed + count_values(cell + chosen, moved, width)
            changed = changed - count_values(cell + stage_action, moved, width)
            return w + 1, (new_actions, switched + jnp.sum(moved, dtype=jnp.int32), changed)

        more = lambda carry: carry[0] * capacity < total  # noqa: E731
        return jax.lax.while_loop(more, one_window, (jnp.int32(0), state))[1]

    start = (actions, jnp.int32(0), jnp.zeros(width, jnp.int32))
    return jax.lax.fori_loop(0, spec.local_blocks, one_block, start)
