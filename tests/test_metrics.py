"""Count-level metrics (``jaxstage.metrics``): hand-computed cases and the NumPy reference.

The hand-computed cases use tiny populations where the deviation-adjusted counts
``c - e_a + e_b`` change the answer compared with the large-n approximation, and payoffs
that are exact in binary floating point, so the eps boundary can be tested exactly.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

import jaxstage as js
from jaxstage.games import type_counts
from jaxstage.metrics import (
    best_reply_fraction,
    best_reply_gaps,
    convergence_stage,
    count_metrics,
    deviation_payoffs,
    distance_to_equilibria,
    nash_gap,
)

# u(j, d) = -d_j: two identical links (b = 1), no noise.
LINKS = js.make_game("congestion", num_actions=2, b=[1.0, 1.0], noise_std=0.0)
# u(j, d) = -b_j d_j with b = (1, 2).
LINKS12 = js.make_game("congestion", num_actions=2, b=[1.0, 2.0], noise_std=0.0)
# go (action 1) pays +1 when d_go <= 1/2, else -1; stay pays 0.
BAR = js.make_game("minority", capacity=0.5, noise_std=0.0)
# adopt (action 1) pays d_adopt - theta; at n = 4 the types hold 1, 2 and 1 agents.
ADOPT = js.make_game(
    "adoption", value=1.0, thresholds=(0.1, 0.4, 0.8), shares=(0.25, 0.5, 0.25), noise_std=0.0
)


def dev_of(game, counts):
    counts = jnp.asarray(counts, jnp.int32)
    return np.asarray(
        deviation_payoffs(game, game.default_params(), counts, int(np.sum(counts))), np.float64
    )


def metrics_of(game, counts_by_type, eps):
    return count_metrics(game, game.default_params(), jnp.asarray(counts_by_type, jnp.int32), eps)


# --------------------------------------------------------------------------- hand-computed


def test_deviation_payoffs_linear_congestion_n4():
    # counts (3, 1), n = 4, u_j = -c_j / n.
    # On link 0: stay -> -3/4; switch to link 1 -> counts (2, 2) -> u_1 = -2/4.
    # On link 1: switch to link 0 -> counts (4, 0) -> u_0 = -4/4; stay -> -1/4.
    dev = dev_of(LINKS, [3, 1])
    assert dev.shape == (1, 2, 2)
    np.testing.assert_array_equal(dev[0], [[-0.75, -0.5], [-1.0, -0.25]])
    gaps = np.asarray(best_reply_gaps(jnp.asarray(dev)))
    # link 0: max(-3/4, -1/2) - (-3/4) = 1/4; link 1: max(-1, -1/4) - (-1/4) = 0.
    np.testing.assert_array_equal(gaps, [[0.25, 0.0]])
    # Large-n approximation u(b, c/n) would give link-0 agents -1/4 on link 1: gap 1/2.


def test_deviation_payoffs_unequal_links_and_empty_group():
    # b = (1, 2), counts (2, 2), n = 4.
    # On 0: stay -2/4 = -0.5; to 1: counts (1, 3) -> -2 * 3/4 = -1.5.
    # On 1: to 0: counts (3, 1) -> -3/4; stay -2 * 2/4 = -1.
    np.testing.assert_array_equal(dev_of(LINKS12, [2, 2])[0], [[-0.5, -1.5], [-0.75, -1.0]])
    # counts (4, 0): the empty group 1 is clipped: dev[1, 0] = u_0(max((5, -1), 0) / 4) = -5/4,
    # dev[1, 1] = u_1((4, 0) / 4) = 0 (only used where an agent could be; see nash_gap).
    dev = dev_of(LINKS12, [4, 0])[0]
    # On 0: stay -1; to 1: counts (3, 1) -> -2 * 1/4 = -0.5.
    np.testing.assert_array_equal(dev, [[-1.0, -0.5], [-1.25, 0.0]])


def test_nash_gap_ignores_empty_groups():
    gaps = jnp.array([[0.25, 0.0]])
    assert float(nash_gap(gaps, jnp.array([[3, 1]]))) == 0.25
    assert float(nash_gap(gaps, jnp.array([[0, 4]]))) == 0.0  # nobody on action 0
    gaps = jnp.array([[0.0, 0.5, 2.0]])
    assert float(nash_gap(gaps, jnp.array([[1, 1, 0]]))) == 0.5


def test_best_reply_fraction_eps_boundary_is_inclusive():
    # counts (3, 1) on LINKS: the 3 agents on link 0 gain exactly 1/4 by moving, the agent
    # on link 1 gains nothing. An agent whose gain is exactly eps plays an eps-best reply.
    gaps = jnp.asarray(best_reply_gaps(jnp.asarray(dev_of(LINKS, [3, 1]))))
    counts = jnp.array([[3, 1]])
    cases = {0.0: 0.25, 0.2499: 0.25, 0.25: 1.0, 0.3: 1.0}
    for eps, share in cases.items():
        overall, by_type = best_reply_fraction(gaps, counts, eps)
        assert float(overall) == share, eps
        np.testing.assert_array_equal(np.asarray(by_type), [share])


def test_count_metrics_linear_congestion_n4():
    # b = (1, 2), counts (2, 2): u = (-1/2, -1). gaps: on 0: 0 (moving gives -1.5); on 1:
    # -3/4 - (-1) = 1/4. Welfare (2 * -1/2 + 2 * -1) / 4 = -3/4.
    m = metrics_of(LINKS12, [[2, 2]], 0.0)
    np.testing.assert_array_equal(np.asarray(m.expected_payoffs), [[-0.5, -1.0]])
    assert float(m.nash_gap) == 0.25
    assert float(m.best_reply_fraction) == 0.5
    np.testing.assert_array_equal(np.asarray(m.best_reply_fraction_by_type), [0.5])
    assert float(m.welfare) == -0.75
    np.testing.assert_array_equal(np.asarray(m.counts_by_type), [[2, 2]])
    # eps exactly 1/4: everyone counts.
    assert float(metrics_of(LINKS12, [[2, 2]], 0.25).best_reply_fraction) == 1.0


def test_count_metrics_minority_n4_uses_deviation_counts():
    # capacity 1/2, n = 4, counts (stay, go) = (2, 2): d_go = 1/2 <= 1/2 so go pays +1.
    # A stayer who went would make d_go = 3/4 > 1/2: -1 < 0, so staying is a best reply.
    # A goer who stayed gets 0 < 1. Everyone is at a best reply: gap 0, share 1.
    # (The large-n approximation u(go, c/n) = +1 would call both stayers unhappy: share 1/2.)
    m = metrics_of(BAR, [[2, 2]], 0.0)
    assert float(m.best_reply_fraction) == 1.0
    assert float(m.nash_gap) == 0.0
    np.testing.assert_array_equal(np.asarray(m.expected_payoffs), [[0.0, 1.0]])
    assert float(m.welfare) == 0.5  # (2 * 0 + 2 * 1) / 4

    # counts (3, 1): a stayer who goes makes d_go = 2/4, exactly the capacity: +1 > 0, so
    # stayers gain 1; the goer (+1 vs 0) is content. Share 1/4, gap 1; eps = 1 admits all.
    m = metrics_of(BAR, [[3, 1]], 0.0)
    assert float(m.best_reply_fraction) == 0.25
    assert float(m.nash_gap) == 1.0
    assert float(m.welfare) == 0.25  # (3 * 0 + 1 * 1) / 4
    assert float(metrics_of(BAR, [[3, 1]], 1.0).best_reply_fraction) == 1.0
    assert float(metrics_of(BAR, [[3, 1]], 0.999).best_reply_fraction) == 0.25

    # counts (1, 3): d_go = 3/4, go pays -1. Goers gain 1 by staying; the stayer going
    # makes d_go = 1: -1 < 0, content. Share 1/4, gap 1, welfare (0 + 3 * -1) / 4.
    m = metrics_of(BAR, [[1, 3]], 0.0)
    assert float(m.best_reply_fraction) == 0.25
    assert float(m.nash_gap) == 1.0
    assert float(m.welfare) == -0.75


def test_count_metrics_adoption_types_n4():
    assert type_counts(ADOPT.type_shares, 4).tolist() == [1, 2, 1]
    # By type (keep, adopt): theta=0.1 (0, 1); theta=0.4 (1, 1); theta=0.8 (1, 0).
    # Overall (2, 2), d_adopt = 1/2: u(adopt) = 1/2 - theta = (0.4, 0.1, -0.3).
    # A keeper who adopts makes d_adopt = 3/4: gain 3/4 - theta. theta=0.4 keeper: 0.35 > 0.
    # theta=0.8 keeper: -0.05, content. Adopters: 0.4 and 0.1 > 0 (keeping pays 0): content.
    # Gap 0.35; 3 of 4 agents content; by type (1, 1/2, 1); welfare (0.4 + 0.1) / 4 = 0.125.
    m = metrics_of(ADOPT, [[0, 1], [1, 1], [1, 0]], 0.0)
    np.testing.assert_allclose(
        np.asarray(m.expected_payoffs), [[0.0, 0.4], [0.0, 0.1], [0.0, -0.3]], atol=1e-6
    )
    assert float(m.nash_gap) == pytest.approx(0.35, abs=1e-6)
    assert float(m.best_reply_fraction) == 0.75
    np.testing.assert_array_equal(np.asarray(m.best_reply_fraction_by_type), [1.0, 0.5, 1.0])
    assert float(m.welfare) == pytest.approx(0.125, abs=1e-6)
    assert float(metrics_of(ADOPT, [[0, 1], [1, 1], [1, 0]], 0.36).best_reply_fraction) == 1.0
    dev = dev_of(ADOPT, [2, 2])
    assert dev.shape == (3, 2, 2)
    # dev[t, keep, adopt] = 3/4 - theta; dev[t, adopt, keep] = 0.
    np.testing.assert_allclose(dev[:, 0, 1], [0.65, 0.35, -0.05], atol=1e-6)
    np.testing.assert_array_equal(dev[:, 1, 0], 0.0)


# --------------------------------------------------------------------------- reference


def _congestion_np(a, b, p):
    return lambda d: -(np.asarray(a) + np.asarray(b) * np.asarray(d) ** p)[None, :]


def _minority_np(capacity, smoothness):
    def payoff(d):
        slack = capacity - d[1]
        go = np.tanh(slack / smoothness) if smoothness > 0 else (1.0 if slack >= -1e-7 else -1.0)
        return np.array([[0.0, go]])

    return payoff


def _beauty_np(k, q):
    guesses = np.arange(k, dtype=float)
    return lambda d: -np.abs(guesses - q * np.dot(guesses, d))[None, :]


def _adoption_np(value, thresholds):
    thresholds = np.asarray(thresholds, dtype=float)
    return lambda d: np.stack([np.zeros_like(thresholds), value * d[1] - thresholds], axis=1)


def _linear_np(weights, bias):
    return lambda d: (bias + weights @ d)[None, :]


RANDOM_LINEAR = js.make_game("random_linear", num_actions=4, symmetric=False, game_seed=3)
REFERENCE_GAMES = {
    "congestion p=2": (
        js.make_game("congestion", num_actions=4, a=[0.1, 0.0, 0.3, 0.2], p=2.0),
        _congestion_np(np.array([0.1, 0.0, 0.3, 0.2]), np.arange(1.0, 5.0), 2.0),
    ),
    "minority step": (js.make_game("minority", capacity=0.6), _minority_np(0.6, 0.0)),
    "minority smooth": (
        js.make_game("minority", capacity=0.4, smoothness=0.1),
        _minority_np(0.4, 0.1),
    ),
    "beauty contest": (js.make_game("beauty_contest", num_actions=5, q=0.6), _beauty_np(5, 0.6)),
    "adoption (types)": (js.make_game("adoption"), _adoption_np(1.0, (0.1, 0.4, 0.8))),
    "random linear": (RANDOM_LINEAR, _linear_np(RANDOM_LINEAR.weights, RANDOM_LINEAR.bias)),
}


def _random_counts_by_type(rng, game, n):
    sizes = type_counts(game.type_shares, n)
    k = game.num_actions
    return np.stack([rng.multinomial(size, rng.dirichlet(np.ones(k))) for size in sizes])


@pytest.mark.parametrize("name", list(REFERENCE_GAMES))
def test_metrics_agree_with_reference(name):
    game, payoff_np = REFERENCE_GAMES[name]
    params = game.default_params()
    rng = np.random.default_rng(sum(map(ord, name)))
    checked_boundaries = 0
    for n in rng.integers(3, 40, size=6):
        counts_by_type = _random_counts_by_type(rng, game, int(n))
        counts = counts_by_type.sum(axis=0)
        want_dev = ref.deviation_payoffs(payoff_np, counts_by_type)
        got_dev = np.asarray(deviation_payoffs(game, params, jnp.asarray(counts), int(n)))
        np.testing.assert_allclose(got_dev, want_dev, rtol=1e-5, atol=1e-5)

        _, gaps = ref._gaps(payoff_np, counts_by_type)
        occupied = gaps[counts_by_type > 0]
        for eps in (0.0, 0.05, 0.3):
            m = count_metrics(game, params, jnp.asarray(counts_by_type, jnp.int32), eps)
            assert float(m.nash_gap) == pytest.approx(
                ref.nash_gap(payoff_np, counts_by_type), abs=1e-5
            )
            np.testing.assert_allclose(
                np.asarray(m.expected_payoffs), payoff_np(counts / n), rtol=1e-5, atol=1e-5
            )
            welfare = np.sum(counts_by_type * payoff_np(counts / n)) / n
            assert float(m.welfare) == pytest.approx(welfare, rel=1e-5, abs=1e-5)
            if eps > 0 and np.any(np.abs(occupied - eps) < 1e-4):
                continue  # float32 vs float64 may decide a gap this close to eps differently
            checked_boundaries += 1
            assert float(m.best_reply_fraction) == pytest.approx(
                ref.best_reply_fraction(payoff_np, counts_by_type, eps), abs=1e-6
            )
            by_type = [
                np.sum(row[gap_row <= eps]) / max(row.sum(), 1)
                for row, gap_row in zip(counts_by_type, gaps, strict=True)
            ]
            np.testing.assert_allclose(
                np.asarray(m.best_reply_fraction_by_type), by_type, atol=1e-6
            )
    assert checked_boundaries >= 12


# --------------------------------------------------------------------------- convergence


@pytest.mark.parametrize(
    ("flags", "hold", "expected"),
    [
        ([False, False, False], None, None),  # never converges
        ([True, True, False], None, None),  # leaves equilibrium at the end
        ([], None, None),
        ([True, True, True], None, 0),  # converged from the start
        ([False, True, False, True, True], None, 3),  # dip: counts from after the last dip
        ([False, False, True], None, 2),
        ([False, True, False, True, True], 1, 1),  # a one-state window: first True
        ([False, True, False, True, True], 2, 3),  # first window of two
        ([True, False, True, True, False], 2, 2),  # window may end before the run ends
        ([True, True, True], 3, 0),
        ([False, False, True], 2, None),  # the window does not fit in the run
        ([True, False, True], 2, None),
        ([True, True], 3, None),
    ],
)
def test_convergence_stage(flags, hold, expected):
    assert convergence_stage(flags, hold) == expected
    assert convergence_stage(np.array(flags, dtype=bool), hold) == expected


def test_convergence_stage_rejects_bad_hold():
    with pytest.raises(ValueError, match="hold_stages must be >= 1, got 0"):
        convergence_stage([True], 0)


def test_distance_to_equilibria():
    distributions = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    equilibria = [np.array([1.0, 0.0]), np.array([0.5, 0.5])]
    # nearest: 0 (second eq); 0 (first eq); |0.25-0.5| + |0.75-0.5| = 0.5 (second eq)
    np.testing.assert_allclose(distance_to_equilibria(distributions, equilibria), [0, 0, 0.5])
    assert distance_to_equilibria(distributions, []) is None
