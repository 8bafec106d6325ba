r"""The one-component spectral REML of many traits at once (traits as columns).

For T traits with the same records, X and :math:`K = U \operatorname{diag}(d) U^\top`, the
rotated responses :math:`Y^* = U^\top Y` (n × T) share everything but their columns. Each
trait t is at its own :math:`\theta_t = \sigma_u^2/(\sigma_u^2+\sigma^2)`, with
:math:`w_{it} = 1 + \theta_t (d_i - 1)` and :math:`v = 1/w`; the GLS pieces are batched:

.. math::

    M_t = (X^{*\top} \operatorname{diag}(v_t) X^*)^{-1}, \quad
    r_t = y_t^* - X^* M_t X^{*\top} v_t y_t^*, \quad P y_t = v_t r_t,

and the profiled log-likelihood, its derivative and curvature in θ are the formulas of
:func:`~bayes_animal.estimation.spectral.profile_loglik` with every product taken per column
(:math:`O(n p^2 T)` per evaluation of all traits). :func:`maximise_many` runs the same scan
and safeguarded Newton steps as the one-trait maximiser, for every bracket of every trait
at once, so each trait's estimate is the one :func:`~bayes_animal.api.reml` gives (tested to
1e-8).
"""

from __future__ import annotations

import numpy as np

from ..linalg.spectral import SpectralProblem
from .spectral import (
    _NEWTON_MAX_STEPS,
    GRID_THETAS,
    Method,
    _convergence,
    _gls_many,
    _Maximum,
    _Profile,
    profile_many,
)

__all__ = ["average_information_many", "maximise_many", "profile_many"]


def _profile(values: dict[str, np.ndarray], k: int) -> _Profile:
    return _Profile(*(float(values[key][k]) for key in _Profile.__dataclass_fields__))


def _newton_many(
    problem: SpectralProblem,
    y_rot: np.ndarray,
    lo: dict[str, np.ndarray],
    hi: dict[str, np.ndarray],
    method: Method,
    max_steps: int,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """:func:`~bayes_animal.estimation.spectral._newton_root` for every bracket at once:
    the columns of ``y_rot`` are the brackets' traits. Returns (profiles, steps, change)."""
    take_lo = lo["value"] >= hi["value"]
    current = {key: np.where(take_lo, lo[key], hi[key]) for key in lo}
    left, right = lo["theta"].copy(), hi["theta"].copy()
    J = len(left)
    steps = np.full(J, max_steps)
    change = np.full(J, np.inf)
    active = np.ones(J, dtype=bool)
    for step in range(1, max_steps + 1):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        theta, g, h = current["theta"][idx], current["gradient"][idx], current["curvature"][idx]
        rising = g > 0
        left[idx] = np.where(rising, theta, left[idx])
        right[idx] = np.where(rising, right[idx], theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = theta - g / h
        inside = (h < 0) & (left[idx] < newton) & (newton < right[idx])
        proposal = np.where(inside, newton, 0.5 * (left[idx] + right[idx]))
        moved = np.abs(proposal - theta)
        following = profile_many(problem, y_rot[:, idx], proposal, method)
        change[idx] = np.abs(following["value"] - current["value"][idx])
        for key in current:
            current[key][idx] = following[key]
        done = (moved <= 1e-15 * np.maximum(1.0, proposal)) | (right[idx] - left[idx] <= 1e-15)
        steps[idx[done]] = step
        active[idx[done]] = False
    return current, steps, change


def maximise_many(
    problem: SpectralProblem,
    y_rot: np.ndarray,
    method: Method,
    max_iterations: int = _NEWTON_MAX_STEPS,
) -> list[_Maximum]:
    """The maximum of every trait's profile likelihood, as the one-trait maximiser finds it:
    the grid scan for all traits, then Newton in every ascending→descending bracket of every
    trait at once, then the best candidate per trait (interior or boundary)."""
    T = y_rot.shape[1]
    grid = [profile_many(problem, y_rot, np.full(T, theta), method) for theta in GRID_THETAS]
    gradients = np.array([g["gradient"] for g in grid])  # G × T
    candidates: list[list[tuple[_Profile, int, float, str | None]]] = [[] for _ in range(T)]
    for t in np.flatnonzero(gradients[0] <= 0):
        candidates[t].append((_profile(grid[0], t), 0, 0.0, "effect"))
    for t in np.flatnonzero(gradients[-1] >= 0):
        candidates[t].append((_profile(grid[-1], t), 0, 0.0, "residual"))
    ks, ts = np.nonzero((gradients[:-1] > 0) & (gradients[1:] <= 0))
    if len(ts):
        lo = {
            key: np.array([grid[k][key][t] for k, t in zip(ks, ts, strict=True)]) for key in grid[0]
        }
        hi = {
            key: np.array([grid[k + 1][key][t] for k, t in zip(ks, ts, strict=True)])
            for key in grid[0]
        }
        found, steps, change = _newton_many(problem, y_rot[:, ts], lo, hi, method, max_iterations)
        for j, t in enumerate(ts):
            candidates[t].append((_profile(found, j), int(steps[j]), float(change[j]), None))
    out = []
    for t in range(T):
        if not candidates[t]:
            best = max((_profile(g, t) for g in grid), key=lambda item: item.value)
            from .result import Convergence

            stop = Convergence(
                False, float("inf"), float("inf"), (best.gradient,) * 2, "no maximum bracketed"
            )
            out.append(_Maximum(best, len(grid), stop, None))
            continue
        profile, steps_taken, change, boundary = max(candidates[t], key=lambda c: c[0].value)
        out.append(
            _Maximum(
                profile,
                sum(c[1] for c in candidates[t]) + len(grid),
                _convergence(profile, change, boundary, steps_taken < max_iterations),
                boundary,
            )
        )
    return out


def average_information_many(
    problem: SpectralProblem,
    y_rot: np.ndarray,
    variances: np.ndarray,
    residuals: np.ndarray,
    method: Method,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Average information (T × 2 × 2, parameters σu², σ²) of every trait at its estimate,
    and :math:`P y_t` (n × T, in the eigenbasis) there — what the BLUPs need.

    Columns t: :math:`\tfrac12 (D_i P y)^\top P (D_j P y)` with :math:`D_1 = \operatorname{diag}
    (d)`, :math:`D_2 = I`, :math:`P = \operatorname{diag}(v) - Q M Q^\top` (REML).
    """
    d = problem.eigenvalues
    X = problem.X_rot
    V, M, _, R = _gls_many(problem, y_rot, np.outer(d, variances) + residuals[None, :])
    PY = V * R
    works = [d[:, None] * PY, PY]  # D_k P y, n × T each
    projected = []
    for work in works:
        value = V * work
        if method == "reml":
            MQtW = (M @ ((V * work).T @ X)[:, :, None])[:, :, 0]  # T × p
            value = value - V * (X @ MQtW.T)
        projected.append(value)
    information = np.empty((len(variances), 2, 2))
    for k in range(2):
        for j in range(2):
            information[:, k, j] = 0.5 * np.sum(works[k] * projected[j], axis=0)
    return information, PY
