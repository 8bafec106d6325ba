"""The Bayesian model: oracle log-densities, the flat-prior identity with REML, conditional draws,
the two parameterisations, and published answers (seed_sim, gryphon)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import small_problem

from bayes_animal.bayes.conditional import draw_breeding_values, draw_fixed_and_breeding_values
from bayes_animal.bayes.model import AnimalModel, ModelError
from bayes_animal.estimation.spectral import loglik, predict


def _dense_mvn(design, relmat, beta, sigma2_u, sigma2_e):
    from scipy.stats import multivariate_normal

    Z = design.effects[0].incidence().toarray()
    V = sigma2_u * Z @ relmat.matrix @ Z.T + sigma2_e * np.eye(design.n_records)
    return multivariate_normal(design.X @ beta, V).logpdf(design.y)


@pytest.fixture(scope="module")
def small():
    data, relmat = small_problem(3)
    return data, relmat


def test_marginal_density_with_flat_priors_is_the_restricted_likelihood(small):
    data, relmat = small
    model = AnimalModel("y ~ 1 + x + C(sex)", data, relmat=relmat, priors="flat")
    logp = model.build("marginal").compile_logp(jacobian=False)
    rng = np.random.default_rng(0)
    for su, se in rng.uniform(0.05, 4.0, size=(6, 2)):
        value = logp({"var_additive_log__": np.log(su), "var_residual_log__": np.log(se)})
        assert value == pytest.approx(loglik(model.problem, su, se), rel=1e-10)


def test_marginal_density_with_sampled_b_equals_dense_multivariate_normal(small):
    data, relmat = small
    model = AnimalModel("y ~ 1 + x", data, relmat=relmat, priors="flat")
    assert model.design.n_records != relmat.size  # Z ≠ I; 6 animals have no records
    logp = model.build("marginal", fixed="sample").compile_logp(jacobian=False)
    rng = np.random.default_rng(1)
    for su, se in rng.uniform(0.1, 3.0, size=(4, 2)):
        beta = rng.normal(size=2)
        value = logp(
            {"var_additive_log__": np.log(su), "var_residual_log__": np.log(se), "beta": beta}
        )
        expected = _dense_mvn(model.design, relmat, beta, su, se)
        assert value == pytest.approx(expected, rel=1e-10)


def test_flat_prior_posterior_mode_equals_reml(small):
    from scipy.optimize import minimize

    data, relmat = small
    model = AnimalModel("y ~ 1 + x", data, relmat=relmat, priors="flat")
    logp = model.build("marginal").compile_logp(jacobian=False)
    best = minimize(
        lambda x: -logp({"var_additive_log__": x[0], "var_residual_log__": x[1]}),
        x0=np.log([1.0, 1.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 5000},
    )
    np.testing.assert_allclose(
        np.exp(best.x), [model.reml.sigma2_u, model.reml.sigma2_e], rtol=1e-5
    )
    # and the fit's own joint mode (MAP), reported in the REML check, is REML
    fit = model.fit(draws=100, tune=100, chains=1, random_seed=1, progressbar=False, warn=False)
    check = fit.reml_check
    np.testing.assert_allclose(check["map"], check["reml"], rtol=1e-4)
    # a flat prior: power-scaling it moves nothing (and PSIS has no tail to fit)
    assert (fit.diagnostics.sensitivity == 0.0).all(), fit.diagnostics.sensitivity


def test_noncentred_dense_density(small):
    from scipy.stats import norm

    data, relmat = small
    model = AnimalModel("y ~ 1 + x", data, relmat=relmat, priors="flat")
    pm_model = model.build("noncentred")
    logp = pm_model.compile_logp(jacobian=False)
    rng = np.random.default_rng(2)
    z, beta = rng.standard_normal(relmat.size), rng.normal(size=2)
    su, se = 1.3, 0.7
    value = logp(
        {
            "var_additive_log__": np.log(su),
            "var_residual_log__": np.log(se),
            "z_additive": z,
            "beta": beta,
        }
    )
    u = np.sqrt(su) * np.linalg.cholesky(relmat.matrix) @ z
    mean = model.design.X @ beta + u[model.design.effects[0].index]
    expected = norm.logpdf(z).sum() + norm.logpdf(model.design.y, mean, np.sqrt(se)).sum()
    assert value == pytest.approx(expected, rel=1e-10)


def test_pedigree_recursion_equals_cholesky_of_a(mrode):
    import pymc as pm

    from bayes_animal.structures.additive import dense_relationship

    data = pd.read_csv(mrode / "ex17_7_reml.csv")
    model = AnimalModel("y ~ 1", data, pedigree=mrode / "ex04_1_pedigree.csv", priors="flat")
    pm_model = model.build("noncentred")
    u_of = pm.compile(
        [pm_model["z_additive"], pm_model["var_additive"]], pm_model["u"], mode="FAST_COMPILE"
    )
    ped = model.source.pedigree
    chol = np.linalg.cholesky(dense_relationship(ped, user_order=False).matrix)
    order = ped.user_order
    rng = np.random.default_rng(3)
    for _ in range(3):
        z_pedigree = rng.standard_normal(ped.size)
        z_user = z_pedigree[order]  # the model's z is labelled in the user's order
        u_user = u_of(z_user, 2.5)
        np.testing.assert_allclose(u_user, np.sqrt(2.5) * (chol @ z_pedigree)[order], atol=1e-12)


def _tabular_relationship(ids, sire, dam) -> np.ndarray:
    """Reference A by the tabular method, written independently of the package: parents are
    placed before offspring by a depth-first walk, then a_ij = ½(a_i,s + a_i,d)."""
    parents = {i: (s, d) for i, s, d in zip(ids, sire, dam, strict=True)}
    order: list[str] = []
    placed: set[str] = set()

    def place(animal):
        if animal is None or animal in placed:
            return
        for parent in parents.get(animal, (None, None)):
            place(parent)
        placed.add(animal)
        order.append(animal)

    for animal in ids:
        place(animal)
    position = {a: k for k, a in enumerate(order)}
    A = np.zeros((len(order), len(order)))
    for k, animal in enumerate(order):
        s, d = parents.get(animal, (None, None))
        si, di = position.get(s), position.get(d)
        for j in range(k):
            A[k, j] = A[j, k] = 0.5 * (
                (A[j, si] if si is not None else 0) + (A[j, di] if di is not None else 0)
            )
        A[k, k] = 1 + (0.5 * A[si, di] if si is not None and di is not None else 0)
    index = [position[a] for a in ids]
    return A[np.ix_(index, index)]


def test_pedigree_recursion_equals_cholesky_on_a_shuffled_inbred_pedigree():
    """A pedigree in no particular order, with inbreeding, unknown dams and parents without
    rows of their own: u = σu T D^½ z from the recursion has covariance σu² A, i.e.
    u(z) = σu L z for the Cholesky factor L of A in the pedigree's parents-first order."""
    import pymc as pm

    from bayes_animal.simulate import simulate_pedigree

    table = simulate_pedigree(
        n_founders=12, n_generations=5, n_per_generation=30, n_sires=3, unknown_dam=0.2, seed=5
    )
    table = table.iloc[14:]  # two founders lose their rows: added back as founders
    table = table.sample(frac=1.0, random_state=3).reset_index(drop=True)  # shuffled
    rng = np.random.default_rng(8)
    data = pd.DataFrame({"animal": table["id"].iloc[:80], "y": rng.standard_normal(80)})
    model = AnimalModel("y ~ 1", data, pedigree=table, priors="flat")
    ped = model.source.pedigree
    assert model.source.sampling.inbreeding.max() > 0.05  # inbred
    assert (ped.dam < 0).sum() > 20 and (ped.input_order < 0).sum() >= 1
    unknown = {"0"}
    ids = [str(a) for a in model.relmat.ids]  # the user's order (added founders first)
    rows = {str(i): (str(s), str(d)) for i, s, d in table.itertuples(index=False)}
    sire = [rows[a][0] if a in rows and rows[a][0] not in unknown else None for a in ids]
    dam = [rows[a][1] if a in rows and rows[a][1] not in unknown else None for a in ids]
    A = _tabular_relationship(ids, sire, dam)
    np.testing.assert_allclose(model.relmat.matrix, A, atol=1e-12)
    pm_model = model.build("noncentred")
    u_of = pm.compile(
        [pm_model["z_additive"], pm_model["var_additive"]], pm_model["u"], mode="FAST_COMPILE"
    )
    order = ped.user_order  # user position k ↔ pedigree position order[k]
    chol = np.linalg.cholesky(A[np.ix_(np.argsort(order), np.argsort(order))])
    for _ in range(3):
        z_pedigree = rng.standard_normal(ped.size)
        u_user = u_of(z_pedigree[order], 2.5)
        np.testing.assert_allclose(u_user, np.sqrt(2.5) * (chol @ z_pedigree)[order], atol=1e-10)


