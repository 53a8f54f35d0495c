"""The mean-field limit of stage learning (MODEL.md section 9), computed, not simulated.

As ``n -> infinity`` with everything else fixed, the distribution of stage actions follows a
deterministic map ``d_{s+1} = F(d_s)``. Within a stage every round's played distribution is
``(1 - p) d + p / k``, so action ``b`` pays the constant ``mu_b = u(b, (1 - p) d + p / k)``.
An agent on ``a`` plays ``a`` in a round with probability ``pi_a = 1 - p + p / k`` and each
other action with ``pi_b = p / k``, so its observation counts over the ``tau`` rounds are
``m ~ Multinomial(tau, pi)`` (MODEL.md's ``m_a = tau - E + E_a``, ``m_b = E_b``: exploring
onto one's own action is indistinguishable from not exploring). Its averages are independent
``N(mu_b, sigma^2 / m_b)`` over the tried actions (``m_b > 0``), its candidate is their
argmax (section 2's tie rule), adopted with probability ``update_prob``:
``F(d)_b = sum_a d_a P(a -> b | d)``, per type.

The candidate probabilities at fixed payoffs, the sum over exploration patterns and its
quadrature, are in :mod:`jaxstage.stage_candidates`.

With exact shared information (``info="distribution"`` or ``"payoffs"``,
``info_sample_size=None``, no ``info_noise_std``) every updating agent moves to the best
reply to the published estimate (:func:`mean_field_map` documents the limits used).

Example:
    >>> import jaxstage as js
    >>> from jaxstage.mean_field import mean_field_trajectory
    >>> game = js.make_game("congestion", num_actions=3)
    >>> learner = js.StageLearning(stage_length=20, explore_prob=0.1, update_prob=0.3)
    >>> path = mean_field_trajectory(game, learner, num_stages=4)
    >>> path.distribution.shape, bool(abs(path.distribution[-1].sum() - 1) < 1e-9)
    ((5, 3), True)
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage._validation import check_int, check_real
from jaxstage.game_base import AnonymousGame, Params
from jaxstage.learner import StageLearning, resolve_schedule
from jaxstage.plan import check_game_params
from jaxstage.stage_candidates import (
    DEFAULT_MAX_WORK,
    DEFAULT_TOLERANCE,
    NODES_PER_STD,
    CandidateMatrix,
    candidate_matrix,
    check_tolerance,
    gaussian_argmax_probabilities,
    pattern_sum_work,
    payoff_levels,
    tie_tolerance,
    too_expensive,
)

__all__ = [
    # the map and its iterates
    "mean_field_trajectory",
    "mean_field_map",
    "MeanFieldTrajectory",
    "MeanFieldStep",
    # building blocks
    "candidate_matrix",
    "CandidateMatrix",
    "gaussian_argmax_probabilities",
    "stage_payoffs",
    "tie_tolerance",
    "payoff_levels",
    "pattern_sum_work",
    "initial_by_type",
    # accuracy and cost settings
    "DEFAULT_TOLERANCE",
    "DEFAULT_MAX_WORK",
    "NODES_PER_STD",
]


class MeanFieldTrajectory(NamedTuple):
    """Iterates of the mean-field map from an initial distribution.

    Attributes:
        distribution: ``(S+1, k)`` float64, the overall distribution of stage actions at
            the start and after each stage (types mixed by their shares).
        by_type: ``(S+1, T, k)`` float64, the same within each type (``T = 1`` without
            types).
        truncated_mass: ``(S,)`` float64, the probability mass each stage's map left out
            by truncating the exploration patterns (0 where every pattern was summed);
            rows of ``distribution`` sum to ``1`` minus the total left out so far.
        stage_payoffs: ``(S, T, k)`` float64, the payoffs ``mu`` of each stage: at the
            played distribution ``(1 - p) d + p / k`` (``info="none"`` and
            ``"payoffs"``), at ``d`` (``info="distribution"``).
        stage_length: ``(S,)`` int64 and explore_prob: ``(S,)`` float64, as scheduled.
        max_other_explorations: ``(S,)`` int64, the largest number ``D`` of a stage's
            rounds spent exploring other actions that was summed over (``D =
            stage_length``: all patterns); 0 where no pattern sum was needed.
        tolerance: the accuracy asked for: each stage's map is within it in L1.
        info: the information mode of the learner.
    """

    distribution: np.ndarray  # (S+1, k) float64
    by_type: np.ndarray  # (S+1, T, k) float64
    truncated_mass: np.ndarray  # (S,) float64
    stage_payoffs: np.ndarray  # (S, T, k) float64
    stage_length: np.ndarray  # (S,) int64
    explore_prob: np.ndarray  # (S,) float64
    max_other_explorations: np.ndarray  # (S,) int64
    tolerance: float
    info: str


class MeanFieldStep(NamedTuple):
    """One application of the map: ``F(d)`` and what it was computed from.

    Attributes:
        by_type: ``(T, k)`` float64, ``F(d)`` within each type.
        distribution: ``(k,)`` float64, ``F(d)`` overall.
        transitions: ``(T, k, k)`` float64, ``P(a -> b | d)`` per type, inertia included.
        stage_payoffs: ``(T, k)`` float64, the payoffs ``mu`` the agents faced.
        truncated_mass: the mass the truncated pattern sums left out of ``F(d)``.
        max_other_explorations: ``D`` of :class:`MeanFieldTrajectory` for this stage.
    """

    by_type: np.ndarray  # (T, k) float64
    distribution: np.ndarray  # (k,) float64
    transitions: np.ndarray  # (T, k, k) float64
    stage_payoffs: np.ndarray  # (T, k) float64
    truncated_mass: float
    max_other_explorations: int


class _Setup(NamedTuple):
    """What every stage of a validated configuration shares."""

    game: AnonymousGame
    params: Params
    shares: np.ndarray  # (T,) float64 type shares
    info: str
    noise_std: float
    update_prob: float
    tolerance: float
    max_work: float


# --------------------------------------------------------------------------- public API


def mean_field_trajectory(
    game: AnonymousGame,
    learner: StageLearning,
    num_stages: int,
    *,
    initial: Any = None,
    params: dict[str, Any] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_work: float = DEFAULT_MAX_WORK,
) -> MeanFieldTrajectory:
    """Iterate the mean-field map ``d_{s+1} = F(d_s)`` of MODEL.md section 9.

    Stage ``s`` uses the learner's ``stage_length`` and ``explore_prob`` at ``s`` (optax
    schedules are evaluated as :func:`jaxstage.simulate` evaluates them). See
    :func:`mean_field_map` for one step, what is supported and what is refused.

    Cost per stage, ``info="none"`` with ``sigma > 0``: ``T k`` (types times current
    actions) pattern sums of ``4k`` truncated polynomial products each, over ``G <= k (4 R
    sqrt(tau) + 1)`` lattice nodes (``R ~ 6.7`` at the default tolerance): ``O(T k^3
    sqrt(tau) D^2)`` multiply-adds, plus ``O(T k^2 sqrt(tau) D)`` calls of ``math.erfc``.
    ``D`` is at most about ``tau p + 6 sqrt(tau p) + 6`` (or ``tau`` where that is cheap):
    at ``k = 8``, ``tau = 50``, ``p = 0.1``, ``D = 20`` and ``G <= 1526``, 0.34 s per type
    measured on one core. Configurations
    estimated above ``max_work`` (:func:`pattern_sum_work`) are refused before anything
    is computed. ``sigma = 0`` and exact information cost ``O(T k^2)`` per stage.

    Args:
        game: an anonymous game.
        learner: the :class:`~jaxstage.StageLearning` configuration.
        num_stages: number of stages ``S >= 0``.
        initial: ``None`` or ``"uniform"`` (uniform in every type), an action index
            (everyone on it), a probability vector of ``k`` entries (every type on it, as
            :func:`jaxstage.simulate` draws each agent from it) or a ``(T, k)`` array of
            one probability vector per type.
        params: overrides of the game's numeric parameters, as ``game_params`` of
            :func:`jaxstage.simulate` (a complete parameter dict works too).
        tolerance: accuracy of each stage's map in L1, in ``[1e-14, 1e-2]``.
        max_work: the most work (:func:`pattern_sum_work`) one stage may cost.

    Returns:
        A :class:`MeanFieldTrajectory`.

    Raises:
        TypeError, ValueError: for a bad or unsupported input (see :func:`mean_field_map`),
            or a configuration above ``max_work``, before any computation.

    Example:
        >>> import jaxstage as js
        >>> game = js.make_game("adoption", noise_std=0.0)
        >>> learner = js.StageLearning(stage_length=10, explore_prob=0.1, update_prob=0.5)
        >>> path = mean_field_trajectory(game, learner, 30)  # from uniform, in every type
        >>> path.by_type.shape, path.by_type[-1, :, 1].round(3).tolist()  # adopters
        ((31, 3, 2), [0.999, 0.999, 0.001])
    """
    setup = _check_setup(game, learner, params, tolerance, max_work)
    num_stages = check_int(num_stages, "num_stages", low=0)
    by_type = initial_by_type(initial, game.num_actions, len(setup.shares))
    lengths, probs = _schedules(learner, num_stages)
    if setup.info == "none":
        for stage in range(num_stages):
            _check_work(game, lengths[stage], probs[stage], setup, stage=stage)

    k, T = game.num_actions, len(setup.shares)
    states = [by_type]
    truncated = np.zeros(num_stages)
    payoffs = np.zeros((num_stages, T, k))
    kept = np.zeros(num_stages, np.int64)
    for stage in range(num_stages):
        step = _step(setup, states[-1], int(lengths[stage]), float(probs[stage]))
        states.append(step.by_type)
        truncated[stage] = step.truncated_mass
        payoffs[stage] = step.stage_payoffs
        kept[stage] = step.max_other_explorations
    stacked = np.stack(states)
    return MeanFieldTrajectory(
        distribution=np.einsum("t,stk->sk", setup.shares, stacked),
        by_type=stacked,
        truncated_mass=truncated,
        stage_payoffs=payoffs,
        stage_length=lengths.astype(np.int64),
        explore_prob=probs,
        max_other_explorations=kept,
        tolerance=setup.tolerance,
        info=setup.info,
    )


def mean_field_map(
    game: AnonymousGame,
    learner: StageLearning,
    distribution_by_type: Any,
    *,
    stage: int = 0,
    params: dict[str, Any] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_work: float = DEFAULT_MAX_WORK,
) -> MeanFieldStep:
    """One step ``F(d)`` of the mean-field map of stage learning (MODEL.md section 9).

    Supported, and how the limit is taken where MODEL.md leaves it open:

    * ``info="none"``: the map of the module docstring, for games with additive Gaussian
      noise (``game.uses_gaussian_noise()``) of one std ``params["noise_std"]``. With
      ``sigma = 0`` the averages are the payoffs themselves and ties (equal payoffs, to
      :func:`tie_tolerance`) follow section 2's rule exactly; the map is then
      discontinuous at ties, where finite-``n`` runs are decided by sampling noise instead.
      When every round explores other actions (``m_a = 0``, possible when ``p > 0``) the
      agent's own action is untried and not a candidate.
    * ``info="distribution"``, exact: every updating agent of type ``t`` on ``a`` moves to
      the best reply to ``u(t, ., d)`` (keeping ``a`` if it ties). The deviation-adjusted
      counts ``(c - e_a + e_b) / n`` of section 1 tend to ``d``; for a payoff
      discontinuous at ``d`` (minority's step at the capacity) the finite-``n`` decision
      there differs. Exploration does not enter the decision, so ``tau`` and ``p`` do not
      matter, nor does the noise model.
    * ``info="payoffs"``, exact: the published average of action ``b`` is, by the law of
      large numbers, the mean payoff of the agent-rounds that played it,
      ``sum_t w_t q_tb mu_tb / sum_t w_t q_tb`` with ``q_t = (1 - p) d_t + p / k`` (one
      value pooled over the types, as the simulator publishes it); actions nobody plays
      (``p = 0`` and ``d_b = 0``) publish nothing and are never chosen. Every updating
      agent moves to the argmax (keeping its action if it ties). Any noise of mean zero
      (the games' convention) gives the same limit. At an exact tie the finite-``n``
      averages, noisy, break it at random instead of by section 2's rule.

    Refused, with a ``ValueError`` naming the value: sampled information
    (``info_sample_size``) and ``info_noise_std > 0`` (the published estimate stays random
    as ``n -> infinity``: there is no deterministic limit), and ``info="none"`` with a
    noise model other than additive Gaussian of one scalar std.

    Args:
        game: an anonymous game.
        learner: the :class:`~jaxstage.StageLearning` configuration.
        distribution_by_type: ``d``: a ``(T, k)`` array, one probability vector per type,
            or a ``(k,)`` vector for every type.
        stage: which stage's scheduled ``stage_length`` and ``explore_prob`` to use.
        params: overrides of the game's numeric parameters (see
            :func:`mean_field_trajectory`).
        tolerance: accuracy of ``F(d)`` in L1, in ``[1e-14, 1e-2]``.
        max_work: the most work (:func:`pattern_sum_work`) the step may cost.

    Returns:
        A :class:`MeanFieldStep`.

    Example:
        >>> import jaxstage as js
        >>> game = js.make_game("minority", noise_std=0.0)
        >>> learner = js.StageLearning(stage_length=1, explore_prob=0.5)
        >>> # tau = 1: only the action played is tried; go (played by 35%) pays 1 > 0.
        >>> step = mean_field_map(game, learner, [0.8, 0.2])
        >>> step.transitions[0].round(6).tolist()
        [[0.75, 0.25], [0.25, 0.75]]
    """
    setup = _check_setup(game, learner, params, tolerance, max_work)
    stage = check_int(stage, "stage", low=0)
    by_type = _distribution_by_type(
        distribution_by_type, game.num_actions, len(setup.shares), "distribution_by_type"
    )
    lengths, probs = _schedules(learner, stage + 1)
    tau, p = int(lengths[stage]), float(probs[stage])
    if setup.info == "none":
        _check_work(game, tau, p, setup, stage=stage)
    return _step(setup, by_type, tau, p)


def stage_payoffs(game: AnonymousGame, params: Params, distribution: Any) -> np.ndarray:
    """``(T, k)`` float64 expected payoffs ``u(theta, ., distribution)``, evaluated in
    float64 (``jax.enable_x64``): the game's float32 parameters are used as they are,
    only the rounding of the evaluation is finer than the simulator's."""
    with jax.enable_x64(True):
        values = game.expected_payoffs(params, jnp.asarray(distribution, jnp.float64))
        values = np.asarray(values, dtype=np.float64)
    expected = (game.num_types, game.num_actions)
    if values.shape != expected:
        raise ValueError(
            f"game {game.name!r}: expected_payoffs returned shape {values.shape}, expected "
            f"{expected} (types, actions)"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"game {game.name!r}: non-finite expected payoffs {values.tolist()} at the "
            f"distribution {np.asarray(distribution).tolist()}"
        )
    return values


# ---------------------------------------------------------------------- validation


def _check_setup(game, learner, params, tolerance, max_work) -> _Setup:
    if not isinstance(game, AnonymousGame):
        raise TypeError(
            f"game must be an AnonymousGame (see jaxstage.make_game), got {type(game).__name__}"
        )
    if not isinstance(learner, StageLearning):
        raise TypeError(f"learner must be a jaxstage.StageLearning, got {type(learner).__name__}")
    tolerance = check_tolerance(tolerance)
    max_work = check_real(max_work, "max_work", low=0.0, open_low=True)
    if learner.info_sample_size is not None:
        raise ValueError(
            f"info_sample_size={learner.info_sample_size}: sampled information has no "
            f"deterministic mean-field limit (a sample of fixed size stays random as "
            f"n -> infinity); allowed: info_sample_size=None (exact information)"
        )
    if learner.info_noise_std > 0:
        raise ValueError(
            f"info_noise_std={learner.info_noise_std}: noisy information has no "
            f"deterministic mean-field limit; allowed: info_noise_std=0"
        )
    merged = check_game_params(game, params)
    noise_std = 0.0
    if learner.info == "none":
        if not game.uses_gaussian_noise():
            raise ValueError(
                f"game {game.name!r} does not use additive Gaussian noise "
                f"(uses_gaussian_noise() is False): the mean-field map of info='none' is "
                f"only defined for Gaussian noise (MODEL.md section 9); allowed: a game with "
                f"the default noise model, or exact information (info='distribution' or "
                f"'payoffs')"
            )
        noise_std = _scalar_noise_std(game, merged)
    shares = np.asarray(game.type_shares, dtype=np.float64)
    return _Setup(
        game=game,
        params=merged,
        shares=shares / shares.sum(),
        info=learner.info,
        noise_std=noise_std,
        update_prob=float(learner.update_prob),
        tolerance=tolerance,
        max_work=max_work,
    )


def _scalar_noise_std(game: AnonymousGame, params: Params) -> float:
    if "noise_std" not in params:
        raise ValueError(
            f"game {game.name!r} has no 'noise_std' parameter: the mean-field map of "
            f"info='none' needs the std of its Gaussian noise"
        )
    value = np.asarray(params["noise_std"], dtype=np.float64)
    if value.shape != ():
        raise ValueError(
            f"noise_std of game {game.name!r} must be one number, got shape {value.shape}"
        )
    return check_real(float(value), f"noise_std of game {game.name!r}", low=0.0)


def _check_work(game, tau: int, p: float, setup: _Setup, *, stage: int) -> None:
    if setup.noise_std == 0.0:
        return
    # Types with equal payoffs share a matrix; the bound assumes they all differ.
    work = len(setup.shares) * pattern_sum_work(game.num_actions, tau, p, setup.tolerance)
    if work > setup.max_work:
        message = too_expensive(game.num_actions, tau, p, setup.tolerance, work, setup.max_work)
        raise ValueError(f"stage {stage}: {message}")


def initial_by_type(initial: Any, num_actions: int, num_types: int) -> np.ndarray:
    """The ``(T, k)`` float64 initial distributions of :func:`mean_field_trajectory`'s
    ``initial`` (the forms of :func:`jaxstage.simulate` that have a limit, plus a
    ``(T, k)`` array)."""
    k, T = num_actions, num_types
    allowed = (
        f"None or 'uniform', an action index in [0, {k - 1}], a probability vector of {k} "
        f"entries or a ({T}, {k}) array of one per type"
    )
    if initial is None:
        return np.full((T, k), 1.0 / k)
    if isinstance(initial, str):
        if initial != "uniform":
            raise ValueError(f"initial must be {allowed}; got {initial!r}")
        return np.full((T, k), 1.0 / k)
    if isinstance(initial, bool):
        raise TypeError(f"initial must be {allowed}; got {initial!r}")
    if isinstance(initial, numbers.Integral) or (
        np.ndim(initial) == 0 and np.issubdtype(np.asarray(initial).dtype, np.integer)
    ):
        action = check_int(initial, "initial action", low=0, high=k - 1)
        return np.tile(np.eye(k)[action], (T, 1))
    if np.ndim(initial) == 0:
        raise TypeError(f"initial must be {allowed}; got {initial!r} (an index is an integer)")
    return _distribution_by_type(initial, k, T, "initial", allowed=allowed)


def _distribution_by_type(values, k: int, T: int, name: str, allowed: str = "") -> np.ndarray:
    allowed = allowed or f"a probability vector of {k} entries or a ({T}, {k}) array"
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be {allowed}; got {values!r}") from error
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be {allowed}; got an array of dtype {array.dtype}")
    array = array.astype(np.float64)
    if array.shape == (k,):
        array = np.tile(array, (T, 1))
    elif array.shape != (T, k):
        raise ValueError(f"{name} must be {allowed}; got an array of shape {array.shape}")
    sums = array.sum(axis=1)
    if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(np.abs(sums - 1) > 1e-6):
        raise ValueError(
            f"{name} must be non-negative with each row summing to 1 (within 1e-6), got "
            f"{array.tolist()}"
        )
    return array / sums[:, None]


def _schedules(learner: StageLearning, num_stages: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage lengths (int64) and float64 exploration probabilities of the first stages,
    checked by the learner (its float32 copy is only used for the check)."""
    if num_stages == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    lengths = learner.stage_lengths(num_stages).astype(np.int64)
    learner.explore_probs(num_stages)  # raises for values outside [0, 1]
    probs = np.clip(resolve_schedule(learner.explore_prob, num_stages, "explore_prob"), 0, 1)
    return lengths, probs


# ---------------------------------------------------------------------- one stage


def _step(setup: _Setup, by_type: np.ndarray, tau: int, p: float) -> MeanFieldStep:
    """``F(d)`` for the validated ``setup`` at a stage of ``tau`` rounds, exploration ``p``."""
    game, shares = setup.game, setup.shares
    k, T = game.num_actions, len(shares)
    overall = shares @ by_type
    if setup.info == "distribution":
        payoffs = stage_payoffs(game, setup.params, overall)
        candidates = _best_reply_candidates(payoffs, np.ones(k, bool))
        truncated, kept = 0.0, 0
    else:
        played_by_type = (1.0 - p) * by_type + p / k
        payoffs = stage_payoffs(game, setup.params, shares @ played_by_type)
        if setup.info == "payoffs":
            published, available = _published_payoffs(payoffs, played_by_type, shares)
            candidates = _best_reply_candidates(np.tile(published, (T, 1)), available)
            truncated, kept = 0.0, 0
        else:
            candidates, truncated, kept = _stage_learning_candidates(setup, payoffs, tau, p)
    q = setup.update_prob
    transitions = (1.0 - q) * np.eye(k)[None] + q * candidates
    new = np.einsum("ta,tab->tb", by_type, transitions)
    return MeanFieldStep(
        by_type=new,
        distribution=shares @ new,
        transitions=transitions,
        stage_payoffs=payoffs,
        truncated_mass=q * truncated * float(overall.sum()),
        max_other_explorations=kept,
    )


def _stage_learning_candidates(setup: _Setup, payoffs: np.ndarray, tau: int, p: float):
    """``(T, k, k)`` candidate matrices of plain stage learning, one per type (types with
    the same payoffs share one), the truncated mass and ``D``."""
    found: dict[bytes, CandidateMatrix] = {}
    rows = []
    for row in payoffs:
        key = row.tobytes()
        if key not in found:
            found[key] = candidate_matrix(
                row,
                noise_std=setup.noise_std,
                stage_length=tau,
                explore_prob=p,
                tolerance=setup.tolerance,
                max_work=setup.max_work,
            )
        rows.append(found[key])
    matrices = np.stack([m.probs for m in rows])
    return matrices, rows[0].truncated_mass, rows[0].max_other_explorations


def _published_payoffs(payoffs: np.ndarray, played_by_type: np.ndarray, shares: np.ndarray):
    """The limit of the published per-action average payoffs: the mean over the
    agent-rounds that played each action (types pooled), and which actions were played."""
    weights = shares[:, None] * played_by_type  # (T, k) share of agent-rounds
    mass = weights.sum(axis=0)
    available = mass > 0
    published = np.where(
        available, (weights * payoffs).sum(axis=0) / np.where(available, mass, 1), 0
    )
    return published, available


def _best_reply_candidates(scores: np.ndarray, available: np.ndarray) -> np.ndarray:
    """``(T, k, k)``: an agent of type ``t`` on ``a`` moves to the best available action,
    keeping ``a`` if it ties for the best, else uniformly among the tied (section 2)."""
    T, k = scores.shape
    masked = np.where(available[None, :], scores, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    tied = masked >= best - tie_tolerance(scores[:, available])  # (T, k)
    uniform = tied / tied.sum(axis=1, keepdims=True)
    out = np.broadcast_to(uniform[:, None, :], (T, k, k)).copy()
    keep_t, keep_a = np.nonzero(tied)
    out[keep_t, keep_a, :] = 0.0
    out[keep_t, keep_a, keep_a] = 1.0
    return out
