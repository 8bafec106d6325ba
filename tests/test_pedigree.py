"""Pedigree reading and checking: every error names the ids; notices for what was completed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_animal.structures.pedigree import PedigreeError, PedigreeNotice, read_pedigree


def _ped(rows, columns=("id", "sire", "dam")):
    return pd.DataFrame(rows, columns=list(columns)).astype(str)


def test_sorted_parents_first_with_generations_and_user_order():
    # offspring listed before their parents in the user's file
    frame = _ped([["c", "a", "b"], ["d", "c", "0"], ["a", "0", "0"], ["b", "NA", ""]])
    ped = read_pedigree(frame)
    position = {a: i for i, a in enumerate(ped.ids)}
    for i in range(ped.size):
        for parent in (ped.sire[i], ped.dam[i]):
            assert parent < i
    assert dict(zip(ped.ids, ped.generation, strict=True)) == {"a": 0, "b": 0, "c": 1, "d": 2}
    assert ped.sire[position["c"]] == position["a"] and ped.dam[position["d"]] == -1
    np.testing.assert_array_equal(ped.ids[ped.user_order], ["c", "d", "a", "b"])


def test_unknown_parent_tokens_and_custom_token():
    frame = _ped([["a", "0", "NA"], ["b", ".", ""], ["c", "a", "b"], ["d", "a", "missing"]])
    with pytest.raises(PedigreeError, match=r"used both as sire and as dam: 'missing'"):
        # 'missing' is read as a parent id without a row... and is then added as a founder
        read_pedigree(frame.assign(sire=["0", ".", "a", "missing"]), warn=False)
    ped = read_pedigree(frame, unknown="missing")
    d = list(ped.ids).index("d")
    assert ped.dam[d] == -1 and ped.size == 4


def test_parents_without_rows_are_added_as_founders_with_a_notice():
    frame = _ped([["c", "a", "b"], ["d", "c", "e"]])
    with pytest.warns(PedigreeNotice, match=r"3 parent\(s\).*'a', 'b', 'e'"):
        ped = read_pedigree(frame)
    assert set(ped.ids) == {"a", "b", "c", "d", "e"}
    assert np.sum(ped.input_order < 0) == 3
    np.testing.assert_array_equal(ped.ids[ped.user_order][:3], ["a", "b", "e"])


def test_conflicting_duplicates_are_an_error_naming_them():
    frame = _ped([["a", "0", "0"], ["b", "0", "0"], ["c", "a", "b"], ["c", "b", "a"]])
    with pytest.raises(PedigreeError, match="conflicting parents: 'c'"):
        read_pedigree(frame, allow_selfing=True)


def test_identical_duplicates_are_merged_with_a_notice():
    frame = _ped([["a", "0", "0"], ["b", "0", "0"], ["c", "a", "b"], ["c", "a", "b"]])
    with pytest.warns(PedigreeNotice, match="1 repeated pedigree row"):
        ped = read_pedigree(frame)
    assert ped.size == 3


def test_cycle_is_reported_with_its_members():
    frame = _ped([["a", "c", "0"], ["b", "a", "0"], ["c", "b", "0"], ["z", "0", "0"]])
    with pytest.raises(PedigreeError, match="cycle") as info:
        read_pedigree(frame)
    message = str(info.value)
    assert all(name in message for name in ("a", "b", "c")) and "'z'" not in message


def test_own_parent_is_a_cycle():
    with pytest.raises(PedigreeError, match="'a' list.*itself"):
        read_pedigree(_ped([["a", "a", "0"]]))


def test_sire_used_as_dam_is_an_error_unless_selfing_is_allowed():
    frame = _ped([["p", "0", "0"], ["q", "0", "0"], ["x", "p", "q"], ["y", "q", "p"]])
    with pytest.raises(PedigreeError, match="both as sire and as dam: 'p', 'q'.*allow_selfing"):
        read_pedigree(frame)
    assert read_pedigree(frame, allow_selfing=True).size == 4
    selfed = _ped([["p", "0", "0"], ["s", "p", "p"]])
    with pytest.raises(PedigreeError, match="'p'"):
        read_pedigree(selfed)
    ped = read_pedigree(selfed, allow_selfing=True)
    assert ped.sire[1] == ped.dam[1] == 0


def test_rows_without_id_are_an_error():
    with pytest.raises(PedigreeError, match=r"without an id: row\(s\) 1"):
        read_pedigree(_ped([["a", "0", "0"], ["", "a", "0"]]))


def test_columns_by_name_default_first_three_and_missing():
    frame = _ped(
        [["a", "0", "0", "x"], ["b", "a", "0", "y"]], columns=("id", "father", "mother", "note")
    )
    default = read_pedigree(frame)
    named = read_pedigree(frame, columns=("id", "father", "mother"))
    np.testing.assert_array_equal(default.sire, named.sire)
    with pytest.raises(PedigreeError, match="column\\(s\\) 'sire', 'dam' not found.*'father'"):
        read_pedigree(frame, columns=("id", "sire", "dam"))
    with pytest.raises(PedigreeError, match="three columns"):
        read_pedigree(frame[["id", "father"]])


def test_animals_missing_from_pedigree_are_listed():
    ped = read_pedigree(_ped([["a", "0", "0"], ["b", "a", "0"]]))
    np.testing.assert_array_equal(ped.positions(["b", "a"]), [1, 0])
    with pytest.raises(PedigreeError, match=r"2 animal id\(s\) in the data.*'x', 'y'"):
        ped.positions(["a", "x", "y", "x"])


def test_integer_ids_from_gryphon_style_file(tmp_path):
    path = tmp_path / "ped.csv"
    path.write_text('"id","father","mother"\n3,1,2\n1,NA,NA\n2,NA,NA\n')
    ped = read_pedigree(path)
    assert list(ped.ids) == ["1", "2", "3"]
    np.testing.assert_array_equal(ped.positions([3, 1]), [2, 0])
    frame = ped.to_frame()
    assert list(frame.columns) == ["id", "sire", "dam", "generation"]
    assert frame.loc[2, "sire"] == "1" and frame.loc[0, "sire"] is None


def test_missing_file():
    with pytest.raises(PedigreeError, match="not found"):
        read_pedigree("/nonexistent/ped.csv")


def test_gryphon_pedigree(tmp_path):
    from conftest import shared_folder

    folder = shared_folder("gryphon")
    ped = read_pedigree(folder / "gryphonped.csv")
    assert ped.size == 1309 and ped.notices == ()
    assert ped.generation.max() == 7
