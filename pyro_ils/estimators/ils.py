r"""ILS as an estimator object, and the default's name.

For the incoming gradient ``g = dL/dz`` of the draw ``z`` with weight ``w``, ILS takes
one step of size ``c`` from the draw, maps it onto the simplex with the target ``h``,
and returns the gradient of ``KL(pi_D || softmax(logits))`` with the target held fixed:

.. math::

    \pi_D = h(z - c\, g / w), \qquad
    \hat\nabla_{\mathrm{logits}} = w\,(\pi - \pi_D).

References:

* the ILS proposal and the method as implemented: ``ILS_METHOD.md`` in the project's
  shared documents, and :mod:`pyro_ils.ops.projections` for the targets;
* Liu, Dong, Liu, Yu and Gao (2023), "Bridging discrete and backpropagation:
  straight-through and beyond", NeurIPS (ReinMax, the midpoint target's ``c = 0``
  limit).
"""

from __future__ import annotations

from torch import Tensor

from pyro_ils.estimators.base import Estimator
from pyro_ils.ops.draw_signal import per_draw_signal
from pyro_ils.ops.projections import SECOND_ORDER_TARGETS, intermediate_target, midpoint_limit
from pyro_ils.ops.softmax import softmax
from pyro_ils.options import check_count, check_ils_temperature, check_options, check_positive

__all__ = ["ILS", "DefaultILS"]

#: The reference code's guard against division by zero in ``-pi_D / (pi + eps)``.
_REFERENCE_EPS = 1e-7


class ILS(Estimator):
    r"""Intermediate Loss Sampling: the gradient towards a target one step from the draw.

    :math:`\hat\nabla_{\mathrm{logits}} = w\,(\pi - \pi_D)`, with
    :math:`\pi_D = h(z - c\,g/w)` for the target ``h`` named by ``projection``:

    * ``"euclidean"`` (default): the exact Euclidean projection onto the simplex;
    * ``"normalize"``: the original proposal's map, ``z - c (g - g[k])`` normalized;
    * ``"midpoint"``: the second-order target, whose ``c = 0`` limit is ReinMax's
      estimator at ``temperature``; ``"midpoint_scaled"``: its difference divided by
      ``c``;
    * ``"mirror"``, ``"mirror_rms"``: entropic steps from ``pi``;
    * ``"reference"``: the original code's incorrect gradient
      :math:`-\pi_D / (\pi + 10^{-7})`, for comparison only.

    See :func:`~pyro_ils.ops.projections.intermediate_target` for each target's formula.
    The backward is linear in ``g`` (``linear``) only at ``step_size=0``, the small-step
    limit of ``"midpoint"``, ``"midpoint_scaled"`` and ``"mirror"``; that of the two
    midpoint targets is computed in closed form
    (:func:`~pyro_ils.ops.projections.midpoint_limit`).

    :param float step_size: the step ``c >= 0`` (``0`` for the limit targets only).
    :param str projection: the target (default ``"euclidean"``, the original method).
    :param float temperature: the second-order targets' temperature ``tau > 0``.

    References:

    * Liu et al. (2023), "Bridging discrete and backpropagation: straight-through
      and beyond", NeurIPS (the midpoint limit is their ReinMax).
    """

    _fields = ("step_size", "projection", "temperature")

    def __init__(
        self,
        step_size: float = 1.0,
        projection: str = "euclidean",
        temperature: float = 1.0,
    ):
        self.step_size, self.projection = check_options(step_size, projection)
        self.temperature = check_ils_temperature(temperature, self.projection)

    @classmethod
    def _checked(cls, step_size: float, projection: str, temperature: float) -> ILS:
        """An instance from options already validated (no checks: the hot path)."""
        new = cls.__new__(cls)
        new.step_size, new.projection, new.temperature = step_size, projection, temperature
        return new

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return self.step_size == 0

    def backward(self, logits, onehot, g, support, weight, *aux) -> Tensor:
        if self.step_size == 0 and self.projection in SECOND_ORDER_TARGETS:
            # The midpoint limit is linear in g: w * limit(g / w) = limit(g), in closed
            # form; the caller (exact_onehot) zeroes the draws of weight 0, as for
            # every linear estimator.
            g = per_draw_signal(g, None, support)
            return midpoint_limit(onehot, logits, g, self.temperature)
        pi = softmax(logits)
        g = per_draw_signal(g, weight, support)
        target = intermediate_target(
            onehot, g, self.step_size, self.projection, support, logits, self.temperature
        )
        if self.projection == "reference":
            grad = -target / (pi + _REFERENCE_EPS)
        else:
            grad = pi - target
        return weight.unsqueeze(-1) * grad


class DefaultILS(Estimator):
    r"""The plugin's default, by name: a rule that picks an ILS member per site.

    A site with at most ``max_alternatives`` alternatives, whose model broadcasts over
    them, gets exact differences (:class:`~pyro_ils.TraceILSDiff_ELBO`); any other
    site gets the midpoint limit (``ILS(step_size=0, projection="midpoint")``, that is
    ReinMax's backward) at ``temperature``, each with the analytic KL where the model's
    site has one registered. It is what ``TraceILS_ELBO()`` does with no options;
    :mod:`pyro_ils.infer.site_choice` states the rule and the measurements behind it.

    As an object it routes like the midpoint limit at ``temperature`` wherever there is
    no per-site choice to make (a hand-written guide distribution, ``ILSReparam``).

    :param int max_alternatives: the largest number of alternatives for exact
        differences (``0``: none).
    :param float temperature: the midpoint limit's temperature on the other sites.
    """

    _fields = ("max_alternatives", "temperature")

    def __init__(self, max_alternatives: int = 20, temperature: float = 2.0):
        self.max_alternatives = check_count("max_alternatives", max_alternatives)
        self.temperature = check_positive("temperature", temperature)
        self._limit = ILS._checked(0.0, "midpoint", self.temperature)

    def backward(self, logits, onehot, g, support, weight, *aux) -> Tensor:
        return self._limit.backward(logits, onehot, g, support, weight, *aux)
