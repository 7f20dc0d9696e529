"""Straight-through and ST-Gumbel as distributions: Pyro's ``Categorical`` and ``OneHotCategorical``
with the :class:`~pyro_ils.estimators.StraightThrough` estimators fixed.

The estimators' math and references are in :mod:`pyro_ils.estimators.straight_through`.
"""

from __future__ import annotations

from pyro_ils.distributions.generic import (
    SurrogateCategorical,
    SurrogateOneHotCategorical,
    TemperatureOption,
)
from pyro_ils.estimators.straight_through import STGumbel, StraightThrough

__all__ = [
    "STOneHotCategorical",
    "STCategorical",
    "STGumbelOneHotCategorical",
    "STGumbelCategorical",
]


class _STInit:
    """The constructor ``(probs, logits, validate_args)``."""

    def __init__(self, probs=None, logits=None, validate_args=None):
        super().__init__(probs, logits, validate_args, estimator=StraightThrough())


class _STGumbelInit(TemperatureOption):
    """The constructor ``(probs, logits, validate_args, *, temperature)``."""

    def __init__(self, probs=None, logits=None, validate_args=None, *, temperature=1.0):
        super().__init__(probs, logits, validate_args, estimator=STGumbel(temperature))


class STOneHotCategorical(_STInit, SurrogateOneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the
    straight-through backward (:class:`StraightThrough`).

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


class STCategorical(_STInit, SurrogateCategorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the
    straight-through backward (:class:`StraightThrough`).

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.SurrogateIndexTensor`
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


class STGumbelOneHotCategorical(_STGumbelInit, SurrogateOneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the
    straight-through Gumbel-Softmax backward (:class:`STGumbel`).

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


class STGumbelCategorical(_STGumbelInit, SurrogateCategorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the
    straight-through Gumbel-Softmax backward (:class:`STGumbel`).

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.SurrogateIndexTensor`
    equal to a ``Categorical`` draw ``k``, differentiable through indexing as the
    one-hot of :class:`STGumbelOneHotCategorical`.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: the relaxation's temperature ``tau > 0`` (default 1.0).
    """
