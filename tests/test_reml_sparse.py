"""REML with several random effects (AI-REML on the sparse mixed-model equations): ASReml's
gryphon answers, the likelihood-ratio test, boundaries, and agreement with the spectral engine."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import ASREML_RTOL, ASREML_SE_ATOL, ASREML_SE_ATOL_3_DECIMALS, shared_folder

from bayes_animal import BayesAnimalError, compare, reml

RTOL = ASREML_RTOL  # the README's claim (conftest)


@pytest.fixture(scope="module")
def gryphon():
    folder = shared_folder("gryphon")
    return folder, pd.read_csv(folder / "gryphon.csv"), folder / "gryphonped.csv"


def _fit(formula, data, pedigree, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reml(formula, data, pedigree=pedigree, **options)


@pytest.fixture(scope="module")
def models_3_and_4(gryphon):
    _, data, pedigree = gryphon
    model3 = _fit("bwt ~ 1 + C(sex) + (1 | byear)", data, pedigree)
    model4 = _fit("bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)", data, pedigree)
    return model3, model4


def _asreml_loglik(fit, data) -> float:
    """ASReml's logL = ours + ½(n−p)·log 2π − ½·log|XᵀX| (X: intercept and sex 2)."""
    records = data.dropna(subset=["bwt"])
    X = np.column_stack([np.ones(len(records)), records["sex"].to_numpy() == 2])
    n, p = X.shape
    return fit.loglik + 0.5 * (n - p) * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(X.T @ X)[1]


def test_gryphon_log_likelihoods_match_asreml(models_3_and_4, gryphon):
    """On ASReml's scale (loglik_asreml, in the REML JSON and printed) the gryphon models'
    log-likelihoods are ASReml's, and equal the conversion written out here."""
    model3, model4 = models_3_and_4
    assert _asreml_loglik(model3, gryphon[1]) == pytest.approx(-1113.772, abs=1e-3)
    assert _asreml_loglik(model4, gryphon[1]) == pytest.approx(-1094.815, abs=1e-3)
    for model in (model3, model4):
        assert model.loglik_asreml == pytest.approx(_asreml_loglik(model, gryphon[1]), abs=1e-9)
        assert model.to_dict()["loglik_asreml"] == model.loglik_asreml


def test_gryphon_model_3_matches_asreml(models_3_and_4):
    fit, _ = models_3_and_4
    assert fit.engine == "sparse" and fit.converged
    expected = {"additive": 2.7068665, "byear": 0.8862604, "residual": 2.3092415}
    ses = {"additive": 0.4422, "byear": 0.2696, "residual": 0.3451}
    for name, value in expected.items():
        assert fit.variance(name) == pytest.approx(value, rel=RTOL), name
        assert fit.components.loc[name, "se"] == pytest.approx(ses[name], abs=ASREML_SE_ATOL), name


def test_gryphon_model_4_matches_asreml_and_the_lrt_for_mother(models_3_and_4):
    model3, fit = models_3_and_4
    expected = {
        "additive": 2.2985320,
        "byear": 0.8820313,
        "mother": 1.1184698,
        "residual": 1.6290034,
    }
    ses = {"additive": 0.4962, "byear": 0.2632, "mother": 0.2386, "residual": 0.3714}
    for name, value in expected.items():
        assert fit.variance(name) == pytest.approx(value, rel=RTOL), name
        assert fit.components.loc[name, "se"] == pytest.approx(ses[name], abs=ASREML_SE_ATOL), name
    assert set(fit.predictions) == {"additive", "byear", "mother"}
    assert len(fit.predictions["additive"]) == 1309  # every animal of the pedigree
    assert len(fit.predictions["mother"]) == 394  # every mother with a record
    total = sum(expected.values())
    assert fit.components.loc["additive", "proportion"] == pytest.approx(
        2.2985320 / total, rel=1e-5
    )
    test = compare(model3, fit)
    assert test.added == ("mother",) and test.mixture and test.df == 1
    assert test.statistic == pytest.approx(37.91, abs=0.01)
    # the tutorial prints P(χ²₁ > 37.91) = 7.4e-10; the boundary mixture halves it
    assert test.p_chi2 == pytest.approx(7.4e-10, rel=0.01)
    assert test.p_value == pytest.approx(3.7e-10, rel=0.01)
    assert compare(fit, model3).statistic == test.statistic  # order does not matter


