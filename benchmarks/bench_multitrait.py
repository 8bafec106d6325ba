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


def run_scale(
    sizes=(20_000, 100_000),
    *,
    reml_up_to: int = 20_000,
    bayes_up_to: int = 0,
    bayes_draws: int | None = None,
):
    """Three traits on a herd pedigree, repeated records with an unstructured permanent
    environment, 20 % of each trait missing: the size of the equations and of their factor,
    the cost of one gradient of the marginal model (a factorisation and its selected inverse:
    what every NUTS step costs), REML in-process up to ``reml_up_to`` animals, and the whole
    default Bayesian fit up to ``bayes_up_to`` (``bayes_draws`` draws a chain; None: the
    default), with its stages' times."""
    import numpy as np

    from bayes_animal import AnimalModel, reml
    from bayes_animal.api import model_inputs
    from bayes_animal.linalg.mme import MixedModelEquations
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_traits
    from bayes_animal.spec.parameters import Parameters

    formula = "cbind(t1, t2, t3) ~ 1 + x + ide(animal)"
    genetic = np.array([[2.0, -0.8, 0.3], [-0.8, 1.28, 0.2], [0.3, 0.2, 1.0]])
    residual = np.array([[2.0, 0.5, 0.0], [0.5, 3.0, 0.6], [0.0, 0.6, 1.5]])
    permanent = np.array([[0.5, 0.1, 0.0], [0.1, 0.4, 0.1], [0.0, 0.1, 0.3]])
    rows = []
    for size in sizes:
        pedigree = simulate_herd_pedigree(n_animals=size, seed=1)
        sim = simulate_traits(
            pedigree, traits=("t1", "t2", "t3"), genetic=genetic, residual=residual,
            permanent=permanent, records_per_animal=(1, 2), phenotyped=0.7, missing=0.2, seed=2,
        )  # fmt: skip
        inputs = model_inputs(formula, sim.data, pedigree=pedigree, warn=False)
        params = Parameters.from_spec(inputs.design.spec)
        start = time.perf_counter()
        mme = MixedModelEquations(inputs.design, inputs.structures(), params)
        analysis = mme.analysis
        analyse = time.perf_counter() - start
        row = {
            "animals": size,
            "records": len(inputs.design.record_labels),
            "observations": inputs.design.n_records,
            "unknowns": mme.size,
            "dense block": analysis.n - analysis.split,
            "L non-zeros": analysis.nnz_factor,
            "analyse s": analyse,
        }
        theta = params.start(np.diag(genetic + residual + permanent))
        mme.evaluate(theta, information=False)
        start = time.perf_counter()
        mme.evaluate(theta, information=False)
        row["one gradient s"] = time.perf_counter() - start
        if size <= reml_up_to:
            start = time.perf_counter()
            fit = reml(formula, sim.data, pedigree=pedigree, warn=False, pev=False)
            row["REML s"] = time.perf_counter() - start
            row["REML iterations"] = fit.iterations
            row["converged"] = fit.converged
            row["r_G t1 t2 (truth -0.5)"] = fit.ratios.loc["corr:additive:t1:t2", "estimate"]
        if size <= bayes_up_to:
            start = time.perf_counter()
            model = AnimalModel(formula, sim.data, pedigree=pedigree)
            posterior = model.fit(random_seed=1, progressbar=False, warn=False, draws=bayes_draws)
            row["Bayesian whole fit s"] = time.perf_counter() - start
            if bayes_draws is not None:
                row["draws a chain"] = bayes_draws
                for stage in ("reml", "compile", "sampling", "conditional", "reliability"):
                    row[f"{stage} s"] = posterior.timings.get(stage, float("nan"))
            row["sampler"] = posterior.sampler
            row["acceptance"] = posterior.idata.attrs.get("acceptance_rate", float("nan"))
            row["proposal k̂"] = posterior.idata.attrs.get("proposal_khat", float("nan"))
            row["min ESS bulk"] = posterior.diagnostics.min_ess_bulk
            row["max R-hat"] = posterior.diagnostics.max_r_hat
            row["divergences"] = posterior.diagnostics.divergences
            row["REML in every HDI"] = bool(posterior.reml_check["reml_in_hdi"].all())
            key = "corr:additive:t1:t2"
            row["posterior r_G t1 t2"] = posterior.summary().loc[key, "mean"]
        rows.append(row)
    return pd.DataFrame(rows)


WHEAT = GRYPHON.parent / "wheat"
WHEAT_FORMULA = "cbind(env1, env2, env4, env5) ~ 1"

