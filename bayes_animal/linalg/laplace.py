r"""The Laplace approximation of a non-Gaussian mixed model on the sparse mixed-model equations.

The unknowns :math:`x` are the fixed effects (when integrated out), every random effect's
levels and, for a Poisson family with overdispersion, each record's observation-level effect;
:math:`\eta = W x + o` with :math:`W = [X \mid Z_1 \mid \dots \mid I]` and the offset
:math:`o = X b` when the fixed effects are given. With
:math:`u_k \sim N(0, \theta_k K_k)` the log joint density of the unknowns is

.. math::

    \varphi(x) = \sum_i \log p(y_i \mid \eta_i) - \tfrac12 \sum_k u_k^\top K_k^{-1} u_k/\theta_k,

its mode :math:`\hat x(\theta)` is found by Newton's method on
:math:`H = W^\top D W + G^{-1}`, :math:`D = \operatorname{diag}(w)`,
:math:`w_i = -\partial^2 \log p(y_i\mid\eta_i)/\partial\eta_i^2` — the Gaussian model's
coefficient matrix with :math:`\sigma^{-2} I` replaced by the records' weights, factored on the
same sparse LDLᵀ (:mod:`bayes_animal.linalg.ldl`), one symbolic analysis for every θ. The
Laplace approximation of the marginal likelihood (the fixed effects integrated under a flat
prior, or given) is

.. math::

    \log \tilde p(y \mid \theta) = \varphi(\hat x) - \tfrac12 \sum_k
    (q_k \log\theta_k + \log|K_k|) - \tfrac12 \log|H| + \tfrac{p}{2}\log 2\pi ,

exact for a Gaussian likelihood; with the Fisher weights in :math:`\log|H|` (``expected``) it
is lme4's ``glmer`` (``nAGQ = 1``) for a non-canonical link. Its gradient comes from the same
factorisation and selected inverse :math:`S` of :math:`H`:

.. math::

    \frac{\partial}{\partial\theta_k} = \frac{\hat u_k^\top K_k^{-1}\hat u_k}{2\theta_k^2}
    - \frac{q_k}{2\theta_k} + \frac{\operatorname{tr}(S_{kk} K_k^{-1})}{2\theta_k^2}
    - \tfrac12 \sum_i (W S W^\top)_{ii}\, w'_i\, (W v_k)_i ,
    \qquad v_k = H^{-1} \begin{pmatrix} 0 \\ K_k^{-1}\hat u_k/\theta_k^2 \\ 0\end{pmatrix},

the last term being how the weights move with the mode (:math:`v_k = \partial\hat x/\partial
\theta_k`); :math:`(W S W^\top)_{ii}` needs only entries of :math:`S` on the pattern of
:math:`W^\top W`, which the selected inverse holds.

Draws :math:`x \sim N(\hat x, H^{-1})` carry the importance log-weight
:math:`\varphi(x) - \varphi(\hat x) + \tfrac12 (x - \hat x)^\top H (x - \hat x)` against the
exact conditional :math:`p(x \mid y, \theta)` (:meth:`LaplaceEquations.draws`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ..errors import BayesAnimalError
from .ldl import Factor, analyse, coordinate_pattern

__all__ = ["LaplaceEquations", "Mode", "initial_cutpoints"]

#: Newton's method stops when the decrement :math:`g^\top H^{-1} g` is below this.
DECREMENT_TOLERANCE = 1e-20
MAX_NEWTON = 100


@dataclass
class Mode:
    """The conditional mode at one θ (and offset) and what the approximation needs of it.

    Attributes
    ----------
    x
        The mode :math:`\\hat x`.
    eta
        :math:`\\eta = W\\hat x + o`.
    value
        :math:`\\varphi(\\hat x)`.
    factor
        :math:`H` at the mode, factored (observed or Fisher weights as asked).
    weights
        The weights :math:`w` in :math:`H`.
    iterations
        Newton steps taken.
    """

    x: np.ndarray
    eta: np.ndarray
    value: float
    factor: Factor
    weights: np.ndarray
    iterations: int


@dataclass(frozen=True)
class _Prior:
    """One random effect's place among the unknowns and its :math:`K^{-1}`."""

    name: str
    where: slice
    kinv: sparse.csr_matrix
    logdet: float
    positions: np.ndarray  # of K⁻¹'s lower entries in the pattern's data
    values: np.ndarray  # those entries
    multiplicity: np.ndarray  # 2 off the diagonal (for traces), 1 on it


