r"""Many traits on one relationship matrix: :func:`reml_many` and :func:`fit_many`.

Every trait is the one-component model :math:`y_t = X b_t + Z u_t + e_t`,
:math:`u_t \sim N(0, \sigma_{u,t}^2 A)`, with one fixed right-hand side for all traits
(``"~ 1 + fix"``). Traits are grouped by their pattern of missing records; within a group the
records, X and :math:`K = Z A Z^\top` are the same, so

- one eigendecomposition :math:`K = U \operatorname{diag}(d) U^\top` serves the group
  (reported in :attr:`ManyResult.groups`), and the responses are rotated together,
  :math:`Y^* = U^\top Y` (one matrix product);
- the profile likelihood is scanned for all traits at once
  (:func:`~bayes_animal.estimation.spectral.profile_grid`: at each θ the GLS pieces are shared
  and the traits are columns), then each trait's maximum is refined by the same Newton steps,
  standard errors and BLUPs as a one-trait :func:`~bayes_animal.api.reml` — equal to it to
  rounding (tested to 1e-8).

Each group asks the one chooser (:func:`bayes_animal.choice.choose_many`): the eigendecomposition
above serves all its traits, unless the sparse mixed-model equations trait by trait cost less
(a few traits on a large sparse relationship, a pedigree too large for a dense A); the engine
and why are in :attr:`ManyResult.groups` (``groups.csv``).

A trait that cannot be fitted — not numeric, constant, too few records — gets its row with
the reason and the others go on; so do the traits of a group whose records give no design (a
covariate constant on them, a factor confounded with another: ``engine`` ``failed`` in
``groups``), while a formula wrong for every trait (an unknown column) stops the batch at once.
A variance estimated at 0 is a result, flagged in ``boundary``. Rows are written to
``traits.csv`` as traits finish (flushed), so an interrupted run loses nothing and
``resume=True`` skips the traits already there (read back with each column's type: numbers,
flags, and text kept as written, so a trait named ``NA`` stays ``NA``).

Execution (:mod:`bayes_animal.execution`): in this process, in local worker processes with
one BLAS thread each (the default when there is work for them), or on a Dask cluster
(``scheduler=``: an address or a ``dask.distributed.Client``; the decomposition is computed
once and scattered to the workers, the traits go out as tasks).
"""

from __future__ import annotations

import fnmatch
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .api import model_inputs
from .choice import Choice, choose_many
from .errors import BayesAnimalError, DataError, is_known_noise
from .execution import run_tasks
from .structures.inputs import RelationshipSource, resolve_relationship
from .structures.pedigree import Pedigree

__all__ = [
    "FIT_MANY_COLUMNS",
    "MANY_COLUMNS",
    "ManyResult",
    "TraitGroup",
    "fit_many",
    "group_traits",
    "reml_many",
    "select_traits",
]

MANY_COLUMNS = (
    "trait",
    "n_records",
    "sigma2:additive",
    "sigma2:residual",
    "h2",
    "sigma2:additive_se",
    "sigma2:residual_se",
    "h2_se",
    "loglik",
    "converged",
    "boundary",
    "status",
)
"""The columns of ``traits.csv`` written by :func:`reml_many`: the quantities' names of every
output (docs/outputs.md), a statistic other than the estimate after ``_``."""

_RENAMED = {
    "sigma2_u": "sigma2:additive",
    "sigma2_e": "sigma2:residual",
    "se_sigma2_u": "sigma2:additive_se",
    "se_sigma2_e": "sigma2:residual_se",
    "se_h2": "h2_se",
    "sigma2_u_mean": "sigma2:additive_mean",
    "sigma2_e_mean": "sigma2:residual_mean",
    "reml_h2": "h2_reml",
    "reml_in_hdi": "h2_reml_in_hdi",
}
"""Columns of a ``traits.csv`` written before one vocabulary, read back under their names."""

FIT_MANY_COLUMNS = (
    "trait",
    "n_records",
    "h2_mean",
    "h2_sd",
    "h2_hdi_low",
    "h2_hdi_high",
    "sigma2:additive_mean",
    "sigma2:residual_mean",
    "h2_reml",
    "h2_reml_in_hdi",
    "max_r_hat",
    "min_ess_bulk",
    "divergences",
    "seconds",
    "status",
    "notes",
)
"""The columns of ``traits.csv`` written by :func:`fit_many` (``notes``: the trait's warnings
about its data and fit, joined by `` | ``)."""


