"""Figures for papers: the h² posterior against REML, traces, variance components against their
priors, and the ranking plots breeders use (caterpillar, P(top k), rank uncertainty).

Every function draws on matplotlib axes (created when not given), returns them and never calls
``show``; save with ``ax.figure.savefig(...)``.
"""

from __future__ import annotations

import numpy as np

from .posterior import HDI_PROB, AnimalFit

__all__ = [
    "plot_caterpillar",
    "plot_h2",
    "plot_p_top",
    "plot_priors",
    "plot_rank_uncertainty",
    "plot_trace",
]


def _axes(ax=None, *, nrows: int = 1, ncols: int = 1, figsize=(6.0, 4.0)):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax
    _, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
    return axes[0, 0] if nrows == ncols == 1 else axes


def _ratio_key(fit: AnimalFit) -> str:
    """h², or the single effect's proportion in a model without an additive effect."""
    from ..spec.parameters import proportion_name

    return proportion_name(fit.main_effect())


def _default_names(fit: AnimalFit) -> list[str]:
    """Every variance (and covariance) of the fit, then h² (or the main proportion); a
    variance the family holds fixed (a latent residual: the same value in every draw) is
    left out."""
    keys = [
        q.key
        for q in fit.parameters.quantities()
        if q.kind in ("variance", "covariance") and q.key in fit.summary().index
    ]
    ratio = _ratio_key(fit)
    return keys if _the_same_in_every_draw(fit, ratio) else [*keys, ratio]


def _the_same_in_every_draw(fit: AnimalFit, key: str) -> bool:
    """One effect and no free residual (a Poisson model without overdispersion): its
    proportion is 1 in every draw, and has no density to draw."""
    return bool(np.ptp(np.asarray(fit.idata.posterior[key].values)) == 0)


def plot_h2(fit: AnimalFit, ax=None):
    """Posterior density of h² with its 95 % HDI, the REML estimate and its ±1.96 SE interval
    (the single effect's proportion of σ²P in a model without an additive effect).

    Returns
    -------
    matplotlib.axes.Axes
    """
    from scipy.stats import gaussian_kde

    ax = _axes(ax)
    key = _ratio_key(fit)
    draws = np.asarray(fit.idata.posterior[key].values).ravel()
    if _the_same_in_every_draw(fit, key):
        ax.axvline(draws[0], color="C0", label=f"{key} = {draws[0]:.3g} in every draw")
        ax.set_xlabel(f"{key} (proportion of σ²P)")
        ax.set_yticks([])
        ax.set_title(f"{key} is fixed by the model: no residual variance on the latent scale")
        ax.legend(fontsize="small", frameon=False)
        return ax
    grid = np.linspace(max(draws.min() - 0.05, 0.0), min(draws.max() + 0.05, 1.0), 400)
    density = gaussian_kde(draws)(grid)
    row = fit.reml_check.loc[key]
    ax.plot(grid, density, color="C0", label="posterior")
    inside = (grid >= row["hdi_low"]) & (grid <= row["hdi_high"])
    ax.fill_between(
        grid[inside],
        density[inside],
        color="C0",
        alpha=0.25,
        label=f"{HDI_PROB:.0%} HDI [{row['hdi_low']:.3f}, {row['hdi_high']:.3f}]",
    )
    reml, se = row["reml"], row["reml_se"]
    ax.axvline(reml, color="C3", label=f"REML {reml:.3f}")
    ax.axvspan(
        reml - 1.96 * se,
        reml + 1.96 * se,
        color="C3",
        alpha=0.1,
        label=f"REML ± 1.96 SE (SE {se:.3f})",
    )
    ax.set_xlabel("h² = σ²A / σ²P" if key == "h2" else f"{key} (proportion of σ²P)")
    ax.set_ylabel("density")
    ax.set_title(f"Heritability: posterior mean {draws.mean():.3f}")
    ax.legend(fontsize="small", frameon=False)
    return ax


def plot_trace(fit: AnimalFit, axes=None, *, names: list[str] | None = None):
    """Trace (per chain) and density of every variance and of h² (or ``names``); returns a
    (number of names) × 2 array of axes."""
    from scipy.stats import gaussian_kde

    names = _default_names(fit) if names is None else names
    axes = _axes(axes, nrows=len(names), ncols=2, figsize=(9.0, 2.2 * len(names)))
    for row, name in enumerate(names):
        values = np.asarray(fit.idata.posterior[name].values)
        for chain, trace in enumerate(values):
            axes[row, 0].plot(trace, lw=0.5, color=f"C{chain}", alpha=0.8)
            grid = np.linspace(values.min(), values.max(), 200)
            axes[row, 1].plot(grid, gaussian_kde(trace)(grid), color=f"C{chain}", lw=1)
        axes[row, 0].set_ylabel(name)
        axes[row, 1].axvline(
            fit.reml_check.loc[name, "reml"], color="k", ls="--", lw=1, label="REML"
        )
    axes[0, 1].legend(fontsize="small", frameon=False)
    axes[-1, 0].set_xlabel("draw")
    axes[-1, 1].set_xlabel("value")
    axes[0, 0].set_title("traces by chain")
    axes[0, 1].set_title("densities by chain")
    return axes


