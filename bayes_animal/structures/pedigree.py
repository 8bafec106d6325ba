"""Pedigrees: reading, checking and sorting parents-first, keeping the user's ids.

A pedigree is a table of ``id, sire, dam`` (column names configurable; the gryphon file's are
``id, father, mother``; by default the first three columns are used). Unknown parents may be
written ``0``, ``NA``, an empty field, ``.`` or any token passed as ``unknown``.

What is checked, with the ids named in the error:

- duplicated ids with conflicting parents (error); exact duplicate rows are merged (notice);
- an animal that is its own ancestor (error, with the cycle);
- an id used both as a sire and as a dam (error), unless ``allow_selfing=True`` — plant
  pedigrees where one individual is both seed and pollen parent, selfing included (sire = dam);
- parents without a row of their own are added as founders (notice) — unless they look like
  listed ids written another way (``1145.0`` or `` 1145`` for ``1145``: error, naming them), or
  most parents (of at least :data:`MOST_PARENTS_MINIMUM`) have no row, which is what ids
  written in two forms look like: an error unless ``add_missing_parents=True`` says the file
  lists offspring only;
- ids written as whole-number floats (``1145.0``, as pandas writes an integer column with
  missing values) in a column of numbers are read as the integers they are, as the data's
  ids are;
- animals in the data but not in the pedigree (error, :meth:`Pedigree.positions`).

The animals are sorted parents-first by generation number (founders 0, else one more than the
older parent), stably within a generation; :attr:`Pedigree.input_order` maps back to the
user's rows. This module imports numpy and pandas only.
"""

from __future__ import annotations

import itertools
import re
import warnings
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from ..errors import BayesAnimalError, describe_items
from ..tables import pandas as pd
from .relationship import id_strings, index_positions

__all__ = [
    "Pedigree",
    "PedigreeError",
    "PedigreeNotice",
    "generation_blocks",
    "is_token",
    "read_pedigree",
]

UNKNOWN_TOKENS = ("0", "NA", "na", "NaN", "nan", "", ".", "<NA>", "None")
#: The "most parents have no row" check needs at least this many distinct parents.
MOST_PARENTS_MINIMUM = 10


class PedigreeError(BayesAnimalError, ValueError):
    """The pedigree is inconsistent (cycle, conflicting duplicates, sire used as dam …)."""


class PedigreeNotice(UserWarning):
    """The pedigree was completed or cleaned (parents added as founders, duplicates merged)."""


@dataclass(frozen=True)
class Pedigree:
    """A checked pedigree, sorted parents-first.

    Attributes
    ----------
    ids
        Animal ids (strings), parents before offspring.
    sire, dam
        Index of each animal's sire and dam in ``ids``; -1 when unknown.
    generation
        0 for founders, else 1 + the larger generation of the known parents.
    input_order
        For each sorted animal, its row in the user's table; -1 for parents added as founders.
    allow_selfing
        Whether an individual may be both sire and dam.
    notices
        What was added or merged.
    """

    ids: np.ndarray
    sire: np.ndarray
    dam: np.ndarray
    generation: np.ndarray
    input_order: np.ndarray
    allow_selfing: bool = False
    notices: tuple[str, ...] = ()
    _index: pd.Index = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self._index is None:
            object.__setattr__(self, "_index", pd.Index(self.ids))

    @property
    def size(self) -> int:
        """Number of animals q (added founders included)."""
        return len(self.ids)

    @property
    def user_order(self) -> np.ndarray:
        """Positions (in the sorted pedigree) of the animals in the user's order, added founders
        first (in order of appearance as parents)."""
        added = np.flatnonzero(self.input_order < 0)
        given = np.flatnonzero(self.input_order >= 0)
        return np.concatenate([added, given[np.argsort(self.input_order[given])]])

    def positions(self, ids: Any) -> np.ndarray:
        """Positions of ``ids`` in the sorted pedigree; names the ids that are missing."""
        return index_positions(
            self._index,
            ids,
            lambda missing: PedigreeError(
                f"{len(missing)} animal id(s) in the data are not in the pedigree: "
                f"{describe_items(missing)}. Add them to the pedigree (with unknown parents if "
                "need be) or remove their records."
            ),
        )

    def to_frame(self) -> pd.DataFrame:
        """The sorted pedigree as ``id, sire, dam, generation`` (unknown parents as NA)."""
        ids = self.ids

        def parent(index: np.ndarray) -> pd.Series:
            values = np.where(index >= 0, ids[np.maximum(index, 0)], None)
            return pd.Series(values, dtype=object)

        return pd.DataFrame(
            {
                "id": ids,
                "sire": parent(self.sire),
                "dam": parent(self.dam),
                "generation": self.generation,
            }
        )