def test_gryphon_lay_dates_with_a_permanent_environment(gryphon):
    folder, _, pedigree = gryphon
    data = pd.read_csv(folder / "gryphonRM.csv")
    fit = _fit("laydate ~ 1 + C(age) + ide(animal)", data, pedigree)
    assert fit.variance("additive") == pytest.approx(4.876101, rel=RTOL)
    assert fit.variance("pe") == pytest.approx(7.400983, rel=RTOL)
    assert fit.variance("residual") == pytest.approx(16.380188, rel=RTOL)
    assert fit.components.loc["additive", "se"] == pytest.approx(
        1.809, abs=ASREML_SE_ATOL_3_DECIMALS
    )
    assert fit.components.loc["pe", "se"] == pytest.approx(1.728, abs=ASREML_SE_ATOL_3_DECIMALS)
    assert fit.components.loc["residual", "se"] == pytest.approx(
        0.687, abs=ASREML_SE_ATOL_3_DECIMALS
    )
    assert fit.h2 == pytest.approx(0.1702, abs=1e-4)
    assert fit.ratios.loc["h2", "se"] == pytest.approx(0.061, abs=1e-3)
    assert fit.ratios.loc["repeatability", "estimate"] == pytest.approx(0.4284, abs=1e-4)
    assert fit.ratios.loc["repeatability", "se"] == pytest.approx(0.027, abs=1e-3)
    assert len(fit.predictions["pe"]) == 469
    # the same model written as a copied id column is the same model
    copied = data.assign(female=data["animal"])
    again = _fit("laydate ~ 1 + C(age) + (1 | female)", copied, pedigree)
    assert again.variance("female") == pytest.approx(fit.variance("pe"), rel=1e-8)


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("laydate ~ 1 + (1 | animal)", {"animal": 11.08634, "residual": 21.29643}),
        ("laydate ~ 1 + C(age) + (1 | animal)", {"animal": 12.28982, "residual": 16.37989}),
    ],
)
def test_gryphon_repeatability_models_without_a_pedigree(gryphon, formula, expected):
    """No relationship: (1 | animal) is an independent effect, a plain linear mixed model."""
    folder, _, _ = gryphon
    data = pd.read_csv(folder / "gryphonRM.csv")
    fit = reml(formula, data)
    for name, value in expected.items():
        assert fit.variance(name) == pytest.approx(value, rel=RTOL), name
    share = expected["animal"] / sum(expected.values())
    assert fit.components.loc["animal", "proportion"] == pytest.approx(share, rel=1e-4)


@pytest.mark.parametrize("formula", ["bwt ~ 1", "bwt ~ 1 + C(sex)"])
def test_spectral_and_sparse_engines_agree_on_the_gryphon(gryphon, formula):
    _, data, pedigree = gryphon
    sparse = _fit(formula, data, pedigree, engine="sparse")
    spectral = _fit(formula, data, pedigree, engine="spectral")
    assert (sparse.engine, spectral.engine) == ("sparse", "spectral")
    _agree(sparse, spectral)


def _agree(a, b, rtol=1e-6):
    for name in a.components.index:
        assert a.variance(name) == pytest.approx(b.variance(name), rel=rtol), name
        assert a.components.loc[name, "se"] == pytest.approx(b.components.loc[name, "se"], rel=1e-4)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-7)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-6)
    np.testing.assert_allclose(a.beta_se, b.beta_se, rtol=1e-5)
    merged = a.blup.join(b.blup.add_suffix("_b"))
    np.testing.assert_allclose(merged["blup"], merged["blup_b"], atol=1e-5 * merged["blup"].std())
    np.testing.assert_allclose(merged["reliability"], merged["reliability_b"], atol=1e-5)


