r"""Exact draws of the fixed effects and breeding values given draws of the variances.

The marginal model samples only :math:`(\sigma_u^2, \sigma^2)`. For each posterior draw, the
fixed effects and breeding values are then drawn from their exact joint conditional
(flat prior on b):

1. :math:`b \mid \sigma, y \sim N\big(\hat b, (X^\top V^{-1} X)^{-1}\big)` (GLS), computed in
   the eigenbasis of :math:`K`;
2. :math:`u \mid b, \sigma, y`: Gaussian with mean
   :math:`\sigma_u^2 A Z^\top V^{-1}(y - Xb)` and covariance
   :math:`\sigma_u^2 A - \sigma_u^4 A Z^\top V^{-1} Z A`. It is drawn by Matheron's rule:
   :math:`u_0 \sim N(0, \sigma_u^2 A)`, :math:`e_0 \sim N(0, \sigma^2 I)`,
   :math:`u = u_0 + \sigma_u^2 A Z^\top V^{-1}(y - Xb - Z u_0 - e_0)`.
   When every animal of A has exactly one record (:math:`Z` a permutation), the conditional
   is diagonal in the eigenbasis — mean :math:`\frac{\sigma_u^2 d_k}{\sigma_u^2 d_k + \sigma^2}
   (y^* - X^* b)_k`, variance :math:`\frac{\sigma_u^2 d_k \sigma^2}{\sigma_u^2 d_k +
   \sigma^2}` — and one matrix product per block of draws suffices.

Everything is vectorised over blocks of draws (matrix–matrix products, no Python loop per
draw). With several random effects (the sparse marginal model), every unknown is drawn at once
by perturb-and-solve on the mixed-model equations (:func:`draw_from_mixed_model`): one sparse
factorisation per draw.
"""

from __future__ import annotations

import numpy as np

from ..design import Design
from ..linalg.spectral import SpectralProblem
from ..linalg.threads import blas_threads
from ..structures.relationship import RelationshipMatrix

__all__ = [
    "draw_breeding_values",
    "draw_fixed_and_breeding_values",
    "draw_from_mixed_model",
    "expected_reliability",
    "laplace_draws",
    "posterior_thetas",
    "spectral_reliability",
]

#: Posterior draws of θ (evenly spaced) over which the reliability is averaged: the ratio
#: PEV(θ)/(σ²k) is a smooth function of θ, so its mean over 20 draws is known to a few 1e-4.
RELIABILITY_DRAWS = 20

_BLOCK = 512


def _draw_fixed(problem: SpectralProblem, su, se, rng, y_rot=None) -> np.ndarray:
    """b ~ N(b̂, (X*ᵀ V⁻¹ X*)⁻¹) for each draw; shape (S, p). ``y_rot`` (S × n) replaces the
    rotated response per draw (the partial model: y net of the other effects)."""
    v = 1.0 / (su[:, None] * problem.eigenvalues[None, :] + se[:, None])  # S × n
    X = problem.X_rot
    y = problem.y_rot[None, :] if y_rot is None else y_rot
    precision = np.einsum("ni,sn,nj->sij", X, v, X)
    chol = np.linalg.cholesky(precision)
    rhs = (v * y) @ X
    mean = np.linalg.solve(precision, rhs[..., None])[..., 0]
    noise = rng.standard_normal(mean.shape)
    # cov = P⁻¹ = L⁻ᵀ L⁻¹: draw L⁻ᵀ ξ
    offset = np.linalg.solve(np.swapaxes(chol, 1, 2), noise[..., None])[..., 0]
    return mean + offset


