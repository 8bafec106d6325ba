r"""Priors on the variance components, as objects that print, compare and can be replaced.

A :class:`Priors` holds one prior per variance component — ``genetic`` (:math:`\sigma_u^2`)
and ``residual`` (:math:`\sigma^2`) — or a prior on :math:`h^2` with one on the total
phenotypic variance, plus how the fixed effects are treated.

Component priors:

- :class:`HalfStudentT` on the standard deviation (the default, ν = 3). With ``scale=None``
  the scale is set from the data: the residual SD of an ordinary least-squares fit of the
  fixed part, :math:`s`, for :math:`\sigma`, and :math:`s / \sqrt{\bar a}` for
  :math:`\sigma_u`, where :math:`\bar a` is the mean diagonal of A (genetic values have
  variance :math:`\sigma_u^2 a_{ii}`, so this keeps the prior on the scale of A).
- :class:`InverseGamma` on the variance, MCMCglmm's ``list(V = V, nu = nu)``:
  :math:`\sigma^2 \sim \text{IG}(\nu/2, \nu V/2)`.
- :class:`FlatVariance`: an improper uniform prior on the variance over :math:`(0, \infty)`.
  With flat priors and the fixed effects integrated out, the marginal posterior of
  :math:`(\sigma_u^2, \sigma^2)` is the restricted likelihood, so its mode is the REML estimate.
- :class:`BetaH2`: :math:`h^2 \sim \text{Beta}(a, b)` with a :class:`HalfStudentT` on the total
  phenotypic SD :math:`\sqrt{\sigma_u^2 + \sigma^2}`.

Fixed effects: ``"flat"`` (improper uniform; integrated out analytically in the marginal
model, sampled in the non-centred one) or a :class:`NormalFixed` prior (sampled).

PyMC is imported only when a prior is added to a model (:meth:`Priors.variances`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BayesAnimalError

__all__ = [
    "PRESETS",
    "BetaH2",
    "FlatVariance",
    "HalfStudentT",
    "InverseGamma",
    "NormalFixed",
    "PriorError",
    "Priors",
    "as_priors",
]


class PriorError(BayesAnimalError, ValueError):
    """A prior is unknown or badly specified."""


@dataclass(frozen=True)
class HalfStudentT:
    """Half-Student-t prior on a standard deviation; ``scale=None``: from the data."""

    nu: float = 3.0
    scale: float | None = None

    def describe(self, resolved_scale: float | None = None) -> str:
        scale = self.scale if self.scale is not None else resolved_scale
        shown = f"{scale:.4g}" if scale is not None else "from the data"
        return f"HalfStudentT(nu={self.nu:g}, scale={shown}) on the SD"

    def variance(self, name: str, default_scale: float):
        import pymc as pm

        scale = self.scale if self.scale is not None else default_scale
        return pm.HalfStudentT(f"sigma_{name}", nu=self.nu, sigma=scale) ** 2

    def initial(self, name: str, variance: float) -> dict[str, float]:
        """The sampler's starting value for a given variance."""
        return {f"sigma_{name}": float(np.sqrt(variance))}


@dataclass(frozen=True)
class InverseGamma:
    """Inverse-gamma prior on a variance in MCMCglmm's (V, nu): IG(nu/2, nu·V/2)."""

    V: float = 1.0
    nu: float = 0.002

    def describe(self, resolved_scale: float | None = None) -> str:
        return f"InverseGamma(V={self.V:g}, nu={self.nu:g}) on the variance"

    def variance(self, name: str, default_scale: float):
        import pymc as pm

        return pm.InverseGamma(f"var_{name}", alpha=self.nu / 2, beta=self.nu * self.V / 2)

    def initial(self, name: str, variance: float) -> dict[str, float]:
        """The sampler's starting value for a given variance."""
        return {f"var_{name}": float(variance)}


@dataclass(frozen=True)
class FlatVariance:
    """Improper flat prior on a variance over (0, ∞) (the REML check)."""

    def describe(self, resolved_scale: float | None = None) -> str:
        return "Flat on the variance (improper)"

    def variance(self, name: str, default_scale: float):
        import pymc as pm

        return pm.HalfFlat(f"var_{name}")

    def initial(self, name: str, variance: float) -> dict[str, float]:
        """The sampler's starting value for a given variance."""
        return {f"var_{name}": float(variance)}


@dataclass(frozen=True)
class BetaH2:
    """Beta(a, b) on h² and a half-Student-t on the total phenotypic SD."""

    a: float = 1.0
    b: float = 1.0
    total: HalfStudentT = field(default_factory=HalfStudentT)

    def describe(self, resolved_scale: float | None = None) -> str:
        return (
            f"Beta(a={self.a:g}, b={self.b:g}) on h2; {self.total.describe(resolved_scale)} total"
        )


