r"""Reading an lme4-style model formula: response, fixed terms, random terms, column names.

The formula is split by the package before anything reaches formulaic, which cannot read
random terms (``|``) and mis-reports the columns of backticked names (it lists ``Obesity``
for `` `Obesity.BMI` ``). What is done here:

- the two sides are split at the top-level ``~``; the right-hand side into its top-level
  ``+`` terms, respecting parentheses, backticks and quotes;
- a term ``( … | … )`` is a random term; everything else is the fixed part, which formulaic
  builds;
- the columns a piece of formula refers to are found by :func:`column_references`:
  backticked names (`` `Obesity.BMI` ``) and bare names, dotted ones included (R's
  ``Obesity.BMI``), that are columns of the data; function names (``C(``, ``np.log(``) and
  strings are skipped. A bare name that is not a column is reported by
  :func:`unknown_names`, with the advice to quote it when it looks like a dotted column.

This module imports nothing beyond the standard library and :mod:`bayes_animal.errors`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from ..errors import FormulaError, describe_items

__all__ = [
    "FormulaParts",
    "column_references",
    "response_columns",
    "split_formula",
    "split_terms",
    "strip_backticks",
    "unknown_names",
    "unwrap_diag",
]

_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
#: Names formulaic understands without a data column (constants, contrasts, numpy).
_KNOWN = {"True", "False", "None", "pi", "np", "numpy", "math", "Treatment", "Sum", "Poly"}


@dataclass(frozen=True)
class FormulaParts:
    """A formula split into its pieces, as written.

    Attributes
    ----------
    formula
        The whole formula.
    response
        The left-hand side (may be empty for formulas without a response).
    fixed
        The right-hand side without its random terms (``"1"`` when nothing is left).
    random
        The random terms, each as written, in order (``"(1 | byear)"``).
    """

    formula: str
    response: str
    fixed: str
    random: tuple[str, ...]

    @property
    def fixed_formula(self) -> str:
        """``response ~ fixed`` (or ``~ fixed`` without a response), for formulaic."""
        return f"{self.response} ~ {self.fixed}" if self.response else f"~ {self.fixed}"


def _scan(text: str):
    """Yield (index, character, depth, quoted) for each character of ``text``."""
    depth = 0
    quote: str | None = None
    for index, char in enumerate(text):
        if quote is not None:
            yield index, char, depth, True
            if char == quote:
                quote = None
            continue
        if char in "`'\"":
            quote = char
            yield index, char, depth, True
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        yield index, char, depth, False


def split_terms(text: str, separator: str = "+") -> list[str]:
    """Split at top-level ``separator`` characters (outside parentheses, backticks, quotes)."""
    pieces: list[str] = []
    start = 0
    for index, char, depth, quoted in _scan(text):
        if char == separator and depth == 0 and not quoted:
            pieces.append(text[start:index])
            start = index + 1
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces]


_DIAG = re.compile(r"^diag\s*\((.*)\)$", re.DOTALL)
_CBIND = re.compile(r"^cbind\s*\((.*)\)$", re.DOTALL)


def unwrap_diag(term: str) -> tuple[str, bool]:
    """``diag(1 | g)`` → (``(1 | g)``, True): a term independent across traits (glmmTMB's
    spelling, ASReml's ``idh``); any other term → (term, False)."""
    match = _DIAG.match(term.strip())
    if match is None:
        return term, False
    inner = match.group(1).strip()
    if re.match(r"^ide\s*\(", inner) or inner.startswith("("):
        return inner, True  # diag(ide(animal)), diag((1 | g))
    return f"({inner})", True


def _is_random(term: str) -> bool:
    term, diagonal = unwrap_diag(term)
    if diagonal and re.match(r"^ide\s*\(", term):
        return True
    if not (term.startswith("(") and term.endswith(")")):
        return False
    return len(split_terms(term[1:-1], "|")) == 2


def response_columns(response: str, *, formula: str) -> tuple[str, ...]:
    """The trait columns of a left-hand side: ``cbind(bwt, tarsus)`` → (``bwt``, ``tarsus``)
    (MCMCglmm's and brms's spelling of several traits), any other → itself.

    Raises
    ------
    FormulaError
        ``cbind()`` with fewer than two columns, or a column named twice.
    """
    match = _CBIND.match(response.strip())
    if match is None:
        return (strip_backticks(response),) if response.strip() else ()
    columns = tuple(strip_backticks(c) for c in split_terms(match.group(1), ","))
    if len(columns) < 2 or not all(columns):
        raise FormulaError(
            f"cbind() in {formula!r} needs two or more trait columns, like cbind(bwt, tarsus)."
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise FormulaError(
            f"cbind() in {formula!r} names {describe_items(repeated)} more than once; each "
            "trait is one column, once."
        )
    return columns


def split_formula(formula: str) -> FormulaParts:
    """Split ``formula`` into response, fixed part and random terms.

    Raises
    ------
    FormulaError
        No ``~``, several ``~``, unbalanced parentheses or backticks, or a ``|`` outside a
        parenthesised random term.
    """
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError(
            f"A formula must be a non-empty string, like 'y ~ 1 + x'; got {formula!r}."
        )
    depths = [depth for _, _, depth, _ in _scan(formula)]
    if (depths and (min(depths) < 0 or depths[-1] != 0)) or formula.count("`") % 2:
        raise FormulaError(f"The formula {formula!r} has unbalanced parentheses or backticks.")
    sides = split_terms(formula, "~")
    if len(sides) != 2:
        raise FormulaError(
            f"The formula {formula!r} needs exactly one '~' between the response and the terms."
        )
    response, rhs = sides
    fixed: list[str] = []
    random: list[str] = []
    for term in split_terms(rhs, "+"):
        if not term:
            continue
        if _is_random(term):
            random.append(term)
        elif any(c == "|" and not q for _, c, _, q in _scan(term)):
            raise FormulaError(
                f"The term {term!r} of {formula!r} uses '|' outside a random term; write random "
                "terms in parentheses, like (1 | byear)."
            )
        else:
            fixed.append(term)
    return FormulaParts(formula, response, " + ".join(fixed) or "1", tuple(random))


def strip_backticks(name: str) -> str:
    """`` `a.b` `` → ``a.b``; other names unchanged."""
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == "`":
        return name[1:-1]
    return name


def _bare_names(text: str) -> list[tuple[str, bool]]:
    """(name, called) for every name outside quotes, backticked names included, in order of
    appearance; ``called``: followed by '(' (a function). Keyword arguments' names are not
    names of columns and are left out."""
    masked = list(text)
    found: list[tuple[int, str, bool]] = []
    start = None
    for index, char, _, quoted in _scan(text):
        if quoted:
            masked[index] = " "
            if char == "`":
                if start is None:
                    start = index
                else:
                    found.append((start, text[start + 1 : index], False))
                    start = None
    plain = "".join(masked)
    for match in _NAME.finditer(plain):
        name = match.group()
        if name.strip(".") == "" or name[0].isdigit():
            continue
        rest = plain[match.end() :].lstrip()
        if rest.startswith("=") and not rest.startswith("=="):
            continue  # a keyword argument's name (C(sex, levels=[…])), not a column
        found.append((match.start(), name, rest.startswith("(")))
    return [(name, called) for _, name, called in sorted(found)]


def column_references(text: str, columns: Collection[str]) -> list[str]:
    """The data columns that a piece of formula uses, in order of first appearance.

    Backticked names and bare names (dots allowed) that are columns count; called names
    (functions) do not.
    """
    found: list[str] = []
    for name, called in _bare_names(text):
        if not called and name in columns and name not in found:
            found.append(name)
    return found


def unknown_names(text: str, columns: Collection[str], *, formula: str) -> None:
    """Raise :class:`FormulaError` for bare names in ``text`` that are not columns of the data.

    When an unknown name is the start of a dotted column name (``Obesity`` of
    ``Obesity.BMI``), or a dotted name whose pieces are not columns, or the words of a column
    name with spaces (``litter size``), the message says to quote the column in backticks.
    """
    unknown: list[str] = []
    for name, called in _bare_names(text):
        if called or name in columns or name.split(".")[0] in _KNOWN or name in _KNOWN:
            continue
        if name not in unknown:
            unknown.append(name)
    if not unknown:
        return
    stems = {u.split(".")[0] for u in unknown}
    dotted = [c for c in columns if "." in c and c.split(".")[0] in stems]
    spaced = [
        c for c in columns if " " in c and all(word in unknown for word in c.split())
    ]  # "litter size" read as the names litter and size
    advice = (
        f" Column names with dots must be quoted in backticks, e.g. `{dotted[0]}`."
        if dotted
        else ""
    )
    if spaced:
        advice += (
            f" A column name with spaces must be quoted in backticks: `{spaced[0]}`"
            + (f" (and {', '.join(f'`{c}`' for c in spaced[1:])})" if spaced[1:] else "")
            + "."
        )
    raise FormulaError(
        f"The formula {formula!r} uses column(s) {describe_items(unknown)} that are not in the "
        f"data.{advice} Available columns: {describe_items(list(columns), limit=30)}."
    )
