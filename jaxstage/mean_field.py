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

How the sum over exploration patterns is done (:func:`candidate_matrix`). With ``x`` the
value of the winning average, ``P(cand = b | m) = int f_b(x; m_b) prod_{j != b} F_j(x; m_j)
dx`` (``f``, ``F``: density and CDF of an average; an untried action has ``F = 1`` and
``f = 0``). At a fixed ``x`` the integrand is a product over actions of functions of one
count each, and the multinomial weight factorises the same way, so the sum over *all*
patterns is the coefficient of ``z^tau`` in a product of ``k`` polynomials in ``z``: the sum
over the ``C(tau + k - 1, k - 1)`` patterns (``2.6e8`` at ``tau = 50``, ``k = 8``) costs
``O(k D^2)`` per node instead, with ``D`` the largest number of exploration rounds spent on
other actions that is kept (``D = tau``: every pattern; otherwise the ``Binomial(tau,
p (k - 1) / k)`` tail beyond ``D`` is below the tolerance, and is reported). The integral is
a lattice (trapezoid) sum: every integrand is an entire function of ``x`` whose growth off
the real axis is that of a Gaussian of std ``sigma / sqrt(tau)`` (the counts of a pattern
add up to ``tau``), so a lattice of step ``sigma / (2 sqrt(tau))`` is exact to about
``exp(-2 pi^2 * 2^2) = 5e-35``; the lattice covers ``mu_j +- R sigma`` for every action,
with ``R`` chosen so that what lies beyond is below the tolerance.

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

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage._validation import check_int, check_real
from jaxstage.game_base import AnonymousGame, Params
from jaxstage.learner import StageLearning, resolve_schedule
from jaxstage.plan import check_game_params

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

#: Default accuracy: each stage's map is within this, in L1, of the exact map.
DEFAULT_TOLERANCE = 1e-9
#: Default cost limit of one stage, in the units of :func:`pattern_sum_work` (3e8 to 5e8
#: units per second were measured on one core of a 2020s x86 CPU): refused above.
DEFAULT_MAX_WORK = 3e9
#: Lattice nodes per std of the sharpest average (``sigma / sqrt(tau)``). The lattice sum
#: of an entire integrand of that Gaussian growth errs by about
#: ``exp(-2 pi^2 NODES_PER_STD^2)``: 5e-35 at 2.
NODES_PER_STD = 2.0
#: Below this work (:func:`pattern_sum_work`) every exploration pattern is summed, even
#: where the tolerance would let the Binomial tail go.
EXACT_WORK = 1e7
#: One Python-level ``math.erfc`` costs about this many NumPy multiply-adds.
_ERFC_COST = 60.0
#: Floats per node chunk of the pattern sums (bounds memory at a few hundred MB).
_CHUNK_FLOATS = 2_000_000
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_TOLERANCE_RANGE = (1e-14, 1e-2)
#: Relative closeness of payoffs treated as a tie (:func:`tie_tolerance`).
_TIE_RELATIVE = 1e-12


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


class CandidateMatrix(NamedTuple):
    """``P(candidate = b | stage action a)`` of plain stage learning at fixed payoffs.

    Attributes:
        probs: ``(k, k)`` float64, row ``a`` the candidate distribution of an agent on
            ``a``; each row sums to ``1 - truncated_mass`` (within the tolerance).
        truncated_mass: ``P(Binomial(tau, p (k - 1) / k) > D)``, the mass of the
            patterns left out (the same for every row).
        max_other_explorations: ``D``; ``tau`` when every pattern was summed (0 when
            ``p = 0``: the one pattern has no exploration).
        num_nodes: lattice nodes of the quadrature (0 for ``noise_std = 0``).
    """

    probs: np.ndarray  # (k, k) float64
    truncated_mass: float
    max_other_explorations: int
    num_nodes: int


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


