"""Private information on the fast kernel's agents path: each agent's own sample and noise
from counter-based streams keyed by its global index (``info_sharing="private"``).

The model logic (estimated counts, best-reply payoffs, pooling) is
:mod:`jaxstage.private_info`'s, shared with the reference kernel; this module draws the
randomness, so that an agent's estimate is a pure function of (seed, stage, agent) and
the numbers do not depend on blocks or devices:

* **Sampled distribution** (``info="distribution"``, ``info_sample_size=m``): agent
  ``i``'s ``j``-th sampled agent is an index ``r = floor(w * n / 2**32)`` of a 32-bit
  word ``w`` of stream ``(PRIVATE_SAMPLE_STREAM, j)``, and its stage action is the
  action whose range of the population sorted by action holds ``r`` (a comparison with
  the cumulative stage counts: no gather). Each action is drawn with probability
  ``c_b / n`` to within ``2**-32``. ``m`` draws per agent and stage, ``O(m k)`` work:
  this stops paying past a few hundred (docs/performance.md says where), where the
  reference kernel's ``Multinomial(m, d)`` costs ``O(k)`` per agent, so samples above
  :data:`DRAWS_UP_TO` are drawn as that multinomial, with a key of the agent's own.
* **Noisy distribution**: ``k`` normals per agent, stream ``(PRIVATE_NOISE_STREAM, b)``.
* **Sampled payoffs** (``info="payoffs"``, ``info_sample_size=m``): every agent's own
  ``(k,)`` payoff sums and counts are written to a population table, then agent ``i``
  adds the rows of its ``m`` sampled agents (48-bit index draws,
  :func:`jaxstage.counter_rng.index_below`), in draw order. ``O(m)`` gathers of ``k``
  values per agent; the table is ``8 k`` bytes per agent (every device holds all of it
  when the population is split over devices).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxstage import counter_rng as crng
from jaxstage import fast_blocks as fb
from jaxstage import private_info
from jaxstage.decisions import UNROLLED_UP_TO_ACTIONS
from jaxstage.spec import RunSpec

__all__ = [
    "PRIVATE_SAMPLE_STREAM",
    "PRIVATE_NOISE_STREAM",
    "sample_action_counts",
    "info_noise",
    "private_distribution_scores",
    "sampled_agent_indices",
    "sampled_table_sums",
    "population_table",
]

#: Stream identifiers of the private draws (after ``agent_events.STREAM``, 8).
PRIVATE_SAMPLE_STREAM = 9
PRIVATE_NOISE_STREAM = 10
#: Sub-stream of :data:`PRIVATE_SAMPLE_STREAM` whose words key the multinomial draws
#: (past every draw index ``j < DRAWS_UP_TO``).
KEY_WORD = 2**31
#: Largest sample a sampled distribution draws agent by agent (``O(m k)`` per agent);
#: larger samples are drawn as ``Multinomial(m, d)``, ``O(k)`` binomials per agent (each
#: a rejection loop: a data-dependent ``while`` on a GPU), which on a CPU costs about what
#: 600 draws do (``benchmarks/private_info.py``; docs/performance.md, "Private
#: information"). ``kernel="auto"`` takes the reference kernel on a CPU from
#: ``plan.PRIVATE_SAMPLES_ON_REFERENCE_FROM`` on.
DRAWS_UP_TO = 512


def sample_action_counts(
    spec: RunSpec, seed: jax.Array, stage: jax.Array, index: jax.Array, stage_counts: jax.Array
) -> jax.Array:
    """``(k, B)`` int32 action counts of each agent's own sample of ``m`` agents drawn
    with replacement (``stage_counts``: the population's ``(k,)`` int32 counts): ``m``
    draws per agent up to :data:`DRAWS_UP_TO`, ``Multinomial(m, c / n)`` beyond."""
    if spec.info_sample_size > DRAWS_UP_TO:
        return _multinomial_counts(spec, seed, stage, index, stage_counts)
    return _drawn_counts(spec, seed, stage, index, stage_counts)


def _drawn_counts(spec, seed, stage, index, stage_counts):
    """``m`` draws per agent, each the action of a uniformly drawn rank in the
    population sorted by action."""
    k, m, n = spec.num_actions, spec.info_sample_size, spec.num_agents
    bounds = jnp.cumsum(stage_counts)[: k - 1]  # rank r is on action #{b : bounds[b] <= r}
    size = index.shape[0]

    def one_draw(j, counts):
        bits = crng.random_bits(crng.stream_key(seed, stage, PRIVATE_SAMPLE_STREAM, j), index)
        rank = crng.scaled_below(bits, n).astype(jnp.int32)
        action = jnp.zeros(size, jnp.int32)
        for b in range(k - 1):
            action = action + (rank >= bounds[b]).astype(jnp.int32)
        if k > UNROLLED_UP_TO_ACTIONS:
            return counts + (action[None, :] == jnp.arange(k)[:, None]).astype(jnp.int32)
        return jnp.stack([counts[b] + (action == b).astype(jnp.int32) for b in range(k)])

    return jax.lax.fori_loop(0, m, one_draw, jnp.zeros((k, size), jnp.int32))


def _multinomial_counts(spec, seed, stage, index, stage_counts):
    """``Multinomial(m, c / n)`` per agent (``jax.random.multinomial``: ``k``
    sequential binomials), each agent with a threefry key of its own made of two words of
    its counter-based stream, so that the draw does not depend on blocks or devices."""
    n = spec.num_agents
    words = [
        crng.random_bits(crng.stream_key(seed, stage, PRIVATE_SAMPLE_STREAM, KEY_WORD, w), index)
        for w in (0, 1)
    ]
    keys = jax.random.wrap_key_data(jnp.stack(words, axis=1), impl="threefry2x32")
    d = stage_counts.astype(jnp.float32) / n

    def one_agent(key):
        return jax.random.multinomial(key, spec.info_sample_size, d, dtype=jnp.int32)

    return jax.vmap(one_agent)(keys).T


def info_noise(spec: RunSpec, seed: jax.Array, stage: jax.Array, index: jax.Array) -> jax.Array:
    """``(B, k)`` float32 standard normals of each agent's own information noise."""
    rows = [
        crng.normal(crng.stream_key(seed, stage, PRIVATE_NOISE_STREAM, b), index)
        for b in range(spec.num_actions)
    ]
    return jnp.stack(rows, axis=1)


def private_distribution_scores(
    game,
    spec: RunSpec,
    params,
    seed: jax.Array,
    stage: jax.Array,
    *,
    index: jax.Array,
    current: jax.Array,
    types: jax.Array,
    stage_counts: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """``(k, B)`` payoffs each agent of ``index`` (uint32 global indices) expects from
    staying on ``current`` and from each alternative, at its own estimated counts
    (``info="distribution"``, ``info_sharing="private"``), and those ``(B, k)`` counts."""
    sample = None
    if spec.info_sample_size is not None:
        sample = sample_action_counts(spec, seed, stage, index, stage_counts).T
    noise = info_noise(spec, seed, stage, index) if spec.info_noisy else None
    own = private_info.estimated_counts(
        stage_counts.astype(jnp.float32),
        spec.num_agents,
        sample_counts=sample,
        sample_size=spec.info_sample_size,
        noise=noise,
        noise_std=params.info_noise_std,
    )
    scores = private_info.best_reply_payoffs(
        game, params.game, own, types, current, spec.num_agents
    )
    return scores, own


def sampled_agent_indices(
    spec: RunSpec, seed: jax.Array, stage: jax.Array, index: jax.Array, draw: jax.Array
) -> jax.Array:
    """int32 global index of the ``draw``-th agent each agent of ``index`` samples:
    uniform over ``[0, n)`` to one part in ``2**48 / n``."""
    first = crng.random_bits(crng.stream_key(seed, stage, PRIVATE_SAMPLE_STREAM, draw), index)
    second = crng.random_bits(crng.stream_key(seed, stage, PRIVATE_SAMPLE_STREAM, draw, 1), index)
    return crng.index_below(first, second, spec.num_agents)


def sampled_table_sums(
    spec: RunSpec,
    seed: jax.Array,
    stage: jax.Array,
    *,
    index: jax.Array,
    table_sums: jax.Array,
    table_counts: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """``(k, B)`` payoff sums and counts of the observations of each agent's own sample of
    ``m`` agents, from the population's ``(padded_agents, k)`` tables of every agent's own
    sums and counts, added in draw order (the same bits for any blocks and devices)."""
    k, size = spec.num_actions, index.shape[0]

    def one_draw(j, totals):
        sampled = sampled_agent_indices(spec, seed, stage, index, j)
        return totals[0] + table_sums[sampled].T, totals[1] + table_counts[sampled].T

    start = (jnp.zeros((k, size), jnp.float32), jnp.zeros((k, size), jnp.int32))
    return jax.lax.fori_loop(0, spec.info_sample_size, one_draw, start)


def population_table(spec: RunSpec, rows: jax.Array) -> jax.Array:
    """The whole population's ``(padded_agents, k)`` table on every device, from this
    shard's rows (an all-gather when the population is split over devices)."""
    if spec.num_shards == 1:
        return rows
    return jax.lax.all_gather(rows, fb.AGENT_AXIS, tiled=True)
