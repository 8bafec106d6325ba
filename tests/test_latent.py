"""The latent values' model of a family with an observation-level effect
(:mod:`bayes_animal.bayes.latent`): its density against the dense integral over b and u, its
gradient, the exact draws of b and u given the latent values, the same posterior as the
non-centred joint, the chooser, and the errors where it does not serve."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from conftest import dense_restricted_loglik, shared_folder
from scipy import stats

from bayes_animal import AnimalModel
from bayes_animal.bayes.conditional import draw_from_mixed_model
from bayes_animal.bayes.engines import NonCentredEngine, engine_for
from bayes_animal.bayes.model import ModelError
from bayes_animal.bayes.sampling import Whitening
from bayes_animal.choice import (
    JOINT_SECONDS_PER_COORDINATE,
    LATENT_COST_LIMIT,
    LATENT_FROM,
    choose_family_engine,
    marginal_gradient_seconds,
)
from bayes_animal.cli.options import _parser
from bayes_animal.linalg.mme import MixedModelEquations
from bayes_animal.simulate import simulate_herd_pedigree, simulate_records


def _counts(n_animals: int, mean: float, residual: float, seed: int):
    pedigree = simulate_herd_pedigree(n_animals=n_animals, n_generations=3, n_herds=6, seed=seed)
    return simulate_records(
        pedigree, variances={"additive": 0.3, "herd": 0.1, "residual": residual},
        groups={"herd": 6}, mean=mean, seed=seed, family="poisson",
    )  # fmt: skip


@pytest.fixture(scope="module")
def small():
    """Counts on 60 animals: small enough for the dense V."""
    sim = _counts(60, 1.5, 0.2, seed=3)
    return AnimalModel("y ~ x + (1|herd)", sim.data, pedigree=sim.pedigree, family="poisson")


def _dense_restricted(model: AnimalModel, theta: np.ndarray, latent: np.ndarray) -> float:
    r""":math:`\log \int N(l; Xb, V)\,db + \tfrac12 \log|X^\top X|` with the dense
    :math:`V = \sum_k \sigma_k^2 Z_k K_k Z_k^\top + \sigma_e^2 I` — the oracle."""
    design, index = model.design, model.parameters.index
    n = design.n_records
    V = theta[index("residual")] * np.eye(n)
    for effect in design.effects:
        Z = effect.incidence().toarray()
        K = model.structures[effect.name].dense().matrix if effect.genetic else np.eye(Z.shape[1])
        V += theta[index(effect.name)] * Z @ K @ Z.T
    return dense_restricted_loglik(V, design.X, latent)


def test_latent_density_is_the_prior_the_dense_integral_and_the_counts(small):
    """log p(x, l | y) = the variances' prior (with the transforms' Jacobian) + log ∫ N(l; Xb,
    V) db (the dense oracle, up to X's constant) + Σ log Poisson(y_i | e^{l_i})."""
    density = engine_for(small, "latent").density()
    rng = np.random.default_rng(0)
    y = small.design.y
    for scale in (0.5, 1.0, 2.0):
        x = np.log([0.55, 0.3, 0.45]) + np.log(scale) / 2
        latent = np.log(y + 0.5) + 0.1 * rng.standard_normal(len(y))
        value, _ = density(np.concatenate([x, latent]))
        theta = density.theta(x)
        prior, _ = density.marginal.evaluate(x, lambda t: (0.0, np.zeros_like(t)))
        counts = stats.poisson.logpmf(y, np.exp(latent)).sum()
        expected = prior + _dense_restricted(small, theta, latent) + counts
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-8)


