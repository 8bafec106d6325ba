r"""The posterior density of a marginal model's variance parameters, by hand: value and gradient
in NumPy, on the sampler's unconstrained coordinates, with no graph to compile.

The marginal models integrate b and every random effect out, so the posterior lives on the few
variance parameters :math:`\theta` (variances, covariances, residual):

.. math::

    \log p(x \mid y) = \ell_R(\theta(x)) + \sum_j \log p_j(v_j(x_j)) + \log\Big|\frac{\partial
    v}{\partial x}\Big| \;[+\ \text{the inverse-Wishart potential}],

where :math:`v_j` are the priors' free variables (an SD under a half-t prior, a variance under
an inverse-gamma or flat prior, h² and the total SD under the Beta prior, a correlation) and
:math:`x_j` their unconstrained values: :math:`v = e^x` (``_log__``), :math:`v = \sigma(x)`
(``_logodds__``) or :math:`v = -1 + 2\sigma(x)` (``_interval__``) — PyMC's transforms and names,
so that this is the same density as the PyMC model :mod:`bayes_animal.bayes.priors` builds
(``add_parameters``; tested equal to 1e-10, with and without the Jacobian). The restricted
log-likelihood :math:`\ell_R` and its gradient come from
:class:`~bayes_animal.estimation.spectral.SpectralLikelihood` (one random effect) or from the
sparse mixed-model equations (any model); the chain rule carries
:math:`\partial\ell_R/\partial\theta` through :math:`\theta(v)` and :math:`v(x)`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..spec.parameters import Parameters, component_name, identifier
from ..spec.vine import vine_correlation, vine_jacobian, vine_partial_correlations
from .priors import (
    FlatVariance,
    HalfStudentT,
    InverseGamma,
    InverseWishart,
    Priors,
)

__all__ = [
    "FreeVariable",
    "MarginalDensity",
    "free_variables",
    "quantity_function",
    "quantity_values",
    "sparse_likelihood",
    "spectral_likelihood",
]

Likelihood = Callable[[np.ndarray], tuple[float, np.ndarray]]

_SUFFIX = {"log": "_log__", "logodds": "_logodds__", "interval": "_interval__"}


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


@dataclass(frozen=True)
class FreeVariable:
    r"""One free variable of the priors: its name, PyMC's transform and its log density.

    ``kind`` says what it is: ``"sd"`` (:math:`\theta = v^2`), ``"variance"``, ``"h2"``,
    ``"total_sd"``, ``"r01"`` (:math:`r = 2v - 1`) or ``"r"``; ``terms`` the components it
    belongs to.
    """

    name: str
    transform: str
    kind: str
    terms: tuple[str, ...]
    log_density: Callable[[float], tuple[float, float]]

    @property
    def value_name(self) -> str:
        """The sampler's (unconstrained) name, e.g. ``sd_additive_log__``."""
        return self.name + _SUFFIX[self.transform]

    def forward(self, x: float) -> tuple[float, float, float, float]:
        """``(v, dv/dx, log|dv/dx|, d log|dv/dx| / dx)`` at the unconstrained value x."""
        if self.transform == "log":
            v = math.exp(x)
            return v, v, x, 1.0
        s = math.exp(_log_sigmoid(x))
        slope = s * (1.0 - s)
        log_jacobian = _log_sigmoid(x) + _log_sigmoid(-x)
        if self.transform == "logodds":
            return s, slope, log_jacobian, 1.0 - 2.0 * s
        return 2.0 * s - 1.0, 2.0 * slope, math.log(2.0) + log_jacobian, 1.0 - 2.0 * s

    def forward_array(self, x: np.ndarray) -> np.ndarray:
        """v at an array of unconstrained values (the draws)."""
        if self.transform == "log":
            return np.exp(x)
        s = 1.0 / (1.0 + np.exp(-x))
        return s if self.transform == "logodds" else 2.0 * s - 1.0

    def inverse(self, v: float) -> float:
        """The unconstrained value of v."""
        if self.transform == "log":
            return math.log(v)
        if self.transform == "interval":
            v = (v + 1.0) / 2.0
        return math.log(v) - math.log1p(-v)


