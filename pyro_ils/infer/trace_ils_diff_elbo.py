r"""ILS with exact discrete differences in place of the first-order signal.

ILS steps the target with ``g = dL/dz``, the first-order model of how the loss
changes when the draw moves to another category. Where the model can be run on
all ``K`` alternatives of a site at once (as parallel enumeration does), the
change itself can be used instead:

.. math::

    d_k = L(z_{-i}, z_i = k) - L(z_{-i}, z_i), \qquad k = 1, \dots, K,

for each draw :math:`z_i` of a site, with every other draw :math:`z_{-i}` held at
its value and :math:`L = -(\log p(x, z) - \log q(z))` the negative ELBO
integrand, each term scaled and masked as Pyro scales it. Divided by the draw's
weight :math:`w_i` (its scale: plate subsampling, ``poutine.scale``; its mask),
:math:`d` enters the ILS target and backward unchanged:

.. math::

    \pi_D = h(z - c\, d / w), \qquad
    \nabla_{\mathrm{logits}} = \frac{w}{c}\,(\pi - \pi_D),

the gradient of :math:`\frac{w}{c} \mathrm{KL}(\pi_D \| \pi)` with the target
held fixed. Unlike :class:`~pyro_ils.TraceILS_ELBO`, the ILS backward is divided
by the step: ``c`` sets how far the target moves (a trust region on the
simplex), not the size of the gradient, which stays on the scale of the loss
and of the other terms (an analytic KL, the model's parameters).

With the entropic map (``projection="mirror"``, the default here),
:math:`\pi_D \propto \pi\, e^{-c\, d / w}`:

* for small ``c``, :math:`\frac{w}{c} (\pi - \pi_D) \to \pi \odot (d - \langle
  \pi, d \rangle)`: the *local expectation gradient* (Titsias and
  Lazaro-Gredilla, 2015), which is unbiased for a guide whose sites are
  independent given their parents (mean field), and exact when a site is the
  only draw its terms depend on;
* at ``c = 1`` and without analytic KL, :math:`\pi\, e^{-d / w} \propto p(x,
  z_i = k, z_{-i}) / q(z_{-i} \mid z_i = k)`: for a mean-field guide the target
  is the exact conditional posterior of the draw, :math:`p(z_i \mid x, z_{-i})`.

**The limit** ``step_size=0`` (with ``"mirror"``) is that small-step gradient
itself, :math:`w\, \pi \odot (g - \langle \pi, g \rangle)` with :math:`g = d / w`:
no step to choose, and, like every other parameter's gradient, multiplied by
exactly the factor that multiplies the loss.

**Rao-Blackwellized model terms** (``rao_blackwellize=True``). The alternatives
are evaluated anyway; every model term :math:`\ell` that depends on the site is
then differentiated (in the model's parameters and anything else but ``q``) as its
average over them,

.. math::

    \bar\ell = \frac1C \sum_{c=1}^{C} \sum_{k=1}^{K} q(z_c = k)\,
    \ell(z_{-c}, z_c = k),

with ``q`` held fixed and :math:`c` running over the site's coupled blocks (a
block is changed as one draw; ``C = 1`` when the site's plates split its terms).
Each inner sum is the expectation of :math:`\ell` over the block's draw given the
others, so :math:`\bar\ell` has the expectation of :math:`\ell` and less
variance; a term that depends on several routed sites is averaged over each of them
and the averages are averaged. For a draw that is the only one its terms depend on
(one latent per data point, as in a mixture) and the limit ``step_size=0``, every
gradient is then the exact (enumerated) gradient, at ``K + 1`` model runs per step
where ``TraceEnum_ELBO`` needs ``K``. It costs the backward pass through the
alternatives' runs, which the differences alone do not need.

**Cost.** One extra run of the guide and the model per step, on the
alternatives of every routed site stacked along a new dimension left of every
plate (a site's own rows hold its alternatives while the other sites keep their
draws): ``M`` rows per site, ``M = K`` where
every term that depends on the site lies in all of the site's plates (for
example a per-data-point latent with its own likelihood), and ``M = C K`` where
``C`` is the number of the site's elements that the terms couple (for example
``L`` latents of one image in a ``latents`` plate, or ``.to_event`` dims: each
is changed on its own). The model and guide must broadcast over that new
dimension, as they must for ``TraceEnum_ELBO``'s parallel enumeration. More than
``chunk_size`` rows are run in chunks, the model's under activation checkpointing, so
that the memory of the model's run stays that of one chunk
(:mod:`pyro_ils.infer.alternatives`).

**Which terms couple.** A plate of the site is treated as splitting its terms
when every site after it (in the guide, and in the model after the model's site
of the same name) is inside that plate; otherwise the plate's elements are
changed one at a time. Batch dims without a plate and ``.to_event`` dims are
always changed one at a time.

**Structured guides.** A later guide site whose distribution changes with a routed
site's alternative (:math:`q(z \mid y)`) is drawn again in that alternative's rows,
coupled to its draw (:mod:`pyro_ils.infer.coupling`: the same noise, so :math:`z_k \sim
q(z \mid y = k)`), for ``Normal``, ``Bernoulli``, ``Categorical`` and
``OneHotCategorical`` sites: each :math:`d_k` is then an unbiased estimate of the
expected loss under the alternative, and the gradient the local expectation gradient
of the ELBO. A reparameterized redrawn value keeps its path to the guide's parameters
into the Rao-Blackwellized model terms, so the guide's run over the alternatives keeps
its graph (it is not checkpointed). Later sites of other distributions are held at
their draws (their ``log q`` re-evaluated under each alternative), which is not the
local expectation gradient for them.

**Scope.** Continuous reparameterized sites, and discrete sites that are not routed
(other distributions, ``infer={"ils": False}``, enumerated sites), are handled as
:class:`~pyro.infer.Trace_ELBO` handles them.
A plate that subsamples at random (``subsample_size``) keeps the draw's minibatch
in the run over the alternatives.

The implementation is in ``pyro_ils.infer``: ``ils_diff_plan`` (the routed sites and
their alternatives), ``ils_diff_alternatives`` (the run over them and the differences),
``ils_diff_surrogate`` (the targets and the surrogate loss) and this module (the
ELBO).
"""

