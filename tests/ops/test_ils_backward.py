"""The ILS backward against an independent, test-side computation.

For an upstream gradient ``g = dL/dz`` the logits must receive the gradient of
``KL(pi_D || softmax(logits))`` with ``pi_D`` held fixed (``"euclidean"``,
``"normalize"``) or the reference code's ``-pi_D / (pi + 1e-7)``
(``"reference"``). Here ``pi_D`` is built by the test's own implementation of
the maps (with a sorting-free bisection projection, in float64) and the KL
gradient is taken by plain autograd, never by the ``pi - pi_D`` formula.

Upstream gradients are drawn on a grid of 1/16 and step sizes are powers of
two, so that ``z - c * g`` and the normalize map's total are exact in float32
and float64 alike and both sides take the same branch of the normalize map.
"""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from common import oracle_project
from conftest import devices

from pyro_ils import (
    PROJECTIONS,
    ILSBernoulli,
    ILSCategorical,
    ILSOneHotCategorical,
    ils_onehot,
)

DTYPES = [torch.float32, torch.float64]
BATCH_SHAPES = [(), (3,), (2, 3)]
REFERENCE_EPS = 1e-7


# ----------------------------------------------------------------------------
# Test-side oracle (float64, CPU)
# ----------------------------------------------------------------------------


def oracle_target(z, g, c, projection, support):
    """pi_D = h(z - c g) on the support, by the maps' definitions (float64)."""
    z, g = z.detach().cpu().double(), g.detach().cpu().double()
    support = support.cpu()
    if projection == "euclidean":
        return oracle_project((z - c * g).masked_fill(~support, -torch.inf))
    g_k = (g * z).sum(-1, keepdim=True)
    new = torch.where(support, z - c * (g - g_k), torch.zeros_like(z))
    total = new.sum(-1, keepdim=True)
    normalized = new / torch.where(total > 0, total, torch.ones_like(total))
    fallback = oracle_project(new.masked_fill(~support, -torch.inf))
    return torch.where(total > 0, normalized, fallback)


def oracle_logits_grad(logits, z, g, c, projection):
    """The ILS gradient to ``logits`` (shape of ``z``), per row, in float64 on CPU."""
    logits = logits.detach().cpu().double().expand(z.shape).clone().requires_grad_()
    support = logits > -torch.inf
    pi_d = oracle_target(z, g, c, projection, support)
    if projection == "reference":
        pi = torch.softmax(logits.detach(), -1)
        return torch.where(support, -pi_d / (pi + REFERENCE_EPS), torch.zeros_like(pi))
    # KL(pi_D || pi) = sum pi_D log pi_D - sum pi_D log pi. The first term does not depend
    # on the logits (and is undefined where the normalize map gives negative entries):
    # differentiate the cross-entropy term. Excluded categories contribute nothing.
    log_pi = torch.log_softmax(logits, -1)
    cross_entropy = -torch.where(support, pi_d * log_pi, torch.zeros_like(log_pi)).sum()
    (grad,) = torch.autograd.grad(cross_entropy, logits)
    return grad


def dyadic_randn(shape, gen, scale=1.0):
    return torch.round(scale * torch.randn(shape, generator=gen, dtype=torch.float64) * 16) / 16


def tolerances(dtype, projection="euclidean"):
    if dtype == torch.float64:
        return dict(rtol=1e-9, atol=1e-10)
    if projection == "reference":  # divides by pi: relative error of pi in float32
        return dict(rtol=1e-4, atol=1e-4)
    return dict(rtol=1e-5, atol=1e-5)


def assert_onehot(z, shape, dtype, device):
    assert z.shape == shape and z.dtype == dtype and z.device.type == torch.device(device).type
    assert ((z == 0) | (z == 1)).all()
    assert (z.sum(-1) == 1).all()


# ----------------------------------------------------------------------------
# ils_onehot: the gradient to logits
# ----------------------------------------------------------------------------