def _gaussian_moments(draws):
    return draws.mean(axis=0), np.cov(draws, rowvar=False)


def _exact_conditional(design, relmat, su, se):
    """Dense oracle of (b, u) | σ, y under a flat prior on b: means and full covariances.

    Cov(u | y) = σu² A − σu⁴ A Zᵀ P Z A (b integrated out), Cov(b | y) = (XᵀV⁻¹X)⁻¹,
    Cov(u | b, y) = σu² A − σu⁴ A Zᵀ V⁻¹ Z A; valid for a singular A too."""
    Z = design.effects[0].incidence().toarray()
    A, X, y = relmat.matrix, design.X, design.y
    V = su * Z @ A @ Z.T + se * np.eye(len(y))
    Vi = np.linalg.inv(V)
    cov_b = np.linalg.inv(X.T @ Vi @ X)
    b = cov_b @ X.T @ Vi @ y
    P = Vi - Vi @ X @ cov_b @ X.T @ Vi
    ZA = Z @ A
    return {
        "b": b,
        "cov_b": cov_b,
        "u": su * ZA.T @ P @ y,
        "cov_u": su * A - su**2 * ZA.T @ P @ ZA,
        "cov_u_given_b": su * A - su**2 * ZA.T @ Vi @ ZA,
        "u_given_b": lambda beta: su * ZA.T @ Vi @ (y - X @ beta),
    }


