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
import pandas as pd

from .structures.relationship import RelationshipMatrix, nearest_positive_definite

__all__ = ["SimulatedData", "Truth", "simulate_pedigree", "simulate_reference"]


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
