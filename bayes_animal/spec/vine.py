r"""The canonical partial correlations of a correlation matrix (a C-vine; Lewandowski,
Kurowicka & Joe 2009): every correlation matrix of order d as d(d − 1)/2 numbers in
(−1, 1), each free of the others. The map, its inverse and its derivative serve LKJ priors
(:mod:`bayes_animal.bayes.density`) and AI-REML's search for a singular covariance matrix
(:mod:`bayes_animal.estimation.aireml`), where a singular matrix is a partial correlation at
±1: the edge of a box, not of a cone."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["vine_correlation", "vine_jacobian", "vine_partial_correlations"]


def vine_correlation(z: Mapping[tuple[int, int], object], d: int) -> list[list]:
    r"""The correlation matrix (nested lists) of the canonical partial correlations
    ``z[(j, i)]`` (:math:`j < i`; floats, or arrays of draws): row :math:`i` of its Cholesky
    factor is :math:`L_{i0} = z_{0i}`, :math:`L_{ij} = z_{ji}\sqrt{1 - \sum_{k<j} L_{ik}^2}`,
    :math:`L_{ii} = \sqrt{1 - \sum_{k<i} L_{ik}^2}` (Lewandowski, Kurowicka & Joe 2009; Stan's
    ``cholesky_corr``)."""
    L = [[0.0] * d for _ in range(d)]
    L[0][0] = 1.0
    for i in range(1, d):
        used = 0.0
        for j in range(i):
            L[i][j] = z[(j, i)] * np.sqrt(1.0 - used)
            used = used + L[i][j] * L[i][j]
        L[i][i] = np.sqrt(1.0 - used)
    return [[sum(L[i][k] * L[j][k] for k in range(min(i, j) + 1)) for j in range(d)]
            for i in range(d)]  # fmt: skip


def vine_jacobian(z: Mapping[tuple[int, int], float], d: int):
    """The correlation matrix of :func:`vine_correlation` and its derivative in each
    partial correlation, ``(R, {(j, i): dR})`` (forward mode through the Cholesky rows)."""
    L = np.zeros((d, d))
    dL = {key: np.zeros((d, d)) for key in z}
    L[0, 0] = 1.0
    for i in range(1, d):
        used = 0.0
        d_used = dict.fromkeys(z, 0.0)
        for j in range(i):
            root = math.sqrt(1.0 - used)
            L[i, j] = z[(j, i)] * root
            for key in z:
                d_root = -d_used[key] / (2.0 * root)
                dL[key][i, j] = (1.0 if key == (j, i) else 0.0) * root + z[(j, i)] * d_root
                d_used[key] += 2.0 * L[i, j] * dL[key][i, j]
            used += L[i, j] ** 2
        root = math.sqrt(1.0 - used)
        L[i, i] = root
        for key in z:
            dL[key][i, i] = -d_used[key] / (2.0 * root)
    return L @ L.T, {key: dL[key] @ L.T + L @ dL[key].T for key in z}


def vine_partial_correlations(R: np.ndarray) -> dict[tuple[int, int], float]:
    """The canonical partial correlations of a correlation matrix (the inverse of
    :func:`vine_correlation`)."""
    L = np.linalg.cholesky(R)
    out = {}
    for i in range(1, len(R)):
        used = 0.0
        for j in range(i):
            out[(j, i)] = float(L[i, j] / math.sqrt(1.0 - used))
            used += L[i, j] ** 2
    return out
