r"""The signal of an ILS draw per unit of its weight.

A Pyro ELBO multiplies each term by its weight ``w`` (scale, subsampling factor,
mask), so the signal that reaches a draw carries ``w``: the incoming gradient ``dL/dz``
of the first-order backward (:mod:`pyro_ils.ops.ils_onehot`), or the exact differences ``d`` of
:class:`~pyro_ils.TraceILSDiff_ELBO`. ILS divides it out before the step, so that the
target means the same thing whatever the weight,

.. math:: \pi_D = h(z - c\, g), \qquad g = \mathrm{signal} / w,

(:func:`~pyro_ils.ops.projections.intermediate_target`), and the gradient it returns is
multiplied by ``w`` again, which zeroes the draws of weight ``0`` (masked out): those
divide by 1 instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_ils.ops.softmax import finite

__all__ = ["per_draw_signal"]


def per_draw_signal(signal: Tensor, weight: Tensor | None, support: Tensor | None = None) -> Tensor:
    """``g = signal / w``: the signal of each draw (shape ``index.shape + (K,)``) made
    finite and divided by the draw's weight ``w`` (broadcasting against ``index.shape``;
    ``None``: no division, for a backward linear in the signal), zero outside
    ``support`` (``None``: every category). Draws with ``w = 0`` divide by 1 instead;
    the caller zeroes them by multiplying by ``w``."""
    g = finite(signal)
    if weight is not None:
        weight = weight.unsqueeze(-1)
        g = g / torch.where(weight != 0, weight, torch.ones_like(weight))
    if support is not None:
        g = g.masked_fill(~support, 0.0)
    return g
