r"""Compile the numeric kernels into numba's cache before their first use.

The sparse engine's kernels (inbreeding and A⁻¹, AMD, the symbolic and numeric LDLᵀ, the
selected inverse, a given matrix's sparse inverse) and those of a family's exact joint density
are compiled by numba the first time they
run and cached on disk; every later process loads them in milliseconds. The first run on a
machine pays the compilation (about 5 s on two cores). :func:`compile_kernels` pays it ahead,
by running each path once on a small simulated problem — the same argument types as a real
fit, so the cache it leaves is the one a real fit looks up. ``make demo`` and ``make test`` run
it after installing (``bayes-animal compile``); :func:`cold_kernels` says which kernels a
process would still compile, so that the command line can say why a first run is slow.
"""

from __future__ import annotations

import time
import warnings
from importlib import import_module
from pathlib import Path

__all__ = ["KERNEL_MODULES", "PEDIGREE_MODULES", "cold_kernels", "compile_kernels"]

KERNEL_MODULES = (
    "bayes_animal.structures.additive",
    "bayes_animal.linalg.ordering",
    "bayes_animal.linalg.ldl",
    "bayes_animal.linalg.scalar_kernels",
    "bayes_animal.linalg.inverse",
    "bayes_animal.bayes.kernels",
)
"""The modules whose numba kernels :func:`compile_kernels` compiles."""

PEDIGREE_MODULES = KERNEL_MODULES[:3]
"""The modules whose kernels every sparse fit on a pedigree calls (a given matrix's sparse
inverse is the other's)."""


def _dispatchers(modules: tuple[str, ...] = KERNEL_MODULES):
    """Every cached numba dispatcher of ``modules``, by qualified name."""
    from numba.core.registry import CPUDispatcher

    out = {}
    for name in modules:
        module = import_module(name)
        for attribute, value in vars(module).items():
            # a kernel inlined into its callers (inline="always") is never compiled on its own
            inline = getattr(value, "targetoptions", {}).get("inline") == "always"
            if isinstance(value, CPUDispatcher) and value._cache is not None and not inline:
                out[f"{name}.{attribute}"] = value
    return out


def cold_kernels(modules: tuple[str, ...] = KERNEL_MODULES) -> list[str]:
    """The kernels of ``modules`` with nothing in numba's cache yet (their first call compiles
    them). A kernel whose cache cannot be inspected counts as warm."""
    cold = []
    for name, dispatcher in _dispatchers(modules).items():
        try:
            index = Path(dispatcher._cache._cache_file._index_path)
        except AttributeError:  # another numba's internals: say nothing rather than guess
            continue
        if not index.is_file():
            cold.append(name)
    return cold


def _sparse_workload():
    """A pedigree (inbreeding, A⁻¹), AMD, the symbolic analysis, factorisations and selected
    inverses of AI-REML with a direct–maternal pair, a permanent environment and a group."""
    from .api import reml
    from .simulate import simulate_pedigree, simulate_records

    pedigree = simulate_pedigree(n_founders=30, n_generations=3, n_per_generation=40, seed=1)
    records = simulate_records(
        pedigree,
        variances={"additive": 1.0, "maternal": 0.5, "pe": 0.3, "residual": 1.0},
        records_per_animal=(1, 2),
        groups={"herd": 5},
        seed=1,
    ).data
    reml(
        "y ~ 1 + x + (1 | herd) + ide(animal)",
        records,
        pedigree=pedigree,
        maternal="dam",
        maternal_covariance=True,
        engine="sparse",
    )
    _scalar_workload(pedigree, records)
    return pedigree


def _scalar_workload(pedigree, records) -> None:
    """The compiled evaluation of one trait with scalar variances (the marginal and latent
    densities' gradients), with the design's records and with values given in their place,
    with and without a dense block."""
    import numpy as np

    from .design import build_design
    from .linalg.ldl import analyse
    from .linalg.mme import MixedModelEquations
    from .spec.parameters import Parameters
    from .structures.inputs import resolve_relationship

    source = resolve_relationship(pedigree=pedigree, warn=False)
    design = build_design("y ~ 1 + x + (1 | herd)", records, relationship=source, warn=False)
    structures = {e.name: source.structure for e in design.effects if e.genetic}
    for dense_block in (None, 0):
        mme = MixedModelEquations(design, structures, Parameters.from_spec(design.spec))
        mme._analysis = analyse(mme.pattern, ordering=mme.ordering, dense_block=dense_block)
        theta = np.ones(mme.parameters.size)
        mme.evaluate(theta, information=False)
        mme.evaluate(theta, score=False, information=False, y=design.y + 0.5)


def _given_matrix_workload(pedigree) -> None:
    """A given matrix's sparse inverse, by both routes: A written parents first (its factor is
    the pedigree's T) and the same A in another order (a numeric LDLᵀ)."""
    import numpy as np

    from .linalg.inverse import sparse_inverse
    from .structures.additive import dense_relationship
    from .structures.pedigree import read_pedigree

    relationship = dense_relationship(read_pedigree(pedigree, warn=False), user_order=False)
    matrix = np.asarray(relationship.matrix)
    sparse_inverse(matrix)
    order = np.random.default_rng(0).permutation(len(matrix))
    sparse_inverse(matrix[np.ix_(order, order)])


def compile_kernels() -> dict[str, object]:
    """Compile every kernel of :data:`KERNEL_MODULES` into numba's cache (loading those
    already there).

    Returns
    -------
    dict
        ``compiled``: the kernels that were cold; ``seconds``: the time taken; ``cold_after``:
        kernels still cold (none, unless a kernel is reached by no path run here).
    """
    start = time.perf_counter()
    cold = cold_kernels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the simulated data's notices are not the user's
        pedigree = _sparse_workload()
        _given_matrix_workload(pedigree)
        _family_workload(pedigree)
    return {
        "compiled": cold,
        "seconds": time.perf_counter() - start,
        "cold_after": cold_kernels(),
    }


def _family_workload(pedigree) -> None:
    """The exact joint density of a family (its kernel, the pedigree recursion both ways
    inside it, the draws of u, nutpie's C callbacks) and the kernels the PyTensor Ops share
    with it, called with a real fit's argument types."""
    import numpy as np

    from .bayes import kernels
    from .bayes.engines import engine_for
    from .bayes.model import AnimalModel
    from .simulate import simulate_records

    records = simulate_records(
        pedigree, variances={"additive": 0.5, "herd": 0.2}, groups={"herd": 5}, mean=-0.3,
        seed=1, family="threshold",
    ).data  # fmt: skip
    model = AnimalModel("y ~ x + (1|herd)", records, pedigree=pedigree, family="threshold")
    density = engine_for(model, "noncentred").joint_density()
    x = np.zeros(density.size)
    density(x)
    kernels.callbacks()
    density.posterior_tree(density.expand(x.reshape(1, 1, -1)), {})
    kernels.log_cdf_and_mills(x)
    effect = density.effects[0]
    z = np.ascontiguousarray(x[density.start_z : density.start_z + effect.size])
    arguments = kernels.pedigree_arguments(model.structures["additive"])
    kernels.pedigree_forward(z, *arguments)
    kernels.pedigree_adjoint(z, *arguments)
