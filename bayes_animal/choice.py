r"""The one chooser of the engine: by the problem's structure and an estimate of each engine's
cost, for REML (:func:`choose_reml`) and for a Bayesian fit (:func:`choose_bayes`).

``reml()``, ``AnimalModel``, ``reml_many`` and the command line ask here; nothing else
switches on the structure of the problem. The engines:

``spectral``
    One random effect with a dense matrix at hand: one eigendecomposition of
    :math:`ZKZ^\top` (:math:`\approx 9 n^3` flops over the n records), then :math:`O(n)` per
    likelihood and gradient.
``sparse``
    Any model: the mixed-model equations, one sparse factorisation and selected inverse per
    likelihood and gradient. Needs :math:`K^{-1}`: sparse from a pedigree, sparse for a given
    matrix that is a pedigree A written parents first (:mod:`bayes_animal.linalg.inverse`),
    dense for a genomic G.
``noncentred``
    (Bayesian only) every effect sampled, :math:`O(q)` per gradient; for models too large to
    factor at every gradient.

The structure decides what can run (ML and ``partial`` need the spectral path; a dense A of a
pedigree is formed only up to :data:`~bayes_animal.structures.additive.MAX_DENSE` animals); the
cost estimate decides among the rest. REML evaluates the likelihood some ten times, so the
eigendecomposition dominates the spectral cost while the sparse one is a few factorisations;
NUTS evaluates the gradient tens of thousands of times, so there the sparse cost is a
factorisation per gradient times that count. A given matrix is tried on the sparse route of
:mod:`bayes_animal.linalg.inverse` (bounded work, kept for the engine) before its inverse is
counted as sparse; a dense one (a genomic G) with one effect goes straight to the spectral
path. Each :class:`Choice` says why, with the estimates; ``engine=`` / ``parameterisation=``
override.

The constants are measured on the project's 2-core machines
(``python benchmarks/run.py shapes``): rough, since only their ratios matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import BayesAnimalError
from .linalg import MAX_SPARSE_DENSITY

if TYPE_CHECKING:
    from .api import ModelInputs

__all__ = [
    "ENGINES",
    "Choice",
    "choose_bayes",
    "choose_many",
    "choose_reml",
    "choose_traits",
    "engine_cost",
    "facts",
    "gradients_of_a_fit",
]

ENGINES = ("auto", "spectral", "sparse", "canonical")
#: Seconds per cubed record of the eigendecomposition (LAPACK dsyevd, 2 cores: 1 900 records
#: in 0.45 s).
EIGH_SECONDS_PER_CUBE = 6.5e-11
#: Seconds per record and per non-zero of the given matrix of a sparse REML fit, the inverse of
#: a parents-first A included (1 900 animals, 1.1 M non-zeros: 0.16 s; 2 100 animals, 0.19 M:
#: 0.05 s).
SPARSE_SECONDS_PER_RECORD = 1.5e-5
SPARSE_SECONDS_PER_NONZERO = 1.2e-7
#: A dense K⁻¹ (dpotrf + dpotri) costs about this fraction of an eigendecomposition of the same
#: order (1 900: 0.2 s against 0.45 s), and each of the ~10 REML evaluations of equations
#: whose K⁻¹ block is dense about as much again.
DENSE_INVERSE_SHARE = 0.45
REML_EVALUATIONS = 10
#: Seconds per record of one spectral gradient (O(n p²); 1 000 records: 30 µs).
SPECTRAL_GRADIENT_SECONDS_PER_RECORD = 3e-8
#: Seconds per unknown of one sparse gradient before any has been measured (a factorisation and
#: a selected inverse; order 2 347 with a 450-level group: 4.5 ms).
SPARSE_GRADIENT_SECONDS_PER_UNKNOWN = 2e-6
#: The spectral marginal model (one random effect) up to this many records: beyond, the
#: eigendecomposition's memory (8 n² bytes twice) and time outgrow the sparse marginal model's
#: sampling (measured: benchmarks/results/sampling_scale.md).
SPECTRAL_MAX_RECORDS = 5000
#: The sparse marginal model up to this order of the mixed-model equations, the non-centred
#: model beyond (benchmarks/results/sampling_scale.md: at 100 000 animals a marginal gradient
#: costs 0.29 s, about 0.5 s per effective sample, the non-centred model 1.7-14 s; extrapolated
#: they meet at a few hundred thousand animals).
SPARSE_MARGINAL_MAX_ORDER = 500_000


@dataclass(frozen=True)
class Choice:
    """The engine chosen, why, and the estimated seconds of each engine considered.

    Attributes
    ----------
    engine
        ``"spectral"``, ``"sparse"``, ``"noncentred"`` or ``"partial"``.
    reason
        One sentence for the user (printed as a note and recorded in the outputs).
    costs
        Estimated seconds of each engine that could run (empty for a choice made by the user).
    """

    engine: str
    reason: str
    costs: dict[str, float] = field(default_factory=dict)

    @property
    def parameterisation(self) -> str:
        """The Bayesian parameterisation of the engine."""
        marginal = ("spectral", "sparse", "canonical")
        return "marginal" if self.engine in marginal else self.engine

    def describe(self) -> str:
        """``engine (reason)`` with the estimates, for notes and provenance."""
        costs = ", ".join(f"{k} ~{v:.3g} s" for k, v in self.costs.items())
        return f"{self.engine}: {self.reason}" + (f" (estimated: {costs})" if costs else "")


@dataclass(frozen=True)
class Facts:
    """What the choice reads from the validated inputs (no factorisation)."""

    single: bool
    genetic: bool
    given_matrix: bool
    dense_available: bool
    n_records: int
    order: int
    nonzeros: int
    density: float
    levels: int
    effects: tuple[str, ...]
    sparse_inverse: bool = False
    additive_and_independent: bool = False
    traits: int = 1
    #: Several Gaussian traits on one random term with every trait on every record, its
    #: matrix dense at hand (at most :data:`SPECTRAL_MAX_RECORDS` levels): the number of
    #: records the canonical transformation would rotate (:mod:`bayes_animal.linalg.canonical`);
    #: 0 where it does not apply.
    canonical_records: int = 0
    #: The levels of that term and the fixed-effect columns of one trait (0 where it does not
    #: apply).
    levels_of_term: int = 0
    fixed_per_trait: int = 0

    @property
    def dense_matrix(self) -> bool:
        """A given matrix with too many non-zeros for the sparse route (a genomic G)."""
        return self.given_matrix and self.density > MAX_SPARSE_DENSITY


def facts(inputs: ModelInputs, *, attempt: bool = True) -> Facts:
    """The structure of the problem: its effects, sizes, the sparsity of a given matrix
    (counted once over the matrix: 2 ms for 2 000 animals) and — with ``attempt``, for a matrix
    sparse enough — whether its inverse comes sparse: the sparse route is tried once, with
    bounded work, and kept for the engine that uses it
    (:meth:`~bayes_animal.structures.covariance.MatrixStructure.sparse_inverse`; a pedigree A
    written parents first: yes; the same A in another order: no)."""
    design = inputs.design
    effects = design.effects
    single = len(effects) == 1
    genetic = any(e.genetic for e in effects)
    source = inputs.source
    given = source is not None and source.matrix is not None
    nonzeros, density = 0, 0.0
    if given:
        density = source.matrix.density
        nonzeros = round(density * source.matrix.size**2)
    if single and effects[0].genetic and not given:
        from .structures.additive import MAX_DENSE

        dense = source.pedigree.size <= MAX_DENSE
    else:
        dense = single
    canonical = canonical_levels = canonical_fixed = 0
    if len(design.traits) > 1 and design.family.gaussian:
        from .linalg.canonical import canonical_obstacle

        records = len(design.record_labels)
        small = max(records, effects[0].size) <= SPECTRAL_MAX_RECORDS
        if small and canonical_obstacle(design) is None:
            canonical, canonical_levels = records, effects[0].size
            canonical_fixed = design.n_fixed // len(design.traits)
    sparse_inverse = False
    if given and attempt and density <= MAX_SPARSE_DENSITY:
        try:
            sparse_inverse = source.structure.sparse_inverse() is not None
        except BayesAnimalError:  # singular: the spectral path may still take it
            sparse_inverse = False
    return Facts(
        single=single,
        genetic=genetic,
        given_matrix=given,
        dense_available=dense,
        n_records=design.n_records,
        order=design.n_fixed + sum(e.size for e in effects),
        nonzeros=nonzeros,
        density=density,
        levels=int(source.matrix.size) if given else 0,
        effects=tuple(e.name for e in effects),
        sparse_inverse=sparse_inverse,
        traits=max(len(design.traits), 1),
        canonical_records=canonical,
        levels_of_term=canonical_levels,
        fixed_per_trait=canonical_fixed,
        additive_and_independent=(
            len(effects) >= 2
            and effects[0].name == "additive"
            and not any(e.genetic for e in effects[1:])
        ),
    )


def _inverse_cost(f: Facts) -> float:
    """Seconds to invert a given matrix: sparse (tried and kept), or by LAPACK."""
    if not f.given_matrix or f.sparse_inverse:
        return SPARSE_SECONDS_PER_NONZERO * f.nonzeros
    return DENSE_INVERSE_SHARE * EIGH_SECONDS_PER_CUBE * float(f.levels) ** 3


def reml_costs(f: Facts) -> dict[str, float]:
    """Estimated seconds of a REML fit by each engine that can run it."""
    costs = {}
    if f.single and f.given_matrix:  # a pedigree's dense A is never formed for REML
        costs["spectral"] = EIGH_SECONDS_PER_CUBE * float(f.n_records) ** 3
    if f.canonical_records:
        costs["canonical"] = engine_cost("canonical", f, REML_EVALUATIONS)
    if f.dense_matrix:  # a dense K⁻¹: dense equations (of order t·q) at every evaluation
        costs["sparse"] = _inverse_cost(f) * (1 + REML_EVALUATIONS * f.traits**3)
    else:
        records = SPARSE_SECONDS_PER_RECORD * max(f.n_records, f.order)
        costs["sparse"] = _inverse_cost(f) + records
    return costs


def choose_reml(inputs: ModelInputs, engine: str = "auto", method: str = "reml") -> Choice:
    """The REML engine: the user's (checked), or the cheaper of those that can run; a
    non-Gaussian family has one, the Laplace approximation on the sparse equations."""
    if engine not in ENGINES:
        raise BayesAnimalError(f"Unknown engine {engine!r}: choose {', '.join(ENGINES)}.")
    family = inputs.design.family
    if not family.gaussian:
        if engine not in ("auto", "sparse"):
            raise BayesAnimalError(
                f"The {family.label} family is fitted on the sparse mixed-model equations (the "
                f"Laplace approximation), not by the {engine} engine: use engine='auto'."
            )
        what = "glmer's Laplace estimate" if method == "ml" else "the fixed effects integrated"
        return Choice(
            "laplace",
            f"the {family.label} family: the Laplace approximation on the sparse mixed-model "
            f"equations ({what}).",
        )
    f = facts(inputs, attempt=engine == "auto" and method != "ml")
    if engine == "spectral" and not f.single:
        raise BayesAnimalError(
            f"The spectral engine fits one random effect; this model has "
            f"{', '.join(f.effects)}. Use engine='sparse' (or 'auto')."
        )
    if engine == "canonical" and not f.canonical_records:
        from .linalg.canonical import canonical_obstacle

        why = canonical_obstacle(inputs.design) or (
            f"more than {SPECTRAL_MAX_RECORDS} records or levels"
        )
        raise BayesAnimalError(
            "The canonical engine fits several traits on one random term with every trait on "
            f"every record; this model has {why}. Use engine='sparse' (or 'auto')."
        )
    if method == "ml" and engine in ("sparse", "canonical"):
        raise BayesAnimalError(
            "ML is available for models with one random effect (spectral engine); use REML "
            "(method='reml') for this model."
        )
    if engine != "auto":
        return Choice(engine, "chosen by the user.")
    if method == "ml":
        if not f.single:
            raise BayesAnimalError(
                "ML is available for models with one random effect (spectral engine); use REML "
                "(method='reml') for this model."
            )
        return Choice("spectral", "ML is computed in the eigenbasis (one random effect).")
    if f.single and f.dense_matrix:
        return Choice(
            "spectral",
            f"one random effect with a dense matrix ({f.density:.0%} non-zero): one "
            "eigendecomposition of Z K Z'.",
        )
    costs = reml_costs(f)
    if "canonical" in costs and costs["canonical"] <= costs["sparse"]:
        return Choice(
            "canonical",
            f"{f.traits} traits on one random term, every trait on every record: one "
            f"eigendecomposition of Z K Z' over {f.canonical_records} records, then each "
            "iteration O(n t^3).",
            costs,
        )
    if "spectral" not in costs:
        why = (
            f"{f.traits} traits ({len(f.effects)} trait-wise random effects)"
            if f.traits > 1
            else f"{len(f.effects)} random effects"
            if not f.single
            else "one random effect without a given matrix (a pedigree's A⁻¹ is sparse)"
        )
        return Choice("sparse", f"{why}: the sparse mixed-model equations.", costs)
    chosen = min(costs, key=costs.get)
    if chosen == "spectral":
        reason = (
            "one random effect with a dense matrix: one eigendecomposition of Z K Z' over "
            f"{f.n_records} records costs less than the sparse equations"
        )
        if f.given_matrix and not f.sparse_inverse:
            reason += (
                f" (the matrix is {f.density:.1%} non-zero, but its order gives no sparse "
                "factor: a dense inverse)"
            )
    else:
        reason = (
            "one random effect whose "
            + (
                f"matrix is sparse ({f.density:.1%} non-zero; its inverse is computed sparse)"
                if f.given_matrix and f.sparse_inverse
                else f"matrix is {f.density:.1%} non-zero"
            )
            + ": the sparse equations cost less than an eigendecomposition of "
            + f"{f.n_records} records"
        )
    return Choice(chosen, reason + ".", costs)


#: Seconds per record of one trait's REML in the eigenbasis once the decomposition is at hand
#: (the batched grid and Newton steps, its SEs and BLUPs: 1 000 traits of 1 000 records in
#: 1.5 s).
SPECTRAL_TRAIT_SECONDS_PER_RECORD = 1.5e-6


def choose_many(inputs: ModelInputs, traits: int, method: str = "reml") -> Choice:
    """The engine of a group of ``traits`` traits sharing one design (:func:`reml_many`): one
    eigendecomposition for all of them, or the sparse equations trait by trait."""
    f = facts(inputs)
    if method == "ml":
        return choose_reml(inputs, "auto", method)
    if f.single and f.dense_matrix:
        return Choice(
            "spectral", f"a dense matrix: one eigendecomposition serves all {traits} traits."
        )
    sparse = traits * reml_costs(f)["sparse"]
    if not (f.single and f.dense_available):
        return Choice("sparse", "no dense matrix for an eigendecomposition.", {"sparse": sparse})
    spectral = EIGH_SECONDS_PER_CUBE * float(f.n_records) ** 3
    spectral += traits * SPECTRAL_TRAIT_SECONDS_PER_RECORD * f.n_records
    costs = {"spectral": spectral, "sparse": sparse}
    if spectral <= sparse:
        return Choice(
            "spectral",
            f"one eigendecomposition of {f.n_records} records serves all {traits} traits.",
            costs,
        )
    return Choice(
        "sparse",
        f"{traits} trait(s) on a sparse relationship: the sparse equations trait by trait cost "
        "less than an eigendecomposition.",
        costs,
    )


def gradients_of_a_fit(chains: int, draws: int, tune: int) -> int:
    """The gradients NUTS evaluates in a fit, roughly: 7 leapfrog steps a draw (tree depth ≤ 3
    on the marginal models, measured)."""
    return 7 * chains * (draws + tune)


#: A non-centred gradient costs about this per unknown (gryphon model 4, order 2 400: 0.8 ms),
#: and takes about this many more gradients per draw than a marginal one (33 against 2.9,
#: benchmarks/results/sampling_scale.md). Its effective samples per draw are lower still, by a
#: factor that depends on the data, so the marginal-or-non-centred choice is made by the
#: measured order limit above, not by this estimate.
NONCENTRED_SECONDS_PER_UNKNOWN = 3e-7
NONCENTRED_GRADIENT_FACTOR = 11.0
#: One gradient of the canonical transformation: a fixed overhead (NumPy calls) plus this per
#: record, squared trait and squared fixed column (batched t × t algebra; three traits on 40,
#: 250 and 1 000 records: 0.12, 0.24 and 0.74 ms; four on wheat's 599 lines: 0.55–0.73 ms).
CANONICAL_GRADIENT_SECONDS = 1e-4
CANONICAL_GRADIENT_SECONDS_PER_RECORD_TRAIT2 = 7e-8


def engine_cost(engine: str, f: Facts, gradients: int) -> float:
    """Estimated seconds of ``gradients`` gradients of a Bayesian fit by ``engine``, its set-up
    (an eigendecomposition, an inverse) included: each engine's cost estimate, the numbers the
    chooser compares."""
    if engine == "spectral":
        setup = EIGH_SECONDS_PER_CUBE * float(f.n_records) ** 3
        return setup + gradients * SPECTRAL_GRADIENT_SECONDS_PER_RECORD * f.n_records
    if engine == "sparse":
        if f.dense_matrix:  # every gradient factors equations whose K⁻¹ block is dense, of
            # order t·q with t traits (three traits, 300 and 1 200 levels: 32 ms and 0.69 s),
            # beside the per-unknown work of any sparse gradient
            dense = _inverse_cost(f) * (1 + gradients * f.traits**3)
            if f.traits > 1:
                dense += gradients * SPARSE_GRADIENT_SECONDS_PER_UNKNOWN * f.order
            return dense
        return _inverse_cost(f) + gradients * SPARSE_GRADIENT_SECONDS_PER_UNKNOWN * f.order
    if engine == "canonical":
        n, q = float(f.canonical_records), float(f.levels_of_term)
        # the eigendecomposition, K's factor (its PSD check, and the draws' prior) and K Zᵀ Q
        setup = EIGH_SECONDS_PER_CUBE * (n**3 + q**3 / 3 + q * n * n / 4)
        p = max(f.fixed_per_trait, 1)
        records = CANONICAL_GRADIENT_SECONDS_PER_RECORD_TRAIT2 * n * f.traits**2 * p * p
        return setup + gradients * (CANONICAL_GRADIENT_SECONDS + records)
    if engine in ("noncentred", "partial"):
        setup = EIGH_SECONDS_PER_CUBE * float(f.n_records) ** 3 if engine == "partial" else 0.0
        per_gradient = NONCENTRED_SECONDS_PER_UNKNOWN * f.order
        return setup + gradients * NONCENTRED_GRADIENT_FACTOR * per_gradient
    raise BayesAnimalError(f"Unknown engine {engine!r}.")


def choose_traits(inputs: ModelInputs, *, gradients: int) -> Choice:
    """The engine of a Bayesian fit of several traits: the canonical transformation where it
    applies (one random term, every trait on every record, its matrix at hand) and costs less,
    else the sparse mixed-model equations."""
    f = facts(inputs)
    costs = {"sparse": engine_cost("sparse", f, gradients)}
    if f.canonical_records:
        costs["canonical"] = engine_cost("canonical", f, gradients)
    chosen = min(costs, key=costs.get)
    if chosen == "canonical":
        reason = (
            f"{f.traits} traits on one random term, every trait on every record: the "
            f"likelihood is block-diagonal in the eigenbasis of Z K Z' over {f.canonical_records}"
            " records (NUTS over G0 and R0, each gradient O(n t^3); b and u drawn exactly "
            "afterwards)"
        )
    else:
        if f.canonical_records:
            why = "the eigendecomposition costs more than the sparse equations' gradients"
        else:
            from .linalg.canonical import canonical_obstacle

            why = canonical_obstacle(inputs.design) or (
                f"more than {SPECTRAL_MAX_RECORDS} records or levels for an eigendecomposition"
            )
        reason = (
            f"{f.traits} traits: the marginal model on the sparse mixed-model equations (NUTS "
            f"over every G0 and R0, effects drawn exactly afterwards; {why})"
        )
    return Choice(chosen, reason + ".", costs)


def choose_bayes(inputs: ModelInputs, *, gradients: int) -> Choice:
    """The engine of a Bayesian fit (``parameterisation="auto"``) that evaluates about
    ``gradients`` gradients (:func:`gradients_of_a_fit`)."""
    f = facts(inputs)
    if f.order > SPARSE_MARGINAL_MAX_ORDER and not (f.single and f.dense_available):
        return Choice(
            "noncentred",
            f"{f.order} unknowns: above {SPARSE_MARGINAL_MAX_ORDER} a factorisation per gradient "
            "costs more per effective sample than the non-centred model's O(q) gradients.",
        )
    costs = {"sparse": engine_cost("sparse", f, gradients)}
    if f.single and f.dense_available and f.n_records <= SPECTRAL_MAX_RECORDS:
        costs["spectral"] = engine_cost("spectral", f, gradients)
    if f.dense_matrix and f.additive_and_independent and f.n_records <= SPECTRAL_MAX_RECORDS:
        # a dense G beside independent effects: the sparse equations are dense at every
        # gradient; the additive effect in the eigenbasis, the others non-centred, are not
        costs["partial"] = engine_cost("partial", f, gradients)
    chosen = min(costs, key=costs.get)
    if chosen == "partial":
        reason = (
            "a dense relationship matrix beside independent effects: the additive effect "
            "integrated out in the eigenbasis of Z K Z', the others non-centred (the sparse "
            "equations would factor a dense block at every gradient)"
        )
    elif chosen == "spectral":
        reason = (
            "one random effect: the likelihood is diagonal in the eigenbasis of Z K Z' (NUTS "
            "over the two variances, b and u drawn exactly afterwards); the eigendecomposition "
            f"costs less than {gradients} sparse factorisations"
        )
    else:
        reason = (
            f"{len(f.effects)} random effect(s), {f.order} unknowns: every effect is integrated "
            "out through the sparse mixed-model equations (NUTS over the variance parameters "
            "only, effects drawn exactly afterwards)"
        )
    return Choice(chosen, reason + ".", costs)


#: One gradient of a marginal density on the sparse equations (a factorisation and its selected
#: inverse) costs about this per unit of the analysed factor's flop count (Σ column count²,
#: :attr:`~bayes_animal.linalg.ldl.Analysis.flops`) plus this per unknown (measured here: three
#: traits on 3 000 and 20 000 animals 0.09 s and 0.53 s at 5.2e8 and 3.5e9; gryphon's
#: bivariate model 1.5 ms at 6.5e5 and 2 620 unknowns).
GRADIENT_SECONDS_PER_FLOP = 2e-10
GRADIENT_SECONDS_PER_UNKNOWN = 5e-7
#: Above this estimated wall-clock time of NUTS (its gradients over two chain groups at once),
#: a marginal model's variance parameters are sampled by independence Metropolis–Hastings
#: (:mod:`bayes_animal.bayes.independence`), each step one factorisation and no gradient.
INDEPENDENCE_ABOVE_SECONDS = 600.0
#: Where REML has a component at its boundary the posterior is far from Gaussian, and the
#: independence sampler's chains run this many times longer, keeping every this-th draw. Three
#: traits × 3 000 animals with a singular permanent-environment matrix: 4 × 3 000 iterations
#: gave acceptance 28 %, k̂ 0.65, smallest bulk ESS 412 and R-hat 1.013 in 279 s, where NUTS
#: had not finished after 71 min; the default fit (5 × 1 000, another seed) 416 s, k̂ 0.73,
#: R-hat 1.021: flagged by its diagnostics, where NUTS gives no answer in the hour.
BOUNDARY_THIN = 5


def marginal_gradient_seconds(flops: float, unknowns: int) -> float:
    """Estimated seconds of one gradient of the sparse marginal density (see above)."""
    return GRADIENT_SECONDS_PER_FLOP * flops + GRADIENT_SECONDS_PER_UNKNOWN * unknowns


def choose_sampler(
    flops: float, unknowns: int, chains: int, draws: int, tune: int
) -> Choice | None:
    """The sampler of a sparse marginal model where NUTS would be too dear: ``"independence"``
    when the estimated NUTS time (:func:`gradients_of_a_fit` gradients at
    :func:`marginal_gradient_seconds`, two chain groups at once) is above
    :data:`INDEPENDENCE_ABOVE_SECONDS`; None (NUTS, the engine's default) otherwise. The
    estimate is a formula of the analysed equations, not a timing: the same data choose the
    same sampler on any machine."""
    gradient = marginal_gradient_seconds(flops, unknowns)
    nuts = gradient * gradients_of_a_fit(chains, draws, tune) / min(chains, 2)
    if nuts <= INDEPENDENCE_ABOVE_SECONDS:
        return None
    return Choice(
        "independence",
        f"one gradient of the marginal density costs about {gradient:.2g} s, so NUTS would "
        f"take about {nuts / 60:.0f} min: independence Metropolis–Hastings instead, a t "
        "proposal centred near the posterior mean, one factorisation a step and no gradient "
        "(sampler='nutpie' for NUTS).",
        {"nutpie": nuts},
    )


#: The Laplace approximation is trusted where the Pareto k̂ of its draws' importance weights
#: against the exact conditional of b and u is at most this at each point checked (Vehtari et
#: al.'s threshold for a reliable importance sampling estimate) …
LAPLACE_KHAT_LIMIT = 0.7
#: … and where its error in log p(y | θ), estimated by those weights, moves by at most this
#: many log units between half and twice the REML variances. The conditional alone cannot see
#: a tilted marginal: on a simulated threshold trait (one record per animal) k̂ was 0.60 at
#: REML while the error moved 3.3 units and the Laplace posterior h² was 0.25 against the
#: exact 0.39; on near-Gaussian counts it moved 0.00.
LAPLACE_TILT_LIMIT = 1.0


@dataclass(frozen=True)
class LaplaceCheck:
    r"""The check of the Laplace approximation at half, once and twice the REML variances.

    Attributes
    ----------
    khat
        The largest Pareto k̂ of the importance weights of its draws of b and u against their
        exact conditional, over the three points.
    errors
        At each point, :math:`\log \hat E_q[w] = \log p(y \mid \theta) - \log
        p_{LA}(y \mid \theta)` estimated by those weights.
    """

    khat: float
    errors: tuple[float, float, float]

    @property
    def tilt(self) -> float:
        """How far the approximation's error moves between half and twice the variances."""
        return abs(self.errors[2] - self.errors[0])

    @property
    def passes(self) -> bool:
        return self.khat <= LAPLACE_KHAT_LIMIT and self.tilt <= LAPLACE_TILT_LIMIT

    def describe(self) -> str:
        return (
            f"Pareto k̂ {self.khat:.2f} (limit {LAPLACE_KHAT_LIMIT}), its error in log p(y | θ) "
            f"moving {self.tilt:.2f} between half and twice the REML variances (limit "
            f"{LAPLACE_TILT_LIMIT})"
        )


#: A family with an observation-level effect has its latent values sampled with b and every u
#: integrated out (:mod:`bayes_animal.bayes.latent`) where the records resolve at least this
#: share of their random-effect variance (the median over the records,
#: ``AnimalModel._latent_information``); the non-centred joint below it. Measured on counts
#: on the gryphon pedigree (``python benchmarks/run.py family_latent``, the latent model at
#: its target acceptance of 0.6): at 0.30 and 0.57 the non-centred joint gave 2.2 and 1.6
#: times the latent model's ESS(h²) per second, at 0.54 0.74 times, each R-hat at most 1.009
#: — no share below 0.7 where the latent model wins throughout; at 0.77 the non-centred joint
#: gave R-hat 1.028–1.048 with its chains doubled (seeds 1–3), the latent model 1.004–1.007
#: at 27–55 ESS(h²)/s; at 0.82 both passed, the latent model at 3.7 times the ESS per second.
#: (At 0.9 and a slower gradient the non-centred joint had given 3–8 times the latent model's
#: ESS per second at 0.30–0.57.)
LATENT_FROM = 0.7
#: One gradient of the non-centred joint density (the hand-derived kernel of
#: :mod:`bayes_animal.bayes.joint`) costs about this per coordinate: measured in-process,
#: 32–53 µs on the gryphon pedigree's counts (2 428 coordinates) and 81–85 µs on 1 900 animals
#: in 45 or 450 cages (3 750 and 4 149).
JOINT_SECONDS_PER_COORDINATE = 2e-8
#: The latent values' model is chosen only where one of its gradients costs at most this many
#: of the non-centred joint's (:func:`latent_cost_ratio`, an estimate from the analysed
#: equations). Measured: on the gryphon pedigree's large counts (estimate 15) the latent model
#: gave 2.5–3.7 times the joint's ESS(h²) per second (``family_latent``); on 1 900 animals in
#: 450 cages (the issue reproducer's pedigree, estimate 73, a dense block of 429) it gave 5.3
#: against the joint's 10.1 (seed 1; 10.6 ms a gradient against 85 µs), both passing their
#: diagnostics — per gradient the latent model was 56 times as efficient there, about 50 on
#: the gryphon counts, so the two break even near 40.
LATENT_COST_LIMIT = 40.0


def latent_cost_ratio(flops: float, unknowns: int, coordinates: int) -> float:
    """One gradient of the latent values' density (a factorisation of the mixed-model
    equations and its selected inverse, :func:`marginal_gradient_seconds` of their analysis)
    in gradients of the non-centred joint density of ``coordinates`` coordinates
    (:data:`JOINT_SECONDS_PER_COORDINATE`): a formula of the data, not a timing."""
    joint = JOINT_SECONDS_PER_COORDINATE * max(coordinates, 1)
    return marginal_gradient_seconds(flops, unknowns) / joint


def choose_family_engine(
    family_label: str,
    check: LaplaceCheck | None,
    latent_information: float | None = None,
    latent_cost: float | None = None,
) -> Choice:
    """The engine of a non-Gaussian family's Bayesian fit (``parameterisation="auto"``).

    ``latent_information`` (None where the family has no observation-level effect): where
    the records pin their latent values (at least :data:`LATENT_FROM`), the latent values'
    model, exact, with b and every u integrated out — unless one of its gradients would cost
    more than :data:`LATENT_COST_LIMIT` of the non-centred joint's (``latent_cost``,
    :func:`latent_cost_ratio`; None: not known, not limited), where the equations fill in
    densely (many groups crossing the pedigree) and the joint's cheap gradients win.

    ``check`` None: the exact model's hand-derived joint density serves the model under nutpie
    (:func:`~bayes_animal.bayes.joint.joint_obstacle`), and the exact model is sampled without
    asking the approximation — it is exact, and it cost less than the Laplace marginal model on
    three of the four data sets of ``python benchmarks/run.py family_engines`` (on the fourth,
    large counts, the Laplace draws' k̂ was 1.2). Otherwise (PyMC's or
    numpyro's NUTS, a correlated pair of effects, the Beta prior on h²) the Laplace
    approximation's check (:class:`LaplaceCheck`) decides: the Laplace marginal model where it
    passes, the exact non-centred model where it does not.
    """
    dear = ""
    if latent_information is not None and latent_information >= LATENT_FROM:
        if latent_cost is None or latent_cost <= LATENT_COST_LIMIT:
            return Choice(
                "latent",
                f"the {family_label} family: its records resolve {latent_information:.0%} of "
                f"their latent variance (median; from {LATENT_FROM:.0%}), so NUTS moves in the "
                "variances and each record's latent value with b and every u integrated out "
                "exactly (exact, where the non-centred joint mixes slowly).",
            )
        dear = (
            f" Its records resolve {latent_information:.0%} of their latent variance, but a "
            f"gradient of the latent values' model would cost about {latent_cost:.0f} of the "
            f"joint's (above {LATENT_COST_LIMIT:.0f}: the equations fill in densely), so the "
            "joint is sampled (parameterisation='latent' asks for the other)."
        )
    if check is None:
        return Choice(
            "noncentred",
            f"the {family_label} family: the exact joint posterior (NUTS over the variances, "
            "b and every u, non-centred) on its hand-derived density, which nutpie samples "
            "with nothing to compile: exact, and cheaper than the Laplace marginal model on "
            f"three of the four data sets of benchmarks/family_engines.{dear}",
        )
    if check.passes:
        return Choice(
            "laplace",
            f"the {family_label} family: the Laplace approximation passes its check "
            f"({check.describe()}): NUTS over the variances with b and u integrated, drawn "
            "afterwards.",
        )
    return Choice(
        "noncentred",
        f"the {family_label} family: the Laplace approximation fails its check "
        f"({check.describe()}), so the exact joint posterior is sampled: NUTS over the "
        f"variances, b and every u, non-centred.{dear}",
    )
