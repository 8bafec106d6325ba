"""Sampling benchmarks: parameterisation × sampler × N, the gryphon pedigree model, and the
whole ``bayes-animal fit`` command.

Run through ``python benchmarks/run.py sampling`` (or ``make bench``). Each configuration is
fitted twice in one process: a tiny first run warms the compilation caches, the second (4 chains
× 1000 draws after 1000 tuning steps) is timed.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

from bayes_animal import simulate_reference
from bayes_animal.bayes.model import AnimalModel

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RRBLUP_SECONDS = 5.3  # shared/data/seed_sim/README.md (R, not available here)


def _installed(sampler: str) -> bool:
    return sampler == "pymc" or importlib.util.find_spec(sampler) is not None


def _timed_fit(model: AnimalModel, **options) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # warm the compilation caches with a tiny run
        model.fit(
            progressbar=False, random_seed=1, warn=False, draws=20, tune=20, chains=1, **options
        )
        start = time.perf_counter()
        fit = model.fit(progressbar=False, random_seed=2, warn=False, **options)
        wall = time.perf_counter() - start
    summary = fit.summary().loc["h2"]
    return {
        "eigh_s": fit.timings["eigh"],
        "compile_s": fit.timings["compile"],
        "sampling_s": fit.timings["sampling"],
        "conditional_s": fit.timings["conditional"],
        "fit_wall_s": wall,
        "ess_h2": summary["ess_bulk"],
        "ess_h2_per_sampling_s": summary["ess_bulk"] / fit.timings["sampling"],
        "ess_h2_per_wall_s": summary["ess_bulk"] / wall,
        "r_hat_h2": summary["r_hat"],
        "divergences": fit.diagnostics.divergences,
        "h2_mean": summary["mean"],
    }


def run(
    sizes=(300, 1000, 2000, 4000), samplers=("pymc", "nutpie", "numpyro"), noncentred_up_to=300
) -> pd.DataFrame:
    rows = []
    for n in sizes:
        sim = simulate_reference(n=n, n_snps=1000, seed=3)
        model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
        _ = model.reml  # eigh and REML outside the timings of the samplers
        for parameterisation in ("marginal", "noncentred"):
            if parameterisation == "noncentred" and n > noncentred_up_to:
                continue
            for sampler in samplers:
                if not _installed(sampler):
                    print(f"  {sampler} is not installed: skipped", file=sys.stderr)
                    continue
                row = {"N": n, "parameterisation": parameterisation, "sampler": sampler}
                row.update(_timed_fit(model, parameterisation=parameterisation, sampler=sampler))
                rows.append(row)
                print(
                    f"  N={n} {parameterisation} {sampler}: {row['fit_wall_s']:.1f} s, "
                    f"ESS/s {row['ess_h2_per_sampling_s']:.0f}",
                    file=sys.stderr,
                )
    table = pd.DataFrame(rows)
    best = table.groupby("N")["fit_wall_s"].transform("min")
    table["wall_vs_fastest"] = table["fit_wall_s"] / best
    return table


def run_gryphon(samplers=("pymc", "nutpie")) -> pd.DataFrame:
    folder = SHARED / "gryphon"
    if not folder.is_dir():
        return pd.DataFrame()
    data = pd.read_csv(folder / "gryphon.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnimalModel(
            "bwt ~ 1", data, pedigree=folder / "gryphonped.csv", priors="inverse_gamma"
        )
    rows = []
    for parameterisation in ("noncentred", "marginal"):
        for sampler in samplers:
            if not _installed(sampler):
                continue
            row = {
                "data": "gryphon bwt ~ 1 (pedigree, q=1309, n=854)",
                "parameterisation": parameterisation,
                "sampler": sampler,
            }
            row.update(_timed_fit(model, parameterisation=parameterisation, sampler=sampler))
            rows.append(row)
            print(
                f"  gryphon {parameterisation} {sampler}: ESS/s {row['ess_h2_per_sampling_s']:.0f}",
                file=sys.stderr,
            )
    return pd.DataFrame(rows)