PARALLEL_REML_TRAITS = 5000
"""Traits in a group below which ``reml_many`` runs them here unless ``workers`` is given."""


@dataclass(frozen=True)
class TraitGroup:
    """Traits with the same records (the same missing-value pattern).

    Attributes
    ----------
    traits
        Column names, in the order asked for.
    rows
        Boolean mask over the data's rows: the records of these traits.
    """

    traits: tuple[str, ...]
    rows: np.ndarray

    @property
    def n_records(self) -> int:
        return int(self.rows.sum())


@dataclass
class ManyResult:
    """What :func:`reml_many` or :func:`fit_many` produced.

    Attributes
    ----------
    table
        One row per trait (:data:`MANY_COLUMNS` or :data:`FIT_MANY_COLUMNS`), in the order of
        the traits asked for, including those skipped on resume (read back from the file).
    groups
        Per missing-value pattern: its traits, records and the seconds of its decomposition.
    blups
        Animals × traits matrix of BLUPs (``blups=True``), else None.
    timings
        Seconds of each stage.
    """

    table: pd.DataFrame
    groups: pd.DataFrame
    blups: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)


# -- choosing the traits ----------------------------------------------------------------------


def select_traits(data: pd.DataFrame, traits: str | Sequence[str]) -> list[str]:
    """The trait columns named by a comma-separated list, globs (``"Biochem.*"``) or a list.

    Raises
    ------
    DataError
        A name that is no column, or a glob that matches none, named with the columns there.
    """
    if isinstance(traits, str):
        patterns = [p.strip() for p in traits.split(",") if p.strip()]
    else:
        patterns = [str(p) for p in traits]
    if not patterns:
        raise DataError("No traits given: name columns, e.g. --traits 'y1,y2' or 'trait*'.")
    columns = [str(c) for c in data.columns]
    chosen: list[str] = []
    missing: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            found = fnmatch.filter(columns, pattern)
        else:
            found = [pattern] if pattern in columns else []
        if not found:
            missing.append(pattern)
        chosen.extend(name for name in found if name not in chosen)
    if missing:
        shown = ", ".join(columns[:12]) + (" …" if len(columns) > 12 else "")
        raise DataError(
            f"No column matches {', '.join(repr(m) for m in missing)} in the data (columns: "
            f"{shown}). Check the spelling; globs like 'trait*' match column names."
        )
    return chosen


def _cannot_fit(column: pd.Series, n_fixed: int) -> str | None:
    """Why a trait column cannot be fitted, or None."""
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        example = column.dropna().astype(str).head(1).tolist()
        return (
            f"not numeric (dtype {column.dtype}"
            + (f", e.g. {example[0]!r}" if example else "")
            + "): convert it to numbers or leave it out"
        )
    values = column.dropna().to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        return "holds infinite values: replace them by numbers or missing values"
    if len(values) < n_fixed + 3:
        return f"too few records ({len(values)}; at least {n_fixed + 3} needed)"
    if np.ptp(values) == 0:
        return f"constant (every record is {values[0]:g}): nothing to partition"
    return None


def group_traits(data: pd.DataFrame, traits: Sequence[str]) -> list[TraitGroup]:
    """Group traits by their pattern of missing records (first appearance order)."""
    groups: dict[bytes, list[str]] = {}
    masks: dict[bytes, np.ndarray] = {}
    for trait in traits:
        mask = data[trait].notna().to_numpy()
        key = np.packbits(mask).tobytes()
        groups.setdefault(key, []).append(trait)
        masks[key] = mask
    return [TraitGroup(tuple(names), masks[key]) for key, names in groups.items()]


def _fixed_part(formula: str) -> str:
    text = formula.strip()
    if not text.startswith("~"):
        raise DataError(
            f"The formula of a many-traits fit has no left-hand side: '~ 1 + fix', not "
            f"{formula!r} (the traits come from traits=/--traits)."
        )
    rhs = text[1:].strip() or "1"
    from .spec.formula import split_formula

    random = split_formula(f"y ~ {rhs}").random
    if random:
        raise DataError(
            "Many-traits fits are the one-component animal model (the additive effect of the "
            f"animal column, the fixed part shared); '~ {rhs}' adds {', '.join(random)}. Fit "
            "such traits one by one with reml() or AnimalModel."
        )
    return rhs


def _quoted(name: str) -> str:
    return f"`{name}`"


