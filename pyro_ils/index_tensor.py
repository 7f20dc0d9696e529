r"""An integer tensor that is differentiable through indexing.

``ILSCategorical.rsample()`` returns an :class:`ILSIndexTensor`: an ``int64``
tensor holding the drawn categories, exactly as a ``Categorical`` draw, that
also holds the differentiable one-hot ``z`` of the draw. Indexing operations
read it as the one-hot contraction

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
"""

from __future__ import annotations

import os
import sys

import pyro
import torch
import torch.nn.functional as F
from torch import Tensor

from .debug import _ACTIVE, record_drop
from .softmax import finite

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
        # New tensors shaped like the draw do not read its value.
        "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
        "randint_like", "new_zeros", "new_ones", "new_empty", "new_full",
    }
)  # fmt: skip


_API_FILES = tuple(
    os.path.join(os.path.dirname(torch.__file__), name)
    for name in ("overrides.py", "_tensor.py", "functional.py", os.path.join("nn", "functional.py"))
) + (os.path.join(os.path.dirname(pyro.__file__), "ops", "indexing.py"),)  # Vindex


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


# In-place operations on an ILS draw would change its integer value and leave
# the one-hot that indexing reads stale, so they are refused (see the module
# docstring). Names ending in ``_`` are PyTorch's in-place convention; these few
# are not changes of value.
_NOT_MUTATING = frozenset(
    {"requires_grad_", "share_memory_", "retain_grad", "detach_", "rename_", "record_stream",
     "_fix_weakref"}
)  # fmt: skip
_IN_PLACE_DUNDERS = frozenset(
    {"__setitem__", "__iadd__", "__isub__", "__imul__", "__imatmul__", "__itruediv__",
     "__ifloordiv__", "__idiv__", "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__",
     "__ilshift__", "__irshift__"}
)  # fmt: skip
_SET_DATA = Tensor.data.__set__
_MUTATES: dict = {}


def _mutates(func) -> bool:
    try:
        return _MUTATES[func]
    except (KeyError, TypeError):
        pass
    name = getattr(func, "__name__", "")
    mutates = (
        name in _IN_PLACE_DUNDERS
        or (name.endswith("_") and not name.endswith("__") and name not in _NOT_MUTATING)
        or func == _SET_DATA
    )
    try:
        _MUTATES[func] = mutates
    except TypeError:
        pass
    return mutates


def _check_not_in_place(func, args, kwargs) -> None:
    """Raise if ``func`` would modify an ILS draw in place (or write to it via ``out=``)."""
    out = kwargs.get("out") if kwargs else None
    outs = out if isinstance(out, (tuple, list)) else (out,)
    target = args and isinstance(args[0], _ILSValue) and _mutates(func)
    if not (target or any(isinstance(o, _ILSValue) for o in outs)):
        return
    name = getattr(func, "__name__", str(func))
    if func == _SET_DATA:
        name = "setting .data"
    elif not target:
        name += "(out=...)"
    raise RuntimeError(
        f"{name} would modify an ILS draw in place: its integer value would change but not "
        "the differentiable one-hot that indexing reads, so later indexing would silently use "
        "the old category forward and backward. Modify a plain copy instead, "
        "`z.detach().clone()` (it carries no ILS gradient), or use an out-of-place operation "
        "(`z + 1` instead of `z += 1`)."
    )


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
        _check_not_in_place(func, args, kwargs)
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
        _check_not_in_place(func, args, kwargs)
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
    # transpose(dim0, dim1), swapdims(dim0, dim1), swapaxes(axis0, axis1)
    d0 = args[1] if len(args) > 1 else kwargs.get("dim0", kwargs.get("axis0"))
    d1 = args[2] if len(args) > 2 else kwargs.get("dim1", kwargs.get("axis1"))
    return ILSIndexTensor(result, oh.transpose(d0 % ndim, d1 % ndim), _site(args[0]))


def _dims(d, ndim):
    """``d`` (an int or a sequence of ints) made non-negative for a tensor of ``ndim`` dims."""
    if isinstance(d, (tuple, list, torch.Size)):
        return tuple(i % ndim for i in d)
    return d % ndim


def _rearrange(apply_to_onehot):
    """Handler for an operation that rearranges the draw's elements.

    ``apply_to_onehot(onehot, ndim, args, kwargs)`` applies the same operation to
    the draw's one-hot (its category dimension last, dims non-negative), with
    ``args`` the operation's arguments after the draw.
    """

    def handler(func, args, kwargs):
        result = func(*_plain(args), **_plain(kwargs))
        if _onehot(args[0]) is None:
            if _ACTIVE.get() is not None:
                _record(func, args)
            return result
        z = args[0]
        oh = apply_to_onehot(z.onehot, z.dim(), args[1:], kwargs)
        site = _site(z)
        if isinstance(result, (tuple, list)):
            return type(result)(ILSIndexTensor(r, o, site) for r, o in zip(result, oh, strict=True))
        return ILSIndexTensor(result, oh, site)

    return handler


def _reverse_dims(oh, ndim, args, kwargs):
    return oh.permute(tuple(reversed(range(ndim))) + (ndim,))


