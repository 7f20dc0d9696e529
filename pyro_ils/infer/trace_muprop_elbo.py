r"""MuProp as a Pyro ELBO.

Gu, Levine, Sutskever and Mnih (2016), "MuProp: Unbiased backpropagation for
stochastic neural networks", ICLR.

Write :math:`f(z) = \log p_\theta(x, z) - \log q_\phi(z)` as a function of the
values :math:`z = (z_1, \dots, z_n)` of the guide's discrete sites (in the order
the guide samples them). MuProp's control variate is the first-order Taylor
expansion of :math:`f` around a deterministic *mean-field* point :math:`\bar\mu`,

.. math::

    h(z) = f(\bar\mu) + \sum_j f'_j(\bar\mu)^\top (z_j - \bar\mu_j),

where :math:`\bar\mu` comes from a deterministic pass of the guide that puts, at
each latent site, the mean of its distribution given the values already placed
(for one-hot and Bernoulli sites the probabilities :math:`\pi`; for other sites
their ``mean``), and :math:`f'_j = \partial f / \partial z_j` at that point (one
backward pass). Because :math:`h` is linear in :math:`z_i`, its score-function
term has a closed form, and the estimator is

.. math::

    \hat g = \sum_i \Bigl[ \bigl(f(z) - h_i(z)\bigr) \nabla_\phi \log q_\phi(z_i \mid z_{<i})
        + f'_i(\bar\mu)^\top \nabla_\phi \mu_i(z_{<i}) \Bigr]
        + \nabla^{\mathrm{path}} f(z),

with :math:`\mu_i(z_{<i}) = E_q[z_i \mid z_{<i}]` the site's mean at the sampled
parents, and :math:`h_i = f(\bar\mu) + \sum_{j \le i} f'_j(\bar\mu)^\top (z_j -
\bar\mu_j)`. For a guide whose discrete sites are independent (one stochastic
layer, the case of the paper's estimator, where :math:`\mu = \bar\mu` and
:math:`\sum_i f'_i{}^\top \nabla \mu_i = f'(\mu)^\top \nabla \mu`), passing
``independent_sites=True`` uses the full expansion :math:`h_i = h` for every
site, which removes more variance. The restriction to :math:`j \le i` keeps the
estimator unbiased when later sites depend on earlier ones: :math:`h_i` is then
linear in :math:`z_i` given :math:`z_{<i}`, so
:math:`E[h_i \nabla \log q(z_i \mid z_{<i}) \mid z_{<i}] = f'_i{}^\top \nabla \mu_i`.
(For multi-layer networks Gu et al. re-expand around each layer's mean given its
sampled parents, one mean-field pass per layer; this implementation does one.)
Costs are Rao-Blackwellized over plates as in :class:`~pyro.infer.Trace_ELBO`.

**Requirement (relaxed values).** :math:`f` is evaluated at :math:`\bar\mu`, a
point inside the simplex (or the unit cube), by running the guide and the model
with those values at the discrete sites (validation off) and differentiating it
with respect to them. So the guide's non-reparameterized sites must be
``OneHotCategorical`` or ``Bernoulli`` (possibly ``.to_event``, ``.expand``,
``.mask``), and the model and guide must use their values in differentiable
arithmetic (``z @ table``, ``b * x``), not as indices or in comparisons. An
integer ``Categorical`` site raises ``ValueError``. The log-mass is extended
linearly, :math:`\log q(v) = \langle v, \log \pi\rangle` and
:math:`v \log p + (1 - v)\log(1 - p)`, which is what the expansion uses; where
the code uses a value non-differentiably, :math:`f'` misses that dependence and
the estimator stays unbiased but loses its variance reduction.

**Cost:** 2 evaluations of the model and guide per particle (the sampled one and
the mean-field one) plus one extra backward pass (for :math:`f'(\bar\mu)`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.distributions.util import is_identically_zero, sum_rightmost
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import MultiFrameTensor, get_plate_stacks
from torch import Tensor

from pyro_ils.infer.multi_eval import (
    Particle,
    SurrogateLossMixin,
    discrete_site_kind,
    elbo_value,
    iter_particles,
    log_ratio,
    mft_total,
    pathwise_surrogate,
    reduce_like_log_prob,
    run_relaxed,
    score_sites,
)

__all__ = ["TraceMuProp_ELBO"]


class TraceMuProp_ELBO(SurrogateLossMixin, Trace_ELBO):
    r"""MuProp (Gu, Levine, Sutskever and Mnih 2016, "MuProp: Unbiased
    backpropagation for stochastic neural networks"): the score-function
    estimator with a first-order Taylor expansion of the objective around the
    mean-field value as its control variate. See the module docstring.

    Supported guide sites: non-reparameterized ``OneHotCategorical`` and
    ``Bernoulli`` sites whose values the model and guide use in differentiable
    arithmetic; reparameterized sites get their pathwise gradient. Other
    non-reparameterized sites (e.g. integer ``Categorical``) raise ``ValueError``.
    ``loss`` is the negated mean ELBO of the sampled particles.

    **Cost:** 2 objective evaluations and one extra backward pass per particle.

    :param bool independent_sites: declare that the guide's discrete sites are
        mutually independent (given the data); each site's control variate then
        uses the expansion in all sites, as in the paper's single-layer
        estimator. If the declaration is false the estimator is biased; the
        default (``False``) is unbiased for any guide.
    :param elbo_kwargs: passed to :class:`~pyro.infer.Trace_ELBO`
        (``num_particles``, ``max_plate_nesting``, ``vectorize_particles``, ...).
    """

    def __init__(self, independent_sites: bool = False, **elbo_kwargs) -> None:
        super().__init__(**elbo_kwargs)
        self.independent_sites = bool(independent_sites)

    # one particle ------------------------------------------------------------
    def _particle(self, particle: Particle, args, kwargs) -> Tensor | float:
        mt, gt = particle.model_trace, particle.guide_trace
        surrogate = pathwise_surrogate(mt, gt)
        sites = score_sites(gt, estimator=type(self).__name__)
        if not sites:
            return surrogate

        # the mean-field pass: at each latent site the mean given the values placed
        leaves: dict[str, Tensor] = {}

        def mean_field_value(msg: dict) -> Tensor:
            fn, name = msg["fn"], msg["name"]
            if discrete_site_kind(fn) is not None:
                leaf = fn.mean.detach().requires_grad_()
                leaves[name] = leaf
                return leaf
            try:
                mean = fn.mean.detach()
            except NotImplementedError:
                mean = None
            if mean is None or not torch.isfinite(mean).all():
                raise ValueError(
                    f"TraceMuProp_ELBO needs a finite mean at latent site '{name}' "
                    f"({type(fn).__name__}) for its mean-field pass"
                )
            return mean

        with torch.enable_grad():
            mf_model, mf_guide = run_relaxed(particle, mean_field_value, args, kwargs)
            mf_log_r = log_ratio(mf_model, mf_guide)
            names = [name for name, _ in sites]
            missing = [name for name in names if name not in leaves]
            if missing:
                raise ValueError(f"sites {missing} were not sampled in the mean-field pass")
            total = mft_total(mf_log_r)
            derivs = torch.autograd.grad(
                total, [leaves[n] for n in names], allow_unused=True, materialize_grads=True
            )
        slopes = dict(zip(names, derivs, strict=True))

        # the control variate, site by site, keyed by plates
        stacks = get_plate_stacks(gt)
        expansion = MultiFrameTensor(*((k, v.detach()) for k, v in mf_log_r.items()))
        linear_terms = []
        for name, site in sites:
            delta = site["value"].detach() - leaves[name].detach()
            term = sum_rightmost(slopes[name] * delta, site["fn"].event_dim)
            linear_terms.append((stacks[name], term))
        if self.independent_sites:
            expansion.add(*linear_terms)

        log_r = _compute_log_r(mt, gt)
        for i, (name, site) in enumerate(sites):
            if not self.independent_sites:
                expansion.add(linear_terms[i])  # h_i: terms of the sites j <= i
            stack = site["cond_indep_stack"]
            cost = log_r.sum_to(stack) - expansion.sum_to(stack)
            score = site["score_parts"].score_function
            surrogate = surrogate + (cost * score).sum()
            # E[f'_i . z_i | parents] = f'_i . mu_i: its gradient, in closed form
            analytic = reduce_like_log_prob(site["fn"], slopes[name] * site["fn"].mean)
            if not is_identically_zero(analytic):
                surrogate = surrogate + analytic.sum()
        return surrogate

    def _loss_and_surrogate(self, model: Callable, guide: Callable, args, kwargs):
        loss = 0.0
        surrogate: Tensor | float = 0.0
        for particle in iter_particles(self, model, guide, args, kwargs):
            loss = loss - elbo_value(particle.model_trace, particle.guide_trace)
            surrogate = surrogate + self._particle(particle, args, kwargs)
        return loss / self.num_particles, -surrogate / self.num_particles
