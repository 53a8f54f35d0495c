"""The stage-end decision rule against a NumPy transcription of MODEL.md's tie rule."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.decisions import choose_candidates, choose_shared_candidates


def numpy_candidates(uniforms, estimates, current):
    """Per agent: keep the current action if it ties for the best, else the
    ``floor(u * m)``-th of the ``m`` best actions in increasing order."""
    out = np.empty_like(current)
    for i in range(current.size):
        column = estimates[:, i]
        best = np.flatnonzero(column == column.max())
        if current[i] in best:
            out[i] = current[i]
        else:
            out[i] = best[int(np.floor(np.float32(uniforms[i]) * np.float32(best.size)))]
    return out


def random_case(rng, k, cells, n):
    # Few distinct values (and -inf, an action never observed): ties are common.
    values = np.array([-np.inf, 0.0, 0.5, 1.0], np.float32)
    cell_estimates = values[rng.integers(0, 4, size=(cells, k))]
    if cells > 1:
        cell_estimates[0] = -np.inf  # a cell where nothing was observed: every action ties
    # The last cell: the first half of the actions ties for the best, above the rest.
    cell_estimates[-1, : k // 2] = 1.0
    cell_estimates[-1, k // 2 :] = np.minimum(cell_estimates[-1, k // 2 :], 0.5)
    cell = rng.integers(0, cells, size=n).astype(np.int32)
    current = rng.integers(0, k, size=n).astype(np.int32)
    uniforms = rng.random(n, dtype=np.float32)
    return uniforms, cell_estimates, cell, current


@pytest.mark.parametrize(
    "k, cells", [(2, 1), (3, 6), (8, 1), (8, 24), (32, 4), (33, 3), (200, 2), (1024, 2)]
)
def test_shared_and_per_agent_candidates_follow_the_tie_rule(k, cells):
    rng = np.random.default_rng(k * 100 + cells)
    uniforms, cell_estimates, cell, current = random_case(rng, k, cells, 4000)
    per_agent = cell_estimates[cell].T  # (k, n)
    expected = numpy_candidates(uniforms, per_agent, current)
    assert np.mean(expected != current) > 0.05  # switches happen
    direct = choose_candidates(jnp.asarray(uniforms), jnp.asarray(per_agent), jnp.asarray(current))
    shared = choose_shared_candidates(
        jnp.asarray(uniforms), jnp.asarray(cell_estimates), jnp.asarray(cell), jnp.asarray(current)
    )
    np.testing.assert_array_equal(np.asarray(direct), expected)
    np.testing.assert_array_equal(np.asarray(shared), expected)


def test_ties_are_broken_uniformly_among_the_best():
    # Actions 1, 2 and 4 tie for the best of 5; an agent on action 0 draws each with
    # probability 1/3.
    n = 30_000
    estimates = np.array([[0.0, 1.0, 1.0, 0.5, 1.0]], np.float32)
    uniforms = np.random.default_rng(3).random(n, dtype=np.float32)
    zeros = jnp.zeros(n, jnp.int32)
    drawn = np.asarray(
        choose_shared_candidates(jnp.asarray(uniforms), jnp.asarray(estimates), zeros, zeros)
    )
    shares = np.bincount(drawn, minlength=5) / n
    np.testing.assert_allclose(shares, [0, 1 / 3, 1 / 3, 0, 1 / 3], atol=0.015)
