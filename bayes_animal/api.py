r"""The front door of REML: :func:`reml`, :func:`solve_mme` and :func:`compare`.

Each takes the formula and the data, the relationship (exactly one of ``relmat=``,
``pedigree=``, ``genotypes=``, or none for a model of independent effects only) and the
genetic options (``maternal=``, ``maternal_covariance=``), resolves and validates them once
(:func:`model_inputs`, shared with :class:`~bayes_animal.bayes.model.AnimalModel` and the
command line), and runs one of two engines:

- ``"spectral"`` — one random effect with a dense matrix (a relationship CSV, G): the
  eigendecomposition of :math:`ZKZ^\top` once, then :math:`O(n)` per likelihood
  (:mod:`bayes_animal.estimation.spectral`);
- ``"sparse"`` — any model: average-information REML on the sparse mixed-model equations
  (:mod:`bayes_animal.estimation.sparse`); A⁻¹ from a pedigree is never formed densely.

``engine="auto"`` asks the one chooser (:func:`bayes_animal.choice.choose_reml`): the spectral
path for one random effect with a dense given matrix (a genomic G) where its
eigendecomposition costs less than the sparse equations, the sparse path for everything else —
a pedigree, several effects, a given matrix that is a pedigree A written to a file (its inverse
is computed sparse). The result records the choice and why (``engine_reason``); ML is
available on the spectral path only.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal

import numpy as np

from .choice import ENGINES, choose_reml
from .design import Design, build_design
from .estimation.result import RemlResult
from .estimation.spectral import check_method, fit_spectral
from .structures.inputs import RelationshipSource, resolve_relationship
from .structures.pedigree import Pedigree
from .structures.relationship import RelationshipMatrix
from .tables import Records
from .tables import pandas as pd

# compare (and LikelihoodRatio) are imported on first use: see __getattr__ below
__all__ = ["ENGINES", "ModelInputs", "compare", "model_inputs", "reml", "solve_mme"]  # noqa: F822

Engine = Literal["auto", "spectral", "sparse", "canonical"]


@dataclass(frozen=True)
class ModelInputs:
    """A validated model: the resolved relationship and the design built from the data.

    Attributes
    ----------
    source
        The relationship (None for a model of independent effects only).
    design
        The arrays of the model.
    timings
        Seconds spent resolving the relationship and building the design.
    """

    source: RelationshipSource | None
    design: Design
    timings: dict[str, float] = field(default_factory=dict)

    def structures(self) -> dict[str, Any]:
        """The covariance structure of each genetic effect (the sparse engine's input)."""
        return {e.name: self.source.structure for e in self.design.effects if e.genetic}

    def fingerprints(self) -> dict[str, str]:
        """Short digests of what a REML likelihood depends on, by part: ``"records"`` (the
        response and which records), ``"fixed"`` (X) and each random effect (its levels, the
        level of every record and, for a genetic effect, the relationship). Two fits are
        comparable by :func:`compare` only where the parts they share are equal.

        The relationship is digested from its ids and, for a matrix, its products with two
        fixed random vectors (any change of an entry changes them; O(n²) flops, a few ms at
        5 000 animals; a pedigree: its parents)."""
        design = self.design

        def digest(*parts) -> str:
            h = hashlib.blake2b(digest_size=12)
            for part in parts:
                h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray)
                         else repr(part).encode())  # fmt: skip
            return h.hexdigest()

        relationship = ""
        if self.source is not None:
            source = self.source
            if source.matrix is not None:  # two random projections: any change shows
                values = source.matrix.matrix
                probes = np.random.default_rng(20261205).standard_normal((values.shape[0], 2))
                # einsum's own loops: the same bits whatever BLAS's thread count
                projected = np.einsum("ij,jk->ik", values, probes)
                relationship = digest(source.kind, source.matrix.ids.astype(str), projected)
            else:
                ped = source.pedigree
                relationship = digest(source.kind, ped.ids.astype(str), ped.sire, ped.dam)
        prints = {
            "records": digest(design.response, design.y, design.record_labels.astype(str)),
            "fixed": digest(design.fixed_names, design.X),
        }
        for effect in design.effects:
            prints[effect.name] = digest(
                effect.column, effect.genetic, effect.index, effect.levels.astype(str),
                relationship if effect.genetic else "",
            )  # fmt: skip
        return prints

    def dense_matrix(self) -> RelationshipMatrix:
        """The dense matrix of the single random effect (the spectral engine's input): a given
        matrix as it is, its definiteness settled by the decomposition if it was left for later
        (:func:`~bayes_animal.linalg.spectral.decompose`)."""
        effect = self.design.effects[0]
        if effect.genetic:
            return self.source.matrix if self.source.matrix is not None else self.source.relmat
        return RelationshipMatrix(ids=effect.levels, matrix=np.eye(effect.size))


