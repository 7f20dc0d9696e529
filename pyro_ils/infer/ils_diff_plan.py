"""The plan of :class:`~pyro_ils.TraceILSDiff_ELBO`: which guide sites get exact
differences, and which alternatives each one is run on.

:class:`_PlainDrawMessenger` marks the routed sites while the guide is traced;
:class:`_Plan` then holds, per routed site, its view (the drawn categories and the
log-masses of all of them), the plates that split its terms, its coupled blocks, its
alternatives' values and the terms that can depend on it (see
:mod:`pyro_ils.infer.trace_ils_diff_elbo` for the math and the scope).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.messenger import Messenger
from torch import Tensor

from pyro_ils.distributions.util import wrappers
from pyro_ils.infer.alternatives import is_term
from pyro_ils.options import check_options, check_projection
from pyro_ils.poutine.routing import (
    DIFF_KEY,
    eligible,
    has_ils_version,
    named_estimator,
    site_options,
    to_plain,
)

_BASE_TYPES = (dist.Categorical, dist.OneHotCategorical, dist.Bernoulli)
_KEY = DIFF_KEY


def check_diff_options(step_size, projection) -> tuple[float, str]:
    """The options of :class:`~pyro_ils.TraceILSDiff_ELBO`: those of ILS, except that
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
        if named_estimator(msg["infer"]) is not None:
            return  # routed through the estimator it names, by the outer ILSMessenger
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


def _parts(fn):
    """``(base, reinterpreted, masks)``: the plain categorical distribution inside
    the wrappers, the number of ``.to_event`` dims, and each mask with the number
    of reinterpreted dims inside it."""
    chain, base = wrappers(fn)
    if not isinstance(base, _BASE_TYPES):
        raise TypeError(f"TraceILSDiff_ELBO cannot differentiate a {type(base).__name__}")
    reinterpreted, masks = 0, []
    for wrapper in chain:
        if isinstance(wrapper, dist.Independent):
            reinterpreted += wrapper.reinterpreted_batch_ndims
        elif isinstance(wrapper, MaskedDistribution):
            masks.append((wrapper._mask, reinterpreted))
    return base, reinterpreted, [(m, reinterpreted - outer) for m, outer in masks]


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