def candidate_matrix(
    payoffs: Any,
    *,
    noise_std: float,
    stage_length: int,
    explore_prob: float,
    tolerance: float = DEFAULT_TOLERANCE,
    max_work: float = DEFAULT_MAX_WORK,
) -> CandidateMatrix:
    """``P(candidate = b | a)`` of plain stage learning when action ``b`` pays ``mu_b``.

    Over a stage of ``tau`` rounds an agent on ``a`` plays ``a`` with probability ``1 - p
    + p / k`` and each other action with ``p / k`` per round; it averages the ``m_b``
    payoffs ``N(mu_b, sigma^2)`` of each action tried and takes the best (section 2's tie
    rule). For ``sigma = 0`` the sum over patterns is in closed form: the candidate is
    decided by which level sets of ``mu`` are tried, and ``P(none of H tried) = (1 -
    pi(H))^tau``. For ``sigma > 0`` see the module docstring; the cost is that of
    :func:`mean_field_trajectory`.

    Args:
        payoffs: ``(k,)`` finite payoffs ``mu``.
        noise_std: ``sigma >= 0``.
        stage_length: ``tau >= 1``.
        explore_prob: ``p`` in ``[0, 1]``.
        tolerance: each row is within this of the exact one in L1 (the truncated part
            of it is ``truncated_mass``), in ``[1e-14, 1e-2]``.
        max_work: refuse above this work (:func:`pattern_sum_work`).

    Returns:
        A :class:`CandidateMatrix`.

    Example:
        >>> m = candidate_matrix([0.0, 1.0], noise_std=0.0, stage_length=2, explore_prob=0.2)
        >>> # On 0 it moves iff 1 is tried (1 - 0.9^2); on 1 iff both rounds explore 0.
        >>> m.probs.round(4).tolist()
        [[0.81, 0.19], [0.01, 0.99]]
    """
    mu = _finite_vector(payoffs, "payoffs")
    if mu.size < 2:
        raise ValueError(f"payoffs must have at least 2 entries (actions), got {mu.size}")
    sigma = check_real(noise_std, "noise_std", low=0.0)
    tau = check_int(stage_length, "stage_length", low=1, high=2**30)
    p = check_real(explore_prob, "explore_prob", low=0.0, high=1.0)
    tolerance = _check_tolerance(tolerance)
    max_work = check_real(max_work, "max_work", low=0.0, open_low=True)
    if sigma == 0.0:
        return CandidateMatrix(_deterministic_candidates(mu, tau, p), 0.0, tau, 0)
    plan = _pattern_plan(mu.size, tau, p, tolerance)
    work = pattern_sum_work(mu.size, tau, p, tolerance)
    if work > max_work:
        raise ValueError(_too_expensive(mu.size, tau, p, tolerance, work, max_work))
    return _gaussian_candidates(mu, sigma, tau, p, plan)


def gaussian_argmax_probabilities(
    means: Any, stds: Any, *, tolerance: float = DEFAULT_TOLERANCE
) -> np.ndarray:
    """``P(X_b is the largest)`` for independent ``X_j ~ N(means_j, stds_j^2)``.

    The 1-D integral ``int phi_b(x) prod_{j != b} Phi_j(x) dx`` as a lattice sum of step
    ``s / NODES_PER_STD``, ``s = (sum_j stds_j^-2)^(-1/2)`` (the integrand's Gaussian growth
    off the real axis), over ``means_j +- R stds_j``: each entry within ``tolerance / k``.
    The same quadrature as :func:`candidate_matrix` uses, for one pattern of counts.

    Args:
        means: ``(k,)`` finite means.
        stds: ``(k,)`` stds, finite and ``> 0``.
        tolerance: in ``[1e-14, 1e-2]``.

    Returns:
        ``(k,)`` float64 probabilities (summing to 1 within ``tolerance``).

    Example:
        >>> p = gaussian_argmax_probabilities([0.0, 1.0], [1.0, 1.0])
        >>> round(float(p[1]), 9)  # Phi(1 / sqrt(2))
        0.760249939
    """
    mean = _finite_vector(means, "means")
    std = _finite_vector(stds, "stds")
    if std.shape != mean.shape:
        raise ValueError(f"stds must have the shape of means {mean.shape}, got {std.shape}")
    if np.any(std <= 0):
        raise ValueError(f"stds must be > 0, got {std.tolist()}")
    tolerance = _check_tolerance(tolerance)
    k = mean.size
    reach = _tail_cut(tolerance / (4.0 * k))
    step = 1.0 / math.sqrt(np.sum(std**-2.0)) / NODES_PER_STD
    nodes = _lattice(mean, reach * std, step)
    z = (nodes[None, :] - mean[:, None]) / std[:, None]  # (k, G)
    cdf, pdf = _normal_cdf(z), _normal_pdf(z) / std[:, None]
    before = np.cumprod(np.vstack([np.ones_like(nodes), cdf[:-1]]), axis=0)
    after = np.cumprod(np.vstack([cdf[1:], np.ones_like(nodes)])[::-1], axis=0)[::-1]
    return step * np.sum(pdf * before * after, axis=1)


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


