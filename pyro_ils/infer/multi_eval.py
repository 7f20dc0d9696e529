r"""What the multi-evaluation estimators (RLOO, MuProp, REBAR, RELAX) share.

* :func:`discrete_site_kind` tells which guide sites are scored by the score
  function and whether a *relaxed* (continuous) value can stand in for their draw
  (``OneHotCategorical`` and ``Bernoulli``, possibly wrapped by ``Independent``,
  ``ExpandedDistribution`` or ``MaskedDistribution``);
* :func:`relaxed_log_prob` is the log-mass extended linearly to relaxed values.
  For a one-hot site it is :math:`\langle v, \log\pi\rangle`, for a Bernoulli site
  :math:`v \log p + (1 - v) \log(1 - p)`; both equal the log-mass at the vertices.
  (``torch``'s ``OneHotCategorical.log_prob`` takes the ``argmax`` of its value,
  so it is piecewise constant in a relaxed value and cannot be used here.)
* :func:`iter_particles` runs Pyro's own ``_get_trace`` once per particle (or once,
  vectorized) and also returns the unpruned guide trace, whose plate subsample
  indices the extra evaluations replay;
* :func:`run_relaxed` evaluates the model and guide again with other values
  (relaxed, or means) at the guide's latent sites, validation off;
* :func:`log_ratio` is the objective :math:`f = \log p(x, z) - \log q(z)` of one
  evaluation as a :class:`~pyro.infer.util.MultiFrameTensor`, so that each site's
  cost is Rao-Blackwellized over its plates exactly as in
  :class:`~pyro.infer.Trace_ELBO`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.distributions.util import is_identically_zero, scale_and_mask, sum_rightmost
from pyro.infer.util import MultiFrameTensor, get_plate_stacks, torch_item
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import warn_if_nan
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, OneHotCategorical

from pyro_ils.distributions.util import base_of, wrappers
from pyro_ils.ops.softmax import softmax

__all__ = [
    "ONEHOT",
    "BERNOULLI",
    "Particle",
    "discrete_site_kind",
    "score_sites",
    "relaxed_elementwise_log_prob",
    "reduce_like_log_prob",
    "relaxed_log_prob",
    "site_logits",
    "site_mean",
    "score_mask",
    "iter_particles",
    "run_relaxed",
    "log_ratio",
    "pathwise_surrogate",
    "elbo_value",
]

ONEHOT = "onehot"
BERNOULLI = "bernoulli"


def discrete_site_kind(fn: Distribution) -> str | None:
    """``"onehot"`` or ``"bernoulli"`` if ``fn`` (unwrapped) is one of the two
    families whose draw can be replaced by a relaxed value, else ``None``."""
    base = base_of(fn)
    if isinstance(base, OneHotCategorical):
        return ONEHOT
    if isinstance(base, Bernoulli):
        return BERNOULLI
    return None


def _require_relaxable(name: str, fn: Distribution, estimator: str) -> str:
    kind = discrete_site_kind(fn)
    if kind is not None:
        return kind
    base = base_of(fn)
    if isinstance(base, Categorical):
        raise ValueError(
            f"{estimator} cannot handle the integer Categorical site '{name}': it evaluates the "
            "objective at relaxed (continuous) values of the discrete sites, which an integer "
            "index cannot hold. Use dist.OneHotCategorical at this site (in model and guide) and "
            "use its value in differentiable arithmetic (e.g. z @ table instead of table[z])."
        )
    raise ValueError(
        f"{estimator} supports non-reparameterized guide sites of type OneHotCategorical or "
        f"Bernoulli only; site '{name}' has {type(base).__name__}."
    )


def score_sites(guide_trace: Trace, estimator: str | None = None) -> list[tuple[str, dict]]:
    """The guide's sample sites that Pyro scores by the score function (not
    reparameterized, not observed), in execution order. With ``estimator`` given,
    each must be a relaxable site (else ``ValueError`` naming the estimator)."""
    out = []
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        if is_identically_zero(site["score_parts"].score_function):
            continue
        if estimator is not None:
            _require_relaxable(name, site["fn"], estimator)
        out.append((name, site))
    return out


def relaxed_elementwise_log_prob(kind: str, value: Tensor, logits: Tensor) -> Tensor:
    r"""The log-mass of each entry, linear in ``value``: ``value * log_softmax(logits)``
    for one-hot sites (summed over the last dim by :func:`reduce_like_log_prob`),
    ``value * logits - softplus(logits)`` for Bernoulli sites."""
    if kind == ONEHOT:
        logp = torch.log_softmax(logits, dim=-1)
        logp = logp.clamp(min=torch.finfo(logp.dtype).min)  # 0 * -inf would be nan
        return value * logp
    return value * logits - F.softplus(logits)


def reduce_like_log_prob(fn: Distribution, elementwise: Tensor) -> Tensor:
    """Reduce a value-shaped tensor the way ``fn.log_prob`` reduces its base's
    per-entry terms: sum the base event dims and the ``Independent`` dims, and zero
    what a ``MaskedDistribution`` masks out. The result has ``fn``'s batch shape."""
    chain, base = wrappers(fn)
    out = sum_rightmost(elementwise, len(base.event_shape))
    for wrapper in reversed(chain):
        if isinstance(wrapper, Independent):
            out = sum_rightmost(out, wrapper.reinterpreted_batch_ndims)
        elif isinstance(wrapper, MaskedDistribution) and wrapper._mask is False:
            out = torch.zeros_like(out)
        elif isinstance(wrapper, MaskedDistribution) and wrapper._mask is not True:
            out = scale_and_mask(out, mask=wrapper._mask)
    return out


