"""Relationship matrices: reading, validation errors that name the culprits, explicit projection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_animal import RelationshipError, as_relationship, read_relationship_csv
from bayes_animal.structures.relationship import id_strings, nearest_positive_definite


def _frame(matrix, ids=("a", "b", "c")):
    return pd.DataFrame(matrix, index=list(ids), columns=list(ids))


GOOD = np.array([[1.0, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 1.0]])


def test_from_frame_keeps_values_and_ids_exactly():
    rel = as_relationship(_frame(GOOD))
    assert list(rel.ids) == ["a", "b", "c"]
    np.testing.assert_array_equal(rel.matrix, GOOD)
    assert not rel.projected
    assert rel.mean_diagonal == 1.0


def test_csv_round_trip_is_exact(tmp_path):
    from bayes_animal.results.io import write_relationship_csv

    values = GOOD * 1.7238020000000001
    rel = as_relationship(_frame(values, ids=("ind1", "ind2", "ind3")))
    path = write_relationship_csv(rel, tmp_path / "A.csv")
    back = read_relationship_csv(path)
    np.testing.assert_array_equal(back.matrix, rel.matrix)
    assert list(back.ids) == ["ind1", "ind2", "ind3"]


def test_columns_in_another_order_are_aligned_to_rows():
    frame = _frame(GOOD).loc[:, ["c", "a", "b"]]
    rel = as_relationship(frame)
    np.testing.assert_array_equal(rel.matrix, GOOD)


def test_integer_and_float_ids_match_their_string_form():
    assert list(id_strings(np.array([1.0, 22.0, np.nan]))) == ["1", "22", "nan"]
    assert list(id_strings([7, "x"])) == ["7", "x"]
    rel = as_relationship(GOOD, ids=[10, 11, 12])
    np.testing.assert_array_equal(rel.positions([12, "10"]), [2, 0])


def test_unknown_ids_are_named():
    rel = as_relationship(_frame(GOOD))
    with pytest.raises(RelationshipError, match=r"2 animal id\(s\).*'zz'.*'yy'"):
        rel.positions(["a", "zz", "yy", "zz"])


def test_array_without_ids_is_an_error():
    with pytest.raises(RelationshipError, match="needs its ids"):
        as_relationship(GOOD)


def test_not_square():
    with pytest.raises(RelationshipError, match="square"):
        as_relationship(np.ones((2, 3)), ids=["a", "b"])


def test_wrong_number_of_ids():
    with pytest.raises(RelationshipError, match="3 rows but 2 ids"):
        as_relationship(GOOD, ids=["a", "b"])


def test_duplicate_ids_are_named():
    with pytest.raises(RelationshipError, match="Duplicate ids.*'a'"):
        as_relationship(GOOD, ids=["a", "b", "a"])


def test_row_and_column_ids_differ():
    frame = pd.DataFrame(GOOD, index=["a", "b", "c"], columns=["a", "b", "d"])
    with pytest.raises(RelationshipError, match="rows only 'c'; columns only 'd'"):
        as_relationship(frame)


def test_non_finite_entries_name_the_rows():
    bad = GOOD.copy()
    bad[1, 2] = bad[2, 1] = np.nan
    with pytest.raises(RelationshipError, match="NaN or infinite.*'b', 'c'"):
        as_relationship(bad, ids=["a", "b", "c"])


def test_finite_entries_whose_sum_overflows_are_accepted():
    # the finiteness check looks row by row only when the sum is not finite: huge but finite
    # entries must not be reported as infinite
    huge = np.diag([1e308, 1e308, 1.0])
    rel = as_relationship(huge, ids=["a", "b", "c"], check_definite=False)
    np.testing.assert_array_equal(rel.matrix, huge)


def test_a_matrix_symmetric_within_the_tolerance_is_averaged_with_its_transpose():
    near = GOOD.copy()
    near[0, 2] += 1e-12
    rel = as_relationship(near, ids=["a", "b", "c"])
    np.testing.assert_array_equal(rel.matrix, (near + near.T) / 2)
    np.testing.assert_array_equal(rel.matrix, rel.matrix.T)


@pytest.mark.parametrize("order", ["C", "F"])
def test_the_matrix_kept_is_a_c_ordered_copy_of_the_callers_array(order):
    given = np.array(GOOD, order=order)
    rel = as_relationship(given, ids=["a", "b", "c"])
    given[0, 1] = given[1, 0] = 0.0  # the caller's array changes afterwards
    np.testing.assert_array_equal(rel.matrix, GOOD)
    assert rel.matrix.flags.c_contiguous


def test_a_matrix_read_from_a_file_is_kept_in_c_order(tmp_path):
    path = tmp_path / "A.csv"
    _frame(GOOD).to_csv(path)
    rel = read_relationship_csv(path)
    np.testing.assert_array_equal(rel.matrix, GOOD)
    assert rel.matrix.flags.c_contiguous


def test_asymmetry_names_the_pair():
    bad = GOOD.copy()
    bad[0, 2] = 0.3
    with pytest.raises(RelationshipError, match=r"not symmetric: A\['a', 'c'\] = 0.3"):
        as_relationship(bad, ids=["a", "b", "c"])


def test_indefinite_matrix_reports_smallest_eigenvalue_and_the_fix():
    bad = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.9], [0.0, 0.9, 1.0]])
    smallest = np.linalg.eigvalsh(bad)[0]
    assert smallest < 0
    with pytest.raises(RelationshipError, match=f"{smallest:.6g}.*nearest_pd=True"):
        as_relationship(bad, ids=["a", "b", "c"])


def test_a_check_left_for_later_is_made_at_first_use():
    from bayes_animal.structures.inputs import RelationshipSource

    bad = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.9], [0.0, 0.9, 1.0]])
    rel = as_relationship(bad, ids=["a", "b", "c"], check_definite=False)
    assert rel.definite_unchecked
    for first_use in (
        rel.require_definite,
        rel.factor,
        lambda: RelationshipSource(rel, "matrix").relmat,
        lambda: RelationshipSource(rel, "matrix").structure.inverse(),  # its factorisation
    ):
        with pytest.raises(RelationshipError, match="not positive semi-definite.*--nearest-pd"):
            first_use()
    with pytest.raises(RelationshipError, match="smallest eigenvalue is -0.27"):
        rel.settle_definite(float(np.linalg.eigvalsh(bad)[0]))
    good = as_relationship(GOOD, ids=["a", "b", "c"], check_definite=False)
    assert good.definite_unchecked
    good.require_definite()
    assert not good.definite_unchecked
    tiny = as_relationship(GOOD, ids=["a", "b", "c"], check_definite=False)
    tiny.settle_definite(-1e-12)  # within the one PSD tolerance: accepted
    assert not tiny.definite_unchecked
    assert not as_relationship(GOOD, ids=["a", "b", "c"]).definite_unchecked


def test_nearest_pd_only_when_asked_and_then_flagged():
    bad = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.9], [0.0, 0.9, 1.0]])
    rel = as_relationship(bad, ids=["a", "b", "c"], nearest_pd=True)
    assert rel.projected
    assert rel.min_eigenvalue == pytest.approx(np.linalg.eigvalsh(bad)[0])
    assert np.linalg.eigvalsh(rel.matrix)[0] > 0
    np.testing.assert_allclose(rel.matrix, rel.matrix.T)


def test_nearest_pd_is_the_frobenius_projection():
    rng = np.random.default_rng(3)
    sym = rng.standard_normal((6, 6))
    sym = sym + sym.T
    projected = nearest_positive_definite(sym, floor=0.0)
    values, vectors = np.linalg.eigh(sym)
    np.testing.assert_allclose(projected, (vectors * np.maximum(values, 0)) @ vectors.T, atol=1e-12)
    # a PD matrix is left as it is
    pd_matrix = GOOD
    np.testing.assert_allclose(nearest_positive_definite(pd_matrix), pd_matrix, atol=1e-12)


def test_singular_psd_matrix_is_accepted_as_given():
    codes = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 2.0]])
    singular = codes.T @ codes / 2
    rel = as_relationship(singular, ids=["a", "b", "c"])
    assert rel.min_eigenvalue is not None and abs(rel.min_eigenvalue) < 1e-12
    np.testing.assert_array_equal(rel.matrix, singular)


def test_missing_file_and_non_numeric_file(tmp_path):
    with pytest.raises(RelationshipError, match="not found"):
        read_relationship_csv(tmp_path / "nope.csv")
    path = tmp_path / "A.csv"
    path.write_text(",a,b\na,1,x\nb,0.5,1\n")
    with pytest.raises(RelationshipError, match="non-numeric entries in the columns of 'b'"):
        read_relationship_csv(path)


def test_psd_factor_of_a_singular_matrix_reproduces_it():
    """A = MᵀM/m with fewer markers than animals has no Cholesky factor; the PSD factor
    (eigh-based) still gives L Lᵀ = A, and a PD matrix gets its Cholesky factor."""
    from bayes_animal.structures.relationship import psd_factor

    codes = np.random.default_rng(1).integers(0, 3, size=(8, 30)).astype(float)
    singular = codes.T @ codes / 8
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(singular)
    relmat = as_relationship(singular, ids=[f"i{k}" for k in range(30)])
    factor = relmat.factor()
    np.testing.assert_allclose(factor @ factor.T, singular, atol=1e-12)
    assert relmat.factor() is factor  # computed once
    np.testing.assert_array_equal(psd_factor(GOOD), np.linalg.cholesky(GOOD))
    with pytest.raises(RelationshipError, match="not positive semi-definite"):
        psd_factor(np.array([[1.0, 2.0], [2.0, 1.0]]))


# -- binary relationship files ----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".parquet"])
def test_binary_relationship_files_round_trip_and_fit_as_the_csv(tmp_path, suffix):
    """`relmat --out A.<suffix>` writes what every command reads back: the same ids and
    matrix as the CSV, and the same REML fit."""
    from bayes_animal import reml, simulate_reference
    from bayes_animal.results.io import write_matrix
    from bayes_animal.structures.relationship import read_relationship_file

    sim = simulate_reference(n=60, n_snps=100, seed=3)
    relmat = sim.relmat
    csv = write_matrix(relmat.matrix, relmat.ids, tmp_path / "A.csv")
    binary = write_matrix(relmat.matrix, relmat.ids, tmp_path / f"A{suffix}")
    back = read_relationship_file(binary)
    np.testing.assert_array_equal(back.ids, relmat.ids)
    np.testing.assert_allclose(back.matrix, relmat.matrix, rtol=0, atol=1e-15)
    from_csv = reml("response ~ 1 + fix", sim.data, relmat=csv)
    from_binary = reml("response ~ 1 + fix", sim.data, relmat=binary)
    assert from_binary.sigma2_u == pytest.approx(from_csv.sigma2_u, rel=1e-12)


def test_binary_relationship_file_errors(tmp_path):
    from bayes_animal.structures.relationship import read_relationship_file

    np.save(tmp_path / "A.npy", np.eye(3))
    with pytest.raises(RelationshipError, match=r"no ids: put them.*A\.ids\.txt"):
        read_relationship_file(tmp_path / "A.npy")
    np.savez(tmp_path / "B.npz", matrix=np.eye(3))
    with pytest.raises(RelationshipError, match=r"lacks the array\(s\) \['ids'\]"):
        read_relationship_file(tmp_path / "B.npz")
    pd.DataFrame(np.eye(2), columns=["a", "b"]).to_parquet(tmp_path / "C.parquet")
    with pytest.raises(RelationshipError, match="needs an 'id' column"):
        read_relationship_file(tmp_path / "C.parquet")
    with pytest.raises(RelationshipError, match="not found"):
        read_relationship_file(tmp_path / "missing.npz")
    (tmp_path / "D.npz").write_text("not a zip file")
    with pytest.raises(RelationshipError, match="Could not read"):
        read_relationship_file(tmp_path / "D.npz")
