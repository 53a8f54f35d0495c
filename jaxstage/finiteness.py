"""Non-finite payoffs are found during the run and stop it with an error.

A game's expected payoffs can be NaN or infinite somewhere inside the simplex (a user's
payoff function with a pole, a ``0 * log 0``) although they are finite at the vertices
and the uniform point that :func:`jaxstage.games.from_payoff_fn` checks. A NaN then
spreads silently: estimates compare false, ``nash_gap`` becomes NaN and the population
drifts. The kernels therefore record, per stage, whether every expected payoff they used
was finite (:func:`first_nonfinite_round`, :func:`with_published_check`: ``k`` values per
round, cheap next to the agents), and the driver raises :class:`NonFinitePayoffError`
after each chunk of stages (:func:`check_stages`), naming the stage, the round, the
distribution and the actions. Results never carry a silent NaN.

The code of a stage (``StageRecord.nonfinite``): ``0`` when every payoff was finite,
``r + 1`` when the expected payoffs of round ``r`` were not, ``-1`` when those at the
published distribution (``info="distribution"``) were not, ``-2`` when the learner's own
state (e.g. EXP3's log-weights) stopped being finite at the stage end. Zeros are also what the
stages past a run's end record, so they read as "finite".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "NonFinitePayoffError",
    "NonFiniteLearnerStateError",
    "first_nonfinite_round",
    "with_published_check",
    "first_bad_estimate",
    "nonfinite_counts",
    "check_stages",
    "check_metrics",
]

PUBLISHED = -1
LEARNER_STATE = -2
#: Some agent's own estimate of the distribution (``info_sharing="private"``) gave
#: non-finite payoffs; the counts reported are the first such agent's estimate.
PRIVATE_ESTIMATE = -3


class NonFiniteLearnerStateError(ValueError):
    """A learner's state (e.g. EXP3's float32 log-weights) overflowed to a non-finite
    value."""


class NonFinitePayoffError(ValueError):
    """The game's expected payoffs were NaN or infinite at a distribution the run met."""


def first_nonfinite_round(round_payoffs: jax.Array, stage_length: jax.Array) -> jax.Array:
    """``r + 1`` for the first round ``r < stage_length`` whose ``(R, T, k)`` expected
    payoffs are not all finite, else 0 (int32)."""
    rounds = round_payoffs.shape[0]
    bad = ~jnp.all(jnp.isfinite(round_payoffs).reshape(rounds, -1), axis=1)
    bad = bad & (jnp.arange(rounds) < stage_length)
    return jnp.where(jnp.any(bad), jnp.argmax(bad).astype(jnp.int32) + 1, 0).astype(jnp.int32)


def with_published_check(code: jax.Array, published_payoffs: jax.Array) -> jax.Array:
    """``code``, or :data:`PUBLISHED` when it is 0 and the payoffs agents best-reply to
    (at the published distribution) are not all finite."""
    bad = ~jnp.all(jnp.isfinite(published_payoffs))
    return jnp.where((code == 0) & bad, PUBLISHED, code).astype(jnp.int32)


def first_bad_estimate(
    scores: jax.Array, counts: jax.Array, valid: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Whether some agent's ``(k, B)`` best-reply payoffs are not all finite, the first
    such agent's position and its ``(k,)`` float32 estimated counts (of the ``(B, k)``
    ``counts``; zeros if none)."""
    bad = ~jnp.all(jnp.isfinite(scores), axis=0)
    if valid is not None:
        bad = bad & valid
    first = jnp.argmax(bad)
    found = bad[first]
    return found, first, jnp.where(found, counts[first].astype(jnp.float32), 0.0)


def nonfinite_counts(
    code: jax.Array, played_counts: jax.Array, published: jax.Array | None
) -> jax.Array:
    """The ``(k,)`` counts (float32) at which the payoffs of ``code`` were evaluated:
    round ``code - 1``'s played counts, or the published ones; zeros when finite."""
    k = played_counts.shape[-1]
    row = jnp.take(played_counts, jnp.maximum(code - 1, 0), axis=0).astype(jnp.float32)
    out = jnp.where(code > 0, row, jnp.zeros(k, jnp.float32))
    if published is not None:
        reported = (code == PUBLISHED) | (code == PRIVATE_ESTIMATE)
        out = jnp.where(reported, jnp.asarray(published, jnp.float32), out)
    return out