@pytest.mark.parametrize("layout", ["permutation", "general", "singular"])
def test_conditional_draws_have_the_exact_mean_and_full_covariance(layout):
    from bayes_animal import as_relationship, build_design, decompose

    if layout == "permutation":
        data, relmat = small_problem(8, q=12, n=12, unphenotyped=0)
        data["animal"] = relmat.ids[np.random.default_rng(0).permutation(12)]
    else:
        data, relmat = small_problem(8, q=12, n=18, unphenotyped=3)
    if layout == "singular":  # A = MᵀM/m with 5 markers: rank 5 < 12, no Cholesky factor
        codes = np.random.default_rng(5).integers(0, 3, size=(5, 12)).astype(float)
        relmat = as_relationship(codes.T @ codes / 5, ids=relmat.ids)
    design = build_design("y ~ 1 + x", data, relationship=relmat)
    problem = decompose(design, relmat)
    su, se = 1.5, 0.8
    S = 40_000
    rng = np.random.default_rng(4)
    beta, u = draw_fixed_and_breeding_values(
        problem, design, relmat, np.full(S, su), np.full(S, se), rng=rng
    )
    exact = _exact_conditional(design, relmat, su, se)
    mean_b, cov_b = _gaussian_moments(beta)
    sd_b = np.sqrt(np.diag(exact["cov_b"]))
    np.testing.assert_allclose(mean_b, exact["b"], atol=5 * sd_b.max() / np.sqrt(S))
    np.testing.assert_allclose(cov_b, exact["cov_b"], atol=0.03 * np.outer(sd_b, sd_b).max())
    mean_u, cov_u = _gaussian_moments(u)
    scale = np.diag(exact["cov_u"]).max()
    np.testing.assert_allclose(mean_u, exact["u"], atol=5 * np.sqrt(scale / S))
    # the whole covariance matrix, off-diagonal entries included (Monte Carlo SE ≈ scale/√S)
    np.testing.assert_allclose(cov_u, exact["cov_u"], atol=0.03 * scale)
    # the predictions at the same variances are the conditional means
    got = predict(design, relmat, variance=su, residual=se)
    np.testing.assert_allclose(got.blup["blup"], exact["u"], atol=1e-9)
    np.testing.assert_allclose(got.blup["pev"], np.diag(exact["cov_u"]), atol=1e-9)
    # u given a fixed b: mean σu² A Zᵀ V⁻¹ (y − Xb), covariance σu² A − σu⁴ A Zᵀ V⁻¹ Z A
    b_fixed = np.tile(exact["b"] + 0.3, (S, 1))
    u_given = draw_breeding_values(
        problem, design, relmat, b_fixed, np.full(S, su), np.full(S, se), rng=rng
    )
    mean_g, cov_g = _gaussian_moments(u_given)
    np.testing.assert_allclose(
        mean_g, exact["u_given_b"](exact["b"] + 0.3), atol=5 * np.sqrt(scale / S)
    )
    np.testing.assert_allclose(cov_g, exact["cov_u_given_b"], atol=0.03 * scale)


def test_singular_relationship_matrix_fits_with_both_parameterisations():
    """A = MᵀM/m from fewer markers than animals, with repeated records: REML, the marginal
    model (conditional draws) and the non-centred model all run (they factor A through its
    eigendecomposition, not a Cholesky factor that does not exist)."""
    from bayes_animal import as_relationship

    rng = np.random.default_rng(0)
    q = 40
    codes = rng.integers(0, 3, size=(15, q)).astype(float)
    ids = [f"a{i}" for i in range(q)]
    relmat = as_relationship(codes.T @ codes / 15, ids=ids)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(relmat.matrix)
    data = pd.DataFrame({"animal": np.repeat(ids, 2), "y": rng.standard_normal(2 * q)})
    model = AnimalModel("y ~ 1", data, relmat=relmat)
    options = {"draws": 60, "tune": 60, "chains": 1, "progressbar": False, "warn": False}
    for parameterisation in ("marginal", "noncentred"):
        fit = model.fit(parameterisation=parameterisation, random_seed=1, **options)
        assert np.isfinite(fit.idata.posterior["u"].values).all()
        assert fit.idata.posterior["u"].shape == (1, 60, q)


def test_option_errors(small):
    data, relmat = small
    model = AnimalModel("y ~ 1 + x", data, relmat=relmat)
    with pytest.raises(ModelError, match="Unknown sampler 'stan'.*pymc, nutpie, numpyro"):
        model.fit(sampler="stan")
    with pytest.raises(ModelError, match="Unknown parameterisation 'centred'"):
        model.fit(parameterisation="centred")
    with pytest.raises(ModelError, match="samples the fixed effects"):
        model.fit(parameterisation="noncentred", fixed="integrate")
    from bayes_animal.bayes.priors import NormalFixed, Priors

    normal = AnimalModel("y ~ 1 + x", data, relmat=relmat, priors=Priors(fixed=NormalFixed(10)))
    with pytest.raises(ModelError, match="only under a flat prior"):
        normal.fit(fixed="integrate")


@pytest.fixture(scope="module")
def seed_sim_fit():
    from conftest import shared_folder

    folder = shared_folder("seed_sim")
    model = AnimalModel(
        "response ~ 1 + fix", pd.read_csv(folder / "pheno.csv"), relmat=folder / "A.csv"
    )
    return folder, model.fit(random_seed=2026, progressbar=False)


