"""The forward pass of ILS is the exact draw.

Goodness of fit: 20,000 ``rsample()`` draws per batch entry, with parameters that
require grad (so the ILS path is taken), against the distribution's own
probabilities, by Pearson's chi-square. Each test makes ONE chi-square test
(the batch entries' bins are pooled, with ``ddof`` set so that the degrees of
freedom are ``sum(K_row - 1)``) and asserts ``p > 1e-4``: were the sampler exact
and the seed random, each such test would fail with probability 1e-4 (every
expected count is >= 500, so the chi-square approximation is accurate). The RNG
is seeded, so each test is deterministic.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import devices
from scipy.stats import chisquare

from pyro_ils import PROJECTIONS, ILSBernoulli, ILSCategorical, ILSIndexTensor, ILSOneHotCategorical

N = 20_000
P_MIN = 1e-4
DTYPES = [torch.float32, torch.float64]

# Rows of category probabilities (min 0.05 -> at least 1,000 expected draws per bin).
PROBS = torch.tensor(
    [
        [0.05, 0.10, 0.15, 0.20, 0.22, 0.28],
        [0.40, 0.05, 0.05, 0.30, 0.10, 0.10],
        [1 / 6] * 6,
    ],
    dtype=torch.float64,
)


def make_logits(dtype, device):
    # Unnormalized logits (a different offset per row) that require grad.
    offsets = torch.tensor([[0.0], [3.0], [-2.0]], dtype=torch.float64)
    return (PROBS.log() + offsets).to(device, dtype).requires_grad_()


def pooled_chisquare(counts, probs):
    """One chi-square test over rows of counts (R, K) against probs (R, K)."""
    counts = counts.double().cpu()
    n = counts.sum(-1, keepdim=True)
    assert (n == n[0]).all()
    expected = n * probs
    assert (expected >= 500).all()
    rows = counts.shape[0]
    return chisquare(counts.ravel().numpy(), expected.ravel().numpy(), ddof=rows - 1).pvalue


def category_counts(k, K):
    """counts[r, j] = number of draws equal to j in column r of k (shape (N, R))."""
    return torch.stack([torch.bincount(col, minlength=K) for col in k.T.cpu()])


def test_pooled_chisquare_detects_a_wrong_distribution():
    # The test has power: draws from slightly wrong probabilities are rejected.
    gen = torch.Generator().manual_seed(0)
    wrong = PROBS.clone()
    wrong[:, 0] += 0.02
    wrong /= wrong.sum(-1, keepdim=True)
    k = torch.multinomial(wrong, N, replacement=True, generator=gen).T
    assert pooled_chisquare(category_counts(k, 6), PROBS) < 1e-6
    k = torch.multinomial(PROBS, N, replacement=True, generator=gen).T
    assert pooled_chisquare(category_counts(k, 6), PROBS) > P_MIN


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_goodness_of_fit(dtype, device):
    logits = make_logits(dtype, device)
    pyro.set_rng_seed(101)
    k = ILSCategorical(logits=logits).rsample((N,))
    assert isinstance(k, ILSIndexTensor) and k.shape == (N, 3)
    assert pooled_chisquare(category_counts(k.as_subclass(torch.Tensor), 6), PROBS) > P_MIN


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
def test_onehot_categorical_goodness_of_fit(dtype, device):
    logits = make_logits(dtype, device)
    pyro.set_rng_seed(102)
    z = ILSOneHotCategorical(logits=logits).rsample((N,))
    assert z.requires_grad and z.shape == (N, 3, 6)
    assert ((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all()
    assert pooled_chisquare(z.detach().sum(0), PROBS) > P_MIN


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_goodness_of_fit(dtype, device):
    p = torch.tensor([0.05, 0.3, 0.5, 0.9], dtype=torch.float64)
    logits = (p.log() - (-p).log1p()).to(device, dtype).requires_grad_()
    pyro.set_rng_seed(103)
    b = ILSBernoulli(logits=logits).rsample((N,))
    assert b.requires_grad and b.shape == (N, 4)
    assert ((b == 0) | (b == 1)).all()
    ones = b.detach().sum(0).cpu()
    counts = torch.stack([N - ones, ones], -1)
    assert pooled_chisquare(counts, torch.stack([1 - p, p], -1)) > P_MIN


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("cls", [ILSCategorical, ILSOneHotCategorical])
def test_excluded_categories_goodness_of_fit(cls, device):
    # -inf logits and zero probs: never drawn; the other categories keep their law.
    probs = torch.tensor([[0.3, 0.0, 0.2, 0.5], [0.0, 0.6, 0.4, 0.0]], dtype=torch.float64)
    params = [
        dict(logits=probs.log().to(device).requires_grad_()),
        dict(probs=probs.clone().to(device).requires_grad_()),
    ]
    for i, param in enumerate(params):
        pyro.set_rng_seed(104 + i)
        draw = cls(**param).rsample((N,))
        if cls is ILSCategorical:
            counts = category_counts(draw.as_subclass(torch.Tensor), 4)
        else:
            assert draw.requires_grad
            counts = draw.detach().sum(0).cpu().long()
        excluded = probs == 0
        assert (counts[excluded] == 0).all()
        obs, exp = counts[~excluded].double(), N * probs[~excluded]
        # 2 rows with 3 and 2 live categories: 3 degrees of freedom, 5 bins.
        assert chisquare(obs.numpy(), exp.numpy(), ddof=1).pvalue > P_MIN


def _dists(dtype, device, param):
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(3, 5, generator=gen, dtype=torch.float64).to(device, dtype)
    a = torch.randn(3, generator=gen, dtype=torch.float64).to(device, dtype)
    if param == "logits":
        cat = dict(logits=logits.requires_grad_())
        bern = dict(logits=a.requires_grad_())
    else:
        cat = dict(probs=torch.softmax(logits, -1).detach().requires_grad_())
        bern = dict(probs=torch.sigmoid(a).detach().requires_grad_())
    return [
        (ILSCategorical, dist.Categorical, cat),
        (ILSOneHotCategorical, dist.OneHotCategorical, cat),
        (ILSBernoulli, dist.Bernoulli, bern),
    ]


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("param", ["logits", "probs"])
@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("sample_shape", [(), (7,), (2, 4)])
def test_rsample_equals_sample(sample_shape, projection, param, dtype, device):
    for ils_cls, base_cls, kwargs in _dists(dtype, device, param):
        d = ils_cls(**kwargs, step_size=0.5, projection=projection)
        base = base_cls(**kwargs)
        pyro.set_rng_seed(31)
        plain = d.sample(sample_shape)
        pyro.set_rng_seed(31)
        base_draw = base.sample(sample_shape)
        pyro.set_rng_seed(31)
        draw = d.rsample(sample_shape)
        pyro.set_rng_seed(31)
        with torch.no_grad():
            draw_no_grad = d.rsample(sample_shape)

        # The ILS path is active: the value carries a backward to the parameter.
        if ils_cls is ILSCategorical:
            assert isinstance(draw, ILSIndexTensor)
            value = draw.as_subclass(torch.Tensor)
        else:
            assert draw.requires_grad
            value = draw.detach()
        assert not draw_no_grad.requires_grad and not isinstance(draw_no_grad, ILSIndexTensor)

        # Same value, dtype, shape and device as the base class's sample().
        for other in (plain, base_draw, draw_no_grad):
            assert value.dtype == other.dtype and value.shape == other.shape
            assert value.device == other.device
            assert torch.equal(value, other)
        assert value.shape == sample_shape + d.batch_shape + d.event_shape
        if ils_cls is ILSCategorical:
            assert value.dtype == torch.int64
        else:
            assert value.dtype == dtype
        assert bool(d.support.check(value).all())
