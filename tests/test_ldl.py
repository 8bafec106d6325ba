"""The sparse LDLᵀ with a dense trailing block: factor, log-determinant, solves, draws and the
selected inverse against dense numpy, for every split point and ordering."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from bayes_animal.linalg.ldl import NotPositiveDefinite, analyse
from bayes_animal.linalg.ordering import amd, natural


def _spd(n: int, density: float, seed: int) -> sparse.csc_matrix:
    factor = sparse.random(n, n, density=density, random_state=seed)
    return (factor @ factor.T + sparse.eye(n) * (1.0 + seed % 3)).tocsc()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ordering", ["amd", "natural"])
@pytest.mark.parametrize("dense_block", [0, 1, 7, 40, None])
def test_factor_solve_and_selected_inverse_equal_dense_algebra(seed, ordering, dense_block):
    n = 40
    C = _spd(n, 0.06, seed)
    dense = C.toarray()
    analysis = analyse(sparse.tril(C).tocsc(), ordering=ordering, dense_block=dense_block)
    if dense_block is not None:
        assert analysis.split == n - dense_block
    lower = sparse.tril(C).tocsc()
    lower.sort_indices()
    factor = analysis.factorise(lower.data)
    assert factor.logdet == pytest.approx(np.linalg.slogdet(dense)[1], rel=1e-12, abs=1e-12)
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((n, 3))
    np.testing.assert_allclose(factor.solve(b), np.linalg.solve(dense, b), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(factor.solve(b[:, 0]), np.linalg.solve(dense, b[:, 0]), atol=1e-12)
    inverse = np.linalg.inv(dense)
    selected = factor.selected_inverse()
    np.testing.assert_allclose(selected.diagonal(), np.diag(inverse), rtol=1e-10)
    coo = lower.tocoo()
    np.testing.assert_allclose(selected.on_pattern(), inverse[coo.row, coo.col], atol=1e-12)
    if dense_block is not None and dense_block >= 3:
        index = analysis.perm[-3:]  # pivots of the dense block: a clique, so on the pattern
        np.testing.assert_allclose(selected.block(index), inverse[np.ix_(index, index)], atol=1e-12)


@pytest.mark.parametrize("dense_block", [0, 7, None])
def test_traces_of_fixed_pieces_equal_dense_traces(dense_block):
    """tr(C⁻¹ M) for fixed symmetric matrices M on C's pattern, each given as positions in the
    analysed pattern's data and the values there (off the diagonal counted twice), as the
    mixed-model equations' score takes them: every part of the selected inverse (its
    diagonal, its sparse columns, the dense block) is read, and a piece without entries is
    0."""
    n = 40
    C = _spd(n, 0.06, 5)
    lower = sparse.tril(C).tocsc()
    lower.sort_indices()
    analysis = analyse(lower, dense_block=dense_block)
    factor = analysis.factorise(lower.data)
    inverse = np.linalg.inv(C.toarray())
    coo = lower.tocoo()
    rng = np.random.default_rng(3)
    pieces, dense_pieces = [], []
    for _ in range(3):
        chosen = np.flatnonzero(rng.random(lower.nnz) < 0.5)
        values = rng.standard_normal(len(chosen))
        M = np.zeros((n, n))
        M[coo.row[chosen], coo.col[chosen]] = values
        M = M + np.tril(M, -1).T  # symmetric, its lower triangle the piece
        weights = np.where(coo.row[chosen] == coo.col[chosen], 1.0, 2.0)
        pieces.append((chosen, values * weights))
        dense_pieces.append(M)
    pieces.append((np.zeros(0, np.int64), np.zeros(0)))
    dense_pieces.append(np.zeros((n, n)))
    traces = factor.selected_inverse().traces(analysis.trace_gathers(pieces))
    expected = [np.trace(inverse @ M) for M in dense_pieces]
    np.testing.assert_allclose(traces, expected, rtol=1e-10, atol=1e-12)
    assert traces[-1] == 0.0


@pytest.mark.parametrize("widest", [1, 2, 64])
@pytest.mark.parametrize("dense_block", [0, 9, None])
def test_supernodes_of_trait_blocks_factor_as_dense_algebra(widest, dense_block, monkeypatch):
    """Several traits make every animal's equations a block of identical columns: the
    supernodal loop assembles each run of such columns at once. The factor of a 3-trait
    Kronecker pattern must equal dense algebra whatever the widest supernode (1: the
    column-by-column loop; 2: runs cut inside a trait block), with and without a dense
    block, and runs of several columns must be present for the test to mean anything."""
    import bayes_animal.linalg.ldl as ldl

    monkeypatch.setattr(ldl, "WIDEST_SUPERNODE", widest)
    base = _spd(30, 0.08, 2)
    C = sparse.kron(base, np.array([[2.0, 0.5, 0.3], [0.5, 1.5, -0.2], [0.3, -0.2, 1.0]]))
    C = (C + sparse.eye(90)).tocsc()
    dense = C.toarray()
    lower = sparse.tril(C).tocsc()
    lower.sort_indices()
    analysis = analyse(lower, dense_block=dense_block)
    widths = np.diff(analysis._supernodes)
    assert widths.max() == min(widest, widths.max()) and (widest == 1 or widths.max() > 1)
    factor = analysis.factorise(lower.data)
    assert factor.logdet == pytest.approx(np.linalg.slogdet(dense)[1], rel=1e-12)
    b = np.random.default_rng(0).standard_normal(90)
    np.testing.assert_allclose(factor.solve(b), np.linalg.solve(dense, b), rtol=1e-10)
    coo = lower.tocoo()
    np.testing.assert_allclose(
        factor.selected_inverse().on_pattern(), np.linalg.inv(dense)[coo.row, coo.col], atol=1e-12
    )


def test_entries_off_the_pattern_are_refused():
    from bayes_animal import BayesAnimalError

    diagonal = sparse.diags([1.0, 2.0, 3.0]).tocsc()
    selected = analyse(diagonal, dense_block=0).factorise(diagonal.data).selected_inverse()
    np.testing.assert_allclose(selected.diagonal(), [1.0, 0.5, 1 / 3])
    with pytest.raises(BayesAnimalError, match="off the pattern"):
        selected.entries(np.array([0]), np.array([2]))


def test_draws_have_covariance_c_inverse():
    n = 12
    C = _spd(n, 0.2, 5)
    lower = sparse.tril(C).tocsc()
    lower.sort_indices()
    factor = analyse(lower, dense_block=5).factorise(lower.data)
    rng = np.random.default_rng(0)
    draws = factor.draw(rng.standard_normal((n, 200_000)))
    covariance = np.cov(draws)
    inverse = np.linalg.inv(C.toarray())
    np.testing.assert_allclose(covariance, inverse, atol=0.02 * np.abs(inverse).max())
    # and exactly: x = C⁻¹ P L D^½ ξ ⇔ the map is a square root of C⁻¹
    basis = factor.draw(np.eye(n))
    np.testing.assert_allclose(basis @ basis.T, inverse, atol=1e-12)


def test_indefinite_matrix_is_reported():
    C = sparse.csc_matrix(np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    lower = sparse.tril(C).tocsc()
    for block in (0, 3):  # in the sparse loop, and where LAPACK stops
        with pytest.raises(NotPositiveDefinite, match="not positive definite") as caught:
            analyse(lower, ordering="natural", dense_block=block).factorise(lower.data)
        assert caught.value.index == 1 and "row 1" in str(caught.value)
        assert caught.value.ratio is None or caught.value.ratio <= 0


def _nearly_singular(delta: float, scale: np.ndarray | None = None) -> sparse.csc_matrix:
    """Rows 1 and 3 equal but for ``delta`` on the diagonal (row 3's pivot after row 1 is
    δ/(1 + δ) of its diagonal entry), the rest well conditioned; optionally scaled S C S."""
    C = np.array(
        [
            [4.0, 1.0, 0.0, 1.0],
            [1.0, 1.0, 0.0, 1.0],
            [0.0, 0.0, 2.0, 0.0],
            [1.0, 1.0, 0.0, 1.0 + delta],
        ]
    )
    if scale is not None:
        C = scale[:, None] * C * scale[None, :]
    lower = sparse.tril(sparse.csc_matrix(C)).tocsc()
    lower.sort_indices()
    return lower


@pytest.mark.parametrize("block", [0, 1, 2, 4])
@pytest.mark.parametrize("order", [[0, 1, 2, 3], [2, 3, 0, 1], [3, 2, 1, 0]])
def test_a_pivot_below_the_relative_tolerance_is_an_error(block, order):
    """A pivot of 1e-14 of its diagonal entry (positive, and accepted before the tolerance:
    log|C| came out finite and wrong) is refused in the sparse loop and in the dense block
    alike, whatever the ordering and the units; the error gives the original row and ratio."""
    from bayes_animal.linalg.ldl import PIVOT_TOLERANCE

    failing = max((1, 3), key=order.index)  # of the two near-equal rows, the later pivot
    for scale in (None, np.array([1e-6, 1e8, 3.0, 1e-9])):
        lower = _nearly_singular(1e-14, scale)
        analysis = analyse(lower, ordering=np.array(order), dense_block=block)
        with pytest.raises(NotPositiveDefinite, match="singular") as caught:
            analysis.factorise(lower.data)
        assert caught.value.index == failing
        assert 0 < caught.value.ratio <= PIVOT_TOLERANCE
        assert f"row {caught.value.index}" in str(caught.value)


@pytest.mark.parametrize("block", [0, 4])
def test_a_small_pivot_above_the_tolerance_is_accepted(block):
    """δ = 1e-9 (1e3 above the tolerance), and any diagonal scaling of it: the factor exists
    and its log-determinant is right to the accuracy the module docstring gives (u/δ)."""
    for scale in (None, np.array([1e-100, 1e100, 1.0, 1e50])):
        lower = _nearly_singular(1e-9, scale)
        factor = analyse(lower, ordering="natural", dense_block=block).factorise(lower.data)
        # the pivots are 4, 3/4, 2 and δ: |S C S| = 6δ Π s²
        expected = np.log(6e-9) + (0.0 if scale is None else 2.0 * np.log(scale).sum())
        assert factor.logdet == pytest.approx(expected, rel=1e-6)


def test_amd_reduces_fill_and_is_a_permutation():
    k = 30  # 2-D grid Laplacian: natural order fills the band, minimum degree much less
    T = sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(k, k))
    grid = (sparse.kron(T, sparse.eye(k)) + sparse.kron(sparse.eye(k), T)).tocsc()
    perm = amd(grid)
    assert np.array_equal(np.sort(perm), np.arange(k * k))
    lower = sparse.tril(grid).tocsc()
    by_amd = analyse(lower, ordering="amd", dense_block=0)
    by_natural = analyse(lower, ordering=natural(grid), dense_block=0)
    assert by_amd.nnz_factor < 0.5 * by_natural.nnz_factor
    # dense rows (here one row joined to everything) are ordered last
    star = sparse.lil_matrix(grid.shape)
    star[0, :] = 1.0
    star[:, 0] = 1.0
    assert amd((grid + star).tocsc())[-1] == 0


def test_unknown_ordering_is_an_error():
    from bayes_animal import BayesAnimalError

    with pytest.raises(BayesAnimalError, match="Unknown ordering 'rcm'"):
        analyse(sparse.eye(3, format="csc"), ordering="rcm")


def test_the_dense_block_is_factored_and_read_in_place(monkeypatch):
    """The Schur complement reaches dpotrf in Fortran order, so LAPACK factors it in place (a
    C-ordered block was copied on every factorisation), and the selected inverse's dense block
    is read as a view (ravelling it in C order copied it on every lookup)."""
    from scipy.linalg import lapack

    from bayes_animal.linalg import ldl

    seen = []
    dpotrf = lapack.dpotrf

    def spy(a, **options):
        chol, info = dpotrf(a, **options)
        seen.append(np.shares_memory(chol, a))
        return chol, info

    monkeypatch.setattr(ldl.lapack, "dpotrf", spy)
    n = 30
    C = _spd(n, 0.1, 3)
    lower = sparse.tril(C).tocsc()
    lower.sort_indices()
    factor = analyse(lower, dense_block=8).factorise(lower.data)
    assert seen == [True]
    selected = factor.selected_inverse()
    dense = selected._dense
    assert np.shares_memory(selected.parts()[2], dense)
    np.testing.assert_allclose(
        selected.on_pattern(),
        np.linalg.inv(C.toarray())[lower.tocoo().row, lower.tocoo().col],
        atol=1e-12,
    )