class LaplaceEquations:
    """The Laplace approximation of a non-Gaussian animal model (see the module docstring).

    Parameters
    ----------
    design
        Records, fixed and random effects, and the family (``design.family``).
    structures
        The structure of each genetic effect by term name; other effects get the identity.
    parameters
        The variance parameters θ (:class:`~bayes_animal.spec.parameters.Parameters`: the
        random terms, then ``residual``); the residual is an unknown per record only for a
        family with an observation-level effect, otherwise fixed and not part of the
        equations.
    integrate_fixed
        The fixed effects are unknowns integrated out (flat prior); otherwise they are given
        to each evaluation as ``beta``.
    ordering
        Fill-reducing ordering of the analysis.
    """

    def __init__(
        self,
        design,
        structures: Mapping[str, object],
        parameters,
        *,
        integrate_fixed: bool = True,
        ordering: str = "amd",
    ) -> None:
        from ..structures.covariance import IdentityStructure

        self.family = design.family
        if self.family.gaussian:
            raise BayesAnimalError("The Laplace equations are for the non-Gaussian families.")
        self.design = design
        self.parameters = parameters
        self.names = tuple(parameters.names)
        self.y = np.asarray(design.y, dtype=float)
        self.n = len(self.y)
        self.trials = (
            np.ones(self.n) if design.trials is None else np.asarray(design.trials, dtype=float)
        )
        self.X = np.asarray(design.X, dtype=float)
        self.integrate_fixed = integrate_fixed
        self.p = self.X.shape[1] if integrate_fixed else 0
        columns = [sparse.csr_matrix(self.X)] if integrate_fixed else []
        effects: list[tuple[str, object, sparse.csr_matrix]] = []
        for effect in design.effects:
            structure = (
                structures.get(effect.name, structures.get(effect.term))
                if effect.genetic
                else IdentityStructure(effect.levels)
            )
            effects.append((effect.name, structure, effect.incidence()))
        if self.family.observation_effect:
            effects.append(
                (
                    "residual",
                    IdentityStructure(np.arange(self.n)),
                    sparse.identity(self.n, format="csr"),
                )
            )
        offset = self.p
        placed = []
        for name, structure, Z in effects:
            columns.append(Z)
            placed.append((name, structure, slice(offset, offset + Z.shape[1])))
            offset += Z.shape[1]
        self.size = offset
        self.W = sparse.hstack(columns, format="csr")
        self.Wt = self.W.T.tocsr()
        # the pattern: W'W's pairs of each record and every K⁻¹'s lower entries
        obs_rows, obs_cols, obs_values, obs_record = _record_pairs(self.W)
        prior_parts = []
        for name, structure, where in placed:
            kinv = sparse.csr_matrix(structure.inverse())
            lower = sparse.tril(kinv).tocoo()
            prior_parts.append((name, structure, where, kinv, lower))
        rows = np.concatenate([obs_rows, *(lo.row + w.start for _, _, w, _, lo in prior_parts)])
        cols = np.concatenate([obs_cols, *(lo.col + w.start for _, _, w, _, lo in prior_parts)])
        self.pattern, unique = coordinate_pattern(rows, cols, self.size)
        observation_positions = np.searchsorted(
            unique, obs_cols.astype(np.int64) * self.size + obs_rows
        )
        # W'DW's data = A @ w; diag(W S W') = Q.T @ S's data (off-diagonal pairs twice)
        self._assemble = sparse.csr_matrix(
            (obs_values, (observation_positions, obs_record)), shape=(len(unique), self.n)
        )
        twice = np.where(obs_rows == obs_cols, 1.0, 2.0)
        self._quadratic = sparse.csr_matrix(
            (obs_values * twice, (obs_record, observation_positions)), shape=(self.n, len(unique))
        )
        self.priors: list[_Prior] = []
        for name, structure, where, kinv, lower in prior_parts:
            row, col = lower.row + where.start, lower.col + where.start
            positions = np.searchsorted(unique, col.astype(np.int64) * self.size + row)
            self.priors.append(
                _Prior(
                    name,
                    where,
                    kinv,
                    float(structure.logdet()),
                    positions,
                    lower.data.astype(float),
                    np.where(lower.row == lower.col, 1.0, 2.0),
                )
            )
        missing = [p.name for p in self.priors if p.name not in self.names]
        if missing:  # pragma: no cover - the parameters come from the same specification
            raise BayesAnimalError(f"No variance parameter for {missing}.")
        self._index = {name: i for i, name in enumerate(self.names)}
        self.ordering = ordering
        self._analysis = None
        self._start: np.ndarray | None = None
        #: an ordinal response's cut-points (the first 0), set by the caller; None otherwise
        self.cutpoints: np.ndarray | None = (
            initial_cutpoints(self.y) if self.family.name == "ordinal" else None
        )

    # -- pieces -------------------------------------------------------------------------------
    @property
    def analysis(self):
        """The symbolic analysis of H's pattern (done on first use)."""
        if self._analysis is None:
            self._analysis = analyse(self.pattern, ordering=self.ordering)
        return self._analysis

    def effect_slice(self, name: str) -> slice:
        """Where an effect's levels (or ``"fixed"``: the fixed effects) sit among the unknowns."""
        if name == "fixed":
            return slice(0, self.p)
        for prior in self.priors:
            if prior.name == name:
                return prior.where
        raise KeyError(name)

    def factorise(self, theta: np.ndarray) -> Factor:
        """:math:`H` at the conditional mode of θ (what PEVs are read from, as
        :meth:`~bayes_animal.linalg.mme.MixedModelEquations.factorise` for a Gaussian trait)."""
        return self.mode(theta).factor

    def _precision(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """:math:`G^{-1} x`."""
        out = np.zeros_like(x)
        for prior in self.priors:
            out[prior.where] = prior.kinv @ x[prior.where] / theta[self._index[prior.name]]
        return out

    def _eta(self, x: np.ndarray, offset: np.ndarray | float) -> np.ndarray:
        return self.W @ x + offset

    def _log_joint(self, theta, x, eta) -> float:
        loglik = float(np.sum(self.family.log_density(self.y, self.trials, eta, self.cutpoints)))
        return loglik - 0.5 * float(x @ self._precision(theta, x))

    def _factor(self, theta: np.ndarray, weights: np.ndarray) -> Factor:
        data = self._assemble @ weights
        for prior in self.priors:
            data[prior.positions] += prior.values / theta[self._index[prior.name]]
        return self.analysis.factorise(data)

    def offset(self, beta: np.ndarray | None) -> np.ndarray | float:
        """:math:`o = X b` for given fixed effects, 0 when they are integrated."""
        if self.integrate_fixed:
            return 0.0
        if beta is None:
            raise BayesAnimalError("These equations take the fixed effects as given: pass beta.")
        return self.X @ np.asarray(beta, dtype=float)

    # -- the mode ------------------------------------------------------------------------------
    def mode(
        self,
        theta: np.ndarray,
        beta: np.ndarray | None = None,
        *,
        expected: bool = False,
    ) -> Mode:
        """Newton's method (halving a step that lowers φ) from the last mode found (zeros at
        first, or where the last mode is outside the density's support at this θ).

        Raises
        ------
        BayesAnimalError
            Newton's method does not converge in :data:`MAX_NEWTON` steps.
        """
        theta = np.asarray(theta, dtype=float)
        offset = self.offset(beta)
        x = np.zeros(self.size) if self._start is None else self._start.copy()
        eta = self._eta(x, offset)
        value = self._log_joint(theta, x, eta)
        if not np.isfinite(value):
            x = np.zeros(self.size)
            eta = self._eta(x, offset)
            value = self._log_joint(theta, x, eta)
        iterations = 0
        for _ in range(MAX_NEWTON):
            iterations += 1
            s, w, _ = self.family.derivatives(self.y, self.trials, eta, self.cutpoints)
            gradient = self.Wt @ s - self._precision(theta, x)
            factor = self._factor(theta, w)
            step = factor.solve(gradient)
            decrement = float(gradient @ step)
            if decrement < DECREMENT_TOLERANCE * max(1.0, abs(value)):
                break
            scale = 1.0
            for _ in range(60):
                trial = x + scale * step
                trial_eta = self._eta(trial, offset)
                trial_value = self._log_joint(theta, trial, trial_eta)
                if np.isfinite(trial_value) and trial_value >= value - 1e-12 * abs(value):
                    break
                scale *= 0.5
            else:  # pragma: no cover - a concave objective always admits a small step
                raise BayesAnimalError("Newton's method found no ascent step for the mode.")
            x, eta, value = trial, trial_eta, trial_value
        else:
            raise BayesAnimalError(
                f"The conditional mode of the random effects did not converge in {MAX_NEWTON} "
                "Newton steps: the variances may be extreme, or the records separated "
                "(a group or fixed level with every record a success or every record a failure)."
            )
        _, weights, _ = self.family.derivatives(
            self.y, self.trials, eta, self.cutpoints, expected=expected
        )
        if expected:
            factor = self._factor(theta, weights)
        self._start = x
        return Mode(x, eta, value, factor, weights, iterations)

    # -- the approximation -------------------------------------------------------------------
    def _log_prior_constants(self, theta: np.ndarray) -> float:
        total = 0.0
        for prior in self.priors:
            q = prior.where.stop - prior.where.start
            total += q * math.log(theta[self._index[prior.name]]) + prior.logdet
        return -0.5 * total

    def log_marginal(
        self, theta: np.ndarray, beta: np.ndarray | None = None, *, expected: bool = False
    ) -> float:
        """:math:`\\log\\tilde p(y\\mid\\theta)` (given ``beta`` when the fixed effects are
        not integrated); ``expected``: Fisher weights in :math:`\\log|H|` (glmer's)."""
        mode = self.mode(theta, beta, expected=expected)
        return self.value_at(theta, mode)

    def value_at(self, theta: np.ndarray, mode: Mode) -> float:
        """The approximation from a mode already found."""
        return (
            mode.value
            + self._log_prior_constants(np.asarray(theta, dtype=float))
            - 0.5 * mode.factor.logdet
            + 0.5 * self.p * math.log(2.0 * math.pi)
        )

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray, Mode]:
        """:math:`\\log\\tilde p(y\\mid\\theta)` and its gradient in θ (zero for a fixed
        residual), with the fixed effects integrated and the observed weights (the module
        docstring's formula)."""
        theta = np.asarray(theta, dtype=float)
        mode = self.mode(theta)
        value = self.value_at(theta, mode)
        _, _, dw = self.family.derivatives(self.y, self.trials, mode.eta, self.cutpoints)
        selected = mode.factor.selected_inverse().on_pattern()
        leverage = self._quadratic @ selected  # diag(W S W')
        gradient = np.zeros(len(self.names))
        rhs = np.zeros((self.size, len(self.priors)))
        for j, prior in enumerate(self.priors):
            t = theta[self._index[prior.name]]
            u = mode.x[prior.where]
            ku = prior.kinv @ u
            q = prior.where.stop - prior.where.start
            trace = float(np.sum(selected[prior.positions] * prior.values * prior.multiplicity))
            gradient[self._index[prior.name]] = (
                0.5 * float(u @ ku) / t**2 - 0.5 * q / t + 0.5 * trace / t**2
            )
            rhs[prior.where, j] = ku / t**2
        moves = self.W @ mode.factor.solve(rhs)  # W ∂x̂/∂θ_k, records × effects
        indirect = -0.5 * (leverage * dw) @ moves
        for j, prior in enumerate(self.priors):
            gradient[self._index[prior.name]] += indirect[j]
        return value, gradient, mode

    def draws(
        self, theta: np.ndarray, noise: np.ndarray, mode: Mode | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draws :math:`x \\sim N(\\hat x, H^{-1})` from standard normals (unknowns × k) and
        each draw's importance log-weight against :math:`p(x\\mid y, \\theta)`."""
        if not self.integrate_fixed:  # pragma: no cover - the Bayesian path integrates them
            raise BayesAnimalError("Draws are of the equations with the fixed effects integrated.")
        theta = np.asarray(theta, dtype=float)
        mode = self.mode(theta) if mode is None else mode
        noise = np.asarray(noise, dtype=float).reshape(self.size, -1)
        x = mode.x[:, None] + mode.factor.draw(noise)
        eta = self.W @ x
        loglik = self.family.log_density(
            self.y[:, None], self.trials[:, None], eta, self.cutpoints
        ).sum(axis=0)
        quadratic = np.zeros(x.shape[1])
        for prior in self.priors:
            u = x[prior.where]
            quadratic += np.einsum("ij,ij->j", u, prior.kinv @ u) / theta[self._index[prior.name]]
        gaussian = 0.5 * np.einsum("ij,ij->j", noise, noise)
        log_weights = loglik - 0.5 * quadratic - mode.value + gaussian
        return x, log_weights


def initial_cutpoints(codes: np.ndarray) -> np.ndarray:
    """Cut-points from the categories' cumulative proportions, :math:`\\Phi^{-1}(P(Y \\le k))`,
    shifted so that the first is 0 (an ordinal response coded 0 … K − 1)."""
    from scipy import special

    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes, minlength=int(codes.max()) + 1)
    cumulative = np.cumsum(counts)[:-1] / len(codes)
    values = special.ndtri(np.clip(cumulative, 1e-6, 1 - 1e-6))
    return values - values[0]


def _record_pairs(W: sparse.csr_matrix):
    """Every pair (a ≥ b) of non-zero columns of each row of W: ``(a, b, W_ia W_ib, i)``."""
    W = W.tocsr()
    W.sort_indices()
    lengths = np.diff(W.indptr)
    record = np.repeat(np.arange(W.shape[0]), lengths)
    rows, cols, values, records = [], [], [], []
    for d in range(int(lengths.max()) if len(lengths) else 0):
        first = np.arange(len(W.indices) - d)
        same = record[first] == record[first + d]
        first = first[same]
        second = first + d
        a, b = W.indices[second], W.indices[first]  # sorted: a ≥ b
        rows.append(a)
        cols.append(b)
        values.append(W.data[first] * W.data[second])
        records.append(record[first])
    return (
        np.concatenate(rows),
        np.concatenate(cols),
        np.concatenate(values),
        np.concatenate(records),
    )
