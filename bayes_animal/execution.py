"""Where independent tasks run: this process, local worker processes, or a Dask cluster.

:func:`run_tasks` calls ``function(work, task, *extra)`` for every task and hands each result
to ``collect`` as it arrives (so results can be written as they finish). ``work`` is what
every task shares (a decomposition, the data): it reaches each local worker once (pickled
once per worker) and each Dask worker once (scattered, replicated to every
worker, so that a worker's loss does not lose it). Tasks run with one BLAS thread each (the
task functions set it): on a small machine a second thread per process only spins.

A Dask worker that dies mid-run takes its running tasks with it; the scheduler runs them
again on the workers left (``distributed``'s allowed failures), and the batch completes.

:func:`run_beside` is for a few pieces of one job that should overlap on a free core (a
sampler's chain groups, a command's figures): the first here, the others in worker processes
of their own (fresh interpreters, :mod:`bayes_animal.worker`) that get their work and send
their results back pickled. Local batches (:func:`run_tasks`) use a forkserver (Linux) or
spawn pool, whose workers import the caller's main module: a script that runs a batch with
``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from .errors import BayesAnimalError
from .linalg.threads import available_cores

__all__ = ["Worker", "can_start_workers", "default_workers", "run_beside", "run_tasks"]

_WORK: Any = None


def can_start_workers() -> bool:
    """Whether :func:`run_beside` can start worker processes here (an interpreter to run)."""
    return bool(sys.executable)


def _worker_environment() -> dict[str, str]:
    """The worker's environment: this one, with this process's module path (so that the work
    unpickles wherever its functions were imported from)."""
    paths = [p for p in sys.path if p]
    previous = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, *([previous] if previous else [])]),
    }


class Worker:
    """A worker process (:mod:`bayes_animal.worker`) for one piece of work: started now, with
    ``preload`` (module names) imported while this process goes on; :meth:`submit` hands it
    the work pickled, :meth:`result` waits for the answer. A worker given no work ends when
    :meth:`stop` (or the ``with`` block's end) closes it."""

    def __init__(self, preload: Sequence[str] = ()) -> None:
        import subprocess

        from .linalg.threads import current_limit
        from .worker import BLAS_LIMIT_VARIABLE

        environment = {**_worker_environment(), "MPLBACKEND": "Agg"}  # it never shows a window
        limit = current_limit()
        if limit is not None:  # the limit this process works under, kept in the worker
            environment[BLAS_LIMIT_VARIABLE] = str(limit)
        # -P: the working directory is not put first on the worker's path, so it imports the
        # same bayes_animal as this process (PYTHONPATH above)
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "bayes_animal.worker", *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
        )
        self._sender = None

    def submit(self, work: Callable[[], Any]) -> None:
        """Send the work (pickled here; written by a thread, so that a payload larger than a
        pipe's buffer does not wait for the worker to read it)."""
        import threading

        payload = pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)

        def send() -> None:
            try:
                with self.process.stdin:
                    self.process.stdin.write(payload)
            except (BrokenPipeError, OSError):  # the worker ended: its status says why
                pass

        self._sender = threading.Thread(target=send, daemon=True)
        self._sender.start()

    def result(self, index: int = 1) -> Any:
        """The work's result, or its error raised here (see :func:`run_beside`)."""
        answer = self.process.stdout.read()
        self.process.stdout.close()
        status = self.process.wait()
        if self._sender is not None:
            self._sender.join(timeout=1)
        return _answer(answer, status, index)

    def stop(self) -> None:
        """End the worker (killed if it is still running: its work, or its imports, are no
        longer wanted) and wait for it."""
        process = self.process
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def run_beside(
    works: Sequence[Callable[[], Any]],
    *,
    parallel: bool,
    workers: Sequence[Worker] | None = None,
) -> list[Any]:
    """Each ``works[i]()``'s result: ``works[0]`` here while each of ``works[1:]`` runs at the
    same time in a worker process of its own (:class:`Worker`; ``workers``: ones started
    earlier, else started now), or all here one after the other when not ``parallel``.

    The workers are fresh interpreters: nothing of this process — its BLAS, Arrow or sampler
    threads, their locks, a notebook's connection — is inherited, which is what makes this
    safe where a fork of a multi-threaded process is not, and the same on Linux, macOS and
    Windows; the caller's ``__main__`` is not imported. ``works[1:]`` must pickle
    (module-level functions, :func:`functools.partial`); their results come back pickled.

    Raises
    ------
    Exception
        A worker's own exception, raised here with its traceback as a note; a worker that ends
        without an answer (killed, out of memory) is a :class:`BayesAnimalError` with its exit
        status. When this process is interrupted or ``works[0]`` raises, the workers are killed
        and waited for before the error goes on.
    """
    if not parallel or len(works) < 2 or not can_start_workers():
        for worker in workers or ():
            worker.stop()
        return [work() for work in works]
    started = list(workers or ())
    try:
        started += [Worker() for _ in range(len(works) - 1 - len(started))]
        for worker, work in zip(started, works[1:], strict=True):
            worker.submit(work)
        results = [works[0]()]
        results += [worker.result(index) for index, worker in enumerate(started, start=1)]
    finally:  # every worker done, or (on an error here) stopped and waited for
        for worker in started:
            worker.stop()
    return results


