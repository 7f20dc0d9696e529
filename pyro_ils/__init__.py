"""pyro-ils: Intermediate Loss Sampling for discrete latent variables in Pyro.

Swap ``dist.Categorical`` for :class:`ILSCategorical` in a guide, or keep the
guide and pass :class:`TraceILS_ELBO` to ``SVI``: discrete draws are exact and
their parameters receive the ILS gradient instead of a score-function term.
"""

from pyro_ils.debug import (
    GradientDropReport,
    GradientDropWarning,
    report_dropped_gradients,
)

# Importable as before, not listed in __all__: the former names of the draw tensor and
# the drop warning, an internal tensor class, and the options' constants.
from pyro_ils.debug import ILSGradientDropWarning as ILSGradientDropWarning  # noqa: I001
from pyro_ils.distributed import (
    DistributedELBOModule,
    load_checkpoint,
    save_checkpoint,
    seed_rank,
    sync_elbo_state,
)
from pyro_ils.distributions import ILSBernoulli, ILSCategorical, ILSOneHotCategorical
from pyro_ils.infer import (
    ILSReparam,
    TraceEnumILS_ELBO,
    TraceGraphILS_ELBO,
    TraceILS_ELBO,
    TraceILSCV_ELBO,
    TraceILSDiff_ELBO,
)
from pyro_ils.infer.compare import Comparison, EstimatorRecord, compare_estimators
from pyro_ils.infer.site_choice import SiteChoice, SiteChoiceWarning
from pyro_ils.ops.ils_onehot import ils_onehot
from pyro_ils.ops.index_tensor import ILSIndexTensor as ILSIndexTensor
from pyro_ils.ops.index_tensor import ILSOneHotTensor as ILSOneHotTensor
from pyro_ils.ops.index_tensor import SurrogateIndexTensor
from pyro_ils.ops.index_tensor import SurrogateOneHotTensor as SurrogateOneHotTensor
from pyro_ils.ops.projections import PROJECTIONS as PROJECTIONS
from pyro_ils.ops.projections import TARGETS as TARGETS
from pyro_ils.ops.projections import project_simplex
from pyro_ils.options import DEFAULT_PROJECTION as DEFAULT_PROJECTION
from pyro_ils.options import DEFAULT_STEP_SIZE as DEFAULT_STEP_SIZE
from pyro_ils.poutine import ILSMessenger, anneal
from pyro_ils.poutine.routing import to_ils

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "DistributedELBOModule",
    "EstimatorRecord",
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
    "compare_estimators",
    "ils_onehot",
    "load_checkpoint",
    "project_simplex",
    "report_dropped_gradients",
    "save_checkpoint",
    "seed_rank",
    "sync_elbo_state",
    "to_ils",
]
