r"""The restricted likelihood of the sparse mixed-model equations as a PyTensor Op with a
gradient, so that NUTS can sample the variance parameters alone.

With a flat prior on the fixed effects and every random effect integrated out,

.. math::

    p(y \mid \theta) \propto \exp \ell_R(\theta),

the restricted likelihood of :mod:`bayes_animal.linalg.mme`; its gradient is the REML score.
Both come from one factorisation of :math:`C(\theta)` and one selected inverse: the Op has two
outputs, the value and the gradient, and its ``pullback`` returns the second, so that PyTensor
merges the value and the gradient into one call of :meth:`perform` per leapfrog step. Outside
the parameter space (a variance ≤ 0, a :math:`G_0` that is not positive definite) the value is
:math:`-\infty` and NUTS turns back. Tested against finite differences.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from ..linalg.mme import MixedModelEquations
from .density import sparse_likelihood

__all__ = ["RestrictedLikelihood"]


class RestrictedLikelihood(Op):
    """``(ℓ_R(θ), ∇ℓ_R(θ))`` for the parameter vector θ of a :class:`MixedModelEquations`
    (variances and covariances in the order of its ``parameters.names``)."""

    def __init__(self, mme: MixedModelEquations) -> None:
        self.mme = mme
        self.calls = 0
        self._evaluate = sparse_likelihood(mme)

    def __eq__(self, other) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def make_node(self, theta):
        theta = pt.as_tensor_variable(theta, dtype="float64")
        return Apply(self, [theta], [pt.dscalar(), pt.dvector()])

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The restricted log-likelihood and its gradient (−∞ and zeros outside the space)."""
        self.calls += 1
        return self._evaluate(theta)

    def perform(self, node, inputs, outputs) -> None:
        value, gradient = self.value_and_gradient(inputs[0])
        outputs[0][0] = np.asarray(value, dtype=float)
        outputs[1][0] = np.asarray(gradient, dtype=float)

    def pullback(self, inputs, outputs, cotangents):
        # the gradient is the second output of the same call: no second evaluation
        return [cotangents[0] * outputs[1]]

    def connection_pattern(self, node):
        return [[True, False]]
