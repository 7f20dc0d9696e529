r"""Gapped straight-through (GST; Fan, Chi, Rudnicky and Ramadge 2022).

ST-Gumbel (:class:`~pyro_ils.estimators.STGumbel`) sends the logits the backward
through ``softmax((logits + G) / tau)``, with Gumbel noise ``G`` that makes the drawn
category the argmax. Fan et al. (2022) name the properties of that perturbed point they
find essential and build a perturbation with them, without the noise: the drawn category is
the argmax of the perturbed logits, and leads the others by a gap. The perturbation is
a deterministic function of the logits and the draw, so the estimator needs no
resampling and has no noise of its own.

The draw is exact, ``z = onehot(k)``, ``k ~ Categorical(softmax(logits))``. With
:math:`M = \max_j \mathrm{logits}_j` and a gap :math:`\kappa > 0`, the perturbed logits
are

.. math::

    \tilde\ell_k = M, \qquad
    \tilde\ell_i = \min(\mathrm{logits}_i,\, M - \kappa) \quad (i \ne k),

that is ``logits + sg(m_1 - m_2)``: :math:`m_1 = (M - \mathrm{logits}_k)\, z` raises
the drawn logit to the maximum, and :math:`m_2 = (1 - z) \odot
\max(\mathrm{logits} - M + \kappa, 0)` lowers every other logit until it is at least
:math:`\kappa` below. The perturbation is held fixed (``d tilde_l / d logits = I``)
and the logits receive the backward of ``y = softmax(tilde_l / tau)``,

.. math:: \hat\nabla_{\mathrm{logits}} = \tfrac{1}{\tau}\, J_{\mathrm{softmax}}(y)^\top g
          = \tfrac{1}{\tau}\, y \odot (g - \langle y, g \rangle),
          \qquad g = \partial L / \partial z.

``kappa=1.0`` is the authors' GST-1.0. ``kappa="p"`` is their GST-p, whose gap
follows the drawn category's probability :math:`\pi_k`:
:math:`\kappa = -\log(1 - \pi_k) / \pi_k` (at least 1, growing without bound as
:math:`\pi_k \to 1`). (The authors' code also centres the perturbed logits, which
changes neither ``y`` nor its backward.) Categories outside the support keep ``-inf``
and get no gradient; the rule is linear in ``g`` (see :mod:`pyro_ils.estimators.base`:
no division by the draw's weight; draws of weight 0 get no gradient), and a
``Bernoulli`` draw is its two-category case on the logits ``(0, a)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pyro_ils.estimators.base import LinearEstimator
from pyro_ils.estimators.straight_through import relaxed_rule
from pyro_ils.ops.softmax import softmax
from pyro_ils.options import check_positive

__all__ = ["GST", "gapped_logits"]

#: The gap of GST-p, which follows the drawn category's probability.
ADAPTIVE_GAP = "p"


def _check_kappa(kappa) -> float | str:
    """``kappa`` as a positive float, or ``"p"``; else ``ValueError``."""
    if isinstance(kappa, str):
        if kappa != ADAPTIVE_GAP:
            raise ValueError(f"kappa must be a positive finite number or 'p', got {kappa!r}")
        return kappa
    return check_positive("kappa", kappa)


@torch.no_grad()
def gapped_logits(logits: Tensor, onehot: Tensor, kappa: float | str = 1.0) -> Tensor:
    r"""GST's perturbed logits: :math:`M` at the drawn category,
    :math:`\min(\mathrm{logits}_i, M - \kappa)` elsewhere, :math:`M = \max_j
    \mathrm{logits}_j` (``kappa="p"``: :math:`\kappa = -\log(1 - \pi_k) / \pi_k`).
    Detached; ``-inf`` logits stay ``-inf``.

    :param logits: shape ``(..., K)``, ``-inf`` outside the support.
    :param onehot: the draw, broadcasting to ``logits``.
    :param kappa: the gap ``> 0``, or ``"p"``.
    """
    logits = logits.detach()
    top = logits.amax(-1, keepdim=True)
    if kappa == ADAPTIVE_GAP:
        tiny = torch.finfo(logits.dtype).tiny
        pi = (softmax(logits) * onehot).sum(-1, keepdim=True).clamp(min=tiny)
        kappa = -torch.log1p(-pi) / pi
    return torch.where(onehot > 0, top, torch.minimum(logits, top - kappa))


class GST(LinearEstimator):
    r"""Gapped straight-through (Fan et al. 2022): the backward through
    ``y = softmax(tilde_l / tau)`` at the perturbed logits

    .. math:: \tilde\ell_k = M, \qquad \tilde\ell_i = \min(\mathrm{logits}_i, M - \kappa)
              \ (i \ne k), \qquad M = \max_j \mathrm{logits}_j,

    held fixed (:func:`~pyro_ils.estimators.gst.gapped_logits`), for the exact draw
    ``k``: :math:`\hat\nabla_{\mathrm{logits}} = \tfrac1\tau\, y \odot (g - \langle y,
    g\rangle)`. Deterministic given the draw.

    :param float temperature: the relaxation's temperature ``tau > 0``.
    :param kappa: the gap ``kappa > 0`` (1.0: the paper's GST-1.0), or ``"p"`` for
        GST-p's gap :math:`-\log(1 - \pi_k) / \pi_k`.

    References:

    * Fan, Chi, Rudnicky and Ramadge (2022), "Training discrete deep generative models
      via gapped straight-through estimator", ICML.
    * Jang, Gu and Poole (2017), "Categorical reparameterization with Gumbel-Softmax",
      ICLR.
    """

    _fields = ("temperature", "kappa")

    def __init__(self, temperature: float = 1.0, kappa: float | Literal["p"] = 1.0):
        self.temperature = check_positive("temperature", temperature)
        self.kappa = _check_kappa(kappa)

    def rule(self, logits, onehot, g, *aux) -> Tensor:
        perturbed = gapped_logits(logits, onehot, self.kappa)
        return relaxed_rule(logits, perturbed, g, self.temperature)
