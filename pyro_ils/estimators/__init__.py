"""Discrete gradient estimators to compare with ILS, usable from Pyro."""

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
    "TraceRLOO_ELBO",
]
