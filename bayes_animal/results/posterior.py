"""What a fit returns: variance components, breeding values, the REML check and diagnostics.

Works on the ArviZ DataTree that :meth:`bayes_animal.model.AnimalModel.fit` produces, whose
posterior holds ``sigma2_u``, ``sigma2_e``, ``h2`` (chain, draw), ``beta`` (…, fixed) and
``u`` (…, animal). All intervals are 95 % highest-density intervals (ArviZ 1's default is an
89 % equal-tailed interval; it is overridden everywhere here).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..estimation.result import RemlResult, reliability
from .intervals import HDI_PROB, hdi

__all__ = [
    "COMPONENTS",
    "HDI_PROB",
    "AnimalFit",
    "Diagnostics",
    "DiagnosticsWarning",
    "RemlCheckWarning",
    "component_summary",
    "diagnose",
    "ebv_table",
    "posterior_mode",
    "posterior_reliability",
    "reml_check",
]

COMPONENTS = ("sigma2_u", "sigma2_e", "h2")
RHAT_LIMIT = 1.01
ESS_LIMIT = 400


class DiagnosticsWarning(UserWarning):
    """Sampling diagnostics failed a threshold; the message says what to do."""


class RemlCheckWarning(UserWarning):
    """The REML estimate lies outside the posterior's 95 % HDI."""


def _draws(idata, name: str) -> np.ndarray:
    return np.asarray(idata.posterior[name].values)


def _hdi(values: np.ndarray) -> tuple[float, float]:
    low, high = hdi(np.asarray(values).ravel())
    return float(low[0]), float(high[0])


def posterior_mode(values: np.ndarray) -> float:
    """Mode of a Gaussian kernel density estimate of the draws (Scott's bandwidth), located on a
    grid of 513 points over the draws' range and refined by a parabola through the peak."""
    from scipy.stats import gaussian_kde

    flat = np.asarray(values, dtype=float).ravel()
    if np.ptp(flat) == 0:
        return float(flat[0])
    grid = np.linspace(flat.min(), flat.max(), 513)
    density = gaussian_kde(flat)(grid)
    k = int(np.clip(np.argmax(density), 1, len(grid) - 2))
    left, centre, right = density[k - 1 : k + 2]
    curvature = left - 2 * centre + right
    shift = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    return float(grid[k] + np.clip(shift, -1, 1) * (grid[1] - grid[0]))


def component_summary(idata) -> pd.DataFrame:
    """Per component: mean, median, sd, 95 % HDI, mode, bulk and tail ESS, R-hat."""
    import arviz_stats as az

    names = [n for n in COMPONENTS if n in idata.posterior]
    ess_bulk = az.ess(idata, var_names=names)
    ess_tail = az.ess(idata, var_names=names, method="tail", prob=(0.05, 0.95))
    rhat = az.rhat(idata, var_names=names)
    rows = []
    for name in names:
        values = _draws(idata, name)
        low, high = _hdi(values)
        rows.append(
            {
                "parameter": name,
                "mean": float(values.mean()),
                "median": float(np.median(values)),
                "sd": float(values.std(ddof=1)),
                "mode": posterior_mode(values),
                "hdi_low": low,
                "hdi_high": high,
                "ess_bulk": float(ess_bulk[name].values),
                "ess_tail": float(ess_tail[name].values),
                "r_hat": float(rhat[name].values),
            }
        )
    return pd.DataFrame(rows).set_index("parameter")


