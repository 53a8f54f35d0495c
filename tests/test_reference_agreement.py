"""One JAX stage agrees with the NumPy reference (``tests/numpy_reference.py``) in law.

Each case runs one stage of ``n = 8`` agents from an explicit initial action array many
times, in JAX (one ``jaxstage.sweep`` call, or ``jaxstage.simulate`` per seed when the
final per-agent actions are wanted) and in the reference, and compares the means of
per-run statistics:

* ``d[j]``: the distribution of stage actions after the stage;
* ``switched``: the share of agents whose stage action changed;
* ``move[a->b]`` (``simulate`` only): the share of the agents that started on ``a`` and
  ended on ``b``; ``type t d[j]`` for typed games.

Means agree when ``|mean_jax - mean_ref| <= 4.5 * combined standard error + 1e-9``; with
zero variance on both sides this is an exact check. Seeds are fixed, so a test passes or
fails deterministically; 4.5 standard errors make a pass for a correct implementation
overwhelmingly likely for any seeds, while a wrong rule (biased tie-breaking, inertia
ignored, information not used...) shifts a mean by many standard errors.

Where the answer follows by hand (exact ties, deterministic best replies, shared samples)
both implementations are also checked against that number, derived in the comments.

The payoff functions given to the reference are written here in NumPy from MODEL.md and
the game docstrings (independently of jaxstage); ``test_reference_payoffs_match_games``
checks that they match the jaxstage games. Payoffs are dyadic at ``n = 8`` so exact ties
are exact in float32 and float64 alike.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

import jaxstage as js
from jaxstage import simulation
from jaxstage.games import type_counts

Z = 4.5
ATOL = 1e-9
N_AGENTS = 8
K = 3
REF_RUNS = 600  # at most; the reference is cheaper per run than JAX, so it gets more runs

# u_j(d) = base_j - slope_j * d_j: a linear congestion game whose coefficients are traced
# parameters, so every case below reuses one compiled program per information mode.
LINEAR = js.games.from_payoff_fn(
    lambda d, p: p["base"] - p["slope"] * d,
    K,
    noise_std=0.5,
    name="linear3",
    params={"base": [0.0, 0.0, 0.0], "slope": [1.0, 2.0, 3.0]},
)
ADOPTION = js.make_game(
    "adoption", value=1.0, thresholds=(0.1, 0.4, 0.8), shares=(0.25, 0.5, 0.25), noise_std=0.3
)
ADOPTION_TYPES = np.repeat(
    np.arange(ADOPTION.num_types), type_counts(ADOPTION.type_shares, N_AGENTS)
)


def linear_reference(base, slope):
    base = np.asarray(base, dtype=float)
    slope = np.asarray(slope, dtype=float)
    return lambda d: (base - slope * np.asarray(d, dtype=float))[None, :]


def adoption_reference(value=1.0, thresholds=(0.1, 0.4, 0.8)):
    thresholds = np.asarray(thresholds, dtype=float)

    def payoff(d):
        adopt = value * float(d[1]) - thresholds
        return np.stack([np.zeros_like(adopt), adopt], axis=1)

    return payoff


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    stage_length: int = 4
    explore_prob: float = 0.3
    update_prob: float = 1.0
    noise_std: float = 0.5
    base: tuple[float, ...] = (0.0, 0.0, 0.0)
    slope: tuple[float, ...] = (1.0, 2.0, 3.0)
    info_noise_std: float = 0.0
    runs: int = 250

    def game_params(self) -> dict:
        return {"base": self.base, "slope": self.slope, "noise_std": self.noise_std}


# --------------------------------------------------------------------------- statistics


def assert_same_mean(jax_values, ref_values, what):
    a = np.asarray(jax_values, dtype=float)
    b = np.asarray(ref_values, dtype=float)
    diff = abs(a.mean() - b.mean())
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert diff <= Z * se + ATOL, (
        f"{what}: jax mean {a.mean():.5f} (n={a.size}) vs reference mean {b.mean():.5f} "
        f"(n={b.size}); |diff| {diff:.5f} > {Z} * se {se:.5f}"
    )


def assert_mean_is(values, expected, what):
    a = np.asarray(values, dtype=float)
    se = a.std(ddof=1) / np.sqrt(a.size)
    diff = abs(a.mean() - expected)
    assert diff <= Z * se + ATOL, (
        f"{what}: mean {a.mean():.5f} (n={a.size}) but the hand-computed value is "
        f"{expected:.5f}; |diff| {diff:.5f} > {Z} * se {se:.5f}"
    )


def features(final_actions, initial, k, types=None):
    """Per-run statistics of a ``(runs, n)`` array of post-stage actions."""
    final = np.atleast_2d(np.asarray(final_actions))
    initial = np.asarray(initial)
    out = {f"d[{j}]": np.mean(final == j, axis=1) for j in range(k)}
    out["switched"] = np.mean(final != initial[None, :], axis=1)
    for a in range(k):
        group = initial == a
        if group.any():
            for b in range(k):
                out[f"move[{a}->{b}]"] = np.mean(final[:, group] == b, axis=1)
    if types is not None:
        for t in range(int(types.max()) + 1):
            for j in range(k):
                out[f"type {t} d[{j}]"] = np.mean(final[:, types == t] == j, axis=1)
    return out


def compare(jax_features, ref_features, label):
    assert set(jax_features) <= set(ref_features)
    for name, values in jax_features.items():
        assert_same_mean(values, ref_features[name], f"{label}: {name}")


# --------------------------------------------------------------------------- runners


def run_reference(
    case, x0, info, sample_size=None, payoff=None, types=None, seed=0, k=K, sharing="shared"
):
    payoff = payoff or linear_reference(case.base, case.slope)
    types = np.zeros(len(x0), dtype=int) if types is None else types
    rng = np.random.default_rng(seed)
    finals = [
        ref.stage(
            rng,
            payoff,
            case.noise_std,
            x0,
            types,
            k,
            case.stage_length,
            case.explore_prob,
            case.update_prob,
            info,
            sample_size,
            case.info_noise_std,
            sharing,
        )["stage_actions"]
        for _ in range(min(REF_RUNS, max(50, 3 * case.runs)))
    ]
    return np.stack(finals)


def run_simulate(case, x0, info, sample_size=None, game=LINEAR, game_params=None, sharing="shared"):
    """Final actions of ``case.runs`` one-stage runs with ``jaxstage.simulate``."""
    learner = js.StageLearning(
        stage_length=case.stage_length,
        explore_prob=case.explore_prob,
        update_prob=case.update_prob,
        info=info,
        info_sample_size=sample_size,
        info_noise_std=case.info_noise_std,
        info_sharing=sharing,
    )
    params = case.game_params() if game_params is None else game_params
    finals = []
    for seed in range(case.runs):
        result = js.simulate(
            game,
            learner,
            len(x0),
            1,
            seed=seed,
            initial=np.asarray(x0),
            game_params=params,
            return_actions=True,
        )
        finals.append(result.final_actions)
    return np.stack(finals)


@pytest.fixture(autouse=True, params=["reference", "fast"])
def kernel(request, monkeypatch):
    """Every comparison runs on both kernels: the readable reference and the fast one
    (whose exploration path ``"auto"`` picks by cost: events or the loop over rounds)."""
    monkeypatch.setattr(
        js, "simulate", functools.partial(simulation.simulate, kernel=request.param)
    )
    monkeypatch.setattr(js, "sweep", functools.partial(simulation.sweep, kernel=request.param))
    return request.param


# --------------------------------------------------------------------------- payoffs


def test_reference_payoffs_match_games():
    """The NumPy payoff functions used as the reference's games are the jaxstage games."""
    rng = np.random.default_rng(0)
    for d in rng.dirichlet(np.ones(K), size=5):
        params = {"base": jnp.array([0.5, -1.0, 2.0]), "slope": jnp.array([1.0, 2.0, 3.0])}
        got = np.asarray(LINEAR.expected_payoffs(params, jnp.asarray(d, jnp.float32)))
        want = linear_reference([0.5, -1.0, 2.0], [1.0, 2.0, 3.0])(d)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for d in rng.dirichlet(np.ones(2), size=5):
        got = np.asarray(
            ADOPTION.expected_payoffs(ADOPTION.default_params(), jnp.asarray(d, jnp.float32))
        )
        np.testing.assert_allclose(got, adoption_reference()(d), rtol=1e-5, atol=1e-6)
    assert ADOPTION_TYPES.tolist() == [0, 0, 1, 1, 1, 1, 2, 2]


