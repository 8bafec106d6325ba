r"""From a formula and a data frame to the arrays of :math:`y = X b + Z u + e`.

The fixed part of the model is an lme4-style formula built with formulaic
(``response ~ 1 + fix``, factors as ``C(sex)``). The genetic effect is named by the
``animal`` column, whose ids index the relationship matrix; ``(1 | animal)`` may be written in
the formula as lme4 users do and is then read as that same term. :math:`Z` is kept as an index
vector (record :math:`i` belongs to animal ``animal_index[i]``): every row of :math:`Z` has a
single 1, so :math:`Z A Z^\top` is a fancy-indexed copy of :math:`A`.

What is checked, with the offending rows, columns or ids named in the error:

- unknown columns in the formula or a missing ``animal`` column;
- records whose response is missing are dropped, and the count and rows are reported as a
  notice (never silently); missing or infinite covariates and infinite responses are errors;
- animals in the data that are not in the relationship matrix;
- a design matrix that is rank deficient (the collinear columns are named) or has no
  residual degrees of freedom (n ≤ p).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .errors import DataError, FormulaError, describe_items
from .spec.formula import (
    FormulaParts,
    column_references,
    split_formula,
    split_terms,
    strip_backticks,
    unknown_names,
)
from .structures.relationship import id_strings

__all__ = [
    "Design",
    "DroppedRecordsWarning",
    "RepeatedRecordsWarning",
    "build_design",
    "parse_formula",
    "repeated_records_notice",
]


class IndexedAnimals(Protocol):
    """Anything that maps animal ids to rows: a relationship matrix or a pedigree."""

    def positions(self, ids: Any) -> np.ndarray: ...


class DroppedRecordsWarning(UserWarning):
    """Records were left out of the fit (missing response); the message says which."""


class RepeatedRecordsWarning(UserWarning):
    """Animals have several records and the model has no permanent-environment effect."""


def repeated_records_notice(animal_index: np.ndarray) -> str | None:
    """The notice for repeated records without a permanent-environment effect, or None.

    With several records per animal and no permanent-environment effect, everything the
    records of one animal share beyond its breeding value (its permanent environment) is
    absorbed by the additive variance: on the gryphon lay dates V_A is 13.92 without it and
    4.88 with it.
    """
    counts = np.bincount(animal_index)
    repeated = int(np.sum(counts > 1))
    if not repeated:
        return None
    return (
        f"{repeated} of {int(np.sum(counts > 0))} animals have more than one record (up to "
        f"{int(counts.max())}) and the model has no permanent-environment effect: what the "
        f"records of one animal share beyond its breeding value is then counted as additive "
        f"genetic variance, which is inflated (gryphon lay dates: V_A 13.9 without, 4.9 with a "
        f"permanent environment). Fit one unless you mean not to."
    )


@dataclass(frozen=True)
class Design:
    """The model's arrays, ready for REML or sampling.

    Attributes
    ----------
    formula
        The fixed-effect formula as used (a random term ``(1|animal)`` removed).
    response
        Name of the response.
    y
        Response vector, length n.
    X
        Fixed-effect design, n × p, columns named by ``fixed_names``.
    fixed_names
        formulaic's column names (``Intercept``, ``fix``, ``C(sex)[T.2]`` …).
    animal_index
        For each record, the row of its animal in the relationship matrix (Z as an index).
    record_labels
        The data frame's index labels of the records used.
    dropped_labels
        Index labels of records left out because their response is missing.
    notices
        Human-readable notices (dropped records); also issued as warnings.
    """

    formula: str
    response: str
    y: np.ndarray
    X: np.ndarray
    fixed_names: tuple[str, ...]
    animal_index: np.ndarray
    record_labels: np.ndarray
    dropped_labels: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    notices: tuple[str, ...] = ()

    @property
    def n_records(self) -> int:
        """Number of records n used in the fit."""
        return len(self.y)

    @property
    def n_fixed(self) -> int:
        """Number of fixed-effect columns p."""
        return self.X.shape[1]

    def incidence(self, n_animals: int):
        """The n × q incidence matrix Z as a scipy.sparse CSR matrix."""
        from scipy import sparse

        rows = np.arange(self.n_records)
        return sparse.csr_matrix(
            (np.ones(self.n_records), (rows, self.animal_index)),
            shape=(self.n_records, n_animals),
        )


def parse_formula(formula: str, *, animal: str):
    """Parse the fixed part of ``formula`` with formulaic (the random term ``(1 | animal)``
    removed).

    Returns
    -------
    formulaic.Formula
        A two-sided formula whose right-hand side is the fixed part.
    """
    import formulaic
    from formulaic.errors import FormulaicError

    parts = _fixed_parts(formula, animal)
    try:
        parsed = formulaic.Formula(parts.fixed_formula)
    except FormulaicError as exc:
        raise FormulaError(f"Could not parse the formula {formula!r}: {exc}") from exc
    if not parts.response:
        raise FormulaError(
            f"The formula {formula!r} has no response: write it as 'response ~ 1 + covariates'."
        )
    return parsed


def _check_missing_covariates(kept: pd.DataFrame, columns: list[str], labels: np.ndarray) -> None:
    """Missing covariates (numeric or factor) are an error, never imputed or dropped."""
    if not columns:
        return
    missing = kept[columns].isna().to_numpy()
    if missing.any():
        rows, cols = np.nonzero(missing)
        names = sorted({columns[c] for c in cols})
        raise DataError(
            f"Covariates are missing: column(s) {describe_items(names)}"
            f" in row(s) {describe_items(list(dict.fromkeys(labels[rows])))}. Fill them in or "
            "remove those records; covariates are never imputed or dropped silently."
        )


def _check_animal_column(data: pd.DataFrame, animal: str) -> None:
    if animal not in data.columns:
        raise DataError(
            f"The animal column {animal!r} is not in the data. Available columns: "
            f"{describe_items(list(map(str, data.columns)), limit=30)}. Pass animal=<column>."
        )


def _evaluate(spec, data: pd.DataFrame, formula: str) -> pd.DataFrame:
    import formulaic
    from formulaic.errors import FormulaicError

    try:
        return formulaic.model_matrix(spec, data, na_action="ignore")
    except FormulaicError as exc:
        raise FormulaError(f"Could not build the design of {formula!r}: {exc}") from exc


def _collinear_columns(X: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """Columns that are linear combinations of earlier ones (Gram–Schmidt on scaled columns)."""
    norms = np.linalg.norm(X, axis=0)
    scaled = X / np.where(norms > 0, norms, 1.0)
    dependent: list[str] = []
    basis = np.zeros((X.shape[0], 0))
    for j in range(X.shape[1]):
        column = scaled[:, j]
        residual = column - basis @ (basis.T @ column) if basis.shape[1] else column
        if norms[j] == 0 or np.linalg.norm(residual) < 1e-9:
            dependent.append(names[j])
        else:
            basis = np.column_stack([basis, residual / np.linalg.norm(residual)])
    return dependent


def _plain_terms(parts: FormulaParts, data: pd.DataFrame) -> tuple[str, list[str]] | None:
    """``(response, columns)`` when the formula is ``y ~ [1 +] a + b …`` over numeric columns
    (names bare or in backticks).

    Such formulas are built directly, as formulaic builds them (an intercept, then the columns
    in order of first appearance), which avoids importing formulaic and scipy on the command
    line's common path; ``tests/test_design.py`` checks that both give the same matrix.
    Anything else (factors, transforms, interactions, removing the intercept) returns None and
    goes through formulaic.
    """
    response = strip_backticks(parts.response)
    if response not in data.columns or data[response].dtype.kind not in "iuf":
        return None
    columns: list[str] = []
    for term in split_terms(parts.fixed):
        if term == "1":
            continue
        name = strip_backticks(term)
        if name not in data.columns or data[name].dtype.kind not in "iuf" or name in columns:
            return None
        if name == term and not _IDENTIFIER.match(name):
            return None
        columns.append(name)
    return response, columns


_IDENTIFIER = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


def _fixed_parts(formula: str, animal: str) -> FormulaParts:
    """The formula's pieces with the random term ``(1 | animal)`` removed; other random terms
    are rejected with a clear error."""
    parts = split_formula(formula)
    for term in parts.random:
        if split_terms(term[1:-1], "|")[0] != "1":
            raise FormulaError(
                f"Unsupported random-effect syntax {term!r} in {formula!r}: only random "
                "intercepts (1 | group) are supported."
            )
    others = [t for t in parts.random if strip_backticks(split_terms(t[1:-1], "|")[1]) != animal]
    if others:
        raise FormulaError(
            f"The formula {formula!r} has random terms {describe_items(others)}; only the "
            f"genetic effect (1 | {animal}) is supported. Remove the other random terms, or "
            f"name the animal column with animal=... if it is one of them."
        )
    return parts


def build_design(
    formula: str,
    data: pd.DataFrame,
    *,
    animal: str,
    relmat: IndexedAnimals,
    warn: bool = True,
) -> Design:
    """Validate the data against the formula and relationship matrix and build the arrays.

    Parameters
    ----------
    formula
        lme4-style fixed-effect formula, ``response ~ 1 + covariates``; ``(1 | animal)`` allowed.
    data
        One row per record; several records per animal are allowed.
    animal
        The column holding each record's animal id.
    relmat
        The relationship matrix (or pedigree) whose ids the animal column refers to.
    warn
        Issue a :class:`DroppedRecordsWarning` when records with a missing response are dropped
        and a :class:`RepeatedRecordsWarning` when animals have several records (the notices
        are kept in :attr:`Design.notices` either way).

    Returns
    -------
    Design

    Raises
    ------
    FormulaError
        Unknown column, unparsable formula, collinear design, n ≤ p.
    DataError
        Missing animal column or ids, missing or infinite covariates, infinite responses.
    RelationshipError, PedigreeError
        Animals in the data that are not in the relationship matrix (or pedigree).
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
    parts = _fixed_parts(formula, animal)
    columns = [str(c) for c in data.columns]
    plain = _plain_terms(parts, data)
    if plain is None:
        unknown_names(parts.fixed_formula, columns, formula=formula)
        parsed = parse_formula(formula, animal=animal)
    _check_animal_column(data, animal)
    if plain is None:
        lhs = _evaluate(parsed.lhs, data, formula)
        if lhs.shape[1] != 1:
            raise FormulaError(f"The response of {formula!r} must be a single numeric column.")
        response = str(lhs.columns[0])
        y_all = np.asarray(lhs.iloc[:, 0], dtype=float)
    else:
        response = plain[0]
        y_all = data[response].to_numpy(dtype=float)
    labels = np.asarray(data.index, dtype=object)

    bad_y = np.isinf(y_all)
    if bad_y.any():
        raise DataError(
            f"The response {response!r} is infinite in row(s) {describe_items(labels[bad_y])}. "
            "Fix or remove those records."
        )
    missing_y = np.isnan(y_all)
    notices: list[str] = []
    if missing_y.any():
        notices.append(
            f"{int(missing_y.sum())} of {len(y_all)} records have a missing response "
            f"{response!r} and were left out (rows {describe_items(labels[missing_y])})."
        )
        if warn:
            warnings.warn(notices[-1], DroppedRecordsWarning, stacklevel=2)
    keep = ~missing_y
    kept = data.loc[keep]

    ids_column = kept[animal]
    missing_ids = ids_column.isna().to_numpy()
    if missing_ids.any():
        raise DataError(
            f"The animal column {animal!r} is empty in row(s) "
            f"{describe_items(labels[keep][missing_ids])}. Every record needs an animal id."
        )
    animal_index = relmat.positions(id_strings(ids_column.to_numpy()))
    repeated = repeated_records_notice(animal_index)
    if repeated:
        notices.append(repeated)
        if warn:
            warnings.warn(repeated, RepeatedRecordsWarning, stacklevel=2)

    covariates = plain[1] if plain else column_references(parts.fixed, columns)
    _check_missing_covariates(kept, covariates, labels[keep])
    if plain is None:
        X_frame = _evaluate(parsed.rhs, kept, formula)
        X = np.asarray(X_frame, dtype=float)
        names = tuple(str(c) for c in X_frame.columns)
    else:
        names = ("Intercept", *plain[1])
        X = np.column_stack([np.ones(len(kept)), *(kept[c].to_numpy(float) for c in plain[1])])
    bad = ~np.isfinite(X)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise DataError(
            f"Covariates are missing or infinite: column(s) "
            f"{describe_items(sorted({names[c] for c in cols}))} in row(s) "
            f"{describe_items(list(dict.fromkeys(labels[keep][rows])))}. Fill them in or remove "
            "those records; covariates are never imputed silently."
        )
    n, p = X.shape
    if p == 0:
        raise FormulaError(
            f"The formula {formula!r} has no fixed effects; include at least an intercept."
        )
    if n <= p:
        raise FormulaError(
            f"{n} records for {p} fixed-effect columns: REML needs more records than fixed "
            "effects (n > p). Simplify the fixed part of the formula or add records."
        )
    if np.linalg.matrix_rank(X) < p:
        dependent = _collinear_columns(X, names)
        raise FormulaError(
            f"The fixed-effect design of {formula!r} is rank deficient: column(s) "
            f"{describe_items(dependent)} are linear combinations of the other columns. "
            "Remove them from the formula (or merge the confounded factor levels)."
        )
    return Design(
        formula=parts.fixed_formula,
        response=response,
        y=y_all[keep],
        X=np.ascontiguousarray(X),
        fixed_names=names,
        animal_index=animal_index,
        record_labels=labels[keep],
        dropped_labels=labels[missing_y],
        notices=tuple(notices),
    )
