"""``bayes-animal simulate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..results.io import (
    write_relationship_csv,
)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from ..simulate import simulate_reference

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