def test_latent_density_has_the_gradient_of_its_value(small):
    """Central differences of the value along every variance coordinate and a few latent
    values equal the gradient (the score in θ, −Pl and y − e^l)."""
    density = engine_for(small, "latent").density()
    y = small.design.y
    rng = np.random.default_rng(1)
    latent = np.log(y + 0.5) + 0.05 * rng.normal(size=len(y))
    point = np.concatenate([np.log([0.6, 0.25, 0.4]), latent])
    _, gradient = density(point)
    k = density.k
    for i in [*range(k), k, k + 7, k + len(y) - 1]:
        step = np.zeros_like(point)
        step[i] = 1e-5
        difference = (density(point + step)[0] - density(point - step)[0]) / 2e-5
        assert gradient[i] == pytest.approx(difference, rel=1e-5, abs=1e-6), i


def test_latent_density_is_refused_for_a_family_other_than_poisson(small):
    """The records' term is the Poisson family's: another family is an error naming it,
    not a density of the wrong records."""
    from bayes_animal.bayes.latent import LatentDensity
    from bayes_animal.spec.family import Family

    density = engine_for(small, "latent").density()
    binary = Family("binomial", "probit")
    with pytest.raises(ValueError, match="for Poisson records.*binomial"):
        LatentDensity(density.marginal, small.mme, binary, density.y, density.trials)


def test_draws_given_latent_values_are_the_gaussian_models_with_them_as_records(small):
    """b and every u given θ and l are drawn exactly as the Gaussian animal model's with l
    as its records: the same draws, bit for bit, as equations built on a design with y = l."""
    latent = np.log(small.design.y + 0.5)
    thetas = np.array([[0.4, 0.1, 0.3], [0.2, 0.2, 0.1]])
    with_latent = draw_from_mixed_model(
        small.mme, thetas, rng=np.random.default_rng(5), ys=np.vstack([latent, latent + 0.1])
    )
    for k, values in enumerate((latent, latent + 0.1)):
        design = dataclasses.replace(small.design, y=values)
        equations = MixedModelEquations(design, small.structures, small.parameters)
        rng = np.random.default_rng(5)
        if k == 1:  # the second draw's generator has given the first's noise already
            rng.standard_normal(small.mme.size)
        expected = draw_from_mixed_model(equations, thetas[k : k + 1], rng=rng)
        np.testing.assert_array_equal(with_latent[k], expected[0])


def test_whitening_pulls_a_gradient_back_by_its_transpose():
    """x = x0 + L z with L = [dense block; deviations]: the gradient in z is Lᵀ g."""
    rng = np.random.default_rng(2)
    covariance = np.array([[2.0, 0.3], [0.3, 1.0]])
    whitening = Whitening.of(5, covariance, np.array([0.5, 2.0, 0.1]))
    z, g = rng.normal(size=5), rng.normal(size=5)
    assert g @ whitening.forward(z) == pytest.approx(whitening.pullback(g) @ z, rel=1e-12)
    rows = rng.normal(size=(4, 5))
    np.testing.assert_allclose(whitening.forward(rows)[2], whitening.forward(rows[2]))
    assert np.allclose(whitening.forward(np.eye(5))[:, 3], [0, 0, 0, np.sqrt(2.0), 0])


def test_the_latent_model_has_the_exact_joint_posterior():
    """Both exact models of the same counts — the latent values with b and u integrated, and
    the non-centred joint — give the same posterior: the variances' means within five Monte
    Carlo standard errors, the breeding values' means correlated above 0.99. The latent
    values leave the posterior once b and u are drawn."""
    sim = _counts(400, 2.0, 0.2, seed=8)
    fits = {}
    for parameterisation in ("latent", "noncentred"):
        model = AnimalModel("y ~ x + (1|herd)", sim.data, pedigree=sim.pedigree, family="poisson")
        fits[parameterisation] = model.fit(
            parameterisation=parameterisation, draws=500, chains=2, random_seed=4,
            progressbar=False, warn=False,
        )  # fmt: skip
    latent, joint = fits["latent"], fits["noncentred"]
    options = json.loads(latent.idata.attrs["model_options"])
    assert (options["tune"], options["target_accept"]) == (500, 0.6)  # its measured defaults
    assert "latent" not in latent.idata.posterior
    assert any("engine: latent" in note for note in latent.notes)
    a, b = latent.summary(), joint.summary()
    for name in ("sigma2:additive", "sigma2:residual", "h2"):
        error = np.hypot(a.loc[name, "sd"] / a.loc[name, "ess_bulk"] ** 0.5,
                         b.loc[name, "sd"] / b.loc[name, "ess_bulk"] ** 0.5)  # fmt: skip
        assert abs(a.loc[name, "mean"] - b.loc[name, "mean"]) < 5 * error, name
    ebv = pd.concat([latent.ebv()["mean"], joint.ebv()["mean"]], axis=1)
    assert ebv.corr().iloc[0, 1] > 0.99