def site_logits(fn: Distribution, value: Tensor) -> Tensor:
    """The base distribution's logits, expanded to the shape of ``value`` (one
    logit per entry of the draw), differentiable w.r.t. the guide's parameters."""
    logits = base_of(fn).logits
    return logits.expand(torch.broadcast_shapes(logits.shape, value.shape))


def site_mean(kind: str, logits: Tensor) -> Tensor:
    """:math:`E_q[z]` as a function of the logits: softmax or sigmoid."""
    return softmax(logits) if kind == ONEHOT else torch.sigmoid(logits)


def relaxed_log_prob(fn: Distribution, value: Tensor) -> Tensor:
    """``fn.log_prob(value)``, extended linearly in ``value`` for one-hot and
    Bernoulli sites so that it accepts (and is differentiable at) relaxed values."""
    kind = discrete_site_kind(fn)
    if kind is None:
        return fn.log_prob(value)
    elementwise = relaxed_elementwise_log_prob(kind, value, site_logits(fn, value))
    return reduce_like_log_prob(fn, elementwise)


def score_mask(fn: Distribution, value: Tensor) -> Tensor:
    """Per-entry weight (value-shaped, 0 or 1) that Pyro's ``score_function`` term
    gives a draw's entries: the ``MaskedDistribution`` masks (Pyro neither scales
    nor masks the score function by the site's ``scale``/``mask``)."""
    ones = torch.ones(value.shape, dtype=value.dtype, device=value.device, requires_grad=True)
    with torch.enable_grad():
        out = reduce_like_log_prob(fn, ones).sum()
        if not out.requires_grad:  # everything masked out
            return torch.zeros_like(value)
        (weight,) = torch.autograd.grad(out, ones)
    return weight


@dataclass
class Particle:
    """One particle (or one vectorized batch of particles) of an ELBO step."""

    model: Callable
    guide: Callable
    model_trace: Trace
    guide_trace: Trace
    raw_guide_trace: Trace


def iter_particles(
    elbo: Any,
    model: Callable,
    guide: Callable,
    args,
    kwargs,
    wrap_guide: Callable[[Callable], Callable] | None = None,
) -> Iterator[Particle]:
    """Like ``ELBO._get_traces`` (same vectorization and the same ``_get_trace``),
    also yielding the callables traced and the guide trace before subsample pruning.

    ``wrap_guide`` (optional) wraps the guide that is traced, *outside* the
    vectorization plate (so that a messenger it adds sees each site's
    distribution with its full batch shape); ``Particle.guide`` stays the
    unwrapped (vectorized) guide, which :func:`run_relaxed` re-runs."""
    if isinstance(poutine.unwrap(guide), Messenger):
        raise NotImplementedError(
            f"{type(elbo).__name__} does not support GuideMessenger guides; use a callable guide."
        )
    if elbo.vectorize_particles:
        if elbo.max_plate_nesting == float("inf"):
            elbo._guess_max_plate_nesting(model, guide, args, kwargs)
        model = elbo._vectorized_num_particles(model)
        guide = elbo._vectorized_num_particles(guide)
        n = 1
    else:
        n = elbo.num_particles
    traced = guide if wrap_guide is None else wrap_guide(guide)
    for _ in range(n):
        recorder = poutine.trace(traced)
        model_trace, guide_trace = elbo._get_trace(model, recorder, args, kwargs)
        yield Particle(model, guide, model_trace, guide_trace, recorder.trace)


class _SetValues(Messenger):
    """At each unobserved latent sample site, use ``value_fn(msg)`` as the value
    (``None``: leave the site alone)."""

    def __init__(self, value_fn: Callable[[dict], Tensor | None]):
        super().__init__()
        self.value_fn = value_fn

    def _pyro_sample(self, msg) -> None:
        if msg["is_observed"] or msg["done"] or site_is_subsample(msg):
            return
        value = self.value_fn(msg)
        if value is not None:
            msg["value"] = value
            msg["done"] = True


def run_relaxed(
    particle: Particle, value_fn: Callable[[dict], Tensor | None], args, kwargs
) -> tuple[Trace, Trace]:
    """Run the particle's guide with ``value_fn`` choosing the latent values (the
    plate subsample indices replayed from the sampled guide trace), then the model
    against it. Validation is off: relaxed values lie outside the discrete support.
    Returns ``(model_trace, guide_trace)``, subsample sites pruned, log-probs not
    computed (use :func:`log_ratio`)."""
    subsample = Trace()
    for name, site in particle.raw_guide_trace.nodes.items():
        if site_is_subsample(site):
            subsample.add_node(name, **site)
    with pyro.validation_enabled(False):
        guide = poutine.replay(_SetValues(value_fn)(particle.guide), trace=subsample)
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model = poutine.replay(particle.model, trace=guide_trace)
        model_trace = poutine.trace(model).get_trace(*args, **kwargs)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def _site_relaxed_log_prob(site: dict) -> Tensor:
    lp = relaxed_log_prob(site["fn"], site["value"])
    return scale_and_mask(lp, site["scale"], site["mask"])