def test_seed_sim_with_defaults(seed_sim_fit):
    folder, fit = seed_sim_fit
    assert fit.parameterisation == "marginal" and fit.sampler == "nutpie"
    assert "engine: spectral" in fit.notes
    assert fit.fixed_effects == "integrated"
    assert fit.reml_check["reml_in_hdi"].all()
    assert fit.diagnostics.max_r_hat <= 1.01
    assert fit.summary().loc["h2", "ess_bulk"] >= 1000
    assert fit.diagnostics.divergences == 0
    rrblup = pd.read_csv(folder / "blups_rrBLUP.csv").set_index("animal")["u_hat"]
    assert np.corrcoef(fit.ebv()["mean"].loc[rrblup.index], rrblup)[0, 1] > 0.999
    posterior = fit.idata.posterior
    assert posterior["u"].dims == ("chain", "draw", "animal")
    assert posterior["beta"].dims == ("chain", "draw", "fixed")
    assert list(posterior["fixed"].values) == ["Intercept", "fix"]
    assert posterior["animal"].values[0] == "ind0001"
    for key in ("bayes_animal_version", "model_options", "priors", "data_sha256"):
        assert key in fit.idata.attrs
    assert set(fit.timings) >= {"eigh", "compile", "sampling", "total"}


def test_fit_summary_dict_and_files(seed_sim_fit, tmp_path):
    import json

    _, fit = seed_sim_fit
    paths = fit.save(tmp_path)
    summary = json.loads(paths["summary"].read_text())
    assert set(summary["components"]) == {"additive", "residual"}
    assert summary["components"]["additive"]["mean"] == summary["sigma2_u"]["mean"]
    for name in ("sigma2_u", "sigma2_e", "h2"):
        assert set(summary[name]) >= {
            "mean",
            "median",
            "sd",
            "hdi_low",
            "hdi_high",
            "ess_bulk",
            "r_hat",
        }
    assert set(summary["reml"]) >= {"sigma2_u", "sigma2_e", "h2", "se", "beta", "loglik"}
    assert set(summary["diagnostics"]) >= {"divergences", "max_r_hat", "min_ess_bulk"}
    assert set(summary["timings"]) >= {"eigh", "compile", "sampling", "total"}
    ebv = pd.read_csv(paths["ebv"])
    assert list(ebv.columns) == ["id", "mean", "sd", "hdi_low", "hdi_high", "reliability"]
    import arviz as az

    back = az.from_netcdf(paths["posterior"])
    assert back.posterior["h2"].shape == (4, 1000)


def test_gryphon_posterior_matches_mcmcglmm():
    from conftest import shared_folder

    folder = shared_folder("gryphon")
    data = pd.read_csv(folder / "gryphon.csv")
    with pytest.warns(UserWarning, match="230 of 1084"):
        model = AnimalModel(
            "bwt ~ 1", data, pedigree=folder / "gryphonped.csv", priors="inverse_gamma"
        )
    fit = model.fit(random_seed=7, progressbar=False)
    summary = fit.summary()
    assert summary.loc["h2", "mean"] == pytest.approx(0.468, abs=0.03)
    assert summary.loc["sigma2:additive", "mean"] == pytest.approx(3.41, abs=0.2)
    assert fit.reml_check["reml_in_hdi"].all()
    assert len(fit.ebv()) == 1309


def test_parameterisations_agree_on_a_small_data_set():
    from bayes_animal import simulate_reference

    sim = simulate_reference(n=150, n_snps=300, seed=11)
    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    marginal = model.fit(
        parameterisation="marginal", random_seed=1, progressbar=False, draws=1000, tune=1000
    )
    noncentred = model.fit(
        parameterisation="noncentred",
        random_seed=1,
        progressbar=False,
        draws=1000,
        tune=1000,
        warn=False,
    )
    for name in ("sigma2:additive", "sigma2:residual", "h2"):
        a, b = marginal.summary().loc[name], noncentred.summary().loc[name]
        error = np.sqrt(a["sd"] ** 2 / a["ess_bulk"] + b["sd"] ** 2 / b["ess_bulk"])
        assert abs(a["mean"] - b["mean"]) < 4 * error, name
    ebv_m, ebv_n = marginal.ebv(), noncentred.ebv()
    error = np.sqrt(ebv_m["sd"] ** 2 / 1000 + ebv_n["sd"] ** 2 / 400)
    assert (np.abs(ebv_m["mean"] - ebv_n["mean"]) < 5 * error).mean() > 0.98
    assert np.corrcoef(ebv_m["mean"], ebv_n["mean"])[0, 1] > 0.99


@pytest.fixture(scope="module")
def small_sim_model():
    from bayes_animal import simulate_reference

    sim = simulate_reference(n=120, n_snps=200, seed=21)
    return AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)


def test_nutpie_sampler_gives_the_same_posterior(small_sim_model):
    pytest.importorskip("nutpie", reason="nutpie is in the test extras: make test installs it")
    pymc_fit = small_sim_model.fit(sampler="pymc", random_seed=3, progressbar=False, warn=False)
    nutpie_fit = small_sim_model.fit(sampler="nutpie", random_seed=3, progressbar=False, warn=False)
    assert nutpie_fit.sampler == "nutpie"
    assert '"sampler": "nutpie"' in nutpie_fit.idata.attrs["model_options"]
    assert nutpie_fit.idata.posterior["u"].dims == ("chain", "draw", "animal")
    for name in ("sigma2:additive", "h2"):
        a, b = pymc_fit.summary().loc[name], nutpie_fit.summary().loc[name]
        error = np.sqrt(a["sd"] ** 2 / a["ess_bulk"] + b["sd"] ** 2 / b["ess_bulk"])
        assert abs(a["mean"] - b["mean"]) < 4 * error, name


