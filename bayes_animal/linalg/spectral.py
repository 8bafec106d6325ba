r"""The one eigendecomposition of :math:`K = Z A Z^\top`, shared by REML and the marginal model.

With a single genetic component, :math:`V = \sigma_u^2 K + \sigma^2 I`. Writing
:math:`K = U \operatorname{diag}(d) U^\top` (computed once, :math:`O(n^3)`), the rotated data
:math:`y^* = U^\top y`, :math:`X^* = U^\top X` satisfy

.. math::

    y^* \sim N\!\left(X^* b,\ \operatorname{diag}(\sigma_u^2 d + \sigma^2)\right),

so every later likelihood evaluation is :math:`O(n p^2)`. :class:`SpectralProblem` holds the
rotated quantities; nothing here depends on PyMC or scipy.

Threads: LAPACK's divide-and-conquer ``syevd`` (numpy's ``eigh``) is run under an explicit
BLAS thread limit, because multi-threaded BLAS on a small, busy machine can be many times
slower than one thread: the limit is always set explicitly (:mod:`bayes_animal.linalg.threads`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..design import Design
from ..errors import RelationshipError
from ..structures.relationship import RelationshipMatrix, psd_tolerance
from .threads import blas_threads

__all__ = ["SpectralProblem", "decompose"]


@dataclass(frozen=True)
class SpectralProblem:
    r"""The model rotated into the eigenbasis of :math:`K = Z A Z^\top`.

    Attributes
    ----------
    eigenvalues
        :math:`d`, ascending, length n; round-off negatives (the one PSD rule) are set to 0.
    eigenvectors
        :math:`U`, n × n, orthonormal columns.
    y_rot, X_rot
        :math:`U^\top y` and :math:`U^\top X`.
    logdet_xtx
        :math:`\log|X^\top X|`, the constant that makes the restricted likelihood match
        rrBLUP's and metafor's.
    seconds
        Wall time of the eigendecomposition.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    y_rot: np.ndarray
    X_rot: np.ndarray
    logdet_xtx: float
    seconds: float

    @property
    def n(self) -> int:
        """Number of records."""
        return len(self.y_rot)

    @property
    def p(self) -> int:
        """Number of fixed-effect columns."""
        return self.X_rot.shape[1]


def decompose(
    design: Design, relmat: RelationshipMatrix, *, threads: int | None = None
) -> SpectralProblem:
    r"""Eigendecompose :math:`K = Z A Z^\top` and rotate :math:`y` and :math:`X`.

    Parameters
    ----------
    design
        The records, with one random effect (its ``index`` gives Z).
    relmat
        The relationship matrix A.
    threads
        BLAS threads for the decomposition (default:
        :func:`bayes_animal.linalg.threads.default_threads`).

    Returns
    -------
    SpectralProblem

    Notes
    -----
    A matrix whose positive semi-definiteness was left unchecked at input
    (:attr:`~bayes_animal.structures.relationship.RelationshipMatrix.definite`) is checked
    here: from these eigenvalues when Z is a permutation (they are A's), else before.
    A positive semi-definite A gives :math:`d \ge 0`; negative eigenvalues within the package's
    one PSD tolerance (:func:`~bayes_animal.relationship.psd_tolerance`, scaled by the most
    records of one animal) or eigh's round-off are set to zero, anything more negative is an
    error — so a matrix accepted at input is never refused here.
    Small positive eigenvalues are kept exactly: the seed_sim A has one of 1.1e-7, and
    zeroing it changes the log-likelihood in the fourth decimal.
    """
    effect = design.effects[0]
    index = effect.index
    # K = P A Pᵀ for a permutation Z: its eigenvalues are A's, and settle a check of A left
    # for later (RelationshipMatrix.definite); otherwise that check is made here, first
    spectrum_of_a = effect.is_permutation()
    if not spectrum_of_a:
        relmat.require_definite()
    in_order = len(index) == relmat.size and np.array_equal(index, np.arange(relmat.size))
    kernel = relmat.matrix if in_order else relmat.matrix[np.ix_(index, index)]
    start = time.perf_counter()
    with blas_threads(threads):
        values, vectors = np.linalg.eigh(kernel)
        y_rot = vectors.T @ design.y
        X_rot = vectors.T @ design.X
    seconds = time.perf_counter() - start
    # one PSD rule (relationship.psd_tolerance) scaled to K: xᵀKx = (Zᵀx)ᵀA(Zᵀx) ≥ λmin(A) ·
    # (most records of one animal) · |x|², plus eigh's own round-off on K
    records = np.bincount(index, minlength=relmat.size).max() if len(index) else 1
    tolerance = max(
        psd_tolerance(relmat.size, np.diag(relmat.matrix)) * records,
        len(values) * np.finfo(float).eps * max(float(values[-1]), 1.0),
    )
    if spectrum_of_a and relmat.definite_unchecked:
        relmat.settle_definite(float(values[0]))
    values = np.where((values < 0) & (values >= -tolerance), 0.0, values)
    if values[0] < 0:
        raise RelationshipError(
            f"Z A Zᵀ has a negative eigenvalue ({values[0]:.6g}): the relationship matrix is "
            "not positive semi-definite. Use nearest_pd=True (--nearest-pd) or fix the matrix."
        )
    _, logdet = np.linalg.slogdet(design.X.T @ design.X)
    return SpectralProblem(
        eigenvalues=values,
        eigenvectors=vectors,
        y_rot=y_rot,
        X_rot=X_rot,
        logdet_xtx=float(logdet),
        seconds=seconds,
    )