# -- the output file --------------------------------------------------------------------------


class _Rows:
    """``traits.csv``: one row per trait, appended and flushed as traits finish."""

    def __init__(self, folder: Path | None, columns: Sequence[str], resume: bool) -> None:
        self.columns = list(columns)
        self.path = None if folder is None else Path(folder) / "traits.csv"
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.is_file() and self.path.stat().st_size > 0:
            for record in _read_rows(self.path, self.columns):
                self.rows[str(record["trait"])] = record
            with open(self.path, encoding="utf-8") as file:
                header = file.readline().rstrip("\r\n")
            if header != ",".join(self.columns):  # written under older names: write it anew
                frame = pd.DataFrame(list(self.rows.values()), columns=self.columns)
                frame.to_csv(self.path, index=False, float_format="%.10g")
            self._file = open(self.path, "a", encoding="utf-8")
        else:
            self._file = open(self.path, "w", encoding="utf-8")
            self._file.write(",".join(self.columns) + "\n")
            self._file.flush()

    def done(self) -> set[str]:
        return set(self.rows)

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["trait"]] = row
        if self.path is not None:
            frame = pd.DataFrame([row], columns=self.columns)
            self._file.write(frame.to_csv(header=False, index=False, float_format="%.10g"))
            self._file.flush()

    def close(self) -> None:
        if self.path is not None:
            self._file.close()

    def table(self, order: Sequence[str]) -> pd.DataFrame:
        rows = [self.rows[t] for t in order if t in self.rows]
        return pd.DataFrame(rows, columns=self.columns).reset_index(drop=True)


_TEXT_COLUMNS = frozenset({"trait", "boundary", "status", "notes"})
"""Columns of ``traits.csv`` read back as written: a trait named ``NA`` or ``null`` stays
that name, and an empty ``boundary`` (no component at 0) stays ``""``, not NaN."""

_FLAG_COLUMNS = frozenset({"converged", "h2_reml_in_hdi"})
"""Columns of ``traits.csv`` holding ``True``/``False`` (empty: not known, NaN)."""

_COUNT_COLUMNS = frozenset({"n_records", "divergences"})
"""Columns of ``traits.csv`` holding whole numbers (empty: not known, NaN)."""


