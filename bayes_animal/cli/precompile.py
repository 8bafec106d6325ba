"""``bayes-animal compile``: the numeric kernels into numba's cache, ahead of the first fit."""

from __future__ import annotations

import argparse
import sys


def _cmd_compile(args: argparse.Namespace) -> int:
    from ..precompile import compile_kernels

    report = compile_kernels()
    compiled = len(report["compiled"])
    what = f"compiled {compiled} kernels" if compiled else "every kernel was already compiled"
    print(f"{what} in {report['seconds']:.1f} s; later runs load them from numba's cache")
    if report["cold_after"]:
        print(f"not reached: {', '.join(report['cold_after'])}", file=sys.stderr)
    return 0


def first_run_notice() -> str | None:
    """A note for a process about to fit on a pedigree with the sparse kernels not yet in
    numba's cache (None when they are)."""
    from ..precompile import PEDIGREE_MODULES, cold_kernels

    cold = cold_kernels(PEDIGREE_MODULES)
    if not cold:
        return None
    return (
        f"compiling {len(cold)} numeric kernels once (about 5 s; later runs load them from "
        "numba's cache). `bayes-animal compile` does this ahead, after installing."
    )
