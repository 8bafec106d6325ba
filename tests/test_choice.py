"""The one chooser (bayes_animal.choice): the same model reaches the same engine whether its
relationship comes as a pedigree or as that pedigree's A written to a file; a dense G stays
spectral; the structure rules (ML, several effects, size limits) hold; every choice says why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayes_animal.choice as choice
from bayes_animal.api import model_inputs, reml
from bayes_animal.errors import BayesAnimalError
from bayes_animal.simulate import simulate_pedigree, simulate_records
from bayes_animal.structures.additive import dense_relationship
from bayes_animal.structures.pedigree import read_pedigree
from bayes_animal.structures.relationship import RelationshipMatrix


@pytest.fixture(scope="module")
def problem():
    """400 animals in 3 generations, records on the last two, a 60-level group; the pedigree
    and its A as a matrix in the pedigree's (parents-first) order."""
    table = simulate_pedigree(
        n_founders=100, n_generations=3, n_per_generation=150, n_sires=20, seed=1
    )
    sim = simulate_records(
        table, variances={"additive": 1.0, "grp": 0.5, "residual": 2.0}, groups={"grp": 60},
        seed=2,
    )  # fmt: skip
    pedigree = read_pedigree(table)
    relmat = dense_relationship(pedigree)
    return sim.data, table, relmat


def _genomic(ids, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, size=(len(ids), 500)).astype(float)
    codes -= codes.mean(axis=0)
    return RelationshipMatrix(
        ids=np.asarray(ids), matrix=codes @ codes.T / 500 + 0.01 * np.eye(len(ids))
    )


@pytest.mark.filterwarnings("ignore")
def test_a_pedigree_as_a_matrix_goes_where_the_pedigree_goes(problem):
    data, table, relmat = problem
    formula = "y ~ 1 + x + (1 | grp)"
    from_pedigree = reml(formula, data, pedigree=table)
    from_matrix = reml(formula, data, relmat=relmat)
    assert from_pedigree.engine == from_matrix.engine == "sparse"
    assert from_matrix.engine_reason.startswith("sparse: 2 random effects")
    assert from_matrix.to_dict()["engine_reason"] == from_matrix.engine_reason
    assert from_matrix.loglik == pytest.approx(from_pedigree.loglik, abs=1e-6)


@pytest.mark.filterwarnings("ignore")
def test_one_effect_on_a_sparse_matrix_goes_sparse_where_an_eigendecomposition_costs_more():
    """1 500 records: an eigendecomposition (~0.2 s) against the sparse equations on a
    parents-first A (~0.05 s); at a few hundred records the eigendecomposition is cheaper."""
    table = simulate_pedigree(
        n_founders=300, n_generations=3, n_per_generation=600, n_sires=60, seed=3
    )
    sim = simulate_records(table, variances={"additive": 1.0, "residual": 2.0}, seed=4)
    relmat = dense_relationship(read_pedigree(table))
    inputs = model_inputs("y ~ 1 + x", sim.data, relmat=relmat)
    chosen = choice.choose_reml(inputs)
    assert chosen.engine == "sparse" and "matrix is sparse" in chosen.reason
    assert chosen.costs["sparse"] < chosen.costs["spectral"]
    fit = reml("y ~ 1 + x", sim.data, relmat=relmat)
    assert fit.engine == "sparse"
    assert fit.loglik == pytest.approx(reml("y ~ 1 + x", sim.data, pedigree=table).loglik, abs=1e-6)


@pytest.mark.filterwarnings("ignore")
def test_a_dense_genomic_matrix_stays_spectral_and_the_engines_agree(problem):
    data, _, relmat = problem
    genomic = _genomic(relmat.ids)  # dense, and carrying the pedigree's signal
    genomic = RelationshipMatrix(ids=relmat.ids, matrix=0.5 * genomic.matrix + 0.5 * relmat.matrix)
    inputs = model_inputs("y ~ 1 + x", data, relmat=genomic)
    chosen = choice.choose_reml(inputs)
    assert chosen.engine == "spectral" and "dense matrix (100% non-zero)" in chosen.reason
    spectral = reml("y ~ 1 + x", data, relmat=genomic)
    sparse = reml("y ~ 1 + x", data, relmat=genomic, engine="sparse")
    assert (spectral.engine, sparse.engine) == ("spectral", "sparse")
    assert sparse.engine_reason == "sparse: chosen by the user."
    assert sparse.loglik == pytest.approx(spectral.loglik, abs=1e-6)