# --------------------------------------------------------------------------- info="none"

X0 = np.array([0, 0, 0, 1, 1, 1, 2, 2])  # counts (3, 3, 2)

NONE_CASES = [
    Case("explore and noise", runs=160),
    Case("inertia", update_prob=0.4, runs=100),
    # No exploration, no noise: an agent only ever observes its own action, so it keeps it.
    Case("no exploration", explore_prob=0.0, noise_std=0.0, stage_length=3, runs=8),
    # Equal payoffs (slope 0), always exploring, tau = 2 (see test_none_sweep for the math).
    Case("ties", explore_prob=1.0, noise_std=0.0, stage_length=2, slope=(0.0,) * 3, runs=120),
]


def test_none_sweep_agrees_with_reference():
    """info="none": exploration, payoff noise, inertia and ties, all rows in one sweep."""
    learner = js.StageLearning(stage_length=4, explore_prob=0.3)
    rows = [case for case in NONE_CASES for _ in range(case.runs)]
    result = js.sweep(
        LINEAR,
        learner,
        N_AGENTS,
        1,
        seeds=list(range(len(rows))),
        game_params=[case.game_params() for case in rows],
        explore_prob=[case.explore_prob for case in rows],
        update_prob=[case.update_prob for case in rows],
        stage_length=[case.stage_length for case in rows],
        initial=X0,
    )
    assert len(result) == len(rows)
    initial_share = np.bincount(X0, minlength=K) / N_AGENTS
    np.testing.assert_allclose(
        result.stack("distribution")[:, 0], initial_share[None].repeat(len(rows), 0)
    )
    dist = result.stack("distribution")[:, 1]  # (rows, k) after the stage
    switched = result.stack("switched_fraction")[:, 0]
    index = np.array([NONE_CASES.index(case) for case in rows])

    for number, case in enumerate(NONE_CASES):
        rows_of_case = index == number
        jax_features = {f"d[{j}]": dist[rows_of_case, j] for j in range(K)}
        jax_features["switched"] = switched[rows_of_case]
        ref_features = features(run_reference(case, X0, "none", seed=number), X0, K)
        compare(jax_features, ref_features, f"none/{case.name}")

        if case.name == "no exploration":
            np.testing.assert_array_equal(switched[rows_of_case], 0.0)
            np.testing.assert_array_equal(
                dist[rows_of_case], initial_share[None].repeat(case.runs, 0)
            )
            np.testing.assert_array_equal(ref_features["switched"], 0.0)
        if case.name == "ties":
            # Each round an agent plays a uniform action. With prob (2/3)^2 = 4/9 it never
            # tried its own action; then it moves to one of the two others, uniformly by
            # symmetry (2/9 each); otherwise its action ties for the best and it keeps it.
            # So E[switched] = 4/9 and E[d_j] = 5/9 d0_j + 2/9 (1 - d0_j). A tie-break
            # favouring the lowest index would send an agent on 0 that tried {1, 2}
            # (prob 2/9) always to 1: P(0->1) = 1/3 instead of 2/9.
            expected = 5 / 9 * initial_share + 2 / 9 * (1 - initial_share)
            for source, values in (("jax", jax_features), ("reference", ref_features)):
                assert_mean_is(values["switched"], 4 / 9, f"{source} ties: switched")
                for j in range(K):
                    assert_mean_is(values[f"d[{j}]"], expected[j], f"{source} ties: d[{j}]")
            # Also the uniform split on the reference's per-agent moves: 0->1 vs 0->2.
            assert_mean_is(ref_features["move[0->1]"], 2 / 9, "reference ties: move[0->1]")
        if case.name == "inertia":
            # Only a share update_prob of the would-be switchers switch: less than without.
            explore_rows = index == 0
            assert switched[rows_of_case].mean() < switched[explore_rows].mean()