class _HalfStudentT:
    """log density of a half-Student-t on an SD and its derivative (a class: it pickles, for
    a worker process's chains)."""

    def __init__(self, nu: float, scale: float) -> None:
        self.nu, self.scale = nu, scale
        self.constant = (
            math.log(2.0)
            + math.lgamma((nu + 1.0) / 2.0)
            - math.lgamma(nu / 2.0)
            - 0.5 * math.log(nu * math.pi * scale**2)
        )

    def __call__(self, sd: float) -> tuple[float, float]:
        nu, scale = self.nu, self.scale
        z = sd * sd / (nu * scale * scale)
        return self.constant - 0.5 * (nu + 1.0) * math.log1p(z), -(nu + 1.0) * sd / (
            nu * scale * scale + sd * sd
        )


class _InverseGamma:
    """log density of an inverse gamma on a variance and its derivative."""

    def __init__(self, alpha: float, beta: float) -> None:
        self.alpha, self.beta = alpha, beta
        self.constant = alpha * math.log(beta) - math.lgamma(alpha)

    def __call__(self, v: float) -> tuple[float, float]:
        alpha, beta = self.alpha, self.beta
        return (
            self.constant - (alpha + 1.0) * math.log(v) - beta / v,
            -(alpha + 1.0) / v + beta / (v * v),
        )


class _Beta:
    """log density of a beta on a proportion and its derivative."""

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b
        self.constant = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)

    def __call__(self, v: float) -> tuple[float, float]:
        a, b = self.a, self.b
        return (
            self.constant + (a - 1.0) * math.log(v) + (b - 1.0) * math.log1p(-v),
            (a - 1.0) / v - (b - 1.0) / (1.0 - v),
        )


def _flat(v: float) -> tuple[float, float]:
    return 0.0, 0.0


def _uniform_correlation(v: float) -> tuple[float, float]:
    return -math.log(2.0), 0.0


def wishart_for(prior: InverseWishart, d: int) -> tuple[np.ndarray, float]:
    """(Ψ = ν V, ν) of an inverse-Wishart on a d × d block: the prior's own V and ν for a
    2 × 2 block; for a larger one MCMCglmm's usual V = I, ν = d − 1 + 0.002 where the prior is
    that usual choice (V = I, ν = 1.002), an error otherwise."""
    V = np.asarray(prior.V, dtype=float)
    if V.shape == (d, d):
        return prior.nu * V, prior.nu
    if np.allclose(V, np.eye(len(V))) and abs(prior.nu - 1.002) < 1e-12:
        nu = d - 1 + 0.002
        return nu * np.eye(d), nu
    raise ValueError(
        f"The inverse-Wishart prior has a {len(V)}×{len(V)} V; a {d}×{d} block needs its own "
        "(or V = I, nu = 1.002, MCMCglmm's usual choice, which grows to V = I, nu = d − 1 + "
        "0.002)."
    )


def _component(name: str, prior, scale: float) -> FreeVariable:
    """The free variable of one component's prior (as ``Component.variance`` builds it)."""
    if isinstance(prior, HalfStudentT):
        chosen = prior.scale if prior.scale is not None else scale
        return FreeVariable(
            f"sd_{identifier(name)}", "log", "sd", (name,), _HalfStudentT(prior.nu, chosen)
        )
    if isinstance(prior, InverseGamma):
        density = _InverseGamma(prior.nu / 2.0, prior.nu * prior.V / 2.0)
        return FreeVariable(f"var_{identifier(name)}", "log", "variance", (name,), density)
    if isinstance(prior, FlatVariance):
        return FreeVariable(f"var_{identifier(name)}", "log", "variance", (name,), _flat)
    raise TypeError(f"no density for the prior {prior!r}")  # Priors validates its components


