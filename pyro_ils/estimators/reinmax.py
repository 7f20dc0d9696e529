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
puts on the draw; see :mod:`pyro_ils.estimators.base` for why
no division by ``w`` is needed (draws with ``w = 0``, masked out, get no gradient).
Categories outside the support have ``pi_0 = pi_1 = 0`` there and get zero gradient.
"""

from __future__ import annotations

from torch import Tensor

from pyro_ils.estimators.base import LinearEstimator
from pyro_ils.ops.projections import midpoint_limit
from pyro_ils.options import check_positive

__all__ = ["ReinMax", "reinmax_onehot"]


class ReinMax(LinearEstimator):
    r"""ReinMax (Liu et al. 2023, Algorithm 2), a second-order accurate backward:

    .. math:: \hat\nabla_{\mathrm{logits}} = 2 J(\pi_1)^\top g - \tfrac12 J(\pi_0)^\top g,
              \qquad \pi_0 = \mathrm{softmax}(\mathrm{logits}),\quad
              \pi_1 = \tfrac12\bigl(z + \mathrm{softmax}(\mathrm{logits} / \tau)\bigr),

    with :math:`J(p)^\top g = p \odot (g - \langle p, g \rangle)`. It equals ILS's
    midpoint target in the small-step limit, ``ILS(step_size=0, projection="midpoint",
    temperature=tau)``.

    :param float temperature: ``tau > 0`` (the paper recommends ``tau >= 1``).

    References:

    * Liu, Dong, Liu, Yu and Gao (2023), "Bridging discrete and backpropagation:
      straight-through and beyond", NeurIPS.
    """

    _fields = ("temperature",)

    def __init__(self, temperature: float = 1.0):
        self.temperature = check_positive("temperature", temperature)

    def rule(self, logits, onehot, g, *aux) -> Tensor:
        # The same formula as ILS's midpoint limit, computed once, in closed form.
        return midpoint_limit(onehot, logits, g, self.temperature)


def reinmax_onehot(
    logits: Tensor,
    index: Tensor,
    *,
    temperature: float = 1.0,
    support: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    r"""The one-hot ``D`` of ``index`` with the ReinMax backward (:class:`ReinMax`).

    :param logits: broadcasting to ``index.shape + (K,)``.
    :param index: the drawn categories (int64).
    :param float temperature: ``tau > 0``.
    :param support: boolean mask of the categories that may be drawn (``None``: all
        with finite logits); the others get zero gradient.
    :param weight: the weight of each draw in the loss; draws of weight 0 get no gradient.
    """
    return ReinMax(temperature).onehot(logits, index, support, weight)
