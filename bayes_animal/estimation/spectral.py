r"""REML (and ML) with one random effect, in the eigenbasis of K: the fast path.

Model: :math:`y = X b + Z u + e`, :math:`u \sim N(0, \sigma_u^2 A)` (A the relationship
matrix, or I for an independent effect), :math:`e \sim N(0, \sigma^2 I)`, so
:math:`V = \sigma_u^2 K + \sigma^2 I` with :math:`K = Z A Z^\top = U \operatorname{diag}(d)
U^\top` (:mod:`bayes_animal.linalg.spectral`). The result is the same
:class:`~bayes_animal.estimation.result.RemlResult` as the sparse engine's, whose answer it equals
(tested to 1e-6 on every shared data set).

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
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..design import Design
from ..errors import BayesAnimalError
from ..linalg.spectral import SpectralProblem, decompose
from ..linalg.threads import blas_threads
from ..spec.parameters import Parameters
from ..structures.relationship import RelationshipMatrix
from ..tables import Table
from ..tables import pandas as pd
from .result import (
    CONVERGENCE_TOLERANCE,
    Convergence,
    Method,
    RemlResult,
    assemble,
    prediction_table,
)

__all__ = [
    "Prediction",
    "SpectralLikelihood",
    "fit_spectral",
    "loglik",
    "predict",
    "profile_loglik",
]

#: Grid in logit(θ) scanned before Newton refinement, plus θ = 0 itself.
_LOGIT_GRID = np.linspace(-18.0, 18.0, 73)
_NEWTON_MAX_STEPS = 100  # per bracket; fit_spectral(max_iterations=...)


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


def check_method(method: str) -> Method:
    """``"reml"`` or ``"ml"``, else a clear error."""
    if method not in ("reml", "ml"):
        raise BayesAnimalError(f"Unknown method {method!r}: choose 'reml' or 'ml'.")
    return method  # type: ignore[return-value]


def _traces(v, Q, M, dirs: list[np.ndarray], reml_: bool) -> tuple[np.ndarray, np.ndarray]:
    """tr(P D_i) and the matrix tr(P D_i P D_j) for diagonal D_i, with
    P = diag(v) − Q M Qᵀ (REML) or diag(v) (ML): the one place these traces are computed."""
    k = len(dirs)
    first = np.empty(k)
    second = np.empty((k, k))
    r_diag = np.einsum("ij,jk,ik->i", Q, M, Q) if reml_ else None
    s = [Q.T @ (da[:, None] * Q) for da in dirs] if reml_ else None
    for i in range(k):
        first[i] = v @ dirs[i] - (r_diag @ dirs[i] if reml_ else 0.0)
        for j in range(i, k):
            value = (v * v) @ (dirs[i] * dirs[j])
            if reml_:
                value += -2.0 * (v * r_diag) @ (dirs[i] * dirs[j])
                value += np.trace(M @ s[i] @ M @ s[j])
            second[i, j] = second[j, i] = value
    return first, second


def profile_loglik(problem: SpectralProblem, theta: float, *, method: Method = "reml") -> _Profile:
    """The profiled (over s² and b) log-likelihood at θ = σu²/(σu² + σ²), with its first two
    derivatives.

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
    first, second = _traces(v, Q, M, [a], reml_)
    logdet_x = 2.0 * float(np.sum(np.log(np.diag(chol)))) - problem.logdet_xtx if reml_ else 0.0
    value = -0.5 * (
        m * np.log(2.0 * np.pi) + np.sum(np.log(w)) + logdet_x + m * np.log(ypy / m) + m
    )
    gradient = -0.5 * (first[0] - m * y_pa_py / ypy)
    curvature = -0.5 * (-second[0, 0] + m * (2.0 * y_papa_py / ypy - (y_pa_py / ypy) ** 2))
    return _Profile(theta, float(value), float(gradient), float(curvature), ypy / m)


