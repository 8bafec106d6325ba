r"""NUTS on a marginal model's hand-derived density: nutpie's sampler (Rust) calling
:class:`~bayes_animal.bayes.density.MarginalDensity`, with nothing to compile.

The sampler moves in whitened coordinates :math:`z`, :math:`x = x_0 + L z`, where :math:`x_0`
is the REML estimate on the unconstrained scale and :math:`L L^\top` the REML sampling
covariance carried to that scale (:math:`(J^\top \mathcal I J)^{-1}`, J = ∂θ/∂x): a linear
change of variables (constant Jacobian, the same posterior) under which the posterior is close
to a standard normal, so that nutpie's diagonal mass-matrix adaptation starts where it ends
and tuning is short. Each chain starts at :math:`z \sim U(-\tfrac12, \tfrac12)^k`, within
half a standard error of REML. The draws come back on the model's own scale: the free
variables (``sd_additive``, …) and every reported quantity (``sigma2_additive``, ``h2``, …).
"""

from __future__ import annotations

import numpy as np

from ..spec.parameters import Parameters
from .density import MarginalDensity, quantity_function

__all__ = ["sample_density"]

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


def _names(density: MarginalDensity, parameters: Parameters) -> list[str]:
    free = [v.name for v in density.variables]
    return free + [q.key for q in parameters.quantities() if q.key not in free]


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
):
    """Sample :math:`p(x \\mid y)` with nutpie; returns its DataTree (``posterior`` with the
    free variables and the quantities, ``sample_stats``).

    Parameters
    ----------
    density
        The log density and its gradient.
    start
        :math:`x_0` (the REML estimate on the unconstrained scale).
    covariance
        The covariance of x at :math:`x_0` (None: the identity).
    draws, tune, chains, cores, seed, progressbar, target_accept
        As for ``AnimalModel.fit``; ``cores`` chains run at once in nutpie's threads.
    """
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    k = density.size
    factor = np.eye(k) if covariance is None else np.linalg.cholesky(covariance)
    start = np.asarray(start, dtype=float)
    parameters = density.parameters
    names = _names(density, parameters)
    quantities = quantity_function(parameters)

    failures: list[BaseException] = []

    def make_logp():
        def logp(z):
            # an exception escaping here would abort nutpie's Rust threads: keep the first,
            # turn the point back (−∞) and raise it once sampling has stopped
            try:
                value, gradient = density(start + factor @ z)
            except Exception as exc:
                failures.append(exc)
                return -np.inf, np.zeros_like(z)
            return value, factor.T @ gradient

        return logp

    def make_expand(seed1, seed2, chain):
        def expand(z):  # only z is kept; the model's variables are formed afterwards, at once
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
    tree = nutpie.sample(
        model,
        draws=draws,
        tune=tune,
        chains=chains,
        cores=cores,
        seed=seed,
        save_warmup=False,
        progress_bar=progressbar,
        target_accept=target_accept,
    )
    if failures:
        raise failures[0]
    z = tree["posterior"]["z"].values  # chain × draw × k
    x = start + z.reshape(-1, k) @ factor.T
    values = density.draws(x)
    values |= quantities({n: values[n] for n in parameters.names})
    shape = z.shape[:2]
    posterior = tree["posterior"].to_dataset().drop_vars("z")
    for name in names:
        posterior[name] = (("chain", "draw"), np.asarray(values[name]).reshape(shape))
    posterior = posterior.drop_dims([d for d in posterior.dims if d not in ("chain", "draw")])
    tree["posterior"] = posterior
    stats = tree["sample_stats"].to_dataset()
    kept = [name for name in SAMPLE_STATS if name in stats]
    tree["sample_stats"] = stats[kept].rename({k: SAMPLE_STATS[k] for k in kept})
    return tree
