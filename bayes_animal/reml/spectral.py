r"""Built-in REML (and ML) for the one-component animal model, in the eigenbasis of K.

Model: :math:`y = X b + Z u + e`, :math:`u \sim N(0, \sigma_u^2 A)`,
:math:`e \sim N(0, \sigma^2 I)`, so :math:`V = \sigma_u^2 K + \sigma^2 I` with
:math:`K = Z A Z^\top = U \operatorname{diag}(d) U^\top` (:mod:`bayes_animal.spectral`).

**Parameterisation.** :math:`\theta = \sigma_u^2 / (\sigma_u^2 + \sigma^2) = h^2 \in [0, 1]` and
the total :math:`s^2 = \sigma_u^2 + \sigma^2`, so that in the rotated basis
:math:`V^* = s^2 W`, :math:`W = \operatorname{diag}(w)`, :math:`w_i = 1 - \theta + \theta d_i`.
The boundary :math:`\sigma_u^2 = 0` is the ordinary point :math:`\theta = 0`.

**Restricted log-likelihood** (the constant is rrBLUP's ``mixed.solve`` and metafor's):

.. math::

    \ell_R = -\tfrac12\left[(n-p)\log 2\pi + \log|V| + \log|X^\top V^{-1} X|
             - \log|X^\top X| + y^\top P y\right],\qquad
    P = V^{-1} - V^{-1} X (X^\top V^{-1} X)^{-1} X^\top V^{-1}.

The ML log-likelihood is :math:`-\tfrac12[n\log 2\pi + \log|V| + y^\top P y]` (b at its GLS
value). Profiling out :math:`s^2 = y^\top P_W y / m` (:math:`m = n - p` for REML, :math:`n` for
ML) leaves a function of :math:`\theta` alone,

.. math::

    \ell(\theta) = -\tfrac12\left[m \log 2\pi + \textstyle\sum_i \log w_i
        + \log|X^{*\top} W^{-1} X^*| - \log|X^\top X|
        + m \log(y^\top P_W y / m) + m\right]

(the two :math:`X` log-determinants only for REML), with exact derivatives, :math:`W' =
\operatorname{diag}(d - 1)`,

.. math::

    \ell'(\theta) = -\tfrac12\left[\operatorname{tr}(P_W W')
        - m\,\frac{y^\top P_W W' P_W y}{y^\top P_W y}\right],\quad
    \ell''(\theta) = -\tfrac12\left[-\operatorname{tr}(P_W W' P_W W')
        + m\left(2\frac{y^\top P_W W' P_W W' P_W y}{y^\top P_W y}
        - \left(\frac{y^\top P_W W' P_W y}{y^\top P_W y}\right)^2\right)\right]

(:math:`P_W` replaced by :math:`W^{-1}` in the traces for ML). As in EMMA (Kang et al. 2008),
:math:`\ell` is scanned on a grid of :math:`\theta`, every bracket where :math:`\ell'` changes
sign from + to − is refined by safeguarded Newton steps to machine precision, and the best
local maximum (or a boundary) wins. Every step is :math:`O(n p^2)`.

**Standard errors** come, as in ASReml, from the average information matrix of
:math:`(\sigma_u^2, \sigma^2)` at the estimate,
:math:`\mathcal I^{AI}_{ij} = \tfrac12 y^\top P V_i P V_j P y` with :math:`V_u = K`,
:math:`V_e = I` (the average of observed and expected information; :math:`V^{-1}` in the middle
for ML), and the delta method for :math:`h^2`. The expected (Fisher) information
:math:`\tfrac12 \operatorname{tr}(P V_i P V_j)` is reported beside it.
b is the GLS estimate with covariance :math:`(X^\top V^{-1} X)^{-1}`.

**BLUPs** of every animal in A, phenotyped or not: :math:`\hat u = \sigma_u^2 A Z^\top P y`,
with prediction error variance :math:`\mathrm{PEV}_i = \sigma_u^2 a_{ii} - \sigma_u^4
(A Z^\top P Z A)_{ii}` (the :math:`C^{uu}` block of the inverse mixed-model coefficient matrix)
and reliability :math:`1 - \mathrm{PEV}_i / (\sigma_u^2 a_{ii})`.

This module imports numpy and pandas only (no PyMC, no scipy on the common path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import pairwise
from os import PathLike
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..design import Design, build_design
from ..errors import BayesAnimalError
from ..linalg.spectral import SpectralProblem, blas_threads, decompose
from ..structures.inputs import resolve_relationship
from ..structures.pedigree import Pedigree
from ..structures.relationship import RelationshipMatrix

__all__ = [
    "LOGLIK_CONSTANT",
    "Convergence",
    "Prediction",
    "RemlResult",
    "fit_reml",
    "loglik",
    "predict",
    "profile_loglik",
    "reml",
]

Method = Literal["reml", "ml"]

LOGLIK_CONSTANT = (
    "REML: -1/2[(n-p) log(2 pi) + log|V| + log|X'V^-1 X| - log|X'X| + y'Py] "
    "(rrBLUP mixed.solve and metafor); ML: -1/2[n log(2 pi) + log|V| + y'Py]"
)

#: Grid in logit(θ) scanned before Newton refinement, plus θ = 0 itself.
_LOGIT_GRID = np.linspace(-18.0, 18.0, 73)
_NEWTON_MAX_STEPS = 100  # per bracket; fit_reml(max_iterations=...)


@dataclass(frozen=True)
class _Profile:
    """Profiled log-likelihood and its derivatives at one θ (scale s² profiled out)."""

    theta: float
    value: float
    gradient: float
    curvature: float
    scale: float


def _gls(problem: SpectralProblem, v: np.ndarray):
    """GLS pieces for diagonal inverse covariance v: (Q, M, b, r, L) with M = (X*ᵀ v X*)⁻¹."""
    X = problem.X_rot
    Q = X * v[:, None]
    chol = np.linalg.cholesky(X.T @ Q)
    chol_inv = np.linalg.inv(chol)
    M = chol_inv.T @ chol_inv
    b = M @ (Q.T @ problem.y_rot)
    r = problem.y_rot - X @ b
    return Q, M, b, r, chol


def _check_method(method: str) -> Method:
    if method not in ("reml", "ml"):
        raise BayesAnimalError(f"Unknown method {method!r}: choose 'reml' or 'ml'.")
    return method  # type: ignore[return-value]


def profile_loglik(problem: SpectralProblem, theta: float, *, method: Method = "reml") -> _Profile:
    """The profiled (over s² and b) log-likelihood at θ = h², with its first two derivatives.

    Parameters
    ----------
    problem
        The rotated model.
    theta
        σu² / (σu² + σ²) in [0, 1].
    method
        ``"reml"`` or ``"ml"``.
    """
    d = problem.eigenvalues
    w = 1.0 - theta + theta * d
    v = 1.0 / w
    a = d - 1.0
    Q, M, _, r, chol = _gls(problem, v)
    py = v * r
    ypy = float(r @ py)
    reml_ = method == "reml"
    m = problem.n - problem.p if reml_ else problem.n

    g = a * py
    y_pa_py = float(g @ py)
    qg = Q.T @ g
    y_papa_py = float(g @ (v * g) - qg @ M @ qg)
    if reml_:
        r_diag = np.einsum("ij,jk,ik->i", Q, M, Q)
        s_a = Q.T @ (a[:, None] * Q)
        trace = float(v @ a - r_diag @ a)
        trace2 = float(
            (v * v) @ (a * a) - 2.0 * (v * r_diag) @ (a * a) + np.trace(M @ s_a @ M @ s_a)
        )
        logdet_x = 2.0 * float(np.sum(np.log(np.diag(chol)))) - problem.logdet_xtx
    else:
        trace = float(v @ a)
        trace2 = float((v * v) @ (a * a))
        logdet_x = 0.0
    value = -0.5 * (
        m * np.log(2.0 * np.pi) + np.sum(np.log(w)) + logdet_x + m * np.log(ypy / m) + m
    )
    gradient = -0.5 * (trace - m * y_pa_py / ypy)
    curvature = -0.5 * (-trace2 + m * (2.0 * y_papa_py / ypy - (y_pa_py / ypy) ** 2))
    return _Profile(theta, float(value), gradient, curvature, ypy / m)


def loglik(
    problem: SpectralProblem, sigma2_u: float, sigma2_e: float, *, method: Method = "reml"
) -> float:
    """The restricted (or ML) log-likelihood at given variances, b at its GLS value.

    The constant is :data:`LOGLIK_CONSTANT`. Cost :math:`O(n p^2)`.
    """
    method = _check_method(method)
    variances = sigma2_u * problem.eigenvalues + sigma2_e
    if np.any(variances <= 0):
        return -np.inf
    v = 1.0 / variances
    _, _, _, r, chol = _gls(problem, v)
    n, p = problem.n, problem.p
    value = np.sum(np.log(variances)) + r @ (v * r)
    if method == "reml":
        value += (n - p) * np.log(2 * np.pi)
        value += 2.0 * np.sum(np.log(np.diag(chol))) - problem.logdet_xtx
    else:
        value += n * np.log(2 * np.pi)
    return float(-0.5 * value)


#: Convergence: the Newton decrement ½ g²/|ℓ''| (the log-likelihood still to gain by one more
#: Newton step) and the change of ℓ in the last step, both in log-likelihood units.
CONVERGENCE_TOLERANCE = 1e-8


@dataclass(frozen=True)
class Convergence:
    """How the maximiser stopped, in log-likelihood units.

    Attributes
    ----------
    converged
        ``expected_gain`` and ``last_change`` both ≤ :data:`CONVERGENCE_TOLERANCE`, or a boundary
        maximum (the gradient points out of the parameter space there).
    expected_gain
        Newton decrement ½ gᵀ(−H)⁻¹g at the estimate: what one more Newton step would add to
        the log-likelihood (infinite where the curvature is not negative).
    last_change
        |Δℓ| in the last step.
    gradient
        The gradient at the estimate, on the scale of the parameter (∂ℓ/∂ log σ² for each
        variance: σ² ∂ℓ/∂σ²).
    reason
        Why it stopped.
    """

    converged: bool
    expected_gain: float
    last_change: float
    gradient: tuple[float, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "converged": self.converged,
            "expected_gain": self.expected_gain,
            "last_change": self.last_change,
            "gradient": list(self.gradient),
            "reason": self.reason,
        }


def _newton_root(
    problem: SpectralProblem, lo: _Profile, hi: _Profile, method: Method, max_steps: int
) -> tuple[_Profile, int, float]:
    """Refine a maximum of ℓ(θ) bracketed by ℓ'(lo) > 0 > ℓ'(hi) by safeguarded Newton steps;
    return (profile, steps, |Δℓ| of the last step)."""
    current = lo if lo.value >= hi.value else hi
    left, right = lo.theta, hi.theta
    change = float("inf")
    for step in range(1, max_steps + 1):
        if current.gradient > 0:
            left = current.theta
        else:
            right = current.theta
        proposal = (
            current.theta - current.gradient / current.curvature if current.curvature < 0 else None
        )
        if proposal is None or not (left < proposal < right):
            proposal = 0.5 * (left + right)
        moved = abs(proposal - current.theta)
        following = profile_loglik(problem, proposal, method=method)
        change = abs(following.value - current.value)
        current = following
        if moved <= 1e-15 * max(1.0, current.theta) or right - left <= 1e-15:
            return current, step, change
    return current, max_steps, change


def _convergence(best: _Profile, change: float, boundary: str | None, steps_left: bool):
    """The stopping report of the one-parameter profile (see :class:`Convergence`)."""
    theta, g, h = best.theta, best.gradient, best.curvature
    # ℓ is a function of θ = σu²/(σu² + σ²) with s² profiled: d log σu² = dθ/θ along the profile
    gradient = (g * theta, -g * (1.0 - theta))
    if boundary is not None:
        return Convergence(True, 0.0, 0.0, gradient, f"maximum at the boundary {boundary} = 0")
    gain = 0.5 * g * g / -h if h < 0 else float("inf")
    ok = gain <= CONVERGENCE_TOLERANCE and change <= CONVERGENCE_TOLERANCE
    if ok:
        reason = "Newton decrement and last change below tolerance"
    elif not steps_left:
        reason = "stopped at the iteration limit"
    else:
        reason = "the Newton decrement is above tolerance (flat or ill-conditioned likelihood)"
    return Convergence(ok, float(gain), float(change), gradient, reason)


@dataclass(frozen=True)
class _Maximum:
    profile: _Profile
    iterations: int
    convergence: Convergence
    boundary: str | None


def _maximise(problem: SpectralProblem, method: Method, max_iterations: int) -> _Maximum:
    """Grid scan of ℓ(θ), Newton refinement in each ascending→descending bracket."""
    thetas = np.concatenate([[0.0], 1.0 / (1.0 + np.exp(-_LOGIT_GRID))])
    grid = [profile_loglik(problem, float(t), method=method) for t in thetas]
    candidates: list[tuple[_Profile, int, float, str | None]] = []
    if grid[0].gradient <= 0:
        candidates.append((grid[0], 0, 0.0, "sigma2_u"))
    if grid[-1].gradient >= 0:
        candidates.append((grid[-1], 0, 0.0, "sigma2_e"))
    for lo, hi in pairwise(grid):
        if lo.gradient > 0 and hi.gradient <= 0:
            found, steps, change = _newton_root(problem, lo, hi, method, max_iterations)
            candidates.append((found, steps, change, None))
    if not candidates:
        best_grid = max(grid, key=lambda item: item.value)
        stop = Convergence(
            False, float("inf"), float("inf"), (best_grid.gradient,) * 2, "no maximum bracketed"
        )
        return _Maximum(best_grid, len(grid), stop, None)
    profile, steps, change, boundary = max(candidates, key=lambda item: item[0].value)
    return _Maximum(
        profile,
        sum(c[1] for c in candidates) + len(grid),
        _convergence(profile, change, boundary, steps < max_iterations),
        boundary,
    )


def _average_information(
    v: np.ndarray, Q: np.ndarray, M: np.ndarray, py: np.ndarray, dirs: list[np.ndarray], reml_: bool
) -> np.ndarray:
    """Matrix ½ (D_i P y)ᵀ P (D_j P y) (P → diag(v) for ML): the average information."""
    works = np.column_stack([da * py for da in dirs])
    projected = v[:, None] * works
    if reml_:
        projected -= Q @ (M @ (Q.T @ works))
    return 0.5 * works.T @ projected


def _trace_products(
    v: np.ndarray, Q: np.ndarray, M: np.ndarray, dirs: list[np.ndarray], reml_: bool
):
    """Matrix ½ tr(P D_i P D_j) for diagonal D_i (P = diag(v) − Q M Qᵀ, or diag(v) for ML)."""
    k = len(dirs)
    info = np.empty((k, k))
    r_diag = np.einsum("ij,jk,ik->i", Q, M, Q) if reml_ else None
    s = [Q.T @ (da[:, None] * Q) for da in dirs] if reml_ else None
    for i in range(k):
        for j in range(i, k):
            value = (v * v) @ (dirs[i] * dirs[j])
            if reml_:
                value += -2.0 * (v * r_diag) @ (dirs[i] * dirs[j])
                value += np.trace(M @ s[i] @ M @ s[j])
            info[i, j] = info[j, i] = 0.5 * value
    return info


def _variance_standard_errors(
    information: np.ndarray, sigma2_u: float, sigma2_e: float
) -> dict[str, float]:
    """SEs of σu², σ² from the inverse information and of h² by the delta method."""
    try:
        covariance = np.linalg.inv(information)
    except np.linalg.LinAlgError:
        return {"sigma2_u": float("nan"), "sigma2_e": float("nan"), "h2": float("nan")}
    se_u, se_e = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    gradient = np.array([sigma2_e, -sigma2_u]) / (sigma2_u + sigma2_e) ** 2
    se_h2 = float(np.sqrt(max(gradient @ covariance @ gradient, 0.0)))
    return {"sigma2_u": float(se_u), "sigma2_e": float(se_e), "h2": se_h2}


@dataclass(frozen=True)
class RemlResult:
    """A REML (or ML) fit of the one-component animal model.

    Attributes
    ----------
    method
        ``"reml"`` or ``"ml"``.
    sigma2_u, sigma2_e, h2
        Additive genetic variance (on the scale of A), residual variance, σu²/(σu²+σ²).
    se
        Standard errors of ``sigma2_u``, ``sigma2_e`` (inverse average information) and ``h2``
        (delta method).
    beta, beta_se
        GLS fixed effects and their standard errors, indexed by design column name.
    beta_cov
        Covariance of the fixed effects, :math:`(X^\\top V^{-1} X)^{-1}`.
    information
        Average information of (σu², σ²) at the estimate (the SEs come from its inverse).
    expected_information
        Expected (Fisher) information of (σu², σ²).
    loglik
        Restricted (or ML) log-likelihood at the estimate; constant: :data:`LOGLIK_CONSTANT`.
    blup
        One row per animal in A (index: id) with columns ``blup``, ``pev``, ``reliability``
        and ``phenotyped`` (number of records).
    iterations
        Likelihood evaluations and Newton steps used.
    converged
        Whether the maximiser met its tolerance (``convergence`` says how).
    convergence
        The stopping report: Newton decrement, last change, gradient (:class:`Convergence`).
    boundary
        ``None``, ``"sigma2_u"`` (σu² = 0) or ``"sigma2_e"`` (σ² → 0).
    n_records, n_animals
        Records used and animals in A.
    timings
        Seconds for ``eigh`` (the decomposition) and ``fit`` (everything after it).
    notices
        Messages about the data (dropped records).
    """

    method: Method
    sigma2_u: float
    sigma2_e: float
    h2: float
    se: dict[str, float]
    beta: pd.Series
    beta_se: pd.Series
    beta_cov: pd.DataFrame
    information: np.ndarray
    expected_information: np.ndarray
    loglik: float
    blup: pd.DataFrame
    iterations: int
    converged: bool
    boundary: str | None
    n_records: int
    n_animals: int
    timings: dict[str, float] = field(default_factory=dict)
    notices: tuple[str, ...] = ()
    convergence: Convergence | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``bayes-animal reml --json``."""
        return {
            "method": self.method,
            "sigma2_u": self.sigma2_u,
            "sigma2_e": self.sigma2_e,
            "h2": self.h2,
            "se": dict(self.se),
            "beta": {k: float(v) for k, v in self.beta.items()},
            "beta_se": {k: float(v) for k, v in self.beta_se.items()},
            "loglik": self.loglik,
            "loglik_constant": LOGLIK_CONSTANT,
            "converged": self.converged,
            "convergence": self.convergence.to_dict() if self.convergence else None,
            "boundary": self.boundary,
            "iterations": self.iterations,
            "n_records": self.n_records,
            "n_animals": self.n_animals,
            "timings": dict(self.timings),
        }

    def summary(self) -> pd.DataFrame:
        """Variance components and fixed effects as a table (estimate, SE)."""
        rows = [
            ("sigma2_u", self.sigma2_u, self.se["sigma2_u"]),
            ("sigma2_e", self.sigma2_e, self.se["sigma2_e"]),
            ("h2", self.h2, self.se["h2"]),
        ]
        rows += [(f"beta[{k}]", float(v), float(self.beta_se[k])) for k, v in self.beta.items()]
        return pd.DataFrame(rows, columns=["parameter", "estimate", "se"]).set_index("parameter")


