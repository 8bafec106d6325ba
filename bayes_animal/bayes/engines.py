r"""One object per engine of the Bayesian fit: each owns its PyMC likelihood, its NumPy density,
its draws of b and every random effect, its default sampler and its cost estimate.

=================  ===================  =============================================  ==========
engine             parameterisation     what NUTS moves in; how b and u come back      sampler
=================  ===================  =============================================  ==========
``spectral``       marginal             the variances; b, u drawn exactly per draw in  nutpie on
                                        the eigenbasis of :math:`ZKZ^\top`              the density
``sparse``         marginal             the variances; b, every u drawn per draw by    PyMC
                                        perturb-and-solve on the mixed-model equations
``canonical``      marginal             several traits' G0 and R0 (one random term,    nutpie on
                                        every trait on every record); b, every u       the density
                                        drawn exactly per draw in the eigenbasis
``noncentred``     noncentred           the variances, b and every unit normal z       nutpie via
                                                                                       PyMC
``partial``        partial              the variances and the non-additive z; b, the   PyMC
                                        additive u drawn in the eigenbasis
``laplace``        marginal             a non-Gaussian family's variances, b and u     nutpie on
                                        integrated by the Laplace approximation; b, u  the density
                                        drawn from its Gaussian, importance-weighted
``latent``         latent               a family's variances and each record's latent  nutpie on
                                        value (its observation-level effect), b and    the density
                                        every u integrated exactly; b, u drawn per
                                        draw by perturb-and-solve with l as records
=================  ===================  =============================================  ==========

A non-Gaussian family is served by ``laplace`` (approximate), ``noncentred`` (exact: the
family's likelihood at :math:`\eta = Xb + \sum Z_k u_k`, everything sampled) and, where it
has an observation-level effect, ``latent`` (exact: :mod:`bayes_animal.bayes.latent`).

An engine holds the :class:`~bayes_animal.bayes.model.AnimalModel` it serves and reads from it
the numerics that the model caches once (the design, the structures, the eigendecomposition
``problem``, the analysed equations ``mme``); the model holds the data, the priors and the
engine the chooser (:mod:`bayes_animal.choice`) picked, and nothing in the model switches on
an engine's name. The costs are the chooser's formulas (:func:`bayes_animal.choice.engine_cost`),
so that what an engine says it costs and what the chooser compared are the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..choice import engine_cost, facts
from ..spec.parameters import variance_name
from .sampling import LATENT

if TYPE_CHECKING:
    from .model import AnimalModel

__all__ = [
    "ENGINE_CLASSES",
    "CanonicalEngine",
    "Engine",
    "LaplaceEngine",
    "LatentEngine",
    "NonCentredEngine",
    "PartialEngine",
    "SparseEngine",
    "SpectralEngine",
    "engine_for",
]


class Engine:
    """What every engine does (the four below implement it; no stubs)."""

    name: ClassVar[str]
    parameterisation: ClassVar[str]
    #: The default sampler, the fastest end to end at default settings (``benchmarks/``).
    default_sampler: ClassVar[str]
    #: Whether b and every random effect are integrated out (NUTS over the variances alone).
    marginal: ClassVar[bool] = True
    #: Whether PyMC's chains run in worker processes (a gradient costs enough to pay for them).
    parallel_pymc: ClassVar[bool] = True
    #: How the engine can treat b: integrated out under a flat prior, sampled, or both.
    fixed_options: ClassVar[tuple[str, ...]] = ("integrate", "sample")
    #: The REML engine that shares this engine's numerics ("spectral", "canonical": its
    #: eigendecomposition),
    #: or None to leave REML to :func:`bayes_animal.choice.choose_reml`.
    reml_engine: ClassVar[str | None] = None
    #: Whether it serves Gaussian traits (the Laplace engine is for the other families only;
    #: the non-centred one serves both).
    gaussian: ClassVar[bool] = True
    #: Whether it serves only models of several traits (the canonical transformation).
    several_traits_only: ClassVar[bool] = False
    #: Posterior variables its sampler keeps only for its draws of b and u, removed after.
    transient: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: AnimalModel) -> None:
        self.model = model

    def cost(self, gradients: int) -> float:
        """Estimated seconds of a fit of ``gradients`` gradients."""
        return engine_cost(self.name, facts(self.model.inputs), gradients)

    def likelihood(self):
        """θ → (ℓ_R(θ), ∇ℓ_R(θ)) in NumPy, for the hand-derived density; None where b or u are
        sampled."""
        return None

    def density(self):
        """The posterior density of the variance parameters in NumPy
        (:class:`~bayes_animal.bayes.density.MarginalDensity`); None where there is none."""
        likelihood = self.likelihood()
        if likelihood is None:
            return None
        from .density import MarginalDensity

        m = self.model
        return MarginalDensity(m.priors, m.parameters, m.scales, likelihood, m.fixed_parameters)

    def add_likelihood(self, pm, theta, values: dict[str, Any], fixed: str) -> None:
        """Add the likelihood to the PyMC model being built (inside its context)."""
        raise NotImplementedError(self.name)  # pragma: no cover - every engine defines it

    def draws(self, posterior, fixed: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """b and every random effect per posterior draw where they were integrated out:
        ``{variable: array (draws, levels)}`` (empty where they were sampled)."""
        return {}

    def reliabilities(self, thetas: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per random effect, its level ids and their posterior reliabilities
        :math:`1 - E[\\mathrm{PEV}(\\theta)/(\\sigma^2_k(\\theta) k_{ii}) \\mid y]` over
        draws of θ (:func:`~bayes_animal.bayes.conditional.expected_reliability`, from the
        mixed-model equations)."""
        from .conditional import expected_reliability

        m = self.model
        diagonals = {e.name: m.structures[e.name].diagonal() for e in m.design.effects}
        # a non-Gaussian family's PEVs come from H at the conditional mode (the Laplace
        # approximation's curvature)
        equations = m.mme if m.design.family.gaussian else m.laplace
        values = expected_reliability(equations, thetas, diagonals)
        return {name: (m.structures[name].ids, value) for name, value in values.items()}


