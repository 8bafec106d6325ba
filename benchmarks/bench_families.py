"""Binary and count traits on the gryphon pedigree: the Bayesian fit beside MCMCglmm on the
same model and priors.

Run through ``python benchmarks/run.py families``. Three data sets, written to a temporary
folder: a threshold trait simulated on the gryphon pedigree (σ²A = 0.5, σ²byear = 0.2 on the
liability scale, about 28 % cases), the gryphon birth weights above their upper quartile (a
binary trait we did not make), and an overdispersed count simulated on the same pedigree
(σ²A = 0.3, σ²byear = 0.1, σ²units = 0.2). Priors: half-Cauchy(1) on every random effect's
SD — MCMCglmm's parameter-expanded ``V = 1, nu = 1, alpha.mu = 0, alpha.V = 1`` — and, for the
counts, inverse-gamma ``V = 1, nu = 0.002`` on the observation-level variance (MCMCglmm's R
structure). MCMCglmm: 53 000 iterations, burn-in 3 000, thin 50 (the issue's run length),
``family = "threshold"`` (the residual fixed at 1) or ``"poisson"``; its time is the
``MCMCglmm()`` call, ESS from ``coda::effectiveSize``. Ours: the whole fit in-process
(``AnimalModel`` to the summary, REML included) at default settings (4 chains × 3 000 draws for
the exact model — nutpie on its hand-derived joint density, nothing compiled per fit —, 1 000
for the Laplace one; a default run whose R-hat or ESS fails the diagnostics' limits samples 4
chains more, once: the chains column); ESS bulk. The first fit of the process (seed 1 of the
first data set) loads the package's compiled kernels and imports what the fit needs.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
from bench_shapes import _r_available, _rscript

from bayes_animal.simulate import simulate_records

GRYPHON = Path(__file__).resolve().parents[2] / "shared" / "data" / "gryphon"

MCMCGLMM = r"""
suppressMessages(library(MCMCglmm))
args <- commandArgs(TRUE)
data <- read.csv(args[1])
ped <- read.csv(args[2], colClasses = "character")
names(ped) <- c("animal", "sire", "dam")
ped[ped == "0"] <- NA
ped <- ped[, c("animal", "dam", "sire")]
data$animal <- factor(data$animal)
data$byear <- factor(data$byear)
family <- args[4]
formula <- as.formula(args[5])
if ("sex" %in% names(data)) data$sex <- factor(data$sex)
G <- list(V = 1, nu = 1, alpha.mu = 0, alpha.V = 1)
R <- if (family == "threshold") list(V = 1, fix = 1) else list(V = 1, nu = 0.002)
prior <- list(R = R, G = list(G1 = G, G2 = G))
set.seed(as.integer(args[3]))
start <- proc.time()[["elapsed"]]
fit <- MCMCglmm(formula, random = ~ animal + byear, family = family, pedigree = ped,
                data = data, prior = prior, nitt = 53000, burnin = 3000, thin = 50,
                verbose = FALSE)
elapsed <- proc.time()[["elapsed"]] - start
V <- fit$VCV
h2 <- V[, "animal"] / rowSums(V)
ess <- function(x) as.numeric(coda::effectiveSize(x))
cat(sprintf('{"seconds": %.4f, "ess_h2": %.2f, "h2": %.5f, "h2_sd": %.5f, "va": %.5f}\n',
            elapsed, ess(h2), mean(h2), sd(h2), mean(V[, "animal"])))