def _breeding_values(
    problem: SpectralProblem,
    design: Design,
    relmat: RelationshipMatrix,
    sigma2_u: float,
    v: np.ndarray,
    Q: np.ndarray,
    M: np.ndarray,
    r: np.ndarray,
    pev: bool,
) -> pd.DataFrame:
    """BLUP, PEV and reliability of every animal in A (see the module docstring)."""
    q = relmat.size
    index = design.animal_index
    A = relmat.matrix
    U = problem.eigenvectors
    alpha = v * r
    z_py = np.bincount(index, weights=U @ alpha, minlength=q)
    blup = sigma2_u * (A @ z_py)
    diag_a = np.diag(A).copy()
    records = np.bincount(index, minlength=q)
    result = pd.DataFrame({"blup": blup}, index=pd.Index(relmat.ids, name="id"))
    if pev:
        if len(index) == q and np.all(records == 1):
            B = np.empty((q, len(index)))
            B[index] = U * problem.eigenvalues
        else:
            B = A @ (design.incidence(q).T @ U)
        BQ = B @ Q
        quad = (B * B) @ v - np.einsum("ij,jk,ik->i", BQ, M, BQ)
        pev_values = np.clip(sigma2_u * diag_a - sigma2_u**2 * quad, 0.0, None)
        with np.errstate(divide="ignore", invalid="ignore"):
            reliability = np.where(
                sigma2_u * diag_a > 0, 1.0 - pev_values / (sigma2_u * diag_a), np.nan
            )
        result["pev"] = pev_values
        result["reliability"] = reliability
    result["n_records"] = records
    return result


