r"""Additive relationships from a pedigree: inbreeding, Mendelian sampling, :math:`A^{-1}`, A.

For a pedigree sorted parents-first, :math:`A = T D T^\top` where :math:`T = (I - P)^{-1}` is
unit lower-triangular (:math:`P` has ½ at each animal's known parents) and :math:`D` is
diagonal with the Mendelian-sampling variances

.. math::

    d_i = \tfrac12 - \tfrac14 (F_s + F_d)\ \text{(both parents known)},\quad
    \tfrac34 - \tfrac14 F_s\ \text{(one)},\quad 1\ \text{(none)},

so :math:`u = T D^{1/2} z` is the recursion :math:`u_i = \tfrac12(u_s + u_d) + \sqrt{d_i} z_i`.
Selfing (:math:`s = d`) needs no special case: :math:`d_i = \tfrac12(1 - F_s)`.

- **Inbreeding** :math:`F_i = a_{ii} - 1 = \sum_j T_{ij}^2 d_j - 1` by Meuwissen & Luo (1992):
  row :math:`i` of :math:`T` is accumulated over :math:`i`'s ancestors only, youngest first
  (a max-heap), compiled with numba. Cost: proportional to the ancestors of each animal.
- **A⁻¹** by Henderson's rules with inbreeding (Quaas 1976):
  :math:`A^{-1} = (I - P)^\top D^{-1} (I - P)`, assembled as sparse triplets in one
  vectorised pass.
- **Dense A** (moderate sizes) by the tabular method, one generation at a time:
  :math:`a_{ij} = \tfrac12(a_{i s_j} + a_{i d_j})`, :math:`a_{jj} = 1 + \tfrac12 a_{s_j d_j}`.

Nothing here forms a dense matrix except :func:`dense_relationship`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import sparse

from ..errors import RelationshipError
from .pedigree import Pedigree, generation_blocks
from .relationship import RelationshipMatrix

__all__ = [
    "MAX_DENSE",
    "MendelianSampling",
    "dense_relationship",
    "inverse_relationship",
    "inverse_transmission",
    "mendelian_sampling",
]

#: Largest pedigree for which a dense A is formed (a 20 000² matrix takes 3.2 GB).
MAX_DENSE = 20_000


@njit(cache=True)
def _push(heap, size, value):  # pragma: no cover - compiled
    heap[size] = value
    child = size
    while child > 0:
        parent = (child - 1) // 2
        if heap[parent] >= heap[child]:
            break
        heap[parent], heap[child] = heap[child], heap[parent]
        child = parent
    return size + 1


@njit(cache=True)
def _pop(heap, size):  # pragma: no cover - compiled
    top = heap[0]
    size -= 1
    heap[0] = heap[size]
    parent = 0
    while True:
        left = 2 * parent + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and heap[left + 1] > heap[left]:
            child = left + 1
        if heap[parent] >= heap[child]:
            break
        heap[parent], heap[child] = heap[child], heap[parent]
        parent = child
    return top, size


@njit(cache=True)
def _meuwissen_luo(sire, dam):  # pragma: no cover - compiled
    q = len(sire)
    inbreeding = np.zeros(q + 1)
    inbreeding[q] = -1.0  # an unknown parent counts as F = -1, which gives the d_i above
    variances = np.zeros(q)
    weights = np.zeros(q)
    heap = np.empty(q, dtype=np.int64)
    queued = np.zeros(q, dtype=np.bool_)
    for i in range(q):
        s = sire[i] if sire[i] >= 0 else q
        d = dam[i] if dam[i] >= 0 else q
        variances[i] = 0.5 - 0.25 * (inbreeding[s] + inbreeding[d])
        if sire[i] < 0 and dam[i] < 0:
            continue
        if i > 0 and sire[i] == sire[i - 1] and dam[i] == dam[i - 1]:
            inbreeding[i] = inbreeding[i - 1]  # full sibs share F
            continue
        size = _push(heap, 0, i)
        queued[i] = True
        weights[i] = 1.0
        total = -1.0
        while size > 0:
            j, size = _pop(heap, size)
            queued[j] = False
            sj, dj = sire[j], dam[j]
            if sj >= 0:
                weights[sj] += weights[j] if sj == dj else 0.5 * weights[j]
                if not queued[sj]:
                    size = _push(heap, size, sj)
                    queued[sj] = True
            if dj >= 0 and dj != sj:
                weights[dj] += 0.5 * weights[j]
                if not queued[dj]:
                    size = _push(heap, size, dj)
                    queued[dj] = True
            total += weights[j] * weights[j] * variances[j]
            weights[j] = 0.0
        inbreeding[i] = total
    return inbreeding[:q], variances


@dataclass(frozen=True)
class MendelianSampling:
    """Inbreeding coefficients F and Mendelian-sampling variances d, in pedigree order."""

    inbreeding: np.ndarray
    variances: np.ndarray

    def summary(self) -> dict[str, float]:
        """Mean and maximum F and the number of inbred animals (F > 0)."""
        f = self.inbreeding
        return {
            "animals": len(f),
            "mean_inbreeding": float(f.mean()) if len(f) else 0.0,
            "max_inbreeding": float(f.max()) if len(f) else 0.0,
            "inbred_animals": int(np.sum(f > 1e-12)),
        }


def mendelian_sampling(pedigree: Pedigree) -> MendelianSampling:
    """Inbreeding (Meuwissen & Luo 1992) and the diagonal of D in A = T D Tᵀ."""
    sire = np.ascontiguousarray(pedigree.sire, dtype=np.int64)
    dam = np.ascontiguousarray(pedigree.dam, dtype=np.int64)
    inbreeding, variances = _meuwissen_luo(sire, dam)
    return MendelianSampling(inbreeding=inbreeding, variances=variances)


def inverse_transmission(pedigree: Pedigree) -> sparse.csr_matrix:
    r"""The sparse unit lower-triangular :math:`I - P`, with :math:`T = (I - P)^{-1}`.

    Row :math:`i` has 1 on the diagonal and −½ at each known parent (−1 at a selfed parent).
    """
    q = pedigree.size
    rows = [np.arange(q)]
    cols = [np.arange(q)]
    values = [np.ones(q)]
    for parent in (pedigree.sire, pedigree.dam):
        known = np.flatnonzero(parent >= 0)
        rows.append(known)
        cols.append(parent[known])
        values.append(np.full(len(known), -0.5))
    return sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(q, q)
    )


def inverse_relationship(
    pedigree: Pedigree, sampling: MendelianSampling | None = None
) -> sparse.csr_matrix:
    r"""Sparse :math:`A^{-1} = (I - P)^\top D^{-1} (I - P)` (Henderson's rules with inbreeding).

    Rows and columns are in pedigree order (:attr:`Pedigree.ids`).
    """
    if sampling is None:
        sampling = mendelian_sampling(pedigree)
    factor = inverse_transmission(pedigree)
    scaled = sparse.diags(1.0 / sampling.variances) @ factor
    return (factor.T @ scaled).tocsr()


def dense_relationship(
    pedigree: Pedigree, *, max_size: int = MAX_DENSE, user_order: bool = True
) -> RelationshipMatrix:
    """The dense numerator relationship matrix A, by the tabular method per generation.

    Parameters
    ----------
    pedigree
        A checked pedigree.
    max_size
        Refuse pedigrees larger than this (the matrix needs 8·q² bytes).
    user_order
        Order rows as in the user's file (added founders first); else pedigree order.
    """
    q = pedigree.size
    if q > max_size:
        raise RelationshipError(
            f"A dense A of {q} animals needs {8 * q * q / 1e9:.1f} GB; the limit is {max_size} "
            "animals. Use the sparse inverse (inverse_relationship) or raise max_size."
        )
    A = np.zeros((q, q))
    sire, dam = pedigree.sire, pedigree.dam
    for block in generation_blocks(pedigree.generation):
        start, end = block.start, block.stop
        s, d = sire[block], dam[block]
        older = A[:start, :start]
        rows = np.zeros((end - start, start))
        for parent in (s, d):
            known = parent >= 0
            rows[known] += 0.5 * older[parent[known]]
        A[block, :start] = rows
        A[:start, block] = rows.T
        within = np.zeros((end - start, end - start))
        for parent in (s, d):
            known = parent >= 0
            within[known] += 0.5 * rows[:, parent[known]].T
        within = (within + within.T) / 2.0
        both = (s >= 0) & (d >= 0)
        diagonal = np.ones(end - start)
        diagonal[both] += 0.5 * A[s[both], d[both]]
        np.fill_diagonal(within, diagonal)
        A[block, block] = within
    if user_order:
        order = pedigree.user_order
        return RelationshipMatrix(ids=pedigree.ids[order], matrix=A[np.ix_(order, order)])
    return RelationshipMatrix(ids=pedigree.ids, matrix=A)
