"""``reml --traits`` and ``fit --traits``: many traits, one row each."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import BayesAnimalError
from ..results.io import (
    read_data,
)
from .inputs import _relationship_from_args


def _many_traits(args: argparse.Namespace, *, bayesian: bool) -> int:
    """``reml --traits`` / ``fit --traits``: one row per trait in OUT/traits.csv."""
    from ..many import fit_many, reml_many

    if args.family != "gaussian":
        raise BayesAnimalError(
            f"--traits fits Gaussian traits (one batch of the spectral or sparse engine); fit "
            f'a {args.family} trait on its own: --formula "trait ~ ..." --family {args.family}.'
        )
    if not args.out:
        raise BayesAnimalError("--traits writes OUT/traits.csv: give --out DIR as well.")
    clock = time.perf_counter()
    data = read_data(args.data, sep=args.sep)
    source = _relationship_from_args(args, fitting=True)
    common = {
        "source": source,
        "animal": args.animal,
        "out": args.out,
        "resume": args.resume,
        "workers": args.workers,
        "scheduler": args.scheduler,
        "progress": args.progress,
    }
    if not bayesian and args.pairs:
        return _pairs(args, data, common, clock)
    if bayesian:
        result = fit_many(
            args.formula, data, args.traits, posteriors=args.posteriors, priors=args.prior,
            draws=args.draws, tune=args.tune, chains=args.chains, random_seed=args.seed,
            sampler=args.sampler, parameterisation=args.parameterisation,
            target_accept=args.target_accept, **common,
        )  # fmt: skip
    else:
        result = reml_many(
            args.formula, data, args.traits, method=args.method, blups=args.blups, **common
        )
    table = result.table
    ok = int((table["status"] == "ok").sum())
    print(
        f"{len(table)} traits: {ok} ok, {len(table) - ok} with a note in 'status' "
        f"({time.perf_counter() - clock:.1f} s); wrote {Path(args.out) / 'traits.csv'}"
    )
    if not bayesian and len(result.groups):
        engines = result.groups["engine"].value_counts()
        spectral = int(engines.get("spectral", 0))
        sparse = int(engines.get("sparse", 0))
        failed = int(engines.get("failed", 0))
        eigh = result.timings.get("eigh", 0.0)
        parts = [
            f"{spectral} with one eigendecomposition each ({eigh:.2f} s)" if spectral else "",
            f"{sparse} on the sparse equations trait by trait" if sparse else "",
            f"{failed} whose design failed (the reason in 'status')" if failed else "",
        ]
        print(
            f"{len(result.groups)} pattern(s) of missing records: "
            + ", ".join(part for part in parts if part)
            + f" (why: {Path(args.out) / 'groups.csv'})"
        )
    return 0


def _pairs(args: argparse.Namespace, data, common: dict, clock: float) -> int:
    """``reml --traits LIST --pairs``: every bivariate model, the correlation matrices."""
    from ..pairs import reml_pairs

    if args.resume or args.blups:
        raise BayesAnimalError(
            "--pairs writes every pair's row at the end: --resume and --blups are for --traits "
            "one at a time. Drop them, or drop --pairs."
        )
    options = {k: common[k] for k in ("source", "animal", "out", "workers", "scheduler")}
    result = reml_pairs(args.formula, data, args.traits, progress=args.progress, **options)
    table = result.table
    ok = int((table["status"] == "ok").sum())
    print(
        f"{len(table)} pairs: {ok} ok, {len(table) - ok} with a note in 'status' "
        f"({time.perf_counter() - clock:.1f} s); wrote pairs.csv, rg.csv, rg_se.csv, re.csv and "
        f"re_se.csv to {args.out}"
    )
    print("genetic correlations (rg.csv):")
    print(result.rg.round(3).to_string())
    return 0
