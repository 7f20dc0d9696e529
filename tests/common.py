"""Oracles and statistical checks shared by the test modules.

Each oracle is an independent statement of a formula in plain autograd (or plain
arithmetic), written from the paper, not from the package's code:

* :func:`oracle_project`: the Euclidean projection onto the simplex, by bisection;
* :func:`st_oracle`, :func:`paper_reinmax`, :func:`st_gumbel_oracle`,
  :func:`paper_gumbel_rao`, :func:`paper_gst`: the straight-through, ReinMax (Liu et
  al. 2023, Algorithm 2), ST-Gumbel, Gumbel-Rao (Paulus et al. 2021) and gapped
  straight-through (Fan et al. 2022) estimators as stop-gradient expressions whose
  autograd gives their backward;
* :func:`autograd_grad`: the gradient for ``logits`` of ``<out, g>``.

:func:`bias_outliers` is the normal test that a Monte Carlo mean matches an exact
gradient (Bonferroni over the coordinates, false-alarm rate :data:`ALPHA`).
:func:`check_routing_matches_class` checks that an estimator routed into an unchanged
guide gives the gradients of the distribution class that fixes it.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from scipy.stats import norm

from pyro_ils import ILSReparam, TraceILS_ELBO
from pyro_ils.estimators import StraightThrough

#: False-alarm rate of each statistical test of an unbiased estimator.
ALPHA = 1e-3


def oracle_project(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of the last dim onto the simplex by bisection on tau
    (float64, CPU). ``-inf`` entries get exactly zero mass (``max(-inf - tau, 0) = 0``)."""
    v = v.detach().to("cpu", torch.float64)
    top = v.amax(-1, keepdim=True)
    lo, hi = top - 1.0, top.clone()
    for _ in range(100):
        mid = (lo + hi) / 2
        over = (v - mid).clamp(min=0).sum(-1, keepdim=True) > 1.0
        lo = torch.where(over, mid, lo)
        hi = torch.where(over, hi, mid)
    return (v - (lo + hi) / 2).clamp(min=0)


def autograd_grad(out: torch.Tensor, logits: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``d <out, g> / d logits`` by autograd."""
    (grad,) = torch.autograd.grad((out * g).sum(), logits)
    return grad


def st_oracle(logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Straight-through (Bengio et al. 2013): ``pi - sg(pi) + z``."""
    pi = logits.softmax(-1)
    return pi - pi.detach() + onehot


def paper_reinmax(logits: torch.Tensor, onehot: torch.Tensor, tau: float) -> torch.Tensor:
    """Algorithm 2 of Liu et al. (2023), line by line, in plain autograd."""
    pi_0 = torch.softmax(logits, -1)
    pi_1 = (onehot + torch.softmax(logits / tau, -1)) / 2
    shift = (torch.log(pi_1) - logits).detach()
    # (At -inf logits the shift is -inf - -inf = NaN; any finite shift keeps pi_1 = 0 there.)
    shift = shift.masked_fill(logits.detach() == -torch.inf, 0.0)
    pi_1 = torch.softmax(shift + logits, -1)
    pi_2 = 2 * pi_1 - pi_0 / 2
    return pi_2 - pi_2.detach() + onehot


def st_gumbel_oracle(
    logits: torch.Tensor, onehot: torch.Tensor, perturbed: torch.Tensor, tau: float
) -> torch.Tensor:
    """ST-Gumbel (Jang et al. 2017): ``y - sg(y) + z`` with
    ``y = softmax((logits + sg(perturbed - logits)) / tau)``."""
    y = ((logits + (perturbed - logits).detach()) / tau).softmax(-1)
    return y - y.detach() + onehot


def paper_gumbel_rao(logits, onehot, perturbed, tau):
    """Paulus et al. (2021), the Monte Carlo estimator: ``D + mean_s (y_s - sg(y_s))``,
    ``y_s = softmax((logits + sg(perturbed_s - logits)) / tau)``, ``perturbed`` of
    shape ``(..., S, K)``."""
    logits = logits.unsqueeze(-2)
    noise = (perturbed - logits).detach()
    noise = noise.masked_fill(logits.detach() == -torch.inf, 0.0)  # (-inf - -inf)
    y = torch.softmax((logits + noise) / tau, -1)
    return onehot + (y - y.detach()).mean(-2)


def paper_gst(logits, onehot, tau, kappa):
    """Fan et al. (2022), in plain autograd: the perturbation ``m1 - m2`` held fixed."""
    theta = logits.detach()
    top = theta.max(-1, keepdim=True).values
    if kappa == "p":  # GST-p: the gap from the drawn category's probability
        p = (theta.softmax(-1) * onehot).sum(-1, keepdim=True)
        kappa = -torch.log(1 - p) / p
    m1 = torch.where(onehot > 0, top - theta, torch.zeros_like(theta))
    m2 = (1 - onehot) * torch.relu(theta - top + kappa)
    y = torch.softmax((logits + (m1 - m2).detach()) / tau, -1)
    return onehot + y - y.detach()


def bias_outliers(draws, exact, alpha=ALPHA):
    """Coordinates where the mean of the draws is off the exact gradient by more
    than the Bonferroni-corrected normal tolerance (empty if consistent). The
    normal approximation needs many nonzero draws per coordinate; fewer than 30
    is a flaw of the test's design and fails loudly."""
    n, p = draws.shape
    nonzero = (draws != 0).sum(0)
    assert nonzero.min() >= 30, f"too few nonzero draws for a normal test: {nonzero.tolist()}"
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    tol = norm.isf(alpha / (2 * p)) * se + 1e-8 * (1 + exact.abs())
    bad = ((mean - exact).abs() > tol).nonzero().flatten().tolist()
    return [(i, mean[i].item(), exact[i].item(), se[i].item()) for i in bad]


#: The plain Pyro distribution of each site kind, from a ``(3, 4)`` logits parameter.
ROUTING_SITES = {
    "categorical": lambda logits: dist.Categorical(logits=logits),
    "one_hot": lambda logits: dist.OneHotCategorical(logits=logits),
    "bernoulli": lambda logits: dist.Bernoulli(logits=logits[..., 0]),
}
_LOCS = torch.tensor([-2.0, 0.0, 1.5, 3.0])
_DATA = torch.tensor([2.9, -2.2, 0.4])
_Q_INIT = torch.tensor([[0.1, -0.3, 0.2, 0.5], [1.0, 0.0, -1.0, 0.3], [0.0, 0.4, 0.2, -0.2]])


def _routing_model(site):
    def model():
        with pyro.plate("N", 3):
            z = pyro.sample("z", ROUTING_SITES[site](torch.zeros(3, 4)))
            if site == "one_hot":
                mean = (z * _LOCS).sum(-1)
            else:
                mean = _LOCS[z.long()] if site == "bernoulli" else _LOCS[z]
            pyro.sample("x", dist.Normal(mean, 1.0), obs=_DATA)

    return model


def _routing_guide(make, infer=None):
    def guide():
        logits = pyro.param("q_logits", lambda: _Q_INIT.clone())
        with pyro.plate("N", 3):
            pyro.sample("z", make(logits), infer=dict(infer or {}))

    return guide


def _routing_grad(elbo, model, guide, seed=0):
    pyro.clear_param_store()
    guide()
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide)
    param = pyro.param("q_logits").unconstrained()
    grad, param.grad = param.grad, None
    return loss, grad


