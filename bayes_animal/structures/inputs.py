"""One place that turns the user's relationship input into a :class:`RelationshipMatrix`.

Exactly one of ``relmat=`` (a matrix, DataFrame or CSV), ``pedigree=`` (a pedigree table or
CSV) or ``genotypes=`` (marker genotypes) is given — or genotypes with a pedigree and a blend
weight, for (1−w)G + wA. The API (:func:`bayes_animal.api.reml`) and the command line share
it. The pedigree and genomic modules (numba, scipy) are imported only when a pedigree or
genotypes are given, so that a fit from a ready matrix starts quickly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import RelationshipError
from ..tables import Records, as_records
from ..tables import pandas as pd
from .pedigree import Pedigree, read_pedigree
from .relationship import RelationshipMatrix, as_relationship

if TYPE_CHECKING:  # imported lazily: numba and scipy are not needed for a ready matrix
    from .additive import MendelianSampling
    from .covariance import Structure
    from .genomic import GenomicRelationship

__all__ = ["RelationshipSource", "resolve_relationship"]


@dataclass(frozen=True, eq=False)
class RelationshipSource:
    """The relationship of the animals and where it came from.

    Attributes
    ----------
    matrix
        The given (or genomic) matrix; None for a pedigree, whose dense A is formed only on
        request (:attr:`relmat`).
    kind
        ``"matrix"``, ``"pedigree"``, ``"genomic"`` or ``"blended"``.
    pedigree, sampling
        The checked pedigree and its inbreeding / Mendelian-sampling variances, if any.
    genomic
        How G was built, if it was.
    notices
        Notices from reading the pedigree or genotypes.
    """

    matrix: RelationshipMatrix | None
    kind: Literal["matrix", "pedigree", "genomic", "blended"]
    pedigree: Pedigree | None = None
    sampling: MendelianSampling | None = None
    genomic: GenomicRelationship | None = None
    notices: tuple[str, ...] = ()
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def relmat(self) -> RelationshipMatrix:
        """The dense matrix (for a pedigree: A by the tabular method, formed once on request),
        positive semi-definite (a check left for later is made now)."""
        if self.matrix is not None:
            self.matrix.require_definite()
            return self.matrix
        return self.structure.dense()

    @property
    def structure(self) -> Structure:
        """The covariance structure of the genetic effects (sparse A⁻¹ for a pedigree). A given
        matrix's definiteness, if left for later, is settled by the structure's first
        factorisation (:class:`~bayes_animal.structures.covariance.MatrixStructure`)."""
        if "structure" not in self._cache:
            from .covariance import MatrixStructure, PedigreeStructure

            self._cache["structure"] = (
                PedigreeStructure(self.pedigree, self.sampling)
                if self.matrix is None
                else MatrixStructure(self.matrix)
            )
        return self._cache["structure"]

    @property
    def ids(self) -> np.ndarray:
        """The animals' ids in the user's order (without forming a dense matrix)."""
        if self.matrix is not None:
            return self.matrix.ids
        return self.pedigree.ids[self.pedigree.user_order]

    def positions(self, ids: Any) -> np.ndarray:
        """Positions of ``ids`` among :attr:`ids`; the error names those that are missing."""
        if self.matrix is not None:
            return self.matrix.positions(ids)
        return self.structure.positions(ids)

    def check_animals(self, data: pd.DataFrame | Records, animal: str) -> None:
        """With a pedigree, every animal id in ``data[animal]`` must be in it (a
        :class:`~bayes_animal.pedigree.PedigreeError` names those that are not); a missing
        animal column (or data that are not a table) is left to
        :func:`~bayes_animal.design.build_design` to report."""
        records = as_records(data)
        if self.pedigree is not None and records is not None and animal in records:
            self.pedigree.positions(records.values(animal)[~records.missing(animal)])


def resolve_relationship(
    *,
    relmat: RelationshipMatrix | pd.DataFrame | str | PathLike[str] | Any = None,
    pedigree: Pedigree | pd.DataFrame | str | PathLike[str] | None = None,
    genotypes: pd.DataFrame | str | PathLike[str] | None = None,
    pedigree_columns: tuple[str, str, str] | None = None,
    allow_selfing: bool = False,
    add_missing_parents: bool = False,
    genotype_coding: Literal["012", "01"] = "012",
    ridge: float = 0.0,
    blend: float = 0.0,
    nearest_pd: bool = False,
    check_definite: bool = False,
    warn: bool = True,
) -> RelationshipSource:
    """Build the relationship matrix from exactly one kind of input (see the module docstring).

    A given matrix's positive semi-definiteness is checked where it is first used
    (:attr:`RelationshipMatrix.definite`; ``check_definite=True`` checks it now): every use
    factorises or eigendecomposes it anyway and settles the check from that — the sparse
    engine's factorisation of K, the spectral path's eigenvalues, the dense factor of the
    non-centred model — which saves a Cholesky factorisation (0.05 s for 2 000 animals).
    ``nearest_pd=True`` needs the eigenvalues at once and computes them.

    Raises
    ------
    RelationshipError
        None or several inputs given, or a blend without both genotypes and a pedigree.
    """
    given = [
        name
        for name, value in (("relmat", relmat), ("pedigree", pedigree), ("genotypes", genotypes))
        if value is not None
    ]
    blended = set(given) == {"pedigree", "genotypes"} and blend > 0
    if len(given) != 1 and not blended:
        raise RelationshipError(
            f"Give exactly one of relmat=, pedigree= or genotypes= (got {given or 'none'}); "
            "genotypes and a pedigree together need a blend weight (blend=0.05, --blend 0.05)."
        )
    if blend and not blended:
        raise RelationshipError("blend= needs both genotypes= and pedigree=.")
    if relmat is not None:
        matrix = as_relationship(relmat, nearest_pd=nearest_pd, check_definite=check_definite)
        return RelationshipSource(matrix, "matrix")
    from .additive import dense_relationship, mendelian_sampling
    from .genomic import genomic_relationship

    checked = sampling = None
    notices: list[str] = []
    if pedigree is not None:
        checked = (
            pedigree
            if isinstance(pedigree, Pedigree)
            else read_pedigree(
                pedigree,
                columns=pedigree_columns,
                allow_selfing=allow_selfing,
                add_missing_parents=add_missing_parents,
                warn=warn,
            )
        )
        notices += checked.notices
        sampling = mendelian_sampling(checked)
        if genotypes is None:
            return RelationshipSource(None, "pedigree", checked, sampling, None, tuple(notices))
        a_matrix = dense_relationship(checked)
    genomic = genomic_relationship(
        genotypes,
        coding=genotype_coding,
        ridge=ridge,
        blend_with=a_matrix if blended else None,
        blend_weight=blend if blended else 0.0,
        warn=warn,
    )
    notices += genomic.notices
    return RelationshipSource(
        genomic.relmat,
        "blended" if blended else "genomic",
        checked,
        sampling,
        genomic,
        tuple(notices),
    )
