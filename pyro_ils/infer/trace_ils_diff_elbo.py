"""The ELBO of exact discrete differences, :class:`~pyro_ils.TraceILSDiff_ELBO` (see
:mod:`pyro_ils.ils_diff` for the math, the cost and the scope).

Each step traces the guide with every routed site drawn plainly and marked
(:mod:`~pyro_ils.infer.ils_diff_plan`), runs the guide and the model once more over
the routed sites' alternatives (:mod:`~pyro_ils.infer.ils_diff_alternatives`), and
turns the differences into ILS targets and the surrogate loss
(:mod:`~pyro_ils.infer.ils_diff_surrogate`).
"""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO
from torch import Tensor

from ..alternatives import DEFAULT_CHUNK_SIZE, check_chunk_size
from ..elbo import site_kl
from .ils_diff_alternatives import _SubsampleRecorder, differences
from .ils_diff_plan import _KEY, _max_plate_nesting, _PlainDrawMessenger, _Plan, check_diff_options
from .ils_diff_surrogate import site_target, surrogate_loss

__all__ = ["TraceILSDiff_ELBO"]


class TraceILSDiff_ELBO(Trace_ELBO):
    r""":class:`~pyro.infer.Trace_ELBO` whose discrete guide sites get the ILS gradient
    built from exact discrete differences instead of ``dL/dz``.

    Every latent ``Categorical``, ``OneHotCategorical`` and ``Bernoulli`` guide
    site (also an ILS distribution, and inside ``Independent``, masked and
    expanded wrappers) is drawn exactly; the model and the guide are then run
    once more, over every site's alternatives at once, and
    the logits receive :math:`\frac{w}{c} (\pi - \pi_D)` with :math:`\pi_D = h(z -
    c\, d / w)`. ``infer={"ils": False}`` leaves a site to the score-function
    estimator of ``Trace_ELBO``; ``infer={"ils": {"step_size": c, "projection":
    h}}`` sets the options of one site.

    Example::

        svi = SVI(model, guide, optim, loss=TraceILSDiff_ELBO())

    :param float step_size: the step ``c >= 0``; default ``0``, the small-step limit
        (the local expectation gradient; ``"mirror"`` only), which measured at least
        as well as the tuned step on every task of the estimator benchmark and needs
        no tuning (``docs/improving_ils.md``). With ``"mirror"``,
        ``analytic_kl=False`` and ``c = 1`` the target is the conditional posterior.
    :param str projection: ``"mirror"`` (default), ``"mirror_rms"``,
        ``"euclidean"`` or ``"normalize"``.
    :param bool rao_blackwellize: differentiate each model term that depends on a
        routed site as its ``q``-weighted average over the alternatives already
        evaluated, instead of at the draw (default ``True``: unbiased, less variance,
        better or equal on every task measured; costs the backward pass through the
        alternatives).
    :param bool analytic_kl: where the model's site has a registered KL with the
        guide's (a matching categorical), use :math:`-\mathrm{KL}(q \| p)` for the
        site's own ``log p - log q`` and leave those terms out of ``d``
        (default ``True``).
    :param bool mean_field: declare the guide mean field (as
        :class:`~pyro.infer.TraceMeanField_ELBO` assumes): no guide site's distribution
        depends on the value of a routed site. The guide is then not run over the
        alternatives; each routed site's :math:`\log q` at its alternatives is computed
        from the distribution of the draw's run, and every other guide term is the same
        for every alternative (default ``False``). Saves one run of the guide per step:
        on the benchmark's small VAE 4-10% of the step with Pyro's validation off (1% with
        it on), timed by hand, interleaved, on one CPU thread of an AMD EPYC VM (not a
        recorded benchmark). The first step of each instance
        also runs the guide over the alternatives and raises ``ValueError`` where the
        guide is not mean field.
    :param int max_plate_nesting: the number of batch dims to the right of the
        alternatives' dim (default, or ``float("inf")`` as in Pyro: the largest found
        in the traces).
    :param int chunk_size: the most rows of alternatives (summed over the sites) run at
        once (default :data:`~pyro_ils.alternatives.DEFAULT_CHUNK_SIZE`); more rows are
        run in chunks, under activation checkpointing where they keep a gradient path,
        so that the memory of the run over the alternatives stays that of one chunk
        (:mod:`pyro_ils.alternatives`). ``None``: all rows at once.
    :param elbo_kwargs: passed to :class:`~pyro.infer.Trace_ELBO`
        (``num_particles``, ...; ``vectorize_particles`` is not supported).

    See :mod:`pyro_ils.ils_diff` for the math, the cost and the scope.
    """

    def __init__(
        self,
        step_size: float = 0.0,
        projection: str = "mirror",
        analytic_kl: bool = True,
        rao_blackwellize: bool = True,
        mean_field: bool = False,
        max_plate_nesting: int | None = None,
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
        **elbo_kwargs,
    ):
        self.step_size, self.projection = check_diff_options(step_size, projection)
        self.rao_blackwellize = bool(rao_blackwellize)
        if elbo_kwargs.get("vectorize_particles"):
            raise NotImplementedError("TraceILSDiff_ELBO does not support vectorize_particles")
        self.analytic_kl = bool(analytic_kl)
        self.mean_field = bool(mean_field)
        self._mean_field_checked = False
        # Pyro's ``float("inf")`` means "not given": found from the traces.
        inf = max_plate_nesting == float("inf")
        self._nesting = None if max_plate_nesting is None or inf else int(max_plate_nesting)
        self.chunk_size = check_chunk_size(chunk_size)
        super().__init__(**elbo_kwargs)

    # -- traces -------------------------------------------------------------------

    def _wrap_guide(self, guide):
        """The guide as traced: every routed site drawn plainly and marked."""
        return _PlainDrawMessenger(self.step_size, self.projection)(guide)

    def _get_trace(self, model, guide, args, kwargs):
        self._subsamples = _SubsampleRecorder()
        guide = self._wrap_guide(guide)
        model_trace, guide_trace = super()._get_trace(
            self._subsamples(model), self._subsamples(guide), args, kwargs
        )
        if not getattr(self, "_values_only", False):
            self._attach_targets(model, guide, args, kwargs, model_trace, guide_trace)
        return model_trace, guide_trace

    def loss(self, model, guide, *args, **kwargs):
        self._values_only = True
        try:
            return super().loss(model, guide, *args, **kwargs)
        finally:
            self._values_only = False

    def _attach_targets(self, model, guide, args, kwargs, model_trace, guide_trace):
        nesting = self._nesting
        if nesting is None:
            nesting = _max_plate_nesting(model_trace, guide_trace)
        plans = []
        for name, site in list(guide_trace.nodes.items()):
            if site["type"] != "sample" or _KEY not in site["infer"]:
                continue
            kl = site_kl(name, site, model_trace) if self.analytic_kl else None
            plans.append(_Plan.of(name, site, kl, nesting, guide_trace, model_trace))
        if not plans:
            return
        with torch.set_grad_enabled(self.rao_blackwellize and torch.is_grad_enabled()):
            results = self._differences(plans, model, guide, args, kwargs, guide_trace, nesting)
        for plan, (d, averaged) in zip(plans, results, strict=True):
            target = site_target(plan.site, d, plan.view, plan.kl)
            plan.site[_KEY] = {**target, "averaged": averaged}

    def _differences(
        self, plans, model, guide, args, kwargs, guide_trace, nesting
    ) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """Per routed site, its differences and its Rao-Blackwellized model terms
        (:func:`~pyro_ils.infer.ils_diff_alternatives.differences`). With
        ``mean_field``, the first call checks that the guide is mean field; the later
        ones do not run the guide over the alternatives."""
        mean_field = None
        if self.mean_field:
            mean_field = "assume" if self._mean_field_checked else "check"
        results = differences(
            plans, model, guide, args, kwargs, guide_trace, nesting,
            self._subsamples, self.chunk_size, self.rao_blackwellize, mean_field,
        )  # fmt: skip
        if self.mean_field:
            self._mean_field_checked = True
        return results

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        return surrogate_loss(model_trace, guide_trace, self.analytic_kl)
