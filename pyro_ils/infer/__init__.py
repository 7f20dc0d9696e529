"""Inference: the ELBOs that route discrete guide sites through an estimator.

One ELBO per module, as Pyro lays out its own: ``trace_ils_elbo``,
``tracegraph_ils_elbo`` and ``traceenum_ils_elbo`` (their shared part in
:mod:`~pyro_ils.infer.ils_elbo`), the exact-difference ELBO
(:mod:`~pyro_ils.infer.trace_ils_diff_elbo` with its plan, alternatives and surrogate),
the control-variate ELBO (:mod:`~pyro_ils.infer.trace_ils_cv_elbo`), and the
multi-evaluation ELBOs ILS is compared with (RLOO, MuProp, REBAR, RELAX, DisARM
and IndeCateR), and :func:`~pyro_ils.infer.compare.compare_estimators`, which
measures all of them on a user's model (:mod:`~pyro_ils.infer.estimator_catalog`
lists them).
"""

from pyro_ils.infer.compare import compare_estimators
from pyro_ils.infer.evaluations import evaluations_per_step
from pyro_ils.infer.reparam import ILSReparam
from pyro_ils.infer.trace_disarm_elbo import TraceDisARM_ELBO
from pyro_ils.infer.trace_ils_cv_elbo import TraceILSCV_ELBO
from pyro_ils.infer.trace_ils_diff_elbo import TraceILSDiff_ELBO
from pyro_ils.infer.trace_ils_elbo import TraceILS_ELBO
from pyro_ils.infer.trace_indecater_elbo import TraceIndeCateR_ELBO
from pyro_ils.infer.trace_muprop_elbo import TraceMuProp_ELBO
from pyro_ils.infer.trace_rebar_elbo import TraceREBAR_ELBO
from pyro_ils.infer.trace_relax_elbo import TraceRELAX_ELBO
from pyro_ils.infer.trace_rloo_elbo import TraceRLOO_ELBO
from pyro_ils.infer.traceenum_ils_elbo import TraceEnumILS_ELBO
from pyro_ils.infer.tracegraph_ils_elbo import TraceGraphILS_ELBO

__all__ = [
    "ILSReparam",
    "TraceDisARM_ELBO",
    "TraceEnumILS_ELBO",
    "TraceGraphILS_ELBO",
    "TraceILSCV_ELBO",
    "TraceILSDiff_ELBO",
    "TraceILS_ELBO",
    "TraceIndeCateR_ELBO",
    "TraceMuProp_ELBO",
    "TraceREBAR_ELBO",
    "TraceRELAX_ELBO",
    "TraceRLOO_ELBO",
    "compare_estimators",
    "evaluations_per_step",
]
