"""Tables without pandas: what the command line's REML path holds instead of DataFrames.

Importing pandas takes about 0.4 s, half of a whole ``bayes-animal reml`` on a thousand
animals. The path from a CSV file to the printed estimates therefore holds its columns in
NumPy arrays: :class:`Table` (named columns with an index, the form of every table a
:class:`~bayes_animal.estimation.result.RemlResult` reports) and :class:`ColumnRecords` (the
records as read by :func:`bayes_animal.readers.read_records_csv`). Each turns into the
DataFrame pandas would have built from the same values (:meth:`Table.frame`,
:meth:`ColumnRecords.frame`) when a caller asks for one, and only then is pandas imported.

:data:`pandas` stands for the module in code that needs it only on some paths: ``pd.DataFrame``
imports pandas on first use, importing this module does not. :func:`is_pandas` asks whether an
object is a pandas object without importing pandas (it cannot be one unless pandas is loaded).
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ColumnRecords", "FrameRecords", "Records", "Table", "as_records", "is_pandas", "pandas"]


class _LazyPandas:
    """The pandas module, imported when one of its attributes is first read."""

    def __getattr__(self, name: str) -> Any:
        import pandas

        return getattr(pandas, name)


pandas: Any = _LazyPandas()
"""``from bayes_animal.tables import pandas as pd``: pandas, imported on first use."""


def is_pandas(obj: Any, kind: str = "DataFrame") -> bool:
    """Whether ``obj`` is a ``pandas.<kind>`` (``DataFrame``, ``Series``, ``Index``), without
    importing pandas when it is not loaded (no object can then be one)."""
    module = sys.modules.get("pandas")
    return module is not None and isinstance(obj, getattr(module, kind))


@dataclass(frozen=True, eq=False)
class Table:
    """Named columns of equal length, labelled by an index: a DataFrame's content.

    Parameters
    ----------
    index_name
        The name of the index (``component``, ``id``, …).
    index
        One label per row.
    columns
        Column name → one-dimensional array, in order.
    """

    index_name: str
    index: Any
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, label: Any) -> bool:
        return label in self._position_map

    @cached_property
    def _position_map(self) -> dict[Any, int]:
        return {label: i for i, label in enumerate(self.index)}

    def value(self, label: Any, column: str) -> Any:
        """The entry of row ``label`` in ``column`` (KeyError for an unknown row)."""
        return self.columns[column][self._position_map[label]]

    def rows(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        """``(label, {column: value})`` per row, in order (as ``DataFrame.iterrows``)."""
        for i, label in enumerate(self.index):
            yield label, {name: values[i] for name, values in self.columns.items()}

    def frame(self) -> pd.DataFrame:
        """The DataFrame of these columns, indexed by :attr:`index` (imports pandas)."""
        return pandas.DataFrame(
            dict(self.columns), index=pandas.Index(self.index, name=self.index_name)
        )

    def write_csv(self, path: str | PathLike[str], *, float_format: str = "%.17g") -> Path:
        """Write the index and the columns as CSV, byte for byte as
        ``frame().reset_index().to_csv(path, index=False, float_format=float_format)`` writes
        them (NaN as an empty cell, strings quoted where they must be), without pandas."""
        cells = [list(self.index)]
        for values in self.columns.values():
            if values.dtype.kind == "f":
                cells.append(["" if v != v else float_format % v for v in values.tolist()])
            else:
                cells.append(values.tolist())
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator=os.linesep)
            writer.writerow([self.index_name, *self.columns])
            writer.writerows(zip(*cells, strict=True))
        return path


class Records:
    """The records a design is built from, one row each, whatever holds them.

    :func:`bayes_animal.design.build_design` reads its data through this interface only, so
    that one implementation serves a DataFrame (:class:`FrameRecords`) and the columns of the
    fast CSV reader (:class:`ColumnRecords`) alike.
    """

    names: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, name: Any) -> bool:
        raise NotImplementedError

    def kind(self, name: str) -> str:
        """The NumPy kind of a column (``"f"``, ``"i"``, ``"u"``, ``"b"``, ``"O"``, …)."""
        raise NotImplementedError

    def floats(self, name: str) -> np.ndarray:
        """A numeric column as floats (missing values NaN)."""
        raise NotImplementedError

    def values(self, name: str) -> np.ndarray:
        """A column's values as NumPy holds them (ids, levels)."""
        raise NotImplementedError

    def missing(self, name: str) -> np.ndarray:
        """Which entries of a column are missing."""
        raise NotImplementedError

    def take(self, keep: np.ndarray) -> Records:
        """The records where ``keep`` is true, labels kept."""
        raise NotImplementedError

    def frame(self) -> pd.DataFrame:
        """The records as a DataFrame (for formulaic's designs; imports pandas)."""
        raise NotImplementedError


