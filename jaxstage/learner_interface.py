"""What a learner is to the engine: the per-agent state it carries, how it plays a round,
what it does with the payoff it observes, and what it does at a stage end.

A learner is a frozen dataclass (hashable: it is part of the compiled programs' static
configuration) subclassing :class:`Learner`. The engine calls its hooks on whole
populations, ``(n,)`` and action-major ``(k, n)`` arrays, inside jit:

* ``init_state(params, actions, num_actions)``: the state of ``n`` agents whose initial
  actions are ``actions`` (``(n,)`` int32, drawn from the run's ``initial``);
* ``play(params, state, keys, explore_prob)``: the ``(n,)`` actions played this round;
  ``keys`` is ``(explore_key, action_key)``, two independent keys of the round;
* ``observe(params, state, key, played, payoffs, explore_prob)``: the state after every
  agent saw its own realised payoff (``(n,)`` float32) of the action it played (the
  round's ``explore_prob`` is EXP3's ``gamma``);
* ``end_stage(params, state, key, update_prob)``: the state after a stage end (stage
  learning's argmax update; the identity for learners without stages).

Every state is a ``NamedTuple`` whose ``actions`` field is the ``(n,)`` int32 *current
action* of every agent: what the metrics and the convergence rule of MODEL.md section 5
read at each recorded state (the stage action of stage learning, the greedy action of
eps-greedy, the most likely action of EXP3). ``params`` is the dict of the learner's
traced hyperparameters (:meth:`Learner.traced_params`): a sweep batches over them
without recompiling.

For learners without stages, a "stage" is the ``stage_length`` rounds between two
recorded states: convergence rounds are read at that resolution, as for stage learning.
:mod:`jaxstage.learner_kernel` runs any learner on the reference kernel's round (the
same games, payoff noise, counts and metrics); :class:`~jaxstage.StageLearning` also has
the faster kernels of its own.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Learner", "explore_or", "onehot_actions"]


class Learner(abc.ABC):
    """Base class of the learners the engine runs (see the module docstring)."""

    #: The name ``--learner`` and ``result.config["learner"]["name"]`` use.
    name: ClassVar[str]
    #: The learner fields :func:`jaxstage.sweep` may vary by row.
    sweepable: ClassVar[tuple[str, ...]] = ("explore_prob", "stage_length")
    #: Information about the others (MODEL.md section 3): only stage learning has any.
    info: str = "none"
    info_sample_size: int | None = None
    info_noise_std: float = 0.0
    info_sharing: str = "shared"
    update_prob: float = 1.0

    @property
    def private_estimates(self) -> bool:
        return False

    @property
    def runs_on_fast_kernel(self) -> bool:
        """Whether the fast kernels implement this learner (stage learning only)."""
        return False

    @abc.abstractmethod
    def stage_lengths(self, num_stages: int) -> np.ndarray:
        """``(num_stages,)`` int32 rounds of each stage (between recorded states)."""

    @abc.abstractmethod
    def explore_probs(self, num_stages: int) -> np.ndarray:
        """``(num_stages,)`` float32 exploration probability of each stage's rounds."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-friendly description of the learner (``result.config["learner"]``)."""

    def with_values(self, **values: Any) -> Learner:
        """This learner with the fields of :attr:`sweepable` replaced (a sweep's row)."""
        return dataclasses.replace(self, **values)

    def traced_params(self) -> dict[str, float]:
        """Hyperparameters passed to the hooks as traced float32 scalars (besides the
        scheduled ``explore_prob`` and ``stage_length``)."""
        return {}

    def check_run(self, *, initial: Any, num_rounds: int) -> None:  # noqa: B027 - optional hook
        """Refuse, with a message, a run this learner cannot do exactly (called before
        anything is traced)."""

    def state_bytes_per_agent(self, num_actions: int) -> int:
        """Device bytes per agent of the state and a round's temporaries, beyond the
        reference kernel's own (for the memory check)."""
        return 0

    # The per-agent dynamics: pure functions of arrays (see the module docstring).
    @staticmethod
    @abc.abstractmethod
    def init_state(params: dict, actions: jax.Array, num_actions: int) -> Any:
        """The state of agents whose initial actions are ``actions``."""

    @staticmethod
    @abc.abstractmethod
    def play(params: dict, state: Any, keys: tuple, explore_prob: jax.Array) -> jax.Array:
        """The ``(n,)`` actions played this round."""

    @staticmethod
    @abc.abstractmethod
    def observe(
        params: dict,
        state: Any,
        key: jax.Array,
        played: jax.Array,
        payoffs: jax.Array,
        explore_prob: jax.Array,
    ) -> Any:
        """The state after every agent observed its realised payoff."""

    @staticmethod
    def end_stage(params: dict, state: Any, key: jax.Array, update_prob: jax.Array) -> Any:
        """The state after a stage end (the identity unless the learner has stages)."""
        return state

    @staticmethod
    def state_is_finite(state: Any) -> jax.Array:
        """``()`` bool: whether every float of ``state`` is finite (checked at each
        stage end: a run whose state overflowed float32 stops with an error)."""
        floats = [
            jnp.all(jnp.isfinite(leaf))
            for leaf in jax.tree.leaves(state)
            if jnp.issubdtype(leaf.dtype, jnp.floating)
        ]
        return jnp.all(jnp.stack(floats)) if floats else jnp.bool_(True)


def explore_or(
    keys: tuple[jax.Array, jax.Array], actions: jax.Array, explore_prob: jax.Array, k: int
) -> jax.Array:
    """``actions``, except that each agent independently plays an action drawn uniformly
    from all ``k`` with probability ``explore_prob`` (MODEL.md section 2, step 1)."""
    explore_key, action_key = keys
    n = actions.shape[0]
    explore = jax.random.uniform(explore_key, (n,)) < explore_prob
    random_actions = jax.random.randint(action_key, (n,), 0, k, dtype=actions.dtype)
    return jnp.where(explore, random_actions, actions)


def onehot_actions(played: jax.Array, k: int) -> jax.Array:
    """``(k, n)`` bool: whether agent ``i`` played action ``a``."""
    return played[None, :] == jnp.arange(k, dtype=played.dtype)[:, None]
