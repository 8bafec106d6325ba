"""A, A⁻¹, inbreeding and T D Tᵀ from pedigrees: textbook values, dense oracles, properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_animal import RelationshipError
from bayes_animal.simulate import simulate_pedigree
from bayes_animal.structures.additive import (
    dense_relationship,
    inverse_relationship,
    inverse_transmission,
    mendelian_sampling,
)
from bayes_animal.structures.pedigree import read_pedigree


def tabular(frame: pd.DataFrame) -> pd.DataFrame:
    """Reference A by the tabular method over a topologically sorted copy (slow, obvious)."""
    rows = {str(r.id): (str(r.sire), str(r.dam)) for r in frame.itertuples()}
    order: list[str] = []

    def visit(a):
        if a in order or a == "0":
            return
        for parent in rows.get(a, ("0", "0")):
            visit(parent)
        order.append(a)

    for a in rows:
        visit(a)
    position = {a: i for i, a in enumerate(order)}
    A = np.zeros((len(order), len(order)))
    for i, a in enumerate(order):
        s, d = (position.get(p) for p in rows.get(a, ("0", "0")))
        for j in range(i):
            A[i, j] = A[j, i] = 0.5 * (
                (A[j, s] if s is not None else 0) + (A[j, d] if d is not None else 0)
            )
        A[i, i] = 1 + (0.5 * A[s, d] if s is not None and d is not None else 0)
    return pd.DataFrame(A, index=order, columns=order)


MRODE_A = np.array(
    [
        [1, 0, 0, 0.5, 0, 0.5, 0.25, 0.25],
        [0, 1, 0, 0, 0.5, 0.5, 0.25, 0.25],
        [0, 0, 1, 0, 0.5, 0, 0.25, 0.5],
        [0.5, 0, 0, 1, 0, 0.25, 0.5, 0.125],
        [0, 0.5, 0.5, 0, 1, 0.25, 0.5, 0.375],
        [0.5, 0.5, 0, 0.25, 0.25, 1, 0.25, 0.5],
        [0.25, 0.25, 0.25, 0.5, 0.5, 0.25, 1, 0.25],
        [0.25, 0.25, 0.5, 0.125, 0.375, 0.5, 0.25, 1],
    ]
)


def test_mrode_example_pedigree_a_and_inverse(mrode):
    ped = read_pedigree(mrode / "ex04_1_pedigree.csv")
    A = dense_relationship(ped)
    assert list(A.ids) == [str(i) for i in range(1, 9)]
    np.testing.assert_allclose(A.matrix, MRODE_A, atol=1e-15)
    inverse = inverse_relationship(ped).toarray()
    np.testing.assert_allclose(inverse, np.linalg.inv(MRODE_A), atol=1e-12)
    # Henderson's rules give exact fractions: animal 1's diagonal is 1 + 1/3 + 1/2
    assert inverse[0, 0] == pytest.approx(1 + 1 / 3 + 1 / 2, abs=1e-15)


def test_mrode_example_5_1_pedigree(mrode):
    frame = pd.read_csv(mrode / "ex05_1_pedigree.csv", dtype=str, keep_default_na=False)
    ped = read_pedigree(frame)
    reference = tabular(frame.set_axis(["id", "sire", "dam"], axis=1).replace("", "0"))
    A = dense_relationship(ped).to_frame().loc[reference.index, reference.index]
    np.testing.assert_allclose(A.to_numpy(), reference.to_numpy(), atol=1e-14)


def test_gryphon_inbreeding_and_inverse_against_dense(tmp_path):
    from conftest import shared_folder

    ped = read_pedigree(shared_folder("gryphon") / "gryphonped.csv")
    sampling = mendelian_sampling(ped)
    A = dense_relationship(ped, user_order=False).matrix
    np.testing.assert_allclose(np.diag(A) - 1, sampling.inbreeding, atol=1e-13)
    inverse = inverse_relationship(ped, sampling)
    np.testing.assert_allclose(inverse.toarray(), np.linalg.inv(A), atol=1e-9)
    summary = sampling.summary()
    assert summary["inbred_animals"] == 1 and summary["max_inbreeding"] == 0.25


def test_transmission_factorisation():
    ped = read_pedigree(
        simulate_pedigree(n_founders=10, n_generations=4, n_per_generation=20, n_sires=3, seed=2)
    )
    sampling = mendelian_sampling(ped)
    T = np.linalg.inv(inverse_transmission(ped).toarray())
    A = dense_relationship(ped, user_order=False).matrix
    np.testing.assert_allclose((T * sampling.variances) @ T.T, A, atol=1e-12)
    # the recursion u_i = ½(u_s + u_d) + √d_i z_i is T D^½ z
    z = np.random.default_rng(0).standard_normal(ped.size)
    u = np.zeros(ped.size)
    for i in range(ped.size):
        u[i] = np.sqrt(sampling.variances[i]) * z[i]
        for parent in (ped.sire[i], ped.dam[i]):
            if parent >= 0:
                u[i] += 0.5 * u[parent]
    np.testing.assert_allclose(u, T @ (np.sqrt(sampling.variances) * z), atol=1e-12)


def test_selfing_inbreeding():
    frame = pd.DataFrame(
        {"id": ["p", "s1", "s2", "x"], "sire": ["0", "p", "s1", "s2"], "dam": ["0", "p", "s1", "p"]}
    )
    ped = read_pedigree(frame, allow_selfing=True)
    sampling = mendelian_sampling(ped)
    F = dict(zip(ped.ids, sampling.inbreeding, strict=True))
    assert F["s1"] == pytest.approx(0.5) and F["s2"] == pytest.approx(0.75)
    A = dense_relationship(ped, user_order=False).matrix
    np.testing.assert_allclose(np.diag(A) - 1, sampling.inbreeding, atol=1e-14)
    np.testing.assert_allclose(
        inverse_relationship(ped, sampling).toarray(), np.linalg.inv(A), atol=1e-10
    )
    assert sampling.variances[list(ped.ids).index("s1")] == pytest.approx(0.5)


def test_dense_size_limit():
    ped = read_pedigree(simulate_pedigree(n_founders=5, n_generations=1, n_per_generation=10))
    with pytest.raises(RelationshipError, match="dense A of 15 animals"):
        dense_relationship(ped, max_size=10)


@st.composite
def pedigrees(draw):
    """Random pedigrees: sexes fixed per animal, parents among earlier animals of that sex."""
    q = draw(st.integers(1, 25))
    male = draw(st.lists(st.booleans(), min_size=q, max_size=q))
    rows = []
    for i in range(q):
        males = [j for j in range(i) if male[j]]
        females = [j for j in range(i) if not male[j]]
        sire = draw(st.sampled_from([None, *males])) if males else None
        dam = draw(st.sampled_from([None, *females])) if females else None
        rows.append(
            (
                f"a{i}",
                f"a{sire}" if sire is not None else "0",
                f"a{dam}" if dam is not None else "0",
            )
        )
    frame = pd.DataFrame(rows, columns=["id", "sire", "dam"])
    permutation = draw(st.permutations(range(q)))
    return frame.iloc[list(permutation)].reset_index(drop=True)


@settings(max_examples=60, deadline=None)
@given(pedigrees())
def test_properties_on_random_pedigrees(frame):
    ped = read_pedigree(frame)
    sampling = mendelian_sampling(ped)
    A = dense_relationship(ped)
    reference = tabular(frame)
    labelled = A.to_frame().loc[reference.index, reference.index]
    np.testing.assert_allclose(labelled.to_numpy(), reference.to_numpy(), atol=1e-13)
    # A⁻¹ · A = I and diag(A) = 1 + F, in pedigree order
    in_order = dense_relationship(ped, user_order=False).matrix
    inverse = inverse_relationship(ped, sampling).toarray()
    np.testing.assert_allclose(inverse @ in_order, np.eye(ped.size), atol=1e-9)
    np.testing.assert_allclose(np.diag(in_order) - 1, sampling.inbreeding, atol=1e-13)
    # the order of rows in the file does not change any result
    shuffled = read_pedigree(frame.iloc[::-1].reset_index(drop=True))
    again = dense_relationship(shuffled).to_frame().loc[reference.index, reference.index]
    np.testing.assert_allclose(again.to_numpy(), labelled.to_numpy(), atol=1e-14)
    # renaming the ids round-trips
    rename = {a: f"new_{a}" for a in frame["id"]} | {"0": "0"}
    renamed = read_pedigree(frame.replace(rename))
    back = dense_relationship(renamed).to_frame()
    back.index = back.columns = [a.removeprefix("new_") for a in back.index]
    np.testing.assert_allclose(
        back.loc[reference.index, reference.index].to_numpy(), labelled.to_numpy(), atol=1e-14
    )
