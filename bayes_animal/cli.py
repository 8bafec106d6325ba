"""The ``bayes-animal`` command line: ``reml``, ``fit``, ``rank``, ``relmat``, ``simulate``,
``demo``.

Errors raised on purpose (:class:`bayes_animal.errors.BayesAnimalError`) are printed as one
paragraph on stderr with exit status 2 and no traceback. Notices (dropped records) go to
stderr, so that ``--json`` leaves only the JSON object on stdout. PyMC is imported only by
``fit`` and ``demo``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import __version__
from .api import ENGINES, fit_inputs, model_inputs
from .errors import BayesAnimalError, is_known_noise
from .estimation.result import RemlResult
from .results.io import (
    read_data,
    read_records,
    write_matrix,
    write_predictions,
    write_relationship_csv,
)
from .structures.inputs import resolve_relationship
from .tables import pandas as pd

__all__ = ["main"]


#: Python keyword arguments that messages suggest, and the options this command line spells
#: them with (a message written for ``reml()`` reads ``--parameterisation noncentred`` here).
_VALUED = {"parameterisation", "sampler", "method", "engine", "priors", "ordering"}
_FLAGS = {"nearest_pd", "allow_selfing", "maternal_covariance", "add_missing_parents"}


def in_command_line_words(message: str) -> str:
    """A message's suggestions in this command line's syntax: ``parameterisation='noncentred'``
    → ``--parameterisation noncentred``, ``nearest_pd=True`` → ``--nearest-pd``,
    ``animal=<column>`` → ``--animal <column>``, ``priors='flat'`` → ``--prior flat``; other
    text is left as it is."""
    import re

    def valued(match: re.Match) -> str:
        name = "prior" if match[1] == "priors" else match[1]
        return f"--{name.replace('_', '-')} {match[2]}"

    message = re.sub(rf"\b({'|'.join(sorted(_VALUED))})='([\w.-]+)'", valued, message)
    message = re.sub(
        rf"\b({'|'.join(sorted(_FLAGS))})=True", lambda m: f"--{m[1].replace('_', '-')}", message
    )
    message = message.replace("animal=<column>", "--animal <column>")
    # a suggestion given twice ("x=True (--x)") reads once
    return re.sub(r"(--[\w-]+(?: [\w.<>-]+)?) \(\1\)", r"\1", message)


def _notice(message: str) -> None:
    print(
        textwrap.fill(f"note: {in_command_line_words(message)}", width=100, break_on_hyphens=False),
        file=sys.stderr,
    )


def _format_reml(result: RemlResult, *, formula: str) -> str:
    """A readable report of a REML fit (:meth:`RemlResult.report`)."""
    return result.report(formula=formula)


def _relationship_from_args(
    args: argparse.Namespace, *, required: bool = True, check_definite: bool = False
):
    """The relationship from --relmat | --pedigree | --genotypes (shared by commands); None
    when none is given and ``required`` is false (a model of independent effects only).
    A given matrix's definiteness is checked where it is first used (the factorisation or
    eigendecomposition every command makes of it), unless ``check_definite``."""
    given = [getattr(args, name, None) for name in ("relmat", "pedigree", "genotypes")]
    if not required and not any(given):
        return None
    columns = None
    if getattr(args, "pedigree_columns", None):
        columns = tuple(c.strip() for c in args.pedigree_columns.split(","))
        if len(columns) != 3:
            raise BayesAnimalError(
                f"--pedigree-columns needs three names id,sire,dam; got {args.pedigree_columns!r}."
            )
    source = resolve_relationship(
        relmat=Path(args.relmat) if getattr(args, "relmat", None) else None,
        pedigree=Path(args.pedigree) if args.pedigree else None,
        genotypes=Path(args.genotypes) if args.genotypes else None,
        pedigree_columns=columns,
        allow_selfing=args.allow_selfing,
        add_missing_parents=args.add_missing_parents,
        genotype_coding=args.genotype_coding,
        ridge=args.ridge,
        blend=args.blend,
        nearest_pd=getattr(args, "nearest_pd", False),
        check_definite=check_definite,
        warn=False,
    )
    for message in source.notices:
        _notice(message)
    if source.matrix is not None and source.matrix.projected:
        _notice(
            f"the relationship matrix was not positive semi-definite (smallest eigenvalue "
            f"{source.matrix.min_eigenvalue:.4g}) and was replaced by its nearest "
            "positive-definite projection, as --nearest-pd asked."
        )
    return source


def _many_traits(args: argparse.Namespace, *, bayesian: bool) -> int:
    """``reml --traits`` / ``fit --traits``: one row per trait in OUT/traits.csv."""
    from .many import fit_many, reml_many

    if not args.out:
        raise BayesAnimalError("--traits writes OUT/traits.csv: give --out DIR as well.")
    clock = time.perf_counter()
    data = read_data(args.data, sep=args.sep)
    source = _relationship_from_args(args)
    common = {
        "source": source,
        "animal": args.animal,
        "out": args.out,
        "resume": args.resume,
        "workers": args.workers,
        "scheduler": args.scheduler,
        "progress": args.progress,
    }
    if bayesian:
        result = fit_many(
            args.formula, data, args.traits, posteriors=args.posteriors, priors=args.prior,
            draws=args.draws, tune=args.tune, chains=args.chains, random_seed=args.seed,
            sampler=args.sampler, parameterisation=args.parameterisation,
            target_accept=args.target_accept, **common,
        )  # fmt: skip
    else:
        result = reml_many(
            args.formula, data, args.traits, method=args.method, blups=args.blups, **common
        )
    table = result.table
    ok = int((table["status"] == "ok").sum())
    print(
        f"{len(table)} traits: {ok} ok, {len(table) - ok} with a note in 'status' "
        f"({time.perf_counter() - clock:.1f} s); wrote {Path(args.out) / 'traits.csv'}"
    )
    if not bayesian and len(result.groups):
        engines = result.groups["engine"].value_counts()
        spectral = int(engines.get("spectral", 0))
        sparse = int(engines.get("sparse", 0))
        failed = int(engines.get("failed", 0))
        eigh = result.timings.get("eigh", 0.0)
        parts = [
            f"{spectral} with one eigendecomposition each ({eigh:.2f} s)" if spectral else "",
            f"{sparse} on the sparse equations trait by trait" if sparse else "",
            f"{failed} whose design failed (the reason in 'status')" if failed else "",
        ]
        print(
            f"{len(result.groups)} pattern(s) of missing records: "
            + ", ".join(part for part in parts if part)
            + f" (why: {Path(args.out) / 'groups.csv'})"
        )
    return 0


def _cmd_reml(args: argparse.Namespace) -> int:
    if args.traits:
        return _many_traits(args, bayesian=False)
    clock = time.perf_counter()
    data = read_records(args.data, sep=args.sep)
    read = time.perf_counter() - clock
    clock = time.perf_counter()
    source = _relationship_from_args(args, required=False, check_definite=False)
    relationship = time.perf_counter() - clock
    inputs = model_inputs(
        args.formula,
        data,
        source=source,
        animal=args.animal,
        maternal=args.maternal,
        maternal_covariance=args.maternal_covariance,
        warn=False,
    )
    for message in inputs.design.notices:
        _notice(message)
    result = fit_inputs(
        inputs,
        method=args.method,
        engine=args.engine,
        ordering=args.ordering,
        pev=args.out is not None,  # the predictions' PEVs are only in the files written
        threads=args.threads,
    )
    timings = {
        "read": read,
        "relationship": relationship + result.timings.get("relationship", 0.0),
        "fit": result.timings["fit"],
        "total": time.perf_counter() - clock + read,
    }
    result = replace(result, timings={**result.timings, **timings})
    for message in result.notices[len(inputs.design.notices) :]:
        _notice(message)
    if not result.converged:
        stop = result.convergence
        _notice(
            f"the REML maximiser did not meet its tolerance ({stop.reason}; log-likelihood "
            f"still to gain {stop.expected_gain:.3g}); check the data and the model."
        )
    written = []
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        written = write_predictions(result, out)
        (out / "reml.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        written.append(out / "reml.json")
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(_format_reml(result, formula=inputs.design.spec.formula))
        if written:
            print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _fit_model(args: argparse.Namespace, data: pd.DataFrame, source, *, progressbar: bool):
    """Build the AnimalModel and fit it; PyMC is imported only here."""
    from .bayes.model import AnimalModel

    model = AnimalModel(
        args.formula,
        data,
        animal=args.animal,
        source=source,
        maternal=args.maternal,
        maternal_covariance=args.maternal_covariance,
        priors=args.prior,
    )
    return model.fit(
        parameterisation=args.parameterisation,
        sampler=args.sampler,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        random_seed=args.seed,
        progressbar=progressbar,
        target_accept=args.target_accept,
    )


def _format_fit(fit) -> str:
    """A readable report of a posterior (:meth:`AnimalFit.report`)."""
    return fit.report()


#: What the figures' worker imports while the fit runs (:func:`_write_fit`).
FIGURE_MODULES = ("matplotlib.pyplot", "bayes_animal.results.plotting")


def _write_fit(fit, out: Path, worker=None) -> list[str]:
    """summary.json, ebv*.csv, posterior.nc and ranking.csv here; the two figures (0.6-1.6 s
    of matplotlib) at the same time in ``worker`` (a :class:`~bayes_animal.execution.Worker`
    started with the fit, which has imported matplotlib meanwhile), else here after them."""
    from functools import partial

    from .execution import run_beside
    from .results.plotting import save_fit_figures

    def files() -> dict[str, Path]:
        paths = fit.save(out)
        ranking = _ranking_from_tree(fit.with_reml_group(), effect=fit.main_effect())
        _write_ranking(ranking, out / "ranking.csv")
        return paths

    out.mkdir(parents=True, exist_ok=True)
    for name in ("h2.png", "trace.png"):  # never leave a previous run's figure behind
        (out / name).unlink(missing_ok=True)
    paths, _ = run_beside(
        [files, partial(save_fit_figures, fit.scalar_copy(), out)],
        parallel=worker is not None,
        workers=None if worker is None else [worker],
    )
    return [p.name for p in paths.values()] + ["ranking.csv", "h2.png", "trace.png"]


def _report_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Print every caught warning but the known noise: ours (notices about the data and the
    fit) as ``note:``, another library's with its category and module, so nothing a user
    needs is dropped."""
    for warning in caught:
        if is_known_noise(warning):
            continue
        if issubclass(warning.category, UserWarning) and "bayes_animal" in (
            warning.category.__module__ or ""
        ):
            _notice(str(warning.message))
        else:
            where = Path(warning.filename).name
            _notice(f"{warning.category.__name__} from {where}:{warning.lineno}: {warning.message}")