"""


def _datasets(folder: Path) -> list[dict]:
    """The three data sets (CSV files in ``folder``) and their models."""
    pedigree = pd.read_csv(GRYPHON / "gryphonped.csv", dtype=str)
    pedigree.columns = ["id", "sire", "dam"]
    pedigree = pedigree.fillna("0")
    pedigree.to_csv(folder / "pedigree.csv", index=False)
    binary = simulate_records(
        pedigree, variances={"additive": 0.5, "byear": 0.2}, groups={"byear": 30},
        mean=-1.0, seed=3, family="threshold",
    ).data  # fmt: skip
    counts = simulate_records(
        pedigree, variances={"additive": 0.3, "byear": 0.1, "residual": 0.2},
        groups={"byear": 30}, mean=1.0, seed=4, family="poisson",
    ).data  # fmt: skip
    large = simulate_records(
        pedigree, variances={"additive": 0.3, "byear": 0.1, "residual": 0.05},
        groups={"byear": 30}, mean=2.5, seed=6, family="poisson",
    ).data  # fmt: skip
    gryphon = pd.read_csv(GRYPHON / "gryphon.csv").dropna(subset=["bwt"])
    gryphon["heavy"] = (gryphon["bwt"] > gryphon["bwt"].quantile(0.75)).astype(int)
    sets = [
        ("binary, simulated", binary, "y ~ x + (1|byear)", "y ~ x", "threshold"),
        ("bwt > upper quartile", gryphon, "heavy ~ 1 + C(sex) + (1|byear)", "heavy ~ sex",
         "threshold"),
        ("counts, simulated", counts, "y ~ x + (1|byear)", "y ~ x", "poisson"),
        ("large counts, simulated", large, "y ~ x + (1|byear)", "y ~ x", "poisson"),
    ]  # fmt: skip
    out = []
    for name, data, formula, r_formula, family in sets:
        path = folder / f"{name.split(',')[0].split(' ')[0]}_{family}.csv"
        data.to_csv(path, index=False)
        out.append(
            {"name": name, "path": path, "data": data, "formula": formula,
             "r_formula": r_formula, "family": family}
        )  # fmt: skip
    return out


def _priors(family: str):
    from bayes_animal.bayes.priors import HalfStudentT, InverseGamma, Priors

    components = {"residual": InverseGamma(V=1.0, nu=0.002)} if family == "poisson" else {}
    return Priors(default=HalfStudentT(nu=1.0, scale=1.0), components=components)


def _ours(case: dict, pedigree: Path, seed: int, parameterisation: str) -> dict:
    from bayes_animal import AnimalModel

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        relationship = case.get("relationship", {"pedigree": str(pedigree)})
        model = AnimalModel(
            case["formula"], case["data"], family=case["family"],
            priors=_priors(case["family"]), **relationship,
        )  # fmt: skip
        fit = model.fit(parameterisation=parameterisation, random_seed=seed, progressbar=False)
    seconds = time.perf_counter() - start
    summary = fit.summary()
    sensitivity = fit.diagnostics.sensitivity  # the exact model's (None for the Laplace one)
    row = summary.loc["h2"]
    label = {"auto": "bayes_animal (auto)", "marginal": "bayes_animal (Laplace, approx.)"}
    return {
        "data": case["name"], "tool": label.get(parameterisation, parameterisation),
        "engine": fit.idata.attrs.get("model_options", "").split('"engine": "')[1].split('"')[0],
        "seed": seed, "chains": fit.idata.posterior.sizes["chain"], "whole_s": seconds,
        "h2_mean": row["mean"], "h2_sd": row["sd"],
        "ess_h2": row["ess_bulk"], "ess_h2_per_s": row["ess_bulk"] / seconds,
        "max_r_hat": fit.diagnostics.max_r_hat, "divergences": fit.diagnostics.divergences,
        "va_mean": summary.loc["sigma2:additive", "mean"],
        "laplace_khat": fit.idata.attrs.get("laplace_khat", float("nan")),
        "prior_sensitivity_va": (
            float("nan") if sensitivity is None else float(sensitivity["sigma2:additive"])
        ),
    }  # fmt: skip


#: The data sets of the ``families`` entry; ``families_large`` runs the fourth, large counts
#: (mean count about 19), where ``auto`` samples the latent values (``family_latent``).
FAMILIES = ("binary, simulated", "bwt > upper quartile", "counts, simulated")
LARGE = ("large counts, simulated",)


def run(seeds=(1, 2), names=FAMILIES) -> pd.DataFrame:
    """The data sets ``names``: ours (auto, and the Laplace marginal) and MCMCglmm, seed by
    seed."""
    rows = []
    r_ready = _r_available("MCMCglmm")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        cases = [case for case in _datasets(folder) if case["name"] in names]
        for case in cases:
            for seed in seeds:
                rows.append(_ours(case, folder / "pedigree.csv", seed, "auto"))
                rows.append(_ours(case, folder / "pedigree.csv", seed, "marginal"))
                if r_ready:
                    rows += _mcmcglmm(case, folder / "pedigree.csv", seed)
    return pd.DataFrame(rows)


def _mcmcglmm(case: dict, pedigree: Path, seed: int) -> list[dict]:
    """MCMCglmm's row for ``case`` (:data:`MCMCGLMM`; none, and a message, where it fails)."""
    mc = _rscript(
        MCMCGLMM, case["path"], pedigree, seed, case["family"], case["r_formula"], timeout=1800
    )
    return _mcmcglmm_rows(case, mc, seed, "MCMCglmm (53 000 it.)")


