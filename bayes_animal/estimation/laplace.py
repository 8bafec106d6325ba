r"""Laplace-approximate ML and REML of a non-Gaussian animal model.

Both maximise the Laplace approximation of :mod:`bayes_animal.linalg.laplace` over the
variances :math:`\theta` the family leaves free (a probit or logit model's latent residual is
fixed):

- ``method="ml"`` is lme4's ``glmer`` with ``nAGQ = 1``: the random effects integrated by the
  Laplace approximation with Fisher's weights in :math:`\log|H|`, the fixed effects
  :math:`b` maximised with the standard deviations (L-BFGS-B on
  :math:`(\sigma, b)` from a GLM start, then Newton steps on central differences); the
  log-likelihood equals glmer's, constants included.
- ``method="reml"`` integrates the fixed effects as well (flat prior), as glmmTMB's
  ``REML = TRUE`` does — for a Gaussian likelihood exactly REML; the gradient is analytic
  (:meth:`~bayes_animal.linalg.laplace.LaplaceEquations.value_and_gradient`). This is the
  likelihood the Bayesian fit samples.

Standard errors are from the curvature of the approximate log-likelihood (central differences)
and are labelled approximate, as the likelihood is. The fixed effects of ``reml`` and the
predictions of both are the conditional mode :math:`\hat x` at the estimate, with errors
:math:`\operatorname{diag}(H^{-1})` on the latent scale.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from ..errors import BayesAnimalError
from ..spec.family import observed_heritability
from ..spec.parameters import OBSERVED_H2, Parameters
from ..tables import Table
from .result import CONVERGENCE_TOLERANCE, Convergence, RemlResult, assemble, prediction_table

__all__ = ["cutpoint_name", "fit_laplace", "observed_ratio", "solve_laplace"]

#: A standard deviation this small (relative to the latent scale) is at the boundary 0.
BOUNDARY_SD = 1e-4


def _free_names(parameters: Parameters, family) -> list[str]:
    return [n for n in parameters.names if n not in family.held]


def _full_theta(parameters: Parameters, family, free: list[str], values: np.ndarray) -> np.ndarray:
    theta = np.zeros(len(parameters.names))
    for name, value in [*zip(free, values, strict=True), *family.held.items()]:
        theta[parameters.index(name)] = value
    return theta


def _glm_start(design) -> np.ndarray:
    r"""Fixed effects of the GLM without random effects, the ML search's start: Fisher
    scoring, each step halved until the log-likelihood is finite and does not fall (from
    :math:`\beta = 0` a full step overshoots on large counts: a mean of 10⁴ took η to 10⁴ and
    :math:`e^\eta` to infinity)."""
    family = design.family
    X = np.asarray(design.X, dtype=float)
    y = np.asarray(design.y, dtype=float)
    trials = np.ones(len(y)) if design.trials is None else np.asarray(design.trials, dtype=float)

    def loglik(beta: np.ndarray) -> float:
        return float(np.sum(family.log_density(y, trials, X @ beta)))  # -inf past e^η's range

    beta = np.zeros(X.shape[1])
    current = loglik(beta)
    for _ in range(50):
        s, w, _ = family.derivatives(y, trials, X @ beta, expected=True)
        information = X.T @ (w[:, None] * X) + 1e-10 * np.eye(len(beta))
        step = np.linalg.lstsq(information, X.T @ s, rcond=None)[0]
        for _ in range(60):
            trial = loglik(beta + step)
            if trial >= current - 1e-12 * abs(current):
                break
            step = 0.5 * step
        else:
            break  # no step up from here: the start is as good as it gets
        beta, current = beta + step, trial
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def _ordinal_start(design) -> np.ndarray:
    """Fixed effects of an ordinal model at the start: the intercept (a column of ones) at
    :math:`-\\Phi^{-1}` of the lowest category's share (the first cut-point being 0)."""
    from scipy import special

    X = np.asarray(design.X, dtype=float)
    beta = np.zeros(X.shape[1])
    ones = np.flatnonzero(np.all(X == 1.0, axis=0))
    if len(ones):
        share = np.clip(np.mean(np.asarray(design.y) == 0), 1e-3, 1 - 1e-3)
        beta[ones[0]] = -float(special.ndtri(share))
    return beta


