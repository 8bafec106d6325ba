r"""From a model specification and a data frame to the arrays of :math:`y = Xb + \sum_k Z_k u_k
+ e`.

The fixed part is built with formulaic (``response ~ 1 + fix``, factors as ``C(sex)``; plain
numeric formulas directly, without importing formulaic). Each random effect becomes an
:class:`Effect`: for every record the position of its level, so that :math:`Z_k` is an index
(one 1 per row, or none for a record without that effect — a record whose dam is unknown has
no maternal effect). Genetic effects take their levels from the relationship (every animal of
the pedigree or matrix, with or without records); independent effects from the data.

What is checked, with the offending rows, columns, ids or term named in the error:

- unknown columns in the formula or missing grouping columns;
- records whose response is missing are dropped, and the count and rows are reported as a
  notice (never silently); missing or infinite covariates and infinite responses are errors;
  a missing level of a random effect is an error (a missing dam of a maternal effect is not:
  the record gets no maternal effect, and the count is reported);
- animals or dams that are not in the relationship matrix or pedigree;
- a random effect with a single level, or with exactly one record per level when it is
  independent (its variance cannot be told from the residual's);
- a design matrix that is rank deficient (the collinear columns are named) or has no
  residual degrees of freedom (n ≤ p).

Notices (not errors): animals with several records and no permanent-environment term (their
additive variance is then inflated; the notice says how to add one).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from .errors import ROWS as _ROWS
from .errors import DataError, FormulaError, describe_items
from .spec.formula import (
    FormulaParts,
    column_references,
    split_terms,
    strip_backticks,
    unknown_names,
)
from .spec.terms import ModelSpec, RandomTerm, specify
from .structures.pedigree import UNKNOWN_TOKENS, is_token
from .structures.relationship import id_strings
from .tables import Records, as_records
from .tables import pandas as pd

__all__ = [
    "Design",
    "DroppedRecordsWarning",
    "Effect",
    "RepeatedRecordsWarning",
    "UnknownDamWarning",
    "build_design",
    "repeated_records_notice",
]


class Relationship(Protocol):
    """Anything that lists the animals and maps ids to their positions (a relationship
    matrix, a covariance structure, a resolved relationship source)."""

    ids: np.ndarray

    def positions(self, ids: Any) -> np.ndarray: ...


class DroppedRecordsWarning(UserWarning):
    """Records were left out of the fit (missing response); the message says which."""


class RepeatedRecordsWarning(UserWarning):
    """Animals have several records and the model has no permanent-environment effect."""


class UnknownDamWarning(UserWarning):
    """Records with an unknown dam get no maternal genetic effect; the message counts them."""


@dataclass(frozen=True)
class Effect:
    """One random effect, built: the level of every record.

    Attributes
    ----------
    name
        Component key (``additive``, ``maternal``, ``pe``, a grouping column).
    column
        The data column of the levels.
    genetic
        Levels related through the relationship matrix (else independent).
    index
        For each record, the position of its level in :attr:`levels`; -1 when the record has
        no such effect (unknown dam).
    levels
        The level ids: every animal of the relationship for genetic effects, the observed
        levels (in order of appearance) for independent ones.
    trait
        With several traits, the trait this effect acts on (its name is ``<term>:<trait>``
        and records of other traits have index -1); None with one trait.
    term
        The random term's name (``additive`` for ``additive:bwt``).
    """

    name: str
    column: str
    genetic: bool
    index: np.ndarray
    levels: np.ndarray
    trait: str | None = None
    term: str = ""

    def __post_init__(self) -> None:
        if not self.term:
            object.__setattr__(self, "term", self.name)

    @property
    def size(self) -> int:
        """Number of levels q."""
        return len(self.levels)

    def counts(self) -> np.ndarray:
        """Records per level."""
        return np.bincount(self.index[self.index >= 0], minlength=self.size)

    def is_permutation(self) -> bool:
        """Every level has exactly one record and every record a level: :math:`Z` is a
        permutation matrix (the one place this is tested)."""
        return len(self.index) == self.size and bool(np.all(self.counts() == 1))

    def incidence(self):
        """:math:`Z` (n × q) as a scipy.sparse CSR matrix."""
        from scipy import sparse

        rows = np.flatnonzero(self.index >= 0)
        return sparse.csr_matrix(
            (np.ones(len(rows)), (rows, self.index[rows])), shape=(len(self.index), self.size)
        )


@dataclass(frozen=True)
class Design:
    """The model's arrays, ready for REML or sampling.

    Attributes
    ----------
    spec
        The model specification it was built from.
    response
        Name of the response.
    y
        Response vector, length n.
    X
        Fixed-effect design, n × p, columns named by ``fixed_names``.
    fixed_names
        formulaic's column names (``Intercept``, ``fix``, ``C(sex)[T.2]`` …).
    effects
        The random effects, in the order of ``spec.terms``.
    record_labels
        The data frame's index labels of the records used.
    dropped_labels
        Index labels of records left out because their response is missing.
    notices
        Human-readable notices; also issued as warnings.
    traits
        The traits; with several, ``y`` holds every observed (record, trait) pair, record by
        record (:attr:`observation_record`, :attr:`observation_trait`), ``X`` gives each trait
        its own columns (``<trait>:<column>``) and each effect acts on one trait.
    observation_record, observation_trait
        With several traits, each observation's record (into :attr:`record_labels`) and trait
        (into :attr:`traits`); None with one trait.
    trials
        A binomial response given as ``cbind(successes, failures)``: each record's trials
        (``y`` holds the successes); None otherwise (one trial per record).
    categories
        An ordinal response's categories, lowest first (``y`` holds each record's code
        0 … K − 1); None otherwise.
    """

    spec: ModelSpec
    response: str
    y: np.ndarray
    X: np.ndarray
    fixed_names: tuple[str, ...]
    effects: tuple[Effect, ...]
    record_labels: np.ndarray
    dropped_labels: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    notices: tuple[str, ...] = ()
    traits: tuple[str, ...] = ()
    observation_record: np.ndarray | None = None
    observation_trait: np.ndarray | None = None
    trials: np.ndarray | None = None
    categories: tuple | None = None

    @property
    def family(self):
        """The response's family (:class:`~bayes_animal.spec.family.Family`)."""
        return self.spec.family

    @property
    def multi_trait(self) -> bool:
        """Several traits."""
        return len(self.traits) > 1

    def residual_patterns(self) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """The patterns of observed traits: ``(traits, observations)`` with ``observations``
        (records × traits of the pattern) the positions in ``y`` of each record's
        observations; one pattern, all observations, with one trait."""
        if not self.multi_trait:
            return [((0,), np.arange(len(self.y))[:, None])]
        records, traits = self.observation_record, self.observation_trait
        t = len(self.traits)
        masks = np.zeros(len(self.record_labels), dtype=np.int64)
        np.bitwise_or.at(masks, records, 1 << traits.astype(np.int64))
        start = np.searchsorted(records, np.arange(len(self.record_labels)))
        out = []
        for mask in np.unique(masks):
            chosen = np.flatnonzero(masks == mask)
            present = tuple(a for a in range(t) if mask >> a & 1)
            positions = start[chosen][:, None] + np.arange(len(present))[None, :]
            out.append((present, positions))
        return out

    @property
    def formula(self) -> str:
        """The fixed part as used, ``response ~ terms``."""
        return self.spec.fixed_formula

    @property
    def n_records(self) -> int:
        """Number of records n used in the fit."""
        return len(self.y)

    @property
    def n_fixed(self) -> int:
        """Number of fixed-effect columns p."""
        return self.X.shape[1]

    def effect(self, name: str) -> Effect:
        """The random effect called ``name``."""
        for effect in self.effects:
            if effect.name == name:
                return effect
        raise KeyError(
            f"No random effect {name!r}; the model has {', '.join(e.name for e in self.effects)}."
        )