def _mcmcglmm_rows(case: dict, mc: dict, seed: int, tool: str) -> list[dict]:
    """The row of an MCMCglmm script's answer ``mc`` (none, and a message, where it failed)."""
    if "seconds" not in mc:
        print(f"MCMCglmm failed: {mc}")
        return []
    return [{
        "data": case["name"], "tool": tool, "engine": "Gibbs", "seed": seed,
        "whole_s": mc["seconds"], "h2_mean": mc["h2"], "h2_sd": mc["h2_sd"],
        "ess_h2": mc["ess_h2"], "ess_h2_per_s": mc["ess_h2"] / mc["seconds"], "va_mean": mc["va"],
    }]  # fmt: skip


def run_unseen(seeds=(1, 2), family: str = "poisson") -> pd.DataFrame:
    """A trait on a pedigree and group structure none of the family engines' choices was
    tuned on: the issue reproducer's pedigree (``simulate_pedigree(100, 4, 450, 40,
    seed=1)``, 1 900 animals of four generations, 40 sires a generation) and a 450-level group
    (a cage). ``family="poisson"``: counts of latent mean 3 (σ²A 0.4, σ²cage 0.2, σ²units
    0.08, seed 7); ``"threshold"``: the issue's example, a binary trait of about 20 % cases
    (liability mean −1.1, σ²A 0.4, σ²cage 0.2, the residual 1, seed 7: 19 % of 1 800
    records). Ours at default settings (``auto``) and MCMCglmm, the priors and run of
    :func:`run`. The group is written as ``byear``, the column :data:`MCMCGLMM` reads."""
    from bayes_animal.simulate import simulate_pedigree

    table = simulate_pedigree(
        n_founders=100, n_generations=4, n_per_generation=450, n_sires=40, seed=1
    )
    if family == "poisson":
        variances = {"additive": 0.4, "byear": 0.2, "residual": 0.08}
        mean, name = 3.0, "counts, 450 cages, 1 900 animals"
    elif family == "threshold":
        variances, mean = {"additive": 0.4, "byear": 0.2}, -1.1
        name = "binary (19 % cases), 450 cages, 1 900 animals"
    else:
        raise ValueError(f"family {family!r}: 'poisson' or 'threshold'")
    data = simulate_records(
        table, variances=variances, groups={"byear": 450}, mean=mean, seed=7, family=family
    ).data
    rows = []
    r_ready = _r_available("MCMCglmm")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        pedigree = folder / "pedigree.csv"
        table.to_csv(pedigree, index=False)
        path = folder / f"cage_{family}.csv"
        data.to_csv(path, index=False)
        case = {
            "name": name, "path": path, "data": data, "formula": "y ~ x + (1|byear)",
            "r_formula": "y ~ x", "family": family,
        }  # fmt: skip
        for seed in seeds:
            rows.append(_ours(case, pedigree, seed, "auto"))
            if r_ready:
                rows += _mcmcglmm(case, pedigree, seed)
    return pd.DataFrame(rows)


WHEAT = GRYPHON.parent / "wheat"

