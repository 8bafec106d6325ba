"""Every plot is drawn from a real fit, saved to a temporary folder and checked to be a
non-empty PNG; functions return their axes and never show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from bayes_animal import simulate_reference
from bayes_animal.bayes.model import AnimalModel
from bayes_animal.results.plotting import (
    plot_caterpillar,
    plot_h2,
    plot_p_top,
    plot_priors,
    plot_rank_uncertainty,
    plot_trace,
)
from bayes_animal.results.ranking import rank

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted():
    sim = simulate_reference(n=120, n_snps=200, seed=4)
    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    fit = model.fit(draws=300, tune=300, chains=2, random_seed=1, progressbar=False, warn=False)
    ranking = rank(
        fit.idata.posterior["u"].values,
        fit.idata.posterior["animal"].values,
        top=10,
        reml_blup=model.reml.blup["blup"].to_numpy(),
    )
    return model, fit, ranking


def _saved(figure, path):
    figure.savefig(path)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_h2_and_trace(fitted, tmp_path):
    _, fit, _ = fitted
    ax = plot_h2(fit)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    row = fit.reml_check.loc["h2"]
    assert f"REML {fit.reml.h2:.3f}" in labels
    assert f"95% HDI [{row['hdi_low']:.3f}, {row['hdi_high']:.3f}]" in labels
    reml_line = next(line for line in ax.get_lines() if line.get_label().startswith("REML"))
    assert reml_line.get_xdata()[0] == pytest.approx(fit.reml.h2)
    # the shaded HDI spans exactly the interval of the REML check
    shaded = ax.collections[0].get_paths()[0].vertices[:, 0]
    assert shaded.min() >= row["hdi_low"] and shaded.max() <= row["hdi_high"]
    assert shaded.min() - row["hdi_low"] < 0.01 and row["hdi_high"] - shaded.max() < 0.01
    _saved(ax.figure, tmp_path / "h2.png")
    axes = plot_trace(fit)
    assert axes.shape == (3, 2)
    posterior = fit.idata.posterior
    for index, name in enumerate(["sigma2:additive", "sigma2:residual", "h2"]):
        traces = axes[index, 0].get_lines()
        assert len(traces) == posterior.sizes["chain"]  # one line per chain
        np.testing.assert_array_equal(traces[1].get_ydata(), posterior[name].values[1])
    _saved(axes[0, 0].figure, tmp_path / "trace.png")


def test_ranking_plots(fitted, tmp_path):
    _, _, ranking = fitted
    axes = plot_caterpillar(ranking, n=15)
    assert len(axes[0, 0].get_yticks()) == 15
    _saved(axes[0, 0].figure, tmp_path / "caterpillar.png")
    ax = plot_p_top(ranking, n=20)
    heights = [patch.get_width() for patch in ax.patches]
    assert len(heights) == 20 and max(heights) <= 1.0
    _saved(ax.figure, tmp_path / "p_top.png")
    ax = plot_rank_uncertainty(ranking)
    segments = ax.collections[0].get_segments()
    table = ranking.table.sort_values("rank_mean")
    assert len(segments) == len(table)  # one rank interval per candidate
    np.testing.assert_allclose([s[0][1] for s in segments], table["rank_low"])
    np.testing.assert_allclose([s[1][1] for s in segments], table["rank_high"])
    assert ax.get_lines()[-1].get_ydata()[0] == ranking.k + 0.5  # the top-k line
    _saved(ax.figure, tmp_path / "rank_uncertainty.png")


def test_priors_against_posteriors(fitted, tmp_path):
    model, fit, _ = fitted
    axes = plot_priors(fit, model, draws=500)
    assert len(axes) == 3
    assert [line.get_label() for line in axes[0].get_lines()][:2] == ["posterior", "prior"]
    _saved(axes[0].figure, tmp_path / "priors.png")


def test_flat_prior_is_noted_not_drawn(tmp_path):
    sim = simulate_reference(n=80, n_snps=150, seed=6)
    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat, priors="flat")
    fit = model.fit(draws=200, tune=200, chains=2, random_seed=2, progressbar=False, warn=False)
    axes = plot_priors(fit, model, draws=200)
    for ax in axes:
        assert "flat (improper) prior" in [text.get_text() for text in ax.texts]
        # the posterior and the REML line are drawn, no prior curve
        assert [line.get_label() for line in ax.get_lines()] == ["posterior", "REML"]
    assert "additive: Flat on the variance" in fit.idata.attrs["priors"]
