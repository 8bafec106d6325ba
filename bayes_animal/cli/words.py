"""Messages of the command line: notes and errors in its own syntax, warnings reported."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path

from ..errors import is_known_noise

#: Python keyword arguments that messages suggest, and the options this command line spells
#: them with (a message written for ``reml()`` reads ``--parameterisation noncentred`` here).
_VALUED = {"parameterisation", "sampler", "method", "engine", "priors", "ordering"}
_FLAGS = {"nearest_pd", "allow_selfing", "maternal_covariance", "add_missing_parents"}


def in_command_line_words(message: str) -> str:
    """A message's suggestions in this command line's syntax: ``parameterisation='noncentred'``
    → ``--parameterisation noncentred``, ``nearest_pd=True`` → ``--nearest-pd``,
    ``animal=<column>`` → ``--animal <column>``, ``priors='flat'`` → ``--prior flat``; other
    text is left as it is."""
    import re

    def valued(match: re.Match) -> str:
        name = "prior" if match[1] == "priors" else match[1]
        return f"--{name.replace('_', '-')} {match[2]}"

    message = re.sub(rf"\b({'|'.join(sorted(_VALUED))})='([\w.-]+)'", valued, message)
    message = re.sub(
        rf"\b({'|'.join(sorted(_FLAGS))})=True", lambda m: f"--{m[1].replace('_', '-')}", message
    )
    message = re.sub(r"\b(animal|effect)=<(\w+)>", r"--\1 <\2>", message)
    # a suggestion given twice ("x=True (--x)") reads once
    return re.sub(r"(--[\w-]+(?: [\w.<>-]+)?) \(\1\)", r"\1", message)


def _notice(message: str) -> None:
    print(
        textwrap.fill(f"note: {in_command_line_words(message)}", width=100, break_on_hyphens=False),
        file=sys.stderr,
    )


def _report_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Print every caught warning but the known noise: ours (notices about the data and the
    fit) as ``note:``, another library's with its category and module, so nothing a user
    needs is dropped."""
    for warning in caught:
        if is_known_noise(warning):
            continue
        if issubclass(warning.category, UserWarning) and "bayes_animal" in (
            warning.category.__module__ or ""
        ):
            _notice(str(warning.message))
        else:
            where = Path(warning.filename).name
            _notice(f"{warning.category.__name__} from {where}:{warning.lineno}: {warning.message}")