def test_oracle_target_by_hand():
    # The test-side maps on hand-computed cases (z = e_0, c = 1).
    z = torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=torch.float64)
    g = torch.tensor([[0.0, -0.5, 0.25], [0.0, -0.5, 1.5], [0.0, -0.5, 3.0]], dtype=torch.float64)
    support = torch.ones(3, 3, dtype=torch.bool)
    # normalize: new = (1, .5, -.25) total 1.25; new = (1, .5, -1.5) total 0 -> fallback;
    # new = (1, .5, -3) total -1.5 -> fallback; the fallback projection is (.75, .25, 0).
    expected = torch.tensor(
        [[0.8, 0.4, -0.2], [0.75, 0.25, 0.0], [0.75, 0.25, 0.0]], dtype=torch.float64
    )
    torch.testing.assert_close(oracle_target(z, g, 1.0, "normalize", support), expected)
    euclid = torch.tensor([[0.75, 0.25, 0.0]] * 3, dtype=torch.float64)
    torch.testing.assert_close(oracle_target(z, g, 1.0, "euclidean", support), euclid)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [1, 3, 10])
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("step_size", [0.5, 2.0])
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_logits_gradient(projection, step_size, batch_shape, K, dtype, device):
    seed = 100 * K + 10 * len(batch_shape) + int(4 * step_size)
    gen = torch.Generator().manual_seed(seed)
    shape = batch_shape + (K,)
    logits = (1.5 * torch.randn(shape, generator=gen, dtype=torch.float64)).to(device, dtype)
    logits.requires_grad_()
    g = dyadic_randn(shape, gen).to(device, dtype)

    pyro.set_rng_seed(seed)
    z = ils_onehot(logits, step_size, projection)
    assert_onehot(z, shape, dtype, device)
    assert z.requires_grad
    (z * g).sum().backward()

    expected = oracle_logits_grad(logits, z, g, step_size, projection)
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(
        logits.grad.double().cpu(), expected, **tolerances(dtype, projection)
    )


