"""Several traits: REML of the gryphon bivariate models in-process and as a command, and the
Bayesian fit over seeds beside MCMCglmm on the same model and priors.

Run through ``python benchmarks/run.py multitrait``. MCMCglmm (``us(trait):animal``,
``us(trait):units``, V = I, nu = 1.002; 13 000 iterations, burn-in 3 000, thin 10) runs where
R and MCMCglmm are installed (../shared/anchors/README.md); its wall time is that of the
``MCMCglmm()`` call, ESS from ``coda::effectiveSize``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
from bench_shapes import _r_available, _rscript, _timed

GRYPHON = Path(__file__).resolve().parents[2] / "shared" / "data" / "gryphon"
BIVARIATE = "cbind(bwt, tarsus) ~ 1"
TUTORIAL = "cbind(bwt, tarsus) ~ 1 + C(sex) + (1 | byear) + (1 | mother)"

MCMCGLMM_BIVARIATE = r"""
suppressMessages(library(MCMCglmm))
args <- commandArgs(TRUE)
data <- read.csv(file.path(args[1], "gryphon.csv"))
ped <- read.csv(file.path(args[1], "gryphonped.csv"))
names(ped) <- c("animal", "sire", "dam")
ped <- ped[, c("animal", "dam", "sire")]
data <- data[!(is.na(data$bwt) & is.na(data$tarsus)), ]
data$animal <- factor(data$animal)
prior <- list(G = list(G1 = list(V = diag(2), nu = 1.002)), R = list(V = diag(2), nu = 1.002))
set.seed(as.integer(args[2]))
start <- proc.time()[["elapsed"]]
fit <- MCMCglmm(cbind(bwt, tarsus) ~ trait - 1, random = ~ us(trait):animal,
                rcov = ~ us(trait):units, family = c("gaussian", "gaussian"), pedigree = ped,
                data = data, prior = prior, nitt = 13000, burnin = 3000, thin = 10,
                verbose = FALSE)
elapsed <- proc.time()[["elapsed"]] - start
V <- fit$VCV
ra <- V[, 2] / sqrt(V[, 1] * V[, 4])
h2b <- V[, 1] / (V[, 1] + V[, 5])
h2t <- V[, 4] / (V[, 4] + V[, 8])
ess <- function(x) as.numeric(coda::effectiveSize(x))
cat(sprintf(paste0('{"seconds": %.4f, "ess_ra": %.2f, "ess_h2_bwt": %.2f, "ess_h2_tarsus": ',
                   '%.2f, "ra": %.4f, "h2_bwt": %.4f, "h2_tarsus": %.4f}\n'),
            elapsed, ess(ra), ess(h2b), ess(h2t), mean(ra), mean(h2b), mean(h2t)))
"""


def run_reml(repeats: int = 5) -> pd.DataFrame:
    """REML of the bivariate model and the tutorial's model with three unstructured matrices:
    in-process (best of ``repeats`` after one warm-up) and as a whole command."""
    from bayes_animal import reml

    data = pd.read_csv(GRYPHON / "gryphon.csv")
    pedigree = pd.read_csv(GRYPHON / "gryphonped.csv")
    rows = []
    for formula in (BIVARIATE, TUTORIAL):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reml(formula, data, pedigree=pedigree)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fit = reml(formula, data, pedigree=pedigree)
                times.append(time.perf_counter() - start)
        command = [
            sys.executable, "-m", "bayes_animal.cli", "reml", "--data",
            str(GRYPHON / "gryphon.csv"), "--pedigree", str(GRYPHON / "gryphonped.csv"),
            "--formula", formula, "--json",
        ]  # fmt: skip
        whole, _ = _timed(command)
        r_a = fit.ratios.loc["corr:additive:bwt:tarsus"]
        rows.append(
            {
                "model": formula,
                "in-process s (best)": min(times),
                "command s": whole,
                "iterations": fit.iterations,
                "r_A": f"{r_a['estimate']:.4f} ({r_a['se']:.4f})",
                "logL (ASReml scale)": fit.loglik_asreml,
            }
        )
    return pd.DataFrame(rows)


def run_bayes(seeds=(1, 2, 3, 4)) -> pd.DataFrame:
    """``bayes-animal fit --prior inverse_gamma`` (MCMCglmm's V = I, nu = 1.002 on G and R) on
    the bivariate model, the whole process, beside MCMCglmm on the same seeds."""
    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as out:
            command = [
                sys.executable, "-m", "bayes_animal.cli", "fit",
                "--data", str(GRYPHON / "gryphon.csv"),
                "--pedigree", str(GRYPHON / "gryphonped.csv"), "--formula", BIVARIATE,
                "--prior", "inverse_gamma", "--seed", str(seed), "--quiet",
                "--keep-draws", "none", "--out", out,
            ]  # fmt: skip
            seconds, _ = _timed(command)
            summary = json.loads((Path(out) / "summary.json").read_text())
        ratios = summary["ratios"]
        check = summary["reml_check"]
        rows.append({
            "tool": "bayes_animal fit", "seed": seed, "whole_s": seconds,
            "divergences": summary["diagnostics"]["divergences"],
            "max_r_hat": summary["diagnostics"]["max_r_hat"],
            "reml_in_every_hdi": all(row["reml_in_hdi"] for row in check),
            "ess_ra_per_s": ratios["corr:additive:bwt:tarsus"]["ess_bulk"] / seconds,
            "ess_h2_bwt_per_s": ratios["h2:bwt"]["ess_bulk"] / seconds,
            "ess_h2_tarsus_per_s": ratios["h2:tarsus"]["ess_bulk"] / seconds,
            "r_A": ratios["corr:additive:bwt:tarsus"]["mean"],
            "h2_bwt": ratios["h2:bwt"]["mean"], "h2_tarsus": ratios["h2:tarsus"]["mean"],
            "V_A_bwt": summary["components"]["additive:bwt"]["mean"],
            "COV_A": summary["covariances"]["additive:bwt:tarsus"]["mean"],
            "V_A_tarsus": summary["components"]["additive:tarsus"]["mean"],
        })  # fmt: skip
        if _r_available("MCMCglmm"):
            mc = _rscript(MCMCGLMM_BIVARIATE, GRYPHON, seed)
            if "seconds" in mc:
                rows.append({
                    "tool": "MCMCglmm (13 000 it.)", "seed": seed, "whole_s": mc["seconds"],
                    "ess_ra_per_s": mc["ess_ra"] / mc["seconds"],
                    "ess_h2_bwt_per_s": mc["ess_h2_bwt"] / mc["seconds"],
                    "ess_h2_tarsus_per_s": mc["ess_h2_tarsus"] / mc["seconds"],
                    "r_A": mc["ra"], "h2_bwt": mc["h2_bwt"], "h2_tarsus": mc["h2_tarsus"],
                })  # fmt: skip
    return pd.DataFrame(rows)
