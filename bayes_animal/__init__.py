"""bayes_animal: the Bayesian animal model for Python.

Fit y = X b + Z u + e, u ~ N(0, σu² A), e ~ N(0, σ² I) by REML (built in, numpy only)
and by NUTS with PyMC.
Importing the package does not import PyMC.
"""

from ._version import __version__
from .design import Design, DroppedRecordsWarning, build_design
from .errors import BayesAnimalError, DataError, FormulaError, RelationshipError
from .linalg.spectral import SpectralProblem, decompose
from .reml.spectral import RemlResult, fit_reml, reml
from .simulate import SimulatedData, Truth, simulate_reference
from .structures.relationship import RelationshipMatrix, as_relationship, read_relationship_csv

__all__ = [
    "BayesAnimalError",
    "DataError",
    "Design",
    "DroppedRecordsWarning",
    "FormulaError",
    "RelationshipError",
    "RelationshipMatrix",
    "RemlResult",
    "SimulatedData",
    "SpectralProblem",
    "Truth",
    "__version__",
    "as_relationship",
    "build_design",
    "decompose",
    "fit_reml",
    "read_relationship_csv",
    "reml",
    "simulate_reference",
]
