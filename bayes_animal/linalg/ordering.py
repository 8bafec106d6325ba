r"""Fill-reducing orderings for the sparse factorisation of the mixed-model equations.

:func:`amd` is an approximate-minimum-degree ordering (Amestoy, Davis & Duff 1996) written for
this package in numba: minimum degree on the quotient graph (variables and elements), with
approximate external degrees, element absorption (aggressive too), mass elimination,
indistinguishable-node (supervariable) detection by hashing, and dense rows (degree above
``10·√n``) ordered last. On the mixed-model matrices of herd-structured pedigrees it gives the
same fill as SuiteSparse's AMD (``benchmarks/results/mme.md``). :func:`metis` is METIS'
nested dissection when the optional ``pymetis`` is installed (better for some large random-mating
pedigrees); :func:`choose_ordering` picks the ordering with the fewest predicted flops.

The input is a symmetric sparsity pattern with both triangles (CSR or CSC of a symmetric
matrix). Every ordering returns ``perm`` with ``perm[k]`` = the original index of the k-th
eliminated row.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["amd", "metis", "natural"]

_VARIABLE, _ELEMENT, _ABSORBED, _MERGED, _MASS, _DENSE = 0, 1, 2, 3, 4, 5


@njit(cache=True)
def _remove(d, i, head, nxt, prv):
    a = prv[i]
    b = nxt[i]
    if a != -1:
        nxt[a] = b
    else:
        head[d] = b
    if b != -1:
        prv[b] = a


@njit(cache=True)
def _insert(d, i, head, nxt, prv):
    b = head[d]
    nxt[i] = b
    prv[i] = -1
    if b != -1:
        prv[b] = i
    head[d] = i


@njit(cache=True)
def _compact(iw, pe, ln, kind, n):
    # the live lists in the order they start in iw (the starts of non-empty lists are
    # distinct): a scan of the positions, not a sort (an argsort costs seconds to compile)
    at = np.full(iw.shape[0], -1, np.int64)
    for i in range(n):
        if kind[i] == _VARIABLE or kind[i] == _ELEMENT:
            if ln[i] > 0:
                at[pe[i]] = i
            else:
                pe[i] = 0  # an empty list is read nowhere
    free = 0
    for position in range(iw.shape[0]):
        i = at[position]
        if i < 0:
            continue
        s = pe[i]
        for k in range(ln[i]):
            iw[free + k] = iw[s + k]
        pe[i] = free
        free += ln[i]
    return free


@njit(cache=True)
def _amd(n, Ap, Ai, dense_factor):
    kind = np.zeros(n, np.int64)
    parent = np.full(n, -1, np.int64)
    deg0 = np.zeros(n, np.int64)
    for i in range(n):
        for p in range(Ap[i], Ap[i + 1]):
            if Ai[p] != i:
                deg0[i] += 1
    dense = max(16.0, dense_factor * np.sqrt(n))
    for i in range(n):
        if deg0[i] > dense:
            kind[i] = _DENSE
    nnz = 0
    for i in range(n):
        if kind[i] != _DENSE:
            for p in range(Ap[i], Ap[i + 1]):
                j = Ai[p]
                if j != i and kind[j] != _DENSE:
                    nnz += 1
    iwlen = nnz + nnz // 5 + 2 * n + 16
    iw = np.empty(iwlen, np.int64)
    pe = np.zeros(n, np.int64)
    ln = np.zeros(n, np.int64)
    elen = np.zeros(n, np.int64)
    nv = np.ones(n, np.int64)
    degree = np.zeros(n, np.int64)
    w = np.ones(n, np.int64)
    lpmark = np.full(n, -1, np.int64)
    stamp = np.full(n, -1, np.int64)
    head = np.full(n + 1, -1, np.int64)
    nxt = np.full(n, -1, np.int64)
    prv = np.full(n, -1, np.int64)
    hhead = np.full(n, -1, np.int64)
    hnext = np.full(n, -1, np.int64)
    hval = np.zeros(n, np.int64)
    pfree = 0
    ndense = 0
    for i in range(n):
        pe[i] = pfree
        if kind[i] == _DENSE:
            ndense += 1
            nv[i] = 0
            continue
        for p in range(Ap[i], Ap[i + 1]):
            j = Ai[p]
            if j != i and kind[j] != _DENSE:
                iw[pfree] = j
                pfree += 1
        ln[i] = pfree - pe[i]
        degree[i] = ln[i]
        _insert(degree[i], i, head, nxt, prv)
    order = np.empty(n, np.int64)
    nout = 0
    pivots = np.empty(n, np.int64)
    npiv = 0
    nel = 0
    target = n - ndense
    mindeg = 0
    wflg = 2
    step = 0
    touched = np.empty(n, np.int64)
    while nel < target:
        step += 1
        while head[mindeg] == -1:
            mindeg += 1
        p = head[mindeg]
        _remove(mindeg, p, head, nxt, prv)
        pivots[npiv] = p
        npiv += 1
        nvpiv = nv[p]
        nel += nvpiv
        lpmark[p] = step
        # --- construct the new element Lp
        if pfree + (n - nel) + 1 > iwlen:
            pfree = _compact(iw, pe, ln, kind, n)
        degme = 0
        pstart = pfree
        p1 = pe[p]
        ne = elen[p]
        for k in range(ne + 1):
            if k < ne:
                e = iw[p1 + k]
                if kind[e] != _ELEMENT:
                    continue
                pj = pe[e]
                lj = ln[e]
            else:
                e = p
                pj = p1 + ne
                lj = ln[p] - ne
            for q in range(pj, pj + lj):
                i = iw[q]
                if kind[i] == _VARIABLE and lpmark[i] != step and i != p:
                    lpmark[i] = step
                    iw[pfree] = i
                    pfree += 1
                    degme += nv[i]
                    _remove(degree[i], i, head, nxt, prv)
            if e != p:
                kind[e] = _ABSORBED
                parent[e] = p
                w[e] = 0
        kind[p] = _ELEMENT
        pe[p] = pstart
        ln[p] = pfree - pstart
        elen[p] = -1
        # --- |Le \ Lp| for every element adjacent to Lp
        if wflg > (1 << 60):
            for k in range(n):
                if w[k] != 0:
                    w[k] = 1
            wflg = 2
        for q in range(pstart, pstart + ln[p]):
            i = iw[q]
            nvi = nv[i]
            for pj in range(pe[i], pe[i] + elen[i]):
                e = iw[pj]
                if kind[e] != _ELEMENT:
                    continue
                we = w[e]
                if we >= wflg:
                    w[e] = we - nvi
                elif we != 0:
                    w[e] = degree[e] + wflg - nvi
        # --- degree update, pruning, aggressive absorption, mass elimination, hashing
        nused = 0
        for q in range(pstart, pstart + ln[p]):
            i = iw[q]
            if kind[i] != _VARIABLE:
                continue
            p1 = pe[i]
            p2 = p1 + elen[i]
            pn = p1
            h = 0
            deg = 0
            for pj in range(p1, p2):
                e = iw[pj]
                if kind[e] != _ELEMENT:
                    continue
                dext = w[e] - wflg
                if dext > 0:
                    deg += dext
                    iw[pn] = e
                    pn += 1
                    h += e
                elif dext == 0:
                    kind[e] = _ABSORBED
                    parent[e] = p
                    w[e] = 0
            elen[i] = pn - p1 + 1
            p3 = pn
            p4 = p1 + ln[i]
            for pj in range(p2, p4):
                j = iw[pj]
                if kind[j] == _VARIABLE and lpmark[j] != step:
                    deg += nv[j]
                    iw[pn] = j
                    pn += 1
                    h += j
            if elen[i] == 1 and p3 == pn:
                kind[i] = _MASS
                parent[i] = p
                nvi = nv[i]
                degme -= nvi
                nvpiv += nvi
                nel += nvi
            else:
                if deg < degree[i]:
                    degree[i] = deg
                iw[pn] = iw[p3]
                iw[p3] = iw[p1]
                iw[p1] = p
                ln[i] = pn - p1 + 1
                h = h % n
                hval[i] = h
                if hhead[h] == -1:
                    touched[nused] = h
                    nused += 1
                hnext[i] = hhead[h]
                hhead[h] = i
        degree[p] = degme
        # --- supervariable detection
        for b in range(nused):
            h = touched[b]
            i = hhead[h]
            while i != -1:
                if kind[i] == _VARIABLE:
                    for pj in range(pe[i], pe[i] + ln[i]):
                        stamp[iw[pj]] = -(i + 2)
                    j = hnext[i]
                    while j != -1:
                        if kind[j] == _VARIABLE and ln[j] == ln[i] and elen[j] == elen[i]:
                            same = True
                            for pj in range(pe[j], pe[j] + ln[j]):
                                if stamp[iw[pj]] != -(i + 2):
                                    same = False
                                    break
                            if same:
                                nv[i] += nv[j]
                                kind[j] = _MERGED
                                parent[j] = i
                        j = hnext[j]
                    for pj in range(pe[i], pe[i] + ln[i]):
                        stamp[iw[pj]] = -1
                i = hnext[i]
            i = hhead[h]
            while i != -1:
                nxt_i = hnext[i]
                hnext[i] = -1
                i = nxt_i
            hhead[h] = -1
        # --- final degrees of Lp's variables
        pn = pstart
        for q in range(pstart, pstart + ln[p]):
            i = iw[q]
            if kind[i] != _VARIABLE:
                continue
            nvi = nv[i]
            d = degree[i] + degme - nvi
            cap = n - ndense - nel - nvi
            if d > cap:
                d = cap
            if d < 0:
                d = 0
            degree[i] = d
            _insert(d, i, head, nxt, prv)
            if d < mindeg:
                mindeg = d
            iw[pn] = i
            pn += 1
        nv[p] = nvpiv
        ln[p] = pn - pstart
        if ln[p] == 0:
            pe[p] = -1
        wflg += n + 1
    # --- the permutation: pivots in order, each followed by what was eliminated with it
    children_head = np.full(n, -1, np.int64)
    children_next = np.full(n, -1, np.int64)
    for i in range(n):
        if kind[i] == _MERGED or kind[i] == _MASS:
            children_next[i] = children_head[parent[i]]
            children_head[parent[i]] = i
    stack = np.empty(n, np.int64)
    for t in range(npiv):
        top = 0
        stack[top] = pivots[t]
        top += 1
        while top > 0:
            top -= 1
            i = stack[top]
            order[nout] = i
            nout += 1
            c = children_head[i]
            while c != -1:
                stack[top] = c
                top += 1
                c = children_next[c]
    for i in range(n):
        if kind[i] == _DENSE:
            order[nout] = i
            nout += 1
    return order[:nout]


def _symmetric_pattern(matrix) -> tuple[np.ndarray, np.ndarray]:
    from scipy import sparse

    pattern = sparse.csr_matrix(matrix, copy=True)
    pattern.data = np.ones_like(pattern.data)
    pattern = (pattern + pattern.T).tocsr()
    pattern.sort_indices()
    return pattern.indptr.astype(np.int64), pattern.indices.astype(np.int64)


def amd(matrix, *, dense_factor: float = 10.0) -> np.ndarray:
    """Approximate-minimum-degree ordering of a symmetric sparse matrix (any triangle given).

    Parameters
    ----------
    matrix
        A scipy.sparse matrix whose pattern (with its transpose) is the graph to order.
    dense_factor
        Rows with more than ``max(16, dense_factor·√n)`` entries are ordered last.

    Returns
    -------
    numpy.ndarray
        ``perm`` (int64): ``perm[k]`` is the original index eliminated k-th.
    """
    n = matrix.shape[0]
    indptr, indices = _symmetric_pattern(matrix)
    return _amd(n, indptr, indices, float(dense_factor))


def natural(matrix) -> np.ndarray:
    """The identity ordering."""
    return np.arange(matrix.shape[0], dtype=np.int64)


def metis(matrix) -> np.ndarray:
    """METIS nested dissection (needs the optional ``pymetis``: ``pip install pymetis``)."""
    try:
        import pymetis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The METIS ordering needs pymetis: pip install 'bayes_animal[metis]'."
        ) from exc
    indptr, indices = _symmetric_pattern(matrix)
    diagonal_free = indices != np.repeat(np.arange(matrix.shape[0]), np.diff(indptr))
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(indptr))[diagonal_free]
    cols = indices[diagonal_free]
    counts = np.bincount(rows, minlength=matrix.shape[0])
    xadj = np.concatenate([[0], np.cumsum(counts)])
    perm, _ = pymetis.nested_dissection(adjacency=pymetis.CSRAdjacency(xadj, cols))
    return np.asarray(perm, dtype=np.int64)
