r"""Henderson's mixed-model equations with known variances, sparse, using :math:`A^{-1}`.

.. math::

    \begin{pmatrix} X^\top X & X^\top Z \\ Z^\top X & Z^\top Z + \alpha A^{-1} \end{pmatrix}
    \begin{pmatrix} \hat b \\ \hat u \end{pmatrix} =
    \begin{pmatrix} X^\top y \\ Z^\top y \end{pmatrix},\qquad
    \alpha = \sigma^2 / \sigma_u^2 .

With :math:`C` the inverse of the coefficient matrix, :math:`\mathrm{PEV}_i = C^{uu}_{ii}
\sigma^2`, reliability :math:`r^2_i = 1 - \mathrm{PEV}_i / (\sigma_u^2 (1 + F_i))`, accuracy
:math:`r_i`, and :math:`\mathrm{SEP}_i = \sqrt{\mathrm{PEV}_i}`; :math:`\operatorname{cov}(\hat b)
= C^{bb} \sigma^2`. The system is factorised once with a sparse LU (SuperLU); the diagonal of
:math:`C^{uu}` is obtained by solving for the animal columns in blocks (skip it with
``pev=False`` for very large pedigrees). This is what breeders run when variances are known
(BLUPF90, Mrode's textbook), and the check for the textbook examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse import linalg as splinalg

from .design import build_design
from .errors import BayesAnimalError
from .structures.additive import MendelianSampling, inverse_relationship, mendelian_sampling
from .structures.pedigree import Pedigree, read_pedigree

__all__ = ["MmeSolution", "solve_mme"]

_BLOCK = 256


@dataclass(frozen=True)
class MmeSolution:
    """Solutions of the mixed-model equations.

    Attributes
    ----------
    beta, beta_se
        Fixed-effect solutions (BLUE) and their standard errors, by design column.
    blup
        One row per animal of the pedigree, in the user's order (added founders first):
        ``blup``, and with PEV ``pev``, ``sep``, ``reliability``, ``accuracy``; plus
        ``inbreeding`` and ``n_records``.
    sigma2_u, sigma2_e
        The variances used.
    """

    beta: pd.Series
    beta_se: pd.Series
    blup: pd.DataFrame
    sigma2_u: float
    sigma2_e: float


def solve_mme(
    formula: str,
    data: pd.DataFrame,
    *,
    pedigree: Pedigree | pd.DataFrame | str | PathLike[str],
    sigma2_u: float,
    sigma2_e: float,
    animal: str = "animal",
    pedigree_columns: tuple[str, str, str] | None = None,
    allow_selfing: bool = False,
    pev: bool = True,
) -> MmeSolution:
    """BLUE and BLUP from Henderson's equations with a sparse :math:`A^{-1}`.

    Parameters
    ----------
    formula
        Fixed part, e.g. ``"wwg ~ 0 + C(sex)"``.
    data
        Records; ``animal`` names the id column.
    pedigree
        A :class:`Pedigree`, a DataFrame or CSV path (read with :func:`read_pedigree`).
    sigma2_u, sigma2_e
        Known additive genetic and residual variances (> 0).
    pev
        Compute PEV, SEP, reliabilities and accuracies (one sparse solve per animal, in blocks).
    """
    if sigma2_u <= 0 or sigma2_e <= 0:
        raise BayesAnimalError("solve_mme needs sigma2_u > 0 and sigma2_e > 0.")
    if not isinstance(pedigree, Pedigree):
        pedigree = read_pedigree(pedigree, columns=pedigree_columns, allow_selfing=allow_selfing)
    design = build_design(formula, data, animal=animal, relmat=pedigree)
    sampling = mendelian_sampling(pedigree)
    q, p = pedigree.size, design.n_fixed
    X = sparse.csr_matrix(design.X)
    Z = design.incidence(q)
    alpha = sigma2_e / sigma2_u
    lhs = sparse.bmat(
        [[X.T @ X, X.T @ Z], [Z.T @ X, Z.T @ Z + alpha * inverse_relationship(pedigree, sampling)]],
        format="csc",
    )
    rhs = np.concatenate([X.T @ design.y, Z.T @ design.y])
    factor = splinalg.splu(lhs)
    solution = factor.solve(rhs)
    beta_cov = _inverse_block(factor, np.arange(p), p + q)[:, :p] * sigma2_e
    names = list(design.fixed_names)
    blup = pd.DataFrame({"blup": solution[p:]}, index=pd.Index(pedigree.ids, name="id"))
    if pev:
        diagonal = np.concatenate(
            [
                np.diag(
                    _inverse_block(factor, np.arange(p + k, p + min(k + _BLOCK, q)), p + q)[
                        :, p + k : p + min(k + _BLOCK, q)
                    ]
                )
                for k in range(0, q, _BLOCK)
            ]
        )
        pev_values = diagonal * sigma2_e
        _add_accuracy(blup, pev_values, sigma2_u, sampling)
    blup["inbreeding"] = sampling.inbreeding
    blup["n_records"] = np.bincount(design.animal_index, minlength=q)
    return MmeSolution(
        beta=pd.Series(solution[:p], index=names, name="beta"),
        beta_se=pd.Series(np.sqrt(np.diag(beta_cov)), index=names, name="se"),
        blup=blup.iloc[pedigree.user_order],
        sigma2_u=float(sigma2_u),
        sigma2_e=float(sigma2_e),
    )


def _inverse_block(factor, columns: np.ndarray, size: int) -> np.ndarray:
    """Rows ``columns`` of the inverse coefficient matrix (symmetric), by sparse solves."""
    unit = np.zeros((size, len(columns)))
    unit[columns, np.arange(len(columns))] = 1.0
    return factor.solve(unit).T


def _add_accuracy(
    blup: pd.DataFrame, pev: np.ndarray, sigma2_u: float, sampling: MendelianSampling
) -> None:
    genetic = sigma2_u * (1.0 + sampling.inbreeding)
    reliability = 1.0 - pev / genetic
    blup["pev"] = pev
    blup["sep"] = np.sqrt(pev)
    blup["reliability"] = reliability
    blup["accuracy"] = np.sqrt(np.clip(reliability, 0.0, None))
