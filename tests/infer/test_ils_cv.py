"""TraceILSCV_ELBO: unbiasedness against exact enumeration, exactness for a linear
objective, variance against RLOO, losses and errors.

The statistical tests reuse the problem and the Bonferroni z-test of
``test_estimators_control_variates.py`` (family-wise false-alarm rate 1e-3 per
test under the normal approximation; fixed seeds, so deterministic).

Measured variance (per-coordinate variance of the guide-parameter gradient,
ratio TraceILSCV_ELBO / TraceRLOO_ELBO at equal ``num_samples``, 4000 draws):

* on the strongly nonlinear problem of ``test_estimators_control_variates.py``
  (``Normal(2 tanh(h), 0.5)`` likelihood, bilinear ``h``) the first-order control
  variate taken at *another vertex* is a poor model: ratio 1.1 to 2.1 with
  ``S = 2``, 0.7 to 1.5 with ``S = 4``, 0.45 to 1.07 with ``S = 8``. ILS-CV is
  *not* uniformly better than RLOO there (recorded by
  ``test_variance_on_the_strongly_nonlinear_problem``);
* on a mildly nonlinear objective (linear plus 0.2 times a bilinear term) it is
  far below RLOO: largest per-coordinate ratio 0.19 to 0.26 with ``S = 2``
  over seeds 0 to 5 (``test_variance_below_rloo_when_nearly_linear``).
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from test_estimators_control_variates import (
    DTYPE,
    GUIDE_PARAMS,
    K,
    assert_unbiased,
    bias_outliers,
    exact_gradient,
    looped_draws,
    param_grads,
    replicated_draws,
)

from pyro_ils import TraceILSCV_ELBO
from pyro_ils.estimators import TraceRLOO_ELBO


# unbiasedness -------------------------------------------------------------------------
@pytest.mark.parametrize("num_samples", [2, 3])
@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "looped"])
def test_unbiased(num_samples, vectorize):
    exact = exact_gradient()
    elbo = TraceILSCV_ELBO(num_samples, vectorize_particles=vectorize, max_plate_nesting=1)
    draws = replicated_draws(elbo, 4000, seed=1)
    assert draws.dtype == DTYPE
    assert_unbiased(draws, exact)


def test_unbiased_with_a_damped_first_order_term():
    """Any fixed ``eta`` keeps the control variate's expectation exact."""
    exact = exact_gradient()
    elbo = TraceILSCV_ELBO(2, eta=0.25, vectorize_particles=True, max_plate_nesting=1)
    assert_unbiased(replicated_draws(elbo, 4000, seed=2), exact)


@pytest.mark.parametrize("bad", [-0.5, float("inf"), float("nan"), True, "1"])
def test_bad_eta_raises(bad):
    with pytest.raises(ValueError, match="eta"):
        TraceILSCV_ELBO(2, eta=bad)


def test_unbiased_without_plates():
    """No plate: scalar costs, separate steps (guide parameters only, as for MuProp)."""
    exact = exact_gradient(GUIDE_PARAMS)
    draws = looped_draws(TraceILSCV_ELBO(2), steps=200, seed=3, names=GUIDE_PARAMS)
    assert_unbiased(draws, exact)


def test_negative_control_without_the_analytic_term_is_detected(monkeypatch):
    """Dropping grad E_q[b_s] (the straight-through-like term) leaves a biased
    estimator: the same test must reject it."""
    exact = exact_gradient()
    monkeypatch.setattr(TraceILSCV_ELBO, "_analytic", staticmethod(lambda site, gbar: 0.0))
    elbo = TraceILSCV_ELBO(2, vectorize_particles=True, max_plate_nesting=1)
    assert bias_outliers(replicated_draws(elbo, 4000, seed=1), exact)


# linear objective ----------------------------------------------------------------------
@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "looped"])
def test_exact_for_a_linear_objective(vectorize):
    """f linear in the discrete values: f_s = b_s(z_s) exactly, so the score
    term vanishes and the guide gradient is the exact one with zero variance."""
    exact = exact_gradient(GUIDE_PARAMS, linear=True)
    elbo = TraceILSCV_ELBO(2, vectorize_particles=vectorize, max_plate_nesting=1)
    draws = replicated_draws(elbo, 200, seed=4, names=GUIDE_PARAMS, linear=True)
    assert torch.allclose(draws, exact.expand_as(draws), atol=1e-10)
    # while RLOO is noisy there
    rloo = TraceRLOO_ELBO(2, vectorize_particles=vectorize, max_plate_nesting=1)
    noisy = replicated_draws(rloo, 200, 4, GUIDE_PARAMS, linear=True)
    assert noisy.std(0).max() > 0.1