def test_auto_samples_the_latent_values_where_the_records_pin_them():
    """The chooser reads how much of their latent variance the records resolve: large counts
    (means in the tens) take the latent values' model, small ones the non-centred joint."""
    family = "poisson(log, overdispersion)"
    assert choose_family_engine(family, None, LATENT_FROM + 0.01).engine == "latent"
    assert choose_family_engine(family, None, LATENT_FROM - 0.01).engine == "noncentred"
    assert choose_family_engine(family, None, None).engine == "noncentred"
    large = _counts(300, 3.0, 0.05, seed=4)
    model = AnimalModel("y ~ x + (1|herd)", large.data, pedigree=large.pedigree, family="poisson")
    assert model._latent_information() >= LATENT_FROM
    _, engine, fixed, notes = model._resolve("auto", "auto")
    assert (engine, fixed) == ("latent", "integrate")
    assert any("chose 'latent'" in note for note in notes)
    # its density is sampled by nutpie alone: under PyMC's NUTS the other engines
    assert model._resolve("auto", "auto", sampler="pymc")[1] in ("noncentred", "laplace")
    few = _counts(300, -0.5, 0.2, seed=4)
    model = AnimalModel("y ~ x + (1|herd)", few.data, pedigree=few.pedigree, family="poisson")
    assert model._latent_information() < LATENT_FROM
    assert model._resolve("auto", "auto")[1] == "noncentred"


def test_auto_keeps_the_joint_where_the_latent_gradient_is_too_dear():
    """Records that pin their latent values take the latent values' model only while one of its
    gradients costs at most LATENT_COST_LIMIT of the joint's; above it the joint, with a note
    that says why and how to ask for the other. The cost is the analysed equations' flop
    estimate over the joint density's own size."""
    family = "poisson(log, overdispersion)"
    pinned = LATENT_FROM + 0.1
    assert choose_family_engine(family, None, pinned, LATENT_COST_LIMIT).engine == "latent"
    dear = choose_family_engine(family, None, pinned, LATENT_COST_LIMIT + 1)
    assert dear.engine == "noncentred"
    assert "would cost about" in dear.reason and "parameterisation='latent'" in dear.reason
    assert choose_family_engine(family, None, pinned, None).engine == "latent"
    large = _counts(300, 3.0, 0.05, seed=4)
    model = AnimalModel("y ~ x + (1|herd)", large.data, pedigree=large.pedigree, family="poisson")
    analysis = model.mme.analysis
    joint = NonCentredEngine(model).joint_density()
    expected = marginal_gradient_seconds(analysis.flops, analysis.n) / (
        JOINT_SECONDS_PER_COORDINATE * joint.size
    )
    assert model._latent_cost() == pytest.approx(expected, rel=1e-12)
    assert model._latent_cost() <= LATENT_COST_LIMIT  # 300 animals in 6 herds: sparse