MCMCGLMM_WHEAT = r"""
suppressMessages(library(MCMCglmm))
args <- commandArgs(TRUE)
Y <- read.csv(args[1])
A <- as.matrix(read.csv(args[2], row.names = 1, check.names = FALSE))
Ainv <- as(solve(A), "dgCMatrix")
rownames(Ainv) <- colnames(Ainv) <- rownames(A)
Y$line <- factor(as.character(Y$line), levels = rownames(A))
G <- list(V = 1, nu = 1, alpha.mu = 0, alpha.V = 1)
prior <- list(R = list(V = 1, fix = 1), G = list(G1 = G))
set.seed(as.integer(args[3]))
nitt <- as.integer(args[4])  # 53 000: the run of `families`; fewer: its proportions kept
start <- proc.time()[["elapsed"]]
fit <- MCMCglmm(high ~ 1, random = ~ line, family = "threshold", ginverse = list(line = Ainv),
                data = Y, prior = prior, nitt = nitt, burnin = nitt %/% 53 * 3,
                thin = max(1, nitt %/% 1060), verbose = FALSE)
elapsed <- proc.time()[["elapsed"]] - start
V <- fit$VCV
h2 <- V[, "line"] / rowSums(V)
cat(sprintf(paste0('{"seconds": %.4f, "iterations": %d, "ess_h2": %.2f, "h2": %.5f, ',
                   '"h2_sd": %.5f, "va": %.5f}\n'),
            elapsed, nitt, coda::effectiveSize(h2), mean(h2), sd(h2), mean(V[, "line"])))
"""


def run_wheat(seeds=(1, 2, 3, 4), mcmcglmm_iterations: int = 53_000) -> pd.DataFrame:
    """A binary trait on data we did not make: the BGLR wheat lines (599 lines, their A given
    as a file, ``../shared/data/wheat``), ``high`` = grain yield in environment 2 above 0.8
    (its standardised scale: 19 % of the lines), ``high ~ 1`` with the lines' additive effect
    on A. Ours at default settings (``auto``) with the priors of :func:`run`; MCMCglmm's
    threshold model on the same A (its inverse as ``ginverse``) and priors, seed 1,
    ``mcmcglmm_iterations`` iterations (burn-in 3/53 of them, 1 000 kept: the proportions of
    its usual 53 000; A⁻¹ is dense, so each iteration factors a dense 599 × 599 matrix and a
    whole run takes about an hour here), its ESS(h²) per second from that run."""
    wheat = pd.read_csv(WHEAT / "wheat_Y.csv")
    data = wheat.assign(high=(wheat["env2"] > 0.8).astype(int))
    relmat = WHEAT / "wheat_A.csv"
    rows = []
    r_ready = _r_available("MCMCglmm")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "wheat_high.csv"
        data.to_csv(path, index=False)
        case = {
            "name": f"wheat env2 > 0.8 ({data['high'].mean():.0%} of 599 lines), A as a file",
            "path": path, "data": data, "formula": "high ~ 1", "family": "threshold",
            "relationship": {"relmat": str(relmat), "animal": "line"},
        }  # fmt: skip
        for seed in seeds:
            rows.append(_ours(case, relmat, seed, "auto"))
        if r_ready:
            mc = _rscript(MCMCGLMM_WHEAT, path, relmat, 1, mcmcglmm_iterations, timeout=7200)
            rows += _mcmcglmm_rows(case, mc, 1, f"MCMCglmm ({mcmcglmm_iterations:,} it.)")
    return pd.DataFrame(rows)


def run_scale(sizes=(20_000,)) -> pd.DataFrame:
    """A threshold trait with a group effect on a herd pedigree of ``sizes`` animals: REML
    (Laplace) and the whole Bayesian fit at default settings (``auto``), in-process."""
    from bayes_animal import AnimalModel, reml
    from bayes_animal.simulate import simulate_herd_pedigree

    rows = []
    for n in sizes:
        pedigree = simulate_herd_pedigree(n_animals=n, seed=5)
        data = simulate_records(
            pedigree, variances={"additive": 0.5, "group": 0.2}, groups={"group": 200},
            mean=-0.8, seed=5, family="threshold",
        ).data  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            fitted = reml("y ~ x + (1|group)", data, pedigree=pedigree, family="threshold")
            reml_s = time.perf_counter() - start
            start = time.perf_counter()
            model = AnimalModel("y ~ x + (1|group)", data, pedigree=pedigree, family="threshold")
            fit = model.fit(random_seed=1, progressbar=False)
            whole = time.perf_counter() - start
        summary = fit.summary()
        rows.append({
            "animals": n, "records": len(data), "cases": float(data["y"].mean()),
            "reml_s": reml_s, "reml_h2": fitted.ratios.loc["h2", "estimate"],
            "engine": json.loads(fit.idata.attrs["model_options"])["engine"],
            "whole_fit_s": whole, "sampling_s": fit.timings["sampling"],
            "h2_mean": summary.loc["h2", "mean"], "ess_h2": summary.loc["h2", "ess_bulk"],
            "max_r_hat": fit.diagnostics.max_r_hat, "divergences": fit.diagnostics.divergences,
        })  # fmt: skip
    return pd.DataFrame(rows)