def _bad_actions(game, params: Mapping[str, Any], distribution: np.ndarray) -> str:
    """The actions (and types) whose expected payoff is not finite at ``distribution``."""
    payoffs = np.asarray(
        game.expected_payoffs(
            {name: jnp.asarray(v) for name, v in params.items()},
            jnp.asarray(distribution, jnp.float32),
        )
    )
    types, actions = np.nonzero(~np.isfinite(payoffs))
    if actions.size == 0:
        return "payoffs at a deviation from it (c - e_a + e_b)"
    parts = [
        f"action {a}" + (f" (type {t})" if payoffs.shape[0] > 1 else "") + f": {payoffs[t, a]}"
        for t, a in zip(types.tolist(), actions.tolist(), strict=True)
    ]
    return ", ".join(parts[:8]) + (" ..." if len(parts) > 8 else "")


def check_stages(
    game,
    params: Mapping[str, Any],
    codes: np.ndarray,
    counts: np.ndarray,
    first_stage: int,
    num_agents: int,
    row: int | None = None,
) -> None:
    """Raise :class:`NonFinitePayoffError` for the first stage of a chunk whose code
    (``(stages,)``, :func:`first_nonfinite_round`) is not 0; ``counts`` ``(stages, k)``
    are :func:`nonfinite_counts`."""
    bad = np.flatnonzero(np.asarray(codes) != 0)
    if bad.size == 0:
        return
    index = int(bad[0])
    code = int(codes[index])
    distribution = np.asarray(counts[index], np.float64) / num_agents
    if code == LEARNER_STATE:
        in_row = "" if row is None else f" (sweep row {row})"
        raise NonFiniteLearnerStateError(
            f"the learner's state stopped being finite in stage {first_stage + index}"
            f"{in_row} (float32 overflow; with EXP3 an update moves a log-weight by up to "
            f"eta * |payoff| * k / gamma: lower eta, or rescale the payoffs); the run was "
            f"stopped"
        )
    if code > 0:
        where = f"in round {code - 1}, at its played actions"
    elif code == PRIVATE_ESTIMATE:
        where = "at an agent's own estimate of the distribution (info_sharing='private')"
    else:
        where = "at the distribution published at its end (info='distribution')"
    _raise(game, params, f"in stage {first_stage + index}, {where}", distribution, row)


def check_metrics(
    game,
    params: Mapping[str, Any],
    expected: np.ndarray,
    gaps: np.ndarray,
    counts: np.ndarray,
    first_state: int,
    num_agents: int,
    row: int | None = None,
) -> None:
    """Raise :class:`NonFinitePayoffError` for the first recorded state (index
    ``first_state + i``; 0 is the initial state) whose expected payoffs ``(states, T,
    k)`` or Nash gap ``(states,)`` are not finite; ``counts`` ``(states, T, k)``."""
    expected = np.asarray(expected).reshape(len(gaps), -1)
    bad = ~np.all(np.isfinite(expected), axis=1) | ~np.isfinite(np.asarray(gaps))
    if not bad.any():
        return
    index = int(np.flatnonzero(bad)[0])
    distribution = np.asarray(counts[index], np.float64).sum(axis=0) / num_agents
    state = first_state + index
    when = (
        "at the initial stage actions"
        if state == 0
        else f"at the stage actions after stage {state - 1}"
    )
    _raise(game, params, when, distribution, row)


def _raise(game, params, when: str, distribution: np.ndarray, row) -> None:
    in_row = "" if row is None else f" (sweep row {row})"
    shown = np.array2string(distribution, precision=6, separator=", ", threshold=16)
    raise NonFinitePayoffError(
        f"game {game.name!r} gave non-finite expected payoffs {when}{in_row}: d = {shown}; "
        f"{_bad_actions(game, params, distribution)}. Expected payoffs must be finite on "
        f"the whole simplex; the run was stopped"
    )