class SpectralEngine(Engine):
    """One random effect, in the eigenbasis of :math:`ZKZ^\\top` (O(n) per gradient)."""

    name = "spectral"
    parameterisation = "marginal"
    default_sampler = "nutpie"
    reml_engine = "spectral"
    #: PyMC's worker processes cost more than they save on gradients this cheap (seed_sim:
    #: 4.8 s against 4.0 s), so with PyMC its chains run in turn.
    parallel_pymc = False

    def likelihood(self):
        from .density import spectral_likelihood

        return spectral_likelihood(self.model.problem)

    def add_likelihood(self, pm, theta, values, fixed):
        from . import likelihoods

        m = self.model
        effect = m.design.effects[0].name
        beta = m.fixed_prior(pm) if fixed == "sample" else None
        likelihoods.spectral_marginal(pm, m.problem, values[effect], values["residual"], beta)

    def draws(self, posterior, fixed, rng):
        return _eigenbasis_draws(self.model, posterior, fixed, rng, y_rot=None)

    def reliabilities(self, thetas):
        """From the eigenbasis (:func:`~bayes_animal.bayes.conditional.spectral_reliability`):
        no mixed-model equations, so a singular or dense K costs no factorisation."""
        from .conditional import spectral_reliability

        m = self.model
        values = spectral_reliability(m.problem, m.design, m.relmat, thetas)
        return {m.design.effects[0].name: (m.relmat.ids, values)}


