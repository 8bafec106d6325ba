"""The pandas-free CSV readers read exactly what pandas reads, or hand the file to pandas.

Every file here is read both ways: the fast reader's result must equal ``pandas.read_csv``'s
(records) or ``pandas.read_csv(index_col=0)``'s (matrices), and a file where the two could
differ must come back as None so that the caller uses pandas.
"""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from bayes_animal.errors import RelationshipError
from bayes_animal.readers import MISSING_TOKENS, read_matrix_csv, read_records_csv
from bayes_animal.structures.relationship import read_relationship_csv

pytest.importorskip("pyarrow")


def test_missing_tokens_are_pandas_defaults():
    from pandas._libs.parsers import STR_NA_VALUES

    assert set(MISSING_TOKENS) == set(STR_NA_VALUES)


READ_LIKE_PANDAS = {
    "numbers": "animal,x,y\na1,1,1.5\na2,2,-2.25e3\na3,3,4\n",
    "integer ids with leading zeros": "animal,y\n0001,1.0\n0002,2.0\n0010,3.0\n",
    "integers with a missing entry": "animal,n,y\na1,1,1.0\na2,,2.0\na3,3,3.0\n",
    "missing-value tokens": "animal,g,y\na1,NA,1.0\na2,h2,NaN\na3,null,3\na4,h1,N/A\n",
    "quoted strings with commas": 'animal,g,y\n"a,1",h1,1\n"a 2",h2,2\n',
    "an empty column": "animal,empty,y\na1,,1\na2,,2\n",
    "unicode": "animal,herd,y\nÄlva,Ölands,1.5\nBjörn,Gotland,2.5\n",
    "infinite values": "animal,y\na1,inf\na2,-inf\na3,1\n",
    "blank lines": "animal,y\na1,1\n\na2,2\n",
    "spaces around numbers and strings": "animal,x,y\n a1 , 1.5,1\na2, 2.5 ,2\n",
    "a byte-order mark": "\ufeffanimal,y\na1,1\na2,2\n",
    "special floats": "animal,y\na1,.5\na2,5.\na3,INF\na4,-Inf\na5,1e400\na6,-0\n",
}


@pytest.mark.parametrize("content", READ_LIKE_PANDAS.values(), ids=READ_LIKE_PANDAS.keys())
def test_records_equal_pandas(tmp_path, content):
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")
    records = read_records_csv(path)
    assert records is not None, "a plain file should not need pandas"
    pd.testing.assert_frame_equal(records.frame(), pd.read_csv(path))


def test_compressed_records_are_left_to_pandas(tmp_path):
    path = tmp_path / "data.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(READ_LIKE_PANDAS["numbers"])
    assert read_records_csv(path) is None


LEFT_TO_PANDAS = {
    "duplicate names": "a,a,y\n1,2,3\n",
    "an unnamed column": ",x,y\n0,1,2\n",
    "booleans": "animal,flag,y\na1,True,1\na2,False,2\n",
    "dates": "animal,born,y\na1,2024-01-02,1\na2,2024-02-03,2\n",
    "digits with underscores": "animal,x,y\na1,1_5,1\na2,2,2\n",
    "hexadecimal": "animal,x,y\na1,0x10,1\na2,2,2\n",
    "integers beyond int64": "animal,x,y\na1,9223372036854775808,1\na2,2,2\n",
    "integers beyond int64 beside a missing entry": "animal,x,y\na1,9223372036854775808,1\na2,,2\n",
    "NaN spelt as pandas does not read it": "animal,x,y\na1,NAN,1\na2,Nan,2\na3,+nan,3\n",
    "a header and no records": "animal,x,y\n",
    "ragged rows": "animal,y\na1,1,9\na2,2\n",
}


@pytest.mark.parametrize("content", LEFT_TO_PANDAS.values(), ids=LEFT_TO_PANDAS.keys())
def test_files_where_the_readers_could_differ_are_left_to_pandas(tmp_path, content):
    path = tmp_path / "data.csv"
    path.write_text(content)
    assert read_records_csv(path) is None