def _without_dask() -> None:
    """Mark dask absent for a command that never uses it. Where dask is installed, xarray
    imports ``dask.array`` when it builds a DataArray and ``dask.distributed`` when it writes
    netCDF, only to ask whether a dask array or scheduler is in play: 0.8 s of a 5 s ``fit``.
    ``importlib.util.find_spec`` answers None for a module whose ``sys.modules`` entry is None,
    so xarray sees no dask (decided before xarray is first imported). Only in the console
    script's own process; ``BAYES_ANIMAL_KEEP_DASK=1`` keeps dask visible there too."""
    import os

    if os.environ.get("BAYES_ANIMAL_KEEP_DASK") == "1":
        return
    if "dask" not in sys.modules and "xarray" not in sys.modules:
        sys.modules["dask"] = None  # type: ignore[assignment]


def _cmd_fit(args: argparse.Namespace) -> int:
    import warnings

    if args.traits:
        return _many_traits(args, bayesian=True)
    from contextlib import nullcontext

    from .execution import Worker, can_start_workers
    from .linalg.threads import default_threads

    data = read_data(args.data, sep=args.sep)
    source = _relationship_from_args(args)
    spare_core = default_threads() >= 2 and can_start_workers()  # BAYES_ANIMAL_THREADS=1: none
    with Worker(FIGURE_MODULES) if spare_core else nullcontext() as worker:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = _fit_model(args, data, source, progressbar=args.progress and not args.json)
        _report_warnings(caught)
        out = Path(args.out)
        written = _write_fit(fit, out, worker)
    if args.json:
        print(json.dumps(fit.to_summary_dict()))
    else:
        print(_format_fit(fit))
        print(f"wrote {', '.join(written)} to {out}")
    return 0