@dataclass(frozen=True)
class NormalFixed:
    """Independent Normal(0, scale²) priors on the fixed effects (sampled)."""

    scale: float = 100.0

    def describe(self) -> str:
        return f"Normal(0, {self.scale:g}²) on each fixed effect (sampled)"


Component = HalfStudentT | InverseGamma | FlatVariance


@dataclass(frozen=True)
class Priors:
    """Priors of the animal model (print it to read it; :func:`dataclasses.replace` to change).

    Attributes
    ----------
    genetic, residual
        Priors of σu² and σ² (ignored when ``h2`` is set).
    h2
        A :class:`BetaH2` prior on h² with one on the total SD, instead of the two above.
    fixed
        ``"flat"`` or :class:`NormalFixed`.
    """

    genetic: Component = field(default_factory=HalfStudentT)
    residual: Component = field(default_factory=HalfStudentT)
    h2: BetaH2 | None = None
    fixed: str | NormalFixed = "flat"

    def __post_init__(self) -> None:
        for name in ("genetic", "residual"):
            value = getattr(self, name)
            if not isinstance(value, HalfStudentT | InverseGamma | FlatVariance):
                raise PriorError(
                    f"{name}= must be HalfStudentT, InverseGamma or FlatVariance; got {value!r}."
                )
        if self.h2 is not None and not isinstance(self.h2, BetaH2):
            raise PriorError(f"h2= must be a BetaH2 prior; got {self.h2!r}.")
        if not (self.fixed == "flat" or isinstance(self.fixed, NormalFixed)):
            raise PriorError(f"fixed= must be 'flat' or NormalFixed(scale); got {self.fixed!r}.")

    @property
    def all_flat(self) -> bool:
        """Flat priors on both variances and on the fixed effects (posterior mode = REML)."""
        return (
            self.h2 is None
            and isinstance(self.genetic, FlatVariance)
            and isinstance(self.residual, FlatVariance)
            and self.fixed == "flat"
        )

    def describe(self, scales: dict[str, float] | None = None) -> str:
        """Text of the priors, with the data-derived scales filled in when given."""
        scales = scales or {}
        fixed = "flat" if self.fixed == "flat" else self.fixed.describe()
        if self.h2 is not None:
            lines = [f"h2, total: {self.h2.describe(scales.get('total'))}"]
        else:
            lines = [
                f"sigma2_u: {self.genetic.describe(scales.get('genetic'))}",
                f"sigma2_e: {self.residual.describe(scales.get('residual'))}",
            ]
        return "\n".join([*lines, f"fixed effects: {fixed}"])

    def __str__(self) -> str:
        return self.describe()

    def variances(self, scales: dict[str, float]):
        """Add the priors to the current PyMC model; return (σu², σ²) as tensors."""
        import pymc as pm

        if self.h2 is not None:
            heritability = pm.Beta("heritability", alpha=self.h2.a, beta=self.h2.b)
            total = self.h2.total.variance("p", scales["total"])
            return heritability * total, (1.0 - heritability) * total
        return (
            self.genetic.variance("u", scales["genetic"]),
            self.residual.variance("e", scales["residual"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (for provenance)."""
        return {"text": self.describe(), "repr": repr(self)}


PRESETS: dict[str, Priors] = {
    "default": Priors(),
    "half_t": Priors(),
    "inverse_gamma": Priors(genetic=InverseGamma(), residual=InverseGamma()),
    "flat": Priors(genetic=FlatVariance(), residual=FlatVariance()),
    "beta_h2": Priors(h2=BetaH2()),
}


def as_priors(priors: Priors | str | None) -> Priors:
    """A :class:`Priors` from an object, a preset name or None (the default)."""
    if priors is None:
        return PRESETS["default"]
    if isinstance(priors, Priors):
        return priors
    if isinstance(priors, str):
        if priors not in PRESETS:
            raise PriorError(
                f"Unknown prior {priors!r}. Valid names: {', '.join(sorted(PRESETS))}; or pass a "
                "Priors object."
            )
        return PRESETS[priors]
    raise PriorError(f"priors must be a Priors object or a name; got {type(priors).__name__}.")


def data_scales(y: np.ndarray, X: np.ndarray, mean_diagonal: float) -> dict[str, float]:
    """Scales of the default priors: OLS residual SD s; s/√(mean diag A) for σu; s for σ."""
    coefficients, *_ = np.linalg.lstsq(X, y, rcond=None)
    residual = y - X @ coefficients
    s = float(np.sqrt(residual @ residual / max(len(y) - X.shape[1], 1)))
    s = s if s > 0 else 1.0
    return {"residual": s, "genetic": s / np.sqrt(mean_diagonal), "total": s}
