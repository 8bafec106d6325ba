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

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..spec.parameters import (
    OBSERVED_H2,
    correlation_name,
    covariance_name,
    proportion_name,
    variance_name,
)
from ..tables import Table
from ..tables import pandas as pd

if TYPE_CHECKING:
    import pandas

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

    The tables are held as :class:`~bayes_animal.tables.Table` (NumPy columns) and handed out
    as DataFrames, built on first access, so that a fit reported as JSON or text never
    imports pandas.

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
        ``estimate`` and ``se`` of every proportion (``h2``, ``prop:<component>``), the
        ``repeatability`` and the correlations (``corr:<a>:<b>``), by the delta method (the
        names of :mod:`bayes_animal.spec.parameters`, as in every output).
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
    logdet_xtx
        :math:`\\log|X^\\top X|` of the fixed part (for :attr:`loglik_asreml`).
    engine_reason
        Why the engine was chosen, with the estimated cost of each (:mod:`bayes_animal.choice`).
    fingerprints
        Digests of the records, the fixed part and each random effect
        (:meth:`bayes_animal.api.ModelInputs.fingerprints`): what :func:`compare` checks.
    """

    method: Method
    engine: str
    component_table: Table
    covariance_table: Table
    ratio_table: Table
    fixed_names: tuple[str, ...]
    beta_values: np.ndarray
    beta_covariance: np.ndarray
    information: np.ndarray
    parameter_names: tuple[str, ...]
    covariance: np.ndarray
    loglik: float
    prediction_tables: dict[str, Table]
    convergence: Convergence
    iterations: int
    boundary: tuple[str, ...] = ()
    n_records: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    notices: tuple[str, ...] = ()
    expected_information: np.ndarray | None = None
    engine_reason: str = ""
    fingerprints: dict[str, str] = field(default_factory=dict)
    logdet_xtx: float | None = None
    traits: tuple[str, ...] = ()
    n_observations: int | None = None
    family: str = "gaussian(identity)"
    fixed_components: tuple[str, ...] = ()

    @property
    def gaussian(self) -> bool:
        """A Gaussian trait (the exact likelihood); otherwise a Laplace approximation."""
        return self.family.startswith("gaussian")

    @property
    def multi_trait(self) -> bool:
        """Several traits (components keyed ``<effect>:<trait>``)."""
        return len(self.traits) > 1

    def _single_trait(self, alias: str) -> None:
        if self.multi_trait:
            raise AttributeError(
                f"{alias} is an alias of a one-trait fit; this fit has the traits "
                f"{', '.join(self.traits)}: read .components (keyed <effect>:<trait>, e.g. "
                f"'additive:{self.traits[0]}'), .covariances and .ratios ('h2:{self.traits[0]}')."
            )

    @property
    def loglik_asreml(self) -> float | None:
        """The restricted log-likelihood on ASReml's scale,
        :math:`-\\tfrac12[\\log|V| + \\log|X^\\top V^{-1}X| + y^\\top P y]`: :attr:`loglik`
        plus :math:`\\tfrac12(n-p)\\log 2\\pi - \\tfrac12\\log|X^\\top X|` (gryphon model 4:
        −1094.815, as ASReml prints). None for ML, or where log|XᵀX| is not known."""
        if self.method != "reml" or self.logdet_xtx is None or not self.gaussian:
            return None
        n = self.n_observations if self.multi_trait else self.n_records
        p = len(self.fixed_names)
        return self.loglik + 0.5 * (n - p) * math.log(2 * math.pi) - 0.5 * self.logdet_xtx

    def report(self, *, formula: str | None = None) -> str:
        """A ``summary()``-sized report: the components with SEs and proportions, covariances,
        the repeatability, fixed effects, the log-likelihood (also on ASReml's scale),
        convergence, the engine and why, and where the predictions are."""
        import textwrap

        levels = ", ".join(f"{name} {len(table)}" for name, table in self.prediction_tables.items())
        what = f" of {formula}" if formula else ""
        records = f"{self.n_records} records"
        if self.multi_trait:
            records += f" ({self.n_observations} observations of {', '.join(self.traits)})"
        lines = [
            f"{self.method.upper()} fit{what} ({self.engine} engine): {records}; levels: {levels}",
        ]
        if not self.gaussian:
            lines.append(
                f"family {self.family}: the Laplace approximation of the likelihood; variances "
                "on the latent (liability) scale; SEs approximate"
            )
        lines += [
            "",
            f"{'component':<22}{'variance':>12}{'SE':>10}{'proportion':>12}{'SE':>10}",
        ]
        for name, row in self.component_table.rows():
            mark = "  (boundary)" if row["boundary"] else ""
            if name in self.fixed_components:
                mark = "  (fixed by the family)"
            lines.append(
                f"{name:<22}{row['variance']:>12.6g}{row['se']:>10.4g}{row['proportion']:>12.4f}"
                f"{row['proportion_se']:>10.4f}{mark}"
            )
        for name, row in self.covariance_table.rows():
            lines.append(
                f"{name:<22}{row['covariance']:>12.6g}{row['se']:>10.4g}   correlation "
                f"{row['correlation']:.4f} ± {row['correlation_se']:.4f}"
            )
        for name, row in self.ratio_table.rows():
            if name.startswith("repeatability") or name == OBSERVED_H2:
                estimate, se = row["estimate"], row["se"]
                lines.append(f"{name:<22}{'':>22}{estimate:>12.4f}{se:>10.4f}")
        lines += ["", f"{'fixed effect':<30}{'estimate':>14}{'SE':>12}"]
        for name, value, se in zip(
            self.fixed_names, self.beta_values, self.beta_se_values, strict=True
        ):
            lines.append(f"{name:<30}{value:>14.6g}{se:>12.4g}")
        status = "converged" if self.converged else "NOT converged"
        if self.boundary:
            zero = [n for n in self.boundary if n in self.component_table]
            edge = [n for n in self.boundary if n not in self.component_table]
            if zero:
                status += f", at the boundary: {', '.join(zero)} = 0"
            if edge:
                status += (
                    ", at the edge of the positive semi-definite cone (the correlations of "
                    f"{', '.join(edge)} held: ±0.9999 for a pair, a larger matrix in the "
                    "singular shape REML found)"
                )
        asreml = self.loglik_asreml
        lines += [
            "",
            f"log-likelihood {self.loglik:.6f}"
            + (f" (ASReml's scale: {asreml:.6f})" if asreml is not None else "")
            + f" ({status}, {self.iterations} iterations)",
        ]
        if self.engine_reason:
            lines += textwrap.wrap(f"engine {self.engine_reason}", width=100)
        lines.append("time: " + ", ".join(f"{k} {v:.3f} s" for k, v in self.timings.items()))
        return "\n".join(lines)

    def __repr__(self) -> str:
        """The report, and where the rest is (``print(fit)`` is summary-sized, as R's)."""
        names = ", ".join(repr(n) for n in self.prediction_tables)
        return (
            self.report()
            + f"\nBLUPs, PEVs and reliabilities of every level: .predictions[{names}]; "
            ".components, .ratios, .beta, .to_dict() for the rest."
        )

    __str__ = __repr__

    # -- the tables as DataFrames -----------------------------------------------------------
    @cached_property
    def components(self) -> pandas.DataFrame:
        """One row per variance component (see the class docstring)."""
        return self.component_table.frame()

    @cached_property
    def covariances(self) -> pandas.DataFrame:
        """One row per covariance."""
        return self.covariance_table.frame()

    @cached_property
    def ratios(self) -> pandas.DataFrame:
        """Estimates and SEs of h², the proportions, the repeatability and the correlations."""
        return self.ratio_table.frame()

    @cached_property
    def beta(self) -> pandas.Series:
        """GLS fixed effects by design column."""
        return pd.Series(self.beta_values, index=list(self.fixed_names), name="beta")

    @cached_property
    def beta_se(self) -> pandas.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(self.beta_se_values, index=list(self.fixed_names), name="se")

    @cached_property
    def beta_cov(self) -> pandas.DataFrame:
        """Covariance of the fixed effects."""
        names = list(self.fixed_names)
        return pd.DataFrame(self.beta_covariance, index=names, columns=names)

    @cached_property
    def predictions(self) -> dict[str, pandas.DataFrame]:
        """Per random effect, one row per level (index ``id``)."""
        return {name: table.frame() for name, table in self.prediction_tables.items()}

    @property
    def beta_se_values(self) -> np.ndarray:
        """Standard errors of the fixed effects, in the order of :attr:`fixed_names`."""
        return np.sqrt(np.diag(self.beta_covariance))

    # -- one-component aliases ---------------------------------------------------------------
    @property
    def converged(self) -> bool:
        """Whether the maximiser met its tolerance."""
        return self.convergence.converged

    def variance(self, name: str) -> float:
        """The estimate of a variance component."""
        return float(self.component_table.value(name, "variance"))

    @property
    def sigma2_u(self) -> float:
        """Alias: the additive genetic variance (or the single random effect's variance)."""
        self._single_trait("sigma2_u")
        return self.variance(self._genetic_name())

    @property
    def sigma2_e(self) -> float:
        """Alias: the residual variance."""
        self._single_trait("sigma2_e")
        return self.variance("residual")

    @property
    def h2(self) -> float:
        """Alias: the additive (or single random effect's) proportion of the phenotypic
        variance."""
        self._single_trait("h2")
        return float(self.component_table.value(self._genetic_name(), "proportion"))

    @property
    def se(self) -> dict[str, float]:
        """Alias: SEs keyed ``sigma2_u``, ``sigma2_e``, ``h2`` (the first version's keys)."""
        self._single_trait("se")
        name, table = self._genetic_name(), self.component_table
        return {
            "sigma2_u": float(table.value(name, "se")),
            "sigma2_e": float(table.value("residual", "se")),
            "h2": float(table.value(name, "proportion_se")),
        }

    @property
    def blup(self) -> pd.DataFrame:
        """Alias: the predictions of the additive (or single) random effect."""
        self._single_trait("blup")
        return self.predictions[self._genetic_name()]

    @property
    def n_animals(self) -> int:
        """Levels of the additive (or single) random effect."""
        return len(self.prediction_tables[self._genetic_name()])

    def _genetic_name(self) -> str:
        names = [n for n in self.prediction_tables]
        if self.multi_trait:
            return next((n for n in names if n.startswith("additive:")), names[0])
        return "additive" if "additive" in names else names[0]

    def quantity(self, quantity) -> tuple[float, float]:
        """``(estimate, se)`` of a :class:`~bayes_animal.spec.parameters.Quantity`."""
        table, column = {
            "variance": (self.component_table, "variance"),
            "covariance": (self.covariance_table, "covariance"),
        }.get(quantity.kind, (self.ratio_table, "estimate"))
        name = quantity.key if quantity.kind == "ratio" else quantity.source
        return float(table.value(name, column)), float(table.value(name, "se"))

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
            for name, row in self.component_table.rows()
        }
        covariances = {
            name: {key: _json_float(value) for key, value in row.items()}
            for name, row in self.covariance_table.rows()
        }
        ratios = {
            name: {"estimate": _json_float(r["estimate"]), "se": _json_float(r["se"])}
            for name, r in self.ratio_table.rows()
        }
        head: dict[str, Any] = {
            "method": self.method,
            "family": self.family,
            "engine": self.engine,
            "engine_reason": self.engine_reason,
        }
        if self.multi_trait:
            head["traits"] = list(self.traits)
        else:
            head |= {
                "sigma2_u": self.sigma2_u,
                "sigma2_e": self.sigma2_e,
                "h2": self.h2,
                "se": {k: _json_float(v) for k, v in self.se.items()},
            }
        return head | {
            "components": components,
            "covariances": covariances,
            "ratios": ratios,
            "beta": {k: float(v) for k, v in zip(self.fixed_names, self.beta_values, strict=True)},
            "beta_se": {
                k: float(v) for k, v in zip(self.fixed_names, self.beta_se_values, strict=True)
            },
            "loglik": self.loglik,
            "loglik_constant": LOGLIK_CONSTANT,
            "loglik_asreml": _json_float(self.loglik_asreml)
            if self.loglik_asreml is not None
            else None,
            "converged": self.converged,
            "convergence": self.convergence.to_dict(),
            "boundary": list(self.boundary) or None,
            "iterations": self.iterations,
            "n_records": self.n_records,
            **({"n_observations": self.n_observations} if self.multi_trait else {}),
            "n_animals": self.n_animals,
            "n_levels": {name: len(table) for name, table in self.prediction_tables.items()},
            "timings": dict(self.timings),
            "notices": list(self.notices),
        }

    def summary(self) -> pandas.DataFrame:
        """Variance components, covariances, ratios and fixed effects as one table
        (``estimate``, ``se``)."""
        rows = [(variance_name(n), r["variance"], r["se"]) for n, r in self.component_table.rows()]
        rows += [
            (covariance_name(n), r["covariance"], r["se"]) for n, r in self.covariance_table.rows()
        ]
        rows += [(n, r["estimate"], r["se"]) for n, r in self.ratio_table.rows()]
        rows += [(f"beta[{k}]", float(v), float(self.beta_se[k])) for k, v in self.beta.items()]
        return pd.DataFrame(rows, columns=["parameter", "estimate", "se"]).set_index("parameter")


def _json_float(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def sampling_covariance(
    parameters,
    theta: np.ndarray,
    information: np.ndarray,
    boundary: tuple[str, ...],
    fixed: tuple[str, ...] = (),
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[float, float]]]:
    """The estimates with boundary components set to 0, their covariance (the inverse average
    information over the parameters not at a boundary, NaN elsewhere) and every ratio with
    its delta-method SE (:meth:`~bayes_animal.spec.parameters.Parameters.ratios`): the one
    place standard errors are made, for :func:`assemble` and the many-traits batch. A
    ``fixed`` parameter (a family's latent residual) keeps its value and has no error."""
    names = parameters.names
    theta = np.asarray(theta, dtype=float).copy()
    at_boundary = np.array([n in boundary for n in names])
    # a variance at its boundary is 0; a covariance at the edge of the PSD cone keeps its value
    zero = at_boundary & np.array([not parameters.is_covariance(n) for n in names])
    theta[zero] = 0.0
    covariance = np.full((len(names), len(names)), np.nan)
    free = np.flatnonzero(~at_boundary & np.array([n not in fixed for n in names]))
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
    predictions: dict[str, Table],
    loglik: float,
    convergence: Convergence,
    iterations: int,
    n_records: int,
    timings: dict[str, float],
    notices: tuple[str, ...],
    expected_information: np.ndarray | None = None,
    traits: tuple[str, ...] = (),
    n_observations: int | None = None,
    fixed: tuple[str, ...] = (),
) -> RemlResult:
    """Build a :class:`RemlResult` from the estimates of either engine.

    The covariance of the estimates is the inverse average information over the parameters
    not at a boundary; proportions, the repeatability and correlations get their SEs from it
    by the delta method (:meth:`~bayes_animal.spec.parameters.Parameters.ratios`).
    """
    names = parameters.names
    theta, covariance, ratios = sampling_covariance(parameters, theta, information, boundary, fixed)
    for name in boundary:  # a correlation held at the edge of the cone has no SE
        if parameters.is_covariance(name):
            key = correlation_name(name)
            ratios[key] = (ratios[key][0], float("nan"))
    at_boundary = np.array([n in boundary for n in names])

    def se(k: int) -> float:
        return float(np.sqrt(covariance[k, k])) if covariance[k, k] >= 0 else np.nan

    variances = [parameters.index(name) for name in parameters.variances]
    components = Table(
        "component",
        list(parameters.variances),
        {
            "variance": np.array([theta[k] for k in variances], dtype=float),
            "se": np.array([se(k) for k in variances], dtype=float),
            "proportion": np.array(
                [ratios[proportion_name(n)][0] for n in parameters.variances], dtype=float
            ),
            "proportion_se": np.array(
                [
                    np.nan if at_boundary[k] else ratios[proportion_name(n)][1]
                    for n, k in zip(parameters.variances, variances, strict=True)
                ],
                dtype=float,
            ),
            "boundary": np.array([bool(at_boundary[k]) for k in variances], dtype=bool),
        },
    )
    pairs = [name for name in names if parameters.is_covariance(name)]
    at = [parameters.index(name) for name in pairs]
    covariances = Table(
        "covariance_of",
        pairs,
        {
            "covariance": np.array([theta[k] for k in at], dtype=float),
            "se": np.array([se(k) for k in at], dtype=float),
            "correlation": np.array([ratios[correlation_name(n)][0] for n in pairs], dtype=float),
            "correlation_se": np.array(
                [ratios[correlation_name(n)][1] for n in pairs], dtype=float
            ),
        },
    )
    ratio_names = list(ratios)
    values = [ratios[n] for n in ratio_names]
    return RemlResult(
        method=method,
        engine=engine,
        component_table=components,
        covariance_table=covariances,
        ratio_table=Table(
            "ratio",
            ratio_names,
            {
                "estimate": np.array([v[0] for v in values], dtype=float),
                "se": np.array([v[1] for v in values], dtype=float),
            },
        ),
        fixed_names=tuple(fixed_names),
        beta_values=np.asarray(beta, dtype=float),
        beta_covariance=np.asarray(beta_cov, dtype=float),
        information=information,
        parameter_names=tuple(names),
        covariance=covariance,
        loglik=float(loglik),
        prediction_tables=predictions,
        convergence=convergence,
        iterations=iterations,
        boundary=tuple(boundary),
        n_records=n_records,
        timings=timings,
        notices=notices,
        expected_information=expected_information,
        traits=tuple(traits),
        n_observations=n_observations,
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
    *,
    at_boundary: bool = False,
) -> Table:
    """One row per level: ``blup``, ``pev``, ``sep`` = √PEV, ``reliability`` = 1 − PEV/(σ² K_ii)
    (NaN where the prior variance σ² K_ii is 0), ``accuracy`` = √reliability, ``n_records``:
    the one place reliabilities are computed from PEVs. An effect whose variance REML holds
    at its boundary (``at_boundary``, ~0) predicts exactly 0 with no error, its variance 0."""
    if at_boundary:
        blup = np.zeros(len(blup))
        pev = None if pev is None else np.zeros(len(pev))
        variance = 0.0
    columns: dict[str, np.ndarray] = {"blup": np.asarray(blup, dtype=float)}
    if pev is not None:
        pev = np.clip(pev, 0.0, None)
        level_reliability = reliability(pev, variance * np.asarray(diagonal, dtype=float))
        columns["pev"] = pev
        columns["sep"] = np.sqrt(pev)
        columns["reliability"] = level_reliability
        columns["accuracy"] = np.sqrt(np.clip(level_reliability, 0.0, None))
    columns["n_records"] = np.asarray(counts)
    return Table("id", levels, columns)
