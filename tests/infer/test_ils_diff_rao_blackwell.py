"""TraceILSDiff_ELBO's small-step limit (``step_size=0``) and its Rao-Blackwellized
model terms (``rao_blackwellize=True``).

Oracles: ``TraceEnum_ELBO`` (exact enumeration: a mixture whose draws each have
their own likelihood, where the Rao-Blackwellized limit is the exact gradient of
every parameter) and brute-force enumeration of the expected objective for
coupled draws and two sites (unbiasedness: the Bonferroni z-test of
``test_estimators_control_variates.py``, family-wise false-alarm rate 1e-3 under
the normal approximation; fixed seeds).
"""

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from common import bias_outliers
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate

from pyro_ils import TraceILSDiff_ELBO

DTYPE = torch.float64
N, K = 3, 4


pytestmark = pytest.mark.usefixtures("clean_param_store")


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


DATA = _randn(N, seed=3)


# -- a mixture: one draw per data point, each with its own likelihood ---------------


def mixture_model():
    locs = pyro.param("locs", lambda: _randn(K, seed=1))
    prior = pyro.param("prior", lambda: _randn(K, seed=2))
    with pyro.plate("data", N):
        z = pyro.sample("z", dist.Categorical(logits=prior))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=DATA)


def mixture_guide():
    logits = pyro.param("logits", lambda: _randn(N, K, seed=4))
    with pyro.plate("data", N):
        pyro.sample("z", dist.Categorical(logits=logits))


NAMES = ("locs", "prior", "logits")


def _grads(elbo, model, guide, names=NAMES, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    poutine.trace(guide).get_trace()
    poutine.trace(model).get_trace()
    params = [pyro.param(n).unconstrained() for n in names]
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(model, guide)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_rao_blackwellized_limit_is_the_enumeration_gradient(analytic_kl):
    want = _grads(
        TraceEnum_ELBO(max_plate_nesting=1), mixture_model, config_enumerate(mixture_guide)
    )
    elbo = TraceILSDiff_ELBO(step_size=0, rao_blackwellize=True, analytic_kl=analytic_kl)
    for seed in range(3):  # deterministic: the same for every draw
        torch.testing.assert_close(_grads(elbo, mixture_model, mixture_guide, seed=seed), want)


def test_without_rao_blackwellization_the_model_gradient_is_random():
    """Negative control: the model's parameters learn from the drawn component only."""
    want = _grads(
        TraceEnum_ELBO(max_plate_nesting=1), mixture_model, config_enumerate(mixture_guide)
    )
    elbo = TraceILSDiff_ELBO(step_size=0, rao_blackwellize=False)
    got = torch.stack([_grads(elbo, mixture_model, mixture_guide, seed=s) for s in range(3)])
    assert not torch.allclose(got[0], want)
    assert not torch.allclose(got[0], got[1])
    # The guide's part is the exact gradient either way (local expectation gradient).
    torch.testing.assert_close(got[:, -N * K :], want[-N * K :].expand(3, -1))


def test_step_zero_is_the_limit_of_small_steps():
    small = _grads(TraceILSDiff_ELBO(step_size=1e-7), mixture_model, mixture_guide)
    zero = _grads(TraceILSDiff_ELBO(step_size=0), mixture_model, mixture_guide)
    torch.testing.assert_close(zero, small, atol=1e-5, rtol=1e-5)


def test_defaults_are_the_rao_blackwellized_limit():
    elbo = TraceILSDiff_ELBO()
    assert elbo.step_size == 0 and elbo.rao_blackwellize and elbo.projection == "mirror"


def test_per_site_step_zero():
    def guide():
        logits = pyro.param("logits", lambda: _randn(N, K, seed=4))
        with pyro.plate("data", N):
            pyro.sample("z", dist.Categorical(logits=logits), infer={"ils": {"step_size": 0}})

    want = _grads(TraceILSDiff_ELBO(step_size=0), mixture_model, mixture_guide)
    torch.testing.assert_close(_grads(TraceILSDiff_ELBO(step_size=1.0), mixture_model, guide), want)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"step_size": 0, "projection": "euclidean"},
        {"step_size": 0, "projection": "mirror_rms"},
        {"step_size": -1.0},
        {"step_size": 0, "projection": "reference"},
    ],
)
def test_bad_step_zero_options(kwargs):
    with pytest.raises(ValueError):
        TraceILSDiff_ELBO(**kwargs)