class FrameRecords(Records):
    """Records held by a DataFrame: every question is answered by pandas, as before."""

    def __init__(self, data: pd.DataFrame) -> None:
        self.data = data
        self.names = [str(c) for c in data.columns]
        self.labels = np.asarray(data.index, dtype=object)

    def __contains__(self, name: Any) -> bool:
        return name in self.data.columns

    def kind(self, name: str) -> str:
        return self.data[name].dtype.kind

    def floats(self, name: str) -> np.ndarray:
        return self.data[name].to_numpy(dtype=float)

    def values(self, name: str) -> np.ndarray:
        return self.data[name].to_numpy()

    def missing(self, name: str) -> np.ndarray:
        return self.data[name].isna().to_numpy()

    def take(self, keep: np.ndarray) -> FrameRecords:
        return FrameRecords(self.data.loc[keep])

    def frame(self) -> pd.DataFrame:
        return self.data


class ColumnRecords(Records):
    """Records held as NumPy columns: floats (NaN where missing), integers (no missing
    entries) and objects (``str``, NaN where missing) — the three kinds pandas' CSV reader
    gives a plain file, so that :meth:`frame` equals ``pandas.read_csv`` of that file.

    Parameters
    ----------
    columns
        Column name → values, in the file's order.
    labels
        Row labels (``0 … n-1`` for a file, as pandas numbers its rows).
    """

    def __init__(self, columns: dict[str, np.ndarray], labels: np.ndarray | None = None) -> None:
        self.columns = columns
        self.names = list(columns)
        n = len(next(iter(columns.values()))) if columns else 0
        self.labels = np.arange(n) if labels is None else labels

    def __contains__(self, name: Any) -> bool:
        return name in self.columns

    def kind(self, name: str) -> str:
        return self.columns[name].dtype.kind

    def floats(self, name: str) -> np.ndarray:
        return np.asarray(self.columns[name], dtype=float)

    def values(self, name: str) -> np.ndarray:
        return self.columns[name]

    def missing(self, name: str) -> np.ndarray:
        values = self.columns[name]
        if values.dtype.kind == "f":
            return np.isnan(values)
        if values.dtype.kind == "O":
            return np.fromiter((not isinstance(v, str) for v in values), bool, len(values))
        return np.zeros(len(values), dtype=bool)

    def take(self, keep: np.ndarray) -> ColumnRecords:
        return ColumnRecords(
            {name: values[keep] for name, values in self.columns.items()}, self.labels[keep]
        )

    def frame(self) -> pd.DataFrame:
        labels = self.labels
        index = (
            pandas.RangeIndex(len(labels))
            if np.array_equal(labels, np.arange(len(labels)))
            else pandas.Index(labels)
        )
        return pandas.DataFrame(dict(self.columns), index=index)


def as_records(data: Any) -> Records | None:
    """:class:`Records` of a DataFrame or of records already read; None for anything else
    (which the caller refuses, naming its type)."""
    if isinstance(data, Records):
        return data
    if is_pandas(data):
        return FrameRecords(data)
    return None
