"""log Φ(x) and its derivative as numba-compiled Ops (bayes.normal_cdf), the probit families'
likelihood: values against scipy, gradients against the inverse Mills ratio and finite
differences, under both of PyTensor's backends that the samplers use."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import special, stats

from bayes_animal.bayes.likelihoods import log_ndtr
from bayes_animal.bayes.normal_cdf import LogNormalCdf, log_normal_cdf

#: Both tails, the switch at 0, the series' edge at −37 and points either side of it.
POINTS = np.concatenate(
    [np.linspace(-60.0, 40.0, 2001), [-37.0, -37.0 - 1e-9, -36.999, -1e-300, 0.0, 1e-300, 8.3]]
)


@pytest.mark.parametrize("mode", ["NUMBA", "FAST_RUN"])
def test_log_cdf_and_its_gradient_equal_scipy(mode):
    """log Φ to 1e-13 relative (scipy's log_ndtr), its gradient to the inverse Mills ratio
    φ/Φ from scipy's log densities (1e-12), through a compiled graph of either backend."""
    x = pt.dvector("x")
    value = log_normal_cdf(x)
    gradient = pytensor.grad(pt.sum(value), x)
    function = pytensor.function([x], [value, gradient], mode=mode)
    got, slope = function(POINTS)
    np.testing.assert_allclose(got, special.log_ndtr(POINTS), rtol=1e-13, atol=1e-300)
    mills = np.exp(stats.norm.logpdf(POINTS) - special.log_ndtr(POINTS))
    np.testing.assert_allclose(slope, mills, rtol=1e-12, atol=1e-300)


def test_the_second_derivative_is_that_of_the_mills_ratio():
    """d/dx (φ/Φ) = −r (x + r): the gradient of the gradient against central differences."""
    x = pt.dvector("x")
    slope = pytensor.grad(pt.sum(log_normal_cdf(x)), x)
    curvature = pytensor.grad(pt.sum(slope), x)
    points = np.linspace(-45.0, 10.0, 111)
    got = pytensor.function([x], curvature, mode="NUMBA")(points)
    mills = pytensor.function([x], slope, mode="NUMBA")
    h = 1e-5
    np.testing.assert_allclose(got, (mills(points + h) - mills(points - h)) / (2 * h), rtol=1e-6)


def test_the_likelihood_takes_the_op_for_vectors_and_refuses_nothing_else():
    """A vector goes through the compiled Op; a matrix through the PyTensor expression, with
    the same values; the Op itself takes vectors only."""
    vector, matrix = pt.dvector("v"), pt.dmatrix("m")
    assert isinstance(log_ndtr(vector).owner.op, LogNormalCdf)
    points = POINTS[::50].reshape(-1, 1)
    np.testing.assert_allclose(
        pytensor.function([matrix], log_ndtr(matrix))(points),
        special.log_ndtr(points),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="vector"):
        log_normal_cdf(matrix)


def test_the_op_has_a_jax_implementation_where_jax_is_installed():
    """numpyro samples through PyTensor's JAX backend: the Op must compile there too (before
    the Op, log Φ was built from erfc and erfcx, which JAX has). Skipped where JAX is not
    installed, as numpyro is then not either."""
    pytest.importorskip("jax")
    x = pt.dvector("x")
    value = log_normal_cdf(x)
    gradient = pytensor.grad(pt.sum(value), x)
    got, slope = pytensor.function([x], [value, gradient], mode="JAX")(POINTS)
    np.testing.assert_allclose(got, special.log_ndtr(POINTS), rtol=1e-10)
    mills = np.exp(stats.norm.logpdf(POINTS) - special.log_ndtr(POINTS))
    np.testing.assert_allclose(slope, mills, rtol=1e-10)
