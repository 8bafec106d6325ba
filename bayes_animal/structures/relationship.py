r"""Relationship matrices: the A (or G) of :math:`u \sim N(0, \sigma_u^2 A)`, with its ids.

A relationship matrix is used exactly as given. It is never rescaled, because
:math:`\sigma_u^2` only has a meaning on the scale of :math:`A` (a genomic
:math:`A = M^\top M / m` built from 0/1/2 codes has a mean diagonal near 1.7, not 1, and the
variance components then refer to that scale). The checks here reject what cannot be used —
a matrix that is not square, not symmetric, not finite, with duplicated ids, or with a
negative eigenvalue — and say how to fix it. Projecting an indefinite matrix to the nearest
positive-definite one happens only when asked for.

This module depends on numpy only (pandas when a DataFrame or a Parquet file is given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RelationshipError, describe_items
from ..readers import read_matrix_csv, read_matrix_parquet
from ..tables import is_pandas
from ..tables import pandas as pd

__all__ = [
    "RelationshipMatrix",
    "as_relationship",
    "id_strings",
    "index_positions",
    "nearest_positive_definite",
    "psd_factor",
    "psd_tolerance",
    "read_relationship_csv",
]

#: Relative tolerance for symmetry: |A - Aᵀ| ≤ tol · max|A|.
SYMMETRY_TOLERANCE = 1e-8
#: Eigenvalues within ±tol · size · max(max|diag|, 1) of zero count as zero: the one rule of
#: positive semi-definiteness (:func:`psd_tolerance`), used at input and wherever A is factored.
PSD_TOLERANCE = 1e-10


def psd_tolerance(size: int, diagonal: np.ndarray) -> float:
    """How negative an eigenvalue of a PSD matrix may be from round-off alone.

    The one rule of the package: ``PSD_TOLERANCE · size · max(max|diag|, 1)``. A matrix whose
    smallest eigenvalue is above minus this is accepted as positive semi-definite, and its
    eigenvalues between minus this and zero are treated as zeros wherever it is factored.
    """
    scale = max(float(np.max(np.abs(diagonal))) if len(diagonal) else 1.0, 1.0)
    return PSD_TOLERANCE * size * scale


def psd_factor(matrix: np.ndarray) -> np.ndarray:
    r"""A factor :math:`L` with :math:`L L^\top = A` for a positive semi-definite A.

    The Cholesky factor when A is positive definite; otherwise (a singular A, such as
    :math:`M^\top M / m` from fewer markers than animals) :math:`U \operatorname{diag}
    (\sqrt{\lambda})` from the eigendecomposition, with eigenvalues within
    :func:`psd_tolerance` of zero set to zero.

    Raises
    ------
    RelationshipError
        A has an eigenvalue below minus the tolerance (it is not PSD).
    """
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        pass
    values, vectors = np.linalg.eigh(matrix)
    tolerance = psd_tolerance(len(values), np.diag(matrix))
    if values[0] < -tolerance:
        raise RelationshipError(
            f"The relationship matrix is not positive semi-definite (smallest eigenvalue "
            f"{values[0]:.6g}); it cannot be factored. Use nearest_pd=True (--nearest-pd)."
        )
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def id_strings(values: Any) -> np.ndarray:
    """Turn ids (strings, integers, or integer-valued floats from a column with NaN) into strings.

    Ids are matched between the data, the relationship matrix and a pedigree by their string
    form, so that an integer id ``17`` in a data file matches the header ``"17"`` of a matrix
    file. Floats that hold whole numbers (pandas reads an integer column with missing values as
    float) are written without the trailing ``.0``.

    Parameters
    ----------
    values
        Any one-dimensional sequence of ids.

    Returns
    -------
    numpy.ndarray
        An object array of ``str``.
    """
    array = np.asarray(values)
    if array.dtype.kind == "U" or (
        array.dtype.kind == "O" and all(isinstance(v, str) for v in array.ravel())
    ):
        return array.astype(object)
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        return np.array(
            [str(int(v)) if ok else str(v) for v, ok in zip(array, whole, strict=True)],
            dtype=object,
        )
    return np.array([str(v) for v in array], dtype=object)


def index_positions(
    index: Mapping[str, int] | pd.Index, ids: Any, missing_error: Callable[[list[str]], Exception]
) -> np.ndarray:
    """Positions of ``ids`` (matched by their string form) in ``index``; the ids that are not
    there, each named once in order of appearance, go to ``missing_error`` and are raised.

    ``index`` is a dict id → position (no pandas needed) or a pandas Index (a vectorised
    lookup, for pedigree-sized tables)."""
    keys = id_strings(ids)
    if isinstance(index, Mapping):
        found = np.fromiter((index.get(k, -1) for k in keys), dtype=np.intp, count=len(keys))
    else:
        found = index.get_indexer(keys)
    missing = list(dict.fromkeys(keys[found < 0]))
    if missing:
        raise missing_error(missing)
    return found.astype(np.intp)


@dataclass(frozen=True)
class RelationshipMatrix:
    r"""A validated symmetric relationship matrix with one id per row.

    Parameters
    ----------
    ids
        The animals' ids (strings), in the order of the rows and columns.
    matrix
        The :math:`q \times q` matrix, symmetric and positive semi-definite.
    min_eigenvalue
        The smallest eigenvalue when it was computed during validation, else ``None``.
    projected
        True when the matrix is the nearest positive-definite projection of the input.
    definite
        False for a matrix read with ``check_definite=False``: its positive
        semi-definiteness is checked where it is first used — by :meth:`require_definite`
        (the sparse engine, the dense factor), or from the eigenvalues of the spectral path
        when they are A's own (:meth:`settle_definite`), which saves the Cholesky factorisation
        of the check (0.02 s for 1 000 animals).
    """

    ids: np.ndarray
    matrix: np.ndarray
    min_eigenvalue: float | None = None
    projected: bool = False
    definite: bool = True
    _index: dict = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def definite_unchecked(self) -> bool:
        """True while the positive semi-definiteness of a matrix read with
        ``check_definite=False`` has not been checked."""
        return not (self.definite or self._cache.get("definite", False))

    def require_definite(self) -> None:
        """Check positive semi-definiteness now if it was left for later (Cholesky, then the
        smallest eigenvalue when it fails; the error of :func:`as_relationship`)."""
        if self.definite_unchecked:
            self.settle_definite(_smallest_eigenvalue_if_needed(self.matrix))

    def settle_definite(self, smallest_eigenvalue: float | None) -> None:
        """Record the smallest eigenvalue of A computed elsewhere (None: a Cholesky factor
        exists); raise the error of :func:`as_relationship` when it is below minus the one PSD
        tolerance (:func:`psd_tolerance`)."""
        if smallest_eigenvalue is not None:
            _raise_if_not_definite(smallest_eigenvalue, self.size, np.diag(self.matrix))
        self._cache["definite"] = True

    def __post_init__(self) -> None:
        if self._index is None:
            object.__setattr__(self, "_index", {key: i for i, key in enumerate(self.ids)})

    @property
    def size(self) -> int:
        """Number of animals q."""
        return len(self.ids)

    def positions(self, ids: Any) -> np.ndarray:
        """Row positions of ``ids``; raises :class:`RelationshipError` naming unknown ones."""
        return index_positions(
            self._index,
            ids,
            lambda missing: RelationshipError(
                f"{len(missing)} animal id(s) are not in the relationship matrix: "
                f"{describe_items(missing)}. Add them to the matrix (or pedigree), or remove "
                "their records."
            ),
        )

    def to_frame(self) -> pd.DataFrame:
        """The matrix as a DataFrame labelled by id on both axes."""
        return pd.DataFrame(self.matrix, index=self.ids, columns=self.ids)

    def factor(self) -> np.ndarray:
        """:math:`L` with :math:`L L^\\top = A` (:func:`psd_factor`), computed once and kept."""
        cached = self._cache.get("factor")
        if cached is None:
            self.require_definite()
            cached = self._cache["factor"] = psd_factor(self.matrix)
        return cached

    @property
    def density(self) -> float:
        """Fraction of non-zero entries, counted once (2 ms for 2 000 animals) and kept: the
        chooser and the sparse inverse both read it."""
        if "density" not in self._cache:
            size = max(self.size, 1)
            self._cache["density"] = float(np.count_nonzero(self.matrix)) / float(size * size)
        return self._cache["density"]

    @property
    def mean_diagonal(self) -> float:
        """Mean of the diagonal: 1 + mean inbreeding for a pedigree A; ≈1.7 for MᵀM/m."""
        return float(np.mean(np.diag(self.matrix)))


def nearest_positive_definite(matrix: np.ndarray, *, floor: float = 1e-8) -> np.ndarray:
    r"""The nearest symmetric positive-definite matrix in the Frobenius norm (eigenvalue floor).

    With :math:`S = (M + M^\top)/2 = U \Lambda U^\top`, the nearest positive semi-definite
    matrix in the Frobenius norm is :math:`U \max(\Lambda, 0) U^\top` (Higham 1988). To make it
    strictly positive definite, eigenvalues are raised to at least
    ``floor · max(λ)``, as R's ``Matrix::nearPD`` does with its ``posd.tol``.

    Parameters
    ----------
    matrix
        A square matrix.
    floor
        Smallest eigenvalue kept, relative to the largest.

    Returns
    -------
    numpy.ndarray
        The projected symmetric matrix.
    """
    sym = (matrix + matrix.T) / 2.0
    values, vectors = np.linalg.eigh(sym)
    clipped = np.maximum(values, floor * max(values[-1], 0.0))
    projected = (vectors * clipped) @ vectors.T
    return (projected + projected.T) / 2.0


def _check_values(ids: np.ndarray, matrix: np.ndarray) -> bool:
    """Shape, id, finiteness and symmetry checks; raise :class:`RelationshipError` with the
    culprits. True when the matrix is exactly symmetric (the usual case: one comparison with
    its transpose); False when it is symmetric within :data:`SYMMETRY_TOLERANCE` only."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise RelationshipError(
            f"The relationship matrix must be square; got shape {matrix.shape}."
        )
    if len(ids) != matrix.shape[0]:
        raise RelationshipError(
            f"The relationship matrix has {matrix.shape[0]} rows but {len(ids)} ids were given."
        )
    seen: set = set()
    duplicated = list(dict.fromkeys(i for i in ids if i in seen or seen.add(i)))
    if duplicated:
        raise RelationshipError(
            f"Duplicate ids in the relationship matrix: {describe_items(duplicated)}. Each "
            "animal must have exactly one row and one column."
        )
    with np.errstate(over="ignore"):  # finite entries may overflow the sum: then look closer
        total = np.sum(matrix)
    if not np.isfinite(total):
        bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        if bad_rows.size:
            raise RelationshipError(
                "The relationship matrix has NaN or infinite entries in the rows of "
                f"{describe_items(ids[bad_rows])}. Fix or recompute those relationships."
            )
    if np.array_equal(matrix, matrix.T):
        return True
    scale = max(float(np.max(matrix)), -float(np.min(matrix))) or 1.0
    asymmetry = np.abs(matrix - matrix.T)
    worst = np.unravel_index(int(np.argmax(asymmetry)), asymmetry.shape)
    if asymmetry[worst] > SYMMETRY_TOLERANCE * scale:
        i, j = worst
        raise RelationshipError(
            "The relationship matrix is not symmetric: "
            f"A[{ids[i]!r}, {ids[j]!r}] = {matrix[i, j]:.10g} but "
            f"A[{ids[j]!r}, {ids[i]!r}] = {matrix[j, i]:.10g}. Check that rows and columns use "
            "the same id order."
        )
    return False


