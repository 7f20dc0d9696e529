r"""REINFORCE with leave-one-out baselines (RLOO) as a Pyro ELBO.

Kool, van Hoof and Welling (2019), "Buy 4 REINFORCE samples, get a baseline for
free!", ICLR Deep RL meets Structured Prediction workshop.

With :math:`S` particles :math:`z^{(1)}, \dots, z^{(S)} \sim q_\phi` drawn
independently and :math:`f(z) = \log p_\theta(x, z) - \log q_\phi(z)`, the
score-function term of particle :math:`s` uses the mean of the *other*
particles' objective values as its baseline:

.. math::

    \hat g = \frac{1}{S} \sum_{s=1}^S \Bigl[
        \bigl(f(z^{(s)}) - b^{(s)}\bigr) \nabla_\phi \log q_\phi(z^{(s)})
        + \nabla_{\theta,\phi}^{\mathrm{path}} f(z^{(s)}) \Bigr],
    \qquad
    b^{(s)} = \frac{1}{S - 1} \sum_{j \neq s} f(z^{(j)}).

:math:`b^{(s)}` is independent of :math:`z^{(s)}`, so
:math:`E[b^{(s)} \nabla \log q(z^{(s)})] = 0` and the estimator is unbiased; it
equals :math:`\frac{1}{S-1}\sum_s (f(z^{(s)}) - \bar f) \nabla \log q(z^{(s)})`
with :math:`\bar f` the mean of all :math:`S` values. Model parameters and
reparameterized guide sites get their ordinary pathwise gradient, as in
:class:`~pyro.infer.Trace_ELBO`.

**Rao-Blackwellization over plates.** As in :class:`~pyro.infer.Trace_ELBO`, a
site's cost :math:`f` keeps only the terms of its own plate elements
(``log_r.sum_to(site["cond_indep_stack"])``), and its baseline is the
leave-one-out mean of *the same* plate-wise cost of the other particles (still
independent of the particle's own draw, so still unbiased). Where the other
particle's trace has a different plate layout at that site (dynamic structure or
a different subsample size), its total ELBO is used for it instead.

**Cost:** :math:`S` evaluations of the model and guide per step (one
vectorized evaluation with ``vectorize_particles=True``) and one backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from torch import Tensor

from pyro_ils.infer.multi_eval import (
    SurrogateLossMixin,
    check_num_samples,
    elbo_value,
    leave_one_out_mean,
    leave_one_out_sum_to,
    pathwise_surrogate,
    score_sites,
)

__all__ = ["TraceRLOO_ELBO"]


class TraceRLOO_ELBO(SurrogateLossMixin, Trace_ELBO):
    r"""REINFORCE with a leave-one-out baseline over ``num_samples`` particles
    (Kool, van Hoof and Welling 2019, "Buy 4 REINFORCE samples, get a baseline
    for free!").

    See the module docstring for the estimator. Works with any Pyro guide whose
    non-reparameterized sites are scored by Pyro's score function
    (``Categorical``, ``OneHotCategorical``, ``Bernoulli``, ...).
    ``loss`` is the negated mean of the ``num_samples`` particle ELBOs.

    **Cost:** ``num_samples`` objective evaluations per step.

    :param int num_samples: number of particles :math:`S \ge 2` (each particle's
        baseline is the mean of the other :math:`S - 1`).
    :param elbo_kwargs: passed to :class:`~pyro.infer.Trace_ELBO`
        (``max_plate_nesting``, ``vectorize_particles``, ...); ``num_particles``
        may not be given (it is ``num_samples``).
    """

    def __init__(self, num_samples: int = 4, **elbo_kwargs) -> None:
        why = "the baseline of each particle is the mean of the others"
        hint = "; for a single sample use Trace_ELBO"
        check_num_samples("TraceRLOO_ELBO", num_samples, elbo_kwargs, why, hint)
        super().__init__(num_particles=num_samples, **elbo_kwargs)
        self.num_samples = num_samples

    def _loss_and_surrogate(self, model: Callable, guide: Callable, args, kwargs):
        particles = list(self._get_traces(model, guide, args, kwargs))
        loss = -sum(elbo_value(mt, gt) for mt, gt in particles) / self.num_particles
        surrogate: Tensor | float = 0.0
        for mt, gt in particles:
            surrogate = surrogate + pathwise_surrogate(mt, gt)

        if self.vectorize_particles:
            surrogate = surrogate + self._vectorized_score_terms(*particles[0])
        else:
            surrogate = surrogate + self._looped_score_terms(particles)
        surrogate = surrogate / self.num_particles
        return loss, -surrogate

    def _vectorized_score_terms(self, model_trace, guide_trace) -> Tensor | float:
        sites = score_sites(guide_trace)
        if not sites:
            return 0.0
        log_r = _compute_log_r(model_trace, guide_trace)
        dim = -self.max_plate_nesting  # the particle plate
        out: Tensor | float = 0.0
        for _name, site in sites:
            cost = log_r.sum_to(site["cond_indep_stack"])
            if not torch.is_tensor(cost) or cost.dim() < -dim or cost.size(dim) != self.num_samples:
                raise ValueError(
                    "TraceRLOO_ELBO(vectorize_particles=True) expects every site's cost to carry "
                    f"the particle dim {dim} of size {self.num_samples}; got shape "
                    f"{tuple(torch.as_tensor(cost).shape)} (is max_plate_nesting right?)"
                )
            baseline = leave_one_out_mean(cost, dim)
            out = out + ((cost - baseline) * site["score_parts"].score_function).sum()
        return out

    def _looped_score_terms(self, particles) -> Tensor | float:
        log_rs = [_compute_log_r(mt, gt) for mt, gt in particles]
        totals = [sum((v.sum() for v in log_r.values()), 0.0) for log_r in log_rs]
        out: Tensor | float = 0.0
        for s, (_mt, gt) in enumerate(particles):
            for _name, site in score_sites(gt):
                stack = site["cond_indep_stack"]
                cost = log_rs[s].sum_to(stack)
                baseline = leave_one_out_sum_to(log_rs, totals, s, stack, cost)
                out = out + ((cost - baseline) * site["score_parts"].score_function).sum()
        return out

    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The negated ``num_samples``-particle mean ELBO estimate (a float)."""
        return super().loss(model, guide, *args, **kwargs)
