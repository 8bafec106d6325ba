r"""Several traits, one random effect, every trait on every record: the restricted likelihood
in the eigenbasis of :math:`ZKZ^\top` (the canonical transformation).

With t traits on n records, Y (n × t) = X B + Z U + E, where X (n × p) is shared by the
traits and B (p × t) gives each trait its own coefficients (MCMCglmm's ``trait:x``),
:math:`\operatorname{cov}(U_{ja}, U_{kb}) = K_{jk} G_{0,ab}` and the rows of E are
independent :math:`N(0, R_0)`. With :math:`ZKZ^\top = Q \Lambda Q^\top`, the rotated records
:math:`\tilde y_i = (Q^\top Y)_i` are independent,

.. math::

    \tilde y_i \sim N(B^\top \tilde x_i,\ V_i), \qquad V_i = \lambda_i G_0 + R_0,

so the likelihood costs O(n t³) after one eigendecomposition, where the mixed-model equations
factor a matrix of order t·q (dense for a dense K) at every evaluation.

**Restricted likelihood.** With :math:`W_i = V_i^{-1}`, :math:`D_i = I_t \otimes \tilde x_i^\top`
(β = vec B, trait by trait, the order of the equations' fixed effects),
:math:`M = \sum_i D_i^\top W_i D_i = \sum_i W_i \otimes \tilde x_i \tilde x_i^\top`,
:math:`\hat\beta = M^{-1} \sum_i D_i^\top W_i \tilde y_i`, :math:`r_i = \tilde y_i - D_i\hat\beta`,

.. math::

    \ell_R = -\tfrac12\Big[(nt - tp)\log 2\pi + \sum_i \log|V_i| + \log|M|
    + \sum_i r_i^\top W_i r_i - \log|X^{*\top} X^*|\Big],

the mixed-model equations' value (:mod:`bayes_animal.linalg.mme`: the same constant, since
:math:`\log|V| + \log|X^\top V^{-1} X| = \log|R| + \log|G| + \log|C|`).

**Score.** :math:`\partial V_i/\partial\theta_k = c_i E_k` with :math:`c_i = \lambda_i` for an
element of :math:`G_0`, 1 for one of :math:`R_0`, and :math:`E_k` its symmetric unit matrix.
With :math:`s_i = W_i r_i` (Py, rotated) and :math:`H_i = D_i M^{-1} D_i^\top` (t × t),

.. math::

    \frac{\partial \ell_R}{\partial \theta_k} = -\tfrac12 \operatorname{tr}\Big(E_k
    \sum_i c_i \big[W_i - W_i H_i W_i - s_i s_i^\top\big]\Big),

from :math:`\operatorname{tr}(P\,\partial V) - y^\top P\,\partial V\,P y` with
:math:`P = V^{-1} - V^{-1}X(X^\top V^{-1}X)^{-1}X^\top V^{-1}`.

**Draws.** Given θ, :math:`\beta \sim N(\hat\beta, M^{-1})`, then U given β by
perturbation (Matheron's rule): :math:`U^* \sim N(0, K \otimes G_0)`,
:math:`Y^* = Z U^* + E^*`, :math:`U = U^* + K Z^\top V^{-1}(Y - XB - Y^*) G_0` (:math:`V^{-1}`
applied in the eigenbasis) — an exact draw from :math:`p(\beta, U \mid \theta, y)` in
O(q² t + q n t) with no factorisation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CanonicalEquations",
    "CanonicalEvaluation",
    "CanonicalLikelihood",
    "CanonicalProblem",
    "canonical_obstacle",
    "canonical_problem",
]


@dataclass(frozen=True)
class CanonicalProblem:
    r"""A model of several traits rotated into the eigenbasis of :math:`ZKZ^\top`.

    Attributes
    ----------
    eigenvalues, eigenvectors
        :math:`\lambda` (n) and Q (n × n) of :math:`ZKZ^\top` over the records.
    Y_rot, X_rot
        :math:`Q^\top Y` (n × t) and :math:`Q^\top X` (n × p; X of one trait).
    g_index, r_index
        The position in θ of each element of :math:`G_0` and :math:`R_0` (t × t).
    constant
        :math:`(nt - tp)\log 2\pi - \log|X^{*\top}X^*|`.
    kzq
        :math:`K Z^\top Q` (q × n), which carries a rotated residual to the levels.
    k_factor
        L with :math:`LL^\top = K` (q × q), for the prior draws of the perturbation.
    k_diagonal
        The diagonal of K (q).
    record_level
        Each record's level (n).
    level_ids
        The ids of the levels (K's ids, or the effect's levels for an independent one).
    seconds
        Wall time of the eigendecomposition and the rotations.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    Y_rot: np.ndarray
    X_rot: np.ndarray
    g_index: np.ndarray
    r_index: np.ndarray
    constant: float
    kzq: np.ndarray
    k_factor: np.ndarray
    k_diagonal: np.ndarray
    record_level: np.ndarray
    level_ids: np.ndarray
    seconds: float

    @property
    def n(self) -> int:
        """Number of records."""
        return len(self.eigenvalues)

    @property
    def traits(self) -> int:
        """Number of traits t."""
        return self.Y_rot.shape[1]

    @property
    def p(self) -> int:
        """Fixed-effect columns of one trait."""
        return self.X_rot.shape[1]

    @property
    def levels(self) -> int:
        """Levels q of the random effect."""
        return len(self.k_diagonal)


