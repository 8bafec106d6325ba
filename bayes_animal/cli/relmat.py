"""``bayes-animal relmat``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..results.io import (
    write_matrix,
)
from .inputs import _relationship_from_args


def _cmd_relmat(args: argparse.Namespace) -> int:
    source = _relationship_from_args(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if source.sampling is not None:
        summary = source.sampling.summary()
        print(
            f"pedigree: {summary['animals']} animals, {int(source.pedigree.generation.max()) + 1} "
            f"generations; inbreeding mean {summary['mean_inbreeding']:.5f}, max "
            f"{summary['max_inbreeding']:.5f}, {summary['inbred_animals']} inbred animals"
        )
    if source.genomic is not None:
        g = source.genomic
        print(
            f"genomic: {source.relmat.size} animals, {g.n_markers} markers "
            f"({len(g.dropped_markers)} monomorphic dropped, {g.n_imputed} genotypes imputed), "
            f"mean diagonal {source.relmat.mean_diagonal:.4f}"
        )
    if args.inverse:
        from ..structures.additive import inverse_relationship

        if source.kind == "pedigree":
            inverse = inverse_relationship(source.pedigree, source.sampling)
            ids = source.pedigree.ids
        else:
            inverse = np.linalg.inv(source.relmat.matrix)
            ids = source.relmat.ids
        write_matrix(inverse, ids, out, triplets=args.format == "triplets")
    else:
        write_matrix(
            source.relmat.matrix, source.relmat.ids, out, triplets=args.format == "triplets"
        )
    kind = "inverse " if args.inverse else ""
    print(f"wrote the {kind}relationship matrix ({args.format}) to {out}")
    return 0
