r"""Genomic relationships: VanRaden's G (method 1), with an optional blend with A and a ridge.

With genotypes :math:`M` (n animals × m markers, counts 0/1/2 of one allele) and allele
frequencies :math:`p_j`,

.. math::

    G = \frac{(M - 2p)(M - 2p)^\top}{2 \sum_j p_j (1 - p_j)}

(VanRaden 2008). Frequencies come from the data unless given. Missing genotypes are imputed by
:math:`2p_j` (their count is reported), markers monomorphic in the data are
dropped with a notice, and markers coded 0/1 (presence/absence in inbred lines, as DArT markers)
are read as homozygous 0/2 with ``coding="01"``. Optionally :math:`(1-w)G + wA_{gg}` for
animals in both, and :math:`+\lambda I`. G must be positive definite to be used: when it is not
(centring makes G singular whenever m is large and n > m, or always by one rank when
frequencies come from the same animals), the error reports the smallest eigenvalue and
suggests a blend or a ridge. Nothing is rescaled silently.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from os import PathLike
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import DataError, RelationshipError, describe_items
from .relationship import RelationshipMatrix, id_strings

#: G counts as singular when its smallest eigenvalue is below this fraction of the largest.
DEFINITE_TOLERANCE = 1e-10

__all__ = ["GenomicNotice", "GenomicRelationship", "genomic_relationship", "read_genotypes"]


class GenomicNotice(UserWarning):
    """Markers were dropped or genotypes imputed while building G."""


@dataclass(frozen=True)
class GenomicRelationship:
    """G with how it was built.

    Attributes
    ----------
    relmat
        The (blended, ridged) genomic relationship matrix with the animals' ids.
    allele_frequencies
        Frequencies of the counted allele for the markers used, indexed by marker name.
    n_markers
        Markers used.
    dropped_markers
        Markers dropped as monomorphic.
    n_imputed
        Missing genotypes imputed by 2p (the column mean when p comes from the data).
    scale
        :math:`2 \\sum p(1-p)`.
    notices
        What was dropped or imputed.
    """

    relmat: RelationshipMatrix
    allele_frequencies: pd.Series
    n_markers: int
    dropped_markers: tuple[str, ...]
    n_imputed: int
    scale: float
    notices: tuple[str, ...]


def read_genotypes(
    source: pd.DataFrame | str | PathLike[str], *, id_column: str | None = None
) -> pd.DataFrame:
    """Genotypes as a float DataFrame indexed by animal id (first column unless ``id_column``)."""
    if isinstance(source, pd.DataFrame):
        frame = source
    else:
        try:
            frame = pd.read_csv(source)
        except FileNotFoundError as exc:
            raise DataError(f"Genotype file not found: {source}") from exc
    column = id_column if id_column is not None else frame.columns[0]
    if column not in frame.columns:
        raise DataError(f"Genotype id column {column!r} not found.")
    markers = frame.drop(columns=[column])
    non_numeric = [c for c in markers.columns if not pd.api.types.is_numeric_dtype(markers[c])]
    if non_numeric:
        raise DataError(
            f"Genotype column(s) {describe_items([str(c) for c in non_numeric])} are not numeric; "
            "expected allele counts 0/1/2 (NA for missing)."
        )
    ids = id_strings(frame[column].to_numpy(dtype=object))
    duplicated = pd.Index(ids)[pd.Index(ids).duplicated()].unique().tolist()
    if duplicated:
        raise DataError(f"Duplicated animal ids in the genotypes: {describe_items(duplicated)}.")
    out = markers.astype(float)
    out.index = pd.Index(ids, name="id")
    out.columns = [str(c) for c in out.columns]
    return out


def _codes(genotypes: pd.DataFrame, coding: str) -> np.ndarray:
    values = genotypes.to_numpy(dtype=float)
    allowed = {"012": (0.0, 1.0, 2.0), "01": (0.0, 1.0)}[coding]
    bad = ~np.isnan(values) & ~np.isin(values, allowed)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise DataError(
            f"Genotypes must be {'/'.join(str(int(a)) for a in allowed)} (coding={coding!r}) or "
            f"missing; marker(s) {describe_items(list(dict.fromkeys(genotypes.columns[cols])))} "
            f"of animal(s) {describe_items(list(dict.fromkeys(genotypes.index[rows])))} are not."
        )
    return values * 2.0 if coding == "01" else values


def _given_frequencies(given: pd.Series | np.ndarray, markers: pd.Index) -> np.ndarray:
    """User-supplied allele frequencies, aligned to the marker columns and checked."""
    if isinstance(given, pd.Series):
        absent = [c for c in markers if c not in given.index]
        if absent:
            raise DataError(f"No allele frequency for marker(s) {describe_items(absent)}.")
        freq = given.loc[list(markers)].to_numpy(dtype=float)
    else:
        freq = np.asarray(given, dtype=float)
        if freq.shape != (len(markers),):
            raise DataError(f"{freq.size} allele frequencies for {len(markers)} markers.")
    if np.any((freq < 0) | (freq > 1)):
        raise DataError("Allele frequencies must lie in [0, 1].")
    return freq


def genomic_relationship(
    genotypes: pd.DataFrame | str | PathLike[str],
    *,
    allele_frequencies: pd.Series | np.ndarray | None = None,
    coding: Literal["012", "01"] = "012",
    blend_with: RelationshipMatrix | None = None,
    blend_weight: float = 0.0,
    ridge: float = 0.0,
    check_definite: bool = True,
    warn: bool = True,
) -> GenomicRelationship:
    """VanRaden's G from marker genotypes.

    Parameters
    ----------
    genotypes
        A CSV path (ids in the first column) or a DataFrame indexed by animal id, as
        :func:`read_genotypes` returns; markers in columns, counts 0/1/2, NaN for missing.
    allele_frequencies
        Frequencies of the counted allele (by marker name, or in column order); estimated from
        the data when None.
    coding
        ``"012"`` allele counts, or ``"01"`` presence/absence in inbred lines (read as 0/2).
    blend_with, blend_weight
        A relationship matrix A holding every genotyped animal, and w in (1−w)G + wA.
    ridge
        λ added to the diagonal.
    check_definite
        Require the result to be positive definite (error with the smallest eigenvalue).
    warn
        Issue :class:`GenomicNotice` warnings (kept in ``notices`` either way).
    """
    frame = genotypes if isinstance(genotypes, pd.DataFrame) else read_genotypes(genotypes)
    codes = _codes(frame, coding)
    notices: list[str] = []
    missing = np.isnan(codes)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns, dropped below
        column_mean = np.nanmean(codes, axis=0)
    freq = (
        column_mean / 2.0
        if allele_frequencies is None
        else _given_frequencies(allele_frequencies, frame.columns)
    )
    column_min = np.nanmin(np.where(missing, np.inf, codes), axis=0)
    column_max = np.nanmax(np.where(missing, -np.inf, codes), axis=0)
    monomorphic = (column_min >= column_max) | np.all(missing, axis=0)
    monomorphic |= (freq <= 0) | (freq >= 1)
    dropped = tuple(frame.columns[monomorphic])
    if dropped:
        notices.append(f"{len(dropped)} monomorphic marker(s) dropped: {describe_items(dropped)}.")
    keep = ~monomorphic
    if not keep.any():
        raise DataError("No polymorphic markers: G cannot be computed.")
    codes, freq, missing = codes[:, keep], freq[keep], missing[:, keep]
    n_imputed = int(missing.sum())
    if n_imputed:
        notices.append(
            f"{n_imputed} missing genotype(s) imputed by 2p, the expected count "
            f"({n_imputed / missing.size:.2%} of the calls)."
        )
    # a missing call is imputed by its expectation 2p, so that it is exactly 0 after centring
    # (with frequencies from the data 2p is the column mean; with given frequencies it is not)
    centred = np.where(missing, 2.0 * freq, codes) - 2.0 * freq
    scale = float(2.0 * np.sum(freq * (1.0 - freq)))
    G = centred @ centred.T / scale
    ids = frame.index.to_numpy(dtype=object)
    if blend_weight:
        if not 0.0 < blend_weight < 1.0:
            raise RelationshipError("blend_weight must lie between 0 and 1.")
        if blend_with is None:
            raise RelationshipError("A blend needs the pedigree relationship matrix (blend_with).")
        G = (1.0 - blend_weight) * G + blend_weight * blend_with.matrix[
            np.ix_(blend_with.positions(ids), blend_with.positions(ids))
        ]
    if ridge:
        if ridge < 0:
            raise RelationshipError("ridge must be ≥ 0.")
        G = G + ridge * np.eye(len(G))
    G = (G + G.T) / 2.0
    if check_definite:
        values = np.linalg.eigvalsh(G)
        if values[0] <= DEFINITE_TOLERANCE * values[-1]:
            raise RelationshipError(
                f"G is not positive definite (smallest eigenvalue {values[0]:.4g}, largest "
                f"{values[-1]:.4g}; {len(G)} animals, {int(keep.sum())} markers). Blend it with "
                "the pedigree A (blend_weight=0.05, --blend 0.05 with --pedigree) or add a "
                "ridge (ridge=0.01, --ridge 0.01)."
            )
    if warn:
        for message in notices:
            warnings.warn(message, GenomicNotice, stacklevel=2)
    return GenomicRelationship(
        relmat=RelationshipMatrix(ids=ids, matrix=G),
        allele_frequencies=pd.Series(freq, index=frame.columns[keep], name="p"),
        n_markers=int(keep.sum()),
        dropped_markers=dropped,
        n_imputed=n_imputed,
        scale=scale,
        notices=tuple(notices),
    )