# --------------------------------------------------------------------------- info="payoffs"

XP = np.array([0, 0, 0, 0, 0, 1, 1, 1])  # counts (5, 3, 0): action 2 unplayed at first

# No exploration, no noise, and action 2 would pay 5 but nobody plays it: the published
# averages are u_0 = -5/8 and u_1 = -2 * 3/8 = -6/8 and nothing for action 2.
PAYOFFS_EXACT = Case(
    "unplayed action", explore_prob=0.0, noise_std=0.0, base=(0.0, 0.0, 5.0), runs=6
)


def test_payoffs_exact_agrees_with_reference():
    """info="payoffs": population averages; an action nobody played is never picked."""
    for number, case in enumerate(
        [Case("explore and noise"), Case("inertia", update_prob=0.5, runs=120), PAYOFFS_EXACT]
    ):
        final = run_simulate(case, XP, "payoffs")
        reference = run_reference(case, XP, "payoffs", seed=10 + number)
        compare(features(final, XP, K), features(reference, XP, K), f"payoffs/{case.name}")
        if case is PAYOFFS_EXACT:
            # Everyone takes the best published average (action 0); nobody picks action 2.
            np.testing.assert_array_equal(final, 0)
            np.testing.assert_array_equal(reference, 0)


def test_payoffs_sampled_agrees_with_reference():
    """info="payoffs" with a sample of m = 3 agents pooled with the agent's own data."""
    m = 3
    for number, case in enumerate(
        [Case("explore and noise"), dataclasses.replace(PAYOFFS_EXACT, runs=250)]
    ):
        final = run_simulate(case, XP, "payoffs", sample_size=m)
        reference = run_reference(case, XP, "payoffs", sample_size=m, seed=20 + number)
        jax_features, ref_features = features(final, XP, K), features(reference, XP, K)
        compare(jax_features, ref_features, f"payoffs m={m}/{case.name}")
        if case.name == "unplayed action":
            # One sample of 3 agents (with replacement) is published to everyone. An agent
            # on 1 sees action 0's average (-5/8 > -6/8) iff the sample holds an agent on 0:
            # prob 1 - (3/8)^3. Agents on 0 keep 0, nobody picks 2 (no estimate). Hence
            # P(1->0) = 1 - 27/512 for each agent on 1, and all three move together.
            p_move = 1 - (3 / 8) ** 3
            for source, values in (("jax", jax_features), ("reference", ref_features)):
                assert_mean_is(values["move[1->0]"], p_move, f"{source} m=3: move[1->0]")
                assert_mean_is(values["switched"], 3 / 8 * p_move, f"{source} m=3: switched")
            assert set(np.unique(final[:, XP == 1].sum(axis=1))) <= {0, 3}
            np.testing.assert_array_equal(final[:, XP == 0], 0)
            assert not np.any(final == 2)


