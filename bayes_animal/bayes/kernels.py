r"""The numba kernels of the exact model of a non-Gaussian family, without PyTensor: the pedigree
recursion, :math:`\log\Phi` with the inverse Mills ratio, and every family's records at
:math:`\eta = Xb + \sum_k s_k\, v_k[\text{level}_k]` with their gradient in one pass.

The PyTensor Ops (:mod:`bayes_animal.bayes.recursion`, :mod:`bayes_animal.bayes.normal_cdf`)
and the hand-derived density (:mod:`bayes_animal.bayes.joint`) call the same kernels, so the
PyMC model and the density are the same numbers (tested equal to 1e-10); this module imports
numba and NumPy only, so a worker process that samples the density does not import PyTensor.

Families (:data:`RECORD_KINDS`), with :math:`F(x) = \Phi(x)` (probit) or :math:`\sigma(x)`
(logit), :math:`s_i = 2y_i - 1` for 0/1 records and :math:`t_i` trials:

* 0/1 records: :math:`\sum_i \log F(s_i\eta_i)`, one tail each;
* successes out of trials: :math:`\sum_i y_i\log F(\eta_i) + (t_i - y_i)\log F(-\eta_i)`;
* Poisson (log link): :math:`\sum_i y_i\eta_i - e^{\eta_i}`;
* the cumulative probit: :math:`\sum_i \log(\Phi(c_{y_i+1} - \eta_i) - \Phi(c_{y_i} -
  \eta_i))` with the edges :math:`c` (the outer ones finite and far), from the tail the
  interval lies in, and its gradient in the edges.

Constants (the binomial coefficients, :math:`\log y!`) are the caller's.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "RECORD_KINDS",
    "callbacks",
    "expand_draws",
    "joint_expand",
    "joint_log_density",
    "joint_records",
    "log_cdf_and_mills",
    "pedigree_adjoint",
    "pedigree_arguments",
    "pedigree_forward",
    "pedigree_recursion",
    "pedigree_recursion_adjoint",
]

RECORD_KINDS = {
    ("binomial", "probit", False): 0,
    ("binomial", "logit", False): 1,
    ("binomial", "probit", True): 2,
    ("binomial", "logit", True): 3,
    ("poisson", "log", False): 4,
    ("ordinal", "probit", False): 5,
}
"""(family, link, with trials) → the kind :func:`joint_records` computes."""

_SQRT_HALF = math.sqrt(0.5)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: Below this, Φ(x) is taken from its asymptotic series (½ erfc(−x/√2) is still a normal
#: number down to about −37.5).
_SERIES_BELOW = -37.0


def pedigree_arguments(structure) -> tuple[np.ndarray, ...]:
    """The recursion's arrays of a pedigree structure: sire and dam positions (−1 unknown),
    the Mendelian-sampling SDs, ``order`` (each level's pedigree position) and ``to_user`` (its
    inverse) — what :func:`pedigree_forward` and :func:`pedigree_adjoint` take after z."""
    pedigree, sampling = structure.pedigree, structure.sampling
    order = np.asarray(structure.order, dtype=np.int64)
    to_user = np.empty(len(order), dtype=np.int64)
    to_user[order] = np.arange(len(order))
    return (
        np.asarray(pedigree.sire, dtype=np.int64),
        np.asarray(pedigree.dam, dtype=np.int64),
        np.sqrt(np.asarray(sampling.variances, dtype=float)),
        order,
        to_user,
    )


@njit(cache=True, nogil=True)
def pedigree_recursion(z, sire, dam, scale):  # pragma: no cover - compiled
    """u = T D^½ z with z and u both in the pedigree's order (parents before offspring; a
    parent −1 is unknown): :math:`u_i = s_i z_i + (u_{sire} + u_{dam})/2`, one pass."""
    q = z.shape[0]
    u = np.empty(q)
    for i in range(q):
        value = scale[i] * z[i]
        if sire[i] >= 0:
            value += 0.5 * u[sire[i]]
        if dam[i] >= 0:
            value += 0.5 * u[dam[i]]
        u[i] = value
    return u


@njit(cache=True, nogil=True)
def pedigree_recursion_adjoint(g, sire, dam, scale):  # pragma: no cover - compiled
    """D^½ Tᵀ g, the adjoint of :func:`pedigree_recursion` (the recursion backwards), in the
    pedigree's order."""
    q = g.shape[0]
    a = g.copy()
    out = np.empty(q)
    for i in range(q - 1, -1, -1):
        value = a[i]
        if sire[i] >= 0:
            a[sire[i]] += 0.5 * value
        if dam[i] >= 0:
            a[dam[i]] += 0.5 * value
        out[i] = scale[i] * value
    return out


