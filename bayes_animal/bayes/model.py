r"""The Bayesian animal model: ``AnimalModel(formula, data, ...)`` builds, ``.fit()`` samples.

Two parameterisations of :math:`y = Xb + Zu + e`, :math:`u \sim N(0, \sigma_u^2 A)`:

``marginal`` (the default with one genetic component)
    With :math:`K = Z A Z^\top = U \operatorname{diag}(d) U^\top` (one eigendecomposition,
    shared with REML), :math:`y^* = U^\top y \sim N(X^* b, \operatorname{diag}(\sigma_u^2 d +
    \sigma^2))`: :math:`O(n p^2)` per log-density and gradient, no funnel. With a flat prior the
    fixed effects are integrated out analytically, leaving the restricted likelihood

    .. math::
        \log p(y \mid \sigma_u^2, \sigma^2) = -\tfrac12\left[\log|V| + \log|X^\top V^{-1} X|
        + y^\top P y\right] + \text{const};

    otherwise they are sampled. b (when integrated) and u are drawn after sampling, for every
    posterior draw, from their exact conditional (:mod:`bayes_animal.conditional`).

``noncentred``
    :math:`z \sim N(0, I_q)`, :math:`u = \sigma_u L z`. For a pedigree,
    :math:`L = T D^{1/2}` is applied by the parents-first recursion
    :math:`u_i = \tfrac12(u_{s} + u_{d}) + \sqrt{d_i}\,\sigma_u z_i`, one vectorised step per
    generation (:math:`O(q)` per gradient, no dense matrix); otherwise :math:`L` is the
    Cholesky factor of the dense A (:math:`O(q^2)`). b is sampled.

The REML estimate (built in) starts the sampler and is compared with the posterior after
every fit; diagnostics are checked after every fit (:mod:`bayes_animal.posterior`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from os import PathLike
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._version import __version__
from ..api import model_inputs
from ..design import Design
from ..errors import BayesAnimalError
from ..estimation.result import RemlResult
from ..estimation.spectral import fit_spectral
from ..linalg.spectral import SpectralProblem, decompose, default_threads
from ..results.posterior import AnimalFit, component_summary, diagnose, reml_check
from ..structures.inputs import RelationshipSource
from ..structures.pedigree import Pedigree, generation_blocks
from ..structures.relationship import RelationshipMatrix
from .conditional import draw_breeding_values, draw_fixed_and_breeding_values
from .priors import NormalFixed, Priors, as_priors, data_scales

__all__ = ["PARAMETERISATIONS", "SAMPLERS", "AnimalModel", "ModelError"]

PARAMETERISATIONS = ("auto", "marginal", "noncentred")
SAMPLERS = ("pymc", "nutpie", "numpyro")
#: The default sampler: PyMC's own NUTS was fastest end to end on these machines
#: (benchmarks/results/sampling.md): nutpie's numba compilation costs more than it saves on
#: two-parameter marginal models.
DEFAULT_SAMPLER = "pymc"


class ModelError(BayesAnimalError, ValueError):
    """An option of the model or of the fit is unknown or inconsistent."""


@dataclass(frozen=True)
class _Built:
    model: Any
    parameterisation: str
    fixed_effects: str
    initvals: dict[str, float]


def _choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise ModelError(f"Unknown {what} {value!r}. Valid: {', '.join(valid)}.")
    return value


class AnimalModel:
    """The animal model ``formula + (1 | animal)`` with relationship A, ready to fit.

    Parameters
    ----------
    formula
        Fixed part, e.g. ``"response ~ 1 + fix"`` (factors as ``C(sex)``).
    data
        Records; ``animal`` names the id column.
    animal
        Column of animal ids.
    relmat, pedigree, genotypes
        Exactly one (see :func:`bayes_animal.api.reml`).
    priors
        A :class:`~bayes_animal.priors.Priors` or a preset name (``"default"``,
        ``"inverse_gamma"``, ``"flat"``, ``"beta_h2"``).
    source
        A relationship already resolved by
        :func:`~bayes_animal.inputs.resolve_relationship` (the command line passes it), instead
        of ``relmat``/``pedigree``/``genotypes``.

    Notes
    -----
    The constructor validates and builds the specification; it never samples. The
    eigendecomposition and the REML estimate are computed on first use and cached.

    Examples
    --------
    >>> from bayes_animal import AnimalModel, simulate_reference
    >>> sim = simulate_reference(n=100, n_snps=200, seed=1)
    >>> model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    >>> print(model.priors_text().splitlines()[0])  # doctest: +ELLIPSIS
    sigma2_u: HalfStudentT(nu=3, scale=...) on the SD
    """

    def __init__(
        self,
        formula: str,
        data: pd.DataFrame,
        *,
        animal: str = "animal",
        relmat: RelationshipMatrix | pd.DataFrame | str | PathLike[str] | None = None,
        pedigree: Pedigree | pd.DataFrame | str | PathLike[str] | None = None,
        genotypes: pd.DataFrame | str | PathLike[str] | None = None,
        priors: Priors | str | None = None,
        source: RelationshipSource | None = None,
    ) -> None:
        self.formula = formula
        self.animal = animal
        self.priors = as_priors(priors)
        inputs = model_inputs(
            formula,
            data,
            relmat=relmat,
            pedigree=pedigree,
            genotypes=genotypes,
            source=source,
            animal=animal,
        )
        if inputs.source is None or len(inputs.design.effects) != 1:
            raise ModelError(
                "The Bayesian model fits one additive genetic effect (a relationship is needed); "
                f"this model has {', '.join(e.name for e in inputs.design.effects) or 'none'}. "
                "Use reml() for models with several random effects."
            )
        self.source = inputs.source
        self.relmat: RelationshipMatrix = self.source.relmat
        self.design: Design = inputs.design
        self.scales = data_scales(self.design.y, self.design.X, self.relmat.mean_diagonal)
        self._problem: SpectralProblem | None = None
        self._reml: RemlResult | None = None

    # -- cached numerics ---------------------------------------------------------------------
    @property
    def problem(self) -> SpectralProblem:
        """The eigendecomposition of Z A Zᵀ (computed once)."""
        if self._problem is None:
            self._problem = decompose(self.design, self.relmat)
        return self._problem

    @property
    def reml(self) -> RemlResult:
        """The built-in REML estimate (computed once)."""
        if self._reml is None:
            self._reml = fit_spectral(self.design, self.relmat, problem=self.problem)
        return self._reml

    def priors_text(self) -> str:
        """The priors with their data-derived scales."""
        return self.priors.describe(self.scales)

    def data_hash(self) -> str:
        """SHA-256 of y, X, the animal index and A: the provenance of a posterior."""
        digest = hashlib.sha256()
        for array in (
            self.design.y,
            self.design.X,
            self.design.effects[0].index,
            self.relmat.matrix,
        ):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update("\x00".join(map(str, self.relmat.ids)).encode())
        return digest.hexdigest()

    # -- model building ----------------------------------------------------------------------
    def _resolve(self, parameterisation: str, fixed: str) -> tuple[str, str, list[str]]:
        notes: list[str] = []
        _choice(parameterisation, PARAMETERISATIONS, "parameterisation")
        if parameterisation == "auto":
            parameterisation = "marginal"
            notes.append(
                "parameterisation 'auto' chose 'marginal': one genetic component, so the "
                "likelihood is diagonal in the eigenbasis of Z A Z'."
            )
        _choice(fixed, ("auto", "integrate", "sample"), "fixed-effects option")
        if parameterisation == "noncentred" and fixed == "integrate":
            raise ModelError("The non-centred model samples the fixed effects: use fixed='sample'.")
        if fixed == "integrate" and isinstance(self.priors.fixed, NormalFixed):
            raise ModelError(
                "Fixed effects can be integrated out only under a flat prior; drop the Normal "
                "prior on them or use fixed='sample'."
            )
        if fixed == "auto":
            sample = parameterisation == "noncentred" or isinstance(self.priors.fixed, NormalFixed)
            fixed = "sample" if sample else "integrate"
        notes.append(
            "fixed effects "
            + (
                "integrated out analytically (flat prior), drawn after sampling from their "
                "exact conditional"
                if fixed == "integrate"
                else "sampled"
            )
            + "."
        )
        return parameterisation, fixed, notes

    def build(self, parameterisation: str = "marginal", *, fixed: str = "auto"):
        """The PyMC model (without sampling). Returns ``pymc.Model``."""
        parameterisation, fixed, _ = self._resolve(parameterisation, fixed)
        return self._build(parameterisation, fixed).model

    def _coords(self) -> dict[str, list[str]]:
        return {
            "animal": [str(a) for a in self.relmat.ids],
            "fixed": list(self.design.fixed_names),
            "obs": [str(r) for r in self.design.record_labels],
        }

    def _fixed_prior(self, pm):
        if isinstance(self.priors.fixed, NormalFixed):
            return pm.Normal("beta", 0.0, self.priors.fixed.scale, dims="fixed")
        return pm.Flat("beta", dims="fixed")

    def _initvals(self) -> dict[str, float]:
        reml = self.reml
        total = reml.sigma2_u + reml.sigma2_e
        su = max(reml.sigma2_u, 1e-3 * total)
        se = max(reml.sigma2_e, 1e-3 * total)
        if self.priors.h2 is not None:
            return {
                "heritability": float(np.clip(su / (su + se), 0.01, 0.99)),
                "sigma_p": float(np.sqrt(su + se)),
            }
        return self.priors.genetic.initial("u", su) | self.priors.residual.initial("e", se)

    def _build(self, parameterisation: str, fixed: str) -> _Built:
        import pymc as pm

        with pm.Model(coords=self._coords()) as model:
            sigma2_u, sigma2_e = self.priors.variances(self.scales)
            sigma2_u = pm.Deterministic("sigma2_u", sigma2_u)
            sigma2_e = pm.Deterministic("sigma2_e", sigma2_e)
            pm.Deterministic("h2", sigma2_u / (sigma2_u + sigma2_e))
            if parameterisation == "marginal":
                self._marginal_likelihood(pm, sigma2_u, sigma2_e, fixed)
            else:
                self._noncentred_likelihood(pm, sigma2_u, sigma2_e)
        return _Built(
            model,
            parameterisation,
            "integrated" if fixed == "integrate" else "sampled",
            self._initvals(),
        )

    def _marginal_likelihood(self, pm, sigma2_u, sigma2_e, fixed: str) -> None:
        import pytensor.tensor as pt

        problem = self.problem
        d = pt.constant(problem.eigenvalues)
        X = pt.constant(problem.X_rot)
        y = pt.constant(problem.y_rot)
        variances = sigma2_u * d + sigma2_e
        if fixed == "sample":
            beta = self._fixed_prior(pm)
            pm.Normal("y_rotated", mu=X @ beta, sigma=pt.sqrt(variances), observed=problem.y_rot)
            return
        weights = 1.0 / variances
        precision = X.T @ (X * weights[:, None])
        chol = pt.linalg.cholesky(precision)
        solved = pt.linalg.solve(precision, X.T @ (weights * y), assume_a="pos")
        residual = y - X @ solved
        restricted = -0.5 * (
            pt.sum(pt.log(variances))
            + 2.0 * pt.sum(pt.log(pt.diag(chol)))
            + pt.sum(weights * residual**2)
            + (problem.n - problem.p) * np.log(2.0 * np.pi)
            - problem.logdet_xtx
        )
        pm.Potential("restricted_loglik", restricted)

    def _noncentred_likelihood(self, pm, sigma2_u, sigma2_e) -> None:
        import pytensor.tensor as pt

        z = pm.Normal("z", 0.0, 1.0, dims="animal")
        sigma_u = pt.sqrt(sigma2_u)
        if self.source.kind == "pedigree":
            genetic = self._pedigree_recursion(z, sigma_u)
        else:
            genetic = sigma_u * (pt.constant(self.relmat.factor()) @ z)
        u = pm.Deterministic("u", genetic, dims="animal")
        beta = self._fixed_prior(pm)
        mean = pt.constant(self.design.X) @ beta + u[self.design.effects[0].index]
        pm.Normal("y", mu=mean, sigma=pt.sqrt(sigma2_e), observed=self.design.y, dims="obs")

    def _pedigree_recursion(self, z, sigma_u):
        """u = T D^½ σu z by u_i = ½(u_s + u_d) + √d_i σu z_i, one step per generation."""
        import pytensor.tensor as pt

        pedigree, sampling = self.source.pedigree, self.source.sampling
        q = pedigree.size
        order = pedigree.user_order  # relmat position k ↔ pedigree position order[k]
        to_user = np.empty(q, dtype=np.int64)
        to_user[order] = np.arange(q)
        z_pedigree = z[to_user]
        scale = np.sqrt(sampling.variances)
        sire = np.where(pedigree.sire >= 0, pedigree.sire, q)
        dam = np.where(pedigree.dam >= 0, pedigree.dam, q)
        values = pt.zeros(q + 1)  # slot q: an unknown parent, always 0
        for block in generation_blocks(pedigree.generation):
            step = 0.5 * (values[sire[block]] + values[dam[block]])
            step = step + scale[block] * sigma_u * z_pedigree[block]
            values = pt.set_subtensor(values[block], step)
        return values[:q][order]

    # -- sampling ----------------------------------------------------------------------------
    def fit(
        self,
        *,
        parameterisation: Literal["auto", "marginal", "noncentred"] = "auto",
        sampler: Literal["pymc", "nutpie", "numpyro"] | None = None,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        random_seed: int | None = None,
        progressbar: bool = True,
        target_accept: float = 0.9,
        fixed: Literal["auto", "integrate", "sample"] = "auto",
        warn: bool = True,
    ) -> AnimalFit:
        """Sample the posterior with NUTS and check it against REML.

        Parameters
        ----------
        parameterisation
            ``"auto"`` (→ ``"marginal"`` for one genetic component, and says so),
            ``"marginal"`` or ``"noncentred"``.
        sampler
            ``"pymc"``, ``"nutpie"`` or ``"numpyro"``; None takes the default
            (:data:`DEFAULT_SAMPLER`, the fastest end to end in ``benchmarks/``).
        draws, tune, chains
            Draws kept per chain, tuning steps per chain, chains.
        random_seed
            Seed for the sampler and for the conditional draws of b and u.
        progressbar
            Show progress bars (PyMC's needs a terminal or notebook).
        target_accept
            NUTS target acceptance rate.
        fixed
            ``"auto"``, ``"integrate"`` (flat prior, marginal model only) or ``"sample"``.
        warn
            Issue warnings for failed diagnostics or a REML estimate outside the HDI.

        Returns
        -------
        AnimalFit
        """
        import pymc as pm

        start = time.perf_counter()
        sampler = _choice(sampler or DEFAULT_SAMPLER, SAMPLERS, "sampler")
        parameterisation, fixed, notes = self._resolve(parameterisation, fixed)
        if progressbar:
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
        problem = self.problem  # eigh, needed by REML either way
        reml = self.reml
        built = self._build(parameterisation, fixed)
        sample_start = time.perf_counter()
        # PyMC's chains run one after another in this process with one BLAS thread: as fast
        # end to end on two cores as worker processes (which re-import PyMC), and no fork of a
        # multi-threaded process. nutpie runs its chains in threads of its own.
        cores = min(chains, default_threads()) if sampler == "nutpie" else 1
        # every sampler starts from the REML estimate: a non-centred model started at random
        # can be caught by the spike of the joint density at sigma2_e -> 0
        kwargs: dict[str, Any] = {
            "cores": cores,
            "nuts": {"target_accept": target_accept},
            "initvals": built.initvals,
        }
        if sampler == "pymc":
            kwargs.update(compute_convergence_checks=False, blas_cores=1)
        try:
            with built.model:
                idata = pm.sample(
                    draws=draws,
                    tune=tune,
                    chains=chains,
                    random_seed=random_seed,
                    progressbar=progressbar,
                    nuts_sampler=sampler,
                    **kwargs,
                )
        except (ImportError, ModuleNotFoundError) as exc:
            raise ModelError(
                f"The {sampler!r} sampler is not installed ({exc}). Install it "
                f"(pip install 'bayes_animal[{sampler}]') or use sampler='pymc'."
            ) from exc
        sample_wall = time.perf_counter() - sample_start
        sampling = float(
            idata.posterior.attrs.get(
                "sampling_time", idata.attrs.get("sampling_time", sample_wall)
            )
        )
        sampling = min(sampling, sample_wall)
        conditional_start = time.perf_counter()
        if parameterisation == "marginal":
            self._add_conditional_draws(idata, fixed, random_seed)
        conditional = time.perf_counter() - conditional_start
        idata.attrs.update(
            self._provenance(
                sampler,
                parameterisation,
                built.fixed_effects,
                draws,
                tune,
                chains,
                random_seed,
                target_accept,
            )
        )
        timings = {
            "eigh": problem.seconds,
            "compile": sample_wall - sampling,
            "sampling": sampling,
            "conditional": conditional,
            "total": time.perf_counter() - start,
        }
        summary = component_summary(idata)
        diagnostics = diagnose(idata, parameterisation=parameterisation, warn=warn, summary=summary)
        check = reml_check(idata, reml, warn=warn, summary=summary)
        timings["total"] = time.perf_counter() - start
        return AnimalFit(
            idata=idata,
            reml=reml,
            reml_check=check,
            diagnostics=diagnostics,
            sampler=sampler,
            parameterisation=parameterisation,
            fixed_effects=built.fixed_effects,
            timings=timings,
            a_diagonal=np.diag(self.relmat.matrix).copy(),
            notes=tuple(notes),
            _summary=summary,
        )

    def _add_conditional_draws(self, idata, fixed: str, seed: int | None) -> None:
        """Draw u (and b, when it was integrated out) for every posterior draw — once."""
        import xarray as xr

        posterior = idata.posterior
        su = posterior["sigma2_u"].values
        se = posterior["sigma2_e"].values
        chains, draws = su.shape
        rng = np.random.default_rng(None if seed is None else seed + 7919)
        if fixed == "integrate":
            beta, u = draw_fixed_and_breeding_values(
                self.problem, self.design, self.relmat, su.ravel(), se.ravel(), rng=rng
            )
        else:  # b was sampled: u given the sampled b
            beta = None
            sampled = posterior["beta"].values.reshape(chains * draws, -1)
            u = draw_breeding_values(
                self.problem, self.design, self.relmat, sampled, su.ravel(), se.ravel(), rng=rng
            )
        coords = {"chain": posterior["chain"].values, "draw": posterior["draw"].values}
        new = {
            "u": xr.DataArray(
                u.reshape(chains, draws, -1),
                dims=("chain", "draw", "animal"),
                coords={**coords, "animal": [str(a) for a in self.relmat.ids]},
            ),
        }
        if beta is not None:
            new["beta"] = xr.DataArray(
                beta.reshape(chains, draws, -1),
                dims=("chain", "draw", "fixed"),
                coords={**coords, "fixed": list(self.design.fixed_names)},
            )
        idata["posterior"] = posterior.to_dataset().assign(new)

    def _provenance(self, sampler, parameterisation, fixed, draws, tune, chains, seed, target):
        options = {
            "formula": self.formula,
            "animal": self.animal,
            "sampler": sampler,
            "parameterisation": parameterisation,
            "fixed_effects": fixed,
            "draws": draws,
            "tune": tune,
            "chains": chains,
            "random_seed": seed,
            "target_accept": target,
            "relationship": self.source.kind,
        }
        return {
            "bayes_animal_version": __version__,
            "model_options": json.dumps(options),
            "priors": self.priors_text(),
            "data_sha256": self.data_hash(),
        }