@dataclass(frozen=True)
class Prediction:
    r"""GLS fixed effects and BLUPs at given variance components (Henderson's solutions).

    Attributes
    ----------
    beta
        GLS estimate of b, indexed by design column.
    beta_cov
        :math:`(X^\top V^{-1} X)^{-1}`.
    blup
        One row per animal in A: ``blup``, ``pev``, ``reliability``, ``n_records``.
    """

    beta: pd.Series
    beta_cov: pd.DataFrame
    blup: pd.DataFrame

    @property
    def beta_se(self) -> pd.Series:
        """Standard errors of b."""
        return pd.Series(np.sqrt(np.diag(self.beta_cov)), index=self.beta.index, name="se")


def predict(
    design: Design,
    relmat: RelationshipMatrix,
    *,
    sigma2_u: float,
    sigma2_e: float,
    problem: SpectralProblem | None = None,
    pev: bool = True,
    threads: int | None = None,
) -> Prediction:
    r"""b̂ and the BLUPs of every animal in A at known variances (the mixed-model solutions).

    Identical to solving Henderson's mixed-model equations with
    :math:`\alpha = \sigma^2 / \sigma_u^2`; PEV is the animal block of the inverse coefficient
    matrix times :math:`\sigma^2`. Computed in the eigenbasis of :math:`K`.
    """
    if sigma2_e <= 0 or sigma2_u < 0:
        raise BayesAnimalError("predict needs sigma2_e > 0 and sigma2_u ≥ 0.")
    if problem is None:
        problem = decompose(design, relmat, threads=threads)
    with blas_threads(threads):
        v = 1.0 / (sigma2_u * problem.eigenvalues + sigma2_e)
        Q, M, b, r, _ = _gls(problem, v)
        blup = _breeding_values(problem, design, relmat, sigma2_u, v, Q, M, r, pev)
    names = list(design.fixed_names)
    return Prediction(
        beta=pd.Series(b, index=names, name="beta"),
        beta_cov=pd.DataFrame(M, index=names, columns=names),
        blup=blup,
    )