def _matrix_transpose(oh, ndim, args, kwargs):
    return oh.transpose(ndim - 2, ndim - 1)


def _t(oh, ndim, args, kwargs):
    return oh.transpose(0, 1) if ndim == 2 else oh


def _movedim(oh, ndim, args, kwargs):
    src = args[0] if args else kwargs["source"]
    dst = args[1] if len(args) > 1 else kwargs["destination"]
    return oh.movedim(_dims(src, ndim), _dims(dst, ndim))


def _flip(oh, ndim, args, kwargs):
    dims = (args[0] if len(args) == 1 else args) if args else kwargs["dims"]
    return oh.flip(_dims(tuple(dims) if isinstance(dims, (tuple, list)) else (dims,), ndim))


def _narrow(oh, ndim, args, kwargs):
    dim, start, length = (
        _arg(args, kwargs, 0, "dim"),
        _arg(args, kwargs, 1, "start"),
        _arg(args, kwargs, 2, "length"),
    )
    return oh.narrow(dim % ndim, start, length)


def _select(oh, ndim, args, kwargs):
    return oh.select(_arg(args, kwargs, 0, "dim") % ndim, _arg(args, kwargs, 1, "index"))


def _unbind(oh, ndim, args, kwargs):
    dim = args[0] if args else kwargs.get("dim", 0)
    return oh.unbind(dim % ndim)


def _split(oh, ndim, args, kwargs):
    size = args[0] if args else kwargs.get("split_size_or_sections", kwargs.get("split_size"))
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    return oh.split(size, dim % ndim)


def _chunk(oh, ndim, args, kwargs):
    chunks = args[0] if args else kwargs["chunks"]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    return oh.chunk(chunks, dim % ndim)


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


_K_LABEL = 51  # torch.einsum's sublist labels run over 0..51


def _canonical_index(x: Tensor, index: tuple, position: int):
    """Rewrite ``x[index]`` as ``x2[idx2]`` where ``idx2`` holds one entry per
    dimension of ``x2``, each ``slice(None)`` or an index tensor with ``dim() > 0``.

    Integers (and 0-dim index tensors, which PyTorch reads as integers) become
    a selection, ``None`` an ``unsqueeze`` and other slices are applied to
    ``x2``. If ``index[position]`` is a 0-dim tensor, its dimension is instead
    moved last in ``x2``, past the dimensions that ``idx2`` indexes. Returns
    ``(x2, idx2, where)`` with ``where`` mapping a position in ``index`` to its
    position in ``idx2`` (or to ``x2.dim() - 1`` for the held 0-dim index), or
    ``None`` for index forms not handled here.
    """
    if sum(a is Ellipsis for a in index) > 1:
        return None
    consumed = sum(a is not None and a is not Ellipsis for a in index)
    idx2, where, d, held = [], {}, 0, 0
    for p, a in enumerate(index):
        if isinstance(a, Tensor) and a.dim() == 0 and a.dtype != torch.bool:
            if p == position:
                x = x.movedim(d, -1)
                held = 1
            else:
                x = x.index_select(d, a.reshape(1)).squeeze(d)
            continue
        if a is Ellipsis:
            idx2.extend([slice(None)] * (x.dim() - consumed))
            d += x.dim() - consumed
        elif a is None:
            x = x.unsqueeze(d)
            idx2.append(slice(None))
            d += 1
        elif isinstance(a, slice):
            if a != slice(None):
                x = x[(slice(None),) * d + (a,)]
            idx2.append(slice(None))
            d += 1
        elif isinstance(a, int) and not isinstance(a, bool):
            x = x.select(d, a)
        elif isinstance(a, Tensor) and a.dim() > 0 and a.dtype != torch.bool:
            where[p] = len(idx2)
            idx2.append(a)
            d += 1
        else:
            return None
    if d > x.dim() - held:
        return None
    idx2.extend([slice(None)] * (x.dim() - held - d))  # implicit trailing ``:``
    if held:
        where[position] = x.dim() - 1
    return x, tuple(idx2), where


