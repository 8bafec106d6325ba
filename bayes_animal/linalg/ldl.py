r"""Sparse :math:`LDL^\top` of a symmetric positive-definite matrix with a dense trailing block,
and its selected (Takahashi) inverse.

The mixed-model coefficient matrix :math:`C(\theta)` keeps one sparsity pattern for every
:math:`\theta`, so the work is split as CHOLMOD splits it:

1. **Analysis, once per pattern** (:func:`analyse`): a fill-reducing ordering
   (:mod:`bayes_animal.linalg.ordering`), the elimination tree, the exact pattern of
   :math:`L` (rows and columns), and the split point :math:`t` of a dense trailing block.
   After a minimum-degree ordering the last columns of :math:`L` form one dense clique (the
   fixed effects and the levels shared by many records: 92 % of the flops of a 100 000-animal
   model); those columns are factored by LAPACK, the rest by a left-looking sparse loop
   compiled with numba. :math:`t` minimises a flop model (scalar sparse flops cost about ten
   dense BLAS flops).
2. **Numeric factorisation, per** :math:`\theta` (:meth:`Analysis.factorise`): with
   :math:`C = \begin{pmatrix} C_{11} & C_{12} \\ C_{21} & C_{22} \end{pmatrix}` split at
   :math:`t`, :math:`C_{11} = L_{11} D_1 L_{11}^\top` supernode by supernode,
   :math:`L_{21} = C_{21} L_{11}^{-\top} D_1^{-1}` in the same loop, the Schur complement
   :math:`S = C_{22} - L_{21} D_1 L_{21}^\top` accumulated densely and factored
   :math:`S = L_c L_c^\top` (``dpotrf``). :math:`\log|C| = \sum \log D_1 + 2 \sum \log
   \operatorname{diag} L_c`. A supernode is a run of consecutive columns each of whose rows
   are the next column followed by that column's rows (the analysis finds them, at most
   :data:`WIDEST_SUPERNODE` wide): several traits give every animal such a run, one column
   per trait. Its columns are assembled together in a small dense workspace, each earlier
   column that updates them read once for all of them, and their update of S is written once
   per pair of rows; a lone column keeps the scalar loop.
3. **Selected inverse** (:meth:`Factor.selected_inverse`): :math:`\Sigma = C^{-1}` on the
   pattern of :math:`L` by Takahashi's recursion, from the last column backwards,

   .. math::
       \Sigma_{J j} = -\Sigma_{J J} L_{J j},\qquad
       \Sigma_{jj} = 1/d_j - L_{J j}^\top \Sigma_{J j},

   where :math:`J` is the row pattern of column :math:`j` (a clique of the filled graph, so
   every :math:`\Sigma_{ik}` needed is itself on the pattern), starting from the dense
   :math:`\Sigma_{22} = S^{-1}` (``dpotri``). These are exactly the entries that the traces
   :math:`\operatorname{tr}(C^{-1} \partial C / \partial \theta)` of the REML score need,
   without a dense inverse.

Solves and Gaussian draws with covariance :math:`C^{-1}` reuse the factor. Everything is
exact: the tests compare with dense numpy on random patterns and on mixed-model matrices.

**Pivots.** A pivot :math:`d_j` (of the sparse loop, or :math:`(L_c)_{kk}^2` of the dense
block) at most :data:`PIVOT_TOLERANCE` :math:`= 10^{-12}` times the diagonal entry
:math:`C_{jj}` of its own column is an error (:class:`NotPositiveDefinite`, with the row), as
is a pivot :math:`\le 0`. Why relative to :math:`C_{jj}`, and why :math:`10^{-12}`: write
:math:`C = B^\top B` (columns :math:`b_i`, taken in pivot order). The pivot is the Schur
complement

.. math::
    d_j = C_{jj} - c_j^\top C_{<j}^{-1} c_j
        = \lVert b_j - \Pi_{<j} b_j \rVert^2 = 1 / (C_{\le j}^{-1})_{jj},
    \qquad \frac{d_j}{C_{jj}} = \sin^2 \angle\bigl(b_j, \operatorname{span}(b_{<j})\bigr)
    \in (0, 1],

so the ratio is unchanged when a row and column of :math:`C` are scaled (a covariate's units,
the size of a variance): a threshold on :math:`d_j` itself, or relative to the largest
diagonal, would depend on them. A small ratio means :math:`C` is nearly singular: with
:math:`\hat C = \Delta^{-1/2} C \Delta^{-1/2}` (:math:`\Delta = \operatorname{diag} C`, unit
diagonal, so :math:`\lambda_{\max}(\hat C) \ge 1`), Cauchy interlacing gives
:math:`\lambda_{\min}(\hat C) \le \lambda_{\min}(\hat C_{\le j}) \le 1/(\hat C_{\le j}^{-1})_{jj}
= d_j / C_{jj}`, hence :math:`\kappa(\hat C) \ge C_{jj}/d_j`. And the pivot is computed as
:math:`C_{jj}` minus terms whose sum :math:`C_{jj} - d_j` is below :math:`C_{jj}`, with an
absolute error of about :math:`c\,u\,C_{jj}` (:math:`u = 2^{-53} \approx 1.1 \times 10^{-16}`,
:math:`c` a modest multiple of the terms summed): its *relative* error is :math:`c\,u\,C_{jj}/d_j`.
At the threshold that is :math:`10^{12} c\,u \approx 10^{-4} c` in :math:`d_j`, hence in
:math:`\log|C|` and in the solution along that direction; towards a ratio of :math:`u`,
:math:`d_j` — and the log-likelihood — is nothing but round-off, finite but wrong (its sign
is chance). The threshold sits four orders of magnitude above that regime, and far below
every well-posed model: the smallest ratio over
every factorisation of the REML fits on ``../shared/data`` is :math:`1.8 \times 10^{-5}`
(``seed_sim``, whose A has an eigenvalue of :math:`1.1 \times 10^{-7}`; gryphon's models
0.03–0.2, the wheat lines 0.007). A given relationship matrix is held to the stricter
:data:`bayes_animal.linalg.inverse.PIVOT_TOLERANCE` (:math:`10^{-10}`) before it reaches
:math:`C`. :class:`NotPositiveDefinite` is the search's signal that a trial :math:`\theta` is
outside the space (:mod:`bayes_animal.estimation.aireml` steps back); where it persists at
valid parameters, :meth:`bayes_animal.linalg.mme.MixedModelEquations.singular_error` names the
effect and level of the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numba import njit
from scipy import sparse
from scipy.linalg import lapack

from ..errors import BayesAnimalError
from . import ordering as orderings
from .threads import blas_threads

__all__ = [
    "PIVOT_TOLERANCE",
    "Analysis",
    "Factor",
    "NotPositiveDefinite",
    "SelectedInverse",
    "TraceGathers",
    "analyse",
]

#: A scalar flop of the sparse loop costs about this many dense (BLAS) flops.
SPARSE_TO_DENSE_COST = 10.0
#: Most columns in one supernode of the sparse loop (its workspace: rows × this many).
WIDEST_SUPERNODE = 64
#: Largest dense trailing block (8·m² bytes: 16 000 → 2 GB).
MAX_DENSE_BLOCK = 16_000
#: A pivot at most this fraction of its diagonal entry of C means C is singular in floating
#: point (see "Pivots" in the module docstring): an error, not a log-determinant of round-off.
PIVOT_TOLERANCE = 1e-12


class NotPositiveDefinite(BayesAnimalError, ArithmeticError):
    """The matrix is not positive definite, or is singular in floating point: a pivot is not
    above :data:`PIVOT_TOLERANCE` times its diagonal entry.

    Parameters
    ----------
    message
        What failed, for the reader.
    index
        The row of the matrix (in the caller's order, before the fill-reducing permutation)
        whose pivot failed; None where it is not known.
    ratio
        That pivot over its diagonal entry: at most 0 when the matrix is not positive
        definite, in (0, :data:`PIVOT_TOLERANCE`] when it is singular in floating point; None
        where LAPACK stopped without reporting it.
    """

    def __init__(
        self, message: str, *, index: int | None = None, ratio: float | None = None
    ) -> None:
        super().__init__(message)
        self.index = index
        self.ratio = ratio


# --------------------------------------------------------------------------------------------
# symbolic analysis


@njit(cache=True, nogil=True)
def _etree(n, Ap, Ai):  # pragma: no cover - compiled
    """Elimination tree from the upper triangle (CSC) of the permuted matrix."""
    parent = np.full(n, -1, np.int64)
    ancestor = np.full(n, -1, np.int64)
    for k in range(n):
        for p in range(Ap[k], Ap[k + 1]):
            i = Ai[p]
            while i != -1 and i < k:
                following = ancestor[i]
                ancestor[i] = k
                if following == -1:
                    parent[i] = k
                i = following
    return parent


@njit(cache=True, nogil=True)
def _pattern(n, Ap, Ai, parent):  # pragma: no cover - compiled
    """Column (Lp, Li: rows ascending) and row (Rp, Rj: columns ascending) patterns of the
    strictly lower L, by walking the row subtrees of the elimination tree."""
    flag = np.full(n, -1, np.int64)
    count = np.zeros(n, np.int64)
    row_count = np.zeros(n, np.int64)
    for k in range(n):
        flag[k] = k
        for p in range(Ap[k], Ap[k + 1]):
            i = Ai[p]
            if i < k:
                while flag[i] != k:
                    count[i] += 1
                    row_count[k] += 1
                    flag[i] = k
                    i = parent[i]
    Lp = np.zeros(n + 1, np.int64)
    Rp = np.zeros(n + 1, np.int64)
    for k in range(n):
        Lp[k + 1] = Lp[k] + count[k]
        Rp[k + 1] = Rp[k] + row_count[k]
    Li = np.empty(Lp[n], np.int64)
    fill = Lp[:-1].copy()
    flag[:] = -1
    for k in range(n):
        flag[k] = k
        for p in range(Ap[k], Ap[k + 1]):
            i = Ai[p]
            if i < k:
                while flag[i] != k:
                    Li[fill[i]] = k
                    fill[i] += 1
                    flag[i] = k
                    i = parent[i]
    # rows of each column come in ascending k; the row pattern is the transpose, read column
    # by column, so its columns come ascending too (no sort: a sort costs seconds to compile)
    Rj = np.empty(Rp[n], np.int64)
    row_fill = Rp[:-1].copy()
    for i in range(n):
        for p in range(Lp[i], Lp[i + 1]):
            k = Li[p]
            Rj[row_fill[k]] = i
            row_fill[k] += 1
    return Lp, Li, Rp, Rj


@njit(cache=True, nogil=True)
def _locate(rows, cols, iperm, t, Lp, Li):  # pragma: no cover - compiled
    """Where Σ[i, j] (original indices) lives: kind 0 diagonal (index), 1 sparse column
    (position in Li), 2 dense block (flat index in the Fortran order LAPACK returns the block
    in, lower triangle: (r, c) at c·m + r), -1 not on the pattern of L."""
    m = len(rows)
    width = len(iperm) - t
    kind = np.empty(m, np.int64)
    where = np.empty(m, np.int64)
    for e in range(m):
        a = iperm[rows[e]]
        b = iperm[cols[e]]
        r = max(a, b)
        c = min(a, b)
        if c >= t:
            kind[e] = 2
            where[e] = (c - t) * width + (r - t)
        elif r == c:
            kind[e] = 0
            where[e] = c
        else:
            lo = Lp[c]
            hi = Lp[c + 1]
            while lo < hi:
                mid = (lo + hi) // 2
                if Li[mid] < r:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < Lp[c + 1] and Li[lo] == r:
                kind[e] = 1
                where[e] = lo
            else:
                kind[e] = -1
                where[e] = -1
    return kind, where


# --------------------------------------------------------------------------------------------
# numeric factorisation, selected inverse, solves


@njit(cache=True, nogil=True)
def _supernodes(t, Lp, Li, widest):  # pragma: no cover - compiled
    """Starts of the supernodes of the sparse columns (``starts[-1] = t``): runs of columns
    j0 … j1 − 1 in which column j's rows are j + 1 followed by column j + 1's, so that every
    column of a run has the rows of the last one below the run, at most ``widest`` columns."""
    starts = np.empty(t + 1, np.int64)
    count = 0
    start = 0
    for j in range(t):
        if j > start and j - start < widest:
            a = Lp[j - 1]
            joins = Lp[j] - a == Lp[j + 1] - Lp[j] + 1 and Li[a] == j
            if joins:
                b = Lp[j]
                for i in range(Lp[j + 1] - b):
                    if Li[a + 1 + i] != Li[b + i]:
                        joins = False
                        break
            if joins:
                continue
        starts[count] = j
        count += 1
        start = j
    starts[count] = t
    return starts[: count + 1].copy()


@njit(cache=True, nogil=True)
def _factorise(n, t, Bp, Bi, Bx, Lp, Li, Rp, Rj, starts, tolerance):  # pragma: no cover
    """Left-looking supernodal LDLᵀ of columns < t; the dense Schur complement of the rest.

    A supernode J (columns j0 … j1 − 1, ``starts``) is assembled in a dense workspace W whose
    rows are J's own rows followed by the rows P below it (``local`` maps a row of C to its
    row of W): the entries of C, then the update of every earlier column k with an entry in
    J's rows, each row of k read once for all of J's columns. J's columns are then factored
    densely in W and written to L. Its rows in the dense block update the Schur complement
    once per pair of rows, summed over J's columns (a third of the scattered writes of a
    column-by-column update on the trait blocks of several traits).

    Returns ``(Lx, D, St, bad)``. ``St`` holds the Schur complement's lower triangle
    transposed (``St[c, r] = S[r, c]``, r ≥ c), so that ``St.T`` is S in the Fortran order
    LAPACK factors in place. ``bad`` is −1, or the first column whose pivot ``D[bad]`` is not
    above ``tolerance`` times its diagonal entry of the matrix (see the module docstring).
    """
    Lx = np.empty(Lp[n])
    D = np.empty(n)
    local = np.zeros(n, np.int64)
    seen = np.full(n, -1, np.int64)
    following = Lp[:-1].copy()
    count = len(starts) - 1
    widest_s = 1
    widest_m = 1
    for J in range(count):
        s = starts[J + 1] - starts[J]
        widest_s = max(widest_s, s)
        widest_m = max(widest_m, s + Lp[starts[J + 1]] - Lp[starts[J + 1] - 1])
    W = np.zeros((widest_m, widest_s))
    columns = np.empty(widest_s, np.int64)
    factors = np.empty(widest_s)
    G = np.empty((widest_m, widest_s))
    H = np.empty((widest_m, widest_s))
    m_dense = n - t
    St = np.zeros((m_dense, m_dense))
    for j in range(t, n):
        for p in range(Bp[j], Bp[j + 1]):
            St[j - t, Bi[p] - t] += Bx[p]
    x = np.zeros(n)
    for J in range(count):
        j0 = starts[J]
        j1 = starts[J + 1]
        s = j1 - j0
        tail = Lp[j1 - 1]  # the rows P below J: the last column's
        m = s + Lp[j1] - tail
        if s == 1:  # a lone column: the scalar loop on a vector the size of C
            j = j0
            for p in range(Bp[j], Bp[j + 1]):
                x[Bi[p]] += Bx[p]
            for q in range(Rp[j], Rp[j + 1]):
                k = Rj[q]
                p = following[k]
                f = Lx[p] * D[k]
                for pp in range(p, Lp[k + 1]):
                    x[Li[pp]] -= Lx[pp] * f
                following[k] = p + 1
            d = x[j]
            x[j] = 0.0
            diagonal = 0.0
            if Bp[j] < Bp[j + 1] and Bi[Bp[j]] == j:
                diagonal = Bx[Bp[j]]
            if not (d > 0.0 and d > tolerance * diagonal):
                D[j] = d
                return Lx, D, np.zeros((0, 0)), j
            D[j] = d
            for p in range(Lp[j], Lp[j + 1]):
                r = Li[p]
                Lx[p] = x[r] / d
                x[r] = 0.0
            start = Lp[j + 1]
            while start > Lp[j] and Li[start - 1] >= t:
                start -= 1
            for b in range(start, Lp[j + 1]):
                lb = Lx[b] * d
                cb = Li[b] - t
                for a in range(b, Lp[j + 1]):
                    St[cb, Li[a] - t] -= Lx[a] * lb
            continue
        for i in range(s):
            local[j0 + i] = i
        for i in range(Lp[j1] - tail):
            local[Li[tail + i]] = s + i
        for c in range(s):
            for p in range(Bp[j0 + c], Bp[j0 + c + 1]):
                W[local[Bi[p]], c] += Bx[p]
        # every earlier column k with an entry in J's rows (the union of their row patterns)
        for q in range(Rp[j0], Rp[j1]):
            k = Rj[q]
            if k >= j0 or seen[k] == J:
                continue
            seen[k] = J
            p = following[k]
            end = Lp[k + 1]
            dk = D[k]
            run = 0
            while p + run < end and Li[p + run] < j1:  # k's rows inside J
                columns[run] = Li[p + run] - j0
                factors[run] = Lx[p + run] * dk
                run += 1
            for a in range(run):
                for b in range(a, run):
                    W[columns[b], columns[a]] -= Lx[p + b] * factors[a]
            for pp in range(p + run, end):
                r = local[Li[pp]]
                value = Lx[pp]
                for a in range(run):
                    W[r, columns[a]] -= value * factors[a]
            following[k] = p + run
        # J's columns, densely; column j0 + c of L holds W's rows c + 1 … m − 1
        for c in range(s):
            j = j0 + c
            d = W[c, c]
            diagonal = 0.0
            if Bp[j] < Bp[j + 1] and Bi[Bp[j]] == j:  # rows ascending: the diagonal first
                diagonal = Bx[Bp[j]]
            if not (d > 0.0 and d > tolerance * diagonal):
                D[j] = d
                return Lx, D, np.zeros((0, 0)), j
            D[j] = d
            W[c, c] = 0.0
            base = Lp[j] - (c + 1)
            for r in range(c + 1, m):
                Lx[base + r] = W[r, c] / d
                W[r, c] = 0.0
            for c2 in range(c + 1, s):
                f = Lx[base + c2] * d
                for r in range(c2, m):
                    W[r, c2] -= Lx[base + r] * f
            following[j] = Lp[j] + (s - 1 - c)  # its first row below J
        # S[r_a, r_b] -= Σ_c L_ac d_c L_bc over J's rows in the dense block (P's tail)
        first = m
        while first > s and Li[tail + first - 1 - s] >= t:
            first -= 1
        if first < m:
            for c in range(s):
                base = Lp[j0 + c] - (c + 1)
                for r in range(first, m):
                    G[r - first, c] = Lx[base + r]
                    H[r - first, c] = Lx[base + r] * D[j0 + c]
            for b in range(m - first):
                cb = Li[tail + first + b - s] - t
                for a in range(b, m - first):
                    total = 0.0
                    for c in range(s):
                        total += G[a, c] * H[b, c]
                    St[cb, Li[tail + first + a - s] - t] -= total
    return Lx, D, St, -1


@njit(cache=True, nogil=True)
def _selected_inverse(n, t, Lp, Li, Lx, D, dense):  # pragma: no cover - compiled
    """Takahashi's recursion over the sparse columns, from the dense Σ22 (its lower triangle:
    every lookup has row ≥ column)."""
    Sx = np.empty(Lp[n])
    Sd = np.empty(n)
    for j in range(t, n):
        Sd[j] = dense[j - t, j - t]
    widest = 0
    for j in range(n):
        widest = max(widest, Lp[j + 1] - Lp[j])
    z = np.zeros(widest + 1)
    for j in range(t - 1, -1, -1):
        p0 = Lp[j]
        size = Lp[j + 1] - p0
        for a in range(size):
            z[a] = 0.0
        for a in range(size):
            k = Li[p0 + a]
            la = Lx[p0 + a]
            # z[a] is summed in a local (the same additions in the same order: a register
            # instead of a store and load per term, which the compiler cannot prove z[b] ≠ z[a])
            za = z[a]
            if k >= t:
                kk = k - t
                za += dense[kk, kk] * la
                for b in range(a + 1, size):
                    s = dense[Li[p0 + b] - t, kk]
                    z[b] += s * la
                    za += s * Lx[p0 + b]
            else:
                za += Sd[k] * la
                pk = Lp[k]
                end = Lp[k + 1]
                b = a + 1
                while b < size and pk < end:
                    r = Li[pk]
                    target = Li[p0 + b]
                    if r == target:
                        s = Sx[pk]
                        z[b] += s * la
                        za += s * Lx[p0 + b]
                        b += 1
                        pk += 1
                    elif r < target:
                        pk += 1
                    else:
                        b += 1
            z[a] = za
        total = 1.0 / D[j]
        for a in range(size):
            Sx[p0 + a] = -z[a]
            total += Lx[p0 + a] * z[a]
        Sd[j] = total
    return Sx, Sd


@njit(cache=True, nogil=True)
def _forward(t, Lp, Li, Lx, X):  # pragma: no cover - compiled
    """X ← L⁻¹ X over the sparse columns (rows of the dense block are updated too)."""
    for j in range(t):
        for c in range(X.shape[1]):
            xj = X[j, c]
            if xj != 0.0:
                for p in range(Lp[j], Lp[j + 1]):
                    X[Li[p], c] -= Lx[p] * xj


@njit(cache=True, nogil=True)
def _backward(t, Lp, Li, Lx, X):  # pragma: no cover - compiled
    """X[:t] ← L11⁻ᵀ (X[:t] − L21ᵀ X[t:]) (X[t:] already solved)."""
    for j in range(t - 1, -1, -1):
        for c in range(X.shape[1]):
            s = X[j, c]
            for p in range(Lp[j], Lp[j + 1]):
                s -= Lx[p] * X[Li[p], c]
            X[j, c] = s


@njit(cache=True, nogil=True)
def _piece_traces(Sd, Sx, dense, codes, bounds, owners, where, values, count):  # pragma: no cover
    """Σ over each piece's segments of (the part ``codes[s]`` gathered at ``where``) · values:
    each segment's dot product by BLAS, as numpy's ``@`` takes it, added to its piece's
    total in order from 0 (the sum Python's ``sum`` of those products gives)."""
    out = np.zeros(count)
    widest = 0
    for s in range(len(codes)):
        widest = max(widest, bounds[s + 1] - bounds[s])
    buffer = np.empty(widest)
    for s in range(len(codes)):
        a = bounds[s]
        b = bounds[s + 1]
        code = codes[s]
        for i in range(a, b):
            if code == 0:
                buffer[i - a] = Sd[where[i]]
            elif code == 1:
                buffer[i - a] = Sx[where[i]]
            else:
                buffer[i - a] = dense[where[i]]
        out[owners[s]] += np.dot(buffer[: b - a], values[a:b])
    return out


def _split(column_counts: np.ndarray) -> int:
    """The split point t minimising sparse flops before it plus dense flops after it."""
    n = len(column_counts)
    sparse_cost = np.concatenate([[0.0], np.cumsum(column_counts.astype(float) ** 2)])
    width = (n - np.arange(n + 1)).astype(float)
    cost = SPARSE_TO_DENSE_COST * sparse_cost + width**3 / 3.0
    cost[width > MAX_DENSE_BLOCK] = np.inf
    return int(np.argmin(cost))


@dataclass(frozen=True)
class Analysis:
    """The symbolic factorisation of one symmetric sparsity pattern (see :func:`analyse`).

    Attributes
    ----------
    n
        Order of the matrix.
    perm, iperm
        ``perm[k]``: original index of the k-th pivot; ``iperm`` its inverse.
    split
        Columns ``split`` … ``n − 1`` (in pivot order) form the dense trailing block.
    nnz_factor
        Non-zeros of L below the diagonal (the dense block counted in full).
    flops
        Σ (column count)² of L, the factorisation's flop count up to a constant.
    ordering
        Name of the ordering used.
    """

    n: int
    perm: np.ndarray
    iperm: np.ndarray
    split: int
    nnz_factor: int
    flops: float
    ordering: str
    _lower: tuple = field(repr=False)
    _to_permuted: np.ndarray = field(repr=False)
    _pattern: tuple = field(repr=False)
    _input_location: tuple = field(repr=False)
    _input_groups: tuple = field(repr=False)
    _diagonal: np.ndarray = field(repr=False)
    _supernodes: np.ndarray = field(repr=False)

    def factorise(self, values: np.ndarray) -> Factor:
        """Numeric factorisation for ``values`` aligned with the analysed pattern's data.

        Raises
        ------
        NotPositiveDefinite
            A pivot is not above :data:`PIVOT_TOLERANCE` times its diagonal entry: the matrix
            is not positive definite, or singular in floating point (the error's ``index`` is
            the original row, for the caller to name).
        """
        Bx = np.empty(len(self._lower[1]))
        Bx[self._to_permuted] = values
        return self.factorise_permuted(Bx)

    def to_permuted(self, positions: np.ndarray) -> np.ndarray:
        """Where entries of the analysed pattern's data sit in the permuted storage that
        :meth:`factorise_permuted` takes."""
        return self._to_permuted[positions]

    def inverse_positions(self, positions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Where the selected inverse holds the entries of the analysed pattern's data: per part
        of :meth:`SelectedInverse.parts`, (which of ``positions``, where in the part)."""
        kind, where = (a[positions] for a in self._input_location)
        out = []
        for code in (0, 1, 2):
            chosen = np.flatnonzero(kind == code)
            out.append((chosen, where[chosen]))
        return out

    def trace_gathers(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> TraceGathers:
        r"""What :meth:`SelectedInverse.traces` needs for fixed symmetric matrices ``pieces``,
        each given by positions in the analysed pattern's data and the values there (off the
        diagonal counted twice, so that the sum of value × entry of :math:`C^{-1}` is
        :math:`\operatorname{tr}(C^{-1} M)`)."""
        codes, owners, wheres, values = [], [], [], []
        for k, (positions, piece_values) in enumerate(pieces):
            for code, (chosen, where) in enumerate(self.inverse_positions(positions)):
                if len(chosen):
                    codes.append(code)
                    owners.append(k)
                    wheres.append(where)
                    values.append(np.asarray(piece_values, dtype=float)[chosen])
        bounds = np.concatenate([[0], np.cumsum([len(w) for w in wheres], dtype=np.int64)])
        return TraceGathers(
            len(pieces),
            np.array(codes, dtype=np.int64),
            bounds.astype(np.int64),
            np.array(owners, dtype=np.int64),
            np.concatenate(wheres).astype(np.int64) if wheres else np.zeros(0, np.int64),
            np.concatenate(values) if values else np.zeros(0),
        )

    def factorise_permuted(self, Bx: np.ndarray) -> Factor:
        """Numeric factorisation for values already in the permuted lower storage.

        Raises
        ------
        NotPositiveDefinite
            As :meth:`factorise`.
        """
        Bp, Bi = self._lower
        Lp, Li, Rp, Rj = self._pattern
        Lx, D, St, bad = _factorise(
            self.n, self.split, Bp, Bi, Bx, Lp, Li, Rp, Rj, self._supernodes, PIVOT_TOLERANCE
        )
        return self.factor_from(Bx, Lx, D, St, bad)

    def factor_from(
        self, Bx: np.ndarray, Lx: np.ndarray, D: np.ndarray, St: np.ndarray, bad: int
    ) -> Factor:
        """The factor from the sparse loop's output (:func:`_factorise`: its columns, pivots,
        Schur complement and first failed pivot): the dense block factored by LAPACK, every
        pivot checked against its diagonal entry of ``Bx`` (raises NotPositiveDefinite)."""
        t = self.split
        if bad >= 0:
            raise self._pivot_error(bad, float(D[bad]), Bx)
        if t < self.n:
            # St.T is the Schur complement in Fortran order: dpotrf factors it in place (a
            # C-ordered block would be copied on every factorisation)
            with blas_threads(size=self.n - t):
                chol, info = lapack.dpotrf(St.T, lower=1, clean=1, overwrite_a=1)
            if info != 0:
                raise self._pivot_error(t + info - 1, None, Bx)
            pivots = chol.diagonal() ** 2
            positions, absent = self._dense_diagonal
            diagonal = Bx[positions]
            if absent is not None:
                diagonal[absent] = 0.0
            small = np.flatnonzero(~(pivots > PIVOT_TOLERANCE * diagonal))
            if len(small):
                raise self._pivot_error(t + int(small[0]), float(pivots[small[0]]), Bx)
        else:
            chol = np.zeros((0, 0))
        return Factor(self, Lx, D, chol)

    @cached_property
    def _dense_diagonal(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Where the dense block's diagonal entries sit in the permuted storage, and which
        pivots have none (None where every one has): :meth:`_diagonal_of` for the dense
        block, its indices found once."""
        where = self._diagonal[self.split :]
        absent = np.flatnonzero(where < 0)
        return np.maximum(where, 0), (absent if len(absent) else None)

    def _diagonal_of(self, Bx: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The diagonal entries of pivots ``start`` … ``stop − 1`` from the permuted storage
        (0 where the pattern has none)."""
        where = self._diagonal[start:stop]
        return np.where(where >= 0, Bx[np.maximum(where, 0)], 0.0) if len(Bx) else 0.0 * where

    def _pivot_error(self, pivot: int, value: float | None, Bx: np.ndarray) -> NotPositiveDefinite:
        """The error for the failed pivot at position ``pivot`` of the elimination order."""
        index = int(self.perm[pivot])
        where = f"the pivot of row {index} (position {pivot} of {self.n} in the elimination order)"
        diagonal = float(self._diagonal_of(Bx, pivot, pivot + 1)[0])
        if value is None or not value > 0.0:
            shown = "not positive" if value is None else f"{value:.3g}"
            return NotPositiveDefinite(
                f"The matrix is not positive definite: {where} is {shown}.",
                index=index,
                ratio=None if value is None else value / diagonal if diagonal > 0 else value,
            )
        ratio = value / diagonal
        return NotPositiveDefinite(
            f"The matrix is not positive definite in floating point: {where} is {ratio:.2g} of "
            f"its diagonal entry, at most the relative tolerance {PIVOT_TOLERANCE:g}, so the "
            "row is a combination of the others to within round-off (the matrix is singular).",
            index=index,
            ratio=ratio,
        )

    def locate(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the selected inverse stores the entries (rows[k], cols[k])."""
        Lp, Li, _, _ = self._pattern
        return _locate(
            np.asarray(rows, np.int64), np.asarray(cols, np.int64), self.iperm, self.split, Lp, Li
        )


def coordinate_pattern(
    rows: np.ndarray, cols: np.ndarray, size: int
) -> tuple[sparse.csc_matrix, np.ndarray]:
    """The sparsity pattern (lower triangle, sorted CSC, zero values) of the entries
    ``(rows[k], cols[k])`` with ``rows ≥ cols``, repeats merged; and its entries' keys
    ``col · size + row`` in the pattern's data order, for ``np.searchsorted`` to place the
    pieces of a matrix assembled on it."""
    keys = np.unique(np.asarray(cols, dtype=np.int64) * size + np.asarray(rows, dtype=np.int64))
    pattern = sparse.csc_matrix(
        (np.zeros(len(keys)), (keys % size, keys // size)), shape=(size, size)
    )
    pattern.sort_indices()
    return pattern, keys


def analyse(
    pattern: sparse.spmatrix,
    *,
    ordering: str | np.ndarray = "amd",
    dense_block: int | None = None,
) -> Analysis:
    """Analyse the lower triangle of a symmetric matrix once, for many factorisations.

    Parameters
    ----------
    pattern
        The lower triangle (diagonal included) as a scipy.sparse CSC matrix with sorted
        indices; later values are given in the order of its ``data``.
    ordering
        ``"amd"`` (default), ``"metis"`` (needs pymetis), ``"natural"``, or a permutation.
    dense_block
        Number of trailing columns factored densely; None chooses it by the flop model.

    Returns
    -------
    Analysis
    """
    lower = sparse.csc_matrix(pattern)
    lower.sort_indices()
    n = lower.shape[0]
    if isinstance(ordering, str):
        choices = {"amd": orderings.amd, "metis": orderings.metis, "natural": orderings.natural}
        if ordering not in choices:
            raise BayesAnimalError(
                f"Unknown ordering {ordering!r}: choose {', '.join(choices)} or a permutation."
            )
        name, perm = ordering, choices[ordering](lower)
    else:
        name, perm = "given", np.asarray(ordering, dtype=np.int64)
    iperm = np.empty(n, np.int64)
    iperm[perm] = np.arange(n)
    coo = lower.tocoo()
    a, b = iperm[coo.row], iperm[coo.col]
    rows, cols = np.maximum(a, b), np.minimum(a, b)
    order = np.lexsort((rows, cols))
    Bi = rows[order].astype(np.int64)
    Bp = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=n))]).astype(np.int64)
    to_permuted = np.empty(len(order), np.int64)
    to_permuted[order] = np.arange(len(order))
    upper = sparse.csc_matrix((np.ones(len(Bi)), (cols[order], Bi)), shape=(n, n))
    upper.sort_indices()
    Ap, Ai = upper.indptr.astype(np.int64), upper.indices.astype(np.int64)
    parent = _etree(n, Ap, Ai)
    Lp, Li, Rp, Rj = _pattern(n, Ap, Ai, parent)
    counts = np.diff(Lp)
    split = _split(counts) if dense_block is None else n - int(np.clip(dense_block, 0, n))
    kind, where = _locate(coo.row.astype(np.int64), coo.col.astype(np.int64), iperm, split, Lp, Li)
    first = np.minimum(Bp[:-1], max(len(Bi) - 1, 0))
    has_diagonal = (Bp[:-1] < Bp[1:]) & (Bi[first] == np.arange(n)) if len(Bi) else Bp[1:] < 0
    return Analysis(
        n=n,
        perm=perm,
        iperm=iperm,
        split=split,
        nnz_factor=int(Lp[split] + (n - split) * (n - split - 1) // 2),
        flops=float(np.sum(counts.astype(float) ** 2)),
        ordering=name,
        _lower=(Bp, Bi),
        _to_permuted=to_permuted,
        _pattern=(Lp, Li, Rp, Rj),
        _input_location=(kind, where),
        _input_groups=tuple(
            (np.flatnonzero(kind == code), where[kind == code]) for code in (0, 1, 2)
        ),
        _diagonal=np.where(has_diagonal, Bp[:-1], -1),
        _supernodes=_supernodes(split, Lp, Li, WIDEST_SUPERNODE),
    )


@dataclass(frozen=True)
class Factor:
    r""":math:`C = P^\top L D L^\top P` from :meth:`Analysis.factorise` (dense block by Cholesky).

    Attributes
    ----------
    analysis
        The symbolic analysis it belongs to.
    """

    analysis: Analysis
    _Lx: np.ndarray = field(repr=False)
    _D: np.ndarray = field(repr=False)
    _chol: np.ndarray = field(repr=False)

    @property
    def logdet(self) -> float:
        """:math:`\\log|C|`."""
        t = self.analysis.split
        return float(np.sum(np.log(self._D[:t])) + 2.0 * np.sum(np.log(self._chol.diagonal())))

    def _sweep(self, X: np.ndarray, *, draw: bool) -> np.ndarray:
        analysis = self.analysis
        t, (Lp, Li, _, _) = analysis.split, analysis._pattern
        if not draw:
            _forward(t, Lp, Li, self._Lx, X)
            X[:t] /= self._D[:t, None]
            if t < analysis.n:
                with blas_threads(size=analysis.n - t):
                    X[t:] = lapack.dpotrs(self._chol, X[t:], lower=1)[0]
        else:  # X holds standard normals: Lᵀ x = D^-½ ξ gives x ~ N(0, C⁻¹)
            X[:t] /= np.sqrt(self._D[:t, None])
            if t < analysis.n:
                with blas_threads(size=analysis.n - t):
                    X[t:] = lapack.dtrtrs(self._chol, X[t:], lower=1, trans=1)[0]
        _backward(t, Lp, Li, self._Lx, X)
        return X

    def solve(self, b: np.ndarray) -> np.ndarray:
        """:math:`C^{-1} b` for a vector or the columns of a matrix."""
        b = np.asarray(b, dtype=float)
        X = np.ascontiguousarray(b.reshape(b.shape[0], -1)[self.analysis.perm])
        X = self._sweep(X, draw=False)
        out = np.empty_like(X)
        out[self.analysis.perm] = X
        return out.reshape(b.shape)

    def draw(self, noise: np.ndarray) -> np.ndarray:
        """Map standard normals (n × k) to draws from :math:`N(0, C^{-1})`."""
        X = np.ascontiguousarray(np.asarray(noise, dtype=float).reshape(self.analysis.n, -1))
        X = self._sweep(X.copy(), draw=True)
        out = np.empty_like(X)
        out[self.analysis.perm] = X
        return out.reshape(np.shape(noise))

    def selected_inverse(self) -> SelectedInverse:
        """:math:`C^{-1}` on the pattern of L (Takahashi)."""
        analysis = self.analysis
        t = analysis.split
        Lp, Li, _, _ = analysis._pattern
        if t < analysis.n:
            # the lower triangle of S⁻¹ is all that is read (every lookup has row ≥ column)
            with blas_threads(size=analysis.n - t):
                dense, info = lapack.dpotri(self._chol, lower=1)
            if info != 0:  # pragma: no cover - the factor exists, so its inverse does
                raise NotPositiveDefinite("dpotri failed on the dense block.")
        else:
            dense = np.zeros((0, 0))
        Sx, Sd = _selected_inverse(analysis.n, t, Lp, Li, self._Lx, self._D, dense)
        return SelectedInverse(analysis, Sx, Sd, dense)


@dataclass(frozen=True)
class TraceGathers:
    """Fixed matrices' entries as the selected inverse stores them
    (:meth:`Analysis.trace_gathers`): segment s of ``where``/``values``
    (``bounds[s]:bounds[s + 1]``) lies in part ``codes[s]`` of
    :meth:`SelectedInverse.parts` and belongs to matrix ``owners[s]``."""

    count: int
    codes: np.ndarray
    bounds: np.ndarray
    owners: np.ndarray
    where: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class SelectedInverse:
    """Entries of :math:`C^{-1}` on the pattern of L, looked up by original indices."""

    analysis: Analysis
    _Sx: np.ndarray = field(repr=False)
    _Sd: np.ndarray = field(repr=False)
    _dense: np.ndarray = field(repr=False)

    def _gather(self, kind: np.ndarray, where: np.ndarray) -> np.ndarray:
        if np.any(kind < 0):
            raise BayesAnimalError("An entry of C⁻¹ was asked for off the pattern of L.")
        out = np.empty(len(kind))
        for code, source in enumerate(self.parts()):
            chosen = kind == code
            out[chosen] = source[where[chosen]]
        return out

    def parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored entries: the diagonal, the sparse columns, the dense block (flattened in
        its memory's Fortran order: a view), to index with :meth:`Analysis.inverse_positions`."""
        return self._Sd, self._Sx, self._dense.ravel(order="F")

    def traces(self, gathers: TraceGathers) -> np.ndarray:
        r""":math:`\operatorname{tr}(C^{-1} M_k)` of every fixed matrix of ``gathers`` (one
        compiled pass; each part's sum a BLAS dot product)."""
        g = gathers
        return _piece_traces(*self.parts(), g.codes, g.bounds, g.owners, g.where, g.values, g.count)

    def on_pattern(self) -> np.ndarray:
        """:math:`(C^{-1})_{ij}` for every entry of the analysed lower pattern, in its order."""
        groups = self.analysis._input_groups
        out = np.empty(len(self.analysis._input_location[0]))
        for (positions, where), source in zip(groups, self.parts(), strict=True):
            out[positions] = source[where]
        return out

    def diagonal(self) -> np.ndarray:
        """:math:`\\operatorname{diag}(C^{-1})` in the original order."""
        out = np.empty(self.analysis.n)
        out[self.analysis.perm] = self._Sd
        return out

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """:math:`(C^{-1})_{rows[k], cols[k]}` (each pair must be on the pattern of L)."""
        return self._gather(*self.analysis.locate(rows, cols))

    def block(self, index: np.ndarray) -> np.ndarray:
        """The dense submatrix :math:`(C^{-1})_{II}` for a set I whose pairs are on the pattern
        (the fixed effects, which are dense in C)."""
        index = np.asarray(index, dtype=np.int64)
        rows, cols = np.meshgrid(index, index, indexing="ij")
        return self.entries(rows.ravel(), cols.ravel()).reshape(len(index), len(index))