@njit(cache=True, nogil=True)
def pedigree_forward(z, sire, dam, scale, order, to_user):  # pragma: no cover - compiled
    """u = T D^½ z in the user's order of levels (``order``: each level's pedigree position,
    ``to_user`` its inverse; a parent −1 is unknown): :func:`pedigree_recursion` between
    the two permutations."""
    q = z.shape[0]
    ordered = np.empty(q)
    for i in range(q):
        ordered[i] = z[to_user[i]]
    u = pedigree_recursion(ordered, sire, dam, scale)
    out = np.empty(q)
    for k in range(q):
        out[k] = u[order[k]]
    return out


@njit(cache=True, nogil=True)
def pedigree_adjoint(g, sire, dam, scale, order, to_user):  # pragma: no cover - compiled
    """D^½ Tᵀ g, the adjoint of :func:`pedigree_forward` (the recursion backwards)."""
    q = g.shape[0]
    ordered = np.empty(q)
    for k in range(q):
        ordered[order[k]] = g[k]
    a = pedigree_recursion_adjoint(ordered, sire, dam, scale)
    out = np.empty(q)
    for i in range(q):
        out[to_user[i]] = a[i]
    return out


@njit(cache=True, nogil=True, inline="always")
def _series(x):  # pragma: no cover - compiled
    s = 1.0 / (x * x)
    return 1.0 - s * (1.0 - s * (3.0 - s * (15.0 - s * (105.0 - s * 945.0))))


@njit(cache=True, nogil=True, inline="always")
def log_cdf_mills_one(v):  # pragma: no cover - compiled
    """(log Φ(v), φ(v)/Φ(v)) from one erfc (the series below −37)."""
    if v > _SERIES_BELOW:
        log_density = -0.5 * v * v - _LOG_SQRT_2PI
        if v >= 0.0:
            upper = 0.5 * math.erfc(v * _SQRT_HALF)
            return math.log1p(-upper), math.exp(log_density) / (1.0 - upper)
        cdf = 0.5 * math.erfc(-v * _SQRT_HALF)
        return math.log(cdf), math.exp(log_density) / cdf
    series = _series(v)
    return -0.5 * v * v - _LOG_SQRT_2PI - math.log(-v) + math.log(series), -v / series


@njit(cache=True, nogil=True)
def log_cdf_and_mills(x):  # pragma: no cover - compiled
    """log Φ(x) and φ(x)/Φ(x) of each element, from one erfc."""
    value = np.empty(x.shape[0])
    mills = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        value[i], mills[i] = log_cdf_mills_one(x[i])
    return value, mills


@njit(cache=True, nogil=True, inline="always")
def _log_sigmoid(x):  # pragma: no cover - compiled
    """(log σ(x), its derivative σ(−x))."""
    if x > 0.0:
        e = math.exp(-x)
        return -math.log1p(e), e / (1.0 + e)
    e = math.exp(x)
    return x - math.log1p(e), 1.0 / (1.0 + e)


@njit(cache=True, nogil=True, inline="always")
def _log_f(v, logit):  # pragma: no cover - compiled
    """(log F(v), d log F / dv) for the probit or logit link."""
    if logit:
        return _log_sigmoid(v)
    return log_cdf_mills_one(v)


@njit(cache=True, nogil=True, inline="always")
def _log1mexp(x):  # pragma: no cover - compiled
    """log(1 − eˣ) for x < 0."""
    if x > -0.6931471805599453:
        return math.log(-math.expm1(x))
    return math.log1p(-math.exp(x))


