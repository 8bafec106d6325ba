r"""Covariance structures of random effects: :math:`u \sim N(0, \sigma^2 K)`, one protocol.

Every random effect of the model has levels (animals, dams, birth years …) and a structure
:math:`K` over them. The mixed-model equations need :math:`K^{-1}` and :math:`\log|K|`, the
reliabilities need :math:`\operatorname{diag} K`, the non-centred sampler needs a factor
:math:`L` with :math:`L L^\top = K`, and the oracle tests and the spectral fast path need the
dense :math:`K`. Three kinds implement it:

- :class:`PedigreeStructure`: :math:`K = A` from a pedigree. :math:`A^{-1} = (I-P)^\top D^{-1}
  (I-P)` is sparse (Henderson's rules), :math:`\log|A| = \sum_i \log d_i`,
  :math:`a_{ii} = 1 + F_i`, :math:`L = T D^{1/2}` is applied by the parents-first recursion.
  The dense A is only formed on request (spectral path, oracles; refused above 20 000).
- :class:`MatrixStructure`: a given relationship matrix (a CSV A, a genomic G). Its inverse
  and log-determinant come from :mod:`bayes_animal.linalg.inverse`: a sparse factorisation
  when the matrix is a pedigree A written parents first (its inverse has the sparsity of
  :math:`A^{-1}`), LAPACK's dense one otherwise.
- :class:`IdentityStructure`: :math:`K = I` for independent levels (birth year, permanent
  environment, cage).

Levels are kept in the user's order (:attr:`ids`); the matrices use that order.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from ..errors import RelationshipError, describe_items
from ..tables import pandas as pd
from .additive import MendelianSampling, dense_relationship, inverse_relationship
from .pedigree import Pedigree
from .relationship import RelationshipMatrix, index_positions

__all__ = [
    "IdentityStructure",
    "MatrixStructure",
    "PedigreeStructure",
    "Structure",
]


class Structure:
    """The protocol every covariance structure follows (see the module docstring).

    Attributes
    ----------
    kind
        ``"pedigree"``, ``"matrix"`` or ``"identity"``.
    ids
        Level ids (strings), in the order of the matrices.
    """

    kind: str
    ids: np.ndarray

    @property
    def size(self) -> int:
        """Number of levels q."""
        return len(self.ids)

    @property
    def genetic(self) -> bool:
        """Whether the levels are related (a relationship matrix rather than I)."""
        return self.kind != "identity"

    def positions(self, ids: Any) -> np.ndarray:  # pragma: no cover - protocol
        raise NotImplementedError

    def inverse(self) -> sparse.csr_matrix:  # pragma: no cover - protocol
        """:math:`K^{-1}` (sparse), in the order of :attr:`ids`."""
        raise NotImplementedError

    def logdet(self) -> float:  # pragma: no cover - protocol
        """:math:`\\log|K|`."""
        raise NotImplementedError

    def diagonal(self) -> np.ndarray:  # pragma: no cover - protocol
        """:math:`\\operatorname{diag} K`."""
        raise NotImplementedError

    def dense(self) -> RelationshipMatrix:  # pragma: no cover - protocol
        """:math:`K` as a dense matrix with its ids (oracles, the spectral path)."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class PedigreeStructure(Structure):
    """:math:`A` from a checked pedigree, held through its sparse inverse.

    Parameters
    ----------
    pedigree
        Sorted parents-first (:func:`~bayes_animal.structures.pedigree.read_pedigree`).
    sampling
        Its inbreeding and Mendelian-sampling variances.
    """

    pedigree: Pedigree
    sampling: MendelianSampling
    kind: str = "pedigree"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def order(self) -> np.ndarray:
        """``order[k]``: the pedigree position of the k-th level (the user's order)."""
        if "order" not in self._cache:
            self._cache["order"] = self.pedigree.user_order
        return self._cache["order"]

    @property
    def ids(self) -> np.ndarray:  # type: ignore[override]
        if "ids" not in self._cache:
            self._cache["ids"] = self.pedigree.ids[self.order]
        return self._cache["ids"]

    def positions(self, ids: Any) -> np.ndarray:
        """Level positions of ``ids``; a PedigreeError names those not in the pedigree."""
        if "to_user" not in self._cache:
            to_user = np.empty(self.pedigree.size, dtype=np.intp)
            to_user[self.order] = np.arange(self.pedigree.size)
            self._cache["to_user"] = to_user
        return self._cache["to_user"][self.pedigree.positions(ids)]

    def inverse(self) -> sparse.csr_matrix:
        if "inverse" not in self._cache:
            inverse = inverse_relationship(self.pedigree, self.sampling)
            order = self.order
            self._cache["inverse"] = inverse[order][:, order].tocsr()
        return self._cache["inverse"]

    def logdet(self) -> float:
        return float(np.sum(np.log(self.sampling.variances)))

    def diagonal(self) -> np.ndarray:
        return 1.0 + self.sampling.inbreeding[self.order]

    def dense(self) -> RelationshipMatrix:
        if "dense" not in self._cache:
            self._cache["dense"] = dense_relationship(self.pedigree)
        return self._cache["dense"]


