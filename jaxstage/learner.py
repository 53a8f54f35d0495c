"""The stage learner of the paper (MODEL.md sections 2 and 3): configuration and schedules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage._validation import check_int, check_probability, check_real
from jaxstage.decisions import choose_candidates, mean_or_unavailable
from jaxstage.learner_interface import Learner, explore_or, onehot_actions

__all__ = [
    "StageLearning",
    "StageState",
    "INFO_MODES",
    "INFO_SHARING",
    "MAX_INFO_SAMPLE_SIZE",
    "resolve_schedule",
]

INFO_MODES = ("none", "distribution", "payoffs")
#: ``StageLearning(info_sharing=...)``: one published estimate for every agent, or each
#: agent its own (MODEL.md section 3).
INFO_SHARING = ("shared", "private")

#: Largest ``info_sample_size``: the sample costs ``O(m)`` per stage (a sampled agent's
#: explorations are walked again with ``info="payoffs"``), and its observation counts,
#: at most ``m`` times the stage length, must stay exact in int32 (checked per run).
MAX_INFO_SAMPLE_SIZE = 2**20
Schedule = Callable[[Any], Any]


class StageState(NamedTuple):
    """Stage learning's per-agent state in the learner interface
    (:mod:`jaxstage.learner_interface`)."""

    actions: jax.Array  # (n,) int32 stage actions
    sums: jax.Array  # (k, n) float32 payoff sums of the stage per action
    counts: jax.Array  # (k, n) int32 observations of the stage per action


@dataclasses.dataclass(frozen=True)
class StageLearning(Learner):
    """Stage learning: explore, average payoffs over a stage, switch to the argmax.

    Rounds are grouped in stages of ``stage_length`` rounds. Each round an agent plays its
    stage action, or with probability ``explore_prob`` an action drawn uniformly from all
    ``k``. At the stage end it averages its observed payoffs per action tried, takes the
    best (keeping its action when that ties for the best, otherwise breaking ties
    uniformly) and adopts it with probability ``update_prob``.

    Args:
        stage_length: rounds per stage ``tau >= 1``, or an optax-style schedule
            ``stage -> tau`` (values are rounded to the nearest integer and must be >= 1).
        explore_prob: exploration probability in ``[0, 1]``, or a schedule
            ``stage -> prob`` (e.g. ``optax.exponential_decay(0.2, 10, 0.5)``).
        update_prob: probability of adopting the candidate at a stage end, in ``[0, 1]``
            (``< 1`` is inertia).
        info: statistical information about the others:
            ``"none"`` (plain stage learning), ``"distribution"`` (a published estimate of
            the distribution of stage actions; agents best-reply to it with their payoff
            model) or ``"payoffs"`` (published per-action average payoffs of the stage).
        info_sample_size: ``None`` for exact information; ``m`` in ``[1,
            MAX_INFO_SAMPLE_SIZE]`` to compute it from ``m`` agents drawn uniformly *with
            replacement* (so ``m`` may exceed ``n``). Each stage costs ``O(m)`` on top of
            the population (with ``info="payoffs"``, ``O(m)`` walks of the sampled agents'
            explorations), hence the bound: a sample of ``2**20`` already estimates every
            share to within about ``1e-3``, and exact information
            (``info_sample_size=None``) is the limit of larger ones.
            With ``info="payoffs"`` each agent pools the sample's observations with its own,
            weighted by observation counts (a sampled agent's own data then counts twice).
        info_noise_std: ``info="distribution"`` only: Gaussian noise of this std added to
            every component of the published distribution (after sampling, if any),
            which is then clipped at 0 and renormalised (uniform if all clip to 0).
        info_sharing: ``"shared"`` (default): the sample and the noise are drawn once per
            stage and published to every agent, so every agent has the same estimate;
            ``"private"``: each agent draws its own sample of ``info_sample_size`` agents
            (with replacement) and its own noise, independently across agents and stages
            (a gossip protocol; MODEL.md section 3). Exact information is the same either
            way. Private estimates run on the fast kernel's agents path
            (``kernel="auto"`` takes it, on every platform) and on the reference kernel: a
            private sample costs ``O(n m)`` per stage with ``info="payoffs"`` (each agent
            pools ``m`` agents' sums), and ``O(n m)`` (fast kernel, ``m <= 512``) or
            ``O(n k)`` with ``info="distribution"``, where a sample's counts are then
            drawn as ``Multinomial(m, d)``, the law of ``m`` agents drawn with
            replacement (docs/model.md).

    Example:
        >>> import jaxstage as js
        >>> js.StageLearning(stage_length=50, explore_prob=0.05, info="payoffs").info
        'payoffs'
    """

    name: ClassVar[str] = "stage"
    sweepable: ClassVar[tuple[str, ...]] = (
        "explore_prob",
        "update_prob",
        "stage_length",
        "info_noise_std",
    )

    stage_length: int | Schedule = 50
    explore_prob: float | Schedule = 0.05
    update_prob: float = 1.0
    info: str = "none"
    info_sample_size: int | None = None
    info_noise_std: float = 0.0
    info_sharing: str = "shared"

    def __post_init__(self) -> None:
        if not callable(self.stage_length):
            object.__setattr__(
                self, "stage_length", check_int(self.stage_length, "stage_length", low=1)
            )
        if not callable(self.explore_prob):
            object.__setattr__(
                self, "explore_prob", check_probability(self.explore_prob, "explore_prob")
            )
        object.__setattr__(self, "update_prob", check_probability(self.update_prob, "update_prob"))
        if self.info not in INFO_MODES:
            raise ValueError(
                f"unknown info mode {self.info!r}; valid modes: {', '.join(INFO_MODES)}"
            )
        if self.info_sample_size is not None:
            if self.info == "none":
                raise ValueError("info_sample_size needs info='distribution' or 'payoffs'")
            object.__setattr__(
                self,
                "info_sample_size",
                check_int(
                    self.info_sample_size, "info_sample_size", low=1, high=MAX_INFO_SAMPLE_SIZE
                ),
            )
        noise = check_real(self.info_noise_std, "info_noise_std", low=0.0)
        object.__setattr__(self, "info_noise_std", noise)
        if noise > 0 and self.info != "distribution":
            raise ValueError(
                f"info_noise_std={noise} needs info='distribution' (got info={self.info!r})"
            )
        if self.info_sharing not in INFO_SHARING:
            raise ValueError(
                f"info_sharing must be one of {', '.join(INFO_SHARING)}, got {self.info_sharing!r}"
            )
        if self.info_sharing == "private" and self.info == "none":
            raise ValueError("info_sharing='private' needs info='distribution' or 'payoffs'")

    @property
    def private_estimates(self) -> bool:
        """Whether agents hold estimates of their own (private and sampled or noisy:
        exact information is the same shared or private)."""
        noisy = self.info_sample_size is not None or self.info_noise_std > 0
        return self.info_sharing == "private" and noisy

    @property
    def runs_on_fast_kernel(self) -> bool:
        return True

    # The learner interface (jaxstage.learner_interface), for info="none": the engine
    # runs stage learning on kernels of its own, which also implement the information
    # modes; jaxstage.learner_kernel running these hooks gives the reference kernel's
    # numbers bit for bit (tests/test_learners.py).
    @staticmethod
    def init_state(params: dict, actions: jax.Array, num_actions: int) -> StageState:
        n = actions.shape[0]
        zeros = jnp.zeros((num_actions, n), jnp.float32)
        return StageState(actions, zeros, jnp.zeros((num_actions, n), jnp.int32))

    @staticmethod
    def play(params: dict, state: StageState, keys, explore_prob: jax.Array) -> jax.Array:
        return explore_or(keys, state.actions, explore_prob, state.sums.shape[0])

    @staticmethod
    def observe(params: dict, state: StageState, key, played, payoffs, explore_prob) -> StageState:
        onehot = onehot_actions(played, state.sums.shape[0])
        return state._replace(
            sums=state.sums + jnp.where(onehot, payoffs[None, :], 0.0),
            counts=state.counts + onehot.astype(jnp.int32),
        )

    @staticmethod
    def end_stage(params: dict, state: StageState, key, update_prob: jax.Array) -> StageState:
        _, tie_key, update_key = jax.random.split(key, 3)
        estimates = mean_or_unavailable(state.sums, state.counts)
        shape = state.actions.shape
        candidates = choose_candidates(jax.random.uniform(tie_key, shape), estimates, state.actions)
        adopt = jax.random.uniform(update_key, shape) < update_prob
        return StageState(
            jnp.where(adopt, candidates, state.actions),
            jnp.zeros_like(state.sums),
            jnp.zeros_like(state.counts),
        )

    def stage_lengths(self, num_stages: int) -> np.ndarray:
        """The ``(num_stages,)`` int32 stage lengths, schedules evaluated and checked."""
        values = resolve_schedule(self.stage_length, num_stages, "stage_length")
        lengths = np.rint(values).astype(np.int64)
        if np.any(lengths < 1) or np.any(lengths > 2**30):
            bad = values[(lengths < 1) | (lengths > 2**30)][0]
            raise ValueError(f"stage_length schedule must give values in [1, 2**30], got {bad}")
        return lengths.astype(np.int32)

    def explore_probs(self, num_stages: int) -> np.ndarray:
        """The ``(num_stages,)`` float32 exploration probabilities, checked to lie in [0, 1]."""
        values = resolve_schedule(self.explore_prob, num_stages, "explore_prob")
        bad = ~((values >= 0) & (values <= 1))
        if np.any(bad):
            raise ValueError(
                f"explore_prob schedule must stay in [0, 1], got {values[bad][0]} at stage "
                f"{int(np.flatnonzero(bad)[0])}"
            )
        return values.astype(np.float32)

    def config(self) -> dict[str, Any]:
        """JSON-friendly description (schedules are recorded by their repr)."""
        out = dataclasses.asdict(self)
        if out["info_sharing"] == "shared":  # as recorded before the option existed
            del out["info_sharing"]
        for name in ("stage_length", "explore_prob"):
            if callable(out[name]):
                out[name] = f"schedule:{getattr(out[name], '__name__', repr(out[name]))}"
        return out


def resolve_schedule(value: float | Schedule, num_stages: int, name: str) -> np.ndarray:
    """Evaluate a constant or a schedule at stages ``0 .. num_stages-1`` on the host."""
    if not callable(value):
        return np.full(num_stages, float(value), dtype=np.float64)
    stages = jnp.arange(num_stages)
    try:
        values = np.asarray(jax.vmap(value)(stages), dtype=np.float64)
    except Exception:  # noqa: BLE001 - a schedule written for Python ints only
        values = np.asarray([float(value(int(s))) for s in range(num_stages)])
    if values.shape != (num_stages,):
        raise ValueError(
            f"{name} schedule must return one number per stage, got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} schedule returned non-finite values")
    return values