def model_inputs(
    formula: str,
    data: pd.DataFrame | Records,
    *,
    relmat: Any = None,
    pedigree: Pedigree | pd.DataFrame | str | PathLike[str] | None = None,
    genotypes: pd.DataFrame | str | PathLike[str] | None = None,
    source: RelationshipSource | None = None,
    animal: str = "animal",
    maternal: str | None = None,
    maternal_covariance: bool = False,
    nearest_pd: bool = False,
    family: Any = None,
    link: str | None = None,
    overdispersion: bool | str | None = None,
    warn: bool = True,
) -> ModelInputs:
    """Resolve the relationship (if any) and build the design: the one place this is done.

    ``source`` is a relationship already resolved by
    :func:`~bayes_animal.structures.inputs.resolve_relationship` (the command line passes it).
    """
    clock = time.perf_counter()
    if source is None and any(v is not None for v in (relmat, pedigree, genotypes)):
        source = resolve_relationship(
            relmat=relmat, pedigree=pedigree, genotypes=genotypes, nearest_pd=nearest_pd
        )
    if source is not None:
        source.check_animals(data, animal)
    resolved = time.perf_counter() - clock
    clock = time.perf_counter()
    design = build_design(
        formula,
        data,
        relationship=source,
        animal=animal,
        maternal=maternal,
        maternal_covariance=maternal_covariance,
        family=family,
        link=link,
        overdispersion=overdispersion,
        warn=warn,
    )
    return ModelInputs(
        source, design, {"relationship": resolved, "design": time.perf_counter() - clock}
    )


