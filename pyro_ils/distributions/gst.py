"""Gapped straight-through as distributions: Pyro's ``Categorical``,
``OneHotCategorical`` and ``Bernoulli`` with the :class:`~pyro_ils.estimators.GST`
estimator fixed.

The estimator's math and references are in :mod:`pyro_ils.estimators.gst`.
"""

from __future__ import annotations

from pyro_ils.distributions.generic import (
    SurrogateBernoulli,
    SurrogateCategorical,
    SurrogateOneHotCategorical,
    TemperatureOption,
)
from pyro_ils.estimators.gst import GST

__all__ = ["GSTOneHotCategorical", "GSTCategorical", "GSTBernoulli"]


class _GSTInit(TemperatureOption):
    """The constructor ``(probs, logits, validate_args, *, temperature, kappa)``."""

    def __init__(self, probs=None, logits=None, validate_args=None, *, temperature=1.0, kappa=1.0):
        super().__init__(probs, logits, validate_args, estimator=GST(temperature, kappa))

    @property
    def kappa(self) -> float | str:
        """The gap, read from the estimator."""
        return self.estimator.kappa


class GSTOneHotCategorical(_GSTInit, SurrogateOneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the
    gapped straight-through backward (:class:`~pyro_ils.estimators.GST`; Fan et al. 2022).

    ``rsample()`` returns the exact float one-hot draw ``z = onehot(k)`` (the value
    ``sample()`` returns under the same RNG state); for ``g = dL/dz`` the logits
    receive :math:`\tfrac1\tau\, y \odot (g - \langle y, g\rangle)`,
    ``y = softmax(tilde_l / tau)``, at the perturbed logits ``tilde_l``: the maximum
    logit at ``k``, every other logit lowered to at least ``kappa`` below it.
    ``log_prob`` is the discrete mass, so a KL to a ``OneHotCategorical`` prior is
    taken analytically by :class:`~pyro.infer.TraceMeanField_ELBO`.

    Example::

        pyro.sample("z", GSTOneHotCategorical(logits=logits, temperature=0.5))

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: the relaxation's temperature ``tau > 0`` (default 1.0).
    :param kappa: the gap ``> 0`` (default 1.0, GST-1.0), or ``"p"`` (GST-p).
    """


class GSTCategorical(_GSTInit, SurrogateCategorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the gapped
    straight-through backward (:class:`~pyro_ils.estimators.GST`; Fan et al. 2022).

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.SurrogateIndexTensor` equal
    to a ``Categorical`` draw ``k``, differentiable through indexing as the one-hot of
    :class:`GSTOneHotCategorical`.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: the relaxation's temperature ``tau > 0`` (default 1.0).
    :param kappa: the gap ``> 0`` (default 1.0, GST-1.0), or ``"p"`` (GST-p).
    """


class GSTBernoulli(_GSTInit, SurrogateBernoulli):
    r"""A :class:`~pyro.distributions.Bernoulli` whose draws carry the gapped
    straight-through backward (:class:`~pyro_ils.estimators.GST`; Fan et al. 2022).

    The two-category case on the categories ``(0, 1)`` with logits ``(0, a)``:
    ``rsample()`` returns ``b`` in {0., 1.} exactly, and the logit ``a`` receives the
    category-1 component of the estimator's gradient for the one-hot ``(1 - b, b)``.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: the relaxation's temperature ``tau > 0`` (default 1.0).
    :param kappa: the gap ``> 0`` (default 1.0, GST-1.0), or ``"p"`` (GST-p).
    """