def _outer_rows(X: np.ndarray) -> np.ndarray:
    """Row-wise outer products x_i x_iᵀ, flattened (n × p²): Xᵀ diag(w) X = (wᵀ this)."""
    return (X[:, :, None] * X[:, None, :]).reshape(X.shape[0], -1)


def _weighted_cross(XX: np.ndarray, weights: np.ndarray, p: int) -> np.ndarray:
    """Xᵀ diag(w_t) X for every column w_t of ``weights`` (T × p × p), by one product."""
    return (weights.T @ XX).reshape(-1, p, p)


def _gls_many(problem: SpectralProblem, y_rot: np.ndarray, W: np.ndarray):
    """Batched GLS with per-trait variances W (n × T): (V, M, chol, R), M (T × p × p)."""
    X = problem.X_rot
    p = X.shape[1]
    V = 1.0 / W
    XtVX = _weighted_cross(_outer_rows(X), V, p)
    chol = np.linalg.cholesky(XtVX)
    M = np.linalg.inv(XtVX)
    b = (M @ ((V * y_rot).T @ X)[:, :, None])[:, :, 0]
    R = y_rot - X @ b.T
    return V, M, chol, R


def profile_many(
    problem: SpectralProblem, y_rot: np.ndarray, thetas: np.ndarray, method: Method
) -> dict[str, np.ndarray]:
    r""":func:`profile_loglik` of every column of ``y_rot`` at its own θ (value, gradient,
    curvature, scale s²), with every product taken per column: :math:`w_{it} = 1 + \theta_t
    (d_i - 1)`, :math:`M_t = (X^{*\top} \operatorname{diag}(v_t) X^*)^{-1}`, :math:`r_t =
    y_t^* - X^* M_t X^{*\top} v_t y_t^*`; :math:`O(n p^2 T)` in a few NumPy calls. The
    many-trait maximiser's columns are traits (:mod:`~bayes_animal.estimation.spectral_many`),
    the grid scan's one trait at every θ of the grid."""
    thetas = np.asarray(thetas, dtype=float)
    X = problem.X_rot
    p = X.shape[1]
    a = problem.eigenvalues - 1.0
    reml_ = method == "reml"
    m = problem.n - problem.p if reml_ else problem.n
    W = 1.0 + np.outer(a, thetas)  # n × T
    V, M, chol, R = _gls_many(problem, y_rot, W)
    PY = V * R
    ypy = np.sum(R * PY, axis=0)
    G = a[:, None] * PY
    y_pa_py = np.sum(G * PY, axis=0)
    QG = (V * G).T @ X  # T × p
    y_papa_py = np.sum(G * V * G, axis=0) - np.sum(QG * (M @ QG[:, :, None])[:, :, 0], axis=1)
    # tr(P A) and tr(P A P A) with A = diag(a), P = diag(v) - Q M Qᵀ (REML), Q = diag(v) X
    first = a @ V
    second = (a * a) @ (V * V)
    logdet_x = np.zeros_like(thetas)
    if reml_:
        XX = _outer_rows(X)
        r_diag = (XX @ M.reshape(len(thetas), -1).T) * V * V  # diag(Q M Qᵀ), n × T
        first = first - a @ r_diag
        second = second - 2.0 * (a * a) @ (V * r_diag)
        MS = M @ _weighted_cross(XX, a[:, None] * V * V, p)  # M Qᵀ A Q
        second = second + np.sum(MS * MS.transpose(0, 2, 1), axis=(1, 2))
        logdet_x = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        logdet_x = logdet_x - problem.logdet_xtx
    value = -0.5 * (
        m * np.log(2.0 * np.pi) + np.log(W).sum(axis=0) + logdet_x + m * np.log(ypy / m) + m
    )
    gradient = -0.5 * (first - m * y_pa_py / ypy)
    curvature = -0.5 * (-second + m * (2.0 * y_papa_py / ypy - (y_pa_py / ypy) ** 2))
    return {
        "theta": thetas,
        "value": value,
        "gradient": gradient,
        "curvature": curvature,
        "scale": ypy / m,
    }


