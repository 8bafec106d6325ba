"""A worker process for :func:`bayes_animal.execution.run_beside`
(``python -m bayes_animal.worker``).

Arguments name modules to import first (a worker started early imports what its work needs
while the parent is busy); then it reads one pickled zero-argument callable from stdin, calls
it, and writes back on its stdout the pickle of ``("ok", result)`` or ``("error", exception,
traceback text)``. Whatever the work prints goes to stderr (the channel stays clean). A fresh
interpreter, not a fork: no thread, lock or open connection of the parent is inherited, and
the caller's ``__main__`` is never imported (no ``if __name__ == "__main__"`` guard is needed,
on any platform).
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import traceback


def main() -> int:
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the work's prints go to stderr
    preloaded = None
    try:
        for name in sys.argv[1:]:
            importlib.import_module(name)
    except BaseException as exc:  # reported with the work's answer
        preloaded = exc
    payload = sys.stdin.buffer.read()
    try:
        if preloaded is not None:
            raise preloaded
        if not payload:  # the parent did not need this worker after all
            return 0
        work = pickle.loads(payload)
        answer = ("ok", work())
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # every failure goes back to the parent
        text = traceback.format_exc()
        try:
            data = pickle.dumps(("error", exc, text), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an exception that does not pickle: its text
            data = pickle.dumps(("error", RuntimeError(repr(exc)), text))
    with channel:
        channel.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
