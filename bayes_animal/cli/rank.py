"""``bayes-animal rank`` and the ranking written by ``fit``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BayesAnimalError
from ..tables import pandas as pd
from .inputs import _candidates_from_args

RANKING_COLUMNS = [
    "ebv_mean",
    "ebv_sd",
    "reliability",
    "hdi_low",
    "hdi_high",
    "rank_mean",
    "rank_low",
    "rank_high",
    "p_top",
]


def _ranking_from_tree(tree, **options):
    """:func:`~bayes_animal.results.posterior.rank_posterior`, its error worded for the
    command line (``--effect``)."""
    from ..results.posterior import rank_posterior

    return rank_posterior(tree, **options)


def _write_ranking(ranking, path: Path) -> None:
    columns = [c for c in RANKING_COLUMNS if c in ranking.table]
    extra = [c for c in ("reml_blup", "reml_rank", "rank_median", "p_above") if c in ranking.table]
    table = ranking.table[columns + extra].reset_index()
    table.insert(table.columns.get_loc("p_top") + 1, "k", ranking.k)  # the k of P(top k)
    table.to_csv(path, index=False, float_format="%.8g")


def _cmd_rank(args: argparse.Namespace) -> int:
    import xarray as xr

    path = Path(args.posterior)
    if not path.is_file():
        raise BayesAnimalError(f"Posterior file not found: {path}")
    tree = xr.open_datatree(path)
    from ..results.posterior import parse_index

    ranking = _ranking_from_tree(
        tree,
        effect=args.effect,
        candidates=_candidates_from_args(args),
        top=args.top,
        top_fraction=args.top_fraction,
        threshold=args.threshold,
        index=parse_index(args.index) if args.index else None,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_ranking(ranking, out / "ranking.csv")
    _write_ranking_plots(ranking, out)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print(
            f"top {ranking.k} of {len(ranking.table)} candidates (posterior mean EBV); p_top is "
            f"P(in the true top k), k = {ranking.k}:"
        )
        print(ranking.top()[[c for c in RANKING_COLUMNS if c in ranking.table]].to_string())
        print(
            "\nselected sets (expected genetic gain = posterior mean EBV of the set; "
            f"expected_true_top_k = how many of the {ranking.k} selected are expected in the "
            "true top k):"
        )
        print(ranking.selections_frame().to_string())
    print(f"wrote ranking.csv, caterpillar.png, p_top.png and rank_uncertainty.png to {out}")
    return 0


def _write_ranking_plots(ranking, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..results.plotting import plot_caterpillar, plot_p_top, plot_rank_uncertainty

    for name, axes in (
        ("caterpillar.png", plot_caterpillar(ranking)[0, 0]),
        ("p_top.png", plot_p_top(ranking)),
        ("rank_uncertainty.png", plot_rank_uncertainty(ranking)),
    ):
        axes.figure.savefig(out / name, dpi=110)
        plt.close(axes.figure)
