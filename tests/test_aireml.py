"""The edges of AI-REML (:mod:`bayes_animal.estimation.aireml`): step halving, the EM fallback,
a component going to its boundary and leaving it, a release value outside the space, the
iteration limit, and :func:`compare` refusing models that only look nested.

Each case runs the real mixed-model equations of gryphon ``bwt`` (animal + byear); the odd
situations are made by a thin wrapper that changes what the iteration sees (a bad start, an
average information that is not positive definite, a score pushed down), and the answer is
checked against the plain fit."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared_folder

from bayes_animal import BayesAnimalError, compare, reml
from bayes_animal.api import model_inputs
from bayes_animal.estimation import aireml
from bayes_animal.estimation.aireml import fit_aireml, ols_variance
from bayes_animal.linalg.mme import MixedModelEquations
from bayes_animal.spec.parameters import Parameters

FORMULA = "bwt ~ 1 + C(sex) + (1 | byear)"


@pytest.fixture(scope="module")
def gryphon():
    folder = shared_folder("gryphon")
    return pd.read_csv(folder / "gryphon.csv"), folder / "gryphonped.csv"


@pytest.fixture(scope="module")
def equations(gryphon):
    data, pedigree = gryphon
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = model_inputs(FORMULA, data, pedigree=pedigree)
    params = Parameters.from_spec(inputs.design.spec)
    return MixedModelEquations(inputs.design, inputs.structures(), params)


@pytest.fixture(scope="module")
def plain(equations):
    fit = fit_aireml(equations)
    assert fit.convergence.converged and fit.em_steps == 0 and not fit.boundary
    return fit


class Wrapped:
    """The real equations, with what :func:`fit_aireml` sees changed by ``change(evaluation,
    calls)``; ``refuse(theta)`` marks points as outside the space."""

    def __init__(self, mme, change=None, refuse=None):
        self.mme, self.change, self.refuse = mme, change, refuse
        self.parameters, self.design, self.calls = mme.parameters, mme.design, 0

    def evaluate(self, theta, *, information=True):
        from bayes_animal.linalg.ldl import NotPositiveDefinite

        if self.refuse is not None and self.refuse(theta):
            raise NotPositiveDefinite("refused by the test")
        self.calls += 1
        evaluation = self.mme.evaluate(theta, information=information)
        return evaluation if self.change is None else self.change(evaluation, self.calls)

    def em_update(self, evaluation):
        return self.mme.em_update(evaluation)


def _score_pushed_down(k: int, *, calls: int):
    """A change for :class:`Wrapped`: the score of parameter ``k`` points far down (−1e6) in
    the first ``calls`` evaluations, the real one after."""
    from dataclasses import replace

    def change(evaluation, call):
        if call > calls:
            return evaluation
        score = evaluation.score.copy()
        score[k] = -1e6
        return replace(evaluation, score=score)

    return change


def _same_answer(fit, plain, rtol=1e-6):
    np.testing.assert_allclose(fit.theta, plain.theta, rtol=rtol)
    assert fit.evaluation.loglik == pytest.approx(plain.evaluation.loglik, abs=1e-6)


def test_a_start_far_from_the_optimum_is_reached_by_halving_steps_and_em(equations, plain):
    """From an additive variance 20 times the phenotypic one and tiny others, the full AI step
    overshoots: it is halved (and where ten halvings do not give a point inside the space with
    ℓ not lower, an EM step is taken); the fit ends where the plain one does."""
    scale = ols_variance(equations)
    assert list(equations.parameters.names) == ["additive", "byear", "residual"]
    fit = fit_aireml(equations, start=np.array([20.0, 0.01, 0.01]) * scale)
    assert fit.halvings >= aireml.MAX_HALVINGS and fit.em_steps >= 1
    assert fit.convergence.converged
    _same_answer(fit, plain)


def test_an_information_that_is_not_positive_definite_falls_back_to_em(equations, plain):
    """An AI matrix with a negative eigenvalue gives no Newton step: an EM-REML step is taken
    instead (three times here), and the fit still converges to the plain answer."""

    def indefinite(evaluation, calls):
        if calls <= 3:
            from dataclasses import replace

            return replace(evaluation, information=-evaluation.information)
        return evaluation

    fit = fit_aireml(Wrapped(equations, indefinite))
    assert fit.em_steps == 3
    assert fit.convergence.converged
    _same_answer(fit, plain)


def test_a_variance_pushed_to_zero_is_held_then_released_when_its_score_points_back(
    equations, plain
):
    """byear starts near zero and, for the first evaluations, its score is made to point down:
    it is fixed at the boundary (held at 1e-8 σ²_P); once the rest has converged its real score
    points back into the space, it is released and the fit ends at the interior optimum."""
    k = equations.parameters.index("byear")
    scale = ols_variance(equations)

    def pushed_down(evaluation, calls):
        if calls <= 2:
            score = evaluation.score.copy()
            score[k] = -abs(score[k]) * 1e3 - 1e3
            from dataclasses import replace

            return replace(evaluation, score=score)
        return evaluation

    start = plain.theta.copy()
    start[k] = 1e-7 * scale
    wrapped = Wrapped(equations, pushed_down)
    trace = []
    original = aireml._release

    def spy(current, params, boundary, released):
        trace.append(set(boundary))
        return original(current, params, boundary, released)

    aireml._release = spy
    try:
        fit = fit_aireml(wrapped, start=start)
    finally:
        aireml._release = original
    assert {"byear"} in trace  # it was at the boundary when the rest converged
    assert fit.boundary == ()  # and left it
    assert fit.convergence.converged
    _same_answer(fit, plain, rtol=1e-5)


def test_a_release_value_outside_the_space_tries_a_smaller_one(equations, plain):
    """The first release value (1e-3 σ²_P) is refused as outside the space: the component
    restarts from the next one instead of the iteration failing on a missing evaluation."""
    k = equations.parameters.index("byear")
    scale = ols_variance(equations)
    first = aireml.RELEASE_VALUES[0] * scale

    pushed_down = _score_pushed_down(k, calls=2)
    start = plain.theta.copy()
    start[k] = 1e-7 * scale
    refused = []

    def refuse(theta):
        hit = bool(np.isclose(theta[k], first, rtol=1e-12))
        refused.extend([hit] if hit else [])
        return hit

    fit = fit_aireml(Wrapped(equations, pushed_down, refuse), start=start)
    assert refused  # the first release value was tried and refused
    assert fit.boundary == () and fit.convergence.converged
    _same_answer(fit, plain, rtol=1e-5)


def test_a_component_that_cannot_be_released_stays_at_the_boundary(equations, plain):
    """Every release value refused: the component stays at its boundary and the fit finishes
    (it does not fail), reporting the boundary."""
    k = equations.parameters.index("byear")
    scale = ols_variance(equations)
    values = [v * scale for v in aireml.RELEASE_VALUES]

    pushed_down = _score_pushed_down(k, calls=2)
    start = plain.theta.copy()
    start[k] = 1e-7 * scale
    refuse = lambda theta: any(np.isclose(theta[k], v, rtol=1e-12) for v in values)  # noqa: E731
    fit = fit_aireml(Wrapped(equations, pushed_down, refuse), start=start)
    assert fit.boundary == ("byear",)
    assert fit.theta[k] == pytest.approx(aireml.BOUNDARY_VALUE * scale)
    assert fit.convergence.converged and "at the boundary: byear" in fit.convergence.reason


def test_a_variance_driven_below_zero_moves_to_a_tenth_of_its_value(equations):
    """The documented rule: a variance the AI step would make negative (and not yet near the
    boundary) is set to SHRINK_TOWARDS_ZERO of its value, not dropped to zero."""
    k = equations.parameters.index("byear")
    scale = ols_variance(equations)
    start = np.array([0.3, 0.3, 0.4]) * scale
    seen = []

    first_call = _score_pushed_down(k, calls=1)  # a step far below zero for byear

    def down(evaluation, calls):
        seen.append(evaluation.theta.copy())
        return first_call(evaluation, calls)

    fit_aireml(Wrapped(equations, down), start=start, max_iterations=1)
    assert seen[1][k] == pytest.approx(aireml.SHRINK_TOWARDS_ZERO * start[k], rel=1e-12)


def test_a_fit_stopped_at_the_iteration_limit_does_not_say_converged(equations, plain, gryphon):
    """With one iteration fewer than the plain fit needed, the fit is not converged, whatever
    its decrement and last change say (the step test is part of convergence)."""
    for limit in (1, plain.iterations - 1):
        fit = fit_aireml(equations, max_iterations=limit)
        assert not fit.convergence.converged
        assert fit.convergence.reason == "stopped at the iteration limit"
        assert fit.iterations == limit
    data, pedigree = gryphon
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        through_reml = reml(FORMULA, data, pedigree=pedigree, engine="sparse", max_iterations=1)
    assert not through_reml.convergence.converged


@pytest.fixture(scope="module")
def fits(gryphon):
    data, pedigree = gryphon
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "small": reml("bwt ~ 1 + C(sex) + (1 | byear)", data, pedigree=pedigree),
            "large": reml("bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)", data, pedigree=pedigree),
        }


def test_compare_accepts_nested_models(fits):
    test = compare(fits["small"], fits["large"])
    assert test.added == ("mother",) and test.mixture and test.statistic > 0


def test_compare_refuses_the_same_names_on_another_relationship(gryphon, fits):
    """A model whose 'additive' comes from another pedigree (here every sire removed) has the
    same parameter names as a nested one, but it is not nested: refused, naming the effect."""
    data, pedigree = gryphon
    ped = pd.read_csv(pedigree)
    ped.iloc[:, 2] = np.nan  # another relationship: no sires
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = reml("bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)", data, pedigree=ped)
    with pytest.raises(BayesAnimalError, match=r"not nested: the effect\(s\) \['additive'\]"):
        compare(fits["small"], other)


def test_compare_refuses_another_response_with_the_same_records(gryphon, fits):
    data, pedigree = gryphon
    changed = data.assign(bwt=data["bwt"] * 1.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = reml("bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)", changed, pedigree=pedigree)
    with pytest.raises(BayesAnimalError, match="different responses or records"):
        compare(fits["small"], other)


def test_compare_refuses_a_grouping_column_of_the_same_name_with_other_levels(gryphon, fits):
    data, pedigree = gryphon
    shuffled = data.assign(byear=data["byear"].sample(frac=1, random_state=1).to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = reml("bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)", shuffled, pedigree=pedigree)
    with pytest.raises(BayesAnimalError, match=r"\['byear'\]"):
        compare(fits["small"], other)


def test_compare_refuses_results_without_fingerprints(fits):
    from dataclasses import replace

    with pytest.raises(BayesAnimalError, match="refit both"):
        compare(replace(fits["small"], fingerprints={}), fits["large"])


def test_compare_sees_a_single_changed_entry_of_a_given_matrix():
    """Two relationship matrices that differ in one off-diagonal pair only are two effects:
    the fingerprint projects the whole matrix, it does not sample it."""
    from bayes_animal import RelationshipMatrix, simulate_reference

    sim = simulate_reference(n=120, n_snps=200, seed=4)
    data = sim.data.assign(grp=np.arange(len(sim.data)) % 12)
    changed = sim.relmat.matrix.copy()
    changed[37, 91] = changed[91, 37] = changed[37, 91] + 0.01
    other = RelationshipMatrix(ids=sim.relmat.ids, matrix=changed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = reml("response ~ 1 + fix", data, relmat=sim.relmat)
        large = reml("response ~ 1 + fix + (1 | grp)", data, relmat=other)
        same = reml("response ~ 1 + fix + (1 | grp)", data, relmat=sim.relmat)
    with pytest.raises(BayesAnimalError, match=r"\['additive'\]"):
        compare(small, large)
    assert compare(small, same).added == ("grp",)


def test_printing_a_fit_is_summary_sized_and_says_where_the_rest_is(fits):
    """print(reml(...)) gives components, ratios, fixed effects, convergence and where the
    BLUPs are — tens of lines, not one per animal."""
    text = repr(fits["large"])
    assert str(fits["large"]) == text
    assert len(text.splitlines()) < 40
    for needle in ("additive", "mother", "residual", "Intercept", "converged",
                   "ASReml's scale", ".predictions['additive', 'byear', 'mother']"):  # fmt: skip
        assert needle in text, needle


def test_a_freed_block_crawls_when_its_decrement_stops_halving():
    """The trigger of the shape search: the decrements of the wheat data's freed 4 × 4 block
    (falling seven-fold an iteration) do not crawl; those of a singular 3 × 3 permanent
    environment (stuck near 0.02) do; an iteration without a Newton step (an infinite
    decrement) neither counts nor breaks the comparison."""
    wheat = [17.7, 3.05, 0.122, 0.00162, 0.000202]
    singular = [0.0235, 0.0195, 0.0191, 0.0191]
    assert not aireml._crawls(wheat)
    assert aireml._crawls(singular)
    assert not aireml._crawls(singular[:3])
    assert not aireml._crawls([np.inf, *wheat[:3], np.inf, wheat[3]])
    assert aireml._crawls([0.0235, np.inf, 0.0195, 0.0191, np.inf, 0.0191])