def test_a_missing_or_undecodable_file_is_left_to_pandas(tmp_path):
    assert read_records_csv(tmp_path / "absent.csv") is None
    path = tmp_path / "latin1.csv"
    path.write_bytes("animal,y\nK\xf6nig,1\n".encode("latin-1"))
    assert read_records_csv(path) is None


def _matrix_file(tmp_path, ids, matrix, columns=None):
    frame = pd.DataFrame(matrix, index=ids, columns=ids if columns is None else columns)
    path = tmp_path / "A.csv"
    frame.to_csv(path, float_format="%.17g")
    return path


def test_matrix_equals_pandas(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"ind{i:03d}" for i in range(40)]
    root = rng.normal(size=(40, 40))
    path = _matrix_file(tmp_path, ids, root @ root.T / 40)
    rows, columns, matrix = read_matrix_csv(path)
    expected = pd.read_csv(path, index_col=0)
    assert list(rows) == list(expected.index)
    assert list(columns) == list(expected.columns)
    np.testing.assert_array_equal(matrix, expected.to_numpy())


@pytest.mark.parametrize(
    "content",
    ['"","a","b"\n"a",1,0.5\n"b",0.5,1\n', "\ufeff,a,b\na,1,0.5\nb,0.5,1\n"],
    ids=["R's write.csv quoting", "a byte-order mark"],
)
def test_matrix_files_as_r_and_spreadsheets_write_them(tmp_path, content):
    path = tmp_path / "A.csv"
    path.write_text(content, encoding="utf-8")
    rows, columns, matrix = read_matrix_csv(path)
    expected = pd.read_csv(path, index_col=0)
    assert list(rows) == list(expected.index) == ["a", "b"]
    assert list(columns) == list(expected.columns)
    np.testing.assert_array_equal(matrix, expected.to_numpy())


def test_integer_ids_are_read_as_pandas_reads_them(tmp_path):
    path = tmp_path / "A.csv"
    path.write_text(",001,002\n001,1,0.5\n002,0.5,1\n")
    rows, columns, _ = read_matrix_csv(path)
    expected = pd.read_csv(path, index_col=0)
    assert list(rows) == list(expected.index) == [1, 2]
    assert list(columns) == list(expected.columns) == ["001", "002"]
    # as with pandas' reader, the row ids (integers) then differ from the header's strings
    with pytest.raises(RelationshipError, match="rows only '1', '2'; columns only '001'"):
        read_relationship_csv(path)


@pytest.mark.parametrize(
    "content",
    [
        ",a,b\na,1,x\nb,0.5,1\n",
        ",a,a\na,1,0.5\nb,0.5,1\n",
        ",a,b\n1.5,1,0.5\n2.5,0.5,1\n",
        ",a,b\na,1,NAN\nb,0.5,1\n",
        ",1,a\n1,1,0.5\na,0.5,1\n",
        ",a,b\na,1,1e19\nb,1e19,1\n",
    ],
    ids=[
        "a non-numeric entry",
        "duplicate column ids",
        "ids read as floats",
        "NaN spelt as pandas does not read it",
        "ids of mixed kinds",
        "a number beyond 2^63",
    ],
)
def test_matrices_where_the_readers_could_differ_are_left_to_pandas(tmp_path, content):
    path = tmp_path / "A.csv"
    path.write_text(content)
    assert read_matrix_csv(path) is None


