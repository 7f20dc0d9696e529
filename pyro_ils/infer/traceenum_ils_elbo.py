"""``TraceEnumILS_ELBO``: :class:`~pyro.infer.TraceEnum_ELBO` with the non-enumerated
discrete guide sites routed."""

from __future__ import annotations

from pyro.infer import TraceEnum_ELBO

from pyro_ils.estimators import ILS
from pyro_ils.infer.ils_elbo import _ILSELBOMixin
from pyro_ils.poutine.routing import surrogate_base

__all__ = ["TraceEnumILS_ELBO"]

#: Stands for the estimator of a site that has none (not routed): nothing nonlinear.
_LINEAR = ILS._checked(0.0, "midpoint", 1.0)


class TraceEnumILS_ELBO(_ILSELBOMixin, TraceEnum_ELBO):
    r""":class:`~pyro.infer.TraceEnum_ELBO` with the non-enumerated discrete guide sites
    routed through an estimator: ILS by default.

    Sites marked for enumeration (``infer={"enumerate": "parallel"}``, in the
    model or the guide) are summed out exactly; the other discrete guide sites
    are routed. (TraceEnum's surrogate uses ``log q`` itself, so only
    ``guide_log_prob="full"`` applies.) A site enumerated sequentially next to a
    routed site needs an estimator whose backward is linear in the incoming gradient
    (``estimator.linear``: every one but ILS with a step ``c > 0``).

    **The default** is that of :class:`~pyro_ils.TraceILS_ELBO` where neither the
    model nor the guide marks a site for enumeration (TraceEnum's gradient is then
    Trace's); where one does, every routed site gets the midpoint limit. The first
    step with each model and guide decides, from a trace of the guide (and of the
    model, where the guide marks nothing for enumeration).

    :param step_size: as for :class:`~pyro_ils.TraceILS_ELBO`; so are ``projection``,
        ``max_alternatives``, ``estimator`` and ``elbo_kwargs``.
    :param str guide_log_prob: treatment of the guide's ``log q(z)`` at routed sites,
        ``"full"`` only; see :mod:`pyro_ils.infer.ils_elbo`.

    References:

    * Obermeyer, Bingham, Jankowiak, Pradhan, Chiu, Rush and Goodman (2019), "Tensor
      variable elimination for plated factor graphs", ICML (TraceEnum's enumeration).
    """

    _guide_log_prob_modes = ("full",)
    _default_blocker = "enumeration"

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        sequential = [
            name
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and site["infer"].get("enumerate") == "sequential"
        ]
        # A site drawn before a sequentially enumerated one is replayed in each of its
        # traces as plain data (``ILSMessenger``): TraceEnum's score function covers
        # it. A site drawn after it is drawn by ILS in each trace, whose loss TraceEnum
        # weights by the enumerated value's probability: only a backward that is
        # linear in the incoming gradient (a small-step limit) carries that weight.
        nonlinear = [
            name
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample"
            and not site["is_observed"]
            # e.g. an ILS site with a step (a small-step limit, ``step_size=0``, is linear)
            and not getattr(surrogate_base(site["fn"]), "estimator", _LINEAR).linear
        ]
        if sequential and nonlinear:
            raise NotImplementedError(
                f"TraceEnumILS_ELBO: guide sites {sequential} are enumerated sequentially "
                f"next to routed sites {nonlinear} whose backward is not linear in the "
                "incoming gradient (ILS with step_size > 0); use "
                "infer={'enumerate': 'parallel'} or a linear estimator (a small-step "
                "limit, step_size=0, or straight-through, ReinMax, ST-Gumbel)"
            )
        return model_trace, guide_trace
