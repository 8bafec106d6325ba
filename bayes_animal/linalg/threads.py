r"""BLAS/LAPACK thread limits: one rule for every dense call of the package.

Multi-threaded OpenBLAS spins while it waits for a core. On a small machine where another
process holds a core, a second BLAS thread that does not get one makes a call many times
slower than one thread (measured: REML on seed_sim 10.9 s with two threads against 2.2 s with
one while another process was busy; the sparse engine's 600-wide dense block 100× slower).
So the limit is always set explicitly:

- ``$BAYES_ANIMAL_THREADS`` (or ``--threads``) when given;
- one thread for dense blocks below :data:`SMALL_DENSE` (threads barely pay there, and the
  factorisation of the mixed-model equations calls LAPACK on such blocks thousands of times);
- otherwise the cores this process may use minus the ones other processes are busy on (the
  runnable threads from ``/proc/loadavg``, less this process's, over a few milliseconds, the
  count reused for a second), at least one and at most 8. (The one-minute load average would
  count this process's own recent work: a fit called after a busy minute would give itself
  one core.)
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from functools import cache

__all__ = ["SMALL_DENSE", "available_cores", "blas_threads", "default_threads"]

SMALL_DENSE = 2000
"""Order below which a dense factorisation or inverse runs on one thread."""

_MAX_THREADS = 8


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _running_now() -> int | None:
    """Runnable threads on the machine at this instant (``/proc/loadavg``), or None."""
    try:
        with open("/proc/loadavg", encoding="ascii") as handle:
            return int(handle.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def _running_here() -> int:
    """Runnable threads of this process (``/proc/self/task``; at least this one)."""
    count = 0
    try:
        for task in os.scandir("/proc/self/task"):
            try:
                with open(f"{task.path}/stat", encoding="ascii") as handle:
                    count += handle.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:
                continue
    except OSError:
        return 1
    return max(count, 1)


LOOKS = 8
"""Most looks at the runnable threads before a thread count is chosen."""
LOOK_INTERVAL = 0.0005
"""Seconds between two looks."""
REUSE_SECONDS = 1.0
"""How long a count of the cores busy elsewhere is reused: the sparse engine's dense blocks and
the conditional draws ask for a thread count thousands of times in a fit, and on a busy
machine each count takes all the looks (3.5 ms)."""

_recent: dict[str, float] = {}  # the last count of busy cores ("busy") and when ("at")


def _busy_elsewhere() -> int:
    """:func:`_looked_busy_elsewhere`, reused for :data:`REUSE_SECONDS`."""
    now = time.monotonic()
    if _recent and now - _recent["at"] < REUSE_SECONDS:
        return int(_recent["busy"])
    busy = _looked_busy_elsewhere()
    _recent.update(busy=busy, at=time.monotonic())
    return busy


def _looked_busy_elsewhere() -> int:
    """Cores other processes are busy on: the runnable threads now less this process's own,
    the least of up to :data:`LOOKS` looks :data:`LOOK_INTERVAL` apart, stopping at the first
    that sees none; the one-minute load average where the instantaneous count is not
    available.

    A process busy on a core is runnable at every look. Work that is not (measured on the
    2-core machines here: one more runnable task than /proc shows, for 1–3 ms at a time, at
    the moment ``reml`` has read its matrix) is not counted: three looks within microseconds
    saw it and ran the eigendecomposition on one thread in most runs, 1.5–2× slower. An idle
    machine costs one look; a busy one 3.5 ms.
    """
    least = None
    for look in range(LOOKS):
        if look:
            time.sleep(LOOK_INTERVAL)
        running = _running_now()
        if running is None:
            break
        busy = max(0, running - _running_here())
        least = busy if least is None else min(least, busy)
        if least == 0:
            return 0
    if least is not None:
        return least
    try:
        return int(os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - no load average
        return 0


def default_threads(size: int | None = None) -> int:
    """BLAS threads for a dense call on a matrix of order ``size`` (None: a large one).

    See the module docstring for the rule; ``benchmarks/results/reml.md`` measures eigh with 1
    and 2 threads side by side. Samplers that run chains in parallel set their own limit of
    one thread per chain.
    """
    value = os.environ.get("BAYES_ANIMAL_THREADS")
    if value is not None:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    if size is not None and size < SMALL_DENSE:
        return 1
    cores = available_cores()
    return max(1, min(cores - _busy_elsewhere(), cores, _MAX_THREADS))


@cache
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_applied: list[int] = []  # the limits set by the blocks we are inside, innermost last


@contextmanager
def blas_threads(threads: int | None = None, *, size: int | None = None):
    """Limit BLAS/LAPACK threads inside the block; ``None`` takes :func:`default_threads`.

    The controller is found once per process, so entering the block costs about 20 µs; a
    block inside another with the same limit costs nothing (the sparse likelihood opens one
    per gradient and its LAPACK calls one each).
    """
    limit = threads or default_threads(size)
    if _applied and _applied[-1] == limit:
        yield
        return
    with _controller().limit(limits=limit, user_api="blas"):
        _applied.append(limit)
        try:
            yield
        finally:
            _applied.pop()
