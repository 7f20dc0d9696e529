r"""The surrogate of :class:`~pyro_ils.TraceILSDiff_ELBO`: from each routed site's exact
differences ``d`` to its ILS target, and the surrogate loss whose gradient carries it.

The target of a draw of weight ``w`` is built as the ILS backward builds it, from the
signal per unit weight ``g = d / w`` (:mod:`pyro_ils.ops.draw_signal`):
:math:`\pi_D = h(z - c\, d / w)`. The surrogate term :math:`\frac{w}{c} \langle \pi_D,
\log \pi \rangle`, with the target held fixed, gives the logits :math:`\frac{w}{c} (\pi
- \pi_D)` (see :mod:`pyro_ils.infer.trace_ils_diff_elbo` for the math).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.infer.util import torch_item
from torch import Tensor

from pyro_ils.infer.ils_diff_plan import _KEY, _SiteView
from pyro_ils.infer.ils_elbo import LogRatio, guide_site_surrogate, ils_site_kls
from pyro_ils.ops.draw_signal import per_draw_signal
from pyro_ils.ops.projections import intermediate_target


def draw_weight(site, view: _SiteView, dtype: torch.dtype, device) -> Tensor:
    """The weight ``w`` that the loss puts on each element of the site's draw (shape
    ``view.index.shape``): the site's scale and mask, and the masks of its
    distribution's masked wrappers, each broadcast over the ``.to_event`` dims."""
    weight = torch.ones(view.index.shape, dtype=dtype, device=device)
    tail = (1,) * view.reinterpreted
    scale = torch.as_tensor(site["scale"], dtype=dtype, device=device)
    weight = weight * scale.reshape(scale.shape + tail) if scale.dim() else weight * scale
    if site["mask"] is not None and not isinstance(site["mask"], bool):
        mask = site["mask"].to(dtype)
        weight = weight * mask.reshape(mask.shape + tail)
    elif site["mask"] is False:
        weight = weight * 0
    for mask, inner in view.masks:
        mask = torch.as_tensor(mask, device=device).to(dtype)
        weight = weight * mask.reshape(mask.shape + (1,) * inner)
    return weight


def site_target(site, d: Tensor, view: _SiteView, kl) -> dict:
    """The target, the draw's weight divided by the step, the support and the KL;
    ``logp`` (with its gradient path) is kept for the surrogate."""
    options = site["infer"][_KEY]
    weight = draw_weight(site, view, d.dtype, d.device)
    logp = view.logp
    with torch.no_grad():
        support = logp > -torch.inf
        # ``None`` where every category is in the support, as the ILS draws pass it.
        kept = None if bool(support.all()) else support
        g = per_draw_signal(d, weight, kept)
        if options["step_size"] == 0:
            # The small-step limit of (pi - pi_D) / c: pi * (g - <pi, g>), entered as
            # a zero-sum "target" t whose surrogate t . log pi has the gradient t.
            pi = logp.detach().exp().masked_fill(~support, 0.0)
            target = -pi * (g - (pi * g).sum(-1, keepdim=True))
        else:
            z = F.one_hot(view.index, view.num).to(d.dtype)
            step_size, projection = options["step_size"], options["projection"]
            target = intermediate_target(z, g, step_size, projection, kept, logp.detach())
    # The gradient of KL(pi_D || pi) / c: c sets how far the target moves, not the
    # size of the gradient (see pyro_ils.infer.trace_ils_diff_elbo); the limit is not divided.
    scaled = weight / (options["step_size"] or 1.0)
    return {"target": target, "weight": scaled, "support": support, "kl": kl, "logp": logp}


def surrogate_loss(model_trace, guide_trace, analytic_kl: bool):
    """``(loss, surrogate loss)`` of one particle, as ``Trace_ELBO``'s
    ``_differentiable_loss_particle``: the routed sites' target terms, their analytic
    KLs, and the Rao-Blackwellized model terms in place of the terms at the draw."""
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
    if analytic_kl:
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
