r"""The reference simulation: the data-generating procedure of the study bayes_animal grew from.

With :math:`N` animals and :math:`m` SNPs:

1. :math:`F` is an :math:`N \times k` standard-normal factor matrix (:math:`k = 5`).
2. Each SNP is a row :math:`x \sim N(1, F F^\top + I_N)` over the animals, drawn as
   :math:`x = 1 + F w + \varepsilon` with :math:`w \sim N(0, I_k)`,
   :math:`\varepsilon \sim N(0, I_N)` (the same distribution, without an :math:`N \times N`
   factorisation), then coded 0 (:math:`x < 0.2`), 1 (:math:`0.2 \le x \le 1.8`) or
   2 (:math:`x > 1.8`).
3. :math:`A = M^\top M / m` for the :math:`m \times N` code matrix :math:`M`. **A is not scaled
   to a mean diagonal of 1** (its mean diagonal is about 1.72): :math:`\sigma_u^2` and
   :math:`h^2 = \sigma_u^2 / (\sigma_u^2 + \sigma^2)` are on the scale of this A, exactly as in
   the study and in the rrBLUP / lme4 / metafor fits of ``shared/data/seed_sim``.
4. :math:`u \sim N(0, G)` with :math:`G` the nearest positive-definite matrix to
   :math:`\sigma_u^2 A`; :math:`\sigma^2 = \sigma_u^2 / \lambda`;
   :math:`y = \mu + b \cdot \mathrm{fix} + u + e`, :math:`e \sim N(0, \sigma^2 I)`,
   with ``fix`` a standard-normal covariate.

NumPy's random streams differ from R's, so the same seed gives another data set than the R
original; ``shared/data/seed_sim`` holds that one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .structures.relationship import RelationshipMatrix, nearest_positive_definite
from .tables import pandas as pd

__all__ = [
    "SimulatedData",
    "SimulatedTraits",
    "Truth",
    "simulate_pedigree",
    "simulate_reference",
    "simulate_traits",
]


@dataclass(frozen=True)
class Truth:
    """The parameters and breeding values a simulated data set was generated with."""

    u: pd.Series
    mu: float
    b: float
    sigma2_u: float
    sigma2_e: float

    @property
    def h2(self) -> float:
        """σu² / (σu² + σ²), on the scale of the simulated A."""
        return self.sigma2_u / (self.sigma2_u + self.sigma2_e)


@dataclass(frozen=True)
class SimulatedData:
    """A simulated data set: records, relationship matrix and the truth."""

    data: pd.DataFrame
    relmat: RelationshipMatrix
    truth: Truth


def simulate_reference(
    *,
    n: int = 1000,
    n_snps: int = 1000,
    n_factors: int = 5,
    mu: float = 4.0,
    b: float = 2.0,
    sigma2_u: float = 5.0,
    lam: float = 3.0,
    low: float = 0.2,
    high: float = 1.8,
    seed: int | None = 1859,
) -> SimulatedData:
    """Simulate the reference data set (defaults: the study's N = 1000, σu² = 5, λ = 3).

    Parameters
    ----------
    n
        Number of animals (ids ``ind0001`` …, zero-padded to at least four digits).
    n_snps
        Number of SNPs m.
    n_factors
        Columns of the factor matrix F that correlates the SNPs across animals.
    mu, b
        Intercept and the effect of the standard-normal covariate ``fix``.
    sigma2_u
        Additive genetic variance on the scale of A.
    lam
        Variance ratio λ = σu² / σ².
    low, high
        Thresholds coding a latent SNP value as 0 (< low), 1 or 2 (> high).
    seed
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same data.

    Returns
    -------
    SimulatedData
        ``data`` has columns ``animal``, ``fix``, ``response``; ``relmat`` is A with the ids;
        ``truth`` holds u, mu, b, σu², σ² and h².
    """
    if n < 2 or n_snps < 1 or n_factors < 0:
        raise ValueError("simulate_reference needs n ≥ 2, n_snps ≥ 1 and n_factors ≥ 0.")
    if sigma2_u < 0 or lam <= 0:
        raise ValueError("simulate_reference needs sigma2_u ≥ 0 and lam > 0.")
    rng = np.random.default_rng(seed)
    width = max(4, len(str(n)))
    ids = np.array([f"ind{i:0{width}d}" for i in range(1, n + 1)], dtype=object)

    factors = rng.standard_normal((n, n_factors))
    latent = 1.0 + rng.standard_normal((n_snps, n_factors)) @ factors.T
    latent += rng.standard_normal((n_snps, n))
    codes = np.where(latent < low, 0.0, np.where(latent > high, 2.0, 1.0))
    relmat = codes.T @ codes / n_snps

    genetic_cov = nearest_positive_definite(sigma2_u * relmat)
    u = np.linalg.cholesky(genetic_cov) @ rng.standard_normal(n)
    sigma2_e = sigma2_u / lam
    fix = rng.standard_normal(n)
    response = mu + b * fix + u + rng.normal(0.0, np.sqrt(sigma2_e), n)

    data = pd.DataFrame({"animal": ids, "fix": fix, "response": response})
    truth = Truth(
        u=pd.Series(u, index=pd.Index(ids, name="animal"), name="u"),
        mu=mu,
        b=b,
        sigma2_u=sigma2_u,
        sigma2_e=sigma2_e,
    )
    return SimulatedData(data=data, relmat=RelationshipMatrix(ids=ids, matrix=relmat), truth=truth)


def simulate_pedigree(
    *,
    n_founders: int = 100,
    n_generations: int = 10,
    n_per_generation: int = 1000,
    n_sires: int = 20,
    unknown_dam: float = 0.05,
    seed: int | None = 0,
) -> pd.DataFrame:
    """A random-mating pedigree with few sires per generation (so that inbreeding builds up).

    Generation 0 holds ``n_founders`` animals with unknown parents; each later generation has
    ``n_per_generation`` offspring of ``n_sires`` males drawn from the previous generation and
    dams drawn at random from its females (unknown with probability ``unknown_dam``).
    Sexes alternate by id, so no animal is both a sire and a dam.

    Returns
    -------
    pandas.DataFrame
        Columns ``id, sire, dam`` (ids ``g<generation>_<k>``, unknown parents as ``"0"``), in
        generation order; ``n_founders + n_generations · n_per_generation`` rows.
    """
    rng = np.random.default_rng(seed)
    ids = [f"g0_{k}" for k in range(n_founders)]
    sires = ["0"] * n_founders
    dams = ["0"] * n_founders
    previous = np.array(ids, dtype=object)
    for generation in range(1, n_generations + 1):
        males, females = previous[0::2], previous[1::2]
        chosen = rng.choice(males, size=min(n_sires, len(males)), replace=False)
        sire = rng.choice(chosen, size=n_per_generation)
        dam = rng.choice(females, size=n_per_generation).astype(object)
        dam[rng.random(n_per_generation) < unknown_dam] = "0"
        current = np.array([f"g{generation}_{k}" for k in range(n_per_generation)], dtype=object)
        ids.extend(current)
        sires.extend(sire)
        dams.extend(dam)
        previous = current
    return pd.DataFrame({"id": ids, "sire": sires, "dam": dams})


def simulate_herd_pedigree(
    *,
    n_animals: int = 10_000,
    n_generations: int = 10,
    n_herds: int | None = None,
    ai_sires: int = 50,
    herd_sire_fraction: float = 0.3,
    unknown_dam: float = 0.05,
    seed: int | None = 0,
) -> pd.DataFrame:
    """A herd-structured pedigree, as breeding programmes have them.

    Generation 0 holds founders; every later generation has ``n_animals / (n_generations + 1)``
    calves. Each calf is born in a herd; its dam is a female of that herd from the previous
    generation (unknown with probability ``unknown_dam``) and its sire either that herd's
    natural-service sire (probability ``herd_sire_fraction``) or one of ``ai_sires``
    artificial-insemination sires shared by every herd. Sexes are random; no animal is both a
    sire and a dam. The fill of the mixed-model equations depends on this structure: a
    random-mating pedigree of the same size fills many times more.

    Parameters
    ----------
    n_animals
        About how many animals in all (rounded to whole generations).
    n_generations
        Generations after the founders.
    n_herds
        Herds (default: one per 500 animals, at least 5).
    ai_sires, herd_sire_fraction, unknown_dam
        Mating structure, as above.
    seed
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    pandas.DataFrame
        ``id, sire, dam, herd, generation, sex`` (ids ``a<k>``, unknown parents ``"0"``),
        parents before offspring.
    """
    rng = np.random.default_rng(seed)
    per_generation = max(n_animals // (n_generations + 1), 2)
    herds = n_herds or max(per_generation * (n_generations + 1) // 500, 5)
    total = per_generation * (n_generations + 1)
    sire = np.full(total, -1)
    dam = np.full(total, -1)
    herd = rng.integers(0, herds, total)
    sex = rng.integers(0, 2, total)  # 1: male
    for generation in range(1, n_generations + 1):
        previous = np.arange((generation - 1) * per_generation, generation * per_generation)
        current = np.arange(generation * per_generation, (generation + 1) * per_generation)
        males = previous[sex[previous] == 1]
        females = previous[sex[previous] == 0]
        if len(males) == 0 or len(females) == 0:  # pragma: no cover - tiny generations
            continue
        shared = rng.choice(males, size=min(ai_sires, len(males)), replace=False)
        herd_sires = rng.choice(males, size=herds)
        own = rng.random(len(current)) < herd_sire_fraction
        sire[current] = np.where(
            own, herd_sires[herd[current]], rng.choice(shared, size=len(current))
        )
        by_herd = np.argsort(herd[females], kind="stable")
        ordered, their_herd = females[by_herd], herd[females][by_herd]
        first = np.searchsorted(their_herd, np.arange(herds))
        count = np.searchsorted(their_herd, np.arange(herds), side="right") - first
        calf_herd = herd[current]
        available = count[calf_herd] > 0
        pick = first[calf_herd] + (rng.random(len(current)) * np.maximum(count[calf_herd], 1))
        dam[current] = np.where(available, ordered[pick.astype(int).clip(0, len(ordered) - 1)], -1)
        dam[current[rng.random(len(current)) < unknown_dam]] = -1
    ids = np.array([f"a{k}" for k in range(total)], dtype=object)
    return pd.DataFrame(
        {
            "id": ids,
            "sire": np.where(sire >= 0, ids[np.maximum(sire, 0)], "0"),
            "dam": np.where(dam >= 0, ids[np.maximum(dam, 0)], "0"),
            "herd": herd,
            "generation": np.arange(total) // per_generation,
            "sex": np.where(sex == 1, "M", "F"),
        }
    )


@dataclass(frozen=True)
class SimulatedRecords:
    """Records simulated on a pedigree from known variance components.

    Attributes
    ----------
    data
        ``animal``, ``dam``, one column per group, ``x`` (a covariate), ``y``.
    pedigree
        The pedigree (``id, sire, dam`` …).
    variances
        The true components by name (``additive``, ``maternal``, ``additive:maternal``,
        ``pe``, each group, ``residual``).
    effects
        The true values of every level of every random effect, by component.
    """

    data: pd.DataFrame
    pedigree: pd.DataFrame
    variances: dict[str, float]
    effects: dict[str, pd.Series]


def _recursion(ped, mendelian: np.ndarray, root: np.ndarray, rng) -> np.ndarray:
    r"""Breeding values (animals × columns of ``root``) by the pedigree recursion, parents
    first: :math:`u_i = \tfrac12(u_s + u_d) + \sqrt{d_i}\,L z_i` with :math:`LL^\top` the
    covariance of the columns, so :math:`u \sim N(0, LL^\top \otimes A)` exactly."""
    from .structures.pedigree import generation_blocks

    q = ped.size
    values = np.zeros((q + 1, root.shape[0]))  # row q: an unknown parent
    shocks = rng.standard_normal((q, root.shape[1])) @ root.T * np.sqrt(mendelian)[:, None]
    sire = np.where(ped.sire >= 0, ped.sire, q)
    dam = np.where(ped.dam >= 0, ped.dam, q)
    for block in generation_blocks(ped.generation):
        values[block] = 0.5 * (values[sire[block]] + values[dam[block]]) + shocks[block]
    return values[:q]


def simulate_records(
    pedigree: pd.DataFrame,
    *,
    variances: dict[str, float],
    records_per_animal: tuple[int, int] = (1, 1),
    phenotyped: float = 1.0,
    groups: dict[str, int] | None = None,
    mean: float = 10.0,
    slope: float = 0.5,
    seed: int | None = 0,
    family: str = "gaussian",
    link: str | None = None,
) -> SimulatedRecords:
    r"""Simulate records with several random effects on a pedigree, the truth kept.

    Breeding values come from the pedigree recursion: for each animal, parents first,
    :math:`(a_i, m_i) = \tfrac12(a_s + a_d, m_s + m_d) + \sqrt{d_i}\,L_0 z_i` with
    :math:`L_0 L_0^\top = G_0` (the direct and maternal variances and their covariance) and
    :math:`d_i` the Mendelian-sampling variance, so :math:`(a, m) \sim N(0, G_0 \otimes A)`
    exactly. A record of animal :math:`i` with dam :math:`d` is
    :math:`y = \mu + \beta x + a_i + m_d + pe_i + \sum_g c_g + e` (no maternal effect when the
    dam is unknown).

    Parameters
    ----------
    pedigree
        ``id, sire, dam`` (unknown as ``"0"``), e.g. from :func:`simulate_herd_pedigree`.
    variances
        ``additive`` (required), ``residual`` (required), and optionally ``maternal``,
        ``additive:maternal``, ``pe`` (an animal's permanent environment, shared by its
        records) and one variance per group of ``groups``.
    records_per_animal
        Inclusive range of records per phenotyped animal (repeated records when above 1).
    phenotyped
        Fraction of the non-founder animals with records.
    groups
        Independent grouping factors: column name → number of levels (assigned at random).
    mean, slope
        Intercept and the effect of the standard-normal covariate ``x``.
    seed
        Seed of :func:`numpy.random.default_rng`.
    family, link
        ``"gaussian"``; ``"binomial"`` (``"probit"``: a record is 1 when its liability
        :math:`\eta + \varepsilon`, :math:`\varepsilon \sim N(0, 1)`, is above 0; ``"logit"``:
        with a standard logistic :math:`\varepsilon`) — ``residual`` is then the family's
        fixed latent residual and may be left out; or ``"poisson"``: a count with mean
        :math:`e^{\eta + e}`, :math:`e \sim N(0, \sigma^2_{residual})` (the observation-level
        effect; 0 for none). ``mean`` is then on the latent scale (e.g. ``mean=-1`` for a
        prevalence near 20 %).
    """
    from .spec.family import family_of
    from .structures.additive import mendelian_sampling
    from .structures.pedigree import read_pedigree

    chosen_family = family_of(family, link)
    variances = dict(variances)
    if chosen_family.residual_fixed is not None and chosen_family.name == "binomial":
        variances.setdefault("residual", chosen_family.residual_fixed)
    rng = np.random.default_rng(seed)
    groups = groups or {}
    unknown = set(variances) - {"additive", "maternal", "additive:maternal", "pe", "residual"}
    if unknown - set(groups):
        raise ValueError(f"Variances of unknown components: {sorted(unknown - set(groups))}.")
    ped = read_pedigree(pedigree[["id", "sire", "dam"]], warn=False)
    d = mendelian_sampling(ped).variances
    g0 = np.array(
        [
            [variances["additive"], variances.get("additive:maternal", 0.0)],
            [variances.get("additive:maternal", 0.0), variances.get("maternal", 0.0)],
        ]
    )
    values, vectors = np.linalg.eigh(g0)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    q = ped.size
    genetic = _recursion(ped, d, root, rng)
    candidates = np.flatnonzero(ped.generation > 0)
    chosen = rng.choice(candidates, size=round(phenotyped * len(candidates)), replace=False)
    chosen.sort()
    counts = rng.integers(records_per_animal[0], records_per_animal[1] + 1, size=len(chosen))
    animal = np.repeat(chosen, counts)
    n = len(animal)
    pe = rng.normal(0.0, np.sqrt(variances.get("pe", 0.0)), q)
    x = rng.standard_normal(n)
    has_dam = ped.dam[animal] >= 0
    if chosen_family.name == "binomial" and chosen_family.link == "logit":
        noise = rng.logistic(0.0, 1.0, n)
    elif chosen_family.name == "binomial":
        noise = rng.normal(0.0, 1.0, n)
    else:
        noise = rng.normal(0.0, np.sqrt(variances["residual"]), n)
    y = mean + slope * x + genetic[animal, 0] + noise
    y += np.where(has_dam, genetic[np.maximum(ped.dam[animal], 0), 1], 0.0) + pe[animal]
    data = pd.DataFrame(
        {
            "animal": ped.ids[animal],
            "dam": np.where(has_dam, ped.ids[np.maximum(ped.dam[animal], 0)], "0"),
            "x": x,
        }
    )
    effects = {
        "additive": pd.Series(genetic[:, 0], index=ped.ids),
        "maternal": pd.Series(genetic[:, 1], index=ped.ids),
        "pe": pd.Series(pe[chosen], index=ped.ids[chosen]),
    }
    for name, levels in groups.items():
        level = rng.integers(0, levels, n)
        values_g = rng.normal(0.0, np.sqrt(variances.get(name, 0.0)), levels)
        data[name] = [f"{name}{k}" for k in level]
        y += values_g[level]
        effects[name] = pd.Series(values_g, index=[f"{name}{k}" for k in range(levels)])
    if chosen_family.name == "binomial":
        y = (y > 0).astype(int)
    elif chosen_family.name == "poisson":
        y = rng.poisson(np.exp(np.minimum(y, 30.0)))
    data["y"] = y
    return SimulatedRecords(data, pedigree, dict(variances), effects)


@dataclass(frozen=True)
class SimulatedTraits:
    """Several traits simulated on a pedigree, the truth kept.

    Attributes
    ----------
    data
        ``animal``, ``x`` (a covariate) and one column per trait (NaN where not measured).
    pedigree
        The pedigree.
    genetic, residual, permanent
        The true :math:`G_0`, :math:`R_0` and permanent-environment covariance (None without
        one), traits × traits.
    breeding_values
        The true breeding values, animals × traits.
    """

    data: pd.DataFrame
    pedigree: pd.DataFrame
    genetic: np.ndarray
    residual: np.ndarray
    permanent: np.ndarray | None
    breeding_values: pd.DataFrame


def simulate_traits(
    pedigree: pd.DataFrame,
    *,
    traits: tuple[str, ...],
    genetic: np.ndarray,
    residual: np.ndarray,
    permanent: np.ndarray | None = None,
    records_per_animal: tuple[int, int] = (1, 1),
    phenotyped: float = 1.0,
    missing: float = 0.0,
    means: tuple[float, ...] | None = None,
    slope: float = 0.5,
    seed: int | None = 0,
) -> SimulatedTraits:
    r"""Simulate several correlated traits on a pedigree, the truth kept.

    Breeding values by the pedigree recursion, parents first,
    :math:`u_i = \tfrac12(u_s + u_d) + \sqrt{d_i}\,L_G z_i` with :math:`L_G L_G^\top = G_0`, so
    :math:`u \sim N(0, G_0 \otimes A)` exactly; a record of animal :math:`i` is
    :math:`y = \mu + \beta x + u_i + p_i + e`, :math:`p_i \sim N(0, P_0)` shared by the
    animal's records, :math:`e \sim N(0, R_0)`; then each trait of each record is missing with
    probability ``missing`` (a record keeps at least one trait).

    Parameters
    ----------
    pedigree
        ``id, sire, dam`` (unknown as ``"0"``).
    traits
        The traits' names.
    genetic, residual, permanent
        :math:`G_0`, :math:`R_0` and (optionally) the permanent environment's covariance,
        traits × traits, positive semi-definite.
    records_per_animal, phenotyped
        As for :func:`simulate_records`.
    missing
        Probability that a trait of a record is missing.
    means, slope
        Each trait's mean (default 10, 20, …) and the effect of the covariate ``x``.
    seed
        Seed of :func:`numpy.random.default_rng`.
    """
    from .structures.additive import mendelian_sampling
    from .structures.pedigree import read_pedigree

    t = len(traits)
    matrices = {"genetic": genetic, "residual": residual, "permanent": permanent}
    roots = {}
    for name, matrix in matrices.items():
        if matrix is None:
            continue
        matrix = np.asarray(matrix, dtype=float)
        if matrix.shape != (t, t) or not np.allclose(matrix, matrix.T):
            raise ValueError(f"{name} must be a symmetric {t} × {t} matrix; got {matrix.shape}.")
        values, vectors = np.linalg.eigh(matrix)
        if values[0] < -1e-10 * max(values[-1], 1.0):
            raise ValueError(f"{name} is not positive semi-definite (eigenvalue {values[0]:.3g}).")
        roots[name] = vectors * np.sqrt(np.clip(values, 0.0, None))
    if not 0 <= missing < 1:
        raise ValueError(f"missing must be in [0, 1); got {missing}.")
    rng = np.random.default_rng(seed)
    ped = read_pedigree(pedigree[["id", "sire", "dam"]], warn=False)
    d = mendelian_sampling(ped).variances
    q = ped.size
    values = _recursion(ped, d, roots["genetic"], rng)
    candidates = np.flatnonzero(ped.generation > 0)
    chosen = np.sort(
        rng.choice(candidates, size=round(phenotyped * len(candidates)), replace=False)
    )
    counts = rng.integers(records_per_animal[0], records_per_animal[1] + 1, size=len(chosen))
    animal = np.repeat(chosen, counts)
    n = len(animal)
    x = rng.standard_normal(n)
    means = tuple(10.0 * (k + 1) for k in range(t)) if means is None else tuple(means)
    y = np.asarray(means)[None, :] + slope * x[:, None] + values[animal]
    y += rng.standard_normal((n, t)) @ roots["residual"].T
    if "permanent" in roots:
        y += (rng.standard_normal((q, t)) @ roots["permanent"].T)[animal]
    lost = rng.random((n, t)) < missing
    keep_one = rng.integers(0, t, n)
    lost[np.arange(n), keep_one] &= lost.sum(axis=1) < t  # a record keeps a trait
    y[lost] = np.nan
    data = pd.DataFrame({"animal": ped.ids[animal], "x": x})
    for k, name in enumerate(traits):
        data[name] = y[:, k]
    return SimulatedTraits(
        data=data,
        pedigree=pedigree,
        genetic=np.asarray(genetic, dtype=float),
        residual=np.asarray(residual, dtype=float),
        permanent=None if permanent is None else np.asarray(permanent, dtype=float),
        breeding_values=pd.DataFrame(values, index=pd.Index(ped.ids, name="id"), columns=traits),
    )
