"""The package's exceptions: one root, a few kinds, each message naming what is wrong and the fix.

Every exception raised on purpose by bayes_animal derives from :class:`BayesAnimalError`, so a
caller (or the command line) can catch them all with one ``except``. The subclasses also derive
from :class:`ValueError` where the cause is a bad input, so generic code that catches
``ValueError`` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ROWS",
    "BayesAnimalError",
    "DataError",
    "FormulaError",
    "RelationshipError",
    "SingularEquationsError",
    "describe_items",
]


#: How messages name records: 1-based data rows (a DataFrame with an index of its own is named
#: by its index labels instead: "data row(s) index 'b'").
ROWS = "data row(s)"


class BayesAnimalError(Exception):
    """Root of every error bayes_animal raises on purpose."""


class DataError(BayesAnimalError, ValueError):
    """The phenotype data are unusable as given (missing ids, NaN covariates, duplicates …)."""


class FormulaError(DataError):
    """The model formula cannot be built from the data (unknown column, collinear design …)."""


class RelationshipError(BayesAnimalError, ValueError):
    """The relationship matrix is unusable (not square, not symmetric, not PSD, bad ids …)."""


class SingularEquationsError(BayesAnimalError, ValueError):
    """The mixed-model equations are singular in floating point at valid variances: the model
    cannot separate one unknown (a fixed-effect column, a level of a random effect) from the
    others. The message names it and the usual causes (a fixed effect confounded with a
    random one, nearly collinear covariates, a level with no information of its own, a
    singular relationship matrix)."""


def describe_items(items: Iterable[object], *, limit: int = 10) -> str:
    """Format offending ids or rows for an error message: the first ``limit`` and a count.

    Parameters
    ----------
    items
        The offending values, in the order they should be shown.
    limit
        How many to show before summarising the rest as "… and N more".

    Returns
    -------
    str
        For example ``"'a', 'b', 'c' … and 12 more (15 in all)"``.
    """
    values = list(items)
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit])
    if len(values) > limit:
        shown += f" … and {len(values) - limit} more ({len(values)} in all)"
    return shown


#: Warnings that are known noise to a user: a library's deprecation notices to its own callers
#: (Python's default filters hide them outside ``__main__`` too). A FutureWarning is meant for
#: end users (Python's documentation) and is shown.
NOISE_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning)


def is_known_noise(warning) -> bool:
    """A caught :class:`warnings.WarningMessage` that is a library's deprecation notice
    (:data:`NOISE_CATEGORIES`) raised from a file outside
    ``bayes_animal``; the package's own warnings are never noise. The one rule for what the
    command line and the batches leave out."""
    from pathlib import Path

    package = Path(__file__).resolve().parent
    ours = Path(warning.filename).resolve().is_relative_to(package)
    return issubclass(warning.category, NOISE_CATEGORIES) and not ours
