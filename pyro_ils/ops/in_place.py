"""Refusing in-place operations on a surrogate draw.

An in-place operation on a draw (``z += 1``, ``z.add_(1)``, ``z[0] = 2``,
``z.copy_(...)``, ``out=z``, setting ``z.data``...) would change its integer
value and leave the one-hot that indexing reads stale, so the draw's
``__torch_function__`` (:mod:`pyro_ils.ops.index_dispatch`) refuses it with
:func:`check_not_in_place`.
"""

from __future__ import annotations

from torch import Tensor

# Names ending in ``_`` are PyTorch's in-place convention; these few are not
# changes of value.
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


def check_not_in_place(func, args, kwargs, draw_type: type) -> None:
    """Raise if ``func`` would modify a ``draw_type`` tensor in place (or write to it via ``out=``).

    ``draw_type`` is the base class of the integer tensors that carry a one-hot.
    """
    out = kwargs.get("out") if kwargs else None
    outs = out if isinstance(out, (tuple, list)) else (out,)
    target = args and isinstance(args[0], draw_type) and _mutates(func)
    if not (target or any(isinstance(o, draw_type) for o in outs)):
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
