r"""Every bivariate model of a list of traits: the genetic and residual correlation matrices.

For traits :math:`t_1, \dots, t_m`, :func:`reml_pairs` fits ``cbind(a, b) ~ <fixed part>``
with the additive effect (and the formula's other random terms) for every pair
:math:`a < b` by REML on the sparse equations (:func:`bayes_animal.api.reml`), in this process,
in local worker processes or on a Dask cluster as :func:`~bayes_animal.many.reml_many` does,
and assembles

- ``pairs.csv``: one row per pair — records, the genetic correlation ``rg`` and the residual
  one ``re`` (``corr:additive:a:b``, ``corr:residual:a:b``) with their SEs, each trait's h² in
  the pair, the log-likelihood, convergence, what is at a boundary, and ``status`` (``ok`` or
  why the pair has no estimate);
- ``rg.csv`` and ``re.csv``: the m × m correlation matrices (1 on the diagonal, empty where a
  pair failed), and ``rg_se.csv`` / ``re_se.csv`` their SEs.

The matrices are assembled from separate bivariate fits, as is usual (each pair's records
are those with either trait), so they need not be positive semi-definite.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BayesAnimalError, DataError
from .execution import run_tasks
from .many import _fixed_part, _quoted, _resolve_source, select_traits
from .tables import pandas as pd

__all__ = ["PAIR_COLUMNS", "PairsResult", "reml_pairs"]

PAIR_COLUMNS = (
    "trait1",
    "trait2",
    "n_records",
    "rg",
    "rg_se",
    "re",
    "re_se",
    "h2_trait1",
    "h2_trait1_se",
    "h2_trait2",
    "h2_trait2_se",
    "loglik",
    "converged",
    "boundary",
    "status",
)
"""The columns of ``pairs.csv``."""


@dataclass(frozen=True)
class PairsResult:
    """Every pair's row, and the correlation matrices with their SEs (traits × traits)."""

    table: Any
    rg: Any
    rg_se: Any
    re: Any
    re_se: Any
    seconds: float


@dataclass(frozen=True)
class _PairWork:
    """What every pair's fit shares (pickled once per worker)."""

    data: Any
    source: Any
    animal: str
    rhs: str


def _pair_rows(work: _PairWork, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """REML of each pair of a task (a module-level function: it is pickled)."""
    from .api import reml
    from .linalg.threads import blas_threads

    rows = []
    for a, b in pairs:
        row: dict[str, Any] = dict.fromkeys(PAIR_COLUMNS, np.nan)
        row.update(trait1=a, trait2=b, converged=False, boundary="")
        formula = f"cbind({_quoted(a)}, {_quoted(b)}) ~ {work.rhs}"
        try:
            with warnings.catch_warnings(), blas_threads(1):
                warnings.simplefilter("ignore")  # notices of missing records: every pair has them
                fit = reml(formula, work.data, source=work.source, animal=work.animal, pev=False)
        except (BayesAnimalError, ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
            row["status"] = f"failed: {exc}"
            rows.append(row)
            continue
        ratios = fit.ratios
        for column, key in (
            ("rg", f"corr:additive:{a}:{b}"),
            ("re", f"corr:residual:{a}:{b}"),
            ("h2_trait1", f"h2:{a}"),
            ("h2_trait2", f"h2:{b}"),
        ):
            row[column] = float(ratios.loc[key, "estimate"])
            row[f"{column}_se"] = float(ratios.loc[key, "se"])
        row.update(
            n_records=fit.n_records,
            loglik=fit.loglik,
            converged=fit.converged,
            boundary=";".join(fit.boundary),
            status="ok" if fit.converged else f"not converged: {fit.convergence.reason}",
        )
        rows.append(row)
    return rows


def _matrix(table, traits: list[str], column: str, diagonal: float):
    values = pd.DataFrame(np.nan, index=traits, columns=traits)
    for trait in traits:
        values.loc[trait, trait] = diagonal
    for _, row in table.iterrows():
        values.loc[row["trait1"], row["trait2"]] = row[column]
        values.loc[row["trait2"], row["trait1"]] = row[column]
    values.index.name = "trait"
    return values


def reml_pairs(
    formula: str,
    data,
    traits,
    *,
    relmat: Any = None,
    pedigree: Any = None,
    genotypes: Any = None,
    source: Any = None,
    animal: str = "animal",
    out: str | PathLike[str] | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    progress: bool = True,
) -> PairsResult:
    """REML of every bivariate model of ``traits`` (see the module docstring).

    Parameters
    ----------
    formula
        The right-hand side shared by every pair, without a response: ``"~ 1 + C(sex)"``
        (random terms too: ``"~ 1 + (1 | byear)"``).
    data, traits, relmat, pedigree, genotypes, source, animal
        As for :func:`~bayes_animal.many.reml_many` (two traits at least).
    out
        Folder for ``pairs.csv``, ``rg.csv``, ``rg_se.csv``, ``re.csv``, ``re_se.csv``.
    workers, scheduler
        Local worker processes, or a Dask cluster, as for
        :func:`~bayes_animal.many.reml_many`.
    progress
        Print a line per finished pair on stderr.
    """
    import sys

    clock = time.perf_counter()
    rhs = _fixed_part(formula)
    names = select_traits(data, traits)
    if len(names) < 2:
        raise DataError(f"Pairs need two traits or more; {traits!r} names {names}.")
    source = _resolve_source(relmat, pedigree, genotypes, source)
    pairs = list(itertools.combinations(names, 2))
    work = _PairWork(data, source, animal, rhs)
    rows: list[dict[str, Any]] = []

    def collect(result: list[dict[str, Any]]) -> None:
        rows.extend(result)
        if progress:
            for row in result:
                print(
                    f"pair {len(rows)}/{len(pairs)}: {row['trait1']} × {row['trait2']} "
                    f"{row['status'][:60]}",
                    file=sys.stderr,
                )

    run_tasks(
        _pair_rows, work, [[pair] for pair in pairs], collect, workers=workers,
        scheduler=scheduler, parallel_above=2,
    )  # fmt: skip
    order = {pair: k for k, pair in enumerate(pairs)}
    table = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    table = table.iloc[np.argsort([order[(r.trait1, r.trait2)] for r in table.itertuples()])]
    table = table.reset_index(drop=True)
    result = PairsResult(
        table=table,
        rg=_matrix(table, names, "rg", 1.0),
        rg_se=_matrix(table, names, "rg_se", 0.0),
        re=_matrix(table, names, "re", 1.0),
        re_se=_matrix(table, names, "re_se", 0.0),
        seconds=time.perf_counter() - clock,
    )
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / "pairs.csv", index=False, float_format="%.10g")
        for name in ("rg", "rg_se", "re", "re_se"):
            getattr(result, name).to_csv(folder / f"{name}.csv", float_format="%.10g")
    return result
