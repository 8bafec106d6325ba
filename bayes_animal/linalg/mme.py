r"""Henderson's mixed-model equations for any number of random effects, sparse.

Model: :math:`y = Xb + \sum_k Z_k u_k + e`, :math:`e \sim N(0, \sigma^2 I)`, random effects
in blocks :math:`u_b \sim N(0, G_{0b} \otimes K_b)` (:mod:`bayes_animal.spec.parameters`). With
:math:`W = [X\ Z_1 \cdots Z_K]` and :math:`G^{-1} = \bigoplus_b G_{0b}^{-1} \otimes K_b^{-1}`,

.. math::

    C(\theta) = W^\top W / \sigma^2 + \begin{pmatrix} 0 & 0 \\ 0 & G^{-1}\end{pmatrix},\qquad
    C \hat w = W^\top y / \sigma^2,

one sparsity pattern for every :math:`\theta`, analysed once (:mod:`bayes_animal.linalg.ldl`).
With several traits the residual is :math:`R = \bigoplus_r R_{0,[r]}`, each record's block
:math:`R_0` restricted to the traits it has, and :math:`C = W^\top R^{-1} W + G^{-1}` is
assembled by pieces :math:`(R_p^{-1})_{ab} W_{pa}^\top W_{pb}` — one per pattern :math:`p` of
observed traits and pair of its traits (one trait: the one piece :math:`W^\top W/\sigma^2`);
:math:`\log|R| = \sum_p n_p \log|R_p|`, the residual's score
:math:`-\tfrac12[\sum_p n_p \operatorname{tr}(R_p^{-1}E_p) - \sum_{p,ab}(R_p^{-1}E_pR_p^{-1})_{ab}
\operatorname{tr}(C^{-1}W_{pa}^\top W_{pb}) - \hat e^\top R^{-1}\partial R\, R^{-1}\hat e]` (the
traces from the same selected inverse) and its working variate :math:`\partial R\,R^{-1}\hat e`.
The formulas below are written for one trait.
From one factorisation (Johnson & Thompson 1995; Gilmour, Thompson & Cullis 1995):

- the restricted log-likelihood, on the constant of rrBLUP and metafor,

  .. math::
      \ell_R = -\tfrac12\left[(n-p)\log 2\pi + n\log\sigma^2 + \log|G| + \log|C|
               + y^\top P y - \log|X^\top X|\right],

  :math:`\log|G| = \sum_b (q_b \log|G_{0b}| + d_b \log|K_b|)`,
  :math:`y^\top P y = y^\top y/\sigma^2 - \hat w^\top W^\top y/\sigma^2`;
- the score :math:`\partial\ell_R/\partial\theta_i = -\tfrac12[\operatorname{tr}(PV_i) -
  y^\top P V_i P y]`, with, for a parameter of block :math:`b` (:math:`E_i = \partial G_0 /
  \partial\theta_i`, :math:`F_i = G_0^{-1} E_i G_0^{-1}`),
  :math:`\operatorname{tr}(PV_i) = q_b \operatorname{tr}(G_0^{-1}E_i) - \sum_{kl} F_{i,kl}
  \operatorname{tr}(C^{kl} K^{-1})` and :math:`y^\top PV_iPy = \sum_{kl} F_{i,kl}\,\hat u_k^\top
  K^{-1} \hat u_l`; for the residual :math:`\operatorname{tr}(P) = (n - p - q +
  \operatorname{tr}(C^{uu}G^{-1}))/\sigma^2` and :math:`y^\top P P y = \hat e^\top \hat e /
  \sigma^4`. The traces :math:`\operatorname{tr}(C^{kl}K^{-1})` need :math:`C^{-1}` only where
  :math:`K^{-1}` is non-zero: the selected inverse;
- the average information :math:`\tfrac12 f_i^\top P f_j` of the working variates
  :math:`f_i = V_i P y` (:math:`Z_b (E_i G_0^{-1} \otimes I)\hat u_b`, and :math:`\hat e/\sigma^2`
  for the residual), with :math:`P F = (F - W C^{-1} W^\top F/\sigma^2)/\sigma^2`: one solve
  with a column per parameter;
- the EM-REML update :math:`G_{0,kl} \leftarrow (\hat u_k^\top K^{-1}\hat u_l +
  \operatorname{tr}(C^{kl}K^{-1}))/q_b`, :math:`\sigma^2 \leftarrow (\hat e^\top\hat e +
  \sigma^2(p + q - \operatorname{tr}(C^{uu}G^{-1})))/n` (always inside the parameter space);
- the solutions :math:`\hat b, \hat u_k`, their prediction error variances
  :math:`\operatorname{diag}(C^{-1})` and :math:`\operatorname{cov}(\hat b) = C^{bb}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.linalg import lapack

from ..design import Design
from ..errors import SingularEquationsError
from ..spec.parameters import Block, Parameters
from ..structures.covariance import IdentityStructure, Structure
from .ldl import (
    PIVOT_TOLERANCE,
    Analysis,
    Factor,
    NotPositiveDefinite,
    SelectedInverse,
    TraceGathers,
    analyse,
    coordinate_pattern,
)
from .threads import blas_threads

__all__ = ["Evaluation", "MixedModelEquations"]


def _logdet(matrix: np.ndarray) -> float:
    """:math:`\\log|M|` of a positive definite matrix (a 1 × 1 one without LAPACK)."""
    if matrix.shape == (1, 1):
        return float(np.log(matrix[0, 0]))
    return float(np.linalg.slogdet(matrix)[1])


def _scalar_block_score(size: int, g: float, e: float, trace: float, quadratic: float) -> float:
    """:func:`_block_score` of a 1 × 1 block in floats (G₀⁻¹ = g, E = e), the same operations
    in the same order."""
    F = g * e * g
    return -0.5 * (size * (g * e) - F * trace - F * quadratic)


def _scalar_residual_score(
    count: int, r: float, e: float, trace: float, outer: float
) -> tuple[float, float]:
    """:func:`_residual_score` of a 1 × 1 pattern in floats (R⁻¹ = r, E = e)."""
    return count * (r * e) - r * e * r * trace, e * outer


def _block_score(size: int, g0_inv: np.ndarray, E: np.ndarray, traces, quadratics) -> float:
    r""":math:`-\tfrac12[q\operatorname{tr}(G_0^{-1}E) - \sum F \circ T - \sum F \circ Q]`,
    :math:`F = G_0^{-1} E G_0^{-1}`, of one parameter of a block (``size`` q levels, traces T,
    quadratics Q)."""
    if E.shape == (1, 1):
        return _scalar_block_score(
            size, float(g0_inv[0, 0]), float(E[0, 0]), float(traces[0, 0]),
            float(quadratics[0, 0]),
        )  # fmt: skip
    F = g0_inv @ E @ g0_inv
    tr_pv = size * np.trace(g0_inv @ E) - np.sum(F * traces)
    return float(-0.5 * (tr_pv - np.sum(F * quadratics)))


def _residual_score(
    count: int, inverse: np.ndarray, Ep: np.ndarray, traces: list[float], outer: np.ndarray
) -> tuple[float, float]:
    r"""One residual pattern's part of :math:`\operatorname{tr}(P\,\partial R)` and of
    :math:`\hat e^\top R^{-1}\partial R\,R^{-1}\hat e` (``count`` records, :math:`R_p^{-1}`,
    the derivative restricted to the pattern, the traces of its pieces in lower-triangle
    order, :math:`\sum (R^{-1}\hat e)(R^{-1}\hat e)^\top`)."""
    if Ep.shape == (1, 1):
        return _scalar_residual_score(
            count, float(inverse[0, 0]), float(Ep[0, 0]), traces[0], float(outer[0, 0])
        )
    tr_pv = count * float(np.sum(inverse * Ep))
    middle = inverse @ Ep @ inverse
    k = 0
    for a in range(len(Ep)):
        for b in range(a + 1):
            tr_pv -= middle[a, b] * traces[k]
            k += 1
    return tr_pv, float(np.sum(Ep * outer))


@dataclass(frozen=True)
class _Piece:
    """One K⁻¹ placed in C at the block (row term, column term) of a G-block."""

    block: int
    row: int  # position of the row term within the block
    col: int
    positions: np.ndarray  # into C's lower data
    values: np.ndarray  # K⁻¹ entries (times 2 off the diagonal of a symmetric placement)
    kinv_values: np.ndarray  # K⁻¹ entries as placed in C


@dataclass(frozen=True)
class _ResidualPiece:
    """:math:`W_a^\top W_b` (+ its transpose off the diagonal) of one residual pattern: the
    observations of traits ``a`` and ``b`` (positions within the pattern) of its records;
    its coefficient in C is :math:`(R_p^{-1})_{ab}`."""

    pattern: int
    a: int
    b: int
    positions: np.ndarray  # into C's lower data
    values: np.ndarray  # entries times 2 off the diagonal (for traces)
    placed: np.ndarray  # entries as placed in C


def _rows(matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sparse matrix's compressed rows (indptr, indices, data) for the compiled kernels, in
    its stored order."""
    rows = sparse.csr_matrix(matrix)
    return (
        rows.indptr.astype(np.int64),
        rows.indices.astype(np.int64),
        np.ascontiguousarray(rows.data, dtype=float),
    )