def canonical_obstacle(design) -> str | None:
    """Why the canonical transformation cannot fit this model (None where it can): it needs
    several Gaussian traits, one random term (unstructured or ``diag``), and every trait on
    every record."""
    if not design.multi_trait:
        return "one trait"
    if not design.family.gaussian:
        return f"the {design.family.label} family"
    terms = {e.term for e in design.effects}
    if len(terms) != 1:
        return f"{len(terms)} random terms"
    t = len(design.traits)
    if len(design.y) != t * len(design.record_labels):
        return "records with some traits missing"
    return None


def _positions(parameters, blocks) -> np.ndarray:
    """θ's position of each element of the t × t matrix the blocks make up (one unstructured
    block, or t blocks of one trait each: ``diag``); ``parameters.size`` — the 0 appended to
    θ — for an element held at 0."""
    terms = [term for block in blocks for term in block.terms]
    index = np.full((len(terms), len(terms)), parameters.size, dtype=np.intp)
    for a, name in enumerate(terms):
        index[a, a] = parameters.index(name)
    for block in blocks:
        first = terms.index(block.terms[0])
        for i, j, name in block.covariances:
            index[first + i, first + j] = index[first + j, first + i] = parameters.index(name)
    return index


def canonical_problem(design, relationship, parameters) -> CanonicalProblem:
    r"""Eigendecompose :math:`ZKZ^\top` over the records and rotate Y and X.

    Parameters
    ----------
    design
        A design of several traits that :func:`canonical_obstacle` accepts.
    relationship
        The random effect's :class:`~bayes_animal.structures.relationship.RelationshipMatrix`
        (K, dense; levels in the order of the effect's levels), or None for an independent
        effect (K = I).
    parameters
        The model's :class:`~bayes_animal.spec.parameters.Parameters`.
    """
    obstacle = canonical_obstacle(design)
    if obstacle is not None:
        raise ValueError(f"The canonical transformation does not apply: {obstacle}.")
    start = time.perf_counter()
    t = len(design.traits)
    n = len(design.record_labels)
    record, trait = design.observation_record, design.observation_trait
    Y = np.empty((n, t))
    Y[record, trait] = design.y
    first = trait == 0
    effect = design.effects[0]
    level = np.empty(n, dtype=np.intp)
    level[record[first]] = effect.index[first]
    p = design.n_fixed // t
    X = np.empty((n, p))
    X[record[first]] = design.X[first, :p]
    # K's factor first: its first use, where a matrix whose check was left for later is
    # checked (RelationshipMatrix.require_definite), so a negative eigenvalue is round-off
    factor = np.eye(effect.size) if relationship is None else relationship.factor()
    K = np.eye(effect.size) if relationship is None else np.asarray(relationship.matrix, float)
    kernel = K[np.ix_(level, level)]
    values, vectors = np.linalg.eigh(kernel)
    values = np.maximum(values, 0.0)
    Y_rot = vectors.T @ Y
    X_rot = vectors.T @ X
    kz = K[:, level]  # K Zᵀ, q × n
    kzq = kz @ vectors
    _, logdet_x = np.linalg.slogdet(X.T @ X)
    constant = (n * t - t * p) * np.log(2.0 * np.pi) - t * float(logdet_x)
    return CanonicalProblem(
        eigenvalues=values,
        eigenvectors=vectors,
        Y_rot=Y_rot,
        X_rot=X_rot,
        g_index=_positions(parameters, parameters.blocks),
        r_index=_positions(parameters, (parameters.residual,)),
        constant=float(constant),
        kzq=kzq,
        k_factor=factor,
        k_diagonal=np.diag(K).copy(),
        record_level=level,
        level_ids=np.asarray(effect.levels if relationship is None else relationship.ids),
        seconds=time.perf_counter() - start,
    )


