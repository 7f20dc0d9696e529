"""Shape operations on a surrogate draw: they keep the one-hot alongside.

``reshape``, ``view``, ``flatten``, ``squeeze``, ``unsqueeze``, ``expand``,
``broadcast_tensors``, ``permute``, ``transpose``, ``swapaxes``, ``.T``, ``.mT``,
``movedim``, ``moveaxis``, ``flip``, ``narrow``, ``select``, ``unbind``, ``split``,
``chunk``, ``cat``, ``stack``, ``clone``, ``.to(device)`` and slicing
(:func:`_slice_onehot`) of a :class:`~pyro_ils.ops.index_dispatch.SurrogateIndexTensor`
return a draw whose one-hot is rearranged in the same way (its category
dimension stays last). ``SHAPE_HANDLERS`` maps each torch function to its handler.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_ils.debug import ACTIVE_REPORT
from pyro_ils.ops.index_dispatch import SurrogateIndexTensor, _arg, _onehot, _plain, _record, _site


def _reshape_like(func, args, kwargs):
    result = func(*_plain(args), **_plain(kwargs))
    if _onehot(args[0]) is None or not isinstance(result, Tensor) or result.dtype != torch.long:
        return result
    oh = args[0].onehot
    return SurrogateIndexTensor(result, oh.reshape(result.shape + oh.shape[-1:]), _site(args[0]))


def _expand_like(func, args, kwargs):
    result = func(*_plain(args), **_plain(kwargs))
    oh = _onehot(args[0])
    if oh is None:
        return result
    return SurrogateIndexTensor(result, oh, _site(args[0]))


def _same_shape(func, args, kwargs):
    result = func(*_plain(args), **_plain(kwargs))
    oh = _onehot(args[0])
    if oh is None or not isinstance(result, Tensor) or result.dtype != torch.long:
        if ACTIVE_REPORT.get() is not None:
            _record(func, args)
        return result
    return SurrogateIndexTensor(result, oh.to(result.device), _site(args[0]))


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
    return SurrogateIndexTensor(result, oh.permute(dims), _site(args[0]))


def _transpose(func, args, kwargs):
    result = func(*_plain(args), **_plain(kwargs))
    oh = _onehot(args[0])
    if oh is None:
        return result
    ndim = args[0].dim()
    # transpose(dim0, dim1), swapdims(dim0, dim1), swapaxes(axis0, axis1)
    d0 = args[1] if len(args) > 1 else kwargs.get("dim0", kwargs.get("axis0"))
    d1 = args[2] if len(args) > 2 else kwargs.get("dim1", kwargs.get("axis1"))
    return SurrogateIndexTensor(result, oh.transpose(d0 % ndim, d1 % ndim), _site(args[0]))


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
            if ACTIVE_REPORT.get() is not None:
                _record(func, args)
            return result
        z = args[0]
        oh = apply_to_onehot(z.onehot, z.dim(), args[1:], kwargs)
        site = _site(z)
        if isinstance(result, (tuple, list)):
            return type(result)(
                SurrogateIndexTensor(r, o, site) for r, o in zip(result, oh, strict=True)
            )
        return SurrogateIndexTensor(result, oh, site)

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
        out.append(r if oh is None else SurrogateIndexTensor(r, oh, _site(t)))
    return tuple(out)


def _cat_or_stack(func, args, kwargs):
    tensors = args[0]
    result = func(*_plain(args), **_plain(kwargs))
    ohs = [_onehot(t) for t in tensors]
    sizes = {oh.shape[-1] for oh in ohs if oh is not None}
    if any(oh is None for oh in ohs) or len(sizes) != 1:
        if ACTIVE_REPORT.get() is not None:
            _record(func, tensors)
        return result
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    ndim = result.dim() if func in (torch.stack,) else tensors[0].dim()
    dim = dim % ndim
    ohs = [t.onehot for t in tensors]
    return SurrogateIndexTensor(result, func(ohs, dim), _site(*tensors))


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


SHAPE_HANDLERS = {
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
    SHAPE_HANDLERS[_f] = _reshape_like
for _f in (Tensor.expand, Tensor.expand_as, Tensor.broadcast_to, torch.broadcast_to):
    SHAPE_HANDLERS[_f] = _expand_like
for _f in (Tensor.long, Tensor.to, Tensor.clone, torch.clone, Tensor.contiguous, Tensor.cuda,
           Tensor.cpu, Tensor.type_as, Tensor.type):  # fmt: skip
    SHAPE_HANDLERS[_f] = _same_shape
