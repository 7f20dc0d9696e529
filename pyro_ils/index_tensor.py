r"""An integer tensor that is differentiable through indexing.

``ILSCategorical.rsample()`` returns an :class:`ILSIndexTensor`: an ``int64``
tensor holding the drawn categories, exactly as a ``Categorical`` draw, that
also holds the differentiable one-hot ``z`` of the draw. Indexing operations
read it as the one-hot contraction

.. math:: x[z] = \sum_j z_j \, x[j],

so their forward value is the exact integer result and their gradient to the
one-hot is ``dL/dz_j = <dL/dx[z], x[j]>``, the same as an explicit one-hot
matrix product. Supported: ``x[z]`` (any mix of slices and other index
tensors, hence :class:`~pyro.ops.indexing.Vindex`), ``torch.gather``,
``index_select``, ``F.embedding``, ``F.one_hot`` (whose result's conversion to
a float dtype is the differentiable one-hot), and ``Categorical.log_prob``
(which gathers). Shape operations (``reshape``, ``unsqueeze``, ``expand``,
``broadcast_tensors``, slicing, ``permute``, ``cat``, ``stack``...) keep the
one-hot alongside. Every other operation sees a plain integer tensor and
carries no gradient; :func:`pyro_ils.report_dropped_gradients` lists them.
"""

from __future__ import annotations

import os
import sys

import pyro
import torch
import torch.nn.functional as F
from torch import Tensor

from .debug import _ACTIVE, record_drop
from .ils import finite

__all__ = ["ILSIndexTensor", "ILSOneHotTensor", "carries_ils_path"]


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


def _plain(x):
    if isinstance(x, (ILSIndexTensor, ILSOneHotTensor)):
        return x.as_subclass(Tensor)
    if isinstance(x, (tuple, list)):
        return type(x)(_plain(a) for a in x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _onehot(x) -> Tensor | None:
    """The differentiable one-hot of an ILS index, if it still carries one."""
    if isinstance(x, ILSIndexTensor):
        oh = x.__dict__.get("_ils_onehot")
        if oh is not None:
            return oh
    return None


def _site(*xs) -> str | None:
    for x in xs:
        if isinstance(x, (ILSIndexTensor, ILSOneHotTensor)):
            return x.__dict__.get("_ils_site")
    return None


def carries_ils_path(value) -> bool:
    """Whether ``value`` carries an ILS backward (an ILS draw made with gradients on)."""
    if isinstance(value, ILSIndexTensor):
        oh = _onehot(value)
        return oh is not None and oh.requires_grad
    return isinstance(value, Tensor) and value.requires_grad


_PKG_DIRS = tuple(
    os.path.dirname(m.__file__) + os.sep for m in (torch, pyro, sys.modules[__name__.split(".")[0]])
)
_SILENT = frozenset(
    {
        "__get__", "__set__", "dim", "ndimension", "size", "numel", "nelement", "__len__",
        "__repr__", "__format__", "__str__", "is_floating_point", "is_complex", "element_size",
        "stride", "is_contiguous", "data_ptr", "storage_offset", "__hash__", "detach",
        "__reduce_ex__", "__deepcopy__", "_typed_storage", "untyped_storage", "get_device",
        "__dlpack__", "__dlpack_device__", "__array__", "numpy", "cpu", "__getstate__",
    }
)  # fmt: skip


_API_FILES = tuple(
    os.path.join(os.path.dirname(torch.__file__), name)
    for name in ("overrides.py", "_tensor.py", "functional.py", os.path.join("nn", "functional.py"))
)


def _record(func, args) -> None:
    name = getattr(func, "__name__", str(func))
    if name in _SILENT:
        return
    # Find the code that called the torch operation (skipping this package and
    # torch's Python API wrappers). Operations called from inside torch or pyro
    # (validation, bookkeeping) are not the user's model and are not reported.
    frame = sys._getframe(2)
    own = os.path.dirname(__file__) + os.sep
    while frame is not None and frame.f_code.co_filename.startswith((own,) + _API_FILES):
        frame = frame.f_back
    if frame is None or frame.f_code.co_filename.startswith(_PKG_DIRS):
        return
    where = f"{name} at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    record_drop(_site(*args), where)


class _ILSValue(Tensor):
    """Shared by the integer tensors that carry an ILS one-hot: saving,
    pickling and deep copies keep the plain integer value only."""

    def __reduce_ex__(self, protocol):
        return self.as_subclass(Tensor).__reduce_ex__(protocol)

    def __deepcopy__(self, memo):
        return self.as_subclass(Tensor).clone()


class ILSIndexTensor(_ILSValue):
    """An ``int64`` draw of a categorical that is differentiable through indexing.

    Create with ``ILSIndexTensor(index, onehot)``; ``onehot`` broadcasts to
    ``index.shape + (K,)`` and carries the ILS backward. The object is an
    ordinary integer tensor for every purpose but indexing (see the module
    docstring). Saving (``torch.save``, ``copy.deepcopy``, pickling) stores the
    plain integer value.
    """

    @staticmethod
    def __new__(cls, index: Tensor, onehot: Tensor, site: str | None = None):
        if index.dtype != torch.long:
            raise TypeError(f"ILSIndexTensor needs an int64 index, got {index.dtype}")
        # The one-hot is kept compact: any shape that broadcasts to
        # index.shape + (K,), so that broadcasting the draw costs nothing.
        extra = index.dim() + 1 - onehot.dim()
        if extra > 0:
            onehot = onehot.reshape((1,) * extra + onehot.shape)
        target = index.shape + onehot.shape[-1:]
        try:
            ok = extra >= 0 and torch.broadcast_shapes(onehot.shape, target) == target
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"onehot shape {tuple(onehot.shape)} does not match "
                f"index shape {tuple(index.shape)}"
            )
        obj = index.as_subclass(cls)
        obj._ils_onehot = onehot
        obj._ils_site = site
        return obj

    @property
    def onehot(self) -> Tensor:
        """The differentiable one-hot of the draw, shape ``self.shape + (K,)``."""
        base = self.__dict__["_ils_onehot"]
        return base.expand(self.shape + base.shape[-1:])

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _INDEX_HANDLERS.get(func)
        if handler is not None:
            return handler(func, args, kwargs)
        result = func(*_plain(args), **_plain(kwargs))
        if _ACTIVE.get() is not None:
            _record(func, args)
        return result