MCMCGLMM_WHEAT = r"""
suppressMessages(library(MCMCglmm))
args <- commandArgs(TRUE)
Y <- read.csv(file.path(args[1], "wheat_Y.csv"))
A <- as.matrix(read.csv(file.path(args[1], "wheat_A.csv"), row.names = 1, check.names = FALSE))
Ainv <- as(solve(A), "dgCMatrix")
rownames(Ainv) <- colnames(Ainv) <- rownames(A)
Y$line <- factor(as.character(Y$line), levels = rownames(A))
prior <- list(G = list(G1 = list(V = diag(4), nu = 3.002)), R = list(V = diag(4), nu = 3.002))
nitt <- as.integer(args[3])
set.seed(as.integer(args[2]))
start <- proc.time()[["elapsed"]]
fit <- MCMCglmm(cbind(env1, env2, env4, env5) ~ trait - 1, random = ~ us(trait):line,
                rcov = ~ us(trait):units, family = rep("gaussian", 4),
                ginverse = list(line = Ainv), data = Y, prior = prior, nitt = nitt,
                burnin = 0, thin = 1, verbose = FALSE)
elapsed <- proc.time()[["elapsed"]] - start
cat(sprintf('{"seconds": %.4f, "iterations": %d}\n', elapsed, nitt))
"""


def _path(label: str):
    """The canonical transformation's path, or the one before it: no design taken by the
    canonical transformation, so that every choice (REML, the engine, the sampler) is the one
    made before it existed."""
    from contextlib import nullcontext
    from unittest import mock

    if label == "canonical":
        return nullcontext()
    return mock.patch(
        "bayes_animal.linalg.canonical.canonical_obstacle",
        return_value="the benchmark's path without the canonical transformation",
    )


def run_canonical(*, mcmcglmm_iterations: int = 100) -> pd.DataFrame:
    """The wheat data (four environments, 599 lines, a dense pedigree A; data we did not
    make): REML and the whole default Bayesian fit through the canonical transformation and
    through the sparse equations as before it (REML on the sparse equations, the sparse
    marginal model and the sampler the fit chose), in the same run; and MCMCglmm's seconds
    per iteration on the same model (a short run: a full one is out of reach)."""
    from bayes_animal import AnimalModel, reml

    data = pd.read_csv(WHEAT / "wheat_Y.csv")
    relmat = pd.read_csv(WHEAT / "wheat_A.csv", index_col=0)
    rows = []
    for label in ("canonical", "sparse (before)"):
        with _path(label):
            start = time.perf_counter()
            fit = reml(WHEAT_FORMULA, data, relmat=relmat, animal="line")
            reml_s = time.perf_counter() - start
            start = time.perf_counter()
            model = AnimalModel(WHEAT_FORMULA, data, relmat=relmat, animal="line")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                posterior = model.fit(random_seed=1, progressbar=False, warn=False)
            whole = time.perf_counter() - start
        diagnostics = posterior.diagnostics
        summary = posterior.summary()
        h2 = summary.loc[[f"h2:{t}" for t in ("env1", "env2", "env4", "env5")]]
        rows.append({
            "engine": label, "REML s": reml_s, "REML logL": fit.loglik,
            "REML iterations": fit.iterations,
            "r_G env2 env4 (REML)": fit.ratios.loc["corr:additive:env2:env4", "estimate"],
            "Bayesian whole fit s": whole, "sampler": posterior.sampler,
            "sampling s": posterior.timings.get("sampling", float("nan")),
            "min ESS bulk": diagnostics.min_ess_bulk, "min ESS tail": diagnostics.min_ess_tail,
            "max R-hat": diagnostics.max_r_hat, "divergences": diagnostics.divergences,
            "REML in every HDI": bool(posterior.reml_check["reml_in_hdi"].all()),
            "min ESS(h²) per s": float(h2["ess_bulk"].min()) / whole,
            "posterior r_G env2 env4": summary.loc["corr:additive:env2:env4", "mean"],
        })  # fmt: skip
    if _r_available("MCMCglmm"):
        mc = _rscript(MCMCGLMM_WHEAT, WHEAT, 1, mcmcglmm_iterations, timeout=3600)
        if "seconds" in mc:
            per = mc["seconds"] / mc["iterations"]
            rows.append({
                "engine": f"MCMCglmm (13 000 it., from {mc['iterations']} timed)",
                "Bayesian whole fit s": 13_000 * per, "sampler": "Gibbs",
            })  # fmt: skip
    return pd.DataFrame(rows)