GRID_THETAS = np.concatenate([[0.0], 1.0 / (1.0 + np.exp(-_LOGIT_GRID))])
"""The θ = σu²/(σu² + σ²) values scanned before the Newton refinement."""


def loglik(
    problem: SpectralProblem, variance: float, residual: float, *, method: Method = "reml"
) -> float:
    """The restricted (or ML) log-likelihood at given variances, b at its GLS value.

    The constant is :data:`~bayes_animal.estimation.result.LOGLIK_CONSTANT`. Cost :math:`O(n p^2)`.
    """
    method = check_method(method)
    variances = variance * problem.eigenvalues + residual
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


class SpectralLikelihood:
    r"""The restricted log-likelihood :math:`\ell_R(\sigma_u^2, \sigma^2)` and its gradient,
    at the cost of one pass over the records: the density of the spectral marginal model.

    With :math:`v_i = \sigma_u^2 d_i + \sigma^2`, :math:`w_i = 1/v_i` and the rows
    :math:`z_i = (x^*_i, y^*_i)` of the rotated :math:`[X^*\, y^*]`, every quantity is a weighted
    sum of the fixed moments :math:`z_i z_i^\top`: one product of the weights
    :math:`(w, w^2 d, w^2)` with the :math:`n \times (p+1)^2` moment matrix gives

    .. math::

        S_0 = \textstyle\sum_i w_i z_i z_i^\top = \begin{pmatrix} X^{*\top} W X^* & X^{*\top}
        W y^* \\ \cdot & y^{*\top} W y^*\end{pmatrix},\quad
        S_u = \textstyle\sum_i w_i^2 d_i z_i z_i^\top,\quad S_e = \textstyle\sum_i w_i^2 z_i
        z_i^\top.

    With :math:`G = S_0^{-1}`, :math:`s = 1/G_{pp} = y^\top P y`, :math:`g = G_{\cdot p}` and
    :math:`\log|X^{*\top}WX^*| = \log|S_0| - \log s`,

    .. math::

        \frac{\partial \ell_R}{\partial \sigma_k^2} = -\tfrac12\left[\operatorname{tr}(W D_k)
        - \operatorname{tr}\big((G + s(s-1)\, g g^\top) S_k\big)\right],\qquad
        D_u = \operatorname{diag}(d),\ D_e = I,

    since :math:`G = (X^{*\top}WX^*)^{-1} \oplus 0 + a a^\top / s` with :math:`a = (-\hat b, 1) =
    s\,g`, and :math:`\operatorname{tr}((X^{*\top}WX^*)^{-1} X^{*\top}WD_kWX^*) + a^\top S_k a`
    is the derivative of :math:`\log|X^{*\top}WX^*| + y^\top P y` (up to sign).
    The same value as :func:`loglik` (tested to 1e-10), with the constant of
    :data:`~bayes_animal.estimation.result.LOGLIK_CONSTANT`; a few NumPy calls of O(n p²) each.
    """

    def __init__(self, problem: SpectralProblem) -> None:
        n, p = problem.n, problem.p
        rows = np.column_stack([problem.X_rot, problem.y_rot])
        moments = (rows[:, :, None] * rows[:, None, :]).reshape(n, (p + 1) ** 2)
        # (p+1)² + 2 rows: the moments, then d and 1 (for tr(W D_k)); records along the rows
        self._moments = np.ascontiguousarray(
            np.column_stack([moments, problem.eigenvalues, np.ones(n)]).T
        )
        self._d = problem.eigenvalues
        self._p = p
        self._constant = (n - p) * np.log(2.0 * np.pi) - problem.logdet_xtx
        # tr(H S_k) from H's upper triangle: 2 off the diagonal, 1 on it
        k = p + 1
        self._upper = (2.0 * np.triu(np.ones((k, k)), 1) + np.eye(k)).ravel()
        # LAPACK's Cholesky and inverse without numpy.linalg's per-call checks (a few µs each
        # at this size, the sampler calls this ~17 000 times per fit)
        self._lapack()

    def _lapack(self) -> None:
        from scipy.linalg.lapack import dpotrf, dpotri

        self._potrf, self._potri = dpotrf, dpotri

    def __getstate__(self) -> dict:
        """The arrays; LAPACK's routines (which do not pickle) are looked up again."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_potrf", "_potri")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lapack()

    def __call__(self, variance: float, residual: float) -> tuple[float, np.ndarray]:
        """``(ℓ_R, [∂ℓ_R/∂σu², ∂ℓ_R/∂σ²])``; −∞ (and zeros) outside σu² ≥ 0, σ² > 0."""
        if not (variance >= 0.0 and residual > 0.0):
            return -np.inf, np.zeros(2)
        p, k = self._p, self._p + 1
        kk = k * k
        v = self._d * variance
        v += residual
        weights = np.empty((3, len(v)))  # per call: nutpie's chains share this object
        np.reciprocal(v, out=weights[0])
        np.multiply(weights[0], weights[0], out=weights[2])
        np.multiply(weights[2], self._d, out=weights[1])
        sums = self._moments @ weights.T  # ((p+1)² + 2) × 3: S_0, S_u, S_e by column
        factor, info = self._potrf(sums[:kk, 0].reshape(k, k), lower=0)
        if info != 0:
            return -np.inf, np.zeros(2)
        logdet = 2.0 * np.log(factor.diagonal()).sum()
        inverse, info = self._potri(factor, lower=0)  # upper triangle of G = S_0⁻¹
        if info != 0:
            return -np.inf, np.zeros(2)
        ypy = 1.0 / inverse[p, p]
        g = inverse[:, p]  # column p lies in the upper triangle
        inverse += (ypy * (ypy - 1.0)) * np.multiply.outer(g, g)
        traces = (inverse.ravel() * self._upper) @ sums[:kk, 1:]
        value = -0.5 * (np.log(v).sum() + logdet - np.log(ypy) + ypy + self._constant)
        return float(value), -0.5 * (sums[kk:, 0] - traces)


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


GRID_BATCH_ELEMENTS = 1 << 22
"""Doubles (32 MB) that the batched grid scan's arrays may take together."""


