r"""What the single-evaluation surrogate-gradient estimators share.

Straight-through, ST-Gumbel and ReinMax all draw ``z = onehot(k)`` exactly and
return to the logits a gradient that is a *linear* function of the incoming
gradient ``g = dL/dz``: a sum of softmax vector-Jacobian products

.. math:: J_{\mathrm{softmax}}(p)^\top g = p \odot (g - \langle p, g\rangle),

evaluated at one or two points ``p`` of the simplex. This module holds

* :func:`softmax_vjp`, that product;
* :func:`surrogate_onehot`, the autograd function that returns the exact one-hot
  forward and applies an estimator's backward rule, handling the parts every
  estimator must get right in the same way: categories outside the support
  (``-inf`` logits, zero probabilities) get zero, finite gradient and their
  entries of ``g`` are ignored; draws with weight ``w = 0`` (masked out) get no
  gradient;
* the constructor mixins that give the distributions their options.

**The per-draw weight.** A Pyro ELBO scales each site's terms by its weight ``w``
(``poutine.scale``, plate subsampling, mask, ``1 / num_particles``; see
:mod:`pyro_ils.site_weight`), so ``g`` already carries ``w``. ILS divides ``g``
by ``w`` before its (nonlinear) step and multiplies the result by ``w``. For a
rule linear in ``g`` that round trip is the identity,
``w * rule(g / w) = rule(g)``, so these estimators use ``g`` as it comes and use
the weight only to zero the gradient of draws with ``w = 0``, as ILS does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..softmax import softmax_vjp
from ..surrogate import SurrogateDistributionMixin

__all__ = [
    "softmax_vjp",
    "surrogate_onehot",
    "check_temperature",
    "EstimatorMixin",
    "TemperatureMixin",
]

#: ``rule(logits, onehot, g, *aux) -> grad_logits``: an estimator's backward,
#: given ``logits`` with ``-inf`` outside the support and ``g`` zero there.
BackwardRule = Callable[..., Tensor]


def check_temperature(temperature) -> float:
    """``temperature`` as a positive finite float, else ``ValueError``."""
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"temperature must be a scalar, got shape {tuple(temperature.shape)}")
        temperature = temperature.item()
    if isinstance(temperature, bool):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(
            f"temperature must be a positive finite number, got {temperature!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return value


class _SurrogateOneHot(torch.autograd.Function):
    """One-hot of a given draw, with an estimator's backward rule to ``logits``."""

    @staticmethod
    def forward(ctx, logits, index, support, weight, rule, *aux):
        onehot = F.one_hot(index, logits.size(-1)).to(logits.dtype)
        ctx.rule = rule
        ctx.save_for_backward(logits, onehot, support, weight, *aux)
        return onehot

    @staticmethod
    def backward(ctx, grad_output):
        logits, onehot, support, weight, *aux = ctx.saved_tensors
        inside = logits > -torch.inf
        if support is not None:
            inside = inside & support
        logits = logits.masked_fill(~inside, -torch.inf)
        g = grad_output.masked_fill(~inside, 0.0)
        grad = ctx.rule(logits, onehot, g, *aux)
        if weight is not None:
            grad = grad.masked_fill((weight == 0).unsqueeze(-1), 0.0)
        grad = grad.masked_fill(~inside, 0.0)
        return (grad, None, None, None, None) + (None,) * len(aux)


def surrogate_onehot(
    logits: Tensor,
    index: Tensor,
    rule: BackwardRule,
    *aux: Tensor,
    support: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """The one-hot of ``index`` whose backward is ``rule(logits, onehot, g, *aux)``.

    :param logits: broadcasting to ``index.shape + (K,)``.
    :param index: the drawn categories (int64).
    :param rule: the estimator's backward; it receives ``logits`` with ``-inf``
        outside the support and ``g`` with zeros there; its output is zeroed
        outside the support and for draws of weight 0.
    :param aux: tensors of shape ``index.shape + (K,)`` that ``rule`` needs.
    :param support: boolean mask of the categories that may be drawn, or ``None``.
    :param weight: the weight of each draw in the loss, broadcasting to ``index.shape``.
    :returns: the float one-hot, shape ``index.shape + (K,)``, dtype of ``logits``.
    """
    shape = index.shape + logits.shape[-1:]
    logits = logits.expand(shape)
    if support is not None:
        support = support.to(logits.device).expand(shape)
    if weight is not None:
        weight = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
        weight = weight.expand(index.shape)
    return _SurrogateOneHot.apply(logits, index, support, weight, rule, *aux)


class EstimatorMixin(SurrogateDistributionMixin):
    """Constructor of an estimator without options: ``(probs, logits, validate_args)``."""

    def __init__(self, probs=None, logits=None, validate_args=None):
        self._init_surrogate(logits)
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)


class TemperatureMixin(EstimatorMixin):
    """Constructor of an estimator with a ``temperature`` option (positive, finite)."""

    temperature: float
    _option_names = ("temperature",)

    def __init__(self, probs=None, logits=None, validate_args=None, *, temperature=1.0):
        self.temperature = check_temperature(temperature)
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)

    def with_temperature(self, temperature: float):
        """A copy with another ``temperature``."""
        new = self.expand(self.batch_shape)
        new.temperature = check_temperature(temperature)
        return new