def draw_breeding_values(
    problem: SpectralProblem,
    design: Design,
    relmat: RelationshipMatrix,
    beta: np.ndarray,
    sigma2_u: np.ndarray,
    sigma2_e: np.ndarray,
    *,
    rng: np.random.Generator,
    threads: int | None = None,
    y_rot: np.ndarray | None = None,
) -> np.ndarray:
    """Draw u from its exact conditional given b and the variances, one draw per row of beta
    (``y_rot``, S × n: the rotated response of each draw, when it differs between draws).

    Returns an array of shape (S, q), u for every level of the effect.
    """
    su = np.asarray(sigma2_u, dtype=float).ravel()
    se = np.asarray(sigma2_e, dtype=float).ravel()
    q, U, d = relmat.size, problem.eigenvectors, problem.eigenvalues
    index = design.effects[0].index
    values = np.empty((len(su), q))
    permutation = design.effects[0].is_permutation()
    chol_a = None if permutation else relmat.factor()
    incidence_t = None if permutation else design.effects[0].incidence().T.tocsr()
    with blas_threads(threads):
        for start in range(0, len(su), _BLOCK):
            part = slice(start, start + _BLOCK)
            s_u, s_e, b = su[part], se[part], beta[part]
            y_part = problem.y_rot[:, None] if y_rot is None else y_rot[part].T
            resid_rot = y_part - problem.X_rot @ b.T  # n × S
            if permutation:
                shrink = s_u[None, :] * d[:, None] / (s_u[None, :] * d[:, None] + s_e[None, :])
                sd = np.sqrt(shrink * s_e[None, :])
                rotated = shrink * resid_rot + sd * rng.standard_normal(resid_rot.shape)
                out = np.empty((q, len(s_u)))
                out[index] = U @ rotated
                values[part] = out.T
            else:
                u0 = (chol_a @ rng.standard_normal((q, len(s_u)))) * np.sqrt(s_u)[None, :]
                e0 = rng.standard_normal((len(index), len(s_u))) * np.sqrt(s_e)[None, :]
                residual = U @ resid_rot - u0[index] - e0
                v = 1.0 / (d[:, None] * s_u[None, :] + s_e[None, :])
                alpha = U @ (v * (U.T @ residual))  # V⁻¹ (y − Xb − Z u0 − e0)
                values[part] = (u0 + s_u[None, :] * (relmat.matrix @ (incidence_t @ alpha))).T
    return values