@njit(cache=True, nogil=True, error_model="numpy")
def joint_records(kind, X, b, packed, where, scales, y, trials, edges):  # pragma: no cover
    r"""The records' log-likelihood at :math:`\eta_i = x_i^\top b + \sum_k s_k\,
    v[w_{ik}]` (``where``: each record's position in ``packed`` per effect, −1 for none) and
    its gradient: ``(value, ∂/∂b, ∂/∂packed, ∂/∂scales, ∂/∂edges)``. ``y``: the signs
    :math:`2y - 1` of 0/1 records, the successes or counts, or an ordinal's codes; ``trials``
    and ``edges`` where the kind reads them (see the module docstring)."""
    n, p = X.shape
    effects = where.shape[1]
    # one loop a stage (the linear predictor, the records, the gradient's scatter): 15 % faster
    # than one loop over the records doing all three (26 against 31 µs for 1 084 records)
    eta = np.dot(X, b) if p > 0 else np.zeros(n)
    for k in range(effects):
        scale = scales[k]
        for i in range(n):
            w = where[i, k]
            if w >= 0:
                eta[i] += scale * packed[w]
    total = 0.0
    d = np.empty(n)
    grad_edges = np.zeros(edges.shape[0])
    logit = kind == 1 or kind == 3
    for i in range(n):
        if kind <= 1:  # 0/1 records: one tail each
            value, slope = _log_f(y[i] * eta[i], logit)
            d[i] = y[i] * slope
        elif kind <= 3:  # successes out of trials
            up, d_up = _log_f(eta[i], logit)
            down, d_down = _log_f(-eta[i], logit)
            value = y[i] * up + (trials[i] - y[i]) * down
            d[i] = y[i] * d_up - (trials[i] - y[i]) * d_down
        elif kind == 4:  # Poisson, log link
            mean = math.exp(eta[i])
            value = y[i] * eta[i] - mean
            d[i] = y[i] - mean
        else:  # the cumulative probit: the interval (edges[c], edges[c + 1]) of code c
            c = int(y[i])
            lower = edges[c] - eta[i]
            upper = edges[c + 1] - eta[i]
            if lower > 0.0:  # the upper tail: Φ(−lower) − Φ(−upper)
                high = log_cdf_mills_one(-lower)[0]
                low = log_cdf_mills_one(-upper)[0]
            else:
                high = log_cdf_mills_one(upper)[0]
                low = log_cdf_mills_one(lower)[0]
            value = high + _log1mexp(min(low - high, -1e-300))
            # ∂ log P/∂lower = −φ(lower)/P, ∂ log P/∂upper = φ(upper)/P
            d_lower = -math.exp(-0.5 * lower * lower - _LOG_SQRT_2PI - value)
            d_upper = math.exp(-0.5 * upper * upper - _LOG_SQRT_2PI - value)
            grad_edges[c] += d_lower
            grad_edges[c + 1] += d_upper
            d[i] = -(d_lower + d_upper)
        total += value
    grad_b = np.dot(X.T, d) if p > 0 else np.zeros(0)
    grad_packed = np.zeros(packed.shape[0])
    grad_scales = np.zeros(effects)
    for k in range(effects):
        scale, accumulated = scales[k], 0.0
        for i in range(n):
            w = where[i, k]
            if w >= 0:
                grad_packed[w] += scale * d[i]
                accumulated += packed[w] * d[i]
        grad_scales[k] = accumulated
    return total, grad_b, grad_packed, grad_scales, grad_edges