@pytest.mark.filterwarnings("ignore")
def test_structure_rules_and_their_errors(problem):
    data, table, relmat = problem
    two = model_inputs("y ~ 1 + x + (1 | grp)", data, pedigree=table)
    one = model_inputs("y ~ 1 + x", data, relmat=relmat)
    assert choice.choose_reml(one, "auto", "ml").engine == "spectral"
    with pytest.raises(BayesAnimalError, match="ML is available for models with one random"):
        choice.choose_reml(two, "auto", "ml")
    with pytest.raises(BayesAnimalError, match="ML is available"):
        choice.choose_reml(one, "sparse", "ml")
    with pytest.raises(
        BayesAnimalError,
        match="spectral engine fits one random effect; this model has additive, grp",
    ):
        choice.choose_reml(two, "spectral")
    with pytest.raises(BayesAnimalError, match="Unknown engine 'dense'"):
        choice.choose_reml(one, "dense")


@pytest.mark.filterwarnings("ignore")
def test_bayesian_choice_by_cost_and_size(problem, monkeypatch):
    data, table, relmat = problem
    gradients = choice.gradients_of_a_fit(4, 1000, 500)
    for source in ({"pedigree": table}, {"relmat": relmat}):
        one = model_inputs("y ~ 1 + x", data, **source)
        two = model_inputs("y ~ 1 + x + (1 | grp)", data, **source)
        picked = choice.choose_bayes(one, gradients=gradients)
        assert picked.engine == "spectral" and picked.parameterisation == "marginal"
        assert picked.costs["spectral"] < picked.costs["sparse"]
        assert choice.choose_bayes(two, gradients=gradients).engine == "sparse"
    # a few gradients cost less than an eigendecomposition: the sparse engine (a pedigree)
    few = choice.choose_bayes(model_inputs("y ~ 1 + x", data, pedigree=table), gradients=1)
    assert few.engine == "sparse" and few.costs["sparse"] < few.costs["spectral"]
    monkeypatch.setattr(choice, "SPECTRAL_MAX_RECORDS", 10)
    assert choice.choose_bayes(one, gradients=gradients).engine == "sparse"
    monkeypatch.setattr(choice, "SPARSE_MARGINAL_MAX_ORDER", 100)
    big = choice.choose_bayes(two, gradients=gradients)
    assert big.engine == big.parameterisation == "noncentred" and "above 100" in big.reason


@pytest.mark.filterwarnings("ignore")
def test_animal_model_asks_the_same_chooser(problem):
    from bayes_animal import AnimalModel

    data, table, relmat = problem
    for formula, engine in (("y ~ 1 + x", "spectral"), ("y ~ 1 + x + (1 | grp)", "sparse")):
        engines = set()
        for source in ({"pedigree": table}, {"relmat": relmat}):
            model = AnimalModel(formula, data, **source)
            engines.add(model.choice().engine)
            _, resolved, _, notes = model._resolve("auto", "auto")
            engines.add(resolved)
            assert any(engine in note for note in notes)
        assert engines == {engine}, formula


@pytest.mark.filterwarnings("ignore")
def test_many_traits_share_one_eigendecomposition_unless_a_few_sparse_fits_cost_less():
    table = simulate_pedigree(
        n_founders=300, n_generations=3, n_per_generation=600, n_sires=60, seed=3
    )
    sim = simulate_records(table, variances={"additive": 1.0, "residual": 2.0}, seed=4)
    relmat = dense_relationship(read_pedigree(table))
    inputs = model_inputs("y ~ 1 + x", sim.data, relmat=relmat)
    few, lots = choice.choose_many(inputs, 1), choice.choose_many(inputs, 100)
    assert few.engine == "sparse" and "trait by trait" in few.reason
    assert lots.engine == "spectral" and "serves all 100 traits" in lots.reason
    assert choice.choose_many(inputs, 1, "ml").engine == "spectral"
    genomic = RelationshipMatrix(
        ids=relmat.ids, matrix=0.5 * _genomic(relmat.ids).matrix + 0.5 * relmat.matrix
    )
    dense = model_inputs("y ~ 1 + x", sim.data, relmat=genomic)
    assert choice.choose_many(dense, 1).engine == "spectral"