def repeated_records_notice(effect: Effect, animal: str) -> str | None:
    """The notice for repeated records without a permanent-environment effect, or None.

    With several records per animal and no permanent-environment effect, everything the
    records of one animal share beyond its breeding value (its permanent environment) is
    absorbed by the additive variance: on the gryphon lay dates V_A is 13.92 without it and
    4.88 with it.
    """
    counts = effect.counts()
    repeated = int(np.sum(counts > 1))
    if not repeated:
        return None
    return (
        f"{repeated} of {int(np.sum(counts > 0))} animals have more than one record (up to "
        f"{int(counts.max())}) and the model has no permanent-environment effect: what the "
        "records of one animal share beyond its breeding value is then counted as additive "
        "genetic variance, which is inflated (gryphon lay dates: V_A 13.9 without, 4.9 with a "
        f"permanent environment). Add one with ide({animal}) in the formula (ASReml's "
        f"spelling; (1 | ide({animal})) is the same), unless you mean not to."
    )


#: How messages name records: "data row 1" is the first record under the header, counted from
#: the first line of data (a DataFrame with an index of its own is named by its index labels
#: instead: "data row(s) index 'b'").
ROWS = _ROWS


class _IndexLabel:
    """A record named by its DataFrame index label in a message (``index 'b'``)."""

    def __init__(self, label: object) -> None:
        self.label = label

    def __str__(self) -> str:
        return f"index {self.label!r}"

    def __hash__(self) -> int:
        return hash(("index", self.label))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _IndexLabel) and other.label == self.label


