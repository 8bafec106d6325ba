"""The pedigree recursion Op: u = T D^½ z and its adjoint equal the dense factor L = T D^½ of A
and Lᵀ, in the user's order of levels, in Python and compiled by numba (as nutpie and PyMC
compile it), with a gradient equal to the PyTensor recursion it replaces."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytensor = pytest.importorskip("pytensor")

from bayes_animal.simulate import simulate_pedigree  # noqa: E402
from bayes_animal.structures.additive import dense_relationship, mendelian_sampling  # noqa: E402
from bayes_animal.structures.covariance import PedigreeStructure  # noqa: E402
from bayes_animal.structures.pedigree import read_pedigree  # noqa: E402


@pytest.fixture(scope="module")
def structure():
    """A shuffled, inbred pedigree with unknown dams and parents without rows."""
    table = simulate_pedigree(
        n_founders=10, n_generations=5, n_per_generation=25, n_sires=3, unknown_dam=0.2, seed=2
    )
    table = table.iloc[6:].sample(frac=1.0, random_state=1).reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pedigree = read_pedigree(table)
    structure = PedigreeStructure(pedigree, mendelian_sampling(pedigree))
    assert structure.sampling.inbreeding.max() > 0
    return structure


def _dense_factor(structure) -> np.ndarray:
    """L with L Lᵀ = A in the user's order: the Cholesky factor in parents-first order,
    permuted."""
    ped = structure.pedigree
    chol = np.linalg.cholesky(dense_relationship(ped, user_order=False).matrix)
    order = structure.order
    return chol[np.ix_(order, order)]


@pytest.mark.parametrize("mode", ["FAST_COMPILE", "NUMBA"])
def test_forward_and_adjoint_equal_the_dense_factor(structure, mode):
    import pytensor.tensor as pt

    from bayes_animal.bayes.recursion import pedigree_transform

    z = pt.dvector("z")
    g = pt.dvector("g")
    u = pedigree_transform(structure, z)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no object-mode fallback under numba
        forward = pytensor.function([z], u, mode=mode)
        adjoint = pytensor.function([z, g], pytensor.grad(pt.dot(g, u), z), mode=mode)
    L = _dense_factor(structure)
    rng = np.random.default_rng(4)
    for _ in range(3):
        zv, gv = rng.standard_normal((2, structure.size))
        np.testing.assert_allclose(forward(zv), L @ zv, atol=1e-12)
        np.testing.assert_allclose(adjoint(zv, gv), L.T @ gv, atol=1e-12)
    # L Lᵀ = A: the covariance of u is A
    np.testing.assert_allclose(L @ L.T, structure.dense().matrix, atol=1e-12)


def test_gradient_equals_the_pytensor_recursion(structure):
    import pytensor.tensor as pt

    from bayes_animal.bayes.likelihoods import pedigree_factor
    from bayes_animal.bayes.recursion import pedigree_transform

    z = pt.dvector("z")
    weights = np.random.default_rng(5).standard_normal(structure.size)
    outputs = []
    for transform in (pedigree_transform, pedigree_factor):
        loss = pt.sum(pt.sin(transform(structure, z)) * weights)
        outputs += [loss, pytensor.grad(loss, z)]
    f = pytensor.function([z], outputs, mode="NUMBA")
    value, gradient, reference_value, reference_gradient = f(
        np.random.default_rng(6).standard_normal(structure.size)
    )
    assert value == pytest.approx(reference_value, rel=1e-12)
    np.testing.assert_allclose(gradient, reference_gradient, atol=1e-12)