def test_spectral_and_sparse_engines_agree_on_seed_sim():
    folder = shared_folder("seed_sim")
    data = pd.read_csv(folder / "pheno.csv")
    spectral = reml("response ~ 1 + fix", data, relmat=folder / "A.csv")
    sparse = reml("response ~ 1 + fix", data, relmat=folder / "A.csv", engine="sparse")
    assert spectral.engine == "spectral"
    _agree(sparse, spectral)


def test_spectral_and_sparse_engines_agree_on_the_wheat_lines():
    folder = shared_folder("wheat")
    data = pd.read_csv(folder / "wheat_Y.csv")
    matrix = folder / "wheat_A.csv"
    spectral = reml("env1 ~ 1", data, relmat=matrix, animal="line")
    sparse = reml("env1 ~ 1", data, relmat=matrix, animal="line", engine="sparse")
    _agree(sparse, spectral)


def test_mrode_17_7_through_both_engines(mrode):
    data = pd.read_csv(mrode / "ex17_7_reml.csv")
    pedigree = mrode / "ex04_1_pedigree.csv"
    sparse = reml("y ~ 0 + C(sex)", data, pedigree=pedigree)
    spectral = reml("y ~ 0 + C(sex)", data, pedigree=pedigree, engine="spectral")
    assert sparse.variance("residual") == pytest.approx(0.4835, abs=6e-4)
    assert sparse.variance("additive") == pytest.approx(0.5514, abs=6e-4)
    _agree(sparse, spectral)


def test_a_component_without_support_is_held_at_its_boundary_with_a_notice():
    """A grouping factor with no effect at all: its REML estimate is 0, reported as the
    boundary, without an SE, and with a notice; the rest is the model without it."""
    rng = np.random.default_rng(3)
    n = 300
    data = pd.DataFrame(
        {
            "g": rng.integers(0, 30, n).astype(str),
            "h": rng.integers(0, 20, n).astype(str),
        }
    )
    effect = rng.normal(0, 1.0, 30)
    data["y"] = effect[data["g"].astype(int)] + rng.normal(0, 1.0, n)
    # choose a seed where the sample variance among h means is below its expectation
    for seed in range(50):
        data["h"] = np.random.default_rng(seed).integers(0, 20, n).astype(str)
        fit = reml("y ~ 1 + (1 | g) + (1 | h)", data)
        if fit.boundary:
            break
    else:  # pragma: no cover - the search finds one
        pytest.fail("no boundary case found")
    assert fit.boundary == ("h",) and fit.converged
    assert fit.variance("h") == 0.0 and np.isnan(fit.components.loc["h", "se"])
    assert bool(fit.components.loc["h", "boundary"])
    assert any("'h' is at its boundary" in n for n in fit.notices)
    assert (fit.predictions["h"]["blup"] == 0).all()
    assert (fit.predictions["h"]["pev"] == 0).all()  # no prediction error at the boundary
    without = reml("y ~ 1 + (1 | g)", data)
    assert fit.variance("g") == pytest.approx(without.variance("g"), rel=1e-4)
    assert fit.loglik == pytest.approx(without.loglik, abs=1e-4)


def test_compare_refuses_what_it_cannot_test(models_3_and_4, gryphon):
    model3, model4 = models_3_and_4
    _, data, pedigree = gryphon
    other_fixed = _fit("bwt ~ 1 + (1 | byear)", data, pedigree)
    with pytest.raises(BayesAnimalError, match="different fixed effects"):
        compare(other_fixed, model4)
    with pytest.raises(BayesAnimalError, match="not nested"):
        compare(model3, model3)


def test_chi_square_tails_equal_scipy():
    from scipy.stats import chi2

    from bayes_animal.estimation.compare import _chi2_sf

    for df in (1, 2, 3, 4, 5, 7):
        for x in (0.1, 1.0, 3.84, 12.0, 37.91):
            assert _chi2_sf(x, df) == pytest.approx(chi2.sf(x, df), rel=1e-10), (df, x)