def free_variables(
    priors: Priors,
    parameters: Parameters,
    scales: Mapping[str, float],
    fixed: Mapping[str, float] | None = None,
) -> list[FreeVariable]:
    """The free variables in the order PyMC creates them (``add_parameters``); none for a
    parameter in ``fixed``."""
    if priors.h2 is not None:
        effect = parameters.variances[0]
        total = priors.h2.total
        chosen = total.scale if total.scale is not None else scales["total"]
        return [
            FreeVariable(
                "heritability", "logodds", "h2", (effect,), _Beta(priors.h2.a, priors.h2.b)
            ),
            FreeVariable("sd_total", "log", "total_sd", (effect,), _HalfStudentT(total.nu, chosen)),
        ]
    out: list[FreeVariable] = []
    wishart = isinstance(priors.correlation, InverseWishart)
    if parameters.multi_trait:
        for block in parameters.all_blocks:
            out += _trait_block_variables(block, priors, scales, wishart)
        return out
    for block in parameters.blocks:
        if block.size == 2 and wishart:
            out += [
                FreeVariable(f"var_{identifier(t)}", "log", "variance", (t,), _flat)
                for t in block.terms
            ]
        else:
            out += [_component(t, priors.component(t), scales[t]) for t in block.terms]
        if block.size == 2:
            pair = f"{block.terms[0]}:{block.terms[1]}"
            if wishart:
                out.append(
                    FreeVariable(
                        f"r_{identifier(pair)}", "interval", "r", (pair,), _uniform_correlation
                    )
                )
            else:
                eta = priors.correlation.eta
                out.append(
                    FreeVariable(
                        f"r01_{identifier(pair)}", "logodds", "r01", (pair,), _Beta(eta, eta)
                    )
                )
    if not (fixed and "residual" in fixed):
        out.append(_component("residual", priors.component("residual"), scales["residual"]))
    return out


def _trait_block_variables(block, priors: Priors, scales, wishart: bool) -> list[FreeVariable]:
    r"""A block of one effect on several traits: each variance under its component prior (flat
    under an inverse-Wishart), then the canonical partial correlations of its correlation
    matrix, each ``Beta(b, b)`` on (−1, 1) with :math:`b = \eta + (d - 2 - j)/2` at level
    :math:`j` — together exactly LKJ(η) on the correlation matrix (η = 1, the uniform, under an
    inverse-Wishart, whose density is then a potential)."""
    out = []
    for term in block.terms:
        if wishart and block.covariances:
            out.append(FreeVariable(f"var_{identifier(term)}", "log", "variance", (term,), _flat))
        else:
            out.append(_component(term, priors.component(term), scales[term]))
    d = block.size
    eta = 1.0 if wishart else priors.correlation.eta
    for i in range(1, d):
        for j in range(i):
            name = block.covariance(j, i)
            b = eta + (d - 2 - j) / 2.0
            out.append(
                FreeVariable(f"cpc_{identifier(name)}", "logodds", "cpc", (name,), _Beta(b, b))
            )
    return out


def quantity_function(parameters: Parameters) -> Callable[[Mapping[str, object]], dict]:
    """:func:`quantity_values` with the quantities worked out once (the sampler calls it per
    draw)."""
    quantities = parameters.quantities()
    traits = list(parameters.traits) if parameters.multi_trait else [None]
    phenotypic = {
        trait: [
            (n, g)
            for n, g in zip(parameters.names, parameters.phenotypic_gradient(trait), strict=True)
            if g
        ]
        for trait in traits
    }
    repeatability = dict(zip(parameters._repeatability_keys(), traits, strict=False))
    pairs = {
        name: (block.terms[i], block.terms[j])
        for block in parameters.all_blocks
        for i, j, name in block.covariances
    }

    def values_of(values: Mapping[str, object]) -> dict[str, object]:
        totals = {t: sum(values[n] * g for n, g in phenotypic[t]) for t in traits}
        out: dict[str, object] = {}
        for quantity in quantities:
            source = quantity.source
            if quantity.kind in ("variance", "covariance"):
                out[quantity.key] = values[source]
            elif source in repeatability:
                trait = repeatability[source]
                terms = [component_name(t, trait) for t in parameters.repeatability]
                out[quantity.key] = sum(values[n] for n in terms) / totals[trait]
            elif source in pairs:
                a, m = pairs[source]
                out[quantity.key] = values[source] / (values[a] * values[m]) ** 0.5
            else:
                out[quantity.key] = values[source] / totals[parameters.trait_of(source)]
        return out

    return values_of