# -- coupled draws and two sites: unbiased, with less variance ------------------------


def coupled_model():
    theta = pyro.param("theta", lambda: _randn(K, seed=5))
    prior = pyro.param("prior", lambda: _randn(K, seed=2))
    with pyro.plate("p", N):
        z = pyro.sample("z", dist.OneHotCategorical(logits=prior))
    b = pyro.sample("b", dist.Bernoulli(logits=torch.tensor(0.3, dtype=DTYPE)))
    # A likelihood outside the plate, of both sites: the draws are coupled. It keeps
    # the plate's dim (size 1), so that it broadcasts over the alternatives.
    s = (z @ theta).sum(-1, keepdim=True)
    pyro.factor("g", -((s + 2.0 * b - 1.0) ** 2) * (theta.exp().sum() + b))


def coupled_guide():
    logits = pyro.param("logits", lambda: _randn(N, K, seed=4))
    b_logit = pyro.param("b_logit", lambda: torch.tensor(-0.2, dtype=DTYPE))
    with pyro.plate("p", N):
        pyro.sample("z", dist.OneHotCategorical(logits=logits))
    pyro.sample("b", dist.Bernoulli(logits=b_logit))


def _exact_coupled():
    """The gradient of the negative ELBO in every parameter, by brute force."""
    pyro.clear_param_store()
    poutine.trace(coupled_guide).get_trace()
    poutine.trace(coupled_model).get_trace()
    theta, prior, logits, b_logit = (
        pyro.param(n).detach().requires_grad_() for n in ("theta", "prior", "logits", "b_logit")
    )
    log_q, log_p = torch.log_softmax(logits, -1), torch.log_softmax(prior, -1)
    qb1 = torch.sigmoid(b_logit)
    pb1 = torch.sigmoid(torch.tensor(0.3, dtype=DTYPE))
    elbo = 0.0
    for ks in itertools.product(range(K), repeat=N):
        for b in (0, 1):
            mass_q = torch.stack([log_q[n, k] for n, k in enumerate(ks)]).sum()
            mass_p = torch.stack([log_p[k] for k in ks]).sum()
            lq_b = torch.log(qb1 if b else 1 - qb1)
            lp_b = torch.log(pb1 if b else 1 - pb1)
            s = sum(theta[k] for k in ks)
            lik = -((s + 2.0 * b - 1.0) ** 2) * (theta.exp().sum() + b)
            elbo = elbo + (mass_q + lq_b).exp() * (lik + mass_p + lp_b - mass_q - lq_b)
    grads = torch.autograd.grad(-elbo, (theta, prior, logits, b_logit))
    return torch.cat([g.flatten() for g in grads])


COUPLED_NAMES = ("theta", "prior", "logits", "b_logit")


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_coupled_rao_blackwellized_gradient_is_unbiased_with_less_variance(analytic_kl):
    want = _exact_coupled()
    kw = {"step_size": 0, "analytic_kl": analytic_kl}
    rb = TraceILSDiff_ELBO(rao_blackwellize=True, **kw)
    plain = TraceILSDiff_ELBO(rao_blackwellize=False, **kw)
    draws = {
        name: torch.stack(
            [_grads(e, coupled_model, coupled_guide, COUPLED_NAMES, seed=s) for s in range(400)]
        )
        for name, e in (("rb", rb), ("plain", plain))
    }
    assert not bias_outliers(draws["rb"], want)
    assert not bias_outliers(draws["plain"], want)
    # The model's parameters (theta, prior): averaged over alternatives, less variance.
    model_part = slice(0, 2 * K)
    var_rb = draws["rb"][:, model_part].var(0).sum()
    var_plain = draws["plain"][:, model_part].var(0).sum()
    assert var_rb < 0.5 * var_plain, (var_rb, var_plain)
    assert var_rb > 0  # still random: the other draws are sampled


# -- the loss's scale: the limit has no step, its gradient follows the loss ----------