def _scan_grid(problem: SpectralProblem, method: Method) -> tuple[np.ndarray, np.ndarray]:
    """The profile's gradient and value at every θ of :data:`GRID_THETAS`.

    :func:`profile_many` with the grid's θ as columns (1 ms instead of 15 ms point by point for
    1 000 records and 74 points), in slices of θ that keep its arrays — about 15 of n × width
    doubles, and two of n × p² — within :data:`GRID_BATCH_ELEMENTS`; point by point where even
    a few θ at a time would not fit (many records with many fixed-effect columns).
    """
    n, p = problem.n, problem.p
    width = (GRID_BATCH_ELEMENTS - 2 * n * p * p) // (15 * n)
    if width < 8:
        points = [profile_loglik(problem, float(t), method=method) for t in GRID_THETAS]
        return np.array([q.gradient for q in points]), np.array([q.value for q in points])
    gradients, values = [], []
    for start in range(0, len(GRID_THETAS), width):
        thetas = GRID_THETAS[start : start + width]
        columns = np.repeat(problem.y_rot[:, None], len(thetas), axis=1)
        scan = profile_many(problem, columns, thetas, method)
        gradients.append(scan["gradient"])
        values.append(scan["value"])
    return np.concatenate(gradients), np.concatenate(values)


def _maximise(problem: SpectralProblem, method: Method, max_iterations: int) -> _Maximum:
    """Grid scan of ℓ(θ) over :data:`GRID_THETAS`, Newton refinement in each
    ascending→descending bracket.

    The scan is batched (:func:`_scan_grid`); the grid points that the result starts from (a
    bracket's ends, a boundary, the best point) are evaluated again by :func:`profile_loglik`,
    so the Newton steps and the estimate are those of a point-by-point scan.
    """
    gradients, values = _scan_grid(problem, method)

    def point(k: int) -> _Profile:
        return profile_loglik(problem, float(GRID_THETAS[k]), method=method)

    candidates: list[tuple[_Profile, int, float, str | None]] = []
    if gradients[0] <= 0:
        candidates.append((point(0), 0, 0.0, "effect"))
    if gradients[-1] >= 0:
        candidates.append((point(-1), 0, 0.0, "residual"))
    for k in np.flatnonzero((gradients[:-1] > 0) & (gradients[1:] <= 0)):
        lo, hi = point(k), point(k + 1)
        found, steps, change = _newton_root(problem, lo, hi, method, max_iterations)
        candidates.append((found, steps, change, None))
    if not candidates:
        best_grid = point(int(np.argmax(values)))
        stop = Convergence(
            False, float("inf"), float("inf"), (best_grid.gradient,) * 2, "no maximum bracketed"
        )
        return _Maximum(best_grid, len(GRID_THETAS), stop, None)
    profile, steps, change, boundary = max(candidates, key=lambda item: item[0].value)
    return _Maximum(
        profile,
        sum(c[1] for c in candidates) + len(GRID_THETAS),
        _convergence(profile, change, boundary, steps < max_iterations),
        boundary,
    )


