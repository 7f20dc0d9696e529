"""TraceRLOO_ELBO: unbiasedness against exact enumeration, and basic behaviour.

Statistical tests. A "draw" is one gradient estimate (one ``loss_and_grads``
call, or one of ``M`` independent replicates of the problem held in a plate, each
with its own copy of every parameter, so that one call yields ``M`` independent
draws). For each of the ``P`` gradient coordinates we assert
``|mean - exact| <= z * se + 1e-8 * (1 + |exact|)`` with ``se`` the standard error
of the mean over the draws and ``z = Phi^{-1}(1 - alpha / (2 P))`` (Bonferroni,
family-wise false-alarm rate ``alpha = 1e-3`` per test under the normal
approximation). Seeds are fixed, so every test is deterministic. The tiny
absolute term only absorbs float64 round-off where ``se`` is 0.
A negative control checks that the same test rejects a biased baseline.
"""

import contextlib

import pyro
import pyro.distributions as dist
import pytest
import torch
from common import bias_outliers
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate

import pyro_ils.infer.trace_rloo_elbo as rloo_module
from pyro_ils.estimators import TraceRLOO_ELBO

DTYPE = torch.float64
K = 3
PARAMS = ["q1", "q2", "qb", "W"]


def make_problem(reps: int | None, categorical: bool = False):
    """Two K-category latents and one Bernoulli, log joint nonlinear in them.

    ``reps=None``: no plate, parameters of their natural shape; ``reps=M``: ``M``
    independent replicates in ``pyro.plate("rep", M)``, every parameter copied
    ``M`` times (row ``m`` of each gradient is replicate ``m``'s draw).
    ``categorical=True`` uses integer ``Categorical`` sites (indexing) instead of
    one-hot ones (arithmetic)."""
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=DTYPE)

    init = {
        "q1": rnd(K, scale=0.5),
        "q2": rnd(K, scale=0.5),
        "qb": rnd(()),
        "W": rnd(K, K, scale=1.5),
    }
    prior1, prior2, prior_b, v = rnd(K, scale=0.5), rnd(K, scale=0.5), rnd(()), rnd(K)
    y = torch.tensor(0.7, dtype=DTYPE)
    lead = () if reps is None else (reps,)

    def param(name):
        value = init[name]
        return pyro.param(name, lambda: value.expand(lead + value.shape).clone())

    def plate():
        return contextlib.nullcontext() if reps is None else pyro.plate("rep", reps, dim=-1)

    def onehot_site(name, logits):
        if categorical:
            k = pyro.sample(name, dist.Categorical(logits=logits))
            return torch.nn.functional.one_hot(k, K).to(DTYPE)
        return pyro.sample(name, dist.OneHotCategorical(logits=logits))

    def model():
        W = param("W")
        with plate():
            z1 = onehot_site("z1", prior1.expand(lead + (K,)))
            z2 = onehot_site("z2", prior2.expand(lead + (K,)))
            b = pyro.sample("b", dist.Bernoulli(logits=prior_b.expand(lead)))
            h = (z1.unsqueeze(-2) @ W @ z2.unsqueeze(-1)).squeeze(-1).squeeze(-1)
            h = h + b * (z1 @ v)
            pyro.sample("y", dist.Normal(2 * torch.tanh(h), 0.5), obs=y.expand(lead))

    def guide():
        q1, q2, qb = param("q1"), param("q2"), param("qb")
        with plate():
            onehot_site("z1", q1)
            onehot_site("z2", q2)
            pyro.sample("b", dist.Bernoulli(logits=qb))

    return model, guide


def grads(names=PARAMS) -> torch.Tensor:
    """Gradients of the named params, each flattened per replicate: ``(M, P)``."""
    store = pyro.get_param_store()
    rows = []
    for name in names:
        p = store.get_param(name).unconstrained()
        g = torch.zeros_like(p) if p.grad is None else p.grad
        rows.append(g.reshape(g.shape[0], -1))
    return torch.cat(rows, -1)


def zero_grads():
    for p in pyro.get_param_store().values():
        p.unconstrained().grad = None


def exact_gradient(categorical: bool = False) -> torch.Tensor:
    """The exact ELBO gradient of one replicate, by enumerating the guide."""
    pyro.clear_param_store()
    model, guide = make_problem(1, categorical)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.differentiable_loss(model, config_enumerate(guide, "parallel"))
    loss.backward()
    out = grads()[0]
    pyro.clear_param_store()
    return out


