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


def read_records(path: str | PathLike[str]) -> Records:
    """The records of a CSV file, read without pandas where :mod:`bayes_animal.readers` can
    (the same values as :func:`read_data`), else by :func:`read_data`."""
    records = read_records_csv(path)
    return records if records is not None else FrameRecords(read_data(path))


def read_data(path: str | PathLike[str]) -> pd.DataFrame:
    """Read a CSV of records; raise :class:`DataError` naming the file if it cannot be read."""
    try:
        return pd.read_csv(path)
    except FileNotFoundError as exc:
        raise DataError(f"Data file not found: {path}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"Could not read the data file {path}: {exc}") from exc


def write_relationship_csv(relmat: RelationshipMatrix, path: str | PathLike[str]) -> Path:
    """Write A with ids as header and first column, 17 significant digits."""
    return write_matrix(relmat.matrix, relmat.ids, path)


def write_predictions(result: RemlResult, folder: str | PathLike[str]) -> list[Path]:
    """Write ``blup.csv`` (the additive, or single, random effect) and one
    ``blup_<component>.csv`` per other random effect: id, blup, pev, reliability, n_records."""
    folder = Path(folder)
    main = result._genetic_name()
    paths = []
    for name, table in result.prediction_tables.items():
        path = folder / ("blup.csv" if name == main else f"blup_{name}.csv")
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
