r""":math:`\log\Phi(x)` and its derivative as PyTensor Ops compiled by numba: the probit
families' likelihood (binary threshold and ordinal traits).

Written as PyTensor operations — ``switch`` between :math:`\log(\tfrac12
\operatorname{erfcx}(-x/\sqrt2)) - x^2/2` and :math:`\operatorname{log1p}(-\tfrac12
\operatorname{erfc}(x/\sqrt2))`, both branches computed for every record, and the gradient
graph of each — :math:`\log\Phi(\pm\eta)` and their gradient cost 110 µs for 1 000 records
under numba (the backend nutpie compiles the exact model with), most of a leapfrog step of a
binary trait on the gryphon pedigree (132 µs). As one Op whose loop evaluates one branch per
record and gives the derivative beside the value (one ``erfc`` for both), far less (measured
in the closing note of the change).

For :math:`x > -37`, :math:`\Phi(x) = \tfrac12\operatorname{erfc}(-x/\sqrt2)` is a normal
number computed to full relative precision (and, for :math:`x \ge 0`, :math:`\log\Phi(x) =
\operatorname{log1p}(-\tfrac12\operatorname{erfc}(x/\sqrt2))`, which keeps the tiny
:math:`1 - \Phi`). Below, the asymptotic series

.. math::
    \Phi(x) = \frac{\varphi(x)}{-x}\Bigl(1 - \frac1{x^2} + \frac3{x^4} - \frac{15}{x^6}
    + \frac{105}{x^8} - \frac{945}{x^{10}} + \dots\Bigr),

whose first omitted term is below :math:`2 \times 10^{-15}` (relative) there. The derivative
is the inverse Mills ratio :math:`r(x) = \varphi(x)/\Phi(x)`, and :math:`r'(x) = -r(x)(x +
r(x))`. Tested against
``scipy.special.log_ndtr`` and finite differences from :math:`-60` to :math:`40`.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from .kernels import _LOG_SQRT_2PI
from .kernels import log_cdf_and_mills as _log_cdf_and_mills

__all__ = ["LogNormalCdf", "log_normal_cdf"]


class LogNormalCdf(Op):
    """x ↦ (log Φ(x), φ(x)/Φ(x)) for a float64 vector x: the second output is the first's
    derivative, so the gradient costs no second pass."""

    __props__ = ()

    def make_node(self, x):
        x = pt.as_tensor_variable(x, dtype="float64")
        if x.ndim != 1:
            raise ValueError("log_normal_cdf takes a vector.")
        return Apply(self, [x], [pt.dvector(), pt.dvector()])

    def perform(self, node, inputs, outputs) -> None:
        value, mills = _log_cdf_and_mills(np.asarray(inputs[0], dtype=float))
        outputs[0][0] = value
        outputs[1][0] = mills

    def pullback(self, inputs, outputs, cotangents):
        from pytensor.gradient import DisconnectedType

        (x,), (_, mills), (g_value, g_mills) = inputs, outputs, cotangents
        total = None
        if not isinstance(g_value.type, DisconnectedType):
            total = g_value * mills
        if not isinstance(g_mills.type, DisconnectedType):
            term = -g_mills * mills * (x + mills)  # r' = −r (x + r)
            total = term if total is None else total + term
        return [total if total is not None else pt.zeros_like(x)]

    def infer_shape(self, node, shapes):
        return [shapes[0], shapes[0]]


_LOG_NORMAL_CDF = LogNormalCdf()


def log_normal_cdf(x):
    r""":math:`\log\Phi(x)` of a vector, stable in both tails, with its gradient (the module
    docstring)."""
    return _LOG_NORMAL_CDF(x)[0]


#: Bumped when the kernels change: part of the compiled graph's cache key (with the Op's props).
KERNEL_VERSION = 2


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_default_op_cache_key,
    )

    @register_funcify_default_op_cache_key(LogNormalCdf)
    def _funcify(op, node=None, **kwargs):
        @numba_njit
        def log_cdf_and_mills(x):
            return _log_cdf_and_mills(x)

        return log_cdf_and_mills, KERNEL_VERSION


def _register_jax() -> None:
    """The same Op under PyTensor's JAX backend (numpyro's), where JAX is installed: JAX's own
    ``log_ndtr`` and the ratio from it."""
    try:
        import jax.numpy as jnp
        from jax.scipy.special import log_ndtr
        from pytensor.link.jax.dispatch import jax_funcify
    except ImportError:  # no JAX: no numpyro either
        return

    @jax_funcify.register(LogNormalCdf)
    def _funcify(op, **kwargs):
        def log_cdf_and_mills(x):
            value = log_ndtr(x)
            return value, jnp.exp(-0.5 * x * x - _LOG_SQRT_2PI - value)

        return log_cdf_and_mills


_register_numba()
_register_jax()
