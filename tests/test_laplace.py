"""The Laplace approximation of non-Gaussian models: glmer's numbers, the gradient, the draws'
importance weights, both scales of h², and every bad input.

tests/data/glmer_anchors.json holds lme4 1.1-31's glmer (nAGQ = 1, bobyqa with rhoend 1e-12)
on the data sets beside it, made by benchmarks/anchors/glmer_anchors.R; R is never a
dependency of the tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from bayes_animal import reml
from bayes_animal.design import build_design
from bayes_animal.errors import BayesAnimalError, DataError, FormulaError
from bayes_animal.linalg.laplace import LaplaceEquations
from bayes_animal.simulate import simulate_herd_pedigree, simulate_records
from bayes_animal.spec.family import Family, family_of, observed_heritability
from bayes_animal.spec.parameters import Parameters
from bayes_animal.structures.inputs import resolve_relationship

DATA = Path(__file__).parent / "data"
ANCHORS = json.loads((DATA / "glmer_anchors.json").read_text())

BINARY = "y ~ x + C(sex) + (1|group)"
CBPP = "cbind(incidence, failures) ~ C(period) + (1|herd)"
COUNTS = "y ~ x + (1|group)"
CASES = [
    ("binary_logit", BINARY, "glmm_binary", {"family": "binomial", "link": "logit"}),
    ("binary_probit", BINARY, "glmm_binary", {"family": "binomial", "link": "probit"}),
    ("cbpp_logit", CBPP, "cbpp", {"family": "binomial", "link": "logit"}),
    ("cbpp_probit", CBPP, "cbpp", {"family": "threshold"}),
    ("counts_poisson", COUNTS, "glmm_counts", {"family": "poisson", "overdispersion": "none"}),
    ("counts_overdispersed", COUNTS, "glmm_counts", {"family": "poisson"}),
]


@pytest.mark.parametrize(("key", "formula", "data", "options"), CASES, ids=[c[0] for c in CASES])
def test_ml_equals_glmer_laplace(key, formula, data, options):
    """method='ml' is glmer's nAGQ = 1 estimate: every variance and fixed effect to 1e-5
    relative, the log-likelihood (constants included) to 1e-6."""
    anchor = ANCHORS[key]
    fit = reml(formula, pd.read_csv(DATA / f"{data}.csv"), method="ml", **options)
    assert fit.converged and fit.engine == "laplace"
    ours = fit.components["variance"]
    names = {"obs": "residual"}
    for name, value in anchor["variances"].items():
        assert ours[names.get(name, name)] == pytest.approx(value, rel=1e-5), name
    assert np.allclose(fit.beta.to_numpy(), list(anchor["fixed"].values()), rtol=1e-5, atol=1e-7)
    assert fit.loglik == pytest.approx(anchor["loglik"], abs=1e-6)


def _pedigree_problem(family: str, link: str | None = None, seed: int = 5):
    ped = simulate_herd_pedigree(n_animals=1500, n_generations=4, n_herds=10, seed=seed)
    variances = {"additive": 0.6, "herd": 0.3}
    if family == "poisson":
        variances["residual"] = 0.2
    sim = simulate_records(
        ped, variances=variances, groups={"herd": 8}, mean=-0.5, seed=seed, family=family, link=link
    )
    source = resolve_relationship(pedigree=sim.pedigree[["id", "sire", "dam"]])
    design = build_design(
        "y ~ x + (1|herd)", sim.data, relationship=source, family=family, link=link
    )
    structures = {"additive": source.structure}
    return design, structures, sim


@pytest.mark.parametrize(
    ("family", "link"), [("binomial", "probit"), ("binomial", "logit"), ("poisson", None)]
)
def test_gradient_of_the_approximation_equals_central_differences(family, link):
    """The analytic gradient (selected inverse, the mode's move) against differences of the
    value, on a pedigree with a group effect."""
    design, structures, _ = _pedigree_problem(family, link)
    equations = LaplaceEquations(design, structures, Parameters.from_spec(design.spec))
    theta = np.array([0.5, 0.25, 0.3 if family == "poisson" else design.family.residual_fixed])
    _, gradient, _ = equations.value_and_gradient(theta)
    free = 3 if family == "poisson" else 2
    for k in range(free):
        step = 1e-4 * theta[k]
        up, down = theta.copy(), theta.copy()
        up[k] += step
        down[k] -= step
        numeric = (equations.log_marginal(up) - equations.log_marginal(down)) / (2 * step)
        assert gradient[k] == pytest.approx(numeric, rel=1e-5, abs=3e-6)
    if family != "poisson":
        assert gradient[2] == 0.0  # the fixed residual


def test_draws_log_weights_are_the_exact_conditional_against_the_gaussian():
    """Each draw's log-weight equals log p(x | y, θ) − log N(x; x̂, H⁻¹) up to one constant,
    both computed here from dense matrices."""
    design, structures, _ = _pedigree_problem("binomial", "probit")
    equations = LaplaceEquations(design, structures, Parameters.from_spec(design.spec))
    theta = np.array([0.5, 0.25, 1.0])
    mode = equations.mode(theta)
    noise = np.random.default_rng(1).standard_normal((equations.size, 6))
    x, log_weights = equations.draws(theta, noise, mode)
    W = equations.W.toarray()
    precision = np.zeros((equations.size, equations.size))
    a_inverse = structures["additive"].inverse().toarray()
    where_a, where_h = equations.effect_slice("additive"), equations.effect_slice("herd")
    precision[where_a, where_a] = a_inverse / theta[0]
    precision[where_h, where_h] = np.eye(where_h.stop - where_h.start) / theta[1]
    eta = W @ x
    exact = stats.norm.logcdf(np.where(design.y[:, None] == 1, eta, -eta)).sum(
        axis=0
    ) - 0.5 * np.einsum("ij,ik,kj->j", x, precision, x)
    _, w, _ = design.family.derivatives(design.y, np.ones(len(design.y)), mode.eta)
    H = W.T @ (w[:, None] * W) + precision
    centred = x - mode.x[:, None]
    gaussian = -0.5 * np.einsum("ij,ik,kj->j", centred, H, centred)
    difference = log_weights - (exact - gaussian)
    assert np.ptp(difference) < 1e-8


def test_binomial_recovers_a_known_liability_heritability():
    """A threshold trait on a pedigree: REML (Laplace) covers the true additive variance; the
    latent h² counts the residual's fixed 1."""
    _, _, sim = _pedigree_problem("binomial", "probit", seed=11)
    fit = reml("y ~ x + (1|herd)", sim.data, pedigree=sim.pedigree, family="threshold")
    row = fit.components.loc["additive"]
    assert abs(row["variance"] - 0.6) < 3.5 * row["se"]
    assert fit.components.loc["residual", "variance"] == 1.0
    assert np.isnan(fit.components.loc["residual", "se"])
    total = fit.components["variance"].sum()
    assert fit.ratios.loc["h2", "estimate"] == pytest.approx(row["variance"] / total)
    assert 0 < fit.ratios.loc["h2_observed", "estimate"] < fit.ratios.loc["h2", "estimate"]
    assert fit.to_dict()["family"] == "binomial(probit)"
    assert "fixed by the family" in fit.report()


def test_observed_scale_of_the_probit_is_dempster_lerner():
    """One mean: h²_obs = h² φ(t)² / (p(1 − p)) with the liability's total variance 1 + V."""
    v_a, v_other, mu = 0.4, 0.2, -0.8
    v_eta = v_a + v_other
    h2 = v_a / (v_eta + 1.0)
    t = mu / math.sqrt(1.0 + v_eta)
    p = stats.norm.cdf(t)
    expected = h2 * stats.norm.pdf(t) ** 2 / (p * (1 - p))
    got = observed_heritability(Family("binomial", "probit"), np.array([mu]), v_eta, v_a)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_observed_scale_of_the_logit_and_log_links_by_monte_carlo():
    """QGglmm's expectations, checked by simulation over the latent distribution."""
    rng = np.random.default_rng(3)
    mu, v_eta, v_a = np.array([-1.0, 0.5]), 0.7, 0.3
    eta = mu[None, :] + math.sqrt(v_eta) * rng.standard_normal((2_000_000, 1))
    p = special.expit(eta)
    psi = (p * (1 - p)).mean()
    p_bar = p.mean()
    expected = psi**2 * v_a / (p_bar * (1 - p_bar))
    got = float(observed_heritability(Family("binomial", "logit"), mu, v_eta, v_a))
    assert got == pytest.approx(expected, rel=2e-3)
    lam = np.exp(eta)
    v_obs = (lam**2).mean() - lam.mean() ** 2 + lam.mean()  # Var(E[y|η]) + E[Var(y|η)]
    expected = lam.mean() ** 2 * v_a / v_obs
    got = float(observed_heritability(Family("poisson", "log", True), mu, v_eta, v_a))
    assert got == pytest.approx(expected, rel=5e-3)


# -- bad input -----------------------------------------------------------------------------
def _binary_frame():
    return pd.read_csv(DATA / "glmm_binary.csv")


def test_a_binary_response_outside_0_1_names_the_rows():
    data = _binary_frame()
    data.loc[[3, 7], "y"] = 2
    with pytest.raises(DataError, match=r"must be 0 or 1.*data row\(s\) 4, 8"):
        reml("y ~ x + (1|group)", data, family="binomial")


@pytest.mark.parametrize(("value", "why"), [(-1, "count"), (2.5, "count")])
def test_a_count_outside_the_poisson_support_names_the_rows(value, why):
    data = pd.read_csv(DATA / "glmm_counts.csv").astype({"y": float})
    data.loc[5, "y"] = value
    with pytest.raises(DataError, match=rf"{why}.*data row\(s\) 6"):
        reml("y ~ x + (1|group)", data, family="poisson")


def test_successes_and_failures_are_checked():
    data = pd.read_csv(DATA / "cbpp.csv")
    data.loc[2, "failures"] = -1
    with pytest.raises(DataError, match=r"counts.*data row\(s\) 3"):
        reml("cbind(incidence, failures) ~ C(period) + (1|herd)", data, family="binomial")
    data.loc[2, ["incidence", "failures"]] = 0
    with pytest.raises(DataError, match=r"no trials"):
        reml("cbind(incidence, failures) ~ C(period) + (1|herd)", data, family="binomial")
    with pytest.raises(DataError, match=r"failures column 'fails'"):
        reml("cbind(incidence, fails) ~ C(period) + (1|herd)", data, family="binomial")


def test_a_response_with_one_outcome_is_an_error():
    data = _binary_frame()
    data["y"] = 0
    with pytest.raises(DataError, match=r"Every record.*no information"):
        reml("y ~ x + (1|group)", data, family="binomial")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"family": "negbin"}, "Unknown family"),
        ({"family": "binomial", "link": "log"}, "takes the link probit or logit"),
        ({"family": "binomial", "overdispersion": "units"}, "option of the poisson family"),
        ({"family": "poisson", "overdispersion": "some"}, "'units' or 'none'"),
    ],
)
def test_family_options_are_checked(options, message):
    with pytest.raises(FormulaError, match=message):
        family_of(**options)


