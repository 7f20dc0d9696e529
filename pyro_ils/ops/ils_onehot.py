r"""The ILS sampler: an exact categorical draw that carries the ILS backward.

Forward, ``z = onehot(k)`` with ``k ~ Cat(softmax(logits))``, exactly.
Backward, for the incoming gradient ``g = dL/dz``, ILS takes one step of size
``c`` on the one-hot, maps it back onto the simplex with ``h`` and returns to
the logits the gradient of ``KL(pi_D || softmax(logits))`` with the target
``pi_D`` held fixed:

.. math::

    \pi_D = h(z - c\, g), \qquad
    \frac{\partial}{\partial\,\mathrm{logits}} \mathrm{KL}(\pi_D \,\|\, \pi) = \pi - \pi_D .
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_ils.estimators.ils import ILS
from pyro_ils.ops.softmax import finite
from pyro_ils.options import check_ils_temperature, check_options

__all__ = ["ils_onehot", "ils_onehot_from_index", "ils_bernoulli_from_draw", "finite"]


def ils_onehot_from_index(
    logits: Tensor,
    index: Tensor,
    *,
    step_size: float,
    projection: str,
    support: Tensor | None = None,
    weight: Tensor | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """The one-hot of a given draw ``index`` carrying the ILS backward to ``logits``.

    ``logits`` broadcasts against ``index.shape + (K,)``; ``support`` (boolean,
    same broadcasting; ``None`` for all categories) marks the categories that
    may receive mass; ``weight`` (broadcasting against ``index.shape``) is the
    weight the loss puts on each draw, see :mod:`pyro_ils.poutine.site_weight`;
    ``temperature`` is the midpoint target's (see
    :func:`~pyro_ils.ops.projections.intermediate_target`).
    """
    return ILS._checked(step_size, projection, temperature).onehot(logits, index, support, weight)


def ils_onehot(
    logits: Tensor,
    step_size: float | None = None,
    projection: str | None = None,
    temperature: float | None = None,
) -> Tensor:
    r"""Draw ``z = onehot(k)``, ``k ~ Cat(softmax(logits))``, carrying the ILS backward.

    For the incoming gradient ``g = dL/dz`` the gradient returned to ``logits`` is

    * ``projection="euclidean"``: :math:`\pi - \pi_D`, with
      :math:`\pi_D = \mathrm{proj}_\Delta(z - c\,g)` the exact Euclidean projection;
    * ``projection="normalize"`` (the original proposal's map): :math:`\pi - \pi_D`
      with ``new = z - c (g - g[k])`` and ``pi_D = new / new.sum(-1)``; where that
      sum is not positive the row falls back to ``proj_Delta(new)``;
    * ``projection="reference"``: :math:`-\pi_D / (\pi + 10^{-7})` with the
      normalize map. This reproduces the original reference code and is
      **incorrect** (it is the gradient with respect to the probabilities,
      returned for the logits); use it only for comparison.

    * ``projection="midpoint"`` (the default), ``"midpoint_scaled"``, ``"mirror"``
      and ``"mirror_rms"``:
      :math:`\pi - \pi_D` with the targets of
      :func:`~pyro_ils.ops.projections.intermediate_target`; at the default step
      ``c = 0`` the midpoint target's limit is ReinMax's backward (temperature 1).

    Categories with ``-inf`` logits are never drawn and receive zero gradient.

    :param torch.Tensor logits: unnormalized log-probabilities, shape ``batch + (K,)``.
    :param float step_size: the step ``c >= 0`` (``0`` only for the second-order
        targets and ``"mirror"``); ``None``: 0 for the second-order targets, 1.0
        otherwise.
    :param str projection: the target (default ``"midpoint"``); see above.
    :param float temperature: the second-order targets' temperature ``tau > 0``
        (default 1; those targets only): at ``c = 0``, ReinMax's backward at ``tau``.
    :returns: a one-hot tensor of the shape, dtype and device of ``logits``.
    """
    step_size, projection = check_options(step_size, projection)
    temperature = check_ils_temperature(temperature, projection)
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() == 0:
        raise ValueError("logits must be a floating tensor with at least one dimension")
    if torch.isnan(logits).any() or (logits == torch.inf).any():
        raise ValueError("logits contain NaN or +inf")
    if (logits == -torch.inf).all(-1).any():
        raise ValueError("logits have a row whose entries are all -inf (no possible category)")
    with torch.no_grad():
        index = torch.distributions.Categorical(logits=logits, validate_args=False).sample()
        support = logits > -torch.inf
    support = None if bool(support.all()) else support
    return ils_onehot_from_index(
        logits,
        index,
        step_size=step_size,
        projection=projection,
        support=support,
        temperature=temperature,
    )


def ils_bernoulli_from_draw(
    logits: Tensor,
    value: Tensor,
    *,
    step_size: float,
    projection: str,
    weight: Tensor | None = None,
    temperature: float = 1.0,
) -> Tensor:
    r"""The two-category case: ``value`` in {0., 1.} carrying the ILS backward to ``logits``.

    The draw is the one-hot ``(1 - b, b)`` of the categories with logits
    ``(0, a)``; the downstream gradient ``dL/db`` enters as ``g = (0, dL/db)``
    and the logit ``a`` receives the category-1 component of the two-category
    gradient, ``sigmoid(a) - pi_D[1]`` (zero for ``a = +-inf``).
    """
    return ILS._checked(step_size, projection, temperature).bernoulli(logits, value, weight)
