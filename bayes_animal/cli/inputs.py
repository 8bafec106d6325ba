"""What the commands read from their options: the relationship, the candidates."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BayesAnimalError
from ..results.io import (
    read_data,
)
from ..structures.inputs import resolve_relationship
from .words import _notice


def _relationship_from_args(
    args: argparse.Namespace,
    *,
    required: bool = True,
    check_definite: bool = False,
    fitting: bool = False,
):
    """The relationship from --relmat | --pedigree | --genotypes (shared by commands); None
    when none is given and ``required`` is false (a model of independent effects only).
    A given matrix's definiteness is checked where it is first used (the factorisation or
    eigendecomposition every command makes of it), unless ``check_definite``. A command
    ``fitting`` a pedigree says first when it is about to compile the sparse kernels."""
    given = [getattr(args, name, None) for name in ("relmat", "pedigree", "genotypes")]
    if not required and not any(given):
        return None
    columns = None
    if getattr(args, "pedigree_columns", None):
        columns = tuple(c.strip() for c in args.pedigree_columns.split(","))
        if len(columns) != 3:
            raise BayesAnimalError(
                f"--pedigree-columns needs three names id,sire,dam; got {args.pedigree_columns!r}."
            )
    if fitting and args.pedigree:
        from .precompile import first_run_notice

        if (message := first_run_notice()) is not None:
            _notice(message)
    source = resolve_relationship(
        relmat=Path(args.relmat) if getattr(args, "relmat", None) else None,
        pedigree=Path(args.pedigree) if args.pedigree else None,
        genotypes=Path(args.genotypes) if args.genotypes else None,
        pedigree_columns=columns,
        allow_selfing=args.allow_selfing,
        add_missing_parents=args.add_missing_parents,
        genotype_coding=args.genotype_coding,
        ridge=args.ridge,
        blend=args.blend,
        nearest_pd=getattr(args, "nearest_pd", False),
        check_definite=check_definite,
        warn=False,
    )
    for message in source.notices:
        _notice(message)
    if source.matrix is not None and source.matrix.projected:
        _notice(
            f"the relationship matrix was not positive semi-definite (smallest eigenvalue "
            f"{source.matrix.min_eigenvalue:.4g}) and was replaced by its nearest "
            "positive-definite projection, as --nearest-pd asked."
        )
    return source


def _candidates_from_args(args: argparse.Namespace):
    if not args.candidates:
        return None
    path = Path(args.candidates)
    if path.is_file():
        return read_data(path).iloc[:, 0].astype(str).tolist()
    if not args.data:
        raise BayesAnimalError(
            f"--candidates {args.candidates!r} is neither a file nor usable as a column without "
            "--data: give a CSV of candidate ids, or --data with a boolean column."
        )
    data = read_data(args.data, sep=args.sep)
    if args.candidates not in data.columns:
        raise BayesAnimalError(
            f"--candidates {args.candidates!r} is not a file and not a column of {args.data}."
        )
    column = data[args.candidates]
    if column.dtype != bool and not set(column.dropna().unique()) <= {0, 1}:
        raise BayesAnimalError(
            f"The candidate column {args.candidates!r} must be boolean (True/False or 1/0)."
        )
    chosen = data.loc[column.fillna(False).astype(bool), args.animal].astype(str)
    return chosen.drop_duplicates().tolist()
