"""Plain NumPy reference implementation of the jaxstage model (test oracle, tiny populations).

Written independently of the JAX package, directly from ``MODEL.md`` (sections 1-4). Loops
over agents and rounds are deliberate: clarity over speed. No JAX here.

Conventions:

- A game is ``payoff_fn(distribution (k,)) -> (T, k)`` expected payoffs per type and action
  (``T = 1`` without types), ``distribution = counts / n`` over *all* agents, plus
  ``noise_std`` (additive Gaussian noise on each realised payoff).
- ``types``: ``(n,)`` ints in ``0..T-1``; ``counts_by_type``: ``(T, k)`` ints.

Choices MODEL.md leaves open (made here, to be matched or documented by the simulator):

- Ties in argmax use exact float equality with the maximum; the current stage action is kept
  if it is a maximiser, otherwise one maximiser is drawn uniformly.
- ``info="payoffs"`` with ``sample_size=m``: the ``m`` agents are drawn uniformly WITH
  replacement (an agent drawn twice counts twice, and an agent may draw itself, in which
  case its own observations enter its pooled estimate twice).
- ``info="distribution"`` with both ``sample_size`` and ``info_noise_std``: the sample is
  drawn first, then the Gaussian noise is added to the sampled distribution.
- ``info="none"`` publishes nothing: ``published`` is ``None``.
- ``info_sharing="private"``: every agent draws its own sample (and noise) as the shared
  estimate is drawn, independently; nothing is published (``published`` is ``None``).
- Best-reply dynamics count one simultaneous update (all groups at once) as one step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PayoffFn = Callable[[np.ndarray], np.ndarray]


def deviation_payoffs(payoff_fn: PayoffFn, counts_by_type: np.ndarray) -> np.ndarray:
    """Exact finite-n deviation payoffs ``dev[t, a, b]`` of shape ``(T, k, k)``.

    ``dev[t, a, b] = payoff_fn(max(c - e_a + e_b, 0) / n)[t, b]`` with ``c`` the overall counts
    and ``n = sum(c)``: what an agent of type ``t`` playing ``a`` gets by switching to ``b``.
    ``dev[t, a, a]`` is its current expected payoff ``u(t, a, c / n)``.
    """
    counts_by_type = np.asarray(counts_by_type)
    num_types, k = counts_by_type.shape
    c = counts_by_type.sum(axis=0).astype(float)
    n = c.sum()
    dev = np.zeros((num_types, k, k))
    for a in range(k):
        for b in range(k):
            adjusted = c.copy()
            adjusted[a] -= 1.0
            adjusted[b] += 1.0
            u = np.asarray(payoff_fn(np.maximum(adjusted, 0.0) / n), dtype=float)
            dev[:, a, b] = u[:, b]
    return dev


def _gaps(payoff_fn: PayoffFn, counts_by_type: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(dev, gap)`` with ``gap[t, a] = max_b dev[t, a, b] - dev[t, a, a]``."""
    dev = deviation_payoffs(payoff_fn, counts_by_type)
    stay = np.einsum("taa->ta", dev)
    return dev, dev.max(axis=2) - stay


def nash_gap(payoff_fn: PayoffFn, counts_by_type: np.ndarray) -> float:
    """eps-Nash gap: max over occupied groups ``(t, a)`` of ``max_b dev[t,a,b] - dev[t,a,a]``."""
    _, gap = _gaps(payoff_fn, counts_by_type)
    return float(gap[np.asarray(counts_by_type) > 0].max())


def best_reply_fraction(payoff_fn: PayoffFn, counts_by_type: np.ndarray, eps: float) -> float:
    """Share of agents playing an eps-best reply, i.e. whose group gap is ``<= eps``."""
    counts_by_type = np.asarray(counts_by_type)
    _, gap = _gaps(payoff_fn, counts_by_type)
    return float(counts_by_type[gap <= eps].sum() / counts_by_type.sum())


def _choose(rng: np.random.Generator, estimates: np.ndarray, current: int) -> int:
    """Argmax over available (non-NaN) estimates; keep ``current`` if it ties, else uniform."""
    available = ~np.isnan(estimates)
    if not available.any():
        raise ValueError("agent has no estimate for any action")
    best = estimates[available].max()
    maximisers = np.flatnonzero(available & (estimates == best))
    if current in maximisers:
        return int(current)
    return int(rng.choice(maximisers))