RANKING_COLUMNS = [
    "ebv_mean",
    "ebv_sd",
    "reliability",
    "hdi_low",
    "hdi_high",
    "rank_mean",
    "rank_low",
    "rank_high",
    "p_top",
]


def _ranking_from_tree(
    tree, *, effect="additive", candidates=None, top=None, top_fraction=None, threshold=None
):
    """Rank the levels of one effect of a posterior DataTree (with its ``reml`` group when
    present): the additive effect by default, any other genetic (or random) effect on request."""
    from .results.posterior import posterior_reliability
    from .results.ranking import rank
    from .spec.parameters import identifier

    posterior = tree.posterior if hasattr(tree, "posterior") else tree["posterior"]
    variable = "u" if effect == "additive" else f"u_{identifier(effect)}"
    if variable not in posterior:
        effects = sorted(
            "additive" if n == "u" else n[2:] for n in posterior.data_vars if n.startswith("u")
        )
        raise BayesAnimalError(
            f"The posterior has no effect {effect!r}; it has {', '.join(effects) or 'none'}. "
            "Choose one with --effect."
        )
    data = posterior[variable]
    draws = np.asarray(data.values)
    ids = np.asarray([str(a) for a in data[data.dims[-1]].values], dtype=object)
    reml_blup = reliability = None
    if "reml" in tree.children:
        group = tree["reml"]
        key = identifier(effect)
        blup_name = f"blup_{key}" if f"blup_{key}" in group else "blup"
        diagonal_name = f"diagonal_{key}" if f"diagonal_{key}" in group else "a_diagonal"
        reml_blup = np.asarray(group[blup_name].values)
        if f"reliability_{key}" in group:  # kept by the fit (expected_reliability)
            reliability = np.asarray(group[f"reliability_{key}"].values)
        else:  # a posterior saved before they were kept
            variance = float(np.asarray(posterior[f"sigma2_{key}"].values).mean())
            reliability = posterior_reliability(draws, variance * group[diagonal_name].values)
    return rank(
        draws,
        ids,
        candidates=candidates,
        top=top,
        top_fraction=top_fraction,
        threshold=threshold,
        reliability=reliability,
        reml_blup=reml_blup,
    )