def _engine_cases(folder: Path) -> list[dict]:
    """Data sets where the Laplace approximation might serve, none made for it: a binary trait
    of the gryphon data (tarsus above its median), large simulated counts on the gryphon
    pedigree (a near-Gaussian conditional), 30 groups of 20 large counts without a pedigree
    (the approximation at its best) and a threshold trait on 5 000 animals of a herd
    pedigree."""
    import numpy as np

    from bayes_animal.simulate import simulate_herd_pedigree

    pedigree = pd.read_csv(GRYPHON / "gryphonped.csv", dtype=str)
    pedigree.columns = ["id", "sire", "dam"]
    pedigree = pedigree.fillna("0")
    pedigree.to_csv(folder / "pedigree.csv", index=False)
    gryphon = pd.read_csv(GRYPHON / "gryphon.csv").dropna(subset=["tarsus"])
    gryphon["long"] = (gryphon["tarsus"] > gryphon["tarsus"].median()).astype(int)
    large = simulate_records(
        pedigree, variances={"additive": 0.3, "byear": 0.1, "residual": 0.05},
        groups={"byear": 30}, mean=2.5, seed=6, family="poisson",
    ).data  # fmt: skip
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(30), 20)
    x = rng.normal(size=len(group))
    groups = pd.DataFrame({
        "g": [f"g{k}" for k in group], "x": x,
        "y": rng.poisson(np.exp(3.0 + 0.2 * x + rng.normal(0.0, 0.4, 30)[group])),
    })  # fmt: skip
    herd = simulate_herd_pedigree(n_animals=5_000, seed=5)
    herd_records = simulate_records(
        herd, variances={"additive": 0.5, "group": 0.2}, groups={"group": 50},
        mean=-0.8, seed=5, family="threshold",
    ).data  # fmt: skip
    herd.to_csv(folder / "herd.csv", index=False)
    pe = {"overdispersion": "none"}
    return [
        {"name": "tarsus > median (gryphon)", "data": gryphon, "pedigree": "pedigree.csv",
         "formula": "long ~ 1 + C(sex) + (1|byear)", "family": "threshold", "options": {}},
        {"name": "large counts, gryphon pedigree", "data": large, "pedigree": "pedigree.csv",
         "formula": "y ~ x + (1|byear)", "family": "poisson", "options": {}},
        {"name": "30 groups of 20 large counts", "data": groups, "pedigree": None,
         "formula": "y ~ x + (1|g)", "family": "poisson", "options": pe},
        {"name": "threshold, 5 000 animals", "data": herd_records, "pedigree": "herd.csv",
         "formula": "y ~ x + (1|group)", "family": "threshold", "options": {}},
    ]  # fmt: skip


def run_engines(seed: int = 1) -> pd.DataFrame:
    """Each data set of :func:`_engine_cases`: the Laplace approximation's check (what ``auto``
    chose by before the exact joint density) and the whole default fit under each engine —
    the exact joint (``auto``) and the Laplace marginal model (``marginal``) — in-process."""
    from bayes_animal import AnimalModel

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for case in _engine_cases(folder):
            options = dict(case["options"], family=case["family"])
            if case["pedigree"] is not None:
                options["pedigree"] = str(folder / case["pedigree"])
            arguments = (case["formula"], case["data"])

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                checked = AnimalModel(*arguments, **options)
                checked.reml  # noqa: B018 (REML apart from the check's time)
                start = time.perf_counter()
                check = checked.laplace_check()
                check_s = time.perf_counter() - start
                for parameterisation in ("auto", "marginal"):
                    start = time.perf_counter()
                    fit = AnimalModel(*arguments, **options).fit(
                        parameterisation=parameterisation, random_seed=seed, progressbar=False
                    )
                    seconds = time.perf_counter() - start
                    summary = fit.summary()
                    quantity = "h2" if "h2" in summary.index else summary.index[0]
                    rows.append({
                        "data": case["name"], "records": len(case["data"]),
                        "check_khat": check.khat, "check_tilt": check.tilt,
                        "check_passes": check.passes, "check_s": check_s,
                        "engine": json.loads(fit.idata.attrs["model_options"])["engine"],
                        "whole_s": seconds, "quantity": quantity,
                        "mean": summary.loc[quantity, "mean"],
                        "ess": summary.loc[quantity, "ess_bulk"],
                        "ess_per_s": summary.loc[quantity, "ess_bulk"] / seconds,
                        "max_r_hat": fit.diagnostics.max_r_hat,
                        "divergences": fit.diagnostics.divergences,
                        "posterior_khat": fit.idata.attrs.get("laplace_khat", float("nan")),
                    })  # fmt: skip
                    print(rows[-1], flush=True)
    return pd.DataFrame(rows)


