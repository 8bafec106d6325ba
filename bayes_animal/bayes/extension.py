r"""A default run whose own diagnostics fail is extended, once, by as many chains again.

A fit run at its default length (``AnimalModel.fit`` without ``draws``) checks, after its
chains, the R-hat and the bulk and tail ESS of every reported quantity against the limits the
diagnostics warn at (:data:`~bayes_animal.results.posterior.RHAT_LIMIT`,
:data:`~bayes_animal.results.posterior.ESS_LIMIT`). Where one fails, it samples as many chains
again — the same sampler and settings, seeded by :func:`extension_seed` — and keeps all of
them: R-hat compares 2m chains and the ESS roughly doubles. One extension only: a posterior
that still fails after it is not one that more draws settle cheaply (a prior-dominated
variance, a boundary), and the diagnostics then say so as for any fit. A run whose ``draws``
the user gave is run as asked.

Why: on the overdispersed counts of ``benchmarks/families`` (seeds 1–4) the exact model's
4 × 3 000 draws gave an ESS of 340–600 for the split between the additive and the
observation-level variance and R-hat up to 1.013. What limits it is that posterior, not a
parameterisation: integrating the observation-level effect out of each record (adaptive
Gauss–Hermite) halved the leapfrog steps a draw but raised ESS per draw only 1.3-fold at nine
times the cost of a gradient, and centring the breeding values partly moved neither ESS nor
R-hat consistently (seeds 1–4, three data sets). So the run must be longer there, and only
there. The decision reads the draws alone, never the clock: the same seed gives the same draws
on any machine.

**Divergences first.** A default run of NUTS whose chains diverged, at a target acceptance
the user did not give, is drawn again — every chain, seeded by :func:`redraw_seed` — at
:data:`REDRAW_TARGET_ACCEPT`, and its divergent chains are dropped: a divergence says the
steps were too long for some region of the posterior, which the chains then under-visit, so
their draws are biased and more of them do not help. The extension's check then reads the
new chains. Why: a binary trait on the BGLR wheat lines (599 lines with their A given as a
file, 19 % cases: data these defaults were not tuned on) diverged 54–269 times at 0.8, the
draws above σ²A ≈ 4 where each line's liability is pinned by its record; at 0.95 it drew 0
with a higher ESS(h²), 1.5 times the leapfrog steps. Where the default run did not diverge
(every simulated trait of ``benchmarks/families``) nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..results.posterior import ESS_LIMIT, RHAT_LIMIT, convergence, divergences

__all__ = [
    "ESS_LIMIT",
    "EXTENSION_MAX_BYTES",
    "REDRAW_TARGET_ACCEPT",
    "RHAT_LIMIT",
    "divergences",
    "extension_seed",
    "failing",
    "join_chains",
    "posterior_bytes",
    "redraw_seed",
]

#: The target acceptance a default NUTS run that diverged is drawn again at.
REDRAW_TARGET_ACCEPT = 0.95

#: No extension where the draws kept would then pass this — those sampled, and the draws of b
#: and every u a marginal model adds afterwards (every breeding value is kept per draw: 20 000
#: animals × 4 × 3 000 draws are 1.9 GB already).
EXTENSION_MAX_BYTES = 2 * 1024**3


def failing(idata, keys: Sequence[str]) -> list[str]:
    """The quantities among ``keys`` (those in the posterior) whose R-hat exceeds
    :data:`RHAT_LIMIT` or whose bulk or tail ESS is below :data:`ESS_LIMIT` — the
    diagnostics' own limits; a quantity the same in every draw (NaN) fails neither."""
    names = [name for name in keys if name in idata.posterior]
    if not names:
        return []
    rhat, bulk, tail = convergence(idata, names)
    return [
        name
        for name in names
        if float(rhat[name].values) > RHAT_LIMIT
        or float(bulk[name].values) < ESS_LIMIT
        or float(tail[name].values) < ESS_LIMIT
    ]


def extension_seed(seed: int) -> int:
    """The seed of the extension's chains, from the fit's: a fixed function of it, distinct
    from it."""
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0])


def redraw_seed(seed: int) -> int:
    """The seed of a diverged run's new chains: a fixed function of the fit's, distinct from
    it and from :func:`extension_seed`'s."""
    return int(np.random.SeedSequence([int(seed), 2]).generate_state(1)[0])


def join_chains(first, second):
    """One DataTree of both runs' chains: every group with a ``chain`` dimension concatenated
    along it (the second's chains numbered after the first's), the others and the attributes
    the first's; ``sampling_time`` (where kept) the two runs' sum."""
    import xarray as xr

    def attributes(one: dict, other: dict) -> dict:
        out = dict(one)
        if "sampling_time" in one and "sampling_time" in other:
            out["sampling_time"] = float(one["sampling_time"]) + float(other["sampling_time"])
        return out

    groups = {}
    for name, node in first.children.items():
        data = node.to_dataset()
        if "chain" in data.dims and name in second.children:
            other = second[name].to_dataset()
            other = other.assign_coords(chain=other["chain"].values + data.sizes["chain"])
            joined = xr.concat([data, other], dim="chain", combine_attrs="override")
            joined.attrs = attributes(data.attrs, other.attrs)
            data = joined
        groups[name] = data
    tree = xr.DataTree.from_dict(groups)
    tree.attrs = attributes(first.attrs, second.attrs)
    return tree


def posterior_bytes(idata) -> int:
    """The bytes of the draws kept: the variables with a ``chain`` dimension, every group."""
    return int(
        sum(
            variable.nbytes
            for node in idata.children.values()
            for variable in node.to_dataset().data_vars.values()
            if "chain" in variable.dims
        )
    )