# --------------------------------------------------------------------------- info="distribution"

# Counts (3, 3, 2) and u_j = base_j - slope_j * d_j with deviation-adjusted counts.
DIST_CASES = {
    # slope (1, 2, 3): on 0 stay -3/8 > (to 1) -2*4/8, (to 2) -3*3/8: keep. On 1 stay -6/8 <
    # (to 0) -4/8: move to 0 (to 2: -9/8). On 2 stay -3*2/8 = -6/8 < (to 0) -4/8 (to 1: -1):
    # move to 0. Everyone ends on 0; switched = 5/8. Rounds (noise, exploration) play no
    # part in this mode.
    "deterministic": (Case("deterministic", runs=30), [1.0, 0.0, 0.0], 5 / 8),
    # slope 1, base (0, 0, -1): on 2 stay -1 - 2/8 < (to 0) -4/8 = (to 1) -4/8: a tie, broken
    # uniformly, so E[d] = ((3 + 1)/8, (3 + 1)/8, 0); agents on 0 and 1 keep (-3/8 > -4/8).
    "ties": (
        Case("ties", slope=(1.0, 1.0, 1.0), base=(0.0, 0.0, -1.0), runs=150),
        [0.5, 0.5, 0.0],
        2 / 8,
    ),
    # slope 1, base 0: on 0 stay -3/8, (to 1) -4/8, (to 2) -3/8: a tie with the own action,
    # so keep; likewise on 1; on 2 stay -2/8 > -4/8. Nobody moves. (Without the deviation
    # adjustment, action 2 would look like -2/8 > -3/8 and all six agents on 0 and 1 would
    # move to 2.)
    "balanced": (Case("balanced", slope=(1.0, 1.0, 1.0), runs=10), [3 / 8, 3 / 8, 2 / 8], 0.0),
    # As "deterministic" with inertia 1/2: E[d_0] = (3 + 5/2)/8, E[d_1] = 1.5/8, E[d_2] = 1/8.
    "inertia": (
        Case("inertia", update_prob=0.5, runs=150),
        [5.5 / 8, 1.5 / 8, 1.0 / 8],
        5 / 16,
    ),
}


