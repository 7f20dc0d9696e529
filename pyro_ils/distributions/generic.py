r"""Pyro's discrete distributions with any estimator's backward: ``estimator=``.

``SurrogateCategorical(logits=..., estimator=StraightThrough())`` is a
:class:`~pyro.distributions.Categorical` whose ``rsample()`` returns the exact draw,
carrying the backward of the :class:`~pyro_ils.estimators.Estimator` it holds; the
``OneHotCategorical`` and ``Bernoulli`` versions likewise. The named classes
(:class:`~pyro_ils.ILSCategorical`, :class:`~pyro_ils.distributions.STCategorical`,
:class:`~pyro_ils.distributions.ReinMaxCategorical`, ...) are these with a fixed
estimator. Whatever the estimator, the guide's ``log q`` of a draw acts only through
the draw ("sticking the landing"; see :mod:`pyro_ils.distributions.surrogate`).
"""

from __future__ import annotations

from pyro.distributions import Bernoulli, Categorical, OneHotCategorical

from pyro_ils.distributions.surrogate import (
    SurrogateBernoulliMixin,
    SurrogateCategoricalMixin,
    SurrogateOneHotMixin,
)
from pyro_ils.estimators.base import Estimator

__all__ = [
    "SurrogateBernoulli",
    "SurrogateCategorical",
    "SurrogateOneHotCategorical",
    "TemperatureOption",
    "check_estimator",
]


def check_estimator(estimator) -> Estimator:
    """``estimator`` if it is an :class:`~pyro_ils.estimators.Estimator`, else ``TypeError``."""
    if not isinstance(estimator, Estimator):
        raise TypeError(
            "estimator must be a pyro_ils.estimators.Estimator (ILS(), StraightThrough(), "
            f"ReinMax(), STGumbel(), GumbelRao(), GST(), DefaultILS()), got {estimator!r}"
        )
    return estimator


class _EstimatorInit:
    """The constructor ``(probs, logits, validate_args, *, estimator)``."""

    def __init__(self, probs=None, logits=None, validate_args=None, *, estimator: Estimator):
        self.estimator = check_estimator(estimator)
        self._init_surrogate(logits)
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)


class TemperatureOption:
    """``temperature`` read from the estimator, and ``with_temperature``."""

    @property
    def temperature(self) -> float:
        return self.estimator.temperature

    def with_temperature(self, temperature: float):
        """A copy with another ``temperature``."""
        return self.with_estimator(self.estimator.replace(temperature=temperature))


class SurrogateCategorical(_EstimatorInit, SurrogateCategoricalMixin, Categorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry ``estimator``'s backward.

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.SurrogateIndexTensor` equal
    to a ``Categorical`` draw (the value ``sample()`` returns under the same RNG
    state), differentiable through indexing (``locs[z]``, ``Vindex``, ``gather``,
    ``index_select``, ``F.embedding``, ``F.one_hot``, ``Categorical.log_prob``) as the
    one-hot ``z`` whose logits receive the estimator's gradient.

    Example::

        z = pyro.sample("z", SurrogateCategorical(logits=logits, estimator=ReinMax(1.5)))

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param Estimator estimator: the backward (keyword only).
    """


class SurrogateOneHotCategorical(_EstimatorInit, SurrogateOneHotMixin, OneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry ``estimator``'s
    backward.

    ``rsample()`` returns the exact float one-hot draw; ``log_prob(value)`` is the
    discrete mass, differentiable in ``value`` as ``<value, log pi>``.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param Estimator estimator: the backward (keyword only).
    """


class SurrogateBernoulli(_EstimatorInit, SurrogateBernoulliMixin, Bernoulli):
    r"""A :class:`~pyro.distributions.Bernoulli` whose draws carry ``estimator``'s backward.

    The two-category case on the categories ``(0, 1)`` with logits ``(0, a)``:
    ``rsample()`` returns ``b`` in {0., 1.} exactly, and the logit ``a`` receives the
    category-1 component of the estimator's gradient for the one-hot ``(1 - b, b)``
    and ``g = (0, dL/db)`` (for straight-through, ``sigmoid'(a) dL/db``).

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param Estimator estimator: the backward (keyword only).
    """