def _read_rows(path: Path, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of a ``traits.csv`` written by an earlier run, with the types of a fresh row.

    Every cell is read as the text written (``keep_default_na=False``: pandas' default would
    turn a trait named ``NA`` or ``null`` into NaN), then each column is given its type:
    text columns (:data:`_TEXT_COLUMNS`) stay text, flags become booleans, counts whole
    numbers and the rest floats, an empty cell NaN — so a resumed table equals the table of
    the run that wrote it, dtypes included.

    Parameters
    ----------
    path
        The ``traits.csv`` file.
    columns
        The columns the run writes (:data:`MANY_COLUMNS` or :data:`FIT_MANY_COLUMNS`).

    Returns
    -------
    list of dict
        One row per line of the file, column name to value.

    Raises
    ------
    DataError
        The file has other columns (another kind of run wrote it), or a cell of a numeric or
        flag column is not a number or ``True``/``False`` (its trait and column named).
    """
    done = pd.read_csv(path, dtype=str, keep_default_na=False)
    done = done.rename(columns=_RENAMED)
    if "notes" in columns and "notes" not in done.columns:  # written before notes were kept
        done["notes"] = ""
    if list(done.columns) != list(columns):
        raise DataError(
            f"{path} was written by another kind of run (columns "
            f"{list(done.columns)}); use another --out folder or remove it."
        )
    typed: dict[str, list[Any]] = {}
    for name in columns:
        cells = done[name].tolist()
        if name in _TEXT_COLUMNS:
            typed[name] = cells
            continue
        values: list[Any] = []
        for trait, cell in zip(done["trait"], cells, strict=True):
            try:
                values.append(_cell_value(name, cell))
            except ValueError:
                expected = "True or False" if name in _FLAG_COLUMNS else "a number"
                raise DataError(
                    f"{path}: the row of trait {trait!r} holds {cell!r} in column {name!r}, "
                    f"not {expected} (was the file edited?). Correct or remove that row, or "
                    "start again without --resume."
                ) from None
        typed[name] = values
    return [dict(zip(columns, row, strict=True)) for row in zip(*typed.values(), strict=True)]


def _cell_value(name: str, cell: str) -> Any:
    """One cell of ``traits.csv`` as the type of its column (NaN where empty)."""
    text = cell.strip()
    if text == "":
        return np.nan
    if name in _FLAG_COLUMNS:
        flags = {"true": True, "false": False}
        if text.lower() not in flags:
            raise ValueError(text)
        return flags[text.lower()]
    value = float(text)
    if name in _COUNT_COLUMNS and np.isfinite(value) and value == int(value):
        return int(value)
    return value


def _failed(trait: str, n_records: int, reason: str, columns: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(columns, np.nan)
    row |= {"trait": trait, "n_records": n_records, "status": reason}
    if "converged" in row:
        row["converged"] = False
    for text in ("boundary", "notes"):
        if text in row:
            row[text] = ""
    return row


class _Progress:
    """A progress bar over traits on stderr (silent when ``show`` is False)."""

    def __init__(self, total: int, show: bool, label: str) -> None:
        self.total, self.show, self.label, self.count = total, show and total > 0, label, 0
        self.start = time.perf_counter()
        self._draw()

    def step(self, n: int = 1) -> None:
        self.count += n
        self._draw()

    def _draw(self) -> None:
        if not self.show:
            return
        now = time.perf_counter()
        if self.count < self.total and now - getattr(self, "_last", -1.0) < 0.2:
            return  # at most five redraws a second
        self._last = now
        width = 30
        filled = int(width * self.count / self.total)
        elapsed = time.perf_counter() - self.start
        print(
            f"\r{self.label} [{'#' * filled}{' ' * (width - filled)}] "
            f"{self.count}/{self.total} traits, {elapsed:.1f} s",
            end="\n" if self.count >= self.total else "",
            file=sys.stderr,
            flush=True,
        )


# -- REML for many traits ---------------------------------------------------------------------


@dataclass(frozen=True)
class _GroupWork:
    """What a worker needs to fit the traits of one group (pickled once per worker)."""

    design: Any
    relmat: Any
    problem: Any
    traits: tuple[str, ...]
    y: np.ndarray  # n × T
    y_rot: np.ndarray | None  # n × T (the spectral engine)
    method: str
    engine: str = "spectral"
    inputs: Any = None  # the sparse engine's validated inputs (y replaced per trait)


class _GroupFailed(Exception):
    """The records of one missing-value group cannot be fitted (their design fails): its
    traits get rows with the reason and the batch goes on."""


def _check_formula(formula: str, rhs: str, data: pd.DataFrame, trait: str, animal: str) -> None:
    """What is wrong with the formula for every trait stops the batch before any group.

    A group's design can fail on its own records (a covariate constant on them, a factor
    confounded with another); that gives its traits a row with the reason. A formula that
    cannot be read, a column that is not in the data or a missing animal column would fail
    every group alike, so they are reported once, here.

    Raises
    ------
    FormulaError
        The formula cannot be read or names a column that is not in the data.
    DataError
        The animal column is not in the data.
    """
    from .errors import describe_items
    from .spec.formula import unknown_names
    from .spec.terms import specify

    spec = specify(f"{_quoted(trait)} ~ {rhs}", animal=animal)
    columns = [str(c) for c in data.columns]
    unknown_names(spec.fixed_formula, columns, formula=formula)
    if animal not in columns:
        raise DataError(
            f"The animal column {animal!r} is not in the data. Available columns: "
            f"{describe_items(columns, limit=30)}. Pass animal=<column> (--animal)."
        )


def _prepare_group(
    rhs: str,
    data: pd.DataFrame,
    group: TraitGroup,
    source: RelationshipSource,
    animal: str,
    method: str,
) -> tuple[_GroupWork, float, Choice]:
    """The work of one group and the seconds of its eigendecomposition (0 on the sparse
    engine), as the chooser (:func:`~bayes_animal.choice.choose_many`) picked.

    Raises
    ------
    _GroupFailed
        The design of the group's records fails (a :class:`~bayes_animal.errors.BayesAnimalError`
        from :func:`~bayes_animal.api.model_inputs`, or an eigendecomposition that does not
        converge): the message says why.
    DataError
        The formula adds random effects (every group alike: the batch stops).
    """
    from .errors import BayesAnimalError
    from .estimation.spectral import check_method
    from .linalg.spectral import decompose

    subset = data.loc[group.rows]
    try:
        inputs = model_inputs(
            f"{_quoted(group.traits[0])} ~ {rhs}", subset, source=source, animal=animal,
            warn=False,
        )  # fmt: skip
    except BayesAnimalError as exc:
        raise _GroupFailed(str(exc)) from exc
    design = inputs.design
    if len(design.effects) != 1:
        raise DataError(
            "reml_many fits the one-component animal model (one genetic effect, the fixed "
            f"part shared); the formula '~ {rhs}' adds "
            f"{', '.join(e.name for e in design.effects[1:])}. Fit such traits one by one "
            "with reml()."
        )
    y = subset[list(group.traits)].to_numpy(dtype=float)
    choice = choose_many(inputs, len(group.traits), method)
    if choice.engine == "sparse":
        work = _GroupWork(
            design, None, None, group.traits, y, None, check_method(method), "sparse", inputs
        )
        return work, 0.0, choice
    try:
        relmat = inputs.dense_matrix()
        problem = decompose(design, relmat)
    except (BayesAnimalError, np.linalg.LinAlgError) as exc:
        raise _GroupFailed(str(exc)) from exc
    y_rot = problem.eigenvectors.T @ y
    work = _GroupWork(design, relmat, problem, group.traits, y, y_rot, check_method(method))
    return work, problem.seconds, choice


def _group_reason(number: int, group: TraitGroup, message: str) -> str:
    """The ``status`` of a trait whose group's design failed: which group, and why."""
    return (
        f"failed: the {group.n_records} records of its missing-value pattern (group {number}, "
        f"{len(group.traits)} trait(s)) give no design — {message}"
    )