def reml(
    formula: str,
    data: pd.DataFrame,
    *,
    relmat: Any = None,
    pedigree: Pedigree | pd.DataFrame | str | PathLike[str] | None = None,
    genotypes: pd.DataFrame | str | PathLike[str] | None = None,
    source: RelationshipSource | None = None,
    animal: str = "animal",
    maternal: str | None = None,
    maternal_covariance: bool = False,
    family: Any = None,
    link: str | None = None,
    overdispersion: bool | str | None = None,
    method: Literal["reml", "ml"] = "reml",
    engine: Engine = "auto",
    ordering: str = "amd",
    nearest_pd: bool = False,
    pev: bool = True,
    threads: int | None = None,
    max_iterations: int | None = None,
    warn: bool = True,
) -> RemlResult:
    """REML (or ML) estimates of every variance component of a mixed model.

    Parameters
    ----------
    formula
        Fixed and random parts, lme4 style: ``"bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)"``;
        ``ide(animal)`` for a permanent environment (see :mod:`bayes_animal.spec.terms`).
    data
        Records; ``animal`` names the id column.
    relmat, pedigree, genotypes
        At most one: a relationship matrix (used as given, never rescaled), a pedigree (a
        :class:`~bayes_animal.structures.pedigree.Pedigree` or a table / CSV path), or marker
        genotypes (VanRaden's G). With one, the additive genetic effect of ``animal`` is in
        the model; with none, only the formula's random terms are.
    source
        A relationship already resolved (instead of the three above).
    animal
        Column of animal ids.
    maternal, maternal_covariance
        Dam column of a maternal genetic effect; estimate the direct–maternal covariance.
    family, link, overdispersion
        The response's family: ``"gaussian"`` (default), ``"binomial"`` (link ``"probit"``,
        the threshold model, or ``"logit"``; a 0/1 response or ``cbind(successes,
        failures)``), ``"threshold"`` (the binomial probit) or ``"poisson"`` (``overdispersion``
        ``"units"``, the default, or ``"none"``); see :mod:`bayes_animal.spec.family`. A
        non-Gaussian family is fitted by the Laplace approximation
        (:mod:`bayes_animal.estimation.laplace`): its variances are on the latent scale and
        the ratios include ``h2_observed``.
    method
        ``"reml"``, or ``"ml"`` (one random effect; any model of a non-Gaussian family, where
        it is glmer's Laplace estimate).
    engine
        ``"auto"``, ``"spectral"``, ``"sparse"`` or ``"canonical"`` (several traits on one
        random term, every trait on every record: in the eigenbasis of Z K Zᵀ).
    ordering
        Fill-reducing ordering of the sparse engine (``"amd"``, ``"metis"``, ``"natural"``).
    nearest_pd
        Project a non-PSD matrix to the nearest positive-definite one instead of failing.
    pev
        Compute prediction error variances and reliabilities.
    threads
        BLAS threads of the spectral engine.
    max_iterations
        Iterations allowed (Newton steps per bracket, or AI iterations); a fit stopped by the
        limit reports ``converged=False``.
    warn
        Issue the design's notices as warnings.

    Examples
    --------
    >>> from bayes_animal import simulate_reference, reml
    >>> sim = simulate_reference(n=200, n_snps=300, seed=1)
    >>> fit = reml("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    >>> round(fit.h2, 2) > 0
    True
    """
    start = time.perf_counter()
    method = check_method(method)
    inputs = model_inputs(
        formula,
        data,
        relmat=relmat,
        pedigree=pedigree,
        genotypes=genotypes,
        source=source,
        animal=animal,
        maternal=maternal,
        maternal_covariance=maternal_covariance,
        nearest_pd=nearest_pd,
        family=family,
        link=link,
        overdispersion=overdispersion,
        warn=warn,
    )
    return fit_inputs(
        inputs,
        method=method,
        engine=engine,
        ordering=ordering,
        pev=pev,
        threads=threads,
        max_iterations=max_iterations,
        start=start,
    )


