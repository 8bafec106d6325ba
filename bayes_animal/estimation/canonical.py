r"""REML of several traits on one random term with every trait on every record, in the
eigenbasis of :math:`ZKZ^\top` (:mod:`bayes_animal.linalg.canonical`): the same AI-REML
(:mod:`bayes_animal.estimation.aireml`: its steps, holds at the cone's edge and shape search)
with each iteration O(n t³) after one eigendecomposition, where the sparse equations factor a
matrix of order t·q — dense for a dense K."""

from __future__ import annotations

import time

import numpy as np

from .aireml import fit_aireml
from .result import RemlResult, assemble, prediction_table

__all__ = ["fit_canonical"]


def fit_canonical(
    design,
    problem,
    *,
    pev: bool = True,
    max_iterations: int = 100,
    start: np.ndarray | None = None,
) -> RemlResult:
    """REML by AI-REML on the canonical transformation.

    Parameters
    ----------
    design
        A design :func:`~bayes_animal.linalg.canonical.canonical_obstacle` accepts.
    problem
        Its :class:`~bayes_animal.linalg.canonical.CanonicalProblem` (the eigendecomposition,
        shared with a Bayesian fit).
    pev
        Compute prediction error variances and reliabilities.
    max_iterations, start
        As :func:`~bayes_animal.estimation.sparse.fit_sparse`.
    """
    from ..linalg.canonical import CanonicalEquations
    from ..spec.parameters import Parameters

    timings: dict[str, float] = {"eigh": problem.seconds}
    params = Parameters.from_spec(design.spec)
    equations = CanonicalEquations(problem, design, params)
    clock = time.perf_counter()
    fit = fit_aireml(equations, start=start, max_iterations=max_iterations)
    timings["iterate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    blup, level_pev = equations.predictions(fit.theta, pev=pev)
    effects = design.effects
    ids = problem.level_ids
    tables = {}
    for a, effect in enumerate(effects):
        tables[effect.name] = prediction_table(
            ids, blup[:, a], None if level_pev is None else level_pev[:, a],
            fit.theta[params.index(effect.name)], problem.k_diagonal, effect.counts(),
            at_boundary=effect.name in fit.boundary,
        )  # fmt: skip
    timings["predict"] = time.perf_counter() - clock
    evaluation = fit.evaluation
    return assemble(
        parameters=params,
        theta=fit.theta,
        information=evaluation.information,
        boundary=fit.boundary,
        method="reml",
        engine="canonical",
        beta=evaluation.beta,
        beta_cov=evaluation.beta_cov,
        fixed_names=design.fixed_names,
        predictions=tables,
        loglik=evaluation.loglik,
        convergence=fit.convergence,
        iterations=fit.iterations,
        n_records=len(design.record_labels),
        timings=timings,
        notices=design.notices,
        traits=design.traits,
        n_observations=design.n_records,
    )