def _labelled(matrix: np.ndarray, rows: Any, columns: Any) -> tuple[np.ndarray, np.ndarray]:
    """The matrix with its columns in the order of its rows, matched by id, and the ids; an
    error names the ids found only among the rows or only among the columns."""
    row_ids, col_ids = id_strings(rows), id_strings(columns)
    if len(row_ids) == len(col_ids) and not np.array_equal(row_ids, col_ids):
        if set(row_ids) == set(col_ids) and len(set(row_ids)) == len(row_ids):
            where = {key: j for j, key in enumerate(col_ids)}
            matrix = matrix[:, [where[key] for key in row_ids]]
        else:
            only_rows = sorted(set(row_ids) - set(col_ids))
            only_cols = sorted(set(col_ids) - set(row_ids))
            raise RelationshipError(
                "The relationship matrix's row ids and column ids differ: "
                f"rows only {describe_items(only_rows)}; columns only "
                f"{describe_items(only_cols)}."
            )
    return matrix, row_ids


def _read_fast(
    labelled: tuple[np.ndarray, np.ndarray, np.ndarray], options: dict[str, bool]
) -> RelationshipMatrix:
    """A matrix read by :mod:`bayes_animal.readers` — row ids, column ids, values — checked as
    a DataFrame of the same file would be."""
    rows, columns, matrix = labelled
    matrix, ids = _labelled(matrix, rows, columns)
    return _validated(matrix, ids, **options, owned=True)