def solve_laplace(design, structures: Mapping[str, object], variances: Mapping[str, float]):
    r"""The joint posterior mode of the fixed effects, every random effect and an ordinal
    response's cut-points at known variances (flat priors on b and the cut-points): Gianola
    and Foulley's threshold-model solutions, and their Gaussian counterpart of
    :func:`~bayes_animal.estimation.sparse.solve_at`.

    Newton's method on b and u (:meth:`~bayes_animal.linalg.laplace.LaplaceEquations.mode`)
    for given cut-points; the cut-points maximise :math:`\varphi(\hat x(c), c)`. The errors
    are those of the joint curvature: :math:`H^{-1}` widened by the cut-points' uncertainty,
    :math:`\operatorname{cov}(x) = H^{-1} + J \operatorname{cov}(c) J^\top` with
    :math:`J = \partial\hat x/\partial c` and :math:`\operatorname{cov}(c)` the inverse of
    the profile's curvature (central differences).

    Returns
    -------
    Solutions
        As :func:`~bayes_animal.estimation.sparse.solve_at`'s, the cut-points listed with the
        fixed effects (``cutpoint:<k>|<k+1>``).
    """
    from scipy import optimize

    from ..linalg.laplace import LaplaceEquations
    from ..tables import pandas as pd
    from .sparse import Solutions

    family = design.family
    parameters = Parameters.from_spec(design.spec)
    free = _free_names(parameters, family)
    missing = [n for n in free if n not in variances]
    if missing:
        raise BayesAnimalError(
            f"The variances must name every component the {family.label} family estimates "
            f"({', '.join(free)}); missing: {missing}."
        )
    theta = _full_theta(parameters, family, free, np.array([float(variances[n]) for n in free]))
    equations = LaplaceEquations(design, structures, parameters)
    kc = 0 if equations.cutpoints is None else len(equations.cutpoints) - 1

    def profile(cut: np.ndarray) -> float:
        equations.cutpoints = np.concatenate([[0.0], cut])
        return equations.mode(theta).value

    cut_cov = np.zeros((0, 0))
    jacobian = np.zeros((equations.size, 0))
    if kc:
        start = equations.cutpoints[1:].copy()
        increments = np.log(np.diff(np.concatenate([[0.0], start])))
        found = optimize.minimize(
            lambda z: -profile(np.cumsum(np.exp(z))), increments, method="BFGS",
            options={"gtol": 1e-10},
        )  # fmt: skip
        cut = np.cumsum(np.exp(found.x))
        steps = 1e-4 * np.maximum(np.abs(cut), 1e-2)
        cut_cov = _safe_inverse(-_central_hessian(profile, cut, steps))
        columns = []
        for k in range(kc):
            moved = np.zeros(kc)
            moved[k] = steps[k]
            profile(cut + moved)
            up = equations.mode(theta).x
            profile(cut - moved)
            down = equations.mode(theta).x
            columns.append((up - down) / (2 * steps[k]))
        jacobian = np.column_stack(columns)
        profile(cut)
    mode = equations.mode(theta)
    p = design.n_fixed
    unit = np.zeros((equations.size, p))
    unit[np.arange(p), np.arange(p)] = 1.0
    beta_cov = mode.factor.solve(unit)[:p] + jacobian[:p] @ cut_cov @ jacobian[:p].T
    diagonal = mode.factor.selected_inverse().diagonal() + np.einsum(
        "ij,jk,ik->i", jacobian, cut_cov, jacobian
    )
    names = list(design.fixed_names)
    beta = mode.x[:p]
    if kc:
        names += [cutpoint_name(design.categories, k) for k in range(1, kc + 1)]
        beta = np.concatenate([beta, equations.cutpoints[1:]])
        widened = np.zeros((p + kc, p + kc))
        widened[:p, :p] = beta_cov
        widened[p:, p:] = cut_cov
        widened[:p, p:] = jacobian[:p] @ cut_cov
        widened[p:, :p] = widened[:p, p:].T
        beta_cov = widened
    predictions = {
        name: table.frame()
        for name, table in _predictions(
            design, structures, equations, parameters, theta, mode.x, diagonal
        ).items()
    }
    beta_cov = 0.5 * (beta_cov + beta_cov.T)
    return Solutions(
        beta=pd.Series(beta, index=names, name="beta"),
        beta_se=pd.Series(np.sqrt(np.diag(beta_cov)), index=names, name="se"),
        beta_cov=pd.DataFrame(beta_cov, index=names, columns=names),
        predictions=predictions,
        variances=dict(zip(parameters.names, theta.tolist(), strict=True)),
        loglik=float(equations.value_at(theta, mode)),
    )