class ILSOneHotTensor(_ILSValue):
    """The ``int64`` result of ``F.one_hot`` on an ILS draw.

    Its conversion to a floating dtype (``.float()``, ``.to(dtype)``,
    arithmetic with a float tensor) is the differentiable float one-hot.
    """

    @staticmethod
    def __new__(cls, value: Tensor, onehot: Tensor, site: str | None = None):
        obj = value.as_subclass(cls)
        obj._ils_onehot = onehot
        obj._ils_site = site
        return obj

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*_plain(args), **_plain(kwargs))
        if not isinstance(result, Tensor) or not (
            result.is_floating_point() or result.dtype == torch.long
        ):
            if _ACTIVE.get() is not None:
                _record(func, args)
            return result
        if func in _FLOAT_CONVERSIONS:
            return args[0].__dict__["_ils_onehot"].to(dtype=result.dtype, device=result.device)
        # The same operation with the float one-hot in place of the integer one
        # gives the same values (0 and 1 convert exactly) and the gradient path.
        dtype = result.dtype if result.is_floating_point() else None
        swapped = func(*_swap_onehot(args, dtype), **_swap_onehot(kwargs, dtype))
        if result.is_floating_point():
            return swapped
        if isinstance(swapped, Tensor) and swapped.is_floating_point():
            if swapped.shape == result.shape:
                return ILSOneHotTensor(result, swapped, _site(*args))
        return result


_FLOAT_CONVERSIONS = frozenset(
    {Tensor.float, Tensor.double, Tensor.half, Tensor.bfloat16, Tensor.to, Tensor.type,
     Tensor.type_as}
)  # fmt: skip