@dataclass(frozen=True)
class _ScalarPlan:
    """The fixed arrays of :meth:`MixedModelEquations._evaluate_scalar`: where the residual's
    and each block's variance sit in θ, each block's levels among the unknowns (block b's are
    ``starts[b]:stops[b]``), and the compressed rows of the assembly, Wᵀ, W and the
    block-diagonal K⁻¹."""

    residual: int
    variances: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    assembly: tuple
    wt: tuple
    w: tuple
    k: tuple


@dataclass(frozen=True)
class _Layout:
    """C's pieces as the factorisation and the selected inverse see them: ``assembly`` (the
    permuted storage × pieces) times the pieces' coefficients is C's data; ``traces`` gathers
    each piece's entries from the selected inverse, for
    :math:`\\operatorname{tr}(C^{-1}\\,\\text{piece}_k)`
    (:meth:`~bayes_animal.linalg.ldl.SelectedInverse.traces`). The residual's pieces come
    first (``residual_pieces`` of them)."""

    residual_pieces: int
    assembly: sparse.csr_matrix
    traces: TraceGathers


@dataclass(frozen=True)
class Evaluation:
    """Everything one factorisation of :math:`C(\\theta)` gives (see the module docstring).

    Attributes
    ----------
    theta
        The parameters it was evaluated at.
    loglik
        Restricted log-likelihood.
    solutions
        :math:`\\hat w` = (b̂, û₁, …) in the order of the equations.
    score, information
        Score and average information (None when not asked for).
    traces, quadratics
        Per block, the matrices :math:`\\operatorname{tr}(C^{kl}K^{-1})` and
        :math:`\\hat u_k^\\top K^{-1} \\hat u_l` (None without the selected inverse).
    residuals
        :math:`\\hat e = y - W\\hat w`.
    scaled_residuals
        :math:`R^{-1}\\hat e = Py` (the restricted likelihood's gradient in y is its negative).
    factor
        The factorisation (for draws and solves).
    selected
        The selected inverse (None when not asked for).
    """

    theta: np.ndarray
    loglik: float
    solutions: np.ndarray
    residuals: np.ndarray
    scaled_residuals: np.ndarray
    factor: Factor
    score: np.ndarray | None = None
    information: np.ndarray | None = None
    traces: list[np.ndarray] | None = None
    quadratics: list[np.ndarray] | None = None
    selected: SelectedInverse | None = field(default=None, repr=False)


