r"""Average-information REML on the sparse mixed-model equations, for any number of components.

Each iteration factors :math:`C(\theta)` once (:class:`~bayes_animal.linalg.mme.
MixedModelEquations`) for the restricted log-likelihood, its score :math:`g` (traces from the
selected inverse) and the average information :math:`\mathcal I` (Gilmour, Thompson & Cullis
1995), and proposes the Newton-like step :math:`\Delta = \mathcal I^{-1} g`:

- the step is halved until the new point is inside the parameter space (variances > 0,
  every :math:`G_0` positive definite, and :math:`C(\theta)` factors: a pivot that vanishes,
  :class:`~bayes_animal.linalg.ldl.NotPositiveDefinite`, marks a trial point as outside) and
  the log-likelihood does not decrease; when ten halvings do not succeed, an EM-REML step is
  taken instead (it never leaves the space). Where :math:`C` is singular at valid parameters
  that the search cannot step back from — the start, the EM point — the fit stops with the
  :meth:`~bayes_animal.linalg.mme.MixedModelEquations.singular_error` that names the
  unknown;
- a variance the step drives below zero is moved nine tenths of the way towards zero (to a
  tenth of its value: :data:`SHRINK_TOWARDS_ZERO`); one that is already within ``1e-6`` of
  :math:`\sigma_P^2` of zero and still pushed down is fixed at the **boundary** (held at
  :math:`10^{-8}\sigma_P^2`, reported as 0, its SE left out, with a notice) and the others go
  on without it; when the rest has converged, a boundary component whose score points back into
  the space is released (at most twice) from :math:`10^{-3}\sigma_P^2`, or from a smaller value
  where that one is outside the space; one that cannot be released stays at the boundary;
- with several traits, a step out of a block's cone is taken in its Cholesky factor; a pair's
  correlation driven to ±1 is held at the edge; a block of three or more near singular where
  the search stalls is held in its shape, and freed once the rest has converged. Where the
  freed block crawls along the cone (the decrement not halving in
  :data:`CRAWL_ITERATIONS` iterations) or is held again, its shape is searched once: every
  parameter by L-BFGS-B in log-variances and canonical partial correlations
  (:class:`_ShapeCoordinates`), where a singular matrix is a partial correlation at the edge
  of a box; AI then goes on from there with the blocks found singular held in that shape
  (their covariances reported at the boundary) and the step tested at
  :data:`HELD_STEP_TOLERANCE`;
- convergence: the Newton decrement :math:`\tfrac12 g^\top \mathcal I^{-1} g` and the change
  of :math:`\ell` in the last step both at most :data:`~bayes_animal.estimation.result.
  CONVERGENCE_TOLERANCE` (log-likelihood units), and the proposed step below
  :data:`STEP_TOLERANCE` of each parameter's standard error (so that the estimates, not only
  the likelihood, are converged: ASReml's answers are matched to 1e-6).

Starting values share the variance of the residuals of an OLS fit of the fixed part equally
among the components (covariances 0); the caller may give better ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..linalg.ldl import NotPositiveDefinite
from ..linalg.mme import Evaluation, MixedModelEquations
from .result import CONVERGENCE_TOLERANCE, Convergence

__all__ = ["AiremlFit", "fit_aireml", "ols_variance"]

#: A boundary component is held at this fraction of the phenotypic variance.
BOUNDARY_VALUE = 1e-8
#: A variance this small (relative to the phenotypic variance) that is still pushed down is
#: declared to be at its boundary.
BOUNDARY_TRIGGER = 1e-6
MAX_HALVINGS = 10
#: A variance the step drives below zero is set to this fraction of its value instead.
SHRINK_TOWARDS_ZERO = 0.1
#: Values (fractions of the phenotypic variance) a released boundary component restarts from,
#: the first one inside the parameter space taken.
RELEASE_VALUES = (1e-3, 1e-4, 1e-5)
#: A boundary component is released at most this many times.
MAX_RELEASES = 2
#: A pair's correlation a step would take to |r| ≥ 1 from beyond this is held at the edge of
#: the positive semi-definite cone (:data:`HELD_CORRELATION`), its covariance following the
#: two variances.
CORRELATION_TRIGGER = 0.98
HELD_CORRELATION = 1.0 - 1e-4
#: A block of three or more whose correlation matrix has its smallest eigenvalue below this
#: keeps its correlations (its variances stay free) where the search has stalled: not before
#: (the wheat data's 4 × 4 genetic matrix passes near singular on its way to an interior
#: optimum; a permanent-environment matrix estimated singular stalls without the hold).
CONE_TRIGGER = 0.05
#: At convergence the proposed step also changes no parameter by more than this fraction of
#: its standard error (the log-likelihood criteria alone leave θ known to ~SE·1e-4).
STEP_TOLERANCE = 1e-6
#: A block of three or more freed after its hold (:func:`fit_aireml`) has its shape searched
#: (:func:`_search_shape`) when the Newton decrement has not halved in this many AI
#: iterations: freed, the wheat data's 4 × 4 genetic matrix converges with the decrement
#: falling seven-fold an iteration; a singular 3 × 3 permanent environment crawls along the
#: cone, its decrement stuck near 0.02 for a hundred iterations.
CRAWL_ITERATIONS = 3
#: The shape search's budget of evaluations (each a factorisation and selected inverse).
SEARCH_EVALUATIONS = 400
#: The same for a fit holding a block in the singular shape its search found (the partial
#: correlation at ±:data:`HELD_CORRELATION`): there ℓ stops changing at its round-off while
#: the step, through a near-singular information, still moves by ~1e-5 SE.
HELD_STEP_TOLERANCE = 1e-3


@dataclass(frozen=True)
class AiremlFit:
    """The estimate, the evaluation at it, and how it was reached."""

    theta: np.ndarray
    evaluation: Evaluation
    boundary: tuple[str, ...]
    convergence: Convergence
    iterations: int
    em_steps: int
    halvings: int = 0


def ols_variance(mme: MixedModelEquations):
    """Residual variance of the OLS fit of the fixed part: the scale of the starting values
    (one per trait with several traits)."""
    design = mme.design
    X, y = design.X, design.y
    coefficients, *_ = np.linalg.lstsq(X, y, rcond=None)
    residual = y - X @ coefficients

    def variance(chosen: np.ndarray) -> float:
        r = residual[chosen]
        value = float(r @ r / max(len(r) - X.shape[1] / max(len(design.traits), 1), 1))
        return value if value > 0 else 1.0

    if not design.multi_trait:
        return variance(np.ones(len(y), dtype=bool))
    return np.array([variance(design.observation_trait == a) for a in range(len(design.traits))])


def _evaluate(
    mme: MixedModelEquations,
    theta: np.ndarray,
    *,
    required: bool = False,
    information: bool = True,
) -> Evaluation | None:
    """The evaluation at ``theta`` (its average information where ``information``); None
    outside the parameter space or where C(θ) does not factor (a trial point to step back
    from).

    Raises
    ------
    SingularEquationsError
        ``required`` and θ valid but C(θ) singular: there is no point to step back to.
    """
    if not mme.parameters.valid(theta):
        return None
    try:
        return mme.evaluate(theta, information=information)
    except NotPositiveDefinite as exc:
        if required:
            raise mme.singular_error(exc, theta) from exc
        return None


def fit_aireml(
    mme: MixedModelEquations,
    *,
    start: np.ndarray | None = None,
    max_iterations: int = 100,
) -> AiremlFit:
    """Maximise the restricted log-likelihood (see the module docstring).

    Parameters
    ----------
    mme
        The analysed mixed-model equations.
    start
        Starting parameters (default: the OLS residual variance shared equally).
    max_iterations
        AI iterations allowed; a fit stopped by this limit reports ``converged=False``
        unless its last iteration met every convergence test.

    Raises
    ------
    ValueError
        The starting values are outside the parameter space.
    SingularEquationsError
        :math:`C(\theta)` is singular in floating point at valid parameters the search cannot
        step back from (see the module docstring).
    """
    params = mme.parameters
    scales = ols_variance(mme)
    theta = params.start(scales) if start is None else np.asarray(start, dtype=float).copy()
    scale = float(np.mean(scales))
    held = BOUNDARY_VALUE * scale
    boundary: set[str] = set()
    released: dict[str, int] = {}
    if not params.valid(theta):
        raise ValueError("The starting values are outside the parameter space.")
    current = _evaluate(mme, theta, required=True)
    last_change = np.inf
    em_steps = halvings = 0
    variances = set(params.variances)
    correlations: dict[str, float] = {}  # covariances held at the edge of the PSD cone
    released_blocks: set[str] = set()  # blocks of three or more whose hold was lifted once
    held_shape = False  # a block held in the singular shape its search found
    lifted_blocks: list = []  # the blocks freed after a hold, until their shape is searched
    since_lift: list[float] = []  # the Newton decrements since
    for iteration in range(1, max_iterations + 1):
        J = _free_map(params, current.theta, boundary, correlations)
        g = J.T @ current.score
        info = J.T @ current.information @ J
        try:
            step = np.linalg.solve(info, g)
            decrement = 0.5 * float(g @ step)
        except np.linalg.LinAlgError:
            step, decrement = None, np.inf
        if step is not None and decrement < 0:
            step, decrement = None, np.inf  # AI not positive definite here: take an EM step
        if lifted_blocks:
            since_lift.append(decrement)
            if _crawls(since_lift) or any(
                n in correlations for b in lifted_blocks for _, _, n in b.covariances
            ):  # the freed block crawls along the cone or is held again: search its shape
                lifted_blocks = []
                found = _search_shape(mme, current, boundary)
                if found is not None:  # go on from the best shape, held where it is singular
                    current, singular = found
                    correlations = {
                        name: _correlation(params, current.theta, name)
                        for block in singular
                        for _, _, name in block.covariances
                    }
                    released_blocks.update(block.terms[0] for block in singular)
                    held_shape = held_shape or bool(singular)
                    last_change = np.inf
                    continue
        if step is not None:
            edge = _edge(params, current.theta, J @ step, correlations, released_blocks)
            if edge:  # hold them, and go on from the held point
                correlations.update(edge)
                held_theta = _hold(params, current.theta, correlations)
                moved = _evaluate(mme, held_theta)
                if moved is not None:
                    last_change = abs(moved.loglik - current.loglik)
                    current = moved
                    continue
                for name in edge:
                    del correlations[name]
        small_step = _small(step, info, held_shape)
        if _converged(decrement, last_change, small_step, current.loglik):
            lift = _held_blocks(params, correlations, released_blocks)
            if lift:  # a block frozen on the way may have its optimum inside: free it once
                for block in lift:
                    released_blocks.add(block.terms[0])
                    for _, _, name in block.covariances:
                        correlations.pop(name, None)
                lifted_blocks, since_lift = lift, []
                last_change = np.inf
                continue
            lifted_blocks = []  # a freed block converged inside: nothing crawls
            restart = None
            back = _release(current, params, boundary, released)
            while back is not None and restart is None:
                restart = _restart(mme, current, params.index(back), scale)
                if restart is None:  # no release value is inside the space: it stays
                    released[back] = MAX_RELEASES
                    back = _release(current, params, boundary, released)
            if restart is None:
                counts = (iteration - 1, em_steps, halvings)
                return _finish(
                    current, boundary | set(correlations), decrement, last_change, True, *counts,
                    held_shape=held_shape,
                )  # fmt: skip
            boundary.discard(back)
            current = restart
            last_change = np.inf
            continue
        proposal = None
        if step is not None:
            full = J @ step
            base = current.theta.copy()
            path = None
            if params.multi_trait and not params.valid(_hold(params, base + full, correlations)):
                # the step leaves the cone of a G0 or R0 (not along one pair's correlation):
                # take it in the blocks' Cholesky factors, whose image is always inside, and
                # halve it there
                path = _cholesky_step(params, current, boundary, correlations)
            for k, name in enumerate(params.names):
                if name in variances and name not in boundary and base[k] + full[k] <= 0:
                    if base[k] <= BOUNDARY_TRIGGER * scale:
                        boundary.add(name)
                        full[k] = held - base[k]
                    else:
                        full[k] = (SHRINK_TOWARDS_ZERO - 1.0) * base[k]
            # near the optimum the change of ℓ is below its round-off (~1e-12·|ℓ| for large
            # models): take the step as it is; elsewhere halve it until ℓ does not decrease
            noise = 1e-12 * abs(current.loglik)
            alpha = 1.0
            for _ in range(MAX_HALVINGS):
                candidate = base + alpha * full if path is None else path(alpha)
                for name in boundary:
                    candidate[params.index(name)] = held
                candidate = _hold(params, candidate, correlations)
                trial = _evaluate(mme, candidate)
                if trial is not None and (
                    decrement <= 1e-6 or trial.loglik >= current.loglik - noise
                ):
                    proposal = trial
                    break
                alpha *= 0.5
                halvings += 1
        if proposal is None:
            em = mme.em_update(current)
            if em is None:  # no EM step (several traits): a short step along the score
                proposal = _gradient_step(mme, current, J, correlations)
                if proposal is None:  # stalled: a block near singular keeps its correlations
                    frozen = _near_singular_blocks(params, current.theta, correlations)
                    if frozen:
                        correlations.update(frozen)
                        proposal = _evaluate(mme, _hold(params, current.theta, correlations))
                    if proposal is None:
                        break
            else:
                for name in boundary:
                    em[params.index(name)] = held
                proposal = _evaluate(mme, em, required=True)
                if proposal is None:  # pragma: no cover - EM stays inside the space
                    break
            em_steps += 1
        last_change = abs(proposal.loglik - current.loglik)
        current = proposal
    J = _free_map(params, current.theta, boundary, correlations)
    g = J.T @ current.score
    info = J.T @ current.information @ J
    try:
        step = np.linalg.solve(info, g)
        decrement = 0.5 * float(g @ step)
    except np.linalg.LinAlgError:
        step, decrement = None, np.inf
    if step is not None and decrement < 0:  # as in the loop: no Newton step here
        step, decrement = None, np.inf
    small_step = _small(step, info, held_shape)
    counts = (max_iterations, em_steps, halvings)
    return _finish(
        current, boundary | set(correlations), decrement, last_change, small_step, *counts,
        stopped=True, held_shape=held_shape,
    )  # fmt: skip


class _ShapeCoordinates:
    r"""θ in coordinates where every block's shape lies in a box: the logarithm of each
    variance (one at its boundary stays where it is) and each block's canonical partial
    correlations (:mod:`bayes_animal.spec.vine`) in :math:`[-b, b]`, b =
    :data:`HELD_CORRELATION`. A singular :math:`G_0` is a partial correlation at ±1, so the
    block's best singular shape is a point on the edge of the box, where a bounded
    quasi-Newton search can reach it; in θ it is a corner of the cone, where AI steps crawl."""

    def __init__(self, params, theta: np.ndarray, boundary: set[str]) -> None:
        from ..spec.vine import vine_partial_correlations

        self.params = params
        self.theta0 = np.asarray(theta, dtype=float).copy()
        self.position: dict = {}
        start: list[float] = []
        self.bounds: list[tuple[float | None, float | None]] = []
        self.keys: dict[int, list] = {}
        for b, block in enumerate(params.all_blocks):
            for term in block.terms:
                if term not in boundary:
                    self.position[("log", term)] = len(start)
                    start.append(float(np.log(self.theta0[params.index(term)])))
                    self.bounds.append((None, None))
            if not block.covariances:
                continue
            r = _correlation_matrix(params, self.theta0, block)
            r = (r + 1e-8 * np.eye(block.size)) / (1.0 + 1e-8)  # a held edge factors
            partial = vine_partial_correlations(r)
            self.keys[b] = list(partial)
            for key, value in partial.items():
                self.position[(b, key)] = len(start)
                start.append(float(np.clip(value, -HELD_CORRELATION, HELD_CORRELATION)))
                self.bounds.append((-HELD_CORRELATION, HELD_CORRELATION))
        self.start = np.array(start)

    def theta_and_jacobian(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""θ at ``x`` and :math:`\partial\theta/\partial x`: a variance
        :math:`v = e^{s}`, a covariance :math:`c_{ab} = R_{ab}(z)\sqrt{v_a v_b}`."""
        from ..spec.vine import vine_jacobian

        params = self.params
        theta = self.theta0.copy()
        J = np.zeros((params.size, len(x)))
        for key, k in self.position.items():
            if key[0] == "log":
                i = params.index(key[1])
                theta[i] = np.exp(x[k])
                J[i, k] = theta[i]
        for b, block in enumerate(params.all_blocks):
            if not block.covariances:
                continue
            z = {key: float(x[self.position[(b, key)]]) for key in self.keys[b]}
            R, dR = vine_jacobian(z, block.size)
            v = [theta[params.index(t)] for t in block.terms]
            for a, c, name in block.covariances:
                i, root = params.index(name), np.sqrt(v[a] * v[c])
                theta[i] = R[a, c] * root
                for t in (a, c):
                    k = self.position.get(("log", block.terms[t]))
                    if k is not None:
                        J[i, k] += 0.5 * theta[i]
                for key in z:
                    J[i, self.position[(b, key)]] = dR[key][a, c] * root
        return theta, J

    def singular_blocks(self, x: np.ndarray) -> list:
        """The blocks with a partial correlation at the edge of the box."""
        return [
            block
            for b, block in enumerate(self.params.all_blocks)
            if any(
                abs(x[self.position[(b, key)]]) >= HELD_CORRELATION * (1.0 - 1e-9)
                for key in self.keys.get(b, [])
            )
        ]


