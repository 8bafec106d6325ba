"""Many traits on one relationship matrix: REML for 1 000 traits, Bayesian fits for many.

Run through ``python benchmarks/run.py many``. The REML batch is timed as a whole process
(``bayes-animal reml --traits``: imports, reading the CSVs, one eigendecomposition, the
batch, writing traits.csv) and in-process with one and two local workers; rrBLUP's loop is the
issue's figure (5.3 s per trait on N = 1 000 here; R is not installed on this machine).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_animal import simulate_reference
from bayes_animal.many import fit_many, reml_many

RRBLUP_SECONDS_PER_TRAIT = 5.3  # the issue: rrBLUP's mixed.solve per trait on N = 1 000


def simulated_traits(n_traits: int, n: int = 1000, seed: int = 5):
    """``n_traits`` traits on the reference simulation's animals: h² from 0.05 to 0.9."""
    sim = simulate_reference(n=n, n_snps=1000, seed=1859)
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(sim.relmat.matrix + 1e-8 * np.eye(n))
    positions = pd.Index(sim.relmat.ids).get_indexer(sim.data["animal"])
    h2 = rng.uniform(0.05, 0.9, size=n_traits)
    u = chol @ rng.standard_normal((n, n_traits))
    e = rng.standard_normal((len(positions), n_traits))
    values = 10 + np.sqrt(h2) * u[positions] + np.sqrt(1 - h2) * e
    traits = pd.DataFrame(values, columns=[f"trait{k:04d}" for k in range(n_traits)])
    data = pd.concat([sim.data.reset_index(drop=True), traits], axis=1)
    return data, sim.relmat


def run_reml(n_traits: int = 1000) -> pd.DataFrame:
    data, relmat = simulated_traits(n_traits)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data.to_csv(folder / "pheno.csv", index=False)
        pd.DataFrame(relmat.matrix, index=relmat.ids, columns=relmat.ids).to_csv(
            folder / "A.csv", index_label="animal"
        )
        command = [
            sys.executable, "-m", "bayes_animal.cli", "reml", "--data", folder / "pheno.csv",
            "--relmat", folder / "A.csv", "--formula", "~ 1 + fix", "--traits", "trait*",
            "--out", folder / "out", "--no-progress",
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)  # warm caches
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            rows.append(
                {
                    "how": "bayes-animal reml --traits (whole process)",
                    "seconds": time.perf_counter() - start,
                }
            )
        table = pd.read_csv(folder / "out" / "traits.csv")
    for workers in (1, 2):
        start = time.perf_counter()
        reml_many("~ 1 + fix", data, "trait*", relmat=relmat, workers=workers, progress=False)
        rows.append(
            {
                "how": f"reml_many in-process, workers={workers}",
                "seconds": time.perf_counter() - start,
            }
        )
    frame = pd.DataFrame(rows).groupby("how", sort=False)["seconds"].median().reset_index()
    frame.insert(0, "traits", n_traits)
    frame["rrBLUP_loop_s (issue)"] = RRBLUP_SECONDS_PER_TRAIT * n_traits
    frame["speed_vs_rrBLUP"] = frame["rrBLUP_loop_s (issue)"] / frame["seconds"]
    frame["ok_traits"] = int((table["status"] == "ok").sum())
    return frame


def run_bayes(n_traits: int = 100, n: int = 1000) -> pd.DataFrame:
    """Default-settings Bayesian fits of ``n_traits`` traits: here in one process, two local
    workers, and a Dask LocalCluster with one and with two workers."""
    data, relmat = simulated_traits(n_traits, n=n)
    rows = []

    def timed(how, **options):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            result = fit_many("~ 1 + fix", data, "trait*", relmat=relmat, progress=False,
                              random_seed=1, **options)  # fmt: skip
            seconds = time.perf_counter() - start
        ok = int((result.table["status"] == "ok").sum())
        rows.append({"traits": n_traits, "N": n, "how": how, "seconds": seconds,
                     "seconds_per_trait": seconds / n_traits, "diagnostics_ok": ok})  # fmt: skip
        print(f"  {how}: {seconds:.0f} s", file=sys.stderr)

    timed("local processes (the default: one per core, 2 here)")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("  distributed is not installed: Dask rows skipped", file=sys.stderr)
        return pd.DataFrame(rows)
    for workers in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)  # fmt: skip
            client = Client(cluster)
        try:
            timed(f"Dask LocalCluster, {workers} worker(s)", scheduler=client)
        finally:
            client.close()
            cluster.close()
    frame = pd.DataFrame(rows)
    one = frame.loc[frame["how"].str.contains("1 worker"), "seconds"]
    if len(one):
        frame["speed_vs_one_dask_worker"] = float(one.iloc[0]) / frame["seconds"]
    return frame
