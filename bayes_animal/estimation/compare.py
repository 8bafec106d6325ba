r"""Likelihood-ratio tests of nested models fitted by REML.

For two REML fits with the same fixed effects and records, where the larger model adds
random terms (or a covariance) to the smaller one, :math:`\mathrm{LR} = 2(\ell_1 - \ell_0)`.
When the models differ by one variance component, its null value 0 lies on the boundary of
the parameter space and :math:`\mathrm{LR}` follows the mixture
:math:`\tfrac12\chi^2_0 + \tfrac12\chi^2_1` (Self & Liang 1987): :math:`p = \tfrac12
P(\chi^2_1 > \mathrm{LR})` — what the gryphon tutorial uses for ``mother``. Otherwise
:math:`p = P(\chi^2_k > \mathrm{LR})` with :math:`k` the difference in the number of
parameters (conservative when some of them are variances).

REML likelihoods of models with different fixed effects are not comparable; that, different
records, or models that are not nested in this sense are errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import BayesAnimalError
from .result import RemlResult

__all__ = ["LikelihoodRatio", "compare"]


@dataclass(frozen=True)
class LikelihoodRatio:
    """The test of a smaller model against a larger one.

    Attributes
    ----------
    statistic
        :math:`2(\\ell_1 - \\ell_0)`.
    df
        Difference in the number of parameters.
    p_value
        From the boundary mixture (one variance) or :math:`\\chi^2_{df}`.
    p_chi2
        :math:`P(\\chi^2_{df} > \\mathrm{LR})` without the boundary correction (what many
        tutorials print: twice the mixture's p for one variance).
    mixture
        Whether the ½χ²₀ + ½χ²₁ mixture was used.
    added
        The parameters of the larger model that the smaller one lacks.
    """

    statistic: float
    df: int
    p_value: float
    mixture: bool
    added: tuple[str, ...]
    p_chi2: float = float("nan")

    def __str__(self) -> str:
        test = "½χ²₀ + ½χ²₁" if self.mixture else f"χ²_{self.df}"
        return (
            f"LRT for {', '.join(self.added)}: 2ΔlogL = {self.statistic:.4f}, df = {self.df}, "
            f"p = {self.p_value:.3g} ({test})"
        )


def _chi2_sf(x: float, df: int) -> float:
    """Survival function of χ² with integer df (no scipy needed)."""
    if x <= 0:
        return 1.0
    if df == 1:
        return math.erfc(math.sqrt(x / 2.0))
    if df % 2 == 0:
        term = total = 1.0
        for k in range(1, df // 2):
            term *= (x / 2.0) / k
            total += term
        return math.exp(-x / 2.0) * total
    # odd df > 1: sf(df) = sf(df - 2) + x^((df-2)/2) e^(-x/2) / Γ(df/2) · 2^{-(df-2)/2}
    value = math.erfc(math.sqrt(x / 2.0))
    for k in range(3, df + 1, 2):
        value += math.exp((k / 2.0 - 1) * math.log(x / 2.0) - x / 2.0 - math.lgamma(k / 2.0))
    return value


def _check_same_parts(smaller: RemlResult, larger: RemlResult) -> None:
    """The records, the fixed part and every random effect the fits share are the same
    (:attr:`RemlResult.fingerprints`): equal parameter names are not enough — an ``additive``
    effect from a pedigree and one from a genomic G, or a response transformed, are not nested.
    """
    small, large = smaller.fingerprints, larger.fingerprints
    if not small or not large:
        raise BayesAnimalError(
            "compare() needs fits made by reml() or AnimalModel.reml() in this version (their "
            "fingerprints say what each model is); refit both."
        )
    if small["records"] != large["records"]:
        raise BayesAnimalError(
            "The fits use different responses or records: a likelihood-ratio test needs the "
            "same data. Fit both models to the same response and rows."
        )
    if small["fixed"] != large["fixed"]:
        raise BayesAnimalError(
            "REML likelihoods of models with different fixed effects are not comparable (the "
            "fixed-effect columns differ). Fit both with the same fixed part."
        )
    differ = sorted(k for k in small.keys() & large.keys() - {"records", "fixed"}
                    if small[k] != large[k])  # fmt: skip
    if differ:
        raise BayesAnimalError(
            f"The models are not nested: the effect(s) {differ} are in both but differ (another "
            "relationship matrix, grouping column or levels). Nested models share every effect "
            "of the smaller one unchanged."
        )


def compare(smaller: RemlResult, larger: RemlResult) -> LikelihoodRatio:
    """Likelihood-ratio test of nested REML fits (order of the arguments does not matter).

    Raises
    ------
    BayesAnimalError
        The fits are not both REML, have different fixed effects or records, or are not
        nested (the smaller model's parameters are not all in the larger one).
    """
    if len(smaller.parameter_names) > len(larger.parameter_names):
        smaller, larger = larger, smaller
    if smaller.method != "reml" or larger.method != "reml":
        raise BayesAnimalError("compare() tests REML fits; both must use method='reml'.")
    if list(smaller.beta.index) != list(larger.beta.index):
        raise BayesAnimalError(
            "REML likelihoods of models with different fixed effects are not comparable: "
            f"{list(smaller.beta.index)} vs {list(larger.beta.index)}. Fit both with the same "
            "fixed part."
        )
    if smaller.n_records != larger.n_records:
        raise BayesAnimalError(
            f"The fits use different records ({smaller.n_records} vs {larger.n_records})."
        )
    _check_same_parts(smaller, larger)
    names_small, names_large = set(smaller.parameter_names), set(larger.parameter_names)
    if not names_small < names_large:
        raise BayesAnimalError(
            "The models are not nested: the smaller has "
            f"{sorted(names_small - names_large) or 'no extra'} parameters the larger lacks, "
            f"or they have the same parameters ({sorted(names_small)})."
        )
    added = tuple(n for n in larger.parameter_names if n not in names_small)
    statistic = max(2.0 * (larger.loglik - smaller.loglik), 0.0)
    mixture = len(added) == 1 and added[0] in larger.component_table  # one variance
    naive = _chi2_sf(statistic, len(added))
    p_value = 0.5 * naive if mixture else naive
    return LikelihoodRatio(statistic, len(added), p_value, mixture, added, naive)