def _shown_rows(records: Records, labels: np.ndarray) -> np.ndarray:
    """The records' names in messages: 1-based data rows where the labels are the positions
    0, 1, … (a file, a DataFrame with the default index), else the index labels, marked."""
    if np.array_equal(labels, np.arange(len(labels))):  # "0" (a string label) is not 0
        return (np.arange(len(labels)) + 1).astype(object)
    return np.array([_IndexLabel(label) for label in labels], dtype=object)


def _check_missing_covariates(kept: Records, columns: list[str], labels: np.ndarray) -> None:
    """Missing covariates (numeric or factor) are an error, never imputed or dropped."""
    if not columns:
        return
    missing = np.column_stack([kept.missing(name) for name in columns])
    if missing.any():
        rows, cols = np.nonzero(missing)
        names = sorted({columns[c] for c in cols})
        raise DataError(
            f"Covariates are missing: column(s) {describe_items(names)}"
            f" in {ROWS} {describe_items(list(dict.fromkeys(labels[rows])))}. Fill them in or "
            "remove those records; covariates are never imputed or dropped silently."
        )


def _evaluate(spec, data: Records, formula: str) -> pd.DataFrame:
    import formulaic
    from formulaic.errors import FormulaicError

    try:
        return formulaic.model_matrix(spec, data.frame(), na_action="ignore")
    except FormulaicError as exc:
        raise FormulaError(f"Could not build the design of {formula!r}: {exc}") from exc


def _parse_fixed(spec: ModelSpec):
    import formulaic
    from formulaic.errors import FormulaicError

    try:
        parsed = formulaic.Formula(spec.fixed_formula)
    except FormulaicError as exc:
        raise FormulaError(f"Could not parse the formula {spec.formula!r}: {exc}") from exc
    if not spec.parts.response:
        raise FormulaError(
            f"The formula {spec.formula!r} has no response: write it as "
            "'response ~ 1 + covariates'."
        )
    return parsed


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


_IDENTIFIER = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


def _plain_terms(parts: FormulaParts, data: Records) -> tuple[str, list[str]] | None:
    """``(response, columns)`` when the formula is ``y ~ [1 +] a + b …`` over numeric columns
    (names bare or in backticks).

    Such formulas are built directly, as formulaic builds them (an intercept, then the columns
    in order of first appearance), which avoids importing formulaic and scipy on the command
    line's common path; ``tests/test_design.py`` checks that both give the same matrix.
    Anything else (factors, transforms, interactions, removing the intercept) returns None and
    goes through formulaic.
    """
    response = strip_backticks(parts.response)
    if response not in data or data.kind(response) not in "iuf":
        return None
    columns: list[str] = []
    for term in split_terms(parts.fixed):
        if term == "1":
            continue
        name = strip_backticks(term)
        if name not in data or data.kind(name) not in "iuf" or name in columns:
            return None
        if name == term and not _IDENTIFIER.match(name):
            return None
        columns.append(name)
    return response, columns