def _contraction_grad(x: Tensor, index: tuple, position: int, num_categories: int, grad_out):
    """Backward of ``x[index]`` to the one-hot of ``index[position]`` as one contraction.

    The gradient is ``g[b, k] = sum grad_out[b, ...] * x[index with k in place of
    the draw]``. Rather than gathering all ``k`` alternatives of every output
    element (``out.numel() * K`` numbers), this moves the draw's dimension of
    ``x`` last, applies only the *other* index tensors to ``x`` and contracts
    with ``grad_out`` in one :func:`torch.einsum`. Index tensors that are an
    ``arange`` along their own broadcast dimension (how
    :class:`~pyro.ops.indexing.Vindex` spells ``:`` and batch dimensions) are
    read as labelled dimensions, not gathered, so ``Vindex(T)[..., z, :]`` costs
    ``O(T.numel() + out.numel() + z.numel() * K)`` memory. Gathering by other
    index tensors is done in chunks of categories so that no intermediate
    exceeds that size either.

    Returns the gradient shaped ``index[position].shape + (K,)``, or ``None``
    where the index form is not handled (the caller falls back).
    """
    canonical = _canonical_index(x, index, position)
    if canonical is None:
        return None
    x2, idx2, where = canonical
    i = where[position]
    adv = [j for j, a in enumerate(idx2) if isinstance(a, Tensor)]
    free = [j for j, a in enumerate(idx2) if not isinstance(a, Tensor)]
    bshape = torch.broadcast_shapes(*(idx2[j].shape for j in adv))
    m = len(bshape)
    if m + x2.dim() >= _K_LABEL:
        return None
    # The output's dimensions (PyTorch follows NumPy: adjacent index tensors put
    # the broadcast dimensions in their place, separated ones put them first).
    blabels = list(range(m))
    if not adv:
        out_labels = [m + j for j in free]
    elif adv == list(range(adv[0], adv[-1] + 1)):
        out_labels = [m + j for j in free if j < adv[0]] + blabels
        out_labels += [m + j for j in free if j > adv[-1]]
    else:
        out_labels = blabels + [m + j for j in free]
    sizes = {t: bshape[t] for t in blabels}
    sizes.update({m + j: x2.shape[j] for j in free})
    if tuple(sizes[t] for t in out_labels) != tuple(grad_out.shape):
        return None

    def nonunit(a):
        return [m - a.dim() + q for q, n in enumerate(a.shape) if n != 1]

    others = [j for j in adv if j != i]
    arange_dims, general = {}, []
    for j in others:
        a, dims = idx2[j], nonunit(idx2[j])
        if (
            len(dims) == 1
            and a.numel() == x2.shape[j]
            and all(dims[0] not in nonunit(idx2[o]) for o in others if o != j)
            and torch.equal(a.reshape(-1), torch.arange(a.numel(), dtype=a.dtype, device=a.device))
        ):
            arange_dims[j] = dims[0]
        else:
            general.append(j)
    xm = x2.permute(general + list(arange_dims) + free + [i]).narrow(-1, 0, num_categories)
    gshape = torch.broadcast_shapes(*(idx2[j].shape for j in general)) if general else ()
    glabels = [m - len(gshape) + q for q, n in enumerate(gshape) if n != 1]
    y_labels = glabels + list(arange_dims.values()) + [m + j for j in free] + [_K_LABEL]
    z = index[position]
    res_labels = nonunit(z) + [_K_LABEL]

    def contract(y):
        if general:
            y = y[tuple(idx2[j] for j in general)]
            y = y.reshape([n for n in gshape if n != 1] + list(y.shape[len(gshape) :]))
        return torch.einsum(grad_out, out_labels, finite(y), y_labels, res_labels)

    if not general:
        grad = contract(xm)
    else:
        per_category = torch.Size(gshape).numel() * xm.shape[len(general) : -1].numel()
        budget = max(grad_out.numel(), x2.numel(), z.numel() * num_categories)
        step = max(1, budget // max(per_category, 1))
        grad = torch.cat(
            [contract(xm[..., k : k + step]) for k in range(0, num_categories, step)], dim=-1
        )
    return grad.reshape(z.shape + (num_categories,))


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
        # An integer (or boolean) table, e.g. a label remap: no gradient to carry.
        if _ACTIVE.get() is not None and any(_onehot(a) is not None for a in idx):
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
        if _ACTIVE.get() is not None and (oh is not None or _onehot(x) is not None):
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
        if _ACTIVE.get() is not None and oh is not None:
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
    Tensor.swapaxes: _transpose,
    torch.swapaxes: _transpose,
    Tensor.swapdims: _transpose,
    torch.swapdims: _transpose,
    Tensor.T.__get__: _rearrange(_reverse_dims),
    Tensor.H.__get__: _rearrange(_reverse_dims),
    Tensor.mT.__get__: _rearrange(_matrix_transpose),
    Tensor.mH.__get__: _rearrange(_matrix_transpose),
    Tensor.t: _rearrange(_t),
    torch.t: _rearrange(_t),
    Tensor.movedim: _rearrange(_movedim),
    torch.movedim: _rearrange(_movedim),
    Tensor.moveaxis: _rearrange(_movedim),
    torch.moveaxis: _rearrange(_movedim),
    Tensor.flip: _rearrange(_flip),
    torch.flip: _rearrange(_flip),
    Tensor.fliplr: _rearrange(lambda oh, ndim, args, kwargs: oh.flip(1)),
    torch.fliplr: _rearrange(lambda oh, ndim, args, kwargs: oh.flip(1)),
    Tensor.flipud: _rearrange(lambda oh, ndim, args, kwargs: oh.flip(0)),
    torch.flipud: _rearrange(lambda oh, ndim, args, kwargs: oh.flip(0)),
    Tensor.narrow: _rearrange(_narrow),
    torch.narrow: _rearrange(_narrow),
    Tensor.select: _rearrange(_select),
    torch.select: _rearrange(_select),
    Tensor.unbind: _rearrange(_unbind),
    torch.unbind: _rearrange(_unbind),
    Tensor.split: _rearrange(_split),
    torch.split: _rearrange(_split),
    Tensor.chunk: _rearrange(_chunk),
    torch.chunk: _rearrange(_chunk),
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
