"""Later guide sites drawn again under each alternative, coupled to their draws
(:mod:`pyro_ils.infer.coupling`), and the exact differences of a structured guide.

Oracles: the closed form of the coupling (``Normal``); the new distribution's masses,
against the frequencies of many coupled draws (discrete; a two-sided z-test per
category, Bonferroni, family-wise false-alarm rate 1e-3); the analytic gradient of the
ELBO of a guide whose second site depends on the first, as Pyro's own
``test_non_mean_field_*`` tests compute it, against the mean over independent seeds
of ``TraceILSDiff_ELBO``'s gradient (the same z-test over the parameters).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.stats import norm
from torch.distributions import kl_divergence

from pyro_ils import TraceILS_ELBO, TraceILSDiff_ELBO
from pyro_ils.infer.coupling import coupled

ALPHA = 1e-3


def z_ok(mean, exact, se):
    z = (mean - exact) / se
    return bool((z.abs() < norm.isf(ALPHA / (2 * z.numel()))).all()), z


def test_normal_coupling_is_the_same_noise():
    old = dist.Normal(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])).to_event(1)
    loc = torch.tensor([[0.0, 1.0], [3.0, -1.0]], requires_grad=True)  # rows: same, new
    new = dist.Normal(loc, torch.tensor([1.0, 0.5])).to_event(1)
    value = torch.tensor([0.5, 5.0])
    out = coupled(old, new, value)
    eps = (value - old.base_dist.loc) / old.base_dist.scale
    assert out.shape == (2, 2)
    assert torch.equal(out[0, 0], value[0])  # unchanged parameters: the draw itself
    assert torch.allclose(out[1], loc[1].detach() + new.base_dist.scale * eps)
    out[1].sum().backward()  # the new value keeps its path to the new parameters
    assert torch.equal(loc.grad, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))


def test_unchanged_discrete_site_draws_no_noise():
    logits = torch.randn(3, 4)
    fn = dist.Categorical(logits=logits)
    value = fn.sample()
    state = torch.get_rng_state()
    assert torch.equal(coupled(fn, dist.Categorical(logits=logits.clone()), value), value)
    assert torch.equal(torch.get_rng_state(), state)


def test_unsupported_distribution_is_held():
    fn = dist.Gamma(torch.ones(2), torch.ones(2))
    assert coupled(fn, dist.Gamma(2 * torch.ones(2), torch.ones(2)), fn.sample()) is None


@pytest.mark.parametrize("kind", ["categorical", "one_hot", "bernoulli"])
def test_discrete_coupling_has_the_new_distribution(kind):
    """Draws of the old distribution, coupled, are draws of the new one; the draws
    that stay put are most of them (the coupling shares the noise)."""
    pyro.set_rng_seed(0)
    n = 100_000
    if kind == "bernoulli":
        old, new = dist.Bernoulli(torch.tensor(0.3)), dist.Bernoulli(torch.tensor([0.45]))
        p_new = torch.tensor([0.55, 0.45])
    else:
        p_old, p_new = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.15, 0.2, 0.3, 0.35])
        cls = dist.Categorical if kind == "categorical" else dist.OneHotCategorical
        old, new = cls(p_old), cls(p_new.unsqueeze(0))
    value = old.sample((n,))
    out = coupled(old, new, value)
    index = out.argmax(-1) if kind == "one_hot" else out.long()
    counts = torch.bincount(index.flatten(), minlength=len(p_new)).double()
    se = (p_new * (1 - p_new) / n).sqrt()
    ok, z = z_ok(counts / n, p_new.double(), se.double())
    assert ok, z
    kept = (index.flatten() == (value.argmax(-1) if kind == "one_hot" else value.long())).float()
    # the shared noise keeps most draws (0.85 here; independent draws: 0.285 and 0.5)
    assert kept.mean() > 0.8


# -- a structured guide: z depends on y ------------------------------------------------

P = 10_000 // 20  # particles per seed


def bern_normal(enumerated_oracle=False):
    def model():
        q3 = pyro.param("q3", torch.tensor(0.39))
        with pyro.plate("particles", P):
            y = pyro.sample("y", dist.Bernoulli(q3).expand([P]))
            pyro.sample("z", dist.Normal(0.55 * y + q3, 1.0))

    def guide():
        q1 = pyro.param("q1", torch.tensor(0.29))
        q2 = pyro.param("q2", torch.tensor(0.44))
        with pyro.plate("particles", P):
            y = pyro.sample("y", dist.Bernoulli(q1).expand([P]))
            pyro.sample("z", dist.Normal(q2 * y + 0.10, 1.0))

    q1, q2, q3 = (torch.tensor(v, requires_grad=True) for v in (0.29, 0.44, 0.39))
    elbo = kl_divergence(dist.Bernoulli(q1), dist.Bernoulli(q3))
    elbo = elbo + q1 * kl_divergence(dist.Normal(q2 + 0.10, 1.0), dist.Normal(q3 + 0.55, 1.0))
    elbo = elbo + (1 - q1) * kl_divergence(dist.Normal(0.10, 1.0), dist.Normal(q3, 1.0))
    return model, guide, torch.stack(torch.autograd.grad(elbo, [q1, q2, q3])), ("q1", "q2", "q3")


def bern_bern():
    def model():
        with pyro.plate("particles", P):
            y = pyro.sample("y", dist.Bernoulli(0.33).expand([P]))
            pyro.sample("z", dist.Bernoulli(0.55 * y + 0.10))

    def guide():
        q1 = pyro.param("q1", torch.tensor(0.43))
        q2 = pyro.param("q2", torch.tensor(0.27))
        with pyro.plate("particles", P):
            y = pyro.sample("y", dist.Bernoulli(q1).expand([P]))
            pyro.sample("z", dist.Bernoulli(q2 * y + 0.10))

    q1, q2 = (torch.tensor(v, requires_grad=True) for v in (0.43, 0.27))
    elbo = kl_divergence(dist.Bernoulli(q1), dist.Bernoulli(0.33))
    elbo = elbo + q1 * kl_divergence(dist.Bernoulli(q2 + 0.10), dist.Bernoulli(0.65))
    return model, guide, torch.stack(torch.autograd.grad(elbo, [q1, q2])), ("q1", "q2")


@pytest.mark.parametrize("case", [bern_normal, bern_bern])
@pytest.mark.parametrize("make_elbo", [TraceILSDiff_ELBO, TraceILS_ELBO])
def test_structured_guide_gradient_is_unbiased(case, make_elbo):
    model, guide, exact, names = case()
    seeds = 40
    draws = []
    for seed in range(seeds):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        make_elbo().loss_and_grads(model, guide)
        draws.append(torch.stack([pyro.param(n).grad / P for n in names]))
    draws = torch.stack(draws)
    ok, z = z_ok(draws.mean(0), exact, draws.std(0) / math.sqrt(seeds))
    assert ok, (z, draws.mean(0), exact)
    assert (draws.std(0) > 0).all()  # a Monte Carlo estimate: the test can fail