def test_models_a_family_does_not_fit_are_errors():
    data = _binary_frame()
    data["z"] = data["y"]
    with pytest.raises(FormulaError, match="one trait at a time"):
        reml("cbind(y, z) ~ x + (1|group)", data, family="poisson")
    with pytest.raises(FormulaError, match="two columns"):
        reml("cbind(y, z, x) ~ 1 + (1|group)", data, family="binomial")
    with pytest.raises(BayesAnimalError, match="Laplace approximation"):
        reml("y ~ x + (1|group)", data, family="binomial", engine="spectral")


def test_a_gaussian_fit_says_its_family():
    data = _binary_frame()
    fit = reml("x ~ 1 + (1|group)", data)
    assert fit.to_dict()["family"] == "gaussian(identity)"
    assert "h2_observed" not in fit.ratios.index


# -- the ordinal family ----------------------------------------------------------------------
def test_mrode_example_15_1_threshold_solutions():
    """Mrode (4th ed.) Example 15.1: calving ease in three categories, a sire model with
    σ²s = 1/19 on the liability scale. The book's thresholds 0.4378 and 1.0675 and its
    solutions (herd 2 0.2774, female −0.3590, sires −0.0434, 0.0592, 0.0412, −0.0660; herd 1
    and male 0) are ours under the first cut-point at 0 with an intercept and female as the
    reference sex: intercept = −0.3590 − 0.4378, male = 0.3590, cut-point 2|3 = 1.0675 −
    0.4378. The book's SEs: herd 0.49, sex 0.48, sires 0.22, 0.21, 0.22, 0.22."""
    from bayes_animal import solve_mme

    data = pd.read_csv(DATA / "mrode_15_1.csv")
    sires = pd.read_csv(DATA / "mrode_15_1_sires.csv")
    solved = solve_mme(
        "calving ~ 1 + C(herd) + C(sex)", data, variances={"additive": 1 / 19}, pedigree=sires,
        animal="sire", family="ordinal", warn=False,
    )  # fmt: skip
    beta = solved.beta
    assert beta["Intercept"] == pytest.approx(-0.3590 - 0.4378, abs=2e-4)
    assert beta["C(herd)[T.2]"] == pytest.approx(0.2774, abs=1e-4)
    assert beta["C(sex)[T.M]"] == pytest.approx(0.3590, abs=1e-4)
    assert beta["cutpoint:2|3"] == pytest.approx(1.0675 - 0.4378, abs=2e-4)
    sires_blup = solved.predictions["additive"]
    assert np.allclose(sires_blup["blup"], [-0.0434, 0.0592, 0.0412, -0.0660], atol=1e-4)
    assert np.allclose(solved.beta_se[["C(herd)[T.2]", "C(sex)[T.M]"]], [0.49, 0.48], atol=0.01)
    assert np.allclose(sires_blup["sep"], [0.22, 0.21, 0.22, 0.22], atol=0.006)


