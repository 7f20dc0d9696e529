"""``TraceILS_ELBO``: :class:`~pyro.infer.Trace_ELBO` with routed discrete guide sites."""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.util import torch_item

from pyro_ils.infer.ils_elbo import LogRatio, _ILSELBOMixin, guide_site_surrogate, ils_site_kls

__all__ = ["TraceILS_ELBO"]


class TraceILS_ELBO(_ILSELBOMixin, Trace_ELBO):
    r""":class:`~pyro.infer.Trace_ELBO` with the discrete guide sites routed through an
    estimator: ILS by default.

    Every latent ``Categorical``, ``OneHotCategorical`` and ``Bernoulli`` guide site
    (also inside ``Independent``, masked and expanded wrappers) is drawn exactly, is
    treated as reparameterized and contributes no score-function term; its logits get
    the estimator's gradient. Sites that are observed, conditioned, enumerated or
    marked ``infer={"ils": False}`` are left to ``Trace_ELBO``.

    Example::

        svi = SVI(model, guide, optim, loss=TraceILS_ELBO())
        svi = SVI(model, guide, optim, loss=TraceILS_ELBO(estimator=ReinMax(1.5)))

    **The default.** With none of ``step_size``, ``projection``, ``guide_log_prob``
    and ``estimator`` given, each discrete guide site gets one of two ILS members,
    chosen once per site by the rule of :mod:`pyro_ils.infer.site_choice`: exact
    differences over the site's alternatives (:class:`~pyro_ils.TraceILSDiff_ELBO`)
    when it has at most ``max_alternatives`` of them and the model broadcasts over
    them, the midpoint limit (ReinMax's estimator, at
    :data:`~pyro_ils.infer.site_choice.DEFAULT_TEMPERATURE` on sites past the budget)
    otherwise, each with the analytic KL where the model's site has one registered.
    ``elbo.site_choices`` shows the choice; ``infer={"ils": {"exact_differences":
    False}}`` overrides it for one site. Any option given selects that estimator on
    every site, as ``max_alternatives=0`` selects the midpoint limit.

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
        ``"stl"`` (default), ``"full"`` or ``"analytic"``; see :mod:`pyro_ils.infer.ils_elbo`.
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
    * Liu, Dong, Liu, Yu and Gao (2023), "Bridging discrete and backpropagation:
      straight-through and beyond", NeurIPS (the midpoint limit is their ReinMax).
    """

    _guide_log_prob_modes = ("stl", "full", "analytic")

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        if self.guide_log_prob != "analytic":
            return super()._differentiable_loss_particle(model_trace, guide_trace)
        kls = ils_site_kls(model_trace, guide_trace)
        elbo, surrogate = 0.0, 0.0
        log_r = LogRatio(model_trace, guide_trace)
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample" and name not in kls:
                elbo = elbo + torch_item(site["log_prob_sum"])
                surrogate = surrogate + site["log_prob_sum"]
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if name in kls:
                elbo = elbo - torch_item(kls[name])
                surrogate = surrogate - kls[name]
                continue
            elbo = elbo - torch_item(site["log_prob_sum"])
            surrogate = surrogate + guide_site_surrogate(site, log_r)
        return -elbo, -surrogate

    def loss(self, model, guide, *args, **kwargs):
        if self.guide_log_prob != "analytic":
            return super().loss(model, guide, *args, **kwargs)
        loss = 0.0
        with torch.no_grad():
            for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
                loss_particle, _ = self._differentiable_loss_particle(model_trace, guide_trace)
                loss += torch_item(loss_particle) / self.num_particles
        return loss
