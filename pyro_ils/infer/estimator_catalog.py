"""Every estimator the package has, and Pyro's own, as ELBO objects by name.

:func:`default_estimators` is what :func:`~pyro_ils.infer.compare.compare_estimators`
measures unless told otherwise. Single-evaluation estimators are routed into the
unchanged guide by ``TraceILS_ELBO(estimator=...)``; the multi-evaluation ones are
their own ELBOs. Each entry is built fresh on every call, so that no state (a
baseline, a control variate, a tuned temperature) carries over between uses.
"""

from __future__ import annotations

from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.infer.elbo import ELBO

from pyro_ils.estimators import GST, ILS, GumbelRao, ReinMax, STGumbel, StraightThrough
from pyro_ils.infer.evaluations import evaluations_per_step
from pyro_ils.infer.trace_disarm_elbo import TraceDisARM_ELBO
from pyro_ils.infer.trace_ils_cv_elbo import TraceILSCV_ELBO
from pyro_ils.infer.trace_ils_diff_elbo import TraceILSDiff_ELBO
from pyro_ils.infer.trace_ils_elbo import TraceILS_ELBO
from pyro_ils.infer.trace_indecater_elbo import TraceIndeCateR_ELBO
from pyro_ils.infer.trace_muprop_elbo import TraceMuProp_ELBO
from pyro_ils.infer.trace_rebar_elbo import TraceREBAR_ELBO
from pyro_ils.infer.trace_relax_elbo import TraceRELAX_ELBO
from pyro_ils.infer.trace_rloo_elbo import TraceRLOO_ELBO

__all__ = ["RLOO_SAMPLES", "default_estimators", "matched_rloo", "reference_elbos"]

#: Samples per step of the unbiased (RLOO) reference.
RLOO_SAMPLES = 10


def _nesting(max_plate_nesting: int | None) -> dict:
    """The ``max_plate_nesting`` keyword, where one is given (Pyro guesses otherwise)."""
    return {} if max_plate_nesting is None else {"max_plate_nesting": max_plate_nesting}


def default_estimators(max_plate_nesting: int | None = None) -> dict[str, ELBO]:
    """Fresh ELBO objects for every estimator, by a readable name.

    :param max_plate_nesting: passed to the ELBOs that enumerate alternatives.
    """
    nesting = _nesting(max_plate_nesting)
    return {
        "Trace_ELBO (REINFORCE)": Trace_ELBO(**nesting),
        "TraceGraph_ELBO": TraceGraph_ELBO(**nesting),
        "TraceILS_ELBO() (default)": TraceILS_ELBO(**nesting),
        "ILS(1, euclidean)": TraceILS_ELBO(estimator=ILS(1.0, "euclidean"), **nesting),
        "ILS(0, midpoint)": TraceILS_ELBO(estimator=ILS(0.0, "midpoint"), **nesting),
        "StraightThrough()": TraceILS_ELBO(estimator=StraightThrough(), **nesting),
        "ReinMax(1.0)": TraceILS_ELBO(estimator=ReinMax(1.0), **nesting),
        "STGumbel(1.0)": TraceILS_ELBO(estimator=STGumbel(1.0), **nesting),
        "GumbelRao(1.0, 10)": TraceILS_ELBO(estimator=GumbelRao(1.0, 10), **nesting),
        "GST(1.0, kappa=1.0)": TraceILS_ELBO(estimator=GST(1.0, 1.0), **nesting),
        "TraceILSDiff_ELBO()": TraceILSDiff_ELBO(max_plate_nesting=max_plate_nesting),
        "TraceIndeCateR_ELBO()": TraceIndeCateR_ELBO(max_plate_nesting=max_plate_nesting),
        "TraceILSCV_ELBO(2)": TraceILSCV_ELBO(num_samples=2, **nesting),
        "TraceRLOO_ELBO(4)": TraceRLOO_ELBO(num_samples=4, **nesting),
        "TraceDisARM_ELBO()": TraceDisARM_ELBO(**nesting),
        "TraceMuProp_ELBO()": TraceMuProp_ELBO(**nesting),
        "TraceREBAR_ELBO(tune=False)": TraceREBAR_ELBO(tune=False, **nesting),
        "TraceRELAX_ELBO()": TraceRELAX_ELBO(**nesting),
    }


def matched_rloo(
    model, guide, *args, max_plate_nesting: int | None = None, limit: int = 200, **kwargs
) -> tuple[str, ELBO] | None:
    """RLOO with as many samples as :class:`~pyro_ils.TraceILSDiff_ELBO` evaluates the
    objective per step on this model (:func:`~pyro_ils.infer.evaluations_per_step`), by
    name; ``None`` where the exact differences cannot run or need more than ``limit``.
    """
    diff = TraceILSDiff_ELBO(max_plate_nesting=max_plate_nesting)
    try:
        n = evaluations_per_step(diff, model, guide, *args, **kwargs)
    except Exception:  # the model cannot be run on the alternatives
        return None
    if not 2 <= n <= limit:
        return None
    nesting = _nesting(max_plate_nesting)
    return f"TraceRLOO_ELBO({n}) (= ILS-diff's evaluations)", TraceRLOO_ELBO(
        num_samples=n, **nesting
    )


def reference_elbos(max_plate_nesting: int | None = None) -> tuple[ELBO, ELBO]:
    """The exact reference (Pyro's ``TraceEnum_ELBO``, for a guide enumerated in
    parallel) and the unbiased one where enumeration fails (RLOO with
    :data:`RLOO_SAMPLES` samples)."""
    nesting = _nesting(max_plate_nesting)
    return TraceEnum_ELBO(**nesting), TraceRLOO_ELBO(num_samples=RLOO_SAMPLES, **nesting)