def test_limit_gradient_is_equivariant_to_the_loss_scale():
    """A mean instead of a sum (any constant factor on the loss) multiplies every
    gradient, the discrete sites' included, by that factor: with a scale-free
    optimizer (Adam) training is unchanged, and there is no step size to retune."""
    elbo = TraceILSDiff_ELBO(step_size=0, rao_blackwellize=True)
    plain = _grads(elbo, mixture_model, mixture_guide)
    scaled = _grads(elbo, poutine.scale(mixture_model, 1 / N), poutine.scale(mixture_guide, 1 / N))
    torch.testing.assert_close(scaled, plain / N)


def test_limit_gradient_over_subsamples_averages_to_the_full_data_gradient():
    """Plate subsampling: over every subsample of size 2 the Rao-Blackwellized limit
    (deterministic per subsample here) averages to the exact full-data gradient."""
    data = _randn(4, seed=7)

    def model(idx):
        locs = pyro.param("locs", lambda: _randn(K, seed=1))
        prior = pyro.param("prior", lambda: _randn(K, seed=2))
        with pyro.plate("data", 4, subsample=idx):
            z = pyro.sample("z", dist.Categorical(logits=prior))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=data[idx])

    def guide(idx):
        logits = pyro.param("logits", lambda: _randn(4, K, seed=4))
        with pyro.plate("data", 4, subsample=idx):
            pyro.sample("z", dist.Categorical(logits=logits[idx]))

    def grads(elbo, m, g, idx):
        return _grads(elbo, lambda: m(idx), lambda: g(idx))

    full = torch.arange(4)
    want = grads(TraceEnum_ELBO(max_plate_nesting=1), model, config_enumerate(guide), full)
    elbo = TraceILSDiff_ELBO(step_size=0, rao_blackwellize=True)
    subsets = [torch.tensor(s) for s in itertools.combinations(range(4), 2)]
    got = torch.stack([grads(elbo, model, guide, idx) for idx in subsets]).mean(0)
    torch.testing.assert_close(got, want)
    # Each subsample alone is not the full gradient: the average has something to do.
    assert not torch.allclose(grads(elbo, model, guide, subsets[0]), want)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rao_blackwellized_limit_is_the_enumeration_gradient():
    data = DATA.cuda()

    def model():
        locs = pyro.param("locs", lambda: _randn(K, seed=1).cuda())
        prior = pyro.param("prior", lambda: _randn(K, seed=2).cuda())
        with pyro.plate("data", N):
            z = pyro.sample("z", dist.Categorical(logits=prior))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=data)

    def guide():
        logits = pyro.param("logits", lambda: _randn(N, K, seed=4).cuda())
        with pyro.plate("data", N):
            pyro.sample("z", dist.Categorical(logits=logits))

    want = _grads(TraceEnum_ELBO(max_plate_nesting=1), model, config_enumerate(guide))
    got = _grads(TraceILSDiff_ELBO(), model, guide)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got, want)


def test_random_minibatch_is_the_draws_minibatch():
    """A plate with ``subsample_size`` draws its indices at random; the runs over the
    alternatives must use the draw's minibatch (``Trace_ELBO`` prunes the subsample
    sites from its traces: replayed from them, a fresh minibatch was drawn). Against
    ``TraceEnum_ELBO`` on the same minibatch (the same seed draws the same indices)."""
    data = _randn(8, seed=9)

    def model():
        locs = pyro.param("locs", lambda: _randn(K, seed=1))
        prior = pyro.param("prior", lambda: _randn(K, seed=2))
        with pyro.plate("data", 8, subsample_size=3) as idx:
            z = pyro.sample("z", dist.Categorical(logits=prior))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=data[idx])

    def guide():
        logits = pyro.param("logits", lambda: _randn(8, K, seed=4))
        with pyro.plate("data", 8, subsample_size=3) as idx:
            pyro.sample("z", dist.Categorical(logits=logits[idx]))

    for seed in range(3):
        want = _grads(
            TraceEnum_ELBO(max_plate_nesting=1), model, config_enumerate(guide), seed=seed
        )
        got = _grads(TraceILSDiff_ELBO(), model, guide, seed=seed)
        torch.testing.assert_close(got, want)
