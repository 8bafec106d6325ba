r"""The likelihood of the PyMC model, one builder per parameterisation.

``marginal``, spectral (one random effect with a dense matrix)
    With :math:`K = Z A Z^\top = U \operatorname{diag}(d) U^\top`,
    :math:`y^* = U^\top y \sim N(X^* b, \operatorname{diag}(\sigma_u^2 d + \sigma^2))`; under a
    flat prior b is integrated out (a ``Potential`` equal to the restricted likelihood),
    otherwise sampled. :math:`O(n p^2)` per gradient, no funnel.
``marginal``, sparse (any model)
    Every random effect and b integrated out through the mixed-model equations:
    :math:`\log p(y\mid\theta) = \ell_R(\theta)` and its gradient from one sparse factorisation
    and one selected inverse (:class:`~bayes_animal.bayes.op.RestrictedLikelihood`); NUTS
    moves in the few variance parameters only.
``noncentred`` (any model)
    :math:`z_k \sim N(0, I)` per effect; a genetic effect is :math:`L z` with :math:`L = T
    D^{1/2}` applied by the parents-first recursion (:math:`O(q)`, a compiled Op:
    :mod:`bayes_animal.bayes.recursion`) or
    the factor of a dense matrix, an independent one is :math:`z`; a correlated pair is mixed by
    the Cholesky factor of :math:`G_0`, :math:`(u_a, u_m) = L_0 (Lz_a, Lz_m)`; b is sampled.
    With a non-Gaussian family (:mod:`bayes_animal.spec.family`) the records' likelihood is the
    family's at :math:`\eta = Xb + \sum_k Z_k u_k` (plus a non-centred observation-level
    effect for the Poisson family's overdispersion): the exact joint posterior of θ, b and
    every u. There an independent effect's levels are partly centred by the weights of
    :meth:`~bayes_animal.bayes.model.AnimalModel.centring`: :math:`\tilde u_j \sim N(0,
    \theta^{\lambda_j})`, :math:`u_j = \sqrt\theta^{\,1-\lambda_j}\tilde u_j`.
``partial`` (an additive effect with a dense matrix, and other effects)
    The additive effect integrated out in the eigenbasis of :math:`ZAZ^\top` (as the spectral
    marginal model, b integrated too) given the other effects, which are non-centred:
    :math:`U^\top(y - \sum_{k \ne a} Z_k u_k) \sim N(X^* b, \operatorname{diag}(\sigma_a^2 d +
    \sigma^2))`.
"""

from __future__ import annotations

import numpy as np

from ..design import Design
from ..linalg.spectral import SpectralProblem
from ..spec.parameters import Parameters, identifier
from ..structures.covariance import PedigreeStructure, Structure
from ..structures.pedigree import generation_blocks

__all__ = [
    "effect_dim",
    "effect_variable",
    "noncentred",
    "restricted_potential",
    "spectral_marginal",
]


def effect_variable(name: str) -> str:
    """Posterior variable of a random effect: ``u`` for the additive effect, ``u_<name>``."""
    return "u" if name == "additive" else f"u_{identifier(name)}"


def effect_dim(effect) -> str:
    """Dimension of an effect's levels: ``animal`` for genetic effects, ``<name>_level``."""
    return "animal" if effect.genetic else f"{identifier(effect.name)}_level"


def restricted_potential(problem: SpectralProblem, variance, residual, y_rot=None):
    """The restricted log-likelihood of the rotated model at (σ², σ²ₑ), b integrated out under
    a flat prior (``y_rot`` replaces the rotated response, e.g. net of other effects)."""
    import pytensor.tensor as pt

    d = pt.constant(problem.eigenvalues)
    X = pt.constant(problem.X_rot)
    y = pt.constant(problem.y_rot) if y_rot is None else y_rot
    variances = variance * d + residual
    weights = 1.0 / variances
    precision = X.T @ (X * weights[:, None])
    chol = pt.linalg.cholesky(precision)
    solved = pt.linalg.solve(precision, X.T @ (weights * y), assume_a="pos")
    r = y - X @ solved
    return -0.5 * (
        pt.sum(pt.log(variances))
        + 2.0 * pt.sum(pt.log(pt.diag(chol)))
        + pt.sum(weights * r**2)
        + (problem.n - problem.p) * np.log(2.0 * np.pi)
        - problem.logdet_xtx
    )


def spectral_marginal(pm, problem: SpectralProblem, variance, residual, beta=None) -> None:
    """The marginal model of one random effect (see the module docstring)."""
    import pytensor.tensor as pt

    if beta is not None:
        variances = variance * pt.constant(problem.eigenvalues) + residual
        mean = pt.constant(problem.X_rot) @ beta
        pm.Normal("y_rotated", mu=mean, sigma=pt.sqrt(variances), observed=problem.y_rot)
        return
    pm.Potential("restricted_loglik", restricted_potential(problem, variance, residual))