def fit_inputs(
    inputs: ModelInputs,
    *,
    method: str = "reml",
    engine: str = "auto",
    ordering: str = "amd",
    pev: bool = True,
    threads: int | None = None,
    max_iterations: int | None = None,
    start: float | None = None,
    problem=None,
) -> RemlResult:
    """REML of validated inputs with the chosen engine; timings and boundary notices added.
    ``problem``: a zero-argument function giving the eigendecomposition already at hand (the
    Bayesian model's), called only when the spectral or canonical engine is chosen."""
    from dataclasses import replace

    start = time.perf_counter() if start is None else start
    clock = time.perf_counter()
    choice = choose_reml(inputs, engine, method)
    chosen = choice.engine
    limit = {} if max_iterations is None else {"max_iterations": max_iterations}
    if chosen == "laplace":
        from .estimation.laplace import fit_laplace

        result = fit_laplace(
            inputs.design, inputs.structures(), method=method, ordering=ordering, pev=pev, **limit
        )
    elif chosen == "spectral":
        result = fit_spectral(
            inputs.design,
            inputs.dense_matrix(),
            method=method,
            pev=pev,
            threads=threads,
            problem=None if problem is None else problem(),
            **limit,
        )
    elif chosen == "canonical":
        from .estimation.canonical import fit_canonical

        if problem is None:
            from .linalg.canonical import canonical_problem
            from .spec.parameters import Parameters

            effect = inputs.design.effects[0]
            relationship = inputs.structures()[effect.name].dense() if effect.genetic else None
            params = Parameters.from_spec(inputs.design.spec)
            at_hand = canonical_problem(inputs.design, relationship, params)
        else:
            at_hand = problem()
        result = fit_canonical(inputs.design, at_hand, pev=pev, **limit)
    else:
        from .estimation.sparse import fit_sparse

        result = fit_sparse(inputs.design, inputs.structures(), ordering=ordering, pev=pev, **limit)
    notices = list(result.notices)
    held = [name for name in result.boundary if name not in result.component_table]
    for name in (n for n in result.boundary if n not in held):
        notices.append(
            f"the variance of {name!r} is at its boundary (0): it is reported as 0, without a "
            "standard error; the data hold no evidence of that effect."
        )
    if held:
        notices.append(
            f"the covariances {', '.join(repr(n) for n in held)} are held at the edge of the "
            "positive semi-definite cone: their matrix is estimated singular (a pair's "
            "correlation at ±0.9999; a larger matrix in the singular shape REML found), and "
            "they are reported without standard errors."
        )
    timings = {
        **inputs.timings,
        **result.timings,
        "fit": time.perf_counter() - clock,
        "total": time.perf_counter() - start,
    }
    return replace(
        result,
        timings=timings,
        notices=tuple(notices),
        engine_reason=choice.describe(),
        fingerprints=inputs.fingerprints(),
        logdet_xtx=float(np.linalg.slogdet(inputs.design.X.T @ inputs.design.X)[1]),
    )


def solve_mme(
    formula: str,
    data: pd.DataFrame,
    *,
    variances: dict[str, float],
    relmat: Any = None,
    pedigree: Pedigree | pd.DataFrame | str | PathLike[str] | None = None,
    genotypes: pd.DataFrame | str | PathLike[str] | None = None,
    animal: str = "animal",
    maternal: str | None = None,
    maternal_covariance: bool = False,
    pev: bool = True,
    family: Any = None,
    link: str | None = None,
    overdispersion: bool | str | None = None,
    warn: bool = True,
):
    """BLUE and BLUP from Henderson's mixed-model equations at known variances.

    ``variances`` names every component (``{"additive": 20, "residual": 40}``; with a maternal
    effect and its covariance ``"maternal"`` and ``"additive:maternal"``). Returns
    :class:`~bayes_animal.estimation.sparse.Solutions`. With a non-Gaussian ``family`` the
    solutions are the joint posterior mode of b, every u and an ordinal response's
    cut-points (:func:`~bayes_animal.estimation.laplace.solve_laplace`; the latent residual
    is the family's and need not be given).
    """
    from .estimation.sparse import solve_at

    inputs = model_inputs(
        formula,
        data,
        relmat=relmat,
        pedigree=pedigree,
        genotypes=genotypes,
        animal=animal,
        maternal=maternal,
        maternal_covariance=maternal_covariance or "additive:maternal" in variances,
        family=family,
        link=link,
        overdispersion=overdispersion,
        warn=warn,
    )
    if not inputs.design.family.gaussian:
        from .estimation.laplace import solve_laplace

        return solve_laplace(inputs.design, inputs.structures(), variances)
    return solve_at(inputs.design, inputs.structures(), variances, pev=pev)


__all__ += ["LikelihoodRatio", "fit_inputs"]  # noqa: F822


def __getattr__(name: str):
    """:func:`compare` and :class:`LikelihoodRatio` (:mod:`bayes_animal.estimation.compare`)
    are imported on first use: the everyday REML command does not test."""
    if name in ("compare", "LikelihoodRatio"):
        from .estimation.compare import LikelihoodRatio, compare

        return {"compare": compare, "LikelihoodRatio": LikelihoodRatio}[name]
    raise AttributeError(f"module 'bayes_animal.api' has no attribute {name!r}")