class SparseEngine(Engine):
    """Any model, through the sparse mixed-model equations (a factorisation per gradient)."""

    name = "sparse"
    parameterisation = "marginal"
    fixed_options = ("integrate",)
    #: nutpie on the hand-derived density (medians of seeds 1–4, `sampler_choice.md`: gryphon
    #: model 4, 90 ESS(h²)/s against PyMC's 55; 500 animals with a cage-like group, 120
    #: against 67 — PyMC led on model 4, 46 against 31, before the equations' evaluation lost
    #: its overheads).
    default_sampler = "nutpie"

    def likelihood(self):
        from .density import sparse_likelihood

        return sparse_likelihood(self.model.mme)

    def add_likelihood(self, pm, theta, values, fixed):
        from .op import RestrictedLikelihood

        pm.Potential("restricted_loglik", RestrictedLikelihood(self.model.mme)(theta)[0])

    def draws(self, posterior, fixed, rng):
        from .conditional import draw_from_mixed_model, posterior_thetas

        thetas = posterior_thetas(self.model.parameters, posterior)
        return self.split_unknowns(draw_from_mixed_model(self.model.mme, thetas, rng=rng))

    def split_unknowns(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Draws of the equations' unknowns (draws × unknowns) as ``beta`` and each effect's
        variable."""
        return _equations_unknowns(self.model, w)


class CanonicalEngine(Engine):
    """Several traits on one random term with every trait on every record, in the eigenbasis
    of :math:`ZKZ^\top` (:mod:`bayes_animal.linalg.canonical`: O(n t³) per gradient where the
    sparse equations factor a matrix of order t·q)."""

    name = "canonical"
    parameterisation = "marginal"
    fixed_options = ("integrate",)
    default_sampler = "nutpie"
    several_traits_only = True
    reml_engine = "canonical"

    def likelihood(self):
        from ..linalg.canonical import CanonicalLikelihood

        return CanonicalLikelihood(self.model.canonical)

    def add_likelihood(self, pm, theta, values, fixed):
        from .model import ModelError

        raise ModelError(
            "The canonical transformation of several traits is sampled by nutpie on the "
            "hand-derived density (sampler='nutpie', the default), not in a PyMC graph."
        )

    def draws(self, posterior, fixed, rng):
        """b and every trait's effect per draw of θ, exactly, in the eigenbasis (no
        factorisation)."""
        from .conditional import posterior_thetas

        likelihood = self.likelihood()
        thetas = posterior_thetas(self.model.parameters, posterior)
        return self.split_unknowns(
            np.array([likelihood.value_and_draw(theta, rng)[1] for theta in thetas])
        )

    def split_unknowns(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Draws of the unknowns (draws × unknowns, the equations' order: b trait by trait,
        then each trait's levels) as ``beta`` and each effect's variable."""
        from .likelihoods import effect_variable

        m = self.model
        p, q = m.design.n_fixed, m.canonical.levels
        out = {"beta": w[:, :p]}
        for k, effect in enumerate(m.design.effects):
            out[effect_variable(effect.name)] = w[:, p + k * q : p + (k + 1) * q]
        return out

    def reliabilities(self, thetas):
        """:meth:`Engine.reliabilities` with each PEV from the eigenbasis
        (:meth:`~bayes_animal.linalg.canonical.CanonicalEquations.predictions`: no
        factorisation of the equations)."""
        from ..linalg.canonical import CanonicalEquations
        from .conditional import RELIABILITY_DRAWS, pev_share, spread

        m = self.model
        problem, effects = m.canonical, m.design.effects
        equations = CanonicalEquations(problem, m.design, m.parameters)
        total, used = np.zeros((problem.levels, len(effects))), 0
        for theta in spread(thetas, RELIABILITY_DRAWS):
            try:
                _, pev = equations.predictions(theta, pev=True)
            except ValueError:  # the sampler's edge: left out
                continue
            variances = theta[[m.parameters.index(e.name) for e in effects]]
            total += pev_share(pev, np.outer(problem.k_diagonal, variances))
            used += 1
        values = 1.0 - total / used if used else np.full(total.shape, np.nan)
        return {e.name: (problem.level_ids, values[:, a]) for a, e in enumerate(effects)}


