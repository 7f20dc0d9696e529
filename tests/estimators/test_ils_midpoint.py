"""The second-order ILS target (``projection="midpoint"``), the package default.

Oracles: ReinMax's backward written as the paper's Algorithm 2 (stop-gradients,
differentiated by plain autograd), the stated formula
``2 (p1 - h(p1)) - (pi - h(pi)) / 2`` computed with ``torch.softmax``, and exact
expectations over the draw (summed over the categories with their masses).
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI

from pyro_ils import ILSBernoulli, ILSCategorical, ILSOneHotCategorical, TraceILS_ELBO
from pyro_ils.ops.ils_onehot import ils_onehot_from_index

K, B = 5, 7


def _setup(seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, K, dtype=torch.float64, generator=gen)
    index = torch.randint(K, (B,), generator=gen)
    a = torch.randn(B, K, dtype=torch.float64, generator=gen)  # dL/dz of L = <a, z>
    return logits, index, a


def _ils_grad(logits, index, a, step_size, projection="midpoint"):
    leaf = logits.clone().requires_grad_()
    z = ils_onehot_from_index(leaf, index, step_size=step_size, projection=projection)
    (z * a).sum().backward()
    return leaf.grad


def _reinmax_algorithm2(logits, index, a, tau=1.0):
    """Liu et al. (2023), Algorithm 2, as autograd sees it."""
    theta = logits.clone().requires_grad_()
    d = F.one_hot(index, theta.size(-1)).to(theta.dtype)
    pi0 = torch.softmax(theta, -1)
    pi1 = (d + torch.softmax(theta / tau, -1)) / 2
    pi1 = torch.softmax((pi1.log() - theta).detach() + theta, -1)
    pi2 = 2 * pi1 - 0.5 * pi0
    out = pi2 - pi2.detach() + d
    (out * a).sum().backward()
    return theta.grad


def test_limit_is_reinmax_algorithm_2():
    logits, index, a = _setup()
    torch.testing.assert_close(_ils_grad(logits, index, a, 0.0), _reinmax_algorithm2(*_setup()))


def test_small_steps_approach_the_limit():
    logits, index, a = _setup(1)
    limit = _ils_grad(logits, index, a, 0.0)
    errors = [(_ils_grad(logits, index, a, c) / c - limit).abs().max() for c in (1e-1, 1e-2, 1e-3)]
    assert errors[0] > 10 * errors[2]  # O(c): each tenth of the step is about a tenth
    assert errors[2] < 1e-2 * limit.abs().max()


@pytest.mark.parametrize("c", [0.3, 1.0, 4.0])
def test_step_matches_the_stated_formula(c):
    logits, index, a = _setup(2)
    pi = torch.softmax(logits, -1)
    p1 = (pi + F.one_hot(index, K).double()) / 2

    def h(p):
        return torch.softmax(p.log() - c * a, -1)

    expected = 2 * (p1 - h(p1)) - 0.5 * (pi - h(pi))
    torch.testing.assert_close(_ils_grad(logits, index, a, c), expected)


def test_limit_is_unbiased_for_a_linear_loss():
    """ReinMax at temperature 1 is unbiased for ``L = <a, z>``: the expectation over the
    draw (exact, over the K categories) is the true gradient ``J(pi)^T a``."""
    logits, _, a = _setup(3)
    pi = torch.softmax(logits, -1)
    expected = sum(
        pi[:, k : k + 1] * _ils_grad(logits, torch.full((B,), k), a, 0.0) for k in range(K)
    )
    true = pi * (a - (pi * a).sum(-1, keepdim=True))
    torch.testing.assert_close(expected, true)


@pytest.mark.parametrize("c", [0.0, 0.3, 4.0])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_scaled_midpoint_is_the_midpoint_difference_over_the_step(c, tau):
    """``"midpoint_scaled"``: the midpoint target's ``pi - pi_D`` divided by ``c``
    (oracle: the stated formula with ``torch.softmax``), with the same limit at 0."""
    logits, index, a = _setup(12)
    got = _ils_grad_at(logits, index, a, c, tau, "midpoint_scaled")
    if c == 0:
        torch.testing.assert_close(got, _reinmax_algorithm2(logits, index, a, tau))
        return
    pi = torch.softmax(logits, -1)
    p1 = (torch.softmax(logits / tau, -1) + F.one_hot(index, K).double()) / 2

    def h(p):
        return torch.softmax(p.log() - c * a, -1)

    torch.testing.assert_close(got, (2 * (p1 - h(p1)) - 0.5 * (pi - h(pi))) / c)


def test_scaled_midpoint_approaches_reinmax_and_clips_large_gradients():
    logits, index, a = _setup(13)
    limit = _reinmax_algorithm2(logits, index, a)
    small = _ils_grad_at(logits, index, a, 1e-4, 1.0, "midpoint_scaled")
    assert (small - limit).abs().max() < 1e-3 * limit.abs().max()
    c = 0.5
    huge = _ils_grad_at(logits, index, 1e4 * a, c, 1.0, "midpoint_scaled")
    assert huge.abs().max() <= 2.5 / c
    assert _reinmax_algorithm2(logits, index, 1e4 * a).abs().max() > 100 * huge.abs().max()


def test_mirror_limit_is_straight_through():
    logits, index, a = _setup(4)
    pi = torch.softmax(logits, -1)
    true = pi * (a - (pi * a).sum(-1, keepdim=True))
    torch.testing.assert_close(_ils_grad(logits, index, a, 0.0, "mirror"), true)


@pytest.mark.parametrize("c", [0.0, 0.5])
def test_categories_outside_the_support_get_nothing(c):
    logits, _, a = _setup(5)
    logits[:, 0] = -torch.inf
    index = torch.randint(1, K, (B,), generator=torch.Generator().manual_seed(0))
    grad = _ils_grad(logits, index, a, c)
    assert torch.isfinite(grad).all()
    assert (grad[:, 0] == 0).all()
    assert grad[:, 1:].abs().sum() > 0


def test_distributions_default_to_the_limit():
    logits, index, a = _setup(6)
    expected = _reinmax_algorithm2(logits, index, a)
    for cls in (ILSCategorical, ILSOneHotCategorical):
        d = cls(logits=logits)
        assert (d.step_size, d.projection) == (0.0, "midpoint")
    b = ILSBernoulli(logits=torch.zeros(3))
    assert (b.step_size, b.projection) == (0.0, "midpoint")
    torch.testing.assert_close(_ils_grad(logits, index, a, 0.0), expected)


def test_bernoulli_limit_is_two_category_reinmax():
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(6, dtype=torch.float64, generator=gen)
    leaf = a.clone().requires_grad_()
    pyro.set_rng_seed(0)
    b = ILSBernoulli(logits=leaf).rsample()
    slope = torch.randn(6, dtype=torch.float64, generator=gen)
    (b * slope).sum().backward()
    pair = torch.stack([torch.zeros_like(a), a], -1)
    g = torch.stack([torch.zeros_like(slope), slope], -1)
    expected = _reinmax_algorithm2(pair, b.long(), g)
    # The logit a of the categories (0, a) receives the category-1 component.
    torch.testing.assert_close(leaf.grad, expected[:, 1])


def test_midpoint_limit_trains_the_readme_quickstart():
    """The README quickstart with the midpoint limit on its site (what the default gives
    a site with many alternatives): the three cluster locations are found within 0.5
    (the original method, step 1 from the vertex, ends near (-2.6, 1.3, 2.6) on this
    seed)."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    data = torch.cat([torch.randn(100) - 4, torch.randn(100), torch.randn(100) + 4])

    def model(data):
        locs = pyro.param("locs", torch.tensor([-1.0, 0.0, 1.0]))
        with pyro.plate("data", len(data), subsample_size=100) as idx:
            z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=data[idx])

    def guide(data):
        logits = pyro.param("logits", torch.zeros(len(data), 3))
        with pyro.plate("data", len(data), subsample_size=100) as idx:
            pyro.sample("z", dist.Categorical(logits=logits[idx]))

    elbo = TraceILS_ELBO(projection="midpoint")
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=elbo)
    for _ in range(500):
        svi.step(data)
    locs = pyro.param("locs").detach().sort().values
    assert (locs - torch.tensor([-4.0, 0.0, 4.0])).abs().max() < 0.5, locs