def pedigree_factor(structure: PedigreeStructure, z):
    """:math:`T D^{1/2} z` by the parents-first recursion written as PyTensor operations (one
    gather and scatter per generation), in the user's order of ``z``: the reference that
    :mod:`bayes_animal.bayes.recursion`'s compiled Op (what the models use) is tested against."""
    import pytensor.tensor as pt

    pedigree, sampling = structure.pedigree, structure.sampling
    q = pedigree.size
    order = structure.order  # level k ↔ pedigree position order[k]
    to_user = np.empty(q, dtype=np.int64)
    to_user[order] = np.arange(q)
    z_pedigree = z[to_user]
    scale = np.sqrt(sampling.variances)
    sire = np.where(pedigree.sire >= 0, pedigree.sire, q)
    dam = np.where(pedigree.dam >= 0, pedigree.dam, q)
    values = pt.zeros(q + 1)  # slot q: an unknown parent, always 0
    for block in generation_blocks(pedigree.generation):
        step = 0.5 * (values[sire[block]] + values[dam[block]]) + scale[block] * z_pedigree[block]
        values = pt.set_subtensor(values[block], step)
    return values[:q][order]


def unit_effect(structure: Structure, z):
    """A draw with covariance K from standard normals z: the pedigree recursion, the factor of
    a dense matrix, or z itself for independent levels."""
    import pytensor.tensor as pt

    if isinstance(structure, PedigreeStructure):
        from .recursion import pedigree_transform

        return pedigree_transform(structure, z)
    if structure.genetic:
        return pt.constant(structure.dense().factor()) @ z
    return z


def _unit_normals(pm, name: str, dims: str, values, centring, effect: str):
    """An effect's free variable and the multiplier of √θ that makes it u: z ~ N(0, 1) and
    √θ (non-centred), or, with the levels' weights λ in ``centring``, ũ ~ N(0, θ^λ) and
    √θ^(1-λ) — partly centred, u = √θ^(1-λ) ũ (:mod:`bayes_animal.bayes.joint`)."""
    import pytensor.tensor as pt

    scale = pt.sqrt(values[effect])
    weights = (centring or {}).get(effect)
    if weights is None:
        return pm.Normal(name, 0.0, 1.0, dims=dims), scale
    weights = pt.constant(np.asarray(weights, dtype=float))
    return pm.Normal(name, 0.0, scale**weights, dims=dims), scale ** (1.0 - weights)


def noncentred_effects(
    pm, design: Design, structures, parameters: Parameters, values, skip=(), centring=None
):
    """The non-centred random effects as Deterministics; returns their sum per record.
    ``centring``: the levels' weights λ of independent effects sampled partly centred."""
    import pytensor.tensor as pt

    total = pt.zeros(design.n_records)
    for block in parameters.blocks:
        names = [t for t in block.terms if t not in skip]
        if not names:
            continue
        effects = [design.effect(t) for t in names]
        if block.size == 1:
            e = effects[0]
            z, scale = _unit_normals(
                pm, f"z_{identifier(e.name)}", effect_dim(e), values, centring, e.name
            )
            scaled = [scale * unit_effect(structures[e.name], z)]
        else:
            units = [
                unit_effect(
                    structures[e.name],
                    pm.Normal(f"z_{identifier(e.name)}", 0.0, 1.0, dims=effect_dim(e)),
                )
                for e in effects
            ]
            a, m = block.terms
            va, vm, c = values[a], values[m], values[f"{a}:{m}"]
            l11 = pt.sqrt(va)
            l21 = c / l11
            l22 = pt.sqrt(pt.maximum(vm - l21**2, 1e-300))
            scaled = [l11 * units[0], l21 * units[0] + l22 * units[1]]
        for effect, u in zip(effects, scaled, strict=True):
            u = pm.Deterministic(effect_variable(effect.name), u, dims=effect_dim(effect))
            padded = pt.concatenate([u, pt.zeros(1)])  # index -1: no such effect (unknown dam)
            total = total + padded[effect.index]
    return total


def noncentred(
    pm, design: Design, structures, parameters: Parameters, values, beta, centring=None
) -> None:
    """Every random effect non-centred (independent ones partly centred by the weights λ in
    ``centring``), b sampled (see the module docstring)."""
    import pytensor.tensor as pt

    mean = pt.constant(design.X) @ beta
    mean = mean + noncentred_effects(pm, design, structures, parameters, values, centring=centring)
    if design.family.gaussian:
        pm.Normal("y", mu=mean, sigma=pt.sqrt(values["residual"]), observed=design.y, dims="obs")
    else:
        observe(pm, design, mean, values, centring)


