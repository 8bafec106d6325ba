"""Compiling ahead: after ``compile_kernels`` a real fit compiles nothing, and the command
line says when a first run is about to compile (each in a fresh numba cache of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import shared_folder

COUNT_COMPILES = """
import json, sys, warnings
import pandas as pd
from numba.core import event
from bayes_animal import reml
from bayes_animal.precompile import cold_kernels, compile_kernels
from bayes_animal.structures.additive import dense_relationship
from bayes_animal.structures.pedigree import read_pedigree

before = cold_kernels()
report = compile_kernels()
folder = sys.argv[1]
data = pd.read_csv(folder + "/gryphon.csv")
pedigree = pd.read_csv(folder + "/gryphonped.csv")
relmat = dense_relationship(read_pedigree(pedigree, warn=False))
warnings.simplefilter("ignore")
from bayes_animal import AnimalModel
from bayes_animal.bayes.engines import engine_for
model4 = AnimalModel("bwt ~ 1 + C(sex) + (1|byear) + (1|mother)", data.dropna(subset=["bwt"]),
                     pedigree=pedigree)
theta4 = model4.reml_theta()
with event.install_recorder("numba:compile") as recorder:
    engine_for(model4, "sparse").likelihood()(theta4)  # the marginal density's gradient
    reml("bwt ~ 1 + C(sex) + (1|byear) + (1|mother)", data, pedigree=pedigree)
    reml("bwt ~ 1 + C(sex) + (1|byear)", data, pedigree=pedigree, maternal="mother",
         maternal_covariance=True)
    reml("bwt ~ 1 + (1|byear)", data, relmat=relmat, engine="sparse")
compiled = sorted({
    e.data["dispatcher"].py_func.__module__ + "." + e.data["dispatcher"].py_func.__name__
    for _, e in recorder.buffer if e.is_start
})
print(json.dumps({"before": before, "report": report["compiled"],
                  "cold_after": report["cold_after"], "compiled": compiled}))
"""


def _fresh_cache(tmp_path, name: str) -> dict[str, str]:
    return os.environ | {"NUMBA_CACHE_DIR": str(tmp_path / name)}


def test_after_compiling_ahead_a_real_fit_compiles_no_kernel(tmp_path):
    """Gryphon models 4 and the direct–maternal pair on the pedigree, and a given A on the
    sparse engine, and a gradient of model 4's marginal density (the compiled evaluation of
    scalar variances): every kernel they call was compiled ahead (none is compiled again)."""
    folder = shared_folder("gryphon")
    completed = subprocess.run(
        [sys.executable, "-c", COUNT_COMPILES, str(folder)],
        env=_fresh_cache(tmp_path, "numba"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert len(result["before"]) >= 15  # a fresh cache: every kernel cold
    assert result["report"] == result["before"] and result["cold_after"] == []
    ours = [name for name in result["compiled"] if name.startswith("bayes_animal")]
    assert ours == [], f"compiled again after compile_kernels: {ours}"


def test_the_command_line_compiles_ahead_and_says_when_a_first_run_compiles(tmp_path):
    folder = shared_folder("gryphon")
    reml = [
        sys.executable, "-m", "bayes_animal.cli", "reml", "--data", str(folder / "gryphon.csv"),
        "--pedigree", str(folder / "gryphonped.csv"), "--formula", "bwt ~ 1 + (1|byear)",
    ]  # fmt: skip

    def run(command, cache):
        return subprocess.run(
            command, env=_fresh_cache(tmp_path, cache), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip

    first = run(reml, "cold")
    assert first.returncode == 0, first.stderr
    assert "numeric kernels once" in first.stderr and "bayes-animal compile" in first.stderr
    second = run(reml, "cold")
    assert second.returncode == 0 and "kernels once" not in second.stderr
    ahead = run([sys.executable, "-m", "bayes_animal.cli", "compile"], "ahead")
    assert ahead.returncode == 0, ahead.stderr
    assert ahead.stdout.startswith("compiled ") and "not reached" not in ahead.stderr
    after = run(reml, "ahead")
    assert after.returncode == 0 and "kernels once" not in after.stderr
    again = run([sys.executable, "-m", "bayes_animal.cli", "compile"], "ahead")
    assert again.stdout.startswith("every kernel was already compiled")
