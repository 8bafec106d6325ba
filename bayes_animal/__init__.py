"""bayes_animal: the Bayesian animal model for Python.

Fit y = X b + Σ Z_k u_k + e — an additive genetic effect u ~ N(0, σ²_A A), maternal genetic,
permanent-environment and other random effects — by REML (built in: the spectral fast path
for one effect, average-information REML on the sparse mixed-model equations for any number)
and by NUTS with PyMC. Importing the package does not import PyMC.
"""

from ._version import __version__
from .api import reml, solve_mme
from .design import Design, DroppedRecordsWarning, RepeatedRecordsWarning, build_design
from .errors import BayesAnimalError, DataError, FormulaError, RelationshipError
from .estimation.result import RemlResult
from .linalg.spectral import SpectralProblem, decompose
from .structures.relationship import RelationshipMatrix, as_relationship, read_relationship_csv

__all__ = [
    "AnimalModel",
    "BayesAnimalError",
    "DataError",
    "Design",
    "DroppedRecordsWarning",
    "FormulaError",
    "RelationshipError",
    "RelationshipMatrix",
    "RemlResult",
    "RepeatedRecordsWarning",
    "SimulatedData",
    "SpectralProblem",
    "Truth",
    "__version__",
    "as_relationship",
    "build_design",
    "compare",
    "decompose",
    "read_relationship_csv",
    "reml",
    "simulate_reference",
    "solve_mme",
]


_ON_FIRST_USE = {
    "AnimalModel": "bayes.model",
    "compare": "estimation.compare",
    "SimulatedData": "simulate",
    "Truth": "simulate",
    "simulate_reference": "simulate",
}
"""Names imported on first use: the Bayesian model (PyMC's world) and what the everyday REML
command does not need (the likelihood-ratio test, the simulation), so that ``import
bayes_animal`` stays light."""


def __getattr__(name: str):
    """Import the names of :data:`_ON_FIRST_USE`, and the package's modules (``bayes_animal.
    simulate``), when they are first asked for."""
    from importlib import import_module
    from importlib.util import find_spec

    module = _ON_FIRST_USE.get(name)
    if module is not None:
        value = getattr(import_module(f".{module}", __name__), name)
    elif not name.startswith("__") and find_spec(f"{__name__}.{name}") is not None:
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'bayes_animal' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ON_FIRST_USE))
