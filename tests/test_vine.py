"""The canonical partial correlations (spec.vine): the map, its inverse and its derivative;
the LKJ densities built on them are tested in test_density.py."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_animal.spec.vine import vine_correlation, vine_jacobian, vine_partial_correlations


@pytest.mark.parametrize("d", [2, 3, 4])
def test_vine_partial_correlations_round_trip_and_their_derivative(d):
    """Partial correlations of a random correlation matrix give it back, and the derivative
    of the map equals central differences."""
    rng = np.random.default_rng(d)
    root = rng.standard_normal((d, d + 2))
    covariance = root @ root.T
    scale = 1 / np.sqrt(np.diag(covariance))
    R = covariance * scale[:, None] * scale[None, :]
    z = vine_partial_correlations(R)
    np.testing.assert_allclose(np.array(vine_correlation(z, d), dtype=float), R, atol=1e-12)
    value, derivative = vine_jacobian(z, d)
    np.testing.assert_allclose(value, R, atol=1e-12)
    for key in z:
        h = 1e-6
        up, down = dict(z), dict(z)
        up[key] += h
        down[key] -= h
        numeric = (np.array(vine_correlation(up, d)) - np.array(vine_correlation(down, d))) / (
            2 * h
        )
        np.testing.assert_allclose(derivative[key], numeric, atol=1e-7)