def _search_shape(mme: MixedModelEquations, current: Evaluation, boundary: set[str]):
    """Every parameter from ``current`` by L-BFGS-B in :class:`_ShapeCoordinates` (the
    score carried by their Jacobian; at most :data:`SEARCH_EVALUATIONS` evaluations):
    ``(evaluation, blocks with a partial correlation at the edge)`` — of any size, the
    residual's included —, or None where it does not raise ℓ by more than its round-off.
    Asked once per block of three or more freed after its hold, where the freed block crawls
    along the cone or is held again (a 3 × 3 permanent-environment matrix of rank 2): the
    held shape is the one the block had when it stalled, and the best singular one differs.
    AI then holds each singular block's correlations, so its variances' SEs are those at
    that shape (as for a pair held at ±1)."""
    from scipy import optimize

    params = mme.parameters
    coordinates = _ShapeCoordinates(params, current.theta, boundary)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        theta, J = coordinates.theta_and_jacobian(x)
        evaluation = _evaluate(mme, theta, information=False)
        if evaluation is None:
            return float("inf"), np.zeros(len(x))
        return -evaluation.loglik, -(J.T @ evaluation.score)

    found = optimize.minimize(
        objective, coordinates.start, jac=True, method="L-BFGS-B", bounds=coordinates.bounds,
        options={"maxiter": 300, "maxfun": SEARCH_EVALUATIONS, "ftol": 1e-15, "gtol": 1e-7},
    )  # fmt: skip
    theta, _ = coordinates.theta_and_jacobian(found.x)
    evaluation = _evaluate(mme, theta)
    if evaluation is None or evaluation.loglik <= current.loglik + _change_tolerance(
        current.loglik
    ):  # round-off is no reason to hold a shape and loosen the step test
        return None
    return evaluation, coordinates.singular_blocks(found.x)