def test_distribution_exact_agrees_with_reference_and_hand():
    for number, (case, expected, switched) in enumerate(DIST_CASES.values()):
        final = run_simulate(case, X0, "distribution")
        reference = run_reference(case, X0, "distribution", seed=30 + number)
        jax_features, ref_features = features(final, X0, K), features(reference, X0, K)
        compare(jax_features, ref_features, f"distribution/{case.name}")
        for source, values in (("jax", jax_features), ("reference", ref_features)):
            assert_mean_is(values["switched"], switched, f"{source} {case.name}: switched")
            for j in range(K):
                assert_mean_is(values[f"d[{j}]"], expected[j], f"{source} {case.name}: d[{j}]")
        if case.name == "ties":
            # both tie options are used: not a deterministic argmax
            moved = final[:, X0 == 2].ravel()
            assert 0.35 < np.mean(moved == 0) < 0.65


def test_distribution_sampled_agrees_with_reference():
    """d_hat from a sample of m = 4 agents (with replacement): random best replies."""
    m = 4
    case = Case("sample", runs=250)
    final = run_simulate(case, X0, "distribution", sample_size=m)
    reference = run_reference(case, X0, "distribution", sample_size=m, seed=40)
    jax_features = features(final, X0, K)
    compare(jax_features, features(reference, X0, K), f"distribution m={m}")
    # The sample makes the outcome random, unlike the exact case (everyone on 0).
    assert jax_features["d[0]"].std() > 0.05


@pytest.mark.parametrize("sample_size", [None, 4], ids=["exact d", "sample m=4"])
def test_distribution_noisy_agrees_with_reference(sample_size):
    """d_hat + N(0, 0.5^2) noise, clipped at 0 (often, at this std) and renormalised."""
    case = Case("noisy", info_noise_std=0.5, runs=200)
    final = run_simulate(case, X0, "distribution", sample_size=sample_size)
    reference = run_reference(case, X0, "distribution", sample_size=sample_size, seed=50)
    compare(
        features(final, X0, K),
        features(reference, X0, K),
        f"distribution noise 0.5 m={sample_size}",
    )


# --------------------------------------------------------------------------- private


def test_private_payoff_samples_agree_with_reference_and_hand(kernel):
    """Each agent pools its own data with its own sample of m = 3 agents. In the
    "unplayed action" case an agent on 1 moves to 0 iff its sample holds an agent on 0,
    prob 1 - (3/8)^3, now independently of the other two (shared: all three together)."""
    m, case = 3, dataclasses.replace(PAYOFFS_EXACT, runs=250)
    final = run_simulate(case, XP, "payoffs", sample_size=m, sharing="private")
    reference = run_reference(case, XP, "payoffs", sample_size=m, seed=60, sharing="private")
    jax_features, ref_features = features(final, XP, K), features(reference, XP, K)
    compare(jax_features, ref_features, f"private payoffs m={m}")
    p_move = 1 - (3 / 8) ** 3
    for source, values in (("jax", jax_features), ("reference", ref_features)):
        assert_mean_is(values["move[1->0]"], p_move, f"{source} private m=3: move[1->0]")
    # Independent agents: P(one or two of the three move) = 1 - p^3 - (1 - p)^3, 0.15
    # (shared: 0, they move together).
    moved = (final[:, XP == 1] == 0).sum(axis=1)
    partly = ((moved > 0) & (moved < 3)).astype(float)
    assert_mean_is(partly, 1 - p_move**3 - (1 - p_move) ** 3, "private m=3: some move")
    np.testing.assert_array_equal(final[:, XP == 0], 0)
    assert not np.any(final == 2)


