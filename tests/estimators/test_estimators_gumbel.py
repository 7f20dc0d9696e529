"""Conditional Gumbel / logistic noise (pyro_ils.estimators.gumbel), tested by distribution.

Each statistical test draws ``N = 20000`` samples with a fixed seed and applies
``m`` Kolmogorov-Smirnov (or chi-square) tests, each at level ``1e-3 / m``
(Bonferroni: family-wise false-alarm rate 1e-3 per test function). The claims:
drawing ``b`` from its distribution and then ``z~ | b`` gives ``z~`` the law of the
unconditional noise (each coordinate ``Gumbel(logits_k)`` / ``Logistic(logits)``),
the draw is recovered exactly (``argmax z~ = b``, ``z~ > 0`` iff ``b = 1``), and
for the categorical case the maximum is ``Gumbel(logsumexp(logits))`` whatever the
argmax (the independence the top-down construction relies on).
"""

import pytest
import torch
from scipy import stats

from pyro_ils.estimators.gumbel import (
    gumbel_given_onehot,
    gumbel_sample,
    logistic_given_bernoulli,
    logistic_sample,
    relax_bernoulli,
    relax_onehot,
)

ALPHA = 1e-3
N = 20000


def test_conditional_gumbel_matches_the_unconditional_law():
    torch.manual_seed(0)
    logits = torch.tensor([0.5, -1.0, 1.2, 0.0], dtype=torch.float64)
    k = torch.distributions.Categorical(logits=logits).sample((N,))
    onehot = torch.nn.functional.one_hot(k, 4).to(logits.dtype)
    z = gumbel_given_onehot(logits, onehot)
    assert torch.equal(z.argmax(-1), k)

    lse = torch.logsumexp(logits, 0).item()
    pvalues = []
    for j in range(4):  # each coordinate, averaged over b: Gumbel(logits_j)
        pvalues.append(
            stats.kstest(z[:, j].numpy(), stats.gumbel_r(loc=logits[j].item()).cdf).pvalue
        )
    for j in range(4):  # the maximum given b = j: Gumbel(logsumexp)
        top = z[k == j, j].numpy()
        pvalues.append(stats.kstest(top, stats.gumbel_r(loc=lse).cdf).pvalue)
    # the unconditional sampler: same marginals, argmax frequencies softmax(logits)
    u = gumbel_sample(logits.expand(N, 4))
    for j in range(4):
        pvalues.append(stats.ks_2samp(u[:, j].numpy(), z[:, j].numpy()).pvalue)
    counts = torch.bincount(u.argmax(-1), minlength=4).numpy()
    expected = (N * torch.softmax(logits, 0)).numpy()
    pvalues.append(stats.chisquare(counts, expected).pvalue)
    assert min(pvalues) > ALPHA / len(pvalues), pvalues


def test_conditional_logistic_matches_the_unconditional_law():
    torch.manual_seed(1)
    logits = torch.tensor([-2.0, 0.3, 1.5], dtype=torch.float64)
    b = torch.distributions.Bernoulli(logits=logits).sample((N,))
    z = logistic_given_bernoulli(logits, b)
    assert torch.equal(z > 0, b > 0.5)
    pvalues = [
        stats.kstest(z[:, j].numpy(), stats.logistic(loc=logits[j].item()).cdf).pvalue
        for j in range(3)
    ]
    u = logistic_sample(logits.expand(N, 3))
    for j in range(3):
        pvalues.append(stats.ks_2samp(u[:, j].numpy(), z[:, j].numpy()).pvalue)
        ones = int((u[:, j] > 0).sum())
        pvalues.append(stats.binomtest(ones, N, torch.sigmoid(logits[j]).item()).pvalue)
    assert min(pvalues) > ALPHA / len(pvalues), pvalues


def test_conditional_samples_are_differentiable_in_the_logits():
    """The top coordinate is logsumexp(logits) - log(-log v): its gradient is softmax."""
    logits = torch.tensor([0.2, -0.4, 1.0], dtype=torch.float64, requires_grad=True)
    onehot = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    z = gumbel_given_onehot(logits, onehot)
    (grad,) = torch.autograd.grad(z[1], logits)
    assert torch.allclose(grad, torch.softmax(logits.detach(), 0))
    # the others are increasing in their own logit and in the top value
    (grad0,) = torch.autograd.grad(gumbel_given_onehot(logits, onehot)[0], logits)
    assert grad0[0] > 0 and grad0[1] > 0
    b = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    z = logistic_given_bernoulli(logits, b)
    (grad,) = torch.autograd.grad(z.sum(), logits)
    assert torch.isfinite(grad).all() and (grad > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_and_zero_probability_categories_are_safe(dtype):
    torch.manual_seed(2)
    logits = torch.tensor([0.0, float("-inf"), 1.0], dtype=dtype, requires_grad=True)
    onehot = torch.nn.functional.one_hot(torch.tensor([0, 2, 2, 0]), 3).to(dtype)
    z = gumbel_given_onehot(logits, onehot)
    assert z.dtype == dtype and torch.equal(z.argmax(-1), onehot.argmax(-1))
    assert not torch.isnan(z).any()
    (grad,) = torch.autograd.grad(relax_onehot(z, 0.5).sum(-1).sum(), logits)
    assert torch.isfinite(grad).all()
    assert logistic_given_bernoulli(torch.zeros(3, dtype=dtype), torch.ones(3)).dtype == dtype


def test_relaxations():
    z = torch.tensor([[1.0, 2.0, -1.0]])
    assert torch.allclose(relax_onehot(z, 0.5), torch.softmax(2 * z, -1))
    assert torch.allclose(relax_bernoulli(z, 2.0), torch.sigmoid(z / 2))
