r"""The pedigree recursion :math:`u = T D^{1/2} z` as one PyTensor Op, compiled by numba.

In parents-first order :math:`u_i = \tfrac12(u_{s(i)} + u_{d(i)}) + \sqrt{d_i}\, z_i` (an unknown
parent contributes 0), so :math:`u = T D^{1/2} z` with :math:`T = (I - P)^{-1}` and
:math:`u \sim N(0, A)` for :math:`z \sim N(0, I)`. Its adjoint is the same recursion backwards:
with :math:`g = \partial \ell / \partial u`, accumulate :math:`a_i = g_i + \tfrac12 \sum_{c:
s(c) = i \text{ or } d(c) = i} a_c` from the youngest animal to the oldest, then
:math:`\partial \ell / \partial z_i = \sqrt{d_i}\, a_i` — :math:`O(q)` both ways, two loops.

Written as PyTensor operations (one gather and one scatter per generation) the recursion and its
gradient cost 53 µs a gradient for the gryphon pedigree (1 309 animals) under nutpie; as these
Ops, with numba implementations that nutpie and PyMC compile into the model's own function (no
object mode), a few microseconds; the compiled graph stays cacheable (a key from the Op's
props and :data:`KERNEL_VERSION`). The permutation between the user's order of levels and the
pedigree's order is folded into the loops. Tested against the dense :math:`L = T D^{1/2}` and
its transpose, and against the PyTensor recursion.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from .kernels import pedigree_adjoint as _adjoint
from .kernels import pedigree_arguments
from .kernels import pedigree_forward as _forward

__all__ = ["PedigreeRecursion", "pedigree_transform"]


class PedigreeRecursion(Op):
    """``u = T D^½ z`` (``transpose=False``) or its adjoint ``D^½ Tᵀ g`` (``transpose=True``);
    inputs: the vector, then the pedigree's sire and dam positions (−1 unknown), the
    Mendelian-sampling SDs, ``order`` (pedigree position of each level) and ``to_user`` (its
    inverse), the last five constants."""

    __props__ = ("transpose",)

    def __init__(self, transpose: bool = False) -> None:
        self.transpose = transpose

    def make_node(self, vector, sire, dam, scale, order, to_user):
        inputs = [pt.as_tensor_variable(vector, dtype="float64")]
        inputs += [pt.as_tensor_variable(x) for x in (sire, dam, scale, order, to_user)]
        return Apply(self, inputs, [pt.dvector()])

    def perform(self, node, inputs, outputs) -> None:
        kernel = _adjoint if self.transpose else _forward
        outputs[0][0] = kernel(*(np.asarray(x) for x in inputs))

    def pullback(self, inputs, outputs, cotangents):
        from pytensor.gradient import disconnected_type

        (g,) = cotangents
        other = PedigreeRecursion(transpose=not self.transpose)
        return [other(g, *inputs[1:])] + [disconnected_type() for _ in inputs[1:]]

    def connection_pattern(self, node):
        return [[True]] + [[False]] * 5

    def infer_shape(self, node, shapes):
        return [shapes[0]]


def pedigree_transform(structure, z):
    """``T D^½ z`` for a :class:`~bayes_animal.structures.covariance.PedigreeStructure`,
    ``z`` (a tensor) in the order of the structure's levels."""
    constants = pedigree_arguments(structure)
    return PedigreeRecursion()(z, *(pt.constant(c) for c in constants))


#: Bumped when the kernels change: part of the compiled graph's cache key (with the Op's props).
KERNEL_VERSION = 2


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_default_op_cache_key,
    )

    @register_funcify_default_op_cache_key(PedigreeRecursion)
    def _funcify(op, node=None, **kwargs):
        kernel = _adjoint if op.transpose else _forward

        @numba_njit
        def recursion(vector, sire, dam, scale, order, to_user):
            return kernel(vector, sire, dam, scale, order, to_user)

        return recursion, KERNEL_VERSION


_register_numba()
