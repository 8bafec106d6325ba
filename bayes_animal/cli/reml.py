"""``bayes-animal reml``."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from ..api import fit_inputs, model_inputs
from ..errors import BayesAnimalError
from ..results.io import (
    read_records,
    write_predictions,
)
from .inputs import _relationship_from_args
from .traits import _many_traits
from .words import _notice


def _cmd_reml(args: argparse.Namespace) -> int:
    if getattr(args, "pairs", False) and not args.traits:
        raise BayesAnimalError(
            "--pairs fits every pair of the --traits: give --traits LIST (and --out DIR)."
        )
    if args.traits:
        return _many_traits(args, bayesian=False)
    clock = time.perf_counter()
    data = read_records(args.data, sep=args.sep)
    read = time.perf_counter() - clock
    clock = time.perf_counter()
    source = _relationship_from_args(args, required=False, fitting=True)
    relationship = time.perf_counter() - clock
    inputs = model_inputs(
        args.formula,
        data,
        source=source,
        animal=args.animal,
        maternal=args.maternal,
        maternal_covariance=args.maternal_covariance,
        family=args.family,
        link=args.link,
        overdispersion=args.overdispersion,
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
        print(result.report(formula=inputs.design.spec.formula))
        if written:
            print("wrote " + ", ".join(str(path) for path in written))
    return 0
