"""Straight-through and ST-Gumbel distributions (pyro_ils.estimators.straight_through).

Statistical tests are seeded, hence deterministic; each states the probability
with which it would fail for a correct implementation under a random seed (its
false-alarm rate). Exact tests use ``torch.testing.assert_close`` at the dtype's
default tolerances.

The ``check_*`` helpers are shared with ``test_estimators_reinmax.py``.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from conftest import devices
from pyro.infer import Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from scipy.stats import chisquare, ks_2samp, norm

from pyro_ils import ILSIndexTensor
from pyro_ils.distributions.surrogate import SurrogateIndependent
from pyro_ils.estimators import (
    STCategorical,
    STGumbelCategorical,
    STGumbelOneHotCategorical,
    STOneHotCategorical,
)
from pyro_ils.estimators.straight_through import (
    gumbel_given_argmax,
    st_gumbel_onehot,
    straight_through_onehot,
)

DTYPES = [torch.float32, torch.float64]
P_MIN = 1e-4  # false-alarm rate of each statistical test
N = 20_000

# Rows of category probabilities (min 0.05 -> at least 1,000 expected draws per bin).
PROBS = torch.tensor(
    [
        [0.05, 0.10, 0.15, 0.20, 0.22, 0.28],
        [0.40, 0.05, 0.05, 0.30, 0.10, 0.10],
        [1 / 6] * 6,
    ],
    dtype=torch.float64,
)

ONEHOT_CLASSES = [(STOneHotCategorical, {}), (STGumbelOneHotCategorical, {"temperature": 0.7})]
INT_CLASSES = [(STCategorical, {}), (STGumbelCategorical, {"temperature": 0.7})]
ALL_CLASSES = ONEHOT_CLASSES + INT_CLASSES


def _id(param):
    return param[0].__name__ if isinstance(param, tuple) else None


def is_onehot_class(cls) -> bool:
    return issubclass(cls, dist.OneHotCategorical)


def plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_subclass(torch.Tensor) if isinstance(x, ILSIndexTensor) else x


def as_index(cls, value: torch.Tensor) -> torch.Tensor:
    """The drawn categories, whatever the class's value type."""
    return plain(value).argmax(-1) if is_onehot_class(cls) else plain(value)


def draw_onehot(cls, d, sample_shape=torch.Size()) -> torch.Tensor:
    """``d.rsample()`` as a differentiable float one-hot (integer draws via F.one_hot)."""
    value = d.rsample(sample_shape)
    if is_onehot_class(cls):
        return value
    logits = getattr(d, "base_dist", d).logits
    return torch.nn.functional.one_hot(value, logits.size(-1)).to(logits.dtype)


def make_logits(dtype, device="cpu"):
    offsets = torch.tensor([[0.0], [3.0], [-2.0]], dtype=torch.float64)
    return (PROBS.log() + offsets).to(device, dtype).requires_grad_()


# ---------------------------------------------------------------------------
# Shared checks
# ---------------------------------------------------------------------------


def check_goodness_of_fit(cls, opts, dtype, device):
    """Pooled Pearson chi-square of N rsample() draws per row against PROBS.

    One test, degrees of freedom sum(K_row - 1), every expected count >= 500;
    false-alarm rate P_MIN.
    """
    logits = make_logits(dtype, device)
    pyro.set_rng_seed(101)
    k = as_index(cls, cls(logits=logits, **opts).rsample((N,)))
    assert k.shape == (N, 3) and k.device.type == device
    counts = torch.stack([torch.bincount(col, minlength=6) for col in k.T.cpu()]).double()
    expected = N * PROBS
    assert (expected >= 500).all()
    p = chisquare(counts.ravel().numpy(), expected.ravel().numpy(), ddof=2).pvalue
    assert p > P_MIN


def check_rsample_equals_sample(cls, opts):
    logits = make_logits(torch.float64)
    d = cls(logits=logits, **opts)
    pyro.set_rng_seed(3)
    expected = d.sample((50,))
    pyro.set_rng_seed(3)
    assert torch.equal(plain(d.rsample((50,))), plain(expected))


