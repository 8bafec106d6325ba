"""The entry point."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence

from ..errors import BayesAnimalError
from .options import _parser
from .process import _as_process_of_its_own, _before_exit
from .words import in_command_line_words


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayes-animal`` console script; returns the exit status.

    Without ``argv`` (the arguments of the command line) the process is taken to be the
    command's own and tuned for a short life (:func:`_as_process_of_its_own`,
    :func:`_before_exit`); a caller that runs a command inside its own process (a test, a
    notebook) passes ``argv`` and keeps Python's settings.
    """
    args = _parser().parse_args(argv)
    if argv is None:
        _as_process_of_its_own(args)
    if getattr(args, "quiet", False):
        args.progress = False
        import logging

        # the samplers' INFO messages ("Sequential sampling …", "NUTS: […]", timings); PyMC
        # sets its logger's level when it is imported, so the switch is the process-wide one
        logging.disable(logging.INFO)
    try:
        status = args.handler(args)
    except BayesAnimalError as exc:
        print(
            textwrap.fill(
                f"error: {in_command_line_words(str(exc))}", width=100, break_on_hyphens=False
            ),
            file=sys.stderr,
        )
        status = 2
    if argv is None:  # not after an unexpected exception: its traceback is what matters then
        _before_exit()
    return status
