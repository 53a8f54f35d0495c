"""Best-reply dynamics at the level of counts (MODEL.md section 4).

The state is a ``(num_types, k)`` count array, so any population size costs the same per
step. Two dynamics:

* ``"sequential"``: each step, one agent drawn uniformly among those *not* at an eps-best
  reply (a (type, action) group drawn with probability proportional to its count) moves
  to a best reply;
* ``"simultaneous"``: each step, in every (type, action) group not at an eps-best reply,
  ``Binomial(count, inertia)`` agents move to the group's best reply.

Counts are int32 and exact by construction for any population up to ``2**31 - 1``: the
mover of a sequential step is an exact uniform integer below the number of unhappy agents
(not a float32 weight, which rounds counts above ``2**24`` and cannot pick a group
holding less than about ``1e-9`` of them), the simultaneous movers are
:func:`~jaxstage.exact_binomial.exact_binomial` draws (never more than the group has),
and the trajectory records integer counts. Every partial sum of counts is bounded by
``n <= 2**31 - 1`` (counts are non-negative and sum to ``n``), so no int32 sum overflows.

Both stop at a pure eps-Nash equilibrium (every agent at an eps-best reply). Ties between
best replies are broken uniformly at random (one draw per group and step). With
``inertia = 1`` the simultaneous dynamics are deterministic apart from ties, and a
two-step cycle (the oscillation of congestion and minority games) is detected and
reported as ``cycled`` rather than run to ``max_steps``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage._validation import check_int, check_probability, check_real
from jaxstage.exact_binomial import MAX_TRIALS, exact_binomial
from jaxstage.games import AnonymousGame, Params, type_counts
from jaxstage.metrics import best_reply_gaps, deviation_payoffs

__all__ = ["BestReplyResult", "best_reply_dynamics", "solve_equilibrium", "initial_counts"]

MODES = ("sequential", "simultaneous")

COUNT_DTYPE = jnp.int32
MAX_AGENTS = int(np.iinfo(np.int32).max)
"""Largest population: counts are int32 (``jaxstage.plan.MAX_AGENTS`` is the same
``2**31 - 1``). Raising it needs int64 counts here (``jax_enable_x64``) and a 64-bit
uniform draw in :func:`_uniform_below`."""


@dataclasses.dataclass
class BestReplyResult:
    """Outcome of count-level best-reply dynamics.

    Attributes:
        converged: reached a pure eps-Nash equilibrium.
        cycled: detected a two-step cycle (simultaneous dynamics), hence not converging.
        steps: steps taken (moves for sequential, rounds of moves for simultaneous).
        counts: ``(T, k)`` final counts by type and action.
        distribution: ``(k,)`` final overall distribution.
        nash_gap: eps-Nash gap of the final state.
        trajectory: ``(steps_recorded, k)`` float32 distribution after each recorded
            step, starting with the initial state (every ``record_every`` steps):
            ``trajectory_counts / n`` within 2 float32 ulps, rounded as always.
        trajectory_counts: ``(steps_recorded, k)`` int64 action counts of the same
            states, exact.
    """

    converged: bool
    cycled: bool
    steps: int
    counts: np.ndarray
    distribution: np.ndarray
    nash_gap: float
    trajectory: np.ndarray
    config: dict[str, Any]
    trajectory_counts: np.ndarray | None = None

    def to_frame(self, *, record_every: int | None = None) -> Any:
        """The trajectory as a pandas ``DataFrame``: the table of ``trajectory.csv``.

        Args:
            record_every: the ``record_every`` the dynamics ran with (for the ``step``
                column); default: ``config["record_every"]`` if recorded.

        Returns:
            A ``pandas.DataFrame``, columns as :func:`jaxstage.results.best_reply_rows`.

        Raises:
            ImportError: pandas is not installed (``pip install "jaxstage[frame]"``).
        """
        from jaxstage import results  # results imports this module

        return results.rows_to_frame(results.best_reply_rows(self, record_every=record_every))


def initial_counts(game: AnonymousGame, num_agents: int, initial: Any = "uniform") -> np.ndarray:
    """``(T, k)`` starting counts: each type's agents split by largest-remainder rounding.

    Args:
        initial: ``"uniform"``, an action index (everyone on it), a probability vector of
            ``k`` entries, or an explicit ``(T, k)`` (or ``(k,)`` for untyped games)
            integer count array summing to ``num_agents`` with the game's type sizes.
    """
    k = game.num_actions
    sizes = type_counts(game.type_shares, num_agents)
    if isinstance(initial, str):
        if initial != "uniform":
            raise ValueError(
                f"initial must be 'uniform', an action, a distribution or counts; got {initial!r}"
            )
        shares = np.full(k, 1.0 / k)
    elif isinstance(initial, (int, np.integer)):
        shares = np.eye(k)[check_int(initial, "initial action", low=0, high=k - 1)]
    else:
        array = np.asarray(initial)
        if np.issubdtype(array.dtype, np.integer):
            # A flat (k,) vector is accepted for games without types only.
            counts = array[None, :] if array.shape == (k,) and len(sizes) == 1 else array
            if (
                counts.shape != (len(sizes), k)
                or np.any(counts < 0)
                or not np.array_equal(counts.sum(axis=1), sizes)
            ):
                raise ValueError(
                    f"initial counts must be non-negative, of shape ({len(sizes)}, {k}) and sum "
                    f"per type to {sizes.tolist()}; got {array.tolist()}"
                )
            return counts.astype(np.int64)
        shares = array.astype(np.float64)
        if shares.shape != (k,) or np.any(shares < 0) or abs(shares.sum() - 1) > 1e-6:
            raise ValueError(
                f"initial distribution must have {k} non-negative entries summing "
                f"to 1, got {array.tolist()}"
            )
    return np.stack([type_counts(shares / shares.sum(), int(size)) for size in sizes])


def _group_best_replies(key, dev):
    """``(T, k)`` a best reply of each (type, action) group, ties broken at random."""
    best = jnp.max(dev, axis=-1, keepdims=True)
    scores = jnp.where(dev == best, jax.random.uniform(key, dev.shape), -1.0)
    return jnp.argmax(scores, axis=-1)


def _move(counts, best, movers):
    """Move ``movers[t, a]`` agents of each group to ``best[t, a]``."""
    k = counts.shape[1]
    arrivals = jnp.sum(movers[:, :, None] * jax.nn.one_hot(best, k, dtype=counts.dtype), axis=1)
    return counts - movers + arrivals


def _uniform_below(key: jax.Array, bound: jax.Array) -> jax.Array:
    """An exactly uniform int32 in ``[0, bound)`` for ``1 <= bound <= 2**31 - 1``.

    Rejection sampling: 32 random bits masked to the smallest ``2**b >= bound``, redrawn
    while ``>= bound``. Each try succeeds with probability ``bound / 2**b > 1/2``, so
    fewer than two tries are expected. ``jax.random.randint`` is no substitute: above
    ``2**16`` it reduces one 32-bit word modulo the span, which at ``2**31 - 1`` makes
    0 and 1 half again as likely as the rest, and at ``3 * 2**29`` the lower two thirds
    of the range (drawn with probability 3/4 instead of 2/3).
    """
    mask = (bound - 1).astype(jnp.uint32)
    for shift in (1, 2, 4, 8, 16):  # smear the top bit down: mask = 2**b - 1
        mask = mask | (mask >> shift)

    def draw(state):
        key, _ = state
        key, sub = jax.random.split(key)
        return key, (jax.random.bits(sub, (), jnp.uint32) & mask).astype(bound.dtype)

    _, value = jax.lax.while_loop(lambda state: state[1] >= bound, draw, draw((key, bound)))
    return value


def _pick_group(key: jax.Array, weights: jax.Array) -> jax.Array:
    """Index of a group drawn with probability ``weights[g] / sum(weights)``, exactly.

    ``weights`` are non-negative int32 with a sum ``<= 2**31 - 1`` (so their running sums
    are exact): a uniform integer ``r`` below the sum falls in exactly one group's
    interval ``[ends[g] - weights[g], ends[g])``, and only groups with ``weights > 0``
    have one. With a zero sum the index is meaningless (0): the caller discards the step.
    """
    ends = jnp.cumsum(weights)
    r = _uniform_below(key, jnp.maximum(ends[-1], 1))
    return jnp.sum(ends <= r)


def _step(game, params, eps, inertia, sequential, count_bound, key, counts):
    n = jnp.sum(counts)
    dev = deviation_payoffs(game, params, jnp.sum(counts, axis=0), n)
    unhappy = (best_reply_gaps(dev) > eps) & (counts > 0)
    tie_key, move_key = jax.random.split(key)
    best = _group_best_replies(tie_key, dev)
    if sequential:
        group = _pick_group(move_key, jnp.where(unhappy, counts, 0).reshape(-1))
        movers = jax.nn.one_hot(group, counts.size, dtype=counts.dtype).reshape(counts.shape)
    else:
        draws = exact_binomial(move_key, counts, inertia, max_total=count_bound)
        movers = jnp.where(unhappy, draws, 0)
    return _move(counts, best, movers), jnp.any(unhappy)


def _count_bound(num_agents: int) -> int:
    """Static bound on the counts' total for :func:`exact_binomial`: ``num_agents``
    rounded up to a power of two, at least ``MAX_TRIALS``, so that every population of
    at most ``MAX_TRIALS`` agents shares one compilation and its single-draw path, and
    larger ones compile at most 16 variants (``2**17`` to ``2**31``), paying at most twice
    the chunk slots they need."""
    return max(MAX_TRIALS, 1 << (num_agents - 1).bit_length())


def _run(
    game,
    params,
    counts,
    eps,
    inertia,
    key,
    sequential,
    max_steps,
    record_every,
    num_records,
    count_bound,
):
    """``while_loop`` until equilibrium, a detected 2-cycle, or ``max_steps``.

    The trajectory holds int32 action counts (exact; the caller divides by ``n``);
    rows never reached stay -1.
    """
    k = counts.shape[1]

    def cond(state):
        step, _, _, _, done, _, _ = state
        return (step < max_steps) & ~done

    def body(state):
        step, current, previous, before_previous, _, cycled, trajectory = state
        step_key = jax.random.fold_in(key, step)
        new, moved = _step(game, params, eps, inertia, sequential, count_bound, step_key, current)
        done = ~moved
        # A deterministic 2-cycle: the state returns to where it was two steps ago.
        two_cycle = (not sequential) & jnp.all(new == previous) & jnp.any(new != current)
        cycled = cycled | (two_cycle & (inertia >= 1.0))
        next_state = jnp.where(done, current, new)
        step_taken = jnp.where(done, step, step + 1)
        record_at = step_taken // record_every
        recorded = (step_taken % record_every == 0) & (record_at < num_records) & ~done
        # Out-of-range rows are dropped: an in-place update, no copy of the trajectory.
        slot = jnp.where(recorded, record_at, num_records)
        trajectory = trajectory.at[slot].set(jnp.sum(next_state, axis=0), mode="drop")
        return (step_taken, next_state, current, previous, done | cycled, cycled, trajectory)

    trajectory = jnp.full((num_records, k), -1, counts.dtype).at[0].set(jnp.sum(counts, axis=0))
    start = (jnp.int32(0), counts, counts, counts, jnp.bool_(False), jnp.bool_(False), trajectory)
    step, final, _, _, _, cycled, trajectory = jax.lax.while_loop(cond, body, start)
    n = jnp.sum(final)
    dev = deviation_payoffs(game, params, jnp.sum(final, axis=0), n)
    gaps = jnp.where(final > 0, best_reply_gaps(dev), -jnp.inf)
    return step, final, cycled, jnp.max(gaps), trajectory


_jit_run = jax.jit(_run, static_argnums=(0, 6, 7, 8, 9, 10))


def _distribution_rows(counts: np.ndarray, num_agents: int) -> np.ndarray:
    """``counts / n`` in float32, as the loop used to record it: ``float32(c)`` times the
    float32 reciprocal of ``n`` (XLA turns a division by one scalar into that product).
    Computed here from the exact integer counts, so the rows stay bit for bit what they
    were; each is within 2 float32 ulps of ``c / n`` (``trajectory_counts`` is exact)."""
    return counts.astype(np.float32) * (np.float32(1) / np.float32(num_agents))


def best_reply_dynamics(
    game: AnonymousGame,
    num_agents: int,
    *,
    mode: str = "sequential",
    inertia: float = 1.0,
    eps: float = 0.0,
    initial: Any = "uniform",
    max_steps: int | None = None,
    seed: int = 0,
    record_every: int = 1,
    max_records: int = 10_000,
    game_params: Params | None = None,
) -> BestReplyResult:
    """Run count-level best-reply dynamics from ``initial`` until an eps-equilibrium.

    Args:
        game: the game.
        num_agents: population size ``n >= 1``.
        mode: ``"sequential"`` or ``"simultaneous"``.
        inertia: switching probability ``p`` in ``(0, 1]`` (simultaneous only).
        eps: an agent is content when no deviation gains more than ``eps`` (``>= 0``).
        initial: see :func:`initial_counts`.
        max_steps: give up after this many steps (reported as not converged); default
            ``max(100_000, 20 * num_agents)`` for sequential dynamics, which move one
            agent per step (about 20 microseconds a step on a CPU), and ``100_000`` for
            simultaneous ones.
        seed: seed for the random choices.
        record_every: record the distribution every this many steps.
        max_records: at most this many recorded rows.
        game_params: overrides of ``game.default_params()``.

    Returns:
        A :class:`BestReplyResult`.

    Example:
        >>> import jaxstage as js
        >>> game = js.make_game("minority", capacity=0.5)
        >>> js.best_reply_dynamics(game, 100, mode="simultaneous", initial=0).cycled
        True
    """
    if not isinstance(game, AnonymousGame):
        raise TypeError(f"game must be an AnonymousGame, got {type(game).__name__}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    num_agents = check_int(num_agents, "num_agents", low=1, high=MAX_AGENTS)
    inertia = check_probability(inertia, "inertia")
    if inertia == 0:
        raise ValueError("inertia must be in (0, 1]: with 0 nobody ever moves")
    eps = check_real(eps, "eps", low=0.0)
    if max_steps is None:
        max_steps = (
            min(2**31 - 2, max(100_000, 20 * num_agents)) if mode == "sequential" else 100_000
        )
    max_steps = check_int(max_steps, "max_steps", low=0, high=2**31 - 2)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    record_every = check_int(record_every, "record_every", low=1)
    max_records = check_int(max_records, "max_records", low=1)
    counts = initial_counts(game, num_agents, initial)
    params = (
        game.default_params() if game_params is None else {**game.default_params(), **game_params}
    )
    num_records = int(min(max_records, max_steps // record_every + 1))
    sequential = mode == "sequential"
    step, final, cycled, gap, trajectory = _jit_run(
        game,
        params,
        jnp.asarray(counts, COUNT_DTYPE),
        jnp.float32(eps),
        jnp.float32(inertia),
        jax.random.key(seed),
        sequential,
        max_steps,
        # Steps never exceed max_steps, so a longer interval records the same (the first
        # state only) and keeps the loop's int32 arithmetic in range.
        min(record_every, max_steps + 1),
        num_records,
        MAX_TRIALS if sequential else _count_bound(num_agents),
    )
    final = np.asarray(final, dtype=np.int64)
    recorded = int(min(num_records, int(step) // record_every + 1))
    trajectory_counts = np.asarray(trajectory, dtype=np.int64)[:recorded]
    converged = bool(float(gap) <= eps) and not bool(cycled)
    return BestReplyResult(
        converged=converged,
        cycled=bool(cycled),
        steps=int(step),
        counts=final,
        distribution=final.sum(axis=0) / num_agents,
        nash_gap=float(gap),
        trajectory=_distribution_rows(trajectory_counts, num_agents),
        config={
            "game": game.config(),
            "action_names": None if game.action_names is None else list(game.action_names),
            "num_agents": num_agents,
            "mode": mode,
            "inertia": inertia,
            "eps": eps,
            "max_steps": max_steps,
            "seed": seed,
            "record_every": record_every,
        },
        trajectory_counts=trajectory_counts,
    )


def solve_equilibrium(
    game: AnonymousGame,
    num_agents: int = 100_000,
    *,
    eps: float = 1e-3,
    initial: Any = "uniform",
    seed: int = 0,
    max_steps: int | None = None,
) -> np.ndarray | None:
    """An approximate pure equilibrium distribution, from sequential best-reply dynamics.

    Returns ``None`` when the dynamics do not reach an eps-equilibrium within
    ``max_steps`` (for example a game whose best replies cycle).
    """
    result = best_reply_dynamics(
        game,
        num_agents,
        mode="sequential",
        eps=eps,
        initial=initial,
        seed=seed,
        max_steps=max_steps,
        record_every=2**30,  # record the initial state only
        max_records=1,
    )
    return result.distribution if result.converged else None
