r"""REBAR and RELAX as Pyro ELBOs.

* Tucker, Mnih, Maddison, Lawson and Sohl-Dickstein (2017), "REBAR: Low-variance,
  unbiased gradient estimates for discrete latent variable models", NeurIPS.
* Grathwohl, Choi, Wu, Roeder and Duvenaud (2018), "Backpropagation through the
  void: Optimizing control variates for black-box gradient estimation", ICLR.

Let :math:`f(b) = \log p_\theta(x, b) - \log q_\phi(b)` and write each discrete
draw as a threshold of continuous noise, :math:`b = H(z)`, :math:`z = \ell + G`
with :math:`\ell` the site's logits (Gumbel noise and ``argmax`` for one-hot
sites, logistic noise and ``z > 0`` for Bernoulli sites; see
:mod:`pyro_ils.estimators.gumbel`). Let :math:`\tilde z \sim p(z \mid b)` be an
independent draw of the noise given the draw, :math:`\sigma_\lambda` the
relaxation (``softmax(z / lambda)`` or ``sigmoid(z / lambda)``) and :math:`c` a
control variate that is a differentiable function of the relaxed values. Then

.. math::

    \hat g_\ell = \bigl[f(b) - c(\sigma_\lambda(\tilde z))\bigr]
        \nabla_\ell \log q(b)
        + \nabla_\ell\, c(\sigma_\lambda(z)) - \nabla_\ell\, c(\sigma_\lambda(\tilde z))

is unbiased for :math:`\nabla_\ell E_q[f(b)]`, for any :math:`c`: the last two terms
are the reparameterization gradients of :math:`E[c(\sigma_\lambda(z))]`, once
unconditionally (:math:`z = \ell + G`) and once through the conditional
reparameterization :math:`\tilde z(v, b, \ell)`, whose score-function part is the
subtracted :math:`c(\sigma_\lambda(\tilde z)) \nabla \log q(b)`. Here

* **REBAR**: :math:`c(\zeta) = \eta\, \bar f(\zeta)`, where :math:`\bar f` is the
  objective itself evaluated at the relaxed values (model and guide run with
  :math:`\zeta` at the discrete sites, log-masses extended linearly) with the
  parameters held fixed;
* **RELAX**: :math:`c_\phi(\zeta) = \eta\, \bar f(\zeta) + r_\phi(\zeta)`, with
  :math:`r_\phi` a neural network (or any user-supplied ``torch.nn.Module``).

:math:`\hat g_\ell` is the gradient with respect to the logits of each discrete
site; the parameters :math:`\phi` of the guide receive
:math:`(\partial \ell / \partial \phi)^\top \hat g_\ell`, model parameters and
reparameterized guide sites their ordinary pathwise gradient (as in
:class:`~pyro.infer.Trace_ELBO`, whose plate-wise Rao-Blackwellization of
:math:`f(b)` and :math:`c` is kept). :math:`z` is drawn given :math:`b` (the guide
draws :math:`b` with its own sampler); the pair :math:`(b, z)` has the law of
:math:`(H(z), z)` and the unconditional reparameterization is
:math:`z = \ell + (z - \ell)_{\text{fixed}}`.

**Tuning.** :math:`E[\hat g] ` does not depend on :math:`\eta`, :math:`\lambda`,
:math:`\phi`, so the gradient of the variance is the gradient of
:math:`E\|\hat g\|^2`; each step takes one Adam step on the single-sample
surrogate :math:`\|\hat g_\ell\|^2` (summed over sites and particles), computed
with ``create_graph=True`` (REBAR with ``tune=True`` tunes :math:`\eta` and
:math:`\log\lambda`, RELAX also :math:`\phi`). The variance is that of the
gradient with respect to the sites' logits, a cheap proxy for that with respect
to all parameters. Tuning happens in ``loss_and_grads`` (that is, under
:class:`~pyro.infer.SVI`); ``differentiable_loss`` uses the current values.

**Requirements.** As for :class:`~pyro_ils.infer.trace_muprop_elbo.TraceMuProp_ELBO`: the
guide's non-reparameterized sites must be ``OneHotCategorical`` or ``Bernoulli``
(an integer ``Categorical`` site raises ``ValueError``), and the model and guide
must use their values in differentiable arithmetic (a relaxed value used through
``argmax`` or as an index makes :math:`c(\sigma_\lambda(z))` discontinuous in
:math:`z`, and the estimate biased). In addition, the distribution of each
discrete site (and of each other latent site) must not depend on the values of
the discrete sites (one stochastic layer, as in the papers' single-layer
estimators; the multi-layer versions need one evaluation per layer). This is
checked at every step and raises ``ValueError``. Continuous guide sites keep their
sampled value in the relaxed evaluations.

**Cost:** 3 evaluations of the model and guide per particle (the sampled draw
and the two relaxed ones, at :math:`\sigma_\lambda(z)` and
:math:`\sigma_\lambda(\tilde z)`) plus three backward passes (with
``create_graph=True`` when tuning).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import MultiFrameTensor, get_plate_stacks, torch_item
from pyro.util import warn_if_nan
from torch import Tensor

from pyro_ils.estimators.gumbel import (
    gumbel_given_onehot,
    logistic_given_bernoulli,
    relax_bernoulli,
    relax_onehot,
)
from pyro_ils.infer.multi_eval import (
    ONEHOT,
    Particle,
    check_finite_float,
    discrete_site_kind,
    elbo_value,
    iter_particles,
    log_ratio,
    mft_total,
    pathwise_surrogate,
    reduce_like_log_prob,
    relaxed_elementwise_log_prob,
    run_relaxed,
    score_mask,
    score_sites,
    site_logits,
)

__all__ = ["TraceREBAR_ELBO"]

_LOGIT_BOUND = 1e4  # logits are clamped to +-this (a zero probability stays zero)


class TraceREBAR_ELBO(Trace_ELBO):
    r"""REBAR (Tucker et al. 2017, "REBAR: Low-variance, unbiased gradient
    estimates for discrete latent variable models"): the score-function estimator
    with the control variate :math:`\eta f(\sigma_\lambda(\tilde z))` and its
    conditional-reparameterization correction. See the module docstring.

    **Cost:** 3 objective evaluations per particle.

    :param float temperature: initial relaxation temperature :math:`\lambda > 0`.
    :param float eta: initial control-variate scale :math:`\eta`.
    :param bool tune: tune :math:`\eta` and :math:`\lambda` by minimizing the
        single-sample variance surrogate :math:`\|\hat g\|^2` (one Adam step per
        ``loss_and_grads``).
    :param float tune_lr: Adam learning rate of the tuning.
    :param elbo_kwargs: passed to :class:`~pyro.infer.Trace_ELBO`
        (``num_particles``, ``max_plate_nesting``, ``vectorize_particles``, ...).
    """

    def __init__(
        self,
        temperature: float = 0.5,
        eta: float = 1.0,
        tune: bool = True,
        tune_lr: float = 1e-3,
        **elbo_kwargs,
    ) -> None:
        super().__init__(**elbo_kwargs)
        self._init_log_temperature = math.log(
            check_finite_float("temperature", temperature, positive=True)
        )
        self._init_eta = check_finite_float("eta", eta)
        self.tune = bool(tune)
        self.tune_lr = check_finite_float("tune_lr", tune_lr, positive=True)
        self._log_temperature: Tensor | None = None
        self._eta: Tensor | None = None
        self._optim: torch.optim.Optimizer | None = None
        self._optim_ids: set[int] = set()

    # the control variate's parameters --------------------------------------
    @property
    def temperature(self) -> float:
        """The current relaxation temperature :math:`\\lambda`."""
        if self._log_temperature is None:
            return math.exp(self._init_log_temperature)
        return self._log_temperature.exp().item()

    @property
    def eta(self) -> float:
        """The current control-variate scale :math:`\\eta`."""
        return self._init_eta if self._eta is None else self._eta.item()

    def _scalars(self, like: Tensor) -> tuple[Tensor, Tensor]:
        if self._eta is None:
            kw = dict(dtype=like.dtype, device=like.device, requires_grad=self.tune)
            self._eta = torch.tensor(self._init_eta, **kw)
            self._log_temperature = torch.tensor(self._init_log_temperature, **kw)
        eta = self._eta.to(dtype=like.dtype, device=like.device)
        temperature = self._log_temperature.to(dtype=like.dtype, device=like.device).exp()
        return eta, temperature

    def tuned_parameters(self) -> list[Tensor]:
        """The tensors that the variance tuning optimizes."""
        if self._eta is None or not self.tune:
            return []
        return [self._eta, self._log_temperature]

    def _extra_control_variate(self, zetas, sites, stacks) -> list[tuple]:
        """Terms added to :math:`\\eta \\bar f` in the control variate (RELAX)."""
        return []

    # one particle ------------------------------------------------------------
    def _particle(self, particle: Particle, args, kwargs, tune: bool):
        mt, gt = particle.model_trace, particle.guide_trace
        surrogate = pathwise_surrogate(mt, gt)
        sites = score_sites(gt, estimator=type(self).__name__)
        if not sites:
            return surrogate, None

        with torch.enable_grad():
            logits, leaves_z, leaves_s, zs, zts = {}, {}, {}, {}, {}
            for name, site in sites:
                fn, b = site["fn"], site["value"].detach()
                kind = discrete_site_kind(fn)
                ell = site_logits(fn, b).clamp(-_LOGIT_BOUND, _LOGIT_BOUND)
                logits[name] = ell
                ell0 = ell.detach()
                lz = ell0.clone().requires_grad_()
                leaves_z[name], leaves_s[name] = lz, ell0.clone().requires_grad_()
                if kind == ONEHOT:
                    noise = gumbel_given_onehot(ell0, b) - ell0
                    zts[name] = gumbel_given_onehot(lz, b)
                else:
                    noise = logistic_given_bernoulli(ell0, b) - ell0
                    zts[name] = logistic_given_bernoulli(lz, b)
                zs[name] = lz + noise  # the unconditional reparameterization

            eta, temperature = self._scalars(next(iter(logits.values())))

            def relax(values: dict[str, Tensor]) -> dict[str, Tensor]:
                out = {}
                for name, site in sites:
                    onehot = discrete_site_kind(site["fn"]) == ONEHOT
                    relax_fn = relax_onehot if onehot else relax_bernoulli
                    out[name] = relax_fn(values[name], temperature)
                return out

            stacks = get_plate_stacks(gt)
            costs = []
            for which, values in (("z", zs), ("z_tilde", zts)):
                zetas = relax(values)
                rm, rg = run_relaxed(particle, self._value_fn(particle, zetas), args, kwargs)
                if which == "z":
                    self._check_one_layer(gt, rg, logits)
                cv = MultiFrameTensor(*((k, eta * v) for k, v in log_ratio(rm, rg).items()))
                cv.add(*self._extra_control_variate(zetas, sites, stacks))
                costs.append(cv)
            cv_z, cv_zt = costs

            # score-function part, with the control variate at z~ as baseline
            log_r = _compute_log_r(mt, gt)
            score_total = 0.0
            for name, site in sites:
                stack = site["cond_indep_stack"]
                weight = log_r.sum_to(stack) - cv_zt.sum_to(stack)
                kind = discrete_site_kind(site["fn"])
                elementwise = relaxed_elementwise_log_prob(kind, site["value"], leaves_s[name])
                score = reduce_like_log_prob(site["fn"], elementwise)
                score_total = score_total + (weight * score).sum()
            names = [name for name, _ in sites]
            g_score = torch.autograd.grad(
                score_total, [leaves_s[n] for n in names], create_graph=tune
            )
            # reparameterization part: grad c(sigma(z)) - grad c(sigma(z~))
            diff = mft_total(cv_z) - mft_total(cv_zt)
            if torch.is_tensor(diff) and diff.requires_grad:
                g_path = torch.autograd.grad(
                    diff,
                    [leaves_z[n] for n in names],
                    create_graph=tune,
                    allow_unused=True,
                    materialize_grads=True,
                )
            else:
                g_path = [torch.zeros_like(leaves_z[n]) for n in names]

            variance = 0.0
            for (name, site), gs, gp in zip(sites, g_score, g_path, strict=True):
                ghat = gs + score_mask(site["fn"], site["value"]) * gp
                surrogate = surrogate + (ghat.detach() * logits[name]).sum()
                if tune:
                    variance = variance + ghat.pow(2).sum()
        return surrogate, (variance if tune else None)

    @staticmethod
    def _value_fn(particle: Particle, zetas: dict[str, Tensor]):
        raw = particle.raw_guide_trace

        def value_fn(msg: dict) -> Tensor | None:
            name = msg["name"]
            if name in zetas:
                return zetas[name]
            if name in raw.nodes and raw.nodes[name]["type"] == "sample":
                return raw.nodes[name]["value"].detach()
            return None

        return value_fn

    def _check_one_layer(self, guide_trace, relaxed_guide_trace, logits) -> None:
        """Every guide latent site must have the same distribution when the
        discrete sites hold relaxed values as when they hold their draws."""
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            other = relaxed_guide_trace.nodes.get(name)
            if other is None:
                raise ValueError(f"site '{name}' was not sampled in the relaxed evaluation")
            if name in logits:
                here = site_logits(other["fn"], site["value"]).clamp(-_LOGIT_BOUND, _LOGIT_BOUND)
                same = torch.allclose(here.detach(), logits[name].detach(), rtol=1e-5, atol=1e-6)
            else:
                value = site["value"].detach()
                with torch.no_grad():
                    same = torch.allclose(
                        other["fn"].log_prob(value),
                        site["fn"].log_prob(value),
                        rtol=1e-5,
                        atol=1e-6,
                    )
            if not same:
                raise ValueError(
                    f"{type(self).__name__} needs the guide's latent sites not to depend on the "
                    f"values of its discrete sites (one stochastic layer); the distribution of "
                    f"site '{name}' changes with them"
                )

    # the ELBO interface ---------------------------------------------------------
    def _loss_and_surrogate(self, model: Callable, guide: Callable, args, kwargs, tune: bool):
        loss = 0.0
        surrogate: Tensor | float = 0.0
        variance: Tensor | float = 0.0
        for particle in iter_particles(self, model, guide, args, kwargs):
            loss = loss - elbo_value(particle.model_trace, particle.guide_trace)
            s, v = self._particle(particle, args, kwargs, tune)
            surrogate = surrogate + s
            if v is not None:
                variance = variance + v
        n = self.num_particles
        return loss / n, -surrogate / n, variance

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> Tensor:
        """A tensor whose value is ``loss`` and whose gradient is the estimate
        (the control variate is not tuned)."""
        loss, surrogate, _ = self._loss_and_surrogate(model, guide, args, kwargs, tune=False)
        warn_if_nan(surrogate, "loss")
        return loss + (surrogate - torch_item(surrogate))

    def loss_and_grads(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """Back-propagate the estimate into the parameters, take one tuning step
        of the control variate (if tuning), and return ``loss``."""
        loss, surrogate, variance = self._loss_and_surrogate(
            model, guide, args, kwargs, tune=self.tune
        )
        if self.tune:
            self._tuning_step(variance)
        if getattr(surrogate, "requires_grad", False):
            surrogate.backward(retain_graph=self.retain_graph)
        warn_if_nan(loss, "loss")
        return loss

    def _tuning_step(self, variance: Tensor | float) -> None:
        params = [p for p in self.tuned_parameters() if p.requires_grad]
        if not params or not (torch.is_tensor(variance) and variance.requires_grad):
            return
        new = [p for p in params if id(p) not in self._optim_ids]
        if self._optim is None:
            self._optim = torch.optim.Adam(new, lr=self.tune_lr)
        elif new:
            self._optim.add_param_group({"params": new})
        self._optim_ids.update(id(p) for p in new)
        grads = torch.autograd.grad(variance, params, allow_unused=True, materialize_grads=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach()
        self._optim.step()