class MixedModelEquations:
    """The mixed-model equations of a design, analysed once, evaluated at any :math:`\\theta`.

    Parameters
    ----------
    design
        The records, fixed effects and random effects.
    structures
        The structure of each genetic effect (by term name); independent effects get the
        identity.
    parameters
        The parameter layout (:meth:`~bayes_animal.spec.parameters.Parameters.from_spec`).
    ordering
        Fill-reducing ordering of the analysis (``"amd"``, ``"metis"``, ``"natural"``).
    """

    def __init__(
        self,
        design: Design,
        structures: Mapping[str, Structure],
        parameters: Parameters,
        *,
        ordering: str = "amd",
    ) -> None:
        self.design = design
        self.parameters = parameters
        self.p = design.n_fixed
        self.n = design.n_records
        self.structures = {
            e.name: structures.get(e.name, structures.get(e.term)) if e.genetic
            else IdentityStructure(e.levels)
            for e in design.effects
        }  # fmt: skip
        sizes = [e.size for e in design.effects]
        self.offsets = dict(
            zip(
                (e.name for e in design.effects),
                np.concatenate([[self.p], self.p + np.cumsum(sizes)[:-1]]).astype(int),
                strict=True,
            )
        )
        self.size = self.p + int(np.sum(sizes))
        self.q = int(np.sum(sizes))
        W = sparse.hstack(
            [sparse.csc_matrix(design.X), *(e.incidence() for e in design.effects)], format="csc"
        )
        self.W = W
        self.Wt = W.T.tocsr()
        self.patterns = design.residual_patterns()
        self.n_records = int(sum(len(positions) for _, positions in self.patterns))
        self.logdet_xtx = float(np.linalg.slogdet(design.X.T @ design.X)[1])
        residual_pieces = self._residual_pieces(W)
        pieces = self._pieces()
        rows = np.concatenate(
            [*(r for r, _, _, _ in residual_pieces), *(r for r, _, _, _ in pieces)]
        )
        cols = np.concatenate(
            [*(c for _, c, _, _ in residual_pieces), *(c for _, c, _, _ in pieces)]
        )
        self.pattern, unique = coordinate_pattern(rows, cols, self.size)
        order = self.pattern.tocoo()
        pattern_keys = order.col.astype(np.int64) * self.size + order.row
        # csc data order is by column then row: the same order as the sorted keys
        assert np.array_equal(pattern_keys, unique)
        self._residual_placed: list[_ResidualPiece] = []
        for r, c, placed, (k, a, b, weights) in residual_pieces:
            positions = np.searchsorted(unique, c.astype(np.int64) * self.size + r)
            self._residual_placed.append(
                _ResidualPiece(k, a, b, positions, placed * weights, placed)
            )
        self._pieces_placed: list[_Piece] = []
        for r, c, placed, meta in pieces:
            positions = np.searchsorted(unique, c.astype(np.int64) * self.size + r)
            block, row_term, col_term, weights = meta
            self._pieces_placed.append(
                _Piece(block, row_term, col_term, positions, placed * weights, placed)
            )
        # C's data (the analysed pattern's order) = this × the pieces' coefficients: residual
        # pieces first; a piece's positions are distinct, pieces sharing one are summed
        placed = [*self._residual_placed, *self._pieces_placed]
        self._assembly = sparse.csr_matrix(
            (
                np.concatenate([piece.placed for piece in self._residual_placed]
                               + [piece.kinv_values for piece in self._pieces_placed]),
                (
                    np.concatenate([piece.positions for piece in placed]),
                    np.concatenate([np.full(len(pc.positions), k) for k, pc in enumerate(placed)]),
                ),
            ),
            shape=(self.pattern.nnz, len(placed)),
        )  # fmt: skip
        self.logdet_k = [self.structures[b.terms[0]].logdet() for b in parameters.blocks]
        self.block_sizes = [self.structures[b.terms[0]].size for b in parameters.blocks]
        self.ordering = ordering
        self._analysis: Analysis | None = None
        self._slices = {
            e.name: slice(self.offsets[e.name], self.offsets[e.name] + e.size)
            for e in design.effects
        }
        # each block's K⁻¹ for the quadratics û'K⁻¹û (None for I: the product is û itself)
        self._inverses = [
            None
            if type(self.structures[b.terms[0]]) is IdentityStructure
            else self.structures[b.terms[0]].inverse()
            for b in parameters.blocks
        ]
        self._derivatives = [
            [
                (parameters.index(name), parameters.derivative(name, block))
                for name in parameters.names
                if parameters.derivative(name, block) is not None
            ]
            for block in parameters.blocks
        ]
        residual = parameters.residual
        self._residual_derivatives = []  # (θ index, [(pattern, ∂R₀/∂θ restricted to it)])
        for name in residual.terms + tuple(n for _, _, n in residual.covariances):
            E = parameters.derivative(name, residual)
            restricted = [
                (k, E[np.ix_(present, present)]) for k, (present, _) in enumerate(self.patterns)
            ]
            self._residual_derivatives.append(
                (parameters.index(name), [(k, Ep) for k, Ep in restricted if Ep.any()])
            )
        # one trait: one pattern holding every record in order, R = σ²I (a scalar's work)
        self._in_order = len(self.patterns) == 1 and np.array_equal(
            self.patterns[0][1], np.arange(self.n)[:, None]
        )
        # one trait, every G0 and R0 a scalar variance: evaluated by compiled steps
        # (scalar_kernels; _evaluate_scalar), the general path's arithmetic fused
        self._scalar = (
            self._in_order
            and not parameters.multi_trait
            and parameters.residual.size == 1
            and all(b.size == 1 and not b.covariances for b in parameters.blocks)
        )
        self._scalar_plan_cache: _ScalarPlan | None = None

    @property
    def analysis(self) -> Analysis:
        """The symbolic analysis of C's pattern (ordering, pattern of L), done on first use."""
        if self._analysis is None:
            self._analysis = analyse(self.pattern, ordering=self.ordering)
        return self._analysis

    # -- assembly ----------------------------------------------------------------------------
    def _residual_pieces(self, W):
        """Coordinates and values of :math:`W_a^\top W_b` for every residual pattern and pair
        of its traits (lower triangle; with one trait the one piece :math:`W^\top W`)."""
        out = []
        W = W.tocsr()
        for k, (present, positions) in enumerate(self.patterns):
            for a in range(len(present)):
                for b in range(a + 1):
                    block = W[positions[:, a]].T @ W[positions[:, b]]
                    if a != b:
                        block = block + block.T
                    lower = sparse.tril(block.tocsc()).tocoo()
                    weights = np.where(lower.row == lower.col, 1.0, 2.0)
                    out.append((lower.row, lower.col, lower.data, (k, a, b, weights)))
        return out

    def residual_inverses(self, theta: np.ndarray) -> list[np.ndarray]:
        """:math:`R_p^{-1}` of every pattern: :math:`R_0` restricted to its traits, inverted."""
        r0 = self.parameters.g0(theta, self.parameters.residual)
        return [
            np.array([[1.0 / r0[present[0], present[0]]]])
            if len(present) == 1
            else np.linalg.inv(r0[np.ix_(present, present)])
            for present, _ in self.patterns
        ]

    def apply_residual(self, matrices: list[np.ndarray], values: np.ndarray) -> np.ndarray:
        """:math:`\bigoplus_p M_p` applied to ``values`` (observations, or observations ×
        columns): each record's observations times its pattern's matrix."""
        if self._in_order:
            return values * matrices[0][0, 0]
        out = np.empty_like(values, dtype=float)
        for (_, positions), matrix in zip(self.patterns, matrices, strict=True):
            chosen = values[positions]  # records × traits (× columns)
            if values.ndim == 1:
                out[positions] = chosen @ matrix
            else:
                out[positions] = np.einsum("ab,mbc->mac", matrix, chosen)
        return out

    def right_hand_side(self, theta: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """:math:`W^\top R^{-1} y` at ``theta``, of the design's ``y`` or of other values on
        the records (a family's latent values)."""
        values = self.design.y if y is None else np.asarray(y, dtype=float)
        return self.Wt @ self.apply_residual(self.residual_inverses(theta), values)

    def _pieces(self):
        """Coordinates and values of every K⁻¹ placement, with multiplicities for traces."""
        out = []
        for b, block in enumerate(self.parameters.blocks):
            inverse = sparse.coo_matrix(self.structures[block.terms[0]].inverse())
            for i, row_term in enumerate(block.terms):
                for j, col_term in enumerate(block.terms):
                    if j > i:
                        continue
                    r0, c0 = self.offsets[row_term], self.offsets[col_term]
                    if i == j:  # symmetric placement: lower triangle, off-diagonal counted twice
                        keep = inverse.row >= inverse.col
                        rr, cc, vv = inverse.row[keep], inverse.col[keep], inverse.data[keep]
                        weights = np.where(rr == cc, 1.0, 2.0)
                    else:  # the (row term, column term) block below the diagonal: all of K⁻¹
                        rr, cc, vv = inverse.row, inverse.col, inverse.data
                        weights = np.ones(len(vv))
                    out.append((rr + r0, cc + c0, vv, (b, i, j, weights)))
        return out

    def values(self, theta: np.ndarray) -> np.ndarray:
        """The lower-triangle data of :math:`C(\theta)` on the analysed pattern."""
        return self._assembly @ self._coefficients(
            self._g0_inverses(theta), self.residual_inverses(theta)
        )

    def _layout(self) -> _Layout:
        """C's pieces in the factorisation's permuted storage and where the selected inverse
        holds their entries: one sparse assembly matrix, gathers per piece (computed once, after
        the analysis)."""
        if getattr(self, "_fast", None) is None:
            analysis = self.analysis
            placed = [*self._residual_placed, *self._pieces_placed]
            # the same assembly with its rows in the factorisation's permuted storage
            where = analysis.to_permuted(np.arange(self.pattern.nnz))
            assembly = self._assembly[np.argsort(where)]
            traces = analysis.trace_gathers([(piece.positions, piece.values) for piece in placed])
            self._fast = _Layout(len(self._residual_placed), assembly, traces)
        return self._fast

    def _coefficients(self, inverses: list, residual_inverses: list) -> np.ndarray:
        """Each piece's coefficient in C: :math:`(R_p^{-1})_{ab}` for the residual's, then
        :math:`(G_{0b}^{-1})_{kl}` for the random effects' (the columns of the assembly)."""
        return np.array(
            [residual_inverses[piece.pattern][piece.a, piece.b] for piece in self._residual_placed]
            + [inverses[piece.block][piece.row, piece.col] for piece in self._pieces_placed]
        )

    def _g0_inverses(self, theta: np.ndarray) -> list[np.ndarray]:
        params = self.parameters
        out = []
        for block in params.blocks:
            g0 = params.g0(theta, block)
            out.append(1.0 / g0 if block.size == 1 else np.linalg.inv(g0))
        return out

    def factorise(
        self,
        theta: np.ndarray,
        inverses: list | None = None,
        residual_inverses: list | None = None,
    ) -> Factor:
        """:math:`C(\theta) = P^\top L D L^\top P` (raises NotPositiveDefinite)."""
        if residual_inverses is None:
            residual_inverses = self.residual_inverses(theta)
        inverses = self._g0_inverses(theta) if inverses is None else inverses
        data = self._layout().assembly @ self._coefficients(inverses, residual_inverses)
        return self.analysis.factorise_permuted(data)

    def effect_slice(self, name: str) -> slice:
        """Where the levels of an effect sit among the unknowns."""
        return self._slices[name]

    def unknown_name(self, index: int) -> str:
        """The unknown of row ``index`` of C in words: a fixed-effect column, or a level of a
        random effect (the inverse of :meth:`effect_slice`)."""
        if index < self.p:
            return f"the fixed-effect column {self.design.fixed_names[index]!r}"
        for effect in self.design.effects:
            where = self._slices[effect.name]
            if where.start <= index < where.stop:
                level = effect.levels[index - where.start]
                return (
                    f"the level {str(level)!r} of the random effect {effect.name!r} "
                    f"(column {effect.column!r})"
                )
        raise IndexError(f"Row {index} is not an unknown of these equations ({self.size}).")

    def singular_error(
        self, error: NotPositiveDefinite, theta: np.ndarray
    ) -> SingularEquationsError:
        """The user's error for a factorisation of :math:`C(\theta)` that failed at valid
        parameters: which unknown's pivot vanished, and the usual causes and fixes.

        Parameters
        ----------
        error
            The factorisation's error (its ``index`` is the row of C, its ``ratio`` the pivot
            over its diagonal entry; see :mod:`bayes_animal.linalg.ldl`).
        theta
            The parameters C was formed at.
        """
        at = ", ".join(
            f"{name}={value:.6g}" for name, value in zip(self.parameters.names, theta, strict=True)
        )
        if error.ratio is not None and error.ratio > 0:
            how = (
                f"is {error.ratio:.2g} of its diagonal entry, below the relative tolerance "
                f"{PIVOT_TOLERANCE:g}"
            )
        else:
            how = "is not positive"
        if error.index is None:  # pragma: no cover - the factorisation always names the row
            what, causes = "a row of the equations", ""
        else:
            what = self.unknown_name(error.index)
            if error.index < self.p:
                causes = (
                    " That column is, to within round-off, a combination of the other "
                    "fixed-effect columns and of the random effects' levels. Usual causes: a "
                    "fixed effect confounded with a random one (the same grouping as a fixed "
                    "factor and as a random term, or a covariate that is constant within the "
                    "levels of a random effect whose variance is large against the residual) — "
                    "drop one of the two; or fixed-effect columns that are nearly collinear "
                    "(a covariate almost a combination of others, polynomials in raw units) — "
                    "remove, or centre and scale, them."
                )
            else:
                causes = (
                    " That level carries, to within round-off, no information of its own. "
                    "Usual causes: a relationship matrix that is singular or nearly so (clones, "
                    "duplicated genotypes) — add a ridge (ridge=0.01, --ridge 0.01) or blend it "
                    "with a pedigree A; a random effect confounded with a fixed effect or with "
                    "another random term (the same grouping twice) — drop one of the two; or a "
                    "variance so many orders of magnitude above the residual that the level's "
                    "prior information is below round-off — check the data's scale and the "
                    "starting or given variances."
                )
        return SingularEquationsError(
            f"The mixed-model equations are singular in floating point at {at}: the pivot of "
            f"{what} {how}, so the log-likelihood and the solutions would be round-off."
            f"{causes}"
        )

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(
        self,
        theta: np.ndarray,
        *,
        score: bool = True,
        information: bool = True,
        y: np.ndarray | None = None,
    ) -> Evaluation:
        """Log-likelihood, and optionally score and average information, at ``theta``; of the
        records' ``y`` (the design's) or of other values on the records (a non-Gaussian
        family's latent values, :mod:`bayes_animal.bayes.latent`).

        The vector products here run on one BLAS thread (a second one only spins on vectors
        of this size, and many times slower on a busy machine); the dense block of the
        factorisation takes its own limit (:mod:`bayes_animal.linalg.threads`).
        """
        with blas_threads(1):
            if self._scalar and not information:
                return self._evaluate_scalar(theta, score=score, y=y)
            return self._evaluate(theta, score=score, information=information, y=y)

    def _loglik(self, logdet_r: float, logdet_g: float, factor: Factor, ypy: float) -> float:
        """:math:`\\ell_R = -\\tfrac12[(n-p)\\log 2\\pi + \\log|R| + \\log|G| + \\log|C| +
        y^\\top Py - \\log|X^\\top X|]` from its parts."""
        return -0.5 * (
            (self.n - self.p) * np.log(2 * np.pi)
            + logdet_r
            + logdet_g
            + factor.logdet
            + ypy
            - self.logdet_xtx
        )

    def _scalar_plan(self) -> _ScalarPlan:
        """The fixed arrays of the compiled evaluation of one trait with scalar variances
        (built once, after the analysis)."""
        if self._scalar_plan_cache is None:
            params = self.parameters
            layout = self._layout()
            W = self.W.tocsr()
            # K⁻¹ of every effect on the diagonal, over the levels after the fixed effects
            K = sparse.block_diag(
                [self.structures[e.name].inverse() for e in self.design.effects], format="csr"
            )
            slices = [self.effect_slice(block.terms[0]) for block in params.blocks]
            self._scalar_plan_cache = _ScalarPlan(
                residual=params.index(params.residual.terms[0]),
                variances=np.array([params.index(b.terms[0]) for b in params.blocks], np.int64),
                starts=np.array([sl.start for sl in slices], np.int64),
                stops=np.array([sl.stop for sl in slices], np.int64),
                assembly=_rows(layout.assembly),
                wt=_rows(self.Wt),
                w=_rows(W),
                k=_rows(K),
            )
        return self._scalar_plan_cache

    def _evaluate_scalar(
        self, theta: np.ndarray, *, score: bool, y: np.ndarray | None = None
    ) -> Evaluation:
        """:meth:`_evaluate` for one trait with scalar variances, by the compiled steps of
        :mod:`~bayes_animal.linalg.scalar_kernels` (the same quantities, the same arithmetic
        but for the order of a few sums; no average information)."""
        from . import scalar_kernels as kernels

        plan = self._scalar_plan()
        analysis = self.analysis
        n, t = analysis.n, analysis.split
        Lp, Li, Rp, Rj = analysis._pattern
        theta = np.asarray(theta, dtype=float)
        residual_scale = 1.0 / theta[plan.residual]  # R⁻¹ = I/σ², each block's 1/σ²_b
        scales = 1.0 / theta[plan.variances]
        coefficients = np.concatenate(([residual_scale], scales))
        Bx, Lx, D, St, bad = kernels.assemble_and_factorise(
            *plan.assembly, coefficients, n, t, *analysis._lower, Lp, Li, Rp, Rj,
            analysis._supernodes, PIVOT_TOLERANCE,
        )  # fmt: skip
        factor = analysis.factor_from(Bx, Lx, D, St, bad)
        y = np.ascontiguousarray(self.design.y if y is None else y, dtype=float)
        X, rhs, yry = kernels.forward(y, residual_scale, *plan.wt, analysis.perm, t, Lp, Li, Lx, D)
        if t < n:
            with blas_threads(size=n - t):
                X[t:] = lapack.dpotrs(factor._chol, X[t:], lower=1)[0]
        w, residuals, scaled, quadratic = kernels.backward(
            X, analysis.perm, t, Lp, Li, Lx, y, residual_scale, *plan.w, *plan.k, self.p,
            plan.starts, plan.stops,
        )  # fmt: skip
        ypy = float(yry) - float(rhs @ w)
        logdet_g = 0.0
        for b, scale in enumerate(scales):
            logdet_g -= self.block_sizes[b] * float(np.log(scale))
            logdet_g += self.logdet_k[b]
        logdet_r = -(self.n * float(np.log(residual_scale)))
        loglik = self._loglik(logdet_r, logdet_g, factor, ypy)
        if not score:
            return Evaluation(theta, float(loglik), w, residuals, scaled, factor)
        if t < n:
            with blas_threads(size=n - t):
                dense, info = lapack.dpotri(factor._chol, lower=1)
            if info != 0:  # pragma: no cover - the factor exists, so its inverse does
                raise NotPositiveDefinite("dpotri failed on the dense block.")
        else:
            dense = np.zeros((0, 0))
        g = self._layout().traces
        Sx, Sd, piece_traces = kernels.traces(
            n, t, Lp, Li, Lx, D, dense.T, g.codes, g.bounds, g.owners, g.where, g.values,
            g.count,
        )  # fmt: skip
        selected = SelectedInverse(analysis, Sx, Sd, dense)
        gradient = np.zeros(self.parameters.size)
        traces, quadratics = [], []
        for b, scale in enumerate(scales):  # G₀⁻¹ = 1/σ²_b, ∂G₀/∂σ²_b = 1
            trace, q = float(piece_traces[1 + b]), float(quadratic[b])
            gradient[plan.variances[b]] = _scalar_block_score(
                self.block_sizes[b], float(scale), 1.0, trace, q
            )
            traces.append(np.array([[trace]]))
            quadratics.append(np.array([[q]]))
        # tr(P ∂R) and ê'R⁻¹∂R R⁻¹ê with R⁻¹ = I/σ², ∂R/∂σ² = I
        part, quadratic_part = _scalar_residual_score(
            self.n, float(residual_scale), 1.0, float(piece_traces[0]), float(scaled @ scaled)
        )
        gradient[plan.residual] = -0.5 * (part - quadratic_part)
        return Evaluation(
            theta, float(loglik), w, residuals, scaled, factor, gradient, None, traces,
            quadratics, selected,
        )  # fmt: skip

    def _evaluate(
        self, theta: np.ndarray, *, score: bool, information: bool, y: np.ndarray | None = None
    ) -> Evaluation:
        params = self.parameters
        theta = np.asarray(theta, dtype=float)
        inverses = self._g0_inverses(theta)
        residual_inverses = self.residual_inverses(theta)
        factor = self.factorise(theta, inverses, residual_inverses)
        y = self.design.y if y is None else np.asarray(y, dtype=float)
        ry = self.apply_residual(residual_inverses, y)  # R⁻¹y
        rhs = self.Wt @ ry
        w = factor.solve(rhs)
        ypy = float(y @ ry) - float(rhs @ w)
        logdet_g = 0.0
        for b, block in enumerate(params.blocks):
            logdet_g -= self.block_sizes[b] * _logdet(inverses[b])
            logdet_g += block.size * self.logdet_k[b]
        logdet_r = -sum(
            len(positions) * _logdet(inverse)
            for (_, positions), inverse in zip(self.patterns, residual_inverses, strict=True)
        )
        loglik = self._loglik(logdet_r, logdet_g, factor, ypy)
        residuals = y - self.W @ w
        scaled = self.apply_residual(residual_inverses, residuals)  # R⁻¹ê = Py
        if not score:
            return Evaluation(theta, float(loglik), w, residuals, scaled, factor)
        selected = factor.selected_inverse()
        layout = self._layout()
        piece_traces = selected.traces(layout.traces)  # tr(C⁻¹ · piece) of every piece
        traces = [np.zeros((b.size, b.size)) for b in params.blocks]
        for piece, value in zip(
            self._pieces_placed, piece_traces[layout.residual_pieces :], strict=True
        ):
            traces[piece.block][piece.row, piece.col] = value
            traces[piece.block][piece.col, piece.row] = value
        quadratics = []
        for block, kinv in zip(params.blocks, self._inverses, strict=True):
            us = [w[self.effect_slice(t)] for t in block.terms]
            kus = us if kinv is None else [kinv @ u for u in us]  # K⁻¹ûⱼ once per term
            quadratics.append(np.array([[float(ui @ kuj) for kuj in kus] for ui in us]))
        gradient = np.zeros(params.size)
        for b, g0_inv in enumerate(inverses):
            for index, E in self._derivatives[b]:
                gradient[index] = _block_score(
                    self.block_sizes[b], g0_inv, E, traces[b], quadratics[b]
                )
        # the residual: tr(P ∂R) = tr(R⁻¹∂R) − tr(C⁻¹ Wᵀ R⁻¹ ∂R R⁻¹ W), y'P ∂R Py = ê'R⁻¹∂R R⁻¹ê
        residual_traces = [[] for _ in self.patterns]  # per pattern, lower-triangle order
        for piece, value in zip(self._residual_placed, piece_traces, strict=False):
            residual_traces[piece.pattern].append(float(value))
        outer = [  # Σ_records (R⁻¹ê)(R⁻¹ê)ᵀ per pattern
            (scaled[:, None] if self._in_order else scaled[positions]).T
            @ (scaled[:, None] if self._in_order else scaled[positions])
            for _, positions in self.patterns
        ]
        for index, restricted in self._residual_derivatives:
            tr_pv = quadratic = 0.0
            for k, Ep in restricted:
                part, quadratic_part = _residual_score(
                    len(self.patterns[k][1]), residual_inverses[k], Ep, residual_traces[k],
                    outer[k],
                )  # fmt: skip
                tr_pv += part
                quadratic += quadratic_part
            gradient[index] = -0.5 * (tr_pv - quadratic)
        ai = None
        if information:
            ai = self._average_information(theta, w, residuals, factor, residual_inverses)
        return Evaluation(
            theta, float(loglik), w, residuals, scaled, factor, gradient, ai, traces, quadratics,
            selected,
        )  # fmt: skip

    def working_variates(
        self,
        theta: np.ndarray,
        w: np.ndarray,
        residuals: np.ndarray,
        residual_inverses: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        r""":math:`f_i = V_i P y` for every parameter (columns, observations × parameters):
        :math:`Z_b (E_i G_0^{-1} \otimes I)\hat u_b` for a random effect's parameter,
        :math:`\partial R / \partial\theta_i \, R^{-1}\hat e` for the residual's."""
        params = self.parameters
        F = np.zeros((self.n, params.size))
        for block in params.blocks:
            g0_inv = np.linalg.inv(params.g0(theta, block))
            us = np.column_stack([w[self.effect_slice(t)] for t in block.terms])
            for name in params.names:
                E = params.derivative(name, block)
                if E is None:
                    continue
                mixed = us @ (E @ g0_inv).T  # column k: Σ_l (E G0⁻¹)[k, l] u_l
                column = np.zeros(self.n)
                for k, term in enumerate(block.terms):
                    effect = self.design.effect(term)
                    has = effect.index >= 0
                    column[has] += mixed[effect.index[has], k]
                F[:, params.index(name)] = column
        if residual_inverses is None:
            residual_inverses = self.residual_inverses(theta)
        scaled = self.apply_residual(residual_inverses, residuals)
        residual = params.residual
        for name in residual.terms + tuple(n for _, _, n in residual.covariances):
            E = params.derivative(name, residual)
            blocks = [E[np.ix_(present, present)] for present, _ in self.patterns]
            F[:, params.index(name)] = self.apply_residual(blocks, scaled)
        return F

    def _average_information(
        self, theta, w, residuals, factor: Factor, residual_inverses=None
    ) -> np.ndarray:
        if residual_inverses is None:
            residual_inverses = self.residual_inverses(theta)
        F = self.working_variates(theta, w, residuals, residual_inverses)
        RF = self.apply_residual(residual_inverses, F)
        solved = factor.solve(self.Wt @ RF)
        PF = RF - self.apply_residual(residual_inverses, self.W @ solved)
        return 0.5 * F.T @ PF

    def em_update(self, evaluation: Evaluation) -> np.ndarray | None:
        """One EM-REML step from an evaluation with traces (see the module docstring); None
        with several traits (the residual's EM step needs the missing records' residuals:
        the caller takes a gradient step instead)."""
        params = self.parameters
        if params.multi_trait:
            return None
        theta = evaluation.theta.copy()
        sigma2 = theta[params.index("residual")]
        tr_cg = 0.0
        new = theta.copy()
        for b, block in enumerate(params.blocks):
            g0_inv = np.linalg.inv(params.g0(theta, block))
            tr_cg += float(np.sum(g0_inv * evaluation.traces[b]))
            g0 = (evaluation.quadratics[b] + evaluation.traces[b]) / self.block_sizes[b]
            for i, a in enumerate(block.terms):
                new[params.index(a)] = g0[i, i]
            for i, j, name in block.covariances:
                new[params.index(name)] = g0[i, j]
        ee = float(evaluation.residuals @ evaluation.residuals)
        new[params.index("residual")] = (ee + sigma2 * (self.p + self.q - tr_cg)) / self.n
        return new

    def block_of(self, name: str) -> Block:
        """The block holding a term."""
        return next(b for b in self.parameters.blocks if name in b.terms)