# -- the exact joint density of a family, from two buffers --------------------------------------
# JointDensity (bayes/joint.py) writes every array the density reads into one float buffer and
# one integer buffer; the integer buffer starts with this header (sizes, then where each array
# starts).
(H_FREE, H_FIXED, H_RECORDS, H_EFFECTS, H_THETA, H_KIND, H_CUTPOINTS, H_PACKED) = range(8)
(AT_PRIOR_CODE, AT_PRIOR_THETA, AT_WHERE, AT_EFFECTS) = range(8, 12)  # into ints
(AT_PRIOR_PARAMETERS, AT_THETA, AT_X, AT_Y, AT_TRIALS) = range(12, 17)  # into floats
H_SIZE = 17  # the density's dimension
#: The number of leading effects whose u a draw reports (the observation-level effect, last,
#: is not reported) and the size of a reported draw (:func:`joint_expand`).
H_REPORTED, H_EXPANDED = 18, 19
HEADER = 20
#: The float buffer's first two entries: the records' constant and the SD of the Normal prior on
#: each fixed effect (0: flat).
F_CONSTANT, F_FIXED_SD = 0, 1
#: Each effect's row of the effects table: its offset in the packed levels, its size, its
#: transform, the θ that scales it (√θ), where its integer and float data start (independent
#: levels: their float data are the levels' centring weights λ, see :mod:`~bayes_animal.bayes.
#: joint`).
EFFECT_COLUMNS = 6
TRANSFORM_IDENTITY, TRANSFORM_PEDIGREE, TRANSFORM_DENSE = 0, 1, 2
#: The variance parameters' priors (each a log-transformed free variable): a half-t on the SD
#: (ν, scale, constant; θ = v²), an inverse gamma on the variance (α, β, constant; θ = v), flat
#: on the variance (θ = v).
PRIOR_HALF_T, PRIOR_INVERSE_GAMMA, PRIOR_FLAT = 0, 1, 2
_OPEN_END = 1e3  # the cumulative probit's outer edges (as the PyMC model's)
_LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True, nogil=True, inline="always")
def _pedigree_data(ints, floats, at_int, at_float, q):  # pragma: no cover - compiled
    """A pedigree effect's arrays in the buffers: sire, dam (pedigree positions, −1 unknown),
    √(Mendelian-sampling variance) and ``order`` (each level's pedigree position). The
    density samples its unit normals in the pedigree's order, so a gradient runs the
    recursion with no permutation; only a reported draw is put in the levels' order."""
    sire, dam = ints[at_int : at_int + q], ints[at_int + q : at_int + 2 * q]
    return sire, dam, floats[at_float : at_float + q], ints[at_int + 2 * q : at_int + 3 * q]


@njit(cache=True, nogil=True, error_model="numpy")
def _effect_apply(v, kind, ints, floats, at_int, at_float, adjoint):  # pragma: no cover
    """L v of an effect (its unit normals v), or Lᵀ v (``adjoint``: a gradient carried back):
    the pedigree recursion (in the pedigree's order), the dense factor, or v itself."""
    q = v.shape[0]
    if kind == TRANSFORM_PEDIGREE:
        sire, dam, scale, _ = _pedigree_data(ints, floats, at_int, at_float, q)
        if adjoint:
            return pedigree_recursion_adjoint(v, sire, dam, scale)
        return pedigree_recursion(v, sire, dam, scale)
    if kind == TRANSFORM_DENSE:
        factor = floats[at_float : at_float + q * q].reshape((q, q))
        return np.dot(factor.T, v) if adjoint else np.dot(factor, v)
    return v.copy()


@njit(cache=True, nogil=True, inline="always")
def _theta_at(x, floats, ints):  # pragma: no cover - compiled
    """θ at the free variables x[:m] (v = exp(x); θ = v² for a half-t on an SD, v for a
    variance), the held ones (a threshold trait's residual) as given."""
    m = ints[H_FREE]
    codes = ints[ints[AT_PRIOR_CODE] : ints[AT_PRIOR_CODE] + m]
    prior_theta = ints[ints[AT_PRIOR_THETA] : ints[AT_PRIOR_THETA] + m]
    theta = floats[ints[AT_THETA] : ints[AT_THETA] + ints[H_THETA]].copy()
    for j in range(m):
        v = math.exp(x[j])
        theta[prior_theta[j]] = v * v if codes[j] == PRIOR_HALF_T else v
    return theta


