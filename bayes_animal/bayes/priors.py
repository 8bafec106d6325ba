r"""Priors on the variance components, as objects that print, compare and can be replaced.

A :class:`Priors` holds one prior per variance component, keyed by component name
(``additive``, ``maternal``, ``pe``, a grouping column, ``residual``), a default for every
component not named, one prior for the correlation of each correlated pair (direct and
maternal genetic effects), and the treatment of the fixed effects.

Component priors:

- :class:`HalfStudentT` on the standard deviation (the default, ν = 3). With ``scale=None``
  the scale is set from the data: the residual SD of an ordinary least-squares fit of the fixed
  part, :math:`s`, for independent effects and the residual, and :math:`s / \sqrt{\bar k}` for
  an effect whose structure has mean diagonal :math:`\bar k` (A's is 1 + mean inbreeding; a
  genomic G's about 1.7), so that the prior is on the scale of the breeding values.
- :class:`InverseGamma` on the variance, MCMCglmm's ``list(V = V, nu = nu)``:
  :math:`\sigma^2 \sim \text{IG}(\nu/2, \nu V/2)`.
- :class:`FlatVariance`: an improper uniform prior on the variance over :math:`(0, \infty)`.
  With flat priors and the fixed effects integrated out, the joint posterior of the variance
  parameters is the restricted likelihood, so its mode is the REML estimate.
- :class:`BetaH2`: :math:`h^2 \sim \text{Beta}(a, b)` with a :class:`HalfStudentT` on the total
  phenotypic SD (models with one random effect).

Correlated pairs (:math:`G_0 = \begin{pmatrix}\sigma_A^2 & \sigma_{AM}\\ \sigma_{AM} &
\sigma_M^2\end{pmatrix}`):

- :class:`LKJCorrelation` (default, η = 2): the two variances keep their component priors and
  the correlation :math:`r` has the LKJ density :math:`\propto (1 - r^2)^{\eta - 1}`;
- :class:`InverseWishart`: MCMCglmm's ``list(V = V, nu = nu)`` for the whole 2×2 block,
  :math:`G_0 \sim \mathcal{IW}(\nu V, \nu)` (its diagonal then has the inverse-gamma priors
  above); the component priors of the pair are not used.

Fixed effects: ``"flat"`` (integrated out analytically in the marginal models, sampled in the
non-centred one) or a :class:`NormalFixed` prior (sampled). PyMC is imported only when the
priors are added to a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BayesAnimalError
from ..spec.parameters import Parameters, identifier

__all__ = [
    "PRESETS",
    "BetaH2",
    "FlatVariance",
    "HalfStudentT",
    "InverseGamma",
    "InverseWishart",
    "LKJCorrelation",
    "NormalFixed",
    "PriorError",
    "Priors",
    "add_parameters",
    "as_priors",
    "data_scales",
    "initial_values",
]


def _f64(value: float) -> np.float64:
    """A prior's parameter as float64: PyTensor makes a Python float that float32 represents
    exactly (3.0, 0.5) a float32 constant, and gammaln(float32) is 2e-8 off."""
    return np.float64(value)


class PriorError(BayesAnimalError, ValueError):
    """A prior is unknown or badly specified."""


def _positive(prior: object, **values: float | None) -> None:
    """Each named parameter of ``prior`` is a finite number > 0 (None: set from the data)."""
    for name, value in values.items():
        if value is None:
            continue
        try:
            ok = bool(np.isfinite(float(value)) and float(value) > 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise PriorError(
                f"{type(prior).__name__}: {name} must be a finite number > 0; got {value!r}."
            )


@dataclass(frozen=True)
class HalfStudentT:
    """Half-Student-t prior on a standard deviation; ``scale=None``: from the data."""

    nu: float = 3.0
    scale: float | None = None

    def __post_init__(self) -> None:
        _positive(self, nu=self.nu, scale=self.scale)

    def describe(self, resolved_scale: float | None = None) -> str:
        scale = self.scale if self.scale is not None else resolved_scale
        shown = f"{scale:.4g}" if scale is not None else "from the data"
        return f"HalfStudentT(nu={self.nu:g}, scale={shown}) on the SD"

    def variance(self, name: str, default_scale: float):
        import pymc as pm

        scale = self.scale if self.scale is not None else default_scale
        return pm.HalfStudentT(f"sd_{identifier(name)}", nu=_f64(self.nu), sigma=_f64(scale)) ** 2

    def initial(self, name: str, variance: float) -> dict[str, float]:
        """The sampler's starting value for a given variance."""
        return {f"sd_{identifier(name)}": float(np.sqrt(variance))}


