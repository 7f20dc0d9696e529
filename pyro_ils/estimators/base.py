r"""Estimator objects: what a discrete site's exact draw sends back to its logits.

An :class:`Estimator` is a small, immutable object that holds its options and gives the
backward of :func:`~pyro_ils.ops.exact_draw.exact_onehot`. The same object routes a site
in every entry point:

* ``TraceILS_ELBO(estimator=...)``, ``TraceGraphILS_ELBO(estimator=...)``,
  ``TraceEnumILS_ELBO(estimator=...)``: every routed guide site;
* ``infer={"ils": estimator}``: one site;
* ``poutine.reparam(guide, config={"z": ILSReparam(estimator=...)})``;
* ``SurrogateCategorical(logits=..., estimator=...)`` and its ``OneHotCategorical`` and
  ``Bernoulli`` counterparts, in a guide written by hand.

:class:`LinearEstimator` is the base of the estimators whose backward is linear in the
incoming gradient ``g = dL/dz`` (straight-through, ReinMax, ST-Gumbel, and ILS's
small-step limits). A Pyro ELBO scales each site's terms by its weight ``w``, so ``g``
already carries ``w``; for a rule linear in ``g``, ``w * rule(g / w) = rule(g)``, so
these use ``g`` as it comes. ILS with a step is not linear: it divides ``g`` by ``w``
before the step and multiplies the result by ``w``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pyro_ils.ops.exact_draw import exact_bernoulli, exact_onehot

__all__ = ["Estimator", "LinearEstimator"]


class Estimator:
    """The gradient an exact discrete draw sends to its logits.

    Subclasses set ``_fields`` (the option names, in constructor order) and implement
    :meth:`backward`; one that needs noise drawn with the sample (ST-Gumbel) also
    overrides :meth:`onehot`.
    """

    _fields: tuple[str, ...] = ()

    #: Whether the backward is linear in the incoming gradient. Only a linear backward
    #: carries the weights with which ``TraceEnum_ELBO`` sums sequentially enumerated
    #: traces (see :class:`~pyro_ils.TraceEnumILS_ELBO`).
    linear: bool = True

    def backward(
        self,
        logits: Tensor,
        onehot: Tensor,
        g: Tensor,
        support: Tensor | None,
        weight: Tensor,
        *aux: Tensor,
    ) -> Tensor:
        """The gradient for ``logits`` (shape ``onehot.shape``) given ``g = dL/dz``.

        :param logits: the logits, expanded to ``onehot.shape``.
        :param onehot: the draw ``z``.
        :param g: the incoming gradient ``dL/dz``.
        :param support: categories that may be drawn, or ``None`` (all).
        :param weight: the draw's weight ``w`` in the loss, shape ``onehot.shape[:-1]``.
        """
        raise NotImplementedError

    def onehot(
        self,
        logits: Tensor,
        index: Tensor,
        support: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> Tensor:
        """The exact one-hot of the draw ``index`` carrying this estimator's backward."""
        return exact_onehot(logits, index, self, support=support, weight=weight)

    def bernoulli(self, logits: Tensor, value: Tensor, weight: Tensor | None = None) -> Tensor:
        """The exact Bernoulli draw ``value`` carrying this estimator's backward."""
        return exact_bernoulli(logits, value, self, weight)

    @property
    def options(self) -> dict[str, Any]:
        """The options, by name."""
        return {name: getattr(self, name) for name in self._fields}

    def replace(self, **options) -> Estimator:
        """A copy with some options changed (validated again)."""
        return type(self)(**{**self.options, **options})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.options == other.options

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.options.items())))


class LinearEstimator(Estimator):
    """An estimator whose backward is a linear rule in ``g``, :meth:`rule`.

    The rule receives ``logits`` with ``-inf`` outside the support and ``g`` with zeros
    there (so that categories that cannot be drawn neither receive nor pass gradient).
    """

    linear = True

    def rule(self, logits: Tensor, onehot: Tensor, g: Tensor, *aux: Tensor) -> Tensor:
        """The gradient for ``logits``, linear in ``g``."""
        raise NotImplementedError

    def backward(self, logits, onehot, g, support, weight, *aux):
        inside = logits > -torch.inf
        if support is not None:
            inside = inside & support
        logits = logits.masked_fill(~inside, -torch.inf)
        g = g.masked_fill(~inside, 0.0)
        return self.rule(logits, onehot, g, *aux).masked_fill(~inside, 0.0)
