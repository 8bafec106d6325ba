"""Reading records and writing results as CSV, in the formats the command line uses.

- Records: any CSV with a header; one row per record.
- Relationship matrices: ids as header and first column (R's ``write.csv(A)`` layout), written
  with 17 significant digits so that a round trip is exact.
- BLUPs: ``id, blup, pev, reliability`` (and ``n_records``).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import pandas as pd

from .errors import DataError
from .relationship import RelationshipMatrix
from .reml import RemlResult

__all__ = ["read_data", "write_blup_csv", "write_relationship_csv"]


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
    path = Path(path)
    relmat.to_frame().to_csv(path, float_format="%.17g")
    return path


def write_blup_csv(result: RemlResult, path: str | PathLike[str]) -> Path:
    """Write one row per animal: id, blup, pev, reliability, n_records."""
    path = Path(path)
    result.blup.reset_index().to_csv(path, index=False, float_format="%.10g")
    return path