def draw_fixed_and_breeding_values(
    problem: SpectralProblem,
    design: Design,
    relmat: RelationshipMatrix,
    sigma2_u: np.ndarray,
    sigma2_e: np.ndarray,
    *,
    rng: np.random.Generator,
    threads: int | None = None,
    y_rot: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (b, u) from their exact joint conditional (flat prior on b), per variance draw
    (and per rotated response ``y_rot``, S × n, when it differs between draws).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        b of shape (S, p) and u of shape (S, q), u for every animal in A.
    """
    su = np.asarray(sigma2_u, dtype=float).ravel()
    se = np.asarray(sigma2_e, dtype=float).ravel()
    fixed = (
        np.concatenate(
            [
                _draw_fixed(
                    problem,
                    su[k : k + _BLOCK],
                    se[k : k + _BLOCK],
                    rng,
                    None if y_rot is None else y_rot[k : k + _BLOCK],
                )
                for k in range(0, len(su), _BLOCK)
            ]
        )
        if len(su)
        else np.empty((0, problem.p))
    )
    values = draw_breeding_values(
        problem, design, relmat, fixed, su, se, rng=rng, threads=threads, y_rot=y_rot
    )
    return fixed, values


def draw_from_mixed_model(
    mme, thetas: np.ndarray, *, rng: np.random.Generator, ys: np.ndarray | None = None
) -> np.ndarray:
    r"""Draw every unknown of the mixed-model equations — b and all random effects — from
    their exact joint conditional given each row of ``thetas`` (flat prior on b) and, where
    ``ys`` is given, the records' values of the same row (a family's latent values,
    :mod:`bayes_animal.bayes.latent`; else the design's y).

    Given :math:`\theta`, :math:`w = (b, u) \mid \theta, y \sim N(\hat w, C(\theta)^{-1})`: one
    factorisation per draw, :math:`w = \hat w + P L^{-\top} D^{-1/2} \xi` (perturb and solve).

    Returns
    -------
    numpy.ndarray
        Draws × unknowns, in the order of the equations (``mme.p`` fixed effects, then each
        effect's levels).

    Raises
    ------
    SingularEquationsError
        :math:`C(\theta)` is singular in floating point at a draw (the unknown is named).
    """
    from ..linalg.ldl import NotPositiveDefinite

    out = np.empty((len(thetas), mme.size))
    for k, theta in enumerate(np.asarray(thetas, dtype=float)):
        try:
            factor = mme.factorise(theta)
        except NotPositiveDefinite as exc:  # a draw where C is singular: name the unknown
            raise mme.singular_error(exc, theta) from exc
        mean = factor.solve(mme.right_hand_side(theta, None if ys is None else ys[k]))
        out[k] = mean + factor.draw(rng.standard_normal(mme.size))
    return out


def posterior_thetas(parameters, posterior) -> np.ndarray:
    """The draws of θ (draws × parameters, in the order of ``parameters.names``) from a
    posterior with ``sigma2:<component>`` and ``cov:<pair>`` variables."""
    quantities = [q for q in parameters.quantities() if q.kind in ("variance", "covariance")]
    thetas = np.column_stack([np.asarray(posterior[q.key].values).ravel() for q in quantities])
    order = [q.source for q in quantities]
    return thetas[:, [order.index(n) for n in parameters.names]]


def expected_reliability(
    mme, thetas: np.ndarray, diagonals: dict[str, np.ndarray], *, draws: int = RELIABILITY_DRAWS
) -> dict[str, np.ndarray]:
    r"""Per random effect and level, the posterior mean of the reliability given θ:

    .. math:: r_i = 1 - E_{\theta \mid y}\left[\frac{\mathrm{PEV}_i(\theta)}
              {\sigma_k^2(\theta)\, k_{ii}}\right],

    with :math:`\mathrm{PEV}_i(\theta) = (C(\theta)^{-1})_{ii}` from the selected inverse of
    the mixed-model equations at each of ``draws`` evenly spaced posterior draws. Each ratio is
    in [0, 1] (given θ the conditional variance is at most the prior's), so ``r`` is too —
    unlike :math:`1 - \operatorname{Var}(u_i \mid y)/(E[\sigma_k^2]\,k_{ii})`, a Monte
    Carlo variance against a plug-in, which goes below 0 for animals with little information.
    NaN where :math:`k_{ii} = 0` (a level with no prior variance).
    """
    from ..linalg.ldl import NotPositiveDefinite

    params = mme.parameters
    totals = {name: np.zeros(len(diagonal)) for name, diagonal in diagonals.items()}
    used = 0
    for theta in spread(thetas, draws):
        try:  # a draw where C(θ) does not factor (the sampler's −∞ edge) is left out
            diagonal_of_inverse = mme.factorise(theta).selected_inverse().diagonal()
        except (NotPositiveDefinite, np.linalg.LinAlgError):
            continue
        used += 1
        for name, diagonal in diagonals.items():
            prior = theta[params.index(name)] * np.asarray(diagonal, dtype=float)
            totals[name] += pev_share(diagonal_of_inverse[mme.effect_slice(name)], prior)
    if not used:
        return {name: np.full(len(total), np.nan) for name, total in totals.items()}
    return {name: 1.0 - total / used for name, total in totals.items()}


def pev_share(pev: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """PEV(θ) / (σ²_k(θ) k_ii) clipped to [0, 1] (NaN where the prior variance is 0): the
    term averaged over the draws of θ by the posterior reliabilities."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(np.where(prior > 0, pev / prior, np.nan), 0.0, 1.0)


def spread(thetas: np.ndarray, draws: int) -> np.ndarray:
    """``draws`` evenly spaced rows of ``thetas`` (all of them when there are fewer)."""
    thetas = np.asarray(thetas, dtype=float)
    picks = np.unique(np.linspace(0, len(thetas) - 1, min(draws, len(thetas))).round().astype(int))
    return thetas[picks]


#: Columns of the eigenbasis taken at once by :func:`spectral_reliability`.
_COLUMNS = 256


def spectral_reliability(
    problem: SpectralProblem,
    design: Design,
    relmat: RelationshipMatrix,
    thetas: np.ndarray,
    *,
    draws: int = RELIABILITY_DRAWS,
) -> np.ndarray:
    r""":func:`expected_reliability` for the one random effect of the spectral model, from its
    eigenbasis (no mixed-model equations: a singular or dense K is fine).

    With :math:`ZKZ^\top = U D U^\top`, :math:`v_j = \sigma_u^2 d_j + \sigma^2`,
    :math:`B = K Z^\top U` (q × n), :math:`X^* = U^\top X` and
    :math:`M = B\,\mathrm{diag}(1/v)\,X^*`, the conditional covariance of u given θ is
    :math:`\sigma_u^2 K - \sigma_u^4 K Z^\top P Z K` (P the REML projection), whose diagonal
    is :math:`\sigma_u^2 k_{ii} - \sigma_u^4 [\sum_j B_{ij}^2/v_j - (M (X^{*\top} V^{-1}
    X^*)^{-1} M^\top)_{ii}]`. B is formed a block of columns at a time (for a permutation Z
    it is U's rows scaled by d, placed at the animals' positions): O(q²n) once, then O(qnp)
    per draw of θ, every draw at once.
    """
    picked = spread(thetas, draws)
    su, se = picked[:, 0], picked[:, 1]
    d, U, X = problem.eigenvalues, problem.eigenvectors, problem.X_rot
    weights = 1.0 / (su[:, None] * d[None, :] + se[:, None])  # S × n
    effect = design.effects[0]
    q, p = relmat.size, X.shape[1]
    permutation = effect.is_permutation()
    incidence_t = None if permutation else effect.incidence().T.tocsr()
    quadratic = np.zeros((q, len(su)))  # Σ_j B_ij² / v_j per draw
    cross = np.zeros((len(su), q, p))  # M per draw
    with blas_threads(None, size=q):
        for start in range(0, len(d), _COLUMNS):
            cols = slice(start, start + _COLUMNS)
            if permutation:
                block = np.zeros((q, U[:, cols].shape[1]))
                block[effect.index] = U[:, cols] * d[cols]
            else:
                block = relmat.matrix @ (incidence_t @ U[:, cols])
            quadratic += (block * block) @ weights[:, cols].T
            cross += np.einsum("qc,sc,cp->sqp", block, weights[:, cols], X[cols], optimize=True)
    precision = np.einsum("np,sn,nk->spk", X, weights, X)
    correction = np.einsum(
        "sqp,sqp->qs", np.linalg.solve(precision, np.swapaxes(cross, 1, 2)).swapaxes(1, 2), cross
    )
    diagonal = np.diag(relmat.matrix)
    explained = su[None, :] * (quadratic - correction)  # σu² k_ii − PEV_i, over σu²
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diagonal[:, None] > 0, explained / diagonal[:, None], np.nan)
    return np.clip(ratio, 0.0, 1.0).mean(axis=1)


def laplace_draws(equations, thetas: np.ndarray, rng: np.random.Generator):
    r"""One draw of the unknowns (b, every u) per posterior draw of θ from the Laplace
    approximation's Gaussian :math:`N(\hat x(\theta), H^{-1})`, and each draw's importance
    log-weight against the exact conditional :math:`p(x \mid y, \theta)`
    (:meth:`~bayes_animal.linalg.laplace.LaplaceEquations.draws`): draws × unknowns, draws."""
    thetas = np.asarray(thetas, dtype=float)
    out = np.empty((len(thetas), equations.size))
    log_weights = np.empty(len(thetas))
    for k, theta in enumerate(thetas):
        noise = rng.standard_normal((equations.size, 1))
        x, weight = equations.draws(theta, noise)
        out[k] = x[:, 0]
        log_weights[k] = weight[0]
    return out, log_weights
