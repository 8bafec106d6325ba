r"""BLAS/LAPACK thread limits: one rule for every dense call of the package.

The thread count is part of a fit's floating-point path (a LAPACK call on two threads sums in
another order than on one), and NUTS turns a last-bit difference into different chains. So
the count depends only on what is fixed for a given machine and problem — never on what else
the machine is doing — and the same seed and data give the same draws, idle or busy:

- ``$BAYES_ANIMAL_THREADS`` (or ``--threads``) when given, a number;
- one thread for dense blocks below :data:`SMALL_DENSE` (threads barely pay there, and the
  factorisation of the mixed-model equations calls LAPACK on such blocks thousands of times);
- otherwise the cores this process may use — its CPU affinity, within its cgroup's CPU quota
  (a container limited to 2 CPUs on a 64-core host gets 2) — at most 8;
- inside a sampler's chain group (:func:`thread_budget`), half of that (at least one): the two
  groups may run at once, and they take the same count when they run in turn.

Multi-threaded OpenBLAS spins while it waits for a core: where another job holds a core, two
threads can be several times slower than one (REML on seed_sim 10.9 s against 2.2 s). Set
``BAYES_ANIMAL_THREADS=1`` on a shared machine; or ``BAYES_ANIMAL_THREADS=load`` to count the
cores other processes are busy on (the runnable threads of ``/proc/loadavg``, less this
process's, over a few milliseconds, reused for a second) and leave them alone — faster on a
busy machine, but the draws of one seed can then differ from run to run.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from functools import cache
from pathlib import Path

__all__ = [
    "SMALL_DENSE",
    "available_cores",
    "blas_threads",
    "current_limit",
    "default_threads",
    "group_threads",
    "thread_budget",
]

SMALL_DENSE = 2000
"""Order below which a dense factorisation or inverse runs on one thread."""

_MAX_THREADS = 8


def _own_cgroups() -> tuple[str | None, str | None]:
    """This process's cgroup paths from ``/proc/self/cgroup``: the v2 one (``0::/path``) and
    the v1 ``cpu`` controller's; None where absent."""
    v2 = v1 = None
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if number == "0" and controllers == "":
                v2 = path
            elif "cpu" in controllers.split(","):
                v1 = path
    except (OSError, ValueError):
        pass
    return v2, v1


def _quota_of(text_quota: str, text_period: str) -> float | None:
    """A quota over a period in CPUs; None for none ("max", −1, a zero or bad period)."""
    try:
        quota, period = int(text_quota), int(text_period)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_quota(
    root: Path = CGROUP_ROOT, own: tuple[str | None, str | None] | None = None
) -> float | None:
    """CPUs this process's cgroup may use, or None: no quota (or not Linux). cgroup v2: the
    smallest ``cpu.max`` ("200000 100000"; "max …" for none) from the process's own cgroup
    up to the root (a systemd slice or a Slurm job sets it on a parent); v1: the ``cpu``
    controller's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (−1 for none)."""
    v2, v1 = _own_cgroups() if own is None else own
    quotas = []
    folder = root / (v2 or "/").lstrip("/")
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            quotas.append(None if quota == "max" else _quota_of(quota, period))
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    found = [q for q in quotas if q is not None]
    if found:
        return min(found)
    for folder in (root / "cpu" / (v1 or "/").lstrip("/"), root / "cpu"):
        try:
            return _quota_of(
                (folder / "cpu.cfs_quota_us").read_text(),
                (folder / "cpu.cfs_period_us").read_text(),
            )
        except OSError:
            continue
    return None


@cache
def available_cores() -> int:
    """Cores this process may use: its CPU affinity, within its cgroup's CPU quota (rounded
    up), at least one. Fixed for the process (read once)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


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

    See the module docstring for the rule (it depends on the machine and ``size``, not on the
    load, unless ``BAYES_ANIMAL_THREADS=load``); ``benchmarks/results/reml.md`` measures eigh
    with 1 and 2 threads side by side. A sampler's chain groups take half of it each
    (:func:`group_threads`, in force through :func:`thread_budget`).
    """
    if _BUDGET:
        return _BUDGET[-1]
    value = os.environ.get("BAYES_ANIMAL_THREADS", "").strip()
    by_load = value.lower() == "load"
    if value and not by_load:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(
                f"BAYES_ANIMAL_THREADS={value!r}: give a number of threads, or 'load' to leave "
                "the cores other processes are busy on alone."
            ) from None
    if size is not None and size < SMALL_DENSE:
        return 1
    cores = min(available_cores(), _MAX_THREADS)
    if by_load:
        return max(1, cores - _busy_elsewhere())
    return cores


#: The innermost :func:`thread_budget` in force.
_BUDGET: list[int] = []


def group_threads() -> int:
    """BLAS threads for each of a sampler's two chain groups: half of :func:`default_threads`
    (at least one) — a count of the machine, not of its load, whether the groups run at once
    or in turn."""
    return max(1, default_threads() // 2)


@contextmanager
def thread_budget(threads: int):
    """Inside the block every dense call takes ``threads`` BLAS threads, whatever its size
    would ask for: a sampler's chain groups, which run at once in processes of their own,
    :func:`group_threads` each (two processes of two threads on two cores ran three traits'
    factorisations about four times slower than one thread each), and the same count whether
    the groups run at once or one after the other — so the same draws."""
    _BUDGET.append(int(threads))
    try:
        with blas_threads(int(threads)):
            yield
    finally:
        _BUDGET.pop()


@cache
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_applied: list[int] = []  # the limits set by the blocks we are inside, innermost last


def current_limit() -> int | None:
    """The BLAS limit of the innermost :func:`blas_threads` block this thread is in (None:
    none; the library's own default applies)."""
    return _applied[-1] if _applied else None


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