def _ratio(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``sums / counts`` elementwise, NaN where ``counts == 0`` (nothing observed/published)."""
    out = np.full(np.shape(sums), np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def stage(
    rng: np.random.Generator,
    payoff_fn: PayoffFn,
    noise_std: float,
    stage_actions: np.ndarray,
    types: np.ndarray,
    num_actions: int,
    stage_length: int,
    explore_prob: float,
    update_prob: float = 1.0,
    info: str = "none",
    sample_size: int | None = None,
    info_noise_std: float = 0.0,
    info_sharing: str = "shared",
) -> dict:
    """Simulate one stage of ``stage_length`` rounds (MODEL.md sections 2 and 3).

    Returns a dict with ``stage_actions`` (new, ``(n,)``), ``candidates`` (before the inertia
    coin), ``last_played`` (actions played in the final round), ``published`` (``(k,)``
    distribution estimate or per-action payoff averages with NaN where nothing was
    published; ``None`` for ``info="none"``), ``estimates`` (``(n, k)``, NaN = unavailable),
    ``own_sum`` / ``own_count`` (``(n, k)`` per-agent observation sums and counts).
    """
    if stage_length < 1:
        raise ValueError("stage_length must be >= 1")
    k = num_actions
    stage_actions = np.asarray(stage_actions, dtype=int)
    types = np.asarray(types, dtype=int)
    n = stage_actions.shape[0]

    # Rounds: explore or play the stage action; payoffs drawn given the round's played counts.
    own_sum = np.zeros((n, k))
    own_count = np.zeros((n, k), dtype=int)
    played = stage_actions.copy()
    for _ in range(stage_length):
        played = stage_actions.copy()
        for i in range(n):
            if rng.random() < explore_prob:
                played[i] = rng.integers(k)
        counts = np.bincount(played, minlength=k)
        u = np.asarray(payoff_fn(counts / n), dtype=float)
        for i in range(n):
            payoff = u[types[i], played[i]] + noise_std * rng.standard_normal()
            own_sum[i, played[i]] += payoff
            own_count[i, played[i]] += 1

    # Estimates per agent and action (NaN = unavailable, never a candidate).
    published = None
    if info == "none":
        estimates = _ratio(own_sum, own_count)
    elif info == "payoffs":
        if sample_size is None:
            published = _ratio(own_sum.sum(axis=0), own_count.sum(axis=0))
            estimates = np.tile(published, (n, 1))
        elif info_sharing == "private":  # every agent its own sample of m agents
            estimates = np.zeros((n, k))
            for i in range(n):
                sampled = rng.integers(n, size=sample_size)  # uniform, with replacement
                sample_sum = own_sum[sampled].sum(axis=0)
                sample_count = own_count[sampled].sum(axis=0)
                estimates[i] = _ratio(own_sum[i] + sample_sum, own_count[i] + sample_count)
        else:
            sampled = rng.integers(n, size=sample_size)  # uniform, with replacement
            sample_sum = own_sum[sampled].sum(axis=0)
            sample_count = own_count[sampled].sum(axis=0)
            published = _ratio(sample_sum, sample_count)
            estimates = _ratio(own_sum + sample_sum, own_count + sample_count)
    elif info == "distribution":

        def estimated_distribution() -> np.ndarray:
            if sample_size is None:
                d_hat = np.bincount(stage_actions, minlength=k) / n
            else:
                sampled = rng.integers(n, size=sample_size)  # uniform, with replacement
                d_hat = np.bincount(stage_actions[sampled], minlength=k) / sample_size
            if info_noise_std > 0:
                d_hat = np.maximum(d_hat + info_noise_std * rng.standard_normal(k), 0.0)
                total = d_hat.sum()
                d_hat = d_hat / total if total > 0 else np.full(k, 1.0 / k)
            return d_hat

        private = info_sharing == "private"
        published = None if private else estimated_distribution()
        estimates = np.zeros((n, k))
        for i in range(n):
            # Private: every agent its own sample and noise, drawn the way the shared
            # estimate is (m agents with replacement, not the multinomial jaxstage draws).
            c_hat = (estimated_distribution() if private else published) * n
            a = stage_actions[i]
            for b in range(k):
                adjusted = c_hat.copy()
                adjusted[a] -= 1.0
                adjusted[b] += 1.0
                u = np.asarray(payoff_fn(np.maximum(adjusted, 0.0) / n), dtype=float)
                estimates[i, b] = u[types[i], b]
    else:
        raise ValueError(f"unknown info {info!r}")

    candidates = np.array([_choose(rng, estimates[i], stage_actions[i]) for i in range(n)])
    new_actions = stage_actions.copy()
    for i in range(n):
        if rng.random() < update_prob:
            new_actions[i] = candidates[i]
    return {
        "stage_actions": new_actions,
        "candidates": candidates,
        "last_played": played,
        "published": published,
        "estimates": estimates,
        "own_sum": own_sum,
        "own_count": own_count,
    }


def best_reply_dynamics(
    rng: np.random.Generator,
    payoff_fn: PayoffFn,
    counts_by_type: np.ndarray,
    eps: float,
    mode: str = "sequential",
    inertia: float = 1.0,
    max_steps: int = 10_000,
) -> dict:
    """Count-level best-reply dynamics (MODEL.md section 4).

    ``sequential``: one agent chosen uniformly among those not at an eps-best reply (group
    ``(t, a)`` with probability proportional to its count among groups with gap > eps) moves
    to a best reply ``argmax_b dev[t, a, b]`` (ties uniform). ``simultaneous``: every such
    group sends ``Binomial(count, inertia)`` agents to one best reply of the group, all
    computed from the counts before the step. Returns ``converged`` (every agent at an
    eps-best reply), ``steps`` taken and the final ``counts`` ``(T, k)``.
    """
    counts = np.array(counts_by_type, dtype=int)
    num_types, k = counts.shape
    steps = 0
    while True:
        dev, gap = _gaps(payoff_fn, counts)
        unhappy = (counts > 0) & (gap > eps)
        if not unhappy.any():
            return {"converged": True, "steps": steps, "counts": counts}
        if steps >= max_steps:
            return {"converged": False, "steps": steps, "counts": counts}
        if mode == "sequential":
            weights = np.where(unhappy, counts, 0).ravel().astype(float)
            group = rng.choice(num_types * k, p=weights / weights.sum())
            t, a = divmod(int(group), k)
            row = dev[t, a]
            b = int(rng.choice(np.flatnonzero(row == row.max())))
            counts[t, a] -= 1
            counts[t, b] += 1
        elif mode == "simultaneous":
            moves = []
            for t in range(num_types):
                for a in range(k):
                    if unhappy[t, a]:
                        row = dev[t, a]
                        b = int(rng.choice(np.flatnonzero(row == row.max())))
                        moves.append((t, a, b, int(rng.binomial(counts[t, a], inertia))))
            for t, a, b, m in moves:
                counts[t, a] -= m
                counts[t, b] += m
        else:
            raise ValueError(f"unknown mode {mode!r}")
        steps += 1


if __name__ == "__main__":
    # Two links, cost = load share: u(d) = -d (one type). n = 4, counts (3, 1).
    def congestion(d: np.ndarray) -> np.ndarray:
        return -np.asarray(d, dtype=float)[None, :]

    c31 = np.array([[3, 1]])
    dev = deviation_payoffs(congestion, c31)
    # On 0: stay -3/4, switch to 1 -> (2, 2) -> -1/2. On 1: stay -1/4, switch -> (4, 0) -> -1.
    assert np.allclose(dev[0], [[-0.75, -0.5], [-1.0, -0.25]]), dev
    assert np.isclose(nash_gap(congestion, c31), 0.25)
    assert best_reply_fraction(congestion, c31, 0.0) == 0.25
    assert best_reply_fraction(congestion, c31, 0.3) == 1.0
    assert np.isclose(nash_gap(congestion, np.array([[2, 2]])), 0.0)  # max_b includes b = a

    rng = np.random.default_rng(0)
    out = best_reply_dynamics(rng, congestion, c31, 0.0)
    assert out["converged"] and out["steps"] == 1 and out["counts"].tolist() == [[2, 2]]
    # Simultaneous, no inertia, from (4, 0): everyone jumps together -> oscillation.
    out = best_reply_dynamics(rng, congestion, np.array([[4, 0]]), 0.0, "simultaneous", max_steps=7)
    assert not out["converged"] and out["counts"].tolist() == [[0, 4]]

    # Stages from everyone on action 0, no exploration, no noise.
    s0, ty = np.zeros(4, dtype=int), np.zeros(4, dtype=int)
    kw = {"num_actions": 2, "stage_length": 3, "explore_prob": 0.0}
    out = stage(rng, congestion, 0.0, s0, ty, **kw)  # only action 0 tried: stay
    assert out["stage_actions"].tolist() == [0] * 4 and out["last_played"].tolist() == [0] * 4
    out = stage(rng, congestion, 0.0, s0, ty, info="payoffs", **kw)
    assert out["published"][0] == -1.0 and np.isnan(out["published"][1])
    assert out["stage_actions"].tolist() == [0] * 4
    out = stage(rng, congestion, 0.0, s0, ty, info="distribution", **kw)  # all leave
    assert out["published"].tolist() == [1.0, 0.0] and out["stage_actions"].tolist() == [1] * 4
    out = stage(rng, congestion, 0.0, s0, ty, info="distribution", update_prob=0.0, **kw)
    assert out["candidates"].tolist() == [1] * 4 and out["stage_actions"].tolist() == [0] * 4
    # Always exploring (noisy): bookkeeping is one observation per agent-round.
    out = stage(rng, congestion, 0.5, s0, ty, num_actions=2, stage_length=50, explore_prob=1.0)
    assert (out["own_count"].sum(axis=1) == 50).all()
    print("numpy_reference self-check passed")


def _round_payoffs(rng, payoff_fn, noise_std, played, types, k):
    """Realised payoffs of one round given its played actions (section 2, step 2)."""
    n = len(played)
    u = np.asarray(payoff_fn(np.bincount(played, minlength=k) / n), dtype=float)
    return np.array([u[types[i], played[i]] + noise_std * rng.standard_normal() for i in range(n)])


def eps_greedy(
    rng: np.random.Generator,
    payoff_fn: PayoffFn,
    noise_std: float,
    initial: np.ndarray,
    types: np.ndarray,
    num_actions: int,
    rounds: int,
    explore_prob: float,
) -> dict:
    """eps-greedy with running averages for ``rounds`` rounds (MODEL.md section 8).

    Returns ``greedy`` (``(n,)`` greedy actions after the last round), ``by_round``
    (``(rounds, n)`` greedy actions after each round), ``sums`` and ``counts`` (``(n, k)``
    all observations since round 0) and ``last_played``.
    """
    k = num_actions
    greedy = np.asarray(initial, dtype=int).copy()
    n = len(greedy)
    sums = np.zeros((n, k))
    counts = np.zeros((n, k), dtype=int)
    played = greedy.copy()
    by_round = []
    for _ in range(rounds):
        played = greedy.copy()
        for i in range(n):
            if rng.random() < explore_prob:
                played[i] = rng.integers(k)
        payoffs = _round_payoffs(rng, payoff_fn, noise_std, played, types, k)
        for i in range(n):
            sums[i, played[i]] += payoffs[i]
            counts[i, played[i]] += 1
            greedy[i] = _choose(rng, _ratio(sums[i], counts[i]), greedy[i])
        by_round.append(greedy.copy())
    return {
        "greedy": greedy,
        "by_round": np.array(by_round),
        "sums": sums,
        "counts": counts,
        "last_played": played,
    }


def exp3(
    rng: np.random.Generator,
    payoff_fn: PayoffFn,
    noise_std: float,
    types: np.ndarray,
    num_actions: int,
    rounds: int,
    eta: float,
    gamma: float,
) -> dict:
    """EXP3 for ``rounds`` rounds from zero log-weights (MODEL.md section 8), in float64
    and without the simulator's shift of the log-weights.

    Returns ``current`` (``(n,)`` argmax of the play probabilities, lowest index on
    ties), ``by_round`` (``(rounds, n)`` the current actions after each round),
    ``log_weights`` and ``probabilities`` (``(n, k)``).
    """
    k = num_actions
    types = np.asarray(types, dtype=int)
    n = len(types)
    w = np.zeros((n, k))

    def probabilities(w):
        e = np.exp(w - w.max(axis=1, keepdims=True))
        return (1 - gamma) * e / e.sum(axis=1, keepdims=True) + gamma / k

    by_round = []
    for _ in range(rounds):
        p = probabilities(w)
        played = np.array([rng.choice(k, p=p[i]) for i in range(n)])
        payoffs = _round_payoffs(rng, payoff_fn, noise_std, played, types, k)
        for i in range(n):
            w[i, played[i]] += eta * payoffs[i] / p[i, played[i]]
        by_round.append(np.argmax(probabilities(w), axis=1))
    p = probabilities(w)
    return {
        "current": np.argmax(p, axis=1),
        "by_round": np.array(by_round),
        "log_weights": w,
        "probabilities": p,
    }
