r"""What a REML fit returns, whatever the model: a components table, covariances, predictions.

:class:`RemlResult` is generic: one row per variance component (``additive``, ``maternal``,
``pe``, the grouping columns, ``residual``) with its estimate, standard error, proportion of
the phenotypic variance and that proportion's SE; one row per covariance with its
correlation; the ratios (h² is the additive proportion, the repeatability); fixed effects
with SEs; and, per random effect, every level's prediction with PEV and reliability. The
one-component names of the first version (``sigma2_u``, ``sigma2_e``, ``h2``, ``se``,
``blup``) remain as read-only aliases, so that code and JSON written for them keep working.

:class:`Convergence` reports how the maximiser stopped, in log-likelihood units: the Newton
decrement :math:`\tfrac12 g^\top \mathcal I^{-1} g` (what one more step would gain) and the
change in the last step, both at most :data:`CONVERGENCE_TOLERANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "CONVERGENCE_TOLERANCE",
    "LOGLIK_CONSTANT",
    "Convergence",
    "RemlResult",
    "assemble",
    "prediction_table",
    "reliability",
]

Method = Literal["reml", "ml"]

#: Newton decrement and last change of the log-likelihood at convergence.
CONVERGENCE_TOLERANCE = 1e-8

LOGLIK_CONSTANT = (
    "REML: -1/2[(n-p) log(2 pi) + log|V| + log|X'V^-1 X| - log|X'X| + y'Py] "
    "(rrBLUP mixed.solve and metafor); ML: -1/2[n log(2 pi) + log|V| + y'Py]"
)


@dataclass(frozen=True)
class Convergence:
    """How the maximiser stopped, in log-likelihood units.

    Attributes
    ----------
    converged
        ``expected_gain`` and ``last_change`` both ≤ :data:`CONVERGENCE_TOLERANCE`.
    expected_gain
        Newton decrement at the estimate: what one more Newton step would add to the
        log-likelihood (infinite where the curvature is not negative).
    last_change
        |Δℓ| in the last step.
    gradient
        The gradient at the estimate on the scale of each parameter (σ² ∂ℓ/∂σ² for the
        variances), boundary parameters left out.
    reason
        Why it stopped.
    """

    converged: bool
    expected_gain: float
    last_change: float
    gradient: tuple[float, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "converged": self.converged,
            "expected_gain": self.expected_gain,
            "last_change": self.last_change,
            "gradient": list(self.gradient),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RemlResult:
    """A REML (or ML) fit.

    Attributes
    ----------
    method
        ``"reml"`` or ``"ml"``.
    engine
        ``"spectral"`` (one random effect, eigenbasis) or ``"sparse"`` (mixed-model equations).
    components
        One row per variance component (index ``component``): ``variance``, ``se``,
        ``proportion`` (of the phenotypic variance), ``proportion_se``, ``boundary``.
    covariances
        One row per covariance (index ``a:b``): ``covariance``, ``se``, ``correlation``,
        ``correlation_se``.
    ratios
        ``estimate`` and ``se`` of h² (``h2``), each proportion, the ``repeatability`` and the
        correlations, by the delta method.
    beta, beta_se, beta_cov
        GLS fixed effects, their SEs and covariance, by design column.
    information
        Average information of the parameters (:attr:`parameter_names`) at the estimate;
        boundary parameters left out of :attr:`covariance`.
    parameter_names
        Names of the parameters in the order of ``information``.
    covariance
        Inverse of the information over the parameters not at a boundary (NaN elsewhere).
    loglik
        Restricted (or ML) log-likelihood; constant: :data:`LOGLIK_CONSTANT`.
    predictions
        Per random effect, one row per level (index ``id``): ``blup``, ``pev``,
        ``reliability``, ``n_records``.
    convergence
        The stopping report.
    iterations
        Likelihood evaluations (spectral) or AI iterations (sparse).
    boundary
        Components fixed at zero (their SE is left out).
    n_records
        Records used.
    timings
        Seconds of each stage.
    notices
        Messages about the data and the fit.
    expected_information
        The expected (Fisher) information where the engine computes it (spectral), else None.
    """

    method: Method
    engine: str
    components: pd.DataFrame
    covariances: pd.DataFrame
    ratios: pd.DataFrame
    beta: pd.Series
    beta_se: pd.Series
    beta_cov: pd.DataFrame
    information: np.ndarray
    parameter_names: tuple[str, ...]
    covariance: np.ndarray
    loglik: float
    predictions: dict[str, pd.DataFrame]
    convergence: Convergence
    iterations: int
    boundary: tuple[str, ...] = ()
    n_records: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    notices: tuple[str, ...] = ()
    expected_information: np.ndarray | None = None

    # -- one-component aliases ---------------------------------------------------------------
    @property
    def converged(self) -> bool:
        """Whether the maximiser met its tolerance."""
        return self.convergence.converged

    def variance(self, name: str) -> float:
        """The estimate of a variance component."""
        return float(self.components.loc[name, "variance"])

    @property
    def sigma2_u(self) -> float:
        """Alias: the additive genetic variance (or the single random effect's variance)."""
        return self.variance(self._genetic_name())

    @property
    def sigma2_e(self) -> float:
        """Alias: the residual variance."""
        return self.variance("residual")

    @property
    def h2(self) -> float:
        """Alias: the additive (or single random effect's) proportion of the phenotypic
        variance."""
        return float(self.components.loc[self._genetic_name(), "proportion"])

    @property
    def se(self) -> dict[str, float]:
        """Alias: SEs keyed ``sigma2_u``, ``sigma2_e``, ``h2`` (the first version's keys)."""
        name = self._genetic_name()
        return {
            "sigma2_u": float(self.components.loc[name, "se"]),
            "sigma2_e": float(self.components.loc["residual", "se"]),
            "h2": float(self.components.loc[name, "proportion_se"]),
        }

    @property
    def blup(self) -> pd.DataFrame:
        """Alias: the predictions of the additive (or single) random effect."""
        return self.predictions[self._genetic_name()]

    @property
    def n_animals(self) -> int:
        """Levels of the additive (or single) random effect."""
        return len(self.blup)

    def _genetic_name(self) -> str:
        names = [n for n in self.components.index if n != "residual"]
        return "additive" if "additive" in names else names[0]

    def quantity(self, quantity) -> tuple[float, float]:
        """``(estimate, se)`` of a :class:`~bayes_animal.spec.parameters.Quantity`."""
        if quantity.kind == "variance":
            row = self.components.loc[quantity.source]
            return float(row["variance"]), float(row["se"])
        if quantity.kind == "covariance":
            row = self.covariances.loc[quantity.source]
            return float(row["covariance"]), float(row["se"])
        row = self.ratios.loc[quantity.source]
        return float(row["estimate"]), float(row["se"])

    # -- output ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``bayes-animal reml --json``: the first version's keys
        (for the additive or single effect) plus ``components``, ``covariances``, ``ratios``."""
        components = {
            name: {
                "variance": float(row["variance"]),
                "se": _json_float(row["se"]),
                "proportion": float(row["proportion"]),
                "proportion_se": _json_float(row["proportion_se"]),
                "boundary": bool(row["boundary"]),
            }
            for name, row in self.components.iterrows()
        }
        covariances = {
            name: {key: _json_float(row[key]) for key in self.covariances.columns}
            for name, row in self.covariances.iterrows()
        }
        ratios = {
            name: {"estimate": _json_float(r["estimate"]), "se": _json_float(r["se"])}
            for name, r in self.ratios.iterrows()
        }
        return {
            "method": self.method,
            "engine": self.engine,
            "sigma2_u": self.sigma2_u,
            "sigma2_e": self.sigma2_e,
            "h2": self.h2,
            "se": {k: _json_float(v) for k, v in self.se.items()},
            "components": components,
            "covariances": covariances,
            "ratios": ratios,
            "beta": {k: float(v) for k, v in self.beta.items()},
            "beta_se": {k: float(v) for k, v in self.beta_se.items()},
            "loglik": self.loglik,
            "loglik_constant": LOGLIK_CONSTANT,
            "converged": self.converged,
            "convergence": self.convergence.to_dict(),
            "boundary": list(self.boundary) or None,
            "iterations": self.iterations,
            "n_records": self.n_records,
            "n_animals": self.n_animals,
            "n_levels": {name: len(table) for name, table in self.predictions.items()},
            "timings": dict(self.timings),
            "notices": list(self.notices),
        }

    def summary(self) -> pd.DataFrame:
        """Variance components, covariances, ratios and fixed effects as one table
        (``estimate``, ``se``)."""
        rows = [(n, r["variance"], r["se"]) for n, r in self.components.iterrows()]
        rows += [(n, r["covariance"], r["se"]) for n, r in self.covariances.iterrows()]
        rows += [
            (("h2" if n == "additive" else f"{n} (proportion)"), r["estimate"], r["se"])
            for n, r in self.ratios.iterrows()
            if n in self.components.index and n != "residual"
        ]
        rows += [
            (n, r["estimate"], r["se"]) for n, r in self.ratios.iterrows() if n == "repeatability"
        ]
        rows += [
            (f"{n} (correlation)", r["estimate"], r["se"])
            for n, r in self.ratios.iterrows()
            if n in self.covariances.index
        ]
        rows += [(f"beta[{k}]", float(v), float(self.beta_se[k])) for k, v in self.beta.items()]
        return pd.DataFrame(rows, columns=["parameter", "estimate", "se"]).set_index("parameter")


def _json_float(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def sampling_covariance(
    parameters, theta: np.ndarray, information: np.ndarray, boundary: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[float, float]]]:
    """The estimates with boundary components set to 0, their covariance (the inverse average
    information over the parameters not at a boundary, NaN elsewhere) and every ratio with
    its delta-method SE (:meth:`~bayes_animal.spec.parameters.Parameters.ratios`): the one
    place standard errors are made, for :func:`assemble` and the many-traits batch."""
    names = parameters.names
    theta = np.asarray(theta, dtype=float).copy()
    at_boundary = np.array([n in boundary for n in names])
    theta[at_boundary] = 0.0
    covariance = np.full((len(names), len(names)), np.nan)
    free = np.flatnonzero(~at_boundary)
    try:
        covariance[np.ix_(free, free)] = np.linalg.inv(information[np.ix_(free, free)])
    except np.linalg.LinAlgError:
        pass
    delta = np.where(np.isnan(covariance), 0.0, covariance)
    ratios = parameters.ratios(
        theta, None if np.isnan(covariance[np.ix_(free, free)]).any() else delta
    )
    return theta, covariance, ratios


def assemble(
    *,
    parameters,
    theta: np.ndarray,
    information: np.ndarray,
    boundary: tuple[str, ...],
    method: Method,
    engine: str,
    beta: np.ndarray,
    beta_cov: np.ndarray,
    fixed_names: tuple[str, ...],
    predictions: dict[str, pd.DataFrame],
    loglik: float,
    convergence: Convergence,
    iterations: int,
    n_records: int,
    timings: dict[str, float],
    notices: tuple[str, ...],
    expected_information: np.ndarray | None = None,
) -> RemlResult:
    """Build a :class:`RemlResult` from the estimates of either engine.

    The covariance of the estimates is the inverse average information over the parameters
    not at a boundary; proportions, the repeatability and correlations get their SEs from it
    by the delta method (:meth:`~bayes_animal.spec.parameters.Parameters.ratios`).
    """
    names = parameters.names
    theta, covariance, ratios = sampling_covariance(parameters, theta, information, boundary)
    at_boundary = np.array([n in boundary for n in names])
    rows = []
    for name in parameters.variances:
        k = parameters.index(name)
        rows.append(
            {
                "component": name,
                "variance": theta[k],
                "se": float(np.sqrt(covariance[k, k])) if covariance[k, k] >= 0 else np.nan,
                "proportion": ratios[name][0],
                "proportion_se": np.nan if at_boundary[k] else ratios[name][1],
                "boundary": bool(at_boundary[k]),
            }
        )
    components = pd.DataFrame(rows).set_index("component")
    covariance_rows = []
    for name in names:
        if parameters.is_covariance(name):
            k = parameters.index(name)
            covariance_rows.append(
                {
                    "covariance_of": name,
                    "covariance": theta[k],
                    "se": float(np.sqrt(covariance[k, k])) if covariance[k, k] >= 0 else np.nan,
                    "correlation": ratios[name][0],
                    "correlation_se": ratios[name][1],
                }
            )
    covariances = (
        pd.DataFrame(covariance_rows).set_index("covariance_of")
        if covariance_rows
        else pd.DataFrame(
            columns=["covariance", "se", "correlation", "correlation_se"],
            index=pd.Index([], name="covariance_of"),
        )
    )
    ratio_rows = [{"ratio": n, "estimate": v[0], "se": v[1]} for n, v in ratios.items()]
    if "additive" in ratios:
        ratio_rows.insert(
            0, {"ratio": "h2", "estimate": ratios["additive"][0], "se": ratios["additive"][1]}
        )
    fixed = list(fixed_names)
    return RemlResult(
        method=method,
        engine=engine,
        components=components,
        covariances=covariances,
        ratios=pd.DataFrame(ratio_rows).set_index("ratio"),
        beta=pd.Series(beta, index=fixed, name="beta"),
        beta_se=pd.Series(np.sqrt(np.diag(beta_cov)), index=fixed, name="se"),
        beta_cov=pd.DataFrame(beta_cov, index=fixed, columns=fixed),
        information=information,
        parameter_names=tuple(names),
        covariance=covariance,
        loglik=float(loglik),
        predictions=predictions,
        convergence=convergence,
        iterations=iterations,
        boundary=tuple(boundary),
        n_records=n_records,
        timings=timings,
        notices=notices,
        expected_information=expected_information,
    )


def reliability(error_variance: np.ndarray, prior_variance: np.ndarray) -> np.ndarray:
    """:math:`1 - \\mathrm{PEV}/(\\sigma^2 K_{ii})` — or with a posterior variance in place of
    the PEV — NaN where the prior variance is 0: the one reliability formula of the package."""
    prior = np.asarray(prior_variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prior > 0, 1.0 - np.asarray(error_variance) / prior, np.nan)


def prediction_table(
    levels: np.ndarray,
    blup: np.ndarray,
    pev: np.ndarray | None,
    variance: float,
    diagonal: np.ndarray,
    counts: np.ndarray,
) -> pd.DataFrame:
    """One row per level: ``blup``, ``pev``, ``sep`` = √PEV, ``reliability`` = 1 − PEV/(σ² K_ii)
    (NaN where the prior variance σ² K_ii is 0), ``accuracy`` = √reliability, ``n_records``:
    the one place reliabilities are computed from PEVs."""
    table = pd.DataFrame({"blup": blup}, index=pd.Index(levels, name="id"))
    if pev is not None:
        pev = np.clip(pev, 0.0, None)
        level_reliability = reliability(pev, variance * np.asarray(diagonal, dtype=float))
        table["pev"] = pev
        table["sep"] = np.sqrt(pev)
        table["reliability"] = level_reliability
        table["accuracy"] = np.sqrt(np.clip(level_reliability, 0.0, None))
    table["n_records"] = counts
    return table