def test_float_columns_in_chunks_of_any_shape_are_copied_whole(monkeypatch):
    import pyarrow

    from bayes_animal import readers
    from bayes_animal.readers import _matrix

    sliced = pyarrow.array([9.0, 1.0, 2.0, 3.0]).slice(1)  # a chunk with an offset
    columns = [
        pyarrow.chunked_array([sliced]),
        pyarrow.chunked_array([[4.0], [5.0, 6.0]]),
        pyarrow.chunked_array([[7.0, 8.0], [9.0]]),
    ]
    with monkeypatch.context() as patch:  # the whole-table copy, not the column-by-column path
        patch.setattr(readers, "_numbers", lambda column: pytest.fail("read column by column"))
        matrix = _matrix(np.array(["a", "b", "c"], dtype=object), columns)
    np.testing.assert_array_equal(matrix, [[1.0, 4.0, 7.0], [2.0, 5.0, 8.0], [3.0, 6.0, 9.0]])
    # an integer column among them is read column by column, as before
    columns[1] = pyarrow.chunked_array([[4, 5, 6]])
    matrix = _matrix(np.array(["a", "b", "c"], dtype=object), columns)
    np.testing.assert_array_equal(matrix[:, 1], [4.0, 5.0, 6.0])


def test_relationship_reads_the_same_through_either_reader(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    ids = [f"ind{i:03d}" for i in range(30)]
    root = rng.normal(size=(30, 30))
    matrix = root @ root.T / 30 + np.eye(30)
    order = rng.permutation(30)  # columns in another order than the rows: matched by id
    path = _matrix_file(tmp_path, ids, matrix[:, order], columns=[ids[j] for j in order])
    fast = read_relationship_csv(path)
    monkeypatch.setattr("bayes_animal.structures.relationship.read_matrix_csv", lambda p: None)
    slow = read_relationship_csv(path)
    assert list(fast.ids) == list(slow.ids) == ids
    np.testing.assert_array_equal(fast.matrix, slow.matrix)
    np.testing.assert_allclose(fast.matrix, matrix, rtol=1e-15)


def test_hexadecimal_ids_are_text_as_pandas_reads_them(tmp_path):
    path = tmp_path / "A.csv"
    path.write_text(",0x1,0x2\n0x1,1,0.5\n0x2,0.5,1\n")
    rows, columns, _ = read_matrix_csv(path)
    expected = pd.read_csv(path, index_col=0)
    assert list(rows) == list(expected.index) == ["0x1", "0x2"]
    assert list(columns) == list(expected.columns)
    assert list(read_relationship_csv(path).ids) == ["0x1", "0x2"]


def test_a_missing_entry_is_named_whichever_reader_reads_it(tmp_path):
    path = tmp_path / "A.csv"
    path.write_text(",a,b\na,1,NA\nb,0.5,1\n")
    assert read_matrix_csv(path) is not None  # NA is read as NaN, as pandas reads it
    with pytest.raises(RelationshipError, match="NaN or infinite entries in the rows of"):
        read_relationship_csv(path)


def test_a_non_numeric_entry_is_still_reported_by_pandas_reader(tmp_path):
    path = tmp_path / "A.csv"
    path.write_text(",a,b\na,1,x\nb,0.5,1\n")
    with pytest.raises(RelationshipError, match="non-numeric entries"):
        read_relationship_csv(path)


@pytest.mark.parametrize("stored_index", [False, True])
def test_parquet_matrix_reads_the_same_through_either_reader(tmp_path, monkeypatch, stored_index):
    from bayes_animal.structures.relationship import read_relationship_file

    pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(3)
    ids = [f"ind{i:03d}" for i in range(20)]
    root = rng.normal(size=(20, 20))
    frame = pd.DataFrame(root @ root.T / 20 + np.eye(20), columns=ids)
    frame.insert(0, "id", ids)
    if stored_index:  # a labelled index is stored as a column of its own
        frame.index = pd.Index([f"row{i}" for i in range(20)], name="label")
    path = tmp_path / "A.parquet"
    frame.to_parquet(path, index=stored_index)
    fast = read_relationship_file(path)
    monkeypatch.setattr("bayes_animal.structures.relationship.read_matrix_parquet", lambda p: None)
    slow = read_relationship_file(path)
    assert list(fast.ids) == list(slow.ids) == ids
    np.testing.assert_array_equal(fast.matrix, slow.matrix)
