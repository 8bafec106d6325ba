"""The numba kernels' tests once more with bounds checks.

numba compiles array indexing without bounds checks: an index one past the end reads or writes
a neighbour silently. ``NUMBA_BOUNDSCHECK=1`` compiles every kernel with checks, so that such
an access raises IndexError. The compiled kernels are cached on disk (``cache=True``) under a
key that does not include the setting, so the checked run gets a cache directory of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: The tests of the hand-written kernels: ordering (AMD), ldl (symbolic analysis, LDLᵀ,
#: selected inverse, solves), inverse (the given matrix's up-looking LDLᵀ and L⁻¹), additive
#: (inbreeding, Henderson's A⁻¹, the tabular A), recursion (the pedigree's u = T z and
#: its adjoint) and joint (a family's exact joint density, read from its two buffers).
KERNEL_TESTS = (
    "test_ordering.py",
    "test_ldl.py",
    "test_inverse.py",
    "test_additive.py",
    "test_recursion.py",
    "test_joint.py",
)
#: The checked run takes about 40 s on two busy cores, compilation included.
TIMEOUT_S = 240

_CHECKS_ON = """
import numpy as np
from numba import njit

@njit
def read(a, i):
    return a[i]

try:
    read(np.zeros(3), 3)
except IndexError:
    print("checked")
"""


def _checked_environment(cache: Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment["NUMBA_BOUNDSCHECK"] = "1"
    environment["NUMBA_CACHE_DIR"] = str(cache)
    return environment


def test_kernel_tests_pass_with_numba_bounds_checks(tmp_path):
    environment = _checked_environment(tmp_path / "numba-cache")
    probe = subprocess.run(
        [sys.executable, "-c", _CHECKS_ON],
        capture_output=True,
        text=True,
        env=environment,
        timeout=TIMEOUT_S,
    )
    assert probe.stdout.strip() == "checked", probe.stdout + probe.stderr
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *(str(TESTS / name) for name in KERNEL_TESTS),
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not slow",
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=TESTS.parent,
        timeout=TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    assert " passed" in completed.stdout and "IndexError" not in completed.stdout