def _cholesky_step(params, current: Evaluation, boundary: set[str], correlations: dict):
    r"""The AI step in the Cholesky factors :math:`L` of every block with covariances (none
    held, none of its variances at a boundary), :math:`G_0 = LL^\top`, the other free
    parameters as they are: :math:`\Delta\phi = (J^\top\mathcal I J)^{-1}J^\top g` with
    :math:`J = \partial\theta/\partial\phi`; returned as the path
    :math:`\alpha \mapsto \theta(\phi + \alpha\Delta\phi)`, inside the cone for every
    :math:`\alpha` (None where the system is singular)."""
    theta = current.theta
    free = [n for n in params.names if n not in boundary and n not in correlations]
    blocks = [
        b for b in params.all_blocks
        if b.covariances
        and not any(n in correlations for _, _, n in b.covariances)
        and not any(t in boundary for t in b.terms)
    ]  # fmt: skip
    in_blocks = {n for b in blocks for n in (*b.terms, *(c for _, _, c in b.covariances))}
    plain = [n for n in free if n not in in_blocks]
    columns: list[tuple] = [("plain", n) for n in plain]
    factors = {}
    for b, block in enumerate(blocks):
        try:
            factors[b] = np.linalg.cholesky(params.g0(theta, block))
        except np.linalg.LinAlgError:
            return None
        columns += [("chol", b, i, j) for i in range(block.size) for j in range(i + 1)]
    J = np.zeros((params.size, len(columns)))
    for k, column in enumerate(columns):
        if column[0] == "plain":
            J[params.index(column[1]), k] = 1.0
            continue
        _, b, i, j = column
        block, L = blocks[b], factors[b]
        E = np.zeros_like(L)
        E[i, j] = 1.0
        dG = E @ L.T + L @ E.T  # ∂(LLᵀ)/∂L_ij
        for a, term in enumerate(block.terms):
            J[params.index(term), k] = dG[a, a]
        for a, c, name in block.covariances:
            J[params.index(name), k] = dG[a, c]
    g = J.T @ current.score
    info = J.T @ current.information @ J
    try:
        step = np.linalg.solve(info, g)
    except np.linalg.LinAlgError:
        return None

    def path(alpha: float) -> np.ndarray:
        """θ at φ + αΔφ: inside the cone for every α."""
        new = theta.copy()
        moved = {b: L.copy() for b, L in factors.items()}
        for k, column in enumerate(columns):
            if column[0] == "plain":
                new[params.index(column[1])] += alpha * step[k]
            else:
                _, b, i, j = column
                moved[b][i, j] += alpha * step[k]
        for b, block in enumerate(blocks):
            G = moved[b] @ moved[b].T
            for a, term in enumerate(block.terms):
                new[params.index(term)] = G[a, a]
            for a, c, name in block.covariances:
                new[params.index(name)] = G[a, c]
        return new

    return path


