"""The restricted likelihood as a PyTensor Op: value and gradient against the dense formula and
finite differences, −∞ outside the parameter space, one evaluation per value-and-gradient."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bayes_animal.api import model_inputs
from bayes_animal.linalg.mme import MixedModelEquations
from bayes_animal.spec.parameters import Parameters

pytensor = pytest.importorskip("pytensor")


@pytest.fixture(scope="module")
def mme():
    from test_mme import _small_pedigree_data

    table, data = _small_pedigree_data(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = model_inputs(
            "y ~ 1 + x + (1 | dam) + ide(animal)",
            data,
            pedigree=table,
            maternal="dam",
            maternal_covariance=True,
        )
    return MixedModelEquations(
        inputs.design, inputs.structures(), Parameters.from_spec(inputs.design.spec)
    )


def test_gradient_equals_finite_differences(mme):
    import pytensor.tensor as pt

    from bayes_animal.bayes.op import RestrictedLikelihood

    op = RestrictedLikelihood(mme)
    theta = pt.dvector("theta")
    value = op(theta)[0]
    f = pytensor.function([theta], [value, pytensor.grad(value, theta)])
    assert mme.parameters.names == (
        "additive", "maternal", "additive:maternal", "dam", "pe", "residual"
    )  # fmt: skip
    point = np.array([1.2, 0.7, -0.3, 0.4, 0.6, 2.1])
    v, g = f(point)
    assert v == pytest.approx(mme.evaluate(point, score=False).loglik, rel=1e-12)
    for k in range(len(point)):
        h = 1e-6 * max(1.0, abs(point[k]))
        up, down = point.copy(), point.copy()
        up[k] += h
        down[k] -= h
        numeric = (f(up)[0] - f(down)[0]) / (2 * h)
        assert g[k] == pytest.approx(numeric, rel=1e-5, abs=1e-6), mme.parameters.names[k]
    # one evaluation for the value and the gradient together (PyTensor merges the two outputs)
    op.calls = 0
    f(point)
    assert op.calls == 1


def test_outside_the_parameter_space_is_minus_infinity(mme):
    from bayes_animal.bayes.op import RestrictedLikelihood

    op = RestrictedLikelihood(mme)
    for bad in ([1.2, 0.7, -1.0, 0.4, 0.6, 2.1], [1.2, 0.7, 0.0, -0.4, 0.6, 2.1]):
        value, gradient = op.value_and_gradient(np.array(bad))  # |r| > 1; a negative variance
        assert value == -np.inf and not gradient.any()


def test_numba_backend_calls_the_op_by_key_not_by_its_pickled_state(mme):
    """PyMC compiles with numba. An Op without a numba implementation runs in object mode with
    the Op pickled into the compiled code, and numba copies those bytes on every call (a given
    1 900-animal matrix: 59 MB, 20 ms of system time a gradient). The registered implementation
    embeds a key: the compiled function issues no object-mode warning, gives the Op's value and
    gradient, and an Op unpickled in a worker is found under a key of its own."""
    import pickle

    import pytensor.tensor as pt

    from bayes_animal.bayes.op import _LIVE, RestrictedLikelihood

    op = RestrictedLikelihood(mme)
    theta = pt.dvector("theta")
    value = op(theta)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "Numba will use object mode ..."
        f = pytensor.function([theta], [value, pytensor.grad(value, theta)], mode="NUMBA")
    point = np.array([1.2, 0.7, -0.3, 0.4, 0.6, 2.1])
    v, g = f(point)
    expected_value, expected_gradient = op.value_and_gradient(point)
    assert v == pytest.approx(expected_value, rel=1e-12)
    np.testing.assert_allclose(g, expected_gradient, rtol=1e-12)
    copy = pickle.loads(pickle.dumps(op))
    assert copy.key != op.key and _LIVE[copy.key] is copy
    assert copy.value_and_gradient(point)[0] == pytest.approx(expected_value, rel=1e-12)
