r"""ReinMax (Liu, Dong, Liu, Yu and Gao 2023) as distributions.

Liyuan Liu, Chengyu Dong, Xiaodong Liu, Bin Yu, Jianfeng Gao, "Bridging Discrete
and Backpropagation: Straight-Through and Beyond", NeurIPS 2023
(arXiv:2304.08612). The paper shows that straight-through approximates the
gradient of ``E[L(z)]`` to first order (forward Euler) and derives a
second-order one from Heun's method, without second derivatives.

The draw is exact, ``z = D = onehot(k)``, ``k ~ Categorical(pi_0)``,
``pi_0 = softmax(logits)``. The paper's Algorithm 2 (ReinMax) writes the
backward with stop-gradients (``sg``):

.. math::

    \pi_0 &= \mathrm{softmax}(\theta), \qquad
    \pi_1 = \tfrac12\bigl(D + \mathrm{softmax}(\theta / \tau)\bigr), \\
    \tilde\pi_1 &= \mathrm{softmax}\bigl(\mathrm{sg}(\log \pi_1 - \theta) + \theta\bigr), \qquad
    \pi_2 = 2\,\tilde\pi_1 - \tfrac12\,\pi_0, \\
    \hat D &= \pi_2 - \mathrm{sg}(\pi_2) + D .

``tilde pi_1`` equals ``pi_1`` and its Jacobian in ``theta`` is the softmax
Jacobian *at* ``pi_1``. So for the incoming ``g = dL/dz`` the logits receive

.. math::

    \hat\nabla_\theta = 2\, J(\pi_1)^\top g - \tfrac12\, J(\pi_0)^\top g, \qquad
    J(p)^\top g = p \odot (g - \langle p, g \rangle),

which is what this module computes (in closed form, not through the
stop-gradient graph). The temperature ``tau`` enters only ``pi_1``; the paper
recommends ``tau >= 1`` (its experiments tune it in [1, 1.5, 2, ...]) and its
package refuses ``tau < 1``; here any positive ``tau`` is accepted.

For a linear objective ``L(z) = <a, z>`` and ``tau = 1`` the estimator is
unbiased: ``E_D[pi_1 <pi_1, a>] = (pi <pi, a> * 3 + pi * a) / 4`` gives
``E[J(pi_1)^T a] = 3/4 J(pi)^T a`` and ``2 * 3/4 - 1/2 = 1``. For ``tau != 1``
it is not.

The rule is linear in ``g``, which already carries the weight ``w`` the loss
puts on the draw; see ``pyro_ils.estimators._surrogate_estimator`` for why
no division by ``w`` is needed (draws with ``w = 0``, masked out, get no gradient).
Categories outside the support have ``pi_0 = pi_1 = 0`` there and get zero gradient.
"""

from __future__ import annotations

import functools

from pyro.distributions import Categorical, OneHotCategorical
from torch import Tensor

from ..softmax import softmax
from ..surrogate import SurrogateCategoricalMixin, SurrogateOneHotMixin
from ._surrogate_estimator import TemperatureMixin, check_temperature, softmax_vjp, surrogate_onehot

__all__ = ["ReinMaxOneHotCategorical", "ReinMaxCategorical", "reinmax_onehot"]


def _reinmax_rule(logits: Tensor, onehot: Tensor, g: Tensor, *, temperature: float) -> Tensor:
    pi_0 = softmax(logits)
    pi_1 = 0.5 * (onehot + softmax(logits / temperature))
    return 2.0 * softmax_vjp(pi_1, g) - 0.5 * softmax_vjp(pi_0, g)


def reinmax_onehot(
    logits: Tensor,
    index: Tensor,
    *,
    temperature: float = 1.0,
    support: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    r"""The one-hot ``D`` of ``index`` with the ReinMax backward
    :math:`2 J(\pi_1)^\top g - \tfrac12 J(\pi_0)^\top g`,
    ``pi_1 = (D + softmax(logits / tau)) / 2``, ``pi_0 = softmax(logits)``.

    :param logits: broadcasting to ``index.shape + (K,)``.
    :param index: the drawn categories (int64).
    :param float temperature: ``tau > 0``.
    :param support: boolean mask of the categories that may be drawn (``None``: all
        with finite logits); the others get zero gradient.
    :param weight: the weight of each draw in the loss; draws of weight 0 get no gradient.
    """
    rule = functools.partial(_reinmax_rule, temperature=check_temperature(temperature))
    return surrogate_onehot(logits, index, rule, support=support, weight=weight)


class _ReinMaxMixin(TemperatureMixin):
    """The ReinMax backward."""

    def _surrogate_onehot(self, logits, index, support, weight) -> Tensor:
        return reinmax_onehot(
            logits, index, temperature=self.temperature, support=support, weight=weight
        )


class ReinMaxOneHotCategorical(_ReinMaxMixin, SurrogateOneHotMixin, OneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the
    ReinMax backward (Liu et al. 2023, Algorithm 2).

    ``rsample()`` returns the exact float one-hot draw ``D`` (the value
    ``sample()`` returns under the same RNG state); for ``g = dL/dD`` the logits
    receive :math:`2 J(\pi_1)^\top g - \tfrac12 J(\pi_0)^\top g` with
    ``pi_0 = softmax(logits)``, ``pi_1 = (D + softmax(logits / tau)) / 2`` and
    :math:`J(p)^\top g = p \odot (g - \langle p, g\rangle)`. ``log_prob`` is the
    discrete mass, so a KL to a ``OneHotCategorical`` prior is taken analytically
    by :class:`~pyro.infer.TraceMeanField_ELBO`.

    Example::

        pyro.sample("z", ReinMaxOneHotCategorical(logits=logits, temperature=1.3))

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: ``tau > 0`` (default 1.0; the paper recommends ``tau >= 1``).
    """


class ReinMaxCategorical(_ReinMaxMixin, SurrogateCategoricalMixin, Categorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the
    ReinMax backward (Liu et al. 2023, Algorithm 2).

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.index_tensor.ILSIndexTensor`
    equal to a ``Categorical`` draw, differentiable through indexing
    (``locs[z]``, ``Vindex``, ``gather``, ``F.embedding``, ``F.one_hot``,
    ``Categorical.log_prob``) as the one-hot of :class:`ReinMaxOneHotCategorical`.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: ``tau > 0`` (default 1.0; the paper recommends ``tau >= 1``).
    """
