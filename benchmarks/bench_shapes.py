"""Shapes the package was not tuned on: relationship × random effects × animals, with lme4 and
MCMCglmm measured in the same run where they can run.

Run through ``python benchmarks/run.py shapes`` (``--quick``: 500 and 2 000 animals only;
the genomic G also at 5 000; the 20 000-animal cells take REML only unless
``BAYES_ANIMAL_SHAPES_FULL=1``; ``BAYES_ANIMAL_SHAPES_CELLS=A.csv:2:2000,...`` runs only those
cells).

Each cell simulates a pedigree (3 generations of random mating, a third of the animals
founders, a sire per 10 animals: 2.6 % of A's entries non-zero at 2 000 animals) and records
with known truth (:func:`bayes_animal.simulate.simulate_records`), then fits

- 1 effect: ``y ~ 1 + x`` (animal);
- 2 effects: ``y ~ 1 + x + (1 | grp)`` (a group with a quarter as many levels as animals: the
  cage effect of the issue);
- 4 effects: ``y ~ 1 + x + (1 | grp) + (1 | pen) + ide(animal)`` on 1–3 records per animal,

with the relationship as the pedigree, as that pedigree's A written to a CSV by
``bayes-animal relmat`` (what a user exports from another program), or as a dense genomic-like
G (0.9 A + 0.1 VanRaden G of random markers: dense, carrying the pedigree's signal).

Measured per cell: REML in-process (the fit, files already read; median of 3), REML as a whole
``bayes-animal reml`` process, the engine chosen, the peak memory of that process, the whole
``bayes-animal fit`` (MCMCglmm's priors: ``--prior inverse_gamma``) and its ESS(h²) per
second; lme4 with the relationship-matrix trick (Cholesky factor of A, sparse, as lme4's
vignette does; the fit timed in-process) and MCMCglmm (13 000 iterations, burn-in 3 000, thin
10, V = 1, nu = 0.002 per component; the ``MCMCglmm()`` call timed; ESS by coda) on the same
files. MCMCglmm is not run with the dense G: its ginverse is then dense and every iteration
solves with it (a 500-animal G ran past 4 minutes here; ../shared/anchors/README.md records
3 888 s for 1 000 animals).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_animal.simulate import simulate_pedigree, simulate_records
from bayes_animal.structures.additive import dense_relationship
from bayes_animal.structures.pedigree import read_pedigree

RLIB = Path(os.environ.get("RLIB", Path.home() / "rlib"))
FORMULAS = {
    1: "y ~ 1 + x",
    2: "y ~ 1 + x + (1 | grp)",
    4: "y ~ 1 + x + (1 | grp) + (1 | pen) + ide(animal)",
}
LME4_FORMULAS = {
    1: "y ~ 1 + x + (1 | animal)",
    2: "y ~ 1 + x + (1 | animal) + (1 | grp)",
    4: "y ~ 1 + x + (1 | animal) + (1 | grp) + (1 | pen) + (1 | pe)",
}
MCMCGLMM_RANDOM = {1: "~ animal", 2: "~ animal + grp", 4: "~ animal + grp + pen + pe"}
DENSE_LIMIT = 5000  # a dense A or G CSV beyond this is gigabytes
G_ONLY_SIZE = 5000  # the grid takes the genomic G up to 5 000 animals
FIT_TIMEOUT = 900  # seconds a whole Bayesian fit of one cell may take before it is stopped

LME4_SCRIPT = r"""
suppressMessages({library(lme4); library(Matrix)})
args <- commandArgs(TRUE)
data <- read.csv(args[1], stringsAsFactors = TRUE)
A <- as.matrix(read.csv(args[2], row.names = 1, check.names = FALSE))
form <- as.formula(args[3])
data$animal <- factor(as.character(data$animal))
data$pe <- data$animal
start <- proc.time()[["elapsed"]]
ids <- levels(data$animal)
t1 <- proc.time()[["elapsed"]]
L <- t(chol(Matrix(A[ids, ids], sparse = TRUE)))
t2 <- proc.time()[["elapsed"]]
parsed <- lFormula(form, data = data, REML = TRUE, control = lmerControl(
  check.nobs.vs.nlev = "ignore", check.nobs.vs.nRE = "ignore"))