@pytest.mark.parametrize(
    "sample_size, noise", [(4, 0.0), (None, 0.5), (4, 0.5)], ids=["m=4", "noise", "m=4+noise"]
)
def test_private_distributions_agree_with_reference(kernel, sample_size, noise):
    """Every agent best-replies to its own sampled (and/or noisy) distribution: the
    multinomial draw of the kernel against m agents drawn one by one in NumPy."""
    case = Case("private", info_noise_std=noise, runs=250)
    final = run_simulate(case, X0, "distribution", sample_size=sample_size, sharing="private")
    reference = run_reference(
        case, X0, "distribution", sample_size=sample_size, seed=70, sharing="private"
    )
    jax_features = features(final, X0, K)
    compare(jax_features, features(reference, X0, K), f"private distribution m={sample_size}")
    shared = features(run_simulate(case, X0, "distribution", sample_size=sample_size), X0, K)
    # One estimate for all makes d[0] vary a lot from run to run; private estimates
    # average out over the 8 agents.
    assert jax_features["d[0]"].std() < shared["d[0]"].std()


def test_private_exact_information_is_the_shared_one(kernel):
    case = DIST_CASES["deterministic"][0]
    shared = run_simulate(case, X0, "distribution")
    private = run_simulate(case, X0, "distribution", sharing="private")
    np.testing.assert_array_equal(shared, private)


# --------------------------------------------------------------------------- types

XT = np.array([0, 1, 0, 0, 1, 1, 0, 1])  # types [0, 0, 1, 1, 1, 1, 2, 2]


def test_typed_none_agrees_with_reference():
    """Technology adoption (3 types of 2, 4, 2 agents), info="none": per-type shares."""
    case = Case("typed", noise_std=0.3, runs=250)
    params = {"noise_std": case.noise_std}
    final = run_simulate(case, XT, "none", game=ADOPTION, game_params=params)
    reference = run_reference(
        case, XT, "none", payoff=adoption_reference(), types=ADOPTION_TYPES, seed=60, k=2
    )
    compare(
        features(final, XT, 2, ADOPTION_TYPES),
        features(reference, XT, 2, ADOPTION_TYPES),
        "adoption/none",
    )
    # The per-type distribution reported by simulate is that of the final actions by type.
    learner = js.StageLearning(stage_length=4, explore_prob=0.3)
    result = js.simulate(
        ADOPTION,
        learner,
        N_AGENTS,
        1,
        seed=3,
        initial=XT,
        game_params=params,
        return_actions=True,
    )
    types = ADOPTION_TYPES
    by_type = [
        np.bincount(result.final_actions[types == t], minlength=2) / size
        for t, size in enumerate(type_counts(ADOPTION.type_shares, N_AGENTS))
    ]
    np.testing.assert_allclose(result.distribution_by_type[1], by_type)
    np.testing.assert_allclose(result.distribution_by_type[0], [[0.5, 0.5]] * 3)


@pytest.mark.parametrize(
    ("initial", "expected"),
    [
        # All keep: adopting alone gives 1/8 - theta: > 0 only for theta = 0.1 (type 0).
        ([0] * 8, [1, 1, 0, 0, 0, 0, 0, 0]),
        # Types keep/adopt/keep, d_adopt = 1/2. Type 0 keepers: 5/8 - 0.1 > 0, adopt. Type 1
        # adopters: 1/2 - 0.4 > 0, stay. Type 2 keepers: 5/8 - 0.8 < 0, keep.
        ([0, 0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]),
    ],
)
def test_typed_distribution_deterministic(initial, expected):
    """info="distribution" with types: each type best-replies with its own payoffs."""
    case = Case("typed distribution", noise_std=0.3, runs=1)
    final = run_simulate(
        case, np.array(initial), "distribution", game=ADOPTION, game_params={"noise_std": 0.3}
    )
    assert final[0].tolist() == expected
    rng = np.random.default_rng(70)
    out = ref.stage(
        rng,
        adoption_reference(),
        0.3,
        np.array(initial),
        ADOPTION_TYPES,
        2,
        4,
        0.3,
        info="distribution",
    )
    assert out["stage_actions"].tolist() == expected