class NonCentredEngine(Engine):
    """Every effect sampled, non-centred (O(q) per gradient)."""

    name = "noncentred"
    parameterisation = "noncentred"
    #: nutpie through PyMC: on gryphon ``bwt ~ 1`` the same posterior at 107 ESS(h²) per second
    #: of sampling against PyMC's 22 (benchmarks/results/noncentred.md)
    default_sampler = "nutpie"
    marginal = False
    fixed_options = ("sample",)

    def add_likelihood(self, pm, theta, values, fixed):
        from . import likelihoods

        m = self.model
        likelihoods.noncentred(
            pm, m.design, m.structures, m.parameters, values, m.fixed_prior(pm), m.centring()
        )

    def joint_density(self):
        """The hand-derived density of this model's exact joint posterior
        (:class:`~bayes_animal.bayes.joint.JointDensity`: what nutpie samples, with no model
        to compile), or None where it does not serve the model
        (:func:`~bayes_animal.bayes.joint.joint_obstacle`: a Gaussian trait, a correlated
        pair, the Beta prior on h²) and the PyMC model is sampled instead."""
        from .joint import JointDensity, joint_obstacle

        m = self.model
        if joint_obstacle(m.design, m.parameters, m.priors, m.scales) is not None:
            return None
        return JointDensity(
            m.priors, m.parameters, m.scales, m.design, m.structures, m.coords(), m.centring()
        )


class PartialEngine(Engine):
    """The additive effect in the eigenbasis, the other (independent) effects non-centred."""

    name = "partial"
    parameterisation = "partial"
    default_sampler = "pymc"
    marginal = False
    fixed_options = ("integrate",)

    def add_likelihood(self, pm, theta, values, fixed):
        from . import likelihoods

        m = self.model
        likelihoods.partial(pm, m.problem, m.design, m.structures, m.parameters, values)

    def draws(self, posterior, fixed, rng):
        from .likelihoods import effect_variable

        m = self.model
        chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
        others = np.zeros((chains * draws, m.design.n_records))
        for other in m.design.effects[1:]:  # y net of the sampled effects, rotated
            flat = posterior[effect_variable(other.name)].values.reshape(chains * draws, -1)
            others += np.concatenate([flat, np.zeros((len(flat), 1))], axis=1)[:, other.index]
        y_rot = (m.design.y[None, :] - others) @ m.problem.eigenvectors
        return _eigenbasis_draws(m, posterior, fixed, rng, y_rot=y_rot)


class LaplaceEngine(Engine):
    """A non-Gaussian family: b and every u integrated out by the Laplace approximation on the
    sparse mixed-model equations (:mod:`bayes_animal.linalg.laplace`); NUTS over the variances
    on the hand-derived density; b and u drawn from the approximation's Gaussian at each draw,
    each with its importance log-weight against the exact conditional (the diagnostic)."""

    name = "laplace"
    parameterisation = "marginal"
    default_sampler = "nutpie"
    fixed_options = ("integrate",)
    gaussian = False

    def __init__(self, model: AnimalModel) -> None:
        super().__init__(model)
        self.log_weights: np.ndarray | None = None

    def cost(self, gradients: int) -> float:
        return engine_cost("sparse", facts(self.model.inputs), gradients)

    def likelihood(self):
        from .density import laplace_likelihood

        return laplace_likelihood(self.model.laplace)

    def add_likelihood(self, pm, theta, values, fixed):
        _nutpie_only("The Laplace marginal model")

    def draws(self, posterior, fixed, rng):
        from .conditional import laplace_draws, posterior_thetas
        from .likelihoods import effect_variable

        m = self.model
        thetas = posterior_thetas(m.parameters, posterior)
        x, self.log_weights = laplace_draws(m.laplace, thetas, rng)
        out = {"beta": x[:, : m.design.n_fixed]}
        for effect in m.design.effects:
            out[effect_variable(effect.name)] = x[:, m.laplace.effect_slice(effect.name)]
        return out


