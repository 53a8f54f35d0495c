"""What a stage learner's stage end picks at fixed payoffs: ``P(candidate = b | a)``.

The building block of the mean-field map (:mod:`jaxstage.mean_field`, MODEL.md section 9):
over a stage of ``tau`` rounds an agent on ``a`` plays ``a`` with probability
``1 - p + p / k`` and each other action with ``p / k`` per round, averages the payoffs
``N(mu_b, sigma^2)`` of each action it tried and takes the best (section 2's tie rule).

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
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from jaxstage._validation import check_int, check_real

__all__ = [
    "candidate_matrix",
    "CandidateMatrix",
    "gaussian_argmax_probabilities",
    "pattern_sum_work",
    "tie_tolerance",
    "payoff_levels",
    "check_tolerance",
    "finite_vector",
    "too_expensive",
    "DEFAULT_TOLERANCE",
    "DEFAULT_MAX_WORK",
    "NODES_PER_STD",
    "EXACT_WORK",
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
    mu = finite_vector(payoffs, "payoffs")
    if mu.size < 2:
        raise ValueError(f"payoffs must have at least 2 entries (actions), got {mu.size}")
    sigma = check_real(noise_std, "noise_std", low=0.0)
    tau = check_int(stage_length, "stage_length", low=1, high=2**30)
    p = check_real(explore_prob, "explore_prob", low=0.0, high=1.0)
    tolerance = check_tolerance(tolerance)
    max_work = check_real(max_work, "max_work", low=0.0, open_low=True)
    if sigma == 0.0:
        return CandidateMatrix(_deterministic_candidates(mu, tau, p), 0.0, tau, 0)
    plan = _pattern_plan(mu.size, tau, p, tolerance)
    work = pattern_sum_work(mu.size, tau, p, tolerance)
    if work > max_work:
        raise ValueError(too_expensive(mu.size, tau, p, tolerance, work, max_work))
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
    mean = finite_vector(means, "means")
    std = finite_vector(stds, "stds")
    if std.shape != mean.shape:
        raise ValueError(f"stds must have the shape of means {mean.shape}, got {std.shape}")
    if np.any(std <= 0):
        raise ValueError(f"stds must be > 0, got {std.tolist()}")
    tolerance = check_tolerance(tolerance)
    k = mean.size
    reach = _tail_cut(tolerance / (4.0 * k))
    step = 1.0 / math.sqrt(np.sum(std**-2.0)) / NODES_PER_STD
    nodes = _lattice(mean, reach * std, step)
    z = (nodes[None, :] - mean[:, None]) / std[:, None]  # (k, G)
    cdf, pdf = _normal_cdf(z), _normal_pdf(z) / std[:, None]
    before = np.cumprod(np.vstack([np.ones_like(nodes), cdf[:-1]]), axis=0)
    after = np.cumprod(np.vstack([cdf[1:], np.ones_like(nodes)])[::-1], axis=0)[::-1]
    return step * np.sum(pdf * before * after, axis=1)


def pattern_sum_work(k: int, tau: int, p: float, tolerance: float) -> float:
    """Estimated work of one :func:`candidate_matrix` with ``sigma > 0``: multiply-adds of
    the pattern sums plus ``math.erfc`` calls (each counted as 60 multiply-adds), for
    all ``k`` current actions, over the largest lattice the payoffs could need."""
    plan = _pattern_plan(k, tau, p, tolerance)
    nodes = k * (2.0 * plan.reach * NODES_PER_STD * math.sqrt(tau) + 2.0)
    return _work(k, nodes, plan.kept)


def check_tolerance(tolerance: object) -> float:
    low, high = _TOLERANCE_RANGE
    return check_real(tolerance, "tolerance", low=low, high=high)


def too_expensive(k, tau, p, tolerance, work, max_work) -> str:
    return (
        f"the mean-field map with k={k} actions, stage_length={tau}, explore_prob={p:g} and "
        f"tolerance={tolerance:g} is estimated at {work:.3g} units of work per stage (about "
        f"{work / 3e8:.0f} s), above max_work={max_work:.3g}; raise "
        f"max_work, loosen the tolerance, or use a shorter stage or smaller explore_prob"
    )


def finite_vector(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a vector of numbers, got {values!r}") from error
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


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
