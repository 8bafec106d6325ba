r"""NUTS on a marginal model's hand-derived density: nutpie's sampler (Rust) calling
:class:`~bayes_animal.bayes.density.MarginalDensity`, with nothing to compile.

The sampler moves in whitened coordinates :math:`z`, :math:`x = x_0 + L z`, where :math:`x_0`
is the REML estimate on the unconstrained scale and :math:`L L^\top` the REML sampling
covariance carried to that scale (:math:`(J^\top \mathcal I J)^{-1}`, J = ∂θ/∂x): a linear
change of variables (constant Jacobian, the same posterior) under which the posterior is close
to a standard normal, so that nutpie's diagonal mass-matrix adaptation starts where it ends
and tuning is short. Where REML stopped short of its optimum or at a boundary there is no
such covariance and L = I: nutpie adapts from the identity. A density with latent values
after its k free variables (:class:`~bayes_animal.bayes.latent.LatentDensity`) has them
whitened by their own standard deviations (a diagonal block of L). Each chain starts at
:math:`z \sim U(-\tfrac12, \tfrac12)^k`, within half a standard error of REML. nutpie keeps
only z; the free variables (``sd_additive``, …) and every reported quantity
(``sigma2_additive``, ``h2``, …) are formed afterwards for all draws at once.

The chains run in two groups (:func:`chain_groups`), each one call of nutpie with its own seed;
where a second core is free the second group runs at the same time in a worker process of its
own — a fresh interpreter given the density pickled (:func:`~bayes_animal.execution.
run_beside`), as nutpie's own threads would take turns on the GIL that the Python density
holds — while this process samples the first (with the progress bar) and then does the
caller's other work (``meanwhile``: the imports the summary needs); otherwise one after the
other here — the same draws either way.

nutpie is imported without ArviZ (:func:`import_nutpie`) and its trace is read from the raw
Arrow record batches (:func:`_trace_arrays`): nutpie's conversion to an ArviZ DataTree is what
needs ArviZ, and ArviZ's package imports its plotting library and matplotlib (0.7 s of a fit
that draws its figures elsewhere).
"""

from __future__ import annotations

import importlib
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..execution import can_start_workers
from ..spec.parameters import Parameters
from .density import MarginalDensity, quantity_function

__all__ = ["chain_groups", "import_nutpie", "posterior_tree", "sample_density"]

#: nutpie's sample statistics kept, under ArviZ's names (PyMC's): the rest (divergence
#: locations, adaptation internals) is left out of posterior.nc.
SAMPLE_STATS = {
    "diverging": "diverging",
    "depth": "tree_depth",
    "maxdepth_reached": "reached_max_treedepth",
    "n_steps": "n_steps",
    "step_size": "step_size",
    "mean_tree_accept": "acceptance_rate",
    "energy": "energy",
    "energy_error": "energy_error",
    "logp": "lp",
}


class _ImportedOnFirstUse(types.ModuleType):
    """Stands in for a module that another one imports at its top but uses only inside some
    functions: an attribute the stand-in lacks is looked up in the real module, imported on
    the first such lookup (the stand-in is taken out of ``sys.modules`` first if it is still
    there; the importing module keeps the stand-in, which forwards every lookup)."""

    def __getattr__(self, name: str):
        if sys.modules.get(self.__name__) is self:
            sys.modules.pop(self.__name__, None)
        return getattr(importlib.import_module(self.__name__), name)


def import_nutpie() -> types.ModuleType:
    """nutpie, imported without importing ArviZ.

    ``nutpie.sample`` imports ``arviz`` at its top and uses it only to convert a trace to a
    DataTree, which :func:`sample_density` never asks for (it reads the raw trace). While
    nutpie is imported, ``sys.modules["arviz"]`` is a stand-in that imports ArviZ on first use;
    it is removed straight after, so that an ``import arviz`` anywhere later gets the real
    module, and nutpie's own conversion (through PyMC, say) still works.
    """
    if "nutpie" in sys.modules or "arviz" in sys.modules:
        import nutpie

        return nutpie
    sys.modules["arviz"] = _ImportedOnFirstUse("arviz")
    try:
        import nutpie
        import nutpie.compiled_pyfunc
    finally:
        if isinstance(sys.modules.get("arviz"), _ImportedOnFirstUse):
            del sys.modules["arviz"]
    return nutpie


