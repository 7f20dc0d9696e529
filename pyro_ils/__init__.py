"""pyro-ils: Intermediate Loss Sampling for discrete latent variables in Pyro.

Swap ``dist.Categorical`` for :class:`ILSCategorical` in a guide, or keep the
guide and pass :class:`TraceILS_ELBO` to ``SVI``: discrete draws are exact and
their parameters receive the ILS gradient instead of a score-function term.
"""

from .debug import (
    GradientDropReport,
    GradientDropWarning,
    report_dropped_gradients,
)
from .debug import (
    ILSGradientDropWarning as ILSGradientDropWarning,
)
from .distributed import (
    DistributedELBOModule,
    load_checkpoint,
    save_checkpoint,
    seed_rank,
    sync_elbo_state,
)
from .distributions import ILSBernoulli, ILSCategorical, ILSOneHotCategorical
from .elbo import TraceEnumILS_ELBO, TraceGraphILS_ELBO, TraceILS_ELBO
from .ils import ils_onehot
from .ils_cv import TraceILSCV_ELBO
from .ils_diff import TraceILSDiff_ELBO
from .ops.index_tensor import (
    ILSIndexTensor as ILSIndexTensor,
)
from .ops.index_tensor import (
    ILSOneHotTensor as ILSOneHotTensor,
)
from .ops.index_tensor import (
    SurrogateIndexTensor,
)
from .ops.index_tensor import (
    SurrogateOneHotTensor as SurrogateOneHotTensor,
)
from .options import DEFAULT_PROJECTION as DEFAULT_PROJECTION
from .options import DEFAULT_STEP_SIZE as DEFAULT_STEP_SIZE
from .projections import PROJECTIONS as PROJECTIONS
from .projections import TARGETS as TARGETS
from .projections import project_simplex
from .reparam import ILSReparam
from .routing import ILSMessenger, to_ils
from .site_choice import SiteChoice, SiteChoiceWarning
from .site_weight import anneal

__version__ = "0.1.0"

# Importable as before, not listed: former names (``ILSIndexTensor``, ``ILSOneHotTensor``,
# ``ILSGradientDropWarning``), internals (``SurrogateOneHotTensor``), and the options'
# constants (``DEFAULT_PROJECTION``, ``DEFAULT_STEP_SIZE``, ``PROJECTIONS``, ``TARGETS``).

__all__ = [
    "DistributedELBOModule",
    "GradientDropReport",
    "GradientDropWarning",
    "ILSBernoulli",
    "ILSCategorical",
    "ILSMessenger",
    "ILSOneHotCategorical",
    "ILSReparam",
    "SiteChoice",
    "SiteChoiceWarning",
    "SurrogateIndexTensor",
    "TraceEnumILS_ELBO",
    "TraceGraphILS_ELBO",
    "TraceILSCV_ELBO",
    "TraceILSDiff_ELBO",
    "TraceILS_ELBO",
    "anneal",
    "ils_onehot",
    "load_checkpoint",
    "project_simplex",
    "report_dropped_gradients",
    "save_checkpoint",
    "seed_rank",
    "sync_elbo_state",
    "to_ils",
]