def test_numpyro_sampler_runs_or_says_how_to_install(small_sim_model):
    import importlib.util

    if importlib.util.find_spec("numpyro") is None:
        with pytest.raises(ModelError, match=r"'numpyro' sampler is not installed.*\[numpyro\]"):
            small_sim_model.fit(sampler="numpyro", progressbar=False)
        return
    fit = small_sim_model.fit(
        sampler="numpyro",
        random_seed=3,
        progressbar=False,
        warn=False,
        draws=300,
        tune=300,
        chains=2,
    )
    assert fit.sampler == "numpyro"
    assert fit.idata.posterior["h2"].shape == (2, 300)


def test_priors_change_the_posterior_and_are_recorded():
    from bayes_animal import simulate_reference
    from bayes_animal.bayes.priors import BetaH2, Priors

    sim = simulate_reference(n=120, n_snps=200, seed=21)
    options = {"random_seed": 4, "progressbar": False, "warn": False, "draws": 500, "tune": 500}
    strong = AnimalModel(
        "response ~ 1 + fix", sim.data, relmat=sim.relmat, priors=Priors(h2=BetaH2(a=2, b=40))
    ).fit(**options)  # prior mean 0.05
    default = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat).fit(**options)
    assert strong.summary().loc["h2", "mean"] < default.summary().loc["h2", "mean"] - 0.05
    assert "Beta(a=2, b=40) on h2" in strong.idata.attrs["priors"]
    assert "additive: HalfStudentT(nu=3" in default.idata.attrs["priors"]


def test_diagnostics_warn_with_advice():
    import warnings

    from bayes_animal import simulate_reference
    from bayes_animal.results.posterior import DiagnosticsWarning

    sim = simulate_reference(n=80, n_snps=100, seed=2)
    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = model.fit(draws=30, tune=30, chains=2, random_seed=1, progressbar=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, DiagnosticsWarning)]
    assert any("ESS < 400" in m and "draw more samples" in m for m in messages)
    assert not fit.diagnostics.ok and fit.diagnostics.min_ess_bulk < 400


def test_nutpie_noncentred_pedigree_starts_from_reml_and_converges():
    """Started at random, nutpie's non-centred chains fell into the spike of the joint density
    at σ² → 0 (h² → 1, R-hat 2); every sampler now starts from the REML estimate."""
    pytest.importorskip("nutpie", reason="nutpie is in the test extras: make test installs it")
    import warnings

    from conftest import shared_folder

    folder = shared_folder("gryphon")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnimalModel(
            "bwt ~ 1",
            pd.read_csv(folder / "gryphon.csv"),
            pedigree=folder / "gryphonped.csv",
            priors="inverse_gamma",
        )
    fit = model.fit(
        parameterisation="noncentred",
        sampler="nutpie",
        random_seed=1,
        progressbar=False,
        warn=False,
    )
    chain_means = fit.idata.posterior["h2"].mean("draw").values
    assert np.all(np.abs(chain_means - 0.47) < 0.06), chain_means
    assert fit.summary().loc["h2", "r_hat"] < 1.05


# -- several random effects -------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi():
    """A small simulated herd with a permanent environment and a group effect."""
    from conftest import herd_records

    return herd_records(n_animals=300, n_herds=6, groups=12, seed=3)


def _multi_model(multi, **options):
    import warnings

    data, pedigree = multi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AnimalModel("y ~ 1 + x + (1 | hy) + ide(animal)", data, pedigree=pedigree, **options)


def test_sparse_marginal_density_with_flat_priors_is_the_restricted_likelihood(multi):
    model = _multi_model(multi, priors="flat")
    pm_model = model.build("marginal")
    logp = pm_model.compile_logp(jacobian=False)
    names = model.parameters.names
    assert names == ("additive", "hy", "pe", "residual")
    rng = np.random.default_rng(0)
    for theta in rng.uniform(0.3, 3.0, size=(4, len(names))):
        point = {f"var_{n}_log__": np.log(t) for n, t in zip(names, theta, strict=True)}
        expected = model.mme.evaluate(theta, score=False).loglik  # = the dense oracle (test_mme)
        assert logp(point) == pytest.approx(expected, rel=1e-10)


def test_noncentred_density_with_several_effects_is_the_joint_normal(multi):
    """At fixed variances the density moves with z and b as Σ log N(z; 0, 1) +
    Σ log N(y; Xb + Σ_k Z_k u_k, σ²) with u_k = σ_k L_k z_k (L = chol(A) in pedigree order for
    the additive effect, I for the others)."""
    from scipy.stats import norm

    model = _multi_model(multi)
    design = model.design
    logp = model.build("noncentred").compile_logp(jacobian=False)
    sds = {"additive": 1.3, "hy": 0.7, "pe": 0.9, "residual": 1.4}
    structure = model.structures["additive"]
    order = structure.order
    A_pedigree = structure.dense().matrix[np.ix_(np.argsort(order), np.argsort(order))]
    chol = np.linalg.cholesky(A_pedigree)

    def joint(z, beta):
        mean = design.X @ beta
        for effect in design.effects:
            if effect.name == "additive":
                u = sds["additive"] * (chol @ z["additive"][np.argsort(order)])[order]
            else:
                u = sds[effect.name] * z[effect.name]
            mean = mean + u[effect.index]
        value = sum(norm.logpdf(v).sum() for v in z.values())
        return value + norm.logpdf(design.y, mean, sds["residual"]).sum()

    rng = np.random.default_rng(1)
    densities = []
    for _ in range(3):
        z = {e.name: rng.standard_normal(e.size) for e in design.effects}
        beta = rng.normal(size=design.n_fixed)
        point = {f"sd_{n}_log__": np.log(v) for n, v in sds.items()}
        point |= {f"z_{n}": v for n, v in z.items()} | {"beta": beta}
        densities.append(logp(point) - joint(z, beta))
    # the priors on the SDs (and the flat b) are the same at every point: a constant
    np.testing.assert_allclose(densities, densities[0], atol=1e-8)


