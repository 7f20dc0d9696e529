"""Softmax over the last dimension, fast for few categories on CPU.

On CPU, ``torch.softmax`` over a short last dimension is slower than the same
function written out, below :data:`_WRITTEN_OUT_BELOW` categories (the timings are in
``docs/lab_notes.md``). Every softmax of this package goes through :func:`softmax`,
the ILS backward and the estimators it is compared with alike.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["softmax", "softmax_vjp", "finite"]

#: Below this many categories, a CPU softmax is written out.
_WRITTEN_OUT_BELOW = 32


def softmax(logits: Tensor) -> Tensor:
    r""":math:`\pi_k = e^{\ell_k - m} / \sum_j e^{\ell_j - m}` over the last dimension,
    with :math:`m = \max_j \ell_j`: the same values as ``torch.softmax(logits, -1)``
    (to rounding), differentiable, any dtype and device. ``-inf`` logits get zero
    mass."""
    if logits.device.type == "cpu" and logits.size(-1) < _WRITTEN_OUT_BELOW:
        exp = (logits - logits.amax(-1, keepdim=True).detach()).exp()
        return exp / exp.sum(-1, keepdim=True)
    return torch.softmax(logits, dim=-1)


def softmax_vjp(p: Tensor, g: Tensor) -> Tensor:
    r"""The vector-Jacobian product of softmax at the point ``p``:
    :math:`J(p)^\top g = p \odot (g - \langle p, g \rangle)`, over the last dim."""
    return p * (g - (p * g).sum(-1, keepdim=True))


def finite(x: Tensor) -> Tensor:
    """Replace NaN by 0 and +-inf by +-sqrt(max float), so that a step stays finite."""
    big = torch.finfo(x.dtype).max ** 0.5
    return torch.nan_to_num(x, nan=0.0, posinf=big, neginf=-big)
