r"""DisARM, the antithetic estimator for binary latent sites, as a Pyro ELBO.

Dong, Mnih and Tucker (2020), "DisARM: An Antithetic Gradient Estimator for Binary
Latent Variables", NeurIPS.

For a guide :math:`q(b) = \prod_j \mathrm{Bernoulli}(b_j; \sigma(\alpha_j))` and the
ELBO integrand :math:`f(b) = \log p_\theta(x, b) - \log q_\phi(b)`, draw one set of
uniforms :math:`u_j \sim U(0, 1)` and the antithetic pair

.. math::

    b_j = 1[u_j > \sigma(-\alpha_j)], \qquad \tilde b_j = 1[1 - u_j > \sigma(-\alpha_j)],

both distributed as :math:`q`. The estimate of
:math:`\partial E_q[f] / \partial \alpha_j` is

.. math::

    \hat g_j = \tfrac12 \bigl(f(b) - f(\tilde b)\bigr)\, (-1)^{\tilde b_j}\,
    1[b_j \ne \tilde b_j]\, \sigma(|\alpha_j|),

which is ARM (Yin and Zhou 2019) with the augmenting uniforms integrated out given
the pair; it vanishes for every element on which the pair agrees. The chain rule
carries it from the logits to the guide's parameters. Model parameters and
reparameterized guide sites get the pathwise gradient of :math:`f`, averaged over the
pair (each member is a draw from :math:`q`), as :class:`~pyro.infer.Trace_ELBO` gives
it for one draw. As in Pyro's score-function term, the explicit dependence of
:math:`-\log q_\phi(b)` on :math:`\phi` at a fixed draw (zero in expectation) is left out.

**Equivalent estimators.** Dimitriev and Zhou (2021, "ARMS: Antithetic-REINFORCE-
Multi-Sample Gradient for Binary Variables", ICML) show that DisARM is their ARMS
with two samples. Since :math:`(-1)^{\tilde b_j} 1[b_j \ne \tilde b_j] = b_j - \tilde
b_j`, the estimate is :math:`\tfrac12 (f(b) - f(\tilde b)) (b_j - \tilde b_j)
\sigma(|\alpha_j|)`, the form in which U2G (Yin, Ho, Yan, Qian and Zhou 2020,
"Probabilistic Best Subset Selection via Gradient-Based Optimization") states the same
two-sample antithetic estimator, derived independently.

**Rao-Blackwellization over plates.** As in
:class:`~pyro_ils.infer.trace_rloo_elbo.TraceRLOO_ELBO`, the difference
:math:`f(b) - f(\tilde b)` of a site keeps only its own plate elements' terms
(``log_r.sum_to(site["cond_indep_stack"])``): the terms of other plate elements
depend on other uniforms than :math:`u_j`, so their part of :math:`\hat g_j` has
expectation zero, and leaving it out keeps the estimator unbiased.

**Dependencies between sites.** The multi-dimensional formula is for a *factorized*
:math:`q`: the uniforms of every binary element are independent and no guide
site's distribution depends on a binary draw. Sites that are independent given
a parent drawn *before* them (a continuous or a non-scored site, replayed in both
members of the pair) are fine: the estimate is then DisARM conditionally on the
parent. A guide in which a binary draw changes a later site's distribution (a
Bernoulli whose logits depend on another's draw, a hierarchy of stochastic layers, a
continuous site conditioned on :math:`b`) is refused: the second member of the pair is
run with the first member's values at every site but the binary ones, and where any
guide site's log-probability (or a binary site's logits) differs between the two
runs, ``ValueError`` is raised. (The dependence shows only in a step where the
pair differs at the parent; the estimator is wrong for such a guide regardless.)
Use :class:`~pyro_ils.infer.trace_rloo_elbo.TraceRLOO_ELBO` or
:class:`~pyro_ils.TraceILSDiff_ELBO` for structured guides.

**Scope.** Every score-function guide site must be ``Bernoulli`` (possibly inside
``Independent``, ``ExpandedDistribution`` and ``MaskedDistribution``, in plates);
a ``Categorical`` or ``OneHotCategorical`` site raises ``ValueError`` (use
:class:`~pyro_ils.infer.trace_rloo_elbo.TraceRLOO_ELBO` or
:class:`~pyro_ils.infer.trace_indecater_elbo.TraceIndeCateR_ELBO`). The model may use
the binary values in any way (they are exact 0/1 draws). ``vectorize_particles`` is
not supported.

**Cost:** 2 evaluations of the model and guide per pair and one backward pass.

References:
    Dong, Z., Mnih, A. and Tucker, G. (2020). DisARM: An antithetic gradient
    estimator for binary latent variables. NeurIPS.

    Yin, M. and Zhou, M. (2019). ARM: Augment-REINFORCE-merge gradient for
    stochastic binary networks. ICLR.

    Yin, M., Ho, N., Yan, B., Qian, X. and Zhou, M. (2020). Probabilistic best
    subset selection via gradient-based optimization. arXiv:2006.06448.

    Dimitriev, A. and Zhou, M. (2021). ARMS: Antithetic-REINFORCE-multi-sample
    gradient for binary variables. ICML.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, OneHotCategorical

from pyro_ils.distributions.util import base_of
from pyro_ils.infer.multi_eval import (
    Particle,
    SurrogateLossMixin,
    elbo_value,
    iter_particles,
    pathwise_surrogate,
    run_relaxed,
    score_mask,
    score_sites,
    site_logits,
)

__all__ = ["TraceDisARM_ELBO", "disarm_factor"]


class _UniformDraw(Messenger):
    r"""At each latent, non-reparameterized ``Bernoulli`` guide site, draw the uniforms
    :math:`u` (the value's shape) and the value :math:`b = 1[u > \sigma(-\alpha)]`;
    keep :math:`u` and the logits (detached) by site name."""

    def __init__(self) -> None:
        super().__init__()
        self.uniforms: dict[str, Tensor] = {}
        self.logits: dict[str, Tensor] = {}

    def _pyro_sample(self, msg) -> None:
        fn = msg["fn"]
        if msg["is_observed"] or msg["done"] or msg["value"] is not None:
            return
        if site_is_subsample(msg) or msg["infer"].get("enumerate"):
            return
        if fn.has_rsample or not isinstance(base_of(fn), Bernoulli):
            return
        logits = site_logits(fn, torch.empty(fn.shape())).detach()
        u = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device)
        self.uniforms[msg["name"]] = u
        self.logits[msg["name"]] = logits
        msg["value"] = (u > torch.sigmoid(-logits)).to(logits.dtype)
        msg["done"] = True


def disarm_factor(b: Tensor, b_tilde: Tensor, logits: Tensor) -> Tensor:
    r""":math:`(-1)^{\tilde b} 1[b \ne \tilde b]\, \sigma(|\alpha|)`, elementwise: what
    multiplies :math:`\tfrac12 (f(b) - f(\tilde b))` in DisARM's gradient of the logits."""
    sign = 1 - 2 * b_tilde
    return sign * (b != b_tilde).to(logits.dtype) * torch.sigmoid(logits.detach().abs())


def _check_binary(sites) -> None:
    for name, site in sites:
        base = base_of(site["fn"])
        if isinstance(base, Bernoulli):
            continue
        if isinstance(base, Categorical | OneHotCategorical):
            raise ValueError(
                f"TraceDisARM_ELBO is for binary (Bernoulli) sites; site {name!r} is "
                f"{type(base).__name__}. Use TraceRLOO_ELBO or TraceIndeCateR_ELBO for "
                "categorical sites."
            )
        raise ValueError(
            f"TraceDisARM_ELBO supports non-reparameterized Bernoulli guide sites only; "
            f"site {name!r} has {type(base).__name__}."
        )


def _not_factorized(name: str, what: str) -> ValueError:
    return ValueError(
        f"TraceDisARM_ELBO: the guide's site {name!r} {what} when a binary site drawn "
        "before it takes its antithetic value, so the guide is not factorized over its "
        "binary sites and DisARM's formula does not apply. Use TraceRLOO_ELBO or "
        "TraceILSDiff_ELBO for such a guide."
    )


class TraceDisARM_ELBO(SurrogateLossMixin, Trace_ELBO):
    r"""DisARM (Dong, Mnih and Tucker 2020, "DisARM: An Antithetic Gradient Estimator
    for Binary Latent Variables"): per binary element, :math:`\tfrac12 (f(b) - f(\tilde
    b)) (-1)^{\tilde b_j} 1[b_j \ne \tilde b_j] \sigma(|\alpha_j|)` from an antithetic
    pair drawn with one set of uniforms. See the module docstring for the math, the
    assumption of a factorized guide and the scope.

    Supported guides: every non-reparameterized site a ``Bernoulli`` (in wrappers and
    plates), whose distribution depends on no binary draw; reparameterized sites get
    the pathwise gradient averaged over the pair. ``loss`` is the negated ELBO
    estimate of ``num_pairs`` ordinary draws (as :class:`~pyro.infer.Trace_ELBO`);
    ``loss_and_grads`` returns the negated mean over the ``2 * num_pairs`` members.

    **Cost:** ``2 * num_pairs`` objective evaluations per step.

    :param int num_pairs: the number of independent antithetic pairs averaged.
    :param elbo_kwargs: passed to :class:`~pyro.infer.Trace_ELBO`
        (``max_plate_nesting``, ...); ``num_particles`` may not be given (it is
        ``num_pairs``) and ``vectorize_particles`` is not supported.
    """

    def __init__(self, num_pairs: int = 1, **elbo_kwargs) -> None:
        if "num_particles" in elbo_kwargs:
            raise ValueError("TraceDisARM_ELBO takes num_pairs, not num_particles")
        if elbo_kwargs.get("vectorize_particles"):
            raise NotImplementedError("TraceDisARM_ELBO does not support vectorize_particles")
        if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 1:
            raise ValueError(f"num_pairs must be a positive int, got {num_pairs!r}")
        super().__init__(num_particles=num_pairs, **elbo_kwargs)
        self.num_pairs = num_pairs

    def _antithetic_run(self, particle: Particle, draw: _UniformDraw, args, kwargs):
        """The pair's second member: the binary sites at :math:`\\tilde b` (checked to
        have the first member's logits), every other latent guide site replayed."""
        drawn = particle.guide_trace.nodes

        def value_fn(msg: dict) -> Tensor | None:
            name = msg["name"]
            if name in draw.uniforms:
                u = draw.uniforms[name]
                logits = site_logits(msg["fn"], u).detach()
                if logits.shape != u.shape or not torch.allclose(logits, draw.logits[name]):
                    raise _not_factorized(name, "has other logits")
                return (1 - u > torch.sigmoid(-logits)).to(u.dtype)
            return drawn[name]["value"] if name in drawn else None

        model_trace, guide_trace = run_relaxed(particle, value_fn, args, kwargs)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or name in draw.uniforms:
                continue
            first = drawn[name]["log_prob"] if name in drawn else None
            if first is None or not torch.allclose(site["log_prob"], first):
                raise _not_factorized(name, "has another log-probability")
        return model_trace, guide_trace

    def _pair(self, particle: Particle, draw: _UniformDraw, args, kwargs):
        """``(negated ELBO of the two members, surrogate)`` of one antithetic pair."""
        mt, gt = particle.model_trace, particle.guide_trace
        sites = score_sites(gt)
        _check_binary(sites)
        mt2, gt2 = self._antithetic_run(particle, draw, args, kwargs)
        loss = -(elbo_value(mt, gt) + elbo_value(mt2, gt2)) / 2
        surrogate = (pathwise_surrogate(mt, gt) + pathwise_surrogate(mt2, gt2)) / 2
        if not sites:
            return loss, surrogate
        log_r, log_r2 = _compute_log_r(mt, gt), _compute_log_r(mt2, gt2)
        for name, site in sites:
            fn, b = site["fn"], site["value"]
            b2 = gt2.nodes[name]["value"]
            stack = site["cond_indep_stack"]
            half_diff = torch.as_tensor((log_r.sum_to(stack) - log_r2.sum_to(stack)) / 2)
            half_diff = half_diff.reshape(half_diff.shape + (1,) * fn.event_dim)
            logits = site_logits(fn, b)
            with torch.no_grad():
                g = half_diff * disarm_factor(b, b2, logits) * score_mask(fn, b)
            surrogate = surrogate + (g * logits).sum()
        return loss, surrogate

    def _loss_and_surrogate(self, model: Callable, guide: Callable, args, kwargs):
        loss, surrogate = 0.0, 0.0
        draw = _UniformDraw()
        for particle in iter_particles(self, model, guide, args, kwargs, wrap_guide=draw):
            pair_loss, pair_surrogate = self._pair(particle, draw, args, kwargs)
            loss, surrogate = loss + pair_loss, surrogate + pair_surrogate
            draw.uniforms.clear()
            draw.logits.clear()
        return loss / self.num_pairs, -surrogate / self.num_pairs