def _trace_arrays(results, size: int, draws: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The kept draws of z (chain × draw × size) and the sample statistics of
    :data:`SAMPLE_STATS` (chain × draw, under ArviZ's names) from nutpie's raw trace: one
    Arrow record batch per chain for the draws and one for the statistics, tuning rows
    marked by the ``tuning`` statistic.

    Raises
    ------
    KeyboardInterrupt
        A chain has fewer than ``draws`` kept draws: nutpie returns the trace so far when
        sampling is interrupted, and the fit stops as interrupted rather than go on with it.
    """
    import pyarrow

    draw_batches, stat_batches = results.get_arrow_trace()
    z = np.empty((len(draw_batches), draws, size))
    stats = {name: [] for name in SAMPLE_STATS}
    for chain, (draw, stat) in enumerate(zip(draw_batches, stat_batches, strict=True)):
        kept = ~pyarrow.array(stat.column("tuning")).to_numpy(zero_copy_only=False)
        flat = pyarrow.array(draw.column("z")).flatten().to_numpy()
        count = int(kept.sum())
        if count != draws:
            raise KeyboardInterrupt(
                f"Sampling was interrupted: chain {chain + 1} has {count} of {draws} draws."
            )
        # the trace holds the tuning rows too: the kept ones copied once, into place
        np.compress(kept, flat.reshape(-1, size), axis=0, out=z[chain])
        for name in SAMPLE_STATS:
            if name in stat.column_names:
                values = pyarrow.array(stat.column(name)).to_numpy(zero_copy_only=False)
                stats[name].append(values[kept])
    return z, {SAMPLE_STATS[name]: np.stack(values) for name, values in stats.items() if values}


#: The posterior variable of a density's latent values (chain × draw × record), which its
#: engine reads to draw b and every u and then removes.
LATENT = "latent"


def _names(density: MarginalDensity, parameters: Parameters) -> list[str]:
    free = [v.name for v in density.variables]
    return free + [q.key for q in parameters.quantities() if q.key not in free]


def chain_groups(chains: int) -> list[int]:
    """The chains in two groups (one for a single chain), each sampled by one call of nutpie
    with its own seed: the split never depends on the machine, so neither do the draws."""
    if chains < 2:
        return [chains]
    first = (chains + 1) // 2
    return [first, chains - first]


def _group_seed(seed: int | None, group: int) -> int | None:
    return None if seed is None else int(seed) + 7_919 * group


def _sample_group(
    density: MarginalDensity,
    start: np.ndarray,
    factor: Whitening,
    chains: int,
    group: int,
    draws: int,
    tune: int,
    seed: int | None,
    progressbar: bool,
    target_accept: float,
) -> dict:
    """One chain group: ``chains`` chains by one call of nutpie with the group's seed; the
    kept draws of z and the sample statistics. A module-level function (with its arguments it
    pickles), so that a worker process can run it (:func:`~bayes_animal.execution.
    run_beside`); on its share of the BLAS threads
    (:func:`~bayes_animal.linalg.threads.group_threads`), as the other group may be running
    beside it."""
    from ..linalg.threads import group_threads, thread_budget

    with thread_budget(group_threads()):
        return _sample_chains(
            density, start, factor, chains, group, draws, tune, seed, progressbar, target_accept
        )


def _sample_chains(
    density, start, factor, chains, group, draws, tune, seed, progressbar, target_accept
) -> dict:
    nutpie = import_nutpie()
    from nutpie.compiled_pyfunc import from_pyfunc

    k = density.size
    failures: list[BaseException] = []

    def make_logp():
        def logp(z):
            # an exception escaping here would abort nutpie's Rust threads: keep the first,
            # turn the point back (−∞) and raise it once sampling has stopped
            try:
                value, gradient = density(start + factor.forward(z))
            except Exception as exc:
                failures.append(exc)
                return -np.inf, np.zeros_like(z)
            return value, factor.pullback(gradient)

        return logp

    def make_expand(seed1, seed2, chain):
        def expand(z):  # only z is kept; the model's variables are formed afterwards
            return {"z": np.array(z, dtype=float)}

        return expand

    def initial_point(chain_seed):
        return np.random.default_rng(chain_seed).uniform(-0.5, 0.5, size=k)

    model = from_pyfunc(
        k,
        make_logp,
        make_expand,
        [np.dtype("float64")],
        [(k,)],
        ["z"],
        make_initial_point_fn=initial_point,
    )
    results = nutpie.sample(
        model,
        draws=draws,
        tune=tune,
        chains=chains,
        cores=1,
        seed=_group_seed(seed, group),
        save_warmup=False,
        progress_bar=progressbar,
        target_accept=target_accept,
        return_raw_trace=True,
    )
    if failures:
        raise failures[0]
    z, stats = _trace_arrays(results, k, draws)
    return {"z": z, "stats": stats}


@dataclass(frozen=True)
class Whitening:
    """:math:`x = x_0 + L z` with L block diagonal: a lower-triangular block for the first
    variables and, for a density's latent values after them, their standard deviations."""

    dense: np.ndarray
    deviations: np.ndarray

    @classmethod
    def of(cls, k: int, covariance: np.ndarray | None, variances: np.ndarray | None = None):
        """From the covariance of the first ``k − len(variances)`` variables (None: the
        identity) and the variances of the rest."""
        latent = 0 if variances is None else len(variances)
        dense = np.eye(k - latent) if covariance is None else np.linalg.cholesky(covariance)
        deviations = np.sqrt(variances) if latent else np.empty(0)
        return cls(dense, deviations)

    def forward(self, z: np.ndarray) -> np.ndarray:
        """L z of one vector z or of rows z (… × k)."""
        m = len(self.dense)
        return np.concatenate([z[..., :m] @ self.dense.T, z[..., m:] * self.deviations], axis=-1)

    def pullback(self, gradient: np.ndarray) -> np.ndarray:
        """Lᵀ g: a gradient in x carried to z."""
        m = len(self.dense)
        return np.concatenate([self.dense.T @ gradient[:m], gradient[m:] * self.deviations])


def sample_density(
    density: MarginalDensity,
    start: np.ndarray,
    covariance: np.ndarray | None,
    *,
    draws: int,
    tune: int,
    chains: int,
    cores: int,
    seed: int | None,
    progressbar: bool,
    target_accept: float,
    meanwhile: Callable[[], object] | None = None,
    latent_variances: np.ndarray | None = None,
):
    """Sample :math:`p(x \\mid y)` with nutpie; returns a DataTree (``posterior`` with the
    free variables and the quantities, ``sample_stats``).

    Parameters
    ----------
    density
        The log density and its gradient.
    start
        :math:`x_0` (the REML estimate on the unconstrained scale).
    covariance
        The covariance of x at :math:`x_0` (None: the identity); of its free variables alone
        where ``latent_variances`` are given.
    draws, tune, chains, seed, progressbar, target_accept
        As for ``AnimalModel.fit``.
    cores
        Cores free for sampling: with two or more, the second chain group
        (:func:`chain_groups`) runs at the same time in a worker process of its own
        (:func:`~bayes_animal.execution.run_beside`: a fresh interpreter given the density
        pickled) — nutpie's own threads would share the GIL of the Python density — while the
        first, with the progress bar, runs here. The draws are the same either way.
    meanwhile
        Work for this process once its chain group is done (while the worker may still be
        sampling): the caller's imports for what follows sampling.
    latent_variances
        The variances of a density's latent values (the coordinates after its free
        variables), each whitened by its own.
    """
    from ..execution import run_beside

    k = density.size
    factor = Whitening.of(k, covariance, latent_variances)
    start = np.asarray(start, dtype=float)
    groups = chain_groups(chains)
    common = (draws, tune, seed)

    def here() -> dict:
        result = _sample_group(
            density, start, factor, groups[0], 0, *common, progressbar, target_accept
        )
        if meanwhile is not None:
            meanwhile()
        return result

    others = [
        partial(_sample_group, density, start, factor, groups[g], g, *common, False, target_accept)
        for g in range(1, len(groups))
    ]
    parallel = cores >= 2
    results = run_beside([here, *others], parallel=parallel)
    z = np.concatenate([r["z"] for r in results])  # chain × draw × k
    x = start + factor.forward(z.reshape(-1, k))
    stats = {
        name: np.concatenate([r["stats"][name] for r in results]) for name in results[0]["stats"]
    }
    tree = posterior_tree(density, x.reshape(chains, draws, k), stats)
    tree.attrs["chain_processes"] = len(groups) if parallel and can_start_workers() else 1
    return tree


def sample_joint(
    density,
    start: np.ndarray,
    *,
    draws: int,
    tune: int,
    chains: int,
    cores: int,
    seed: int | None,
    progressbar: bool,
    target_accept: float,
    meanwhile: Callable[[], object] | None = None,
):
    """Sample the exact joint density of a family (:class:`~bayes_animal.bayes.joint.
    JointDensity`) with nutpie, which calls its compiled kernel directly (numba's cached
    C callback, :func:`~bayes_animal.bayes.kernels.callbacks`, given the density's
    buffers): no model to compile, no Python in a leapfrog step, so the chains run on
    ``cores`` of nutpie's threads in this process. Each chain starts at ``start`` plus a
    uniform jitter in (−½, ½) drawn from its seed; nutpie adapts its mass matrix from the
    identity. Each kept draw comes back as it is reported — u, not z, the observation-level
    effect's unit normals left out (:func:`~bayes_animal.bayes.kernels.joint_expand`, in
    nutpie's threads) — which halves a Poisson trait's trace. ``meanwhile`` (the imports the
    summary needs, ~1.2 s) runs here while nutpie's threads sample, where it would otherwise
    follow them with a core idle. Returns the density's DataTree
    (:meth:`~bayes_animal.bayes.joint.JointDensity.posterior_tree`); the same seed gives the
    same draws whatever ``cores``."""
    nutpie = import_nutpie()
    from nutpie.compile_pymc import CompiledPyMCModel

    from ..linalg.threads import thread_budget
    from .kernels import callbacks

    k = density.size
    start = np.asarray(start, dtype=float)

    def initial_point(chain_seed):
        return start + np.random.default_rng(chain_seed).uniform(-0.5, 0.5, size=k)

    # nutpie's model of a compiled PyMC model, given our callbacks and buffers instead (its
    # own compiled functions are numba C callbacks with the same signatures); ``logp_func``
    # keeps the density, whose buffers the callbacks read, alive while nutpie samples
    joint_logp, expand = callbacks()
    e = density.expanded_size  # what a kept draw reports: u, not z
    model = CompiledPyMCModel(
        compiled_logp_func=joint_logp,
        compiled_expand_func=expand,
        initial_point_func=initial_point,
        shared_data={},
        shared_var_keys={},
        user_data=density.user_data,
        n_expanded=e,
        shape_info=(["z"], [slice(0, e)], [(e,)]),
        logp_func=density,
        expand_func=None,
        _n_dim=k,
        _shapes={"z": (k,)},
        _coords={},
        dims={},
    )
    clock = time.perf_counter()
    with thread_budget(1):  # nutpie's threads run the chains; each kernel is single-threaded
        sampler = nutpie.sample(
            model, draws=draws, tune=tune, chains=chains, cores=max(cores, 1),
            seed=seed, save_warmup=False, progress_bar=progressbar,
            target_accept=target_accept, return_raw_trace=True, blocking=False,
        )  # fmt: skip
        try:
            if meanwhile is not None:
                meanwhile()
            results = sampler.wait()
        except KeyboardInterrupt:  # as nutpie's blocking call: the trace so far
            results = sampler.abort()
        except BaseException:
            sampler.cancel()
            raise
    seconds = time.perf_counter() - clock
    expanded, stats = _trace_arrays(results, e, draws)
    tree = density.posterior_tree(expanded, stats)
    tree.attrs["sampling_time"] = seconds  # nutpie's own time (the rest: forming the draws)
    return tree


def posterior_tree(density: MarginalDensity, x: np.ndarray, stats: dict[str, np.ndarray]):
    """The DataTree of draws x (chain × draw × k, unconstrained) of a marginal density: the
    free variables and every reported quantity in ``posterior`` (with a density's latent
    values, :data:`LATENT`: chain × draw × record), ``stats`` (chain × draw each) in
    ``sample_stats``."""
    import xarray as xr

    chains, draws, k = x.shape
    parameters = density.parameters
    values = density.draws(x.reshape(-1, k))
    values |= quantity_function(parameters)({n: values[n] for n in parameters.names})
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    dims = ("chain", "draw")
    posterior = xr.Dataset(
        {
            name: (dims, np.asarray(values[name]).reshape(chains, draws))
            for name in _names(density, parameters)
        },
        coords=coords,
    )
    latent_draws = getattr(density, "latent_draws", None)
    if latent_draws is not None:
        posterior[LATENT] = (("chain", "draw", "record"), latent_draws(x))
    sample_stats = xr.Dataset({name: (dims, v) for name, v in stats.items()}, coords=coords)
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": sample_stats})
