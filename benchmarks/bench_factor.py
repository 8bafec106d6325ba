"""The sparse factorisation of a 100 000-animal mixed-model matrix, by library.

The matrix: a simulated herd pedigree of 100 000 animals, 60 % with 1–3 records, animal +
permanent environment (order ≈ 160 000). For each library that installs from wheels (and is
installed in the running environment; the others are listed as such): the one-off analysis
(ordering, symbolic), a numeric refactorisation with new values, the log-determinant, and the
selected inverse that the REML score needs — where the library offers it.

Run with an interpreter that has the candidates: ``pip install qdldl pypardiso sparsax
cholespy`` beside bayes_animal (sparsax brings JAX).
"""

from __future__ import annotations

import importlib.util
import time
import warnings

import numpy as np
import pandas as pd
from scipy import sparse


def _matrix(n_animals: int = 100_000):
    from bayes_animal.api import model_inputs
    from bayes_animal.linalg.mme import MixedModelEquations
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_records
    from bayes_animal.spec.parameters import Parameters

    table = simulate_herd_pedigree(n_animals=n_animals, n_generations=10, seed=1)
    sim = simulate_records(
        table,
        variances={"additive": 2.0, "pe": 1.0, "residual": 3.0},
        records_per_animal=(1, 3),
        phenotyped=0.6,
        seed=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = model_inputs(
            "y ~ 1 + x + ide(animal)", sim.data, pedigree=table[["id", "sire", "dam"]]
        )
    params = Parameters.from_spec(inputs.design.spec)
    mme = MixedModelEquations(inputs.design, inputs.structures(), params, ordering="natural")
    theta = np.array([2.0, 1.0, 3.0])
    lower = mme.pattern.copy()
    lower.data = mme.values(theta)
    other = mme.pattern.copy()
    other.data = mme.values(theta * np.array([1.1, 0.9, 1.05]))
    return lower.tocsc(), other.tocsc()


def _clock(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def _ours(lower, other) -> dict:
    from bayes_animal.linalg.ldl import analyse

    analyse_s, analysis = _clock(lambda: analyse(lower))
    analysis.factorise(lower.data)  # numba kernels loaded
    factor_s, factor = _clock(lambda: analysis.factorise(other.data))
    selinv_s, _ = _clock(factor.selected_inverse)
    return {
        "analyse_s": analyse_s,
        "refactor_s": factor_s,
        "selected_inverse_s": selinv_s,
        "logdet": factor.logdet,
        "licence": "MIT (ours: numba + LAPACK)",
    }


def _qdldl(lower, other) -> dict:
    import qdldl

    upper = sparse.triu(lower.T.tocsc()).tocsc()
    analyse_s, solver = _clock(lambda: qdldl.Solver(upper, upper=True))
    other_upper = sparse.triu(other.T.tocsc()).tocsc()
    factor_s, _ = _clock(lambda: solver.update(other_upper, upper=True))
    _, d, _ = solver.factors()
    return {
        "analyse_s": analyse_s,
        "refactor_s": factor_s,
        "selected_inverse_s": np.nan,
        "logdet": float(np.sum(np.log(d))),
        "licence": "Apache-2.0 (AMD inside; no selected inverse)",
    }


def _pypardiso(lower, other) -> dict:
    import pypardiso

    full = (lower + sparse.tril(lower, -1).T).tocsr()
    solver = pypardiso.PyPardisoSolver(mtype=2)
    upper = sparse.triu(full).tocsr()
    analyse_s, _ = _clock(lambda: solver.factorize(upper))
    other_upper = sparse.triu((other + sparse.tril(other, -1).T).tocsr()).tocsr()
    factor_s, _ = _clock(lambda: solver.factorize(other_upper))
    return {
        "analyse_s": analyse_s,
        "refactor_s": factor_s,
        "selected_inverse_s": np.nan,
        "logdet": np.nan,
        "licence": "MKL (Intel Simplified Software Licence); no log-det or selected inverse",
    }


def _sparsax(lower, other) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import sparsax

    coo = lower.tocoo()
    rows, cols = coo.col.astype(np.int32), coo.row.astype(np.int32)  # upper triangle
    n = lower.shape[0]
    analyse_s, _ = _clock(lambda: float(sparsax.logdet(rows, cols, coo.data, n)))
    other_values = other.tocoo().data
    factor_s, logdet = _clock(lambda: float(sparsax.logdet(rows, cols, other_values, n)))
    selinv_s, _ = _clock(lambda: np.asarray(sparsax.selinv(rows, cols, other_values, n)))
    return {
        "analyse_s": analyse_s,
        "refactor_s": factor_s,
        "selected_inverse_s": selinv_s,
        "logdet": logdet,
        "licence": "BSD-3 wrapper; its wheel bundles CHOLMOD's GPL Supernodal module; needs JAX",
    }


def run(n_animals: int = 100_000) -> pd.DataFrame:
    lower, other = _matrix(n_animals)
    rows = []
    for name, module, function in (
        ("bayes_animal (AMD + LDLᵀ with dense block)", None, _ours),
        ("sparsax 0.11 (CHOLMOD)", "sparsax", _sparsax),
        ("qdldl", "qdldl", _qdldl),
        ("pypardiso", "pypardiso", _pypardiso),
    ):
        if module is not None and importlib.util.find_spec(module) is None:
            rows.append({"library": name, "licence": "not installed in this environment"})
            continue
        rows.append({"library": name, "order": lower.shape[0], **function(lower, other)})
    return pd.DataFrame(rows)


if __name__ == "__main__":  # pragma: no cover
    print(run().to_string(index=False))
