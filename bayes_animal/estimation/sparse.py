r"""REML with any number of random effects on the sparse mixed-model equations.

:func:`fit_sparse` analyses the mixed-model equations once
(:class:`~bayes_animal.linalg.mme.MixedModelEquations`), maximises the restricted
log-likelihood by average-information REML (:mod:`bayes_animal.estimation.aireml`) and predicts
every level of every random effect at the estimate: BLUPs are the solutions
:math:`\hat u_k`, their prediction error variances the diagonal of :math:`C^{-1}` (from the
selected inverse), reliabilities :math:`1 - \mathrm{PEV}_i / (\sigma_k^2 K_{ii})`; the fixed
effects' covariance is the :math:`C^{bb}` block. :func:`solve_at` gives the same predictions at
known variances (what breeders run between REML runs, and the textbook's worked examples).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..design import Design
from ..errors import BayesAnimalError
from ..linalg.ldl import NotPositiveDefinite
from ..linalg.mme import Evaluation, MixedModelEquations
from ..spec.parameters import Parameters
from ..structures.covariance import Structure
from ..tables import Table
from ..tables import pandas as pd
from .aireml import fit_aireml
from .result import RemlResult, assemble, prediction_table

__all__ = ["Solutions", "fit_sparse", "solve_at"]


@dataclass(frozen=True)
class Solutions:
    """Fixed effects and predictions of every random effect at given variances.

    Attributes
    ----------
    beta, beta_se, beta_cov
        BLUE of the fixed effects, their SEs and covariance (by design column).
    predictions
        Per random effect, one row per level: ``blup``, ``pev``, ``reliability``,
        ``n_records``.
    variances
        The parameters used, by name.
    loglik
        The restricted log-likelihood at those variances.
    """

    beta: pd.Series
    beta_se: pd.Series
    beta_cov: pd.DataFrame
    predictions: dict[str, pd.DataFrame]
    variances: dict[str, float]
    loglik: float


def _predictions(
    mme: MixedModelEquations, evaluation: Evaluation, boundary: tuple[str, ...], pev: bool
) -> tuple[dict[str, Table], np.ndarray]:
    """Per effect, the prediction table; and the fixed effects' covariance."""
    params = mme.parameters
    selected = evaluation.selected or evaluation.factor.selected_inverse()
    diagonal = selected.diagonal() if pev else None
    tables: dict[str, Table] = {}
    for effect in mme.design.effects:
        where = mme.effect_slice(effect.name)
        structure = mme.structures[effect.name]
        tables[effect.name] = prediction_table(
            structure.ids, evaluation.solutions[where].copy(),
            diagonal[where].copy() if pev else None,
            evaluation.theta[params.index(effect.name)], structure.diagonal(), effect.counts(),
            at_boundary=effect.name in boundary,
        )  # fmt: skip
    unit = np.zeros((mme.size, mme.p))
    unit[np.arange(mme.p), np.arange(mme.p)] = 1.0
    beta_cov = evaluation.factor.solve(unit)[: mme.p]  # C^bb by p solves (may be off L's pattern)
    return tables, (beta_cov + beta_cov.T) / 2.0


def fit_sparse(
    design: Design,
    structures: Mapping[str, Structure],
    *,
    ordering: str = "amd",
    pev: bool = True,
    max_iterations: int = 100,
    start: np.ndarray | None = None,
) -> RemlResult:
    """REML of any model by AI-REML on the sparse mixed-model equations.

    Parameters
    ----------
    design
        From :func:`bayes_animal.design.build_design`.
    structures
        The covariance structure of each genetic effect, by term name.
    ordering
        Fill-reducing ordering (``"amd"``, ``"metis"``, ``"natural"``).
    pev
        Compute prediction error variances and reliabilities.
    max_iterations
        AI iterations allowed.
    start
        Starting parameters (in the order of ``Parameters.from_spec(design.spec).names``).
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    params = Parameters.from_spec(design.spec)
    mme = MixedModelEquations(design, structures, params, ordering=ordering)
    mme.analysis  # noqa: B018 - the one-off ordering and symbolic analysis, timed here
    timings["analyse"] = time.perf_counter() - clock
    clock = time.perf_counter()
    fit = fit_aireml(mme, start=start, max_iterations=max_iterations)
    timings["iterate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    predictions, beta_cov = _predictions(mme, fit.evaluation, fit.boundary, pev)
    timings["predict"] = time.perf_counter() - clock
    return assemble(
        parameters=params,
        theta=fit.theta,
        information=fit.evaluation.information,
        boundary=fit.boundary,
        method="reml",
        engine="sparse",
        beta=fit.evaluation.solutions[: mme.p],
        beta_cov=beta_cov,
        fixed_names=design.fixed_names,
        predictions=predictions,
        loglik=fit.evaluation.loglik,
        convergence=fit.convergence,
        iterations=fit.iterations,
        n_records=len(design.record_labels) if design.multi_trait else design.n_records,
        timings=timings,
        notices=design.notices,
        traits=design.traits,
        n_observations=design.n_records,
    )


def solve_at(
    design: Design,
    structures: Mapping[str, Structure],
    variances: Mapping[str, float],
    *,
    pev: bool = True,
    ordering: str = "amd",
) -> Solutions:
    """BLUE and BLUP at known variances (Henderson's mixed-model equations).

    Parameters
    ----------
    variances
        Every parameter by name: each random term's variance, covariances such as
        ``additive:maternal`` (0 when left out), and ``residual``.

    Raises
    ------
    BayesAnimalError
        A variance is missing, unknown, or the values are not a valid covariance.
    SingularEquationsError
        The equations are singular in floating point at these variances (the message names
        the fixed-effect column or the level).
    """
    params = Parameters.from_spec(design.spec)
    unknown = sorted(set(variances) - set(params.names))
    missing = [n for n in params.names if n not in variances and not params.is_covariance(n)]
    if unknown or missing:
        raise BayesAnimalError(
            f"The variances must name every component of the model ({', '.join(params.names)}); "
            f"unknown: {unknown or 'none'}, missing: {missing or 'none'}."
        )
    theta = np.array([float(variances.get(n, 0.0)) for n in params.names])
    if not params.valid(theta):
        raise BayesAnimalError(
            "The variances must be positive and each covariance matrix positive definite; got "
            f"{dict(zip(params.names, theta, strict=True))}."
        )
    mme = MixedModelEquations(design, structures, params, ordering=ordering)
    try:
        evaluation = mme.evaluate(theta, information=False)
    except NotPositiveDefinite as exc:
        raise mme.singular_error(exc, theta) from exc
    predictions, beta_cov = _predictions(mme, evaluation, (), pev)
    names = list(design.fixed_names)
    return Solutions(
        beta=pd.Series(evaluation.solutions[: mme.p], index=names, name="beta"),
        beta_se=pd.Series(np.sqrt(np.diag(beta_cov)), index=names, name="se"),
        beta_cov=pd.DataFrame(beta_cov, index=names, columns=names),
        predictions={name: table.frame() for name, table in predictions.items()},
        variances=dict(zip(params.names, theta.tolist(), strict=True)),
        loglik=evaluation.loglik,
    )
