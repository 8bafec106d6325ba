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


def test_parent_ids_written_as_whole_floats_are_the_integer_ids():
    """A parent column written through a float ('1145.0', as pandas writes an integer column
    with missing values) names the animals '1145': no parent is added as a founder and the
    pedigree is the one with integer parents."""
    rows = [["1", "0", "0"], ["2", "0", "0"], ["3", "1.0", "2.0"], ["4", "1.0", ""]]
    ped = read_pedigree(_ped(rows))
    as_integers = read_pedigree(_ped([["1", "0", "0"], ["2", "0", "0"], ["3", "1", "2"],
                                      ["4", "1", ""]]))  # fmt: skip
    assert ped.size == 4 and not ped.notices
    np.testing.assert_array_equal(ped.ids, as_integers.ids)
    np.testing.assert_array_equal(ped.sire, as_integers.sire)
    np.testing.assert_array_equal(ped.dam, as_integers.dam)
    ids_as_floats = read_pedigree(_ped([["1.0", "0", "0"], ["2.0", "0", "0"], ["3.0", "1", "2"]]))
    assert list(ids_as_floats.ids) == ["1", "2", "3"]


def test_text_ids_that_look_like_floats_are_kept_as_written():
    """In a column that is not all numbers, '1.0' is an id of its own: nothing is rewritten."""
    ped = read_pedigree(_ped([["1.0", "0", "0"], ["x", "0", "0"], ["c", "1.0", "x"]]))
    assert "1.0" in set(ped.ids)


def test_parents_that_look_like_listed_ids_written_another_way_are_an_error():
    rows = [["A12", "0", "0"], ["B7", "0", "0"], ["c", "a12 ", "B7"]]
    with pytest.raises(PedigreeError, match=r"look like listed ids.*'a12 ' \(listed as 'A12'\)"):
        read_pedigree(_ped(rows))
    zeros = [["12", "0", "0"], ["7", "0", "0"], ["3", "012", "7"]]
    with pytest.raises(PedigreeError, match=r"'012' \(listed as '12'\)"):
        read_pedigree(_ped(zeros))


def test_most_parents_without_a_row_is_an_error_unless_the_file_lists_offspring_only():
    """Twelve sires and dams, none with a row: ids written in two forms look like this, so it
    is an error naming the fix; add_missing_parents=True adds them as founders."""
    rows = [[f"o{i}", f"s{i % 6}", f"d{i % 6}"] for i in range(30)]
    fix = r"add_missing_parents=True .*read_pedigree"
    with pytest.raises(PedigreeError, match=r"12 of the 12 parents match no id.*" + fix):
        read_pedigree(_ped(rows))
    with pytest.warns(PedigreeNotice, match=r"12 parent\(s\) without a row"):
        ped = read_pedigree(_ped(rows), add_missing_parents=True)
    assert ped.size == 42


def test_the_command_line_names_the_option_for_an_offspring_only_pedigree(tmp_path, capsys):
    from bayes_animal.cli import main

    rows = [[f"o{i}", f"s{i % 6}", f"d{i % 6}"] for i in range(30)]
    _ped(rows).to_csv(tmp_path / "ped.csv", index=False)
    pd.DataFrame({"animal": [f"o{i}" for i in range(30)], "y": np.arange(30.0) % 7}).to_csv(
        tmp_path / "data.csv", index=False
    )
    base = ["reml", "--data", str(tmp_path / "data.csv"), "--formula", "y ~ 1",
            "--pedigree", str(tmp_path / "ped.csv")]  # fmt: skip
    assert main(base) != 0
    said = capsys.readouterr().err
    assert "--add-missing-parents" in said and "add_missing_parents=True" not in said
    assert main([*base, "--add-missing-parents"]) == 0


def test_gryphon_pedigree_written_through_pandas_gives_the_same_reml(tmp_path):
    """The new user's case: gryphonped.csv read by pandas (parents with missing values become
    floats) and written back ('1145.0'); REML from it equals REML from the original file."""
    import warnings

    from conftest import shared_folder

    from bayes_animal import reml

    folder = shared_folder("gryphon")
    pd.read_csv(folder / "gryphonped.csv").to_csv(tmp_path / "ped.csv", index=False)
    assert ".0" in (tmp_path / "ped.csv").read_text().splitlines()[-1]
    data = pd.read_csv(folder / "gryphon.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = reml("bwt ~ 1", data, pedigree=folder / "gryphonped.csv")
        rewritten = reml("bwt ~ 1", data, pedigree=tmp_path / "ped.csv")
    assert rewritten.predictions["additive"].shape == original.predictions["additive"].shape
    assert rewritten.ratios.loc["h2", "estimate"] == pytest.approx(
        original.ratios.loc["h2", "estimate"], rel=1e-9
    )


def test_an_unknown_parent_written_as_a_float_zero_stays_unknown():
    """'0.0' (a float column with a missing value) is the unknown token 0, not a founder '0'
    shared by every animal."""
    rows = [["1", "0.0", "0"], ["2", "0.0", "0"], ["3", "1.0", "2"], ["4", "", "0"]]
    ped = read_pedigree(_ped(rows))
    assert "0" not in set(ped.ids) and not ped.notices
    position = {a: i for i, a in enumerate(ped.ids)}
    assert ped.sire[position["1"]] == -1 and ped.sire[position["2"]] == -1
    both = [["1", "0.0", "0.0"], ["2", "0.0", "0.0"], ["3", "1.0", "2.0"]]
    assert read_pedigree(_ped(both)).size == 3


def test_ids_beyond_float_precision_keep_every_digit():
    big = "9007199254740993"
    ped = read_pedigree(_ped([[big, "0", "0"], ["2", "0", "0"], ["3", f"{big}.0", "2.0"]]))
    position = {a: i for i, a in enumerate(ped.ids)}
    assert big in position and ped.sire[position["3"]] == position[big]