@njit(cache=True, nogil=True, inline="always")
def _unit_levels(x, start, row, scale, ints, floats, out):  # pragma: no cover - compiled
    r"""Write into ``out`` the unit-scale levels of the effect of ``row`` (its row of the
    effects table) at the draw x (its coordinates from ``start``): L z, or an independent
    level's :math:`z = \tilde u\,\sigma^{-\lambda}` (partly centred; ``scale`` = σ) — what
    :math:`\sqrt\theta` multiplies into u."""
    offset, q = row[0], row[1]
    z = x[start + offset : start + offset + q]
    if row[2] == TRANSFORM_IDENTITY:
        log_scale = math.log(scale)
        weights = floats[row[5] : row[5] + q]
        for i in range(q):
            w = weights[i]
            out[i] = z[i] if w == 0.0 else z[i] * math.exp(-w * log_scale)
    else:
        out[:] = _effect_apply(z, row[2], ints, floats, row[4], row[5], False)


@njit(cache=True, nogil=True, error_model="numpy")
def joint_expand(x, floats, ints, out):  # pragma: no cover - compiled
    r"""A draw x of the density as it is reported, written into ``out``: the free variables and
    b as they are, then each reported effect's :math:`u = \sqrt\theta\, L z` (a partly
    centred level's :math:`\sigma^{1-\lambda}\tilde u`) in the packed order, then an
    ordinal response's cut-point log increments — the observation-level effect's unit
    normals, which nothing reports, left out. nutpie calls it for each kept draw from its
    sampling threads (:func:`_expand`), so the draws come back as u, not z."""
    m, p, effects = ints[H_FREE], ints[H_FIXED], ints[H_EFFECTS]
    reported_effects, packed_size = ints[H_REPORTED], ints[H_PACKED]
    table = ints[ints[AT_EFFECTS] : ints[AT_EFFECTS] + EFFECT_COLUMNS * effects].reshape(
        (effects, EFFECT_COLUMNS)
    )
    theta = _theta_at(x, floats, ints)
    start = m + p
    out[:start] = x[:start]
    for k in range(reported_effects):  # u = √θ × the unit-scale levels (σ^(1-λ) ũ)
        offset, q = table[k, 0], table[k, 1]
        scale = math.sqrt(theta[table[k, 3]])
        levels = out[start + offset : start + offset + q]
        if table[k, 2] == TRANSFORM_PEDIGREE:  # from the pedigree's order to the levels'
            ordered = np.empty(q)
            _unit_levels(x, start, table[k], scale, ints, floats, ordered)
            order = _pedigree_data(ints, floats, table[k, 4], table[k, 5], q)[3]
            for j in range(q):
                levels[j] = ordered[order[j]]
        else:
            _unit_levels(x, start, table[k], scale, ints, floats, levels)
        levels *= scale
    reported = table[reported_effects, 0] if reported_effects < effects else packed_size
    tail = x.shape[0] - start - packed_size  # an ordinal response's log increments
    out[start + reported : start + reported + tail] = x[start + packed_size :]