def _swap_onehot(x, dtype):
    if isinstance(x, ILSOneHotTensor):
        oh = x.__dict__["_ils_onehot"]
        return oh if dtype is None else oh.to(dtype)
    if isinstance(x, (tuple, list)):
        return type(x)(_swap_onehot(a, dtype) for a in x)
    if isinstance(x, dict):
        return {k: _swap_onehot(v, dtype) for k, v in x.items()}
    return x


# ---------------------------------------------------------------------------
# Shape operations on the draw itself: keep the one-hot alongside.


def _wrap_like(result, oh, site):
    if isinstance(result, Tensor) and result.dtype == torch.long:
        return ILSIndexTensor(result, oh, site)
    return result


def _reshape_like(func, args, kwargs):
    result = func(*_plain(args), **_plain(kwargs))
    if _onehot(args[0]) is None or not isinstance(result, Tensor) or result.dtype != torch.long:
        return result
    oh = args[0].onehot
    return ILSIndexTensor(result, oh.reshape(result.shape + oh.shape[-1:]), _site(args[0]))


def _expand_like(func, args, kwargs):
    result = func(*_plain(args), **_plain(kwargs))
    oh = _onehot(args[0])
    if oh is None:
        return result
    return ILSIndexTensor(result, oh, _site(args[0]))


def _same_shape(func, args, kwargs):
    result = func(*_plain(args), **_plain(kwargs))
    oh = _onehot(args[0])
    if oh is None or not isinstance(result, Tensor) or result.dtype != torch.long:
        if _ACTIVE.get() is not None:
            _record(func, args)
        return result
    return ILSIndexTensor(result, oh.to(result.device), _site(args[0]))


def _detach(func, args, kwargs):
    return func(*_plain(args), **_plain(kwargs))


def _permute(func, args, kwargs):
    result = func(*_plain(args), **_plain(kwargs))
    oh = _onehot(args[0])
    if oh is None:
        return result
    dims = args[1:] if len(args) > 1 else (kwargs.get("dims"),)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list, torch.Size)):
        dims = tuple(dims[0])
    ndim = args[0].dim()
    dims = tuple(d % ndim for d in dims) + (ndim,)
    return ILSIndexTensor(result, oh.permute(dims), _site(args[0]))


def _transpose(func, args, kwargs):
    result = func(*_plain(args), **_plain(kwargs))
    oh = _onehot(args[0])
    if oh is None:
        return result
    ndim = args[0].dim()
    d0 = args[1] if len(args) > 1 else kwargs["dim0"]
    d1 = args[2] if len(args) > 2 else kwargs["dim1"]
    return ILSIndexTensor(result, oh.transpose(d0 % ndim, d1 % ndim), _site(args[0]))


def _broadcast_tensors(func, args, kwargs):
    tensors = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    results = func(*_plain(args), **_plain(kwargs))
    out = []
    for t, r in zip(tensors, results, strict=True):
        oh = _onehot(t)
        out.append(r if oh is None else ILSIndexTensor(r, oh, _site(t)))
    return tuple(out)


def _cat_or_stack(func, args, kwargs):
    tensors = args[0]
    result = func(*_plain(args), **_plain(kwargs))
    ohs = [_onehot(t) for t in tensors]
    sizes = {oh.shape[-1] for oh in ohs if oh is not None}
    if any(oh is None for oh in ohs) or len(sizes) != 1:
        if _ACTIVE.get() is not None:
            _record(func, tensors)
        return result
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    ndim = result.dim() if func in (torch.stack,) else tensors[0].dim()
    dim = dim % ndim
    ohs = [t.onehot for t in tensors]
    return ILSIndexTensor(result, func(ohs, dim), _site(*tensors))