# the animal term's block of Zt becomes L' Zt (the relmat trick), the others stay
term <- which(names(parsed$reTrms$Ztlist) == "1 | animal")
parsed$reTrms$Ztlist[[term]] <- t(L) %*% parsed$reTrms$Ztlist[[term]]
parsed$reTrms$Zt <- as(do.call(rbind, parsed$reTrms$Ztlist), "CsparseMatrix")
dev <- do.call(mkLmerDevfun, parsed)
t3 <- proc.time()[["elapsed"]]
opt <- optimizeLmer(dev)
t4 <- proc.time()[["elapsed"]]
fit <- mkMerMod(environment(dev), opt, parsed$reTrms, fr = parsed$fr)
elapsed <- proc.time()[["elapsed"]] - start
vc <- as.data.frame(VarCorr(fit))
va <- vc$vcov[vc$grp == "animal"]
cat(sprintf(paste0('{"seconds": %.6f, "h2": %.6f, "loglik": %.6f, "chol_s": %.4f, ',
                   '"setup_s": %.4f, "optimise_s": %.4f}\n'), elapsed, va / sum(vc$vcov),
            as.numeric(logLik(fit)), t2 - t1, t3 - t2, t4 - t3))
"""

MCMCGLMM_SCRIPT = r"""
suppressMessages({library(MCMCglmm); library(Matrix)})
args <- commandArgs(TRUE)
data <- read.csv(args[1], stringsAsFactors = TRUE)
random <- as.formula(args[3])
data$animal <- factor(as.character(data$animal))
data$pe <- data$animal
k <- length(all.vars(random))
prior <- list(R = list(V = 1, nu = 0.002),
              G = setNames(rep(list(list(V = 1, nu = 0.002)), k), paste0("G", 1:k)))
set.seed(1)
if (args[4] == "pedigree") {
  ped <- read.csv(args[2], colClasses = "character")[, c("id", "dam", "sire")]
  ped[ped == "0"] <- NA
  start <- proc.time()[["elapsed"]]
  fit <- MCMCglmm(y ~ x, random = random, data = data, pedigree = ped, prior = prior,
                  nitt = 13000, burnin = 3000, thin = 10, verbose = FALSE)
} else {
  A <- as.matrix(read.csv(args[2], row.names = 1, check.names = FALSE))
  start <- proc.time()[["elapsed"]]
  Ainv <- solve(Matrix(A, sparse = TRUE))
  Ainv <- drop0(as(Ainv, "CsparseMatrix"), tol = 1e-10 * max(abs(diag(Ainv))))
  dimnames(Ainv) <- list(rownames(A), rownames(A))
  fit <- MCMCglmm(y ~ x, random = random, data = data, ginverse = list(animal = Ainv),
                  prior = prior, nitt = 13000, burnin = 3000, thin = 10, verbose = FALSE)
}
elapsed <- proc.time()[["elapsed"]] - start
h2 <- fit$VCV[, "animal"] / rowSums(fit$VCV)
cat(sprintf('{"seconds": %.6f, "h2": %.6f, "ess": %.3f}\n', elapsed, mean(h2),
            coda::effectiveSize(h2)))
"""

INPROCESS_SCRIPT = r"""
import json, resource, statistics, sys, time, warnings
warnings.simplefilter("ignore")
import pandas as pd
from bayes_animal import reml
from bayes_animal.structures.inputs import resolve_relationship
data = pd.read_csv(sys.argv[1])
kind, path, formula = sys.argv[2], sys.argv[3], sys.argv[4]
source = resolve_relationship(**({"pedigree": path} if kind == "pedigree" else {"relmat": path}))
times = []
for _ in range(3):
    source = resolve_relationship(**{"pedigree" if kind == "pedigree" else "relmat": path})
    start = time.perf_counter()
    fit = reml(formula, data, source=source, pev=False)
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": statistics.median(times), "h2": fit.h2, "loglik": fit.loglik,
                  "engine": fit.engine}))