def fit_reml(
    design: Design,
    relmat: RelationshipMatrix,
    *,
    method: Method = "reml",
    problem: SpectralProblem | None = None,
    pev: bool = True,
    threads: int | None = None,
    max_iterations: int = _NEWTON_MAX_STEPS,
) -> RemlResult:
    """Fit REML (or ML) to a validated design; reuse ``problem`` if already decomposed.

    Parameters
    ----------
    design, relmat
        From :func:`bayes_animal.design.build_design` and
        :func:`bayes_animal.relationship.as_relationship`.
    method
        ``"reml"`` (default) or ``"ml"``.
    problem
        The eigendecomposition of Z A Zᵀ, when the caller already has it.
    pev
        Compute prediction error variances and reliabilities (:math:`O(q^2 n)`).
    threads
        BLAS threads (default :func:`bayes_animal.spectral.default_threads`).
    max_iterations
        Newton steps allowed per bracketed maximum; a fit stopped by this limit before meeting
        the tolerance reports ``converged=False``.
    """
    method = _check_method(method)
    if problem is None:
        problem = decompose(design, relmat, threads=threads)
    start = time.perf_counter()
    with blas_threads(threads):
        best = _maximise(problem, method, max_iterations)
        theta, scale = best.profile.theta, best.profile.scale
        sigma2_u, sigma2_e = theta * scale, (1.0 - theta) * scale
        v = 1.0 / (sigma2_u * problem.eigenvalues + sigma2_e)
        Q, M, _, r, _ = _gls(problem, v)
        directions = [problem.eigenvalues, np.ones(problem.n)]
        information = _average_information(v, Q, M, v * r, directions, method == "reml")
        expected = _trace_products(v, Q, M, directions, method == "reml")
        se = _variance_standard_errors(information, sigma2_u, sigma2_e)
    solution = predict(
        design,
        relmat,
        sigma2_u=sigma2_u,
        sigma2_e=sigma2_e,
        problem=problem,
        pev=pev,
        threads=threads,
    )
    return RemlResult(
        method=method,
        sigma2_u=float(sigma2_u),
        sigma2_e=float(sigma2_e),
        h2=float(theta),
        se=se,
        beta=solution.beta,
        beta_se=solution.beta_se,
        beta_cov=solution.beta_cov,
        information=information,
        expected_information=expected,
        loglik=loglik(problem, sigma2_u, sigma2_e, method=method),
        blup=solution.blup,
        iterations=best.iterations,
        converged=best.convergence.converged,
        boundary=best.boundary,
        n_records=design.n_records,
        n_animals=relmat.size,
        timings={"eigh": problem.seconds, "fit": time.perf_counter() - start},
        notices=design.notices,
        convergence=best.convergence,
    )