def replicated_draws(elbo, reps: int, seed: int, categorical: bool = False) -> torch.Tensor:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = make_problem(reps, categorical)
    elbo.loss_and_grads(model, guide)
    out = grads()
    pyro.clear_param_store()
    return out


def looped_draws(elbo, steps: int, seed: int) -> torch.Tensor:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = make_problem(None)
    rows = []
    for _ in range(steps):
        zero_grads()
        elbo.loss_and_grads(model, guide)
        store = pyro.get_param_store()
        rows.append(
            torch.cat([store.get_param(n).unconstrained().grad.reshape(-1) for n in PARAMS])
        )
    pyro.clear_param_store()
    return torch.stack(rows)


@pytest.mark.parametrize("num_samples", [2, 4])
@pytest.mark.parametrize("categorical", [False, True], ids=["onehot", "categorical"])
def test_rloo_unbiased_vectorized(num_samples, categorical):
    exact = exact_gradient(categorical)
    elbo = TraceRLOO_ELBO(num_samples, vectorize_particles=True, max_plate_nesting=1)
    draws = replicated_draws(elbo, 4000, seed=1, categorical=categorical)
    assert draws.dtype == DTYPE
    assert not bias_outliers(draws, exact), bias_outliers(draws, exact)
    # the draws carry score-function noise: the test has something to detect
    assert (draws.std(0) > 1e-3).sum() >= 2 * K


def test_rloo_unbiased_looped_particles():
    exact = exact_gradient()
    elbo = TraceRLOO_ELBO(num_samples=3, max_plate_nesting=1)
    draws = replicated_draws(elbo, 3000, seed=2)
    assert not bias_outliers(draws, exact), bias_outliers(draws, exact)


def test_rloo_unbiased_without_plates():
    """No plate at all: one scalar cost per particle, many separate steps."""
    exact = exact_gradient()[: 2 * K + 1]  # guide parameters (W[i, j] is hit too rarely)
    draws = looped_draws(TraceRLOO_ELBO(num_samples=4), steps=250, seed=3)[:, : 2 * K + 1]
    assert not bias_outliers(draws, exact), bias_outliers(draws, exact)


def test_negative_control_biased_baseline_is_detected(monkeypatch):
    """A baseline that includes the particle's own value (the plain mean) scales
    the score term by (S - 1) / S: the same statistical test must reject it."""
    exact = exact_gradient()

    def mean_including_self(values, dim):
        return values.mean(dim, keepdim=True)

    monkeypatch.setattr(rloo_module, "leave_one_out_mean", mean_including_self)
    elbo = TraceRLOO_ELBO(2, vectorize_particles=True, max_plate_nesting=1)
    draws = replicated_draws(elbo, 4000, seed=1)
    assert bias_outliers(draws, exact)


@pytest.mark.parametrize("vectorize", [False, True])
def test_loss_is_the_mean_particle_elbo(vectorize):
    model, guide = make_problem(5)
    kw = dict(max_plate_nesting=1, vectorize_particles=vectorize)
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    reference = Trace_ELBO(num_particles=4, **kw).loss(model, guide)
    pyro.set_rng_seed(7)
    elbo = TraceRLOO_ELBO(num_samples=4, **kw)
    assert elbo.loss(model, guide) == pytest.approx(reference, rel=1e-12)
    pyro.set_rng_seed(7)
    assert elbo.loss_and_grads(model, guide) == pytest.approx(reference, rel=1e-12)
    pyro.set_rng_seed(7)
    value = elbo.differentiable_loss(model, guide)
    assert torch.is_tensor(value) and value.requires_grad
    assert value.item() == pytest.approx(reference, rel=1e-12)
    pyro.clear_param_store()


def test_svi_steps_run_and_reduce_the_loss():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = make_problem(200)
    elbo = TraceRLOO_ELBO(num_samples=4, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=elbo)
    first = sum(svi.step() for _ in range(5)) / 5
    for _ in range(25):
        svi.step()
    last = sum(svi.step() for _ in range(5)) / 5
    assert isinstance(last, float) and last < first
    pyro.clear_param_store()


@pytest.mark.parametrize("bad", [1, 0, -3, 2.0, True])
def test_bad_num_samples_raise(bad):
    with pytest.raises(ValueError, match="num_samples"):
        TraceRLOO_ELBO(num_samples=bad)


def test_num_samples_one_message_points_to_trace_elbo():
    with pytest.raises(ValueError, match="Trace_ELBO"):
        TraceRLOO_ELBO(num_samples=1)


def test_num_particles_is_rejected():
    with pytest.raises(ValueError, match="num_samples, not num_particles"):
        TraceRLOO_ELBO(num_samples=4, num_particles=4)