@dataclass(frozen=True)
class InverseGamma:
    """Inverse-gamma prior on a variance in MCMCglmm's (V, nu): IG(nu/2, nu·V/2)."""

    V: float = 1.0
    nu: float = 0.002

    def __post_init__(self) -> None:
        _positive(self, V=self.V, nu=self.nu)

    def describe(self, resolved_scale: float | None = None) -> str:
        text = f"InverseGamma(V={self.V:g}, nu={self.nu:g}) on the variance"
        if self.nu < 1:
            text += (
                " (its density piles up near 0: a component whose likelihood reaches 0 makes "
                "divergences likely; the default half-t prior has no such wall)"
            )
        return text

    def variance(self, name: str, default_scale: float):
        import pymc as pm

        return pm.InverseGamma(
            f"var_{identifier(name)}", alpha=_f64(self.nu / 2), beta=_f64(self.nu * self.V / 2)
        )

    def initial(self, name: str, variance: float) -> dict[str, float]:
        """The sampler's starting value for a given variance."""
        return {f"var_{identifier(name)}": float(variance)}


@dataclass(frozen=True)
class FlatVariance:
    """Improper flat prior on a variance over (0, ∞) (the REML check)."""

    def describe(self, resolved_scale: float | None = None) -> str:
        return "Flat on the variance (improper)"

    def variance(self, name: str, default_scale: float):
        import pymc as pm

        return pm.HalfFlat(f"var_{identifier(name)}")

    def initial(self, name: str, variance: float) -> dict[str, float]:
        """The sampler's starting value for a given variance."""
        return {f"var_{identifier(name)}": float(variance)}


@dataclass(frozen=True)
class LKJCorrelation:
    """LKJ(η) on the correlation of a correlated pair: density ∝ (1 − r²)^(η − 1)."""

    eta: float = 2.0

    def __post_init__(self) -> None:
        _positive(self, eta=self.eta)

    def describe(self) -> str:
        return f"LKJ(eta={self.eta:g}) on the correlation"


@dataclass(frozen=True)
class InverseWishart:
    """MCMCglmm's inverse-Wishart ``list(V = V, nu = nu)`` on a 2×2 block: IW(nu·V, nu)."""

    V: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 0.0), (0.0, 1.0))
    nu: float = 1.002

    def __post_init__(self) -> None:
        _positive(self, nu=self.nu)
        if self.nu <= 1:
            raise PriorError(
                f"InverseWishart: nu must be > 1 for a 2×2 block (a proper prior needs nu > "
                f"dimension − 1); got {self.nu!r}. MCMCglmm's usual choice is nu = 1.002."
            )
        try:
            V = np.asarray(self.V, dtype=float)
        except (TypeError, ValueError):
            V = np.full((1, 1), np.nan)
        if V.shape != (2, 2) or not np.all(np.isfinite(V)) or not np.allclose(V, V.T):
            raise PriorError(f"InverseWishart: V must be a symmetric 2×2 matrix; got {self.V!r}.")
        if np.linalg.eigvalsh(V).min() <= 0:
            raise PriorError(
                f"InverseWishart: V must be positive definite; got {V.tolist()} (eigenvalues "
                f"{np.linalg.eigvalsh(V).round(6).tolist()})."
            )

    def describe(self) -> str:
        return f"InverseWishart(V={np.asarray(self.V).tolist()}, nu={self.nu:g}) on the block"