from __future__ import annotations

import contextlib

import torch
from pyro.infer import Trace_ELBO
from torch import Tensor

from pyro_ils.infer.alternatives import DEFAULT_CHUNK_SIZE, check_chunk_size
from pyro_ils.infer.ils_diff_alternatives import _SubsampleRecorder, differences
from pyro_ils.infer.ils_diff_plan import (
    _KEY,
    _max_plate_nesting,
    _PlainDrawMessenger,
    _Plan,
    check_diff_options,
)
from pyro_ils.infer.ils_diff_surrogate import site_target, surrogate_loss
from pyro_ils.infer.ils_elbo import site_kl
from pyro_ils.poutine.routing import ILSMessenger

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
        for every alternative (default ``False``). Saves one run of the guide per step
        (what that saved on one model is in ``docs/lab_notes.md``). The first step of
        each instance
        also runs the guide over the alternatives and raises ``ValueError`` where the
        guide is not mean field.
    :param int max_plate_nesting: the number of batch dims to the right of the
        alternatives' dim (default, or ``float("inf")`` as in Pyro: the largest found
        in the traces).
    :param int chunk_size: the most rows of alternatives (summed over the sites) run at
        once (default :data:`~pyro_ils.infer.alternatives.DEFAULT_CHUNK_SIZE`); more rows are
        run in chunks, under activation checkpointing where they keep a gradient path,
        so that the memory of the run over the alternatives stays that of one chunk
        (:mod:`pyro_ils.infer.alternatives`). ``None``: all rows at once.
    :param elbo_kwargs: passed to :class:`~pyro.infer.Trace_ELBO`
        (``num_particles``, ...; ``vectorize_particles`` is not supported).

    See :mod:`pyro_ils.infer.trace_ils_diff_elbo` for the math, the cost and the scope.
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
        """The guide as traced: every routed site drawn plainly and marked; a site that
        names an estimator in ``infer={"ils": ...}`` routed through it instead."""
        return ILSMessenger(stl=True)(_PlainDrawMessenger(self.step_size, self.projection)(guide))

    def _get_trace(self, model, guide, args, kwargs):
        self._subsamples = _SubsampleRecorder()
        guide = self._wrap_guide(guide)
        model_trace, guide_trace = super()._get_trace(
            self._subsamples(model), self._subsamples(guide), args, kwargs
        )
        if not getattr(self, "_values_only", False):
            self._attach_targets(model, guide, args, kwargs, model_trace, guide_trace)
        return model_trace, guide_trace

    @contextlib.contextmanager
    def _without_targets(self):
        """Traces of the draw only: no run over the alternatives (``loss``, counting)."""
        self._values_only = True
        try:
            yield
        finally:
            self._values_only = False

    def loss(self, model, guide, *args, **kwargs):
        with self._without_targets():
            return super().loss(model, guide, *args, **kwargs)

    def alternatives_per_draw(self, model, guide, *args, **kwargs) -> int:
        """The number of rows of alternatives that one draw's run over them holds: the
        sum over the routed sites of ``M`` (``K`` per coupled block; see the module
        docstring), counted on a fresh draw of the traces, without running the
        alternatives. (:func:`~pyro_ils.infer.evaluations.evaluations_per_step` counts a
        whole step.)"""
        with self._without_targets():
            model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        plans, _ = self._plans(model_trace, guide_trace, with_kl=False)
        return sum(plan.num_alt for plan in plans)

    def _plans(self, model_trace, guide_trace, with_kl: bool = True) -> tuple[list[_Plan], int]:
        """``(plans, nesting)``: one :class:`~pyro_ils.infer.ils_diff_plan._Plan` per
        routed site of a draw's traces (its KL left out unless ``with_kl``)."""
        nesting = self._nesting
        if nesting is None:
            nesting = _max_plate_nesting(model_trace, guide_trace)
        plans = []
        for name, site in list(guide_trace.nodes.items()):
            if site["type"] != "sample" or _KEY not in site["infer"]:
                continue
            analytic = with_kl and self.analytic_kl
            kl = site_kl(name, site, model_trace) if analytic else None
            plans.append(_Plan.of(name, site, kl, nesting, guide_trace, model_trace))
        return plans, nesting

    def _attach_targets(self, model, guide, args, kwargs, model_trace, guide_trace):
        plans, nesting = self._plans(model_trace, guide_trace)
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