def _symmetric(matrix: np.ndarray, *, exact: bool, owned: bool) -> np.ndarray:
    """``(A + Aᵀ)/2`` in C order, a new array. An ``exact``-ly symmetric matrix is copied only
    when it is not ``owned`` (made by a reader of this package, so no one else holds it): in
    Fortran order its transpose is then the same matrix in C order, taken as it is."""
    if not exact:
        return np.ascontiguousarray((matrix + matrix.T) / 2.0)
    if owned:
        return matrix.T if matrix.flags.f_contiguous else np.ascontiguousarray(matrix)
    return np.array(matrix, order="C")


def _smallest_eigenvalue_if_needed(matrix: np.ndarray) -> float | None:
    """Return None when a Cholesky factorisation succeeds (PD), else the smallest eigenvalue."""
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return float(np.linalg.eigvalsh(matrix)[0])
    return None


def as_relationship(
    source: RelationshipMatrix | pd.DataFrame | np.ndarray | str | PathLike[str],
    *,
    ids: Any = None,
    nearest_pd: bool = False,
    check_definite: bool = True,
) -> RelationshipMatrix:
    """Build a validated :class:`RelationshipMatrix` from a matrix, a DataFrame or a CSV path.

    Parameters
    ----------
    source
        A :class:`RelationshipMatrix` (returned as is), a DataFrame whose index and columns are
        the ids (in the same order), a numpy array (then ``ids`` is required), or the path to a
        CSV file with the ids as header and as first column.
    ids
        The ids of the rows of a numpy array.
    nearest_pd
        Replace a matrix that is not positive semi-definite by its nearest positive-definite
        projection (:func:`nearest_positive_definite`). Off by default: the matrix is otherwise
        used exactly as given.
    check_definite
        Check positive semi-definiteness now (Cholesky, then the smallest eigenvalue when it
        fails). False leaves it to the first use (see :attr:`RelationshipMatrix.definite`),
        for callers whose next step computes the spectrum anyway.

    Returns
    -------
    RelationshipMatrix

    Raises
    ------
    RelationshipError
        Not square, ids missing or duplicated, non-finite entries, not symmetric, or a negative
        eigenvalue (reported, with the fix).
    """
    if isinstance(source, RelationshipMatrix):
        return source
    if isinstance(source, str | PathLike):
        return read_relationship_file(source, nearest_pd=nearest_pd, check_definite=check_definite)
    if is_pandas(source):
        matrix, ids = _labelled(source.to_numpy(dtype=float), source.index, source.columns)
    else:
        matrix = np.asarray(source, dtype=float)
        if ids is None:
            raise RelationshipError(
                "A relationship matrix given as an array needs its ids: pass ids=[...] or a "
                "DataFrame labelled by id."
            )
        ids = id_strings(ids)
    return _validated(
        matrix, ids, nearest_pd=nearest_pd, check_definite=check_definite, owned=False
    )