def _pair(params, name: str) -> tuple[str, str]:
    """The two variances a covariance joins."""
    block = params.block_of(name)
    i, j = next((a, b) for a, b, n in block.covariances if n == name)
    return block.terms[i], block.terms[j]


def _free_map(params, theta: np.ndarray, boundary: set[str], correlations: dict) -> np.ndarray:
    r""":math:`\partial\theta / \partial\theta_{free}`: the identity on the free parameters
    (not at a boundary, not held); a covariance held at correlation r follows its variances,
    :math:`c = r\sqrt{v_a v_b}`, so :math:`\partial c/\partial v_a = c / (2 v_a)`."""
    free = [n for n in params.names if n not in boundary and n not in correlations]
    J = np.zeros((params.size, len(free)))
    column = {name: k for k, name in enumerate(free)}
    for name, k in column.items():
        J[params.index(name), k] = 1.0
    for name in correlations:
        c = theta[params.index(name)]
        for variance in _pair(params, name):
            if variance in column:
                J[params.index(name), column[variance]] = c / (2.0 * theta[params.index(variance)])
    return J


def _correlation(params, theta: np.ndarray, name: str) -> float:
    a, b = _pair(params, name)
    va, vb = theta[params.index(a)], theta[params.index(b)]
    if va <= 0 or vb <= 0:
        return np.nan
    return float(theta[params.index(name)] / np.sqrt(va * vb))


