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
(:mod:`pyro_ils.alternatives`).

**Which terms couple.** A plate of the site is treated as splitting its terms
when every site after it (in the guide, and in the model after the model's site
of the same name) is inside that plate; otherwise the plate's elements are
changed one at a time. Batch dims without a plate and ``.to_event`` dims are
always changed one at a time.

**Structured guides.** A later guide site whose distribution changes with a routed
site's alternative (:math:`q(z \mid y)`) is drawn again in that alternative's rows,
coupled to its draw (:mod:`pyro_ils.coupling`: the same noise, so :math:`z_k \sim
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
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer import Trace_ELBO
from pyro.infer.util import torch_item
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor

from .alternatives import DEFAULT_CHUNK_SIZE, Redraw, check_chunk_size, is_term, run_over_rows
from .elbo import LogRatio, guide_site_surrogate, ils_site_kls, site_kl
from .ils import finite
from .options import check_options, check_projection
from .projections import intermediate_target
from .routing import DIFF_KEY, eligible, has_ils_version, site_options, to_plain

__all__ = ["TraceILSDiff_ELBO"]

_BASE_TYPES = (dist.Categorical, dist.OneHotCategorical, dist.Bernoulli)
_KEY = DIFF_KEY


def check_diff_options(step_size, projection) -> tuple[float, str]:
    """The options of :class:`TraceILSDiff_ELBO`: those of ILS, except that
    ``projection="reference"`` is refused and ``step_size=0`` (the small-step
    limit) is allowed with ``projection="mirror"``."""
    if projection == "reference":
        raise ValueError("TraceILSDiff_ELBO does not support projection='reference'")
    if isinstance(step_size, int | float) and not isinstance(step_size, bool) and step_size == 0:
        if check_projection(projection) != "mirror":
            raise ValueError(
                f"step_size=0 (the small-step limit) needs projection='mirror', got {projection!r}"
            )
        return 0.0, projection
    return check_options(step_size, projection)


class _PlainDrawMessenger(Messenger):
    """Mark every eligible discrete guide site for exact differences and make its
    draw a plain exact sample (an ILS distribution is replaced by its plain
    version, so that no first-order backward runs)."""

    def __init__(self, step_size: float, projection: str):
        super().__init__()
        self.step_size, self.projection = step_size, projection

    def _pyro_sample(self, msg) -> None:
        if not eligible(msg) or not has_ils_version(msg["fn"]):
            return
        msg["fn"] = to_plain(msg["fn"])
        ils = msg["infer"].get("ils")
        if isinstance(ils, dict) and "temperature" in ils:
            raise ValueError(
                f"site {msg['name']!r}: infer['ils']['temperature'] is the midpoint "
                "target's; exact differences have none"
            )
        enabled, step_size, projection = site_options(
            msg, self.step_size, self.projection, check=check_diff_options
        )
        if enabled:
            msg["infer"][_KEY] = {"step_size": step_size, "projection": projection}


class _SubsampleRecorder(Messenger):
    """Keep the indices that each subsampling plate drew. ``Trace_ELBO`` prunes the
    subsample sites from its traces; without them, the runs over the alternatives
    would draw a fresh minibatch."""

    def __init__(self):
        super().__init__()
        self.nodes: dict[str, dict] = {}

    def _pyro_post_sample(self, msg) -> None:
        if isinstance(msg["fn"], _Subsample):
            self.nodes[msg["name"]] = msg.copy()  # as poutine.trace keeps a site


def _with_subsamples(trace, recorder: _SubsampleRecorder):
    """A copy of ``trace`` with the recorded subsample sites put back, for replay."""
    trace = trace.copy()
    for name, node in recorder.nodes.items():
        trace.nodes.setdefault(name, node)
    return trace


def _parts(fn):
    """``(base, reinterpreted, masks)``: the plain categorical distribution inside
    the wrappers, the number of ``.to_event`` dims, and each mask with the number
    of reinterpreted dims inside it."""
    reinterpreted, masks = 0, []
    while not isinstance(fn, _BASE_TYPES):
        if isinstance(fn, dist.Independent):
            reinterpreted += fn.reinterpreted_batch_ndims
        elif isinstance(fn, MaskedDistribution):
            masks.append((fn._mask, reinterpreted))
        elif not isinstance(fn, ExpandedDistribution):
            raise TypeError(f"TraceILSDiff_ELBO cannot differentiate a {type(fn).__name__}")
        fn = fn.base_dist
    return fn, reinterpreted, [(m, reinterpreted - outer) for m, outer in masks]


def _view(base, value: Tensor) -> tuple[Tensor, Tensor, int]:
    """``(index, log_probs, K)``: the drawn categories, the normalized log-masses of
    all ``K`` categories broadcast to ``index.shape + (K,)`` (with the gradient
    path to the parameters), and ``K``."""
    if isinstance(base, dist.Bernoulli):
        index = value.long()
        a = base.logits.expand(index.shape)
        logp = torch.stack([-F.softplus(a), -F.softplus(-a)], dim=-1)
        return index, logp, 2
    if isinstance(base, dist.OneHotCategorical):
        index = value.argmax(-1)
    else:
        index = value.long()
    logits = base.logits
    return index, logits.expand(index.shape + logits.shape[-1:]), logits.size(-1)


class _SiteView(NamedTuple):
    """One routed guide site as the differences, the target and the surrogate use it."""

    base: object  #: the plain Categorical / OneHotCategorical / Bernoulli inside
    reinterpreted: int  #: the number of ``.to_event`` dims
    masks: list  #: ``(mask, reinterpreted dims inside it)`` of each masked wrapper
    index: Tensor  #: the drawn categories
    logp: Tensor  #: log-masses, ``index.shape + (K,)``, with the gradient path
    num: int  #: ``K``

    @classmethod
    def of(cls, site) -> _SiteView:
        base, reinterpreted, masks = _parts(site["fn"])
        return cls(base, reinterpreted, masks, *_view(base, site["value"]))


def _alternative_values(base, index: Tensor, value: Tensor, num: int, sel: Tensor) -> Tensor:
    """The site's value at each alternative ``(c, k)``: ``index`` with the elements
    of coupled block ``c`` (``sel[c]``) set to ``k``, shape ``(C * K,) + value.shape``."""
    ks = torch.arange(num, device=index.device).view((1, num) + (1,) * index.dim())
    alt = torch.where(sel.unsqueeze(1), ks, index)  # (C, K) + index.shape
    alt = alt.reshape((-1,) + index.shape)
    if isinstance(base, dist.OneHotCategorical):
        return F.one_hot(alt, num).to(value.dtype)
    return alt.to(value.dtype)


def _frames(site) -> dict[int, str]:
    return {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None}


def _later_sites(trace, name):
    """The sample sites after ``name`` in ``trace`` (every site when it has none)."""
    names = [n for n, s in trace.nodes.items() if is_term(s)]
    start = names.index(name) + 1 if name in names else 0
    return [trace.nodes[n] for n in names[start:]]


def _later_latents(trace, routed: list[str]) -> set[str]:
    """The latent guide sites after the first routed one, which the run over the
    alternatives draws again where an alternative changes their distribution."""
    names = [n for n, s in trace.nodes.items() if is_term(s) and not s["is_observed"]]
    first = min((names.index(n) for n in routed if n in names), default=len(names))
    return {n for n in names[first + 1 :] if not trace.nodes[n]["infer"].get("enumerate")}


def _max_plate_nesting(*traces) -> int:
    nesting = 0
    for trace in traces:
        for site in trace.nodes.values():
            if is_term(site):
                nesting = max(nesting, len(site["fn"].batch_shape), *(-d for d in _frames(site)))
    return nesting


def _selector(index: Tensor, batch_ndim: int, split: set[int]) -> Tensor:
    """``sel[c]``: the elements of the index in coupled block ``c``; boolean, shape
    ``(C,) + index.shape``. Elements that differ only in split plate dims share a
    block (they are changed together)."""
    shape = index.shape
    coupled = [i for i in range(index.dim()) if i >= batch_ndim or (i - batch_ndim) not in split]
    view = [shape[i] if i in coupled else 1 for i in range(index.dim())]
    blocks = math.prod(view)
    ids = torch.arange(blocks, device=index.device).reshape(view).expand(shape)
    return ids.unsqueeze(0) == torch.arange(blocks, device=index.device).view(
        (blocks,) + (1,) * index.dim()
    )


class _Plan:
    """One routed site's share of the run over the alternatives: its view, its
    alternatives (``num_alt`` rows from ``start``), the plates that split its terms,
    and the names of the terms that can depend on it (those after it)."""

    def __init__(self, name, site, kl, view, split, sel, alt, guide_scope, model_scope):
        self.name, self.site, self.kl, self.view = name, site, kl, view
        self.split, self.sel, self.alt = split, sel, alt
        self.guide_scope, self.model_scope = guide_scope, model_scope
        self.num_alt = alt.size(0)
        self.start = 0

    @classmethod
    def of(cls, name, site, kl, nesting, guide_trace, model_trace) -> _Plan:
        view = _SiteView.of(site)
        batch_ndim = view.index.dim() - view.reinterpreted
        if batch_ndim > nesting:
            raise ValueError(
                f"site {name!r} has {batch_ndim} batch dims but max_plate_nesting={nesting}"
            )
        guide_later = _later_sites(guide_trace, name)
        model_later = _later_sites(model_trace, name)
        split = {
            dim
            for dim, plate in _frames(site).items()
            if all(plate in _frames(s).values() for s in guide_later + model_later)
        }
        sel = _selector(view.index, batch_ndim, split)
        alt = _alternative_values(view.base, view.index, site["value"], view.num, sel)
        alt = alt.reshape(alt.shape[:1] + (1,) * (nesting - batch_ndim) + alt.shape[1:])
        guide_scope = {s["name"] for s in guide_later} | {name}
        model_scope = {s["name"] for s in model_later} | {name}
        return cls(name, site, kl, view, split, sel, alt, guide_scope, model_scope)

    def stacked(self, rows: int) -> Tensor:
        """The site's value in the joint run: its alternatives in its own rows, the
        draw in every other site's rows."""
        value, alt = self.site["value"], self.alt
        drawn = value.reshape((1,) * (alt.dim() - value.dim()) + value.shape)
        before = drawn.expand((self.start,) + alt.shape[1:])
        after = drawn.expand((rows - self.start - self.num_alt,) + alt.shape[1:])
        return torch.cat([before, alt, after], 0)


#: What ``compute_log_prob`` / ``compute_score_parts`` and this module add to a site.
_COMPUTED = ("log_prob", "log_prob_sum", "unscaled_log_prob", "score_parts", _KEY)


def _own_terms(plans, rows: int) -> poutine.Trace:
    """The guide's terms over the alternatives for a mean-field guide: a trace of the
    routed sites alone, each with its draw's distribution at its stacked value."""
    trace = poutine.Trace()
    for plan in plans:
        node = {k: v for k, v in plan.site.items() if k not in _COMPUTED}
        node["value"] = plan.stacked(rows)
        trace.add_node(plan.name, **node)
    return trace


def _check_mean_field(plans, alt_guide, rows: int, nesting: int) -> None:
    """Raise where the guide run over the alternatives gives other terms than
    :func:`_own_terms` assumes (``mean_field=True`` for a guide that is not)."""
    own = _own_terms(plans, rows)
    own.compute_log_prob()
    alt_guide.compute_log_prob()
    for name, site in alt_guide.nodes.items():
        if not is_term(site):
            continue
        log_prob = site["log_prob"]
        if name in own.nodes:
            expected = own.nodes[name]["log_prob"]
        elif log_prob.dim() == nesting + 1 and log_prob.size(0) == rows:
            expected = log_prob[:1]  # a mean-field term is the same for every alternative
        else:
            continue
        expected = expected.expand_as(log_prob)
        if not torch.allclose(log_prob, expected):
            gap = (log_prob - expected).abs().max().item()
            raise ValueError(
                f"TraceILSDiff_ELBO(mean_field=True): the guide's site {name!r} changes with "
                f"the value of a routed site drawn before it (by up to {gap:.3g} in log q), "
                "so the guide is not mean field; use mean_field=False. If the guide is "
                "mean field, it draws randomness outside its sample sites (dynamic "
                "binarization, dropout, a minibatch drawn with torch instead of a "
                "subsampling plate): the run over the alternatives, which replays only the "
                "sample sites, then sees other inputs, and the differences would be wrong "
                "too. Draw that randomness outside the model and guide."
            )


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

    def _analytic(self, name, site, model_trace):
        return site_kl(name, site, model_trace) if self.analytic_kl else None

    def _attach_targets(self, model, guide, args, kwargs, model_trace, guide_trace):
        nesting = self._nesting
        if nesting is None:
            nesting = _max_plate_nesting(model_trace, guide_trace)
        plans = []
        for name, site in list(guide_trace.nodes.items()):
            if site["type"] != "sample" or _KEY not in site["infer"]:
                continue
            kl = self._analytic(name, site, model_trace)
            plans.append(_Plan.of(name, site, kl, nesting, guide_trace, model_trace))
        if not plans:
            return
        with torch.set_grad_enabled(self.rao_blackwellize and torch.is_grad_enabled()):
            results = self._differences(plans, model, guide, args, kwargs, guide_trace, nesting)
        for plan, (d, averaged) in zip(plans, results, strict=True):
            target = self._target(plan.site, d, plan.view, plan.kl)
            plan.site[_KEY] = {**target, "averaged": averaged}

    # -- the differences ----------------------------------------------------------

    def _differences(
        self, plans, model, guide, args, kwargs, guide_trace, nesting
    ) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """Per routed site, ``d[..., k] = L(z_i = k) - L(z_i)`` per element of its
        index (no gradient), and, with ``rao_blackwellize``, each model term that
        depends on it averaged over its alternatives (with its gradient path; see
        :meth:`_averaged`).

        The alternatives of every site are stacked along one dim: rows
        ``plan.start : plan.start + M`` hold the site's ``M`` alternatives while every
        other site keeps its draw, so that one run of the guide and one of the model
        serve all sites."""
        rows = 0
        for plan in plans:
            plan.start, rows = rows, rows + plan.num_alt
        # The same minibatch as the draw's: the subsample sites are put back.
        replaced = _with_subsamples(guide_trace, self._subsamples)
        for plan in plans:
            replaced.nodes[plan.name] = {**plan.site, "value": plan.stacked(rows)}
        routed = [plan.name for plan in plans]
        if self.mean_field and self._mean_field_checked:
            alt_guide = _own_terms(plans, rows)
            alt_guide.compute_log_prob()
        else:
            redraw = Redraw(guide_trace, _later_latents(guide_trace, routed), {
                plan.name: (plan.start, plan.start + plan.num_alt) for plan in plans
            }, nesting)  # fmt: skip
            # The guide's terms enter the differences only, never the surrogate; its
            # graph is kept (not checkpointed) only through the later sites drawn again,
            # whose values carry their path to the guide's parameters into the
            # Rao-Blackwellized model terms.
            alt_guide = run_over_rows(
                guide, replaced, routed, rows, nesting, self.chunk_size, args, kwargs, redraw,
                checkpointed=False,
            )  # fmt: skip
            # The later sites drawn again under each alternative (a structured guide).
            for name in sorted(redraw.changed):
                node = replaced.nodes[name]
                replaced.nodes[name] = {**node, "value": alt_guide.nodes[name]["value"]}
                if name not in routed:
                    routed.append(name)
        # The model replays the values only: the guide's draws, the routed sites'
        # alternatives and the later sites drawn again, as ``replaced`` holds them.
        alt_model = run_over_rows(
            model, replaced, routed, rows, nesting, self.chunk_size, args, kwargs
        )
        if self.mean_field and not self._mean_field_checked:
            _check_mean_field(plans, alt_guide, rows, nesting)
            self._mean_field_checked = True
        return [self._site_differences(plan, alt_guide, alt_model, rows, nesting) for plan in plans]

    def _site_differences(self, plan, alt_guide, alt_model, rows, nesting):
        index, num, sel = plan.view.index, plan.view.num, plan.sel
        batch_ndim = index.dim() - plan.view.reinterpreted

        def per_block(reduced: Tensor) -> Tensor:
            # (C * K, 1.., kept plate dims) -> (C, K) + a shape that broadcasts with index
            out = reduced.reshape((sel.size(0), num) + reduced.shape[1:])
            out = out.reshape(out.shape[:2] + out.shape[2 + nesting - batch_ndim :])
            return out.reshape(out.shape + (1,) * plan.view.reinterpreted)

        total = torch.zeros((plan.num_alt,) + (1,) * nesting, device=index.device)
        averaged = {}
        for trace, sign, scope in (
            (alt_guide, 1.0, plan.guide_scope),
            (alt_model, -1.0, plan.model_scope),
        ):
            for other, term in trace.nodes.items():
                if other not in scope or not is_term(term):
                    continue
                if plan.kl is not None and other == plan.name:
                    continue
                reduced = self._reduce(term, plan, rows, nesting)
                if reduced is None:
                    continue
                fixed = reduced.detach()
                total = total.to(fixed.dtype) + sign * fixed
                if sign < 0 and self.rao_blackwellize and reduced.requires_grad:
                    if bool((fixed == fixed[:1]).all()):
                        continue  # the same for every alternative: nothing to average
                    averaged[other] = self._averaged(per_block(reduced), sel, plan.view.logp)
        per_element = (sel.unsqueeze(1) * per_block(total)).sum(0).movedim(0, -1)
        return per_element - per_element.gather(-1, index.unsqueeze(-1)), averaged

    @staticmethod
    def _reduce(term, plan, rows, nesting) -> Tensor | None:
        """A term's log-probability at the site's alternatives, summed over every dim
        but the alternatives' and the site's split plates: ``(M,) + (1 or plate size,)
        * nesting``; ``None`` when it depends on no site's alternatives."""
        log_prob = term["log_prob"]
        if not isinstance(log_prob, Tensor) or log_prob.dim() <= nesting:
            return None
        if log_prob.dim() > nesting + 1:
            raise ValueError(
                f"site {term['name']!r} has a log-probability of shape {tuple(log_prob.shape)}: "
                f"more dims than max_plate_nesting={nesting} + 1"
            )
        if log_prob.size(0) != rows:
            return None
        log_prob = log_prob[plan.start : plan.start + plan.num_alt]
        frames = _frames(term)
        for dim in range(-nesting, 0):
            if dim in plan.split:
                if dim not in frames:
                    raise ValueError(
                        f"site {term['name']!r} depends on {plan.name!r} but is outside its "
                        f"plate at dim {dim}; pass a larger max_plate_nesting or check the plates"
                    )
                continue
            log_prob = log_prob.sum(dim, keepdim=True)
        return log_prob

    @staticmethod
    def _averaged(term: Tensor, sel: Tensor, logp: Tensor) -> Tensor:
        r"""A model term's log-probability averaged over the site's alternatives:
        :math:`\frac1C \sum_c \sum_k q(z_{c} = k)\, \log p_{\mathrm{term}}(z_{c} = k,
        z_{-c})`, with ``term`` of shape ``(C, K) + ...`` (summed over its coupled
        dims) and ``q`` the guide's masses held fixed. For each block ``c`` the sum
        over ``k`` is the conditional expectation of the term given the other draws,
        so the average is an unbiased, lower-variance stand-in for the term at the
        draw (Rao-Blackwellization) for the gradient of everything but ``q``."""
        q = logp.detach().exp().movedim(-1, 0)  # (K,) + index.shape
        weighted = (sel.unsqueeze(1) * q.unsqueeze(0)).to(term.dtype) * term
        return weighted.sum() / sel.size(0)

    # -- the target ---------------------------------------------------------------

    def _target(self, site, d: Tensor, view: _SiteView, kl) -> dict:
        """The target, the draw's weight divided by the step, the support and the KL;
        ``logp`` (with its gradient path) is kept for the surrogate."""
        _, reinterpreted, masks, index, logp, num = view
        options = site["infer"][_KEY]
        weight = torch.ones(index.shape, dtype=d.dtype, device=d.device)
        tail = (1,) * reinterpreted
        scale = torch.as_tensor(site["scale"], dtype=d.dtype, device=d.device)
        weight = weight * scale.reshape(scale.shape + tail) if scale.dim() else weight * scale
        if site["mask"] is not None and not isinstance(site["mask"], bool):
            mask = site["mask"].to(d.dtype)
            weight = weight * mask.reshape(mask.shape + tail)
        elif site["mask"] is False:
            weight = weight * 0
        for mask, inner in masks:
            mask = torch.as_tensor(mask, device=d.device).to(d.dtype)
            weight = weight * mask.reshape(mask.shape + (1,) * inner)
        with torch.no_grad():
            support = logp > -torch.inf
            g = finite(d) / torch.where(weight != 0, weight, torch.ones_like(weight)).unsqueeze(-1)
            g = g.masked_fill(~support, 0.0)
            z = F.one_hot(index, num).to(d.dtype)
            all_supported = bool(support.all())
            if options["step_size"] == 0:
                # The small-step limit of (pi - pi_D) / c: pi * (g - <pi, g>), entered as
                # a zero-sum "target" t whose surrogate t . log pi has the gradient t.
                pi = logp.detach().exp().masked_fill(~support, 0.0)
                target = -pi * (g - (pi * g).sum(-1, keepdim=True))
            else:
                target = intermediate_target(
                    z,
                    g,
                    options["step_size"],
                    options["projection"],
                    None if all_supported else support,
                    logp.detach(),
                )
        # The gradient of KL(pi_D || pi) / c: c sets how far the target moves, not the
        # size of the gradient (see the module docstring); the limit is not divided.
        scaled = weight / (options["step_size"] or 1.0)
        return {"target": target, "weight": scaled, "support": support, "kl": kl, "logp": logp}

    # -- the surrogate ------------------------------------------------------------

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        routed = {
            name: site[_KEY]
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and _KEY in site
        }
        averaged: dict[str, list[Tensor]] = {}
        for r in routed.values():
            for term, value in r["averaged"].items():
                averaged.setdefault(term, []).append(value)
        # Sites drawn by an ILS distribution (the default's midpoint sites) get the
        # analytic KL too, unless their model term depends on a routed site.
        kls = {}
        if self.analytic_kl:
            kls = ils_site_kls(model_trace, guide_trace, skip=set(routed) | set(averaged))
        analytic = {name for name, r in routed.items() if r["kl"] is not None} | set(kls)
        elbo, surrogate = 0.0, 0.0
        log_r = LogRatio(model_trace, guide_trace)
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            elbo = elbo + torch_item(site["log_prob_sum"])
            if name in analytic:
                continue
            if name in averaged:
                # Rao-Blackwellized: the mean of the term's averages over each routed
                # site it depends on (each one unbiased for the term at the draw).
                surrogate = surrogate + sum(averaged[name]) / len(averaged[name])
            else:
                surrogate = surrogate + site["log_prob_sum"]
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample":
                continue
            elbo = elbo - torch_item(site["log_prob_sum"])
            if name in routed:
                r = routed[name]
                if r["kl"] is not None:
                    surrogate = surrogate - r["kl"]
                logp = r["logp"]
                cross = torch.where(r["support"], r["target"] * logp, torch.zeros_like(logp))
                surrogate = surrogate + (r["weight"] * cross.sum(-1)).sum()
                continue
            if name in kls:
                surrogate = surrogate - kls[name]
                continue
            surrogate = surrogate + guide_site_surrogate(site, log_r)
        return -elbo, -surrogate