def _ordinal_frame(seed: int = 1):
    ped = simulate_herd_pedigree(n_animals=2000, n_generations=4, n_herds=10, seed=seed)
    sim = simulate_records(
        ped, variances={"additive": 0.5, "herd": 0.2, "residual": 1.0}, groups={"herd": 10},
        mean=0.0, seed=seed,
    )  # fmt: skip
    data = sim.data.copy()
    data["score"] = np.digitize(data["y"], [0.0, 0.8, 1.6]) + 1  # cut-points 0, 0.8, 1.6
    return data, sim.pedigree


def test_ordinal_reml_recovers_cutpoints_slope_and_variance():
    """A liability cut at 0, 0.8 and 1.6 into four categories: the cut-points, the slope 0.5
    and σ²A 0.5 are recovered within 3.5 SE."""
    data, pedigree = _ordinal_frame()
    fit = reml("score ~ x + (1|herd)", data, pedigree=pedigree, family="ordinal", warn=False)
    assert fit.converged
    estimate, se = fit.beta, fit.beta_se
    for name, truth in [("cutpoint:2|3", 0.8), ("cutpoint:3|4", 1.6), ("x", 0.5)]:
        assert abs(estimate[name] - truth) < 3.5 * se[name], name
    row = fit.components.loc["additive"]
    assert abs(row["variance"] - 0.5) < 3.5 * row["se"]
    assert fit.components.loc["residual", "variance"] == 1.0
    assert "h2_observed" not in fit.ratios.index