def _validated(
    matrix: np.ndarray, ids: np.ndarray, *, nearest_pd: bool, check_definite: bool, owned: bool
) -> RelationshipMatrix:
    """The checks of :func:`as_relationship` on a matrix and its id strings; ``owned`` as in
    :func:`_symmetric`."""
    matrix = _symmetric(matrix, exact=_check_values(ids, matrix), owned=owned)
    checked = check_definite or nearest_pd
    min_eig = _smallest_eigenvalue_if_needed(matrix) if checked else None
    if min_eig is not None:
        if nearest_pd:  # not positive definite: projected, as asked
            return RelationshipMatrix(
                ids=ids,
                matrix=nearest_positive_definite(matrix),
                min_eigenvalue=min_eig,
                projected=True,
            )
        _raise_if_not_definite(min_eig, len(ids), np.diag(matrix))
    return RelationshipMatrix(ids=ids, matrix=matrix, min_eigenvalue=min_eig, definite=checked)


def _raise_if_not_definite(min_eig: float, size: int, diagonal: np.ndarray) -> None:
    """The error for a matrix that is not positive semi-definite by the one rule
    (:func:`psd_tolerance`)."""
    if min_eig < -psd_tolerance(size, diagonal):
        raise RelationshipError(
            "The relationship matrix is not positive semi-definite: its smallest "
            f"eigenvalue is {min_eig:.6g}. Recompute it (a pedigree A is always "
            "positive definite), blend or add a small ridge to a genomic matrix, or "
            "ask for the nearest positive-definite matrix explicitly "
            "(nearest_pd=True, or --nearest-pd on the command line)."
        )


