"""Stage times of one ``bayes-animal fit`` on seed_sim, in a fresh process (JSON on stdout).

Run by ``bench_fit.py`` with the package on ``PYTHONPATH`` — this checkout, or an older commit
for the "before" column — so it uses only the command line's functions that every version has
(``_parser``, ``read_data``, ``_relationship_from_args``, ``_fit_model``, ``_write_fit``).
Usage: ``python fit_stage_probe.py DATA_FOLDER OUT [fit options ...]``.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas  # noqa: E402, F401  - every version's fit imports it (the reml path no longer does)

from bayes_animal import cli  # noqa: E402

try:  # the command line as a package (one module per command), or as one module before
    from bayes_animal.cli import fit as _fit
    from bayes_animal.cli import inputs as _inputs
    from bayes_animal.cli import options as _options
    from bayes_animal.cli import process as _process
    from bayes_animal.results import io as _io
except ImportError:  # pragma: no cover - an earlier version
    _fit = _inputs = _options = _process = _io = cli


def main() -> None:
    folder, out, *options = sys.argv[1:]
    stages: dict[str, float] = {"imports (python, numpy, pandas, the package)": 0.0}
    clock = time.perf_counter()
    stages["imports (python, numpy, pandas, the package)"] = clock - START
    data_options = ["--data", f"{folder}/pheno.csv", "--relmat", f"{folder}/A.csv"]
    model_options = ["--formula", "response ~ 1 + fix", "--out", out, "--no-progress"]
    args = _options._parser().parse_args(["fit", *data_options, *model_options, *options])
    # what main() does in a process of its own, in each version
    if hasattr(_process, "_as_process_of_its_own"):
        _process._as_process_of_its_own(args)
    elif hasattr(_process, "_without_dask"):
        _process._without_dask()
    data = _io.read_data(args.data)
    source = _inputs._relationship_from_args(args)
    now = time.perf_counter()
    stages["read (pheno.csv, A.csv)"], clock = now - clock, now
    # what each version imports before it samples
    import importlib.util

    fast = importlib.util.find_spec("bayes_animal.bayes.sampling") is not None
    if fast:
        from bayes_animal.bayes import sampling

        fast = hasattr(sampling, "import_nutpie")
    if args.sampler != "pymc" and fast:
        sampling.import_nutpie()  # without ArviZ; the summary's imports overlap the sampling
    else:
        __import__("pymc" if args.sampler == "pymc" else "nutpie")
        import arviz_stats  # noqa: F401  - the diagnostics every version uses
    import xarray  # noqa: F401

    now = time.perf_counter()
    stages["imports (sampler, ArviZ, xarray)"], clock = now - clock, now
    fit = _fit._fit_model(args, data, source, progressbar=False)
    now = time.perf_counter()
    fit_total, clock = now - clock, now
    timings = dict(fit.timings)
    stages["REML"] = timings.get("reml", 0.0) - timings.get("eigh", 0.0)
    stages["eigh"] = timings.get("eigh", 0.0)
    stages["compile"] = timings.get("compile", 0.0)
    stages["sampling"] = timings.get("sampling", 0.0)
    stages["draws of b and u"] = timings.get("conditional", 0.0)
    stages["summary, diagnostics, joint mode"] = fit_total - sum(
        timings.get(k, 0.0) for k in ("reml", "compile", "sampling", "conditional")
    )
    _fit._write_fit(fit, Path(out))
    now = time.perf_counter()
    stages["outputs (json, csv, netCDF, PNGs)"] = now - clock
    stages["total"] = now - START
    print(json.dumps({"stages": stages, "sampler": fit.sampler}), flush=True)
    if hasattr(_process, "_before_exit"):
        _process._before_exit()


if __name__ == "__main__":
    main()
