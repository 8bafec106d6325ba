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

#: The parent passes its BLAS thread limit here (the worker keeps it for its life).
BLAS_LIMIT_VARIABLE = "BAYES_ANIMAL_WORKER_BLAS_THREADS"


def _watch_parent(parent: int) -> None:
    """End this process when its parent is gone (killed, say): a worker never outlives it."""
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _portable(caught) -> list[tuple]:
    """Each caught warning as (message, category, filename, lineno), its category replaced by
    UserWarning where it does not pickle."""
    out = []
    for warning in caught:
        category = warning.category
        try:
            pickle.loads(pickle.dumps(category))
        except Exception:  # a class defined where the parent cannot import it
            category = UserWarning
        out.append((str(warning.message), category, warning.filename, warning.lineno))
    return out


def _answer(result, error: tuple | None, caught) -> bytes:
    """The pickled answer — the result, or ``error`` (the exception and its traceback text) —
    checked to unpickle (else the error's text in a RuntimeError)."""
    if error is not None:
        answer = ("error", *error, _portable(caught))
    else:
        answer = ("ok", result, _portable(caught))
    try:
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)  # an exception that pickles but does not unpickle is caught here
        return data
    except Exception as exc:
        if answer[0] == "ok":
            text = traceback.format_exc()
            error = RuntimeError(f"the result could not be sent back: {exc!r}")
        else:
            text, error = answer[2], RuntimeError(repr(answer[1]))
        return pickle.dumps(("error", error, text, []), protocol=pickle.HIGHEST_PROTOCOL)


def main() -> int:
    import warnings

    _watch_parent(os.getppid())
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the work's prints go to stderr
    preloaded = None
    try:
        limit = os.environ.get(BLAS_LIMIT_VARIABLE)
        if limit:
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(limit), user_api="blas")
        for name in sys.argv[1:]:
            importlib.import_module(name)
        payload = sys.stdin.buffer.read()
    except KeyboardInterrupt:  # the parent was interrupted before it needed this worker
        return 130
    except BaseException as exc:  # reported with the work's answer
        preloaded, payload = exc, b"-"
    if not payload:  # the parent did not need this worker after all
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the parent's filters decide when it re-issues them
        result = error = None
        try:
            if preloaded is not None:
                raise preloaded
            result = pickle.loads(payload)()
        except BaseException as exc:  # every failure goes back to the parent
            error = (exc, traceback.format_exc())
    data = _answer(result, error, caught)
    with channel:
        channel.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
