"""Pyro's discrete distributions whose exact draws carry an estimator's backward.

Each subclasses Pyro's own ``Categorical``, ``OneHotCategorical`` or ``Bernoulli`` and
behaves as it does (support, shapes, ``log_prob``, ``enumerate_support``, ``sample()``,
``expand``, ``.to_event``, ``.mask``, ``validate_args``), with ``has_rsample = True``:
``rsample()`` returns the exact draw whose backward is an estimator's
(:mod:`pyro_ils.estimators`).
"""

from pyro_ils.distributions.generic import (
    SurrogateBernoulli,
    SurrogateCategorical,
    SurrogateOneHotCategorical,
)
from pyro_ils.distributions.gst import GSTBernoulli, GSTCategorical, GSTOneHotCategorical
from pyro_ils.distributions.gumbel_rao import (
    GumbelRaoBernoulli,
    GumbelRaoCategorical,
    GumbelRaoOneHotCategorical,
)
from pyro_ils.distributions.ils import (
    ILSBernoulli,
    ILSCategorical,
    ILSDistributionMixin,
    ILSOneHotCategorical,
)
from pyro_ils.distributions.reinmax import ReinMaxCategorical, ReinMaxOneHotCategorical
from pyro_ils.distributions.straight_through import (
    STCategorical,
    STGumbelCategorical,
    STGumbelOneHotCategorical,
    STOneHotCategorical,
)
from pyro_ils.distributions.surrogate import SurrogateDistributionMixin, SurrogateIndependent

__all__ = [
    "GSTBernoulli",
    "GSTCategorical",
    "GSTOneHotCategorical",
    "GumbelRaoBernoulli",
    "GumbelRaoCategorical",
    "GumbelRaoOneHotCategorical",
    "ILSBernoulli",
    "ILSCategorical",
    "ILSDistributionMixin",
    "ILSOneHotCategorical",
    "ReinMaxCategorical",
    "ReinMaxOneHotCategorical",
    "STCategorical",
    "STGumbelCategorical",
    "STGumbelOneHotCategorical",
    "STOneHotCategorical",
    "SurrogateBernoulli",
    "SurrogateCategorical",
    "SurrogateDistributionMixin",
    "SurrogateIndependent",
    "SurrogateOneHotCategorical",
]