# -- C(θ) that does not factor: the search steps back; where it persists, the user's error ---


def _grouped_mme(seed: int = 1):
    from bayes_animal import build_design
    from bayes_animal.linalg.mme import MixedModelEquations
    from bayes_animal.spec.parameters import Parameters

    rng = np.random.default_rng(seed)
    g = rng.integers(0, 12, 240)
    data = pd.DataFrame({"g": np.char.add("g", g.astype(str)), "x": rng.standard_normal(240)})
    data["y"] = rng.normal(0, 1.0, 12)[g] + 0.5 * data["x"] + rng.standard_normal(240)
    design = build_design("y ~ 1 + x + (1 | g)", data, warn=False)
    return MixedModelEquations(design, {}, Parameters.from_spec(design.spec))


def _failing_at(mme, calls):
    """mme.evaluate raising NotPositiveDefinite (for a level of g) on the given call numbers."""
    from bayes_animal.linalg.ldl import NotPositiveDefinite

    evaluate = mme.evaluate
    count = {"n": 0}

    def patched(theta, **options):
        count["n"] += 1
        if calls(count["n"]):
            raise NotPositiveDefinite("singular", index=mme.p + 3, ratio=1e-15)
        return evaluate(theta, **options)

    mme.evaluate = patched
    return count


def test_the_search_steps_back_from_trial_points_where_c_does_not_factor():
    """NotPositiveDefinite at a trial point means 'outside the space': the step is halved
    and the fit reaches the same optimum as without the failures."""
    from bayes_animal.estimation.aireml import fit_aireml

    plain = fit_aireml(_grouped_mme())
    mme = _grouped_mme()
    count = _failing_at(mme, lambda n: n in (2, 3, 5))  # the first trials of two iterations
    fit = fit_aireml(mme)
    assert count["n"] > plain.iterations + 3
    assert fit.convergence.converged
    np.testing.assert_allclose(fit.theta, plain.theta, rtol=1e-6)


def test_a_singular_c_that_persists_at_valid_parameters_is_the_users_error():
    """Every trial and the EM point fail: no point to step back to, so the fit stops with
    the error that names the level (before: a silent, unconverged fit); at the start
    likewise (before: 'the starting values are outside the parameter space')."""
    from bayes_animal.errors import SingularEquationsError
    from bayes_animal.estimation.aireml import fit_aireml

    mme = _grouped_mme()
    level = str(mme.design.effect("g").levels[3])
    _failing_at(mme, lambda n: n > 1)
    with pytest.raises(SingularEquationsError, match=f"level '{level}' of the random effect 'g'"):
        fit_aireml(mme)
    mme = _grouped_mme()
    _failing_at(mme, lambda n: True)
    with pytest.raises(SingularEquationsError, match="singular in floating point at g="):
        fit_aireml(mme)
    with pytest.raises(ValueError, match="outside the parameter space"):
        fit_aireml(_grouped_mme(), start=np.array([-1.0, 1.0]))


def test_nearly_collinear_covariates_are_a_clear_error():
    """x2 = x + 1e-7·noise passes the design's rank test (singular value 1e-6 of the largest)
    but C's pivot for one of them is 1e-14 of its diagonal entry: REML refuses it and names the
    column, instead of estimating from a log-determinant with percent errors."""
    from bayes_animal.errors import SingularEquationsError

    rng = np.random.default_rng(0)
    n = 200
    g = rng.integers(0, 5, n)
    data = pd.DataFrame({"g": np.array(list("abcde"))[g], "x": rng.standard_normal(n)})
    data["x2"] = data["x"] + 1e-7 * rng.standard_normal(n)
    data["y"] = rng.standard_normal(n) + g
    with pytest.raises(SingularEquationsError, match="fixed-effect column 'x2?'.*collinear"):
        reml("y ~ 1 + x + x2 + (1 | g)", data)
