r"""The exact joint posterior of a non-Gaussian family's non-centred model, by hand: value and
gradient from one numba kernel, compiled once into numba's cache, nothing compiled per model.

It is the density of the PyMC model that :func:`~bayes_animal.bayes.likelihoods.noncentred`
builds for a non-Gaussian family (the same free variables, transforms and constants; tested
equal to 1e-10 with its gradient), on the unconstrained coordinates

.. math::

    x = (x_\theta,\; b,\; z_1, \dots, z_K,\; \log\delta)

— the priors' free variables (as :class:`~bayes_animal.bayes.density.MarginalDensity`), the
fixed effects, each random effect's unit normals (a Poisson family's observation-level effect
among them) and an ordinal response's log cut-point increments:

.. math::

    \log p(x \mid y) = \log p(v(x)) + \log\Big|\frac{\partial v}{\partial x}\Big|
    + \log p(b) - \tfrac12 \sum_k \lVert z_k\rVert^2 + \sum_i \log p(y_i \mid \eta_i)
    \;[+ \textstyle\sum \log\delta],\qquad
    \eta = Xb + \sum_k \sqrt{\theta_k}\, Z_k L_k z_k,

with :math:`L_k z_k` the pedigree recursion :math:`T D^{1/2} z` (O(q) both ways; a pedigree
effect's unit normals are kept in the pedigree's order, parents first, so that a gradient runs
the recursion with no permutation — 2.6 of 7.0 µs for the gryphon pedigree's two passes — and
only a reported draw is put in the levels' order), a given matrix's factor, or :math:`z_k`
for independent levels.

Independent levels (a group effect; the observation-level effect where asked) may be sampled
*partly centred*: level j's coordinate is :math:`\tilde u_j \sim N(0, \sigma_k^{2\lambda_j})` and
:math:`u_j = \sigma_k^{1-\lambda_j}\tilde u_j`, so that :math:`z_j = \tilde u_j
\sigma_k^{-\lambda_j}` above and the density gains :math:`-\lambda_j \log\sigma_k` per level
(the Jacobian). :math:`\lambda_j = 0` is the non-centred model, 1 the centred one;
:meth:`~bayes_animal.bayes.model.AnimalModel.centring` sets each level's weight by how much
its records say about it (Papaspiliopoulos, Roberts and Sköld 2003), for group levels that
their records pin down (a non-centred one — a group of many records, of large counts — ties
its unit normal to :math:`\sigma_k` in a narrow ridge that NUTS crosses slowly); the others
and the observation-level effect keep λ = 0. The records and their gradient in
:math:`\eta`, b, every effect and every scale come from one pass of
:func:`~bayes_animal.bayes.kernels.joint_records`; the chain rule carries
:math:`\partial\ell/\partial\sqrt{\theta_k}` to :math:`x_\theta` through :math:`\theta(v(x))`.
The variance parameters' priors are the half-t on an SD, the inverse gamma and the flat prior
on a variance (log-transformed, as PyMC's); :func:`joint_obstacle` says which models it does not
serve (the Beta prior on h², a correlated pair, a Gaussian trait), which keep the PyMC model.

Why by hand: nutpie compiled the PyMC model's function for every fit — 2.4 to 4.8 s of a 7 to
11 s fit of a threshold trait on the gryphon pedigree, the most in the first fit of a process —
and its leapfrog steps cost the same as this kernel's. The kernel
(:func:`~bayes_animal.bayes.kernels.joint_log_density`) reads everything from two buffers built
here, so that one C callback compiled once (``bayes-animal compile``) serves every model:
nutpie calls it from its own threads with no Python in a step
(:func:`~bayes_animal.bayes.sampling.sample_joint`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import special

from ..design import Design
from ..spec.parameters import Parameters, identifier
from . import kernels
from .density import (
    MarginalDensity,
    _flat,
    _HalfStudentT,
    _InverseGamma,
    free_variables,
    quantity_function,
)
from .priors import NormalFixed, Priors

__all__ = ["JointDensity", "joint_obstacle"]


def _prior_row(variable) -> tuple[int, float, float, float] | None:
    """A free variable's prior as the kernel reads it (code, two parameters, constant); None
    for one it does not know."""
    density = variable.log_density
    if variable.transform != "log":
        return None
    if variable.kind == "sd" and isinstance(density, _HalfStudentT):
        return kernels.PRIOR_HALF_T, density.nu, density.scale, density.constant
    if variable.kind == "variance" and isinstance(density, _InverseGamma):
        return kernels.PRIOR_INVERSE_GAMMA, density.alpha, density.beta, density.constant
    if variable.kind == "variance" and density is _flat:
        return kernels.PRIOR_FLAT, 0.0, 0.0, 0.0
    return None


def joint_obstacle(
    design: Design, parameters: Parameters, priors: Priors, scales: Mapping[str, float]
) -> str | None:
    """Why the hand-derived joint density does not serve this model (None where it does): it
    is the exact model of one non-Gaussian trait whose random effects are independent of each
    other (the families have no correlated pairs), each variance under a half-t on its SD, an
    inverse gamma or a flat prior (not the Beta prior on h²)."""
    if design.family.gaussian:
        return "a Gaussian trait (its marginal models integrate b and u out)"
    if design.multi_trait:
        return "several traits"
    if any(block.size > 1 for block in parameters.blocks):
        return "a correlated pair of effects"
    variables = free_variables(priors, parameters, scales, design.family.held)
    if any(_prior_row(v) is None for v in variables):
        return "a prior other than a half-t on an SD, an inverse gamma or flat on a variance"
    return None


@dataclass(frozen=True)
class _Effect:
    """One non-centred effect of the density: its names, dimension and place."""

    name: str  # the parameter whose variance scales it
    z_name: str
    u_name: str | None  # None: the observation-level effect (no u is reported)
    dim: str
    size: int
    offset: int  # its levels' place in the packed vector
    #: each level's coordinate among the effect's unit normals: the levels' own order, or a
    #: pedigree's (its recursion then runs with no permutation in a gradient)
    positions: np.ndarray


def _transform(structure, levels: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """How an effect's unit normals become a draw with covariance K (as
    :func:`~bayes_animal.bayes.likelihoods.unit_effect`): the kernel's code, its integer and
    float data (the kernel reads ``levels`` values of each, unchecked: the sizes are checked
    here) and each level's coordinate among the unit normals (a pedigree's: its pedigree
    position, so that the recursion reads and writes them in place)."""
    from ..structures.covariance import PedigreeStructure

    own = np.arange(levels, dtype=np.int64)
    if isinstance(structure, PedigreeStructure):
        sire, dam, scale, order, _ = kernels.pedigree_arguments(structure)
        if len(sire) != levels:
            raise ValueError(f"The pedigree has {len(sire)} animals for {levels} levels.")
        return kernels.TRANSFORM_PEDIGREE, np.concatenate([sire, dam, order]), scale, order
    if structure.genetic:
        factor = np.asarray(structure.dense().factor(), dtype=float)
        if factor.shape != (levels, levels):
            raise ValueError(f"The matrix's factor is {factor.shape} for {levels} levels.")
        return kernels.TRANSFORM_DENSE, np.zeros(0, np.int64), factor.ravel(), own
    return kernels.TRANSFORM_IDENTITY, np.zeros(0, np.int64), np.zeros(0), own


class _Buffers:
    """The two buffers the kernel reads: integers (a header, then arrays) and floats."""

    def __init__(self) -> None:
        self.ints: list[np.ndarray] = [np.zeros(kernels.HEADER, dtype=np.int64)]
        self.floats: list[np.ndarray] = [np.zeros(2)]
        self.int_size, self.float_size = kernels.HEADER, 2

    def add_ints(self, values) -> int:
        values = np.ascontiguousarray(values, dtype=np.int64).ravel()
        self.ints.append(values)
        self.int_size += values.size
        return self.int_size - values.size

    def add_floats(self, values) -> int:
        values = np.ascontiguousarray(values, dtype=float).ravel()
        self.floats.append(values)
        self.float_size += values.size
        return self.float_size - values.size

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.floats), np.concatenate(self.ints)


class JointDensity:
    r""":math:`\log p(x \mid y)` and its gradient for the exact model of a non-Gaussian family
    (see the module docstring), computed by :func:`~bayes_animal.bayes.kernels.
    joint_log_density` from two buffers built here (``floats``, ``ints``); ``user_data``
    gives nutpie their addresses and lengths (:func:`~bayes_animal.bayes.sampling.
    sample_joint`), and the density must outlive the sampling that reads them.

    Parameters
    ----------
    priors, parameters, scales
        As for :class:`~bayes_animal.bayes.density.MarginalDensity`.
    design, structures
        The model's design (:func:`joint_obstacle` says which it serves) and each random
        effect's covariance structure.
    coords
        The PyMC model's coordinates (``AnimalModel.coords``): the levels of every dimension
        the posterior reports.
    centring
        The weights λ in [0, 1] of each independent effect's levels (``AnimalModel.centring``;
        missing effects 0: non-centred).
    """

    def __init__(
        self,
        priors: Priors,
        parameters: Parameters,
        scales: Mapping[str, float],
        design: Design,
        structures: Mapping[str, object],
        coords: Mapping[str, list[str]],
        centring: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        from .likelihoods import effect_dim, effect_variable

        obstacle = joint_obstacle(design, parameters, priors, scales)
        if obstacle is not None:
            raise ValueError(f"The joint density does not serve {obstacle}.")
        family = design.family
        self.prior = MarginalDensity(priors, parameters, scales, None, family.held)
        self.parameters = parameters
        self.variables = self.prior.variables
        self.coords = {name: list(levels) for name, levels in coords.items()}
        self.fixed_names = list(design.fixed_names)
        y = np.asarray(design.y, dtype=float)
        n = len(y)
        trials = None if design.trials is None else np.asarray(design.trials, dtype=float)
        with_trials = family.name == "binomial" and trials is not None and np.any(trials != 1.0)
        kind = kernels.RECORD_KINDS[(family.name, family.link, bool(with_trials))]
        constant = 0.0
        if with_trials:
            constant = float(
                np.sum(special.gammaln(trials + 1) - special.gammaln(y + 1)
                       - special.gammaln(trials - y + 1))
            )  # fmt: skip
        elif family.name == "poisson":
            constant = -float(np.sum(special.gammaln(y + 1)))
        X = np.asarray(design.X, dtype=float)
        self.cutpoints = 0 if design.categories is None else len(design.categories) - 1
        index = {name: i for i, name in enumerate(parameters.names)}
        # the effects, in the order of the parameters' blocks (as the PyMC model's)
        self.effects: list[_Effect] = []
        levels, transforms, offset = [], [], 0
        for block in parameters.blocks:
            effect = design.effect(block.terms[0])
            transform = _transform(structures[effect.name], len(effect.levels))
            self.effects.append(
                _Effect(effect.name, f"z_{identifier(effect.name)}",
                        effect_variable(effect.name), effect_dim(effect), len(effect.levels),
                        offset, transform[3])
            )  # fmt: skip
            levels.append(np.asarray(effect.index, dtype=np.int64))
            transforms.append(transform[:3])
            offset += len(effect.levels)
        if family.observation_effect:  # the Poisson family's overdispersion: one level a record
            own = np.arange(n, dtype=np.int64)
            self.effects.append(_Effect("residual", "z_residual", None, "obs", n, offset, own))
            levels.append(own)
            transforms.append((kernels.TRANSFORM_IDENTITY, np.zeros(0, np.int64), np.zeros(0)))
            offset += n
        where = np.full((n, len(self.effects)), -1, dtype=np.int64)
        for k, (effect, level) in enumerate(zip(self.effects, levels, strict=True)):
            known = level >= 0  # each record's level, at its coordinate
            where[known, k] = effect.offset + effect.positions[level[known]]
        self.m, self.p = len(self.variables), X.shape[1]
        self.start_z = self.m + self.p
        self.packed_size = offset
        self.size = self.start_z + offset + max(self.cutpoints - 1, 0)
        reported = [e for e in self.effects if e.u_name is not None]  # the observation-level
        self.reported_size = sum(e.size for e in reported)  # effect, last, is not reported
        self.expanded_size = self.size - (offset - self.reported_size)

        rows = [_prior_row(v) for v in self.variables]
        theta = np.full(len(parameters.names), np.nan)
        for name, value in family.held.items():
            theta[index[name]] = value
        buffers = _Buffers()
        header = {
            kernels.H_FREE: self.m, kernels.H_FIXED: self.p, kernels.H_RECORDS: n,
            kernels.H_EFFECTS: len(self.effects), kernels.H_THETA: len(theta),
            kernels.H_KIND: kind, kernels.H_CUTPOINTS: self.cutpoints,
            kernels.H_PACKED: offset, kernels.H_SIZE: self.size,
            kernels.H_REPORTED: len(reported), kernels.H_EXPANDED: self.expanded_size,
            kernels.AT_PRIOR_CODE: buffers.add_ints([r[0] for r in rows]),
            kernels.AT_PRIOR_THETA: buffers.add_ints(
                [index[v.terms[0]] for v in self.variables]
            ),
            kernels.AT_WHERE: buffers.add_ints(where),
        }  # fmt: skip
        table = []
        centring = dict(centring or {})
        self.centring: dict[str, np.ndarray] = {}
        for effect, (code, ints, floats) in zip(self.effects, transforms, strict=True):
            if code == kernels.TRANSFORM_IDENTITY:  # its float data: the levels' weights λ
                weights = np.asarray(centring.pop(effect.name, np.zeros(effect.size)), float)
                if weights.shape != (effect.size,) or not np.all((weights >= 0) & (weights <= 1)):
                    raise ValueError(
                        f"The centring weights of {effect.name!r} must be {effect.size} numbers "
                        "in [0, 1]."
                    )
                self.centring[effect.name] = floats = weights
            table.append(
                [effect.offset, effect.size, code, index[effect.name],
                 buffers.add_ints(ints), buffers.add_floats(floats)]
            )  # fmt: skip
        if centring:
            raise ValueError(f"Centring weights for effects with a relationship: {list(centring)}.")
        header[kernels.AT_EFFECTS] = buffers.add_ints(
            np.array(table, dtype=np.int64).reshape(-1, kernels.EFFECT_COLUMNS)
        )
        header[kernels.AT_PRIOR_PARAMETERS] = buffers.add_floats([r[1:] for r in rows])
        header[kernels.AT_THETA] = buffers.add_floats(theta)
        header[kernels.AT_X] = buffers.add_floats(X)
        header[kernels.AT_Y] = buffers.add_floats(2.0 * y - 1.0 if kind <= 1 else y)
        header[kernels.AT_TRIALS] = buffers.add_floats(trials if with_trials else np.ones(n))
        self.floats, self.ints = buffers.arrays()
        for key, value in header.items():
            self.ints[key] = value
        self.floats[kernels.F_CONSTANT] = constant
        if isinstance(priors.fixed, NormalFixed):
            self.floats[kernels.F_FIXED_SD] = priors.fixed.scale
        self.floats.flags.writeable = False
        self.ints.flags.writeable = False

    @property
    def user_data(self) -> np.ndarray:
        """What nutpie passes the C callback: the address and length of each buffer (formed
        from the buffers themselves on every access, so that a copy of the density — pickled,
        say — never points at another's memory). The caller keeps the density alive while
        the callback may read them."""
        return np.array(
            [self.floats.ctypes.data, self.floats.size, self.ints.ctypes.data, self.ints.size],
            dtype=np.int64,
        )

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(log p(x | y), ∇ₓ log p)`` (the kernel nutpie calls, here from Python: the tests,
        a mode)."""
        x = np.ascontiguousarray(x, dtype=float)
        gradient = np.empty(self.size)
        value = kernels.joint_log_density(x, self.floats, self.ints, gradient)
        if not np.isfinite(value):
            return -np.inf, np.zeros(self.size)
        return float(value), gradient

    # -- draws ---------------------------------------------------------------------------------
    def start(self, values: Mapping[str, float], beta: np.ndarray | None) -> np.ndarray:
        """x at the free variables' ``values`` (REML's), b = ``beta`` (or 0), every z = 0 and
        the cut-points' increments 1."""
        x = np.zeros(self.size)
        x[: self.m] = self.prior.unconstrained(values)
        if beta is not None and len(beta) == self.p:
            x[self.m : self.start_z] = beta
        return x

    def expand(self, x: np.ndarray) -> np.ndarray:
        """Draws x (… × size) as they are reported (… × ``expanded_size``): the free
        variables and b, every reported effect's u (``u = √θ L z``) in place of its unit
        normals, the observation-level effect's left out, an ordinal response's cut-point log
        increments last (:func:`~bayes_animal.bayes.kernels.joint_expand`, the kernel nutpie
        calls for each kept draw)."""
        x = np.asarray(x, dtype=float)
        flat = np.ascontiguousarray(x.reshape(-1, self.size))
        out = kernels.expand_draws(flat, self.floats, self.ints)
        return out.reshape(*x.shape[:-1], self.expanded_size)

    def posterior_tree(self, expanded: np.ndarray, stats: dict[str, np.ndarray]):
        """The DataTree of reported draws (chain × draw × ``expanded_size``, as :meth:`expand`
        forms them): the free variables, every reported quantity, b (``beta``), every
        effect's u and an ordinal response's cut-points — the PyMC model's variables, names
        and dimensions, less its sampler's own coordinates (the unit normals z, the
        cut-points' log increments) — and ``stats`` in ``sample_stats``."""
        import xarray as xr

        chains, draws, size = expanded.shape
        if size != self.expanded_size:
            raise ValueError(f"A reported draw has {self.expanded_size} values, not {size}.")
        flat = expanded.reshape(-1, size)
        values = self.prior.draws(flat[:, : self.m])
        values |= quantity_function(self.parameters)({n: values[n] for n in self.parameters.names})
        dims = ("chain", "draw")
        coords = {"chain": np.arange(chains), "draw": np.arange(draws)}

        def shaped(array):
            return np.asarray(array).reshape(chains, draws, *np.shape(array)[1:])

        free = [v.name for v in self.variables]
        names = free + [q.key for q in self.parameters.quantities() if q.key not in free]
        data = {name: (dims, shaped(values[name])) for name in names}
        data["beta"] = ((*dims, "fixed"), shaped(flat[:, self.m : self.start_z]))
        coords["fixed"] = self.fixed_names
        for effect in self.effects:  # u, formed by the kernel (the unit normals not kept)
            if effect.u_name is None:
                continue
            at = slice(self.start_z + effect.offset, self.start_z + effect.offset + effect.size)
            data[effect.u_name] = ((*dims, effect.dim), shaped(flat[:, at]))
            coords[effect.dim] = self.coords[effect.dim]
        if self.cutpoints:
            log_increments = flat[:, self.start_z + self.reported_size :]
            cut = np.concatenate(
                [np.zeros((len(flat), 1)), np.cumsum(np.exp(log_increments), axis=1)], axis=1
            )
            data["cutpoints"] = ((*dims, "cutpoint"), shaped(cut))
            coords["cutpoint"] = self.coords["cutpoint"]
        posterior = xr.Dataset(data, coords=coords)
        sample_stats = xr.Dataset(
            {name: (dims, v) for name, v in stats.items()},
            coords={"chain": coords["chain"], "draw": coords["draw"]},
        )
        return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": sample_stats})