def test_sparse_conditional_draws_are_exact(multi):
    """Perturb-and-solve on the MME: (b, u) | θ, y ~ N(ŵ, C(θ)⁻¹), checked against the dense
    mean and covariance."""
    from bayes_animal.bayes.conditional import draw_from_mixed_model

    model = _multi_model(multi)
    mme = model.mme
    theta = np.array([2.0, 0.8, 1.0, 2.0])
    S = 20_000
    draws = draw_from_mixed_model(mme, np.tile(theta, (S, 1)), rng=np.random.default_rng(2))
    lower = mme.pattern.copy()
    lower.data = mme.values(theta)
    lower = lower.toarray()
    C = lower + np.tril(lower, -1).T
    covariance = np.linalg.inv(C)
    mean = covariance @ (mme.W.T @ mme.design.y / theta[-1])  # one trait: R = σ² I
    sd = np.sqrt(np.diag(covariance))
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 5 * sd / np.sqrt(S))
    chosen = np.r_[0:3, mme.effect_slice("pe").start : mme.effect_slice("pe").start + 4]
    empirical = np.cov(draws[:, chosen], rowvar=False)
    np.testing.assert_allclose(
        empirical, covariance[np.ix_(chosen, chosen)], atol=0.05 * sd.max() ** 2
    )


@pytest.mark.slow
def test_parameterisations_agree_with_several_random_effects(multi):
    model = _multi_model(multi)
    options = {"random_seed": 3, "progressbar": False, "warn": False}
    fits = {
        p: model.fit(parameterisation=p, draws=600, **options)
        for p in ("marginal", "noncentred", "partial")
    }
    assert "engine: sparse" in fits["marginal"].notes
    keys = ("sigma2:additive", "sigma2:pe", "sigma2:hy", "sigma2:residual", "h2")
    for key in keys:
        a = fits["marginal"].summary().loc[key]
        for other in ("noncentred", "partial"):
            b = fits[other].summary().loc[key]
            error = np.sqrt(a["sd"] ** 2 / a["ess_bulk"] + b["sd"] ** 2 / b["ess_bulk"])
            assert abs(a["mean"] - b["mean"]) < 4.5 * error, (key, other)
    ebv = {p: f.ebv() for p, f in fits.items()}
    for other in ("noncentred", "partial"):
        assert np.corrcoef(ebv["marginal"]["mean"], ebv[other]["mean"])[0, 1] > 0.98
    assert set(fits["marginal"].effects) == {"additive", "hy", "pe"}
    assert len(fits["marginal"].ebv("hy")) == 12


def test_gryphon_model_4_matches_mcmcglmm():
    """bwt ~ sex + animal + byear + mother with MCMCglmm's priors (V = 1, nu = 0.002): REML
    inside every 95 % HDI and posterior means within Monte Carlo error of MCMCglmm's run
    (V_A 2.357, V_byear 0.944, V_mother 1.132, V_R 1.605, h² 0.390; its ESS of 62-66 for V_A
    and V_R allows ±0.15 there)."""
    import warnings

    from conftest import shared_folder

    folder = shared_folder("gryphon")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnimalModel(
            "bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)",
            pd.read_csv(folder / "gryphon.csv"),
            pedigree=folder / "gryphonped.csv",
            priors="inverse_gamma",
        )
    fit = model.fit(random_seed=4, progressbar=False)
    assert fit.reml_check["reml_in_hdi"].all()
    # the inverse-gamma(0.001, 0.001) prior piles mass near zero: a stray divergence in 4 000
    # draws is tolerated, a pattern of them is not
    assert fit.diagnostics.divergences <= 4 and fit.diagnostics.max_r_hat <= 1.01
    summary = fit.summary()
    mcmcglmm = {
        "sigma2:additive": (2.357, 0.15),
        "sigma2:byear": (0.944, 0.1),
        "sigma2:mother": (1.132, 0.1),
        "sigma2:residual": (1.605, 0.15),
        "h2": (0.390, 0.03),
    }
    for key, (value, tolerance) in mcmcglmm.items():
        assert summary.loc[key, "mean"] == pytest.approx(value, abs=tolerance), key
    assert set(fit.effects) == {"additive", "byear", "mother"}
    assert len(fit.ebv("mother")) == 394