class CanonicalLikelihood:
    """θ → (ℓ_R, ∂ℓ_R/∂θ) of a :class:`CanonicalProblem` (the module docstring's formulas);
    −∞ where :math:`G_0` or :math:`R_0` is not positive definite. A class: it pickles for
    the sampler's worker process."""

    def __init__(self, problem: CanonicalProblem) -> None:
        self.problem = problem
        X = problem.X_rot
        self._xx = (X[:, :, None] * X[:, None, :]).reshape(len(X), -1)  # n × p²
        # the score's scatter: each upper-triangle element of G0 and R0 to its θ position
        t = problem.traits
        upper = np.triu_indices(t)
        self._flat = upper[0] * t + upper[1]
        self._twice = np.where(upper[0] == upper[1], 1.0, 2.0)

    def without_draws(self) -> CanonicalLikelihood:
        """The same likelihood (value and score) without what draws need: the eigenvectors,
        K Zᵀ Q and K's factor (O(n² + q n + q²): 600 MB at 5 000 records and levels), for a
        sampler's worker process."""
        from dataclasses import replace

        empty = np.empty((0, 0))
        return CanonicalLikelihood(
            replace(self.problem, eigenvectors=empty, kzq=empty, k_factor=empty)
        )

    def _matrices(self, theta: np.ndarray):
        """:math:`G_0` and :math:`R_0` at θ (an element held at 0 read from a 0 appended)."""
        pr = self.problem
        padded = np.append(theta, 0.0)
        return padded[pr.g_index], padded[pr.r_index]

    def _solve(self, theta: np.ndarray):
        """Everything the value, score and draws share; None outside the space."""
        pr = self.problem
        theta = np.asarray(theta, dtype=float)
        if not np.all(np.isfinite(theta)):
            return None
        G, R = self._matrices(theta)
        try:
            np.linalg.cholesky(G)
            np.linalg.cholesky(R)
        except np.linalg.LinAlgError:
            return None
        V = pr.eigenvalues[:, None, None] * G[None] + R[None]
        try:
            chol = np.linalg.cholesky(V)
        except np.linalg.LinAlgError:
            return None
        logdet_v = 2.0 * float(np.log(np.diagonal(chol, axis1=1, axis2=2)).sum())
        W = np.linalg.inv(V)
        t, p, n = pr.traits, pr.p, pr.n
        # M[a, c, b, d] = Σ_i W_i[a, b] x_i[c] x_i[d]; rhs[a, c] = Σ_i (W_i y_i)[a] x_i[c]
        sums = (W.reshape(n, t * t).T @ self._xx).reshape(t, t, p, p)
        M = sums.transpose(0, 2, 1, 3).reshape(t * p, t * p)
        wy = np.matmul(W, pr.Y_rot[:, :, None])[:, :, 0]
        rhs = (wy.T @ pr.X_rot).reshape(t * p)
        try:
            m_factor = np.linalg.cholesky(M)
        except np.linalg.LinAlgError:
            return None
        logdet_m = 2.0 * float(np.log(np.diag(m_factor)).sum())
        beta = np.linalg.solve(M, rhs)
        B = beta.reshape(t, p).T  # p × t
        r = pr.Y_rot - pr.X_rot @ B
        s = np.matmul(W, r[:, :, None])[:, :, 0]
        quadratic = float(np.vdot(r, s))
        value = -0.5 * (logdet_v + logdet_m + quadratic + pr.constant)
        return G, R, W, M, m_factor, beta, r, s, value

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        theta = np.asarray(theta, dtype=float)
        solved = self._solve(theta)
        if solved is None:
            return -np.inf, np.zeros_like(theta)
        return solved[-1], self._score(solved, len(theta))

    def _score(self, solved, size: int) -> np.ndarray:
        """∂ℓ_R/∂θ from what :meth:`_solve` gave (the module docstring's formula)."""
        _, _, W, M, _, _, _, s, _ = solved
        pr = self.problem
        t, p = pr.traits, pr.p
        n, X = pr.n, pr.X_rot
        m_inverse = np.linalg.inv(M).reshape(t, p, t, p)
        # H_i[a, b] = x_iᵀ M⁻¹[a, :, b, :] x_i
        left = (X @ m_inverse.transpose(1, 0, 2, 3).reshape(p, -1)).reshape(n, t, t, p)
        H = np.matmul(left, X[:, None, :, None])[..., 0]
        terms = W - W @ H @ W - s[:, :, None] * s[:, None, :]
        terms = terms.reshape(n, t * t)
        totals = np.stack([pr.eigenvalues @ terms, terms.sum(axis=0)])  # for G0, for R0
        gradient = np.zeros(size + 1)  # the last: elements held at 0, dropped
        for index, total in zip((pr.g_index, pr.r_index), totals, strict=True):
            gradient[index.ravel()[self._flat]] = -0.5 * total[self._flat] * self._twice
        return gradient[:-1]

    def value_and_draw(
        self, theta: np.ndarray, rng: np.random.Generator | None
    ) -> tuple[float, np.ndarray | None]:
        r"""ℓ_R(θ) and, given ``rng``, a draw of every unknown from :math:`p(\beta, U \mid
        \theta, y)` (the module docstring), in the order of the mixed-model equations:
        β trait by trait, then the effect's levels trait by trait."""
        solved = self._solve(np.asarray(theta, dtype=float))
        if solved is None:
            return -np.inf, None
        G, R, W, _, m_factor, beta, _, _, value = solved
        if rng is None:
            return value, None
        pr = self.problem
        t, p, q, n = pr.traits, pr.p, pr.levels, pr.n
        # β ~ N(β̂, M⁻¹): β̂ + L⁻ᵀ ξ with M = L Lᵀ
        from scipy.linalg import solve_triangular

        beta = beta + solve_triangular(m_factor, rng.standard_normal(t * p), lower=True, trans=1)
        B = beta.reshape(t, p).T
        u_star = (
            pr.k_factor @ rng.standard_normal((pr.k_factor.shape[1], t)) @ np.linalg.cholesky(G).T
        )
        e_star = rng.standard_normal((n, t)) @ np.linalg.cholesky(R).T
        y_star = u_star[pr.record_level] + e_star
        rotated = pr.Y_rot - pr.X_rot @ B - pr.eigenvectors.T @ y_star
        s = np.einsum("iab,ib->ia", W, rotated)
        U = u_star + pr.kzq @ s @ G
        return value, np.concatenate([beta, U.T.reshape(q * t)])