def is_token(strings: np.ndarray, tokens: set[str] | tuple[str, ...]) -> np.ndarray:
    """Which strings are unknown-parent tokens (a set lookup: pandas' string ``isin`` is
    slow on short tables)."""
    chosen = set(tokens)
    return np.fromiter((s in chosen for s in strings), dtype=bool, count=len(strings))


def generation_blocks(generation: np.ndarray) -> list[slice]:
    """Slices of consecutive animals of one generation in a parents-first pedigree: within a
    block no animal is a parent of another, so a recursion over parents runs one vectorised
    step per block (the one place the blocks are found)."""
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], generation, [-2]])))
    return [slice(int(start), int(end)) for start, end in itertools.pairwise(bounds)]


def _as_frame(source: pd.DataFrame | str | PathLike[str]) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    try:
        return pd.read_csv(source, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise PedigreeError(f"Pedigree file not found: {source}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PedigreeError(f"Could not read the pedigree {source}: {exc}") from exc


def _column_names(frame: pd.DataFrame, columns: tuple[str, str, str] | None) -> list[str]:
    if columns is None:
        if frame.shape[1] < 3:
            raise PedigreeError(
                f"A pedigree needs three columns (id, sire, dam); got {list(frame.columns)}."
            )
        return [str(c) for c in frame.columns[:3]]
    columns = tuple(columns)
    if len(columns) != 3:
        raise PedigreeError(f"Pedigree columns must be three names (id, sire, dam); got {columns}.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PedigreeError(
            f"Pedigree column(s) {describe_items(missing)} not found; the file has "
            f"{describe_items(list(map(str, frame.columns)))}. Name them with "
            "columns=(id, sire, dam) or --pedigree-columns id,sire,dam."
        )
    return list(columns)


def _whole_numbers(*columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """``"1145.0"`` → ``"1145"`` in the id, sire and dam columns (None: unknown) where every
    known id of the three is a number: integer ids written through a float, as pandas writes a
    column with missing values. Where any id is text, nothing is changed (``"1.0"`` is then an
    id of its own)."""
    known = pd.Series(np.concatenate([c[c != None] for c in columns]), dtype=object)  # noqa: E711
    if not len(known) or pd.to_numeric(known, errors="coerce").isna().any():
        return columns
    if not known.str.fullmatch(r"\s*[+-]?\d+\.0*\s*").any():
        return columns
    fixed = []
    for column in columns:
        values = pd.Series(column, dtype=object)
        whole = values.notna() & values.str.fullmatch(r"\s*[+-]?\d+\.0*\s*").fillna(False)
        copy = column.copy()
        # the digits before the point, as written (int(float(v)) would round ids above 2⁵³)
        copy[whole.to_numpy(bool)] = [re.sub(r"\.0*$", "", v.strip()) for v in values[whole]]
        fixed.append(copy)
    return tuple(fixed)


def _parent_strings(values: pd.Series, unknown: set[str]) -> np.ndarray:
    """Parent ids as strings, with None for unknown."""
    strings = id_strings(values.to_numpy(dtype=object))
    missing = values.isna().to_numpy() | is_token(strings, unknown)
    return np.where(missing, None, strings)


def _known(parents: np.ndarray) -> np.ndarray:
    """Which parents are given (not None)."""
    return np.array([p is not None for p in parents], dtype=bool)


def _normal_form(identifier: str) -> str:
    """An id without surrounding spaces, case, leading zeros or a trailing ``.0``: the forms
    that one id written two ways differ by."""
    text = identifier.strip().casefold()
    if text.endswith(".0") or (text.count(".") == 1 and text.rstrip("0").endswith(".")):
        text = text.rstrip("0").rstrip(".") or "0"
    return text.lstrip("0") or "0"


def _check_missing_parents(added: list[str], parents: int, ids: list[str], add: bool) -> None:
    """Parents without a row are founders, unless they are listed ids written another way
    (error) or most parents lack a row without ``add`` (error: see the module docstring)."""
    if not added:
        return
    by_form = {_normal_form(i): i for i in ids}
    look_alike = [(a, by_form[_normal_form(a)]) for a in added if _normal_form(a) in by_form]
    if look_alike:
        pairs = ", ".join(f"{a!r} (listed as {b!r})" for a, b in look_alike[:5])
        raise PedigreeError(
            f"{len(look_alike)} parent id(s) have no row of their own but look like listed ids "
            f"written another way: {pairs}{' …' if len(look_alike) > 5 else ''}. Write every "
            "id the same way in the id, sire and dam columns (no spaces, leading zeros or "
            "'.0'); as they are, they would be added as unrelated founders."
        )
    if not add and parents >= MOST_PARENTS_MINIMUM and len(added) > parents / 2:
        raise PedigreeError(
            f"{len(added)} of the {parents} parents match no id of the pedigree "
            f"({describe_items(added)}; ids are like {describe_items(ids[:3])}). If the ids "
            "are written differently in the parent columns, make them the same; if the file "
            "lists offspring only, pass add_missing_parents=True to add each parent as a "
            "founder (in Python to read_pedigree, whose Pedigree then goes to pedigree=)."
        )


def _find_cycle(remaining: np.ndarray, sire: np.ndarray, dam: np.ndarray, ids) -> list[str]:
    """Walk up from an unsorted animal until an animal repeats: that loop is a cycle."""
    remaining_set = set(remaining.tolist())
    start = int(remaining[0])
    path: list[int] = []
    seen: dict[int, int] = {}
    current = start
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        parents = [p for p in (sire[current], dam[current]) if p >= 0 and p in remaining_set]
        current = int(parents[0])
    cycle = [*path[seen[current] :], current]
    return [str(ids[i]) for i in reversed(cycle)]


def _generations(sire: np.ndarray, dam: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Generation numbers, founders first (vectorised Kahn's algorithm, one pass per level)."""
    has_sire, has_dam = sire >= 0, dam >= 0
    sire_at, dam_at = np.maximum(sire, 0), np.maximum(dam, 0)
    generation = np.where(~has_sire & ~has_dam, 0, -1)
    todo = generation < 0
    while todo.any():
        of_sire = np.where(has_sire, generation[sire_at], 0)
        of_dam = np.where(has_dam, generation[dam_at], 0)
        ready = todo & (of_sire >= 0) & (of_dam >= 0)
        if not ready.any():
            cycle = _find_cycle(np.flatnonzero(todo), sire, dam, ids)
            raise PedigreeError(
                "The pedigree has a cycle (an animal is its own ancestor): "
                f"{' → '.join(cycle)} (each a parent of the next). Correct the parents of "
                "these animals."
            )
        generation[ready] = np.maximum(of_sire, of_dam)[ready] + 1
        todo &= ~ready
    return generation


def _indices(position: pd.Index, values: np.ndarray) -> np.ndarray:
    """Positions of parent ids in ``position``; -1 for unknown (None)."""
    known = pd.notna(values)
    out = np.full(len(values), -1, dtype=np.int64)
    out[known] = position.get_indexer(values[known].astype(object))
    return out


def read_pedigree(
    source: pd.DataFrame | str | PathLike[str],
    *,
    columns: tuple[str, str, str] | None = None,
    unknown: Any = None,
    allow_selfing: bool = False,
    add_missing_parents: bool = False,
    warn: bool = True,
) -> Pedigree:
    """Read and check a pedigree, sort it parents-first.

    Parameters
    ----------
    source
        A DataFrame or the path to a CSV file.
    columns
        Names of the id, sire and dam columns (default: the first three columns).
    unknown
        Extra token(s) meaning "unknown parent", besides 0, NA, empty and ".".
    allow_selfing
        Accept an individual used as both sire and dam, selfing (sire = dam) included.
    add_missing_parents
        Add parents without a row as founders even when they are most of the parents (a file
        that lists offspring only); a few are added either way, with a notice.
    warn
        Issue :class:`PedigreeNotice` warnings for added founders and merged duplicates
        (they are in :attr:`Pedigree.notices` either way).

    Returns
    -------
    Pedigree

    Raises
    ------
    PedigreeError
        Conflicting duplicates, cycles, sire used as dam (without ``allow_selfing``), missing
        columns, parents without a row that look like listed ids, most parents without a row
        (without ``add_missing_parents``).
    """
    frame = _as_frame(source)
    id_col, sire_col, dam_col = _column_names(frame, columns)
    tokens = set(UNKNOWN_TOKENS)
    if unknown is not None:
        tokens |= {str(t) for t in np.atleast_1d(unknown)}
    ids_all = id_strings(frame[id_col].to_numpy(dtype=object))
    empty_ids = frame[id_col].isna().to_numpy() | is_token(ids_all, tokens)
    if empty_ids.any():
        raise PedigreeError(
            "The pedigree has rows without an id: "
            f"row(s) {describe_items(np.flatnonzero(empty_ids))}."
        )
    sires_all = _parent_strings(frame[sire_col], tokens)
    dams_all = _parent_strings(frame[dam_col], tokens)
    ids_all, sires_all, dams_all = _whole_numbers(ids_all, sires_all, dams_all)
    # a parent written "0.0" (a float column) is the unknown token "0" once rewritten
    sires_all, dams_all = (
        np.where(_known(parents) & ~is_token(parents.astype(str), tokens), parents, None)
        for parents in (sires_all, dams_all)
    )
    notices: list[str] = []

    table = pd.DataFrame({"id": ids_all, "sire": sires_all, "dam": dams_all}, dtype=object)
    duplicated = table["id"].duplicated(keep=False)
    if duplicated.any():
        groups = table[duplicated].fillna("").groupby("id")[["sire", "dam"]].nunique()
        conflicting = groups[(groups["sire"] > 1) | (groups["dam"] > 1)].index.tolist()
        if conflicting:
            raise PedigreeError(
                f"Duplicated id(s) with conflicting parents: {describe_items(conflicting)}. "
                "Each animal must have one sire and one dam."
            )
        repeated = table["id"].duplicated()
        notices.append(
            f"{int(repeated.sum())} repeated pedigree row(s) with identical parents were "
            f"merged: {describe_items(table['id'][repeated].unique())}."
        )
    first_rows = np.flatnonzero(~table["id"].duplicated().to_numpy())
    table = table.iloc[first_rows].reset_index(drop=True)

    self_parents = table["id"].eq(table["sire"]) | table["id"].eq(table["dam"])
    if self_parents.any():
        named = table["id"][self_parents].tolist()
        raise PedigreeError(
            "The pedigree has a cycle (an animal is its own ancestor): "
            f"{describe_items(named)} list(s) itself as a parent. Correct these rows."
        )

    if not allow_selfing:
        sires_used = pd.Index(table["sire"].dropna().unique())
        both = sorted(sires_used.intersection(pd.Index(table["dam"].dropna().unique())))
        if both:
            raise PedigreeError(
                f"Id(s) used both as sire and as dam: {describe_items(both)}. Correct the "
                "pedigree, or pass allow_selfing=True (--allow-selfing) for a plant pedigree in "
                "which one individual can be both parents."
            )

    parents_in_order = pd.unique(
        np.concatenate([table["sire"].dropna().to_numpy(), table["dam"].dropna().to_numpy()])
    )
    known_ids = set(table["id"].tolist())
    added = [parent for parent in parents_in_order if parent not in known_ids]
    _check_missing_parents(added, len(parents_in_order), table["id"].tolist(), add_missing_parents)
    if added:
        notices.append(
            f"{len(added)} parent(s) without a row of their own were added as founders: "
            f"{describe_items(added)}."
        )
    ids = np.concatenate([np.array(added, dtype=object), table["id"].to_numpy(dtype=object)])
    input_order = np.concatenate([np.full(len(added), -1), first_rows])
    position = pd.Index(ids)
    no_parents = np.full(len(added), None, dtype=object)
    sire = _indices(position, np.concatenate([no_parents, table["sire"].to_numpy(dtype=object)]))
    dam = _indices(position, np.concatenate([no_parents, table["dam"].to_numpy(dtype=object)]))

    generation = _generations(sire, dam, ids)
    order = np.lexsort((np.arange(len(ids)), generation))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    new_sire = np.where(sire[order] >= 0, rank[np.maximum(sire[order], 0)], -1)
    new_dam = np.where(dam[order] >= 0, rank[np.maximum(dam[order], 0)], -1)

    if warn:
        for message in notices:
            warnings.warn(message, PedigreeNotice, stacklevel=2)
    return Pedigree(
        ids=ids[order],
        sire=new_sire.astype(np.int64),
        dam=new_dam.astype(np.int64),
        generation=generation[order],
        input_order=input_order[order].astype(np.int64),
        allow_selfing=allow_selfing,
        notices=tuple(notices),
    )