class LatentEngine(Engine):
    """A family with an observation-level effect (Poisson with overdispersion): NUTS over the
    variances and each record's latent value on the hand-derived density
    (:class:`~bayes_animal.bayes.latent.LatentDensity`), b and every u integrated out exactly
    by the sparse mixed-model equations with the latent values as records, and drawn from
    them per draw (perturb and solve)."""

    name = "latent"
    parameterisation = "latent"
    default_sampler = "nutpie"
    fixed_options = ("integrate",)
    gaussian = False
    transient = (LATENT,)

    def cost(self, gradients: int) -> float:
        return engine_cost("sparse", facts(self.model.inputs), gradients)

    def density(self):
        from .density import MarginalDensity
        from .latent import LatentDensity

        m = self.model
        marginal = MarginalDensity(m.priors, m.parameters, m.scales, None, m.fixed_parameters)
        design = m.design
        trials = np.ones(design.n_records) if design.trials is None else design.trials
        return LatentDensity(marginal, m.mme, design.family, design.y, trials)

    def add_likelihood(self, pm, theta, values, fixed):
        _nutpie_only("The latent values' model")

    def draws(self, posterior, fixed, rng):
        """b and every u per draw from their exact conditional given θ and the latent values
        (:func:`~bayes_animal.bayes.conditional.draw_from_mixed_model` with them as records)."""
        from .conditional import draw_from_mixed_model, posterior_thetas

        m = self.model
        thetas = posterior_thetas(m.parameters, posterior)
        latent = posterior[LATENT].values.reshape(len(thetas), -1)
        w = draw_from_mixed_model(m.mme, thetas, rng=rng, ys=latent)
        return _equations_unknowns(m, w)


def _nutpie_only(what: str) -> None:
    """A family's model that has no PyMC graph: the user's error saying what samples it."""
    from ..errors import BayesAnimalError

    raise BayesAnimalError(
        f"{what} is sampled by nutpie on its hand-derived density (sampler='nutpie'); PyMC's "
        "samplers take the exact non-centred model (parameterisation='noncentred')."
    )


def _equations_unknowns(model: AnimalModel, w: np.ndarray) -> dict[str, np.ndarray]:
    """Draws of the sparse equations' unknowns (draws × unknowns) as ``beta`` and each
    effect's variable."""
    from .likelihoods import effect_variable

    out = {"beta": w[:, : model.mme.p]}
    for effect in model.design.effects:
        out[effect_variable(effect.name)] = w[:, model.mme.effect_slice(effect.name)]
    return out


def _eigenbasis_draws(model: AnimalModel, posterior, fixed, rng, *, y_rot):
    """b (where integrated) and the additive (or single) effect per draw in the eigenbasis."""
    from .conditional import draw_breeding_values, draw_fixed_and_breeding_values
    from .likelihoods import effect_variable

    effect = model.design.effects[0]

    def variance(name):
        return posterior[variance_name(name)].values.ravel()

    su, se = variance(effect.name), variance("residual")
    out = {}
    if fixed == "integrate":
        beta, u = draw_fixed_and_breeding_values(
            model.problem, model.design, model.relmat, su, se, rng=rng, y_rot=y_rot
        )
        out["beta"] = beta
    else:
        chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
        sampled = posterior["beta"].values.reshape(chains * draws, -1)
        u = draw_breeding_values(
            model.problem, model.design, model.relmat, sampled, su, se, rng=rng
        )
    out[effect_variable(effect.name)] = u
    return out


_ENGINES = (
    SpectralEngine, SparseEngine, CanonicalEngine, NonCentredEngine, PartialEngine, LaplaceEngine,
    LatentEngine,
)  # fmt: skip
ENGINE_CLASSES: dict[str, type[Engine]] = {cls.name: cls for cls in _ENGINES}


def engine_for(model: AnimalModel, name: str) -> Engine:
    """The engine object of ``name`` serving ``model``."""
    return ENGINE_CLASSES[name](model)
