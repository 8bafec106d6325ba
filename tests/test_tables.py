"""Tables without pandas: the DataFrames they stand for, and pandas left unimported."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import python_stdout

from bayes_animal.tables import ColumnRecords, Table, as_records, is_pandas


def test_table_answers_like_the_frame_it_stands_for():
    table = Table(
        "component",
        ["additive", "residual"],
        {"variance": np.array([2.0, 1.0]), "boundary": np.array([False, True])},
    )
    frame = table.frame()
    expected = pd.DataFrame(
        {"variance": [2.0, 1.0], "boundary": [False, True]},
        index=pd.Index(["additive", "residual"], name="component"),
    )
    pd.testing.assert_frame_equal(frame, expected)
    assert table.value("residual", "variance") == 1.0
    assert "additive" in table and "maternal" not in table and len(table) == 2
    assert [(name, bool(row["boundary"])) for name, row in table.rows()] == [
        (name, bool(row["boundary"])) for name, row in frame.iterrows()
    ]
    with pytest.raises(KeyError):
        table.value("maternal", "variance")


def test_column_records_mark_missing_entries_as_pandas_does():
    records = ColumnRecords(
        {
            "g": np.array(["a", np.nan, "b"], dtype=object),
            "x": np.array([1.0, np.nan, 2.0]),
            "n": np.array([1, 2, 3]),
        }
    )
    frame = records.frame()
    for name in ("g", "x", "n"):
        np.testing.assert_array_equal(records.missing(name), frame[name].isna().to_numpy())
    kept = records.take(np.array([True, False, True]))
    assert list(kept.labels) == [0, 2]
    pd.testing.assert_frame_equal(kept.frame(), frame.loc[[True, False, True]])


def test_as_records_takes_frames_and_records_and_nothing_else():
    frame = pd.DataFrame({"y": [1.0]})
    assert as_records(frame).frame() is frame
    records = ColumnRecords({"y": np.array([1.0])})
    assert as_records(records) is records
    assert as_records({"y": [1.0]}) is None
    assert is_pandas(frame) and not is_pandas(records) and is_pandas(frame["y"], "Series")


def test_importing_the_package_does_not_import_pandas():
    code = (
        "import sys, bayes_animal, bayes_animal.cli; "
        "from bayes_animal.tables import is_pandas; "
        "assert not is_pandas(object()); print('pandas' in sys.modules)"
    )
    assert python_stdout(code).strip() == "False"


def test_a_table_is_written_as_pandas_writes_its_frame(tmp_path):
    table = Table(
        "id",
        np.array(["a1", 'say "b"', "c,3", "Älva"], dtype=object),
        {
            "blup": np.array([0.1234567890123, -2.5e-12, np.nan, np.inf]),
            "n_records": np.array([1, 0, 3, 2]),
            "flag": np.array([True, False, True, False]),
        },
    )
    ours = table.write_csv(tmp_path / "ours.csv", float_format="%.10g")
    theirs = tmp_path / "theirs.csv"
    table.frame().reset_index().to_csv(theirs, index=False, float_format="%.10g")
    assert ours.read_bytes() == theirs.read_bytes()
