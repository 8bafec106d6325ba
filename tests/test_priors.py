"""Priors: per-component priors, presets, printing, replacement, the correlated pair, errors."""

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
    InverseWishart,
    LKJCorrelation,
    NormalFixed,
    PriorError,
    Priors,
    as_priors,
    data_scales,
)
from bayes_animal.spec.parameters import Parameters
from bayes_animal.spec.terms import specify

ONE = Parameters.from_spec(specify("y ~ 1"))
FOUR = Parameters.from_spec(specify("y ~ 1 + (1 | byear) + (1 | mother)"))
PAIR = Parameters.from_spec(
    specify("y ~ 1", animal="calf", maternal="dam", maternal_covariance=True)
)


def test_presets_and_unknown_name_lists_valid_ones():
    assert as_priors(None) == Priors()
    assert as_priors("flat").all_flat(FOUR)
    assert not as_priors("default").all_flat(FOUR)
    assert isinstance(as_priors("inverse_gamma").component("mother"), InverseGamma)
    assert isinstance(as_priors("inverse_gamma").correlation, InverseWishart)
    assert as_priors("beta_h2").h2 == BetaH2()
    with pytest.raises(PriorError, match="Unknown prior 'gamma'.*beta_h2, default, flat"):
        as_priors("gamma")
    with pytest.raises(PriorError, match="Priors object or a name"):
        as_priors(3)


def test_priors_print_per_component_with_their_scales():
    text = Priors().describe(FOUR, {"additive": 1.5, "byear": 2.0, "mother": 2.0, "residual": 2.0})
    assert "additive: HalfStudentT(nu=3, scale=1.5) on the SD" in text
    assert "byear: HalfStudentT(nu=3, scale=2) on the SD" in text
    assert "residual: HalfStudentT(nu=3, scale=2) on the SD" in text
    assert "fixed effects: flat" in text
    assert "from the data" in str(Priors())
    assert "InverseGamma(V=1, nu=0.002)" in str(PRESETS["inverse_gamma"])
    assert "Normal(0, 10²)" in str(Priors(fixed=NormalFixed(10)))
    pair = Priors().describe(PAIR)
    assert "additive:maternal: LKJ(eta=2) on the correlation" in pair
    iw = PRESETS["inverse_gamma"].describe(PAIR)
    assert "additive: (in the inverse-Wishart block)" in iw
    assert "InverseWishart(V=[[1.0, 0.0], [0.0, 1.0]], nu=1.002)" in iw
    assert "Beta(a=1, b=1) on h2" in PRESETS["beta_h2"].describe(ONE)


def test_replace_one_component():
    priors = Priors(components={"mother": InverseGamma(V=2, nu=1)})
    assert priors.component("mother") == InverseGamma(V=2, nu=1)
    assert priors.component("byear") == HalfStudentT()
    changed = dataclasses.replace(priors, default=FlatVariance())
    assert changed.component("byear") == FlatVariance()
    assert changed.component("mother") == InverseGamma(V=2, nu=1)
    assert dataclasses.replace(priors, correlation=LKJCorrelation(4.0)).correlation.eta == 4.0


def test_bad_priors_are_errors():
    with pytest.raises(PriorError, match="prior of 'mother' must be"):
        Priors(components={"mother": "half_t"})
    with pytest.raises(PriorError, match="h2= must be a BetaH2"):
        Priors(h2=HalfStudentT())
    with pytest.raises(PriorError, match="fixed= must be 'flat'"):
        Priors(fixed="normal")
    with pytest.raises(PriorError, match="correlation= must be"):
        Priors(correlation=HalfStudentT())
    with pytest.raises(PriorError, match=r"\['cage'\].*components are additive, byear"):
        Priors(components={"cage": HalfStudentT()}).check(FOUR)
    with pytest.raises(PriorError, match="for models with one random effect"):
        PRESETS["beta_h2"].check(FOUR)
    PRESETS["beta_h2"].check(ONE)


def test_data_scales_use_residual_sd_and_each_mean_diagonal():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(500), rng.standard_normal(500)])
    y = X @ [3.0, 5.0] + rng.normal(0, 2.0, 500)
    scales = data_scales(y, X, {"additive": 4.0, "byear": 1.0})
    assert scales["residual"] == pytest.approx(2.0, rel=0.1)  # not inflated by the covariate
    assert scales["additive"] == pytest.approx(scales["residual"] / 2.0)
    assert scales["byear"] == pytest.approx(scales["residual"])


