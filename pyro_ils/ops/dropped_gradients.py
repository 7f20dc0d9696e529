"""Where a surrogate draw's gradient was dropped, for :func:`pyro_ils.report_dropped_gradients`.

The draw's ``__torch_function__`` and its handlers (:mod:`pyro_ils.ops.index_dispatch`)
call :func:`record_dropped` for each operation that read a draw's value without
carrying its gradient, while a report is active. This finds the user code that
called the operation (skipping this package's own frames and torch's Python API
wrappers) and passes ``"<operation> at <file>:<line>"`` to
:func:`pyro_ils.debug.record_drop`. Operations called from inside torch or Pyro
(validation, bookkeeping) are not the user's model and are not reported, nor are
those that use only the draw's shape, dtype or device.
"""

from __future__ import annotations

import os
import sys

import pyro
import torch

from pyro_ils.debug import record_drop

_PKG_DIRS = tuple(
    os.path.dirname(m.__file__) + os.sep for m in (torch, pyro, sys.modules[__name__.split(".")[0]])
)
# This package's own frames (pyro_ils/ and its subpackages, pyro_ils/ops/ included).
_OWN_DIR = os.path.dirname(os.path.dirname(__file__)) + os.sep
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


def record_dropped(func, args, site_of) -> None:
    """Record that ``func`` read a draw among ``args`` without carrying its gradient.

    ``site_of(*args)`` gives the draw's sample site (or ``None``).
    """
    name = getattr(func, "__name__", str(func))
    if name in _SILENT:
        return
    # Find the code that called the torch operation (skipping this package and
    # torch's Python API wrappers). Operations called from inside torch or pyro
    # (validation, bookkeeping) are not the user's model and are not reported.
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith((_OWN_DIR,) + _API_FILES):
        frame = frame.f_back
    if frame is None or frame.f_code.co_filename.startswith(_PKG_DIRS):
        return
    where = f"{name} at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    record_drop(site_of(*args), where)