def test_latent_values_are_refused_where_they_do_not_serve():
    """A Gaussian trait, a family without an observation-level effect and a sampler other
    than nutpie are errors that say what to use."""
    sim = _counts(60, 1.5, 0.2, seed=3)
    data = sim.data.assign(z=sim.data["y"] + 0.5, b=(sim.data["y"] > 4).astype(int))
    gaussian = AnimalModel("z ~ x", data, pedigree=sim.pedigree)
    with pytest.raises(ModelError, match="marginal"):
        gaussian._resolve("latent", "auto")
    binary = AnimalModel("b ~ x", data, pedigree=sim.pedigree, family="threshold")
    with pytest.raises(ModelError, match="no observation-level effect"):
        binary._resolve("latent", "auto")
    plain = AnimalModel(
        "y ~ x", data, pedigree=sim.pedigree, family="poisson", overdispersion="none"
    )
    with pytest.raises(ModelError, match="no observation-level effect"):
        plain._resolve("latent", "auto")
    large = _counts(300, 3.0, 0.05, seed=4)
    model = AnimalModel("y ~ x + (1|herd)", large.data, pedigree=large.pedigree, family="poisson")
    with pytest.raises(ModelError, match="sampler='nutpie'"):
        model.fit(parameterisation="latent", sampler="pymc", draws=10, progressbar=False)
    parsed = _parser().parse_args(
        [
            "fit",
            "--data",
            "d.csv",
            "--pedigree",
            "p.csv",
            "--formula",
            "y ~ 1",
            "--out",
            "o",
            "--parameterisation",
            "latent",
        ]
    )
    assert parsed.parameterisation == "latent"


def test_latent_values_are_refused_where_reml_puts_their_residual_at_zero():
    """The gryphon laying dates as counts (data not made for it): REML holds the
    observation-level variance at 0, where the latent values are pinned to b and u and NUTS
    crawls (over 12 min, against 15 s for the non-centred joint) — refused with the reason,
    and never what ``auto`` takes."""
    folder = shared_folder("gryphon")
    model = AnimalModel(
        "laydate ~ 1 + (1|byear) + (1|year) + ide(animal)",
        pd.read_csv(folder / "gryphonRM.csv"), pedigree=folder / "gryphonped.csv",
        family="poisson",
    )  # fmt: skip
    assert model.reml.boundary == ("residual",)
    assert model._latent_information() is None
    assert model._resolve("auto", "auto")[1] == "noncentred"
    with pytest.raises(ModelError, match="REML puts it at 0"):
        model._resolve("latent", "auto")


def test_failing_diagnostics_point_from_one_exact_engine_to_the_other():
    """Chains that disagree: the advice names the other exact parameterisation of a count
    trait (``alternative``), where an exact family's fit otherwise advises none; the model
    gives the pair only where both engines serve."""
    import xarray as xr

    from bayes_animal.results.posterior import component_summary, diagnose

    rng = np.random.default_rng(0)
    chains = rng.normal(size=(2, 300)) + np.array([[0.0], [3.0]])  # two chains apart
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"h2": (("chain", "draw"), chains)})})
    summary = component_summary(tree, ["h2"])
    for engine, other in (("noncentred", "latent"), ("latent", "noncentred")):
        found = diagnose(
            tree, summary, parameterisation=engine, warn=False, exact_family=True,
            alternative=other,
        )  # fmt: skip
        assert any(f"try parameterisation='{other}'" in m for m in found.messages)
    plain = diagnose(tree, summary, parameterisation="noncentred", warn=False, exact_family=True)
    assert not any("try parameterisation" in m for m in plain.messages)
    large = _counts(300, 3.0, 0.05, seed=4)
    model = AnimalModel("y ~ x + (1|herd)", large.data, pedigree=large.pedigree, family="poisson")
    assert model._alternative("noncentred") == "latent"
    assert model._alternative("latent") == "noncentred"
    binary = AnimalModel(
        "b ~ x", large.data.assign(b=(large.data["y"] > 20).astype(int)),
        pedigree=large.pedigree, family="threshold",
    )  # fmt: skip
    assert binary._alternative("noncentred") is None