def _edge(
    params, theta: np.ndarray, full: np.ndarray, correlations: dict, released: set[str]
) -> dict:
    """Covariances to hold at the edge of the PSD cone, ``{name: r}`` (empty when none is):
    a pair's the step would take past ±1 from a correlation beyond
    :data:`CORRELATION_TRIGGER` (held at ±:data:`HELD_CORRELATION`); or every covariance of a
    block of three or more, not released before, whose correlation matrix is within
    :data:`CONE_TRIGGER` of singular and which the step takes out of the cone (held as they
    stand; released once the rest has converged, :func:`fit_aireml`)."""
    for block in params.all_blocks:
        if block.size != 2:  # a pair's rule: within a larger block ±0.9999 may leave the cone
            continue
        for _, _, name in block.covariances:
            if name in correlations:
                continue
            now = _correlation(params, theta, name)
            after = _correlation(params, theta + full, name)
            if abs(now) >= CORRELATION_TRIGGER and (np.isnan(after) or abs(after) >= 1.0):
                return {name: float(np.sign(now)) * HELD_CORRELATION}
    for block in params.all_blocks:
        names = [name for _, _, name in block.covariances]
        if block.size < 3 or any(n in correlations for n in names) or block.terms[0] in released:
            continue
        if _smallest_correlation_eigenvalue(params, theta, block) >= CONE_TRIGGER:
            continue
        if _smallest_correlation_eigenvalue(params, theta + full, block) <= 0:
            return {name: _correlation(params, theta, name) for name in names}
    return {}