def _ils_grad_at(logits, index, a, step_size, temperature, projection="midpoint"):
    leaf = logits.clone().requires_grad_()
    z = ils_onehot_from_index(
        leaf, index, step_size=step_size, projection=projection, temperature=temperature
    )
    (z * a).sum().backward()
    return leaf.grad


@pytest.mark.parametrize("tau", [0.5, 2.0, 4.0])
def test_limit_at_a_temperature_is_reinmax_at_it(tau):
    logits, index, a = _setup(8)
    expected = _reinmax_algorithm2(logits, index, a, tau)
    torch.testing.assert_close(_ils_grad_at(logits, index, a, 0.0, tau), expected)
    assert not torch.allclose(expected, _reinmax_algorithm2(logits, index, a, 1.0))


@pytest.mark.parametrize("tau", [0.5, 3.0])
def test_step_at_a_temperature_matches_the_stated_formula(tau):
    logits, index, a = _setup(9)
    c = 0.7
    pi = torch.softmax(logits, -1)
    p1 = (torch.softmax(logits / tau, -1) + F.one_hot(index, K).double()) / 2

    def h(p):
        return torch.softmax(p.log() - c * a, -1)

    expected = 2 * (p1 - h(p1)) - 0.5 * (pi - h(pi))
    torch.testing.assert_close(_ils_grad_at(logits, index, a, c, tau), expected)


