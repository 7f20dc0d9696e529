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
puts on the draw; see ``pyro_ils.estimators._surrogate_estimator`` for why
no division by ``w`` is needed (draws with ``w = 0``, masked out, get no gradient).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from pyro.distributions import Categorical, OneHotCategorical
from torch import Tensor

from ..softmax import softmax
from ..surrogate import SurrogateCategoricalMixin, SurrogateOneHotMixin
from ._surrogate_estimator import (
    EstimatorMixin,
    TemperatureMixin,
    check_temperature,
    softmax_vjp,
    surrogate_onehot,
)
from .gumbel import gumbel_given_onehot

__all__ = [
    "STOneHotCategorical",
    "STCategorical",
    "STGumbelOneHotCategorical",
    "STGumbelCategorical",
    "straight_through_onehot",
    "st_gumbel_onehot",
    "gumbel_given_argmax",
]


def _st_rule(logits: Tensor, onehot: Tensor, g: Tensor) -> Tensor:
    return softmax_vjp(softmax(logits), g)


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
    return surrogate_onehot(logits, index, _st_rule, support=support, weight=weight)


@torch.no_grad()
def gumbel_given_argmax(logits: Tensor, index: Tensor) -> Tensor:
    r"""Perturbed logits ``x = logits + G``, ``G`` iid Gumbel(0, 1), given ``argmax x = index``.

    Given the argmax ``k``, the maximum ``x_k`` is Gumbel with location
    ``logsumexp(logits)`` (independent of ``k``), and each other ``x_i`` is
    Gumbel with location ``logits_i`` truncated above at ``x_k``. With
    exponential variates ``E`` (``E = -log U``), by inverting those CDFs:

    .. math:: x_k = \mathrm{logsumexp}(\mathrm{logits}) - \log E_k, \qquad
              x_i = -\log\bigl(e^{-x_k} + E_i\, e^{-\mathrm{logits}_i}\bigr),\ i \ne k.

    Categories with ``-inf`` logits get a very negative finite ``x_i``. Returns a
    tensor of shape ``index.shape + (K,)``, detached. (The draw is
    :func:`pyro_ils.estimators.gumbel.gumbel_given_onehot`, which REBAR and RELAX
    share, for an integer ``index``.)
    """
    logits = logits.detach()
    onehot = F.one_hot(index, logits.size(-1))
    return gumbel_given_onehot(logits.expand(onehot.shape), onehot)


def _st_gumbel_rule(
    logits: Tensor, onehot: Tensor, g: Tensor, perturbed: Tensor, *, temperature: float
) -> Tensor:
    perturbed = perturbed.masked_fill(logits == -torch.inf, -torch.inf)
    y = softmax(perturbed / temperature)
    return softmax_vjp(y, g) / temperature


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
    temperature = check_temperature(temperature)
    shape = index.shape + logits.shape[-1:]
    perturbed = perturbed.detach().to(logits.dtype).expand(shape)
    rule = functools.partial(_st_gumbel_rule, temperature=temperature)
    return surrogate_onehot(logits, index, rule, perturbed, support=support, weight=weight)


class _STMixin(EstimatorMixin):
    """The straight-through backward."""

    def _surrogate_onehot(self, logits, index, support, weight) -> Tensor:
        return straight_through_onehot(logits, index, support=support, weight=weight)


class _STGumbelMixin(TemperatureMixin):
    """The ST-Gumbel backward, with Gumbel noise drawn given the draw."""

    def _surrogate_onehot(self, logits, index, support, weight) -> Tensor:
        masked = logits.detach()
        if support is not None:
            masked = masked.masked_fill(~support, -torch.inf)
        perturbed = gumbel_given_argmax(masked, index)
        return st_gumbel_onehot(
            logits,
            index,
            perturbed,
            temperature=self.temperature,
            support=support,
            weight=weight,
        )


class STOneHotCategorical(_STMixin, SurrogateOneHotMixin, OneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the
    straight-through backward (Bengio et al. 2013).

    ``rsample()`` returns the exact float one-hot draw ``z`` (the value
    ``sample()`` returns under the same RNG state); for ``g = dL/dz`` the logits
    receive :math:`\pi \odot (g - \langle \pi, g\rangle)`. ``log_prob(value)`` is
    the discrete mass, differentiable in ``value`` as ``<value, log pi>``.

    Example::

        pyro.sample("z", STOneHotCategorical(logits=logits))

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    """


class STCategorical(_STMixin, SurrogateCategoricalMixin, Categorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the
    straight-through backward (Bengio et al. 2013).

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.index_tensor.ILSIndexTensor`
    (the value ``sample()`` returns under the same RNG state), differentiable
    through indexing (``locs[z]``, ``Vindex``, ``gather``, ``F.embedding``,
    ``F.one_hot``, ``Categorical.log_prob``) as if it were the one-hot ``z``
    whose logits receive :math:`\pi \odot (g - \langle \pi, g\rangle)`.

    Example::

        z = pyro.sample("z", STCategorical(logits=logits))
        mean = locs[z]  # differentiable in logits

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    """


class STGumbelOneHotCategorical(_STGumbelMixin, SurrogateOneHotMixin, OneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the
    straight-through Gumbel-Softmax backward (Jang et al. 2017; Maddison et al. 2017).

    ``rsample()`` returns the exact float one-hot draw ``z = onehot(k)`` (the
    value ``sample()`` returns under the same RNG state); for ``g = dL/dz`` the
    logits receive :math:`\tfrac1\tau\, y \odot (g - \langle y, g\rangle)` with
    ``y = softmax((logits + G) / tau)`` and Gumbel noise ``G`` drawn given
    ``argmax(logits + G) = k``. Unlike Pyro's
    :class:`~pyro.distributions.RelaxedOneHotCategoricalStraightThrough`,
    ``log_prob`` is the discrete mass, so a KL to a ``OneHotCategorical`` prior
    is taken analytically by :class:`~pyro.infer.TraceMeanField_ELBO`.

    Example::

        pyro.sample("z", STGumbelOneHotCategorical(logits=logits, temperature=0.5))

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: the relaxation's temperature ``tau > 0`` (default 1.0).
    """


class STGumbelCategorical(_STGumbelMixin, SurrogateCategoricalMixin, Categorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the
    straight-through Gumbel-Softmax backward (Jang et al. 2017; Maddison et al. 2017).

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.index_tensor.ILSIndexTensor`
    equal to a ``Categorical`` draw ``k``, differentiable through indexing as the
    one-hot of :class:`STGumbelOneHotCategorical`.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: the relaxation's temperature ``tau > 0`` (default 1.0).
    """