def _near_singular_blocks(params, theta: np.ndarray, correlations: dict) -> dict:
    """Every covariance of a block of three or more whose correlation matrix is within
    :data:`CONE_TRIGGER` of singular (smallest eigenvalue), to hold at its present correlation
    (the block keeps its shape, its variances stay free): asked where the search has stalled
    (no step raises ℓ) towards a singular estimate. Empty when none is."""
    out = {}
    for block in params.all_blocks:
        names = [name for _, _, name in block.covariances]
        if block.size < 3 or any(n in correlations for n in names):
            continue
        if _smallest_correlation_eigenvalue(params, theta, block) < CONE_TRIGGER:
            out |= {name: _correlation(params, theta, name) for name in names}
    return out


def _held_blocks(params, correlations: dict, released: set[str]) -> list:
    """The blocks of three or more whose covariances are held and were not released yet."""
    return [
        block
        for block in params.all_blocks
        if block.size >= 3
        and block.terms[0] not in released
        and any(name in correlations for _, _, name in block.covariances)
    ]


def _correlation_matrix(params, theta: np.ndarray, block) -> np.ndarray | None:
    """The block's correlation matrix at ``theta`` (None where a variance is not positive)."""
    g = params.g0(theta, block)
    diagonal = np.diag(g)
    if np.any(diagonal <= 0):
        return None
    scale = 1.0 / np.sqrt(diagonal)
    return g * scale[:, None] * scale[None, :]


