r"""Gumbel-Rao (Paulus, Maddison and Krause 2021): ST-Gumbel, Rao-Blackwellized over its noise.

ST-Gumbel (:class:`~pyro_ils.estimators.STGumbel`) draws ``z = onehot(k)``,
``k = argmax(logits + G)``, and sends the logits
:math:`\tfrac1\tau J_{\mathrm{softmax}}(y)^\top g`, ``y = softmax((logits + G) / tau)``,
for ``g = dL/dz``. Given the draw ``k``, only the noise ``G`` is random in that
gradient: ``L`` is evaluated at ``z`` alone. Paulus et al. (2021) replace the gradient
by its conditional expectation given the draw, estimated by Monte Carlo ("GR-MCK",
their ``K`` being ``S`` here):

.. math::

    \hat\nabla^{\mathrm{GR}}_{\mathrm{logits}}
        = \mathbb E_{G \mid k}\Bigl[\tfrac{1}{\tau}\, J_{\mathrm{softmax}}(y_G)^\top g\Bigr]
        \approx \frac{1}{S} \sum_{s=1}^{S} \tfrac{1}{\tau}\,
          y_s \odot (g - \langle y_s, g \rangle), \qquad
        y_s = \mathrm{softmax}\bigl((\mathrm{logits} + G_s) / \tau\bigr),

with ``S`` draws ``G_s`` of the Gumbel noise given ``argmax(logits + G_s) = k``
(:func:`~pyro_ils.estimators.straight_through.gumbel_given_argmax`, the top-down
construction). It is a Rao-Blackwellization: its expectation over the draw is
ST-Gumbel's and, by the law of total variance, its variance (hence its mean squared
error) is no larger for every ``S >= 1``, shrinking towards that of the exact
conditional expectation as ``S`` grows, for ``S`` softmaxes in the backward and no
extra evaluation of ``L``. With ``S = 1`` it is ST-Gumbel, and given the same noise
the same number.

The noise ``G_s`` is held fixed in the backward (``d(logits + G_s) / d logits = I``),
as ST-Gumbel holds its noise. (The paper's text takes the total derivative through the
reparameterized ``G_s``; with the noise fixed the estimator's expectation over the
draw is exactly ST-Gumbel's, which is the Rao-Blackwell argument.)

The rule is linear in ``g`` (see :mod:`pyro_ils.estimators.base`: no division by
the draw's weight; draws of weight 0 get no gradient), and a ``Bernoulli`` draw is
its two-category case on the logits ``(0, a)`` (for two categories, the difference of
the two Gumbel perturbations given the draw is the logistic noise given the draw).
"""

from __future__ import annotations

from torch import Tensor

from pyro_ils.estimators.base import LinearEstimator
from pyro_ils.estimators.straight_through import _within, gumbel_given_argmax, relaxed_rule
from pyro_ils.ops.exact_draw import exact_onehot
from pyro_ils.options import check_positive

__all__ = ["GumbelRao", "check_num_samples"]


def check_num_samples(num_samples) -> int:
    """``num_samples`` if it is an int ``>= 1``, else ``ValueError``."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    return num_samples


class GumbelRao(LinearEstimator):
    r"""Gumbel-Rao (Paulus et al. 2021): ST-Gumbel averaged over ``S`` draws of its
    noise given the exact draw ``k``,

    .. math:: \hat\nabla_{\mathrm{logits}} = \frac{1}{S} \sum_{s=1}^{S}
              \tfrac{1}{\tau}\, y_s \odot (g - \langle y_s, g \rangle), \qquad
              y_s = \mathrm{softmax}\bigl((\mathrm{logits} + G_s) / \tau\bigr),

    ``G_s`` iid Gumbel noise given ``argmax(logits + G_s) = k``, held fixed in the
    backward. ``GumbelRao(tau, 1)`` is :class:`~pyro_ils.estimators.STGumbel` ``(tau)``
    (the same noise under the same RNG state).

    :param float temperature: the relaxation's temperature ``tau > 0``.
    :param int num_samples: ``S >= 1``, the noise draws per exact draw (memory and time
        of the backward grow as ``S * K`` per draw; the paper reports ``S`` up to 1000).

    References:

    * Paulus, Maddison and Krause (2021), "Rao-Blackwellizing the straight-through
      Gumbel-Softmax gradient estimator", ICLR.
    * Jang, Gu and Poole (2017), "Categorical reparameterization with Gumbel-Softmax",
      ICLR.
    """

    _fields = ("temperature", "num_samples")

    def __init__(self, temperature: float = 1.0, num_samples: int = 10):
        self.temperature = check_positive("temperature", temperature)
        self.num_samples = check_num_samples(num_samples)

    def onehot(self, logits, index, support=None, weight=None) -> Tensor:
        perturbed = gumbel_given_argmax(_within(logits, support), index, self.num_samples)
        return self.onehot_given_noise(logits, index, perturbed, support, weight)

    def onehot_given_noise(self, logits, index, perturbed, support=None, weight=None) -> Tensor:
        """:meth:`~pyro_ils.estimators.Estimator.onehot` with the perturbed logits
        ``logits + G_s`` given, shape ``index.shape + (S, K)`` (any ``S``; each
        ``argmax`` should be ``index``)."""
        shape = index.shape + perturbed.shape[-2:]
        perturbed = perturbed.detach().to(logits.dtype).expand(shape)
        return exact_onehot(logits, index, self, perturbed, support=support, weight=weight)

    def rule(self, logits, onehot, g, *aux) -> Tensor:
        (perturbed,) = aux
        per_draw = relaxed_rule(logits.unsqueeze(-2), perturbed, g.unsqueeze(-2), self.temperature)
        return per_draw.mean(-2)
