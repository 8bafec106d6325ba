"""REML timings: eigendecomposition and the rest, by N, and the whole command line on seed_sim.

Run through ``python benchmarks/run.py reml`` (or ``make bench``). Every ratio in the table is
measured in the same run on the same machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_animal import build_design, decompose, fit_reml, simulate_reference
from bayes_animal.estimation.spectral import loglik

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "seed_sim"
RRBLUP_SECONDS = 5.3  # shared/data/seed_sim/README.md: rrBLUP mixed.solve, 2 cores (R, not here)


def _best_of(repeats, function):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return min(times), value


def _dense_reml_seconds(design, relmat, problem):
    """A naive REML: a generic optimiser over (log σu², log σ²) with an O(n³) likelihood."""
    from scipy.optimize import minimize

    K = relmat.matrix[np.ix_(design.animal_index, design.animal_index)]
    X, y = design.X, design.y
    n = len(y)

    def negative(log_variances):
        su, se = np.exp(log_variances)
        V = su * K + se * np.eye(n)
        chol = np.linalg.cholesky(V)
        Vi_X = np.linalg.solve(V, X)
        Vi_y = np.linalg.solve(V, y)
        XVX = X.T @ Vi_X
        b = np.linalg.solve(XVX, X.T @ Vi_y)
        r = y - X @ b
        return 0.5 * (
            2 * np.log(np.diag(chol)).sum() + np.linalg.slogdet(XVX)[1] + r @ np.linalg.solve(V, r)
        )

    start = time.perf_counter()
    result = minimize(
        negative,
        x0=np.log([1.0, 1.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-6, "fatol": 1e-8},
    )
    seconds = time.perf_counter() - start
    su, se = np.exp(result.x)
    return seconds, su, se, result.nfev


def run(sizes=(500, 1000, 2000, 4000), dense_up_to=1000, repeats=3) -> pd.DataFrame:
    rows = []
    for n in sizes:
        sim = simulate_reference(n=n, n_snps=1000, seed=1)
        relmat = sim.relmat
        design = build_design("response ~ 1 + fix", sim.data, animal="animal", relmat=relmat)
        row = {"N": n}
        for threads in (1, 2):
            seconds, problem = _best_of(
                repeats if n <= 2000 else 1,
                lambda t=threads, d=design, r=relmat: decompose(d, r, threads=t),
            )
            row[f"eigh_{threads}thr_s"] = seconds
        row["eigh_2thr_vs_1thr"] = row["eigh_1thr_s"] / row["eigh_2thr_s"]
        seconds, fit = _best_of(
            repeats, lambda p=problem, d=design, r=relmat: fit_reml(d, r, problem=p, pev=False)
        )
        row["maximise_s"] = seconds
        seconds, _ = _best_of(1, lambda p=problem, d=design, r=relmat: fit_reml(d, r, problem=p))
        row["maximise_blup_pev_s"] = seconds
        row["evaluations"] = fit.iterations
        row["h2"] = fit.h2
        if n <= dense_up_to:
            dense_s, su, se, _ = _dense_reml_seconds(design, relmat, problem)
            row["naive_dense_reml_s"] = dense_s
            row["naive_vs_spectral"] = dense_s / (row["eigh_1thr_s"] + row["maximise_s"])
            row["naive_max_rel_diff"] = max(abs(su / fit.sigma2_u - 1), abs(se / fit.sigma2_e - 1))
            assert abs(loglik(problem, su, se) - fit.loglik) < 1e-3
        rows.append(row)
        print(
            f"  N={n}: eigh {row['eigh_1thr_s']:.3f} s, maximise {row['maximise_s']:.4f} s",
            file=sys.stderr,
        )
    return pd.DataFrame(rows)