def test_posterior_reliabilities_are_in_0_1_and_equal_remls_at_a_fixed_theta(seed_sim_fit):
    """The posterior reliability is 1 − E[PEV(θ)/(σ²(θ)kᵢᵢ)] over draws of θ: each ratio is in
    [0, 1], so the reliabilities are too (the Monte Carlo variance against a plug-in, which they
    replace, goes below 0 here); with every draw at the REML estimate it is REML's reliability
    exactly (the oracle)."""
    from bayes_animal.bayes.conditional import expected_reliability

    folder, fit = seed_sim_fit
    model = AnimalModel(
        "response ~ 1 + fix", pd.read_csv(folder / "pheno.csv"), relmat=folder / "A.csv"
    )
    reliability = fit.ebv()["reliability"].to_numpy()
    assert np.all((reliability >= 0) & (reliability <= 1))
    draws = fit.idata.posterior["u"].values.reshape(-1, len(reliability))
    plug_in = float(fit.idata.posterior["sigma2:additive"].mean()) * fit.diagonals["additive"]
    assert (1 - draws.var(axis=0, ddof=1) / plug_in).min() < reliability.min()
    reml = model.reml
    theta = np.array([reml.variance(n) for n in model.parameters.names])
    diagonals = {"additive": fit.diagonals["additive"]}
    at_reml = expected_reliability(model.mme, np.tile(theta, (5, 1)), diagonals)["additive"]
    expected = reml.predictions["additive"]["reliability"].loc[
        [str(i) for i in model.structures["additive"].ids]
    ]
    np.testing.assert_allclose(at_reml, expected.to_numpy(), atol=1e-8)


@pytest.mark.parametrize("data_set", ["gryphon", "seed_sim"])
def test_spectral_reliabilities_equal_the_mixed_model_equations(data_set):
    """The eigenbasis route (no equations: a singular or dense K is fine) equals the selected
    inverse of the mixed-model equations, over the same draws of θ: gryphon (Z not a
    permutation: animals without records) and seed_sim (one record per animal)."""
    from conftest import shared_folder

    from bayes_animal.bayes.conditional import expected_reliability, spectral_reliability

    folder = shared_folder(data_set)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if data_set == "gryphon":
            model = AnimalModel("bwt ~ 1 + C(sex)", pd.read_csv(folder / "gryphon.csv"),
                                pedigree=folder / "gryphonped.csv")  # fmt: skip
        else:
            model = AnimalModel("response ~ 1 + fix", pd.read_csv(folder / "pheno.csv"),
                                relmat=folder / "A.csv")  # fmt: skip
    reml = model.reml
    theta = np.array([reml.variance(n) for n in model.parameters.names])
    thetas = theta * np.random.default_rng(1).uniform(0.5, 1.5, size=(7, 2))
    eigenbasis = spectral_reliability(model.problem, model.design, model.relmat, thetas)
    structure = model.structures["additive"]
    equations = expected_reliability(model.mme, thetas, {"additive": structure.diagonal()})
    by_id = dict(zip(map(str, structure.ids), equations["additive"], strict=True))
    np.testing.assert_allclose(
        eigenbasis, [by_id[str(i)] for i in model.relmat.ids], rtol=1e-7, atol=1e-9
    )


def test_each_effects_reliabilities_reach_its_levels_in_the_posteriors_order():
    """A posterior whose every draw is the REML estimate, its levels listed in a shuffled
    order: each effect's reliabilities (additive, byear) are REML's for the same ids."""
    import xarray as xr
    from conftest import shared_folder

    from bayes_animal.bayes.engines import engine_for

    folder = shared_folder("gryphon")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnimalModel("bwt ~ 1 + C(sex) + (1 | byear)", pd.read_csv(folder / "gryphon.csv"),
                            pedigree=folder / "gryphonped.csv")  # fmt: skip
    reml = model.reml
    rng = np.random.default_rng(2)
    variables = {f"sigma2:{n}": (("chain", "draw"), np.full((1, 3), reml.variance(n)))
                 for n in model.parameters.names}  # fmt: skip
    expected = {}
    for name, variable in (("additive", "u"), ("byear", "u_byear")):
        ids = rng.permutation(reml.predictions[name].index.to_numpy())
        variables[variable] = (("chain", "draw", f"{name}_id"), np.zeros((1, 3, len(ids))))
        expected[name] = (f"{name}_id", ids, reml.predictions[name]["reliability"].loc[ids])
    posterior = xr.Dataset(variables, coords={dim: ids for dim, ids, _ in expected.values()})
    values, note = model._reliabilities(
        xr.DataTree.from_dict({"posterior": posterior}), engine_for(model, "sparse")
    )
    assert note == ""
    for name, (_, _, reference) in expected.items():
        np.testing.assert_allclose(values[name], reference.to_numpy(), atol=1e-7)


def test_a_fit_without_a_seed_draws_one_records_it_and_repeats_with_it():
    """No seed given: one is drawn, kept (AnimalFit.random_seed, the provenance, the notes),
    and a fit with it gives the same draws; two fits without a seed differ."""
    import json

    from bayes_animal import simulate_reference

    sim = simulate_reference(n=80, n_snps=100, seed=5)
    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    options = {"draws": 60, "tune": 60, "chains": 2, "progressbar": False, "warn": False}
    first = model.fit(**options)
    assert isinstance(first.random_seed, int)
    provenance = json.loads(first.idata.attrs["model_options"])
    assert provenance["random_seed"] == first.random_seed
    assert any(f"random seed: {first.random_seed} (drawn" in note for note in first.notes)
    again = model.fit(random_seed=first.random_seed, **options)
    np.testing.assert_array_equal(
        first.idata.posterior["h2"].values, again.idata.posterior["h2"].values
    )
    other = model.fit(**options)
    assert other.random_seed != first.random_seed