def _average_information(v, Q, M, py, dirs: list[np.ndarray], reml_: bool) -> np.ndarray:
    """Matrix ½ (D_i P y)ᵀ P (D_j P y) (P → diag(v) for ML): the average information."""
    works = np.column_stack([da * py for da in dirs])
    projected = v[:, None] * works
    if reml_:
        projected -= Q @ (M @ (Q.T @ works))
    return 0.5 * works.T @ projected


def _breeding_values(problem, design, relmat, variance, v, Q, M, r, pev: bool) -> Table:
    """BLUP, PEV and reliability of every level (see the module docstring)."""
    effect = design.effects[0]
    q, index = relmat.size, effect.index
    A = relmat.matrix
    U = problem.eigenvectors
    blup = variance * (A @ np.bincount(index, weights=U @ (v * r), minlength=q))
    pev_values = None
    if pev:
        if effect.is_permutation():
            B = np.empty((q, len(index)))
            B[index] = U * problem.eigenvalues
        else:
            B = A @ (effect.incidence().T @ U)
        BQ = B @ Q
        quad = (B * B) @ v - np.einsum("ij,jk,ik->i", BQ, M, BQ)
        pev_values = variance * np.diag(A) - variance**2 * quad
    return prediction_table(relmat.ids, blup, pev_values, variance, np.diag(A), effect.counts())


@dataclass(frozen=True)
class Prediction:
    r"""GLS fixed effects and predictions at given variance components (Henderson's solutions).

    Attributes
    ----------
    fixed_names
        The design columns.
    b
        GLS estimate of b (:attr:`beta` by design column).
    M
        :math:`(X^\top V^{-1} X)^{-1}` (:attr:`beta_cov`).
    table
        One row per level: ``blup``, ``pev``, ``reliability``, ``n_records`` (:attr:`blup`).
    """

    fixed_names: tuple[str, ...]
    b: np.ndarray
    M: np.ndarray
    table: Table

    @cached_property
    def beta(self) -> pd.Series:
        """b̂ by design column."""
        return pd.Series(self.b, index=list(self.fixed_names), name="beta")

    @cached_property
    def beta_cov(self) -> pd.DataFrame:
        """The covariance of b̂."""
        names = list(self.fixed_names)
        return pd.DataFrame(self.M, index=names, columns=names)

    @cached_property
    def blup(self) -> pd.DataFrame:
        """The predictions of every level."""
        return self.table.frame()

    @cached_property
    def beta_se(self) -> pd.Series:
        """Standard errors of b."""
        return pd.Series(np.sqrt(np.diag(self.M)), index=list(self.fixed_names), name="se")


def _single_effect(design: Design, relmat: RelationshipMatrix) -> None:
    if len(design.effects) != 1:
        raise BayesAnimalError(
            f"The spectral path fits one random effect; this model has "
            f"{len(design.effects)} ({', '.join(e.name for e in design.effects)}). Use the "
            "sparse engine (engine='sparse')."
        )
    if relmat.size != design.effects[0].size:
        raise BayesAnimalError("The matrix given does not match the levels of the effect.")