@pytest.mark.parametrize(
    "step_size, dtype",
    [(0.25, torch.float32), (0.25, torch.float64), (1.0, torch.float32), (1.0, torch.float64)]
    # c = 0.3 is not exact in float32, where the normalize map's branch could then differ.
    + [(0.3, torch.float64)],
)
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_logits_gradient_many_rows(projection, step_size, dtype):
    # Many rows, so that every branch of every map is exercised (checked below).
    gen = torch.Generator().manual_seed(7)
    N, K = 500, 5
    logits = torch.randn(N, K, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    g = dyadic_randn((N, K), gen, scale=2.0).to(dtype)
    pyro.set_rng_seed(7)
    z = ils_onehot(logits, step_size, projection)
    (z * g).sum().backward()
    expected = oracle_logits_grad(logits, z, g, step_size, projection)
    torch.testing.assert_close(logits.grad.double(), expected, **tolerances(dtype, projection))

    # The draws visit every category, and the targets cover all regimes.
    assert (z.sum(0) > 0).all()
    support = torch.ones(N, K, dtype=torch.bool)
    pi_d = oracle_target(z, g, step_size, projection, support)
    moved = (pi_d - z.double()).abs().amax(-1) > 1e-3
    assert moved.any() and (~moved).any()
    if projection == "euclidean":
        interior = (pi_d > 0).sum(-1) > 1
        assert interior.any()
    else:
        zd, gd = z.double(), g.double()
        total = (zd - step_size * (gd - (gd * zd).sum(-1, keepdim=True))).sum(-1)
        assert (total > 0).any() and (total <= 0).any()


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_normalize_map_and_fallback_by_hand(projection, dtype, device):
    # K = 3 uniform logits; g is built around the drawn category k (g[k] = 0), c = 1.
    #   row 0: new = z - c (g - g_k) has total 1.25 > 0 -> normalized, with a negative entry
    #   row 1: total exactly 0 -> fallback to the projection of new
    #   row 2: total -1.5 < 0 -> fallback
    # Normalize targets (ordered as (k, j1, j2)): (.8, .4, -.2), (.75, .25, 0), (.75, .25, 0).
    # Euclidean target: (.75, .25, 0) in every row.
    logits = torch.zeros(3, 3, dtype=dtype, device=device, requires_grad=True)
    pyro.set_rng_seed(0)
    z = ils_onehot(logits, 1.0, projection)
    k = z.argmax(-1).tolist()
    g = torch.zeros(3, 3, dtype=dtype, device=device)
    pi_d = torch.zeros(3, 3, dtype=torch.float64)
    if projection == "euclidean":
        targets = [(0.75, 0.25, 0.0)] * 3
    else:
        targets = [(0.8, 0.4, -0.2), (0.75, 0.25, 0.0), (0.75, 0.25, 0.0)]
    for row, (g_j2, target) in enumerate(zip([0.25, 1.5, 3.0], targets, strict=True)):
        j1, j2 = (k[row] + 1) % 3, (k[row] + 2) % 3
        g[row, j1], g[row, j2] = -0.5, g_j2
        pi_d[row, k[row]], pi_d[row, j1], pi_d[row, j2] = target
    (z * g).sum().backward()
    if projection == "reference":
        expected = -pi_d / (1 / 3 + REFERENCE_EPS)
    else:
        expected = 1 / 3 - pi_d
    torch.testing.assert_close(logits.grad.double().cpu(), expected, **tolerances(dtype))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_upstream_gradient_targets_the_draw(dtype, device):
    # g = 0: pi_D = z for every map, so the logits receive pi - z (the score direction).
    logits = torch.randn(50, 4, dtype=torch.float64).to(device, dtype).requires_grad_()
    for projection in ("euclidean", "normalize"):
        pyro.set_rng_seed(3)
        z = ils_onehot(logits, 1.0, projection)
        (z * 0).sum().backward()
        expected = torch.softmax(logits.detach(), -1) - z.detach()
        torch.testing.assert_close(logits.grad, expected)
        logits.grad = None


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_neg_inf_logits(projection, dtype, device):
    N = 4000
    base = torch.tensor([0.3, -torch.inf, 1.0, -torch.inf, -0.5], dtype=dtype, device=device)
    logits = base.clone().requires_grad_()
    excluded = torch.isinf(base)
    gen = torch.Generator().manual_seed(11)
    g = dyadic_randn((N, 5), gen).to(device, dtype)
    # A strong pull towards the excluded categories: were they not excluded from the
    # target, they would receive mass.
    g[:, excluded] = -8.0
    pyro.set_rng_seed(11)
    z = ils_onehot(logits.expand(N, 5), 1.0, projection)
    assert_onehot(z, (N, 5), dtype, device)
    assert (z[:, excluded] == 0).all()  # never drawn
    assert (z.sum(0)[~excluded] > 0).all()
    (z * g).sum().backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    assert (grad[excluded] == 0).all()
    expected = oracle_logits_grad(logits, z, g, 1.0, projection).sum(0)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else tolerances(dtype)
    torch.testing.assert_close(grad.double().cpu(), expected, **tol)


# ----------------------------------------------------------------------------
# Distributions
# ----------------------------------------------------------------------------


def _projection_params():
    return [
        "euclidean",
        "normalize",
        "reference",
    ]


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("projection", _projection_params())
def test_onehot_distribution_matches_ils_onehot(projection, batch_shape, dtype, device):
    K, c = 4, 2.0
    gen = torch.Generator().manual_seed(5)
    shape = batch_shape + (K,)
    base = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
    g = dyadic_randn(shape, gen).to(device, dtype)

    L1 = base.clone().requires_grad_()
    pyro.set_rng_seed(21)
    z1 = ils_onehot(L1, c, projection)
    (z1 * g).sum().backward()

    L2 = base.clone().requires_grad_()
    pyro.set_rng_seed(21)
    z2 = ILSOneHotCategorical(logits=L2, step_size=c, projection=projection).rsample()
    (z2 * g).sum().backward()

    assert torch.equal(z1, z2)
    assert z2.dtype == dtype and z2.shape == shape
    torch.testing.assert_close(L2.grad, L1.grad)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("projection", _projection_params())
def test_categorical_distribution_matches_ils_onehot(projection, dtype, device):
    # ILSCategorical's integer draw, read through indexing (x[z] = <z, x>), gives the
    # same draws and the same logits gradient as ils_onehot with g = x.
    N, K, c = 200, 4, 1.0
    gen = torch.Generator().manual_seed(6)
    base = torch.randn(K, generator=gen, dtype=torch.float64).to(device, dtype)
    x = dyadic_randn((K,), gen).to(device, dtype)

    L1 = base.clone().requires_grad_()
    pyro.set_rng_seed(22)
    z1 = ils_onehot(L1.expand(N, K), c, projection)
    (z1 * x).sum().backward()

    L2 = base.clone().requires_grad_()
    pyro.set_rng_seed(22)
    d = ILSCategorical(logits=L2.expand(N, K), step_size=c, projection=projection)
    k2 = d.rsample()
    x[k2].sum().backward()

    assert torch.equal(z1.argmax(-1), k2.as_subclass(torch.Tensor))
    torch.testing.assert_close(L2.grad, L1.grad)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("projection", ["euclidean", "normalize"])
def test_distributions_neg_inf_logits(projection, dtype, device):
    # -inf logits through the distributions: excluded from the target (zero, finite
    # gradient) and the same gradient as ils_onehot on the same draws.
    N, K = 300, 5
    base = torch.tensor([0.3, -torch.inf, 1.0, -torch.inf, -0.5], dtype=dtype, device=device)
    excluded = torch.isinf(base)
    gen = torch.Generator().manual_seed(18)
    x = dyadic_randn((K,), gen).to(device, dtype)
    x[excluded] = -8.0  # a pull towards the excluded categories

    L0 = base.clone().requires_grad_()
    pyro.set_rng_seed(18)
    (ils_onehot(L0.expand(N, K), 1.0, projection) * x).sum().backward()
    assert torch.isfinite(L0.grad).all() and (L0.grad[excluded] == 0).all()

    L1 = base.clone().requires_grad_()
    pyro.set_rng_seed(18)
    d = ILSOneHotCategorical(logits=L1.expand(N, K), projection=projection)
    (d.rsample() * x).sum().backward()
    L2 = base.clone().requires_grad_()
    pyro.set_rng_seed(18)
    k = ILSCategorical(logits=L2.expand(N, K), projection=projection).rsample()
    x[k].sum().backward()
    for L in (L1, L2):
        assert torch.isfinite(L.grad).all() and (L.grad[excluded] == 0).all()
        torch.testing.assert_close(L.grad, L0.grad)


def _logits_from_probs(p):
    """The Categorical parametrization written out: logits = log(clamp(p / sum p))."""
    eps = torch.finfo(p.dtype).eps
    return (p / p.sum(-1, keepdim=True)).clamp(eps, 1 - eps).log()


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_categorical_zero_probs(projection, dtype, device):
    N, c = 2000, 1.0
    p = torch.tensor([0.2, 0.0, 0.5, 0.3], dtype=dtype, device=device, requires_grad=True)
    gen = torch.Generator().manual_seed(12)
    x = dyadic_randn((4,), gen).to(device, dtype)
    x[1] = -8.0  # pulls towards the impossible category
    d = ILSCategorical(probs=p, step_size=c, projection=projection)
    pyro.set_rng_seed(12)
    k = d.rsample((N,))
    assert k.dtype == torch.int64 and k.shape == (N,)
    kk = k.as_subclass(torch.Tensor)
    assert (kk != 1).all()  # the zero-probability category is never drawn
    assert set(kk.unique().tolist()) == {0, 2, 3}
    x[k].sum().backward()
    assert torch.isfinite(p.grad).all()

    # Expected: the ILS logits gradient on the support (zero on the excluded category),
    # pulled back through the probs -> logits parametrization by autograd.
    p64 = p.detach().cpu().double().requires_grad_()
    logits64 = _logits_from_probs(p64)
    z = torch.nn.functional.one_hot(kk.cpu(), 4).double()
    support = (p64 > 0).expand(N, 4)
    pi_d = oracle_target(z, x.double().cpu().expand(N, 4), c, projection, support)
    pi = torch.softmax(logits64.detach(), -1)
    if projection == "reference":
        G = -pi_d / (pi + REFERENCE_EPS)
    else:
        G = pi - pi_d
    G = torch.where(support, G, torch.zeros_like(G)).sum(0)
    assert G[1] == 0
    (expected,) = torch.autograd.grad((logits64 * G).sum(), p64)
    torch.testing.assert_close(p.grad.double().cpu(), expected, rtol=1e-4, atol=1e-3)
    if projection != "reference":
        # d KL / d probs = -pi_D / pi (+ a constant, invisible on the simplex); the
        # excluded category gets (next to) nothing.
        manual = torch.where(support, 1 - pi_d / p64.detach(), torch.zeros_like(pi_d)).sum(0)
        torch.testing.assert_close(p.grad.double().cpu(), manual, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_onehot_categorical_probs_gradient(projection, dtype, device):
    N, K, c = 300, 5, 1.0
    gen = torch.Generator().manual_seed(13)
    p = torch.rand(3, K, generator=gen, dtype=torch.float64) + 0.05
    p = p.to(device, dtype).requires_grad_()
    g = dyadic_randn((N, 3, K), gen).to(device, dtype)
    pyro.set_rng_seed(13)
    z = ILSOneHotCategorical(probs=p, step_size=c, projection=projection).rsample((N,))
    assert_onehot(z, (N, 3, K), dtype, device)
    (z * g).sum().backward()
    assert torch.isfinite(p.grad).all() and (p.grad != 0).any()

    p64 = p.detach().cpu().double().requires_grad_()
    logits64 = _logits_from_probs(p64)
    G = oracle_logits_grad(logits64, z, g, c, projection).sum(0)
    (expected,) = torch.autograd.grad((logits64 * G).sum(), p64)
    torch.testing.assert_close(p.grad.double().cpu(), expected, rtol=1e-4, atol=1e-3)


def bernoulli_target(b, gb, c, projection):
    """pi_D[1] for the draw b and dL/db, in closed form (K = 2)."""
    b, gb = b.double(), gb.double()
    if projection == "euclidean":
        # proj((x, y)) = (1 - t, t) with t = clamp((1 + y - x) / 2, 0, 1), (x, y) = (1-b, b-c*gb)
        return (b - c * gb / 2).clamp(0, 1)
    # normalize: b = 1 -> new = (c*gb, 1); b = 0 -> new = (1, -c*gb); a non-positive
    # total falls back to the projection, which is the vertex b itself there.
    total = torch.where(b == 1, 1 + c * gb, 1 - c * gb)
    num = torch.where(b == 1, torch.ones_like(b), -c * gb)
    return torch.where(total > 0, num / torch.where(total > 0, total, 1.0), b)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("step_size", [0.5, 2.0])
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_bernoulli_gradient(projection, step_size, dtype, device):
    N = 400
    gen = torch.Generator().manual_seed(14)
    a = (2 * torch.randn(6, generator=gen, dtype=torch.float64)).to(device, dtype)
    a.requires_grad_()
    gb = dyadic_randn((N, 6), gen, scale=1.5).to(device, dtype)
    pyro.set_rng_seed(14)
    b = ILSBernoulli(logits=a, step_size=step_size, projection=projection).rsample((N,))
    assert b.shape == (N, 6) and b.dtype == dtype
    assert ((b == 0) | (b == 1)).all()
    (b * gb).sum().backward()

    pi_d1 = bernoulli_target(b.detach().cpu(), gb.cpu(), step_size, projection)
    sig = torch.sigmoid(a.detach().cpu().double())
    if projection == "reference":
        expected = (-pi_d1 / (sig + REFERENCE_EPS)).sum(0)
    else:
        expected = (sig - pi_d1).sum(0)
    torch.testing.assert_close(a.grad.double().cpu(), expected, rtol=1e-5, atol=1e-4)

    # The closed form agrees with the generic K = 2 computation on logits (0, a).
    pair = torch.stack([torch.zeros_like(a), a], -1).detach()
    z = torch.stack([1 - b, b], -1).detach()
    g = torch.stack([torch.zeros_like(gb), gb], -1)
    generic = oracle_logits_grad(pair, z, g, step_size, projection)[..., 1].sum(0)
    torch.testing.assert_close(generic, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_bernoulli_probs_gradient(projection, dtype, device):
    N, c = 400, 1.0
    p = torch.tensor([0.0, 0.1, 0.5, 0.8, 1.0], dtype=dtype, device=device, requires_grad=True)
    gen = torch.Generator().manual_seed(15)
    gb = dyadic_randn((N, 5), gen).to(device, dtype)
    pyro.set_rng_seed(15)
    b = ILSBernoulli(probs=p, step_size=c, projection=projection).rsample((N,))
    assert (b[:, 0] == 0).all() and (b[:, -1] == 1).all()
    (b * gb).sum().backward()
    assert torch.isfinite(p.grad).all()
    # At p = 0 and p = 1 the clamped parametrization passes no gradient.
    assert (p.grad[[0, -1]] == 0).all()
    # Interior: d/dp = d/da * da/dp with a = logit(p), da/dp = 1 / (p (1 - p)).
    pi_d1 = bernoulli_target(b.detach().cpu(), gb.cpu(), c, projection)
    p64 = p.detach().cpu().double()
    if projection == "reference":
        grad_a = (-pi_d1 / (p64 + REFERENCE_EPS)).sum(0)
    else:
        grad_a = (p64 - pi_d1).sum(0)
    expected = grad_a / (p64 * (1 - p64))
    torch.testing.assert_close(p.grad.double().cpu()[1:-1], expected[1:-1], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("a0", [-torch.inf, torch.inf])
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_bernoulli_infinite_logit(projection, a0, device):
    # A degenerate Bernoulli (probs 0 or 1) is a valid distribution; its draws are constant
    # and the ILS gradient must stay finite, exactly zero for the infinite logit (the other
    # category is excluded, so the target is the draw itself).
    a = torch.tensor([a0, 0.5], device=device, requires_grad=True)
    pyro.set_rng_seed(17)
    b = ILSBernoulli(logits=a, projection=projection).rsample((50,))
    assert (b[:, 0] == float(a0 > 0)).all()
    (b * -1.0).sum().backward()
    assert torch.isfinite(a.grad).all()
    assert a.grad[0] == 0


@pytest.mark.parametrize("projection", ["euclidean", "normalize"])
@pytest.mark.parametrize("scale", [0.25, 4.0])
def test_site_weight_from_poutine_scale(scale, projection):
    # Under poutine.scale(w) the logits receive w * (pi - h(z - c g / w)).
    N, K, c = 100, 4, 1.0
    gen = torch.Generator().manual_seed(16)
    L = torch.randn(N, K, generator=gen, dtype=torch.float64).requires_grad_()
    g = dyadic_randn((N, K), gen)
    pyro.set_rng_seed(16)
    with poutine.scale(scale=scale):
        z = ILSOneHotCategorical(logits=L, step_size=c, projection=projection).rsample()
    (z * g).sum().backward()
    expected = scale * oracle_logits_grad(L, z, g / scale, c, projection)
    torch.testing.assert_close(L.grad, expected, rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------
# Option validation
# ----------------------------------------------------------------------------

BAD_STEP_SIZES = [0, 0.0, -1.0, float("nan"), float("inf"), "1.0"]


def _constructors():
    return {
        "ils_onehot": lambda **kw: ils_onehot(torch.zeros(3), **kw),
        "ILSCategorical": lambda **kw: ILSCategorical(logits=torch.zeros(3), **kw),
        "ILSOneHotCategorical": lambda **kw: ILSOneHotCategorical(logits=torch.zeros(3), **kw),
        "ILSBernoulli": lambda **kw: ILSBernoulli(logits=torch.zeros(()), **kw),
    }


@pytest.mark.parametrize("name", list(_constructors()))
@pytest.mark.parametrize("step_size", BAD_STEP_SIZES, ids=repr)
def test_bad_step_size(name, step_size):
    make = _constructors()[name]
    with pytest.raises(ValueError, match="step_size"):
        make(step_size=step_size, projection="euclidean")


@pytest.mark.parametrize("name", list(_constructors()))
@pytest.mark.parametrize("projection", ["bogus", "Euclidean", ""])
def test_bad_projection(name, projection):
    make = _constructors()[name]
    with pytest.raises(ValueError, match="projection"):
        make(step_size=1.0, projection=projection)


@pytest.mark.parametrize("name", list(_constructors()))
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_good_options_accepted(name, projection):
    make = _constructors()[name]
    for step_size in [1, 0.01, 3.5, torch.tensor(2.0)]:
        out = make(step_size=step_size, projection=projection)
        if not isinstance(out, torch.Tensor):
            assert out.step_size == float(step_size) and out.projection == projection
            assert out.has_rsample


def test_ils_onehot_rejects_bad_logits():
    with pytest.raises(ValueError, match="logits"):
        ils_onehot(torch.tensor(0.5))
    with pytest.raises(ValueError, match="logits"):
        ils_onehot(torch.tensor([0, 1]))
