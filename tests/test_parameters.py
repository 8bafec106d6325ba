"""Variance parameters: G0 blocks, validity, proportions and their delta-method SEs."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_animal.spec.parameters import Parameters
from bayes_animal.spec.terms import specify


@pytest.fixture
def maternal():
    spec = specify("y ~ 1 + ide(calf)", animal="calf", maternal="dam", maternal_covariance=True)
    return Parameters.from_spec(spec)


def test_layout_and_g0(maternal):
    assert maternal.names == ("additive", "maternal", "additive:maternal", "pe", "residual")
    theta = np.array([3.0, 2.0, -0.5, 1.0, 4.0])
    np.testing.assert_array_equal(maternal.g0(theta, maternal.blocks[0]), [[3, -0.5], [-0.5, 2]])
    assert maternal.repeatability == ("additive", "pe")
    assert maternal.valid(theta)
    assert not maternal.valid(np.array([3.0, 2.0, -2.5, 1.0, 4.0]))  # |r| > 1
    assert not maternal.valid(np.array([3.0, 2.0, 0.0, -1.0, 4.0]))  # negative variance
    # Willham: σ²P = σ²A + σ²M + σAM + σ²PE + σ²E
    assert maternal.phenotypic(theta) == pytest.approx(3 + 2 - 0.5 + 1 + 4)


def test_positions_and_g0_of_every_block(maternal):
    """Each name's position in θ (looked up from a table built once), a name that is not a
    parameter an error naming it, and every block's G0 (R0) read at those positions."""
    assert [maternal.index(n) for n in maternal.names] == list(range(len(maternal.names)))
    with pytest.raises(ValueError, match="'sire' is not a parameter"):
        maternal.index("sire")
    theta = np.array([3.0, 2.0, -0.5, 1.0, 4.0])
    np.testing.assert_array_equal(maternal.g0(theta, maternal.blocks[1]), [[1.0]])
    np.testing.assert_array_equal(maternal.g0(theta, maternal.residual), [[4.0]])
    assert maternal.variances == ("additive", "maternal", "pe", "residual")
    assert not maternal.valid(np.array([3.0, 2.0, -0.5, 1.0, 0.0]))  # the residual at 0
    assert not maternal.valid(np.array([3.0, 2.0, -0.5, np.nan, 4.0]))


def test_delta_method_standard_errors_equal_finite_differences(maternal):
    """SE(f) = √(∇fᵀ Σ ∇f) with ∇f taken numerically, for every ratio."""
    theta = np.array([3.0, 2.0, -0.5, 1.0, 4.0])
    rng = np.random.default_rng(0)
    root = rng.standard_normal((5, 5)) * 0.2
    covariance = root @ root.T
    ratios = maternal.ratios(theta, covariance)
    assert set(ratios) == {
        "h2",
        "prop:maternal",
        "prop:pe",
        "prop:residual",
        "repeatability",
        "corr:additive:maternal",
    }
    for name, (_, se) in ratios.items():
        h = 1e-6
        gradient = np.array(
            [
                (
                    maternal.ratios(theta + h * e, None)[name][0]
                    - maternal.ratios(theta - h * e, None)[name][0]
                )
                / (2 * h)
                for e in np.eye(5)
            ]
        )
        assert se == pytest.approx(np.sqrt(gradient @ covariance @ gradient), rel=1e-6), name
    assert ratios["corr:additive:maternal"][0] == pytest.approx(-0.5 / np.sqrt(6))
    assert ratios["repeatability"][0] == pytest.approx(4 / 9.5)
    assert np.isnan(maternal.ratios(theta, None)["h2"][1])