def _write_ranking(ranking, path: Path) -> None:
    columns = [c for c in RANKING_COLUMNS if c in ranking.table]
    extra = [c for c in ("reml_blup", "reml_rank", "rank_median", "p_above") if c in ranking.table]
    table = ranking.table[columns + extra].reset_index()
    table.insert(table.columns.get_loc("p_top") + 1, "k", ranking.k)  # the k of P(top k)
    table.to_csv(path, index=False, float_format="%.8g")


def _candidates_from_args(args: argparse.Namespace):
    if not args.candidates:
        return None
    path = Path(args.candidates)
    if path.is_file():
        return read_data(path).iloc[:, 0].astype(str).tolist()
    if not args.data:
        raise BayesAnimalError(
            f"--candidates {args.candidates!r} is neither a file nor usable as a column without "
            "--data: give a CSV of candidate ids, or --data with a boolean column."
        )
    data = read_data(args.data, sep=args.sep)
    if args.candidates not in data.columns:
        raise BayesAnimalError(
            f"--candidates {args.candidates!r} is not a file and not a column of {args.data}."
        )
    column = data[args.candidates]
    if column.dtype != bool and not set(column.dropna().unique()) <= {0, 1}:
        raise BayesAnimalError(
            f"The candidate column {args.candidates!r} must be boolean (True/False or 1/0)."
        )
    chosen = data.loc[column.fillna(False).astype(bool), args.animal].astype(str)
    return chosen.drop_duplicates().tolist()


