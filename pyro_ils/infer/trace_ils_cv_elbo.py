r"""ILS with a control variate: an unbiased member of the ILS family.

Write :math:`f(z) = \log p_\theta(x, z) - \log q_\phi(z)` as a function of the
values :math:`z` of the guide's discrete sites (one-hot or Bernoulli vectors,
log-masses extended linearly to continuous values, as in
``pyro_ils.infer.multi_eval``), and draw :math:`S \ge 2` independent
particles :math:`z_1, \dots, z_S \sim q_\phi` (exact discrete draws). Each
particle gives its value :math:`f_s = f(z_s)` and its first-order signal
:math:`g_s = \partial f / \partial z \,|_{z = z_s}` (the model and the guide
evaluated with the drawn values as tensors that require grad; one backward pass
for all particles). The control variate of particle :math:`s` is the mean of
the *other* particles' first-order models of :math:`f`,

.. math::

    b_s(z) = \frac{1}{S - 1} \sum_{j \neq s}
        \bigl[ f_j + \langle g_j, z - z_j \rangle \bigr]
    \qquad (f_j, g_j, z_j \text{ held fixed}),

which does not depend on :math:`z_s` and is linear in :math:`z`, so that its
expectation has a closed form, :math:`E_q[b_s(z)] = b_s(\pi)` with
:math:`\pi = E_q[z]` (``softmax`` or ``sigmoid`` of the logits). The estimator is

.. math::

    \hat g = \frac{1}{S} \sum_{s=1}^S \Bigl[
        \bigl(f_s - b_s(z_s)\bigr) \nabla_\phi \log q_\phi(z_s)
        + \nabla_\phi \langle \bar g_s, \pi_\phi \rangle
        + \nabla^{\mathrm{path}}_{\theta,\phi} f(z_s) \Bigr],
    \qquad \bar g_s = \frac{1}{S - 1} \sum_{j \neq s} g_j,

where :math:`\nabla_\phi \langle \bar g_s, \pi \rangle = J_\pi(\ell)^\top \bar g_s`
with :math:`\ell` the logits and :math:`J_\pi` the Jacobian of ``softmax``
(:math:`\mathrm{diag}(\pi) - \pi \pi^\top`, per one-hot site) or of ``sigmoid``
(:math:`\pi (1 - \pi)`, per Bernoulli entry): a straight-through-like term built
from the other particles' signals. Since :math:`b_s` is independent of
:math:`z_s`, :math:`E[b_s(z_s) \nabla \log q(z_s)] = \nabla E_q[b_s]` given the
other particles, and :math:`\hat g` is **unbiased for any** :math:`f`. Model
parameters and reparameterized guide sites get their pathwise gradient, as in
:class:`~pyro.infer.Trace_ELBO`.

**Plates.** As in :class:`~pyro.infer.Trace_ELBO`, the cost of a site is
Rao-Blackwellized over its plates: for the score term of site :math:`i` at plate
element :math:`n`, :math:`f_s` and :math:`b_s` are restricted (``sum_to`` the
site's ``cond_indep_stack``) to the terms of that element and the global ones.
The linear part of :math:`b_s` keeps every site's term (keyed by that site's
plates), so the control variate of a site also models the effect of the other
sites' draws; this is unbiased because the guide's sites are independent.

**Relation to ILS.** :math:`g_s` is exactly the signal that ILS steps with: the
ILS target :math:`h(z_s - c\, g_s)` is built from the first-order model
:math:`f(z_s) + \langle g_s, z - z_s\rangle` of the loss at the other vertices,
and its backward :math:`\pi - \pi_D` is biased (``ILS_METHOD.md`` section 4).
Here that first-order model, taken at the *other* particles' draws, is used as a
control variate: the bias of ILS is removed and only variance is left, and no
step size is needed (the estimator is invariant to rescaling of the loss).
For a loss linear in :math:`z`, :math:`f_s = b_s(z_s)` exactly: the
score-function part vanishes and :math:`\hat g` is the exact gradient with zero
variance.

**Measured variance** (``tests/infer/test_ils_cv.py``): far below RLOO at equal
:math:`S` when :math:`f` is nearly linear in :math:`z` (per-coordinate variance
ratio at most 0.26 with :math:`S = 2`), but on a strongly nonlinear likelihood
the first-order model taken at another *vertex* can be worse than RLOO's
constant baseline (total variance ratio about 1.8 with :math:`S = 2`, 0.84 with
:math:`S = 8`).

**Relation to MuProp and RLOO.**
:class:`~pyro_ils.infer.trace_muprop_elbo.TraceMuProp_ELBO` linearizes :math:`f` at the
deterministic mean-field point :math:`\pi` (one extra evaluation at a
non-vertex point); here the linearizations are taken at actual samples, where
the model is evaluated anyway. :class:`~pyro_ils.infer.trace_rloo_elbo.TraceRLOO_ELBO`
is the special case :math:`g = 0` (the baseline is the mean of the other
particles' values).

**Requirements.** The guide's non-reparameterized sites must be
``OneHotCategorical`` or ``Bernoulli`` (also under ``to_event``, ``expand``,
``mask``) whose values the model and guide use in differentiable arithmetic
(``z @ table``, ``b * x``); where a value is used as an index or in a comparison,
:math:`g` misses that dependence and the estimator stays unbiased but loses
variance reduction. An integer ``Categorical`` site raises ``ValueError``. The
distribution of each guide site must not depend on the values of the discrete
sites (independent sites; checked at every step, ``ValueError``).

**Cost:** :math:`S` evaluations of the model and guide per step (one vectorized
evaluation with ``vectorize_particles=True``), one extra backward pass for the
signals :math:`g_s` and the backward pass of the surrogate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro.distributions.util import is_identically_zero, sum_rightmost
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import MultiFrameTensor, get_plate_stacks
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyro_ils.infer.multi_eval import (
    Particle,
    SurrogateLossMixin,
    check_num_samples,
    discrete_site_kind,
    elbo_value,
    iter_particles,
    leave_one_out_mean,
    leave_one_out_sum_to,
    log_ratio,
    mft_total,
    pathwise_surrogate,
    reduce_like_log_prob,
    score_sites,
    site_logits,
    site_mean,
)

__all__ = ["TraceILSCV_ELBO"]


class _LeafDraws(Messenger):
    """Draw each non-reparameterized one-hot/Bernoulli latent site exactly as Pyro
    would, and put the draw in the trace as a leaf tensor that requires grad."""

    def __init__(self) -> None:
        super().__init__()
        self.leaves: dict[str, Tensor] = {}

    def _pyro_sample(self, msg) -> None:
        if msg["is_observed"] or msg["done"] or site_is_subsample(msg):
            return
        if msg["value"] is not None:
            return
        fn = msg["fn"]
        if discrete_site_kind(fn) is None or getattr(fn, "has_rsample", False):
            return
        value = fn(*msg["args"], **msg["kwargs"])
        leaf = value.detach().requires_grad_()
        self.leaves[msg["name"]] = leaf
        msg["value"] = leaf
        msg["done"] = True


class TraceILSCV_ELBO(SurrogateLossMixin, Trace_ELBO):
    r"""ILS signals as a control variate: the score-function estimator with, for
    each of ``num_samples`` particles, the mean of the other particles'
    first-order models :math:`f_j + \langle g_j, z - z_j\rangle` of the objective
    as its control variate, and the closed-form gradient of that control
    variate's expectation. Unbiased for any objective; exact (zero variance) for
    an objective linear in the discrete values. See :mod:`pyro_ils.infer.trace_ils_cv_elbo`.

    .. math::

        \hat g = \frac{1}{S} \sum_{s} \Bigl[ \bigl(f_s - b_s(z_s)\bigr)
            \nabla \log q(z_s) + \nabla \langle \bar g_s, \pi \rangle
            + \nabla^{\mathrm{path}} f(z_s) \Bigr],
        \quad b_s(z) = \frac{1}{S-1} \sum_{j \ne s}
            \bigl[f_j + \eta \langle g_j, z - z_j\rangle\bigr].

    The coefficient :math:`\eta` (``eta``) of the first-order term keeps the
    estimator unbiased for any fixed value; 1 is exact for a linear objective,
    smaller values damp the control variate where the objective is strongly
    curved (a first-order model taken at another vertex then predicts the
    objective poorly).

    Supported guide sites: non-reparameterized ``OneHotCategorical`` and
    ``Bernoulli`` sites (also under ``to_event``, ``expand``, ``mask``), mutually
    independent, whose values the model uses in differentiable arithmetic;
    reparameterized sites get their pathwise gradient. Integer ``Categorical``
    and other non-reparameterized sites, and guides in which a site depends on a
    discrete value, raise ``ValueError``. ``loss`` is the negated mean ELBO of
    the particles.

    **Cost:** ``num_samples`` objective evaluations and one extra backward pass
    per step.

    :param int num_samples: number of particles :math:`S \ge 2` (the control
        variate of each particle is built from the other :math:`S - 1`).
    :param float eta: coefficient :math:`\eta \ge 0` of the first-order term
        (default 1; 0 gives RLOO).
    :param elbo_kwargs: passed to :class:`~pyro.infer.Trace_ELBO`
        (``max_plate_nesting``, ``vectorize_particles``, ...); ``num_particles``
        may not be given (it is ``num_samples``).
    """

    def __init__(self, num_samples: int = 2, eta: float = 1.0, **elbo_kwargs) -> None:
        why = "the control variate of each particle is built from the others"
        check_num_samples("TraceILSCV_ELBO", num_samples, elbo_kwargs, why)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < math.inf:
            raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
        super().__init__(num_particles=num_samples, **elbo_kwargs)
        self.num_samples = num_samples
        self.eta = float(eta)

    # checks ------------------------------------------------------------------------
    def _check_independent(self, guide_trace, leaves: dict[str, Tensor]) -> None:
        """No guide latent site's distribution (or reparameterized value) may
        depend, through autograd, on the value of a discrete site."""
        if not leaves:
            return
        names, tensors = [], []
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
                continue
            fn, value = site["fn"], site["value"]
            if name in leaves:
                parts = [site_logits(fn, value)]
            else:
                parts = [fn.log_prob(value.detach()), value]
            parts = [p for p in parts if torch.is_tensor(p) and p.requires_grad]
            if parts:
                names.append(name)
                tensors.append(sum(p.sum() for p in parts))
        if not tensors:
            return
        leaf_list = list(leaves.values())
        with torch.enable_grad():
            grads = torch.autograd.grad(
                sum(tensors), leaf_list, retain_graph=True, allow_unused=True
            )
            if all(g is None for g in grads):
                return
            for name, t in zip(names, tensors, strict=True):  # find the culprit
                grads = torch.autograd.grad(t, leaf_list, retain_graph=True, allow_unused=True)
                if any(g is not None for g in grads):
                    raise ValueError(
                        f"TraceILSCV_ELBO needs the guide's latent sites not to depend on the "
                        f"values of its discrete sites (independent sites); the distribution of "
                        f"site '{name}' depends on them"
                    )

    # signals ---------------------------------------------------------------------------
    def _prepare(self, particle: Particle, leaves: dict[str, Tensor]):
        mt, gt = particle.model_trace, particle.guide_trace
        sites = score_sites(gt, estimator=type(self).__name__)
        missing = [name for name, _ in sites if name not in leaves]
        if missing:
            raise ValueError(
                f"TraceILSCV_ELBO could not draw the discrete sites {missing} itself (are they "
                "conditioned or replayed inside the guide?)"
            )
        self._check_independent(gt, leaves)
        return mt, gt, sites

    def _signals(self, totals, leaf_lists) -> list[list[Tensor]]:
        """``eta * df/dz`` at every particle's leaves, one backward pass for all."""
        flat = [leaf for leaves in leaf_lists for leaf in leaves]
        if not flat:
            return [[] for _ in leaf_lists]
        total = sum(t for t in totals if torch.is_tensor(t) and t.requires_grad)
        if not torch.is_tensor(total):
            grads = [torch.zeros_like(leaf) for leaf in flat]
        else:
            grads = torch.autograd.grad(
                total, flat, retain_graph=True, allow_unused=True, materialize_grads=True
            )
        out, i = [], 0
        for leaves in leaf_lists:
            out.append([self.eta * g.detach() for g in grads[i : i + len(leaves)]])
            i += len(leaves)
        return out

    @staticmethod
    def _analytic(site: dict, gbar: Tensor) -> Tensor | float:
        r""":math:`\langle \bar g, E_q[z] \rangle` of a site (its gradient is the
        closed-form gradient of the control variate's expectation)."""
        fn, value = site["fn"], site["value"]
        mean = site_mean(discrete_site_kind(fn), site_logits(fn, value))
        term = reduce_like_log_prob(fn, gbar * mean)
        return 0.0 if is_identically_zero(term) else term.sum()

    # the estimator ---------------------------------------------------------------------
    def _vectorized(self, particle: Particle, leaves: dict[str, Tensor]) -> Tensor | float:
        mt, gt, sites = self._prepare(particle, leaves)
        surrogate = pathwise_surrogate(mt, gt)
        if not sites:
            return surrogate
        names = [name for name, _ in sites]
        with torch.enable_grad():
            relaxed = log_ratio(mt, gt)
            (grads,) = self._signals([mft_total(relaxed)], [[leaves[n] for n in names]])
        dim = -self.max_plate_nesting  # the particle plate
        stacks = get_plate_stacks(gt)
        log_r = _compute_log_r(mt, gt)
        own = MultiFrameTensor(*log_r.items())  # f_j - <g_j, z_j>
        other = MultiFrameTensor()  # <gbar_s, z_s>
        gbars = {}
        for (name, site), g in zip(sites, grads, strict=True):
            axis = dim - len(site["fn"].event_shape)
            if g.dim() < -axis or g.size(axis) != self.num_samples:
                raise ValueError(
                    "TraceILSCV_ELBO(vectorize_particles=True) expects every discrete site to "
                    f"carry the particle dim {dim} of size {self.num_samples}; site '{name}' has "
                    f"shape {tuple(g.shape)} (is max_plate_nesting right?)"
                )
            gbars[name] = leave_one_out_mean(g, axis)
            event_dim = site["fn"].event_dim
            z = site["value"].detach()
            own.add((stacks[name], -sum_rightmost(g * z, event_dim)))
            other.add((stacks[name], sum_rightmost(gbars[name] * z, event_dim)))
        for name, site in sites:
            stack = site["cond_indep_stack"]
            cost = log_r.sum_to(stack)
            base = own.sum_to(stack)
            if not torch.is_tensor(base) or base.dim() < -dim or base.size(dim) != self.num_samples:
                raise ValueError(
                    "TraceILSCV_ELBO(vectorize_particles=True) expects every site's cost to carry "
                    f"the particle dim {dim} of size {self.num_samples}; got shape "
                    f"{tuple(torch.as_tensor(base).shape)} (is max_plate_nesting right?)"
                )
            control = leave_one_out_mean(base, dim) + other.sum_to(stack)
            score = site["score_parts"].score_function
            surrogate = surrogate + ((cost - control).detach() * score).sum()
            surrogate = surrogate + self._analytic(site, gbars[name])
        return surrogate

    def _looped(self, particles: list[tuple[Particle, dict[str, Tensor]]]) -> Tensor | float:
        prepared = [self._prepare(p, leaves) for p, leaves in particles]
        surrogate: Tensor | float = 0.0
        for mt, gt, _ in prepared:
            surrogate = surrogate + pathwise_surrogate(mt, gt)
        names = [name for name, _ in prepared[0][2]]
        for s, (_, _, sites) in enumerate(prepared):
            here = [name for name, _ in sites]
            if here != names or any(
                site["value"].shape != prepared[0][1].nodes[n]["value"].shape for n, site in sites
            ):
                raise ValueError(
                    "TraceILSCV_ELBO needs the same discrete sites (names and shapes) in every "
                    f"particle; particle {s} has {here}, particle 0 has {names}. A model with "
                    "dynamic structure is not supported."
                )
        if not names:
            return surrogate
        with torch.enable_grad():
            totals = [mft_total(log_ratio(mt, gt)) for mt, gt, _ in prepared]
            leaf_lists = [[leaves[n] for n in names] for _, leaves in particles]
            grads = self._signals(totals, leaf_lists)
        num = len(prepared)
        sums = [sum(g[k] for g in grads) for k in range(len(names))]
        log_rs, owns, others, gbars = [], [], [], []
        for (mt, gt, sites), g in zip(prepared, grads, strict=True):
            stacks = get_plate_stacks(gt)
            log_r = _compute_log_r(mt, gt)
            own = MultiFrameTensor(*log_r.items())
            other = MultiFrameTensor()
            gbar = {}
            for k, (name, site) in enumerate(sites):
                gbar[name] = (sums[k] - g[k]) / (num - 1)
                event_dim = site["fn"].event_dim
                z = site["value"].detach()
                own.add((stacks[name], -sum_rightmost(g[k] * z, event_dim)))
                other.add((stacks[name], sum_rightmost(gbar[name] * z, event_dim)))
            log_rs.append(log_r)
            owns.append(own)
            others.append(other)
            gbars.append(gbar)
        own_totals = [mft_total(own) for own in owns]
        for s, (_, _, sites) in enumerate(prepared):
            for name, site in sites:
                stack = site["cond_indep_stack"]
                cost = log_rs[s].sum_to(stack)
                base = leave_one_out_sum_to(owns, own_totals, s, stack, cost)
                control = base + others[s].sum_to(stack)
                score = site["score_parts"].score_function
                residual = cost - control
                if torch.is_tensor(residual):
                    residual = residual.detach()
                surrogate = surrogate + (residual * score).sum()
                surrogate = surrogate + self._analytic(site, gbars[s][name])
        return surrogate

    def _loss_and_surrogate(self, model: Callable, guide: Callable, args, kwargs):
        drawers: list[_LeafDraws] = []

        def wrap(fn: Callable) -> Callable:
            drawer = _LeafDraws()
            drawers.append(drawer)
            return drawer(fn)

        particles = []
        for particle in iter_particles(self, model, guide, args, kwargs, wrap_guide=wrap):
            # one wrapper serves all particles: take this particle's leaves, then reset
            particles.append((particle, dict(drawers[-1].leaves)))
            drawers[-1].leaves.clear()
        loss = -sum(elbo_value(p.model_trace, p.guide_trace) for p, _ in particles)
        loss = loss / self.num_samples
        if self.vectorize_particles:
            ((particle, leaves),) = particles
            surrogate = self._vectorized(particle, leaves)
        else:
            surrogate = self._looped(particles)
        return loss, -surrogate / self.num_samples

    # the ELBO interface -------------------------------------------------------------------
    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The negated ``num_samples``-particle mean ELBO estimate (a float)."""
        return super().loss(model, guide, *args, **kwargs)
