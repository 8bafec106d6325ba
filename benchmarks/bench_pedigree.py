"""Pedigree and genomic relationships: checking + sorting, inbreeding, A⁻¹ and VanRaden's G.

Run through ``python benchmarks/run.py pedigree`` (or ``make bench``).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from bayes_animal.linalg.threads import blas_threads
from bayes_animal.simulate import simulate_pedigree
from bayes_animal.structures.additive import inverse_relationship, mendelian_sampling
from bayes_animal.structures.genomic import genomic_relationship
from bayes_animal.structures.pedigree import read_pedigree


def _timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def run(sizes=(10_000, 100_000, 1_000_000)) -> pd.DataFrame:
    # compile (or load from numba's cache) once, outside the timings
    mendelian_sampling(read_pedigree(simulate_pedigree(n_generations=1, n_per_generation=10)))
    rows = []
    for size in sizes:
        frame = simulate_pedigree(
            n_founders=size // 100,
            n_generations=10,
            n_per_generation=size // 10,
            n_sires=max(20, size // 1000),
            seed=1,
        )
        read_s, pedigree = _timed(lambda f=frame: read_pedigree(f, warn=False))
        inbreeding_s, sampling = _timed(lambda p=pedigree: mendelian_sampling(p))
        inverse_s, inverse = _timed(lambda p=pedigree, s=sampling: inverse_relationship(p, s))
        summary = sampling.summary()
        rows.append(
            {
                "animals": pedigree.size,
                "generations": int(pedigree.generation.max()) + 1,
                "check_and_sort_s": read_s,
                "inbreeding_s": inbreeding_s,
                "a_inverse_s": inverse_s,
                "inbreeding_plus_a_inverse_s": inbreeding_s + inverse_s,
                "a_inverse_nonzeros": inverse.nnz,
                "mean_F": summary["mean_inbreeding"],
                "inbred_animals": summary["inbred_animals"],
            }
        )
        print(
            f"  pedigree {pedigree.size}: {rows[-1]['inbreeding_plus_a_inverse_s']:.2f} s",
            file=sys.stderr,
        )
    return pd.DataFrame(rows)


def run_genomic(animals=1000, markers=10_000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, markers)
    codes = rng.binomial(2, p, size=(animals, markers)).astype(float)
    frame = pd.DataFrame(
        codes,
        index=pd.Index([f"a{i}" for i in range(animals)], name="id"),
        columns=[f"m{j}" for j in range(markers)],
    )
    rows = []
    for threads in (1, 2):
        with blas_threads(threads):
            seconds, result = _timed(lambda: genomic_relationship(frame, ridge=0.01, warn=False))
        rows.append(
            {
                "animals": animals,
                "markers": markers,
                "blas_threads": threads,
                "G_with_definiteness_check_s": seconds,
                "mean_diagonal": result.relmat.mean_diagonal,
            }
        )
    return pd.DataFrame(rows)
