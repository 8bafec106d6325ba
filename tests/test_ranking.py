"""Rankings from posterior draws: invariants, candidate subsets, selections, errors, and the
behaviour with high and low heritability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_animal.results.ranking import RankingError, pairwise_probabilities, rank


@pytest.fixture
def draws():
    rng = np.random.default_rng(0)
    q = 40
    means = np.linspace(-2, 2, q)
    values = means + rng.normal(0, 0.8, size=(2000, q))
    return values, np.array([f"a{i}" for i in range(q)], dtype=object)


def test_invariants(draws):
    values, ids = draws
    ranking = rank(values, ids, top=5)
    table = ranking.table
    n = len(ids)
    assert table["p_top"].sum() == pytest.approx(5)
    assert table["rank_mean"].sum() == pytest.approx(n * (n + 1) / 2)
    assert (table["rank_low"] <= table["rank_median"]).all()
    assert (table["rank_median"] <= table["rank_high"]).all()
    pair = pairwise_probabilities(values, ids, ["a0", "a10", "a39"])
    np.testing.assert_allclose(pair + pair.T + np.eye(3), np.ones((3, 3)))
    assert pair.loc["a39", "a0"] > 0.99


def test_table_sorted_by_ebv_with_intervals(draws):
    values, ids = draws
    table = rank(values, ids, top=5, threshold=1.0).table
    assert table.index[0] == "a39"
    assert table["ebv_mean"].is_monotonic_decreasing
    assert (table["hdi_low"] < table["ebv_mean"]).all()
    assert (table["ebv_mean"] < table["hdi_high"]).all()
    np.testing.assert_allclose(table.loc["a39", "p_above"], (values[:, 39] > 1.0).mean())


def test_candidate_subset_ranks_only_within_itself(draws):
    values, ids = draws
    subset = ["a1", "a5", "a7", "a30"]
    ranking = rank(values, ids, candidates=subset, top=2)
    assert set(ranking.table.index) == set(subset)
    assert ranking.table["rank_mean"].sum() == pytest.approx(4 * 5 / 2)
    assert ranking.table["p_top"].sum() == pytest.approx(2)
    mask = np.isin(ids, subset)
    same = rank(values, ids, candidates=mask, top=2)
    pd.testing.assert_frame_equal(same.table, ranking.table)


def test_selections_and_expected_gain(draws):
    values, ids = draws
    blup = values.mean(axis=0)[::-1]  # a deliberately wrong ranking
    ranking = rank(values, ids, top=5, reml_blup=blup)
    chosen = ranking.selections
    assert set(chosen["by_mean"].ids) == {f"a{i}" for i in range(35, 40)}
    assert chosen["by_probability"].expected_true_top_k >= chosen["by_mean"].expected_true_top_k
    assert chosen["reml"].expected_true_top_k < 0.01
    expected_gain = values[:, 35:].mean(axis=1).mean()
    assert chosen["by_mean"].gain_mean == pytest.approx(expected_gain)
    assert chosen["by_mean"].gain_hdi_low < expected_gain < chosen["by_mean"].gain_hdi_high
    frame = ranking.selections_frame()
    assert list(frame.index) == ["by_mean", "by_probability", "reml"]
    assert ranking.table.loc["a0", "reml_rank"] == 1


def test_top_fraction_and_default_k(draws):
    values, ids = draws
    assert rank(values, ids, top_fraction=0.25).k == 10
    assert rank(values, ids).k == 4
    assert len(rank(values, ids, top=3).top()) == 3


def test_three_dimensional_draws_are_flattened(draws):
    values, ids = draws
    stacked = values.reshape(4, 500, -1)
    pd.testing.assert_frame_equal(rank(stacked, ids, top=3).table, rank(values, ids, top=3).table)


def test_errors_name_the_problem(draws):
    values, ids = draws
    with pytest.raises(RankingError, match=r"2 candidate id\(s\).*'zz', 'yy'"):
        rank(values, ids, candidates=["a1", "zz", "yy"])
    with pytest.raises(RankingError, match="at least two candidates"):
        rank(values, ids, candidates=["a1"])
    with pytest.raises(RankingError, match="top must lie between 1 and"):
        rank(values, ids, top=41)
    with pytest.raises(RankingError, match="not both"):
        rank(values, ids, top=3, top_fraction=0.1)
    with pytest.raises(RankingError, match="39 ids"):
        rank(values, ids[:-1])
    with pytest.raises(RankingError, match="one value per animal"):
        rank(values, ids, candidates=np.ones(3, dtype=bool))


def test_ranking_is_vectorised_for_many_animals():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((400, 3000))
    ranking = rank(values, np.arange(3000), top=30)
    assert ranking.table["p_top"].sum() == pytest.approx(30)


def _simulated_fit(h2: float, seed: int):
    from bayes_animal import simulate_reference
    from bayes_animal.bayes.model import AnimalModel

    lam = h2 / (1 - h2)
    sim = simulate_reference(n=250, n_snps=400, sigma2_u=5.0, lam=lam, seed=seed)
    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    fit = model.fit(draws=500, tune=500, chains=2, random_seed=seed, progressbar=False, warn=False)
    return sim, model, fit


def test_high_and_low_heritability_behave_as_they_should():
    sims = {h2: _simulated_fit(h2, seed=5) for h2 in (0.95, 0.1)}
    results = {}
    for h2, (sim, model, fit) in sims.items():
        draws = fit.idata.posterior["u"].values
        ranking = rank(
            draws,
            fit.idata.posterior["animal"].values,
            top=25,
            reml_blup=model.reml.blup["blup"].to_numpy(),
        )
        truth = sim.truth.u.loc[ranking.table.index]
        results[h2] = {
            "agreement": np.corrcoef(ranking.table["rank_mean"], truth.rank(ascending=False))[0, 1],
            "width": (ranking.table["rank_high"] - ranking.table["rank_low"]).mean(),
            "reml_top_p": ranking.selections["reml"].expected_true_top_k / 25,
        }
    high, low = results[0.95], results[0.1]
    assert high["agreement"] > 0.9
    assert low["width"] > 1.5 * high["width"]
    assert low["reml_top_p"] < high["reml_top_p"]


def test_seed_sim_posterior_ranking_matches_rrblup():
    from conftest import shared_folder

    from bayes_animal.bayes.model import AnimalModel

    folder = shared_folder("seed_sim")
    model = AnimalModel(
        "response ~ 1 + fix", pd.read_csv(folder / "pheno.csv"), relmat=folder / "A.csv"
    )
    fit = model.fit(random_seed=9, progressbar=False, warn=False)
    posterior = fit.idata.posterior
    ranking = rank(
        posterior["u"].values,
        posterior["animal"].values,
        top=50,
        reml_blup=model.reml.blup["blup"].to_numpy(),
    )
    rrblup = pd.read_csv(folder / "blups_rrBLUP.csv").set_index("animal")["u_hat"]
    ours = ranking.table["ebv_mean"].loc[rrblup.index]
    spearman = np.corrcoef(ours.rank(), rrblup.rank())[0, 1]
    assert spearman > 0.999
    assert len(ranking.table) == 1000
    assert ranking.table["p_top"].sum() == pytest.approx(50)


def test_rank_quantiles_equal_numpys():
    """The one-sort median and inverted-CDF quantiles of the ranks equal NumPy's."""
    from bayes_animal.results.ranking import _rank_quantiles

    rng = np.random.default_rng(7)
    for draws in (400, 401, 7):
        ranks = rng.integers(1, 60, size=(draws, 50)).astype(np.int32)
        median, low, high = _rank_quantiles(ranks)
        np.testing.assert_array_equal(median, np.median(ranks, axis=0))
        np.testing.assert_array_equal(low, np.quantile(ranks, 0.05, axis=0, method="inverted_cdf"))
        np.testing.assert_array_equal(high, np.quantile(ranks, 0.95, axis=0, method="inverted_cdf"))