def reml_check(
    idata, reml: RemlResult, *, warn: bool = True, summary: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The posterior checked against REML, per component and h².

    Columns: ``reml``, ``reml_se``, ``mode``, ``median``, ``mean``, ``hdi_low``, ``hdi_high``
    and ``reml_in_hdi``. Issues a :class:`RemlCheckWarning` when REML lies outside the HDI.
    """
    summary = component_summary(idata) if summary is None else summary
    rows = []
    for name in summary.index:
        estimate = float(getattr(reml, name))
        row = summary.loc[name]
        rows.append(
            {
                "parameter": name,
                "reml": estimate,
                "reml_se": float(reml.se[name]),
                "mode": row["mode"],
                "median": row["median"],
                "mean": row["mean"],
                "hdi_low": row["hdi_low"],
                "hdi_high": row["hdi_high"],
                "reml_in_hdi": bool(row["hdi_low"] <= estimate <= row["hdi_high"]),
            }
        )
    table = pd.DataFrame(rows).set_index("parameter")
    outside = table.index[~table["reml_in_hdi"]].tolist()
    if outside and warn:
        warnings.warn(
            f"The REML estimate of {', '.join(outside)} lies outside the posterior's 95 % HDI. "
            "Check the prior (is it informative on this scale?), the diagnostics, and whether the "
            "likelihood is flat or at a boundary.",
            RemlCheckWarning,
            stacklevel=2,
        )
    return table


@dataclass(frozen=True)
class Diagnostics:
    """Convergence diagnostics of a fit.

    Attributes
    ----------
    table
        R-hat, bulk and tail ESS per variance component and h².
    divergences
        Number of divergent transitions after tuning.
    max_tree_depth
        Deepest tree; ``hit_max_depth`` counts draws that reached the sampler's limit.
    messages
        What failed, and what to do about it.
    """

    table: pd.DataFrame
    divergences: int
    max_tree_depth: int
    hit_max_depth: int
    messages: tuple[str, ...] = ()

    @property
    def max_r_hat(self) -> float:
        return float(self.table["r_hat"].max())

    @property
    def min_ess_bulk(self) -> float:
        return float(self.table["ess_bulk"].min())

    @property
    def min_ess_tail(self) -> float:
        return float(self.table["ess_tail"].min())

    @property
    def ok(self) -> bool:
        return not self.messages

    def to_dict(self) -> dict[str, Any]:
        return {
            "divergences": self.divergences,
            "max_r_hat": self.max_r_hat,
            "min_ess_bulk": self.min_ess_bulk,
            "min_ess_tail": self.min_ess_tail,
            "max_tree_depth": self.max_tree_depth,
            "hit_max_depth": self.hit_max_depth,
            "messages": list(self.messages),
        }


def _stat(idata, *names: str) -> np.ndarray | None:
    stats = idata.get("sample_stats") if hasattr(idata, "get") else None
    if stats is None:
        return None
    for name in names:
        if name in stats:
            return np.asarray(stats[name].values)
    return None


def diagnose(
    idata, *, parameterisation: str, warn: bool = True, summary: pd.DataFrame | None = None
) -> Diagnostics:
    """R-hat, ESS, divergences and tree depth; warn with advice when a threshold fails."""
    summary = component_summary(idata) if summary is None else summary
    table = summary[["r_hat", "ess_bulk", "ess_tail"]]
    diverging = _stat(idata, "diverging")
    divergences = int(np.sum(diverging)) if diverging is not None else 0
    depth = _stat(idata, "tree_depth", "depth")
    max_depth = int(np.max(depth)) if depth is not None else 0
    reached = _stat(idata, "reached_max_treedepth", "maxdepth_reached")
    hit = int(np.sum(reached)) if reached is not None else 0
    messages: list[str] = []
    other = "noncentred" if parameterisation == "marginal" else "marginal"
    if (table["r_hat"] > RHAT_LIMIT).any():
        bad = table.index[table["r_hat"] > RHAT_LIMIT].tolist()
        messages.append(
            f"R-hat > {RHAT_LIMIT} for {', '.join(bad)} (max {table['r_hat'].max():.3f}): the "
            "chains disagree. Run longer (more tune and draws) or try "
            f"parameterisation='{other}'."
        )
    low_ess = table.index[(table["ess_bulk"] < ESS_LIMIT) | (table["ess_tail"] < ESS_LIMIT)]
    if len(low_ess):
        messages.append(
            f"ESS < {ESS_LIMIT} for {', '.join(low_ess)} (min bulk {table['ess_bulk'].min():.0f},"
            f" tail {table['ess_tail'].min():.0f}): draw more samples or try "
            f"parameterisation='{other}'."
        )
    if divergences:
        messages.append(
            f"{divergences} divergent transitions: raise target_accept (e.g. 0.95), use a "
            "stronger prior on the variances, or try "
            f"parameterisation='{other}'."
        )
    if hit:
        messages.append(
            f"{hit} draws reached the maximum tree depth: the posterior is hard to explore; "
            f"try parameterisation='{other}' or more tuning."
        )
    if warn:
        for message in messages:
            warnings.warn(message, DiagnosticsWarning, stacklevel=2)
    return Diagnostics(table, divergences, max_depth, hit, tuple(messages))


def posterior_reliability(idata, a_diagonal, *, variance: np.ndarray | None = None) -> np.ndarray:
    """Per animal :math:`1 - \\operatorname{Var}(u_i \\mid y) / (E[\\sigma_u^2] a_{ii})` (NaN where
    the genetic variance is zero)."""
    if variance is None:
        draws = _draws(idata, "u")
        variance = draws.reshape(-1, draws.shape[-1]).var(axis=0, ddof=1)
    genetic = float(_draws(idata, "sigma2_u").mean()) * np.asarray(a_diagonal, dtype=float)
    return reliability(variance, genetic)


def ebv_table(idata, ids: np.ndarray, a_diagonal: np.ndarray) -> pd.DataFrame:
    """Posterior breeding values: mean, sd, 95 % HDI and reliability per animal.

    Reliability is :math:`1 - \\operatorname{Var}(u_i \\mid y) / (E[\\sigma_u^2] a_{ii})`, the
    Bayesian analogue of 1 − PEV/(σu² aᵢᵢ).
    """

    draws = _draws(idata, "u")
    flat = draws.reshape(-1, draws.shape[-1])
    interval = np.column_stack(hdi(flat))
    variance = flat.var(axis=0, ddof=1)
    reliability = posterior_reliability(idata, a_diagonal, variance=variance)
    return pd.DataFrame(
        {
            "mean": flat.mean(axis=0),
            "sd": np.sqrt(variance),
            "hdi_low": interval[:, 0],
            "hdi_high": interval[:, 1],
            "reliability": reliability,
        },
        index=pd.Index(ids, name="id"),
    )


@dataclass
class AnimalFit:
    """The result of :meth:`bayes_animal.model.AnimalModel.fit`.

    Attributes
    ----------
    idata
        ArviZ DataTree: posterior with ``sigma2_u``, ``sigma2_e``, ``h2``, ``beta`` (fixed),
        ``u`` (animal); sample_stats; provenance in ``attrs``.
    reml
        The built-in REML estimate (it also started the sampler).
    reml_check
        :func:`reml_check` table.
    diagnostics
        :class:`Diagnostics`.
    sampler, parameterisation, fixed_effects
        What was run (``fixed_effects``: ``"integrated"`` or ``"sampled"``).
    timings
        Seconds: ``eigh``, ``compile``, ``sampling``, ``conditional``, ``total``.
    a_diagonal
        Diagonal of A (for reliabilities), in the order of the ``animal`` dim.
    notes
        What was chosen and why (parameterisation, fixed effects).
    """

    idata: Any
    reml: RemlResult
    reml_check: pd.DataFrame
    diagnostics: Diagnostics
    sampler: str
    parameterisation: str
    fixed_effects: str
    timings: dict[str, float]
    a_diagonal: np.ndarray
    notes: tuple[str, ...] = ()
    _ebv: pd.DataFrame | None = field(default=None, repr=False)
    _summary: pd.DataFrame | None = field(default=None, repr=False)

    def summary(self) -> pd.DataFrame:
        """Variance components and h²: mean, median, sd, mode, 95 % HDI, ESS, R-hat."""
        if self._summary is None:
            self._summary = component_summary(self.idata)
        return self._summary.copy()

    def beta_summary(self) -> pd.DataFrame:
        """Fixed effects: mean, sd and 95 % HDI per design column."""

        draws = _draws(self.idata, "beta")
        flat = draws.reshape(-1, draws.shape[-1])
        interval = np.column_stack(hdi(flat))
        names = [str(n) for n in self.idata.posterior["fixed"].values]
        return pd.DataFrame(
            {
                "mean": flat.mean(axis=0),
                "sd": flat.std(axis=0, ddof=1),
                "hdi_low": interval[:, 0],
                "hdi_high": interval[:, 1],
            },
            index=pd.Index(names, name="fixed"),
        )

    def ebv(self) -> pd.DataFrame:
        """Posterior breeding values of every animal in A (:func:`ebv_table`), by id."""
        if self._ebv is None:
            ids = np.asarray(self.idata.posterior["animal"].values, dtype=object)
            self._ebv = ebv_table(self.idata, ids, self.a_diagonal)
        return self._ebv

    def to_summary_dict(self) -> dict[str, Any]:
        """The ``summary.json`` written by ``bayes-animal fit``."""
        table = self.summary()
        summary: dict[str, Any] = {
            name: {
                key: float(table.loc[name, key])
                for key in (
                    "mean",
                    "median",
                    "sd",
                    "mode",
                    "hdi_low",
                    "hdi_high",
                    "ess_bulk",
                    "ess_tail",
                    "r_hat",
                )
            }
            for name in table.index
        }
        beta = self.beta_summary()
        summary["beta"] = {
            name: {key: float(beta.loc[name, key]) for key in beta.columns} for name in beta.index
        }
        summary["reml"] = self.reml.to_dict()
        check = self.reml_check.reset_index()
        summary["reml_check"] = json.loads(check.to_json(orient="records"))
        summary["diagnostics"] = self.diagnostics.to_dict()
        summary["timings"] = dict(self.timings)
        summary["sampler"] = self.sampler
        summary["parameterisation"] = self.parameterisation
        summary["fixed_effects"] = self.fixed_effects
        summary["notes"] = list(self.notes)
        summary["provenance"] = {k: str(v) for k, v in self.idata.attrs.items()}
        return summary

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write summary.json, ebv.csv and posterior.nc (with its ``reml`` group) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "summary": folder / "summary.json",
            "ebv": folder / "ebv.csv",
            "posterior": folder / "posterior.nc",
        }
        paths["summary"].write_text(json.dumps(self.to_summary_dict(), indent=2) + "\n")
        self.ebv().reset_index().to_csv(paths["ebv"], index=False, float_format="%.8g")
        self.with_reml_group().to_netcdf(paths["posterior"])
        return paths

    def with_reml_group(self):
        """The DataTree plus a ``reml`` group (REML BLUPs and A's diagonal by animal), so that
        ``bayes-animal rank`` can read everything it needs from posterior.nc."""
        import xarray as xr

        ids = [str(a) for a in self.idata.posterior["animal"].values]
        tree = self.idata.copy()
        tree["reml"] = xr.Dataset(
            {
                "blup": ("animal", self.reml.blup["blup"].loc[ids].to_numpy()),
                "a_diagonal": ("animal", np.asarray(self.a_diagonal, dtype=float)),
            },
            coords={"animal": ids},
            attrs={"reml": json.dumps(self.reml.to_dict())},
        )
        return tree
