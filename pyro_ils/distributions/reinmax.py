"""ReinMax as distributions: Pyro's ``Categorical`` and ``OneHotCategorical``
with the :class:`~pyro_ils.estimators.ReinMax` estimator fixed.

The estimators' math and references are in :mod:`pyro_ils.estimators.reinmax`.
"""

from __future__ import annotations

from pyro_ils.distributions.generic import (
    SurrogateCategorical,
    SurrogateOneHotCategorical,
    TemperatureOption,
)
from pyro_ils.estimators.reinmax import ReinMax

__all__ = ["ReinMaxOneHotCategorical", "ReinMaxCategorical"]


class _ReinMaxInit(TemperatureOption):
    """The constructor ``(probs, logits, validate_args, *, temperature)``."""

    def __init__(self, probs=None, logits=None, validate_args=None, *, temperature=1.0):
        super().__init__(probs, logits, validate_args, estimator=ReinMax(temperature))


class ReinMaxOneHotCategorical(_ReinMaxInit, SurrogateOneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the
    ReinMax backward (:class:`ReinMax`; Liu et al. 2023, Algorithm 2).

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


class ReinMaxCategorical(_ReinMaxInit, SurrogateCategorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the
    ReinMax backward (:class:`ReinMax`; Liu et al. 2023, Algorithm 2).

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.SurrogateIndexTensor`
    equal to a ``Categorical`` draw, differentiable through indexing
    (``locs[z]``, ``Vindex``, ``gather``, ``F.embedding``, ``F.one_hot``,
    ``Categorical.log_prob``) as the one-hot of :class:`ReinMaxOneHotCategorical`.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: ``tau > 0`` (default 1.0; the paper recommends ``tau >= 1``).
    """