def _smallest_correlation_eigenvalue(params, theta: np.ndarray, block) -> float:
    r = _correlation_matrix(params, theta, block)
    return -np.inf if r is None else float(np.linalg.eigvalsh(r)[0])


def _hold(params, theta: np.ndarray, correlations: dict) -> np.ndarray:
    """``theta`` with every held covariance set from its correlation and variances."""
    out = np.asarray(theta, dtype=float).copy()
    for name, r in correlations.items():
        a, b = _pair(params, name)
        va, vb = out[params.index(a)], out[params.index(b)]
        if va > 0 and vb > 0:
            out[params.index(name)] = r * np.sqrt(va * vb)
    return out


def _gradient_step(mme: MixedModelEquations, current: Evaluation, J: np.ndarray, correlations):
    """A step along the score of the free parameters (the columns of ``J``), scaled by each
    parameter's size (|θ|; √(v_a v_b) for a covariance), halved until it stays inside the
    space and raises ℓ; None when no such step is found (ℓ is then at its maximum along the
    score)."""
    params, theta = mme.parameters, current.theta

    def size_of(name: str, value: float) -> float:
        if not params.is_covariance(name):
            return abs(value)
        a, b = _pair(params, name)
        return float(np.sqrt(theta[params.index(a)] * theta[params.index(b)]))

    size = np.array([size_of(n, t) for n, t in zip(params.names, theta, strict=True)])
    scale = np.abs(J.T) @ size  # each free parameter's size
    direction = J @ ((J.T @ current.score) * scale**2)
    norm = np.max(np.abs(direction) / np.maximum(size, 1e-300))
    if not np.isfinite(norm) or norm == 0:
        return None
    alpha = 0.1 / norm  # at most a tenth of any parameter's size
    for _ in range(4 * MAX_HALVINGS):
        trial = _evaluate(mme, _hold(params, theta + alpha * direction, correlations))
        if trial is not None and trial.loglik > current.loglik:
            return trial
        alpha *= 0.5
    return None


