"""Every plot is drawn from a real fit, saved to a temporary folder and checked to be a
non-empty PNG; functions return their axes and never show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from bayes_animal import simulate_reference
from bayes_animal.model import AnimalModel
from bayes_animal.plotting import (
    plot_caterpillar,
    plot_h2,
    plot_p_top,
    plot_priors,
    plot_rank_uncertainty,
    plot_trace,
)
from bayes_animal.ranking import rank

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
    assert any(label.startswith("REML") for label in labels)
    assert any("HDI" in label for label in labels)
    _saved(ax.figure, tmp_path / "h2.png")
    axes = plot_trace(fit)
    assert axes.shape == (3, 2)
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
    texts = [text.get_text() for text in axes[0].texts]
    assert "flat (improper) prior" in texts
    assert np.isfinite(fit.summary().loc["h2", "mean"])
