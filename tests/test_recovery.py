"""Recovery of known variance components from simulated multi-effect data, at several sizes:
each estimate ± 1.96 SE covers the truth at the expected rate, and the errors shrink with n."""

from __future__ import annotations

import warnings

import numpy as np

from bayes_animal import reml
from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

TRUTH = {
    "additive": 2.0,
    "maternal": 1.0,
    "additive:maternal": -0.4,
    "pe": 1.0,
    "hy": 0.5,
    "residual": 3.0,
}


def _fit(n_animals: int, seed: int):
    table = simulate_herd_pedigree(n_animals=n_animals, n_generations=6, seed=seed)
    sim = simulate_records(
        table,
        variances=TRUTH,
        records_per_animal=(1, 3),
        groups={"hy": max(n_animals // 50, 20)},
        seed=seed + 100,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reml(
            "y ~ 1 + x + (1 | hy) + ide(animal)",
            sim.data,
            pedigree=table[["id", "sire", "dam"]],
            maternal="dam",
            maternal_covariance=True,
            pev=False,
        )


def _standardised_errors(fit) -> dict[str, float]:
    out = {}
    for name, value in TRUTH.items():
        table = fit.covariances if ":" in name else fit.components
        column = "covariance" if ":" in name else "variance"
        out[name] = (table.loc[name, column] - value) / table.loc[name, "se"]
    return out


def test_recovery_of_every_component_over_simulated_data_sets():
    errors = []
    for seed in range(8):
        fit = _fit(1500, seed)
        assert fit.converged and not fit.boundary
        errors.append(list(_standardised_errors(fit).values()))
    z = np.array(errors)  # 8 data sets × 6 parameters
    # 48 intervals at 95 %: fewer than 42 covering the truth has probability < 0.5 %
    assert (np.abs(z) < 1.96).sum() >= 42, z
    assert np.all(np.abs(z) < 4.5), z
    # no systematic bias: the mean z of each parameter within ±3/√8
    assert np.all(np.abs(z.mean(axis=0)) < 3 / np.sqrt(len(z))), z.mean(axis=0)


def test_standard_errors_shrink_with_the_size_of_the_data():
    small = [_fit(1500, seed) for seed in range(3)]
    large = [_fit(12000, seed) for seed in range(3)]
    for name in ("additive", "maternal", "pe", "residual"):
        se_small = np.mean([f.components.loc[name, "se"] for f in small])
        se_large = np.mean([f.components.loc[name, "se"] for f in large])
        assert se_large < 0.55 * se_small, name  # about 1/√8 ≈ 0.35 expected
    for fit in large:
        z = _standardised_errors(fit)
        assert all(abs(v) < 4 for v in z.values()), z
