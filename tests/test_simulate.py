"""The reference simulation: reproducible, the study's defaults, A on its own (unscaled) scale."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_animal import simulate_reference


def test_same_seed_same_data_other_seed_other_data():
    first = simulate_reference(n=120, n_snps=200, seed=5)
    second = simulate_reference(n=120, n_snps=200, seed=5)
    other = simulate_reference(n=120, n_snps=200, seed=6)
    np.testing.assert_array_equal(first.data["response"], second.data["response"])
    np.testing.assert_array_equal(first.relmat.matrix, second.relmat.matrix)
    assert not np.allclose(first.data["response"], other.data["response"])


def test_defaults_follow_the_study():
    sim = simulate_reference()
    assert list(sim.data.columns) == ["animal", "fix", "response"]
    assert len(sim.data) == 1000
    assert sim.data["animal"].iloc[0] == "ind0001" and sim.data["animal"].iloc[-1] == "ind1000"
    truth = sim.truth
    assert (truth.mu, truth.b, truth.sigma2_u) == (4.0, 2.0, 5.0)
    assert truth.sigma2_e == pytest.approx(5.0 / 3.0)
    assert truth.h2 == pytest.approx(0.75)
    # A = MᵀM/m with 0/1/2 codes is not scaled: mean diagonal ≈ 1.72 as in shared/data/seed_sim
    assert sim.relmat.mean_diagonal == pytest.approx(1.72, abs=0.03)
    # integer 0/1/2 codes: m·A is a matrix of integers
    scaled = sim.relmat.matrix * 1000
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-8)
    assert np.linalg.eigvalsh(sim.relmat.matrix)[0] > -1e-10


def test_codes_and_covariate_distribution():
    sim = simulate_reference(n=400, n_snps=3000, seed=2)
    # the latent SNP value of animal i is N(1, 1 + |F_i|²) with F_i ~ N(0, I_5); a_ii is the
    # mean squared code over SNPs, so E[a_ii] = P(0.2 ≤ x ≤ 1.8) + 4 P(x > 1.8) over that mixture
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    sd = np.sqrt(1.0 + rng.chisquare(5, size=200_000))
    high = norm.sf(0.8 / sd)  # P(x > 1.8) = P(x < 0.2) by symmetry about 1
    expected = np.mean((1.0 - 2.0 * high) + 4.0 * high)
    diag = np.diag(sim.relmat.matrix)
    # the mean over 400 animals: a_ii varies across animals with sd ≈ 0.08, so SE ≈ 0.004
    assert diag.mean() == pytest.approx(expected, abs=0.015)
    assert diag.std() > 0.05  # animals differ through F_i
    assert abs(sim.data["fix"].mean()) < 0.2
    assert sim.data["fix"].std() == pytest.approx(1.0, abs=0.1)


def test_breeding_values_and_residuals_have_the_simulated_variances():
    sim = simulate_reference(n=1500, n_snps=1500, seed=9)
    u = sim.truth.u.to_numpy()
    expected_var_u = sim.truth.sigma2_u * sim.relmat.mean_diagonal
    assert np.mean(u**2) == pytest.approx(expected_var_u, rel=0.35)
    residual = sim.data["response"] - 4 - 2 * sim.data["fix"] - u
    assert residual.var() == pytest.approx(5.0 / 3.0, rel=0.1)


def test_every_number_is_a_keyword_and_bad_values_are_rejected():
    sim = simulate_reference(
        n=50, n_snps=60, n_factors=2, mu=0.0, b=-1.0, sigma2_u=2.0, lam=1.0, seed=0
    )
    assert sim.truth.sigma2_e == 2.0 and sim.truth.h2 == 0.5
    assert len(sim.truth.u) == 50
    with pytest.raises(ValueError, match="n ≥ 2"):
        simulate_reference(n=1)
    with pytest.raises(ValueError, match="lam > 0"):
        simulate_reference(n=10, lam=0)


def test_herd_pedigree_structure():
    from bayes_animal.simulate import simulate_herd_pedigree
    from bayes_animal.structures.pedigree import read_pedigree

    table = simulate_herd_pedigree(n_animals=2200, n_generations=10, n_herds=8, seed=3)
    assert len(table) == 2200 and set(table["herd"]) == set(range(8))
    ped = read_pedigree(table[["id", "sire", "dam"]], warn=False)  # valid: no sire used as dam
    assert ped.generation.max() == 10
    calves = table[table["generation"] > 0]
    known = calves[calves["dam"] != "0"]
    herd_of = table.set_index("id")["herd"]
    # a dam belongs to her calf's herd; a few dams are unknown
    assert (herd_of.loc[known["dam"]].to_numpy() == known["herd"].to_numpy()).all()
    assert 0.01 < (calves["dam"] == "0").mean() < 0.12
    # sires are shared across herds (AI), so herds are connected
    herds_per_sire = calves.groupby("sire")["herd"].nunique()
    assert herds_per_sire.max() >= 6


def test_records_follow_the_simulated_variances():
    """The pedigree recursion gives (a, m) ~ N(0, G0 ⊗ A): the founders' values have the
    variances and the covariance of G0; records carry their components."""
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

    table = simulate_herd_pedigree(n_animals=22000, n_generations=10, seed=1)
    variances = {
        "additive": 2.0,
        "maternal": 1.0,
        "additive:maternal": -0.5,
        "pe": 1.5,
        "hy": 0.5,
        "residual": 3.0,
    }
    sim = simulate_records(
        table, variances=variances, records_per_animal=(1, 3), groups={"hy": 400}, seed=2
    )
    founders = table["id"][table["generation"] == 0]
    a = sim.effects["additive"].loc[founders]
    m = sim.effects["maternal"].loc[founders]
    assert a.var() == pytest.approx(2.0, rel=0.1) and m.var() == pytest.approx(1.0, rel=0.1)
    assert np.cov(a, m)[0, 1] == pytest.approx(-0.5, abs=0.1)
    assert sim.effects["pe"].var() == pytest.approx(1.5, rel=0.1)
    assert sim.effects["hy"].var() == pytest.approx(0.5, rel=0.2)
    data = sim.data
    assert set(data.columns) == {"animal", "dam", "x", "hy", "y"}
    assert data.groupby("animal").size().between(1, 3).all()
    unknown = data["dam"] == "0"
    assert unknown.any() and not unknown.all()
    # y without its fixed part: the sum of the components' variances (Willham: + σAM)
    total = 2.0 + 1.0 - 0.5 + 1.5 + 0.5 + 3.0
    residual_y = data["y"] - 10.0 - 0.5 * data["x"]
    assert residual_y[~unknown].var() == pytest.approx(total, rel=0.1)
    with pytest.raises(ValueError, match="unknown components"):
        simulate_records(table, variances={"additive": 1, "residual": 1, "cage": 1})
