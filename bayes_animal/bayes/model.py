r"""The Bayesian model: ``AnimalModel(formula, data, ...)`` builds, ``.fit()`` samples.

The model is the one :func:`bayes_animal.api.reml` fits — the same formula, relationship and
maternal options, the same component names — with priors on every variance
(:mod:`bayes_animal.bayes.priors`) and NUTS. Three parameterisations
(:mod:`bayes_animal.bayes.likelihoods`):

``marginal``
    NUTS over the variance parameters alone, every random effect and b integrated out: in the
    eigenbasis of :math:`ZKZ^\top` for one random effect with a dense matrix (the *spectral*
    marginal model), through the sparse mixed-model equations otherwise (one factorisation and
    one selected inverse per gradient). b and every effect are drawn afterwards, for each
    posterior draw, from their exact conditional.
``noncentred``
    Every effect non-centred (pedigree recursion, scaled unit normals, the Cholesky factor of
    :math:`G_0` for a correlated pair); b sampled. :math:`O(q)` per gradient.
``partial``
    The additive effect marginal in the eigenbasis (dense A), the other effects non-centred.

``parameterisation="auto"`` asks the one chooser (:func:`bayes_animal.choice.choose_bayes`:
the problem's structure and each engine's estimated cost for the gradients of the fit), and
says why. The REML
estimate (built in) starts every chain and is compared with the posterior after every fit;
diagnostics are checked after every fit (:mod:`bayes_animal.results.posterior`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from os import PathLike
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._version import __version__
from ..api import fit_inputs, model_inputs
from ..choice import (
    BOUNDARY_THIN,
    LAPLACE_KHAT_LIMIT,
    Choice,
    LaplaceCheck,
    choose_bayes,
    choose_family_engine,
    choose_sampler,
    choose_traits,
    facts,
    gradients_of_a_fit,
    latent_cost_ratio,
)
from ..design import Design
from ..errors import BayesAnimalError
from ..estimation.result import RemlResult
from ..linalg.spectral import SpectralProblem, decompose
from ..linalg.threads import default_threads
from ..results.posterior import (
    AnimalFit,
    component_summary,
    diagnose,
    import_summary_libraries,
    pareto_khat,
    reml_check,
)
from ..spec.parameters import OBSERVED_H2, Parameters
from ..structures.inputs import RelationshipSource
from ..structures.pedigree import Pedigree
from .engines import ENGINE_CLASSES, Engine, engine_for
from .priors import NormalFixed, Priors, add_parameters, as_priors, data_scales, initial_values

__all__ = [
    "PARAMETERISATIONS",
    "SAMPLERS",
    "AnimalModel",
    "ModelError",
]

PARAMETERISATIONS = ("auto", "marginal", "noncentred", "partial", "latent")

#: nutpie's target acceptance for the latent values' model (k + n dimensions, records that pin
#: their latent values: a posterior close to Gaussian). On the large counts of
#: ``benchmarks/families_large`` (seeds 1–6, tune 500, 4 × 1 000 draws) its ESS(h²) per second
#: of the whole fit was, at 0.9, 23, 18, 19, 30, 20 and 23 (24 leapfrog steps a draw, one run
#: extended to 8 chains); at 0.7 29, 29, 41, 39, 33 and 34 (15 steps, three extended); at 0.6
#: 52, 40, 43, 42, 42 and 27 (15 steps, none extended, no divergence); at 0.5 10 steps but
#: two of four runs extended, one divergence and R-hat 1.014 after extension. The ESS per draw
#: hardly moves with the step: h² mixes at the pace its coupling to the latent values sets.
LATENT_TARGET_ACCEPT = 0.6
SAMPLERS = ("pymc", "nutpie", "numpyro", "independence")
#: The default sampler of each engine (each engine's ``default_sampler``,
#: :mod:`bayes_animal.bayes.engines`; ``python benchmarks/run.py samplers``).
DEFAULT_SAMPLERS = {name: cls.default_sampler for name, cls in ENGINE_CLASSES.items()}


class ModelError(BayesAnimalError, ValueError):
    """An option of the model or of the fit is unknown or inconsistent."""


@dataclass(frozen=True)
class _Built:
    model: Any
    engine: Engine
    fixed_effects: str
    initvals: dict[str, float]
    theta: Any = None


#: A level of an independent effect is sampled partly centred (:meth:`AnimalModel.centring`)
#: where its records give at least this share of its posterior precision at REML, and
#: non-centred below. Measured: on the simulated binary trait of ``benchmarks/families`` its
#: birth years' shares were about 0.7, and partly centring them lowered h²'s ESS per second
#: (median of seeds 1–8 from 104 to 89) and raised seed 2's largest R-hat from 1.006 to 1.012,
#: and on the gryphon birth weights above their upper quartile (a
#: prior-dominated posterior) it gave 11 divergences; levels that the records pin down (shares
#: 0.9–0.99: 30 groups of 20 large counts, birth years of large counts) mixed 8–25 times better
#: partly centred.
CENTRE_FROM = 0.9


def _share(variance: float, precision: np.ndarray) -> np.ndarray:
    """σ²d / (1 + σ²d): the share of each level's posterior precision from its records
    (:meth:`AnimalModel.centring`)."""
    product = max(float(variance), 0.0) * np.maximum(np.asarray(precision, dtype=float), 0.0)
    return product / (1.0 + product)


def _choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise ModelError(f"Unknown {what} {value!r}. Valid: {', '.join(valid)}.")
    return value


@contextmanager
def _quiet_backend():
    """Silence the backend's notice that says nothing to a user: PyMC's dense mass matrix is
    marked experimental (we start it from the REML information, tested)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="QuadPotentialFullAdapt is an experimental")
        yield