def _answer(data: bytes, status: int, index: int) -> Any:
    """The result in a worker's answer, or its error raised here."""
    if not data:
        raise BayesAnimalError(
            f"Worker process {index} ended with exit status {status} and no answer (killed, "
            "or out of memory?). Run again with BAYES_ANIMAL_THREADS=1 (no worker processes) "
            "to see the error in this process."
        )
    import warnings

    kind, *rest = pickle.loads(data)
    for message, category, filename, lineno in rest[-1]:  # the worker's warnings, re-issued
        warnings.warn_explicit(message, category, filename, lineno)  # under this one's filters
    if kind == "ok":
        return rest[0]
    exception, text, _ = rest
    exception.add_note(f"(raised in worker process {index}; its traceback:)\n{text.rstrip()}")
    raise exception


def default_workers() -> int:
    """Local worker processes by default: one per core this process may use."""
    return available_cores()


def _install(work: Any) -> None:
    global _WORK
    _WORK = work


def _call(function: Callable, task: Any, extra: tuple) -> Any:
    return function(_WORK, task, *extra)


def run_tasks(
    function: Callable,
    work: Any,
    tasks: Sequence[Any],
    collect: Callable[[Any], None],
    *,
    extra: tuple = (),
    workers: int | None = None,
    scheduler: Any = None,
    parallel_above: int = 1,
) -> None:
    """Run every task and collect the results as they finish.

    Parameters
    ----------
    function
        ``function(work, task, *extra) -> result`` (a module-level function: it is pickled).
    work
        Shared by every task.
    tasks
        One item per task (each a list of indices here).
    collect
        Called in this process with each result, in the order they finish.
    workers
        Local processes (default :func:`default_workers`); 1 runs the tasks here.
    scheduler
        A ``dask.distributed.Client`` or a scheduler address (then ``workers`` is ignored).
    parallel_above
        Run in this process when there are at most this many items in all (starting worker
        processes costs more than such work).
    """
    if scheduler is not None:
        _run_on_dask(function, work, tasks, collect, extra, scheduler)
        return
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise BayesAnimalError(f"workers must be at least 1; got {workers}.")
    items = sum(len(task) for task in tasks)
    if workers == 1 or len(tasks) <= 1 or items <= parallel_above:
        for task in tasks:
            collect(function(work, task, *extra))
        return
    # forkserver: workers forked from a clean single-threaded server (a fork of this process,
    # which runs BLAS and numba threads, could deadlock); the shared work is pickled once
    # per worker
    method = "forkserver" if sys.platform == "linux" else "spawn"
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=multiprocessing.get_context(method),
        initializer=_install,
        initargs=(work,),
    ) as pool:
        futures = [pool.submit(_call, function, task, extra) for task in tasks]
        try:
            for future in as_completed(futures):
                collect(future.result())
        except BaseException:  # a task (or collect) failed: the tasks not started are not run
            for future in futures:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _run_on_dask(function, work, tasks, collect, extra, scheduler) -> None:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError as exc:
        raise BayesAnimalError(
            "Running on a Dask cluster needs dask.distributed: pip install 'bayes_animal[dask]'."
        ) from exc
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        [shared] = client.scatter([work], broadcast=True)
        futures = [
            client.submit(function, shared, task, *extra, pure=False, retries=1) for task in tasks
        ]
        try:
            for future in dask_completed(futures):
                collect(future.result())
        except BaseException:  # the batch stops: the tasks still pending are cancelled
            client.cancel(futures)
            raise
    finally:
        if client is not scheduler:
            client.close()