def plot_caterpillar(ranking, *, n: int = 20, axes=None):
    """The top ``n`` candidates: EBV with its 95 % HDI (left) and expected rank with its 90 %
    rank interval (right). Returns the two axes."""
    top = ranking.table.head(n)
    axes = _axes(axes, nrows=1, ncols=2, figsize=(10.0, 0.3 * len(top) + 1.5))
    left, right = axes[0, 0], axes[0, 1]
    position = np.arange(len(top))[::-1]
    left.errorbar(
        top["ebv_mean"],
        position,
        xerr=[top["ebv_mean"] - top["hdi_low"], top["hdi_high"] - top["ebv_mean"]],
        fmt="o",
        color="C0",
        ecolor="C0",
        elinewidth=1,
        capsize=2,
    )
    left.set_yticks(position, top.index)
    left.set_xlabel("breeding value (posterior mean, 95% HDI)")
    if "reml_blup" in top:
        left.scatter(
            top["reml_blup"], position, marker="x", color="C3", label="REML BLUP", zorder=3
        )
        left.legend(fontsize="small", frameon=False)
    right.errorbar(
        top["rank_mean"],
        position,
        xerr=[top["rank_mean"] - top["rank_low"], top["rank_high"] - top["rank_mean"]],
        fmt="o",
        color="C2",
        ecolor="C2",
        elinewidth=1,
        capsize=2,
    )
    right.axvline(ranking.k + 0.5, color="grey", ls="--", lw=1, label=f"top {ranking.k}")
    right.set_yticks(position, [""] * len(top))
    right.set_xlabel("rank (expected, 90% interval)")
    right.legend(fontsize="small", frameon=False)
    return axes


def plot_p_top(ranking, *, n: int = 30, ax=None):
    """P(in the true top k) of the ``n`` candidates most likely to be there."""
    ax = _axes(ax, figsize=(7.0, 0.22 * n + 1.5))
    chosen = ranking.table.sort_values("p_top", ascending=False).head(n)
    position = np.arange(len(chosen))[::-1]
    ax.barh(position, chosen["p_top"], color="C0")
    ax.set_yticks(position, chosen.index, fontsize="small")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"P(in the true top {ranking.k})")
    ax.set_title("Probability of being a top candidate")
    return ax


def plot_rank_uncertainty(ranking, ax=None):
    """Each candidate's 90 % rank interval against its expected rank."""
    ax = _axes(ax)
    table = ranking.table.sort_values("rank_mean")
    ax.vlines(
        table["rank_mean"], table["rank_low"], table["rank_high"], color="C0", alpha=0.4, lw=1
    )
    ax.plot(table["rank_mean"], table["rank_mean"], color="k", lw=1)
    ax.axhline(ranking.k + 0.5, color="C3", ls="--", lw=1, label=f"top {ranking.k}")
    ax.set_xlabel("expected rank")
    ax.set_ylabel("90% rank interval")
    ax.set_title("Rank uncertainty")
    ax.legend(fontsize="small", frameon=False)
    return ax


def plot_priors(
    fit: AnimalFit, model, *, draws: int = 4000, axes=None, random_seed: int = 0, names=None
):
    """Posterior densities of every variance and of h² (or ``names``) against their priors (a
    flat or inverse-Wishart prior is noted, not drawn). Returns the axes."""
    import pymc as pm
    from scipy.stats import gaussian_kde

    names = [
        n for n in (_default_names(fit) if names is None else names) if not n.startswith("cov:")
    ]
    axes = _axes(axes, nrows=1, ncols=len(names), figsize=(4.0 * len(names), 3.5))[0]
    built = model.build(fit.parameterisation)
    note = "flat (improper) prior"
    if any(p.name.startswith("iw_") for p in built.potentials):
        prior, note = None, "inverse-Wishart prior (not drawn)"
    else:
        try:
            prior = pm.draw([built[name] for name in names], draws=draws, random_seed=random_seed)
        except (NotImplementedError, TypeError, ValueError):
            prior = None  # an improper (flat) prior cannot be drawn
    for index, name in enumerate(names):
        ax = axes[index]
        values = np.asarray(fit.idata.posterior[name].values).ravel()
        ratio = name in ("h2", "repeatability") or name.startswith("prop:")
        high = np.quantile(values, 0.999) * (1.0 if ratio else 1.5)
        low = -1.0 if name.startswith("corr:") else 0.0
        grid = np.linspace(low, min(high, 1.0) if ratio else high, 300)
        ax.plot(grid, gaussian_kde(values)(grid), color="C0", label="posterior")
        if prior is not None:
            sample = np.asarray(prior[index]).ravel()
            sample = sample[np.isfinite(sample) & (sample <= grid[-1])]
            if len(sample) > 10:
                ax.plot(
                    grid,
                    gaussian_kde(sample)(grid) * len(sample) / draws,
                    color="C1",
                    label="prior",
                )
        else:
            ax.text(
                0.98,
                0.95,
                note,
                ha="right",
                va="top",
                transform=ax.transAxes,
                fontsize="small",
                color="C1",
            )
        ax.axvline(fit.reml_check.loc[name, "reml"], color="C3", ls="--", lw=1, label="REML")
        ax.set_xlabel(name)
        ax.set_yticks([])
    axes[0].legend(fontsize="small", frameon=False)
    return axes


def save_fit_figures(fit, out) -> None:
    """``h2.png`` (:func:`plot_h2`) and ``trace.png`` (:func:`plot_trace`) of a fit in the
    folder ``out``, on matplotlib's Agg backend (the fit command's figures; a worker process
    runs this beside the fit's files)."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    plot_h2(fit).figure.savefig(out / "h2.png", dpi=120)
    plot_trace(fit)[0, 0].figure.savefig(out / "trace.png", dpi=100)