# variance against RLOO -------------------------------------------------------------------
def make_nearly_linear_problem(reps, eps=0.2):
    """Two one-hot latents and a Bernoulli in a plate of ``reps`` replicates; the
    log joint is linear in them plus ``eps`` times a bilinear term."""
    g = torch.Generator().manual_seed(1)

    def rnd(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=DTYPE)

    init = {"q1": rnd(K, scale=0.5), "q2": rnd(K, scale=0.5), "qb": rnd(())}
    a1, a2, ab, W = rnd(K), rnd(K), rnd(()), rnd(K, K)

    def param(name):
        return pyro.param(name, lambda: init[name].expand((reps,) + init[name].shape).clone())

    def model():
        with pyro.plate("rep", reps, dim=-1):
            z1 = pyro.sample("z1", dist.OneHotCategorical(logits=torch.zeros(reps, K, dtype=DTYPE)))
            z2 = pyro.sample("z2", dist.OneHotCategorical(logits=torch.zeros(reps, K, dtype=DTYPE)))
            b = pyro.sample("b", dist.Bernoulli(logits=torch.zeros(reps, dtype=DTYPE)))
            bilinear = (z1.unsqueeze(-2) @ W @ z2.unsqueeze(-1)).squeeze(-1).squeeze(-1)
            pyro.factor("f", z1 @ a1 + z2 @ a2 + b * ab + eps * bilinear * (1 + b))

    def guide():
        q1, q2, qb = param("q1"), param("q2"), param("qb")
        with pyro.plate("rep", reps, dim=-1):
            pyro.sample("z1", dist.OneHotCategorical(logits=q1))
            pyro.sample("z2", dist.OneHotCategorical(logits=q2))
            pyro.sample("b", dist.Bernoulli(logits=qb))

    return model, guide


