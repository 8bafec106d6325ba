"""What a Bayesian fit returns: every variance component and ratio, breeding values of every
effect, the REML check and diagnostics.

Works on the ArviZ DataTree that :meth:`bayes_animal.bayes.model.AnimalModel.fit` produces.
Its posterior holds one variable per reported quantity
(:meth:`~bayes_animal.spec.parameters.Parameters.quantities`: ``sigma2:<component>``,
``cov:<a>:<b>``, ``h2``, ``prop:<component>``, ``repeatability``, ``corr:<a>:<b>``; chain, draw;
the names of every output, docs/outputs.md),
``beta`` (…, fixed) and one variable per random effect (``u`` for the additive effect, dim
``animal``; ``u_<component>`` for the others). All intervals are 95 % highest-density
intervals (:mod:`bayes_animal.results.intervals`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..estimation.result import RemlResult, reliability
from ..spec.parameters import OBSERVED_H2, Parameters, Quantity, proportion_name, variance_name
from .intervals import HDI_PROB, hdi

__all__ = [
    "HDI_PROB",
    "AnimalFit",
    "Diagnostics",
    "DiagnosticsWarning",
    "RemlCheckWarning",
    "component_summary",
    "diagnose",
    "divergences",
    "ebv_table",
    "import_summary_libraries",
    "pareto_khat",
    "posterior_mode",
    "posterior_reliability",
    "prior_sensitivity",
    "rank_posterior",
    "reml_check",
]

RHAT_LIMIT = 1.01
ESS_LIMIT = 400
#: The independence sampler's proposal is good where it accepts at least this share of its
#: proposals and the Pareto k̂ of their importance weights is at most KHAT_LIMIT (above it
#: the proposal's tails are lighter than the posterior's; Vehtari et al. 2024).
ACCEPTANCE_LIMIT = 0.25
KHAT_LIMIT = 0.7
#: Fewer finite weights than this leave k̂ unestimated (nan): its tail would be a handful.
KHAT_MIN_WEIGHTS = 100


class DiagnosticsWarning(UserWarning):
    """Sampling diagnostics failed a threshold; the message says what to do."""


class RemlCheckWarning(UserWarning):
    """The REML estimate lies outside the posterior's 95 % HDI."""


def import_summary_libraries() -> None:
    """Import what the summary of a fit uses (arviz-stats' diagnostics and HDI, SciPy's KDE
    and optimiser): 1–1.5 s of imports that a fit does while its chains run elsewhere."""
    import arviz_stats  # noqa: F401
    import scipy.optimize
    import scipy.stats  # noqa: F401


def _draws(idata, name: str) -> np.ndarray:
    return np.asarray(idata.posterior[name].values)


#: Points of the grid the draws are binned on for their density's mode.
MODE_GRID = 1025


def posterior_mode(values: np.ndarray) -> float:
    """Mode of a Gaussian kernel density estimate of the draws (Scott's bandwidth, as
    ``scipy.stats.gaussian_kde``), binned: the draws are spread linearly onto a grid of
    :data:`MODE_GRID` points over their range and convolved with the kernel — O(draws + grid ×
    kernel) instead of the exact estimate's O(draws × grid), which took 0.45 s of a fit's
    summary at 4 × 3 000 draws — then the peak is refined by a parabola through it (equal to
    the exact estimate's mode within a few thousandths of the range, tested)."""
    flat = np.asarray(values, dtype=float).ravel()
    if np.ptp(flat) == 0:
        return float(flat[0])
    low = flat.min()
    grid = np.linspace(low, flat.max(), MODE_GRID)
    step = grid[1] - grid[0]
    bandwidth = flat.std(ddof=1) * flat.size**-0.2
    position = (flat - low) / step
    left = np.minimum(np.floor(position).astype(np.int64), MODE_GRID - 2)
    right_weight = position - left
    counts = np.bincount(left, weights=1.0 - right_weight, minlength=MODE_GRID)
    counts += np.bincount(left + 1, weights=right_weight, minlength=MODE_GRID)
    half = int(min(np.ceil(5.0 * bandwidth / step), MODE_GRID))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * step / bandwidth) ** 2)
    density = np.convolve(counts, kernel, mode="full")[half : half + MODE_GRID]
    k = int(np.clip(np.argmax(density), 1, len(grid) - 2))
    left_value, centre, right_value = density[k - 1 : k + 2]
    curvature = left_value - 2 * centre + right_value
    shift = 0.5 * (left_value - right_value) / curvature if curvature < 0 else 0.0
    return float(grid[k] + np.clip(shift, -1, 1) * step)


