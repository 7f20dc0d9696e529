"""The three treatments of the guide's log q term give the logits gradients the
docs state, checked against a hand computation of g = dL/dz and the projection."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_ils import TraceILS_ELBO, project_simplex

K = 4
C = 0.7
X = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
LOCS = torch.tensor([-2.0, -0.5, 0.5, 2.5], dtype=torch.float64)
PRIOR = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)


def model():
    with pyro.plate("data", len(X)):
        z = pyro.sample("z", dist.Categorical(PRIOR))
        pyro.sample("x", dist.Normal(LOCS[z], 1.0), obs=X)


def guide():
    logits = pyro.param("logits", torch.linspace(-1, 1, len(X) * K).reshape(len(X), K).double())
    with pyro.plate("data", len(X)):
        pyro.sample("z", dist.Categorical(logits=logits))


def _gradient(mode):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    elbo = TraceILS_ELBO(step_size=C, projection="euclidean", guide_log_prob=mode)
    loss = elbo.differentiable_loss(model, guide)
    logits = pyro.param("logits").unconstrained()
    (grad,) = torch.autograd.grad(loss, logits)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        z = dist.Categorical(logits=logits).sample()
    return z, logits.detach(), grad


def _pieces(z, logits):
    pi = torch.softmax(logits, -1)
    onehot = torch.nn.functional.one_hot(z, K).double()
    # d log N(x | LOCS[z], 1) / d onehot_j: the chain rule through the contraction
    # LOCS[z] = sum_j onehot_j LOCS[j] gives (x - LOCS[k]) * LOCS[j].
    dlog_lik = (X - LOCS[z])[:, None] * LOCS[None, :]
    log_q = torch.log_softmax(logits, -1)
    return pi, onehot, dlog_lik, log_q


def test_full_is_z_minus_target():
    z, logits, grad = _gradient("full")
    pi, onehot, dlog_lik, log_q = _pieces(z, logits)
    g = -(dlog_lik + PRIOR.log()) + log_q  # d(-ELBO)/dz through the one-hot
    torch.testing.assert_close(grad, onehot - project_simplex(onehot - C * g))


def test_stl_is_plain_ils():
    z, logits, grad = _gradient("stl")
    pi, onehot, dlog_lik, log_q = _pieces(z, logits)
    g = -(dlog_lik + PRIOR.log()) + log_q
    torch.testing.assert_close(grad, pi - project_simplex(onehot - C * g))


def test_analytic_kl():
    z, logits, grad = _gradient("analytic")
    pi, onehot, dlog_lik, log_q = _pieces(z, logits)
    g = -dlog_lik  # the prior and q enter only through the analytic KL
    leaf = logits.clone().requires_grad_()
    kl = kl_divergence(dist.Categorical(logits=leaf), dist.Categorical(PRIOR)).sum()
    (kl_grad,) = torch.autograd.grad(kl, leaf)
    torch.testing.assert_close(grad, pi - project_simplex(onehot - C * g) + kl_grad)


def test_analytic_loss_is_the_analytic_elbo():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    loss = TraceILS_ELBO(guide_log_prob="analytic").loss(model, guide)
    logits = pyro.param("logits").detach()
    pyro.set_rng_seed(0)
    z = dist.Categorical(logits=logits).sample()
    log_lik = dist.Normal(LOCS[z], 1.0).log_prob(X).sum()
    kl = kl_divergence(dist.Categorical(logits=logits), dist.Categorical(PRIOR)).sum()
    assert loss == pytest.approx((kl - log_lik).item())


def test_modes_differ():
    grads = {mode: _gradient(mode)[2] for mode in ("full", "stl", "analytic")}
    assert not torch.allclose(grads["full"], grads["stl"])
    assert not torch.allclose(grads["stl"], grads["analytic"])
