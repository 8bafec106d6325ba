"""The first run of every command against its second: what a user pays once after installing.

Each command runs as a whole process three ways: **cold** (a fresh HOME, XDG caches, numba
cache, PyTensor compile directory and matplotlib config: a machine where nothing was compiled),
**second** (the same command again, with what the cold run left), and **after compile** (a fresh
machine on which ``bayes-animal compile`` ran first, as ``make demo`` and ``make test`` do after
installing; its own time is a row of its own). The target of issue 22: a first run at most 1 s
slower than the second.

Run through ``python benchmarks/run.py first_run``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from bench_fit import CWD, _cold_env, _env

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRYPHON = DATA / "gryphon"
SEED_SIM = DATA / "seed_sim"


def _cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "bayes_animal.cli", *arguments]


def commands(out: Path) -> list[tuple[str, list[str]]]:
    """Every command a user runs first, on the reference data."""
    pedigree = ["--data", str(GRYPHON / "gryphon.csv"), "--pedigree"]
    pedigree += [str(GRYPHON / "gryphonped.csv")]
    model4 = ["--formula", "bwt ~ 1 + C(sex) + (1|byear) + (1|mother)"]
    matrix = ["--data", str(SEED_SIM / "pheno.csv"), "--relmat", str(SEED_SIM / "A.csv")]
    fit = ["--draws", "300", "--tune", "300", "--seed", "1", "--no-progress"]
    return [
        ("reml, gryphon model 4 (pedigree, sparse)", _cli("reml", *pedigree, *model4)),
        (
            "reml, seed_sim (a dense A: spectral)",
            _cli("reml", *matrix, "--formula", "response ~ 1 + fix"),
        ),
        (
            "fit, seed_sim (spectral, nutpie)",
            _cli("fit", *matrix, "--formula", "response ~ 1 + fix", "--out", str(out / "f1"), *fit),
        ),
        (
            "fit, gryphon model 4 (sparse marginal)",
            _cli("fit", *pedigree, *model4, "--out", str(out / "f2"), *fit),
        ),
        (
            "rank, the seed_sim posterior",
            _cli(
                "rank",
                "--posterior",
                str(out / "keep" / "posterior.nc"),
                "--top",
                "20",
                "--out",
                str(out / "r"),
            ),
        ),
        (
            "relmat, gryphon pedigree",
            _cli(
                "relmat", "--pedigree", str(GRYPHON / "gryphonped.csv"), "--out", str(out / "A.csv")
            ),
        ),
        (
            "simulate, a herd pedigree",
            _cli("simulate", "--pedigree", "herd", "--animals", "2000", "--out", str(out / "s")),
        ),
    ]


def _timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=CWD)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr}")
    return time.perf_counter() - start


def run(repeats: int = 2) -> pd.DataFrame:
    """Each command: ``repeats`` cold first runs (each on a fresh machine), the second run after
    each, and ``repeats`` first runs on a fresh machine after ``bayes-animal compile``."""
    out = Path(tempfile.mkdtemp(prefix="bayes_animal_first_"))
    keep = _cli("fit", "--data", str(SEED_SIM / "pheno.csv"), "--relmat", str(SEED_SIM / "A.csv"))
    keep += ["--formula", "response ~ 1 + fix", "--out", str(out / "keep"), "--seed", "1"]
    subprocess.run([*keep, "--no-progress"], check=True, capture_output=True, env=_env(), cwd=CWD)
    rows = []
    compile_times = []
    for name, command in commands(out):
        cold, second, ahead = [], [], []
        for _ in range(repeats):
            fresh = _cold_env(None)
            cold.append(_timed(command, fresh))
            second.append(_timed(command, fresh))
            prepared = _cold_env(None)
            compile_times.append(_timed(_cli("compile"), prepared))
            ahead.append(_timed(command, prepared))
        rows.append(
            {
                "command": name,
                "cold first run s": statistics.median(cold),
                "second run s": statistics.median(second),
                "first minus second s": statistics.median(cold) - statistics.median(second),
                "first run after compile s": statistics.median(ahead),
                "after compile minus second s": statistics.median(ahead)
                - statistics.median(second),
            }
        )
    rows.append(
        {
            "command": "bayes-animal compile (once, after installing)",
            "cold first run s": statistics.median(compile_times),
        }
    )
    return pd.DataFrame(rows)