@pytest.mark.filterwarnings("ignore")
def test_an_a_not_written_parents_first_is_counted_as_a_dense_inverse(problem):
    """The same A shuffled: the sparse route gives up after bounded work (kept as None on the
    structure) and the chooser charges a dense inverse; the answer is the same either way."""
    data, table, relmat = problem
    order = np.random.default_rng(2).permutation(relmat.size)
    shuffled = RelationshipMatrix(ids=relmat.ids[order], matrix=relmat.matrix[np.ix_(order, order)])
    inputs = model_inputs("y ~ 1 + x + (1 | grp)", data, relmat=shuffled)
    f = choice.facts(inputs)
    assert not f.sparse_inverse and inputs.source.structure.sparse_inverse() is None
    assert choice.facts(model_inputs("y ~ 1 + x + (1 | grp)", data, relmat=relmat)).sparse_inverse
    dense = choice.DENSE_INVERSE_SHARE * choice.EIGH_SECONDS_PER_CUBE * relmat.size**3
    assert choice._inverse_cost(f) == pytest.approx(dense)
    fit = reml("y ~ 1 + x + (1 | grp)", data, relmat=shuffled)
    assert fit.loglik == pytest.approx(
        reml("y ~ 1 + x + (1 | grp)", data, pedigree=table).loglik, abs=1e-6
    )


@pytest.mark.filterwarnings("ignore")
def test_a_dense_matrix_with_one_effect_stays_spectral_whatever_the_records(problem):
    """Repeated records make n larger than q, but a dense G's equations are dense: the
    spectral path, for REML, many traits and a fit."""
    data, _, relmat = problem
    repeated = pd.concat([data, data, data], ignore_index=True)
    genomic = _genomic(relmat.ids)
    inputs = model_inputs("y ~ 1 + x", repeated, relmat=genomic)
    assert choice.choose_reml(inputs).engine == "spectral"
    assert choice.choose_many(inputs, 3).engine == "spectral"
    two = model_inputs("y ~ 1 + x + (1 | grp)", data, relmat=genomic)
    short = choice.choose_bayes(two, gradients=choice.gradients_of_a_fit(1, 50, 50))
    assert short.engine == "partial"  # see the next test
    assert (
        short.costs["sparse"]
        > 50 * choice.DENSE_INVERSE_SHARE * choice.EIGH_SECONDS_PER_CUBE * relmat.size**3
    )


@pytest.mark.filterwarnings("ignore")
def test_a_dense_matrix_beside_independent_effects_takes_the_partial_model(problem):
    """With a dense G every sparse gradient factors a dense block; the additive effect in the
    eigenbasis with the group non-centred costs less. A pedigree or a sparse A keeps the sparse
    marginal model (measured faster there: gryphon model 4, 51 against 21 ESS(h²)/s)."""
    data, table, relmat = problem
    gradients = choice.gradients_of_a_fit(4, 1000, 500)
    genomic = _genomic(relmat.ids)
    two = model_inputs("y ~ 1 + x + (1 | grp)", data, relmat=genomic)
    picked = choice.choose_bayes(two, gradients=gradients)
    assert picked.engine == picked.parameterisation == "partial"
    assert picked.costs["partial"] < picked.costs["sparse"]
    for source in ({"pedigree": table}, {"relmat": relmat}):
        sparse = choice.choose_bayes(
            model_inputs("y ~ 1 + x + (1 | grp)", data, **source), gradients=gradients
        )
        assert sparse.engine == "sparse" and "partial" not in sparse.costs