def quantity_values(parameters: Parameters, values: Mapping[str, object]) -> dict[str, object]:
    """Every reported quantity (``Parameters.quantities``: variances, covariances, h², the
    other proportions of σ²P, the repeatability, correlations) from the parameters by name:
    works on PyTensor tensors (the PyMC model's Deterministics) and on NumPy values alike."""
    return quantity_function(parameters)(values)


class MarginalDensity:
    r""":math:`\log p(x \mid y)` and its gradient for a marginal model (see the module docstring).

    Parameters
    ----------
    priors, parameters, scales
        The model's priors, parameters and the priors' data scales (``AnimalModel.scales``).
    likelihood
        θ (in the order of ``parameters.names``) → ``(ℓ_R(θ), ∂ℓ_R/∂θ)``; −∞ outside the
        parameter space. None for the prior alone (:meth:`log_prior`).
    fixed
        Parameters held at a value, with no free variable (a family's latent residual).
    """

    def __init__(
        self,
        priors: Priors,
        parameters: Parameters,
        scales: Mapping[str, float],
        likelihood: Likelihood | None,
        fixed: Mapping[str, float] | None = None,
    ) -> None:
        self.parameters = parameters
        self.likelihood = likelihood
        self.fixed = dict(fixed or {})
        self.variables = free_variables(priors, parameters, scales, self.fixed)
        wishart = priors.correlation if isinstance(priors.correlation, InverseWishart) else None
        self._h2 = priors.h2 is not None
        self._index = {name: i for i, name in enumerate(parameters.names)}
        # blocks of several traits: their partial correlations' variables, by (j, i)
        self._vines = []
        position = {v.terms[0]: k for k, v in enumerate(self.variables) if v.kind == "cpc"}
        for block in parameters.all_blocks if parameters.multi_trait else ():
            if block.covariances:
                keys = {
                    (j, i): position[block.covariance(j, i)]
                    for i in range(1, block.size)
                    for j in range(i)
                }
                self._vines.append((block, keys))
        # the inverse-Wishart potentials: (block, Ψ, ν)
        self._wishart = []
        if wishart is not None:
            for block in parameters.all_blocks:
                if block.covariances:
                    psi, nu = wishart_for(wishart, block.size)
                    self._wishart.append((block, psi, nu))

    @property
    def size(self) -> int:
        """Number of free variables."""
        return len(self.variables)

    @property
    def value_names(self) -> list[str]:
        """The sampler's names of the free variables (``sd_additive_log__``, …)."""
        return [v.value_name for v in self.variables]

    def constrained(self, x: np.ndarray) -> dict[str, float]:
        """The free variables' values (``sd_additive``, …) at x."""
        return {v.name: v.forward(float(xi))[0] for v, xi in zip(self.variables, x, strict=True)}

    def unconstrained(self, values: Mapping[str, float]) -> np.ndarray:
        """x from the free variables' values (e.g. ``priors.initial_values``)."""
        return np.array([v.inverse(float(values[v.name])) for v in self.variables])

    def theta(self, x: np.ndarray) -> np.ndarray:
        """θ at x (order of ``parameters.names``)."""
        return self._theta(
            [v.forward(float(xi))[0] for v, xi in zip(self.variables, x, strict=True)]
        )[0]

    def _theta_values(self, v: list) -> list:
        """θ (in the order of ``parameters.names``) from the free variables' values v —
        floats, or arrays of draws: the one place θ(v) is written."""
        theta: list = [0.0] * len(self._index)
        if self._h2:
            h, sd = v
            total = sd * sd
            theta[self._index[self.variables[0].terms[0]]] = h * total
            theta[self._index["residual"]] = (1.0 - h) * total
            return theta
        for variable, value in zip(self.variables, v, strict=True):
            if variable.kind in ("sd", "variance"):
                theta[self._index[variable.terms[0]]] = (
                    value * value if variable.kind == "sd" else value
                )
        for variable, value in zip(self.variables, v, strict=True):
            if variable.kind in ("r01", "r"):  # covariances, once both variances are known
                a, m = (self._index[t] for t in variable.terms[0].split(":"))
                r = 2.0 * value - 1.0 if variable.kind == "r01" else value
                theta[self._index[variable.terms[0]]] = r * (theta[a] * theta[m]) ** 0.5
        for block, keys in self._vines:  # a block of several traits: its correlation matrix
            R = vine_correlation({key: 2.0 * v[k] - 1.0 for key, k in keys.items()}, block.size)
            for i, j, name in block.covariances:
                a, b = self._index[block.terms[i]], self._index[block.terms[j]]
                theta[self._index[name]] = R[j][i] * (theta[a] * theta[b]) ** 0.5
        for name, value in self.fixed.items():  # floats, or one per draw
            theta[self._index[name]] = (
                value if np.ndim(v[0]) == 0 else np.full(np.shape(v[0]), value)
            )
        return theta

    def _theta(self, v: list[float]) -> tuple[np.ndarray, np.ndarray]:
        """θ and ∂θ/∂v from the free variables' values (floats)."""
        theta = np.array(self._theta_values(v))
        jacobian = np.zeros((len(theta), len(v)))
        if self._h2:
            h, sd = v
            effect, residual = self._index[self.variables[0].terms[0]], self._index["residual"]
            total = sd * sd
            jacobian[effect] = (total, 2.0 * h * sd)
            jacobian[residual] = (-total, 2.0 * (1.0 - h) * sd)
            return theta, jacobian
        pairs = []
        for j, (variable, value) in enumerate(zip(self.variables, v, strict=True)):
            if variable.kind in ("sd", "variance"):
                jacobian[self._index[variable.terms[0]], j] = (
                    2.0 * value if variable.kind == "sd" else 1.0
                )
            elif variable.kind in ("r01", "r"):
                pairs.append((j, variable, value))
        for block, keys in self._vines:
            R, dR = vine_jacobian({key: 2.0 * v[k] - 1.0 for key, k in keys.items()}, block.size)
            for i, j, name in block.covariances:
                a, b, c = (self._index[t] for t in (block.terms[i], block.terms[j], name))
                root = math.sqrt(theta[a] * theta[b])
                for key, k in keys.items():
                    jacobian[c, k] = 2.0 * dR[key][i, j] * root  # z = 2v − 1
                jacobian[c] += R[i, j] * (0.5 * theta[b] / root) * jacobian[a]
                jacobian[c] += R[i, j] * (0.5 * theta[a] / root) * jacobian[b]
        for j, variable, value in pairs:
            pair = variable.terms[0]
            a, m = (self._index[t] for t in pair.split(":"))
            i = self._index[pair]
            r, dr = (2.0 * value - 1.0, 2.0) if variable.kind == "r01" else (value, 1.0)
            root = math.sqrt(theta[a] * theta[m])
            jacobian[i, j] = dr * root
            # ∂(r √(θa θm))/∂v through θa and θm
            jacobian[i] += r * (0.5 * theta[m] / root) * jacobian[a]
            jacobian[i] += r * (0.5 * theta[a] / root) * jacobian[m]
        return theta, jacobian

    def log_prior(self, values: Mapping[str, np.ndarray]) -> np.ndarray | None:
        r"""The log prior :math:`\log p(v)` of the variance parameters at draws of the free
        variables ``values`` (by name, each array of the same shape: a posterior's
        ``sd_additive``, ``cpc_…``, …, whichever sampler drew them), without the Jacobian of
        the sampler's transforms: each free variable's prior density, plus the
        inverse-Wishart's potential where the priors have one. Needs no likelihood (a density
        built with ``likelihood=None`` serves). None where ``values`` lacks a free variable.
        """
        if not self.variables or any(v.name not in values for v in self.variables):
            return None
        shape = np.shape(values[self.variables[0].name])
        arrays = [np.asarray(values[v.name], dtype=float).ravel() for v in self.variables]
        total = np.zeros(arrays[0].size)
        for variable, draws in zip(self.variables, arrays, strict=True):
            total += [variable.log_density(float(v))[0] for v in draws]
        if self._wishart:
            theta = np.array(self._theta_values(arrays), dtype=float)  # parameters × draws
            total += [self._wishart_potential(theta[:, s])[0] for s in range(theta.shape[1])]
        return total.reshape(shape)

    def draws(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """For draws x (S × k): each free variable's values and each parameter θ by name,
        vectorised (the sampler keeps only x)."""
        x = np.atleast_2d(np.asarray(x, dtype=float))
        values = [v.forward_array(x[:, j]) for j, v in enumerate(self.variables)]
        theta = self._theta_values(values)
        named = dict(zip(self.parameters.names, theta, strict=True))
        return {v.name: value for v, value in zip(self.variables, values, strict=True)} | named

    def _wishart_potential(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        r"""Per block under an inverse-Wishart, :math:`\log IW(G_0; \Psi, \nu) + \sum_{i<j}
        \tfrac12\log(\sigma_i^2\sigma_j^2)` (the Jacobian of the variances and correlations
        to :math:`G_0`, the correlations' own part being the uniform LKJ of their variables)
        and its gradient in θ: :math:`\partial/\partial G_0 = -\tfrac{\nu+d+1}{2}G_0^{-1} +
        \tfrac12 G_0^{-1}\Psi G_0^{-1}`."""
        value, gradient = 0.0, np.zeros_like(theta)
        for block, psi, nu in self._wishart:
            d = block.size
            G = self.parameters.g0(theta, block)
            sign, logdet = np.linalg.slogdet(G)
            if sign <= 0:
                return -np.inf, gradient
            inverse = np.linalg.inv(G)
            value += -0.5 * (nu + d + 1.0) * logdet - 0.5 * float(np.sum(psi * inverse))
            M = -0.5 * (nu + d + 1.0) * inverse + 0.5 * inverse @ psi @ inverse
            index = [self._index[t] for t in block.terms]
            for k, at in enumerate(index):
                gradient[at] += M[k, k]
            for i, j, name in block.covariances:
                gradient[self._index[name]] += 2.0 * M[i, j]
                value += 0.5 * math.log(theta[index[i]] * theta[index[j]])
                gradient[index[i]] += 0.5 / theta[index[i]]
                gradient[index[j]] += 0.5 / theta[index[j]]
        return value, gradient

    def initial(self, theta: np.ndarray, *, floor: float, limit: float = 0.95) -> np.ndarray:
        """x at ``theta`` (the REML estimate): each variance at least ``floor``, each
        correlation matrix shrunk towards the identity until its partial correlations are
        inside (−``limit``, ``limit``)."""
        theta = np.asarray(theta, dtype=float).copy()
        for name in self.parameters.variances:
            theta[self._index[name]] = max(theta[self._index[name]], floor)
        values: dict[str, float] = {}
        for variable in self.variables:
            term = variable.terms[0]
            if variable.kind == "sd":
                values[variable.name] = math.sqrt(theta[self._index[term]])
            elif variable.kind == "variance":
                values[variable.name] = theta[self._index[term]]
        for block, keys in self._vines:
            g = self.parameters.g0(theta, block)
            scale = 1.0 / np.sqrt(np.diag(g))
            R = g * scale[:, None] * scale[None, :]
            for _ in range(60):
                try:
                    z = vine_partial_correlations(R)
                except np.linalg.LinAlgError:
                    z = None
                if z is not None and max(abs(value) for value in z.values()) < limit:
                    break
                R = 0.9 * R + 0.1 * np.eye(block.size)
            for key, k in keys.items():
                values[self.variables[k].name] = (z[key] + 1.0) / 2.0
        if any(v.kind in ("r01", "r", "h2", "total_sd") for v in self.variables):
            raise ValueError("initial() is for models of several traits")
        return self.unconstrained(values)

    def __call__(self, x: np.ndarray, *, jacobian: bool = True) -> tuple[float, np.ndarray]:
        """``(log p(x | y), ∇ₓ log p)`` (−∞ and zeros outside the parameter space);
        ``jacobian=False`` leaves out log|∂v/∂x| (the density of the free variables
        themselves, whose mode is the joint posterior mode)."""
        return self.evaluate(x, self.likelihood, jacobian=jacobian)

    def evaluate(
        self, x: np.ndarray, likelihood: Likelihood, *, jacobian: bool = True
    ) -> tuple[float, np.ndarray]:
        """As calling the density, with the likelihood of θ given: a family's latent values'
        (:class:`~bayes_animal.bayes.latent.LatentDensity`) changes with every point."""
        n = len(self.variables)
        values, slopes, d_log_jacobian = np.empty(n), np.empty(n), np.zeros(n)
        value, gradient = 0.0, np.zeros(n)  # gradient in the free variables' values v
        try:
            for j, (variable, xj) in enumerate(zip(self.variables, x, strict=True)):
                v, slope, log_jacobian, d_log_jacobian[j] = variable.forward(float(xj))
                density, gradient[j] = variable.log_density(v)
                values[j], slopes[j] = v, slope
                value += density + (log_jacobian if jacobian else 0.0)
            theta, d_theta = self._theta(list(values))
        except (ValueError, OverflowError, ZeroDivisionError):
            # a transform saturated in floating point (σ(x) = 0 or 1, exp(x) = ∞): the
            # density is 0 there to machine precision
            return -np.inf, np.zeros(n)
        loglik, score = likelihood(theta)
        if not np.isfinite(loglik):
            return -np.inf, np.zeros(n)
        if self._wishart:
            potential, d_potential = self._wishart_potential(theta)
            loglik += potential
            score = score + d_potential
        value += loglik
        gradient += d_theta.T @ score
        gradient *= slopes
        if jacobian:
            gradient += d_log_jacobian
        return float(value), gradient

    def value_and_draw(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[float, np.ndarray | None]:
        r""":math:`\log p(x \mid y)` without its gradient (one factorisation, no selected
        inverse) and, given ``rng`` and a likelihood that can (the sparse equations'), a draw
        of every unknown :math:`(b, u) \mid \theta(x), y` from the same factorisation
        (None otherwise); −∞ and None outside the parameter space."""
        value, values = 0.0, []
        try:
            for variable, xj in zip(self.variables, x, strict=True):
                v, _, log_jacobian, _ = variable.forward(float(xj))
                value += variable.log_density(v)[0] + log_jacobian
                values.append(v)
            theta = np.array(self._theta_values(values))
        except (ValueError, OverflowError, ZeroDivisionError):
            return -np.inf, None
        with_draw = getattr(self.likelihood, "value_and_draw", None)
        if with_draw is None:
            loglik, unknowns = self.likelihood(theta)[0], None
        else:
            loglik, unknowns = with_draw(theta, rng)
        if not np.isfinite(loglik):
            return -np.inf, None
        if self._wishart:
            loglik += self._wishart_potential(theta)[0]
        return float(value + loglik), unknowns

    def without_draws(self) -> MarginalDensity:
        """The same density with a likelihood that keeps only what its value and gradient need
        (``likelihood.without_draws()`` where it has one: the canonical transformation drops
        its eigenvectors and K's factor), for a sampler that draws b and u afterwards — what
        goes pickled to its worker process."""
        lighter = getattr(self.likelihood, "without_draws", None)
        if lighter is None:
            return self
        out = copy.copy(self)
        out.likelihood = lighter()
        return out

    def theta_jacobian(self, x: np.ndarray) -> np.ndarray:
        """∂θ/∂x at x (rows: ``parameters.names``)."""
        forwards = [v.forward(float(xi)) for v, xi in zip(self.variables, x, strict=True)]
        _, d_theta = self._theta([f[0] for f in forwards])
        return d_theta * np.array([f[1] for f in forwards])[None, :]


class _SpectralThetaLikelihood:
    """θ = (σu², σ²) → (ℓ_R, ∇ℓ_R) of the spectral marginal model (a class: it pickles)."""

    def __init__(self, problem) -> None:
        from ..estimation.spectral import SpectralLikelihood

        self.evaluate = SpectralLikelihood(problem)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        return self.evaluate(float(theta[0]), float(theta[1]))


class _SparseThetaLikelihood:
    """θ → (ℓ_R, ∇ℓ_R) from the sparse mixed-model equations (a class: it pickles)."""

    def __init__(self, mme) -> None:
        self.mme = mme

    def _evaluation(self, theta: np.ndarray, *, score: bool, y: np.ndarray | None = None):
        """The equations evaluated at θ (of the design's y, or of ``y`` on the records); None
        outside the space or where C(θ) does not factor (G₀ singular in floating point)."""
        from ..linalg.ldl import NotPositiveDefinite

        if not self.mme.parameters.valid(theta):
            return None
        try:
            return self.mme.evaluate(theta, score=score, information=False, y=y)
        except (NotPositiveDefinite, np.linalg.LinAlgError):
            return None

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        theta = np.asarray(theta, dtype=float)
        evaluation = self._evaluation(theta, score=True)
        if evaluation is None:
            return -np.inf, np.zeros_like(theta)
        return evaluation.loglik, evaluation.score

    def value_and_draw(
        self, theta: np.ndarray, rng: np.random.Generator | None
    ) -> tuple[float, np.ndarray | None]:
        r"""ℓ_R(θ) from one factorisation (no selected inverse) and, given ``rng``, a draw of
        every unknown from :math:`N(\hat w, C(\theta)^{-1})` by the same factor (perturb
        and solve, as :func:`~bayes_animal.bayes.conditional.draw_from_mixed_model`)."""
        evaluation = self._evaluation(np.asarray(theta, dtype=float), score=False)
        if evaluation is None:
            return -np.inf, None
        if rng is None:
            return evaluation.loglik, None
        noise = rng.standard_normal(self.mme.size)
        return evaluation.loglik, evaluation.solutions + evaluation.factor.draw(noise)


def spectral_likelihood(problem) -> Likelihood:
    """θ = (σu², σ²) → (ℓ_R, ∇ℓ_R) of the spectral marginal model."""
    return _SpectralThetaLikelihood(problem)


def sparse_likelihood(mme) -> Likelihood:
    """θ → (ℓ_R, ∇ℓ_R) from the sparse mixed-model equations (one factorisation and one
    selected inverse); −∞ where θ is outside the space or C(θ) is not positive definite."""
    return _SparseThetaLikelihood(mme)


class _LaplaceThetaLikelihood:
    """θ → the Laplace approximation of a non-Gaussian model's likelihood (b and every u
    integrated) and its gradient (:mod:`bayes_animal.linalg.laplace`; a class: it pickles)."""

    def __init__(self, equations) -> None:
        self.equations = equations

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        from ..errors import BayesAnimalError
        from ..linalg.ldl import NotPositiveDefinite

        theta = np.asarray(theta, dtype=float)
        variances = [self.equations.parameters.index(p.name) for p in self.equations.priors]
        if np.any(theta[variances] <= 0) or not np.all(np.isfinite(theta)):
            return -np.inf, np.zeros_like(theta)
        try:
            value, gradient, _ = self.equations.value_and_gradient(theta)
        except (BayesAnimalError, NotPositiveDefinite, np.linalg.LinAlgError, FloatingPointError):
            return -np.inf, np.zeros_like(theta)
        return value, gradient


def laplace_likelihood(equations) -> Likelihood:
    """θ → the Laplace approximation of a non-Gaussian model's likelihood and its gradient;
    −∞ where a variance is not positive or the mode is not found."""
    return _LaplaceThetaLikelihood(equations)
