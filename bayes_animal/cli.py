"""The ``bayes-animal`` command line: ``reml``, ``relmat``, ``simulate`` and ``demo``.

Errors raised on purpose (:class:`bayes_animal.errors.BayesAnimalError`) are printed as one
paragraph on stderr with exit status 2 and no traceback. Notices (dropped records) go to
stderr, so that ``--json`` leaves only the JSON object on stdout. Nothing here imports PyMC.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .design import build_design
from .errors import BayesAnimalError
from .inputs import RelationshipSource, resolve_relationship
from .io import read_data, write_blup_csv, write_matrix, write_relationship_csv
from .reml import RemlResult, fit_reml
from .simulate import simulate_reference

__all__ = ["main"]


def _notice(message: str) -> None:
    print(textwrap.fill(f"note: {message}", width=100), file=sys.stderr)


def _format_reml(result: RemlResult, *, response: str, formula: str) -> str:
    """A readable report of a REML fit."""
    lines = [
        f"{result.method.upper()} fit of {formula} + (1 | animal): "
        f"{result.n_records} records, {result.n_animals} animals in the relationship matrix",
        "",
        f"{'parameter':<24}{'estimate':>14}{'SE':>12}",
    ]
    for name, row in result.summary().iterrows():
        lines.append(f"{name:<24}{row['estimate']:>14.6g}{row['se']:>12.4g}")
    status = "converged" if result.converged else "NOT converged"
    if result.boundary:
        status += f", at the boundary ({result.boundary} = 0)"
    lines += [
        "",
        f"log-likelihood {result.loglik:.6f} ({status}, {result.iterations} evaluations)",
        f"time: eigendecomposition {result.timings['eigh']:.3f} s, "
        f"fit {result.timings['fit']:.3f} s",
    ]
    return "\n".join(lines)


def _relationship_from_args(args: argparse.Namespace) -> RelationshipSource:
    """The relationship matrix from --relmat | --pedigree | --genotypes (shared by commands)."""
    columns = None
    if getattr(args, "pedigree_columns", None):
        columns = tuple(c.strip() for c in args.pedigree_columns.split(","))
        if len(columns) != 3:
            raise BayesAnimalError(
                f"--pedigree-columns needs three names id,sire,dam; got {args.pedigree_columns!r}."
            )
    source = resolve_relationship(
        relmat=Path(args.relmat) if getattr(args, "relmat", None) else None,
        pedigree=Path(args.pedigree) if args.pedigree else None,
        genotypes=Path(args.genotypes) if args.genotypes else None,
        pedigree_columns=columns,
        allow_selfing=args.allow_selfing,
        genotype_coding=args.genotype_coding,
        ridge=args.ridge,
        blend=args.blend,
        nearest_pd=getattr(args, "nearest_pd", False),
        warn=False,
    )
    for message in source.notices:
        _notice(message)
    relmat = source.relmat
    if relmat.projected:
        _notice(
            f"the relationship matrix was not positive semi-definite (smallest eigenvalue "
            f"{relmat.min_eigenvalue:.4g}) and was replaced by its nearest positive-definite "
            "projection, as --nearest-pd asked."
        )
    return source


def _cmd_reml(args: argparse.Namespace) -> int:
    data = read_data(args.data)
    source = _relationship_from_args(args)
    relmat = source.relmat
    if source.pedigree is not None and args.animal in data.columns:
        source.pedigree.positions(data[args.animal].dropna().to_numpy())
    design = build_design(args.formula, data, animal=args.animal, relmat=relmat, warn=False)
    for message in design.notices:
        _notice(message)
    result = fit_reml(design, relmat, method=args.method, pev=True, threads=args.threads)
    if not result.converged:
        _notice("the REML maximiser did not meet its tolerance; check the data and the model.")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_blup_csv(result, out / "blup.csv")
        (out / "reml.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(_format_reml(result, response=design.response, formula=design.formula))
        if args.out:
            print(f"wrote {Path(args.out) / 'blup.csv'} and {Path(args.out) / 'reml.json'}")
    return 0


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
        from .additive import inverse_relationship

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


def _cmd_simulate(args: argparse.Namespace) -> int:
    sim = simulate_reference(
        n=args.n,
        n_snps=args.n_snps,
        sigma2_u=args.sigma2_u,
        lam=args.lam,
        seed=args.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim.data.to_csv(out / "pheno.csv", index=False, float_format="%.17g")
    write_relationship_csv(sim.relmat, out / "A.csv")
    sim.truth.u.reset_index().to_csv(out / "true_u.csv", index=False, float_format="%.17g")
    truth = {
        "seed": args.seed,
        "n": args.n,
        "n_snps": args.n_snps,
        "mu": sim.truth.mu,
        "b": sim.truth.b,
        "sigma2_u": sim.truth.sigma2_u,
        "sigma2_e": sim.truth.sigma2_e,
        "h2": sim.truth.h2,
        "mean_diag_A": sim.relmat.mean_diagonal,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(f"wrote pheno.csv, A.csv, true_u.csv and truth.json to {out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    print(f"bayes_animal {__version__}: the reference simulation (N = {args.n}, seed {args.seed})")
    sim = simulate_reference(n=args.n, n_snps=args.n_snps, seed=args.seed)
    print(
        f"A = M'M/m from {args.n_snps} SNPs, mean diagonal {sim.relmat.mean_diagonal:.3f} "
        "(not rescaled: variances are on this scale)\n"
    )
    design = build_design("response ~ 1 + fix", sim.data, animal="animal", relmat=sim.relmat)
    result = fit_reml(design, sim.relmat)
    truth = sim.truth
    rows = [
        ("h2", truth.h2, result.h2, result.se["h2"]),
        ("sigma2_u", truth.sigma2_u, result.sigma2_u, result.se["sigma2_u"]),
        ("sigma2_e", truth.sigma2_e, result.sigma2_e, result.se["sigma2_e"]),
        ("Intercept", truth.mu, result.beta["Intercept"], result.beta_se["Intercept"]),
        ("fix", truth.b, result.beta["fix"], result.beta_se["fix"]),
    ]
    print(f"{'parameter':<12}{'truth':>10}{'REML':>10}{'SE':>9}{'95% interval':>22}  inside")
    for name, true, estimate, se in rows:
        low, high = estimate - 1.96 * se, estimate + 1.96 * se
        inside = "yes" if low <= true <= high else "no"
        print(
            f"{name:<12}{true:>10.4f}{estimate:>10.4f}{se:>9.4f}"
            f"{f'[{low:.3f}, {high:.3f}]':>22}  {inside}"
        )
    status = "converged" if result.converged else "NOT converged"
    print(
        f"\nREML log-likelihood {result.loglik:.4f} ({status}); eigendecomposition "
        f"{result.timings['eigh']:.2f} s, fit {result.timings['fit']:.3f} s"
    )
    blup = result.blup.join(truth.u.rename("true_u"))
    accuracy = float(np.corrcoef(blup["blup"], blup["true_u"])[0, 1])
    print(f"correlation of the BLUPs with the true breeding values: {accuracy:.4f}\n")
    top = blup.sort_values("blup", ascending=False).head(args.top)
    top = top.assign(true_rank=blup["true_u"].rank(ascending=False).astype(int).loc[top.index])
    print(f"top {args.top} breeding values (REML BLUP):")
    with pd.option_context("display.float_format", "{:.3f}".format):
        print(top[["blup", "pev", "reliability", "true_u", "true_rank"]].to_string())
    return 0


def _relationship_arguments(command: argparse.ArgumentParser, *, matrix: bool) -> None:
    group = command.add_argument_group(
        "relationship (one of --relmat, --pedigree, --genotypes; or --genotypes with --pedigree "
        "and --blend)"
    )
    if matrix:
        group.add_argument(
            "--relmat", help="CSV relationship matrix (ids as header and first column)"
        )
    group.add_argument("--pedigree", help="pedigree CSV (id, sire, dam; unknown as 0/NA/empty/.)")
    group.add_argument(
        "--pedigree-columns", help="names of the id, sire and dam columns, e.g. id,father,mother"
    )
    group.add_argument(
        "--allow-selfing",
        action="store_true",
        help="accept an individual used as both sire and dam (plants)",
    )
    group.add_argument("--genotypes", help="genotype CSV: id column then markers coded 0/1/2")
    group.add_argument(
        "--genotype-coding",
        choices=["012", "01"],
        default="012",
        help="01: presence/absence in inbred lines, read as 0/2 (default 012)",
    )
    group.add_argument("--ridge", type=float, default=0.0, help="add this to G's diagonal")
    group.add_argument(
        "--blend",
        type=float,
        default=0.0,
        help="w in (1-w)G + wA (needs --genotypes and --pedigree)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-animal",
        description="The Bayesian animal model: REML and NUTS for y = Xb + Zu + e.",
    )
    parser.add_argument("--version", action="version", version=f"bayes_animal {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("reml", help="REML (or ML) estimate of the animal model")
    fit.add_argument("--data", required=True, help="CSV of records, one row per record")
    _relationship_arguments(fit, matrix=True)
    fit.add_argument("--formula", required=True, help='fixed part, e.g. "response ~ 1 + fix"')
    fit.add_argument("--animal", default="animal", help="column of animal ids (default: animal)")
    fit.add_argument("--method", choices=["reml", "ml"], default="reml")
    fit.add_argument("--out", help="folder for blup.csv and reml.json")
    fit.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    fit.add_argument(
        "--nearest-pd",
        action="store_true",
        help="replace a non-PSD relationship matrix by its nearest positive-definite matrix",
    )
    fit.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS threads (default: the cores available, at most 8)",
    )
    fit.set_defaults(handler=_cmd_reml)

    rel = commands.add_parser(
        "relmat", help="write A (from a pedigree) or G (from genotypes), or their inverse"
    )
    _relationship_arguments(rel, matrix=False)
    rel.add_argument("--out", required=True, help="output CSV")
    rel.add_argument("--inverse", action="store_true", help="write the inverse (sparse for A)")
    rel.add_argument(
        "--format",
        choices=["dense", "triplets"],
        default="dense",
        help="dense: ids as header and first column; triplets: row,col,value (lower triangle, "
        "non-zeros, as ASReml .giv / BLUPF90 files, with ids)",
    )
    rel.set_defaults(handler=_cmd_relmat)

    sim = commands.add_parser("simulate", help="write the reference simulation as CSV files")
    sim.add_argument("--out", required=True, help="folder for pheno.csv, A.csv, true_u.csv")
    sim.add_argument("--n", type=int, default=1000, help="animals (default 1000)")
    sim.add_argument("--n-snps", type=int, default=1000, help="SNPs (default 1000)")
    sim.add_argument("--sigma2-u", type=float, default=5.0, help="genetic variance (default 5)")
    sim.add_argument("--lam", type=float, default=3.0, help="sigma2_u / sigma2_e (default 3)")
    sim.add_argument("--seed", type=int, default=1859, help="random seed (default 1859)")
    sim.set_defaults(handler=_cmd_simulate)

    demo = commands.add_parser("demo", help="the reference simulation and its fit")
    demo.add_argument("--n", type=int, default=1000)
    demo.add_argument("--n-snps", type=int, default=1000)
    demo.add_argument("--seed", type=int, default=1859)
    demo.add_argument("--top", type=int, default=10, help="breeding values to show")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayes-animal`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except BayesAnimalError as exc:
        print(textwrap.fill(f"error: {exc}", width=100), file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
