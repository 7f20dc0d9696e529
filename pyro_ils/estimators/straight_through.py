r"""Straight-through (ST) and straight-through Gumbel-Softmax (ST-Gumbel) as distributions.

Both draw ``z = onehot(k)`` exactly, ``k ~ Categorical(pi)``, ``pi = softmax(logits)``,
and differ only in the gradient they give the logits for the incoming
``g = dL/dz``:

* **ST** (Bengio, Léonard and Courville 2013, "Estimating or propagating gradients
  through stochastic neurons for conditional computation", arXiv:1308.3432)
  back-propagates as if the forward had returned ``pi`` instead of ``z``:

  .. math:: \hat\nabla_{\mathrm{logits}} = J_{\mathrm{softmax}}(\pi)^\top g
            = \pi \odot (g - \langle \pi, g \rangle).

  It is the ``pi - pi.detach() + z`` idiom; Liu et al. (2023, Section 4) show it
  is a first-order approximation of the true gradient. For a linear objective
  ``L(z) = <a, z>`` it is exact: ``g = a`` for every draw and
  :math:`\nabla_{\mathrm{logits}} \langle a, \pi \rangle = J(\pi)^\top a`.

* **ST-Gumbel** (Jang, Gu and Poole 2017, "Categorical reparameterization with
  Gumbel-Softmax", ICLR, Section 2.2; Maddison, Mnih and Teh 2017, "The
  Concrete distribution", ICLR) back-propagates through the Gumbel-Softmax
  relaxation of the draw (Jang et al. eq. 2),

  .. math:: y = \mathrm{softmax}\bigl((\mathrm{logits} + G) / \tau\bigr), \qquad
            \hat\nabla_{\mathrm{logits}} = \tfrac{1}{\tau}\, J_{\mathrm{softmax}}(y)^\top g
            = \tfrac{1}{\tau}\, y \odot (g - \langle y, g \rangle),

  with Gumbel noise ``G`` such that ``k = argmax(logits + G)`` (the Gumbel-max
  trick, Jang et al. eq. 1). Instead of drawing ``G`` and
  taking its argmax, we draw ``k`` with the base class's sampler and then ``G``
  from its law *given* that argmax (:func:`gumbel_given_argmax`, the
  "top-down" construction of Maddison, Tarlow and Minka 2014, "A* sampling",
  also used by REBAR, Tucker et al. 2017, Appendix C). The pair ``(k, G)`` has
  exactly the law of the Gumbel-max construction, so the estimator is the same
  one, and ``rsample()`` returns the same value as ``sample()`` under the same
  RNG state.

Unlike Pyro's :class:`~pyro.distributions.RelaxedOneHotCategoricalStraightThrough`,
these are :class:`~pyro.distributions.OneHotCategorical` /
:class:`~pyro.distributions.Categorical` subclasses: ``log_prob`` is the discrete
mass, so :class:`~pyro.infer.TraceMeanField_ELBO` takes the KL to a
``Categorical``/``OneHotCategorical`` prior analytically, and ``Trace_ELBO``
scores the guide by its mass, not by the relaxed density.

Both rules are linear in ``g``, which already carries the weight ``w`` the loss
puts on the draw; see :mod:`pyro_ils.estimators.base` for why
no division by ``w`` is needed (draws with ``w = 0``, masked out, get no gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pyro_ils.estimators.base import LinearEstimator
from pyro_ils.estimators.gumbel import gumbel_given_onehot, relax_onehot
from pyro_ils.ops.exact_draw import exact_onehot
from pyro_ils.ops.softmax import softmax, softmax_vjp
from pyro_ils.options import check_positive

__all__ = [
    "StraightThrough",
    "STGumbel",
    "straight_through_onehot",
    "st_gumbel_onehot",
    "gumbel_given_argmax",
    "relaxed_rule",
]


class StraightThrough(LinearEstimator):
    r"""Straight-through (Bengio et al. 2013): the backward of ``pi - pi.detach() + z``,

    .. math:: \hat\nabla_{\mathrm{logits}} = J_{\mathrm{softmax}}(\pi)^\top g
              = \pi \odot (g - \langle \pi, g \rangle).

    References:

    * Bengio, Léonard and Courville (2013), "Estimating or propagating gradients
      through stochastic neurons for conditional computation", arXiv:1308.3432.
    """

    def rule(self, logits, onehot, g, *aux) -> Tensor:
        return softmax_vjp(softmax(logits), g)


class STGumbel(LinearEstimator):
    r"""Straight-through Gumbel-Softmax (Jang et al. 2017; Maddison et al. 2017):
    the backward through ``y = softmax((logits + G) / tau)``,

    .. math:: \hat\nabla_{\mathrm{logits}} = \tfrac{1}{\tau}\, y \odot (g - \langle y, g \rangle),

    with Gumbel noise ``G`` drawn given ``argmax(logits + G) = k``, the exact draw
    (:func:`~pyro_ils.estimators.straight_through.gumbel_given_argmax`).

    :param float temperature: the relaxation's temperature ``tau > 0``.

    References:

    * Jang, Gu and Poole (2017), "Categorical reparameterization with Gumbel-Softmax",
      ICLR.
    * Maddison, Mnih and Teh (2017), "The Concrete distribution", ICLR.
    """

    _fields = ("temperature",)

    def __init__(self, temperature: float = 1.0):
        self.temperature = check_positive("temperature", temperature)

    def onehot(self, logits, index, support=None, weight=None) -> Tensor:
        perturbed = gumbel_given_argmax(_within(logits, support), index)
        return self.onehot_given_noise(logits, index, perturbed, support, weight)

    def onehot_given_noise(self, logits, index, perturbed, support=None, weight=None) -> Tensor:
        """:meth:`~pyro_ils.estimators.Estimator.onehot` with the perturbed logits
        ``logits + G`` given."""
        shape = index.shape + logits.shape[-1:]
        perturbed = perturbed.detach().to(logits.dtype).expand(shape)
        return exact_onehot(logits, index, self, perturbed, support=support, weight=weight)

    def rule(self, logits, onehot, g, *aux) -> Tensor:
        (perturbed,) = aux
        return relaxed_rule(logits, perturbed, g, self.temperature)


def relaxed_rule(logits: Tensor, perturbed: Tensor, g: Tensor, temperature: float) -> Tensor:
    r"""The backward through ``y = softmax(perturbed / tau)`` with ``d perturbed / d logits = I``:

    .. math:: \tfrac{1}{\tau}\, J_{\mathrm{softmax}}(y)^\top g
              = \tfrac{1}{\tau}\, y \odot (g - \langle y, g \rangle),

    ``perturbed`` set to ``-inf`` where ``logits`` is (categories that cannot be drawn get
    no mass). Broadcasts over leading dimensions. The rule of :class:`STGumbel` (Gumbel
    noise), :class:`~pyro_ils.estimators.GumbelRao` (one term per noise draw) and
    :class:`~pyro_ils.estimators.GST` (a deterministic perturbation).
    """
    perturbed = perturbed.masked_fill(logits == -torch.inf, -torch.inf)
    return softmax_vjp(relax_onehot(perturbed, temperature), g) / temperature


def _within(logits: Tensor, support: Tensor | None) -> Tensor:
    """``logits`` detached, ``-inf`` outside ``support``."""
    logits = logits.detach()
    return logits if support is None else logits.masked_fill(~support, -torch.inf)


def straight_through_onehot(
    logits: Tensor,
    index: Tensor,
    *,
    support: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    r"""The one-hot of ``index`` with the straight-through backward
    :math:`\pi \odot (g - \langle \pi, g\rangle)`, ``pi = softmax(logits)``.

    :param logits: broadcasting to ``index.shape + (K,)``.
    :param index: the drawn categories (int64).
    :param support: boolean mask of the categories that may be drawn (``None``: all
        with finite logits); the others get zero gradient.
    :param weight: the weight of each draw in the loss; draws of weight 0 get no gradient.
    """
    return StraightThrough().onehot(logits, index, support, weight)


@torch.no_grad()
def gumbel_given_argmax(logits: Tensor, index: Tensor, num_samples: int | None = None) -> Tensor:
    r"""Perturbed logits ``x = logits + G``, ``G`` iid Gumbel(0, 1), given ``argmax x = index``.

    Given the argmax ``k``, the maximum ``x_k`` is Gumbel with location
    ``logsumexp(logits)`` (independent of ``k``), and each other ``x_i`` is
    Gumbel with location ``logits_i`` truncated above at ``x_k``. With
    exponential variates ``E`` (``E = -log U``), by inverting those CDFs:

    .. math:: x_k = \mathrm{logsumexp}(\mathrm{logits}) - \log E_k, \qquad
              x_i = -\log\bigl(e^{-x_k} + E_i\, e^{-\mathrm{logits}_i}\bigr),\ i \ne k.

    Categories with ``-inf`` logits get a very negative finite ``x_i``. Returns a
    tensor of shape ``index.shape + (K,)``, detached; with ``num_samples = S``,
    ``index.shape + (S, K)``: ``S`` independent draws given the same argmax. (The draw
    is :func:`pyro_ils.estimators.gumbel.gumbel_given_onehot`, which REBAR and RELAX
    share, for an integer ``index``.)
    """
    logits = logits.detach()
    onehot = F.one_hot(index, logits.size(-1))
    if num_samples is not None:
        onehot = onehot.unsqueeze(-2).expand(index.shape + (num_samples, logits.size(-1)))
        logits = logits.unsqueeze(-2)
    return gumbel_given_onehot(logits.expand(onehot.shape), onehot)


def st_gumbel_onehot(
    logits: Tensor,
    index: Tensor,
    perturbed: Tensor,
    *,
    temperature: float = 1.0,
    support: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    r"""The one-hot of ``index`` with the ST-Gumbel backward
    :math:`\tfrac1\tau\, y \odot (g - \langle y, g\rangle)`,
    ``y = softmax(perturbed / tau)``.

    ``perturbed = logits + G`` holds the Gumbel noise of the draw (held fixed:
    ``d perturbed / d logits = I``), with ``argmax perturbed = index``; see
    :func:`gumbel_given_argmax`.
    """
    return STGumbel(temperature).onehot_given_noise(logits, index, perturbed, support, weight)