"""


def make_problem(n_animals: int, effects: int, seed: int = 1):
    """Pedigree and records of one cell (see the module docstring)."""
    founders = n_animals // 3
    per_generation = (n_animals - founders) // 3
    table = simulate_pedigree(
        n_founders=founders, n_generations=3, n_per_generation=per_generation,
        n_sires=max(10, n_animals // 10), seed=seed,
    )  # fmt: skip
    variances = {"additive": 1.0, "residual": 2.0}
    groups = {}
    if effects >= 2:
        variances["grp"] = 0.5
        groups["grp"] = max(10, n_animals // 4)
    if effects >= 4:
        variances |= {"pen": 0.3, "pe": 0.4}
        groups["pen"] = max(10, n_animals // 20)
    sim = simulate_records(
        table, variances=variances, groups=groups,
        records_per_animal=(1, 3) if effects >= 4 else (1, 1), seed=seed + 1,
    )  # fmt: skip
    return sim.data, table


def _write_matrix(path: Path, ids, matrix: np.ndarray) -> None:
    frame = pd.DataFrame(matrix, index=ids, columns=ids)
    frame.to_csv(path, index_label="id", float_format="%.10g")


def write_relationships(folder: Path, table: pd.DataFrame, kinds) -> dict[str, Path]:
    """ped.csv, and A.csv / G.csv where the cell asks for them."""
    paths = {"pedigree": folder / "ped.csv"}
    table.to_csv(paths["pedigree"], index=False)
    if {"A.csv", "G.csv"} & set(kinds):
        relmat = dense_relationship(read_pedigree(table))
        if "A.csv" in kinds:
            paths["A.csv"] = folder / "A.csv"
            _write_matrix(paths["A.csv"], relmat.ids, relmat.matrix)
        if "G.csv" in kinds:
            rng = np.random.default_rng(7)
            codes = rng.integers(0, 3, size=(relmat.size, 2000)).astype(float)
            codes -= codes.mean(axis=0)
            genomic = codes @ codes.T / np.sum(codes.var(axis=0))
            paths["G.csv"] = folder / "G.csv"
            _write_matrix(paths["G.csv"], relmat.ids, 0.9 * relmat.matrix + 0.1 * genomic)
    return paths


def _timed(command, timeout=3600):
    """(seconds, stdout) of a command."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {done.stderr[-2000:]}")
    return seconds, done.stdout