BINARY_FORMATS = (".npz", ".npy", ".parquet")
"""Binary relationship files read (and written by ``bayes-animal relmat --out``) besides CSV:
``.npz`` (arrays ``matrix`` and ``ids``), ``.npy`` (the matrix, its ids one per line in the
sidecar ``<name>.ids.txt``), ``.parquet`` (an ``id`` column, then one column per id)."""


def ids_sidecar(path: str | PathLike[str]) -> Path:
    """The ids file that goes with a ``.npy`` matrix: ``A.npy`` → ``A.ids.txt``."""
    path = Path(path)
    return path.with_name(path.stem + ".ids.txt")


def read_relationship_file(
    path: str | PathLike[str], *, nearest_pd: bool = False, check_definite: bool = True
) -> RelationshipMatrix:
    """Read a relationship matrix from CSV or one of :data:`BINARY_FORMATS` (by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in BINARY_FORMATS:
        return read_relationship_csv(path, nearest_pd=nearest_pd, check_definite=check_definite)
    if not path.is_file():
        raise RelationshipError(f"Relationship matrix file not found: {path}")
    options = {"nearest_pd": nearest_pd, "check_definite": check_definite}
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                missing = {"matrix", "ids"} - set(arrays.files)
                if missing:
                    raise RelationshipError(
                        f"{path} lacks the array(s) {sorted(missing)}: a relationship .npz "
                        "holds 'matrix' (n × n) and 'ids' (n), as `bayes-animal relmat --out "
                        "A.npz` writes it."
                    )
                matrix = np.asarray(arrays["matrix"], dtype=float)
                return _validated(matrix, id_strings(arrays["ids"]), **options, owned=True)
        if suffix == ".npy":
            sidecar = ids_sidecar(path)
            if not sidecar.is_file():
                raise RelationshipError(
                    f"A .npy matrix has no ids: put them, one per line, in {sidecar} (as "
                    "`bayes-animal relmat --out A.npy` writes them), or use .npz or CSV."
                )
            ids = np.array(sidecar.read_text().split(), dtype=object)
            matrix = np.asarray(np.load(path, allow_pickle=False), dtype=float)
            return _validated(matrix, id_strings(ids), **options, owned=True)
        labelled = read_matrix_parquet(path)
        if labelled is not None:
            return _read_fast(labelled, options)
        frame = pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise RelationshipError(f"Could not read the relationship matrix {path}: {exc}") from exc
    if "id" not in frame.columns:
        raise RelationshipError(
            f"The Parquet matrix {path} needs an 'id' column with the row ids, then one column "
            "per id (as `bayes-animal relmat --out A.parquet` writes it)."
        )
    return as_relationship(frame.set_index("id"), **options)


def read_relationship_csv(
    path: str | PathLike[str], *, nearest_pd: bool = False, check_definite: bool = True
) -> RelationshipMatrix:
    """Read a relationship matrix from CSV: ids as the header row and as the first column.

    Parameters
    ----------
    path
        The CSV file (the format ``bayes-animal simulate`` and R's ``write.csv(A)`` write).
    nearest_pd, check_definite
        As in :func:`as_relationship`.
    """
    labelled = read_matrix_csv(path)
    if labelled is not None:
        return _read_fast(labelled, {"nearest_pd": nearest_pd, "check_definite": check_definite})
    try:
        frame = pd.read_csv(path, index_col=0, engine="c")
    except FileNotFoundError as exc:
        raise RelationshipError(f"Relationship matrix file not found: {path}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RelationshipError(f"Could not read the relationship matrix {path}: {exc}") from exc
    non_numeric = [c for c, kind in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(kind)]
    if non_numeric:
        raise RelationshipError(
            f"The relationship matrix {path} has non-numeric entries in the columns of "
            f"{describe_items([str(c) for c in non_numeric])}. Expected ids as header and first "
            "column and numbers elsewhere."
        )
    return as_relationship(frame, nearest_pd=nearest_pd, check_definite=check_definite)