def _cmd_rank(args: argparse.Namespace) -> int:
    import xarray as xr

    path = Path(args.posterior)
    if not path.is_file():
        raise BayesAnimalError(f"Posterior file not found: {path}")
    tree = xr.open_datatree(path)
    ranking = _ranking_from_tree(
        tree,
        effect=args.effect,
        candidates=_candidates_from_args(args),
        top=args.top,
        top_fraction=args.top_fraction,
        threshold=args.threshold,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_ranking(ranking, out / "ranking.csv")
    _write_ranking_plots(ranking, out)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print(
            f"top {ranking.k} of {len(ranking.table)} candidates (posterior mean EBV); p_top is "
            f"P(in the true top k), k = {ranking.k}:"
        )
        print(ranking.top()[[c for c in RANKING_COLUMNS if c in ranking.table]].to_string())
        print(
            "\nselected sets (expected genetic gain = posterior mean EBV of the set; "
            f"expected_true_top_k = how many of the {ranking.k} selected are expected in the "
            "true top k):"
        )
        print(ranking.selections_frame().to_string())
    print(f"wrote ranking.csv, caterpillar.png, p_top.png and rank_uncertainty.png to {out}")
    return 0


def _write_ranking_plots(ranking, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .results.plotting import plot_caterpillar, plot_p_top, plot_rank_uncertainty

    for name, axes in (
        ("caterpillar.png", plot_caterpillar(ranking)[0, 0]),
        ("p_top.png", plot_p_top(ranking)),
        ("rank_uncertainty.png", plot_rank_uncertainty(ranking)),
    ):
        axes.figure.savefig(out / name, dpi=110)
        plt.close(axes.figure)


def _cmd_relmat(args: argparse.Namespace) -> int:
    source = _relationship_from_args(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if source.sampling is not None:
        summary = source.sampling.summary()
        print(
            f"pedigree: {summary['animals']} animals, {int(source.pedigree.generation.max()) + 1} "
            f"generations; inbreeding mean {summary['mean_inbreeding']:.5f}, max "
            f"{summary['max_inbreeding']:.5f}, {summary['inbred_animals']} inbred animals"
        )
    if source.genomic is not None:
        g = source.genomic
        print(
            f"genomic: {source.relmat.size} animals, {g.n_markers} markers "
            f"({len(g.dropped_markers)} monomorphic dropped, {g.n_imputed} genotypes imputed), "
            f"mean diagonal {source.relmat.mean_diagonal:.4f}"
        )
    if args.inverse:
        from .structures.additive import inverse_relationship

        if source.kind == "pedigree":
            inverse = inverse_relationship(source.pedigree, source.sampling)
            ids = source.pedigree.ids
        else:
            inverse = np.linalg.inv(source.relmat.matrix)
            ids = source.relmat.ids
        write_matrix(inverse, ids, out, triplets=args.format == "triplets")
    else:
        write_matrix(
            source.relmat.matrix, source.relmat.ids, out, triplets=args.format == "triplets"
        )
    kind = "inverse " if args.inverse else ""
    print(f"wrote the {kind}relationship matrix ({args.format}) to {out}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate_reference

    sim = simulate_reference(
        n=args.n,
        n_snps=args.n_snps,
        sigma2_u=args.sigma2_u,
        lam=args.lam,
        seed=args.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim.data.to_csv(out / "pheno.csv", index=False, float_format="%.17g")
    write_relationship_csv(sim.relmat, out / "A.csv")
    sim.truth.u.reset_index().to_csv(out / "true_u.csv", index=False, float_format="%.17g")
    truth = {
        "seed": args.seed,
        "n": args.n,
        "n_snps": args.n_snps,
        "mu": sim.truth.mu,
        "b": sim.truth.b,
        "sigma2_u": sim.truth.sigma2_u,
        "sigma2_e": sim.truth.sigma2_e,
        "h2": sim.truth.h2,
        "mean_diag_A": sim.relmat.mean_diagonal,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(f"wrote pheno.csv, A.csv, true_u.csv and truth.json to {out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .simulate import simulate_reference

    print(f"bayes_animal {__version__}: the reference simulation (N = {args.n}, seed {args.seed})")
    sim = simulate_reference(n=args.n, n_snps=args.n_snps, seed=args.seed)
    print(
        f"A = M'M/m from {args.n_snps} SNPs, mean diagonal {sim.relmat.mean_diagonal:.3f} "
        "(not rescaled: variances are on this scale)\n"
    )
    from .bayes.model import AnimalModel

    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    reml = model.reml
    print(
        f"REML: {reml.n_records} records, log-likelihood {reml.loglik:.4f}, "
        f"{'converged' if reml.converged else 'NOT converged'}; sampling with NUTS …"
    )
    fit = model.fit(
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        random_seed=args.seed,
        progressbar=False,
    )
    truth = sim.truth
    summary = fit.summary()
    beta = fit.beta_summary()
    rows = [
        ("h2", truth.h2, reml.h2, reml.se["h2"], summary.loc["h2"]),
        (
            "sigma2_A",
            truth.sigma2_u,
            reml.variance("additive"),
            reml.components.loc["additive", "se"],
            summary.loc["sigma2_additive"],
        ),
        (
            "sigma2_E",
            truth.sigma2_e,
            reml.variance("residual"),
            reml.components.loc["residual", "se"],
            summary.loc["sigma2_residual"],
        ),
        (
            "Intercept",
            truth.mu,
            reml.beta["Intercept"],
            reml.beta_se["Intercept"],
            beta.loc["Intercept"],
        ),
        ("fix", truth.b, reml.beta["fix"], reml.beta_se["fix"], beta.loc["fix"]),
    ]
    print(f"\n{'parameter':<11}{'truth':>8}{'REML':>9}{'± SE':>8}{'post. mean':>12}{'95% HDI':>20}")
    for name, true, estimate, se, post in rows:
        interval = f"[{post['hdi_low']:.3f}, {post['hdi_high']:.3f}]"
        print(
            f"{name:<11}{true:>8.3f}{estimate:>9.3f}{se:>8.3f}{post['mean']:>12.3f}{interval:>20}"
        )
    print("\nREML check (the posterior against the built-in REML estimate):")
    print(_format_fit(fit))
    ebv = fit.ebv().join(reml.blup["blup"].rename("reml_blup")).join(truth.u.rename("true_u"))
    accuracy = float(np.corrcoef(ebv["mean"], ebv["true_u"])[0, 1])
    print(f"\ncorrelation of the posterior-mean EBVs with the true breeding values: {accuracy:.4f}")
    top = ebv.sort_values("mean", ascending=False).head(args.top)
    top = top.assign(true_rank=ebv["true_u"].rank(ascending=False).astype(int).loc[top.index])
    ranking = _ranking_from_tree(fit.with_reml_group(), top=args.top)
    print(f"\nranking with uncertainty: P(in the true top {args.top}) and 90% rank intervals")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print(
            ranking.top()[
                ["ebv_mean", "rank_mean", "rank_low", "rank_high", "p_top", "reml_rank"]
            ].to_string()
        )
        print(
            ranking.selections_frame()[
                ["gain_mean", "gain_hdi_low", "gain_hdi_high", "expected_true_top_k"]
            ].to_string()
        )
    print(f"\ntop {args.top} breeding values (posterior mean, 95% HDI):")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(
            top[
                [
                    "mean",
                    "sd",
                    "hdi_low",
                    "hdi_high",
                    "reliability",
                    "reml_blup",
                    "true_u",
                    "true_rank",
                ]
            ].to_string()
        )
    return 0


def _relationship_arguments(command: argparse.ArgumentParser, *, matrix: bool) -> None:
    group = command.add_argument_group(
        "relationship (one of --relmat, --pedigree, --genotypes; or --genotypes with --pedigree "
        "and --blend)"
    )
    if matrix:
        group.add_argument(
            "--relmat",
            help="relationship matrix: CSV (ids as header and first column), .npz (arrays "
            "matrix and ids), .npy (ids in <name>.ids.txt) or .parquet (an id column)",
        )
    group.add_argument("--pedigree", help="pedigree CSV (id, sire, dam; unknown as 0/NA/empty/.)")
    group.add_argument(
        "--pedigree-columns", help="names of the id, sire and dam columns, e.g. id,father,mother"
    )
    group.add_argument(
        "--allow-selfing",
        action="store_true",
        help="accept an individual used as both sire and dam (plants)",
    )
    group.add_argument(
        "--add-missing-parents",
        action="store_true",
        help="add parents without a row as founders even when they are most of the parents "
        "(a pedigree file that lists offspring only)",
    )
    group.add_argument("--genotypes", help="genotype CSV: id column then markers coded 0/1/2")
    group.add_argument(
        "--genotype-coding",
        choices=["012", "01"],
        default="012",
        help="01: presence/absence in inbred lines, read as 0/2 (default 012)",
    )
    group.add_argument("--ridge", type=float, default=0.0, help="add this to G's diagonal")
    group.add_argument(
        "--blend",
        type=float,
        default=0.0,
        help="w in (1-w)G + wA (needs --genotypes and --pedigree)",
    )


def _many_arguments(command: argparse.ArgumentParser, *, bayesian: bool) -> None:
    group = command.add_argument_group(
        "many traits", "one model per trait column, the formula without a response: '~ 1 + fix'"
    )
    group.add_argument(
        "--traits",
        help="trait columns: a comma-separated list or globs on column names, e.g. 'trait*'",
    )
    group.add_argument("--resume", action="store_true", help="skip traits in OUT/traits.csv")
    group.add_argument(
        "--workers", type=int, default=None, help="local worker processes (default: the cores)"
    )
    group.add_argument(
        "--scheduler", help="address of a Dask scheduler to run the traits on (bayes_animal[dask])"
    )
    if bayesian:
        group.add_argument(
            "--posteriors",
            action="store_true",
            help="also write each trait's summary.json, ebv.csv, posterior.nc",
        )
    else:
        group.add_argument(
            "--blups", action="store_true", help="also write OUT/blups.csv (animals x traits)"
        )
        group.add_argument(
            "--no-progress", dest="progress", action="store_false", help="no progress bar"
        )
        group.add_argument(
            "--quiet",
            action="store_true",
            help="no progress bar and no samplers' messages (the summary is still printed)",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-animal",
        description="The Bayesian animal model: REML and NUTS for y = Xb + Zu + e.",
    )
    parser.add_argument("--version", action="version", version=f"bayes_animal {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("reml", help="REML (or ML) estimate of the animal model")
    fit.add_argument("--data", required=True, help="CSV of records, one row per record")
    fit.add_argument(
        "--sep", default=",", help="the separator between the data file's columns (default ,)"
    )
    _relationship_arguments(fit, matrix=True)
    fit.add_argument(
        "--formula",
        required=True,
        help='fixed and random parts, e.g. "bwt ~ 1 + C(sex) + (1 | byear) + ide(animal)"',
    )
    fit.add_argument("--animal", default="animal", help="column of animal ids (default: animal)")
    fit.add_argument("--maternal", help="dam column of a maternal genetic effect")
    fit.add_argument(
        "--maternal-covariance",
        action="store_true",
        help="estimate the direct-maternal genetic covariance (needs --maternal)",
    )
    fit.add_argument(
        "--method",
        choices=["reml", "ml"],
        default="reml",
        help="reml (default; the likelihood of the residual contrasts) or ml (full maximum "
        "likelihood, whose variances are biased down by the fixed effects' degrees of freedom)",
    )
    fit.add_argument(
        "--engine",
        choices=list(ENGINES),
        default="auto",
        help="spectral (one random effect, dense matrix), sparse (any model), auto (default)",
    )
    fit.add_argument(
        "--ordering",
        choices=["amd", "metis", "natural"],
        default="amd",
        help="fill-reducing ordering of the sparse engine (metis needs pymetis)",
    )
    fit.add_argument("--out", help="folder for blup.csv, blup_<component>.csv and reml.json")
    fit.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    fit.add_argument(
        "--nearest-pd",
        action="store_true",
        help="replace a non-PSD relationship matrix by its nearest positive-definite matrix",
    )
    fit.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS threads (default: the cores available, at most 8)",
    )
    _many_arguments(fit, bayesian=False)
    fit.set_defaults(handler=_cmd_reml)

    bayes = commands.add_parser("fit", help="Bayesian fit (NUTS) checked against REML")
    bayes.add_argument("--data", required=True, help="CSV of records, one row per record")
    bayes.add_argument(
        "--sep", default=",", help="the separator between the data file's columns (default ,)"
    )
    _relationship_arguments(bayes, matrix=True)
    bayes.add_argument(
        "--formula",
        required=True,
        help='fixed and random parts, e.g. "bwt ~ 1 + C(sex) + (1 | byear) + ide(animal)"',
    )
    bayes.add_argument("--animal", default="animal", help="column of animal ids")
    bayes.add_argument("--maternal", help="dam column of a maternal genetic effect")
    bayes.add_argument(
        "--maternal-covariance",
        action="store_true",
        help="estimate the direct-maternal genetic covariance (needs --maternal)",
    )
    bayes.add_argument("--out", required=True, help="folder for summary.json, ebv.csv, plots")
    bayes.add_argument("--draws", type=int, default=1000, help="draws per chain (default 1000)")
    bayes.add_argument(
        "--tune",
        type=int,
        default=None,
        help="tuning steps (default 300 for the spectral marginal model with nutpie, 500 for "
        "other marginal models, 1000 otherwise)",
    )
    bayes.add_argument("--chains", type=int, default=4, help="chains (default 4)")
    bayes.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed (default: one drawn and printed; the same seed gives the same draws)",
    )
    bayes.add_argument(
        "--sampler",
        choices=["pymc", "nutpie", "numpyro"],
        default=None,
        help="NUTS implementation (default: the engine's, the fastest measured — nutpie for "
        "one random effect and the non-centred model, pymc for several effects and the "
        "partial model)",
    )
    bayes.add_argument(
        "--parameterisation",
        choices=["auto", "marginal", "noncentred", "partial"],
        default="auto",
        help="auto (default: chosen by the problem's structure, the reason printed), marginal "
        "(b and u integrated out), noncentred (u = sigma L z sampled) or partial (a dense G "
        "in its eigenbasis, the other effects sampled)",
    )
    bayes.add_argument(
        "--prior",
        default="default",
        help="default (= half_t: half-Student-t on each SD, scaled from the data), "
        "inverse_gamma (MCMCglmm's V = 1, nu = 0.002 on every component), flat (the "
        "posterior mode is REML) or beta_h2 (Beta on h2, one random effect)",
    )
    bayes.add_argument(
        "--target-accept",
        type=float,
        default=None,
        help="NUTS target acceptance (default 0.8 for marginal models, 0.9 otherwise)",
    )
    bayes.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars"
    )
    bayes.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and no sampler messages (notes on the data and failed "
        "diagnostics are still printed)",
    )
    bayes.add_argument("--json", action="store_true", help="print summary.json on stdout")
    bayes.add_argument(
        "--nearest-pd",
        action="store_true",
        help="replace a non-PSD relationship matrix by its nearest PD matrix",
    )
    _many_arguments(bayes, bayesian=True)
    bayes.set_defaults(handler=_cmd_fit)

    ranker = commands.add_parser("rank", help="rank candidates from a posterior, with uncertainty")
    ranker.add_argument("--posterior", required=True, help="posterior.nc written by fit")
    ranker.add_argument("--candidates", help="CSV of candidate ids, or a boolean column of --data")
    ranker.add_argument("--data", help="records CSV holding the --candidates column")
    ranker.add_argument(
        "--sep", default=",", help="the separator between the data file's columns (default ,)"
    )
    ranker.add_argument("--animal", default="animal", help="id column of --data")
    ranker.add_argument(
        "--effect",
        default="additive",
        help="the effect to rank: additive (default), maternal or any other random effect",
    )
    group = ranker.add_mutually_exclusive_group()
    group.add_argument(
        "--top",
        type=int,
        help="k of P(top k), the size of the selected set (default: 10%% of the candidates, "
        "at least 1; ranking.csv's k column says which)",
    )
    group.add_argument(
        "--top-fraction", type=float, help="k as a fraction of the candidates (default 0.1)"
    )
    ranker.add_argument("--threshold", type=float, help="also P(u > threshold)")
    ranker.add_argument(
        "--out",
        required=True,
        help="folder for ranking.csv, caterpillar.png, p_top.png and rank_uncertainty.png",
    )
    ranker.set_defaults(handler=_cmd_rank)

    rel = commands.add_parser(
        "relmat", help="write A (from a pedigree) or G (from genotypes), or their inverse"
    )
    _relationship_arguments(rel, matrix=True)
    rel.add_argument(
        "--out",
        required=True,
        help="output file: .csv, or binary .npz, .npy (+ .ids.txt), .parquet",
    )
    rel.add_argument("--inverse", action="store_true", help="write the inverse (sparse for A)")
    rel.add_argument(
        "--format",
        choices=["dense", "triplets"],
        default="dense",
        help="dense: ids as header and first column; triplets: row,col,value (lower triangle, "
        "non-zeros, as ASReml .giv / BLUPF90 files, with ids)",
    )
    rel.set_defaults(handler=_cmd_relmat)

    sim = commands.add_parser("simulate", help="write the reference simulation as CSV files")
    sim.add_argument("--out", required=True, help="folder for pheno.csv, A.csv, true_u.csv")
    sim.add_argument("--n", type=int, default=1000, help="animals (default 1000)")
    sim.add_argument("--n-snps", type=int, default=1000, help="SNPs (default 1000)")
    sim.add_argument("--sigma2-u", type=float, default=5.0, help="genetic variance (default 5)")
    sim.add_argument("--lam", type=float, default=3.0, help="sigma2_u / sigma2_e (default 3)")
    sim.add_argument("--seed", type=int, default=1859, help="random seed (default 1859)")
    sim.set_defaults(handler=_cmd_simulate)

    demo = commands.add_parser("demo", help="the reference simulation and its fit")
    demo.add_argument("--n", type=int, default=1000, help="animals (default 1000)")
    demo.add_argument("--n-snps", type=int, default=1000, help="SNPs (default 1000)")
    demo.add_argument("--seed", type=int, default=1859, help="random seed (default 1859)")
    demo.add_argument("--top", type=int, default=10, help="breeding values to show")
    demo.add_argument("--draws", type=int, default=1000, help="draws per chain (default 1000)")
    demo.add_argument("--tune", type=int, default=None, help="tuning steps (default: the fit's)")
    demo.add_argument("--chains", type=int, default=4, help="chains (default 4)")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayes-animal`` console script; returns the exit status.

    Without ``argv`` (the arguments of the command line) the process is taken to be the
    command's own and tuned for a short life (:func:`_as_process_of_its_own`,
    :func:`_before_exit`); a caller that runs a command inside its own process (a test, a
    notebook) passes ``argv`` and keeps Python's settings.
    """
    args = _parser().parse_args(argv)
    if argv is None:
        _as_process_of_its_own(args)
    if getattr(args, "quiet", False):
        args.progress = False
        import logging

        # the samplers' INFO messages ("Sequential sampling …", "NUTS: […]", timings); PyMC
        # sets its logger's level when it is imported, so the switch is the process-wide one
        logging.disable(logging.INFO)
    try:
        status = args.handler(args)
    except BayesAnimalError as exc:
        print(
            textwrap.fill(
                f"error: {in_command_line_words(str(exc))}", width=100, break_on_hyphens=False
            ),
            file=sys.stderr,
        )
        status = 2
    if argv is None:  # not after an unexpected exception: its traceback is what matters then
        _before_exit()
    return status


#: Allocations between two collections of the cycle collector's youngest generation in a
#: command-line process of its own (Python's default: 700).
YOUNG_GENERATION_THRESHOLD = 50_000


def _as_process_of_its_own(args: argparse.Namespace) -> None:
    """Settings for a short command-line process that are not ours to make in a caller's.

    - dask is marked absent for the commands that never use it (:func:`_without_dask`);
    - the cycle collector's youngest generation is collected every
      :data:`YOUNG_GENERATION_THRESHOLD` allocations: the imports of the sampler, ArviZ and
      matplotlib allocate millions of long-lived objects, and with Python's default the
      collector ran ~500 times during a ``fit``, four of them over every object
      (``benchmarks/results/fit_collector.md`` measures the command with and without).
    """
    import gc

    if args.command in ("fit", "rank", "demo") and not getattr(args, "scheduler", None):
        _without_dask()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


def _before_exit() -> None:
    """Let a command-line process of its own end quickly: Python's finalisation would run
    the cycle collector over every object still alive — the whole scientific stack after
    ``fit`` — only for the process to end; objects frozen by :func:`gc.freeze` are left out
    of it. ``atexit`` and the modules' teardown run as usual, but garbage in reference
    cycles is then never finalised (no ``__del__``): every command closes its files before
    it returns, and must."""
    import gc

    gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
