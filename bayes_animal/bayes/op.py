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

PyMC compiles its graphs with numba, which calls an Op without a numba implementation from
"object mode" and embeds the Op, pickled, in the compiled code: numba's run-time copies those
bytes on every call. With a given relationship matrix the equations hold dense n × n arrays
(the matrix, its Cholesky factor: 59 MB for 1 900 animals), and each gradient paid 20 ms of
system time copying them. The numba implementation registered here calls the Op through a
registry key, so what numba embeds is a small module-level function and an integer
(:func:`_numba_funcify`). Measured on that model: 4.5 ms a call, as the NumPy density, against
24 ms before (16.5 ms of it system time); ``tests/test_op.py`` checks that the numba
implementation is the one used and gives the Op's value and gradient.
"""

from __future__ import annotations

import itertools
import weakref

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from ..linalg.mme import MixedModelEquations
from .density import sparse_likelihood

__all__ = ["RestrictedLikelihood"]

#: The live Ops by key: what numba's compiled code finds them by (see the module docstring).
_LIVE: weakref.WeakValueDictionary[int, RestrictedLikelihood] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


class RestrictedLikelihood(Op):
    """``(ℓ_R(θ), ∇ℓ_R(θ))`` for the parameter vector θ of a :class:`MixedModelEquations`
    (variances and covariances in the order of its ``parameters.names``)."""

    def __init__(self, mme: MixedModelEquations) -> None:
        self.mme = mme
        self.calls = 0
        self._evaluate = sparse_likelihood(mme)
        self._register()

    def _register(self) -> None:
        self.key = next(_KEYS)
        _LIVE[self.key] = self

    def __getstate__(self) -> dict:
        return {"mme": self.mme, "calls": self.calls}

    def __setstate__(self, state: dict) -> None:  # unpickled in a worker process
        self.__dict__.update(state)
        self._evaluate = sparse_likelihood(self.mme)
        self._register()

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


def _perform_by_key(key: int, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What numba's object mode calls: the Op registered under ``key`` at ``theta``."""
    value, gradient = _LIVE[key].value_and_gradient(theta)
    return np.asarray(value, dtype=float), np.asarray(gradient, dtype=float)


def _numba_funcify(op: RestrictedLikelihood, node=None, **kwargs):
    """The numba implementation of :class:`RestrictedLikelihood`: object mode around
    :func:`_perform_by_key`, so that the compiled code embeds only the key."""
    import numba
    from pytensor.link.numba.dispatch.basic import get_numba_type, numba_njit

    signature = numba.types.Tuple([get_numba_type(out.type) for out in node.outputs])
    key = op.key

    @numba_njit
    def perform(theta):
        with numba.objmode(result=signature):
            result = _perform_by_key(key, theta)
        return result

    return perform


def _register_numba() -> None:
    from pytensor.link.numba.dispatch import numba_funcify

    numba_funcify.register(RestrictedLikelihood)(_numba_funcify)


_register_numba()