@njit(cache=True, nogil=True, error_model="numpy")
def expand_draws(x, floats, ints):  # pragma: no cover - compiled
    """:func:`joint_expand` of each row of x (draws × the density's size)."""
    out = np.empty((x.shape[0], ints[H_EXPANDED]))
    for s in range(x.shape[0]):
        joint_expand(np.ascontiguousarray(x[s]), floats, ints, out[s])
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def joint_log_density(x, floats, ints, gradient):  # pragma: no cover - compiled
    r""":math:`\log p(x \mid y)` of the exact model of a family (:mod:`bayes_animal.bayes.joint`
    gives the maths and the layout of x), its gradient written into ``gradient``: the priors of
    the variance parameters with their log transform's Jacobian, the Normal or flat prior on b,
    the unit normals, the records (:func:`joint_records`) and an ordinal response's cut-point
    increments with their Jacobian."""
    m, p, n = ints[H_FREE], ints[H_FIXED], ints[H_RECORDS]
    effects, kind = ints[H_EFFECTS], ints[H_KIND]
    cutpoints, packed_size = ints[H_CUTPOINTS], ints[H_PACKED]
    codes = ints[ints[AT_PRIOR_CODE] : ints[AT_PRIOR_CODE] + m]
    prior_theta = ints[ints[AT_PRIOR_THETA] : ints[AT_PRIOR_THETA] + m]
    where = ints[ints[AT_WHERE] : ints[AT_WHERE] + n * effects].reshape((n, effects))
    table = ints[ints[AT_EFFECTS] : ints[AT_EFFECTS] + EFFECT_COLUMNS * effects].reshape(
        (effects, EFFECT_COLUMNS)
    )
    priors = floats[ints[AT_PRIOR_PARAMETERS] : ints[AT_PRIOR_PARAMETERS] + 3 * m].reshape((m, 3))
    theta = _theta_at(x, floats, ints)
    X = floats[ints[AT_X] : ints[AT_X] + n * p].reshape((n, p))
    y = floats[ints[AT_Y] : ints[AT_Y] + n]
    trials = floats[ints[AT_TRIALS] : ints[AT_TRIALS] + n]
    value = 0.0
    values = np.empty(m)
    slopes = np.empty(m)
    for j in range(m):  # v = exp(x), log|dv/dx| = x
        v = math.exp(x[j])
        a, s, constant = priors[j, 0], priors[j, 1], priors[j, 2]
        if codes[j] == PRIOR_HALF_T:
            value += constant - 0.5 * (a + 1.0) * math.log1p(v * v / (a * s * s))
            slopes[j] = -(a + 1.0) * v / (a * s * s + v * v)
        elif codes[j] == PRIOR_INVERSE_GAMMA:
            value += constant - (a + 1.0) * math.log(v) - s / v
            slopes[j] = -(a + 1.0) / v + s / (v * v)
        else:
            slopes[j] = 0.0
        value += x[j]
        values[j] = v
    start = m + p
    packed = np.empty(packed_size)
    scales = np.empty(effects)
    for k in range(effects):
        offset, q = table[k, 0], table[k, 1]
        scales[k] = math.sqrt(theta[table[k, 3]])
        _unit_levels(x, start, table[k], scales[k], ints, floats, packed[offset : offset + q])
    at_cut = start + packed_size
    if cutpoints > 0:
        edges = np.empty(cutpoints + 2)
        edges[0], edges[1], edges[cutpoints + 1] = -_OPEN_END, 0.0, _OPEN_END
        for j in range(cutpoints - 1):
            edges[j + 2] = edges[j + 1] + math.exp(x[at_cut + j])
    else:
        edges = np.zeros(1)
    b = x[m:start]
    loglik, grad_b, grad_packed, grad_scales, grad_edges = joint_records(
        kind, X, b, packed, where, scales, y, trials, edges
    )
    value += loglik + floats[F_CONSTANT]
    for k in range(effects):  # the unit normals (an independent effect's ũ ~ N(0, σ^2λ))
        offset, q = table[k, 0], table[k, 1]
        if table[k, 2] == TRANSFORM_IDENTITY:
            log_scale = math.log(scales[k])
            weights = floats[table[k, 5] : table[k, 5] + q]
            through = 0.0  # ∂/∂σ through z = ũ σ^-λ, and of -λ log σ
            for i in range(q):
                z = packed[offset + i]
                pull = grad_packed[offset + i] - z
                w = weights[i]
                if w == 0.0:  # non-centred (the observation-level effect): no exp
                    value -= 0.5 * z * z
                    gradient[start + offset + i] = pull
                else:
                    value -= 0.5 * z * z + w * log_scale
                    gradient[start + offset + i] = pull * math.exp(-w * log_scale)
                    through -= w * (pull * z + 1.0)
            grad_scales[k] += through / scales[k]
        else:
            own = _effect_apply(
                grad_packed[offset : offset + q], table[k, 2], ints, floats,
                table[k, 4], table[k, 5], True,
            )  # fmt: skip
            for i in range(q):
                z = x[start + offset + i]
                value -= 0.5 * z * z
                gradient[start + offset + i] = own[i] - z
        value -= 0.5 * q * _LOG_2PI
    score = np.zeros(theta.shape[0])  # ∂ℓ/∂θ through each √θ
    for k in range(effects):
        score[table[k, 3]] += grad_scales[k] / (2.0 * scales[k])
    for j in range(m):
        v = values[j]
        d_theta = 2.0 * v if codes[j] == PRIOR_HALF_T else 1.0
        gradient[j] = (slopes[j] + score[prior_theta[j]] * d_theta) * v + 1.0
    sd = floats[F_FIXED_SD]
    for j in range(p):
        gradient[m + j] = grad_b[j]
        if sd > 0.0:
            value += -0.5 * (b[j] / sd) ** 2 - math.log(sd) - 0.5 * _LOG_2PI
            gradient[m + j] -= b[j] / (sd * sd)
    if cutpoints > 1:  # log δ_j moves the edges j + 2 … cutpoints; flat, with Σ log δ
        tail = 0.0
        for j in range(cutpoints - 2, -1, -1):
            tail += grad_edges[j + 2]
            value += x[at_cut + j]
            gradient[at_cut + j] = math.exp(x[at_cut + j]) * tail + 1.0
    return value