#: (mean of the latent scale, observation-level variance) of the counts `run_latent` fits on
#: the gryphon pedigree (σ²A 0.3, 30 birth years of σ² 0.1, seed 6): from a few counts a record
#: to some fifty, and the observation-level variance from twice the Poisson noise's share of a
#: record's latent variance to about equal to it.
LATENT_CASES = ((0.5, 0.2), (2.5, 0.2), (1.5, 0.1), (2.5, 0.05), (3.5, 0.05))


def run_latent(seeds_of_the_hard_case=(1, 2, 3)) -> pd.DataFrame:
    """Counts on the gryphon pedigree (:data:`LATENT_CASES`) under both exact engines — the
    non-centred joint and the latent values' model — at default settings, in-process: how much
    of their latent variance the records resolve (what ``auto`` reads), each fit's time,
    chains (a default run whose diagnostics fail is extended once), largest R-hat and
    smallest bulk or tail ESS over σ²A, σ²units and h², and ESS per second. The case the
    non-centred joint did not settle (mean 2.5, σ²units 0.05; ``family_engines``' large
    counts) runs with every seed given, the others with seed 1."""
    import numpy as np

    from bayes_animal import AnimalModel
    from bayes_animal.choice import LATENT_FROM

    pedigree = pd.read_csv(GRYPHON / "gryphonped.csv", dtype=str)
    pedigree.columns = ["id", "sire", "dam"]
    pedigree = pedigree.fillna("0")
    keys = ["sigma2:additive", "sigma2:residual", "h2"]
    rows = []
    for mean, residual in LATENT_CASES:
        data = simulate_records(
            pedigree, variances={"additive": 0.3, "byear": 0.1, "residual": residual},
            groups={"byear": 30}, mean=mean, seed=6, family="poisson",
        ).data  # fmt: skip
        hard = (mean, residual) == (2.5, 0.05)
        for seed in seeds_of_the_hard_case if hard else (1,):
            for parameterisation in ("noncentred", "latent"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start = time.perf_counter()
                    model = AnimalModel(
                        "y ~ x + (1|byear)", data, pedigree=pedigree, family="poisson"
                    )
                    information = model._latent_information()
                    fit = model.fit(
                        parameterisation=parameterisation, random_seed=seed, progressbar=False
                    )
                    seconds = time.perf_counter() - start
                summary = fit.summary()
                smallest = float(np.min(summary.loc[keys, ["ess_bulk", "ess_tail"]].values))
                rows.append({
                    "latent mean": mean, "σ²units": residual, "mean count": data["y"].mean(),
                    "resolved": information,
                    "auto": "latent" if information >= LATENT_FROM else "noncentred",
                    "engine": parameterisation, "seed": seed, "whole_s": seconds,
                    "chains": fit.idata.posterior.sizes["chain"],
                    "max_r_hat": float(summary.loc[keys, "r_hat"].max()),
                    "min_ess": smallest, "min_ess_per_s": smallest / seconds,
                    "ess_h2_per_s": summary.loc["h2", "ess_bulk"] / seconds,
                    "h2": summary.loc["h2", "mean"],
                    "divergences": fit.diagnostics.divergences,
                })  # fmt: skip
                print(rows[-1], flush=True)
    return pd.DataFrame(rows)