def _response(spec: ModelSpec, data: Records, plain) -> tuple[str, np.ndarray]:
    if plain is not None:
        return plain[0], data.floats(plain[0])
    lhs = _evaluate(_parse_fixed(spec).lhs, data, spec.formula)
    if lhs.shape[1] != 1:
        raise FormulaError(f"The response of {spec.formula!r} must be a single numeric column.")
    return str(lhs.columns[0]), np.asarray(lhs.iloc[:, 0], dtype=float)


def _fixed_matrix(spec, kept, labels, plain) -> tuple[np.ndarray, tuple[str, ...]]:
    if plain is None:
        frame = _evaluate(_parse_fixed(spec).rhs, kept, spec.formula)
        X = np.asarray(frame, dtype=float)
        names = tuple(str(c) for c in frame.columns)
    else:
        names = ("Intercept", *plain[1])
        X = np.column_stack([np.ones(len(kept)), *(kept.floats(c) for c in plain[1])])
    bad = ~np.isfinite(X)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise DataError(
            f"Covariates are missing or infinite: column(s) "
            f"{describe_items(sorted({names[c] for c in cols}))} in {ROWS} "
            f"{describe_items(list(dict.fromkeys(labels[rows])))}. Fill them in or remove "
            "those records; covariates are never imputed silently."
        )
    n, p = X.shape
    if p == 0:
        raise FormulaError(
            f"The formula {spec.formula!r} has no fixed effects; include at least an intercept."
        )
    if n <= p:
        raise FormulaError(
            f"{n} records for {p} fixed-effect columns: REML needs more records than fixed "
            "effects (n > p). Simplify the fixed part of the formula or add records."
        )
    if np.linalg.matrix_rank(X) < p:
        raise FormulaError(
            f"The fixed-effect design of {spec.formula!r} is rank deficient: column(s) "
            f"{describe_items(_collinear_columns(X, names))} are linear combinations of the "
            "other columns. Remove them from the formula (or merge the confounded factor levels)."
        )
    return np.ascontiguousarray(X), names


def _unknown_parent(kept: Records, column: str) -> np.ndarray:
    strings = id_strings(np.asarray(kept.values(column), dtype=object))
    return kept.missing(column) | is_token(strings, UNKNOWN_TOKENS)


def _effect(
    term: RandomTerm,
    kept: Records,
    labels: np.ndarray,
    relationship: Relationship | None,
    notices: list[str],
) -> Effect:
    """Level positions of one random term; errors and notices name the term."""
    if term.column not in kept:
        raise DataError(
            f"The column {term.column!r} of the random effect {term.text!r} is not in the data. "
            f"Available columns: {describe_items(kept.names, limit=30)}."
        )
    index = np.full(len(kept), -1, dtype=np.intp)
    if term.name == "maternal":
        missing = _unknown_parent(kept, term.column)
        if missing.any():
            notices.append(
                f"{int(missing.sum())} of {len(kept)} records have an unknown dam in "
                f"{term.column!r} and get no maternal effect."
            )
    else:
        missing = kept.missing(term.column)
        if missing.any():
            raise DataError(
                f"The random effect {term.text!r} has no level in {ROWS} "
                f"{describe_items(labels[missing])} (column {term.column!r} is empty). Fill them "
                "in or remove those records."
            )
    known = ~missing
    strings = id_strings(kept.values(term.column)[known])
    if term.genetic:
        if relationship is None:
            raise DataError(
                f"The genetic effect {term.text!r} needs a relationship (pedigree, matrix or "
                "genotypes)."
            )
        levels = np.asarray(relationship.ids, dtype=object)
        index[known] = relationship.positions(strings)
    else:
        levels, index[known] = _levels_in_order(strings)
    effect = Effect(term.name, term.column, term.genetic, index, levels)
    counts = effect.counts()
    observed = int(np.sum(counts > 0))
    if observed < 2:
        raise DataError(
            f"The random effect {term.text!r} has a single level in the data "
            f"({describe_items(levels[counts > 0])}): its variance cannot be estimated. Remove "
            "the term."
        )
    if not term.genetic and np.all(counts[counts > 0] == 1) and known.all():
        raise DataError(
            f"Every level of the random effect {term.text!r} has exactly one record, so its "
            "variance cannot be separated from the residual variance. Remove the term (it needs "
            "repeated records per level)."
        )
    return effect


