"""EXP3: exponential weights with bandit feedback (MODEL.md section 8)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage._validation import check_int, check_real
from jaxstage.learner_interface import Learner, onehot_actions

__all__ = ["Exp3", "Exp3State", "exp3_probabilities"]


class Exp3State(NamedTuple):
    """Per-agent state of :class:`Exp3`."""

    actions: jax.Array  # (n,) int32 argmax of the play probabilities (the current action)
    log_weights: jax.Array  # (k, n) float32, shifted so that each agent's largest is 0


def exp3_probabilities(log_weights: jax.Array, gamma: jax.Array) -> jax.Array:
    """``(k, n)`` play probabilities ``(1 - gamma) softmax(w) + gamma / k``."""
    k = log_weights.shape[0]
    return (1.0 - gamma) * jax.nn.softmax(log_weights, axis=0) + gamma / k


@dataclasses.dataclass(frozen=True)
class Exp3(Learner):
    """EXP3, exponential weights with bandit feedback (MODEL.md section 8).

    Every agent keeps log-weights ``w`` over the actions, all 0 at the start. Each round
    it plays ``a ~ p = (1 - gamma) softmax(w) + gamma / k``, observes its payoff ``r``
    and sets ``w[a] += eta * r / p[a]``. Its current action, which the metrics and the
    convergence rule read, is ``argmax p`` (ties: the lowest index; so every agent's
    current action is action 0 before its first round).

    Payoffs are used as given, without rescaling. The log-weights are float32 and held
    shifted so that each agent's largest is 0 (``softmax`` does not change), which keeps
    float32's resolution where the probabilities are not negligible; an update moves a
    weight by at most ``eta * |r| * k / gamma``, and a run whose weights stop being
    finite is stopped with an error (docs/learners.md).

    Args:
        eta: learning rate, ``> 0``.
        gamma: the uniform share of the play probabilities, in ``(0, 1]`` (a schedule
            ``stage -> gamma`` evaluated per recorded stage is accepted: it is the
            run's ``explore_prob``).
        stage_length: rounds between recorded states (the learner itself has no
            stages): convergence rounds are multiples of it.

    Example:
        >>> import jaxstage as js
        >>> learner = js.Exp3(eta=0.05, gamma=0.05, stage_length=10)
        >>> game = js.make_game("congestion", num_actions=3)
        >>> js.simulate(game, learner, num_agents=1000, num_stages=3).distribution.shape
        (4, 3)
    """

    name: ClassVar[str] = "exp3"

    eta: float = 0.05
    gamma: Any = 0.05
    stage_length: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", check_real(self.eta, "eta", low=0.0))
        if self.eta <= 0:
            raise ValueError(f"eta must be > 0, got {self.eta}")
        if not callable(self.gamma):
            gamma = check_real(self.gamma, "gamma", low=0.0, high=1.0)
            if gamma <= 0:
                raise ValueError(f"gamma must be in (0, 1], got {gamma}")
            object.__setattr__(self, "gamma", gamma)
        object.__setattr__(
            self, "stage_length", check_int(self.stage_length, "stage_length", low=1, high=2**30)
        )

    @property
    def explore_prob(self) -> Any:
        """The uniform share ``gamma``: with probability ``gamma`` an agent plays an
        action drawn uniformly, otherwise one drawn from ``softmax(w)``."""
        return self.gamma

    def with_values(self, **values: Any) -> Exp3:
        if "explore_prob" in values:
            values["gamma"] = values.pop("explore_prob")
        return dataclasses.replace(self, **values)

    def stage_lengths(self, num_stages: int) -> np.ndarray:
        return np.full(num_stages, self.stage_length, np.int32)

    def explore_probs(self, num_stages: int) -> np.ndarray:
        from jaxstage.learner import StageLearning

        values = StageLearning(explore_prob=self.gamma).explore_probs(num_stages)
        if np.any(values <= 0):
            stage = int(np.flatnonzero(values <= 0)[0])
            raise ValueError(f"gamma schedule must stay in (0, 1], got 0 at stage {stage}")
        return values

    def traced_params(self) -> dict[str, float]:
        return {"eta": self.eta}

    def config(self) -> dict[str, Any]:
        gamma = self.gamma
        if callable(gamma):
            gamma = f"schedule:{getattr(gamma, '__name__', repr(gamma))}"
        return {
            "name": self.name,
            "info": "none",
            "eta": self.eta,
            "gamma": gamma,
            "stage_length": self.stage_length,
        }

    def check_run(self, *, initial: Any, num_rounds: int) -> None:
        if not (isinstance(initial, str) and initial == "uniform"):
            raise ValueError(
                f"initial={initial!r}: EXP3 starts from zero log-weights (MODEL.md section "
                "8), whatever the initial actions; leave initial='uniform'"
            )

    def state_bytes_per_agent(self, num_actions: int) -> int:
        # The log-weights and their next value, and a round's (k, n) probabilities,
        # Gumbel noise and one-hot.
        return 24 * num_actions + 8

    @staticmethod
    def init_state(params: dict, actions: jax.Array, num_actions: int) -> Exp3State:
        zeros = jnp.zeros((num_actions, actions.shape[0]), jnp.float32)
        return Exp3State(jnp.zeros_like(actions), zeros)

    @staticmethod
    def play(params: dict, state: Exp3State, keys, explore_prob: jax.Array) -> jax.Array:
        # p = (1 - gamma) softmax(w) + gamma / k, drawn as a mixture: uniform with
        # probability gamma, else softmax(w) (by the Gumbel-max trick).
        explore_key, action_key = keys
        k, n = state.log_weights.shape
        uniform_key, softmax_key = jax.random.split(action_key)
        explore = jax.random.uniform(explore_key, (n,)) < explore_prob
        uniform = jax.random.randint(uniform_key, (n,), 0, k, dtype=state.actions.dtype)
        by_weight = jax.random.categorical(softmax_key, state.log_weights, axis=0)
        return jnp.where(explore, uniform, by_weight.astype(state.actions.dtype))

    @staticmethod
    def observe(
        params: dict, state: Exp3State, key, played, payoffs, explore_prob: jax.Array
    ) -> Exp3State:
        k = state.log_weights.shape[0]
        probabilities = exp3_probabilities(state.log_weights, explore_prob)
        onehot = onehot_actions(played, k)
        played_probability = jnp.sum(jnp.where(onehot, probabilities, 0.0), axis=0)
        step = params["eta"] * payoffs / played_probability
        weights = state.log_weights + jnp.where(onehot, step[None, :], 0.0)
        weights = weights - jnp.max(weights, axis=0, keepdims=True)
        # argmax p, read from p itself (lowest index on ties, as MODEL.md says; with
        # gamma = 1 every action ties).
        current = jnp.argmax(exp3_probabilities(weights, explore_prob), axis=0)
        return Exp3State(current.astype(state.actions.dtype), weights)
