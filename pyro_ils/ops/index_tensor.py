r"""An integer tensor that is differentiable through indexing.

``ILSCategorical.rsample()`` (and that of the other surrogate estimators,
straight-through and ReinMax) returns a :class:`SurrogateIndexTensor`: an
``int64`` tensor holding the drawn categories, exactly as a ``Categorical``
draw, that also holds the differentiable one-hot ``z`` of the draw. Indexing
operations read it as the one-hot contraction

.. math:: x[z] = \sum_j z_j \, x[j],

so their forward value is the exact integer result and their gradient to the
one-hot is ``dL/dz_j = <dL/dx[z], x[j]>``, the same as an explicit one-hot
matrix product. Supported: ``x[z]`` (any mix of slices, integers, ``None``,
``...`` and other index tensors, hence :class:`~pyro.ops.indexing.Vindex`),
``torch.gather``, ``index_select``, ``F.embedding``, ``F.one_hot`` (whose
result's conversion to a float dtype is the differentiable one-hot), and
``Categorical.log_prob`` (which gathers). Forward, every one of them is the
plain integer indexing operation. Backward, ``x[z]`` is one matrix product,
and any other indexing form one :func:`torch.einsum` of the incoming gradient
with ``x`` (indexed by the *other* index tensors only), so that, e.g.,
``Vindex(T)[..., z, :]`` never builds the ``out.numel() * K`` tensor of all
alternatives: its memory is ``O(T.numel() + out.numel() + z.numel() * K)``.

Shape operations keep the one-hot alongside, rearranged in the same way (its
category dimension stays last): ``reshape``, ``view``, ``flatten``,
``squeeze``, ``unsqueeze``, ``expand``, ``broadcast_tensors``, slicing,
``permute``, ``transpose``, ``swapaxes``, ``.T``, ``.mT``, ``movedim``,
``moveaxis``, ``flip``, ``narrow``, ``select``, ``unbind``, ``split``,
``chunk``, ``cat``, ``stack``, ``clone``, ``.to(device)``.

Indexing an *integer* (or boolean) table, ``int_table[z]`` (a label remap),
carries no gradient: there is nothing to differentiate. Neither does any
other operation that reads the value (comparisons, ``torch.where``, masks,
arithmetic, ``z.float()``, ``int(z)``): it sees a plain integer tensor, and
:func:`pyro_ils.report_dropped_gradients` lists it. Operations that use only
the draw's shape, dtype or device (``torch.zeros_like(z)``, ``z.new_ones(n)``)
are not reported.

In-place operations on a draw (``z += 1``, ``z.add_(1)``, ``z[0] = 2``,
``z.copy_(...)``, ``z.clamp_(...)``, ``z.zero_()``, ``out=z``, setting
``z.data``...) raise a ``RuntimeError``: they would change the integer value
but not the one-hot, and later indexing would silently use the old category
forward and backward. Modify a plain copy instead, ``z.detach().clone()``
(which carries no ILS gradient), or use the out-of-place operation
(``z + 1``). ``z.clone()`` is itself a draw (it keeps the one-hot), and
``z.detach()`` / ``z.as_subclass(torch.Tensor)`` share the draw's memory, so
modify neither in place.

``ILSIndexTensor`` and ``ILSOneHotTensor`` are the former names of
:class:`SurrogateIndexTensor` and :class:`SurrogateOneHotTensor`, kept as aliases.
The classes and their dispatch are in ``pyro_ils.ops.index_dispatch``, the
indexing backward in ``index_backward`` (with ``index_contraction``), the shape
operations in ``index_shape``, the in-place refusal in ``in_place`` and the
reporting of dropped gradients in ``dropped_gradients``, all in
``pyro_ils.ops``; this module assembles them.
"""

from pyro_ils.ops.index_backward import INDEX_HANDLERS, link_gradient
from pyro_ils.ops.index_dispatch import (
    _HANDLERS,
    SurrogateIndexTensor,
    SurrogateOneHotTensor,
    carries_ils_path,
)
from pyro_ils.ops.index_shape import SHAPE_HANDLERS

__all__ = [
    "ILSIndexTensor",
    "ILSOneHotTensor",
    "SurrogateIndexTensor",
    "SurrogateOneHotTensor",
    "carries_ils_path",
    "link_gradient",
]

# The draws' __torch_function__ dispatch table (see pyro_ils.ops.index_dispatch).
_HANDLERS.update(INDEX_HANDLERS)
_HANDLERS.update(SHAPE_HANDLERS)

# The names before non-ILS estimators (straight-through, ReinMax) returned them too.
ILSIndexTensor = SurrogateIndexTensor
ILSOneHotTensor = SurrogateOneHotTensor