def test_distributions_carry_the_temperature_through_shapes_and_routing():
    logits, index, a = _setup(10)
    d = ILSOneHotCategorical(logits=logits, temperature=3.0)
    for shaped in (
        d.expand((2, B)),
        d.to_event(1).base_dist,
        d.mask(True).base_dist,
        d.with_options(),
    ):
        assert shaped.temperature == 3.0
    assert d.with_options(projection="mirror").temperature == 1.0
    pyro.set_rng_seed(0)
    leaf = logits.clone().requires_grad_()
    z = ILSOneHotCategorical(logits=leaf, temperature=3.0).rsample()
    (z * a).sum().backward()
    expected = _reinmax_algorithm2(logits, z.argmax(-1), a, 3.0)
    torch.testing.assert_close(leaf.grad, expected)
    # The Bernoulli version: two-category ReinMax at the temperature.
    gen = torch.Generator().manual_seed(11)
    t = torch.randn(6, dtype=torch.float64, generator=gen)
    slope = torch.randn(6, dtype=torch.float64, generator=gen)
    leaf = t.clone().requires_grad_()
    b = ILSBernoulli(logits=leaf, temperature=2.5).rsample()
    (b * slope).sum().backward()
    pair = torch.stack([torch.zeros_like(t), t], -1)
    g = torch.stack([torch.zeros_like(slope), slope], -1)
    torch.testing.assert_close(leaf.grad, _reinmax_algorithm2(pair, b.long(), g, 2.5)[:, 1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature must be a positive"),
        ({"temperature": float("inf")}, "temperature must be a positive"),
        ({"temperature": True}, "temperature must be a positive"),
        ({"temperature": 2.0, "projection": "mirror"}, "applies to projection in"),
    ],
)
def test_bad_temperatures_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ILSCategorical(logits=torch.zeros(3), **kwargs)


def test_a_site_dict_sets_the_temperature():
    from pyro import poutine

    from pyro_ils.poutine.routing import ILSMessenger

    def guide():
        pyro.sample("z", dist.Categorical(logits=torch.zeros(4)), infer={"ils": {"temperature": 2}})
        pyro.sample("w", dist.Categorical(logits=torch.zeros(4)))

    trace = poutine.trace(ILSMessenger(temperature=5.0)(guide)).get_trace()
    assert trace.nodes["z"]["fn"].temperature == 2.0
    assert trace.nodes["w"]["fn"].temperature == 5.0
    bad = {"ils": {"temperature": 2, "projection": "euclidean"}}
    with pytest.raises(ValueError, match="midpoint"):
        poutine.trace(
            ILSMessenger()(lambda: pyro.sample("z", dist.Bernoulli(0.5), infer=bad))
        ).get_trace()


def _general_limit(logits, onehot, g, support, weight, projection, tau):
    """The limit as the general path computes it: ``w (pi - pi_D)`` with
    ``pi_D = intermediate_target(z, g / w, 0, ...)``, zeroed where ``exact_onehot``
    zeroes it (draws of weight 0, categories outside the support)."""
    from pyro_ils.ops.draw_signal import per_draw_signal
    from pyro_ils.ops.projections import intermediate_target

    signal = per_draw_signal(g, weight, support)
    target = intermediate_target(onehot, signal, 0.0, projection, support, logits, tau)
    grad = weight.unsqueeze(-1) * (torch.softmax(logits, -1) - target)
    grad = grad.masked_fill((weight == 0).unsqueeze(-1), 0.0)
    return grad if support is None else grad.masked_fill(~support, 0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("num", [5, 40])
@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("projection", ["midpoint", "midpoint_scaled"])
def test_limit_closed_form_is_the_general_path(projection, tau, num, dtype):
    """``ILS(0, "midpoint").backward`` takes the limit in closed form; through the exact
    draw it gives the general path's gradient to rounding, with weights (scales, a
    masked-out draw), categories outside the support and non-finite incoming
    gradients. ``num = 40`` takes the built-in softmax, ``5`` the written-out one."""
    from pyro_ils.estimators import ILS
    from pyro_ils.ops.exact_draw import exact_onehot

    gen = torch.Generator().manual_seed(12)
    rows = 64
    logits = 3 * torch.randn(rows, num, dtype=torch.float64, generator=gen)
    support = torch.rand(rows, num, generator=gen) > 0.2
    support[:, 0] = True
    logits = logits.masked_fill(~support, -torch.inf).to(dtype)
    index = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=gen).squeeze(-1)
    onehot = F.one_hot(index, num).to(dtype)
    g = 10 * torch.randn(rows, num, dtype=torch.float64, generator=gen).to(dtype)
    g[0, 1], g[1, 2] = torch.inf, torch.nan
    weight = torch.rand(rows, dtype=torch.float64, generator=gen).to(dtype) * 3
    weight[3] = 0.0

    estimator = ILS(0.0, projection, tau)
    leaf = logits.clone().requires_grad_()
    z = exact_onehot(leaf, index, estimator, support=support, weight=weight)
    z.backward(g)
    expected = _general_limit(logits, onehot, g, support, weight, projection, tau)
    assert leaf.grad.isfinite().all()
    assert (leaf.grad[3] == 0).all() and (leaf.grad[~support] == 0).all()
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}
    # Rounding is relative to the incoming gradient (the terms that cancel are of its
    # size): compare each row in units of its largest finite incoming entry.
    scale = torch.nan_to_num(g).abs().clamp(max=torch.finfo(dtype).max ** 0.5)
    scale = scale.amax(-1, keepdim=True)
    torch.testing.assert_close(leaf.grad / scale, expected / scale, **tol)