@dataclass(frozen=True)
class BetaH2:
    """Beta(a, b) on h² and a half-Student-t on the total phenotypic SD."""

    a: float = 1.0
    b: float = 1.0
    total: HalfStudentT = field(default_factory=HalfStudentT)

    def __post_init__(self) -> None:
        _positive(self, a=self.a, b=self.b)
        if not isinstance(self.total, HalfStudentT):
            raise PriorError(f"BetaH2: total must be a HalfStudentT prior; got {self.total!r}.")

    def describe(self, resolved_scale: float | None = None) -> str:
        return (
            f"Beta(a={self.a:g}, b={self.b:g}) on h2; {self.total.describe(resolved_scale)} total"
        )


@dataclass(frozen=True)
class NormalFixed:
    """Independent Normal(0, scale²) priors on the fixed effects (sampled)."""

    scale: float = 100.0

    def __post_init__(self) -> None:
        _positive(self, scale=self.scale)

    def describe(self) -> str:
        return f"Normal(0, {self.scale:g}²) on each fixed effect (sampled)"


Component = HalfStudentT | InverseGamma | FlatVariance
_COMPONENTS = (HalfStudentT, InverseGamma, FlatVariance)


@dataclass(frozen=True)
class Priors:
    """Priors of the model (print it to read it; :func:`dataclasses.replace` to change).

    Attributes
    ----------
    components
        Priors by component name; components not named take ``default``.
    default
        The prior of every component not in ``components``.
    correlation
        The prior of each correlated pair (:class:`LKJCorrelation` or :class:`InverseWishart`).
    h2
        A :class:`BetaH2` prior on h² with one on the total SD (one random effect only).
    fixed
        ``"flat"`` or :class:`NormalFixed`.

    Examples
    --------
    >>> from bayes_animal.bayes.priors import InverseGamma, Priors
    >>> Priors(components={"additive": InverseGamma(V=1, nu=0.002)}).component("additive")
    InverseGamma(V=1, nu=0.002)
    """

    components: Mapping[str, Component] = field(default_factory=dict)
    default: Component = field(default_factory=HalfStudentT)
    correlation: LKJCorrelation | InverseWishart = field(default_factory=LKJCorrelation)
    h2: BetaH2 | None = None
    fixed: str | NormalFixed = "flat"

    def __post_init__(self) -> None:
        for name, value in [*self.components.items(), ("default", self.default)]:
            if not isinstance(value, _COMPONENTS):
                raise PriorError(
                    f"The prior of {name!r} must be HalfStudentT, InverseGamma or FlatVariance; "
                    f"got {value!r}."
                )
        if not isinstance(self.correlation, LKJCorrelation | InverseWishart):
            raise PriorError(
                f"correlation= must be LKJCorrelation or InverseWishart; got {self.correlation!r}."
            )
        if self.h2 is not None and not isinstance(self.h2, BetaH2):
            raise PriorError(f"h2= must be a BetaH2 prior; got {self.h2!r}.")
        if not (self.fixed == "flat" or isinstance(self.fixed, NormalFixed)):
            raise PriorError(f"fixed= must be 'flat' or NormalFixed(scale); got {self.fixed!r}.")

    def __hash__(self) -> int:
        return hash(repr(self))

    def component(self, name: str) -> Component:
        """The prior of a component."""
        return self.components.get(name, self.default)

    def check(self, parameters: Parameters) -> None:
        """Priors named for components the model lacks, or h² with several effects, are
        errors that list the model's components."""
        unknown = sorted(set(self.components) - set(parameters.variances))
        if unknown:
            raise PriorError(
                f"Priors were given for {unknown}, which the model does not have; its components "
                f"are {', '.join(parameters.variances)}."
            )
        if self.h2 is not None and len(parameters.variances) != 2:
            raise PriorError(
                "The Beta prior on h² (beta_h2) is for models with one random effect; this model "
                f"has {', '.join(parameters.variances[:-1])}. Give per-component priors instead."
            )

    def all_flat(self, parameters: Parameters) -> bool:
        """Flat priors on every variance and on the fixed effects (posterior mode = REML)."""
        return (
            self.h2 is None
            and all(isinstance(self.component(n), FlatVariance) for n in parameters.variances)
            and self.fixed == "flat"
        )

    def describe(
        self, parameters: Parameters | None = None, scales: Mapping[str, float] | None = None
    ) -> str:
        """Text of the priors, per component of ``parameters`` with the data-derived scales."""
        scales = scales or {}
        fixed = "flat" if self.fixed == "flat" else self.fixed.describe()
        if parameters is None:
            named = [f"{n}: {p.describe()}" for n, p in self.components.items()]
            lines = [*named, f"every other component: {self.default.describe()}"]
            lines.append(f"correlated pairs: {self.correlation.describe()}")
        elif self.h2 is not None:
            lines = [f"h2, total: {self.h2.describe(scales.get('total'))}"]
        else:
            paired = {t for b in parameters.blocks if b.size == 2 for t in b.terms}
            lines = []
            for name in parameters.names:
                if ":" in name:
                    lines.append(f"{name}: {self.correlation.describe()}")
                elif name in paired and isinstance(self.correlation, InverseWishart):
                    lines.append(f"{name}: (in the inverse-Wishart block)")
                else:
                    lines.append(f"{name}: {self.component(name).describe(scales.get(name))}")
        return "\n".join([*lines, f"fixed effects: {fixed}"])

    def __str__(self) -> str:
        return self.describe()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (for provenance)."""
        return {"text": self.describe(), "repr": repr(self)}


PRESETS: dict[str, Priors] = {
    "default": Priors(),
    "half_t": Priors(),
    "inverse_gamma": Priors(default=InverseGamma(), correlation=InverseWishart()),
    "flat": Priors(default=FlatVariance(), correlation=LKJCorrelation(eta=1.0)),
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


def data_scales(
    y: np.ndarray, X: np.ndarray, mean_diagonals: Mapping[str, float]
) -> dict[str, float]:
    """Scales of the default priors: the OLS residual SD s for the residual (and ``total``), and
    s/√(mean diagonal of K) for each random effect (1 for independent effects)."""
    coefficients, *_ = np.linalg.lstsq(X, y, rcond=None)
    residual = y - X @ coefficients
    s = float(np.sqrt(residual @ residual / max(len(y) - X.shape[1], 1)))
    s = s if s > 0 else 1.0
    scales = {name: s / np.sqrt(diagonal) for name, diagonal in mean_diagonals.items()}
    return {**scales, "residual": s, "total": s}


def _log_inverse_wishart(G, prior: InverseWishart):
    """log IW(G; ν·V, ν) for a 2×2 G, up to a constant."""
    import pytensor.tensor as pt

    psi = prior.nu * np.asarray(prior.V, dtype=float)
    det = G[0, 0] * G[1, 1] - G[0, 1] ** 2
    # tr(Ψ G⁻¹) with G⁻¹ = adj(G)/|G|
    trace = (psi[0, 0] * G[1, 1] + psi[1, 1] * G[0, 0] - 2.0 * psi[0, 1] * G[0, 1]) / det
    return -0.5 * (prior.nu + 3.0) * pt.log(det) - 0.5 * trace


def add_parameters(
    priors: Priors,
    parameters: Parameters,
    scales: Mapping[str, float],
    fixed: Mapping[str, float] | None = None,
):
    r"""Add the priors to the current PyMC model; return θ (a vector tensor in the order of
    ``parameters.names``) and each parameter by name. A parameter in ``fixed`` (a family's
    latent residual) is that constant, with no prior.

    Variances come from their component priors (or from h² and the total with
    :class:`BetaH2`); a covariance is :math:`r\sqrt{\sigma_a^2\sigma_m^2}` with :math:`r` under
    the LKJ density, or the whole block under the inverse-Wishart (a ``Potential`` on the
    variances and :math:`r`, with the Jacobian :math:`\sqrt{\sigma_a^2\sigma_m^2}` of
    :math:`(\sigma_a^2, \sigma_m^2, r) \mapsto G_0`).
    """
    import pymc as pm
    import pytensor.tensor as pt

    values: dict[str, Any] = {}
    if priors.h2 is not None:
        effect = parameters.variances[0]
        heritability = pm.Beta("heritability", alpha=_f64(priors.h2.a), beta=_f64(priors.h2.b))
        total = priors.h2.total.variance("total", scales["total"])
        values[effect] = heritability * total
        values["residual"] = (1.0 - heritability) * total
        return pt.stack([values[n] for n in parameters.names]), values
    for block in parameters.blocks:
        if block.size == 2 and isinstance(priors.correlation, InverseWishart):
            a, m = block.terms
            values[a] = pm.HalfFlat(f"var_{identifier(a)}")
            values[m] = pm.HalfFlat(f"var_{identifier(m)}")
        else:
            for name in block.terms:
                values[name] = priors.component(name).variance(name, scales[name])
        if block.size == 2:
            a, m = block.terms
            pair = f"{a}:{m}"
            root = pt.sqrt(values[a] * values[m])
            if isinstance(priors.correlation, InverseWishart):
                r = pm.Uniform(f"r_{identifier(pair)}", _f64(-1.0), _f64(1.0))
                G = pt.stack([pt.stack([values[a], r * root]), pt.stack([r * root, values[m]])])
                pm.Potential(
                    f"iw_{identifier(pair)}",
                    _log_inverse_wishart(G, priors.correlation) + pt.log(root),
                )
            else:
                eta = priors.correlation.eta
                r = 2.0 * pm.Beta(f"r01_{identifier(pair)}", alpha=_f64(eta), beta=_f64(eta)) - 1.0
            values[pair] = r * root
    if fixed and "residual" in fixed:
        values["residual"] = pt.constant(float(fixed["residual"]))
    else:
        values["residual"] = priors.component("residual").variance("residual", scales["residual"])
    return pt.stack([values[n] for n in parameters.names]), values


def initial_values(
    priors: Priors,
    parameters: Parameters,
    theta: np.ndarray,
    *,
    floor: float,
    fixed: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Starting values of the sampler's free variables at ``theta`` (the REML estimate), each
    variance at least ``floor`` and each correlation inside (−0.95, 0.95)."""
    theta = np.asarray(theta, dtype=float)
    value = {n: float(theta[i]) for i, n in enumerate(parameters.names)}
    for name in parameters.variances:
        value[name] = max(value[name], floor)
    if priors.h2 is not None:
        effect = parameters.variances[0]
        total = value[effect] + value["residual"]
        return {
            "heritability": float(np.clip(value[effect] / total, 0.01, 0.99)),
            "sd_total": float(np.sqrt(total)),
        }
    out: dict[str, float] = {}
    for block in parameters.blocks:
        iw = block.size == 2 and isinstance(priors.correlation, InverseWishart)
        for name in block.terms:
            if iw:
                out[f"var_{identifier(name)}"] = value[name]
            else:
                out |= priors.component(name).initial(name, value[name])
        if block.size == 2:
            a, m = block.terms
            pair = f"{a}:{m}"
            r = float(np.clip(value[pair] / np.sqrt(value[a] * value[m]), -0.95, 0.95))
            out[f"r_{identifier(pair)}" if iw else f"r01_{identifier(pair)}"] = (
                r if iw else (r + 1.0) / 2.0
            )
    if fixed and "residual" in fixed:
        return out
    return out | priors.component("residual").initial("residual", value["residual"])
