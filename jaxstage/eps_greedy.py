"""eps-greedy with running averages: stage learning without stages (MODEL.md section 8)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage._validation import check_int, check_probability
from jaxstage.decisions import choose_candidates, mean_or_unavailable
from jaxstage.learner_interface import Learner, explore_or, onehot_actions

__all__ = ["EpsGreedy", "EpsGreedyState", "MAX_EPS_GREEDY_ROUNDS"]

#: Most rounds of an eps-greedy run: an agent's observation counts are int32, and its
#: float32 running sums are compensated (Kahan) so that averages over this many
#: observations keep float32's precision.
MAX_EPS_GREEDY_ROUNDS = 2**31 - 1


class EpsGreedyState(NamedTuple):
    """Per-agent state of :class:`EpsGreedy` (action-major ``(k, n)`` arrays)."""

    actions: jax.Array  # (n,) int32 greedy actions (the current action)
    sums: jax.Array  # (k, n) float32 payoff sums since round 0
    compensation: jax.Array  # (k, n) float32 Kahan compensation of ``sums``
    counts: jax.Array  # (k, n) int32 observations since round 0


@dataclasses.dataclass(frozen=True)
class EpsGreedy(Learner):
    """eps-greedy with running averages (MODEL.md section 8).

    Every agent keeps, per action, the sum and count of all the payoffs it observed
    since round 0. Each round it explores with probability ``explore_prob`` (an action
    drawn uniformly from all ``k``); otherwise it plays its greedy action: the highest
    running average among the actions it has tried (untried actions are not candidates;
    ties keep the previous greedy action if it is tied, otherwise one of the tied is drawn
    uniformly; before any observation, its initial action). Its current action, which
    the metrics and the convergence rule read, is the greedy action.

    Args:
        explore_prob: exploration probability in ``[0, 1]``, or a schedule
            ``stage -> prob`` evaluated per recorded stage.
        stage_length: rounds between recorded states (the learner itself has no
            stages): convergence rounds are multiples of it.

    Example:
        >>> import jaxstage as js
        >>> learner = js.EpsGreedy(explore_prob=0.05, stage_length=10)
        >>> game = js.make_game("congestion", num_actions=3)
        >>> js.simulate(game, learner, num_agents=1000, num_stages=3).distribution.shape
        (4, 3)
    """

    name: ClassVar[str] = "eps-greedy"

    explore_prob: Any = 0.05
    stage_length: int = 50

    def __post_init__(self) -> None:
        if not callable(self.explore_prob):
            object.__setattr__(
                self, "explore_prob", check_probability(self.explore_prob, "explore_prob")
            )
        object.__setattr__(
            self, "stage_length", check_int(self.stage_length, "stage_length", low=1, high=2**30)
        )

    def stage_lengths(self, num_stages: int) -> np.ndarray:
        return np.full(num_stages, self.stage_length, np.int32)

    def explore_probs(self, num_stages: int) -> np.ndarray:
        from jaxstage.learner import StageLearning

        return StageLearning(explore_prob=self.explore_prob).explore_probs(num_stages)

    def config(self) -> dict[str, Any]:
        explore = self.explore_prob
        if callable(explore):
            explore = f"schedule:{getattr(explore, '__name__', repr(explore))}"
        return {
            "name": self.name,
            "info": "none",
            "explore_prob": explore,
            "stage_length": self.stage_length,
        }

    def check_run(self, *, initial: Any, num_rounds: int) -> None:
        if num_rounds > MAX_EPS_GREEDY_ROUNDS:
            raise ValueError(
                f"an eps-greedy run of {num_rounds:,} rounds exceeds the int32 observation "
                f"counts' limit of {MAX_EPS_GREEDY_ROUNDS:,} rounds"
            )

    def state_bytes_per_agent(self, num_actions: int) -> int:
        # The state (3 float/int words per action), its next value, and a round's
        # per-action temporaries (one-hot, averages).
        return 36 * num_actions + 8

    @staticmethod
    def init_state(params: dict, actions: jax.Array, num_actions: int) -> EpsGreedyState:
        shape = (num_actions, actions.shape[0])
        zeros = jnp.zeros(shape, jnp.float32)
        return EpsGreedyState(actions, zeros, zeros, jnp.zeros(shape, jnp.int32))

    @staticmethod
    def play(params: dict, state: EpsGreedyState, keys, explore_prob: jax.Array) -> jax.Array:
        return explore_or(keys, state.actions, explore_prob, state.sums.shape[0])

    @staticmethod
    def observe(
        params: dict, state: EpsGreedyState, key, played, payoffs, explore_prob
    ) -> EpsGreedyState:
        onehot = onehot_actions(played, state.sums.shape[0])
        # Kahan summation: a run's sums gather up to 2**31 observations, whose plain
        # float32 sum would lose the averages' low digits (and with them, ties' order).
        term = jnp.where(onehot, payoffs[None, :] - state.compensation, 0.0)
        total = state.sums + term
        compensation = jnp.where(onehot, (total - state.sums) - term, state.compensation)
        counts = state.counts + onehot.astype(jnp.int32)
        averages = mean_or_unavailable(total, counts)
        uniforms = jax.random.uniform(key, state.actions.shape)
        greedy = choose_candidates(uniforms, averages, state.actions)
        return EpsGreedyState(greedy.astype(state.actions.dtype), total, compensation, counts)
