r"""The one autograd function of the package: an exact draw whose backward is an estimator's.

Every single-evaluation estimator of :mod:`pyro_ils.estimators` (ILS, straight-through,
ReinMax, ST-Gumbel) returns the exact one-hot ``z = onehot(k)`` of a draw ``k`` it is
given, and swaps in its own gradient for the logits in the backward:

.. math:: \hat\nabla_{\mathrm{logits}} = \mathrm{estimator}(\mathrm{logits}, z, g, w),
          \qquad g = \partial L / \partial z,

where ``w`` is the weight the loss puts on the draw (scale, subsampling factor, mask,
``1 / num_particles``; see :mod:`pyro_ils.poutine.site_weight`). Whatever the estimator, the
returned gradient is zero for categories outside the support and for draws of weight
``0`` (masked out).

A Bernoulli draw ``b`` is the two-category draw ``(1 - b, b)`` with logits ``(0, a)``
(:func:`exact_bernoulli`), so every estimator applies to ``Bernoulli`` sites as well.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["exact_onehot", "exact_bernoulli"]


class _ExactOneHot(torch.autograd.Function):
    """One-hot of a given draw, with ``estimator.backward`` to the logits."""

    @staticmethod
    def forward(ctx, logits, index, support, weight, estimator, *aux):
        onehot = F.one_hot(index, logits.size(-1)).to(logits.dtype)
        ctx.estimator = estimator
        ctx.save_for_backward(logits, onehot, support, weight, *aux)
        return onehot

    @staticmethod
    def backward(ctx, grad_output):
        logits, onehot, support, weight, *aux = ctx.saved_tensors
        grad = ctx.estimator.backward(logits, onehot, grad_output, support, weight, *aux)
        grad = grad.masked_fill((weight == 0).unsqueeze(-1), 0.0)
        if support is not None:
            grad = grad.masked_fill(~support, 0.0)
        return (grad, None, None, None, None) + (None,) * len(aux)


def exact_onehot(
    logits: Tensor,
    index: Tensor,
    estimator,
    *aux: Tensor,
    support: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """The one-hot of ``index`` whose backward is ``estimator.backward``.

    :param logits: broadcasting to ``index.shape + (K,)``.
    :param index: the drawn categories (int64).
    :param estimator: an object with ``backward(logits, onehot, g, support, weight, *aux)``
        returning the gradient for ``logits`` (see :class:`pyro_ils.estimators.Estimator`).
    :param aux: tensors of shape ``index.shape + (K,)`` that the backward needs
        (ST-Gumbel's noise).
    :param support: boolean mask of the categories that may be drawn, or ``None`` (all).
    :param weight: the weight of each draw in the loss, broadcasting to ``index.shape``
        (``None``: 1).
    :returns: the float one-hot, shape ``index.shape + (K,)``, dtype of ``logits``.
    """
    shape = index.shape + logits.shape[-1:]
    logits = logits.expand(shape)
    if support is not None:
        support = support.to(logits.device).expand(shape)
    if weight is None:
        weight = torch.ones((), dtype=logits.dtype, device=logits.device)
    weight = torch.as_tensor(weight).to(dtype=logits.dtype, device=logits.device)
    weight = weight.expand(index.shape)
    return _ExactOneHot.apply(logits, index, support, weight, estimator, *aux)


def exact_bernoulli(logits: Tensor, value: Tensor, estimator, weight: Tensor | None = None):
    r"""``value`` in {0., 1.} whose backward to ``logits`` is the estimator's on two categories.

    The draw is the one-hot ``(1 - b, b)`` of the categories with logits ``(0, a)``;
    the downstream gradient ``dL/db`` enters as ``g = (0, dL/db)`` and the logit ``a``
    receives the category-1 component of the two-category gradient (zero for
    ``a = +-inf``, a certain outcome).
    """
    logits = logits.expand(value.shape)
    # The logits (0, a), shifted by a constant so that they stay finite (softmax is
    # shift-invariant): (-s, a - s), s = max(a, 0).
    big = torch.finfo(logits.dtype).max ** 0.5
    a = logits.clamp(-big, big)
    shift = a.detach().clamp(min=0)
    pair = torch.stack([-shift, a - shift], dim=-1)
    with torch.no_grad():
        support = torch.stack([logits < torch.inf, logits > -torch.inf], dim=-1)
    onehot = estimator.onehot(pair, value.long(), None if bool(support.all()) else support, weight)
    return onehot[..., 1]
