"""The integer tensors that carry a surrogate one-hot, and their ``__torch_function__``.

:class:`SurrogateIndexTensor` is a categorical draw, :class:`SurrogateOneHotTensor`
the ``F.one_hot`` of one (see :mod:`pyro_ils.ops.index_tensor`, which exports
them). An operation on a draw runs, in this order:

* its handler in ``_HANDLERS``, where it has one: indexing by the draw
  (:mod:`pyro_ils.ops.index_backward`) and shape operations on it
  (:mod:`pyro_ils.ops.index_shape`). Those modules build on this one, so
  :mod:`pyro_ils.ops.index_tensor` fills the table from theirs;
* else it is refused if it would modify the draw in place
  (:mod:`pyro_ils.ops.in_place`);
* else it runs on the plain integer tensor, and inside
  :func:`pyro_ils.report_dropped_gradients` it is recorded as a dropped gradient
  (:mod:`pyro_ils.ops.dropped_gradients`).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from pyro_ils.debug import ACTIVE_REPORT
from pyro_ils.ops.dropped_gradients import record_dropped
from pyro_ils.ops.in_place import check_not_in_place

# ``torch function -> handler(func, args, kwargs)`` for a SurrogateIndexTensor
# argument; filled by pyro_ils.ops.index_tensor.
_HANDLERS: dict = {}


def _plain(x):
    if isinstance(x, (SurrogateIndexTensor, SurrogateOneHotTensor)):
        return x.as_subclass(Tensor)
    if isinstance(x, (tuple, list)):
        return type(x)(_plain(a) for a in x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _onehot(x) -> Tensor | None:
    """The differentiable one-hot of an ILS index, if it still carries one."""
    if isinstance(x, SurrogateIndexTensor):
        oh = x.__dict__.get("_ils_onehot")
        if oh is not None:
            return oh
    return None


def _site(*xs) -> str | None:
    for x in xs:
        if isinstance(x, (SurrogateIndexTensor, SurrogateOneHotTensor)):
            return x.__dict__.get("_ils_site")
    return None


# ``_record(func, args)``: ``func`` dropped the gradient of the draw among ``args``.
# A partial, with no frame of its own: record_dropped and the warning's
# stacklevel count the frames up to the user's code.
_record = functools.partial(record_dropped, site_of=_site)


def _arg(args, kwargs, i, name):
    return args[i] if len(args) > i else kwargs[name]


def carries_ils_path(value) -> bool:
    """Whether ``value`` carries an ILS backward (an ILS draw made with gradients on)."""
    if isinstance(value, SurrogateIndexTensor):
        oh = _onehot(value)
        return oh is not None and oh.requires_grad
    return isinstance(value, Tensor) and value.requires_grad


class _SurrogateValue(Tensor):
    """Shared by the integer tensors that carry a surrogate one-hot: saving,
    pickling and deep copies keep the plain integer value only."""

    def __reduce_ex__(self, protocol):
        return self.as_subclass(Tensor).__reduce_ex__(protocol)

    def __deepcopy__(self, memo):
        return self.as_subclass(Tensor).clone()


class SurrogateIndexTensor(_SurrogateValue):
    """An ``int64`` draw of a categorical that is differentiable through indexing.

    Returned by the ``rsample()`` of ILS and of the other surrogate estimators
    (straight-through, ReinMax...). Create with
    ``SurrogateIndexTensor(index, onehot)``; ``onehot`` broadcasts to
    ``index.shape + (K,)`` and carries the surrogate backward. The object is an
    ordinary integer tensor for every purpose but indexing (see
    :mod:`pyro_ils.ops.index_tensor`). Saving (``torch.save``, ``copy.deepcopy``,
    pickling) stores the plain integer value. ``ILSIndexTensor`` is the same class.
    """

    @staticmethod
    def __new__(cls, index: Tensor, onehot: Tensor, site: str | None = None):
        if index.dtype != torch.long:
            raise TypeError(f"SurrogateIndexTensor needs an int64 index, got {index.dtype}")
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
        handler = _HANDLERS.get(func)
        if handler is not None:
            return handler(func, args, kwargs)
        check_not_in_place(func, args, kwargs, _SurrogateValue)
        result = func(*_plain(args), **_plain(kwargs))
        if ACTIVE_REPORT.get() is not None:
            _record(func, args)
        return result


class SurrogateOneHotTensor(_SurrogateValue):
    """The ``int64`` result of ``F.one_hot`` on a surrogate draw.

    Its conversion to a floating dtype (``.float()``, ``.to(dtype)``,
    arithmetic with a float tensor) is the differentiable float one-hot.
    ``ILSOneHotTensor`` is the same class.
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
        check_not_in_place(func, args, kwargs, _SurrogateValue)
        result = func(*_plain(args), **_plain(kwargs))
        if not isinstance(result, Tensor) or not (
            result.is_floating_point() or result.dtype == torch.long
        ):
            if ACTIVE_REPORT.get() is not None:
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
                return SurrogateOneHotTensor(result, swapped, _site(*args))
        return result


_FLOAT_CONVERSIONS = frozenset(
    {Tensor.float, Tensor.double, Tensor.half, Tensor.bfloat16, Tensor.to, Tensor.type,
     Tensor.type_as}
)  # fmt: skip


def _swap_onehot(x, dtype):
    if isinstance(x, SurrogateOneHotTensor):
        oh = x.__dict__["_ils_onehot"]
        return oh if dtype is None else oh.to(dtype)
    if isinstance(x, (tuple, list)):
        return type(x)(_swap_onehot(a, dtype) for a in x)
    if isinstance(x, dict):
        return {k: _swap_onehot(v, dtype) for k, v in x.items()}
    return x