@intrinsic
def _as_pointer(typingctx, address):  # pragma: no cover - compiled
    """An integer address as a void pointer."""

    def codegen(context, builder, signature, arguments):
        return builder.inttoptr(arguments[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


#: nutpie's signatures of a model's log density and of its draws' expansion (as for the PyMC
#: models it compiles): (dimension, x, gradient out, log density out, user data) and
#: (dimension, expanded dimension, x, out, user data); 0 is success.
LOGP_SIGNATURE = types.int64(
    types.uint64, types.CPointer(types.double), types.CPointer(types.double),
    types.CPointer(types.double), types.voidptr,
)  # fmt: skip
EXPAND_SIGNATURE = types.int64(
    types.uint64, types.uint64, types.CPointer(types.double), types.CPointer(types.double),
    types.voidptr,
)  # fmt: skip


def _joint_logp(dim, x_, out_, logp_, user_data_):  # pragma: no cover - compiled
    """:func:`joint_log_density` as nutpie calls a model, with no Python in between: the user
    data are four integers, the address and length of floats and of ints. Returns 3 where the
    gradient is not finite and 4 where the value is not (as nutpie's own wrapper), −1 for a
    dimension that is not the density's, 1 on an error."""
    header = carray(user_data_, (4,), dtype=np.int64)
    floats = carray(_as_pointer(header[0]), (header[1],), dtype=np.float64)
    ints = carray(_as_pointer(header[2]), (header[3],), dtype=np.int64)
    if dim != ints[H_SIZE]:
        return -1
    x = carray(x_, (dim,))
    out = carray(out_, (dim,))
    logp = carray(logp_, (1,))
    try:
        value = joint_log_density(x, floats, ints, out)
    except Exception:  # nothing may escape into nutpie's threads
        return 1
    logp[0] = value
    for i in range(dim):
        if not np.isfinite(out[i]):
            return 3
    if not np.isfinite(value):
        return 4
    return 0


def _expand(dim, expanded, x_, out_, user_data_):  # pragma: no cover - compiled
    """nutpie's expansion of a kept draw: :func:`joint_expand` (what a draw reports; the user
    data as for :func:`_joint_logp`). Returns −1 for sizes that are not the density's, 1 on
    an error."""
    header = carray(user_data_, (4,), dtype=np.int64)
    floats = carray(_as_pointer(header[0]), (header[1],), dtype=np.float64)
    ints = carray(_as_pointer(header[2]), (header[3],), dtype=np.int64)
    if dim != ints[H_SIZE] or expanded != ints[H_EXPANDED]:
        return -1
    x = carray(x_, (dim,))
    out = carray(out_, (expanded,))
    try:
        joint_expand(x, floats, ints, out)
    except Exception:  # nothing may escape into nutpie's threads
        return 1
    return 0


@functools.cache
def callbacks():
    """nutpie's two C callbacks — :func:`_joint_logp` (the joint density) and :func:`_expand`
    (what a kept draw reports) — compiled on first use, not on import (a model that never samples
    a joint density, e.g. a Gaussian trait's PyMC model with the pedigree recursion, does not
    load them), from numba's cache after the first time."""
    logp = cfunc(LOGP_SIGNATURE, cache=True, error_model="numpy")(_joint_logp)
    expand = cfunc(EXPAND_SIGNATURE, cache=True, error_model="numpy")(_expand)
    return logp, expand