def check_support(cls, opts, dtype, reference_grad):
    """-inf logits / zero probs: never drawn; zero, finite gradient there; formula elsewhere.

    ``reference_grad(logits, onehot, g)`` is the defining formula in plain autograd.
    """
    logits = torch.tensor(
        [[0.3, -torch.inf, 1.0, -0.5], [-torch.inf, 2.0, -torch.inf, 0.0]], dtype=dtype
    ).requires_grad_()
    # Huge entries of g at the impossible categories must not leak (nor give NaN).
    g = torch.tensor([[0.5, 1e30, -1.0, 2.0], [-1e30, 1.0, 1e30, -0.3]], dtype=dtype)
    g_clean = g.masked_fill(logits.detach() == -torch.inf, 0.0)
    pyro.set_rng_seed(7)
    d = cls(logits=logits, **opts)
    for _ in range(20):
        z = draw_onehot(cls, d)
        assert (z.detach()[logits.detach() == -torch.inf] == 0).all()
        (grad,) = torch.autograd.grad((z * g).sum(), logits)
        assert torch.isfinite(grad).all()
        assert (grad[logits.detach() == -torch.inf] == 0).all()
        torch.testing.assert_close(grad, reference_grad(logits, z.detach(), g_clean))
    # Zero probabilities given as probs: same behaviour, gradient to probs finite.
    probs = torch.tensor([[0.2, 0.0, 0.5, 0.3], [0.0, 0.6, 0.0, 0.4]], dtype=dtype)
    probs.requires_grad_()
    for _ in range(20):
        # (A new distribution each time: the logits it derives from probs hold a graph.)
        z = draw_onehot(cls, cls(probs=probs, **opts))
        assert (z.detach()[probs.detach() == 0] == 0).all()
        (grad,) = torch.autograd.grad((z * g).sum(), probs)
        assert torch.isfinite(grad).all()


def check_options_kept(cls, opts):
    logits = torch.randn(3, 4, requires_grad=True)
    d = cls(logits=logits, **opts)
    e = d.expand((2, 3))
    assert type(e) is cls and e.batch_shape == (2, 3)
    for name, value in opts.items():
        assert getattr(e, name) == value
    m = d.mask(torch.tensor([True, False, True]))
    assert isinstance(m, dist.MaskedDistribution) and type(m.base_dist) is cls
    assert m.has_rsample
    for name, value in opts.items():
        assert getattr(m.base_dist, name) == value
    ind = d.to_event(1)
    assert isinstance(ind, SurrogateIndependent) and type(ind.base_dist) is cls
    assert ind.event_shape == (3,) + d.event_shape
    for name, value in opts.items():
        assert getattr(ind.base_dist, name) == value
    # The masked-out draw gets no gradient, the others do.
    pyro.set_rng_seed(0)
    z = draw_onehot(cls, m)
    (grad,) = torch.autograd.grad((z * torch.randn(3, 4)).sum(), logits)
    assert (grad[1] == 0).all() and (grad[[0, 2]] != 0).any()
    # A site weight (scale) leaves the gradient of an unscaled loss unchanged
    # (the rule is linear in g; g carries the loss's own weight).
    a = torch.randn(3, 4)
    pyro.set_rng_seed(1)
    (g1,) = torch.autograd.grad((draw_onehot(cls, d) * a).sum(), logits)
    pyro.set_rng_seed(1)
    with poutine.scale(scale=5.0):
        (g5,) = torch.autograd.grad((draw_onehot(cls, d) * a).sum(), logits)
    torch.testing.assert_close(g1, g5)
    # A handler mask of False zeroes the draw's gradient.
    with poutine.mask(mask=torch.tensor([True, True, False])):
        (gm,) = torch.autograd.grad((draw_onehot(cls, d) * a).sum(), logits)
    assert (gm[2] == 0).all() and (gm[:2] != 0).any()


def check_temperature_validation(cls):
    for bad in (0.0, -1.0, math.inf, math.nan, "hot", None, torch.tensor([1.0, 2.0])):
        with pytest.raises(ValueError, match="temperature"):
            cls(logits=torch.zeros(3), temperature=bad)
    assert cls(logits=torch.zeros(3), temperature=torch.tensor(2.0)).temperature == 2.0