def test_inverse_gamma_is_mcmcglmm_parameterisation():
    import pymc as pm

    with pm.Model():
        variance = InverseGamma(V=2.0, nu=4.0).variance("u", 1.0)
    assert pm.draw(variance, 4000, random_seed=1).mean() == pytest.approx(
        2.0 * 4 / 2 / (2 - 1), rel=0.15
    )


def test_lkj_correlation_and_inverse_wishart_densities():
    """The correlation of a pair under LKJ(η) has density ∝ (1 − r²)^(η−1); the inverse-Wishart
    block's log density equals scipy's invwishart up to a constant."""
    import pymc as pm
    from scipy.stats import invwishart

    from bayes_animal.bayes.priors import add_parameters

    with pm.Model():
        _, values = add_parameters(Priors(correlation=LKJCorrelation(3.0)), PAIR, _scales())
        r = values["additive:maternal"] / pm.math.sqrt(values["additive"] * values["maternal"])
        draws = pm.draw(r, 20_000, random_seed=2)
    # LKJ(3) for 2×2: (r + 1)/2 ~ Beta(3, 3): variance 1/(2η + 1) = 1/7
    assert np.var(draws) == pytest.approx(1 / 7, rel=0.05)
    prior = InverseWishart(V=((2.0, 0.3), (0.3, 1.0)), nu=4.0)
    from bayes_animal.bayes.priors import _log_inverse_wishart

    psi = prior.nu * np.asarray(prior.V)
    G1, G2 = np.array([[1.5, 0.2], [0.2, 0.8]]), np.array([[3.0, -0.5], [-0.5, 2.0]])
    ours = [float(_log_inverse_wishart(G, prior).eval()) for G in (G1, G2)]
    scipy = [invwishart(df=prior.nu, scale=psi).logpdf(G) for G in (G1, G2)]
    assert ours[0] - ours[1] == pytest.approx(scipy[0] - scipy[1], rel=1e-10)


def _scales():
    return {"additive": 1.0, "maternal": 1.0, "residual": 1.0, "total": 1.0}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: InverseGamma(V=-1, nu=0.002), r"InverseGamma: V must be a finite number > 0"),
        (lambda: InverseGamma(V=1, nu=0), r"InverseGamma: nu must be .* got 0"),
        (lambda: InverseGamma(V=float("nan")), r"InverseGamma: V .* got nan"),
        (lambda: HalfStudentT(nu=-3), r"HalfStudentT: nu must be .* got -3"),
        (lambda: HalfStudentT(scale=0.0), r"HalfStudentT: scale must be .* got 0.0"),
        (lambda: HalfStudentT(nu="three"), r"HalfStudentT: nu .* got 'three'"),
        (lambda: LKJCorrelation(eta=0), r"LKJCorrelation: eta must be"),
        (lambda: InverseWishart(nu=1.0), r"InverseWishart: nu must be > 1"),
        (lambda: InverseWishart(V=((1, 2), (2, 1))), r"V must be positive definite"),
        (lambda: InverseWishart(V=((1, 0.5), (0, 1))), r"V must be a symmetric 2×2"),
        (lambda: BetaH2(a=0), r"BetaH2: a must be"),
        (lambda: NormalFixed(scale=-1), r"NormalFixed: scale must be"),
    ],
)
def test_a_prior_with_an_impossible_parameter_is_an_error_where_it_is_made(make, message):
    """Each prior checks its parameters when it is made (the bad value, the parameter and the
    prior named), not in fit() as a 'math domain error'."""
    with pytest.raises(PriorError, match=message):
        make()


def test_a_vague_inverse_gamma_says_next_to_its_name_that_it_makes_divergences_likely():
    """MCMCglmm's nu = 0.002 piles density near 0 (README: 201 divergences on gryphonRM);
    an informative inverse-gamma (nu ≥ 1) has no such wall and says nothing."""
    assert "divergences likely" in InverseGamma(V=1, nu=0.002).describe()
    assert "divergences" not in InverseGamma(V=2, nu=4).describe()
