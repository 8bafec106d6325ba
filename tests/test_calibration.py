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
    from scipy.stats import chisquare

    q, replicates, thin_to = 60, 60, 99
    relmat = _relationship(q, seed=0)
    priors = Priors(genetic=HalfStudentT(nu=3, scale=1.0), residual=HalfStudentT(nu=3, scale=1.0))
    rng = np.random.default_rng(2024)
    chol = np.linalg.cholesky(relmat.matrix)
    ranks = {"sigma2_u": [], "sigma2_e": [], "h2": []}
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
            "sigma2_u": sigma_u**2,
            "sigma2_e": sigma_e**2,
            "h2": sigma_u**2 / (sigma_u**2 + sigma_e**2),
        }
        for name, value in truth.items():
            draws = np.asarray(fit.idata.posterior[name].values).ravel()
            thinned = draws[:: max(len(draws) // thin_to, 1)][:thin_to]
            ranks[name].append(int(np.sum(thinned < value)))
    for name, values in ranks.items():
        counts = np.histogram(values, bins=5, range=(0, thin_to + 1))[0]
        p_value = chisquare(counts).pvalue
        print(f"SBC {name}: rank counts per fifth {counts.tolist()}, chi-square p = {p_value:.3f}")
        assert p_value > 0.001, (name, counts)


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