@dataclass(frozen=True, eq=False)
class MatrixStructure(Structure):
    """A given relationship matrix, used as given (never rescaled).

    Its inverse and log-determinant come from one factorisation (sparse where the matrix's
    factor is); a singular (only positive semi-definite) matrix has no inverse and is refused
    where one is needed, with the fix.
    """

    relmat: RelationshipMatrix
    kind: str = "matrix"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def ids(self) -> np.ndarray:  # type: ignore[override]
        return self.relmat.ids

    def positions(self, ids: Any) -> np.ndarray:
        return self.relmat.positions(ids)

    def sparse_inverse(self):
        """The sparse route's K⁻¹ (:func:`~bayes_animal.linalg.inverse.sparse_inverse`: bounded
        work), or None where it does not serve (a dense matrix, an order that fills in); tried
        once and kept — the chooser asks it before choosing the sparse engine. A singular matrix
        gets the error below."""
        if "sparse_attempt" not in self._cache:
            from ..linalg.inverse import sparse_inverse

            with self._worded():
                self._cache["sparse_attempt"] = sparse_inverse(
                    self.relmat.matrix, density=self.relmat.density
                )
        return self._cache["sparse_attempt"]

    def _inverse(self):
        """K⁻¹ and log|K| (the sparse route where it serves, else LAPACK), once. The
        factorisation settles a definiteness check left for later; a matrix that is not
        positive semi-definite gets the reader's error, a singular one the error below."""
        if "inverse" not in self._cache:
            from ..linalg.inverse import dense_inverse

            found = self.sparse_inverse()
            if found is None:
                with self._worded():
                    found = dense_inverse(self.relmat.matrix, density=self.relmat.density)
            self._cache["inverse"] = found
            self.relmat.settle_definite(None)
        return self._cache["inverse"]

    @contextmanager
    def _worded(self):
        """The factorisation's NotPositiveDefinite as the user's error."""
        from ..linalg.ldl import NotPositiveDefinite

        try:
            yield
        except NotPositiveDefinite as exc:
            self.relmat.require_definite()  # the reader's error if it is not PSD
            raise RelationshipError(
                "The relationship matrix is singular (positive semi-definite but not "
                "definite), so it has no inverse for the mixed-model equations. Add a small "
                "ridge (ridge=0.01, --ridge 0.01), blend it with a pedigree A, or fit a model "
                "with this one genetic effect only (the spectral path accepts it)."
            ) from exc

    @property
    def inverse_route(self) -> str:
        """How :meth:`inverse` was computed: ``"sparse"`` or ``"dense"``."""
        return self._inverse().route

    def inverse(self) -> sparse.csr_matrix:
        return self._inverse().inverse

    def logdet(self) -> float:
        return self._inverse().logdet

    def diagonal(self) -> np.ndarray:
        return np.diag(self.relmat.matrix).copy()

    def dense(self) -> RelationshipMatrix:
        return self.relmat


@dataclass(frozen=True, eq=False)
class IdentityStructure(Structure):
    """Independent levels: :math:`K = I`."""

    ids: np.ndarray  # type: ignore[assignment]
    kind: str = "identity"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def positions(self, ids: Any) -> np.ndarray:
        if "index" not in self._cache:
            self._cache["index"] = pd.Index(self.ids)
        return index_positions(
            self._cache["index"],
            ids,
            lambda missing: RelationshipError(
                f"Level(s) {describe_items(missing)} are not levels of this effect."
            ),
        )

    def inverse(self) -> sparse.csr_matrix:
        return sparse.identity(self.size, format="csr")

    def logdet(self) -> float:
        return 0.0

    def diagonal(self) -> np.ndarray:
        return np.ones(self.size)

    def dense(self) -> RelationshipMatrix:
        return RelationshipMatrix(ids=self.ids, matrix=np.eye(self.size))
