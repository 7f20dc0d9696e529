"""``TraceGraphILS_ELBO``: :class:`~pyro.infer.TraceGraph_ELBO` with routed discrete
guide sites."""

from __future__ import annotations

from pyro.infer import TraceGraph_ELBO
from pyro.infer.util import torch_item
from pyro.util import warn_if_nan

from pyro_ils.infer.ils_elbo import _ILSELBOMixin

__all__ = ["TraceGraphILS_ELBO"]


class _TraceGraphDifferentiableLoss(TraceGraph_ELBO):
    """``differentiable_loss`` for :class:`~pyro.infer.TraceGraph_ELBO`, which has none."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        # The value is the loss (minus the ELBO estimate); the gradient is that of
        # TraceGraph's surrogate: pathwise terms, score-function terms with their
        # downstream costs and baselines, and the loss of learned baselines.
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        warn_if_nan(surrogate_loss, "loss")
        return -torch_item(elbo) + (surrogate_loss - torch_item(surrogate_loss))


class TraceGraphILS_ELBO(_ILSELBOMixin, _TraceGraphDifferentiableLoss):
    r""":class:`~pyro.infer.TraceGraph_ELBO` with the discrete guide sites routed through
    an estimator: ILS by default.

    Guide sites that are not routed (other non-reparameterizable distributions,
    sites marked ``infer={"ils": False}``) keep TraceGraph's score-function
    gradients, with Rao-Blackwellization and baselines.

    **The default** is that of :class:`~pyro_ils.TraceILS_ELBO` where the guide
    leaves no site to the score function (TraceGraph's gradient is then Trace's);
    where it does, every routed site gets the midpoint limit and those sites keep
    TraceGraph's baselines. The first step decides, from a trace of the guide.

    :param step_size: as for :class:`~pyro_ils.TraceILS_ELBO`; so are ``projection``,
        ``max_alternatives``, ``estimator`` and ``elbo_kwargs``.
    :param str guide_log_prob: treatment of the guide's ``log q(z)`` at routed sites,
        ``"stl"`` (default) or ``"full"``; see :mod:`pyro_ils.infer.ils_elbo`.

    References:

    * Schulman, Heess, Weber and Abbeel (2015), "Gradient estimation using stochastic
      computation graphs", NeurIPS (TraceGraph's Rao-Blackwellized score function).
    """

    _default_blocker = "score_function"