def nearly_linear_draws(elbo, reps, seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = make_nearly_linear_problem(reps)
    elbo.loss_and_grads(model, guide)
    out = param_grads(["q1", "q2", "qb"])
    pyro.clear_param_store()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_variance_below_rloo_when_nearly_linear(seed):
    """Ratio of per-coordinate variances (ILS-CV / RLOO, S = 2, 4000 draws):
    largest coordinate measured 0.19 to 0.26 on seeds 0 to 5; asserted below 0.35."""
    kw = dict(vectorize_particles=True, max_plate_nesting=1)
    ils = nearly_linear_draws(TraceILSCV_ELBO(2, **kw), 4000, seed)
    rloo = nearly_linear_draws(TraceRLOO_ELBO(2, **kw), 4000, seed)
    ratio = ils.var(0) / rloo.var(0)
    assert ratio.max() < 0.35, ratio.tolist()


def test_variance_on_the_strongly_nonlinear_problem():
    """The finding on the problem of the unbiasedness tests: with S = 2 the
    first-order model at the other particle's vertex does worse than RLOO's
    constant baseline; with S = 8 it does better. Total variance of the guide
    gradient, ILS-CV / RLOO, measured on seeds 1 to 5: 1.74 to 1.84 (S = 2),
    0.83 to 0.85 (S = 8); asserted > 1.2 and < 0.95 on seed 1."""
    kw = dict(vectorize_particles=True, max_plate_nesting=1)
    names = GUIDE_PARAMS

    def total_variance_ratio(num_samples, seed):
        ils = replicated_draws(TraceILSCV_ELBO(num_samples, **kw), 4000, seed, names)
        rloo = replicated_draws(TraceRLOO_ELBO(num_samples, **kw), 4000, seed, names)
        return (ils.var(0).sum() / rloo.var(0).sum()).item()

    assert total_variance_ratio(2, seed=1) > 1.2
    assert total_variance_ratio(8, seed=1) < 0.95


# losses and errors --------------------------------------------------------------------------
@pytest.mark.parametrize("vectorize", [False, True])
def test_loss_is_the_mean_particle_elbo(vectorize):
    from test_estimators_control_variates import make_problem

    model, guide = make_problem(5)
    kw = dict(max_plate_nesting=1, vectorize_particles=vectorize)
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    reference = Trace_ELBO(num_particles=3, **kw).loss(model, guide)
    elbo = TraceILSCV_ELBO(num_samples=3, **kw)
    for method in ("loss", "loss_and_grads"):
        pyro.set_rng_seed(7)
        assert getattr(elbo, method)(model, guide) == pytest.approx(reference, rel=1e-12)
    pyro.set_rng_seed(7)
    value = elbo.differentiable_loss(model, guide)
    assert torch.is_tensor(value) and value.requires_grad
    assert value.item() == pytest.approx(reference, rel=1e-12)
    pyro.clear_param_store()


def test_differentiable_loss_gradient_matches_loss_and_grads():
    from test_estimators_control_variates import make_problem

    model, guide = make_problem(5)
    elbo = TraceILSCV_ELBO(2, vectorize_particles=True, max_plate_nesting=1)
    pyro.clear_param_store()
    pyro.set_rng_seed(5)
    elbo.loss_and_grads(model, guide)
    expected = param_grads(GUIDE_PARAMS).clone()
    for p in pyro.get_param_store().values():
        p.unconstrained().grad = None
    pyro.set_rng_seed(5)
    elbo.differentiable_loss(model, guide).backward()
    assert torch.allclose(param_grads(GUIDE_PARAMS), expected, atol=1e-12)
    pyro.clear_param_store()


@pytest.mark.parametrize("bad", [1, 0, -3, 2.0, True])
def test_bad_num_samples_raise(bad):
    with pytest.raises(ValueError, match="num_samples"):
        TraceILSCV_ELBO(num_samples=bad)


def test_num_particles_is_rejected():
    with pytest.raises(ValueError, match="num_samples, not num_particles"):
        TraceILSCV_ELBO(num_samples=2, num_particles=2)


@pytest.mark.parametrize("vectorize", [False, True])
def test_integer_categorical_site_raises(vectorize):
    from test_estimators_control_variates import make_problem

    model, guide = make_problem(4, categorical=True)
    elbo = TraceILSCV_ELBO(2, vectorize_particles=vectorize, max_plate_nesting=1)
    with pytest.raises(ValueError, match="integer Categorical site 'z1'"):
        elbo.loss_and_grads(model, guide)
    pyro.clear_param_store()


@pytest.mark.parametrize("vectorize", [False, True])
def test_dependent_guide_raises(vectorize):
    from test_estimators_control_variates import make_problem

    model, guide = make_problem(4, dependent=True)
    elbo = TraceILSCV_ELBO(2, vectorize_particles=vectorize, max_plate_nesting=1)
    with pytest.raises(ValueError, match="site 'z2' depends on them"):
        elbo.loss_and_grads(model, guide)
    pyro.clear_param_store()


def test_continuous_site_depending_on_a_discrete_one_raises():
    def model():
        z = pyro.sample("z", dist.Bernoulli(torch.tensor(0.5, dtype=DTYPE)))
        pyro.sample("x", dist.Normal(z, 1.0))

    def guide():
        p = pyro.param("p", torch.tensor(0.3, dtype=DTYPE))
        z = pyro.sample("z", dist.Bernoulli(p))
        pyro.sample("x", dist.Normal(2 * z, 1.0))

    with pytest.raises(ValueError, match="site 'x' depends on them"):
        TraceILSCV_ELBO(2).loss_and_grads(model, guide)
    pyro.clear_param_store()


def test_reparameterized_site_gets_its_pathwise_gradient():
    """A continuous reparameterized guide site next to a discrete one: the
    estimate of d/d loc is unbiased (the exact value is known in closed form)."""
    reps = 3000

    def model():
        with pyro.plate("rep", reps, dim=-1):
            z = pyro.sample("z", dist.Bernoulli(torch.full((reps,), 0.5, dtype=DTYPE)))
            x = pyro.sample("x", dist.Normal(torch.zeros(reps, dtype=DTYPE), 1.0))
            pyro.factor("f", -((x - z) ** 2))

    def guide():
        loc = pyro.param("loc", torch.zeros(reps, dtype=DTYPE))
        logit = pyro.param("logit", torch.zeros(reps, dtype=DTYPE))
        with pyro.plate("rep", reps, dim=-1):
            pyro.sample("z", dist.Bernoulli(logits=logit))
            pyro.sample("x", dist.Normal(loc, 1.0))

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    TraceILSCV_ELBO(2, vectorize_particles=True, max_plate_nesting=1).loss_and_grads(model, guide)
    grad = pyro.get_param_store().get_param("loc").grad
    # loss = -E[ -x^2/2 - (x - z)^2 + x^2/2 ... ]: d(-ELBO)/d loc at loc 0 = -2 E[z] = -1
    # (the N(0,1) prior and the guide's entropy cancel in expectation of their gradients)
    assert grad.mean().item() == pytest.approx(-1.0, abs=6 * grad.std().item() / reps**0.5)
    pyro.clear_param_store()


def test_masked_and_expanded_sites_run():
    """Bernoulli under mask and expand, OneHotCategorical under to_event: the
    estimator runs and stays exact for a linear objective."""

    def model():
        with pyro.plate("rep", 4, dim=-1):
            c = pyro.sample(
                "c", dist.Bernoulli(torch.tensor(0.5, dtype=DTYPE)).expand([4, 2]).to_event(1)
            )
            z = pyro.sample(
                "z",
                dist.OneHotCategorical(logits=torch.zeros(4, 2, K, dtype=DTYPE)).to_event(1),
            )
            pyro.factor("f", c.sum(-1) + z[..., 0].sum(-1))

    mask = torch.tensor([True, False])

    def guide():
        qc = pyro.param("qc", torch.zeros(2, dtype=DTYPE))
        qz = pyro.param("qz", torch.zeros(2, K, dtype=DTYPE))
        with pyro.plate("rep", 4, dim=-1):
            pyro.sample("c", dist.Bernoulli(logits=qc).mask(mask).expand([4, 2]).to_event(1))
            pyro.sample("z", dist.OneHotCategorical(logits=qz).expand([4, 2]).to_event(1))

    for vectorize in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        elbo = TraceILSCV_ELBO(2, vectorize_particles=vectorize, max_plate_nesting=1)
        rows = []
        for _ in range(3):
            for p in pyro.get_param_store().values():
                p.unconstrained().grad = None
            elbo.loss_and_grads(model, guide)
            rows.append(param_grads(["qc", "qz"], flat_per_replicate=False))
        rows = torch.stack(rows)
        assert torch.allclose(rows, rows[0].expand_as(rows), atol=1e-10)
        assert rows.abs().max() > 0
    pyro.clear_param_store()