def _crawls(decrements: list[float]) -> bool:
    """The Newton decrement has not halved in the last :data:`CRAWL_ITERATIONS` iterations
    that had one."""
    finite = [d for d in decrements if np.isfinite(d)]  # an EM or score step has none
    if len(finite) <= CRAWL_ITERATIONS:
        return False
    return not finite[-1] <= 0.5 * finite[-1 - CRAWL_ITERATIONS]


def _small(step: np.ndarray | None, info: np.ndarray, held_shape: bool) -> bool:
    """The proposed step changes no parameter by more than :data:`STEP_TOLERANCE` of its SE
    (:data:`HELD_STEP_TOLERANCE` with a block held in a searched singular shape)."""
    if step is None:
        return False
    try:
        se = np.sqrt(np.abs(np.diag(np.linalg.inv(info))))
    except np.linalg.LinAlgError:
        return False
    tolerance = HELD_STEP_TOLERANCE if held_shape else STEP_TOLERANCE
    return bool(np.all(np.abs(step) <= tolerance * se))


def _converged(decrement: float, change: float, small_step: bool, loglik: float) -> bool:
    """The three tests of the module docstring, the one place they are made."""
    return decrement <= CONVERGENCE_TOLERANCE and change <= _change_tolerance(loglik) and small_step


def _restart(mme: MixedModelEquations, current: Evaluation, k: int, scale: float):
    """The evaluation with component ``k`` moved off its boundary to the first of
    :data:`RELEASE_VALUES` inside the parameter space (None: none is)."""
    for value in RELEASE_VALUES:
        theta = current.theta.copy()
        theta[k] = value * scale
        evaluation = _evaluate(mme, theta)
        if evaluation is not None:
            return evaluation
    return None


def _change_tolerance(loglik: float) -> float:
    """The last change of ℓ counts as converged below 1e-8, or below the round-off of ℓ itself
    for large models (a sum of n logarithms: about 1e-10·|ℓ|)."""
    return max(CONVERGENCE_TOLERANCE, 1e-10 * abs(loglik))


def _release(current: Evaluation, params, boundary: set[str], released: dict[str, int]):
    """A boundary component whose score points back into the space (released at most twice)."""
    for name in sorted(boundary):
        k = params.index(name)
        g, info = current.score[k], current.information[k, k]
        if (
            g > 0
            and 0.5 * g * g / info > CONVERGENCE_TOLERANCE
            and released.get(name, 0) < MAX_RELEASES
        ):
            released[name] = released.get(name, 0) + 1
            return name
    return None


def _finish(
    current, boundary, decrement, change, small_step, iterations, em_steps, halvings, *,
    stopped=False, held_shape=False,
):  # fmt: skip
    gradient = tuple(float(g * t) for g, t in zip(current.score, current.theta, strict=True))
    converged = _converged(decrement, change, small_step, current.loglik)
    if converged:
        reason = "Newton decrement, last change and step below tolerance"
        if held_shape:
            reason += (
                f" (the step at {HELD_STEP_TOLERANCE:g} of each SE: a block is held in the "
                "singular shape its search found)"
            )
        if boundary:
            reason += f"; at the boundary: {', '.join(sorted(boundary))}"
    elif stopped:
        reason = "stopped at the iteration limit"
    else:  # pragma: no cover - the loop only leaves through the two cases above
        reason = "not converged"
    return AiremlFit(
        current.theta.copy(),
        current,
        tuple(sorted(boundary)),
        Convergence(converged, float(decrement), float(change), gradient, reason),
        iterations,
        em_steps,
        halvings,
    )