def check_routing_matches_class(estimator, cls, site, opts):
    """``estimator`` routed into an unchanged guide gives the loss and gradient of the
    class ``cls(logits, **opts)`` written in the guide, under the same RNG state (to
    rounding), at a ``Categorical``, ``OneHotCategorical`` or ``Bernoulli`` site ``z`` of
    a three-point plate: by ``TraceILS_ELBO(estimator=...)`` and by ``ILSReparam`` as
    the class under ``Trace_ELBO``; by ``infer={"ils": ...}`` under an ELBO holding
    another estimator, likewise; by ``infer={"ils": ...}`` under the default
    ``TraceILS_ELBO()``, which takes the KL to the matching prior analytically, as the
    class under ``TraceMeanField_ELBO`` (the gradient; the loss it reports is another
    estimate)."""
    model = _routing_model(site)
    plain = ROUTING_SITES[site]
    if site == "bernoulli":
        by_class = _routing_guide(lambda logits: cls(logits=logits[..., 0], **opts))
    else:
        by_class = _routing_guide(lambda logits: cls(logits=logits, **opts))
    expected = {
        elbo: _routing_grad(elbo(), model, by_class) for elbo in (Trace_ELBO, TraceMeanField_ELBO)
    }
    assert torch.isfinite(expected[Trace_ELBO][1]).all()
    assert (expected[Trace_ELBO][1] != 0).any()
    by_infer = _routing_guide(plain, {"ils": estimator})
    reparam = poutine.reparam(_routing_guide(plain), {"z": ILSReparam(estimator=estimator)})
    routes = {
        "elbo": (TraceILS_ELBO(estimator=estimator), _routing_guide(plain), Trace_ELBO),
        "infer": (TraceILS_ELBO(estimator=StraightThrough()), by_infer, Trace_ELBO),
        "infer, default ELBO": (TraceILS_ELBO(), by_infer, TraceMeanField_ELBO),
        "reparam": (Trace_ELBO(), reparam, Trace_ELBO),
    }
    for name, (elbo, guide, reference) in routes.items():
        loss, grad = _routing_grad(elbo, model, guide)
        expected_loss, expected_grad = expected[reference]
        if reference is Trace_ELBO:  # (the default's reported loss is its own estimate)
            assert loss == pytest.approx(expected_loss, rel=1e-6), name
        torch.testing.assert_close(grad, expected_grad, msg=lambda m, name=name: f"{name}: {m}")
    # Not vacuous: another RNG state (another draw, other noise) changes the gradient.
    _, other = _routing_grad(Trace_ELBO(), model, by_class, seed=1)
    assert not torch.equal(other, expected[Trace_ELBO][1])
