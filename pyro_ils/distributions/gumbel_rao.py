"""Gumbel-Rao as distributions: Pyro's ``Categorical``, ``OneHotCategorical`` and
``Bernoulli`` with the :class:`~pyro_ils.estimators.GumbelRao` estimator fixed.

The estimator's math and references are in :mod:`pyro_ils.estimators.gumbel_rao`.
"""

from __future__ import annotations

from pyro_ils.distributions.generic import (
    SurrogateBernoulli,
    SurrogateCategorical,
    SurrogateOneHotCategorical,
    TemperatureOption,
)
from pyro_ils.estimators.gumbel_rao import GumbelRao

__all__ = ["GumbelRaoOneHotCategorical", "GumbelRaoCategorical", "GumbelRaoBernoulli"]


class _GumbelRaoInit(TemperatureOption):
    """The constructor ``(probs, logits, validate_args, *, temperature, num_samples)``."""

    def __init__(
        self, probs=None, logits=None, validate_args=None, *, temperature=1.0, num_samples=10
    ):
        estimator = GumbelRao(temperature, num_samples)
        super().__init__(probs, logits, validate_args, estimator=estimator)

    @property
    def num_samples(self) -> int:
        """The noise draws per exact draw, read from the estimator."""
        return self.estimator.num_samples


class GumbelRaoOneHotCategorical(_GumbelRaoInit, SurrogateOneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the
    Gumbel-Rao backward (:class:`~pyro_ils.estimators.GumbelRao`; Paulus et al. 2021).

    ``rsample()`` returns the exact float one-hot draw ``z = onehot(k)`` (the value
    ``sample()`` returns under the same RNG state); for ``g = dL/dz`` the logits
    receive the mean over ``S = num_samples`` noise draws of
    :math:`\tfrac1\tau\, y_s \odot (g - \langle y_s, g\rangle)`,
    ``y_s = softmax((logits + G_s) / tau)``, with Gumbel noise ``G_s`` drawn given
    ``argmax(logits + G_s) = k``. ``log_prob`` is the discrete mass, so a KL to a
    ``OneHotCategorical`` prior is taken analytically by
    :class:`~pyro.infer.TraceMeanField_ELBO`.

    Example::

        pyro.sample("z", GumbelRaoOneHotCategorical(logits=logits, temperature=0.5))

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: the relaxation's temperature ``tau > 0`` (default 1.0).
    :param int num_samples: the noise draws ``S >= 1`` per exact draw (default 10).
    """


class GumbelRaoCategorical(_GumbelRaoInit, SurrogateCategorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the Gumbel-Rao
    backward (:class:`~pyro_ils.estimators.GumbelRao`; Paulus et al. 2021).

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.SurrogateIndexTensor` equal
    to a ``Categorical`` draw ``k``, differentiable through indexing as the one-hot of
    :class:`GumbelRaoOneHotCategorical`.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: the relaxation's temperature ``tau > 0`` (default 1.0).
    :param int num_samples: the noise draws ``S >= 1`` per exact draw (default 10).
    """


class GumbelRaoBernoulli(_GumbelRaoInit, SurrogateBernoulli):
    r"""A :class:`~pyro.distributions.Bernoulli` whose draws carry the Gumbel-Rao
    backward (:class:`~pyro_ils.estimators.GumbelRao`; Paulus et al. 2021).

    The two-category case on the categories ``(0, 1)`` with logits ``(0, a)``:
    ``rsample()`` returns ``b`` in {0., 1.} exactly, and the logit ``a`` receives the
    category-1 component of the estimator's gradient for the one-hot ``(1 - b, b)``.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float temperature: the relaxation's temperature ``tau > 0`` (default 1.0).
    :param int num_samples: the noise draws ``S >= 1`` per exact draw (default 10).
    """