def pattern_sum_work(k: int, tau: int, p: float, tolerance: float) -> float:
    """Estimated work of one :func:`candidate_matrix` with ``sigma > 0``: multiply-adds of
    the pattern sums plus ``math.erfc`` calls (each counted as 60 multiply-adds), for
    all ``k`` current actions, over the largest lattice the payoffs could need."""
    plan = _pattern_plan(k, tau, p, tolerance)
    nodes = k * (2.0 * plan.reach * NODES_PER_STD * math.sqrt(tau) + 2.0)
    return _work(k, nodes, plan.kept)


# ---------------------------------------------------------------------- validation


def _check_setup(game, learner, params, tolerance, max_work) -> _Setup:
    if not isinstance(game, AnonymousGame):
        raise TypeError(
            f"game must be an AnonymousGame (see jaxstage.make_game), got {type(game).__name__}"
        )
    if not isinstance(learner, StageLearning):
        raise TypeError(f"learner must be a jaxstage.StageLearning, got {type(learner).__name__}")
    tolerance = _check_tolerance(tolerance)
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


def _check_tolerance(tolerance: object) -> float:
    low, high = _TOLERANCE_RANGE
    return check_real(tolerance, "tolerance", low=low, high=high)


def _check_work(game, tau: int, p: float, setup: _Setup, *, stage: int) -> None:
    if setup.noise_std == 0.0:
        return
    # Types with equal payoffs share a matrix; the bound assumes they all differ.
    work = len(setup.shares) * pattern_sum_work(game.num_actions, tau, p, setup.tolerance)
    if work > setup.max_work:
        message = _too_expensive(game.num_actions, tau, p, setup.tolerance, work, setup.max_work)
        raise ValueError(f"stage {stage}: {message}")


def _too_expensive(k, tau, p, tolerance, work, max_work) -> str:
    return (
        f"the mean-field map with k={k} actions, stage_length={tau}, explore_prob={p:g} and "
        f"tolerance={tolerance:g} is estimated at {work:.3g} units of work per stage (about "
        f"{work / 3e8:.0f} s), above max_work={max_work:.3g}; raise "
        f"max_work, loosen the tolerance, or use a shorter stage or smaller explore_prob"
    )


