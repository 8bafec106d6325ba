"""Ranking from posterior draws: 4000 draws × 1000 and × 10 000 animals."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from bayes_animal.results.ranking import rank


def run(sizes=(1000, 10_000), draws=4000) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for q in sizes:
        means = rng.standard_normal(q)
        values = means + rng.standard_normal((draws, q)) * 0.7
        reml = means + rng.standard_normal(q) * 0.1
        start = time.perf_counter()
        ranking = rank(values, np.arange(q), top_fraction=0.05, threshold=1.0, reml_blup=reml)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "draws": draws,
                "animals": q,
                "k": ranking.k,
                "rank_s": seconds,
                "sum_p_top_minus_k": float(ranking.table["p_top"].sum() - ranking.k),
            }
        )
    return pd.DataFrame(rows)