@dataclass(frozen=True)
class CanonicalEvaluation:
    r"""What AI-REML reads from one evaluation (:mod:`bayes_animal.estimation.aireml`), and the
    solutions at it.

    Attributes
    ----------
    theta, loglik, score, information
        The parameters, :math:`\ell_R`, its score and average information (None where not
        asked for).
    beta, beta_cov
        :math:`\hat\beta` (trait by trait) and :math:`M^{-1}`.
    """

    theta: np.ndarray
    loglik: float
    score: np.ndarray | None
    information: np.ndarray | None
    beta: np.ndarray
    beta_cov: np.ndarray


class CanonicalEquations(CanonicalLikelihood):
    r"""The canonical likelihood behind AI-REML's interface (``parameters``, ``design``,
    ``evaluate``, ``em_update``, ``singular_error``) and the predictions of every trait.

    **Average information.** With :math:`f_{k,i} = c_{k,i} E_k s_i` (the rotated
    :math:`\partial V/\partial\theta_k\,Py`) and :math:`g_k = \sum_i D_i^\top W_i f_{k,i}`,

    .. math::

        \mathrm{AI}_{kl} = \tfrac12 f_k^\top P f_l = \tfrac12\Big[\sum_i f_{k,i}^\top W_i
        f_{l,i} - g_k^\top M^{-1} g_l\Big].

    **Predictions.** :math:`\hat U = K Z^\top Q\, S\, G_0` (S the rows :math:`s_i`), and the
    prediction error variance of level j, trait a, the diagonal of
    :math:`K \otimes G_0 - (KZ^\top \otimes G_0)\,P\,(ZK \otimes G_0)`:

    .. math::

        K_{jj} G_{0,aa} - \sum_i (KZ^\top Q)_{ji}^2 (G_0 W_i G_0)_{aa}
        + \big(F_j M^{-1} F_j^\top\big)_{aa},\qquad F_j = \sum_i (KZ^\top Q)_{ji}\,
        G_0 W_i D_i .
    """

    def __init__(self, problem: CanonicalProblem, design, parameters) -> None:
        super().__init__(problem)
        self.design = design
        self.parameters = parameters
        # per parameter: whose element of which matrix (0: G0, 1: R0) and its place
        self._elements = []
        for k in range(parameters.size):
            for which, index in enumerate((problem.g_index, problem.r_index)):
                places = np.argwhere(index == k)
                if len(places):
                    a, b = places[0]
                    self._elements.append((which, int(min(a, b)), int(max(a, b))))
                    break

    def evaluate(self, theta: np.ndarray, *, information: bool = True) -> CanonicalEvaluation:
        """ℓ_R, its score and (where asked) average information at θ.

        Raises
        ------
        NotPositiveDefinite
            θ outside the space (a G0 or R0 not positive definite): AI-REML steps back.
        """
        from .ldl import NotPositiveDefinite

        theta = np.asarray(theta, dtype=float)
        solved = self._solve(theta)
        if solved is None:
            raise NotPositiveDefinite(
                "G0, R0 or the fixed effects' information matrix is not positive definite"
            )
        _, _, W, M, _, beta, _, s, value = solved
        score = self._score(solved, len(theta))
        ai = self._information(W, M, s) if information else None
        return CanonicalEvaluation(theta, value, score, ai, beta, np.linalg.inv(M))

    def _information(self, W: np.ndarray, M: np.ndarray, s: np.ndarray) -> np.ndarray:
        pr = self.problem
        n, t, p = pr.n, pr.traits, pr.p
        F = np.zeros((len(self._elements), n, t))
        for k, (which, a, b) in enumerate(self._elements):
            c = pr.eigenvalues if which == 0 else 1.0
            F[k, :, a] += c * s[:, b]
            if a != b:
                F[k, :, b] += c * s[:, a]
        WF = np.einsum("iab,kib->kia", W, F)
        first = np.einsum("kia,lia->kl", F, WF)
        g = np.einsum("kia,ic->kac", WF, pr.X_rot).reshape(len(F), t * p)
        return 0.5 * (first - g @ np.linalg.solve(M, g.T))

    def em_update(self, current) -> None:
        """No EM step with several traits: AI-REML steps along the score instead."""
        return None

    def singular_error(self, error, theta: np.ndarray):
        """The user's error where θ is valid yet the likelihood cannot be formed."""
        from ..errors import SingularEquationsError

        at = ", ".join(f"{k}={v:.6g}" for k, v in zip(self.parameters.names, theta, strict=True))
        return SingularEquationsError(
            f"The likelihood cannot be formed at {at} ({error}): at valid variances, the fixed "
            "effects' columns are collinear in the rotated records. Simplify the fixed part."
        )

    def predictions(self, theta: np.ndarray, *, pev: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Û (q × t) and, where asked, its prediction error variances (q × t) at θ."""
        pr = self.problem
        solved = self._solve(np.asarray(theta, dtype=float))
        if solved is None:
            raise ValueError("θ is outside the parameter space.")
        G, _, W, M, _, _, _, s, _ = solved
        blup = pr.kzq @ s @ G
        if not pev:
            return blup, None
        GWG = G[None] @ W @ G[None]
        prior = np.outer(pr.k_diagonal, np.diag(G))
        first = (pr.kzq**2) @ np.diagonal(GWG, axis1=1, axis2=2)
        GW = np.matmul(G[None], W)  # n × t × t
        t, p, n = pr.traits, pr.p, pr.n
        spread = (GW[:, :, :, None] * pr.X_rot[:, None, None, :]).reshape(n, -1)
        F = (pr.kzq @ spread).reshape(pr.levels, t, t * p)  # Σ_i (KZᵀQ)_ji G W_i D_i
        correction = np.einsum("jax,jax->ja", F @ np.linalg.inv(M), F)
        return blup, prior - first + correction
