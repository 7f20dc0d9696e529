"""Estimator objects for discrete sites, and the estimators ILS is compared with.

The objects (:class:`ILS`, :class:`StraightThrough`, :class:`ReinMax`,
:class:`STGumbel`, :class:`GumbelRao`, :class:`GST`, :class:`DefaultILS`) say what an
exact draw sends back to its logits; pass one to an ILS ELBO (``estimator=``), to
``infer={"ils": ...}`` of one site, to :class:`~pyro_ils.ILSReparam` or to a
``Surrogate*`` distribution.

The distributions with a fixed estimator (``STCategorical``, ``ReinMaxCategorical``,
...) live in :mod:`pyro_ils.distributions`, and the multi-evaluation ELBOs
(``TraceRLOO_ELBO``, ``TraceMuProp_ELBO``, ``TraceREBAR_ELBO``, ``TraceRELAX_ELBO``,
``TraceDisARM_ELBO``, ``TraceIndeCateR_ELBO``) in :mod:`pyro_ils.infer`; both are
importable from this package as before.
"""

from __future__ import annotations

import importlib

from pyro_ils.estimators.base import Estimator, LinearEstimator
from pyro_ils.estimators.gst import GST
from pyro_ils.estimators.gumbel_rao import GumbelRao
from pyro_ils.estimators.ils import ILS, DefaultILS
from pyro_ils.estimators.reinmax import ReinMax
from pyro_ils.estimators.straight_through import STGumbel, StraightThrough

#: Names importable from here, defined elsewhere (imported on first use, so that the
#: distributions can import the estimator objects without a cycle).
_MOVED = {
    "GSTBernoulli": "pyro_ils.distributions",
    "GSTCategorical": "pyro_ils.distributions",
    "GSTOneHotCategorical": "pyro_ils.distributions",
    "GumbelRaoBernoulli": "pyro_ils.distributions",
    "GumbelRaoCategorical": "pyro_ils.distributions",
    "GumbelRaoOneHotCategorical": "pyro_ils.distributions",
    "ReinMaxCategorical": "pyro_ils.distributions",
    "ReinMaxOneHotCategorical": "pyro_ils.distributions",
    "STCategorical": "pyro_ils.distributions",
    "STGumbelCategorical": "pyro_ils.distributions",
    "STGumbelOneHotCategorical": "pyro_ils.distributions",
    "STOneHotCategorical": "pyro_ils.distributions",
    "TraceDisARM_ELBO": "pyro_ils.infer.trace_disarm_elbo",
    "TraceIndeCateR_ELBO": "pyro_ils.infer.trace_indecater_elbo",
    "TraceMuProp_ELBO": "pyro_ils.infer.trace_muprop_elbo",
    "TraceREBAR_ELBO": "pyro_ils.infer.trace_rebar_elbo",
    "TraceRELAX_ELBO": "pyro_ils.infer.trace_relax_elbo",
    "TraceRLOO_ELBO": "pyro_ils.infer.trace_rloo_elbo",
}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DefaultILS",
    "Estimator",
    "GST",
    "GumbelRao",
    "ILS",
    "LinearEstimator",
    "ReinMax",
    "STGumbel",
    "StraightThrough",
    *sorted(_MOVED),
]