LOCS = torch.tensor([-2.0, 0.0, 1.5, 3.0])
DATA = torch.tensor([2.9, -2.2, 0.4])
PRIOR = torch.tensor([0.1, 0.2, 0.3, 0.4]).log()


def _mean(z, onehot):
    return (z * LOCS).sum(-1) if onehot else LOCS[z]


def make_model(onehot):
    prior_cls = dist.OneHotCategorical if onehot else dist.Categorical

    def model():
        with pyro.plate("N", 3):
            z = pyro.sample("z", prior_cls(logits=PRIOR))
            pyro.sample("x", dist.Normal(_mean(z, onehot), 1.0), obs=DATA)

    return model


Q_INIT = torch.tensor([[0.1, -0.3, 0.2, 0.5], [1.0, 0.0, -1.0, 0.3], [0.0, 0.4, 0.2, -0.2]])


def make_guide(cls, opts):
    def guide():
        q_logits = pyro.param("q_logits", lambda: Q_INIT.clone())
        with pyro.plate("N", 3):
            pyro.sample("z", cls(logits=q_logits, **opts))

    return guide


def elbo_grad(elbo, model, guide, q_logits):
    """The ELBO's surrogate loss and its gradient in ``q_logits`` (the unconstrained param)."""
    if hasattr(elbo, "differentiable_loss"):
        loss = elbo.differentiable_loss(model, guide)
        return loss.detach(), torch.autograd.grad(loss, q_logits)[0]
    q_logits.grad = None
    loss = elbo.loss_and_grads(model, guide)
    grad, q_logits.grad = q_logits.grad, None
    return torch.tensor(loss), grad


def check_pyro_integration(cls, opts, reference_onehot=None):
    """Trace_ELBO, TraceGraph_ELBO and TraceMeanField_ELBO with the class in the guide.

    ``reference_onehot(logits, D)`` returns ``D`` with the estimator's backward in
    plain autograd; when given, the TraceMeanField_ELBO gradient is checked against
    it end to end.
    """
    onehot = is_onehot_class(cls)
    model = make_model(onehot)
    pyro.clear_param_store()
    guide = make_guide(cls, opts)
    guide()
    q_logits = pyro.param("q_logits").unconstrained()

    # Own draws: no score-function term.
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(guide).get_trace()
    guide_trace.compute_score_parts()
    site = guide_trace.nodes["z"]
    assert type(site["fn"]) is cls
    sf = site["score_parts"].score_function
    assert not torch.is_tensor(sf) and sf == 0
    if not onehot:
        assert isinstance(site["value"], ILSIndexTensor)

    # Gradients reach the logits under each ELBO; the surrogate loss is finite.
    for elbo in (Trace_ELBO(), TraceGraph_ELBO(), TraceMeanField_ELBO()):
        pyro.set_rng_seed(1)
        loss, grad = elbo_grad(elbo, model, guide, q_logits)
        assert grad is not None, type(elbo).__name__
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), type(elbo).__name__
        assert (grad != 0).any(), type(elbo).__name__

    # TraceMeanField_ELBO takes the KL analytically: loss = -log p(x | z) + KL(q || p).
    pyro.set_rng_seed(2)
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    pyro.set_rng_seed(2)
    z = plain(poutine.trace(guide).get_trace().nodes["z"]["value"]).detach()
    q = q_logits.detach().log_softmax(-1)
    prior = PRIOR.log_softmax(-1)
    kl = (q.exp() * (q - prior)).sum()
    nll = -dist.Normal(_mean(z, onehot), 1.0).log_prob(DATA).sum()
    torch.testing.assert_close(loss.detach(), nll + kl)
    # ... which differs from the sampled log-ratio that Trace_ELBO uses.
    pyro.set_rng_seed(2)
    loss_tr = Trace_ELBO().differentiable_loss(model, guide)
    assert not torch.allclose(loss_tr.detach(), loss.detach())

    if reference_onehot is not None:
        pyro.set_rng_seed(2)
        (grad,) = torch.autograd.grad(
            TraceMeanField_ELBO().differentiable_loss(model, guide), q_logits
        )
        d = torch.nn.functional.one_hot(as_index(cls, z), 4).to(q_logits.dtype)
        z_ref = reference_onehot(q_logits, d)
        mean = (z_ref * LOCS).sum(-1)
        q_ref = q_logits.log_softmax(-1)
        ref_loss = (
            -dist.Normal(mean, 1.0).log_prob(DATA).sum() + (q_ref.exp() * (q_ref - prior)).sum()
        )
        (ref_grad,) = torch.autograd.grad(ref_loss, q_logits)
        torch.testing.assert_close(grad, ref_grad)

    # A conditioned value (not drawn by the distribution) keeps its score-function term.
    value = torch.tensor([0, 3, 1])
    if onehot:
        value = torch.nn.functional.one_hot(value, 4).float()
    cond_trace = poutine.trace(poutine.condition(guide, data={"z": value})).get_trace()
    cond_trace.compute_score_parts()
    sf = cond_trace.nodes["z"]["score_parts"].score_function
    assert torch.is_tensor(sf) and sf.requires_grad
    d = cls(logits=q_logits, **opts)
    torch.testing.assert_close(d.score_parts(value).score_function, d.log_prob(value))
    # So does a replayed plain tensor, and a draw made without gradients.
    with torch.no_grad():
        nograd = d.rsample()
    assert torch.is_tensor(d.score_parts(nograd).score_function)

    # Integer draws index a table with gradient; one-hot draws contract with it.
    pyro.set_rng_seed(4)
    z = d.rsample()
    table = torch.randn(4, 2)
    out = (z @ table) if onehot else table[z]
    assert out.shape == (3, 2)
    (grad,) = torch.autograd.grad(out.sum(), q_logits)
    assert torch.isfinite(grad).all() and (grad != 0).any()


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,opts", ALL_CLASSES, ids=_id)
def test_forward_goodness_of_fit(cls, opts, dtype, device):
    check_goodness_of_fit(cls, opts, dtype, device)


