"""The engine objects: each owns what the issue lists (likelihood, density, draws, sampler,
cost); the spectral and sparse engines give the same density and, at fixed variances, draws of
b and u whose means are the BLUE and BLUP of the mixed-model equations and whose spread is
their prediction error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from bayes_animal import AnimalModel
from bayes_animal.bayes.engines import ENGINE_CLASSES, engine_for
from bayes_animal.estimation.sparse import solve_at
from bayes_animal.simulate import simulate_pedigree, simulate_records


@pytest.fixture(scope="module")
def model():
    table = simulate_pedigree(
        n_founders=40, n_generations=3, n_per_generation=60, n_sires=8, seed=3
    )
    sim = simulate_records(table, variances={"additive": 1.0, "residual": 1.5}, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AnimalModel("y ~ 1 + x", sim.data, pedigree=table)


def test_every_engine_says_what_it_is(model):
    assert set(ENGINE_CLASSES) == {
        "spectral", "sparse", "canonical", "noncentred", "partial", "laplace", "latent",
    }  # fmt: skip
    assert not ENGINE_CLASSES["laplace"].gaussian  # tested on its families (test_families.py)
    assert not ENGINE_CLASSES["latent"].gaussian  # tested in test_latent.py
    assert ENGINE_CLASSES["latent"].transient == ("latent",)
    assert ENGINE_CLASSES["canonical"].several_traits_only  # tested in test_canonical.py
    for name, cls in ENGINE_CLASSES.items():
        if not cls.gaussian or cls.several_traits_only:
            continue
        engine = engine_for(model, name)
        assert engine.name == name and cls.default_sampler in ("pymc", "nutpie")
        assert engine.parameterisation in ("marginal", "noncentred", "partial")
        assert engine.cost(10_000) > 0
        assert (engine.density() is not None) == (name in ("spectral", "sparse"))
        assert engine.marginal == (name in ("spectral", "sparse"))
        if engine.marginal:  # nutpie on the hand-derived density (sampler_choice.md's medians)
            assert cls.default_sampler == "nutpie"
    assert ENGINE_CLASSES["noncentred"].fixed_options == ("sample",)
    assert ENGINE_CLASSES["sparse"].fixed_options == ("integrate",)


def test_spectral_and_sparse_engines_have_one_density(model):
    spectral = engine_for(model, "spectral").density()
    sparse = engine_for(model, "sparse").density()
    x = spectral.unconstrained(model._initial_values())
    for shift in (0.0, 0.3, -0.5):
        a, ga = spectral(x + shift)
        b, gb = sparse(x + shift)
        assert a == pytest.approx(b, rel=1e-10)
        np.testing.assert_allclose(ga, gb, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["spectral", "sparse"])
def test_draws_at_fixed_variances_have_the_blup_as_mean_and_the_pev_as_variance(model, name):
    variances = {"additive": 1.2, "residual": 1.4}
    n = 4000
    posterior = xr.Dataset(
        {f"sigma2:{k}": (("chain", "draw"), np.full((1, n), v)) for k, v in variances.items()},
        coords={"chain": [0], "draw": np.arange(n)},
    )
    draws = engine_for(model, name).draws(posterior, "integrate", np.random.default_rng(1))
    exact = solve_at(model.design, model.structures, variances)
    blup = exact.predictions["additive"]
    u = draws["u"]
    se = np.sqrt(blup["pev"].to_numpy() / n)
    z = (u.mean(axis=0) - blup["blup"].to_numpy()) / se
    assert np.abs(z).max() < 5.0  # 220 animals: |z| < 5 everywhere unless the mean is wrong
    ratio = u.var(axis=0) / blup["pev"].to_numpy()
    assert 0.85 < np.median(ratio) < 1.15
    beta_z = (draws["beta"].mean(axis=0) - exact.beta.to_numpy()) / (
        exact.beta_se.to_numpy() / np.sqrt(n)
    )
    assert np.abs(beta_z).max() < 5.0
