"""``bayes-animal fit``: the model, its files, and its figures in a worker process."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from ..errors import BayesAnimalError
from ..results.io import (
    read_data,
)
from ..tables import pandas as pd
from .inputs import _relationship_from_args
from .rank import _ranking_from_tree, _write_ranking
from .traits import _many_traits
from .words import _report_warnings


def _fit_model(args: argparse.Namespace, data: pd.DataFrame, source, *, progressbar: bool):
    """Build the AnimalModel and fit it; PyMC is imported only here."""
    from ..bayes.model import AnimalModel

    model = AnimalModel(
        args.formula,
        data,
        animal=args.animal,
        source=source,
        maternal=args.maternal,
        maternal_covariance=args.maternal_covariance,
        family=args.family,
        link=args.link,
        overdispersion=args.overdispersion,
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


#: What the figures' worker imports while the fit runs (:func:`_write_fit`).
FIGURE_MODULES = ("matplotlib.pyplot", "bayes_animal.results.plotting")


def _write_fit(
    fit, out: Path, worker=None, keep_draws: str = "all", index: str | None = None
) -> list[str]:
    """summary.json, ebv*.csv, posterior.nc and ranking.csv here; the two figures (0.6-1.6 s
    of matplotlib) at the same time in ``worker`` (a :class:`~bayes_animal.execution.Worker`
    started with the fit, which has imported matplotlib meanwhile), else here after them."""
    from functools import partial

    from ..execution import run_beside
    from ..results.plotting import save_fit_figures
    from ..results.posterior import parse_index

    traits = fit.parameters.traits if fit.parameters.multi_trait else ()
    if traits and index is None:  # one ranking per trait
        rankings = {f"ranking_{t}.csv": {"effect": f"additive:{t}"} for t in traits}
    elif index is not None:
        rankings = {"ranking.csv": {"index": parse_index(index)}}
    else:
        rankings = {"ranking.csv": {"effect": fit.main_effect()}}

    def files() -> dict[str, Path]:
        paths = fit.save(out, keep_draws=keep_draws)
        tree = fit.with_reml_group()
        for name, options in rankings.items():
            _write_ranking(_ranking_from_tree(tree, **options), out / name)
        return paths

    out.mkdir(parents=True, exist_ok=True)
    for name in ("h2.png", "trace.png"):  # never leave a previous run's figure behind
        (out / name).unlink(missing_ok=True)
    paths, _ = run_beside(
        [files, partial(save_fit_figures, fit.scalar_copy(), out)],
        parallel=worker is not None,
        workers=None if worker is None else [worker],
    )
    return [p.name for p in paths.values()] + [*rankings, "h2.png", "trace.png"]


def _cmd_fit(args: argparse.Namespace) -> int:

    if args.traits:
        return _many_traits(args, bayesian=True)
    from contextlib import nullcontext

    from ..execution import Worker, can_start_workers
    from ..linalg.threads import default_threads

    if args.index:  # checked before the fit, not after it
        from ..results.posterior import parse_index
        from ..spec.formula import response_columns, split_formula

        traits = response_columns(split_formula(args.formula).response, formula=args.formula)
        unknown = [t for t in parse_index(args.index) if t not in traits]
        if len(traits) < 2 or unknown:
            raise BayesAnimalError(
                f"--index {args.index!r} weighs the traits of a fit of several traits; "
                + (
                    f"{', '.join(map(repr, unknown))} are not among {', '.join(traits)}."
                    if len(traits) > 1
                    else "this formula has one trait: write cbind(trait1, trait2, …) ~ …."
                )
            )
    data = read_data(args.data, sep=args.sep)
    source = _relationship_from_args(args, required=False, fitting=True)
    spare_core = default_threads() >= 2 and can_start_workers()  # BAYES_ANIMAL_THREADS=1: none
    with Worker(FIGURE_MODULES) if spare_core else nullcontext() as worker:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = _fit_model(args, data, source, progressbar=args.progress and not args.json)
        _report_warnings(caught)
        out = Path(args.out)
        written = _write_fit(fit, out, worker, keep_draws=args.keep_draws, index=args.index)
    if args.json:
        print(json.dumps(fit.to_summary_dict()))
    else:
        print(fit.report())
        print(f"wrote {', '.join(written)} to {out}")
    return 0
