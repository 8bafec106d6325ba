"""Figures for papers: the h² posterior against REML, and traces of the variance components.

Every function draws on matplotlib axes (created when not given), returns them and never calls
``show``; save with ``ax.figure.savefig(...)``.
"""

from __future__ import annotations

import numpy as np

from .posterior import HDI_PROB, AnimalFit

__all__ = ["plot_h2", "plot_trace"]


def _axes(ax=None, *, nrows: int = 1, ncols: int = 1, figsize=(6.0, 4.0)):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax
    _, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
    return axes[0, 0] if nrows == ncols == 1 else axes


def plot_h2(fit: AnimalFit, ax=None):
    """Posterior density of h² with its 95 % HDI, the REML estimate and its ±1.96 SE interval.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from scipy.stats import gaussian_kde

    ax = _axes(ax)
    draws = np.asarray(fit.idata.posterior["h2"].values).ravel()
    grid = np.linspace(max(draws.min() - 0.05, 0.0), min(draws.max() + 0.05, 1.0), 400)
    density = gaussian_kde(draws)(grid)
    row = fit.reml_check.loc["h2"]
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
    ax.set_xlabel("h² = σu² / (σu² + σ²)")
    ax.set_ylabel("density")
    ax.set_title(f"Heritability: posterior mean {draws.mean():.3f}")
    ax.legend(fontsize="small", frameon=False)
    return ax


def plot_trace(fit: AnimalFit, axes=None):
    """Trace (per chain) and density of σu², σ² and h²; returns a 3 × 2 array of axes."""
    from scipy.stats import gaussian_kde

    names = ["sigma2_u", "sigma2_e", "h2"]
    axes = _axes(axes, nrows=3, ncols=2, figsize=(9.0, 6.5))
    for row, name in enumerate(names):
        values = np.asarray(fit.idata.posterior[name].values)
        for chain, trace in enumerate(values):
            axes[row, 0].plot(trace, lw=0.5, color=f"C{chain}", alpha=0.8)
            grid = np.linspace(values.min(), values.max(), 200)
            axes[row, 1].plot(grid, gaussian_kde(trace)(grid), color=f"C{chain}", lw=1)
        axes[row, 0].set_ylabel(name)
        axes[row, 1].axvline(getattr(fit.reml, name), color="k", ls="--", lw=1, label="REML")
    axes[0, 1].legend(fontsize="small", frameon=False)
    axes[-1, 0].set_xlabel("draw")
    axes[-1, 1].set_xlabel("value")
    axes[0, 0].set_title("traces by chain")
    axes[0, 1].set_title("densities by chain")
    return axes