def _finite_vector(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a vector of numbers, got {values!r}") from error
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


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


def tie_tolerance(payoffs: np.ndarray) -> float:
    """Payoffs closer than this are tied: ``1e-12 * max(1, max |mu|)``.

    Exact ties matter where averages are exact (``sigma = 0``) and with exact information:
    a symmetric state (congestion at equal loads) is a tie. The map is computed in float64,
    and its rounding (``~1e-16`` per stage) would otherwise break such ties in a direction
    of its own, and with ``sigma = 0`` send every agent there."""
    scale = float(np.max(np.abs(payoffs), initial=0.0))
    return _TIE_RELATIVE * max(1.0, scale)


def payoff_levels(payoffs: np.ndarray) -> list[np.ndarray]:
    """The actions grouped by payoff, best first: each group holds the remaining actions
    within :func:`tie_tolerance` of the best remaining one."""
    tolerance = tie_tolerance(payoffs)
    left = np.ones(payoffs.size, bool)
    groups = []
    while np.any(left):
        top = payoffs[left].max()
        group = np.flatnonzero(left & (payoffs >= top - tolerance))
        left[group] = False
        groups.append(group)
    return groups


# ------------------------------------------------------------ sigma = 0: closed form


def _deterministic_candidates(mu: np.ndarray, tau: int, p: float) -> np.ndarray:
    """Candidate matrix when the averages equal the payoffs (``sigma = 0``).

    The candidate is decided by the highest payoff level that has a tried action: all
    higher actions ``H`` untried, at least one of the level ``G`` tried. If the agent's
    own ``a`` is in ``G`` and tried, it keeps ``a``; otherwise the tried members of
    ``G`` (the others of ``G`` are exchangeable, each with ``pi = p / k``) are equally
    likely, so each of them gets ``1 / |G'|`` of ``P(H untried, a untried, G' not all
    untried)``.
    """
    k = mu.size
    other = p / k
    out = np.zeros((k, k))
    levels = payoff_levels(mu)

    def untried(prob: float) -> float:  # P(no round lands in a set of this probability)
        return max(1.0 - prob, 0.0) ** tau

    for a in range(k):
        own = 1.0 - p + other
        higher = 0.0  # pi(H)
        for group in levels:
            if a in group:
                out[a, a] += untried(higher) - untried(higher + own)
                rest = group[group != a]
                if rest.size:
                    share = untried(higher + own) - untried(higher + own + rest.size * other)
                    out[a, rest] += share / rest.size
                higher += own + rest.size * other
            else:
                share = untried(higher) - untried(higher + group.size * other)
                out[a, group] += share / group.size
                higher += group.size * other
    return out


# ------------------------------------------------------------ sigma > 0: pattern sums


class _PatternPlan(NamedTuple):
    kept: int  # D: most exploration rounds on other actions summed over
    truncated: float  # P(Binomial(tau, p (k-1)/k) > D)
    reach: float  # R: the lattice covers mu_j +- R sigma
    log_other_weight: np.ndarray  # (D+1,) log P(E_other = e)


def _pattern_plan(k: int, tau: int, p: float, tolerance: float) -> _PatternPlan:
    """Choose ``D`` and ``R`` for a tolerance: half of it for the truncated patterns, a
    quarter for the lattice's ends (shared by the ``k`` candidates of a row)."""
    p_other = p * (k - 1) / k
    reach = _tail_cut(tolerance / (8.0 * k))
    if p_other == 0.0:
        return _PatternPlan(0, 0.0, reach, np.zeros(1))
    mean = tau * p_other
    # Beyond mean + 40 sqrt(mean) + 60 the tail is below exp(-80) (Bernstein): not summed.
    cap = int(min(tau, math.ceil(mean + 40.0 * math.sqrt(mean) + 60.0)))
    log_pmf = _log_binomial_pmf(tau, p_other, cap)
    pmf = np.exp(log_pmf)
    tail = np.concatenate([np.cumsum(pmf[::-1])[::-1][1:], [0.0]])  # P(E_other > e)
    enough = np.flatnonzero(tail <= tolerance / 2.0)
    kept = int(enough[0]) if enough.size else cap
    full = _work(k, k * (2.0 * reach * NODES_PER_STD * math.sqrt(tau) + 2.0), tau)
    if kept < tau and full <= EXACT_WORK:
        kept = tau
        log_pmf = _log_binomial_pmf(tau, p_other, tau)
        tail = np.zeros(tau + 1)
    return _PatternPlan(kept, float(tail[kept]), reach, log_pmf[: kept + 1])


def _work(k: int, nodes: float, kept: int) -> float:
    # Per current action: prefix and suffix products over the other k - 1 actions and two
    # products per candidate (about 4k truncated products of (D+1)(D+2)/2 multiply-adds
    # per node), and 2k(D+1) normal CDFs per node in the tables.
    per_node = 4.0 * k * (kept + 1) * (kept + 2) / 2.0
    return k * nodes * per_node + _ERFC_COST * 2.0 * k * nodes * (kept + 1)


def _gaussian_candidates(
    mu: np.ndarray, sigma: float, tau: int, p: float, plan: _PatternPlan
) -> CandidateMatrix:
    """Candidate matrix for ``sigma > 0`` by pattern sums under a lattice integral.

    For an agent on ``a``, let ``e`` be its rounds on other actions and ``m_j`` (``j !=
    a``) their split: ``P(e) = Binomial(tau, p (k-1)/k)`` and the split is uniform
    multinomial, ``e! / ((k-1)^e prod m_j!)``. Writing the split's weight with Poisson
    factors ``c(m) = Pois(m; tau p / k)``, ``prod_j c(m_j) = Pois(e; tau p (k-1)/k) *
    e! / ((k-1)^e prod m_j!)``, so the split sum is the ``z^e`` coefficient of a
    product of ``k - 1`` polynomials ``sum_m c(m) g_j(x; m) z^m``, scaled by
    ``w(e) = P(e) / Pois(e)``. The own action has ``tau - e`` observations.
    """
    k = mu.size
    kept = plan.kept
    counts = np.arange(kept + 1)
    rate = tau * p / k  # per other action
    if kept > 0:
        log_poisson = -rate + counts * math.log(rate) - _log_factorial(counts)
        poisson_total = -(k - 1) * rate + counts * math.log((k - 1) * rate) - _log_factorial(counts)
    else:
        log_poisson = poisson_total = np.zeros(1)
    split = np.exp(log_poisson)  # c(m), (D+1,)
    weight = np.exp(plan.log_other_weight - poisson_total)  # w(e), (D+1,)
    own_counts = tau - counts  # m_a = tau - e

    step = sigma / math.sqrt(tau) / NODES_PER_STD
    nodes = _lattice(mu, np.full(k, plan.reach * sigma), step)
    chunk = max(16, int(_CHUNK_FLOATS // (4 * k * (kept + 1))))
    probs = np.zeros((k, k))
    for start in range(0, nodes.size, chunk):
        x = nodes[start : start + chunk]
        other_cdf, other_pdf = _average_tables(x, mu, sigma, counts)  # (k, G, D+1)
        own_cdf, own_pdf = _average_tables(x, mu, sigma, own_counts)
        lower = split * other_cdf  # polynomial coefficients in z, per action
        density = split * other_pdf
        for a in range(k):
            others = [j for j in range(k) if j != a]
            before = [_unit_polynomial(x.size, kept)]
            for j in others[:-1]:
                before.append(_truncated_product(before[-1], lower[j]))
            after = [_unit_polynomial(x.size, kept)]
            for j in others[:0:-1]:
                after.append(_truncated_product(after[-1], lower[j]))
            after = after[::-1]
            all_others = _truncated_product(before[-1], lower[others[-1]])
            probs[a, a] += np.sum((all_others * own_pdf[a]) @ weight)
            for i, b in enumerate(others):
                rest = _truncated_product(before[i], after[i])
                wins = _truncated_product(rest, density[b])
                probs[a, b] += np.sum((wins * own_cdf[a]) @ weight)
    return CandidateMatrix(probs * step, plan.truncated, kept, int(nodes.size))


def _average_tables(x: np.ndarray, mu: np.ndarray, sigma: float, counts: np.ndarray):
    """CDF and density at ``x`` of the average of ``m`` payoffs ``N(mu_j, sigma^2)``, for
    every action ``j`` and count ``m`` in ``counts``: ``(k, G, len(counts))`` each; an
    average of ``m = 0`` payoffs (untried) has CDF 1 (never wins) and density 0."""
    k, G, M = mu.size, x.size, counts.size
    cdf = np.ones((k, G, M))
    pdf = np.zeros((k, G, M))
    tried = counts > 0
    if np.any(tried):
        root = np.sqrt(counts[tried]) / sigma
        z = (x[None, :, None] - mu[:, None, None]) * root[None, None, :]
        cdf[:, :, tried] = _normal_cdf(z)
        pdf[:, :, tried] = _normal_pdf(z) * root
    return cdf, pdf


def _unit_polynomial(rows: int, degree: int) -> np.ndarray:
    unit = np.zeros((rows, degree + 1))
    unit[:, 0] = 1.0
    return unit


def _truncated_product(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Row-wise product of polynomials (coefficients along the last axis), truncated to
    their degree. All coefficients are non-negative: no cancellation."""
    degree = left.shape[-1] - 1
    out = left[:, :1] * right
    for shift in range(1, degree + 1):
        out[:, shift:] += left[:, shift : shift + 1] * right[:, : degree + 1 - shift]
    return out


# ---------------------------------------------------------------------- numerics


def _lattice(centres: np.ndarray, half_widths: np.ndarray, step: float) -> np.ndarray:
    """The points ``lo + i * step`` within ``half_widths[j]`` of some ``centres[j]``."""
    lo = float(np.min(centres - half_widths))
    first = np.ceil((centres - half_widths - lo) / step).astype(np.int64)
    last = np.floor((centres + half_widths - lo) / step).astype(np.int64)
    runs = [np.arange(f, to + 1) for f, to in zip(first, last, strict=True)]
    return lo + step * np.unique(np.concatenate(runs))


def _tail_cut(mass: float) -> float:
    """The smallest ``R`` with ``P(|Z| > R) <= mass`` for a standard normal ``Z``."""
    low, high = 0.0, 40.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        if math.erfc(mid / _SQRT2) > mass:
            low = mid
        else:
            high = mid
    return high


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    # math.erfc is correctly rounded to ~1 ulp in both tails; NumPy has no erf.
    flat = (-np.asarray(z) / _SQRT2).ravel().tolist()
    values = np.fromiter(map(math.erfc, flat), np.float64, count=len(flat))
    return 0.5 * values.reshape(np.shape(z))


def _normal_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * np.square(z)) / _SQRT2PI


def _log_factorial(n: np.ndarray) -> np.ndarray:
    return np.array([math.lgamma(v + 1.0) for v in np.asarray(n).ravel()]).reshape(np.shape(n))


def _log_binomial_pmf(n: int, p: float, up_to: int) -> np.ndarray:
    """``log P(Binomial(n, p) = e)`` for ``e = 0 .. up_to``."""
    e = np.arange(up_to + 1)
    log_choose = math.lgamma(n + 1.0) - _log_factorial(e) - _log_factorial(n - e)
    if p >= 1.0:
        return np.where(e == n, 0.0, -np.inf)
    return log_choose + e * math.log(p) + (n - e) * math.log1p(-p)
