r"""Compiled steps of one evaluation of the mixed-model equations of one trait with scalar
variances (every :math:`G_0` and :math:`R_0` 1 × 1: independent random effects, no pair).

There, :math:`C(\theta) = W^\top W/\sigma^2 + \bigoplus_b K_b^{-1}/\sigma_b^2` and an evaluation
(:meth:`~bayes_animal.linalg.mme.MixedModelEquations.evaluate`) is a handful of sparse
products, the factorisation, two triangular sweeps, the selected inverse and some dot
products — each quick, so that a gradient of a latent or marginal density of such a model
(about 0.8 ms on the gryphon pedigree's large counts) spent about as long in the Python and
NumPy calls around them as in them. The steps below fuse them into four compiled calls, the
dense block's LAPACK calls between them; the arithmetic is the general path's, step for
step (the sparse products sum each row in scipy's order; dot products are BLAS's):

1. :func:`assemble_and_factorise`: C's data in the factorisation's storage, one sparse
   product of the pieces' placements with their coefficients :math:`(1/\sigma^2, 1/\sigma_b^2)`,
   then the sparse LDLᵀ and the dense block's Schur complement
   (:func:`~bayes_animal.linalg.ldl._factorise`);
2. :func:`forward`: :math:`r = W^\top y/\sigma^2`, permuted, :math:`L_{11}^{-1}` and
   :math:`D_1^{-1}` (the dense block's solve is LAPACK's ``dpotrs``);
3. :func:`backward`: :math:`L_{11}^{-\top}`, back to the equations' order: :math:`\hat w`, then
   :math:`\hat e = y - W\hat w`, :math:`\hat e/\sigma^2` and each block's
   :math:`\hat u_b^\top K_b^{-1}\hat u_b`;
4. :func:`traces`: Takahashi's selected inverse from the dense :math:`S^{-1}` (``dpotri``) and
   the trace of :math:`C^{-1}` with every piece.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .ldl import _backward, _factorise, _forward, _piece_traces, _selected_inverse

__all__ = ["assemble_and_factorise", "backward", "forward", "rows_times", "traces"]


@njit(cache=True, nogil=True)
def rows_times(indptr, indices, data, x):  # pragma: no cover - compiled
    """:math:`Ax` for A in compressed rows: each row's sum from 0 in the stored order (the
    order scipy's ``csr_matvec`` adds in)."""
    rows = len(indptr) - 1
    out = np.empty(rows)
    for i in range(rows):
        total = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            total += data[p] * x[indices[p]]
        out[i] = total
    return out


@njit(cache=True, nogil=True)
def assemble_and_factorise(
    Ap, Aj, Ax, coefficients, n, t, Bp, Bi, Lp, Li, Rp, Rj, starts, tolerance
):  # pragma: no cover - compiled
    """C's data (the assembly Ap/Aj/Ax, rows in the permuted storage, times the pieces'
    coefficients) and its factorisation: ``(Bx, Lx, D, St, bad)`` as
    :func:`~bayes_animal.linalg.ldl._factorise`."""
    Bx = rows_times(Ap, Aj, Ax, coefficients)
    Lx, D, St, bad = _factorise(n, t, Bp, Bi, Bx, Lp, Li, Rp, Rj, starts, tolerance)
    return Bx, Lx, D, St, bad


@njit(cache=True, nogil=True)
def forward(y, scale, Wtp, Wtj, Wtx, perm, t, Lp, Li, Lx, D):  # pragma: no cover - compiled
    """``(X, rhs, yRy)``: the right-hand side :math:`W^\\top y\\,s` (s = 1/σ²), X its
    permutation with :math:`L_{11}^{-1}` and :math:`D_1^{-1}` applied (n × 1; the dense rows
    still to be solved), and :math:`y^\\top y\\,s`."""
    ry = y * scale
    rhs = rows_times(Wtp, Wtj, Wtx, ry)
    n = len(perm)
    X = np.empty((n, 1))
    for i in range(n):
        X[i, 0] = rhs[perm[i]]
    _forward(t, Lp, Li, Lx, X)
    for i in range(t):
        X[i, 0] /= D[i]
    return X, rhs, np.dot(y, ry)


@njit(cache=True, nogil=True)
def backward(
    X, perm, t, Lp, Li, Lx, y, scale, Wp, Wj, Wx, Kp, Kj, Kx, p, starts, stops
):  # pragma: no cover - compiled
    """``(w, residuals, scaled, quadratics)``: :math:`L_{11}^{-\\top}` on X (its dense rows
    solved), :math:`\\hat w` in the equations' order, :math:`\\hat e = y - W\\hat w`,
    :math:`\\hat e s`, and per block (levels ``starts[b]:stops[b]`` of :math:`\\hat w`)
    :math:`\\hat u_b^\\top K_b^{-1}\\hat u_b` from the block-diagonal :math:`K^{-1}` (Kp/Kj/Kx,
    over the levels after the p fixed effects)."""
    _backward(t, Lp, Li, Lx, X)
    n = len(perm)
    w = np.empty(n)
    for i in range(n):
        w[perm[i]] = X[i, 0]
    residuals = y - rows_times(Wp, Wj, Wx, w)
    scaled = residuals * scale
    ku = rows_times(Kp, Kj, Kx, w[p:])
    quadratics = np.empty(len(starts))
    for b in range(len(starts)):
        a, c = starts[b], stops[b]
        quadratics[b] = np.dot(w[a:c], ku[a - p : c - p])
    return w, residuals, scaled, quadratics


@njit(cache=True, nogil=True)
def traces(
    n, t, Lp, Li, Lx, D, dense_t, codes, bounds, owners, where, values, count
):  # pragma: no cover - compiled
    """``(Sx, Sd, traces)``: the selected inverse (:func:`~bayes_animal.linalg.ldl.
    _selected_inverse`, from the dense :math:`S^{-1}` given transposed: ``dense_t`` is the
    C-ordered view of LAPACK's Fortran-ordered result, one array type with or without a dense
    block) and :math:`\\operatorname{tr}(C^{-1} M_k)` of every piece
    (:func:`~bayes_animal.linalg.ldl._piece_traces`)."""
    Sx, Sd = _selected_inverse(n, t, Lp, Li, Lx, D, dense_t.T)
    flat = dense_t.ravel()  # S⁻¹ in its Fortran order, where the gathers point
    return Sx, Sd, _piece_traces(Sd, Sx, flat, codes, bounds, owners, where, values, count)