def predict(
    design: Design,
    relmat: RelationshipMatrix,
    *,
    variance: float,
    residual: float,
    problem: SpectralProblem | None = None,
    pev: bool = True,
    threads: int | None = None,
) -> Prediction:
    r"""b̂ and the predictions of every level at known variances (the mixed-model solutions).

    Identical to solving Henderson's mixed-model equations with
    :math:`\alpha = \sigma^2 / \sigma_u^2`; PEV is the level block of the inverse coefficient
    matrix times :math:`\sigma^2`. Computed in the eigenbasis of :math:`K`.
    """
    if residual <= 0 or variance < 0:
        raise BayesAnimalError("predict needs a residual variance > 0 and a variance ≥ 0.")
    _single_effect(design, relmat)
    if problem is None:
        problem = decompose(design, relmat, threads=threads)
    with blas_threads(threads):
        v = 1.0 / (variance * problem.eigenvalues + residual)
        Q, M, b, r, _ = _gls(problem, v)
        blup = _breeding_values(problem, design, relmat, variance, v, Q, M, r, pev)
    return Prediction(fixed_names=tuple(design.fixed_names), b=b, M=M, table=blup)


def fit_spectral(
    design: Design,
    relmat: RelationshipMatrix,
    *,
    method: Method = "reml",
    problem: SpectralProblem | None = None,
    pev: bool = True,
    threads: int | None = None,
    max_iterations: int = _NEWTON_MAX_STEPS,
) -> RemlResult:
    """REML (or ML) of a design with one random effect whose dense matrix is ``relmat``.

    Parameters
    ----------
    design
        From :func:`bayes_animal.design.build_design`, with one random effect.
    relmat
        The effect's matrix over its levels (A, G, or the identity of an independent effect).
    method
        ``"reml"`` (default) or ``"ml"``.
    problem
        The eigendecomposition of Z A Zᵀ, when the caller already has it.
    pev
        Compute prediction error variances and reliabilities (:math:`O(q^2 n)`).
    threads
        BLAS threads (default :func:`bayes_animal.linalg.threads.default_threads`).
    max_iterations
        Newton steps allowed per bracketed maximum; a fit stopped by this limit before meeting
        the tolerance reports ``converged=False``.
    """
    method = check_method(method)
    _single_effect(design, relmat)
    if problem is None:
        problem = decompose(design, relmat, threads=threads)
    start = time.perf_counter()
    name = design.effects[0].name
    with blas_threads(threads):
        best = _maximise(problem, method, max_iterations)
        theta, scale = best.profile.theta, best.profile.scale
        variance, residual = theta * scale, (1.0 - theta) * scale
        v = 1.0 / (variance * problem.eigenvalues + residual)
        Q, M, _, r, _ = _gls(problem, v)
        directions = [problem.eigenvalues, np.ones(problem.n)]
        information = _average_information(v, Q, M, v * r, directions, method == "reml")
        expected = 0.5 * _traces(v, Q, M, directions, method == "reml")[1]
    solution = predict(
        design,
        relmat,
        variance=variance,
        residual=residual,
        problem=problem,
        pev=pev,
        threads=threads,
    )
    boundary = {"effect": (name,), "residual": ("residual",), None: ()}[best.boundary]
    return assemble(
        parameters=Parameters.from_spec(design.spec),
        theta=np.array([variance, residual]),
        information=information,
        boundary=boundary,
        method=method,
        engine="spectral",
        beta=solution.b,
        beta_cov=solution.M,
        fixed_names=design.fixed_names,
        predictions={name: solution.table},
        loglik=loglik(problem, variance, residual, method=method),
        convergence=best.convergence,
        iterations=best.iterations,
        n_records=design.n_records,
        timings={"eigh": problem.seconds, "fit": time.perf_counter() - start},
        notices=design.notices,
        expected_information=expected,
    )