def _sparse_rows(work: _GroupWork, columns: Sequence[int], blups: bool) -> list[tuple]:
    """REML of the traits ``columns`` of a group one by one on the sparse equations (the
    chooser's pick where one eigendecomposition costs more than all of them)."""
    from dataclasses import replace

    from .api import fit_inputs

    out = []
    for column in columns:
        trait = work.traits[column]
        design = replace(work.design, y=work.y[:, column])
        fit = fit_inputs(replace(work.inputs, design=design), engine="sparse", pev=False)
        se = fit.se
        row = {
            "trait": trait,
            "n_records": design.n_records,
            "sigma2:additive": fit.sigma2_u,
            "sigma2:residual": fit.sigma2_e,
            "h2": fit.h2,
            "sigma2:additive_se": se["sigma2_u"],
            "sigma2:residual_se": se["sigma2_e"],
            "h2_se": se["h2"],
            "loglik": fit.loglik,
            "converged": fit.converged,
            "boundary": ";".join(fit.boundary),
            "status": "ok" if fit.converged else f"not converged: {fit.convergence.reason}",
        }
        blup = None
        if blups:
            blup = pd.Series(fit.blup["blup"].to_numpy(), index=fit.blup.index, name=trait)
        out.append((row, blup))
    return out


def _reml_rows(work: _GroupWork, columns: Sequence[int], blups: bool) -> list[tuple]:
    """REML of the traits ``columns`` of a group, all at once (traits as columns)."""
    from .estimation.result import sampling_covariance
    from .estimation.spectral_many import average_information_many, maximise_many
    from .linalg.threads import blas_threads
    from .spec.parameters import Parameters, proportion_name

    design, problem = work.design, work.problem
    name = design.effects[0].name
    parameters = Parameters.from_spec(design.spec)
    with blas_threads(1):
        y_rot = work.y_rot[:, columns]
        maxima = maximise_many(problem, y_rot, work.method)
        thetas = np.array([m.profile.theta for m in maxima])
        scales = np.array([m.profile.scale for m in maxima])
        variances, residuals = thetas * scales, (1.0 - thetas) * scales
        information, py = average_information_many(
            problem, y_rot, variances, residuals, work.method
        )
        values = None
        if blups:
            relmat = work.relmat
            levels = design.effects[0].incidence().T @ (problem.eigenvectors @ py)
            values = (relmat.matrix @ levels) * variances[None, :]
    out = []
    for j, (column, maximum) in enumerate(zip(columns, maxima, strict=True)):
        trait = work.traits[column]
        boundary = {"effect": (name,), "residual": ("residual",), None: ()}[maximum.boundary]
        theta, covariance, ratios = sampling_covariance(
            parameters, np.array([variances[j], residuals[j]]), information[j], boundary
        )
        se = np.sqrt(np.where(np.diag(covariance) >= 0, np.diag(covariance), np.nan))
        converged = bool(maximum.convergence.converged)
        row = {
            "trait": trait,
            "n_records": design.n_records,
            "sigma2:additive": theta[0],
            "sigma2:residual": theta[1],
            "h2": ratios[proportion_name(name)][0],
            "sigma2:additive_se": se[0],
            "sigma2:residual_se": se[1],
            "h2_se": np.nan if name in boundary else ratios[proportion_name(name)][1],
            "loglik": maximum.profile.value,
            "converged": converged,
            "boundary": ";".join(boundary),
            "status": "ok" if converged else f"not converged: {maximum.convergence.reason}",
        }
        blup = None
        if values is not None:
            blup = pd.Series(values[:, j], index=work.relmat.ids, name=trait)
        out.append((row, blup))
    return out