# ---------------------------------------------------------------------------
# Indexing by the draw: exact forward, one-hot-contraction backward.


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
    if not any(isinstance(a, ILSIndexTensor) for a in idx):
        # Slicing the draw itself.
        result = func(_plain(x), _plain(index))
        oh = _onehot(x)
        if oh is None:
            return result
        return ILSIndexTensor(result, _slice_onehot(x, oh, _plain(idx)), _site(x))
    if any(isinstance(a, Tensor) and a.dtype == torch.bool for a in idx):
        raise NotImplementedError(
            "indexing with a boolean mask next to an ILS draw is not supported"
        )
    plain_idx = _plain(idx)
    out = _plain(x)[plain_idx]
    if not out.is_floating_point():
        return out
    for i, a in enumerate(idx):
        oh = _onehot(a)
        if oh is None:
            continue
        dim_size = _indexed_dim_size(x, idx, i)
        _alternatives_check(dim_size, oh.shape[-1], "x[z]")
        out = link_gradient(out, oh, _getitem_grad(_plain(x), plain_idx, i, oh))
    return out


def _slice_onehot(x: Tensor, oh: Tensor, idx: tuple) -> Tensor:
    """``x.onehot[idx]``, computed on the compact one-hot when ``idx`` is basic."""
    has_ellipsis = any(a is Ellipsis for a in idx)
    basic = all(
        a is None or a is Ellipsis or (isinstance(a, (int, slice)) and not isinstance(a, bool))
        for a in idx
    )
    if not basic:
        tail = (slice(None),) if has_ellipsis else (Ellipsis, slice(None))
        return x.onehot[idx + tail]
    consumed = sum(a is not None and a is not Ellipsis for a in idx)
    new, d = [], 0
    for a in idx:
        if a is Ellipsis:
            new.extend([slice(None)] * (x.dim() - consumed))
            d += x.dim() - consumed
            continue
        if a is not None:
            if oh.shape[d] == 1 and x.shape[d] != 1:
                # A broadcast dimension: every position holds the same one-hot.
                a = 0 if isinstance(a, int) else slice(None)
            d += 1
        new.append(a)
    return oh[tuple(new) + (Ellipsis, slice(None))]


def _indexed_dim_size(x: Tensor, idx: tuple, position: int) -> int:
    """Size of the dimension of ``x`` that ``idx[position]`` indexes."""
    consumes = [0 if (a is None or a is Ellipsis) else 1 for a in idx]
    ellipsis_dims = x.dim() - sum(consumes)
    before = zip(idx[:position], consumes[:position], strict=True)
    d = sum(ellipsis_dims if a is Ellipsis else c for a, c in before)
    return x.shape[d]


def _arg(args, kwargs, i, name):
    return args[i] if len(args) > i else kwargs[name]


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
    return ILSOneHotTensor(out, float_oh, _site(index))


_INDEX_HANDLERS = {
    Tensor.__getitem__: _getitem,
    Tensor.gather: _gather,
    torch.gather: _gather,
    Tensor.index_select: _index_select,
    torch.index_select: _index_select,
    F.embedding: _embedding,
    torch._C._nn.one_hot: _one_hot,
    Tensor.detach: _detach,
    torch.broadcast_tensors: _broadcast_tensors,
    torch.cat: _cat_or_stack,
    torch.stack: _cat_or_stack,
    Tensor.permute: _permute,
    torch.permute: _permute,
    Tensor.transpose: _transpose,
    torch.transpose: _transpose,
}
for _f in (Tensor.reshape, torch.reshape, Tensor.view, Tensor.view_as, Tensor.reshape_as,
           Tensor.flatten, torch.flatten, Tensor.squeeze, torch.squeeze, Tensor.unsqueeze,
           torch.unsqueeze, Tensor.unflatten):  # fmt: skip
    _INDEX_HANDLERS[_f] = _reshape_like
for _f in (Tensor.expand, Tensor.expand_as, Tensor.broadcast_to, torch.broadcast_to):
    _INDEX_HANDLERS[_f] = _expand_like
for _f in (Tensor.long, Tensor.to, Tensor.clone, torch.clone, Tensor.contiguous, Tensor.cuda,
           Tensor.cpu, Tensor.type_as, Tensor.type):  # fmt: skip
    _INDEX_HANDLERS[_f] = _same_shape