def log_ndtr(x):
    r""":math:`\log\Phi(x)` in PyTensor, stable in both tails: for a vector the numba-compiled
    Op of :mod:`bayes_animal.bayes.normal_cdf` (one branch per element, its gradient the
    inverse Mills ratio); otherwise through the scaled complementary error function below 0,
    :math:`\log(1 - \tfrac12\operatorname{erfc}(x/\sqrt2))` above."""
    import pytensor.tensor as pt

    from .normal_cdf import log_normal_cdf

    x = pt.as_tensor_variable(x)
    if x.ndim == 1:
        return log_normal_cdf(x)
    root = np.sqrt(0.5)
    lower = pt.log(0.5 * pt.erfcx(-x * root)) - 0.5 * x * x
    upper = pt.log1p(-0.5 * pt.erfc(x * root))
    return pt.switch(x < 0, lower, upper)


#: The open ends of the cumulative probit's outer categories, as finite numbers (Φ of minus
#: this is 0 in double precision, and gradients stay finite).
_OPEN_END = 1e3


def _ordinal_loglik(pm, design: Design, eta):
    r"""Each record's :math:`\log(\Phi(c_k - \eta) - \Phi(c_{k-1} - \eta))` with the
    cut-points :math:`c_1 = 0 < c_2 < \dots` under a flat prior (free variables: the logs of
    their increments, their Jacobian a potential), taken from the tail each record's interval
    lies in; the cut-points kept as ``cutpoints``."""
    import pytensor.tensor as pt

    k = len(design.categories) - 1  # cut-points
    pieces = [pt.zeros(1)]
    if k > 1:
        log_increments = pm.Flat("cutpoint_log_increments", shape=k - 1)
        pm.Potential("cutpoint_jacobian", pt.sum(log_increments))
        pieces.append(pt.cumsum(pt.exp(log_increments)))
    cutpoints = pm.Deterministic("cutpoints", pt.concatenate(pieces), dims="cutpoint")
    edges = pt.concatenate([pt.as_tensor([-_OPEN_END]), cutpoints, pt.as_tensor([_OPEN_END])])
    codes = np.asarray(design.y, dtype=np.int64)
    a = edges[codes] - eta
    b = edges[codes + 1] - eta
    upper = a > 0
    high = pt.switch(upper, log_ndtr(-a), log_ndtr(b))
    low = pt.switch(upper, log_ndtr(-b), log_ndtr(a))
    return high + pt.log1mexp(pt.minimum(low - high, -1e-300))


def observe(pm, design: Design, eta, values, centring=None) -> None:
    """The records of a non-Gaussian family at the latent values ``eta`` (a ``Potential``
    equal to :meth:`~bayes_animal.spec.family.Family.log_density`'s sum); the Poisson
    family's observation-level effect partly centred by ``centring["residual"]``."""
    import pytensor.tensor as pt
    from scipy import special

    family = design.family
    y = np.asarray(design.y, dtype=float)
    trials = np.ones(len(y)) if design.trials is None else np.asarray(design.trials, dtype=float)
    if family.name == "ordinal":
        pm.Potential("records_loglik", pt.sum(_ordinal_loglik(pm, design, eta)))
        return
    if family.name == "binomial":
        constant = float(
            np.sum(
                special.gammaln(trials + 1)
                - special.gammaln(y + 1)
                - special.gammaln(trials - y + 1)
            )
        )
        if np.all(trials == 1.0):  # 0/1 records: log F(sη) with s = ±1, one tail each
            signed = pt.constant(2.0 * y - 1.0) * eta
            up = log_ndtr(signed) if family.link == "probit" else -pt.softplus(-signed)
            loglik = pt.sum(up)
        else:
            if family.link == "probit":
                up, down = log_ndtr(eta), log_ndtr(-eta)
            else:
                up, down = -pt.softplus(-eta), -pt.softplus(eta)
            loglik = pt.sum(y * up + (trials - y) * down) + constant
    else:  # poisson, log link
        if family.observation_effect:
            units, scale = _unit_normals(pm, "z_residual", "obs", values, centring, "residual")
            eta = eta + scale * units
        loglik = pt.sum(y * eta - pt.exp(eta)) - float(np.sum(special.gammaln(y + 1)))
    pm.Potential("records_loglik", loglik)


def partial(pm, problem: SpectralProblem, design: Design, structures, parameters, values) -> None:
    """The additive effect marginal in the eigenbasis, the others non-centred."""
    import pytensor.tensor as pt

    others = noncentred_effects(pm, design, structures, parameters, values, skip=("additive",))
    U = pt.constant(problem.eigenvectors)
    y_rot = pt.constant(problem.y_rot) - U.T @ others
    pm.Potential(
        "restricted_loglik",
        restricted_potential(problem, values["additive"], values["residual"], y_rot),
    )