class AnimalModel:
    """A mixed model with an additive genetic effect (and any other random effects), ready to
    fit by NUTS.

    Parameters
    ----------
    formula
        Fixed and random parts, as for :func:`bayes_animal.reml`:
        ``"bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)"``, ``ide(animal)`` for a permanent
        environment.
    data
        Records; ``animal`` names the id column.
    animal
        Column of animal ids.
    relmat, pedigree, genotypes
        At most one (see :func:`bayes_animal.api.reml`).
    maternal, maternal_covariance
        Dam column of a maternal genetic effect; estimate the direct–maternal covariance.
    priors
        A :class:`~bayes_animal.bayes.priors.Priors` or a preset name (``"default"``,
        ``"inverse_gamma"``, ``"flat"``, ``"beta_h2"``).
    source
        A relationship already resolved by
        :func:`~bayes_animal.structures.inputs.resolve_relationship` (the command line passes it).

    Notes
    -----
    The constructor validates and builds the specification; it never samples. The REML
    estimate (and the eigendecomposition or the analysis of the mixed-model equations) is
    computed on first use and cached.

    Examples
    --------
    >>> from bayes_animal import AnimalModel, simulate_reference
    >>> sim = simulate_reference(n=100, n_snps=200, seed=1)
    >>> model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    >>> print(model.priors_text().splitlines()[0])  # doctest: +ELLIPSIS
    additive: HalfStudentT(nu=3, scale=...) on the SD
    """

    def __init__(
        self,
        formula: str,
        data: pd.DataFrame,
        *,
        animal: str = "animal",
        relmat: Any = None,
        pedigree: Pedigree | pd.DataFrame | str | PathLike[str] | None = None,
        genotypes: pd.DataFrame | str | PathLike[str] | None = None,
        maternal: str | None = None,
        maternal_covariance: bool = False,
        priors: Priors | str | None = None,
        source: RelationshipSource | None = None,
        family: Any = None,
        link: str | None = None,
        overdispersion: bool | str | None = None,
    ) -> None:
        self.formula = formula
        self.animal = animal
        self.inputs = model_inputs(
            formula,
            data,
            relmat=relmat,
            pedigree=pedigree,
            genotypes=genotypes,
            source=source,
            animal=animal,
            maternal=maternal,
            maternal_covariance=maternal_covariance,
            family=family,
            link=link,
            overdispersion=overdispersion,
        )
        self.source = self.inputs.source
        self.design: Design = self.inputs.design
        self.parameters = Parameters.from_spec(self.design.spec)
        self.priors = as_priors(priors)
        self.priors.check(self.parameters)
        self.structures = self._structures()
        diagonals = {
            e.name: float(np.mean(self.structures[e.name].diagonal())) for e in self.design.effects
        }
        self.scales = data_scales(self.design.y, self.design.X, diagonals)
        if not self.design.family.gaussian:  # the latent scale: variances of order 1
            self.scales = {name: 1.0 / np.sqrt(d) for name, d in diagonals.items()}
            self.scales |= {"residual": 1.0, "total": 1.0}
            if self.priors.h2 is not None:
                raise ModelError(
                    "The Beta prior on h2 is for Gaussian traits; a non-Gaussian family's latent "
                    "residual is fixed or an observation-level variance: give priors on the "
                    "components instead."
                )
        if self.design.multi_trait:  # each trait's own scale
            design = self.design
            for a, trait in enumerate(design.traits):
                rows = design.observation_trait == a
                columns = np.flatnonzero(np.abs(design.X[rows]).sum(axis=0) > 0)
                own = data_scales(design.y[rows], design.X[np.ix_(rows, columns)], {})
                for e in design.effects:
                    if e.trait == trait:
                        self.scales[e.name] = own["residual"] / np.sqrt(diagonals[e.name])
                self.scales[f"residual:{trait}"] = own["residual"]
        self._problem: SpectralProblem | None = None
        self._canonical = None
        self._choices: dict[tuple[int, int, int], Choice] = {}
        self._fit_engine: str | None = None  # the engine of the fit that asked for REML
        self._reml: RemlResult | None = None
        self._mme = None
        self._laplace = None
        self._centring: dict[str, np.ndarray] | None = None
        self._mode_weights: np.ndarray | None = None

    def _structures(self) -> dict[str, Any]:
        from ..structures.covariance import IdentityStructure

        out = {}
        for effect in self.design.effects:
            out[effect.name] = (
                self.source.structure if effect.genetic else IdentityStructure(effect.levels)
            )
        return out

    # -- cached numerics ---------------------------------------------------------------------
    @property
    def dense_available(self) -> bool:
        """Whether the single random effect's dense matrix is at hand (a given matrix, a
        pedigree small enough for a dense A, or an independent effect)."""
        return facts(self.inputs, attempt=False).dense_available

    def choice(self, *, chains: int = 4, draws: int = 1000, tune: int = 500) -> Choice:
        """The engine ``parameterisation="auto"`` takes for a fit of this size, and why
        (:func:`bayes_animal.choice.choose_bayes`; several traits:
        :func:`~bayes_animal.choice.choose_traits`)."""
        key = (chains, draws, tune)
        if key not in self._choices:
            chooser = choose_traits if self.design.multi_trait else choose_bayes
            self._choices[key] = chooser(
                self.inputs, gradients=gradients_of_a_fit(chains, draws, tune)
            )
        return self._choices[key]

    @property
    def relmat(self):
        """The dense matrix of the single (or additive) random effect."""
        effect = self.design.effects[0]
        if effect.genetic:
            return self.source.relmat
        from ..structures.relationship import RelationshipMatrix

        return RelationshipMatrix(ids=effect.levels, matrix=np.eye(effect.size))

    @property
    def problem(self) -> SpectralProblem:
        """The eigendecomposition of Z K Zᵀ of the additive (or single) effect, computed once."""
        if self._problem is None:
            from dataclasses import replace

            single = replace(self.design, effects=self.design.effects[:1])
            self._problem = decompose(single, self.relmat)
        return self._problem

    @property
    def canonical(self):
        """The canonical transformation of several traits on one random term
        (:mod:`bayes_animal.linalg.canonical`), computed once."""
        if self._canonical is None:
            from ..linalg.canonical import canonical_problem

            effect = self.design.effects[0]
            relationship = self.structures[effect.name].dense() if effect.genetic else None
            self._canonical = canonical_problem(self.design, relationship, self.parameters)
        return self._canonical

    @property
    def mme(self):
        """The analysed sparse mixed-model equations (computed once)."""
        if self._mme is None:
            from ..linalg.mme import MixedModelEquations

            self._mme = MixedModelEquations(self.design, self.structures, self.parameters)
        return self._mme

    @property
    def laplace(self):
        """The analysed Laplace equations of a non-Gaussian family (computed once)."""
        if self._laplace is None:
            from ..linalg.laplace import LaplaceEquations

            self._laplace = LaplaceEquations(self.design, self.structures, self.parameters)
        return self._laplace

    @property
    def fixed_parameters(self) -> dict[str, float]:
        """Parameters held at a value by the family (a probit's or logit's latent residual,
        a Poisson model's without overdispersion): no prior, no free variable."""
        return self.design.family.held

    def _floored_reml_theta(self) -> tuple[np.ndarray, np.ndarray]:
        """REML's θ with every free variance at least 1e-3 of the phenotypic variance (the
        Laplace equations need K⁻¹/θ), and which entries are free variances."""
        theta = self.reml_theta()
        floor = 1e-3 * max(self.parameters.phenotypic(theta), 1e-12)
        free = np.array(
            [
                n in self.parameters.variances and n not in self.fixed_parameters
                for n in self.parameters.names
            ]
        )
        return np.where(free, np.maximum(theta, floor), theta), free

    def laplace_check(self, draws: int = 1000, seed: int = 0) -> LaplaceCheck:
        """The Laplace approximation's check (the one ``parameterisation="auto"`` chooses by
        where the exact model has no hand-derived joint density or the sampler is PyMC's or
        numpyro's NUTS, :class:`~bayes_animal.choice.LaplaceCheck`): at half, once and twice
        the REML variances, ``draws`` draws of b and u from its Gaussian weighted against
        their exact conditional — the Pareto k̂ of the weights, and their mean, which
        estimates the approximation's error in log p(y | θ)."""
        from scipy.special import logsumexp

        theta, free = self._floored_reml_theta()
        khats, errors = [], []
        for scale in (0.5, 1.0, 2.0):  # the same draws of the noise at each point
            noise = np.random.default_rng(seed).standard_normal((self.laplace.size, draws))
            _, log_weights = self.laplace.draws(np.where(free, scale * theta, theta), noise)
            khats.append(pareto_khat(log_weights))
            errors.append(float(logsumexp(log_weights) - np.log(draws)))
        return LaplaceCheck(float(np.max(khats)), tuple(errors))  # nan where one is nan

    def centring(self) -> dict[str, np.ndarray]:
        r"""The weights :math:`\lambda_j \in [0, 1)` by which the exact model of a non-Gaussian
        family samples each level of an independent random effect partly centred:
        :math:`u_j = \sigma^{1-\lambda_j}\tilde u_j`, :math:`\tilde u_j \sim N(0,
        \sigma^{2\lambda_j})` (0: non-centred, 1: centred).

        .. math::
            \lambda_j = \frac{\hat\sigma^2 d_j}{1 + \hat\sigma^2 d_j},\qquad
            d_j = \sum_{i:\,\text{level}(i) = j} w_i,

        with :math:`\hat\sigma^2` the REML variance and :math:`w_i` the records' Fisher weights
        at REML's conditional mode: the share of a level's posterior precision its records
        give (Papaspiliopoulos, Roberts and Sköld 2003's partially non-centred
        parameterisation, whose weight makes the level independent of σ a posteriori in the
        Gaussian model). A level that its records tell little about stays non-centred, one
        they pin down (many records, large counts) is centred; a level whose weight is below
        :data:`CENTRE_FROM` stays non-centred (0). Computed once; empty for a Gaussian trait
        and where no level reaches it.

        Measured (``benchmarks/family_engines``' data, seeds 1–3): on 30 groups of 20 large
        counts the group variance's ESS per second rose from 450–610 to 12 000–16 000 (R-hat
        up to 1.017 before, 1.001 after); on large counts on the gryphon pedigree the
        birth-year variance's ESS from 1 140–1 370 to 9 780. Effects with
        a relationship matrix stay non-centred, and so does a Poisson family's
        observation-level effect: its weights (0.2–0.5 on those counts) raised the largest
        R-hat of seeds 1–4 from 1.006–1.013 to 1.010–1.017."""
        if self._centring is None:
            self._centring = {}
            if not self.design.family.gaussian:
                index = {name: i for i, name in enumerate(self.parameters.names)}
                weights = self._reml_mode_weights()
                theta = self.reml_theta()  # a variance at 0: its levels stay non-centred
                for block in self.parameters.blocks:
                    effect = self.design.effect(block.terms[0])
                    if block.size > 1 or effect.genetic:
                        continue
                    known = effect.index >= 0
                    precision = np.bincount(
                        effect.index[known], weights[known], minlength=len(effect.levels)
                    )
                    share = _share(theta[index[effect.name]], precision)
                    if np.any(share >= CENTRE_FROM):
                        self._centring[effect.name] = np.where(share >= CENTRE_FROM, share, 0.0)
        return self._centring

    def _reml_mode_weights(self) -> np.ndarray:
        """The records' Fisher weights at REML's conditional mode (its variances floored as
        ``_floored_reml_theta``), computed once: what ``centring`` and
        ``_latent_information`` both read."""
        if self._mode_weights is None:
            floored, _ = self._floored_reml_theta()
            self._mode_weights = self.laplace.mode(floored, expected=True).weights
        return self._mode_weights

    def _alternative(self, engine: str) -> str | None:
        """The other exact parameterisation a family's diagnostics advise (None: none):
        between the non-centred joint and the latent values' model, where both serve."""
        from .latent import latent_obstacle

        if self.design.family.gaussian or latent_obstacle(self.design) is not None:
            return None
        return {"noncentred": "latent", "latent": "noncentred"}.get(engine)

    def _latent_information(self) -> float | None:
        r"""How firmly the records pin their latent values, where the latent values' model
        serves (:func:`~bayes_animal.bayes.latent.latent_obstacle`; None elsewhere): the median
        over the records of :math:`s_i/(1 + s_i)` (None where REML puts the observation-level
        variance at 0),
        :math:`s_i = V_u\, w_i/(1 + w_i \hat\sigma_e^2)` — the share of a record's
        random-effect variance on the latent scale (:math:`V_u`, the sum of REML's random
        variances) that the record itself resolves, its Fisher weight :math:`w_i` at REML's
        conditional mode seen through the observation-level variance
        :math:`\hat\sigma_e^2`. :func:`~bayes_animal.choice.choose_family_engine` reads it."""
        from .latent import latent_obstacle

        if latent_obstacle(self.design) is not None or "residual" in self.reml.boundary:
            return None  # at 0 the latent values are pinned to b and u: see _resolve
        weights = self._reml_mode_weights()
        theta = self.reml_theta()
        index = self.parameters.index
        residual = theta[index("residual")]
        random = sum(theta[index(e.name)] for e in self.design.effects)
        resolved = random * weights / (1.0 + weights * residual)
        return float(np.median(resolved / (1.0 + resolved)))

    def _latent_cost(self) -> float:
        """One gradient of the latent values' density in gradients of the non-centred joint's
        (:func:`~bayes_animal.choice.latent_cost_ratio`): the analysed equations' flops and
        order against the joint's coordinates — the variance parameters, b, every level and
        each record's observation-level effect."""
        analysis = self.mme.analysis
        design = self.design
        coordinates = (
            self.parameters.size
            + design.n_fixed
            + sum(len(e.levels) for e in design.effects)
            + len(design.y)
        )
        return latent_cost_ratio(analysis.flops, analysis.n, coordinates)

    def _centring_notes(self) -> list[str]:
        """What :meth:`centring` does to this fit, one note per effect it centres."""
        return [
            f"{int(np.count_nonzero(weights))} of the {len(weights)} levels of {name!r} are "
            f"sampled partly centred (their records give at least {CENTRE_FROM:.0%} of their "
            "posterior precision at REML: AnimalModel.centring())."
            for name, weights in self.centring().items()
        ]

    @property
    def reml(self) -> RemlResult:
        """The built-in REML estimate (computed once)."""
        if self._reml is None and not self.design.family.gaussian:
            self._reml = fit_inputs(self.inputs)  # the Laplace approximation's
        if self._reml is None:
            # the engine's REML: the spectral and canonical ones share their eigendecomposition
            # with REML, the others leave REML to its own chooser
            engine = ENGINE_CLASSES[self._fit_engine or self.choice().engine]
            shared = {"spectral": lambda: self.problem, "canonical": lambda: self.canonical}
            if engine.reml_engine in shared:
                self._reml = fit_inputs(
                    self.inputs, engine=engine.reml_engine, problem=shared[engine.reml_engine]
                )
            else:
                self._reml = fit_inputs(self.inputs)
        return self._reml

    def priors_text(self) -> str:
        """The priors of every component, with their data-derived scales."""
        return self.priors.describe(self.parameters, self.scales)

    def data_hash(self) -> str:
        """SHA-256 of y, X, each effect's levels and indices, and the relationship: the
        provenance of a posterior."""
        digest = hashlib.sha256()
        for array in (self.design.y, self.design.X):
            digest.update(np.ascontiguousarray(array).tobytes())
        for effect in self.design.effects:
            digest.update(np.ascontiguousarray(effect.index).tobytes())
            digest.update("\x00".join(map(str, effect.levels)).encode())
        if self.source is not None:
            if self.source.matrix is not None:
                digest.update(np.ascontiguousarray(self.source.matrix.matrix).tobytes())
            else:
                digest.update(np.ascontiguousarray(self.source.pedigree.sire).tobytes())
                digest.update(np.ascontiguousarray(self.source.pedigree.dam).tobytes())
        return digest.hexdigest()

    # -- model building ----------------------------------------------------------------------
    def _resolve(
        self,
        parameterisation: str,
        fixed: str,
        size: tuple[int, int, int] = (4, 1000, 500),
        sampler: str | None = None,
    ) -> tuple[str, str, str, list[str]]:
        """(parameterisation, engine, fixed, notes); ``size``: (chains, draws, tune) of the fit,
        for the chooser's cost estimate; ``sampler``: the fit's (None: the default), which
        decides whether a non-Gaussian family's exact model is sampled on its hand-derived
        joint density."""
        notes: list[str] = []
        _choice(parameterisation, PARAMETERISATIONS, "parameterisation")
        _choice(fixed, ("auto", "integrate", "sample"), "fixed-effects option")
        dense = self.dense_available
        family = self.design.family
        if parameterisation == "latent":
            from .latent import latent_obstacle

            obstacle = latent_obstacle(self.design)
            if obstacle is not None:
                raise ModelError(
                    "parameterisation='latent' samples each record's latent value with b and "
                    f"every u integrated out; here {obstacle}. Use parameterisation='auto'."
                )
            if "residual" in self.reml.boundary:
                raise ModelError(
                    "parameterisation='latent' needs an observation-level variance away from "
                    "0, and REML puts it at 0 (its boundary): as it shrinks each latent value "
                    "is pinned to b and u and NUTS crawls (the gryphon laying dates as counts "
                    "had not finished in 12 min, where the non-centred joint took 15 s). Use "
                    "parameterisation='noncentred' or parameterisation='auto'."
                )
        if not family.gaussian:
            if parameterisation == "partial":
                raise ModelError(
                    f"The {family.label} family is fitted by parameterisation 'auto', 'marginal' "
                    "(the Laplace approximation), 'noncentred' (exact) or, with an "
                    "observation-level effect, 'latent' (exact), not 'partial'."
                )
            if family.name == "ordinal":
                if parameterisation == "marginal":
                    raise ModelError(
                        "The ordinal family is sampled exactly (parameterisation 'auto' or "
                        "'noncentred': the cut-points with every effect); its Laplace "
                        "approximation serves REML only."
                    )
                parameterisation = "noncentred"
                notes.append(
                    "the ordinal family: the exact joint posterior (NUTS over the variances, "
                    "the cut-points, b and every u, non-centred)."
                )
            if parameterisation == "auto":
                from .joint import joint_obstacle

                joint = sampler in (None, "nutpie") and (
                    joint_obstacle(self.design, self.parameters, self.priors, self.scales) is None
                )
                check = None if joint else self.laplace_check()
                # the latent values' density is sampled by nutpie alone
                latent = self._latent_information() if sampler in (None, "nutpie") else None
                cost = self._latent_cost() if latent is not None and joint else None
                choice = choose_family_engine(family.label, check, latent, cost)
                engine = choice.engine
                chosen = ENGINE_CLASSES[engine].parameterisation
                notes.append(
                    f"parameterisation 'auto' chose '{chosen}', engine {choice.describe()}"
                )
            elif parameterisation == "marginal":
                engine = "laplace"
                notes.append(
                    f"the {family.label} family: b and every u integrated out by the Laplace "
                    "approximation (approximate; its importance-weight k̂ is in the diagnostics)."
                )
            elif parameterisation == "latent":
                engine = "latent"
                notes.append(
                    f"the {family.label} family: NUTS over the variances and each record's "
                    "latent value, b and every u integrated out exactly."
                )
            else:
                engine = "noncentred"
            parameterisation = ENGINE_CLASSES[engine].parameterisation
        elif self.design.multi_trait:
            if parameterisation not in ("auto", "marginal"):
                raise ModelError(
                    f"Several traits are fitted by the marginal model on the sparse mixed-model "
                    f"equations (every G0 and R0 with the effects integrated out); "
                    f"parameterisation={parameterisation!r} is for one trait. Use 'auto' or "
                    "'marginal'."
                )
            chains, draws, tune = size
            choice = self.choice(chains=chains, draws=draws, tune=tune)
            notes.append(f"engine {choice.describe()}")
            parameterisation, engine = "marginal", choice.engine
        elif parameterisation == "auto":
            chains, draws, tune = size
            choice = self.choice(chains=chains, draws=draws, tune=tune)
            parameterisation, engine = choice.parameterisation, choice.engine
            notes.append(
                f"parameterisation 'auto' chose '{parameterisation}', engine {choice.describe()}"
            )
        elif parameterisation == "marginal":
            engine = "spectral" if (len(self.design.effects) == 1 and dense) else "sparse"
        elif parameterisation == "partial":
            engine = "partial"
            names = [e.name for e in self.design.effects]
            if names[:1] != ["additive"] or len(names) < 2 or self.design.effects[1].genetic:
                raise ModelError(
                    "parameterisation='partial' integrates the additive effect in the "
                    "eigenbasis and samples the other (independent) effects: it needs an "
                    f"additive effect and other independent effects; this model has {names}."
                )
            if self.source.matrix is None and self.source.pedigree.size > 20_000:
                raise ModelError(
                    "parameterisation='partial' needs the dense A: at most 20 000 animals."
                )
        else:
            engine = "noncentred"
        fixed_options = ENGINE_CLASSES[engine].fixed_options
        if fixed == "integrate" and "integrate" not in fixed_options:
            raise ModelError("The non-centred model samples the fixed effects: use fixed='sample'.")
        if fixed == "integrate" and isinstance(self.priors.fixed, NormalFixed):
            raise ModelError(
                "Fixed effects can be integrated out only under a flat prior; drop the Normal "
                "prior on them or use fixed='sample'."
            )
        sample = "integrate" not in fixed_options or isinstance(self.priors.fixed, NormalFixed)
        if fixed == "auto":
            fixed = "sample" if sample else "integrate"
        if fixed == "sample" and "sample" not in fixed_options:
            raise ModelError(
                f"The {engine} marginal model integrates the fixed effects out under a flat "
                "prior; use parameterisation='noncentred' to sample them (e.g. under a Normal "
                "prior)."
            )
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
        return parameterisation, engine, fixed, notes

    def build(self, parameterisation: str = "auto", *, fixed: str = "auto"):
        """The PyMC model (without sampling). Returns ``pymc.Model``.

        Raises
        ------
        ModelError
            Several traits: they are sampled on the hand-derived density
            (:meth:`density`), which has no PyMC graph.
        """
        if self.design.multi_trait:
            raise ModelError(
                "Several traits are sampled by nutpie on the hand-derived density of every G0 "
                "and R0 (model.density()), not in a PyMC graph: use model.fit()."
            )
        _, engine, fixed, _ = self._resolve(parameterisation, fixed)
        return self._build(engine_for(self, engine), fixed).model

    def coords(self) -> dict[str, list[str]]:
        """The PyMC model's coordinates: the levels of every dimension of the posterior."""
        from .likelihoods import effect_dim

        coords = {
            "fixed": list(self.design.fixed_names),
            "obs": [str(r) for r in self.design.record_labels],
        }
        for effect in self.design.effects:
            coords[effect_dim(effect)] = [str(level) for level in effect.levels]
        categories = self.design.categories
        if categories is not None:  # an ordinal response's cut-points, between categories
            coords["cutpoint"] = [f"{a}|{b}" for a, b in pairwise(categories)]
        return coords

    def fixed_prior(self, pm):
        """The prior of b in the PyMC model being built: Normal where the priors say so, flat
        otherwise."""
        if isinstance(self.priors.fixed, NormalFixed):
            return pm.Normal("beta", 0.0, self.priors.fixed.scale, dims="fixed")
        return pm.Flat("beta", dims="fixed")

    def _quantities(self, pm, values) -> None:
        """Deterministics for every reported quantity (one place: ``density.quantity_values``)."""
        from .density import quantity_values

        for key, value in quantity_values(self.parameters, values).items():
            pm.Deterministic(key, value)

    def _build(self, engine: Engine, fixed: str) -> _Built:
        import pymc as pm

        with pm.Model(coords=self.coords()) as model:
            theta, values = add_parameters(
                self.priors, self.parameters, self.scales, self.fixed_parameters
            )
            self._quantities(pm, values)
            engine.add_likelihood(pm, theta, values, fixed)
        return _Built(
            model,
            engine,
            "integrated" if fixed == "integrate" else "sampled",
            self._initial_values(),
            theta,
        )

    def _initial_x(self, density) -> np.ndarray:
        """The density's unconstrained start at the REML estimate."""
        if not self.parameters.multi_trait:
            return density.unconstrained(self._initial_values())
        theta = self.reml_theta()
        floor = 1e-3 * min(self.parameters.phenotypic(theta, t) for t in self.parameters.traits)
        return density.initial(theta, floor=floor)

    def _initial_values(self) -> dict[str, float]:
        """The free variables at the REML estimate (each variance at least 1e-3 σ²P; where a
        family's latent variances are all estimated at zero, σ²P is 0 and the floor is 1e-3
        on the latent scale, whose unit is the link's)."""
        phenotypic = self.parameters.phenotypic(self.reml_theta())
        floor = 1e-3 * (phenotypic if phenotypic > 0 else 1.0)
        return initial_values(
            self.priors, self.parameters, self.reml_theta(), floor=floor,
            fixed=self.fixed_parameters,
        )  # fmt: skip

    def density(self, engine: str | None = None):
        """The hand-derived posterior density of the marginal model's variance parameters
        (:class:`~bayes_animal.bayes.density.MarginalDensity`); ``engine`` ``"spectral"``,
        ``"sparse"`` or, with several traits, ``"canonical"`` (default: the one ``auto``
        chooses)."""
        if engine is None:
            _, engine, _, _ = self._resolve("marginal", "integrate")
        if engine == "canonical":
            from ..linalg.canonical import canonical_obstacle

            obstacle = canonical_obstacle(self.design)
            if obstacle is not None:
                raise ModelError(
                    "The canonical transformation serves several traits on one random term with "
                    f"every trait on every record; this model has {obstacle}. Use engine "
                    "'sparse'."
                )
        density = engine_for(self, engine).density() if engine in ENGINE_CLASSES else None
        if density is None:
            raise ModelError(
                f"The hand-derived density is for the marginal models, not {engine!r}."
            )
        return density

    def _reml_covariance(self, jacobian: np.ndarray) -> np.ndarray | None:
        """cov(x) ≈ (Jᵀ 𝓘 J)⁻¹ at the REML start for J = ∂θ/∂x (see ``_reml_mass_matrix``);
        None at a boundary, where REML stopped short of its optimum (the information there
        describes no posterior: in a two-trait replicate of the calibration test, a residual
        variance of 9e-4 with an SE of 1.2 made whitened NUTS take 440 steps a draw, against
        15 unwhitened), or when it is not positive definite."""
        reml = self.reml
        if reml.boundary or not reml.converged:
            return None
        order = [self.parameters.names.index(n) for n in reml.parameter_names]
        information = np.asarray(reml.information, dtype=float)[np.ix_(order, order)]
        try:
            covariance = np.linalg.inv(jacobian.T @ information @ jacobian)
            np.linalg.cholesky(covariance)
        except np.linalg.LinAlgError:
            return None
        return covariance

    @_quiet_backend()
    def _reml_mass_matrix(self, built: _Built):
        """The sampler's initial mass matrix from REML: the covariance of the variance
        parameters (the inverse average information) carried to the sampler's unconstrained
        variables x by the Jacobian J = ∂θ/∂x at the REML start, cov(x) ≈ (Jᵀ 𝓘 J)⁻¹. With it the
        marginal models tune in a few hundred steps. None when it cannot be formed (a boundary
        component, REML stopped short of its optimum, sampled fixed effects)."""
        model = built.model
        free = model.free_RVs
        reml = self.reml
        if any(rv.ndim > 0 for rv in free) or reml.boundary:
            return None
        for name, value in built.initvals.items():
            model.set_initval(model[name], value)
        start = model.initial_point()
        names = [model.rvs_to_values[rv].name for rv in free]
        x0 = np.array([float(start[n]) for n in names])
        (theta,) = model.replace_rvs_by_values([built.theta])
        theta_of = model.compile_fn(theta, inputs=model.value_vars, on_unused_input="ignore")
        jacobian = np.empty((self.parameters.size, len(names)))
        for k in range(len(names)):
            step = 1e-5 * max(1.0, abs(x0[k]))
            up, down = x0.copy(), x0.copy()
            up[k] += step
            down[k] -= step
            plus = np.asarray(theta_of(dict(zip(names, up, strict=True))))
            minus = np.asarray(theta_of(dict(zip(names, down, strict=True))))
            jacobian[:, k] = (plus - minus) / (2 * step)
        covariance = self._reml_covariance(jacobian)
        if covariance is None:
            return None
        from pymc.step_methods.hmc.quadpotential import QuadPotentialFullAdapt

        return QuadPotentialFullAdapt(len(names), x0, covariance, initial_weight=10)

    def reml_theta(self) -> np.ndarray:
        """The REML estimate as a parameter vector (order of ``parameters.names``)."""
        reml = self.reml
        out = []
        for name in self.parameters.names:
            if self.parameters.is_covariance(name):
                out.append(float(reml.covariances.loc[name, "covariance"]))
            else:
                out.append(float(reml.components.loc[name, "variance"]))
        return np.array(out)

    # -- sampling ----------------------------------------------------------------------------
    def fit(
        self,
        *,
        parameterisation: Literal["auto", "marginal", "noncentred", "partial", "latent"] = "auto",
        sampler: Literal["pymc", "nutpie", "numpyro"] | None = None,
        draws: int | None = None,
        tune: int | None = None,
        chains: int = 4,
        random_seed: int | None = None,
        progressbar: bool = True,
        target_accept: float | None = None,
        fixed: Literal["auto", "integrate", "sample"] = "auto",
        warn: bool = True,
    ) -> AnimalFit:
        """Sample the posterior with NUTS and check it against REML.

        Parameters
        ----------
        parameterisation
            ``"auto"`` (chosen from the problem, and says why), ``"marginal"``,
            ``"noncentred"``, ``"partial"`` or ``"latent"``. A non-Gaussian family under
            ``auto``: the exact model (``"noncentred"``) where nutpie samples its hand-derived
            joint density, else by the Laplace approximation's check; with an
            observation-level effect (Poisson with overdispersion) whose records pin their
            latent values, ``"latent"`` — each record's latent value sampled with the
            variances, b and every u integrated out exactly (:mod:`bayes_animal.bayes.latent`)
            — where its gradient is not too dear against the joint's
            (:func:`~bayes_animal.choice.choose_family_engine`); ``"marginal"`` is its Laplace
            marginal model.
        sampler
            ``"pymc"``, ``"nutpie"``, ``"numpyro"`` (NUTS) or ``"independence"``
            (Metropolis–Hastings with a t proposal near the posterior mean, for a marginal model
            with the fixed effects integrated: :mod:`bayes_animal.bayes.independence`); None
            takes the default (each engine's ``default_sampler``, :data:`DEFAULT_SAMPLERS`:
            nutpie on the hand-derived density for the spectral and sparse marginal models
            and several traits, PyMC's NUTS for the partial model, nutpie through PyMC
            for the non-centred one — on its hand-derived joint density for a non-Gaussian
            family (:mod:`bayes_animal.bayes.joint`) — the fastest end to end in
            ``benchmarks/``), except that a
            sparse marginal model whose NUTS would take over 10 minutes
            (:func:`~bayes_animal.choice.choose_sampler`) takes ``"independence"``.
        draws, tune, chains
            Draws kept per chain (default 1000; 3000 for the exact model of a non-Gaussian
            family: on the simulated threshold trait of ``benchmarks/`` (seeds 1–4) its
            4 × 2 000 draws gave an ESS(h²) of 406–458 and R-hat up to 1.017, 4 × 3 000 gave
            583–710 and R-hat 1.003–1.008 in 8–9 s, at a higher ESS per second). Not given, a
            run whose reported quantities fail the diagnostics' limits (R-hat > 1.01, bulk or
            tail ESS < 400) samples as many chains again, once, and keeps both
            (:mod:`bayes_animal.bayes.extension`; the notes say so; the independence
            sampler's new chains start from the same fitted proposal); a given ``draws``
            runs as asked. Tuning steps per
            chain (default: 300 for nutpie on a marginal
            model's density, which starts whitened by the REML covariance; 500 for PyMC on a
            marginal model, which starts at REML with its covariance as the mass matrix, and
            for the exact model of a non-Gaussian family; 1000 for the others; 0 for the
            independence sampler, whose proposal is fitted, not tuned: its chains start at a
            draw from it), chains.
        random_seed
            Seed for the sampler and for the conditional draws of b and the effects. None
            draws one (from the operating system's entropy), which is recorded in the
            provenance (``idata.attrs``, ``AnimalFit.random_seed``) and the notes: a fit with
            that seed gives the same draws.
        progressbar
            Show progress bars (PyMC's needs a terminal or notebook).
        target_accept
            NUTS target acceptance rate (default: 0.8 for the marginal models of one trait,
            whose few parameters have a smooth posterior, and for the exact model of a
            non-Gaussian family (measured); 0.6 for the latent values' model
            (:data:`LATENT_TARGET_ACCEPT`, measured); 0.9 for several traits and for the
            others). Not given, a default run (no ``draws``) whose chains diverge is drawn
            again at :data:`~bayes_animal.bayes.extension.REDRAW_TARGET_ACCEPT` (0.95) and
            its divergent chains dropped, once for the first run and once for an extension's
            chains; the notes say so.
        fixed
            ``"auto"``, ``"integrate"`` (flat prior, marginal models) or ``"sample"``.
        warn
            Issue warnings for failed diagnostics or a REML estimate outside the HDI.

        Returns
        -------
        AnimalFit
        """
        start = time.perf_counter()
        drawn_seed = random_seed is None
        if drawn_seed:  # kept, so that the fit can be repeated
            random_seed = int(np.random.SeedSequence().generate_state(1)[0])
        parameterisation, engine, fixed, notes = self._resolve(
            parameterisation,
            fixed,
            (chains, draws or 1000, 500 if tune is None else tune),
            sampler,
        )
        engine_object = engine_for(self, engine)
        if self._reml is None:
            self._fit_engine = engine
        marginal = engine_object.marginal
        default_run = draws is None  # extended where its diagnostics fail (bayes.extension)
        if draws is None:  # the exact model of a family: R-hat ≤ 1.01 needs 4 × 3 000
            draws = 3000 if not (self.design.family.gaussian or marginal) else 1000
        # where NUTS's gradients are too dear, independence Metropolis-Hastings; at a REML
        # boundary, where the posterior is far from the Gaussian its proposal is fitted to,
        # its chains run BOUNDARY_THIN times longer and keep every BOUNDARY_THIN-th draw
        if sampler is None and engine == "sparse" and fixed == "integrate":
            tuned = tune if tune is not None else 300  # nutpie on the density's default
            choice = choose_sampler(self.mme.analysis.flops, self.mme.size, chains, draws, tuned)
            if choice is not None:
                sampler = choice.engine
                notes = [*notes, f"sampler: {choice.reason}"]
        default = "nutpie" if self.design.multi_trait else engine_object.default_sampler
        sampler = _choice(sampler or default, SAMPLERS, "sampler")
        if self.design.multi_trait and sampler not in ("nutpie", "independence"):
            raise ModelError(
                f"Several traits are sampled by nutpie on the hand-derived density (LKJ or "
                f"inverse-Wishart priors on every G0 and R0); sampler={sampler!r} is for one "
                "trait. Use sampler='nutpie' (the default) or 'independence'."
            )
        if engine == "latent" and sampler != "nutpie":
            raise ModelError(
                f"The latent values' model is sampled by nutpie on its hand-derived density; "
                f"sampler={sampler!r} is not for it. Use sampler='nutpie' (the default), or "
                "parameterisation='noncentred' for PyMC's or numpyro's NUTS."
            )
        independence = sampler == "independence"
        if independence and self.reml.boundary:
            notes = [
                *notes,
                f"sampler: REML has a component at its boundary, where the posterior is far "
                f"from Gaussian: each independence chain runs {BOUNDARY_THIN} × {draws} "
                f"iterations and keeps every {BOUNDARY_THIN}th.",
            ]
        if independence and not (marginal and fixed == "integrate"):
            raise ModelError(
                "sampler='independence' samples a marginal model's variance parameters (b and "
                f"every u integrated out); engine {engine!r} with fixed={fixed!r} is not one. "
                "Use parameterisation='marginal' with the fixed effects integrated, or another "
                "sampler."
            )
        direct = sampler in ("nutpie", "independence") and marginal and fixed == "integrate"
        # the exact model of a non-Gaussian family: on a threshold trait of the gryphon
        # pedigree, nutpie at 0.8 took 15 leapfrog steps a draw against 31 at 0.9 for the same
        # ESS(h²) and no divergence, and 500 tuning steps gave the ESS of 1 000 (seeds 1, 2)
        exact_family = not self.design.family.gaussian and not marginal
        # the latent values' model: its mass matrix adapts over every record's latent value,
        # and on the large counts of family_engines (seed 1) tune 300 at 0.8 left R-hat 1.013
        # with its chains doubled, tune 500 at 0.9 gave 1.003 with four
        latent = engine == "latent"
        if tune is None:  # measured on seed_sim: tune 200, 300 and 500 gave the same ESS(h²)
            tune = 300 if direct and not latent else (500 if marginal or exact_family else 1000)
            tune = 0 if independence else tune  # its proposal is fitted, not tuned
        redraw = target_accept is None  # a default run that diverged is drawn again, slower
        if target_accept is None:  # several traits: 0.9 removed the divergences of the
            # gryphon bivariate model's seed 1 and raised its ESS per second (benchmarks/)
            several = self.design.multi_trait
            gentle = (marginal and not several) or exact_family
            target_accept = LATENT_TARGET_ACCEPT if latent else (0.8 if gentle else 0.9)
        if exact_family:
            notes = [*notes, *self._centring_notes()]
        if progressbar:
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
        reml = self.reml
        timings = {"reml": time.perf_counter() - start}
        # Chains in parallel on the cores other processes leave free, one BLAS thread each,
        # where a gradient costs enough: gryphon model 4 (sparse marginal) sampled in 40.6 s
        # on two cores against 83.1 s one chain after another. The spectral model's gradients
        # are so cheap that PyMC's worker processes cost more than they save (4.8 s against
        # 4.0 s on seed_sim), so with PyMC its chains run in turn; nutpie on the density runs
        # its two chain groups in two processes where a core is free (bayes.sampling).
        cores = min(chains, default_threads()) if direct or engine_object.parallel_pymc else 1
        options = {
            "draws": draws, "tune": tune, "chains": chains, "cores": cores,
            "random_seed": random_seed, "progressbar": progressbar,
            "target_accept": target_accept,
        }  # fmt: skip
        unknowns = None
        # the exact model of a family under nutpie: its hand-derived joint density, where it
        # serves the model (nothing to compile: nutpie compiling the PyMC model took 2-4 s of
        # a 7-11 s fit of a threshold trait on the gryphon pedigree)
        joint_density = (
            engine_object.joint_density() if exact_family and sampler == "nutpie" else None
        )
        built = None
        if direct:
            density = engine_object.density()
            sample_start = time.perf_counter()
            if independence:  # the proposal fitted once, for the chains and any extension
                proposal, proposal_seconds = self._independence_proposal(density)
                carried: list = []  # each run's draws of every unknown (chain × draw × …)

                def sample(**chosen):
                    idata, unknowns = self._sample_independence(density, proposal, **chosen)
                    carried.append(unknowns)
                    idata.attrs["proposal_seconds"] = proposal_seconds
                    return idata

            else:

                def sample(**chosen):
                    return self._sample_density(density, **chosen)

        elif joint_density is not None:
            notes = [
                *notes,
                "sampler: nutpie on the exact model's hand-derived joint density (no model to "
                "compile).",
            ]
            sample_start = time.perf_counter()

            def sample(**chosen):
                return self._sample_joint(joint_density, **chosen)

        else:
            built = self._build(engine_object, fixed)
            sample_start = time.perf_counter()

            def sample(**chosen):
                return self._sample_pymc(built, sampler, **chosen)

        idata = sample(**options)
        if default_run:
            if redraw:
                idata, options, note = self._redrawn(idata, sample, options, progressbar)
                notes = [*notes, note] if note else notes
            idata, added = self._extended(idata, sample, options, progressbar, redraw)
            notes = [*notes, *added]
            # the highest target any kept chain was drawn at (an extension may raise it)
            target_accept = max(options["target_accept"], idata.attrs.get("redrawn_at", 0.0))
            chains = int(idata.posterior.sizes["chain"])
        if independence and all(u is not None for u in carried):
            unknowns = np.concatenate(carried, axis=0)  # the extension's chains after the first
        sample_wall = time.perf_counter() - sample_start
        sampling = float(
            idata.posterior.attrs.get(
                "sampling_time", idata.attrs.get("sampling_time", sample_wall)
            )
        )
        sampling = min(sampling, sample_wall)
        conditional_start = time.perf_counter()
        self._add_conditional_draws(idata, engine_object, fixed, random_seed, unknowns)
        timings |= {
            "compile": sample_wall - sampling,
            "sampling": sampling,
            "conditional": time.perf_counter() - conditional_start,
        }
        if joint_density is not None:  # nothing compiled: the rest formed every u from z
            timings["conditional"] += timings["compile"]
            timings["compile"] = 0.0
        reliability_start = time.perf_counter()
        diagonals = {e.name: self.structures[e.name].diagonal() for e in self.design.effects}
        reliabilities, note = self._reliabilities(idata, engine_object)
        notes = [*notes, note] if note else notes
        timings["reliability"] = time.perf_counter() - reliability_start
        if self._problem is not None:
            timings["eigh"] = self._problem.seconds
        if self._canonical is not None:
            timings["eigh"] = self._canonical.seconds
        fixed_effects = "integrated" if fixed == "integrate" else "sampled"
        idata.attrs.update(
            self._provenance(
                sampler, parameterisation, engine, fixed_effects,
                draws, tune, chains, random_seed, target_accept,
            )
        )  # fmt: skip
        idata.attrs["cores"] = cores  # chains run at once (see above)
        quantities = [
            q for q in self.parameters.quantities()
            if not (q.kind == "variance" and q.source in self.fixed_parameters)
        ]  # fmt: skip
        keys = [q.key for q in quantities]
        if not self.design.family.gaussian:
            notes = [*notes, *self._observed_scale(idata, engine_object)]
            if OBSERVED_H2 in idata.posterior:
                keys.append(OBSERVED_H2)
        sensitivity = self._prior_sensitivity(idata, keys)
        summary = component_summary(idata, keys)
        diagnostics = diagnose(
            idata, summary, parameterisation=parameterisation, warn=warn,
            several_traits=self.design.multi_trait, exact_family=exact_family,
            sensitivity=sensitivity, alternative=self._alternative(engine),
            target_accept=target_accept if sampler != "independence" else None,
        )  # fmt: skip
        if direct:
            joint = self._joint_mode_of_density(density)
        else:
            joint = self._joint_mode(built) if marginal else None
        check = reml_check(summary, reml, quantities, joint_mode=joint, warn=warn)
        timings["total"] = time.perf_counter() - start
        return AnimalFit(
            idata=idata,
            reml=reml,
            reml_check=check,
            diagnostics=diagnostics,
            sampler=sampler,
            parameterisation=parameterisation,
            fixed_effects=fixed_effects,
            timings=timings,
            parameters=self.parameters,
            diagonals=diagonals,
            reliabilities=reliabilities,
            notes=tuple(
                [
                    *notes,
                    f"engine: {engine}",
                    f"random seed: {random_seed}"
                    + (" (drawn; pass it to repeat this fit)" if drawn_seed else ""),
                ]
            ),
            random_seed=random_seed,
            _summary=summary,
        )

    @staticmethod
    def _require_nutpie() -> None:
        """nutpie imported, or the user's error saying how to install it."""
        from .sampling import import_nutpie

        try:
            import_nutpie()
        except ImportError as exc:  # only nutpie's own import: other errors stay as they are
            raise ModelError(
                f"The 'nutpie' sampler is not installed ({exc}). Install it "
                "(pip install nutpie) or use sampler='pymc'."
            ) from exc

    def _sample_density(self, density, *, random_seed, **options):
        """nutpie on the hand-derived density, whitened by the REML covariance."""
        from .sampling import sample_density

        self._require_nutpie()
        marginal = getattr(density, "marginal", density)  # a LatentDensity's variances
        x0 = self._initial_x(marginal)
        covariance = self._reml_covariance(marginal.theta_jacobian(x0))
        latent = None
        if marginal is not density:  # the latent values from their mode at REML's θ
            x0, latent = density.start(x0)
        return sample_density(
            density.without_draws(), x0, covariance, seed=random_seed,
            meanwhile=import_summary_libraries, latent_variances=latent, **options,
        )  # fmt: skip

    def _redrawn(self, idata, sample, options: dict, progressbar: bool, run: str = "the"):
        """A default run's chains or, where they diverged at a target acceptance below
        :data:`~bayes_animal.bayes.extension.REDRAW_TARGET_ACCEPT`, every chain drawn again at
        it (:mod:`bayes_animal.bayes.extension`): the draws, the options they were drawn with
        and a note (None where nothing was redrawn; ``run`` names the run in it). The
        divergent run's sampling time is counted in the new run's."""
        from . import extension

        divergent = extension.divergences(idata)
        accept = float(options["target_accept"])
        if not divergent or accept >= extension.REDRAW_TARGET_ACCEPT:
            return idata, options, None
        chains = int(idata.posterior.sizes["chain"])
        note = (
            f"{divergent} divergent transitions at target_accept {accept:g} in {run} run's "
            f"{chains} chains: they were drawn again at {extension.REDRAW_TARGET_ACCEPT:g} and "
            "the divergent ones dropped (a default run that diverges is redrawn once with "
            "shorter steps; a given target_accept= runs as asked)."
        )
        if progressbar:
            print(f"note: {note}", file=sys.stderr)
        options = options | {"target_accept": extension.REDRAW_TARGET_ACCEPT}
        seed = extension.redraw_seed(options["random_seed"])
        redrawn = sample(**(options | {"random_seed": seed}))
        spent = idata.posterior.attrs.get("sampling_time", idata.attrs.get("sampling_time"))
        for attrs in (redrawn.attrs, redrawn.posterior.attrs):
            if spent is not None and "sampling_time" in attrs:
                attrs["sampling_time"] = float(attrs["sampling_time"]) + float(spent)
        redrawn.attrs["redrawn_at"] = extension.REDRAW_TARGET_ACCEPT
        return redrawn, options, note

    def _extended(self, idata, sample, options: dict, progressbar: bool, redraw: bool):
        """A default run's chains and, where a reported quantity fails the diagnostics'
        limits, as many more (:mod:`bayes_animal.bayes.extension`; where ``redraw``, those
        redrawn at a higher target acceptance if they diverged, as the first run's are): the
        draws and the notes (none where nothing was added)."""
        from . import extension
        from .likelihoods import effect_variable

        keys = [q.key for q in self.parameters.quantities()]
        bad = extension.failing(idata, keys)
        if not bad:
            return idata, []
        chains = int(idata.posterior.sizes["chain"])
        said = (
            f"{', '.join(bad)} failed R-hat ≤ {extension.RHAT_LIMIT} or ESS ≥ "
            f"{extension.ESS_LIMIT} after {chains} chains"
        )
        held = extension.posterior_bytes(idata)
        effects = self.design.effects
        if not any(effect_variable(e.name) in idata.posterior for e in effects):
            # a marginal model: b and every u are drawn afterwards, one per draw
            unknowns = self.design.n_fixed + sum(len(e.levels) for e in effects)
            held += 8 * unknowns * chains * int(idata.posterior.sizes["draw"])
        if 2 * held > extension.EXTENSION_MAX_BYTES:
            return idata, [
                f"{said}; no more were drawn, as their draws would pass "
                f"{extension.EXTENSION_MAX_BYTES / 1024**3:.0f} GiB (run longer with draws=…)."
            ]
        note = (
            f"{said}: {chains} more were drawn (a default run is extended once where its "
            "diagnostics fail; a given draws= runs as asked)."
        )
        if progressbar:
            print(f"note: {note}", file=sys.stderr)
        options = options | {"random_seed": extension.extension_seed(options["random_seed"])}
        more = sample(**options)
        redrawn = None
        if redraw:
            more, options, redrawn = self._redrawn(more, sample, options, progressbar, "the added")
        joined = extension.join_chains(idata, more)
        if "redrawn_at" in more.attrs:
            joined.attrs["redrawn_at"] = more.attrs["redrawn_at"]
        return joined, [note, redrawn] if redrawn else [note]

    def _sample_joint(self, density, *, random_seed, **options):
        """nutpie on the hand-derived exact joint density of a family
        (:class:`~bayes_animal.bayes.joint.JointDensity`), from the REML variances and fixed
        effects with every z at 0; nutpie adapts its mass matrix from the identity."""
        from .sampling import sample_joint

        self._require_nutpie()
        start = density.start(self._initial_values(), np.asarray(self.reml.beta_values))
        return sample_joint(
            density, start, seed=random_seed, meanwhile=import_summary_libraries, **options
        )

    def _independence_proposal(self, density):
        """The independence sampler's t proposal, fitted near the posterior mean
        (:func:`~bayes_animal.bayes.independence.fit_proposal`), and its seconds."""
        from .independence import fit_proposal

        x0 = self._initial_x(density)
        fallback = self._reml_covariance(density.theta_jacobian(x0))
        clock = time.perf_counter()
        try:
            proposal = fit_proposal(density, x0, fallback)
        except ValueError as exc:  # the proposal misses the posterior: the way out
            raise ModelError(str(exc)) from exc
        return proposal, time.perf_counter() - clock

    def _sample_independence(self, density, proposal, *, random_seed, target_accept, **options):
        """Independence Metropolis–Hastings on the hand-derived density from ``proposal``
        (:mod:`bayes_animal.bayes.independence`); returns the DataTree and the draws of every
        unknown carried by the chains (None for a likelihood that gives none: they are drawn
        afterwards)."""
        from .independence import sample_independence

        clock = time.perf_counter()
        try:
            idata, unknowns = sample_independence(
                density, proposal, seed=random_seed, meanwhile=import_summary_libraries,
                keep_unknowns=True, thin=BOUNDARY_THIN if self.reml.boundary else 1, **options,
            )  # fmt: skip
        except ValueError as exc:  # the proposal misses the posterior: the way out
            raise ModelError(str(exc)) from exc
        # the chains' time: the proposal's fitting goes to the fit's "compile" stage
        idata.attrs["sampling_time"] = time.perf_counter() - clock
        return idata, unknowns

    def _sample_pymc(self, built: _Built, sampler: str, **options):
        """PyMC's NUTS (or nutpie / numpyro through PyMC) on the PyMC model."""
        import pymc as pm

        target_accept = options.pop("target_accept")
        kwargs: dict[str, Any] = {
            "nuts": {"target_accept": target_accept},
            "initvals": built.initvals,
        }
        if sampler == "pymc":
            kwargs.update(compute_convergence_checks=False, blas_cores=1)
            potential = self._reml_mass_matrix(built) if built.engine.marginal else None
            if potential is not None:
                with built.model, _quiet_backend():
                    kwargs["step"] = pm.NUTS(potential=potential, target_accept=target_accept)
                kwargs.pop("nuts")
        try:
            with built.model, _quiet_backend():
                return pm.sample(nuts_sampler=sampler, **options, **kwargs)
        except (ImportError, ModuleNotFoundError) as exc:
            raise ModelError(
                f"The {sampler!r} sampler is not installed ({exc}). Install it "
                f"(pip install 'bayes_animal[{sampler}]') or use sampler='pymc'."
            ) from exc

    def _joint_mode_of_density(self, density) -> dict[str, float] | None:
        """The joint posterior mode (see ``_joint_mode``) of the hand-derived density; None
        for a density of latent values too (its joint mode is over every record's)."""
        from scipy.optimize import minimize

        if hasattr(density, "latent_draws"):
            return None

        from .density import quantity_values

        def objective(x):
            value, gradient = density(x, jacobian=False)
            return (-value, -gradient) if np.isfinite(value) else (np.inf, np.zeros_like(x))

        x0 = self._initial_x(density)
        best = minimize(objective, x0, jac=True, method="L-BFGS-B")
        if not np.isfinite(best.fun):
            return None
        theta = dict(zip(self.parameters.names, density.theta(best.x), strict=True))
        values = density.constrained(best.x) | quantity_values(self.parameters, theta)
        return {q.key: float(values[q.key]) for q in self.parameters.quantities()}

    @_quiet_backend()
    def _joint_mode(self, built: _Built) -> dict[str, float] | None:
        """The joint posterior mode of the variance parameters, on the scale of the variances
        (the density without the Jacobian of the sampler's transforms), from the REML start by
        L-BFGS; under flat priors it is the REML estimate. None for models with vector-valued
        free variables (sampled fixed effects)."""
        from scipy.optimize import minimize

        model = built.model
        free = model.free_RVs
        if any(rv.ndim > 0 for rv in free):
            return None
        for name, value in built.initvals.items():
            model.set_initval(model[name], value)
        start = model.initial_point()
        names = [model.rvs_to_values[rv].name for rv in free]
        logp = model.compile_logp(jacobian=False)
        dlogp = model.compile_dlogp(jacobian=False)

        def objective(x):
            point = dict(zip(names, x, strict=True))
            return -float(logp(point)), -np.asarray(dlogp(point), dtype=float)

        best = minimize(objective, np.array([start[n] for n in names]), jac=True, method="L-BFGS-B")
        if not np.isfinite(best.fun):
            return None
        keys = [q.key for q in self.parameters.quantities()]
        outputs = model.replace_rvs_by_values([model[k] for k in keys])
        evaluate = model.compile_fn(outputs, inputs=model.value_vars, on_unused_input="ignore")
        values = evaluate(dict(zip(names, best.x, strict=True)))
        return {k: float(v) for k, v in zip(keys, values, strict=True)}

    def _prior_sensitivity(self, idata, keys: list[str]) -> pd.Series | None:
        """The log prior of the variance parameters per draw
        (:meth:`~bayes_animal.bayes.density.MarginalDensity.log_prior`: one function, whichever
        engine and sampler drew them; the fixed effects' and non-centred effects' priors are
        not power-scaled), kept as the ``log_prior`` group, and the power-scaling sensitivity
        of every variance and ratio to it
        (:func:`~bayes_animal.results.posterior.prior_sensitivity`)."""
        import xarray as xr

        from ..results.posterior import prior_sensitivity
        from .density import MarginalDensity

        prior = MarginalDensity(
            self.priors, self.parameters, self.scales, None, self.fixed_parameters
        )
        posterior = idata.posterior
        log_prior = prior.log_prior(
            {v.name: posterior[v.name].values for v in prior.variables if v.name in posterior}
        )
        if log_prior is None:
            return None
        coords = {"chain": posterior["chain"].values, "draw": posterior["draw"].values}
        idata["log_prior"] = xr.DataTree(
            xr.Dataset({"variances": (("chain", "draw"), log_prior)}, coords=coords)
        )
        return prior_sensitivity(idata, keys)

    def _observed_scale(self, idata, engine: Engine) -> list[str]:
        """A non-Gaussian family: ``h2_observed`` per draw (from its θ and b) added to the
        posterior, and what the Laplace engine's importance weights say (notes)."""
        from ..spec.family import observed_heritability_draws
        from .conditional import posterior_thetas

        posterior = idata.posterior
        notes = []
        if "additive" in self.parameters.names and self.design.family.name != "ordinal":
            thetas = posterior_thetas(self.parameters, posterior)
            chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
            beta = posterior["beta"].values.reshape(chains * draws, -1)
            family = self.design.family
            random = [
                self.parameters.index(n) for n in family.latent_terms(self.parameters.variances)
            ]
            values = observed_heritability_draws(
                family,
                self.design.X,
                beta,
                thetas[:, random].sum(axis=1),
                thetas[:, self.parameters.index("additive")],
            )
            idata["posterior"] = posterior.to_dataset().assign(
                {
                    OBSERVED_H2: (
                        ("chain", "draw"),
                        values.reshape(chains, draws),
                    )
                }
            )
        log_weights = getattr(engine, "log_weights", None)
        if log_weights is not None:
            khat = pareto_khat(log_weights)
            idata.attrs["laplace_khat"] = khat
            verdict = (
                "the approximation is close to the exact conditional"
                if khat <= LAPLACE_KHAT_LIMIT
                else "the approximation is poor here: refit with parameterisation='noncentred' "
                "(exact) before trusting the variances"
            )
            notes.append(
                f"Laplace approximation: Pareto k̂ of the draws' importance weights {khat:.2f} "
                f"({verdict})."
            )
        return notes

    def _reliabilities(self, idata, engine: Engine) -> tuple[dict[str, np.ndarray], str]:
        """Per effect, the engine's posterior reliabilities (:meth:`Engine.reliabilities`)
        over the posterior draws of θ, in the order of the posterior's levels; and a note
        where they could not be computed (the EBV tables then fall back to the Monte Carlo
        estimate, clipped to [0, 1])."""
        from ..errors import BayesAnimalError
        from .conditional import posterior_thetas
        from .likelihoods import effect_variable

        thetas = posterior_thetas(self.parameters, idata.posterior)
        try:
            values = engine.reliabilities(thetas)
        except (BayesAnimalError, np.linalg.LinAlgError, MemoryError) as exc:
            return {}, (
                "reliabilities from the posterior variance of each level, clipped to [0, 1] "
                f"(the conditional ones could not be computed: {exc})"
            )
        out = {}
        for effect in self.design.effects:
            variable = effect_variable(effect.name)
            if variable not in idata.posterior or effect.name not in values:
                continue
            data = idata.posterior[variable]
            labels = [str(level) for level in data[data.dims[-1]].values]
            ids, reliability = values[effect.name]
            position = {str(level): k for k, level in enumerate(ids)}
            out[effect.name] = np.asarray(reliability)[[position[label] for label in labels]]
        return out, ""

    def _add_conditional_draws(
        self, idata, engine: Engine, fixed: str, seed: int | None, unknowns=None
    ) -> None:
        """Draw b and every random effect for each posterior draw, where the engine integrated
        them out — once (:meth:`~bayes_animal.bayes.engines.Engine.draws`) — or take those the
        sampler carried (``unknowns``: chain × draw × the equations' unknowns)."""
        import xarray as xr

        from .likelihoods import effect_dim, effect_variable

        posterior = idata.posterior
        rng = np.random.default_rng(None if seed is None else seed + 7919)
        if unknowns is None:
            new_draws = engine.draws(posterior, fixed, rng)
        else:
            new_draws = engine.split_unknowns(unknowns.reshape(-1, unknowns.shape[-1]))
        if not new_draws:
            return
        posterior = posterior.to_dataset().drop_vars(list(engine.transient))
        chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
        coords = {"chain": posterior["chain"].values, "draw": posterior["draw"].values}
        levels = {"beta": ("fixed", self.design.fixed_names)}
        for effect in self.design.effects:
            levels[effect_variable(effect.name)] = (effect_dim(effect), effect.levels)
        new = {}
        for name, values in new_draws.items():
            dim, labels = levels[name]
            new[name] = xr.DataArray(
                values.reshape(chains, draws, -1),
                dims=("chain", "draw", dim),
                coords={**coords, dim: [str(level) for level in labels]},
            )
        idata["posterior"] = posterior.assign(new)

    def _provenance(
        self, sampler, parameterisation, engine, fixed, draws, tune, chains, seed, target
    ):
        options = {
            "formula": self.formula,
            "animal": self.animal,
            "traits": list(self.design.traits),
            "components": list(self.parameters.names),
            "sampler": sampler,
            "parameterisation": parameterisation,
            "engine": engine,
            "fixed_effects": fixed,
            "draws": draws,
            "tune": tune,
            "chains": chains,
            "random_seed": seed,
            "target_accept": target,
            "relationship": None if self.source is None else self.source.kind,
        }
        return {
            "bayes_animal_version": __version__,
            "model_options": json.dumps(options),
            "priors": self.priors_text(),
            "data_sha256": self.data_hash(),
        }
