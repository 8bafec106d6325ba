"""Run the benchmarks and write their tables to benchmarks/results/.

Usage: ``python benchmarks/run.py [reml ...] [--quick]`` (``make bench`` runs them all).
Each table holds numbers measured in one run on this machine, side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"


def _markdown(frame) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def _absent(label: str, *folders: Path) -> bool:
    """True, and says so, where a folder of ../shared/data the entry needs is not present."""
    if all(folder.is_dir() for folder in folders):
        return False
    print(f"shared/data/{label} is not present: skipped", file=sys.stderr)
    return True


def _write(name: str, title: str, frame, notes: str = "") -> None:
    RESULTS.mkdir(exist_ok=True)
    frame.to_csv(RESULTS / f"{name}.csv", index=False)
    header = (
        f"# {title}\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}\n\n"
    )
    (RESULTS / f"{name}.md").write_text(header + _markdown(frame) + "\n\n" + notes)
    print(header + frame.to_string(index=False) + "\n")


def reml(quick: bool) -> None:
    import bench_reml

    sizes = (500, 1000) if quick else (500, 1000, 2000, 4000)
    table = bench_reml.run(sizes=sizes)
    _write(
        "reml",
        "REML by N (eigendecomposition and maximisation separately)",
        table,
        "eigh_Nthr_s: numpy eigh under an N-thread BLAS limit. maximise_s: grid + Newton on "
        "the profiled REML. naive_dense_reml_s: Nelder-Mead on an O(n³) dense likelihood "
        "(the way a prototype would do it).\n",
    )


def pedigree(quick: bool) -> None:
    import bench_pedigree

    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    _write(
        "pedigree",
        "Pedigree checks, inbreeding (Meuwissen-Luo) and sparse A-inverse",
        bench_pedigree.run(sizes=sizes),
        "Simulated pedigrees: 10 generations of random mating with few sires "
        "(simulate_pedigree). check_and_sort_s: reading, checks and parents-first sort.\n",
    )
    shape = (500, 2000) if quick else (1000, 10_000)
    _write(
        "genomic", "VanRaden's G (with its eigenvalue check)", bench_pedigree.run_genomic(*shape)
    )


def sampling(quick: bool) -> None:
    import bench_sampling

    sizes = (300, 1000) if quick else (300, 1000, 2000, 4000)
    _write(
        "sampling",
        "NUTS: parameterisation × sampler × N (second, warm run of each)",
        bench_sampling.run(sizes=sizes, noncentred_up_to=1000),
        "Simulated reference data (seed 3). 4 chains × 1000 draws after 1000 tuning steps. "
        "compile_s: pm.sample's wall time minus its sampling time (graph compilation, "
        "initialisation, conversion). conditional_s: exact draws of b and u afterwards "
        "(marginal model). The non-centred dense model is O(q²) per gradient and mixes badly "
        "on this nearly singular A (minutes per fit at N = 1000): it is run up to N = 1000 "
        "only.\n",
    )
    _write(
        "sampling_gryphon",
        "Gryphon birth weight with the pedigree (MCMCglmm's prior)",
        bench_sampling.run_gryphon(),
    )


_RRBLUP = (
    "rrBLUP's 5.3 s is the time recorded in shared/data/seed_sim/README.md and quoted by "
    "the issue (R is not installed on these machines); every other number is measured in "
    "this run. "
)
_BEFORE = (
    "'before' is the package at commit {commit} (PyMC's NUTS on the PyMC graph by default), "
    "run from a git worktree with the same Python and libraries. "
)


def fit(quick: bool) -> None:
    import bench_fit

    if _absent("seed_sim", bench_fit.SHARED):
        return
    rrblup = _RRBLUP
    before = _BEFORE.format(commit=bench_fit.BEFORE_COMMIT)
    with bench_fit._before_checkout() as checkout:
        _write(
            "fit_cli",
            "The whole `bayes-animal fit` command on shared/data/seed_sim, before and after",
            bench_fit.run_whole(checkout, repeats=3 if quick else 5),
            "Start to finish in a fresh process, caches warm (one run first), configurations "
            "in turn: reading A.csv, REML, NUTS (4 chains × 1000 draws), draws of b and u, "
            "summary.json, ebv.csv, ranking.csv, posterior.nc and the two PNGs. "
            + before
            + rrblup
            + "The machine's speed drifts by ±30 % from one run to the next while rrBLUP's "
            "figure is fixed: the issue timed the 'before' fit at 10.3 s on the machine where "
            "rrBLUP took 5.3 s, so the last two columns estimate rrBLUP at this run's speed as "
            "5.3 s × ('before' median / 10.3 s) — an estimate, not a measurement.\n",
        )
        _write(
            "fit_stages",
            "`bayes-animal fit` on seed_sim stage by stage, before and after",
            bench_fit.run_stages(checkout, repeats=2 if quick else 3),
            "Median of fresh processes (benchmarks/fit_stage_probe.py) after a warm-up run; "
            "'total' is the process's wall time, and the row before it what the stages leave "
            "out (starting Python, and its finalisation at exit). 'compile, cold cache' and "
            "'total, cold cache' from one more run with a fresh HOME, XDG cache and config, "
            "numba cache and PyTensor compile directory. 'imports (sampler, …)' is what each "
            "version imports before it samples: 'after', nutpie without ArviZ and xarray; "
            "its summary's imports (arviz-stats, SciPy) happen while the chain groups run in "
            "two child processes, so they count in its 'sampling' row. " + before + "\n",
        )
        _write(
            "fit_cold",
            "First run on a cold cache against the same command warm",
            bench_fit.run_cold(checkout, repeats=1 if quick else 2),
            "Cold: a fresh HOME, XDG_CACHE_HOME, XDG_CONFIG_HOME, NUMBA_CACHE_DIR, "
            "MPLCONFIGDIR and PyTensor compiledir for each run; warm: the same command again "
            "with the cache the cold run left. " + before + "\n",
        )
    load(quick)
    reml_cli(quick)


def load(quick: bool) -> None:
    import bench_fit

    _write(
        "fit_load",
        "`reml` and `fit` on an idle machine and with another process busy on one core",
        bench_fit.run_under_load(repeats=2 if quick else 3),
        "The busy process is `python -c 'while True: pass'`. 'default threads' is the package's "
        "rule (linalg/threads: the eigendecomposition on the cores other processes leave free, "
        "one BLAS thread for the sparse engine's dense blocks below order 2 000; the chain "
        "groups and the figures in child processes only when a core is free); "
        "BAYES_ANIMAL_THREADS=1 forces one BLAS thread. pyarrow's CSV reader runs on its own "
        "threads in both (they wait for a core rather than spin). Run to run, the two rows of "
        "each command under load have come out either way round by 5-15 %, so one run "
        "does not order them.\n",
    )


def reml_cli(quick: bool) -> None:
    import bench_fit

    _write(
        "reml_cli",
        "The whole `bayes-animal reml` command on shared/data/seed_sim, before and after",
        bench_fit.run_reml(repeats=3 if quick else 9),
        _BEFORE.format(commit=bench_fit.BEFORE_COMMIT)
        + _RRBLUP
        + "'rrBLUP at this run's speed' is 5.3 s scaled by the 'before' median over the "
        "issue's 0.98 s for that same version (5.4× rrBLUP), since this machine's speed drifts "
        "by ±30 % between runs: an estimate. The A.npz row reads the same matrix written by "
        "`bayes-animal relmat --out A.npz`. 'the floor' is the least any Python "
        "implementation of this path does (bench_fit.FLOOR_SCRIPT): start Python, import NumPy "
        "and pyarrow, parse A.csv into one array, read the records and eigendecompose A once, "
        "with nothing checked, no likelihood and no output. Both packages' bytecode is compiled "
        "before timing (PYTHONDONTWRITEBYTECODE is set on these machines).\n",
    )


def samplers(quick: bool) -> None:
    import bench_random_effects

    _write(
        "sampler_choice",
        "Default sampler by engine: nutpie on the hand-derived density against PyMC's NUTS",
        bench_random_effects.run_sampler_choice(),
        "Whole default fit (4 chains × 1000 draws, each sampler's default tuning; a default "
        "run whose diagnostics fail draws 4 chains more) with MCMCglmm's priors, seeds 1–4 "
        "and their median, on the gryphon data and on `bench_shapes`' 500-animal cell with a "
        "cage-like group. ess_h2_per_s: bulk ESS of h² per second of the whole fit. The "
        "faster one per engine by the medians is bayes_animal.bayes.model.DEFAULT_SAMPLERS. "
        "Run: `python benchmarks/run.py samplers` (about 9 min).\n",
    )


def random_effects(quick: bool) -> None:
    import bench_random_effects

    mcmcglmm = bench_random_effects.run_against_mcmcglmm()
    _write(
        "sampling_random_effects",
        "The Bayesian model with several random effects against MCMCglmm (default settings)",
        mcmcglmm,
        "Whole fit = REML + compile + sampling + exact draws of every effect, on a fresh model "
        "after a warm-up fit of another one (caches warm); 4 chains × 1000 draws, default "
        "tuning, MCMCglmm's priors (V = 1, nu = 0.002) on the gryphon. ESS(h²) per second of "
        "the whole fit. MCMCglmm's ESS(h²)/s was measured on these machines by the issue's "
        "author (model 4: 13 000 iterations in 15.4 s, ESS 67; one component: 21/s); R is "
        "not installed here. default = what parameterisation='auto' and the default sampler "
        "chose.\n",
    )
    repeated = (
        mcmcglmm[
            mcmcglmm["data"].str.startswith("gryphonRM")
            & mcmcglmm["parameterisation"].str.startswith("noncentred")
        ]
        if len(mcmcglmm)
        else mcmcglmm
    )
    per_draw = float(repeated["gradients_per_draw"].iloc[0]) if len(repeated) else float("nan")
    _write(
        "sampling_scale",
        "Animal + permanent environment at scale (herd pedigrees, 1–3 records per animal)",
        bench_random_effects.run_scale(
            whole_fit_animals=5_000 if quick else 20_000,
            gradient_sizes=(5_000,) if quick else (20_000, 100_000),
            noncentred_gradients_per_draw=per_draw,
        ),
        "One whole default fit at 20 000 animals; at every size the seconds per gradient of "
        "the log density of each parameterisation (PyMC's compiled dlogp at the initial "
        "point) and the time of 4 × 1 500 iterations projected from the gradients per draw "
        "(marginal: measured in the 20 000-animal fit; non-centred: measured on gryphonRM).\n",
    )


def many(quick: bool) -> None:
    import bench_many

    _write(
        "many_reml",
        "REML for many traits on one relationship matrix (N = 1 000, 2 cores)",
        bench_many.run_reml(n_traits=200 if quick else 1000),
        "Simulated traits (h² from 0.05 to 0.9) on the reference simulation's A. Whole "
        "process: the median of three runs after a warm-up, reading pheno.csv (1 000 trait "
        "columns) and A.csv included. rrBLUP's loop: the issue's 5.3 s per trait (its "
        "mixed.solve on N = 1 000, measured there; R is not installed here).\n",
    )
    _write(
        "many_bayes",
        "Bayesian fits of many traits (N = 500, default settings: 4 chains × 1 000 draws)",
        bench_many.run_bayes(n_traits=10 if quick else 40, n=500),
        "fit_many on simulated traits; one task per trait. Dask rows: a LocalCluster of "
        "worker processes with one thread each on this 2-core machine. 40 traits, not the "
        "issue's 100, to fit the session's time: seconds_per_trait is what scales.\n",
    )


def ranking(quick: bool) -> None:
    import bench_ranking

    _write(
        "ranking",
        "Ranking from posterior draws (vectorised over draws)",
        bench_ranking.run(sizes=(1000,) if quick else (1000, 10_000)),
        "Per animal: mean, SD, 95 % HDI, expected/median rank, 90 % rank interval, "
        "P(top k), P(u > t); selections by mean, by probability and by REML BLUP with the "
        "posterior of their mean breeding value.\n",
    )


def mme(quick: bool) -> None:
    import bench_mme

    _write(
        "mme_gryphon",
        "REML of the gryphon models (ASReml's models 1-4 and the lay-date model)",
        bench_mme.run_gryphon(repeats=3 if quick else 7),
        "fit_s: median in-process time of reml(...) after a warm-up, reading the pedigree "
        "(gryphonped.csv) and building the design included. iterations: AI iterations "
        "(sparse) or likelihood evaluations (spectral).\n",
    )
    _write(
        "mme_single",
        "One additive effect on a pedigree of 2 000 animals: our engines against lme4",
        bench_mme.run_single_component(),
        "Simulated herd pedigree (simulate_herd_pedigree, 6 generations), one record per "
        "animal. lme4's 0.1 s is the figure quoted in the issue (R is not installed on these "
        "machines); vs_lme4 > 1 means faster than lme4.\n",
    )
    cases = (
        ((10_000, "pe"), (100_000, "pe"))
        if quick
        else ((10_000, "pe"), (100_000, "pe"), (1_000_000, "single"))
    )
    _write(
        "mme_scale",
        "REML on simulated herd pedigrees up to 10⁶ animals (a fresh process per fit)",
        bench_mme.run_scale(cases),
        "simulate_herd_pedigree (10 generations) and simulate_records: 60 % of the animals "
        "phenotyped; animal + pe: 1-3 records each (permanent environment), animal: one "
        "record each. whole_fit_s: reml(...) from the pedigree table to the estimates "
        "(pev=False), pedigree_s: reading, checking and inbreeding; analyse_s: AMD ordering "
        "and symbolic factorisation; peak_memory_gb: ru_maxrss of the process. True values: "
        "additive 2, pe 1, residual 3.\n",
    )


def factor(quick: bool) -> None:
    import bench_factor

    _write(
        "factor",
        "Sparse factorisation of a 100 000-animal mixed-model matrix, by library",
        bench_factor.run(20_000 if quick else 100_000),
        "Animal + permanent environment on a simulated herd pedigree. analyse_s: the one-off "
        "work (ordering, symbolic analysis; for qdldl and pypardiso a first factorisation "
        "too); refactor_s: a numeric factorisation with new values; selected_inverse_s: the "
        "entries of C⁻¹ the REML score needs (NaN: not offered). Run in an environment with "
        "the candidates installed (pip install qdldl pypardiso sparsax).\n",
    )


def shapes(quick: bool) -> None:
    import bench_shapes
    import pandas as pd

    cells = bench_shapes.parse_cells(os.environ.get("BAYES_ANIMAL_SHAPES_CELLS", ""))
    table = bench_shapes.run(quick=quick, cells=cells or None)
    table.insert(0, "measured", f"{datetime.now(UTC):%Y-%m-%d %H:%M}")
    if cells and (RESULTS / "shapes.csv").is_file():  # merge into the committed grid
        keys = ["relationship", "effects", "animals"]
        old = pd.read_csv(RESULTS / "shapes.csv")
        if "measured" not in old:
            old.insert(0, "measured", "earlier run")
        kept = old.merge(table[keys], on=keys, how="left", indicator=True)
        old = old[(kept["_merge"] == "left_only").to_numpy()]
        table = pd.concat([old, table], ignore_index=True)
        order = {"pedigree": 0, "A.csv": 1, "G.csv": 2}
        table = table.sort_values(
            ["animals", "relationship", "effects"],
            key=lambda c: c.map(order) if c.name == "relationship" else c,
            kind="stable",
        ).reset_index(drop=True)
    _write(
        "shapes",
        "Shapes the package was not tuned on, beside lme4 and MCMCglmm (same run per row)",
        table,
        "See benchmarks/bench_shapes.py for the models and the peers' settings. "
        "reml_inprocess_s: the fit with the files already read (median of 3); reml_whole_s: "
        "the `bayes-animal reml` process (median of 3, caches warm); peak memory of its last "
        "run (/usr/bin/time -v). fit_*: the whole `bayes-animal fit` process, MCMCglmm's "
        "priors, seed 1; ESS(h²) bulk per second of the whole process. lme4: the "
        "relationship-matrix trick (sparse chol(A) of the phenotyped animals) timed in R from "
        "the data in memory to the fitted model; MCMCglmm: the MCMCglmm() call (a given "
        "matrix's sparse inverse included), 13 000 iterations, burn-in 3 000, thin 10, ESS "
        "by coda. inprocess_vs_lme4 and ours_vs_mcmcglmm_ess_per_s are ratios of this run "
        "(> 1: ours faster), each within its row's run (`measured`: when; "
        "BAYES_ANIMAL_SHAPES_CELLS=kind:effects:animals,... reruns those rows only and merges "
        "them into this table). A CSV or G of 20 000 animals (3 GB dense) is not written; the "
        "20 000-animal Bayesian fits run only with BAYES_ANIMAL_SHAPES_FULL=1.\n",
    )


def shapes_large(quick: bool) -> None:
    import bench_shapes

    _write(
        "shapes_large",
        "The shape grid at 20 000 animals (pedigree): REML, beside nothing",
        bench_shapes.run(quick=False, sizes=(20_000,)),
        "As `shapes`, at 20 000 animals. Only the pedigree runs here (a dense A or G of 20 000 "
        "animals is a 3 GB CSV), and lme4's trick needs that dense matrix; the Bayesian fits "
        "run with BAYES_ANIMAL_SHAPES_FULL=1 (minutes each: not in this table unless set).\n",
    )


def traits(quick: bool) -> None:
    import bench_shapes

    _write(
        "traits_lme4",
        "17 traits on 2 000 animals with the pedigree's A as a file: the whole process, "
        "beside one R process running lme4 over the same traits",
        bench_shapes.run_traits(repeats=2 if quick else 3),
        "Ours: `bayes-animal reml --traits 'trait*' --relmat A.csv --out DIR` (reading both "
        "files, the chooser's engine per missing-pattern group, every trait, traits.csv); "
        "R: `Rscript` reading both files, sparse chol(A) of the phenotyped animals once, then "
        "lme4's relmat trick trait by trait (lFormula, mkLmerDevfun, optimizeLmer). Ours: "
        "median of the repeats after a warm-up; R: one run (minutes). lme4_vs_ours > 1: ours "
        "faster. max_h2_difference: the "
        "largest |h² ours − h² lme4| over the traits.\n",
    )


def reproducer(quick: bool) -> None:
    import bench_shapes

    _write(
        "reproducer",
        "The issue's reproducer (1 900 animals, a 450-level group): the whole fit from A.csv "
        "and from the pedigree, beside MCMCglmm",
        bench_shapes.run_reproducer(),
        "`bayes-animal fit --prior inverse_gamma --seed 1` (4 chains × 1 000 draws), the "
        "whole process; MCMCglmm: the MCMCglmm() call with the pedigree, 13 000 iterations, "
        "burn-in 3 000, thin 10, V = 1, nu = 0.002 for each component. ESS bulk of h² per "
        "second; vs_mcmcglmm: the ratio to MCMCglmm's in this run.\n",
    )


def noncentred(quick: bool) -> None:
    import bench_shapes

    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "gryphon"
    if _absent("gryphon", folder):
        return
    _write(
        "noncentred",
        "The non-centred pedigree model on gryphon `bwt ~ 1`, by sampler, beside MCMCglmm",
        bench_shapes.run_noncentred(folder, seeds=(1, 2) if quick else (1, 2, 3)),
        "MCMCglmm's priors (inverse-gamma, V = 1, nu = 0.002) in both; 4 chains × 1000 draws "
        "after 1000 tuning steps (target acceptance 0.9); ESS bulk of h². sampling_s: the "
        "sampler's own time (MCMCglmm: the MCMCglmm() call); whole_s: model, REML, compile, "
        "sampling and summary in one fresh process. The issue's target is 100 ESS(h²) per "
        "second of sampling.\n",
    )


def seeds(quick: bool) -> None:
    import bench_shapes

    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "gryphon"
    if _absent("gryphon", folder):
        return
    _write(
        "model4_seeds",
        "Gryphon model 4 with MCMCglmm's priors over seeds: what a user will see",
        bench_shapes.run_model4_seeds(folder, seeds=(1, 2) if quick else (1, 2, 3, 4)),
        "`bayes-animal fit --prior inverse_gamma --seed S` on `bwt ~ 1 + C(sex) + (1 | byear) + "
        "(1 | mother)` (4 chains × 1 000 draws, the default sampler), the whole process; "
        "diagnostics from summary.json (every quantity: min ESS bulk and tail, max R-hat); "
        "MCMCglmm: the MCMCglmm() call, 13 000 iterations, burn-in 3 000, thin 10, V = 1, "
        "nu = 0.002 on each component, set.seed(S). ESS(h²) bulk per second.\n",
    )


def multitrait(quick: bool) -> None:
    import bench_multitrait

    if _absent("gryphon", bench_multitrait.GRYPHON):
        return
    _write(
        "multitrait_reml",
        "Several traits: REML of the gryphon bivariate models",
        bench_multitrait.run_reml(),
        "In-process: best of 5 after a warm-up; command: `bayes-animal reml --json` as a whole "
        "process. The issue's targets: ≤ 0.5 s in-process for the bivariate model (torch-"
        "openreml 24.4 s, asterism 189 s: the issue's figures, not measured here), ≤ 1 s for "
        "the tutorial's model with three unstructured matrices.\n",
    )
    bayes_table = bench_multitrait.run_bayes(seeds=(1, 2) if quick else (1, 2, 3, 4))
    rates = ["ess_ra_per_s", "ess_h2_bwt_per_s", "ess_h2_tarsus_per_s"]
    medians = bayes_table.groupby("tool")[rates].median().reset_index().assign(seed="median")
    _write(
        "multitrait",
        "Several traits: the gryphon bivariate model under NUTS, beside MCMCglmm",
        pd.concat([bayes_table, medians], ignore_index=True),
        "`bayes-animal fit --prior inverse_gamma` (inverse-Wishart V = I, nu = 1.002 on G and "
        "R, MCMCglmm's usual prior; 4 chains × 1 000 draws after 300 tuning steps, nutpie on "
        "the hand-derived density), the whole process; MCMCglmm: `us(trait):animal`, "
        "`us(trait):units`, the same prior, 13 000 iterations, burn-in 3 000, thin 10, the "
        "`MCMCglmm()` call; ESS bulk (coda for MCMCglmm) per second. The issue's target: ≥ 10× "
        "MCMCglmm's ESS/s for r_A and each h².\n",
    )


def multitrait_canonical(quick: bool) -> None:
    import bench_multitrait

    if _absent("wheat", bench_multitrait.WHEAT):
        return
    _write(
        "multitrait_canonical",
        "Several traits on one random term: the wheat data through the canonical transformation",
        bench_multitrait.run_canonical(mcmcglmm_iterations=20),
        "`cbind(env1, env2, env4, env5) ~ 1` on the BGLR wheat data (599 lines, four "
        "environments, every line in every environment, the pedigree A given as a file: data we "
        "did not make), in-process: REML, then the whole default Bayesian fit (`AnimalModel(...)"
        ".fit(random_seed=1)`: REML, 4 chains × 1 000 draws, every line's breeding values and "
        "reliabilities), through the canonical transformation (`linalg/canonical`, chosen by "
        "default) and, in the same run, through the sparse equations as before it (the sparse "
        "marginal model, and the sampler the fit then chose). MCMCglmm on the same model "
        "(`us(trait):line` with the inverse of A as `ginverse`, `us(trait):units`, V = I, "
        "nu = 3.002): its seconds per iteration timed on a short run and multiplied by the 13 000 "
        "iterations of its usual run (burn-in 3 000, thin 10) — a full run is out of reach here. "
        "Run: `python benchmarks/run.py multitrait_canonical`.\n",
    )


def multitrait_scale_reml(quick: bool) -> None:
    import bench_multitrait

    sizes = (3_000,) if quick else (3_000, 20_000, 100_000)
    _write(
        "multitrait_scale_reml",
        "Several traits at scale, REML only: 3 traits, animal + permanent environment",
        bench_multitrait.run_scale(sizes, reml_up_to=100_000, bayes_up_to=0),
        "The data and model of `multitrait_scale` (the same seeds), REML only: what the search "
        "of a singular block's shape changed (at 3 000 animals the permanent-environment "
        "matrix is estimated singular; before the search AI-REML stopped there unconverged "
        "at the iteration limit, 45.5 s in `multitrait_scale.md`). Run: `python "
        "benchmarks/run.py multitrait_scale_reml`.",
    )


def multitrait_scale(quick: bool) -> None:
    import bench_multitrait

    sizes = (3_000,) if quick else (3_000, 20_000, 100_000)
    full = os.environ.get("BAYES_ANIMAL_SHAPES_FULL") == "1"
    _write(
        "multitrait_scale",
        "Several traits at scale: 3 traits, animal + permanent environment, 20 % missing",
        bench_multitrait.run_scale(sizes, reml_up_to=100_000, bayes_up_to=20_000 if full else 0),
        "`simulate_herd_pedigree` and `simulate_traits` (records of 70 % of the animals, one or "
        "two each, each trait missing with probability 0.2); `cbind(t1, t2, t3) ~ 1 + x + "
        "ide(animal)` (unstructured G0, permanent environment and R0). REML in-process from "
        "the data frame and the pedigree; one gradient: a factorisation of the equations and "
        "its selected inverse at the starting values (what every NUTS step costs; a default fit "
        "takes about 40 000 of them); REML at every size; the whole Bayesian fit "
        "(default settings: `AnimalModel(...).fit(random_seed=1)`, 4 chains × 1 000 draws, "
        "REML, the proposal and the draws of every breeding value included) at 20 000 animals "
        "with BAYES_ANIMAL_SHAPES_FULL=1; its sampler is the one `fit` chose (independence "
        "Metropolis–Hastings where NUTS's gradients would take over 10 min; acceptance and "
        "the Pareto k̂ of its proposals' weights beside it). The issue's targets at 20 000 "
        "animals: REML ≤ 60 s, the Bayesian fit ≤ 15 min.\n",
    )


def multitrait_scale_bayes(quick: bool) -> None:
    import bench_multitrait

    size = 3_000 if quick else 20_000
    _write(
        "multitrait_scale_bayes",
        f"Several traits at scale, the whole Bayesian fit: 3 traits × {size:,} animals".replace(
            ",", " "
        ),
        bench_multitrait.run_scale((size,), reml_up_to=size, bayes_up_to=size),
        "The 20 000-animal data and model of `multitrait_scale` (the same seeds), the whole "
        "default Bayesian fit alone (`AnimalModel(...).fit(random_seed=1)`: REML, the "
        "proposal, 4 chains × 1 000 draws and every breeding value), so that it can be rerun "
        "without the 100 000-animal REML or the 3 000-animal boundary case. The issue's "
        "target: ≤ 15 min, R-hat ≤ 1.01. Run: `python benchmarks/run.py "
        "multitrait_scale_bayes`.\n",
    )


def multitrait_scale_100k(quick: bool) -> None:
    import bench_multitrait

    size = 3_000 if quick else 100_000
    _write(
        "multitrait_scale_100k",
        f"Several traits at scale, the Bayesian fit's stages: 3 traits × {size:,} animals, 4 "
        "chains × 50 draws".replace(",", " "),
        bench_multitrait.run_scale((size,), reml_up_to=size, bayes_up_to=size, bayes_draws=50),
        "The 100 000-animal data and model of `multitrait_scale` (the same seeds), the default "
        "Bayesian fit cut to 4 chains × 50 draws (`AnimalModel(...).fit(random_seed=1, "
        "draws=50)`: REML, the independence sampler's proposal — its mode, Hessians and shift "
        "towards the mean —, the chains carrying every breeding value, the reliabilities) for "
        "each stage's time: the default 4 × 1 000 draws take the stages before and after "
        "sampling plus 20 times its `sampling s` (`compile s` is the proposal's fitting). The "
        "diagnostics of 200 draws say nothing; the issue asks for a report at this size, not a "
        "target. Run: `python benchmarks/run.py multitrait_scale_100k` (about 20 min on 2 "
        "cores).\n",
    )


def multitrait_boundary(quick: bool) -> None:
    import bench_multitrait

    _write(
        "multitrait_boundary",
        "Several traits with a covariance matrix at its boundary: the whole Bayesian fit",
        bench_multitrait.run_scale((3_000,), reml_up_to=3_000, bayes_up_to=3_000),
        "The 3 000-animal data and model of `multitrait_scale` (the same seeds), where REML "
        "holds the permanent-environment matrix singular. NUTS there had not finished after "
        "71 min (an earlier run of this entry, killed), so `fit` takes the independence "
        "sampler as where NUTS is too dear, its chains running `BOUNDARY_THIN` (5) times "
        "longer and keeping every fifth draw (at the mode's proposal: acceptance 26 %, k̂ "
        "0.83, R-hat 1.09 in `multitrait_scale.md`). The whole default fit "
        "(`AnimalModel(...).fit(random_seed=1)`, 4 chains × 1 000 kept draws, REML and the "
        "proposal included; a default run whose diagnostics fail draws 4 chains more from the "
        "same proposal, as here — its first 4 chains alone gave R-hat 1.021 and a smallest "
        "ESS of 177 in 416 s). Run: `python benchmarks/run.py multitrait_boundary`.\n",
    )


def first_run(quick: bool) -> None:
    import bench_first_run

    if _absent("gryphon, seed_sim", bench_first_run.GRYPHON, bench_first_run.SEED_SIM):
        return
    _write(
        "first_run",
        "Every command's first run after installing against its second",
        bench_first_run.run(repeats=1 if quick else 2),
        "Whole processes. Cold: a fresh HOME, XDG caches, NUMBA_CACHE_DIR, PyTensor compiledir "
        "and MPLCONFIGDIR; second: the same command again with what the cold run left; after "
        "compile: a fresh machine on which `bayes-animal compile` ran first (what `make demo` "
        "and `make test` do after installing; its own time is the last row). Medians of the "
        "repeats. fit: 4 chains × 300 draws after 300 tuning steps. The target (issue 22): "
        "first minus second ≤ 1 s.\n",
    )


def collector(quick: bool) -> None:
    import bench_fit

    if _absent("seed_sim", bench_fit.SHARED):
        return
    _write(
        "fit_collector",
        "`fit` and `reml` on seed_sim with the command's process settings and without",
        bench_fit.run_collector(repeats=3 if quick else 5),
        "Whole processes in turn, caches warm. The console script, a process of its own, "
        "collects the cycle collector's youngest generation every 50 000 allocations (Python: "
        "700) and freezes its objects before exit, so that Python's finalisation does not "
        "scan them; 'Python's collector as it is' hands `main` its arguments as a caller "
        "would, which leaves both out (dask is kept out of `fit` in both). 'saved_s' is the "
        "slower median less this one.\n",
    )


def _with_medians(table: pd.DataFrame) -> pd.DataFrame:
    """A families table with each data set's and tool's median ESS(h²)/s and h² over seeds."""
    rates = ["ess_h2_per_s", "h2_mean"]
    medians = (
        table.groupby(["data", "tool"], sort=False)[rates].median().reset_index()
        .assign(seed="median")
    )  # fmt: skip
    return pd.concat([table, medians], ignore_index=True)


def families(quick: bool) -> None:
    import bench_families

    if _absent("gryphon", bench_families.GRYPHON):
        return
    # four seeds a side, as families_large (MCMCglmm's ESS per second varies twofold by seed)
    table = bench_families.run(seeds=(1,) if quick else (1, 2, 3, 4))
    _write(
        "families",
        "Binary and count traits on the gryphon pedigree, beside MCMCglmm",
        _with_medians(table),
        bench_families.__doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
        + "\n\nThe issue's target: ESS(h²) per second of the whole fit ≥ 10× MCMCglmm's, the "
        "posterior of h² within Monte Carlo error of MCMCglmm's, zero divergences, R-hat ≤ "
        "1.01. 'auto' samples the exact joint posterior on its hand-derived density (nutpie; "
        "the Laplace approximation's check decides only under PyMC's or numpyro's NUTS, "
        "`family_engines.md`; group levels whose records give ≥ 90 % of their precision are "
        "partly centred: the counts' birth years here, not the binary traits'); the "
        "Laplace rows are the approximation's posterior, for comparison, and laplace_khat is "
        "the Pareto k̂ of its draws' weights over that posterior; prior_sensitivity_va is the "
        "exact fit's power-scaling sensitivity of σ²A to its prior (above 0.05 the prior moves "
        "its posterior).\n",
    )


def families_unseen(quick: bool) -> None:
    import bench_families

    table = bench_families.run_unseen(seeds=(1,) if quick else (1, 2, 3, 4))
    _write(
        "families_unseen",
        "Counts on a shape the family engines were not tuned on, beside MCMCglmm",
        _with_medians(table),
        "The issue reproducer's pedigree (1 900 animals, four generations of 450 from 100 "
        "founders, 40 sires a generation) with a 450-level group (a cage: written as `byear` "
        "for MCMCglmm's script) and Poisson records of latent mean 3, σ²A 0.4, σ²cage 0.2, "
        "σ²units 0.08 (seed 7); the priors and MCMCglmm's run of `families`. Ours: the whole "
        "fit in-process at default settings (`auto` picks the engine: `engine`). Medians over "
        "seeds 1–4. Run: `python benchmarks/run.py families_unseen`.",
    )


def families_unseen_binary(quick: bool) -> None:
    import bench_families

    table = bench_families.run_unseen(seeds=(1,) if quick else (1, 2, 3, 4), family="threshold")
    _write(
        "families_unseen_binary",
        "A binary trait on a shape the family engines were not tuned on, beside MCMCglmm",
        _with_medians(table),
        "The issue's example: a binary trait of about 20 % cases on the reproducer's pedigree "
        "(1 900 animals, four generations of 450 from 100 founders, 40 sires a generation) "
        "with a 450-level group (a cage: written as `byear` for MCMCglmm's script); liability "
        "mean −1.1, σ²A 0.4, σ²cage 0.2, the residual 1 (seed 7: 19 % of 1 800 records); the "
        'priors and MCMCglmm\'s run of `families` (`family = "threshold"`, 53 000 '
        "iterations: the issue's). Ours: the whole fit in-process at default settings (`auto` "
        "picks the engine: `engine`). Medians over seeds 1–4. Run: "
        "`python benchmarks/run.py families_unseen_binary`.",
    )


def families_wheat(quick: bool) -> None:
    import bench_families

    if _absent("wheat", bench_families.WHEAT):
        return
    # MCMCglmm's whole run takes about an hour here: a tenth of it, its ESS per second
    table = bench_families.run_wheat(seeds=(1,) if quick else (1, 2, 3, 4),
                                     mcmcglmm_iterations=5_300)  # fmt: skip
    _write(
        "families_wheat",
        "A binary trait on data we did not make: the wheat lines with their A as a file",
        _with_medians(table),
        "The BGLR wheat lines (599, ../shared/data/wheat): `high` = grain yield in environment "
        "2 above 0.8 on its standardised scale (19 % of the lines), `high ~ 1` with the lines' "
        "additive effect on the given A (`relmat`, `animal='line'`). Ours: the whole fit "
        "in-process at default settings with the priors of `families`; a default run that "
        "diverges is drawn again at target_accept 0.95 (`bayes.extension`). MCMCglmm: the "
        "threshold model on the same A (its inverse as `ginverse`, dense) and priors, seed 1, "
        "a tenth of its usual run: 5 300 iterations, burn-in 300, every fifth kept (1 000, "
        "as in the 53 000 of `families`), its ESS per second from that run — each iteration "
        "factors a dense 599 × 599 matrix, so a whole run takes about an hour here. Run: "
        "`python benchmarks/run.py families_wheat`.",
    )


def families_large(quick: bool) -> None:
    import bench_families

    if _absent("gryphon", bench_families.GRYPHON):
        return
    # four seeds a side: MCMCglmm's ESS(h²) per second varied twofold between two seeds
    table = bench_families.run(seeds=(1,) if quick else (1, 2, 3, 4), names=bench_families.LARGE)
    _write(
        "families_large",
        "Large counts on the gryphon pedigree, beside MCMCglmm",
        _with_medians(table),
        "The fourth data set of `families` (its priors, MCMCglmm's run and columns): counts "
        "with a latent mean of 2.5 (a mean count of about 19), σ²A 0.3, 30 birth years of σ² "
        "0.1 and an observation-level variance of 0.05 — where the non-centred joint gave "
        "R-hat 1.028–1.048 with its chains doubled (`family_latent.md`) and 'auto' samples "
        "each record's latent value with b and every u integrated out (`engine` latent). "
        "The issue's target: ESS(h²) per second of the whole fit ≥ 10× MCMCglmm's, the "
        "posterior of h² within Monte Carlo error of MCMCglmm's, zero divergences, R-hat ≤ "
        "1.01. Medians over seeds 1–4. Run: `python benchmarks/run.py families_large`.\n",
    )


def families_scale(quick: bool) -> None:
    import bench_families

    _write(
        "families_scale",
        "A threshold trait at scale: the whole Bayesian fit",
        bench_families.run_scale((5_000,) if quick else (20_000,)),
        "`simulate_herd_pedigree` (seed 5) and a threshold trait of every non-founder (σ²A = 0.5, "
        "200 groups of σ² 0.2, about 25 % cases); `y ~ x + (1|group)` with the pedigree, "
        '`family="threshold"`: REML (the Laplace approximation) and the whole Bayesian fit '
        "at default settings (`auto`: the exact joint posterior on its hand-derived density, "
        "4 chains × 3 000 draws), in-process. The issue's target: "
        "≤ 10 min at 20 000 animals.\n",
    )


def family_engines(quick: bool) -> None:
    import bench_families

    if _absent("gryphon", bench_families.GRYPHON):
        return
    _write(
        "family_engines",
        "A non-Gaussian trait: the exact joint posterior against the Laplace marginal model",
        bench_families.run_engines(),
        " ".join(bench_families._engine_cases.__doc__.split())
        + " For each: the Laplace approximation's check (`laplace_check()`, its own time; "
        "`check_passes` is what `auto` chose the Laplace model by before the exact model had "
        "its hand-derived joint density) and the whole default fit (`AnimalModel` to the "
        "summary, REML included, seed 1) under `auto` — the exact joint posterior on its "
        "hand-derived density under nutpie, 4 × 3 000 draws, or for the large counts on the "
        "pedigree the latent values' model, 4 × 1 000 (`family_latent.md`) — and under "
        "`parameterisation='marginal'` — the Laplace marginal model, 4 × 1 000 draws; "
        "`posterior_khat` is the Pareto k̂ of the Laplace draws' weights over its posterior. "
        "ESS bulk of h² (of the group variance without a pedigree) per second of the whole "
        "fit. Run: `python benchmarks/run.py family_engines`.\n",
    )


def family_latent(quick: bool) -> None:
    import bench_families

    if _absent("gryphon", bench_families.GRYPHON):
        return
    _write(
        "family_latent",
        "Counts with an observation-level effect: the non-centred joint against the latent "
        "values' model",
        bench_families.run_latent((1,) if quick else (1, 2, 3)),
        " ".join(bench_families.run_latent.__doc__.split())
        + " `resolved` is the median share of a record's random-effect variance on the latent "
        "scale its own record resolves (`AnimalModel._latent_information`); `auto` samples the "
        "latent values from `LATENT_FROM` (0.7). Run: `python benchmarks/run.py "
        "family_latent` (about 20 min on 2 cores).\n",
    )


BENCHMARKS = {
    "families": families,
    "family_engines": family_engines,
    "family_latent": family_latent,
    "families_large": families_large,
    "families_scale": families_scale,
    "multitrait": multitrait,
    "multitrait_scale": multitrait_scale,
    "multitrait_scale_reml": multitrait_scale_reml,
    "multitrait_scale_bayes": multitrait_scale_bayes,
    "multitrait_scale_100k": multitrait_scale_100k,
    "multitrait_boundary": multitrait_boundary,
    "multitrait_canonical": multitrait_canonical,
    "first_run": first_run,
    "reml": reml,
    "reml_cli": reml_cli,
    "load": load,
    "mme": mme,
    "pedigree": pedigree,
    "sampling": sampling,
    "random_effects": random_effects,
    "many": many,
    "ranking": ranking,
    "fit": fit,
    "collector": collector,
    "shapes": shapes,
    "noncentred": noncentred,
    "traits": traits,
    "shapes_large": shapes_large,
    "reproducer": reproducer,
    "families_unseen": families_unseen,
    "families_unseen_binary": families_unseen_binary,
    "families_wheat": families_wheat,
    "seeds": seeds,
    "samplers": samplers,
    "factor": factor,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], default=list(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    args = parser.parse_args()
    for name in args.names or BENCHMARKS:
        BENCHMARKS[name](args.quick)


if __name__ == "__main__":
    main()