def reml(
    formula: str,
    data: pd.DataFrame,
    *,
    relmat: RelationshipMatrix | pd.DataFrame | np.ndarray | str | PathLike[str] | None = None,
    pedigree: Pedigree | pd.DataFrame | str | PathLike[str] | None = None,
    genotypes: pd.DataFrame | str | PathLike[str] | None = None,
    animal: str = "animal",
    method: Method = "reml",
    nearest_pd: bool = False,
    pev: bool = True,
    threads: int | None = None,
) -> RemlResult:
    """REML estimate of the animal model ``formula + (1 | animal)``.

    Parameters
    ----------
    formula
        Fixed part, ``"response ~ 1 + fix"`` (factors as ``C(sex)``).
    data
        Records; ``animal`` names the id column.
    relmat, pedigree, genotypes
        Exactly one: a relationship matrix (:class:`RelationshipMatrix`, id-labelled
        DataFrame or CSV path; used as given, never rescaled), a pedigree (a
        :class:`~bayes_animal.pedigree.Pedigree` from ``read_pedigree`` for non-default
        columns or selfing, or a table / CSV path), or marker genotypes (VanRaden's G; use
        :func:`~bayes_animal.genomic.genomic_relationship` for a ridge, a blend or 0/1 coding).
        With a pedigree, animals without records get BLUPs too.
    animal
        Column of animal ids.
    method
        ``"reml"`` or ``"ml"``.
    nearest_pd
        Project a non-PSD matrix to the nearest positive-definite one instead of failing.
    pev
        Compute PEV and reliabilities of the BLUPs.
    threads
        BLAS threads.

    Examples
    --------
    >>> from bayes_animal import simulate_reference, reml
    >>> sim = simulate_reference(n=200, n_snps=300, seed=1)
    >>> fit = reml("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    >>> round(fit.h2, 2) > 0
    True
    """
    method = _check_method(method)
    source = resolve_relationship(
        relmat=relmat, pedigree=pedigree, genotypes=genotypes, nearest_pd=nearest_pd
    )
    source.check_animals(data, animal)
    design = build_design(formula, data, animal=animal, relmat=source.relmat)
    return fit_reml(design, source.relmat, method=method, pev=pev, threads=threads)