def _resolve_source(relmat, pedigree, genotypes, source) -> RelationshipSource:
    """The relationship, checked before any trait is fitted: a matrix that is not positive
    semi-definite stops the batch, not one trait after another."""
    if source is not None:
        if source.matrix is not None:
            source.matrix.require_definite()
        return source
    if all(v is None for v in (relmat, pedigree, genotypes)):
        raise DataError(
            "Many-traits fits need the relationship: give relmat=, pedigree= or genotypes= "
            "(--relmat, --pedigree, --genotypes)."
        )
    source = resolve_relationship(relmat=relmat, pedigree=pedigree, genotypes=genotypes)
    if source.matrix is not None:
        source.matrix.require_definite()
    return source


def _screen(
    data: pd.DataFrame, traits: Sequence[str], rhs: str, animal: str, columns: Sequence[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Split the traits into those that can be fitted and the rows of those that cannot."""
    from .spec.formula import column_references

    n_fixed = max(1, len(column_references(rhs, data.columns)) + 1)
    fittable, failed = [], []
    for trait in traits:
        if trait == animal:
            failed.append(_failed(trait, 0, "the animal id column is not a trait", columns))
            continue
        reason = _cannot_fit(data[trait], n_fixed)
        if reason is None:
            fittable.append(trait)
        else:
            failed.append(_failed(trait, int(data[trait].notna().sum()), reason, columns))
    return fittable, failed


def reml_many(
    formula: str,
    data: pd.DataFrame,
    traits: str | Sequence[str],
    *,
    relmat: Any = None,
    pedigree: Pedigree | pd.DataFrame | str | PathLike[str] | None = None,
    genotypes: pd.DataFrame | str | PathLike[str] | None = None,
    source: RelationshipSource | None = None,
    animal: str = "animal",
    method: str = "reml",
    blups: bool = False,
    out: str | PathLike[str] | None = None,
    resume: bool = False,
    workers: int | None = None,
    scheduler: Any = None,
    chunk: int = 50,
    progress: bool = True,
) -> ManyResult:
    """REML of the one-component animal model for many traits (see the module docstring).

    Parameters
    ----------
    formula
        The fixed right-hand side shared by all traits, without a response: ``"~ 1 + fix"``.
    data
        Records: the animal column, the covariates and the trait columns.
    traits
        Comma-separated names or globs on column names (``"trait*"``, ``"Biochem.*"``), or a
        list of names.
    relmat, pedigree, genotypes, source
        The relationship, as for :func:`~bayes_animal.api.reml` (dense: the spectral path).
    animal
        The animal id column.
    method
        ``"reml"`` or ``"ml"``.
    blups
        Also return (and write, ``blups.csv``) the animals × traits matrix of BLUPs.
    out
        Folder for ``traits.csv`` (rows flushed as traits finish), ``groups.csv`` and
        ``blups.csv``; None keeps everything in memory.
    resume
        Skip the traits already in ``out/traits.csv``.
    workers
        Local worker processes (default: one per core for groups of more than
        :data:`PARALLEL_REML_TRAITS` traits, else this process); 1 runs everything here.
    scheduler
        A ``dask.distributed.Client`` or a scheduler address: run the traits on that
        cluster (needs ``bayes_animal[dask]``).
    chunk
        Traits per task.
    progress
        A progress bar over traits on stderr.

    Returns
    -------
    ManyResult
    """
    clock = time.perf_counter()
    rhs = _fixed_part(formula)
    names = select_traits(data, traits)
    rows = _Rows(None if out is None else Path(out), MANY_COLUMNS, resume)
    timings: dict[str, float] = {}
    try:
        todo = [t for t in names if t not in rows.done()]
        fittable, failed = _screen(data, todo, rhs, animal, MANY_COLUMNS)
        for row in failed:
            rows.add(row)
        clock_relationship = time.perf_counter()
        source = _resolve_source(relmat, pedigree, genotypes, source)
        timings["relationship"] = time.perf_counter() - clock_relationship
        groups = group_traits(data, fittable)
        bar = _Progress(len(todo), progress, "REML")
        bar.step(len(failed))
        blup_columns: list[pd.Series] = []
        group_rows = []
        decompose_seconds = 0.0
        if fittable:
            _check_formula(formula, rhs, data, fittable[0], animal)
        for number, group in enumerate(groups):
            try:
                work, seconds, choice = _prepare_group(rhs, data, group, source, animal, method)
            except _GroupFailed as exc:
                # this group's records cannot be fitted: its traits get rows with the
                # reason, the other groups go on
                reason = _group_reason(number, group, str(exc))
                for trait in group.traits:
                    rows.add(_failed(trait, group.n_records, reason, MANY_COLUMNS))
                    bar.step()
                group_rows.append(
                    {"group": number, "traits": len(group.traits), "records": group.n_records,
                     "eigh_seconds": 0.0, "engine": "failed", "why": str(exc)}
                )  # fmt: skip
                continue
            decompose_seconds += seconds
            group_rows.append(
                {"group": number, "traits": len(group.traits), "records": group.n_records,
                 "eigh_seconds": seconds, "engine": choice.engine, "why": choice.reason}
            )  # fmt: skip
            indices = list(range(len(group.traits)))
            tasks = [indices[i : i + chunk] for i in range(0, len(indices), chunk)]

            def collect(results, bar=bar):
                for row, blup in results:
                    rows.add(row)
                    if blup is not None:
                        blup_columns.append(blup)
                    bar.step()

            # worker processes pay a start and a copy of the decomposition each: measured on
            # 1 000 traits (N = 1 000) they were slower than this process (3.5 s against 2.6 s),
            # so by default they start only for larger groups (workers= forces them)
            threshold = chunk if workers is not None else max(chunk, PARALLEL_REML_TRAITS)
            run_tasks(
                _reml_rows if work.engine == "spectral" else _sparse_rows, work, tasks, collect,
                extra=(blups,), workers=workers, scheduler=scheduler, parallel_above=threshold,
            )  # fmt: skip
        timings["eigh"] = decompose_seconds
    finally:
        rows.close()
    table = rows.table(names)
    groups_frame = pd.DataFrame(
        group_rows, columns=["group", "traits", "records", "eigh_seconds", "engine", "why"]
    )
    matrix = None
    if blups and blup_columns:
        matrix = pd.concat(blup_columns, axis=1)
        matrix = matrix[[t for t in names if t in matrix.columns]]
        matrix.index.name = "id"
    if out is not None:
        groups_frame.to_csv(Path(out) / "groups.csv", index=False)
        if matrix is not None:
            matrix.to_csv(Path(out) / "blups.csv", float_format="%.10g")
    timings["total"] = time.perf_counter() - clock
    return ManyResult(table, groups_frame, matrix, timings)


# -- Bayesian fits of many traits -------------------------------------------------------------


@dataclass(frozen=True)
class _FitWork:
    rhs: str
    data: pd.DataFrame
    source: RelationshipSource
    animal: str
    traits: tuple[str, ...]
    priors: Any
    options: dict[str, Any]
    posteriors: str | None


def _fit_rows(work: _FitWork, columns: Sequence[int]) -> list[tuple]:
    import logging
    import warnings

    # one line per trait in the table, not PyMC's per-fit messages
    logging.getLogger("pymc").setLevel(logging.WARNING)
    from .bayes.model import AnimalModel
    from .linalg.threads import blas_threads

    out = []
    for j in columns:
        trait = work.traits[j]
        subset = work.data[work.data[trait].notna()]
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught, blas_threads(1):
                warnings.simplefilter("always")
                model = AnimalModel(
                    f"{_quoted(trait)} ~ {work.rhs}", subset, source=work.source,
                    animal=work.animal, priors=work.priors,
                )  # fmt: skip
                fit = model.fit(progressbar=False, warn=False, **work.options)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError, BayesAnimalError) as exc:
            # (a chain worker that died is a BayesAnimalError: the trait's row says so)
            out.append((_failed(trait, len(subset), f"failed: {exc}", FIT_MANY_COLUMNS), None))
            continue
        # the trait's warnings go into its row (the diagnostics are in their own columns)
        notes = list(dict.fromkeys(str(w.message) for w in caught if not is_known_noise(w)))
        summary = fit.summary()
        check = fit.reml_check.loc["h2"]
        diagnostics = fit.diagnostics
        row = {
            "trait": trait,
            "n_records": len(subset),
            "h2_mean": summary.loc["h2", "mean"],
            "h2_sd": summary.loc["h2", "sd"],
            "h2_hdi_low": summary.loc["h2", "hdi_low"],
            "h2_hdi_high": summary.loc["h2", "hdi_high"],
            "sigma2:additive_mean": summary.loc["sigma2:additive", "mean"],
            "sigma2:residual_mean": summary.loc["sigma2:residual", "mean"],
            "h2_reml": check["reml"],
            "h2_reml_in_hdi": bool(check["reml_in_hdi"]),
            "max_r_hat": diagnostics.max_r_hat,
            "min_ess_bulk": diagnostics.min_ess_bulk,
            "divergences": diagnostics.divergences,
            "seconds": time.perf_counter() - start,
            "status": "ok" if diagnostics.ok else "check diagnostics",
            "notes": " | ".join(notes),
        }
        if work.posteriors is not None:
            fit.save(Path(work.posteriors) / _safe(trait))
        out.append((row, None))
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def fit_many(
    formula: str,
    data: pd.DataFrame,
    traits: str | Sequence[str],
    *,
    relmat: Any = None,
    pedigree: Pedigree | pd.DataFrame | str | PathLike[str] | None = None,
    genotypes: pd.DataFrame | str | PathLike[str] | None = None,
    source: RelationshipSource | None = None,
    animal: str = "animal",
    out: str | PathLike[str] | None = None,
    priors: Any = None,
    posteriors: bool = False,
    resume: bool = False,
    workers: int | None = None,
    scheduler: Any = None,
    progress: bool = True,
    **fit_options: Any,
) -> ManyResult:
    """A Bayesian fit (:class:`~bayes_animal.bayes.model.AnimalModel`) of every trait.

    The fits are independent: one task per trait, run here, in local worker processes (one
    BLAS thread each; the default with more than one trait and core) or on a Dask cluster.
    Each row of the table is the posterior summary of h² and the variances with the REML
    check and the diagnostics; ``posteriors=True`` also writes each trait's
    ``summary.json``, ``ebv.csv`` and ``posterior.nc`` under ``out/posteriors/<trait>/``.
    Rankings stay per trait (``bayes-animal rank`` on a trait's posterior.nc).

    Parameters
    ----------
    formula, data, traits, relmat, pedigree, genotypes, source, animal, out, resume,
    workers, scheduler, progress
        As for :func:`reml_many`.
    priors
        The priors of every trait's model (a :class:`~bayes_animal.bayes.priors.Priors` or a
        preset name; default: the scale-aware default).
    posteriors
        Write every trait's posterior files (needs ``out``).
    **fit_options
        Passed to :meth:`AnimalModel.fit` (``draws``, ``tune``, ``chains``, ``sampler``,
        ``random_seed``, …).
    """
    clock = time.perf_counter()
    if posteriors and out is None:
        raise DataError("posteriors=True writes files: give out= (--out) as well.")
    rhs = _fixed_part(formula)
    names = select_traits(data, traits)
    rows = _Rows(None if out is None else Path(out), FIT_MANY_COLUMNS, resume)
    try:
        todo = [t for t in names if t not in rows.done()]
        fittable, failed = _screen(data, todo, rhs, animal, FIT_MANY_COLUMNS)
        for row in failed:
            rows.add(row)
        source = _resolve_source(relmat, pedigree, genotypes, source)
        bar = _Progress(len(todo), progress, "NUTS")
        bar.step(len(failed))
        work = _FitWork(
            rhs, data, source, animal, tuple(fittable), priors, dict(fit_options),
            None if not posteriors else str(Path(out) / "posteriors"),
        )  # fmt: skip

        def collect(results):
            for row, _ in results:
                rows.add(row)
                bar.step()

        run_tasks(
            _fit_rows, work, [[j] for j in range(len(fittable))], collect, workers=workers,
            scheduler=scheduler, parallel_above=1,
        )  # fmt: skip
    finally:
        rows.close()
    return ManyResult(
        rows.table(names), pd.DataFrame(), None, {"total": time.perf_counter() - clock}
    )
