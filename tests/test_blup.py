"""Henderson's mixed-model equations with a sparse A⁻¹: Mrode's answers and the spectral oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_animal import BayesAnimalError, build_design
from bayes_animal.blup import solve_mme
from bayes_animal.reml.spectral import predict
from bayes_animal.structures.additive import dense_relationship
from bayes_animal.structures.pedigree import read_pedigree


def test_mrode_example_4_1_against_blupf90_solutions(mrode):
    data = pd.read_csv(mrode / "ex04_1_wwg.csv")
    solution = solve_mme(
        "wwg ~ 0 + C(sex)",
        data,
        pedigree=mrode / "ex04_1_pedigree.csv",
        sigma2_u=20.0,
        sigma2_e=40.0,
    )
    np.testing.assert_allclose(solution.beta.to_numpy(), [3.40443010, 4.35850233], atol=5e-9)
    ebv = [
        0.09844458,
        -0.01877010,
        -0.04108420,
        -0.00866312,
        -0.18573210,
        0.17687209,
        -0.24945855,
        0.18261469,
    ]
    np.testing.assert_allclose(solution.blup["blup"].to_numpy(), ebv, atol=5e-9)
    diagonal = [0.471, 0.492, 0.456, 0.428, 0.428, 0.442, 0.442, 0.422]
    np.testing.assert_allclose(solution.blup["pev"].to_numpy() / 40.0, diagonal, atol=5e-4)
    np.testing.assert_allclose(solution.blup["accuracy"] ** 2, solution.blup["reliability"])
    np.testing.assert_allclose(solution.blup["sep"] ** 2, solution.blup["pev"])
    assert list(solution.blup.index) == [str(i) for i in range(1, 9)]
    assert list(solution.blup["n_records"]) == [0, 0, 0, 1, 1, 1, 1, 1]


def test_mrode_example_17_7_mme_at_start_values(mrode):
    data = pd.read_csv(mrode / "ex17_7_reml.csv")
    solution = solve_mme(
        "y ~ 0 + C(sex)", data, pedigree=mrode / "ex04_1_pedigree.csv", sigma2_u=0.2, sigma2_e=0.4
    )
    np.testing.assert_allclose(solution.beta.to_numpy(), [0.602, 2.144], atol=5e-4)
    printed = [0.117, -0.025, -0.222, 0.254, -0.135, 0.032, 0.219, -0.305]
    np.testing.assert_allclose(solution.blup["blup"].to_numpy(), printed, atol=5e-4)


def test_sparse_mme_equals_spectral_prediction_on_gryphon():
    from conftest import shared_folder

    folder = shared_folder("gryphon")
    ped = read_pedigree(folder / "gryphonped.csv")
    data = pd.read_csv(folder / "gryphon.csv").dropna(subset=["bwt"])
    sparse_solution = solve_mme("bwt ~ 1 + C(sex)", data, pedigree=ped, sigma2_u=3.0, sigma2_e=3.0)
    A = dense_relationship(ped)
    design = build_design("bwt ~ 1 + C(sex)", data, animal="animal", relmat=A)
    dense = predict(design, A, sigma2_u=3.0, sigma2_e=3.0)
    np.testing.assert_allclose(sparse_solution.beta.to_numpy(), dense.beta.to_numpy(), rtol=1e-9)
    merged = sparse_solution.blup.join(dense.blup.add_suffix("_spectral"))
    np.testing.assert_allclose(merged["blup"], merged["blup_spectral"], atol=1e-9)
    np.testing.assert_allclose(merged["pev"], merged["pev_spectral"], rtol=1e-8)
    np.testing.assert_allclose(merged["reliability"], merged["reliability_spectral"], atol=1e-9)


def test_variances_must_be_positive(mrode):
    data = pd.read_csv(mrode / "ex04_1_wwg.csv")
    with pytest.raises(BayesAnimalError, match="sigma2_u > 0"):
        solve_mme("wwg ~ 1", data, pedigree=mrode / "ex04_1_pedigree.csv", sigma2_u=0, sigma2_e=1)