def test_printing_a_posterior_is_summary_sized():
    from bayes_animal import simulate_reference

    sim = simulate_reference(n=80, n_snps=100, seed=5)
    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    fit = model.fit(draws=60, tune=60, chains=2, progressbar=False, warn=False, random_seed=3)
    text = repr(fit)
    assert len(text.splitlines()) < 30 and "h2" in text and ".ebv()" in text
    assert "seed: 3" in text
    # every column stays apart, however wide its numbers or long the names: a mode of
    # -0.0004615 filled its ten characters and ran into the SE before ("nan-0.0004615")
    import dataclasses

    check = fit.reml_check.copy()
    check.loc["h2", ["reml_se", "mode"]] = [np.nan, -0.0004615]
    check = check.rename(index={"h2": "corr:additive:birth_weight:tarsus"})
    rows = dataclasses.replace(fit, reml_check=check).report().splitlines()
    row = next(line for line in rows if line.startswith("corr:additive"))
    fields = row.split()
    assert fields[0] == "corr:additive:birth_weight:tarsus"
    assert fields[2:4] == ["nan", "-0.0004615"]


def test_posterior_files_keep_what_was_asked(seed_sim_fit, tmp_path):
    """keep_draws='all' (default): b and u as compressed 4-byte floats (their values to 7
    digits), the variances exact, a file much smaller than 8-byte floats; 'variances': no b or
    u in the file (ranking from it is a clear error); 'none': no file; the EBV tables alike."""
    import arviz as az

    from bayes_animal import BayesAnimalError
    from bayes_animal.results.posterior import rank_posterior

    _, fit = seed_sim_fit
    sizes, ebv = {}, {}
    for keep in ("all", "variances", "none"):
        paths = fit.save(tmp_path / keep, keep_draws=keep)
        ebv[keep] = pd.read_csv(paths["ebv"])
        sizes[keep] = paths["posterior"].stat().st_size if "posterior" in paths else 0
    assert not (tmp_path / "none" / "posterior.nc").exists() and sizes["none"] == 0
    pd.testing.assert_frame_equal(ebv["all"], ebv["variances"])
    pd.testing.assert_frame_equal(ebv["all"], ebv["none"])
    kept = az.from_netcdf(tmp_path / "all" / "posterior.nc")
    u = fit.idata.posterior["u"].values
    assert kept.posterior["u"].dtype == np.float32
    np.testing.assert_allclose(kept.posterior["u"].values, u, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(kept.posterior["h2"].values, fit.idata.posterior["h2"].values)
    assert sizes["all"] < 0.6 * u.size * 8
    assert sizes["variances"] < sizes["all"] / 10
    import xarray as xr

    with pytest.raises(BayesAnimalError, match="keep_draws='variances'"):
        rank_posterior(xr.open_datatree(tmp_path / "variances" / "posterior.nc"))
    with pytest.raises(ValueError, match="keep_draws='some'"):
        fit.save(tmp_path / "x", keep_draws="some")


def test_reml_whitens_the_sampler_only_where_it_converged(small):
    """The REML covariance carried to the sampler's scale whitens NUTS only from a converged
    REML estimate: a maximiser stopped short leaves an information matrix that describes no
    posterior (one such start made NUTS take 440 steps a draw), so then there is none."""
    import dataclasses

    data, relmat = small
    model = AnimalModel("y ~ 1 + x", data, relmat=relmat)
    density = model.density()
    x0 = model._initial_x(density)
    jacobian = density.theta_jacobian(x0)
    assert model.reml.converged
    covariance = model._reml_covariance(jacobian)
    assert covariance is not None and np.all(np.linalg.eigvalsh(covariance) > 0)
    stopped = dataclasses.replace(model.reml.convergence, converged=False, reason="iteration limit")
    model._reml = dataclasses.replace(model.reml, convergence=stopped)
    assert not model.reml.converged
    assert model._reml_covariance(jacobian) is None


def test_every_fit_says_where_the_prior_moves_a_posterior():
    """A Gaussian fit reports the power-scaling sensitivity of each variance and ratio to its
    prior, whichever engine ran: 25 records say little about σ²A (the sparse engine's PyMC
    model here), so its default half-t prior moves it (above 0.05, with the message); 400
    say much (the spectral density under nutpie), and no quantity is moved."""
    from bayes_animal import simulate_reference

    few = simulate_reference(n=25, n_snps=100, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = AnimalModel("response ~ 1", few.data, relmat=few.relmat).fit(
            draws=300, tune=300, chains=2, random_seed=1, progressbar=False, warn=False
        )
    assert "engine: sparse" in fit.notes
    sensitivity = fit.diagnostics.sensitivity
    assert set(sensitivity.index) >= {"sigma2:additive", "sigma2:residual", "h2"}
    assert sensitivity["sigma2:additive"] > 0.05, sensitivity
    assert any("The prior moves the posterior of sigma2:additive" in m
               for m in fit.diagnostics.messages)  # fmt: skip
    assert fit.diagnostics.to_dict()["prior_sensitivity"]["sigma2:additive"] > 0.05
    # the prior's message informs, but does not fail the sampler's diagnostics by itself
    from dataclasses import replace

    informative = fit.diagnostics.informative
    assert len(informative) == 1 and "The prior moves" in informative[0]
    assert replace(fit.diagnostics, messages=informative).ok
    assert not replace(fit.diagnostics, messages=("R-hat > 1.01 …", *informative)).ok

    many = simulate_reference(n=400, n_snps=300, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = AnimalModel("response ~ 1", many.data, relmat=many.relmat).fit(
            random_seed=1, progressbar=False, warn=False
        )
    assert "engine: spectral" in fit.notes
    assert (fit.diagnostics.sensitivity < 0.05).all(), fit.diagnostics.sensitivity
    assert not any("The prior moves" in m for m in fit.diagnostics.messages)
