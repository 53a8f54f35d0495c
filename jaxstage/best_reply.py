"""Best-reply dynamics at the level of counts (MODEL.md section 4).

The state is a ``(num_types, k)`` count array, so any population size costs the same per
step. Two dynamics:

* ``"sequential"``: each step, one agent drawn uniformly among those *not* at an eps-best
  reply (a (type, action) group drawn with probability proportional to its count) moves
  to a best reply;
* ``"simultaneous"``: each step, in every (type, action) group not at an eps-best reply,
  ``Binomial(count, inertia)`` agents move to the group's best reply.

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
from jaxstage.games import AnonymousGame, Params, type_counts
from jaxstage.metrics import best_reply_gaps, deviation_payoffs

__all__ = ["BestReplyResult", "best_reply_dynamics", "solve_equilibrium", "initial_counts"]

MODES = ("sequential", "simultaneous")


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
        trajectory: ``(steps_recorded, k)`` distribution after each recorded step,
            starting with the initial state (every ``record_every`` steps).
    """

    converged: bool
    cycled: bool
    steps: int
    counts: np.ndarray
    distribution: np.ndarray
    nash_gap: float
    trajectory: np.ndarray
    config: dict[str, Any]


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


def _step(game, params, eps, inertia, sequential, key, counts):
    n = jnp.sum(counts)
    dev = deviation_payoffs(game, params, jnp.sum(counts, axis=0), n)
    unhappy = (best_reply_gaps(dev) > eps) & (counts > 0)
    tie_key, move_key = jax.random.split(key)
    best = _group_best_replies(tie_key, dev)
    if sequential:
        weights = jnp.where(unhappy, counts, 0).astype(jnp.float32).reshape(-1)
        logits = jnp.where(weights > 0, jnp.log(jnp.maximum(weights, 1e-30)), -jnp.inf)
        group = jax.random.categorical(move_key, logits)
        movers = jax.nn.one_hot(group, counts.size, dtype=counts.dtype).reshape(counts.shape)
    else:
        draws = jax.random.binomial(move_key, counts.astype(jnp.float32), inertia)
        movers = jnp.where(unhappy, jnp.round(draws).astype(counts.dtype), 0)
    return _move(counts, best, movers), jnp.any(unhappy)


def _run(game, params, counts, eps, inertia, key, sequential, max_steps, record_every, num_records):
    """``while_loop`` until equilibrium, a detected 2-cycle, or ``max_steps``."""
    k = counts.shape[1]

    def cond(state):
        step, _, _, _, done, _, _ = state
        return (step < max_steps) & ~done

    def body(state):
        step, current, previous, before_previous, _, cycled, trajectory = state
        new, moved = _step(
            game, params, eps, inertia, sequential, jax.random.fold_in(key, step), current
        )
        done = ~moved
        # A deterministic 2-cycle: the state returns to where it was two steps ago.
        two_cycle = (not sequential) & jnp.all(new == previous) & jnp.any(new != current)
        cycled = cycled | (two_cycle & (inertia >= 1.0))
        next_state = jnp.where(done, current, new)
        step_taken = jnp.where(done, step, step + 1)
        record_at = step_taken // record_every
        recorded = (step_taken % record_every == 0) & (record_at < num_records) & ~done
        row = jnp.sum(next_state, axis=0).astype(jnp.float32) / jnp.sum(next_state)
        # Out-of-range rows are dropped: an in-place update, no copy of the trajectory.
        slot = jnp.where(recorded, record_at, num_records)
        trajectory = trajectory.at[slot].set(row, mode="drop")
        return (step_taken, next_state, current, previous, done | cycled, cycled, trajectory)

    first_row = jnp.sum(counts, axis=0).astype(jnp.float32) / jnp.sum(counts)
    trajectory = jnp.full((num_records, k), jnp.nan, jnp.float32).at[0].set(first_row)
    start = (jnp.int32(0), counts, counts, counts, jnp.bool_(False), jnp.bool_(False), trajectory)
    step, final, _, _, _, cycled, trajectory = jax.lax.while_loop(cond, body, start)
    n = jnp.sum(final)
    dev = deviation_payoffs(game, params, jnp.sum(final, axis=0), n)
    gaps = jnp.where(final > 0, best_reply_gaps(dev), -jnp.inf)
    return step, final, cycled, jnp.max(gaps), trajectory


_jit_run = jax.jit(_run, static_argnums=(0, 6, 7, 8, 9))


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
    num_agents = check_int(num_agents, "num_agents", low=1, high=2**31 - 1)
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
    step, final, cycled, gap, trajectory = _jit_run(
        game,
        params,
        jnp.asarray(counts, jnp.int32),
        jnp.float32(eps),
        jnp.float32(inertia),
        jax.random.key(seed),
        mode == "sequential",
        max_steps,
        record_every,
        num_records,
    )
    final = np.asarray(final, dtype=np.int64)
    trajectory = np.asarray(trajectory)
    recorded = int(min(num_records, int(step) // record_every + 1))
    converged = bool(float(gap) <= eps) and not bool(cycled)
    return BestReplyResult(
        converged=converged,
        cycled=bool(cycled),
        steps=int(step),
        counts=final,
        distribution=final.sum(axis=0) / num_agents,
        nash_gap=float(gap),
        trajectory=trajectory[:recorded],
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