def test_goodness_of_fit_check_has_power():
    # Draws from slightly wrong probabilities are rejected by the same statistic.
    gen = torch.Generator().manual_seed(0)
    wrong = PROBS.clone()
    wrong[:, 0] += 0.02
    wrong /= wrong.sum(-1, keepdim=True)
    k = torch.multinomial(wrong, N, replacement=True, generator=gen)
    counts = torch.stack([torch.bincount(row, minlength=6) for row in k]).double()
    p = chisquare(counts.ravel().numpy(), (N * PROBS).ravel().numpy(), ddof=2).pvalue
    assert p < 1e-6


@pytest.mark.parametrize("cls,opts", ALL_CLASSES, ids=_id)
def test_rsample_equals_sample(cls, opts):
    check_rsample_equals_sample(cls, opts)


def st_reference(logits, onehot):
    """Straight-through in plain autograd: forward D, backward through softmax(logits)."""
    pi = torch.softmax(logits, -1)
    return onehot + pi - pi.detach()


def st_reference_grad(logits, onehot, g):
    (grad,) = torch.autograd.grad((g * torch.softmax(logits, -1)).sum(), logits)
    return grad


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)], ids=str)
@pytest.mark.parametrize("cls", [STOneHotCategorical, STCategorical], ids=lambda c: c.__name__)
def test_st_backward_matches_autograd(cls, batch_shape, dtype, device):
    pyro.set_rng_seed(0)
    logits = torch.randn(batch_shape + (5,), dtype=dtype, device=device).requires_grad_()
    sample_shape = (4,)
    z = draw_onehot(cls, cls(logits=logits), sample_shape)
    assert z.shape == sample_shape + batch_shape + (5,)
    assert z.dtype == dtype and z.device == logits.device
    g = torch.randn(z.shape, dtype=dtype, device=device)
    (grad,) = torch.autograd.grad((z * g).sum(), logits)
    # Defining formula: autograd of <stopgrad(g), softmax(logits)>, summed over draws.
    pi = torch.softmax(logits, -1).expand(z.shape)
    (expected,) = torch.autograd.grad((g * pi).sum(), logits)
    torch.testing.assert_close(grad, expected)
    # The forward is the exact one-hot.
    assert ((z.detach() == 0) | (z.detach() == 1)).all()
    assert (z.detach().sum(-1) == 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_st_function_weight_zero_and_linearity(dtype):
    logits = torch.randn(4, 3, dtype=dtype, requires_grad=True)
    index = torch.tensor([0, 2, 1, 1])
    g = torch.randn(4, 3, dtype=dtype)
    weight = torch.tensor([1.0, 0.0, 2.5, 1.0], dtype=dtype)
    z = straight_through_onehot(logits, index, weight=weight)
    (grad,) = torch.autograd.grad((z * g).sum(), logits)
    expected = st_reference_grad(logits, None, g)
    expected[1] = 0.0
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,opts", ALL_CLASSES, ids=_id)
def test_support(cls, opts, dtype):
    if issubclass(cls, (STGumbelOneHotCategorical, STGumbelCategorical)):
        # The noise is random (its formula is checked by seed elsewhere); here the
        # form: never drawn, zero and finite gradient there, a softmax VJP (sums to 0).
        logits = torch.tensor([[0.3, -torch.inf, 1.0, -0.5]], dtype=dtype, requires_grad=True)
        d = cls(logits=logits, **opts)
        g = torch.tensor([[0.5, 1e30, -1.0, 2.0]], dtype=dtype)
        pyro.set_rng_seed(7)
        for _ in range(20):
            z = draw_onehot(cls, d)
            assert z.detach()[0, 1] == 0
            (grad,) = torch.autograd.grad((z * g).sum(), logits)
            assert torch.isfinite(grad).all() and grad[0, 1] == 0
            torch.testing.assert_close(grad.sum(), torch.zeros((), dtype=dtype))
        return
    check_support(cls, opts, dtype, st_reference_grad)


@pytest.mark.parametrize("cls,opts", ALL_CLASSES, ids=_id)
def test_options_kept_mask_and_weight(cls, opts):
    check_options_kept(cls, opts)


@pytest.mark.parametrize("cls,opts", ALL_CLASSES, ids=_id)
def test_pyro_integration(cls, opts):
    reference = st_reference if cls in (STOneHotCategorical, STCategorical) else None
    check_pyro_integration(cls, opts, reference)


@pytest.mark.parametrize("cls", [STGumbelOneHotCategorical, STGumbelCategorical])
def test_temperature_validation(cls):
    check_temperature_validation(cls)


def test_plain_st_takes_no_temperature():
    with pytest.raises(TypeError):
        STOneHotCategorical(logits=torch.zeros(3), temperature=1.0)


# --- ST-Gumbel ---------------------------------------------------------------


def st_gumbel_reference_grad(logits, perturbed, g, tau):
    """Autograd of <stopgrad(g), softmax((logits + G) / tau)> with G = perturbed - logits fixed."""
    noise = (perturbed - logits).detach()
    noise = noise.masked_fill(logits.detach() == -torch.inf, 0.0)  # -inf - -inf
    y = torch.softmax((logits + noise) / tau, -1)
    (grad,) = torch.autograd.grad((g * y).sum(), logits)
    return grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", [(), (6,), (2, 3)], ids=str)
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_st_gumbel_function_backward_matches_autograd(tau, batch_shape, dtype):
    torch.manual_seed(0)
    logits = torch.randn(batch_shape + (5,), dtype=dtype, requires_grad=True)
    perturbed = logits.detach() + torch.distributions.Gumbel(0.0, 1.0).sample(logits.shape).to(
        dtype
    )
    index = perturbed.argmax(-1)
    z = st_gumbel_onehot(logits, index, perturbed, temperature=tau)
    torch.testing.assert_close(
        z.detach(), torch.nn.functional.one_hot(index, 5).to(dtype), rtol=0, atol=0
    )
    g = torch.randn(z.shape, dtype=dtype)
    (grad,) = torch.autograd.grad((z * g).sum(), logits)
    torch.testing.assert_close(grad, st_gumbel_reference_grad(logits, perturbed, g, tau))


def test_gumbel_given_argmax_has_the_gumbel_max_law():
    """(k, logits + G) from the base sampler + conditional noise has the law of the
    Gumbel-max trick. Per coordinate, a two-sample Kolmogorov-Smirnov test of
    x_i against unconditional Gumbel-max samples, and of the maximum minus
    logsumexp against Gumbel(0, 1); K + 1 = 6 tests, Bonferroni: total false-alarm
    rate P_MIN."""
    torch.manual_seed(5)
    logits = torch.tensor([0.5, -1.0, 1.2, 0.0, -0.3], dtype=torch.float64)
    x_ref = logits + torch.distributions.Gumbel(0.0, 1.0).sample((N, 5)).double()
    index = torch.distributions.Categorical(logits=logits).sample((N,))
    x = gumbel_given_argmax(logits, index)
    assert torch.equal(x.argmax(-1), index)
    p_values = [ks_2samp(x[:, i].numpy(), x_ref[:, i].numpy()).pvalue for i in range(5)]
    top = x.max(-1).values - torch.logsumexp(logits, -1)
    gumbel = torch.distributions.Gumbel(0.0, 1.0).sample((N,)).double()
    p_values.append(ks_2samp(top.numpy(), gumbel.numpy()).pvalue)
    assert min(p_values) > P_MIN / len(p_values)
    # The test has power: the noise of a wrong argmax (shifted) is rejected.
    x_wrong = gumbel_given_argmax(logits, (index + 1) % 5)
    assert ks_2samp(x_wrong[:, 2].numpy(), x_ref[:, 2].numpy()).pvalue < 1e-6


def test_st_gumbel_agrees_in_expectation_with_pyro_relaxed_straight_through():
    """For L(z) = <a, z>, the mean gradient over N draws of STGumbelOneHotCategorical
    and of Pyro's RelaxedOneHotCategoricalStraightThrough (independent Gumbel-max
    noise) estimate the same expectation. Two-sample z-test per coordinate,
    Bonferroni over the 2 x 4 coordinates: false-alarm rate P_MIN."""
    torch.manual_seed(9)
    tau = 0.8
    logits = torch.tensor([[0.3, -0.7, 1.1, 0.0], [2.0, 0.5, -1.0, 0.2]], dtype=torch.float64)
    a = torch.tensor([[1.0, -2.0, 0.5, 3.0], [-1.0, 0.0, 2.0, 1.5]], dtype=torch.float64)

    def per_draw_grads(make):
        lg = logits.expand(N, 2, 4).clone().requires_grad_()
        z = make(lg).rsample()
        (grad,) = torch.autograd.grad((z * a).sum(), lg)
        return grad

    ours = per_draw_grads(lambda lg: STGumbelOneHotCategorical(logits=lg, temperature=tau))
    theirs = per_draw_grads(
        lambda lg: dist.RelaxedOneHotCategoricalStraightThrough(torch.tensor(tau), logits=lg)
    )
    diff = ours.mean(0) - theirs.mean(0)
    se = ((ours.var(0) + theirs.var(0)) / N).sqrt()
    threshold = norm.isf(P_MIN / 2 / diff.numel())
    assert (diff.abs() <= threshold * se).all(), diff / se
    # ST-Gumbel is biased for a linear objective, unlike ST: its mean differs from
    # the exact gradient J(pi)^T a by more than the same threshold somewhere.
    exact = st_reference_grad(logits.clone().requires_grad_(), None, a)
    z_exact = (ours.mean(0) - exact) / (ours.std(0) / math.sqrt(N))
    assert (z_exact.abs() > threshold).any()


@pytest.mark.parametrize("cls", [STOneHotCategorical, STCategorical])
def test_st_is_exact_for_linear_objectives(cls):
    # For L(z) = <a, z>, g = a for every draw and the ST gradient is J(pi)^T a,
    # the exact gradient of E[L] = <a, pi>, for every draw (zero variance).
    logits = torch.tensor([[0.3, -0.7, 1.1, 0.0], [2.0, 0.5, -1.0, 0.2]], dtype=torch.float64)
    logits.requires_grad_()
    a = torch.tensor([[1.0, -2.0, 0.5, 3.0], [-1.0, 0.0, 2.0, 1.5]], dtype=torch.float64)
    (exact,) = torch.autograd.grad((a * torch.softmax(logits, -1)).sum(), logits)
    pyro.set_rng_seed(0)
    z = draw_onehot(cls, cls(logits=logits), (1000,))
    (grad,) = torch.autograd.grad((z * a).sum(), logits)
    torch.testing.assert_close(grad / 1000, exact)
