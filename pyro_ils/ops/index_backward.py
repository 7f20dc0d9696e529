"""Indexing by a surrogate draw: the exact integer forward, the one-hot-contraction backward.

``x[z]`` (any mix of slices, integers, ``None``, ``...`` and other index
tensors, hence :class:`~pyro.ops.indexing.Vindex`), ``torch.gather``,
``index_select`` and ``F.embedding`` of a floating-point ``x`` by a
:class:`~pyro_ils.ops.index_dispatch.SurrogateIndexTensor` ``z`` give the plain
integer-indexing result, linked (:func:`link_gradient`) to a backward that sends
``dL/dz_j = <dL/dx[z], x[j]>`` to the draw's one-hot; ``F.one_hot(z)`` is a
:class:`~pyro_ils.ops.index_dispatch.SurrogateOneHotTensor`. ``INDEX_HANDLERS``
maps each torch function to its handler.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pyro_ils.debug import ACTIVE_REPORT
from pyro_ils.ops.index_contraction import _contraction_grad
from pyro_ils.ops.index_dispatch import (
    SurrogateIndexTensor,
    SurrogateOneHotTensor,
    _arg,
    _onehot,
    _plain,
    _record,
    _site,
)
from pyro_ils.ops.index_shape import _slice_onehot
from pyro_ils.ops.softmax import finite


class _GradLink(torch.autograd.Function):
    """Identity on ``out`` that also sends ``grad_fn(dL/dout)`` to ``source``."""

    @staticmethod
    def forward(ctx, out, source, grad_fn):
        ctx.grad_fn = grad_fn
        return out.clone()

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, ctx.grad_fn(grad_out), None


def link_gradient(out: Tensor, source: Tensor, grad_fn) -> Tensor:
    """Return ``out`` unchanged forward; backward, ``source`` receives ``grad_fn(dL/dout)``."""
    if not (torch.is_grad_enabled() and source.requires_grad and out.is_floating_point()):
        return out
    return _GradLink.apply(out, source, grad_fn)


def _alternatives_check(size: int, num_categories: int, what: str) -> None:
    if size < num_categories:
        raise IndexError(
            f"{what}: an ILS draw over {num_categories} categories indexes a dimension of "
            f"size {size}; every category must be a valid index for its gradient"
        )


def _getitem_grad(x: Tensor, index: tuple, position: int, oh: Tensor):
    """Backward of ``x[index]`` to the one-hot of the ILS index at ``index[position]``."""
    num_categories = oh.shape[-1]

    def alt_index(alt):
        alt = alt.expand(index[position].shape + alt.shape)
        new = []
        for i, a in enumerate(index):
            if i == position:
                new.append(alt)
            elif isinstance(a, Tensor):
                new.append(a.unsqueeze(-1) if a.dim() else a)
            else:
                new.append(a)
        return tuple(new)

    if len(index) == 1:
        # x[z]: the contraction over the leading dimension is one matrix product.
        def leading_grad_fn(grad_out):
            table = finite(x.detach()[:num_categories]).reshape(num_categories, -1)
            grad = grad_out.reshape(-1, table.shape[1]) @ table.T
            return grad.reshape(index[0].shape + (num_categories,)).sum_to_size(oh.shape)

        return leading_grad_fn

    def grad_fn(grad_out):
        grad = _contraction_grad(x.detach(), index, position, num_categories, grad_out)
        if grad is not None:
            return grad.sum_to_size(oh.shape)
        # Index forms not handled above (numpy integer scalars...): gather every
        # alternative, an intermediate of size out.numel() * num_categories.
        xd = finite(x.detach())
        alt = xd[alt_index(torch.arange(num_categories, device=xd.device))]
        # Locate the alternatives' dimension by shape inference on the meta device.
        meta_x = torch.empty(xd.shape, device="meta")

        def meta(a):
            return (
                torch.empty(a.shape, dtype=a.dtype, device="meta") if isinstance(a, Tensor) else a
            )

        shape_k = meta_x[tuple(meta(a) for a in alt_index(torch.arange(num_categories)))].shape
        shape_k1 = meta_x[tuple(meta(a) for a in alt_index(torch.arange(num_categories + 1)))].shape
        pos = next(i for i, (a, b) in enumerate(zip(shape_k, shape_k1, strict=True)) if a != b)
        broadcast_ndim = max(a.dim() for a in index if isinstance(a, Tensor))
        prod = alt * grad_out.unsqueeze(pos)
        start = pos - broadcast_ndim
        dims = tuple(range(start)) + tuple(range(pos + 1, prod.dim()))
        if dims:
            prod = prod.sum(dims)
        return prod.sum_to_size(oh.shape)

    return grad_fn


def _getitem(func, args, kwargs):
    x, index = args[0], args[1]
    idx = index if isinstance(index, tuple) else (index,)
    if not any(isinstance(a, SurrogateIndexTensor) for a in idx):
        # Slicing the draw itself.
        result = func(_plain(x), _plain(index))
        oh = _onehot(x)
        if oh is None:
            return result
        return SurrogateIndexTensor(result, _slice_onehot(x, oh, _plain(idx)), _site(x))
    if any(isinstance(a, Tensor) and a.dtype == torch.bool for a in idx):
        raise NotImplementedError(
            "indexing with a boolean mask next to an ILS draw is not supported"
        )
    plain_idx = _plain(idx)
    out = _plain(x)[plain_idx]
    if not out.is_floating_point():
        # An integer (or boolean) table, e.g. a label remap: no gradient to carry.
        if ACTIVE_REPORT.get() is not None and any(_onehot(a) is not None for a in idx):
            _record(func, idx)
        return out
    for i, a in enumerate(idx):
        oh = _onehot(a)
        if oh is None:
            continue
        dim_size = _indexed_dim_size(x, idx, i)
        _alternatives_check(dim_size, oh.shape[-1], "x[z]")
        out = link_gradient(out, oh, _getitem_grad(_plain(x), plain_idx, i, oh))
    return out


def _indexed_dim_size(x: Tensor, idx: tuple, position: int) -> int:
    """Size of the dimension of ``x`` that ``idx[position]`` indexes."""
    consumes = [0 if (a is None or a is Ellipsis) else 1 for a in idx]
    ellipsis_dims = x.dim() - sum(consumes)
    before = zip(idx[:position], consumes[:position], strict=True)
    d = sum(ellipsis_dims if a is Ellipsis else c for a, c in before)
    return x.shape[d]


def _dim_indexing(func, args, kwargs, make_grad_fn):
    """Shared body of ``gather`` and ``index_select``: ``func(input, dim, index)``.

    ``make_grad_fn(x, d, oh, index)`` builds the backward to the one-hot.
    """
    x, dim, index = (
        _arg(args, kwargs, 0, "input"),
        _arg(args, kwargs, 1, "dim"),
        _arg(args, kwargs, 2, "index"),
    )
    out = func(*_plain(args), **_plain(kwargs))
    oh = _onehot(index)
    if oh is None or not out.is_floating_point():
        if ACTIVE_REPORT.get() is not None and (oh is not None or _onehot(x) is not None):
            _record(func, (index, x))
        return out
    x = _plain(x)
    d = dim % x.dim()
    _alternatives_check(x.shape[d], oh.shape[-1], func.__name__)
    return link_gradient(out, oh, make_grad_fn(x.detach(), d, oh, index))


def _gather_grad_fn(x, d, oh, index):
    def grad_fn(grad_out):
        sl = [slice(0, s) for s in index.shape]
        sl[d] = slice(0, oh.shape[-1])
        alt = x[tuple(sl)].movedim(d, -1).unsqueeze(d)
        return (grad_out.unsqueeze(-1) * finite(alt)).sum_to_size(oh.shape)

    return grad_fn


def _index_select_grad_fn(x, d, oh, index):
    def grad_fn(grad_out):
        num_categories = oh.shape[-1]
        alt = finite(x.narrow(d, 0, num_categories)).movedim(d, 0).reshape(num_categories, -1)
        g = grad_out.movedim(d, 0).reshape(grad_out.shape[d], -1)
        return (g @ alt.T).sum_to_size(oh.shape)

    return grad_fn


def _gather(func, args, kwargs):
    return _dim_indexing(func, args, kwargs, _gather_grad_fn)


def _index_select(func, args, kwargs):
    return _dim_indexing(func, args, kwargs, _index_select_grad_fn)


def _embedding(func, args, kwargs):
    index, weight = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    out = func(*_plain(args), **_plain(kwargs))
    oh = _onehot(index)
    if oh is None or not out.is_floating_point():
        if ACTIVE_REPORT.get() is not None and oh is not None:
            _record(func, (index,))
        return out
    weight = _plain(weight)
    num_categories = oh.shape[-1]
    _alternatives_check(weight.shape[0], num_categories, "F.embedding")

    def grad_fn(grad_out):
        return (grad_out @ finite(weight.detach()[:num_categories]).T).sum_to_size(oh.shape)

    return link_gradient(out, oh, grad_fn)


def _one_hot(func, args, kwargs):
    index = _arg(args, kwargs, 0, "input")
    out = func(*_plain(args), **_plain(kwargs))
    if _onehot(index) is None:
        return out
    oh = index.onehot
    num_classes = out.shape[-1]
    if num_classes >= oh.shape[-1]:
        float_oh = F.pad(oh, (0, num_classes - oh.shape[-1]))
    else:
        float_oh = oh[..., :num_classes]
    return SurrogateOneHotTensor(out, float_oh, _site(index))


INDEX_HANDLERS = {
    Tensor.__getitem__: _getitem,
    Tensor.gather: _gather,
    torch.gather: _gather,
    Tensor.index_select: _index_select,
    torch.index_select: _index_select,
    F.embedding: _embedding,
    torch._C._nn.one_hot: _one_hot,
}
