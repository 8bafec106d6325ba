"""Settings of a command-line process of its own (not made in a caller's process)."""

from __future__ import annotations

import argparse
import sys


def _without_dask() -> None:
    """Mark dask absent for a command that never uses it. Where dask is installed, xarray
    imports ``dask.array`` when it builds a DataArray and ``dask.distributed`` when it writes
    netCDF, only to ask whether a dask array or scheduler is in play: 0.8 s of a 5 s ``fit``.
    ``importlib.util.find_spec`` answers None for a module whose ``sys.modules`` entry is None,
    so xarray sees no dask (decided before xarray is first imported). Only in the console
    script's own process; ``BAYES_ANIMAL_KEEP_DASK=1`` keeps dask visible there too."""
    import os

    if os.environ.get("BAYES_ANIMAL_KEEP_DASK") == "1":
        return
    if "dask" not in sys.modules and "xarray" not in sys.modules:
        sys.modules["dask"] = None  # type: ignore[assignment]


#: Allocations between two collections of the cycle collector's youngest generation in a
#: command-line process of its own (Python's default: 700).
YOUNG_GENERATION_THRESHOLD = 50_000


def _as_process_of_its_own(args: argparse.Namespace) -> None:
    """Settings for a short command-line process that are not ours to make in a caller's.

    - dask is marked absent for the commands that never use it (:func:`_without_dask`);
    - the cycle collector's youngest generation is collected every
      :data:`YOUNG_GENERATION_THRESHOLD` allocations: the imports of the sampler, ArviZ and
      matplotlib allocate millions of long-lived objects, and with Python's default the
      collector ran ~500 times during a ``fit``, four of them over every object
      (``benchmarks/results/fit_collector.md`` measures the command with and without).
    """
    import gc

    if args.command in ("fit", "rank", "demo") and not getattr(args, "scheduler", None):
        _without_dask()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


def _before_exit() -> None:
    """Let a command-line process of its own end quickly: Python's finalisation would run
    the cycle collector over every object still alive — the whole scientific stack after
    ``fit`` — only for the process to end; objects frozen by :func:`gc.freeze` are left out
    of it. ``atexit`` and the modules' teardown run as usual, but garbage in reference
    cycles is then never finalised (no ``__del__``): every command closes its files before
    it returns, and must."""
    import gc

    gc.freeze()
