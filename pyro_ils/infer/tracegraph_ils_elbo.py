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

    :param float step_size: ILS step ``c >= 0`` for converted sites; ``None``
        (default) gives the target's default: 0 (the small-step limit) for the
        second-order targets, 1.0 for the others.
    :param str projection: the target for converted sites: ``"midpoint"`` (default;
        at ``c = 0`` ReinMax's estimator at temperature 1, or at a site's
        ``infer={"ils": {"temperature": t}}``), ``"midpoint_scaled"`` (its
        difference divided by ``c``), ``"euclidean"`` and ``"normalize"`` (the
        original method), ``"mirror"``, ``"mirror_rms"``, or ``"reference"``; see
        :func:`~pyro_ils.ops.projections.intermediate_target`.
    :param str guide_log_prob: treatment of the guide's ``log q(z)`` at routed sites,
        ``"stl"`` (default) or ``"full"``; see :mod:`pyro_ils.infer.ils_elbo`.
    :param int max_alternatives: the default's largest number of alternatives per
        site for exact differences (default
        :data:`~pyro_ils.infer.site_choice.DEFAULT_MAX_ALTERNATIVES`; ``0``: none).
    :param Estimator estimator: an object of :mod:`pyro_ils.estimators` for every
        routed site, instead of ``step_size``, ``projection`` and
        ``max_alternatives`` (``ILS(c, h)`` means ``step_size=c, projection=h``;
        ``DefaultILS()`` is the default).
    :param elbo_kwargs: passed to the base ELBO (``num_particles``,
        ``vectorize_particles``, ``max_plate_nesting``, ...).

    References:

    * Roeder, Wu and Duvenaud (2017), "Sticking the landing: simple, lower-variance
      gradient estimators for variational inference", NeurIPS (``"stl"``).
    * Liu, Zhao, Gao and Han (2023), "Bridging discrete and backpropagation:
      straight-through and beyond", NeurIPS (the midpoint limit is their ReinMax).
    """

    _default_blocker = "score_function"