def _peak_mb(command, timeout=3600) -> tuple[float, float, str]:
    """Run under /usr/bin/time -v when present: (seconds, peak RSS MB, stdout)."""
    time_tool = shutil.which("time") or "/usr/bin/time"
    if Path(time_tool).exists():
        start = time.perf_counter()
        done = subprocess.run(
            [time_tool, "-v", *map(str, command)], capture_output=True, text=True, timeout=timeout
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{command[:3]} failed: {done.stderr[-2000:]}")
        peak = next(
            (float(line.split(":")[1]) / 1024 for line in done.stderr.splitlines()
             if "Maximum resident set size" in line),
            float("nan"),
        )  # fmt: skip
        return seconds, peak, done.stdout
    seconds, stdout = _timed(list(map(str, command)), timeout=timeout)
    return seconds, float("nan"), stdout


def _relationship_option(kind: str, path: Path) -> list[str]:
    return ["--pedigree", str(path)] if kind == "pedigree" else ["--relmat", str(path)]


def _r_available(package: str) -> bool:
    if shutil.which("Rscript") is None:
        return False
    done = subprocess.run(
        ["Rscript", "-e", f"suppressMessages(library({package}))"],
        capture_output=True, env={**os.environ, "R_LIBS_USER": str(RLIB)},
    )  # fmt: skip
    return done.returncode == 0


def _rscript(script: str, *args, timeout=900) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as handle:
        handle.write(script)
    try:
        done = subprocess.run(
            ["Rscript", handle.name, *map(str, args)], capture_output=True, text=True,
            env={**os.environ, "R_LIBS_USER": str(RLIB)}, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_cell(folder: Path, kind: str, n_animals: int, effects: int, *, bayes: bool, peers: dict):
    data, table = make_problem(n_animals, effects)
    data_path = folder / "data.csv"
    data.to_csv(data_path, index=False)
    paths = write_relationships(folder, table, [kind])
    path = paths[kind]
    formula = FORMULAS[effects]
    python = sys.executable
    row = {"relationship": kind, "effects": effects, "animals": n_animals, "records": len(data)}
    inproc = json.loads(
        _timed([python, "-c", INPROCESS_SCRIPT, str(data_path), kind, str(path), formula])[1]
        .strip().splitlines()[-1]
    )  # fmt: skip
    row["reml_inprocess_s"] = inproc["seconds"]
    reml_command = [
        python, "-m", "bayes_animal.cli", "reml", "--data", data_path, "--formula", formula,
        *_relationship_option(kind, path), "--json",
    ]  # fmt: skip
    _peak_mb(reml_command)  # warm the caches
    seconds = []
    for _ in range(3):
        s, peak, stdout = _peak_mb(reml_command)
        seconds.append(s)
    reml_json = json.loads(stdout)
    row["reml_whole_s"] = statistics.median(seconds)
    row["reml_peak_mb"] = peak
    row["reml_engine"] = reml_json["engine"]
    row["reml_h2"] = reml_json["h2"]
    if peers.get("lme4") and n_animals <= DENSE_LIMIT:  # the trick needs A as a matrix
        matrix_path = path
        if kind == "pedigree":  # lme4 takes a matrix: the pedigree's A, written for it
            matrix_path = write_relationships(folder, table, ["A.csv"])["A.csv"]
        lme4 = _rscript(LME4_SCRIPT, data_path, matrix_path, LME4_FORMULAS[effects])
        row["lme4_reml_s"] = lme4.get("seconds", float("nan"))
        row["lme4_h2"] = lme4.get("h2", float("nan"))
        row["inprocess_vs_lme4"] = row["lme4_reml_s"] / row["reml_inprocess_s"]
    if bayes:
        out = folder / "fit"
        fit_command = [
            python, "-m", "bayes_animal.cli", "fit", "--data", data_path, "--formula", formula,
            *_relationship_option(kind, path), "--prior", "inverse_gamma", "--seed", "1",
            "--quiet", "--out", out,
        ]  # fmt: skip
        try:
            s, peak, _ = _peak_mb(fit_command, timeout=FIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            row["fit_whole_s"] = f"> {FIT_TIMEOUT} s (stopped)"
            return row
        summary = json.loads((out / "summary.json").read_text())
        ess = summary["ratios"]["h2"]["ess_bulk"]
        row["fit_whole_s"] = s
        row["fit_peak_mb"] = peak
        row["fit_engine"] = json.loads(summary["provenance"]["model_options"])["engine"]
        row["fit_sampler"] = summary["sampler"]
        row["fit_h2"] = summary["ratios"]["h2"]["mean"]
        row["fit_ess_h2_per_s"] = ess / s
        row["fit_max_r_hat"] = summary["diagnostics"]["max_r_hat"]
        row["fit_divergences"] = summary["diagnostics"]["divergences"]
        if peers.get("mcmcglmm") and kind != "G.csv":  # see the module docstring
            mc = _rscript(
                MCMCGLMM_SCRIPT, data_path, path,
                MCMCGLMM_RANDOM[effects], "pedigree" if kind == "pedigree" else "matrix",
            )  # fmt: skip
            row["mcmcglmm_s"] = mc.get("seconds", float("nan"))
            row["mcmcglmm_ess_h2_per_s"] = mc.get("ess", float("nan")) / mc.get("seconds", 1)
            row["ours_vs_mcmcglmm_ess_per_s"] = (
                row["fit_ess_h2_per_s"] / row["mcmcglmm_ess_h2_per_s"]
            )
    return row


def parse_cells(text: str) -> set[tuple[str, int, int]]:
    """``"A.csv:2:2000,G.csv:1:5000"`` → {("A.csv", 2, 2000), ("G.csv", 1, 5000)}."""
    cells = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            kind, effects, animals = item.split(":")
            cells.add((kind, int(effects), int(animals)))
        except ValueError:
            raise SystemExit(
                f"cell {item!r}: write kind:effects:animals, e.g. A.csv:2:2000"
            ) from None
    return cells


def run(
    *,
    quick: bool,
    sizes: tuple[int, ...] | None = None,
    cells: set[tuple[str, int, int]] | None = None,
) -> pd.DataFrame:
    """The shape grid, or only ``cells`` ((kind, effects, animals) triples) where given."""
    if cells:
        sizes = tuple(sorted({animals for _, _, animals in cells}))
    sizes = sizes or ((500, 2000) if quick else (500, 2000, G_ONLY_SIZE, 20_000))
    full = os.environ.get("BAYES_ANIMAL_SHAPES_FULL") == "1"
    peers = {"lme4": _r_available("lme4"), "mcmcglmm": _r_available("MCMCglmm")}
    rows = []
    for n_animals in sizes:
        for kind in ("pedigree", "A.csv", "G.csv"):
            if kind != "pedigree" and n_animals > DENSE_LIMIT:
                continue
            if n_animals == G_ONLY_SIZE and kind != "G.csv":
                continue
            for effects in (1, 2, 4):
                if cells and (kind, effects, n_animals) not in cells:
                    continue
                with tempfile.TemporaryDirectory() as folder:
                    bayes = n_animals <= 2000 or full
                    print(f"shapes: {kind} {effects} effect(s) {n_animals} animals", flush=True)
                    rows.append(
                        run_cell(Path(folder), kind, n_animals, effects, bayes=bayes, peers=peers)
                    )
                    print(json.dumps(rows[-1], default=str), flush=True)  # a partial record
    return pd.DataFrame(rows)


NONCENTRED_SCRIPT = r"""
import json, sys, time, warnings, logging
warnings.simplefilter("ignore"); logging.getLogger("pymc").setLevel(logging.ERROR)
import pandas as pd
from bayes_animal import AnimalModel
folder, sampler, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = pd.read_csv(f"{folder}/gryphon.csv")
start = time.perf_counter()
model = AnimalModel("bwt ~ 1", data, pedigree=f"{folder}/gryphonped.csv", animal="animal",
                    priors="inverse_gamma")
fit = model.fit(parameterisation="noncentred", sampler=sampler, random_seed=seed,
                progressbar=False, warn=False)
whole = time.perf_counter() - start
row = fit._summary.loc["h2"]
print(json.dumps({"sampling_s": fit.timings["sampling"], "whole_s": whole,
                  "ess_bulk": float(row["ess_bulk"]), "r_hat": float(row["r_hat"]),
                  "h2": float(row["mean"]),
                  "divergences": int(fit.idata.sample_stats["diverging"].sum())}))
"""

MCMCGLMM_GRYPHON = r"""
suppressMessages(library(MCMCglmm))
args <- commandArgs(TRUE)
data <- read.csv(file.path(args[1], "gryphon.csv"))
ped <- read.csv(file.path(args[1], "gryphonped.csv"))
names(ped) <- c("animal", "sire", "dam")
ped <- ped[, c("animal", "dam", "sire")]
data <- data[!is.na(data$bwt), ]
data$animal <- factor(data$animal)
prior <- list(G = list(G1 = list(V = 1, nu = 0.002)), R = list(V = 1, nu = 0.002))
set.seed(as.integer(args[2]))
start <- proc.time()[["elapsed"]]
fit <- MCMCglmm(bwt ~ 1, random = ~ animal, pedigree = ped, data = data, prior = prior,
                nitt = 13000, burnin = 3000, thin = 10, verbose = FALSE)
elapsed <- proc.time()[["elapsed"]] - start
h2 <- fit$VCV[, "animal"] / rowSums(fit$VCV)
cat(sprintf('{"seconds": %.4f, "ess": %.2f, "h2": %.4f}\n', elapsed, coda::effectiveSize(h2),
            mean(h2)))
"""


def run_noncentred(folder: Path, seeds=(1, 2, 3)) -> pd.DataFrame:
    """The non-centred pedigree model on gryphon ``bwt ~ 1`` (MCMCglmm's priors), PyMC's NUTS
    against nutpie through PyMC, several seeds; MCMCglmm on the same model beside it."""
    rows = []
    for seed in seeds:
        for sampler in ("pymc", "nutpie"):
            command = [sys.executable, "-c", NONCENTRED_SCRIPT, str(folder), sampler, str(seed)]
            out = json.loads(_timed(command)[1].strip().splitlines()[-1])
            rows.append({
                "tool": f"bayes_animal noncentred, {sampler}", "seed": seed,
                "sampling_s": out["sampling_s"], "whole_s": out["whole_s"],
                "ess_h2": out["ess_bulk"],
                "ess_h2_per_s_sampling": out["ess_bulk"] / out["sampling_s"],
                "ess_h2_per_s_whole": out["ess_bulk"] / out["whole_s"],
                "r_hat": out["r_hat"], "divergences": out["divergences"], "h2": out["h2"],
            })  # fmt: skip
        if _r_available("MCMCglmm"):
            mc = _rscript(MCMCGLMM_GRYPHON, folder, seed)
            if "seconds" in mc:
                rows.append({
                    "tool": "MCMCglmm (13 000 it.)", "seed": seed, "sampling_s": mc["seconds"],
                    "whole_s": mc["seconds"], "ess_h2": mc["ess"],
                    "ess_h2_per_s_sampling": mc["ess"] / mc["seconds"],
                    "ess_h2_per_s_whole": mc["ess"] / mc["seconds"], "h2": mc["h2"],
                })  # fmt: skip
    return pd.DataFrame(rows)


MCMCGLMM_MODEL4 = r"""
suppressMessages(library(MCMCglmm))
args <- commandArgs(TRUE)
data <- read.csv(file.path(args[1], "gryphon.csv"))
ped <- read.csv(file.path(args[1], "gryphonped.csv"))
names(ped) <- c("animal", "sire", "dam")
ped <- ped[, c("animal", "dam", "sire")]
data <- data[!is.na(data$bwt), ]
data$animal <- factor(data$animal); data$byear <- factor(data$byear)
data$mother <- factor(data$mother); data$sex <- factor(data$sex)
prior <- list(G = list(G1 = list(V = 1, nu = 0.002), G2 = list(V = 1, nu = 0.002),
                       G3 = list(V = 1, nu = 0.002)), R = list(V = 1, nu = 0.002))
set.seed(as.integer(args[2]))
start <- proc.time()[["elapsed"]]
fit <- MCMCglmm(bwt ~ sex, random = ~ animal + byear + mother, pedigree = ped, data = data,
                prior = prior, nitt = 13000, burnin = 3000, thin = 10, verbose = FALSE)
elapsed <- proc.time()[["elapsed"]] - start
h2 <- fit$VCV[, "animal"] / rowSums(fit$VCV)
cat(sprintf('{"seconds": %.4f, "ess": %.2f, "h2": %.4f}\n', elapsed, coda::effectiveSize(h2),
            mean(h2)))
"""


def run_model4_seeds(folder: Path, seeds=(1, 2, 3, 4)) -> pd.DataFrame:
    """Gryphon model 4 (``bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)``, MCMCglmm's priors)
    by ``bayes-animal fit`` over several seeds — what a user sees: divergences, R-hat, ESS
    bulk and tail, ESS(h²)/s of the whole process — with MCMCglmm on the same model and
    seeds beside it."""
    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as out:
            command = [
                sys.executable, "-m", "bayes_animal.cli", "fit",
                "--data", str(folder / "gryphon.csv"),
                "--pedigree", str(folder / "gryphonped.csv"),
                "--formula", "bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)",
                "--prior", "inverse_gamma", "--seed", str(seed), "--quiet",
                "--keep-draws", "none", "--out", out,
            ]  # fmt: skip
            seconds, _ = _timed(command)
            summary = json.loads((Path(out) / "summary.json").read_text())
        h2 = summary["ratios"]["h2"]
        rows.append({
            "tool": "bayes_animal fit", "seed": seed, "whole_s": seconds,
            "divergences": summary["diagnostics"]["divergences"],
            "max_r_hat": summary["diagnostics"]["max_r_hat"],
            "min_ess_bulk": summary["diagnostics"]["min_ess_bulk"],
            "min_ess_tail": summary["diagnostics"].get("min_ess_tail", float("nan")),
            "ess_h2": h2["ess_bulk"], "ess_h2_per_s": h2["ess_bulk"] / seconds,
            "h2": h2["mean"],
        })  # fmt: skip
        if _r_available("MCMCglmm"):
            mc = _rscript(MCMCGLMM_MODEL4, folder, seed)
            if "seconds" in mc:
                rows.append({
                    "tool": "MCMCglmm (13 000 it.)", "seed": seed, "whole_s": mc["seconds"],
                    "ess_h2": mc["ess"], "ess_h2_per_s": mc["ess"] / mc["seconds"],
                    "h2": mc["h2"],
                })  # fmt: skip
    return pd.DataFrame(rows)


LME4_TRAITS_SCRIPT = r"""
suppressMessages({library(lme4); library(Matrix)})
args <- commandArgs(TRUE)
start <- proc.time()[["elapsed"]]
data <- read.csv(args[1], stringsAsFactors = TRUE)
A <- as.matrix(read.csv(args[2], row.names = 1, check.names = FALSE))
traits <- strsplit(args[3], ",")[[1]]
data$animal <- factor(as.character(data$animal))
ids <- levels(data$animal)
L <- t(chol(Matrix(A[ids, ids], sparse = TRUE)))
h2 <- c()
for (trait in traits) {
  form <- as.formula(paste(trait, "~ 1 + x + (1 | animal)"))
  parsed <- lFormula(form, data = data, REML = TRUE, control = lmerControl(
    check.nobs.vs.nlev = "ignore", check.nobs.vs.nRE = "ignore"))
  parsed$reTrms$Zt <- t(L) %*% parsed$reTrms$Zt
  parsed$reTrms$Ztlist[[1]] <- parsed$reTrms$Zt
  dev <- do.call(mkLmerDevfun, parsed)
  opt <- optimizeLmer(dev)
  fit <- mkMerMod(environment(dev), opt, parsed$reTrms, fr = parsed$fr)
  vc <- as.data.frame(VarCorr(fit))
  h2 <- c(h2, vc$vcov[1] / sum(vc$vcov))
}
cat(sprintf('{"seconds": %.4f, "h2": [%s]}\n', proc.time()[["elapsed"]] - start,
            paste(sprintf("%.6f", h2), collapse = ", ")))
"""


def run_traits(n_traits: int = 17, repeats: int = 3) -> pd.DataFrame:
    """A dozen-plus traits on ~2 000 animals with the pedigree's A as a file: the whole
    ``bayes-animal reml --traits`` process against one R process running lme4 (the relmat
    trick) over the same traits, both from reading the files to the last fit."""
    data, table = make_problem(2000, 1)
    rng = np.random.default_rng(11)
    base = data["y"].to_numpy()
    noise = rng.standard_normal((len(data), n_traits))
    weights = rng.uniform(0.2, 1.0, n_traits)
    names = [f"trait{k:02d}" for k in range(n_traits)]
    for k, name in enumerate(names):  # the simulated breeding values plus fresh noise, rescaled
        data[name] = 10 + weights[k] * (base - base.mean()) + noise[:, k] * rng.uniform(0.5, 2)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data.to_csv(folder / "data.csv", index=False)
        path = write_relationships(folder, table, ["A.csv"])["A.csv"]
        command = [
            sys.executable, "-m", "bayes_animal.cli", "reml", "--data", folder / "data.csv",
            "--relmat", path, "--formula", "~ 1 + x", "--traits", "trait*",
            "--out", folder / "out", "--no-progress",
        ]  # fmt: skip
        command = list(map(str, command))
        _timed(command)  # warm
        ours = statistics.median(_timed(command)[0] for _ in range(repeats))
        groups = pd.read_csv(folder / "out" / "groups.csv")
        h2_ours = pd.read_csv(folder / "out" / "traits.csv").set_index("trait")["h2"]
        row = {"traits": n_traits, "animals": len(table), "records": len(data),
               "ours_whole_s": ours, "ours_engine": ";".join(groups["engine"])}  # fmt: skip
        if _r_available("lme4"):  # once: minutes, far above run-to-run noise
            start = time.perf_counter()
            out = _rscript(LME4_TRAITS_SCRIPT, folder / "data.csv", path, ",".join(names))
            row["lme4_loop_whole_s"] = time.perf_counter() - start
            row["lme4_vs_ours"] = row["lme4_loop_whole_s"] / ours
            if "h2" in out:
                row["max_h2_difference"] = float(
                    np.max(np.abs(np.array(out["h2"]) - h2_ours.loc[names].to_numpy()))
                )
        rows.append(row)
    return pd.DataFrame(rows)


def run_reproducer() -> pd.DataFrame:
    """The issue's reproducer: ``simulate_pedigree(100, 4, 450, 40, seed=1)``, records with a
    450-level group (seed 2), MCMCglmm's priors; the whole ``bayes-animal fit`` from A.csv and
    from the pedigree, and MCMCglmm on the same data, ESS(h²) per second of each whole fit."""
    table = simulate_pedigree(
        n_founders=100, n_generations=4, n_per_generation=450, n_sires=40, seed=1
    )
    sim = simulate_records(
        table, variances={"additive": 1, "grp": 0.5, "residual": 2}, groups={"grp": 450}, seed=2
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        sim.data.to_csv(folder / "data.csv", index=False)
        paths = write_relationships(folder, table, ["A.csv"])
        formula = "y ~ 1 + x + (1 | grp)"
        for kind in ("A.csv", "pedigree"):
            out = folder / f"fit_{kind}"
            command = [
                sys.executable, "-m", "bayes_animal.cli", "fit", "--data", folder / "data.csv",
                "--formula", formula, *_relationship_option(kind, paths[kind]),
                "--prior", "inverse_gamma", "--seed", "1", "--quiet", "--out", out,
            ]  # fmt: skip
            seconds, _ = _timed(list(map(str, command)))
            summary = json.loads((out / "summary.json").read_text())
            ess = summary["ratios"]["h2"]["ess_bulk"]
            rows.append({
                "tool": f"bayes_animal fit, {kind}", "whole_s": seconds,
                "sampling_s": summary["timings"]["sampling"], "ess_h2": ess,
                "ess_h2_per_s": ess / seconds, "h2": summary["ratios"]["h2"]["mean"],
                "engine": json.loads(summary["provenance"]["model_options"])["engine"],
            })  # fmt: skip
        if _r_available("MCMCglmm"):
            mc = _rscript(
                MCMCGLMM_SCRIPT, folder / "data.csv", paths["pedigree"], MCMCGLMM_RANDOM[2],
                "pedigree",
            )  # fmt: skip
            if "seconds" in mc:
                rows.append({
                    "tool": "MCMCglmm (13 000 it.), pedigree", "whole_s": mc["seconds"],
                    "sampling_s": mc["seconds"], "ess_h2": mc["ess"],
                    "ess_h2_per_s": mc["ess"] / mc["seconds"], "h2": mc["h2"],
                    "engine": "Gibbs",
                })  # fmt: skip
    frame = pd.DataFrame(rows)
    if "MCMCglmm (13 000 it.), pedigree" in set(frame["tool"]):
        reference = frame.loc[frame["tool"].str.startswith("MCMCglmm"), "ess_h2_per_s"].iloc[0]
        frame["vs_mcmcglmm"] = frame["ess_h2_per_s"] / reference
    return frame
