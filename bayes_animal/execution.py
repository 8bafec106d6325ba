"""Where independent tasks run: this process, local worker processes, or a Dask cluster.

:func:`run_tasks` calls ``function(work, task, *extra)`` for every task and hands each result
to ``collect`` as it arrives (so results can be written as they finish). ``work`` is what
every task shares (a decomposition, the data): it reaches each local worker once (pickled
once per worker) and each Dask worker once (scattered, replicated to every
worker, so that a worker's loss does not lose it). Tasks run with one BLAS thread each (the
task functions set it): on a small machine a second thread per process only spins.

A Dask worker that dies mid-run takes its running tasks with it; the scheduler runs them
again on the workers left (``distributed``'s allowed failures), and the batch completes.

:func:`run_forked` is for a few pieces of one job that should overlap on a free core (a
sampler's chain groups, a command's figures): the first here, the others in forked children
that inherit everything and send their results back pickled.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from .errors import BayesAnimalError
from .linalg.threads import available_cores

__all__ = ["can_fork", "default_workers", "run_forked", "run_tasks"]

_WORK: Any = None


def can_fork() -> bool:
    """Whether :func:`run_forked` can use children here (Linux: fork copies nothing up front)."""
    return sys.platform.startswith("linux")


def run_forked(works: Sequence[Callable[[], Any]], *, parallel: bool) -> list[Any]:
    """Each ``works[i]()``'s result: ``works[0]`` here while ``works[1:]`` run at the same
    time in forked children (their results pickled back through a pipe), or all here one
    after the other when not ``parallel`` (or where :func:`can_fork` says no).

    A child that fails (an exception, a result that cannot be pickled) is run again here, so
    that its real error is raised in this process, once every child has been read and reaped;
    when this process is interrupted or ``works[0]`` raises, the children still running are
    killed and reaped before the error goes on. The children inherit everything and use
    none of the parent's other threads (BLAS, a sampler's idle workers), which is what makes
    forking a multi-threaded process safe for this kind of work; they leave by ``os._exit``.
    """
    if not parallel or len(works) < 2 or not can_fork():
        return [work() for work in works]
    children = []
    for index in range(1, len(works)):
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork()"
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its results are checked by the tests
            os.close(read)
            code = 1
            try:
                with os.fdopen(write, "wb") as handle:
                    pickle.dump(works[index](), handle)
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        children.append((index, pid, read))
    pending = {index: (pid, read) for index, pid, read in children}
    payloads: dict[int, bytes] = {}
    try:
        results = {0: works[0]()}
        for index, pid, read in children:  # every child read and reaped before any re-run
            with os.fdopen(read, "rb") as handle:
                payload = handle.read()
            del pending[index]
            _, status = os.waitpid(pid, 0)
            payloads[index] = payload if os.waitstatus_to_exitcode(status) == 0 else b""
    except BaseException:  # the children's work is no longer wanted: stop them, then raise
        for pid, read in pending.values():
            os.close(read)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    for index, payload in payloads.items():
        results[index] = pickle.loads(payload) if payload else works[index]()
    return [results[i] for i in range(len(works))]


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