def test_ordinal_derivatives_equal_differences():
    """The cumulative probit's score, weight and the weight's slope in η."""
    family = family_of("ordinal")
    codes = np.array([0, 1, 2, 2, 0, 1])
    eta = np.array([-0.3, 0.4, 1.9, -2.5, 3.0, 0.1])
    cut = np.array([0.0, 0.9])
    ones = np.ones(len(codes))
    s, w, dw = family.derivatives(codes, ones, eta, cut)
    h = 1e-6
    up = family.log_density(codes, ones, eta + h, cut)
    down = family.log_density(codes, ones, eta - h, cut)
    centre = family.log_density(codes, ones, eta, cut)
    assert np.allclose(s, (up - down) / (2 * h), rtol=1e-6, atol=1e-8)
    s_up = family.derivatives(codes, ones, eta + h, cut)[0]
    s_down = family.derivatives(codes, ones, eta - h, cut)[0]
    assert np.allclose(w, -(s_up - s_down) / (2 * h), rtol=1e-5, atol=1e-7)
    w_up = family.derivatives(codes, ones, eta + h, cut)[1]
    w_down = family.derivatives(codes, ones, eta - h, cut)[1]
    assert np.allclose(dw, (w_up - w_down) / (2 * h), rtol=1e-5, atol=1e-7)
    assert np.allclose(
        np.exp(centre[[0, 1]]), [stats.norm.cdf(0.3), stats.norm.cdf(0.5) - stats.norm.cdf(-0.4)]
    )


