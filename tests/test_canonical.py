"""The canonical transformation of several traits (linalg/canonical): its restricted
likelihood and score equal the sparse mixed-model equations' (themselves tested against dense
V formulas in test_multitrait), its draws of b and u have the equations' conditional mean and
covariance, what it cannot fit is named, the chooser takes it only where it applies, and a
Bayesian fit through it agrees with REML."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import random_relationship, valid_thetas

from bayes_animal import choice
from bayes_animal.api import model_inputs
from bayes_animal.bayes.density import sparse_likelihood
from bayes_animal.linalg.canonical import (
    CanonicalLikelihood,
    canonical_obstacle,
    canonical_problem,
)
from bayes_animal.linalg.mme import MixedModelEquations
from bayes_animal.spec.parameters import Parameters
from bayes_animal.structures.relationship import RelationshipMatrix


def _complete(seed: int, *, q: int = 50, n: int = 40, traits: int = 3, repeated: bool = False):
    """Every trait on every record; q > n (relatives without records), the records in another
    order than the matrix, a covariate; with ``repeated``, some animals have several records
    (Z not a permutation)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"a{i}" for i in range(q)], dtype=object)
    A = random_relationship(q, rng)
    g0 = np.array([[2.0, 0.8, -0.4], [0.8, 1.5, 0.3], [-0.4, 0.3, 1.0]])[:traits, :traits]
    r0 = np.array([[1.0, -0.3, 0.2], [-0.3, 2.0, 0.4], [0.2, 0.4, 1.2]])[:traits, :traits]
    u = (np.linalg.cholesky(A) @ rng.standard_normal((q, traits))) @ np.linalg.cholesky(g0).T
    animals = rng.choice(ids[: n // 2], size=n) if repeated else rng.permutation(ids)[:n]
    position = {a: i for i, a in enumerate(ids)}
    x = rng.standard_normal(n)
    e = rng.standard_normal((n, traits)) @ np.linalg.cholesky(r0).T
    y = 1.0 + 0.5 * x[:, None] + u[[position[a] for a in animals]] + e
    data = pd.DataFrame({"animal": animals, "x": x})
    for k in range(traits):
        data[f"y{k + 1}"] = y[:, k]
    return data, RelationshipMatrix(ids=ids, matrix=A)


def _setup(formula, data, relmat):
    inputs = model_inputs(formula, data, relmat=relmat, warn=False)
    params = Parameters.from_spec(inputs.design.spec)
    design = inputs.design
    structures = inputs.structures()
    effect = design.effects[0]
    relationship = structures[effect.name].dense() if effect.genetic else None
    problem = canonical_problem(design, relationship, params)
    mme = MixedModelEquations(design, structures, params)
    return inputs, params, problem, mme


@pytest.mark.parametrize(
    "formula",
    ["cbind(y1, y2, y3) ~ 1 + x", "cbind(y1, y2, y3) ~ 1 + x + (1|g)", "cbind(y1, y2) ~ diag(1|g)"],
    ids=["additive", "group, repeated records", "diag group"],
)
def test_likelihood_and_score_equal_the_mixed_model_equations(formula):
    """ℓ_R and every element of its score at random valid θ, against the sparse equations
    (the same constant: REML output and the posterior's check read the same numbers): a
    relationship matrix with relatives that have no records, and an independent group of
    several records a level (Z not a permutation), unstructured or ``diag``."""
    data, relmat = _complete(1)
    if "(1|g)" in formula:
        data["g"] = [f"g{k % 7}" for k in range(len(data))]
        relmat = None
    _, params, problem, mme = _setup(formula, data, relmat)
    canonical, sparse = CanonicalLikelihood(problem), sparse_likelihood(mme)
    for theta in valid_thetas(params, np.random.default_rng(2), 4):
        value, score = canonical(theta)
        expected, expected_score = sparse(theta)
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-8)
        np.testing.assert_allclose(score, expected_score, rtol=1e-8, atol=1e-8)


def test_outside_the_space_the_likelihood_is_minus_infinity():
    data, relmat = _complete(3)
    _, params, problem, _ = _setup("cbind(y1, y2, y3) ~ 1 + x", data, relmat)
    theta = valid_thetas(params, np.random.default_rng(0), 1)[0]
    theta[params.index("additive:y1:y2")] = 10.0  # G0 not positive definite
    value, score = CanonicalLikelihood(problem)(theta)
    assert value == -np.inf and not score.any()
    assert CanonicalLikelihood(problem).value_and_draw(theta, np.random.default_rng(0)) == (
        -np.inf,
        None,
    )


@pytest.mark.parametrize("repeated", [False, True], ids=["one record each", "repeated records"])
def test_draws_have_the_exact_conditional_mean_and_covariance(repeated):
    """b and every u given θ: the mean of 3 000 draws within 4.5 Monte Carlo errors of the
    equations' solutions in every coordinate, and the variance of 30 random projections within
    12 % of vᵀC⁻¹v (3 000 draws: a 2.6 % standard error), in the equations' order."""
    data, relmat = _complete(4, repeated=repeated)
    _, params, problem, mme = _setup("cbind(y1, y2, y3) ~ 1 + x", data, relmat)
    theta = valid_thetas(params, np.random.default_rng(5), 1)[0]
    evaluation = mme.evaluate(theta, score=False, information=False)
    likelihood = CanonicalLikelihood(problem)
    rng = np.random.default_rng(6)
    value, first = likelihood.value_and_draw(theta, rng)
    assert value == pytest.approx(evaluation.loglik, rel=1e-10)
    draws = np.array([first, *(likelihood.value_and_draw(theta, rng)[1] for _ in range(2999))])
    error = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.max(np.abs(draws.mean(axis=0) - evaluation.solutions) / error) < 4.5
    directions = rng.standard_normal((30, mme.size))
    for v in directions:
        expected = float(v @ evaluation.factor.solve(v))
        assert np.var(draws @ v) == pytest.approx(expected, rel=0.12)


def test_what_it_cannot_fit_is_named():
    data, relmat = _complete(7)
    inputs = model_inputs("cbind(y1, y2) ~ 1 + x", data, relmat=relmat, warn=False)
    assert canonical_obstacle(inputs.design) is None
    gaps = data.copy()
    gaps.loc[3, "y2"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        missing = model_inputs("cbind(y1, y2) ~ 1 + x", gaps, relmat=relmat).design
    assert canonical_obstacle(missing) == "records with some traits missing"
    data["g"] = np.arange(len(data)) % 4
    two = model_inputs("cbind(y1, y2) ~ 1 + x + (1|g)", data, relmat=relmat, warn=False)
    assert canonical_obstacle(two.design) == "2 random terms"
    one = model_inputs("y1 ~ 1 + x", data, relmat=relmat, warn=False)
    assert canonical_obstacle(one.design) == "one trait"
    params = Parameters.from_spec(missing.spec)
    with pytest.raises(ValueError, match="records with some traits missing"):
        canonical_problem(missing, relmat, params)


def test_the_chooser_takes_it_where_it_applies_and_costs_less():
    data, relmat = _complete(8)
    gradients = choice.gradients_of_a_fit(4, 1000, 300)
    complete = model_inputs("cbind(y1, y2, y3) ~ 1 + x", data, relmat=relmat, warn=False)
    picked = choice.choose_traits(complete, gradients=gradients)
    assert picked.engine == "canonical" and "every trait on every record" in picked.reason
    assert picked.costs["canonical"] < picked.costs["sparse"]
    data.loc[0, "y3"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gaps = model_inputs("cbind(y1, y2, y3) ~ 1 + x", data, relmat=relmat)
    picked = choice.choose_traits(gaps, gradients=gradients)
    assert picked.engine == "sparse" and "missing" in picked.reason
    assert "canonical" not in picked.costs


def test_a_bayesian_fit_through_it_agrees_with_reml():
    """Two traits on 120 records: the fit takes the canonical engine (one eigendecomposition
    for REML and the sampler), every REML estimate inside its 95 % HDI, and the posterior
    mean breeding values of each trait follow the REML BLUPs (correlation > 0.98; the
    posterior averages over the variances)."""
    from unittest import mock

    from bayes_animal import AnimalModel
    from bayes_animal.linalg import canonical

    data, relmat = _complete(9, q=150, n=120, traits=2)
    model = AnimalModel("cbind(y1, y2) ~ 1 + x", data, relmat=relmat)
    counted = mock.patch.object(canonical, "canonical_problem", wraps=canonical.canonical_problem)
    with counted as decompositions:
        fit = model.fit(draws=300, tune=200, random_seed=1, progressbar=False, warn=False)
    assert decompositions.call_count == 1  # REML and the sampler share it
    assert json.loads(fit.idata.attrs["model_options"])["engine"] == "canonical"
    assert model.reml.engine_reason.startswith("canonical")
    assert fit.reml_check["reml_in_hdi"].all()
    blup = model.reml.predictions["additive:y2"]
    ebv = fit.ebv(trait="y2")
    assert np.corrcoef(ebv["mean"], blup.loc[ebv.index, "blup"])[0, 1] > 0.98


def test_several_traits_have_no_pymc_graph_and_say_what_to_use():
    """``build()`` of several traits (canonical or sparse: neither has a PyMC graph) and the
    canonical engine's PyMC likelihood are clear errors, not a KeyError from the priors."""
    from bayes_animal import AnimalModel
    from bayes_animal.bayes.engines import engine_for
    from bayes_animal.bayes.model import ModelError

    data, relmat = _complete(10, q=30, n=25, traits=2)
    model = AnimalModel("cbind(y1, y2) ~ 1 + x", data, relmat=relmat)
    with pytest.raises(ModelError, match=r"not in a PyMC graph: use model.fit\(\)"):
        model.build()
    with pytest.raises(ModelError, match="sampler='nutpie'"):
        engine_for(model, "canonical").add_likelihood(None, None, {}, "integrate")


def test_reml_reaches_the_sparse_engines_optimum_and_its_outputs():
    """The same AI-REML on the canonical likelihood: `reml()` takes it by itself, it reaches
    the sparse engine's optimum (ℓ to 1e-8; the estimates to 1e-3 relative, both runs
    stopping at AI's step tolerance on a flat likelihood of 35 animals) with its SEs, and at
    the same θ the canonical average information, fixed effects, BLUPs and PEVs of every
    trait (relatives without records included; some animals with two records) equal the
    sparse equations' to 1e-8."""
    from bayes_animal import reml
    from bayes_animal.estimation.sparse import _predictions
    from bayes_animal.linalg.canonical import CanonicalEquations

    data, relmat = _complete(11, q=90, n=70, repeated=True)
    formula = "cbind(y1, y2, y3) ~ 1 + x"
    canonical = reml(formula, data, relmat=relmat, engine="canonical", warn=False)
    sparse = reml(formula, data, relmat=relmat, engine="sparse", warn=False)
    assert reml(formula, data, relmat=relmat, warn=False).engine_reason.startswith("canonical:")
    assert canonical.converged and canonical.loglik == pytest.approx(sparse.loglik, abs=1e-8)
    for table in (lambda r: r.components, lambda r: r.covariances):
        pd.testing.assert_frame_equal(table(canonical), table(sparse), rtol=1e-3, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the repeated records' notice
        inputs, params, problem, mme = _setup(formula, data, relmat)
    values = {**sparse.components["variance"], **sparse.covariances["covariance"]}
    theta = np.array([values[name] for name in params.names])
    ours = CanonicalEquations(problem, inputs.design, params)
    at = ours.evaluate(theta)
    theirs = mme.evaluate(theta)
    np.testing.assert_allclose(at.information, theirs.information, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(at.beta, theirs.solutions[: mme.p], rtol=1e-8, atol=1e-10)
    blup, pev = ours.predictions(theta, pev=True)
    tables, beta_cov = _predictions(mme, theirs, (), True)
    np.testing.assert_allclose(at.beta_cov, beta_cov, rtol=1e-8, atol=1e-12)
    for a, effect in enumerate(inputs.design.effects):
        expected = tables[effect.name].frame()
        np.testing.assert_allclose(blup[:, a], expected["blup"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(pev[:, a], expected["pev"], rtol=1e-8, atol=1e-10)
    assert len(canonical.predictions["additive:y3"]) == 90


def test_engine_canonical_where_it_does_not_apply_says_why():
    from bayes_animal import reml
    from bayes_animal.errors import BayesAnimalError

    data, relmat = _complete(12)
    data.loc[2, "y1"] = np.nan
    with pytest.raises(BayesAnimalError, match="records with some traits missing.*'sparse'"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reml("cbind(y1, y2) ~ 1", data, relmat=relmat, engine="canonical")


def test_posterior_reliabilities_from_the_eigenbasis_equal_the_equations():
    """The canonical engine's posterior reliabilities (PEVs in the eigenbasis) equal the
    default ones from the selected inverse of the mixed-model equations, over the same θ."""
    from bayes_animal import AnimalModel
    from bayes_animal.bayes.engines import Engine, engine_for

    data, relmat = _complete(13, q=60, n=45, traits=2)
    model = AnimalModel("cbind(y1, y2) ~ 1 + x", data, relmat=relmat)
    params = model.parameters
    thetas = np.array(valid_thetas(params, np.random.default_rng(14), 5))
    engine = engine_for(model, "canonical")
    ours = engine.reliabilities(thetas)
    theirs = Engine.reliabilities(engine, thetas)
    for name, (ids, values) in theirs.items():
        assert list(ours[name][0]) == list(ids)
        np.testing.assert_allclose(ours[name][1], values, rtol=1e-8, atol=1e-10)


def test_a_matrix_that_is_not_positive_semi_definite_is_refused_with_the_way_out():
    """The canonical path is the matrix's first use: its deferred check is made there."""
    from bayes_animal import reml
    from bayes_animal.errors import RelationshipError

    data, relmat = _complete(15, q=40, n=30, traits=2)
    bad = relmat.matrix.copy()
    bad[0, 1] = bad[1, 0] = 3.0  # |a01| > sqrt(a00 a11): not PSD
    broken = pd.DataFrame(bad, index=relmat.ids, columns=relmat.ids)
    with pytest.raises(RelationshipError, match="nearest"):
        reml("cbind(y1, y2) ~ 1 + x", data, relmat=broken, engine="canonical")


def test_the_independence_sampler_keeps_the_canonical_draws():
    """sampler='independence' on the canonical density: its chains carry b and every u
    (the canonical engine splits them into each trait's effect)."""
    from bayes_animal import AnimalModel

    data, relmat = _complete(16, q=60, n=50, traits=2)
    model = AnimalModel("cbind(y1, y2) ~ 1 + x", data, relmat=relmat)
    fit = model.fit(
        sampler="independence", draws=150, chains=2, random_seed=3, progressbar=False, warn=False
    )
    assert fit.sampler == "independence"
    assert json.loads(fit.idata.attrs["model_options"])["engine"] == "canonical"
    u = fit.idata.posterior["u_additive_y2"]
    assert u.shape[-1] == 60 and np.isfinite(u.values).all() and u.values.std() > 0
    assert len(fit.ebv(trait="y1")) == 60


def test_ml_and_the_one_trait_density_say_what_to_use():
    from bayes_animal import AnimalModel, reml
    from bayes_animal.bayes.model import ModelError
    from bayes_animal.errors import BayesAnimalError

    data, relmat = _complete(17, q=30, n=25, traits=2)
    with pytest.raises(BayesAnimalError, match="ML is available for models with one random"):
        reml("cbind(y1, y2) ~ 1", data, relmat=relmat, method="ml", engine="canonical")
    one = AnimalModel("y1 ~ 1", data, relmat=relmat)
    with pytest.raises(ModelError, match="this model has one trait. Use engine 'sparse'"):
        one.density("canonical")


def test_the_sampler_gets_the_likelihood_without_the_draws_arrays():
    """What goes pickled to nutpie's worker keeps the value and score (equal to the full
    likelihood's) and drops the eigenvectors, K Zᵀ Q and K's factor: a fraction of the bytes."""
    import pickle

    from bayes_animal import AnimalModel

    data, relmat = _complete(18, q=200, n=160, traits=2)
    model = AnimalModel("cbind(y1, y2) ~ 1 + x", data, relmat=relmat)
    density = model.density("canonical")
    light = density.without_draws()
    x = model._initial_x(density)
    value, gradient = density(x)
    assert light(x)[0] == value
    np.testing.assert_array_equal(light(x)[1], gradient)
    assert len(pickle.dumps(light)) < 0.3 * len(pickle.dumps(density))
    assert model.canonical.eigenvectors.shape == (160, 160)  # the model keeps its own
