"""The alternatives of :class:`~pyro_ils.TraceILSDiff_ELBO`: one more run of the guide
and the model over every routed site's alternatives, and what the ELBO takes from it.

Per routed site (a :class:`~pyro_ils.infer.ils_diff_plan._Plan`), :func:`differences`
gives the exact differences ``d[..., k] = L(z_i = k) - L(z_i)`` of each element of the
draw and, with ``rao_blackwellize``, each model term that depends on the site averaged
over its alternatives (see :mod:`pyro_ils.infer.trace_ils_diff_elbo` for the math).
The runs themselves, in chunks, are :func:`~pyro_ils.infer.alternatives.run_over_rows`'.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor

from pyro_ils.infer.alternatives import Redraw, is_term, run_over_rows
from pyro_ils.infer.ils_diff_plan import _KEY, _frames, _later_latents


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


#: What ``compute_log_prob`` / ``compute_score_parts`` and the ELBO add to a site.
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


def differences(
    plans,
    model,
    guide,
    args,
    kwargs,
    guide_trace,
    nesting: int,
    subsamples: _SubsampleRecorder,
    chunk_size: int | None,
    rao_blackwellize: bool,
    mean_field: str | None = None,
) -> list[tuple[Tensor, dict[str, Tensor]]]:
    """Per routed site, ``d[..., k] = L(z_i = k) - L(z_i)`` per element of its
    index (no gradient), and, with ``rao_blackwellize``, each model term that
    depends on it averaged over its alternatives (with its gradient path; see
    :func:`_averaged`).

    ``mean_field``: ``None``, the guide is run over the alternatives; ``"check"``, it
    is run and :func:`_check_mean_field` raises where it is not mean field;
    ``"assume"``, it is not run (:func:`_own_terms`).

    The alternatives of every site are stacked along one dim: rows
    ``plan.start : plan.start + M`` hold the site's ``M`` alternatives while every
    other site keeps its draw, so that one run of the guide and one of the model
    serve all sites."""
    rows = 0
    for plan in plans:
        plan.start, rows = rows, rows + plan.num_alt
    # The same minibatch as the draw's: the subsample sites are put back.
    replaced = _with_subsamples(guide_trace, subsamples)
    for plan in plans:
        replaced.nodes[plan.name] = {**plan.site, "value": plan.stacked(rows)}
    routed = [plan.name for plan in plans]
    if mean_field == "assume":
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
            guide, replaced, routed, rows, nesting, chunk_size, args, kwargs, redraw,
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
    alt_model = run_over_rows(model, replaced, routed, rows, nesting, chunk_size, args, kwargs)
    if mean_field == "check":
        _check_mean_field(plans, alt_guide, rows, nesting)
    return [
        _site_differences(plan, alt_guide, alt_model, rows, nesting, rao_blackwellize)
        for plan in plans
    ]


def _site_differences(plan, alt_guide, alt_model, rows, nesting, rao_blackwellize: bool):
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
            reduced = _reduce(term, plan, rows, nesting)
            if reduced is None:
                continue
            fixed = reduced.detach()
            total = total.to(fixed.dtype) + sign * fixed
            if sign < 0 and rao_blackwellize and reduced.requires_grad:
                if bool((fixed == fixed[:1]).all()):
                    continue  # the same for every alternative: nothing to average
                averaged[other] = _averaged(per_block(reduced), sel, plan.view.logp)
    per_element = (sel.unsqueeze(1) * per_block(total)).sum(0).movedim(0, -1)
    return per_element - per_element.gather(-1, index.unsqueeze(-1)), averaged


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
