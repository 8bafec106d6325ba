"""Reading records and writing results as CSV, in the formats the command line uses.

- Records: any CSV with a header; one row per record.
- Relationship matrices: ids as header and first column (R's ``write.csv(A)`` layout), written
  with 17 significant digits so that a round trip is exact.
- Predictions: ``id, blup, pev, reliability, n_records``, one file per random effect.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..estimation.result import RemlResult
from ..readers import read_records_csv
from ..structures.relationship import BINARY_FORMATS, RelationshipMatrix, ids_sidecar
from ..tables import FrameRecords, Records
from ..tables import pandas as pd

__all__ = [
    "read_data",
    "read_records",
    "write_matrix",
    "write_predictions",
    "write_relationship_csv",
]


def read_records(path: str | PathLike[str], sep: str = ",") -> Records:
    """The records of a CSV file, read without pandas where :mod:`bayes_animal.readers` can
    (the same values as :func:`read_data`; comma-separated files), else by :func:`read_data`."""
    records = read_records_csv(path) if sep == "," else None
    if records is not None:
        _check_separator(records.names, path, sep)
        return records
    return FrameRecords(read_data(path, sep=sep))


#: Separators a file read as one column is checked for.
_OTHER_SEPARATORS = {";": "';'", "\t": "'\\t' (tab)", "|": "'|'"}


def _check_separator(names: list[str], path, sep: str) -> None:
    """A file read as one column whose name holds another separator was written with that one:
    an error naming it and the option, not a model of one column."""
    if len(names) != 1:
        return
    for other, shown in _OTHER_SEPARATORS.items():
        if other != sep and other in str(names[0]):
            raise DataError(
                f"{path} was read as one column ({str(names[0])[:60]!r}): it seems to use "
                f"{shown} between its columns, not {sep!r}. Pass --sep {shown.split()[0]} "
                "(sep= in read_data), or write it with commas."
            )


def read_data(path: str | PathLike[str], sep: str = ",") -> pd.DataFrame:
    """Read a CSV of records (columns separated by ``sep``); raise :class:`DataError` naming the
    file if it cannot be read, or if it reads as one column that holds another separator."""
    try:
        frame = pd.read_csv(path, sep=sep)
    except FileNotFoundError as exc:
        raise DataError(f"Data file not found: {path}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"Could not read the data file {path}: {exc}") from exc
    _check_separator([str(c) for c in frame.columns], path, sep)
    return frame


def write_relationship_csv(relmat: RelationshipMatrix, path: str | PathLike[str]) -> Path:
    """Write A with ids as header and first column, 17 significant digits."""
    return write_matrix(relmat.matrix, relmat.ids, path)


def write_predictions(result: RemlResult, folder: str | PathLike[str]) -> list[Path]:
    """Write ``blup.csv`` (the additive, or single, random effect) and one
    ``blup_<component>.csv`` per other random effect: id, blup, pev, reliability, n_records;
    with several traits ``blup_<effect>_<trait>.csv`` for every effect (``blup_additive_bwt``:
    no ``:`` in a file name)."""
    folder = Path(folder)
    main = None if result.multi_trait else result._genetic_name()
    paths = []
    for name, table in result.prediction_tables.items():
        file = name.replace(":", "_")
        path = folder / ("blup.csv" if name == main else f"blup_{file}.csv")
        paths.append(table.write_csv(path, float_format="%.10g"))
    return paths


def write_matrix(
    matrix: Any,
    ids: np.ndarray,
    path: str | PathLike[str],
    *,
    triplets: bool = False,
) -> Path:
    """Write a symmetric matrix: dense (ids as header and first column) or as triplets.

    Triplets are ``row, col, value`` with the ids, lower triangle (row position ≥ column
    position), non-zeros only — the layout of ASReml ``.giv`` and BLUPF90 files, and the way to
    write a large sparse A⁻¹. A dense file of a sparse matrix is refused above 20 000 animals.
    """
    from scipy import sparse

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in BINARY_FORMATS and not triplets:
        dense = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
        ids = np.asarray([str(i) for i in ids])
        if suffix == ".npz":
            np.savez(path, matrix=dense, ids=ids)
        elif suffix == ".npy":
            np.save(path, dense)
            ids_sidecar(path).write_text("\n".join(ids) + "\n")
        else:
            frame = pd.DataFrame(dense, columns=ids)
            frame.insert(0, "id", ids)
            frame.to_parquet(path, index=False)
        return path
    if triplets:
        lower = sparse.tril(sparse.coo_matrix(matrix)).tocoo()
        order = np.lexsort((lower.col, lower.row))
        frame = pd.DataFrame(
            {"row": ids[lower.row[order]], "col": ids[lower.col[order]], "value": lower.data[order]}
        )
        frame.to_csv(path, index=False, float_format="%.17g")
        return path
    if sparse.issparse(matrix):
        if matrix.shape[0] > 20_000:
            raise DataError(
                f"A dense file of {matrix.shape[0]} animals would be huge; write triplets "
                "(--format triplets) instead."
            )
        matrix = matrix.toarray()
    pd.DataFrame(matrix, index=ids, columns=ids).to_csv(path, float_format="%.17g")
    return path
