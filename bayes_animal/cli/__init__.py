"""The ``bayes-animal`` command line: ``reml``, ``fit``, ``rank``, ``relmat``, ``simulate``,
``demo`` — one module per command, with the parser (``options``), the messages (``words``),
what the commands read (``inputs``), the many-traits runs (``traits``), the process settings
(``process``) and the entry point (``main``).

Errors raised on purpose (:class:`bayes_animal.errors.BayesAnimalError`) are printed as one
paragraph on stderr with exit status 2 and no traceback. Notices (dropped records) go to
stderr, so that ``--json`` leaves only the JSON object on stdout. PyMC is imported only by
``fit`` and ``demo``.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