def _levels_in_order(strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct strings in order of first appearance, and each string's level."""
    levels: dict[str, int] = {}
    index = np.fromiter(
        (levels.setdefault(key, len(levels)) for key in strings), dtype=np.intp, count=len(strings)
    )
    return np.array(list(levels), dtype=object), index


def _effect_notices(effects, spec: ModelSpec, notices: list[str], warn: bool, *, stacklevel: int):
    """Add the repeated-records notice to ``notices`` and, with ``warn``, issue it and the
    unknown-dam notice as warnings (``stacklevel`` naming build_design's caller)."""
    genetic = [e for e in effects if e.name == "additive"]
    if genetic and not spec.has_permanent_environment:
        repeated = repeated_records_notice(genetic[0], spec.animal)
        if repeated:
            notices.append(repeated)
            if warn:
                warnings.warn(repeated, RepeatedRecordsWarning, stacklevel=stacklevel)
    if warn:
        for message in notices:
            if "unknown dam" in message:
                warnings.warn(message, UnknownDamWarning, stacklevel=stacklevel)


def build_design(
    formula: str | ModelSpec,
    data: pd.DataFrame | Records,
    *,
    relationship: Relationship | None = None,
    animal: str = "animal",
    maternal: str | None = None,
    maternal_covariance: bool = False,
    family: Any = None,
    link: str | None = None,
    overdispersion: bool | str | None = None,
    warn: bool = True,
) -> Design:
    """Validate the data against the model and build the arrays.

    Parameters
    ----------
    formula
        lme4-style formula (``response ~ 1 + covariates + (1 | group) + ide(animal)``) or a
        ready :class:`~bayes_animal.spec.terms.ModelSpec`.
    data
        One row per record (a DataFrame, or :class:`~bayes_animal.tables.Records` as the
        command line reads them); several records per animal are allowed.
    relationship
        The relationship of the animals (matrix, structure or resolved source): its ids are
        the levels of the genetic effects. None for a model of independent effects only.
    animal, maternal, maternal_covariance, family, link, overdispersion
        As in :func:`~bayes_animal.spec.terms.specify` (ignored when ``formula`` is a spec).
    warn
        Issue :class:`DroppedRecordsWarning` and :class:`RepeatedRecordsWarning` (the notices
        are kept in :attr:`Design.notices` either way).

    Returns
    -------
    Design

    Raises
    ------
    FormulaError
        Unknown column, unparsable formula, bad random term, collinear design, n ≤ p.
    DataError
        Missing grouping columns or levels, missing or infinite covariates, infinite
        responses, a random effect that cannot be estimated.
    RelationshipError, PedigreeError
        Animals or dams that are not in the relationship matrix (or pedigree).
    """
    records = as_records(data)
    if records is None:
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
    spec = (
        formula
        if isinstance(formula, ModelSpec)
        else specify(
            formula,
            animal=animal,
            genetic=relationship is not None,
            maternal=maternal,
            maternal_covariance=maternal_covariance,
            family=family,
            link=link,
            overdispersion=overdispersion,
        )
    )
    if spec.multi_trait:
        return _multi_trait_design(spec, records, relationship, warn)
    columns = records.names
    given = spec
    if spec.binomial_trials:  # cbind(successes, failures): the successes are the response
        spec = replace(spec, parts=replace(spec.parts, response=spec.traits[0]))
    plain = _plain_terms(spec.parts, records)
    if plain is None:
        unknown_names(spec.fixed_formula, columns, formula=spec.formula)
    if spec.terms and spec.terms[0].genetic and spec.animal not in records:
        raise DataError(
            f"The animal column {spec.animal!r} is not in the data. Available columns: "
            f"{describe_items(columns, limit=30)}. Pass animal=<column>."
        )
    response, y_all = _response(spec, records, plain)
    labels = np.asarray(records.labels, dtype=object)
    shown = _shown_rows(records, labels)  # what the messages call the rows
    trials_all = None
    if given.binomial_trials:
        failures = _failures(given, records)
        trials_all = y_all + failures
        response = given.response
    bad_y = np.isinf(y_all)
    if bad_y.any():
        raise DataError(
            f"The response {response!r} is infinite in {ROWS} {describe_items(shown[bad_y])}. "
            "Fix or remove those records."
        )
    missing_y = np.isnan(y_all) if trials_all is None else np.isnan(trials_all)
    notices: list[str] = []
    if missing_y.any():
        notices.append(
            f"{int(missing_y.sum())} of {len(y_all)} records have a missing response "
            f"{response!r} and were left out ({ROWS} {describe_items(shown[missing_y])})."
        )
        if warn:
            warnings.warn(notices[-1], DroppedRecordsWarning, stacklevel=2)
    keep = ~missing_y
    kept = records.take(keep)
    effects = tuple(_effect(t, kept, shown[keep], relationship, notices) for t in spec.terms)
    covariates = plain[1] if plain else column_references(spec.parts.fixed, columns)
    _check_missing_covariates(kept, covariates, shown[keep])
    X, names = _fixed_matrix(spec, kept, shown[keep], plain)
    _effect_notices(effects, spec, notices, warn, stacklevel=3)
    trials = None if trials_all is None else trials_all[keep]
    given.family.check_response(y_all[keep], trials, shown[keep], response)
    if given.family.name == "binomial":
        _check_separation(X, names, y_all[keep], trials, response)
    y, categories = y_all[keep], None
    if given.family.name == "ordinal":  # codes 0 … K − 1 (the check found no empty category)
        low = float(np.min(y))
        categories = tuple(int(v) for v in np.arange(low, np.max(y) + 1))
        y = y - low
    return Design(
        spec=given,
        response=response,
        y=y,
        X=X,
        fixed_names=names,
        effects=effects,
        record_labels=labels[keep],
        dropped_labels=labels[missing_y],
        notices=tuple(notices),
        trials=trials,
        categories=categories,
    )


def _check_separation(
    X: np.ndarray, names: tuple[str, ...], y: np.ndarray, trials: np.ndarray | None, response
) -> None:
    """A fixed-effect indicator column (a factor's level) whose records are all failures or
    all successes: its effect's estimate is infinite (complete separation)."""
    n = np.ones_like(y) if trials is None else trials
    for k, name in enumerate(names):
        column = X[:, k]
        if name == "Intercept" or not np.all((column == 0) | (column == 1)):
            continue
        chosen = column == 1
        if not chosen.any() or chosen.all():
            continue
        if np.all(y[chosen] == 0) or np.all(y[chosen] == n[chosen]):
            outcome = "a failure (0)" if np.all(y[chosen] == 0) else "a success"
            raise DataError(
                f"Every one of the {int(chosen.sum())} records of the fixed-effect column "
                f"{name!r} is {outcome} for {response!r}: its effect would be infinite on the "
                "liability scale (complete separation). Merge that level with another, drop "
                "those records, or fit the factor as a random effect, (1 | factor)."
            )


def _failures(spec: ModelSpec, records: Records) -> np.ndarray:
    """The failures column of ``cbind(successes, failures)``, checked to be numeric."""
    column = spec.traits[1]
    if column not in records:
        raise DataError(
            f"The failures column {column!r} of {spec.formula!r} is not in the data. Available "
            f"columns: {describe_items(records.names, limit=30)}. A binomial response is "
            "cbind(successes, failures): make a failures column (trials − successes)."
        )
    if records.kind(column) not in "iuf":
        raise DataError(
            f"The failures column {column!r} is not numeric (it holds text such as "
            f"{describe_items(records.values(column)[:3])})."
        )
    return records.floats(column)


def _trait_values(spec: ModelSpec, records: Records, shown: np.ndarray) -> np.ndarray:
    """The traits as an n × t matrix (NaN where missing); each trait column checked."""
    columns = []
    for trait in spec.traits:
        if trait not in records:
            raise DataError(
                f"The trait {trait!r} of {spec.formula!r} is not in the data. Available "
                f"columns: {describe_items(records.names, limit=30)}."
            )
        if records.kind(trait) not in "iuf":
            raise DataError(
                f"The trait {trait!r} is not numeric (it holds text such as "
                f"{describe_items(records.values(trait)[:3])}); a trait must be a number per "
                "record, missing where not measured."
            )
        values = records.floats(trait)
        if np.isinf(values).any():
            raise DataError(
                f"The trait {trait!r} is infinite in {ROWS} "
                f"{describe_items(shown[np.isinf(values)])}. Fix or remove those records."
            )
        observed = values[~np.isnan(values)]
        if len(observed) < 2 or np.ptp(observed) == 0:
            raise DataError(
                f"The trait {trait!r} is constant or has fewer than two records "
                f"({len(observed)} observed): it has no variance to split. Remove it from "
                "cbind()."
            )
        columns.append(values)
    return np.column_stack(columns)


def _multi_trait_design(
    spec: ModelSpec, records: Records, relationship: Relationship | None, warn: bool
) -> Design:
    """Several traits: every observed (record, trait) pair is an observation, record by record
    in the order of the traits; each trait has its own fixed effects (``<trait>:<column>``,
    MCMCglmm's ``trait:x``) and each random term one effect per trait
    (``<term>:<trait>``). A record is kept when any of its traits is observed."""
    from dataclasses import replace

    labels = np.asarray(records.labels, dtype=object)
    shown = _shown_rows(records, labels)
    Y = _trait_values(spec, records, shown)
    observed = ~np.isnan(Y)
    none = ~observed.any(axis=1)
    notices: list[str] = []
    if none.any():
        notices.append(
            f"{int(none.sum())} of {len(Y)} records have none of the traits "
            f"{describe_items(spec.traits)} and were left out ({ROWS} "
            f"{describe_items(shown[none])})."
        )
        if warn:
            warnings.warn(notices[-1], DroppedRecordsWarning, stacklevel=3)
    keep = ~none
    kept, Y, observed = records.take(keep), Y[keep], observed[keep]
    partly = {t: int((~observed[:, a]).sum()) for a, t in enumerate(spec.traits)}
    if any(partly.values()):
        notices.append(
            "Records with some traits missing are fitted with the traits they have ("
            + ", ".join(f"{t} missing in {k}" for t, k in partly.items() if k)
            + f" of {len(Y)} records)."
        )
    single = replace(
        spec,
        parts=FormulaParts(spec.formula, spec.traits[0], spec.parts.fixed, spec.parts.random),
    )
    plain = _plain_terms(single.parts, kept)
    if plain is None:
        unknown_names(single.fixed_formula, kept.names, formula=spec.formula)
    base = tuple(_effect(t, kept, shown[keep], relationship, notices) for t in spec.terms)
    covariates = plain[1] if plain else column_references(spec.parts.fixed, kept.names)
    _check_missing_covariates(kept, covariates, shown[keep])
    X_record, names = _fixed_matrix(single, kept, shown[keep], plain)
    t, p = len(spec.traits), X_record.shape[1]
    record, trait = np.nonzero(observed)  # row-major: record by record, traits in order
    for a, name in enumerate(spec.traits):
        rows = X_record[observed[:, a]]
        if len(rows) <= p or np.linalg.matrix_rank(rows) < p:
            raise FormulaError(
                f"The fixed effects of {spec.formula!r} cannot be estimated for the trait "
                f"{name!r} from its {len(rows)} records: column(s) "
                f"{describe_items(_collinear_columns(rows, names)) or 'all'} are confounded "
                "there. Simplify the fixed part or add records of that trait."
            )
    X = np.zeros((len(record), t * p))
    for a in range(t):
        at = trait == a
        X[at, a * p : (a + 1) * p] = X_record[record[at]]
    fixed_names = tuple(f"{trait_name}:{n}" for trait_name in spec.traits for n in names)
    effects = []
    for effect in base:
        for a, trait_name in enumerate(spec.traits):
            index = np.where(trait == a, effect.index[record], -1).astype(np.intp)
            effects.append(
                Effect(
                    f"{effect.name}:{trait_name}", effect.column, effect.genetic, index,
                    effect.levels, trait_name, effect.name,
                )
            )  # fmt: skip
    _effect_notices(base, spec, notices, warn, stacklevel=4)
    return Design(
        spec=spec,
        response=spec.response,
        y=Y[record, trait],
        X=np.ascontiguousarray(X),
        fixed_names=fixed_names,
        effects=tuple(effects),
        record_labels=np.asarray(kept.labels, dtype=object),
        dropped_labels=labels[none],
        notices=tuple(notices),
        traits=spec.traits,
        observation_record=record.astype(np.intp),
        observation_trait=trait.astype(np.intp),
    )
