"""``bayes-animal demo``: the reference job."""

from __future__ import annotations

import argparse

import numpy as np

from .. import __version__
from ..tables import pandas as pd
from .rank import _ranking_from_tree


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..simulate import simulate_reference

    print(f"bayes_animal {__version__}: the reference simulation (N = {args.n}, seed {args.seed})")
    sim = simulate_reference(n=args.n, n_snps=args.n_snps, seed=args.seed)
    print(
        f"A = M'M/m from {args.n_snps} SNPs, mean diagonal {sim.relmat.mean_diagonal:.3f} "
        "(not rescaled: variances are on this scale)\n"
    )
    from ..bayes.model import AnimalModel

    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    reml = model.reml
    print(
        f"REML: {reml.n_records} records, log-likelihood {reml.loglik:.4f}, "
        f"{'converged' if reml.converged else 'NOT converged'}; sampling with NUTS …"
    )
    fit = model.fit(
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        random_seed=args.seed,
        progressbar=False,
    )
    truth = sim.truth
    summary = fit.summary()
    beta = fit.beta_summary()
    estimates = reml.summary()  # the same names as the posterior's summary
    truths = {"h2": truth.h2, "sigma2:additive": truth.sigma2_u, "sigma2:residual": truth.sigma2_e}
    rows = [
        (key, true, estimates.loc[key, "estimate"], estimates.loc[key, "se"], summary.loc[key])
        for key, true in truths.items()
    ]
    rows += [
        (
            "Intercept",
            truth.mu,
            reml.beta["Intercept"],
            reml.beta_se["Intercept"],
            beta.loc["Intercept"],
        ),
        ("fix", truth.b, reml.beta["fix"], reml.beta_se["fix"], beta.loc["fix"]),
    ]
    print(f"\n{'parameter':<16}{'truth':>8}{'REML':>9}{'± SE':>8}{'post. mean':>12}{'95% HDI':>20}")
    for name, true, estimate, se, post in rows:
        interval = f"[{post['hdi_low']:.3f}, {post['hdi_high']:.3f}]"
        print(
            f"{name:<16}{true:>8.3f}{estimate:>9.3f}{se:>8.3f}{post['mean']:>12.3f}{interval:>20}"
        )
    print("\nREML check (the posterior against the built-in REML estimate):")
    print(fit.report())
    ebv = fit.ebv().join(reml.blup["blup"].rename("reml_blup")).join(truth.u.rename("true_u"))
    accuracy = float(np.corrcoef(ebv["mean"], ebv["true_u"])[0, 1])
    print(f"\ncorrelation of the posterior-mean EBVs with the true breeding values: {accuracy:.4f}")
    top = ebv.sort_values("mean", ascending=False).head(args.top)
    top = top.assign(true_rank=ebv["true_u"].rank(ascending=False).astype(int).loc[top.index])
    ranking = _ranking_from_tree(fit.with_reml_group(), top=args.top)
    print(f"\nranking with uncertainty: P(in the true top {args.top}) and 90% rank intervals")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print(
            ranking.top()[
                ["ebv_mean", "rank_mean", "rank_low", "rank_high", "p_top", "reml_rank"]
            ].to_string()
        )
        print(
            ranking.selections_frame()[
                ["gain_mean", "gain_hdi_low", "gain_hdi_high", "expected_true_top_k"]
            ].to_string()
        )
    print(f"\ntop {args.top} breeding values (posterior mean, 95% HDI):")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(
            top[
                [
                    "mean",
                    "sd",
                    "hdi_low",
                    "hdi_high",
                    "reliability",
                    "reml_blup",
                    "true_u",
                    "true_rank",
                ]
            ].to_string()
        )
    return 0
