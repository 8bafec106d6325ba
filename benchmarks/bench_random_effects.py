"""The Bayesian model with several random effects against MCMCglmm, and its scale.

Run through ``python benchmarks/run.py random_effects``. Every fit uses default settings
(4 chains × 1000 draws, the default tuning) on a fresh ``AnimalModel`` after a warm-up fit of
another model (compilation caches warm); the whole fit is timed: REML, compilation, sampling and
the exact draws of every effect afterwards. MCMCglmm's figures were measured on these machines
by whoever filed the issue (R is not installed here) and are quoted from it.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_animal.bayes.model import AnimalModel
from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# ESS(h²) per second of MCMCglmm, from the issue (13 000 iterations of model 4: 15.4 s, ESS 67)
MCMCGLMM_ESS_PER_S = {"bwt ~ 1": 21.0, "model 4": 4.4}


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def _whole_fit(make_model, seed: int = 2, **options) -> dict:
    start = time.perf_counter()
    model = _quiet(make_model)
    fit = _quiet(model.fit, progressbar=False, random_seed=seed, warn=False, **options)
    wall = time.perf_counter() - start
    summary = fit.summary()
    ratio = "h2" if "h2" in summary.index else summary.index[-1]
    steps = fit.idata.sample_stats["n_steps"].values
    ess = float(summary.loc[ratio, "ess_bulk"])
    return {
        "parameterisation": f"{fit.parameterisation} ({_engine(fit)})",
        "sampler": fit.sampler,
        "parallel_chains": int(fit.idata.attrs.get("cores", 1)),
        "whole_fit_s": wall,
        "sampling_s": fit.timings["sampling"],
        "ess_h2": ess,
        "ess_h2_per_s": ess / wall,
        "gradients_per_draw": float(steps.mean()),
        "divergences": fit.diagnostics.divergences,
        "max_r_hat": fit.diagnostics.max_r_hat,
        "h2_mean": float(summary.loc[ratio, "mean"]),
    }


def _engine(fit) -> str:
    notes = [n for n in fit.notes if n.startswith("engine: ")]
    return notes[0].removeprefix("engine: ") if notes else fit.parameterisation


def _installed(sampler: str) -> bool:
    return sampler == "pymc" or importlib.util.find_spec(sampler) is not None


def run_against_mcmcglmm() -> pd.DataFrame:
    """Gryphon one-component and model 4 (MCMCglmm's priors), gryphonRM (animal + pe)."""
    folder = SHARED / "gryphon"
    if not folder.is_dir():
        return pd.DataFrame()
    bwt = pd.read_csv(folder / "gryphon.csv")
    laydate = pd.read_csv(folder / "gryphonRM.csv")
    pedigree = folder / "gryphonped.csv"

    def gryphon(formula, data=bwt):
        return lambda: AnimalModel(formula, data, pedigree=pedigree, priors="inverse_gamma")

    one = gryphon("bwt ~ 1")
    model4 = gryphon("bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)")
    repeated = gryphon("laydate ~ 1 + C(age) + ide(animal)", laydate)
    # warm the caches (numba kernels, PyTensor's compiled C) on another model
    _quiet(gryphon("bwt ~ 1 + C(sex)")().fit, draws=20, tune=20, chains=1, progressbar=False)
    configurations = [
        ("gryphon bwt ~ 1 (pedigree)", "bwt ~ 1", one, {}),
        ("gryphon bwt ~ 1 (pedigree)", "bwt ~ 1", one, {"parameterisation": "noncentred"}),
        ("gryphon model 4", "model 4", model4, {}),
        ("gryphon model 4", "model 4", model4, {"parameterisation": "noncentred"}),
        ("gryphon model 4", "model 4", model4, {"parameterisation": "partial"}),
        ("gryphon model 4", "model 4", model4, {"sampler": "nutpie"}),
        ("gryphonRM animal + pe", None, repeated, {}),
        ("gryphonRM animal + pe", None, repeated, {"parameterisation": "noncentred"}),
    ]
    rows = []
    for data, anchor, make, options in configurations:
        if not _installed(options.get("sampler", "pymc")):
            print(f"  {options['sampler']} is not installed: skipped", file=sys.stderr)
            continue
        row = {"data": data, "default": not options} | _whole_fit(make, **options)
        mcmcglmm = MCMCGLMM_ESS_PER_S.get(anchor)
        row["MCMCglmm_ess_h2_per_s (issue)"] = mcmcglmm if mcmcglmm else np.nan
        row["speed_vs_MCMCglmm"] = row["ess_h2_per_s"] / mcmcglmm if mcmcglmm else np.nan
        rows.append(row)
        print(
            f"  {data} {row['parameterisation']} {row['sampler']}: "
            f"{row['whole_fit_s']:.0f} s, {row['ess_h2_per_s']:.1f} ESS/s",
            file=sys.stderr,
        )
    return pd.DataFrame(rows)


def _herd(n_animals: int, seed: int = 1):
    pedigree = simulate_herd_pedigree(n_animals=n_animals, n_generations=8, seed=seed)
    records = simulate_records(
        pedigree,
        variances={"additive": 1.0, "pe": 0.5, "residual": 1.5},
        records_per_animal=(1, 3),
        phenotyped=0.8,
        seed=seed + 1,
    )
    return records.data, pedigree[["id", "sire", "dam"]]


def _gradient_seconds(model: AnimalModel, parameterisation: str, repeats: int = 5) -> float:
    """Seconds per log-density gradient of the compiled PyMC model at its initial point."""
    import pymc as pm  # noqa: F401 - the model is built with it

    built = _quiet(model._build, parameterisation, *_engine_and_fixed(model, parameterisation))
    point = built.model.initial_point()
    dlogp = _quiet(built.model.compile_dlogp)
    dlogp(point)
    start = time.perf_counter()
    for _ in range(repeats):
        dlogp(point)
    return (time.perf_counter() - start) / repeats


def _engine_and_fixed(model: AnimalModel, parameterisation: str):
    _, engine, fixed, _ = model._resolve(parameterisation, "auto")
    return engine, fixed


def run_scale(
    whole_fit_animals: int = 20_000,
    gradient_sizes=(20_000, 100_000),
    noncentred_gradients_per_draw: float = np.nan,
) -> pd.DataFrame:
    """Animal + permanent environment on herd pedigrees: a whole default fit at 20 000
    animals; the cost per gradient of each parameterisation at every size, and the time of
    4 × 1 500 iterations projected from the gradients per draw (the marginal model's measured
    at 20 000 animals, the non-centred model's on gryphonRM, the same model shape)."""
    rows = []
    data, pedigree = _herd(whole_fit_animals)

    def make():
        return AnimalModel("y ~ 1 + x + ide(animal)", data, pedigree=pedigree)

    fit_row = {"animals": whole_fit_animals, "records": len(data)} | _whole_fit(make)
    print(
        f"  {whole_fit_animals} animals: whole fit {fit_row['whole_fit_s']:.0f} s", file=sys.stderr
    )
    steps_per_draw = {
        "marginal": fit_row["gradients_per_draw"],
        "noncentred": noncentred_gradients_per_draw,
    }
    rows.append(fit_row | {"kind": "whole default fit"})
    for n in gradient_sizes:
        data_n, pedigree_n = _herd(n)
        model = _quiet(AnimalModel, "y ~ 1 + x + ide(animal)", data_n, pedigree=pedigree_n)
        for parameterisation in ("marginal", "noncentred"):
            seconds = _gradient_seconds(model, parameterisation)
            per_draw = steps_per_draw.get(parameterisation, np.nan)
            rows.append(
                {
                    "kind": "gradient cost",
                    "animals": n,
                    "records": len(data_n),
                    "parameterisation": parameterisation,
                    "seconds_per_gradient": seconds,
                    "gradients_per_draw": per_draw,
                    "projected_4x1500_iterations_s": seconds * per_draw * 6000,
                }
            )
            print(
                f"  {n} animals {parameterisation}: {seconds * 1e3:.1f} ms per gradient",
                file=sys.stderr,
            )
    return pd.DataFrame(rows)


def run_sampler_choice(seeds=(1, 2, 3, 4)) -> pd.DataFrame:
    """The default sampler of each engine by measurement: every marginal model's default fit
    with nutpie on the hand-derived density and with PyMC's NUTS on the PyMC graph, side by
    side over ``seeds`` (gryphon, MCMCglmm's priors; and a shape the engines were not tuned
    on: 500 simulated animals, a third with no record, a cage-like group of 125 levels —
    ``bench_shapes``' 2-effect cell)."""
    from bench_shapes import FORMULAS, make_problem

    folder = SHARED / "gryphon"
    if not folder.is_dir():
        return pd.DataFrame()
    bwt = pd.read_csv(folder / "gryphon.csv")
    pedigree = folder / "gryphonped.csv"
    cage, cage_pedigree = make_problem(500, 2)

    def gryphon(formula):
        return lambda: AnimalModel(formula, bwt, pedigree=pedigree, priors="inverse_gamma")

    # warm the caches (numba kernels, PyTensor's compiled C) on another model
    _quiet(gryphon("bwt ~ 1 + C(sex)")().fit, draws=20, tune=20, chains=1, progressbar=False)
    rows = []
    for data, make in (
        ("gryphon bwt ~ 1 (spectral marginal)", gryphon("bwt ~ 1")),
        (
            "gryphon model 4 (sparse marginal)",
            gryphon("bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)"),
        ),
        (
            "500 animals, cage group (sparse marginal)",
            lambda: AnimalModel(FORMULAS[2], cage, pedigree=cage_pedigree, priors="inverse_gamma"),
        ),
    ):
        for sampler in ("nutpie", "pymc"):
            for seed in seeds:
                row = {"data": data, "seed": seed} | _whole_fit(make, seed, sampler=sampler)
                rows.append(row)
                print(
                    f"  {data} {sampler} {seed}: {row['ess_h2_per_s']:.1f} ESS/s", file=sys.stderr
                )
    table = pd.DataFrame(rows)
    medians = (
        table.groupby(["data", "sampler"], sort=False)[["ess_h2_per_s", "divergences"]]
        .median().reset_index().assign(seed="median")
    )  # fmt: skip
    rows = table.to_dict("records") + medians.to_dict("records")
    return pd.DataFrame(rows)