def log_ratio(model_trace: Trace, guide_trace: Trace) -> MultiFrameTensor:
    r""":math:`\log p(x, z) - \log q(z)` of a (relaxed) evaluation, site by site,
    keyed by plates (the terms of Pyro's ``_compute_log_r``, not detached)."""
    out = MultiFrameTensor()
    stacks = get_plate_stacks(model_trace)
    with pyro.validation_enabled(False):
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            term = _site_relaxed_log_prob(site)
            if not site["is_observed"]:
                term = term - _site_relaxed_log_prob(guide_trace.nodes[name])
            out.add((stacks[name], term))
    return out


def mft_total(mft: MultiFrameTensor) -> Tensor | float:
    """Sum of all entries of a MultiFrameTensor."""
    total = 0.0
    for value in mft.values():
        total = total + value.sum()
    return total


def pathwise_surrogate(model_trace: Trace, guide_trace: Trace) -> Tensor | float:
    """The part of :class:`~pyro.infer.Trace_ELBO`'s surrogate that is not a
    score-function term: every model log-prob and each reparameterized guide
    site's entropy term."""
    out: Tensor | float = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            out = out + site["log_prob_sum"]
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            entropy_term = site["score_parts"].entropy_term
            if not is_identically_zero(entropy_term):
                out = out - entropy_term.sum()
    return out


def elbo_value(model_trace: Trace, guide_trace: Trace) -> float:
    """The ELBO estimate of one particle, ``log p(x, z) - log q(z)`` (a float)."""
    return torch_item(model_trace.log_prob_sum()) - torch_item(guide_trace.log_prob_sum())


def check_finite_float(name: str, value: Any, positive: bool = False) -> float:
    """``value`` as a finite float (positive if asked), else ``ValueError``."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out) or (positive and out <= 0):
        kind = "positive finite" if positive else "finite"
        raise ValueError(f"{name} must be a {kind} number, got {value!r}")
    return out


def check_num_samples(
    elbo: str, num_samples: Any, elbo_kwargs: dict, why: str, hint: str = ""
) -> int:
    """``num_samples`` of the leave-one-out ELBO named ``elbo``: an int >= 2, given in
    place of ``num_particles`` (not in ``elbo_kwargs``), else ``ValueError``. For fewer
    than 2 the message gives ``why`` (in brackets) and ends with ``hint``."""
    if "num_particles" in elbo_kwargs:
        raise ValueError(f"{elbo} takes num_samples, not num_particles")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    if num_samples < 2:
        raise ValueError(f"{elbo} needs num_samples >= 2 ({why}), got {num_samples}{hint}")
    return num_samples


def leave_one_out_mean(values: Tensor, dim: int) -> Tensor:
    """Mean over ``dim`` of all entries but the one at each position."""
    n = values.size(dim)
    return (values.sum(dim, keepdim=True) - values) / (n - 1)


def leave_one_out_sum_to(
    parts: list[MultiFrameTensor], totals: list, s: int, stack, like
) -> Tensor | float:
    """Mean over the particles ``j != s`` of ``parts[j].sum_to(stack)`` (looped particles).

    A particle whose plate layout differs from ``like`` (the value of particle
    ``s`` at that stack) contributes its total ``totals[j]`` instead.
    """
    out: Tensor | float = 0.0
    for j, part in enumerate(parts):
        if j == s:
            continue
        value = part.sum_to(stack)
        same_layout = torch.is_tensor(value) and torch.is_tensor(like)
        if not (same_layout and value.shape == like.shape):
            value = totals[j]  # different plate layout: its total
        out = out + value
    return out / (len(parts) - 1)


class SurrogateLossMixin:
    """``differentiable_loss`` and ``loss_and_grads`` of an ELBO whose
    ``_loss_and_surrogate(model, guide, args, kwargs)`` returns ``(loss, surrogate)``:
    the loss value (a float) and a tensor whose gradient is the estimator's."""

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> Tensor:
        """A tensor whose value is ``loss`` and whose gradient is the estimate."""
        loss, surrogate = self._loss_and_surrogate(model, guide, args, kwargs)
        warn_if_nan(surrogate, "loss")
        return loss + (surrogate - torch_item(surrogate))

    def loss_and_grads(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """Back-propagate the estimate into the parameters; return ``loss``."""
        loss, surrogate = self._loss_and_surrogate(model, guide, args, kwargs)
        if getattr(surrogate, "requires_grad", False):
            surrogate.backward(retain_graph=self.retain_graph)
        warn_if_nan(loss, "loss")
        return loss