def convergence(idata, names: list[str]):
    """R-hat, bulk ESS and tail ESS (5 % and 95 % quantiles) of the posterior's ``names``
    (ArviZ's Datasets, one value per name): what the summary reports and the diagnostics and
    a default run's extension (:mod:`bayes_animal.bayes.extension`) judge."""
    import arviz_stats as az

    with np.errstate(invalid="ignore", divide="ignore"):  # a quantity the same in every
        # draw (one effect, no latent residual: its proportion is 1) divides by its zero
        # variance: ArviZ's numbers for it, without numpy's warnings
        rhat = az.rhat(idata, var_names=names)
        bulk = az.ess(idata, var_names=names)
        tail = az.ess(idata, var_names=names, method="tail", prob=(0.05, 0.95))
    return rhat, bulk, tail


def component_summary(idata, keys: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Per quantity: mean, median, sd, marginal mode (KDE), 95 % HDI, bulk and tail ESS,
    R-hat."""

    names = [n for n in keys if n in idata.posterior]
    rhat, ess_bulk, ess_tail = convergence(idata, names)
    rows = []
    for name in names:
        values = _draws(idata, name)
        low, high = hdi(values.ravel())
        rows.append(
            {
                "parameter": name,
                "mean": float(values.mean()),
                "median": float(np.median(values)),
                "sd": float(values.std(ddof=1)),
                "mode": posterior_mode(values),
                "hdi_low": float(low[0]),
                "hdi_high": float(high[0]),
                "ess_bulk": float(ess_bulk[name].values),
                "ess_tail": float(ess_tail[name].values),
                "r_hat": float(rhat[name].values),
            }
        )
    return pd.DataFrame(rows).set_index("parameter")


def reml_check(
    summary: pd.DataFrame,
    reml: RemlResult,
    quantities: tuple[Quantity, ...],
    *,
    joint_mode: dict[str, float] | None = None,
    warn: bool = True,
) -> pd.DataFrame:
    """The posterior checked against REML, per quantity.

    Columns: ``reml``, ``reml_se``, ``map`` (the joint posterior mode of the variance
    parameters, where computed: equal to REML under flat priors), ``mode`` (the mode of each
    marginal posterior, by KDE: it differs from the joint mode by the marginal's skewness),
    ``median``, ``mean``, ``hdi_low``, ``hdi_high`` and ``reml_in_hdi``. Issues a
    :class:`RemlCheckWarning` when REML lies outside the HDI.
    """
    rows = []
    for quantity in quantities:
        if quantity.key not in summary.index:
            continue
        estimate, se = reml.quantity(quantity)
        row = summary.loc[quantity.key]
        rows.append(
            {
                "parameter": quantity.key,
                "reml": estimate,
                "reml_se": se,
                "map": (joint_mode or {}).get(quantity.key, np.nan),
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
        R-hat, bulk and tail ESS per variance component and ratio.
    divergences
        Number of divergent transitions after tuning.
    max_tree_depth
        Deepest tree; ``hit_max_depth`` counts draws that reached the sampler's limit.
    messages
        What failed, and what to do about it; and where the prior moves a posterior.
    sensitivity
        Power-scaling sensitivity of each variance and ratio to the prior
        (:func:`prior_sensitivity`; every fit's, from the log prior of its variance
        parameters: 0 under flat priors), or None where it cannot be estimated.
    informative
        The messages that inform rather than fail (the prior's sensitivity): :attr:`ok`
        ignores them.
    """

    table: pd.DataFrame
    divergences: int
    max_tree_depth: int
    hit_max_depth: int
    messages: tuple[str, ...] = ()
    sensitivity: pd.Series | None = None
    informative: tuple[str, ...] = ()

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
        """The sampler's checks pass (R-hat, ESS, divergences, tree depth, the independence
        proposal): where the prior moves a posterior is said, but is not a failure."""
        return all(m in self.informative for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "divergences": self.divergences,
            "max_r_hat": self.max_r_hat,
            "min_ess_bulk": self.min_ess_bulk,
            "min_ess_tail": self.min_ess_tail,
            "max_tree_depth": self.max_tree_depth,
            "hit_max_depth": self.hit_max_depth,
            "messages": list(self.messages),
            **(
                {}
                if self.sensitivity is None
                else {"prior_sensitivity": self.sensitivity.to_dict()}
            ),
        }


def pareto_khat(log_weights) -> float:
    r"""The Pareto :math:`\hat k` of importance weights :math:`w_s = e^{\ell_s}` (PSIS: the
    shape of a generalised Pareto fitted to the largest weights; Vehtari et al. 2024). Bounded
    weights give :math:`\hat k < 0`; above 0.7 the weights' tail is too heavy for a reliable
    estimate; nan for fewer than :data:`KHAT_MIN_WEIGHTS` finite weights.

    ArviZ's ``psislw`` smooths log *ratios* in the sign of leave-one-out cross-validation, where
    the weights are :math:`e^{-\ell}` for the draws' log-likelihoods ℓ: the log weights go in
    negated (checked in the tests on Pareto weights of known shape).
    """
    from arviz_stats.base.array import array_stats

    values = np.asarray(log_weights, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if len(values) < KHAT_MIN_WEIGHTS:  # too few for a tail to fit: not estimated
        return float("nan")
    return float(array_stats.psislw(-values)[1])


def _stat(idata, *names: str) -> np.ndarray | None:
    stats = idata.get("sample_stats") if hasattr(idata, "get") else None
    if stats is None:
        return None
    for name in names:
        if name in stats:
            return np.asarray(stats[name].values)
    return None


def divergences(idata) -> int:
    """The divergent transitions among a run's kept draws (0 for a sampler that reports
    none, as the independence sampler)."""
    diverging = _stat(idata, "diverging")
    return int(np.sum(diverging)) if diverging is not None else 0


#: Power-scaling sensitivity to the prior above which the prior counts as moving a posterior
#: (Kallioinen et al. 2024's threshold, priorsense's and ArviZ's default).
SENSITIVITY_LIMIT = 0.05


def prior_sensitivity(idata, keys: list[str]) -> pd.Series | None:
    r"""Power-scaling sensitivity of each quantity in ``keys`` to the prior (Kallioinen et al.
    2024, ``arviz_stats.psense``): how far its posterior moves when the prior
    :math:`p(\theta)` of the hyperparameters is raised to a power near 1, from importance
    weights of the draws (no refit). Needs the ``log_prior`` group; None without it.

    Only the prior is power-scaled, and only the variance parameters' (their log prior is
    the ``log_prior`` group: :meth:`~bayes_animal.bayes.density.MarginalDensity.log_prior`):
    in a model that samples every breeding value, the likelihood's power-scaling moves the
    latent effects with it, and its sensitivity has no threshold to read against.
    """
    from arviz_stats import psense

    if "log_prior" not in {name.strip("/") for name in idata.groups}:
        return None
    keys = [k for k in keys if k in idata.posterior]
    log_prior = np.concatenate(
        [np.asarray(v.values).ravel() for v in idata["log_prior"].data_vars.values()]
    )
    if np.ptp(log_prior) == 0.0:  # a flat prior: power-scaling it changes nothing
        return pd.Series(0.0, index=keys, name="prior_sensitivity")
    try:
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant quantity: NaN
            values = psense(idata, var_names=keys, group="prior")
    except ValueError:  # PSIS finds no tail to fit (a chain that never moved): no estimate
        return None
    return pd.Series({k: float(values[k]) for k in keys}, name="prior_sensitivity")


def _sensitivity_messages(sensitivity: pd.Series | None) -> list[str]:
    """Advice for the quantities whose posterior the prior moves."""
    if sensitivity is None or not (sensitivity > SENSITIVITY_LIMIT).any():
        return []
    moved = sensitivity[sensitivity > SENSITIVITY_LIMIT]
    shown = ", ".join(f"{k} ({v:.2f})" for k, v in moved.items())
    return [
        f"The prior moves the posterior of {shown} (power-scaling sensitivity to the prior; "
        f"above {SENSITIVITY_LIMIT} it counts, Kallioinen et al. 2024): the further above, the "
        "more of the result is the prior's rather than the data's. Report it with its prior "
        "(model.priors_text()); where the chains also disagree, more draws will not settle it, "
        "a prior that says what is plausible will."
    ]


def diagnose(
    idata,
    summary: pd.DataFrame,
    *,
    parameterisation: str,
    warn: bool = True,
    several_traits: bool = False,
    exact_family: bool = False,
    sensitivity: pd.Series | None = None,
    alternative: str | None = None,
    target_accept: float | None = None,
) -> Diagnostics:
    """R-hat, ESS, divergences and tree depth; warn with advice when a threshold fails (with
    several traits, whose one parameterisation is the marginal model, no other is advised;
    for the exact model of a non-Gaussian family the other, the Laplace approximation, is
    not advised as a fix either: more draws are — ``alternative``, another exact
    parameterisation, is), and where the prior shapes a posterior (``sensitivity``,
    :func:`prior_sensitivity`). ``target_accept``, the one the draws were made at, sets the
    higher one divergences advise."""
    table = summary[["r_hat", "ess_bulk", "ess_tail"]]
    divergent = divergences(idata)
    depth = _stat(idata, "tree_depth", "depth")
    max_depth = int(np.max(depth)) if depth is not None else 0
    reached = _stat(idata, "reached_max_treedepth", "maxdepth_reached")
    hit = int(np.sum(reached)) if reached is not None else 0
    messages: list[str] = []
    other = "noncentred" if parameterisation == "marginal" else "marginal"
    switch = "" if several_traits or exact_family else f" or try parameterisation='{other}'"
    if alternative is not None:
        switch = f" or try parameterisation='{alternative}'"
    if (table["r_hat"] > RHAT_LIMIT).any():
        bad = table.index[table["r_hat"] > RHAT_LIMIT].tolist()
        messages.append(
            f"R-hat > {RHAT_LIMIT} for {', '.join(bad)} (max {table['r_hat'].max():.3f}): the "
            f"chains disagree. Run longer (more tune and draws){switch}."
        )
    low_ess = table.index[(table["ess_bulk"] < ESS_LIMIT) | (table["ess_tail"] < ESS_LIMIT)]
    if len(low_ess):
        messages.append(
            f"ESS < {ESS_LIMIT} for {', '.join(low_ess)} (min bulk {table['ess_bulk'].min():.0f},"
            f" tail {table['ess_tail'].min():.0f}): draw more samples{switch}."
        )
    if divergent:
        drawn = "" if target_accept is None else f" (these draws: {target_accept:g})"
        higher = 0.99 if target_accept is not None and target_accept >= 0.95 else 0.95
        messages.append(
            f"{divergent} divergent transitions: raise target_accept (e.g. {higher:g}"
            f"){drawn} or use a stronger prior on the variances{switch}."
        )
    if hit:
        messages.append(
            f"{hit} draws reached the maximum tree depth: the posterior is hard to explore; "
            f"tune longer{switch}."
        )
    accepted = _stat(idata, "accepted")  # the independence sampler's
    if accepted is not None:
        # per iteration: a thinned chain's `accepted` says whether it moved between draws
        rate = float(idata.attrs.get("acceptance_rate", np.mean(accepted)))
        khat = float(idata.attrs.get("proposal_khat", np.nan))
        if rate < ACCEPTANCE_LIMIT or khat > KHAT_LIMIT:
            messages.append(
                f"The independence sampler accepted {rate:.0%} of its proposals (Pareto k̂ of "
                f"their weights {khat:.2f}; a good proposal: ≥ {ACCEPTANCE_LIMIT:.0%} and "
                f"≤ {KHAT_LIMIT}): its t proposal near the posterior mean misses the posterior. "
                "Use sampler='nutpie' (NUTS)."
            )
    informative = _sensitivity_messages(sensitivity)
    messages += informative
    if warn:
        for message in messages:
            warnings.warn(message, DiagnosticsWarning, stacklevel=2)
    return Diagnostics(
        table, divergent, max_depth, hit, tuple(messages), sensitivity, tuple(informative)
    )


def posterior_reliability(draws: np.ndarray, prior_variance: np.ndarray) -> np.ndarray:
    """Per level :math:`1 - \\operatorname{Var}(u_i \\mid y) / (E[\\sigma^2] k_{ii})`, clipped
    to [0, 1]: only for a posterior saved without its reliabilities (before they were kept in
    posterior.nc). A Monte Carlo variance against a plug-in, it falls below 0 by Monte Carlo
    error for levels with little information; fits compute
    :func:`~bayes_animal.bayes.conditional.expected_reliability` instead."""
    flat = np.asarray(draws).reshape(-1, np.shape(draws)[-1])
    return np.clip(reliability(flat.var(axis=0, ddof=1), prior_variance), 0.0, 1.0)


def ebv_table(
    draws: np.ndarray,
    ids: np.ndarray,
    prior_variance: np.ndarray | None = None,
    *,
    reliabilities: np.ndarray | None = None,
) -> pd.DataFrame:
    """Posterior predictions of one effect: mean, sd, 95 % HDI and reliability per level —
    ``reliabilities`` where given (a fit's), else :func:`posterior_reliability` from
    ``prior_variance`` (:math:`E[\\sigma^2] k_{ii}`)."""
    flat = np.asarray(draws).reshape(-1, np.shape(draws)[-1])
    if reliabilities is None:
        if prior_variance is None:
            raise ValueError("ebv_table needs prior_variance= or reliabilities=.")
        reliabilities = posterior_reliability(flat, prior_variance)
    low, high = hdi(flat)
    return pd.DataFrame(
        {
            "mean": flat.mean(axis=0),
            "sd": flat.std(axis=0, ddof=1),
            "hdi_low": low,
            "hdi_high": high,
            "reliability": np.asarray(reliabilities, dtype=float),
        },
        index=pd.Index(ids, name="id"),
    )


def _effect_variable(name: str) -> str:
    from ..spec.parameters import identifier

    return "u" if name == "additive" else f"u_{identifier(name)}"


@dataclass
class AnimalFit:
    """The result of :meth:`bayes_animal.bayes.model.AnimalModel.fit`.

    Attributes
    ----------
    idata
        ArviZ DataTree (see the module docstring); sample_stats; provenance in ``attrs``.
    reml
        The built-in REML estimate (it also started the sampler).
    reml_check
        :func:`reml_check` table.
    diagnostics
        :class:`Diagnostics`.
    sampler, parameterisation, fixed_effects
        What was run (``fixed_effects``: ``"integrated"`` or ``"sampled"``).
    timings
        Seconds of each stage.
    parameters
        The model's parameter layout.
    diagonals
        Per random effect, the diagonal of its structure K.
    reliabilities
        Per random effect and level, :math:`1 - E_{\\theta\\mid y}[\\mathrm{PEV}(\\theta)/
        (\\sigma^2_k(\\theta) k_{ii})]` (:func:`~bayes_animal.bayes.conditional.
        expected_reliability`): in [0, 1].
    notes
        What was chosen and why.
    random_seed
        The seed of the fit (the one given, or the one drawn when none was): the same seed
        gives the same draws.
    """

    idata: Any
    reml: RemlResult
    reml_check: pd.DataFrame
    diagnostics: Diagnostics
    sampler: str
    parameterisation: str
    fixed_effects: str
    timings: dict[str, float]
    parameters: Parameters
    diagonals: dict[str, np.ndarray]
    reliabilities: dict[str, np.ndarray] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    random_seed: int | None = None
    _summary: pd.DataFrame | None = field(default=None, repr=False)
    _ebv: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def report(self) -> str:
        """A ``summary()``-sized report: every quantity's posterior beside the REML estimate,
        the diagnostics, the timings and the seed."""
        table = self.reml_check
        width = max([22, *(len(str(name)) + 1 for name in table.index)])
        lines = [
            f"posterior ({self.sampler}, {self.parameterisation}, fixed effects "
            f"{self.fixed_effects}; {int(self.idata.posterior.sizes['chain'])} chains × "
            f"{int(self.idata.posterior.sizes['draw'])} draws)",
            "",
            f"{'parameter':<{width}}{'REML':>10} {'± SE':>9} {'mode':>10} {'median':>10} "
            f"{'mean':>10} {'95% HDI':>22}  REML inside",
        ]
        for name, row in table.iterrows():  # a space between columns: -0.0004615 fills ten
            interval = f"[{row['hdi_low']:.4g}, {row['hdi_high']:.4g}]"
            lines.append(
                f"{name:<{width}}{row['reml']:>10.4g} {row['reml_se']:>9.3g} "
                f"{row['mode']:>10.4g} {row['median']:>10.4g} {row['mean']:>10.4g} "
                f"{interval:>22}  {'yes' if row['reml_in_hdi'] else 'NO'}"
            )
        d = self.diagnostics
        lines += [
            "",
            f"diagnostics: max R-hat {d.max_r_hat:.4f}, min bulk ESS {d.min_ess_bulk:.0f}, "
            f"min tail ESS {d.min_ess_tail:.0f}, {d.divergences} divergences"
            + (
                ""
                if d.sensitivity is None or d.sensitivity.empty
                else f", prior sensitivity ≤ {d.sensitivity.max():.2f}"
            )
            + ("" if not d.messages else "  (see warnings)"),
            "time: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items()),
            f"seed: {self.random_seed} (--seed {self.random_seed} repeats these draws)",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        """The report, and where the rest is (``print(fit)`` is summary-sized)."""
        return (
            self.report()
            + "\nevery draw: .idata (ArviZ); breeding values: .ebv(); every quantity: "
            ".summary(); files: .save(folder)."
        )

    __str__ = __repr__

    @property
    def effects(self) -> tuple[str, ...]:
        """The random effects (component names) with posterior draws."""
        return tuple(n for n in self.diagonals if _effect_variable(n) in self.idata.posterior)

    def summary(self) -> pd.DataFrame:
        """Every variance, covariance and ratio: mean, median, sd, mode, 95 % HDI, ESS, R-hat."""
        if self._summary is None:
            keys = [q.key for q in self.parameters.quantities()]
            self._summary = component_summary(self.idata, keys)
        return self._summary.copy()

    def beta_summary(self) -> pd.DataFrame:
        """Fixed effects: mean, sd and 95 % HDI per design column."""
        draws = _draws(self.idata, "beta")
        flat = draws.reshape(-1, draws.shape[-1])
        low, high = hdi(flat)
        names = [str(n) for n in self.idata.posterior["fixed"].values]
        return pd.DataFrame(
            {
                "mean": flat.mean(axis=0),
                "sd": flat.std(axis=0, ddof=1),
                "hdi_low": low,
                "hdi_high": high,
            },
            index=pd.Index(names, name="fixed"),
        )

    def ebv(self, effect: str = "additive", *, trait: str | None = None) -> pd.DataFrame:
        """Posterior predictions of every level of a random effect (breeding values of a genetic
        one): mean, sd, 95 % HDI and reliability, by id; with several traits, of one trait
        (``trait="bwt"``, or ``effect="additive:bwt"``)."""
        traits = self.parameters.traits if self.parameters.multi_trait else ()
        if trait is not None:
            if trait not in traits:
                raise KeyError(
                    f"No trait {trait!r}; the model's traits are {', '.join(traits) or 'one'}."
                )
            effect = f"{effect}:{trait}"
        elif traits and effect not in self.diagonals:
            raise KeyError(
                f"This fit has the traits {', '.join(traits)}: name one, "
                f"ebv({effect!r}, trait={traits[0]!r})."
            )
        if effect not in self.diagonals:
            raise KeyError(
                f"No random effect {effect!r}; the model has {', '.join(self.diagonals)}."
            )
        if effect not in self._ebv:
            variable = _effect_variable(effect)
            data = self.idata.posterior[variable]
            ids = np.asarray(data[data.dims[-1]].values, dtype=object)
            if effect in self.reliabilities:
                reliabilities = self.reliabilities[effect]
            else:
                variance = float(_draws(self.idata, variance_name(effect)).mean())
                prior = variance * np.asarray(self.diagonals[effect], dtype=float)
                reliabilities = posterior_reliability(data.values, prior)
            self._ebv[effect] = ebv_table(data.values, ids, reliabilities=reliabilities)
        return self._ebv[effect]

    def scalar_copy(self) -> AnimalFit:
        """This fit with only the scalar draws (variances, ratios; no b or u) and the sample
        statistics: what the figures need, small enough to pickle to a worker process (u of
        50 000 animals × 4 000 draws would be 1.6 GB)."""
        from dataclasses import replace

        import xarray as xr

        posterior = self.idata.posterior.to_dataset()
        scalars = [name for name, values in posterior.data_vars.items() if values.ndim == 2]
        groups = {"posterior": posterior[scalars]}
        if "sample_stats" in self.idata.children:
            groups["sample_stats"] = self.idata.sample_stats.to_dataset()
        return replace(self, idata=xr.DataTree.from_dict(groups), _ebv={})

    def main_effect(self) -> str:
        """The additive effect, or the single random effect of a model without one."""
        names = list(self.diagonals)
        return "additive" if "additive" in names else names[0]

    def to_summary_dict(self) -> dict[str, Any]:
        """The ``summary.json`` written by ``bayes-animal fit`` (docs/outputs.md): ``components``
        and ``covariances`` keyed as in ``reml --json``, ``ratios`` by the quantities' names
        (``h2``, ``prop:<component>``, ``repeatability``, ``corr:<a>:<b>``), each with the
        posterior's statistics; ``sigma2_u``, ``sigma2_e`` and ``h2`` at the top are aliases of
        the first version (the additive, or single, effect's variance and proportion and the
        residual variance)."""
        table = self.summary()
        fields = ("mean", "median", "sd", "mode", "hdi_low", "hdi_high", "ess_bulk", "ess_tail")
        fields += ("r_hat",)

        def row(key: str) -> dict[str, float | None]:
            if key not in table.index:  # a parameter the family holds (a latent residual)
                value = float(np.asarray(self.idata.posterior[key].values).ravel()[0])
                held = ("mean", "median", "mode", "hdi_low", "hdi_high")
                return {f: value if f in held else 0.0 if f == "sd" else None for f in fields}
            return {f: float(table.loc[key, f]) for f in fields}

        summary: dict[str, Any] = {"family": self.reml.family}
        if self.parameters.multi_trait:
            summary["traits"] = list(self.parameters.traits)
        else:
            main = self.main_effect()
            aliases = {
                "sigma2_u": variance_name(main),
                "sigma2_e": variance_name("residual"),
                "h2": proportion_name(main),
            }
            for alias, key in aliases.items():
                summary[alias] = row(key)
        quantities = self.parameters.quantities()
        summary["components"] = {q.source: row(q.key) for q in quantities if q.kind == "variance"}
        summary["covariances"] = {
            q.source: row(q.key) for q in quantities if q.kind == "covariance"
        }
        summary["ratios"] = {
            q.key: row(q.key) for q in quantities if q.kind == "ratio" and q.key in table.index
        }
        if OBSERVED_H2 in table.index:
            summary["ratios"][OBSERVED_H2] = row(OBSERVED_H2)
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
        summary["random_seed"] = self.random_seed
        summary["notes"] = list(self.notes)
        summary["provenance"] = {k: str(v) for k, v in self.idata.attrs.items()}
        return summary

    def save(self, folder: str | Path, *, keep_draws: str = "all") -> dict[str, Path]:
        """Write summary.json, ebv.csv (the additive, or single, effect), one
        ``ebv_<component>.csv`` per other effect (with several traits ``ebv_<effect>_<trait>.csv``
        for every effect), and posterior.nc (with its ``reml`` group).

        ``keep_draws`` says what posterior.nc keeps (:data:`KEEP_DRAWS`): ``"all"`` — every
        draw, those of b and of every random effect as 4-byte floats, compressed (7
        significant digits, far below their Monte Carlo error; about 14 MB per 1 000 levels
        for 4 × 1 000 draws, against 32 MB as 8-byte floats), the variances and ratios
        exact; ``"variances"`` — the variances and ratios only (no ranking from the file);
        ``"none"`` — no posterior.nc. The EBV tables keep every level's summary either way."""
        if keep_draws not in KEEP_DRAWS:
            raise ValueError(f"keep_draws={keep_draws!r}: choose one of {', '.join(KEEP_DRAWS)}.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"summary": folder / "summary.json"}
        paths["summary"].write_text(json.dumps(self.to_summary_dict(), indent=2) + "\n")
        main = None if self.parameters.multi_trait else self.main_effect()
        for effect in self.effects:
            key = "ebv" if effect == main else f"ebv_{effect.replace(':', '_')}"
            paths[key] = folder / f"{key}.csv"
            self.ebv(effect).reset_index().to_csv(paths[key], index=False, float_format="%.8g")
        if keep_draws == "none":
            (folder / "posterior.nc").unlink(missing_ok=True)  # not a previous run's
            return paths
        paths["posterior"] = folder / "posterior.nc"
        tree = self.with_reml_group()
        posterior = tree.posterior.to_dataset()
        large = [name for name, values in posterior.data_vars.items() if values.ndim > 2]
        if keep_draws == "variances":
            tree["posterior"] = posterior.drop_vars(large)
            tree.attrs["kept_draws"] = "variances"
            encoding = {}
        else:
            tree.attrs["kept_draws"] = "all (b and the random effects as 4-byte floats)"
            compressed = {"dtype": "float32", "zlib": True, "complevel": 4, "shuffle": True}
            encoding = {"/posterior": {name: compressed for name in large}}
        tree.to_netcdf(paths["posterior"], encoding=encoding)
        return paths

    def with_reml_group(self):
        """The DataTree plus a ``reml`` group — per effect the REML BLUPs (``blup_<effect>``)
        the structure's diagonal (``diagonal_<effect>``) and the posterior reliabilities
        (``reliability_<effect>``); ``blup`` and ``a_diagonal`` for the additive (or single)
        effect — so that ``bayes-animal rank`` can read everything it
        needs from posterior.nc."""
        import xarray as xr

        from ..spec.parameters import identifier

        tree = self.idata.copy()
        variables = {}
        coords = {}
        main = self.main_effect()
        for effect in self.effects:
            data = self.idata.posterior[_effect_variable(effect)]
            dim = data.dims[-1]
            ids = [str(a) for a in data[dim].values]
            coords[dim] = ids
            blup = self.reml.predictions[effect]["blup"].loc[ids].to_numpy()
            diagonal = np.asarray(self.diagonals[effect], dtype=float)
            variables[f"blup_{identifier(effect)}"] = (dim, blup)
            variables[f"diagonal_{identifier(effect)}"] = (dim, diagonal)
            variables[f"reliability_{identifier(effect)}"] = (
                dim,
                self.ebv(effect)["reliability"].to_numpy(),
            )
            if effect == main:
                variables["blup"] = (dim, blup)
                variables["a_diagonal"] = (dim, diagonal)
        tree["reml"] = xr.Dataset(
            variables, coords=coords, attrs={"reml": json.dumps(self.reml.to_dict())}
        )
        return tree


#: What posterior.nc keeps (:meth:`AnimalFit.save`): every draw, the variances and ratios
#: only, or no file.
KEEP_DRAWS = ("all", "variances", "none")


def posterior_traits(tree) -> tuple[str, ...]:
    """The traits of a posterior DataTree (from its provenance; one trait: ``()``)."""
    try:
        options = json.loads(str(tree.attrs.get("model_options", "{}")))
    except json.JSONDecodeError:
        return ()
    traits = tuple(options.get("traits") or ())
    return traits if len(traits) > 1 else ()


def parse_index(text: str) -> dict[str, float]:
    """``"bwt=1,tarsus=0.25"`` → ``{"bwt": 1.0, "tarsus": 0.25}`` (the command line's
    ``--index``)."""
    from ..errors import BayesAnimalError

    weights: dict[str, float] = {}
    for piece in (p.strip() for p in text.split(",")):
        name, _, value = piece.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise BayesAnimalError(
                f"--index {text!r}: {piece!r} is not trait=weight; write it like "
                '"bwt=1,tarsus=0.25".'
            ) from None
    return weights


def _index_draws(tree, posterior, effect: str, index: Mapping[str, float]):
    """Σ wₜ uₜ per draw (and of the REML BLUPs, where kept) for a selection index over the
    traits of a posterior of several traits."""
    from ..errors import BayesAnimalError
    from ..spec.parameters import identifier

    traits = posterior_traits(tree)
    if not traits:
        raise BayesAnimalError(
            "An index weighs the breeding values of several traits; this posterior is of one "
            "trait. Fit cbind(trait1, trait2, …) ~ … first, or rank without --index."
        )
    unknown = [t for t in index if t not in traits]
    if unknown or not index:
        raise BayesAnimalError(
            f"The index names {', '.join(map(repr, unknown)) or 'no trait'}; the posterior's "
            f'traits are {", ".join(traits)} (write --index "{traits[0]}=1,{traits[-1]}=0.5").'
        )
    draws = reml_blup = None
    for trait, weight in index.items():
        variable = f"u_{identifier(f'{effect}:{trait}')}"
        if variable not in posterior:
            raise BayesAnimalError(
                f"The posterior has no draws of {effect}:{trait} (saved with keep_draws="
                "'variances'?). Fit again keeping them (keep_draws='all')."
            )
        data = posterior[variable]
        values = weight * np.asarray(data.values)
        draws = values if draws is None else draws + values
        if "reml" in tree.children and f"blup_{identifier(f'{effect}:{trait}')}" in tree["reml"]:
            blup = weight * np.asarray(
                tree["reml"][f"blup_{identifier(f'{effect}:{trait}')}"].values
            )
            reml_blup = blup if reml_blup is None else reml_blup + blup
    ids = np.asarray([str(a) for a in data[data.dims[-1]].values], dtype=object)
    return draws, ids, reml_blup


def rank_posterior(
    tree, *, effect="additive", candidates=None, top=None, top_fraction=None, threshold=None,
    index: Mapping[str, float] | None = None,
):  # fmt: skip
    r"""Rank the levels of one effect of a posterior DataTree — a fit's, or posterior.nc read
    back — with its ``reml`` group when present (REML BLUPs, the kept reliabilities): the
    additive effect by default, any other genetic (or random) effect on request (``effect``;
    ``--effect`` on the command line; ``<effect>:<trait>`` with several traits), or a
    selection index :math:`\sum_t w_t u_t` over the traits (``index={"bwt": 1, "tarsus":
    0.25}``; ``--index``), ranked per draw like one effect. The one place that knows the
    tree's variable names (``u``, ``u_<effect>``, ``sigma2:<effect>``, the ``reml`` group's)."""
    from ..errors import BayesAnimalError
    from ..spec.parameters import identifier
    from .ranking import rank

    posterior = tree.posterior if hasattr(tree, "posterior") else tree["posterior"]
    if index is not None:
        draws, ids, reml_blup = _index_draws(tree, posterior, effect, index)
        return rank(
            draws, ids, candidates=candidates, top=top, top_fraction=top_fraction,
            threshold=threshold, reliability=None, reml_blup=reml_blup,
        )  # fmt: skip
    traits = posterior_traits(tree)
    if traits and effect in ("additive", "maternal") and f"u_{effect}" not in posterior:
        raise BayesAnimalError(
            f"This posterior has the traits {', '.join(traits)}: rank one "
            f"(effect='{effect}:{traits[0]}', --effect {effect}:{traits[0]}) or an index of "
            f'them (index={{...}}, --index "{traits[0]}=1,{traits[-1]}=0.5").'
        )
    variable = "u" if effect == "additive" else f"u_{identifier(effect)}"
    if variable not in posterior:
        effects = sorted(
            "additive" if n == "u" else n[2:] for n in posterior.data_vars if n.startswith("u")
        )
        if not effects and "variances" in str(tree.attrs.get("kept_draws", "")):
            raise BayesAnimalError(
                "This posterior keeps the draws of the variances only (it was saved with "
                "keep_draws='variances'): ranking needs the draws of the breeding values. "
                "Fit again keeping them (the default, keep_draws='all')."
            )
        raise BayesAnimalError(
            f"The posterior has no effect {effect!r}; it has {', '.join(effects) or 'none'}. "
            "Choose one with effect=<name>."
        )
    data = posterior[variable]
    draws = np.asarray(data.values)
    ids = np.asarray([str(a) for a in data[data.dims[-1]].values], dtype=object)
    reml_blup = reliability = None
    if "reml" in tree.children:
        group = tree["reml"]
        key = identifier(effect)
        blup_name = f"blup_{key}" if f"blup_{key}" in group else "blup"
        diagonal_name = f"diagonal_{key}" if f"diagonal_{key}" in group else "a_diagonal"
        reml_blup = np.asarray(group[blup_name].values)
        if f"reliability_{key}" in group:  # kept by the fit (expected_reliability)
            reliability = np.asarray(group[f"reliability_{key}"].values)
        else:  # a posterior saved before they were kept
            name = variance_name(effect)
            if name not in posterior:
                name = f"sigma2_{key}"  # the name before one vocabulary
            variance = posterior[name].values
            variance = float(np.asarray(variance).mean())
            reliability = posterior_reliability(draws, variance * group[diagonal_name].values)
    return rank(
        draws,
        ids,
        candidates=candidates,
        top=top,
        top_fraction=top_fraction,
        threshold=threshold,
        reliability=reliability,
        reml_blup=reml_blup,
    )
