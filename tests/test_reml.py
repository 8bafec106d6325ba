"""REML: oracle tests against dense formulas, published answers, rrBLUP/lme4/metafor equivalence,
boundary and edge cases, and recovery over simulated data sets."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from conftest import ASREML_RTOL, ASREML_SE_ATOL, small_problem

from bayes_animal import (
    BayesAnimalError,
    RelationshipMatrix,
    as_relationship,
    build_design,
    decompose,
    reml,
    simulate_reference,
)
from bayes_animal.estimation.spectral import fit_spectral, loglik, predict, profile_loglik


def _dense_loglik(design, relmat, sigma2_u, sigma2_e, method):
    """Brute force: −½[c + log|V| + log|XᵀV⁻¹X| − log|XᵀX| + yᵀPy] with dense matrices."""
    Z = design.effects[0].incidence().toarray()
    V = sigma2_u * Z @ relmat.matrix @ Z.T + sigma2_e * np.eye(design.n_records)
    X, y = design.X, design.y
    n, p = X.shape
    Vi = np.linalg.inv(V)
    XVX = X.T @ Vi @ X
    P = Vi - Vi @ X @ np.linalg.solve(XVX, X.T @ Vi)
    value = np.linalg.slogdet(V)[1] + y @ P @ y
    if method == "reml":
        value += (n - p) * np.log(2 * np.pi) + np.linalg.slogdet(XVX)[1]
        value -= np.linalg.slogdet(X.T @ X)[1]
    else:
        value += n * np.log(2 * np.pi)
    return -0.5 * value


def _henderson(design, relmat, sigma2_u, sigma2_e):
    """Dense mixed-model equations: solutions and the inverse coefficient matrix."""
    Z = design.effects[0].incidence().toarray()
    X, y = design.X, design.y
    alpha = sigma2_e / sigma2_u
    lhs = np.block([[X.T @ X, X.T @ Z], [Z.T @ X, Z.T @ Z + alpha * np.linalg.inv(relmat.matrix)]])
    rhs = np.concatenate([X.T @ y, Z.T @ y])
    inverse = np.linalg.inv(lhs)
    return inverse @ rhs, inverse


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("method", ["reml", "ml"])
def test_loglik_equals_dense_multivariate_normal(seed, method):
    data, relmat = small_problem(seed)
    design = build_design("y ~ 1 + x + C(sex)", data, relationship=relmat)
    problem = decompose(design, relmat)
    assert design.n_records > relmat.size - 6  # Z ≠ I: repeated records, unphenotyped animals
    rng = np.random.default_rng(seed + 100)
    for sigma2_u, sigma2_e in rng.uniform(0.05, 5.0, size=(5, 2)):
        expected = _dense_loglik(design, relmat, sigma2_u, sigma2_e, method)
        assert loglik(problem, sigma2_u, sigma2_e, method=method) == pytest.approx(
            expected, rel=1e-10
        )


@pytest.mark.parametrize("method", ["reml", "ml"])
def test_profile_derivatives_match_finite_differences(method):
    data, relmat = small_problem(7)
    design = build_design("y ~ 1 + x", data, relationship=relmat)
    problem = decompose(design, relmat)
    for theta in [0.05, 0.3, 0.6, 0.9]:
        h = 1e-5
        here = profile_loglik(problem, theta, method=method)
        up = profile_loglik(problem, theta + h, method=method)
        down = profile_loglik(problem, theta - h, method=method)
        assert here.gradient == pytest.approx((up.value - down.value) / (2 * h), rel=1e-5, abs=1e-7)
        assert here.curvature == pytest.approx(
            (up.gradient - down.gradient) / (2 * h), rel=1e-5, abs=1e-6
        )
        # the profile is the likelihood at the profiled variances
        s2 = here.scale
        assert here.value == pytest.approx(
            loglik(problem, theta * s2, (1 - theta) * s2, method=method), rel=1e-12
        )


def _point_by_point_maximum(problem, method):
    """The maximiser before its grid scan was batched: every grid point by profile_loglik."""
    from bayes_animal.estimation.spectral import GRID_THETAS, _newton_root

    grid = [profile_loglik(problem, float(t), method=method) for t in GRID_THETAS]
    candidates = []
    if grid[0].gradient <= 0:
        candidates.append((grid[0], 0, "effect"))
    if grid[-1].gradient >= 0:
        candidates.append((grid[-1], 0, "residual"))
    for lo, hi in pairwise(grid):
        if lo.gradient > 0 and hi.gradient <= 0:
            found, steps, _ = _newton_root(problem, lo, hi, method, 100)
            candidates.append((found, steps, None))
    profile, _, boundary = max(candidates, key=lambda c: c[0].value)
    return profile, boundary, sum(c[1] for c in candidates) + len(grid)


def _grid_problems():
    """Interior maxima (repeated records, unrecorded animals) and a maximum at σu² = 0."""
    for seed in (5, 6, 7):
        data, relmat = small_problem(seed)
        design = build_design("y ~ 1 + x + C(sex)", data, relationship=relmat)
        yield f"seed {seed}", decompose(design, relmat)
    q = 60
    ids = np.array([f"i{k}" for k in range(q)], dtype=object)
    relmat = RelationshipMatrix(ids=ids, matrix=_ar1(q))
    for seed in range(40):
        data = pd.DataFrame({"animal": ids, "y": np.random.default_rng(seed).standard_normal(q)})
        design = build_design("y ~ 1", data, relationship=relmat)
        problem = decompose(design, relmat)
        if profile_loglik(problem, 0.0).gradient < 0:
            yield "boundary", problem
            return


@pytest.mark.parametrize("method", ["reml", "ml"])
@pytest.mark.parametrize("budget", ["one batch", "slices", "point by point"])
def test_the_batched_grid_scan_finds_the_point_by_point_maximum(method, budget, monkeypatch):
    from bayes_animal.estimation import spectral

    elements = {"one batch": 1 << 22, "slices": 15 * 45 * 10, "point by point": 1}[budget]
    monkeypatch.setattr(spectral, "GRID_BATCH_ELEMENTS", elements)
    boundaries = set()
    for name, problem in _grid_problems():
        gradients, values = spectral._scan_grid(problem, method)
        points = [profile_loglik(problem, float(t), method=method) for t in spectral.GRID_THETAS]
        exact = np.array([q.gradient for q in points])
        np.testing.assert_array_equal(np.sign(gradients), np.sign(exact))  # the same brackets
        # to round-off, which grows towards θ = 1 (σ² → 0: gradients of order 1e9 there)
        np.testing.assert_allclose(gradients, exact, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(values, [q.value for q in points], rtol=1e-9)
        profile, boundary, iterations = _point_by_point_maximum(problem, method)
        best = spectral._maximise(problem, method, 100)
        assert best.profile == profile, name  # the same floats: the same Newton steps
        assert best.boundary == boundary and best.iterations == iterations, name
        boundaries.add(boundary)
    assert boundaries >= {None, "effect"} if method == "reml" else None in boundaries


@pytest.mark.parametrize("method", ["reml", "ml"])
def test_maximum_agrees_with_a_generic_optimiser_on_the_dense_likelihood(method):
    from scipy.optimize import minimize

    data, relmat = small_problem(11, q=40, n=80)
    design = build_design("y ~ 1 + x + C(sex)", data, relationship=relmat)
    fit = fit_spectral(design, relmat, method=method)
    assert fit.converged

    def negative(log_variances):
        return -_dense_loglik(design, relmat, *np.exp(log_variances), method)

    best = minimize(
        negative,
        x0=np.log([1.0, 1.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000},
    )
    assert fit.loglik >= -best.fun - 1e-9
    np.testing.assert_allclose([fit.sigma2_u, fit.sigma2_e], np.exp(best.x), rtol=1e-4)


def test_blup_pev_and_beta_equal_dense_henderson_equations():
    data, relmat = small_problem(5)
    design = build_design("y ~ 1 + x + C(sex)", data, relationship=relmat)
    sigma2_u, sigma2_e = 1.7, 0.9
    solution, inverse = _henderson(design, relmat, sigma2_u, sigma2_e)
    p = design.n_fixed
    got = predict(design, relmat, variance=sigma2_u, residual=sigma2_e)
    np.testing.assert_allclose(got.beta.to_numpy(), solution[:p], rtol=1e-9)
    np.testing.assert_allclose(got.blup["blup"].to_numpy(), solution[p:], rtol=1e-8, atol=1e-10)
    pev = np.diag(inverse)[p:] * sigma2_e
    np.testing.assert_allclose(got.blup["pev"].to_numpy(), pev, rtol=1e-8)
    np.testing.assert_allclose(got.beta_cov.to_numpy(), inverse[:p, :p] * sigma2_e, rtol=1e-8)
    reliability = 1 - pev / (sigma2_u * np.diag(relmat.matrix))
    np.testing.assert_allclose(got.blup["reliability"].to_numpy(), reliability, rtol=1e-8)
    # animals without records get BLUPs through their relatives, with lower reliability
    unphenotyped = got.blup["n_records"] == 0
    assert unphenotyped.sum() == 6
    assert (got.blup.loc[unphenotyped, "blup"] != 0).all()


def test_information_matrices_equal_dense_formulas():
    data, relmat = small_problem(9)
    design = build_design("y ~ 1 + x", data, relationship=relmat)
    fit = fit_spectral(design, relmat)
    Z = design.effects[0].incidence().toarray()
    K = Z @ relmat.matrix @ Z.T
    V = fit.sigma2_u * K + fit.sigma2_e * np.eye(design.n_records)
    Vi = np.linalg.inv(V)
    X, y = design.X, design.y
    P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi)
    parts = [K, np.eye(design.n_records)]
    expected = np.array([[0.5 * np.trace(P @ a @ P @ b) for b in parts] for a in parts])
    np.testing.assert_allclose(fit.expected_information, expected, rtol=1e-9)
    average = np.array([[0.5 * y @ P @ a @ P @ b @ P @ y for b in parts] for a in parts])
    np.testing.assert_allclose(fit.information, average, rtol=1e-9)
    cov = np.linalg.inv(average)
    assert fit.se["sigma2_u"] == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-8)
    assert fit.se["sigma2_e"] == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-8)
    total = fit.sigma2_u + fit.sigma2_e
    gradient = np.array([fit.sigma2_e, -fit.sigma2_u]) / total**2
    assert fit.se["h2"] == pytest.approx(np.sqrt(gradient @ cov @ gradient), rel=1e-8)


def _tabular_a(pedigree: pd.DataFrame) -> np.ndarray:
    """Reference A by the tabular method (parents listed before offspring)."""
    ids = list(pedigree["animal"])
    position = {a: i for i, a in enumerate(ids)}
    A = np.zeros((len(ids), len(ids)))
    for i, (sire, dam) in enumerate(zip(pedigree["sire"], pedigree["dam"], strict=True)):
        s = position.get(sire) if pd.notna(sire) else None
        d = position.get(dam) if pd.notna(dam) else None
        for j in range(i):
            value = 0.5 * ((A[j, s] if s is not None else 0) + (A[j, d] if d is not None else 0))
            A[i, j] = A[j, i] = value
        A[i, i] = 1 + (0.5 * A[s, d] if s is not None and d is not None else 0)
    return A


def _mrode_relmat(folder):
    pedigree = pd.read_csv(folder / "ex04_1_pedigree.csv")
    return as_relationship(_tabular_a(pedigree), ids=pedigree["animal"])


def test_mrode_example_4_1_blue_ebv_reliability_sep(mrode):
    relmat = _mrode_relmat(mrode)
    data = pd.read_csv(mrode / "ex04_1_wwg.csv")
    design = build_design("wwg ~ 0 + C(sex)", data, relationship=relmat)
    got = predict(design, relmat, variance=20.0, residual=40.0)
    np.testing.assert_allclose(got.beta.to_numpy(), [3.40443010, 4.35850233], atol=1e-7)
    ebv = [
        0.09844458,
        -0.01877010,
        -0.04108420,
        -0.00866312,
        -0.18573210,
        0.17687209,
        -0.24945855,
        0.18261469,
    ]
    np.testing.assert_allclose(got.blup["blup"].to_numpy(), ebv, atol=1e-7)
    # the book prints the LHS-inverse diagonal d to 3 decimals and r² = 1 − d·α from the
    # rounded d, so r² carries up to 2 × 0.0005 of rounding
    lhs_inverse_diagonal = [0.471, 0.492, 0.456, 0.428, 0.428, 0.442, 0.442, 0.422]
    np.testing.assert_allclose(got.blup["pev"].to_numpy() / 40.0, lhs_inverse_diagonal, atol=5e-4)
    reliability = [0.058, 0.016, 0.088, 0.144, 0.144, 0.116, 0.116, 0.156]
    np.testing.assert_allclose(got.blup["reliability"].to_numpy(), reliability, atol=1e-3)
    sep = [4.341, 4.436, 4.271, 4.138, 4.138, 4.205, 4.205, 4.109]
    # SEP = √(d σ²e) from the rounded d: ±0.0005 in d is ±0.0024 in SEP
    np.testing.assert_allclose(np.sqrt(got.blup["pev"].to_numpy()), sep, atol=2.5e-3)


def test_mrode_example_17_7_reml(mrode):
    relmat = _mrode_relmat(mrode)
    data = pd.read_csv(mrode / "ex17_7_reml.csv")
    design = build_design("y ~ 0 + C(sex)", data, relationship=relmat)
    fit = fit_spectral(design, relmat)
    assert fit.converged
    assert fit.sigma2_e == pytest.approx(0.4835, abs=6e-4)
    assert fit.sigma2_u == pytest.approx(0.5514, abs=6e-4)
    # the book's logL omits −½(n−p)log 2π and +½log|XᵀX|
    n, p = design.X.shape
    book = fit.loglik + 0.5 * (n - p) * np.log(2 * np.pi)
    book -= 0.5 * np.linalg.slogdet(design.X.T @ design.X)[1]
    assert book == pytest.approx(-2.1817, abs=6e-5)
    # the book's inverse AI matrix at convergence, order (σ²e, σ²a)
    inverse_ai = np.linalg.inv(fit.information)[::-1, ::-1]
    np.testing.assert_allclose(inverse_ai, [[2.4436, -3.2532], [-3.2532, 5.3481]], atol=2e-3)


def _reference(folder, tool):
    return pd.read_csv(folder / f"results_{tool}.csv").iloc[0]


def test_seed_sim_matches_rrblup_lme4_and_metafor(seed_sim):
    data = pd.read_csv(seed_sim / "pheno.csv")
    fit = reml("response ~ 1 + fix", data, relmat=seed_sim / "A.csv")
    assert fit.converged and fit.boundary == ()
    ours = np.array([fit.sigma2_u, fit.sigma2_e, fit.beta["Intercept"], fit.beta["fix"]])
    for tool in ["rrBLUP", "lme4", "metafor"]:
        ref = _reference(seed_sim, tool)
        np.testing.assert_allclose(ours, [ref.Vu, ref.Ve, ref.intercept, ref.fix], rtol=1e-4)
        assert fit.h2 == pytest.approx(ref.h2, rel=1e-4)
    # lme4 and metafor reach the optimum to ~1e-7; so do we
    lme4 = _reference(seed_sim, "lme4")
    np.testing.assert_allclose(ours, [lme4.Vu, lme4.Ve, lme4.intercept, lme4.fix], rtol=1e-7)
    # SEs of the fixed effects printed by all three tools
    assert fit.beta_se["Intercept"] == pytest.approx(1.890113, abs=1e-6)
    assert fit.beta_se["fix"] == pytest.approx(0.048505, abs=1e-6)


def test_seed_sim_loglik_on_rrblup_scale(seed_sim):
    data = pd.read_csv(seed_sim / "pheno.csv")
    fit = reml("response ~ 1 + fix", data, relmat=seed_sim / "A.csv", pev=False)
    # metafor's REML logLik uses the same constant and the exact optimum
    assert fit.loglik == pytest.approx(-1920.628297, abs=2e-6)
    # rrBLUP's LL (same constant): its optimiser and eigen-offset trick leave it 4e-4 higher
    assert fit.loglik == pytest.approx(-1920.627875, rel=1e-6)


def test_seed_sim_blups_match_rrblup_and_lme4(seed_sim):
    data = pd.read_csv(seed_sim / "pheno.csv")
    fit = reml("response ~ 1 + fix", data, relmat=seed_sim / "A.csv")
    for tool in ["rrBLUP", "lme4"]:
        reference = pd.read_csv(seed_sim / f"blups_{tool}.csv").set_index("animal")["u_hat"]
        ours = fit.blup["blup"].loc[reference.index]
        assert np.corrcoef(ours, reference)[0, 1] > 0.99999
    lme4 = pd.read_csv(seed_sim / "blups_lme4.csv").set_index("animal")["u_hat"]
    np.testing.assert_allclose(fit.blup["blup"].loc[lme4.index], lme4, atol=1e-6)
    true_u = pd.read_csv(seed_sim / "true_u.csv").set_index("animal")["u"]
    accuracy = np.corrcoef(fit.blup["blup"].loc[true_u.index], true_u)[0, 1]
    assert accuracy == pytest.approx(0.928731, abs=1e-5)


def test_boundary_sigma2_u_zero_is_reported_exactly():
    rng = np.random.default_rng(42)
    q = 60
    ids = [f"i{k}" for k in range(q)]
    relmat = RelationshipMatrix(ids=np.array(ids, dtype=object), matrix=np.eye(q) * 0 + _ar1(q))
    data = pd.DataFrame({"animal": ids, "y": rng.standard_normal(q) * 0.1})
    # y independent of A: pick a seed where the REML maximum is at σu² = 0
    for seed in range(40):
        data["y"] = np.random.default_rng(seed).standard_normal(q)
        design = build_design("y ~ 1", data, relationship=relmat)
        problem = decompose(design, relmat)
        if profile_loglik(problem, 0.0).gradient < 0:
            break
    else:  # pragma: no cover - the search above finds one
        pytest.fail("no boundary data set found")
    fit = fit_spectral(design, relmat, problem=problem)
    assert fit.boundary == ("additive",)
    assert fit.sigma2_u == 0.0 and fit.h2 == 0.0
    assert fit.converged
    assert fit.sigma2_e == pytest.approx(np.var(data["y"], ddof=1), rel=1e-12)
    assert (fit.blup["blup"] == 0).all()
    assert fit.blup["reliability"].isna().all()
    for theta in [1e-4, 0.1, 0.5]:
        assert profile_loglik(problem, theta).value < fit.loglik


def _ar1(q, rho=0.6):
    index = np.arange(q)
    return rho ** np.abs(index[:, None] - index[None, :])


def test_unknown_method_is_an_error():
    data, relmat = small_problem(1)
    with pytest.raises(BayesAnimalError, match="Unknown method 'bayes'"):
        reml("y ~ x", data, relmat=relmat, method="bayes")


def test_predict_rejects_non_positive_residual_variance():
    data, relmat = small_problem(1)
    design = build_design("y ~ x", data, relationship=relmat)
    with pytest.raises(BayesAnimalError, match="residual variance > 0"):
        predict(design, relmat, variance=1.0, residual=0.0)


def test_ml_is_below_reml_for_the_genetic_variance_and_reported_as_ml():
    sim = simulate_reference(n=300, n_snps=400, seed=3)
    fit_r = reml("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    fit_m = reml("response ~ 1 + fix", sim.data, relmat=sim.relmat, method="ml")
    assert fit_m.method == "ml"
    assert fit_m.sigma2_u + fit_m.sigma2_e < fit_r.sigma2_u + fit_r.sigma2_e
    assert fit_m.to_dict()["method"] == "ml"


def test_result_serialises_to_the_documented_json_keys():
    data, relmat = small_problem(2)
    fit = reml("y ~ x", data, relmat=relmat)
    payload = json.loads(json.dumps(fit.to_dict()))
    for key in [
        "sigma2_u",
        "sigma2_e",
        "h2",
        "se",
        "beta",
        "loglik",
        "converged",
        "n_records",
        "n_animals",
    ]:
        assert key in payload
    assert set(payload["se"]) == {"sigma2_u", "sigma2_e", "h2"}
    assert set(payload["beta"]) == {"Intercept", "x"}
    summary = fit.summary()
    assert list(summary.index) == [
        "sigma2:additive",
        "sigma2:residual",
        "h2",
        "prop:residual",
        "beta[Intercept]",
        "beta[x]",
    ]


def test_recovery_over_simulated_data_sets():
    """Estimates scatter around the truth: standardised errors behave like N(0, 1)."""
    z = {"sigma2_u": [], "sigma2_e": [], "h2": []}
    for seed in range(8):
        sim = simulate_reference(n=400, n_snps=500, seed=seed)
        fit = reml("response ~ 1 + fix", sim.data, relmat=sim.relmat, pev=False)
        truth = {"sigma2_u": sim.truth.sigma2_u, "sigma2_e": sim.truth.sigma2_e, "h2": sim.truth.h2}
        for key in z:
            z[key].append((getattr(fit, key) - truth[key]) / fit.se[key])
    for key, values in z.items():
        values = np.array(values)
        assert np.all(np.abs(values) < 4), (key, values)
        # the mean of 8 standard normals lies within ±3/√8 with probability > 0.99
        assert abs(values.mean()) < 3 / np.sqrt(len(values)), (key, values)


@pytest.fixture(scope="module")
def gryphon_fits():
    from conftest import shared_folder

    folder = shared_folder("gryphon")
    data = pd.read_csv(folder / "gryphon.csv")
    pedigree = folder / "gryphonped.csv"
    with pytest.warns(UserWarning, match="230 of 1084 records"):
        plain = reml("bwt ~ 1", data, pedigree=pedigree)
    with pytest.warns(UserWarning):
        sex = reml("bwt ~ 1 + C(sex)", data, pedigree=pedigree)
    return plain, sex


# ASReml prints 7 significant digits and stops at its own tolerance (conftest: the README's
# claim, one number for every ASReml comparison)
ESTIMATE_RTOL = ASREML_RTOL
SE_ATOL = ASREML_SE_ATOL


def test_gryphon_bwt_matches_asreml(gryphon_fits):
    fit, _ = gryphon_fits
    assert fit.n_records == 854 and fit.n_animals == 1309
    assert fit.sigma2_u == pytest.approx(3.395398, rel=ESTIMATE_RTOL)
    assert fit.sigma2_e == pytest.approx(3.828602, rel=ESTIMATE_RTOL)
    assert fit.h2 == pytest.approx(0.4700, abs=1e-4)
    assert fit.se["sigma2_u"] == pytest.approx(0.6350, abs=SE_ATOL)
    assert fit.se["sigma2_e"] == pytest.approx(0.5186, abs=SE_ATOL)
    assert fit.se["h2"] == pytest.approx(0.0765, abs=SE_ATOL)
    # every animal in the pedigree gets a BLUP, with or without a record
    assert len(fit.blup) == 1309 and (fit.blup["n_records"] == 0).sum() == 1309 - 854


def test_gryphon_bwt_with_sex_matches_asreml(gryphon_fits):
    _, fit = gryphon_fits
    assert fit.sigma2_u == pytest.approx(3.060441, rel=ESTIMATE_RTOL)
    assert fit.sigma2_e == pytest.approx(2.938412, rel=ESTIMATE_RTOL)
    assert fit.h2 == pytest.approx(0.5102, abs=1e-4)
    assert fit.se["sigma2_u"] == pytest.approx(0.5244, abs=SE_ATOL)
    assert fit.se["sigma2_e"] == pytest.approx(0.4161, abs=SE_ATOL)
    assert fit.se["h2"] == pytest.approx(0.0743, abs=SE_ATOL)
    assert fit.beta["Intercept"] == pytest.approx(6.058669, rel=ESTIMATE_RTOL)
    assert fit.beta["C(sex)[T.2]"] == pytest.approx(2.206996, rel=ESTIMATE_RTOL)
    assert fit.beta_se["Intercept"] == pytest.approx(0.1718, abs=SE_ATOL)
    assert fit.beta_se["C(sex)[T.2]"] == pytest.approx(0.1620, abs=SE_ATOL)


def asreml_loglik(fit, X: np.ndarray) -> float:
    """ASReml's REML logL leaves out ½(n−p)·log 2π and includes ½·log|XᵀX|:
    logL_ASReml = ours + ½(n−p)·log 2π − ½·log|XᵀX|."""
    n, p = X.shape
    return fit.loglik + 0.5 * (n - p) * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(X.T @ X)[1]


def test_gryphon_loglik_matches_asreml(gryphon_fits):
    """The log-likelihoods themselves, on ASReml's constant, as printed (3 decimals)."""
    from conftest import shared_folder

    plain, sex = gryphon_fits
    assert plain.converged and sex.converged
    records = pd.read_csv(shared_folder("gryphon") / "gryphon.csv").dropna(subset=["bwt"])
    ones = np.ones((len(records), 1))
    X_sex = np.column_stack([ones, records["sex"].to_numpy() == 2])
    assert asreml_loglik(plain, ones) == pytest.approx(-1247.183, abs=1e-3)
    assert asreml_loglik(sex, X_sex) == pytest.approx(-1165.093, abs=1e-3)


