"""REML with several random effects: the gryphon models, simulated herds up to 10⁶ animals,
and the sparse factorisation against the libraries that install from wheels.

Every number of a table is measured in the same run. Fits at scale run in a fresh process
each, so that their peak memory (``ru_maxrss``) is their own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _timed(function, repeats: int) -> tuple[float, object]:
    function()  # warm-up: numba's cached kernels loaded, formulaic imported
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_gryphon(repeats: int = 5) -> pd.DataFrame:
    """The gryphon models 1–4 and the lay-date model, each engine where it applies."""
    from bayes_animal import reml

    folder = SHARED / "gryphon"
    bwt = pd.read_csv(folder / "gryphon.csv")
    lay = pd.read_csv(folder / "gryphonRM.csv")
    pedigree = folder / "gryphonped.csv"
    cases = [
        ("1: bwt ~ 1 + animal", bwt, "bwt ~ 1", "sparse"),
        ("1: bwt ~ 1 + animal", bwt, "bwt ~ 1", "spectral"),
        ("2: + sex", bwt, "bwt ~ 1 + C(sex)", "sparse"),
        ("2: + sex", bwt, "bwt ~ 1 + C(sex)", "spectral"),
        ("3: + byear", bwt, "bwt ~ 1 + C(sex) + (1 | byear)", "sparse"),
        ("4: + byear + mother", bwt, "bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)", "sparse"),
        ("lay date + pe", lay, "laydate ~ 1 + C(age) + ide(animal)", "sparse"),
    ]
    rows = []
    for name, data, formula, engine in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds, fit = _timed(
                lambda d=data, f=formula, e=engine: reml(f, d, pedigree=pedigree, engine=e),
                repeats,
            )
        rows.append(
            {
                "model": name,
                "engine": engine,
                "records": fit.n_records,
                "components": ", ".join(
                    f"{k} {v:.4g}" for k, v in fit.components["variance"].items()
                ),
                "fit_s": seconds,
                "iterations": fit.iterations,
                "loglik": fit.loglik,
            }
        )
    return pd.DataFrame(rows)


def run_single_component(n_animals: int = 2000, repeats: int = 5) -> pd.DataFrame:
    """One additive effect on a pedigree of about 2 000 animals: the sparse engine, the
    spectral engine, and lme4's time for such a fit quoted from the issue."""
    from bayes_animal import reml
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

    table = simulate_herd_pedigree(n_animals=n_animals, n_generations=6, seed=4)
    sim = simulate_records(table, variances={"additive": 2.0, "residual": 3.0}, seed=5)
    pedigree = table[["id", "sire", "dam"]]
    rows = []
    for engine in ("sparse", "spectral"):
        seconds, fit = _timed(
            lambda e=engine: reml("y ~ 1 + x", sim.data, pedigree=pedigree, engine=e), repeats
        )
        rows.append(
            {
                "fit": f"bayes_animal reml, {engine} engine (in process, pedigree read included)",
                "animals": len(table),
                "records": fit.n_records,
                "seconds": seconds,
                "h2": fit.h2,
            }
        )
    rows.append(
        {
            "fit": "lme4 sparse Cholesky fit of such a model (figure quoted from the issue)",
            "animals": n_animals,
            "records": np.nan,
            "seconds": 0.1,
            "h2": np.nan,
        }
    )
    frame = pd.DataFrame(rows)
    frame["vs_lme4"] = 0.1 / frame["seconds"]
    return frame


_SCALE_SCRIPT = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
from bayes_animal import reml
from bayes_animal.simulate import simulate_herd_pedigree, simulate_records
n, model = int(sys.argv[1]), sys.argv[2]
table = simulate_herd_pedigree(n_animals=n, n_generations=10, seed=1)
variances = {"additive": 2.0, "residual": 3.0}
if model == "pe":
    variances["pe"] = 1.0
sim = simulate_records(table, variances=variances, phenotyped=0.6, seed=2,
                       records_per_animal=(1, 3) if model == "pe" else (1, 1))
formula = "y ~ 1 + x" + (" + ide(animal)" if model == "pe" else "")
start = time.perf_counter()
fit = reml(formula, sim.data, pedigree=table[["id", "sire", "dam"]], pev=False)
seconds = time.perf_counter() - start
print(json.dumps({"animals": len(table), "records": fit.n_records, "seconds": seconds,
    "iterations": fit.iterations, "timings": fit.timings,
    "components": fit.components["variance"].to_dict(),
    "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def run_scale(cases: tuple[tuple[int, str], ...]) -> pd.DataFrame:
    """Simulated herd pedigrees: animal + permanent environment (1–3 records for 60 % of the
    animals) or one genetic effect (one record each), a fresh process per fit."""
    rows = []
    for n, model in cases:
        completed = subprocess.run(
            [sys.executable, "-c", _SCALE_SCRIPT, str(n), model],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if completed.returncode != 0:
            raise RuntimeError(completed.stderr)
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        timings = result["timings"]
        rows.append(
            {
                "model": "animal + pe" if model == "pe" else "animal",
                "animals": result["animals"],
                "records": result["records"],
                "whole_fit_s": result["seconds"],
                "pedigree_s": timings["relationship"],
                "analyse_s": timings["analyse"],
                "iterations": result["iterations"],
                "per_iteration_s": timings["iterate"] / max(result["iterations"], 1),
                "peak_memory_gb": result["peak_gb"],
                "additive": result["components"]["additive"],
                "residual": result["components"]["residual"],
            }
        )
    return pd.DataFrame(rows)
