"""Priors: presets, printing, replacement per component, errors that list the valid names."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bayes_animal.bayes.priors import (
    PRESETS,
    BetaH2,
    FlatVariance,
    HalfStudentT,
    InverseGamma,
    NormalFixed,
    PriorError,
    Priors,
    as_priors,
    data_scales,
)


def test_presets_and_unknown_name_lists_valid_ones():
    assert as_priors(None) == Priors()
    assert as_priors("flat").all_flat
    assert isinstance(as_priors("inverse_gamma").genetic, InverseGamma)
    assert as_priors("beta_h2").h2 == BetaH2()
    with pytest.raises(PriorError, match="Unknown prior 'gamma'.*beta_h2, default, flat"):
        as_priors("gamma")
    with pytest.raises(PriorError, match="Priors object or a name"):
        as_priors(3)


def test_priors_print_with_their_scales():
    text = Priors().describe({"genetic": 1.5, "residual": 2.0})
    assert "sigma2_u: HalfStudentT(nu=3, scale=1.5) on the SD" in text
    assert "sigma2_e: HalfStudentT(nu=3, scale=2) on the SD" in text
    assert "fixed effects: flat" in text
    assert "from the data" in str(Priors())
    assert "InverseGamma(V=1, nu=0.002)" in str(PRESETS["inverse_gamma"])
    assert "Beta(a=1, b=1) on h2" in str(PRESETS["beta_h2"])
    assert "Normal(0, 10²)" in str(Priors(fixed=NormalFixed(10)))


def test_replace_one_component():
    priors = dataclasses.replace(Priors(), genetic=InverseGamma(V=2, nu=1))
    assert priors.genetic == InverseGamma(V=2, nu=1)
    assert priors.residual == HalfStudentT()
    assert not priors.all_flat
    assert Priors(genetic=FlatVariance(), residual=FlatVariance()).all_flat


def test_bad_components_are_errors():
    with pytest.raises(PriorError, match="genetic= must be"):
        Priors(genetic="half_t")
    with pytest.raises(PriorError, match="h2= must be a BetaH2"):
        Priors(h2=HalfStudentT())
    with pytest.raises(PriorError, match="fixed= must be 'flat'"):
        Priors(fixed="normal")


def test_data_scales_use_residual_sd_and_mean_diagonal():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(500), rng.standard_normal(500)])
    y = X @ [3.0, 5.0] + rng.normal(0, 2.0, 500)
    scales = data_scales(y, X, mean_diagonal=4.0)
    assert scales["residual"] == pytest.approx(2.0, rel=0.1)  # not inflated by the covariate
    assert scales["genetic"] == pytest.approx(scales["residual"] / 2.0)


def test_inverse_gamma_is_mcmcglmm_parameterisation():
    import pymc as pm

    with pm.Model():
        variance = InverseGamma(V=2.0, nu=4.0).variance("u", 1.0)
    assert pm.draw(variance, 4000, random_seed=1).mean() == pytest.approx(
        2.0 * 4 / 2 / (2 - 1), rel=0.15
    )
