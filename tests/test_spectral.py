"""The one eigendecomposition of K = Z A Zᵀ: reconstruction, rotation, threads, PSD check."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_problem

from bayes_animal import RelationshipError, RelationshipMatrix, build_design, decompose


def test_decomposition_reconstructs_k_and_rotates_data():
    data, relmat = small_problem(4)
    design = build_design("y ~ 1 + x", data, relationship=relmat)
    problem = decompose(design, relmat)
    Z = design.effects[0].incidence().toarray()
    K = Z @ relmat.matrix @ Z.T
    U, d = problem.eigenvectors, problem.eigenvalues
    np.testing.assert_allclose((U * d) @ U.T, K, atol=1e-10)
    np.testing.assert_allclose(problem.y_rot, U.T @ design.y)
    np.testing.assert_allclose(problem.X_rot, U.T @ design.X)
    assert np.all(d >= 0) and np.all(np.diff(d) >= 0)
    # repeated records make K singular: n − (phenotyped animals) zero eigenvalues
    assert np.sum(d < 1e-9) >= design.n_records - len(np.unique(design.effects[0].index))
    assert problem.logdet_xtx == pytest.approx(np.linalg.slogdet(design.X.T @ design.X)[1])


def test_small_positive_eigenvalues_are_kept():
    q = 5
    values = np.array([1e-7, 0.5, 1, 2, 3])
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((q, q)))
    matrix = (basis * values) @ basis.T
    relmat = RelationshipMatrix(ids=np.array(list("abcde"), dtype=object), matrix=matrix)
    import pandas as pd

    data = pd.DataFrame({"animal": list("abcde"), "y": rng.standard_normal(q)})
    problem = decompose(build_design("y ~ 1", data, relationship=relmat), relmat)
    assert problem.eigenvalues[0] == pytest.approx(1e-7, rel=1e-4)


def test_negative_spectrum_is_an_error():
    import pandas as pd

    matrix = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.9], [0.0, 0.9, 1.0]])
    relmat = RelationshipMatrix(ids=np.array(list("abc"), dtype=object), matrix=matrix)
    data = pd.DataFrame({"animal": list("abc"), "y": [1.0, 2.0, 0.5]})
    design = build_design("y ~ 1", data, relationship=relmat)
    with pytest.raises(RelationshipError, match="negative eigenvalue"):
        decompose(design, relmat)


def _singular_relationship(q: int, m: int, seed: int) -> np.ndarray:
    """A = MᵀM/m from fewer markers than animals: PSD with rank m < q."""
    codes = np.random.default_rng(seed).integers(0, 3, size=(m, q)).astype(float)
    return codes.T @ codes / m


def test_a_matrix_accepted_at_input_is_never_refused_by_the_decomposition():
    """One PSD rule: a tiny negative eigenvalue within the input tolerance is accepted by
    as_relationship and then by decompose, even with many records per animal."""
    import pandas as pd

    from bayes_animal import as_relationship
    from bayes_animal.structures.relationship import psd_tolerance

    q = 40
    matrix = _singular_relationship(q, 10, 0)
    values, vectors = np.linalg.eigh(matrix)
    tolerance = psd_tolerance(q, np.diag(matrix))
    values[0] = -0.9 * tolerance  # inside the rule, far beyond eigh's own round-off
    matrix = (vectors * values) @ vectors.T
    matrix = (matrix + matrix.T) / 2
    ids = [f"a{i}" for i in range(q)]
    relmat = as_relationship(matrix, ids=ids)
    assert relmat.min_eigenvalue < 0
    data = pd.DataFrame({"animal": np.repeat(ids, 5), "y": np.arange(5.0 * q) % 7})
    problem = decompose(build_design("y ~ 1", data, relationship=relmat), relmat)
    assert problem.eigenvalues.min() >= 0
    # and one beyond the rule is refused at input
    values[0] = -2 * tolerance
    bad = (vectors * values) @ vectors.T
    with pytest.raises(RelationshipError, match="not positive semi-definite"):
        as_relationship((bad + bad.T) / 2, ids=ids)
