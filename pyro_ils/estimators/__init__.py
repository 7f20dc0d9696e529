"""Discrete gradient estimators to compare with ILS, usable from Pyro."""

from .muprop import TraceMuProp_ELBO
from .rebar import TraceREBAR_ELBO, TraceRELAX_ELBO
from .reinmax import ReinMaxCategorical, ReinMaxOneHotCategorical
from .rloo import TraceRLOO_ELBO
from .straight_through import (
    STCategorical,
    STGumbelCategorical,
    STGumbelOneHotCategorical,
    STOneHotCategorical,
)

__all__ = [
    "ReinMaxCategorical",
    "ReinMaxOneHotCategorical",
    "STCategorical",
    "STGumbelCategorical",
    "STGumbelOneHotCategorical",
    "STOneHotCategorical",
    "TraceMuProp_ELBO",
    "TraceREBAR_ELBO",
    "TraceRELAX_ELBO",
    "TraceRLOO_ELBO",
]