def test_reml_data_animals_missing_from_pedigree_are_named(mrode):
    from bayes_animal.structures.pedigree import PedigreeError

    data = pd.read_csv(mrode / "ex17_7_reml.csv")
    data.loc[0, "animal"] = 99
    with pytest.raises(PedigreeError, match="'99'"):
        reml("y ~ 1", data, pedigree=mrode / "ex04_1_pedigree.csv")


def test_reml_needs_exactly_one_relationship_source(mrode):
    data = pd.read_csv(mrode / "ex17_7_reml.csv")
    with pytest.raises(BayesAnimalError, match="has no random effect: give a pedigree"):
        reml("y ~ 1", data)
    with pytest.raises(BayesAnimalError, match="exactly one"):
        reml("y ~ 1", data, pedigree=mrode / "ex04_1_pedigree.csv", relmat=np.eye(8))


def test_convergence_is_a_real_criterion_and_fails_when_stopped_early():
    """`converged` is the Newton decrement (log-likelihood left to gain) and the last change,
    both ≤ 1e-8: true at the optimum, false when the maximiser is stopped after one step."""
    sim = simulate_reference(n=200, n_snps=300, seed=4)
    design = build_design("response ~ 1 + fix", sim.data, relationship=sim.relmat)
    problem = decompose(design, sim.relmat)
    full = fit_spectral(design, sim.relmat, problem=problem, pev=False)
    assert full.converged and full.convergence.converged
    assert full.convergence.expected_gain <= 1e-8
    assert full.convergence.last_change <= 1e-8
    assert max(abs(g) for g in full.convergence.gradient) < 1e-4
    early = fit_spectral(design, sim.relmat, problem=problem, pev=False, max_iterations=1)
    assert not early.converged
    assert early.convergence.expected_gain > 1e-8
    assert "iteration limit" in early.convergence.reason
    assert early.loglik < full.loglik
    assert early.to_dict()["convergence"]["converged"] is False


def test_gryphon_lay_dates_without_permanent_environment_warn_that_va_is_inflated():
    from conftest import shared_folder

    from bayes_animal.design import RepeatedRecordsWarning

    folder = shared_folder("gryphon")
    data = pd.read_csv(folder / "gryphonRM.csv")
    with pytest.warns(RepeatedRecordsWarning, match="452 of 469 animals.*up to 5"):
        fit = reml("laydate ~ 1 + C(age)", data, pedigree=folder / "gryphonped.csv", pev=False)
    # ASReml's animal-only model: V_A 13.91784 (inflated; 4.876 with a permanent environment)
    assert fit.sigma2_u == pytest.approx(13.91784, rel=1e-4)