def test_an_ordinal_response_is_checked():
    data, pedigree = _ordinal_frame()
    gap = data.assign(score=data["score"].replace(2, 3))
    with pytest.raises(DataError, match=r"no record in the categor.*2.*Merge"):
        reml("score ~ x + (1|herd)", gap, pedigree=pedigree, family="ordinal", warn=False)
    fractional = data.astype({"score": float})
    fractional.loc[4, "score"] = 1.5
    with pytest.raises(DataError, match=r"integer category codes.*data row\(s\) 5"):
        reml("score ~ x + (1|herd)", fractional, pedigree=pedigree, family="ordinal", warn=False)


def test_a_level_whose_records_all_fail_is_complete_separation():
    data = _binary_frame()
    data["site"] = np.where(np.arange(len(data)) < 20, "a", "b")
    data.loc[data["site"] == "a", "y"] = 0
    with pytest.raises(DataError, match=r"20 records.*\[T\.a\].*failure.*complete separation"):
        reml("y ~ x + C(site, Treatment('b')) + (1|group)", data, family="binomial")


def test_large_counts_start_from_a_damped_glm_fit():
    """Counts with a mean near 8 000: a full Fisher-scoring step from β = 0 took η to about
    8 000 and e^η to infinity (the least-squares solve then failed); halved steps reach the
    intercept's ML estimate, and the fit goes on to the group variance."""
    rng = np.random.default_rng(5)
    group = np.repeat(np.arange(20), 10)
    eta = 9.0 + 0.3 * rng.standard_normal(20)[group]
    data = pd.DataFrame({"group": group.astype(str), "y": rng.poisson(np.exp(eta))})
    fit = reml("y ~ 1 + (1|group)", data, family="poisson", overdispersion="none", warn=False)
    assert fit.converged
    assert fit.beta.iloc[0] == pytest.approx(9.0, abs=0.3)
    assert fit.components.loc["group", "variance"] == pytest.approx(0.09, rel=0.8)


def test_every_latent_variance_at_zero_leaves_the_proportions_undefined():
    """Counts less dispersed than Poisson, the same in every group: the group and the
    observation-level variances are both estimated at zero, so σ²P on the latent scale is 0
    and every proportion is NaN (not a division by zero); the Bayesian fit still starts each
    variance at a positive value."""
    from bayes_animal import AnimalModel

    data = pd.DataFrame(
        {"group": np.repeat([f"g{k}" for k in range(8)], 6), "y": np.tile([0, 1, 1, 1, 1, 2], 8)}
    )
    fit = reml("y ~ 1 + (1|group)", data, family="poisson", warn=False)
    assert fit.components["variance"].eq(0.0).all()
    assert fit.components["boundary"].all()
    assert fit.components["proportion"].isna().all()
    model = AnimalModel("y ~ 1 + (1|group)", data, family="poisson")
    values = model._initial_values()
    assert values and all(np.isfinite(v) for v in values.values())
