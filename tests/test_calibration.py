"""Slow statistical checks of the Bayesian model (``make test-slow``): simulation-based
calibration of the marginal model and recovery over simulated data sets."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from bayes_animal import RelationshipMatrix
from bayes_animal.bayes.model import AnimalModel
from bayes_animal.bayes.priors import HalfStudentT, Priors

pytestmark = pytest.mark.slow


def _relationship(q: int, seed: int) -> RelationshipMatrix:
    rng = np.random.default_rng(seed)
    codes = rng.binomial(2, 0.4, size=(3 * q, q)).astype(float)
    codes -= codes.mean(axis=1, keepdims=True)
    matrix = codes.T @ codes / (3 * q) + 0.05 * np.eye(q)
    return RelationshipMatrix(
        ids=np.array([f"a{i}" for i in range(q)], dtype=object), matrix=matrix
    )


def test_simulation_based_calibration_of_the_marginal_model():
    """Talts et al. (2018): draw (σu, σ, b) from the prior, simulate y, fit; the rank of each
    true value among the posterior draws is uniform when the sampler and the model agree."""
    q, replicates, thin_to = 60, 60, 99
    relmat = _relationship(q, seed=0)
    priors = Priors(default=HalfStudentT(nu=3, scale=1.0))
    rng = np.random.default_rng(2024)
    chol = np.linalg.cholesky(relmat.matrix)
    ranks = {"sigma2:additive": [], "sigma2:residual": [], "h2": []}
    for replicate in range(replicates):
        sigma_u = abs(rng.standard_t(3))
        sigma_e = abs(rng.standard_t(3))
        u = sigma_u * chol @ rng.standard_normal(q)
        x = rng.standard_normal(q)
        # b integrated out under a flat prior: any fixed b gives the same restricted posterior
        y = 1.0 + 0.5 * x + u + sigma_e * rng.standard_normal(q)
        data = pd.DataFrame({"animal": relmat.ids, "x": x, "y": y})
        model = AnimalModel("y ~ 1 + x", data, relmat=relmat, priors=priors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = model.fit(
                draws=500, tune=500, chains=2, random_seed=replicate, progressbar=False, warn=False
            )
        truth = {
            "sigma2:additive": sigma_u**2,
            "sigma2:residual": sigma_e**2,
            "h2": sigma_u**2 / (sigma_u**2 + sigma_e**2),
        }
        _add_ranks(ranks, fit, truth, thin_to)
    _assert_uniform(ranks, thin_to)


def _add_ranks(ranks: dict[str, list[int]], fit, truth: dict[str, float], thin_to: int) -> None:
    """Each true value's rank among ``thin_to`` evenly thinned posterior draws."""
    for name, value in truth.items():
        draws = np.asarray(fit.idata.posterior[name].values).ravel()
        thinned = draws[:: max(len(draws) // thin_to, 1)][:thin_to]
        ranks[name].append(int(np.sum(thinned < value)))


def _assert_uniform(ranks: dict[str, list[int]], thin_to: int) -> None:
    from scipy.stats import chisquare

    for name, values in ranks.items():
        counts = np.histogram(values, bins=5, range=(0, thin_to + 1))[0]
        p_value = chisquare(counts).pvalue
        print(f"SBC {name}: rank counts per fifth {counts.tolist()}, chi-square p = {p_value:.3f}")
        assert p_value > 0.001, (name, counts)


def test_simulation_based_calibration_of_the_sparse_marginal_model_with_several_effects():
    """The default for several random effects (every effect integrated out through the sparse
    MME, NUTS over the variances, a PyTensor Op for the likelihood): draw the three SDs from
    their half-t priors, simulate animal + group + residual on a pedigree, fit; ranks uniform."""
    from bayes_animal.simulate import simulate_herd_pedigree

    replicates, thin_to = 60, 99
    table = simulate_herd_pedigree(n_animals=160, n_generations=3, n_herds=5, seed=5)
    pedigree = table[["id", "sire", "dam"]]
    probe = AnimalModel(
        "y ~ 1",
        pd.DataFrame({"animal": table["id"], "g": "g0", "y": 0.0}),
        pedigree=pedigree,
    )
    relationship = probe.structures["additive"].dense()  # A with its own ids
    chol = np.linalg.cholesky(relationship.matrix)
    ids = np.asarray(relationship.ids)
    priors = Priors(default=HalfStudentT(nu=3, scale=1.0))
    rng = np.random.default_rng(7)
    ranks = {"sigma2:additive": [], "sigma2:g": [], "sigma2:residual": [], "h2": []}
    for replicate in range(replicates):
        sd = {name: abs(rng.standard_t(3)) for name in ("additive", "g", "residual")}
        u = pd.Series(sd["additive"] * chol @ rng.standard_normal(len(ids)), index=ids)
        animals = rng.choice(ids, size=200)
        groups = rng.integers(0, 8, size=200)
        c = sd["g"] * rng.standard_normal(8)
        y = 2.0 + u.loc[animals].to_numpy() + c[groups] + sd["residual"] * rng.standard_normal(200)
        data = pd.DataFrame({"animal": animals, "g": [f"g{k}" for k in groups], "y": y})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AnimalModel("y ~ 1 + (1 | g)", data, pedigree=pedigree, priors=priors)
            fit = model.fit(
                draws=500, tune=500, chains=2, random_seed=replicate, progressbar=False, warn=False
            )
        assert fit.parameterisation == "marginal" and "engine: sparse" in fit.notes
        variances = {name: value**2 for name, value in sd.items()}
        truth = {f"sigma2:{name}": value for name, value in variances.items()}
        truth["h2"] = variances["additive"] / sum(variances.values())
        _add_ranks(ranks, fit, truth, thin_to)
    _assert_uniform(ranks, thin_to)


def test_recovery_of_maternal_effects():
    """Direct and maternal genetic effects with their covariance (G0 ⊗ A) on a simulated herd:
    the truth inside every 95 % HDI, REML inside every HDI, no divergences, and the posterior
    means of the maternal breeding values correlated with the true ones."""
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

    herd = simulate_herd_pedigree(n_animals=3000, n_generations=6, seed=21)
    truth = {"additive": 1.0, "maternal": 0.6, "additive:maternal": -0.25, "residual": 1.2}
    sim = simulate_records(herd, variances=truth, phenotyped=0.9, seed=22)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnimalModel(
            "y ~ 1 + x",
            sim.data,
            pedigree=herd[["id", "sire", "dam"]],
            maternal="dam",
            maternal_covariance=True,
        )
        fit = model.fit(random_seed=3, progressbar=False, warn=False)
    check = fit.reml_check
    assert check["reml_in_hdi"].all()
    expected = {
        "sigma2:additive": 1.0,
        "sigma2:maternal": 0.6,
        "sigma2:residual": 1.2,
        "cov:additive:maternal": -0.25,
        "corr:additive:maternal": -0.25 / np.sqrt(0.6),
    }
    for key, value in expected.items():
        assert check.loc[key, "hdi_low"] <= value <= check.loc[key, "hdi_high"], key
    assert fit.diagnostics.divergences == 0
    ebv = fit.ebv("maternal")
    true_maternal = sim.effects["maternal"].reindex(ebv.index)
    assert np.corrcoef(ebv["mean"], true_maternal)[0, 1] > 0.4


def test_recovery_over_simulated_data_sets():
    """Posterior means of h² scatter around the truth; the 95 % HDIs cover it."""
    from bayes_animal import simulate_reference

    covered, errors = 0, []
    seeds = range(6)
    for seed in seeds:
        sim = simulate_reference(n=400, n_snps=500, seed=100 + seed)
        model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
        fit = model.fit(random_seed=seed, progressbar=False, warn=False)
        row = fit.reml_check.loc["h2"]
        covered += row["hdi_low"] <= sim.truth.h2 <= row["hdi_high"]
        errors.append((row["mean"] - sim.truth.h2) / fit.summary().loc["h2", "sd"])
    assert covered >= len(seeds) - 1
    assert abs(np.mean(errors)) < 3 / np.sqrt(len(seeds))


@pytest.mark.timeout(1800)  # 40 fits of the marginal model of two traits
def test_simulation_based_calibration_of_two_traits():
    """The default for several traits (the marginal model over G0 and R0, half-t scales and
    LKJ(2) correlations, nutpie on the hand-derived density): draw every SD and both
    correlations from the prior, simulate two traits with 20 % of the second missing, fit;
    the ranks of the truth among the draws are uniform."""
    q, replicates, thin_to = 60, 40, 99
    relmat = _relationship(q, seed=3)
    chol = np.linalg.cholesky(relmat.matrix)
    priors = Priors(default=HalfStudentT(nu=3, scale=1.0))
    rng = np.random.default_rng(11)
    names = (
        "sigma2:additive:y1", "sigma2:additive:y2", "sigma2:residual:y1",
        "corr:additive:y1:y2", "corr:residual:y1:y2", "h2:y2",
    )  # fmt: skip
    ranks: dict[str, list[int]] = {name: [] for name in names}
    for replicate in range(replicates):
        sd = {k: abs(rng.standard_t(3, 2)) for k in ("additive", "residual")}
        r = {k: 2.0 * rng.beta(2.0, 2.0) - 1.0 for k in ("additive", "residual")}
        matrices = {
            k: np.array([[sd[k][0] ** 2, r[k] * sd[k][0] * sd[k][1]],
                         [r[k] * sd[k][0] * sd[k][1], sd[k][1] ** 2]])
            for k in sd
        }  # fmt: skip
        u = chol @ rng.standard_normal((q, 2)) @ np.linalg.cholesky(matrices["additive"]).T
        e = rng.standard_normal((q, 2)) @ np.linalg.cholesky(matrices["residual"]).T
        y = np.array([[1.0, 2.0]]) + u + e
        y[rng.random(q) < 0.2, 1] = np.nan
        data = pd.DataFrame({"animal": relmat.ids, "y1": y[:, 0], "y2": y[:, 1]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AnimalModel("cbind(y1, y2) ~ 1", data, relmat=relmat, priors=priors)
            fit = model.fit(
                draws=400, tune=400, chains=2, random_seed=replicate, progressbar=False, warn=False
            )
        truth = {
            "sigma2:additive:y1": matrices["additive"][0, 0],
            "sigma2:additive:y2": matrices["additive"][1, 1],
            "sigma2:residual:y1": matrices["residual"][0, 0],
            "corr:additive:y1:y2": r["additive"],
            "corr:residual:y1:y2": r["residual"],
            "h2:y2": matrices["additive"][1, 1]
            / (matrices["additive"][1, 1] + matrices["residual"][1, 1]),
        }
        _add_ranks(ranks, fit, truth, thin_to)
    _assert_uniform(ranks, thin_to)


def test_simulation_based_calibration_of_the_exact_threshold_model():
    """The exact (non-centred) model of a threshold trait: draw σ_A from its half-t prior and
    b from its Normal prior, simulate two 0/1 records per animal on a genomic relationship
    (probit, residual 1), fit; the ranks of σ²_A and the liability h² are uniform."""
    from bayes_animal.bayes.priors import NormalFixed

    q, replicates, thin_to = 60, 60, 99
    relmat = _relationship(q, seed=3)
    priors = Priors(default=HalfStudentT(nu=3, scale=1.0), fixed=NormalFixed(scale=1.0))
    rng = np.random.default_rng(2026)
    chol = np.linalg.cholesky(relmat.matrix)
    ranks = {"sigma2:additive": [], "h2": []}
    animal = np.repeat(relmat.ids, 2)
    for replicate in range(replicates):
        sigma_a = abs(rng.standard_t(3))
        b = rng.standard_normal(2)
        u = sigma_a * chol @ rng.standard_normal(q)
        x = rng.standard_normal(2 * q)
        liability = b[0] + b[1] * x + np.repeat(u, 2) + rng.standard_normal(2 * q)
        y = (liability > 0).astype(int)
        if y.all() or not y.any():
            continue  # no information on the liabilities: the data set is refused, not fitted
        data = pd.DataFrame({"animal": animal, "x": x, "y": y})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AnimalModel("y ~ 1 + x", data, relmat=relmat, priors=priors, family="threshold")
            fit = model.fit(
                parameterisation="noncentred", draws=500, tune=500, chains=2,
                random_seed=replicate, progressbar=False, warn=False,
            )  # fmt: skip
        truth = {"sigma2:additive": sigma_a**2, "h2": sigma_a**2 / (sigma_a**2 + 1.0)}
        _add_ranks(ranks, fit, truth, thin_to)
    assert len(ranks["h2"]) >= replicates - 5
    _assert_uniform(ranks, thin_to)


def test_simulation_based_calibration_of_the_exact_count_model():
    """The exact (non-centred) model of an overdispersed count: draw σ_A and the
    observation-level σ from their half-t priors and b from its Normal prior, simulate two
    Poisson records per animal on a genomic relationship (log link, each record its own
    latent effect), fit; the ranks of both variances and the latent h² are uniform."""
    from bayes_animal.bayes.priors import NormalFixed

    q, replicates, thin_to = 60, 60, 99
    relmat = _relationship(q, seed=3)
    priors = Priors(default=HalfStudentT(nu=3, scale=0.5), fixed=NormalFixed(scale=1.0))
    rng = np.random.default_rng(2027)
    chol = np.linalg.cholesky(relmat.matrix)
    ranks = {"sigma2:additive": [], "sigma2:residual": [], "h2": []}
    animal = np.repeat(relmat.ids, 2)
    for replicate in range(replicates):
        sigma_a, sigma_units = np.abs(0.5 * rng.standard_t(3, size=2))
        b = rng.standard_normal()
        u = sigma_a * chol @ rng.standard_normal(q)
        latent = b + np.repeat(u, 2) + sigma_units * rng.standard_normal(2 * q)
        y = rng.poisson(np.exp(latent))
        data = pd.DataFrame({"animal": animal, "y": y})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AnimalModel("y ~ 1", data, relmat=relmat, priors=priors, family="poisson")
            fit = model.fit(
                parameterisation="noncentred", draws=500, tune=500, chains=2,
                random_seed=replicate, progressbar=False, warn=False,
            )  # fmt: skip
        truth = {
            "sigma2:additive": sigma_a**2,
            "sigma2:residual": sigma_units**2,
            "h2": sigma_a**2 / (sigma_a**2 + sigma_units**2),
        }
        _add_ranks(ranks, fit, truth, thin_to)
    _assert_uniform(ranks, thin_to)


@pytest.mark.parametrize(("h2", "cut"), [(0.1, 0.5), (0.5, 1.5)], ids=["h2=0.1", "h2=0.5"])
def test_recovery_of_an_ordinal_trait(h2, cut):
    """Three ordered categories from a liability on 3 000 animals of a herd pedigree
    (cumulative probit, residual 1, the first cut-point 0): over three simulated data sets
    the exact posterior's 95 % HDIs of h², σ²_A, the second cut-point and the intercept hold
    the truth in at least eight of the twelve checks, and the means' errors do not lean one
    way."""
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

    additive = h2 / (1.0 - h2)
    truth = {"h2": h2, "sigma2:additive": additive}
    covered, checks, errors = 0, 0, []
    for seed in (21, 22, 23):
        pedigree = simulate_herd_pedigree(n_animals=3_000, n_generations=5, n_herds=20, seed=seed)
        # the Gaussian liability (residual 1) of every record, cut at 0 and ``cut``
        sim = simulate_records(
            pedigree, variances={"additive": additive, "residual": 1.0}, mean=0.3, seed=seed
        )
        data = sim.data.copy()
        data["y"] = np.digitize(data["y"], [0.0, cut]) + 1  # categories 1, 2, 3
        model = AnimalModel("y ~ x", data, pedigree=sim.pedigree, family="ordinal")
        fit = model.fit(random_seed=seed, progressbar=False, warn=False)
        summary = fit.summary()
        for name, value in truth.items():
            row = summary.loc[name]
            covered += bool(row["hdi_low"] <= value <= row["hdi_high"])
            errors.append((row["mean"] - value) / row["sd"])
            checks += 1
        cutpoints = np.asarray(fit.idata.posterior["cutpoints"].values)[..., 1].ravel()
        intercept = np.asarray(fit.idata.posterior["beta"].values)[..., 0].ravel()
        for draws, value in ((cutpoints, cut), (intercept, 0.3)):
            low, high = np.quantile(draws, [0.025, 0.975])
            covered += bool(low <= value <= high)
            errors.append((draws.mean() - value) / draws.std())
            checks += 1
        assert fit.diagnostics.max_r_hat <= 1.05
    assert covered >= checks - 4, (covered, checks)
    assert abs(np.mean(errors)) < 3 / np.sqrt(len(errors))
