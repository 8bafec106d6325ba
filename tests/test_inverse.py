"""The inverse of a given relationship matrix: equal to the dense inverse, sparse for a
pedigree A written parents first, LAPACK for everything else, errors for singular matrices."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_animal.linalg.inverse import inverse_and_logdet
from bayes_animal.linalg.ldl import NotPositiveDefinite
from bayes_animal.simulate import simulate_pedigree
from bayes_animal.structures.additive import dense_relationship, inverse_relationship
from bayes_animal.structures.pedigree import read_pedigree


def _pedigree_a(seed: int, *, selfing: bool = False):
    table = simulate_pedigree(
        n_founders=40, n_generations=3, n_per_generation=60, n_sires=8, seed=seed
    )
    pedigree = read_pedigree(table)
    return pedigree, dense_relationship(pedigree).matrix


def _assert_inverse(result, matrix):
    dense = result.inverse.toarray()
    np.testing.assert_allclose(dense, np.linalg.inv(matrix), atol=1e-10)
    assert result.logdet == pytest.approx(np.linalg.slogdet(matrix)[1], rel=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pedigree_a_parents_first_takes_the_sparse_route_and_equals_the_dense_inverse(seed):
    pedigree, matrix = _pedigree_a(seed)
    result = inverse_and_logdet(matrix)
    assert result.route == "sparse"
    _assert_inverse(result, matrix)
    # as sparse as Henderson's A⁻¹ from the pedigree itself
    henderson = inverse_relationship(pedigree)
    assert result.inverse.nnz == (abs(henderson) > 1e-12).sum()


def test_a_shuffled_order_or_a_dense_matrix_takes_the_dense_route_with_the_same_answer():
    _, matrix = _pedigree_a(4)
    order = np.random.default_rng(0).permutation(len(matrix))
    shuffled = matrix[np.ix_(order, order)]
    result = inverse_and_logdet(shuffled)
    assert result.route == "dense"  # offspring before parents: L fills in, its budget runs out
    _assert_inverse(result, shuffled)
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 3, size=(300, 80)).astype(float)
    codes -= codes.mean(axis=0)
    genomic = codes @ codes.T / 300 + 0.05 * np.eye(300)
    result = inverse_and_logdet(genomic)
    assert result.route == "dense" and result.density == 1.0
    _assert_inverse(result, genomic)


def test_not_positive_definite_is_reported_on_both_routes():
    _, matrix = _pedigree_a(5)
    singular = matrix.copy()
    singular[:, -1] = singular[:, -2]  # the last animal a clone of the one before it
    singular[-1, :] = singular[-2, :]
    with pytest.raises(NotPositiveDefinite):
        inverse_and_logdet(singular)
    with pytest.raises(NotPositiveDefinite):
        inverse_and_logdet(np.ones((50, 50)))  # dense and singular


def test_the_check_rejects_a_wrong_sparse_inverse(monkeypatch):
    """A sparse inverse that does not invert K (here: one entry of L⁻¹ lost) fails the check
    and the dense route answers."""
    import bayes_animal.linalg.inverse as module

    _, matrix = _pedigree_a(6)
    original = module._unit_lower_inverse

    def lossy(n, Rp, Rj, Rx, tolerance, budget):
        Xp, Xj, Xx, ok = original(n, Rp, Rj, Rx, tolerance, budget)
        Xx = Xx.copy()
        Xx[np.flatnonzero(Xx < 0)[0]] = 0.0  # a parent's −½ dropped
        return Xp, Xj, Xx, ok

    monkeypatch.setattr(module, "_unit_lower_inverse", lossy)
    assert module._triangular_route(matrix, module._lower_triangle(matrix)) is None
    result = inverse_and_logdet(matrix)
    assert result.route == "dense"
    _assert_inverse(result, matrix)