def _central_gradient(function, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    out = np.empty(len(x))
    for k in range(len(x)):
        e = np.zeros(len(x))
        e[k] = steps[k]
        out[k] = (function(x + e) - function(x - e)) / (2.0 * steps[k])
    return out


def _central_hessian(function, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Second derivatives of a function of few variables by central differences."""
    k = len(x)
    hessian = np.empty((k, k))
    centre = function(x)
    for i in range(k):
        e_i = np.zeros(k)
        e_i[i] = steps[i]
        hessian[i, i] = (function(x + 2 * e_i) - 2 * centre + function(x - 2 * e_i)) / (
            4 * steps[i] ** 2
        )
        for j in range(i):
            e_j = np.zeros(k)
            e_j[j] = steps[j]
            hessian[i, j] = hessian[j, i] = (
                function(x + e_i + e_j)
                - function(x + e_i - e_j)
                - function(x - e_i + e_j)
                + function(x - e_i - e_j)
            ) / (4 * steps[i] * steps[j])
    return hessian


def _central_jacobian(function, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    columns = []
    for k in range(len(x)):
        e = np.zeros(len(x))
        e[k] = steps[k]
        columns.append((function(x + e) - function(x - e)) / (2.0 * steps[k]))
    jacobian = np.column_stack(columns)
    return 0.5 * (jacobian + jacobian.T)


def observed_ratio(design, parameters: Parameters, theta: np.ndarray, beta: np.ndarray) -> float:
    """:math:`h^2` on the observed data scale at θ and b (:func:`observed_heritability`)."""
    family = design.family
    v_eta = sum(theta[parameters.index(n)] for n in family.latent_terms(parameters.variances))
    v_a = theta[parameters.index("additive")]
    return float(observed_heritability(family, design.X @ beta, v_eta, v_a))


def fit_laplace(
    design,
    structures: Mapping[str, object],
    *,
    method: str = "reml",
    ordering: str = "amd",
    pev: bool = True,
    max_iterations: int = 200,
) -> RemlResult:
    """Laplace-approximate ML or REML of a non-Gaussian model (see the module docstring).

    Parameters
    ----------
    design
        From :func:`bayes_animal.design.build_design` with a non-Gaussian family.
    structures
        The covariance structure of each genetic effect, by term name.
    method
        ``"reml"`` (fixed effects integrated) or ``"ml"`` (glmer's Laplace estimate).
    ordering
        Fill-reducing ordering of the sparse analysis.
    pev
        Prediction error variances of the levels (latent scale).
    max_iterations
        L-BFGS-B iterations allowed.
    """
    from scipy import optimize

    from ..linalg.laplace import LaplaceEquations

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    family = design.family
    parameters = Parameters.from_spec(design.spec)
    free = _free_names(parameters, family)
    integrate = method == "reml"
    equations = LaplaceEquations(
        design, structures, parameters, integrate_fixed=integrate, ordering=ordering
    )
    equations.analysis  # noqa: B018 - the one-off ordering and symbolic analysis, timed here
    timings["analyse"] = time.perf_counter() - clock
    clock = time.perf_counter()
    d = len(free)
    sd0 = np.full(d, 0.5)
    if family.observation_effect:
        sd0[free.index("residual")] = 0.3
    beta0 = _glm_start(design) if family.name != "ordinal" else _ordinal_start(design)
    p = design.n_fixed
    pb = 0 if integrate else p  # the fixed effects among the searched parameters (ml)
    cut0 = equations.cutpoints
    kc = 0 if cut0 is None else len(cut0) - 1  # free cut-points (the first is 0)
    analytic = integrate and kc == 0

    def theta_of(sd: np.ndarray) -> np.ndarray:
        return _full_theta(parameters, family, free, np.asarray(sd) ** 2)

    def cutpoints_of(increments: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(np.exp(increments))])

    def value_of(z: np.ndarray) -> float:
        """The approximate log-likelihood at z = (SDs, [b], [log cut-point increments])."""
        if kc:
            equations.cutpoints = cutpoints_of(z[d + pb :])
        try:
            return equations.log_marginal(
                theta_of(z[:d]), z[d : d + pb] if pb else None, expected=not integrate
            )
        except BayesAnimalError:
            return -np.inf

    if analytic:

        def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
            theta = theta_of(z)
            try:
                value, gradient, _ = equations.value_and_gradient(theta)
            except BayesAnimalError:
                return np.inf, np.zeros(d)
            g = np.array([gradient[parameters.index(n)] for n in free])
            return -value, -2.0 * z * g

    else:

        def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
            steps = 1e-5 * np.maximum(1.0, np.abs(z))
            steps[:d] = np.minimum(steps[:d], 0.5 * np.maximum(z[:d] - BOUNDARY_SD / 2, 1e-9))
            return -value_of(z), -_central_gradient(value_of, z, steps)

    parts = [sd0]
    if pb:
        parts.append(beta0)
    if kc:
        parts.append(np.log(np.maximum(np.diff(cut0), 1e-3)))
    z0 = np.concatenate(parts)
    bounds = [(BOUNDARY_SD, None)] * d + [(None, None)] * (pb + kc)
    found = optimize.minimize(
        objective,
        z0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": max_iterations, "ftol": 1e-15, "gtol": 1e-9},
    )
    z = np.array(found.x, dtype=float)
    boundary_free = [k for k in range(d) if z[k] <= BOUNDARY_SD * 1.0001]
    # Newton steps on the parameters not at the boundary, on their own scale: variances, b
    # and the cut-points themselves
    names_interior = [k for k in range(len(z)) if k not in boundary_free]

    def _steps(v: np.ndarray, relative: float) -> np.ndarray:
        """Difference steps: relative to each value, variances kept well inside (0, ∞)."""
        steps = relative * np.maximum(np.abs(v), 1e-2)
        steps[:d] = np.minimum(steps[:d], 0.2 * np.maximum(v[:d], 1e-12))
        return steps

    def variable_vector(z: np.ndarray) -> np.ndarray:
        v = z.copy()
        v[:d] = z[:d] ** 2
        if kc:
            v[d + pb :] = cutpoints_of(z[d + pb :])[1:]
        return v

    def from_variables(v: np.ndarray) -> np.ndarray:
        z = v.copy()
        z[:d] = np.sqrt(np.maximum(v[:d], 0.0))
        if kc:
            z[d + pb :] = np.log(np.maximum(np.diff(np.concatenate([[0.0], v[d + pb :]])), 1e-300))
        return z

    def gradient_in_variables(v: np.ndarray) -> np.ndarray:
        """∂ℓ/∂(θ_free, [b], [cut-points]) — analytic where b and u are integrated and there
        are no cut-points, central differences otherwise."""
        zz = from_variables(v)
        if analytic:
            _, gradient, _ = equations.value_and_gradient(theta_of(zz[:d]))
            return np.array([gradient[parameters.index(n)] for n in free])
        return _central_gradient(value_in_variables, v, _steps(v, 1e-4))

    def value_in_variables(v: np.ndarray) -> float:
        return value_of(from_variables(v))

    v = variable_vector(z)
    converged = False
    newton = 0
    hessian = None
    expected_gain, last_change = float("inf"), float("nan")
    final_gradient = np.zeros(0)
    for _ in range(20):
        newton += 1
        g = gradient_in_variables(v)
        if analytic:
            hessian = _central_jacobian(gradient_in_variables, v, _steps(v, 1e-4))
        else:  # from values: differences of differenced values would amplify round-off
            hessian = _central_hessian(value_in_variables, v, _steps(v, 1e-3))
        keep = np.array(names_interior, dtype=int)
        if len(keep) == 0:
            break
        sub = hessian[np.ix_(keep, keep)]
        try:
            step = -np.linalg.solve(sub, g[keep])
        except np.linalg.LinAlgError:
            break
        expected_gain = float(0.5 * g[keep] @ step)
        final_gradient = g[keep] * np.where(keep < d, v[keep], 1.0)
        if expected_gain < 0 or not np.isfinite(expected_gain):
            break  # not a maximum of the interior: keep the search's point
        trial = v.copy()
        trial[keep] += step
        if np.any(trial[:d] <= 0) or (kc and np.any(np.diff(trial[d + pb :]) <= 0)):
            break
        if kc and trial[d + pb] <= 0:
            break
        v = trial
        last_change = expected_gain
        if expected_gain < CONVERGENCE_TOLERANCE:
            converged = True
            break
    value_of(from_variables(v))  # the cut-points of the estimate, set on the equations
    z = from_variables(v)
    theta = theta_of(z[:d])
    timings["iterate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    # the estimate's curvature: information over (free θ, b) for ml, free θ for reml
    information_free = -hessian if hessian is not None else np.zeros((len(v), len(v)))
    if integrate:
        mode = equations.mode(theta)
        beta = mode.x[:p]
        loglik = equations.value_at(theta, mode)
    else:
        beta = v[d : d + p]
        mode = equations.mode(theta, beta)
        loglik = equations.value_at(theta, equations.mode(theta, beta, expected=True))
    inverse_selected = mode.factor.selected_inverse() if pev else None
    diagonal = inverse_selected.diagonal() if pev else None
    predictions = _predictions(design, structures, equations, parameters, theta, mode.x, diagonal)
    # information over all of θ (zeros for the fixed residual) and b's covariance
    size = len(parameters.names)
    information = np.zeros((size, size))
    at = [parameters.index(n) for n in free]
    boundary = tuple(free[k] for k in boundary_free)
    keep = [k for k in range(d) if k not in boundary_free]
    full_info = information_free
    if integrate:
        information[np.ix_([at[k] for k in keep], [at[k] for k in keep])] = full_info[
            np.ix_(keep, keep)
        ]
        unit = np.zeros((equations.size, p))
        unit[np.arange(p), np.arange(p)] = 1.0
        beta_cov = mode.factor.solve(unit)[:p]
        searched = keep + list(range(d, d + kc))
        searched_cov = _safe_inverse(full_info[np.ix_(searched, searched)])
        theta_cov_free = searched_cov[: len(keep), : len(keep)]
        cut_cov = searched_cov[len(keep) :, len(keep) :]
        joint = None
    else:
        interior = keep + list(range(d, d + p + kc))
        joint_cov = _safe_inverse(full_info[np.ix_(interior, interior)])
        joint = (interior, joint_cov[: len(keep) + p, : len(keep) + p])
        theta_cov_free = joint_cov[: len(keep), : len(keep)]
        beta_cov = joint_cov[len(keep) : len(keep) + p, len(keep) : len(keep) + p]
        cut_cov = joint_cov[len(keep) + p :, len(keep) + p :]
        # the θ block of the information whose inverse is the θ block of the joint covariance
        information[np.ix_([at[k] for k in keep], [at[k] for k in keep])] = _safe_inverse(
            theta_cov_free
        )
    fixed = tuple(family.held)
    fixed_names = tuple(design.fixed_names)
    beta = np.asarray(beta, dtype=float)
    if kc:  # the estimated cut-points beside the fixed effects (the first, 0, is not one)
        names = [cutpoint_name(design.categories, k) for k in range(1, kc + 1)]
        fixed_names += tuple(names)
        beta = np.concatenate([beta, equations.cutpoints[1:]])
        widened = np.zeros((p + kc, p + kc))
        widened[:p, :p] = beta_cov
        widened[p:, p:] = cut_cov
        beta_cov = widened
    result = assemble(
        parameters=parameters,
        theta=theta,
        information=information,
        boundary=boundary,
        fixed=fixed,
        method=method,
        engine="laplace",
        beta=beta,
        beta_cov=0.5 * (beta_cov + beta_cov.T),
        fixed_names=fixed_names,
        predictions=predictions,
        loglik=float(loglik),
        convergence=Convergence(
            converged=converged,
            expected_gain=expected_gain,
            last_change=last_change,
            gradient=tuple(float(x) for x in final_gradient),
            reason=(
                "Newton steps on the approximate log-likelihood converged"
                if converged
                else f"stopped: {found.message}"
            ),
        ),
        iterations=int(found.nit) + newton,
        n_records=design.n_records,
        timings=timings,
        notices=design.notices,
    )
    ratios = result.ratio_table
    rows = {name: row for name, row in ratios.rows()}
    if "additive" in parameters.names and family.name != "ordinal":
        beta = beta[:p]
        value, se = _observed_with_se(
            design, parameters, free, keep, theta, beta, theta_cov_free, joint
        )
        rows[OBSERVED_H2] = {"estimate": value, "se": se}
    ratio_table = Table(
        "ratio",
        list(rows),
        {
            "estimate": np.array([r["estimate"] for r in rows.values()], dtype=float),
            "se": np.array([r["se"] for r in rows.values()], dtype=float),
        },
    )
    timings["predict"] = time.perf_counter() - clock
    return replace(
        result,
        ratio_table=ratio_table,
        family=family.label,
        fixed_components=fixed,
        timings=timings,
    )


def _predictions(design, structures, equations, parameters, theta, x, diagonal) -> dict[str, Table]:
    """Per random effect, the conditional modes and (``diagonal`` of the inverse given)
    their prediction error variances, as the prediction tables of a Gaussian fit."""
    out: dict[str, Table] = {}
    for effect in design.effects:
        where = equations.effect_slice(effect.name)
        structure = structures.get(effect.name, structures.get(effect.term))
        out[effect.name] = prediction_table(
            structure.ids if effect.genetic else effect.levels,
            x[where].copy(),
            None if diagonal is None else diagonal[where].copy(),
            theta[parameters.index(effect.name)],
            structure.diagonal() if effect.genetic else np.ones(effect.size),
            effect.counts(),
        )
    return out


def cutpoint_name(categories, k: int) -> str:
    """The k-th cut-point (k ≥ 1), between the categories k and k + 1 (counted from 1):
    ``cutpoint:2|3``."""
    return f"cutpoint:{categories[k]}|{categories[k + 1]}"


def _safe_inverse(matrix: np.ndarray) -> np.ndarray:
    if matrix.size == 0:
        return matrix.copy()
    try:
        return np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        return np.full_like(matrix, np.nan)


def _observed_with_se(
    design, parameters, free, keep, theta, beta, theta_cov, joint
) -> tuple[float, float]:
    """The observed-scale h² and its delta-method SE (over θ, and b for ML)."""

    def at(values_theta: np.ndarray, values_beta: np.ndarray) -> float:
        return observed_ratio(design, parameters, values_theta, values_beta)

    base = at(theta, beta)
    grad_theta = []
    for k in keep:
        step = 1e-6 * max(theta[parameters.index(free[k])], 1e-6)
        moved = theta.copy()
        moved[parameters.index(free[k])] += step
        grad_theta.append((at(moved, beta) - base) / step)
    grad_theta = np.array(grad_theta)
    if joint is None:
        return base, float(np.sqrt(max(grad_theta @ theta_cov @ grad_theta, 0.0)))
    grad_beta = []
    for j in range(len(beta)):
        moved = beta.copy()
        moved[j] += 1e-6
        grad_beta.append((at(theta, moved) - base) / 1e-6)
    gradient = np.concatenate([grad_theta, grad_beta])
    return base, float(np.sqrt(max(gradient @ joint[1] @ gradient, 0.0)))
