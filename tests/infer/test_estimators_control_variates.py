"""MuProp, REBAR and RELAX: unbiasedness against exact enumeration, and behaviour.

Statistical tests (as in ``test_estimators_rloo.py``). A "draw" is one gradient
estimate: one of ``M`` independent replicates of the problem held in
``pyro.plate("rep", M)`` (each replicate has its own copy of every parameter, so
row ``m`` of every gradient is replicate ``m``'s draw), or one ``loss_and_grads``
call of an unreplicated problem. For each of the ``P`` gradient coordinates we
assert ``|mean - exact| <= z * se + 1e-8 * (1 + |exact|)``, ``se`` the standard
error over the draws, ``z = Phi^{-1}(1 - alpha / (2 P))``: Bonferroni, family-wise
false-alarm rate ``alpha = 1e-3`` per test under the normal approximation. The
exact gradient sums the ELBO over all codes (plain autograd; ``TraceEnum_ELBO``
cannot enumerate the ``.to_event(1)`` Bernoulli site). Seeds are fixed.
Negative controls check that the same test rejects deliberately broken variants.
"""

import contextlib
import itertools

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from common import bias_outliers
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import pyro_ils.infer.trace_muprop_elbo as muprop_module
import pyro_ils.infer.trace_rebar_elbo as rebar_module
from pyro_ils.estimators import TraceMuProp_ELBO, TraceREBAR_ELBO, TraceRELAX_ELBO
from pyro_ils.infer.multi_eval import relaxed_log_prob, score_mask

DTYPE = torch.float64
K = 3
PARAMS = ["q1", "q2", "qb", "qc", "W"]
GUIDE_PARAMS = ["q1", "q2", "qb", "qc"]


def make_problem(reps, *, linear=False, dependent=False, categorical=False):
    """Two K-category one-hot latents, a Bernoulli and a 2-vector of Bernoullis
    (``.to_event(1)``), with a log joint nonlinear in them (``linear=True``: a
    linear ``pyro.factor`` instead). ``dependent=True``: the guide's ``z2`` depends
    on ``z1``. ``reps=None``: no plate; ``reps=M``: ``M`` replicates in a plate."""
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=DTYPE)

    init = {
        "q1": rnd(K, scale=0.5),
        "q2": rnd(K, scale=0.5),
        "qb": rnd(()),
        "qc": rnd(2),
        "W": rnd(K, K, scale=1.5),
    }
    prior1, prior2, prior_b, prior_c, v, u, A = (
        rnd(K, scale=0.5),
        rnd(K, scale=0.5),
        rnd(()),
        rnd(2),
        rnd(K),
        rnd(2),
        rnd(K, K),
    )
    y = torch.tensor(0.7, dtype=DTYPE)
    lead = () if reps is None else (reps,)

    def param(name):
        value = init[name]
        return pyro.param(name, lambda: value.expand(lead + value.shape).clone())

    def plate():
        return contextlib.nullcontext() if reps is None else pyro.plate("rep", reps, dim=-1)

    def model():
        W = param("W")
        with plate():
            if categorical:
                k1 = pyro.sample("z1", dist.Categorical(logits=prior1.expand(lead + (K,))))
                z1 = torch.nn.functional.one_hot(k1, K).to(DTYPE)
            else:
                z1 = pyro.sample("z1", dist.OneHotCategorical(logits=prior1.expand(lead + (K,))))
            z2 = pyro.sample("z2", dist.OneHotCategorical(logits=prior2.expand(lead + (K,))))
            b = pyro.sample("b", dist.Bernoulli(logits=prior_b.expand(lead)))
            c = pyro.sample("c", dist.Bernoulli(logits=prior_c.expand(lead + (2,))).to_event(1))
            if linear:
                h = (z1 * W.sum(-1)).sum(-1) + (z2 * W[..., 0]).sum(-1) + b * W[..., 0, 1] + c @ u
                pyro.factor("lin", h)
            else:
                h = (z1.unsqueeze(-2) @ W @ z2.unsqueeze(-1)).squeeze(-1).squeeze(-1)
                h = h + b * (z1 @ v) + (c @ u) * (1 + z2[..., 0])
                pyro.sample("y", dist.Normal(2 * torch.tanh(h), 0.5), obs=y.expand(lead))

    def guide():
        q1, q2, qb, qc = param("q1"), param("q2"), param("qb"), param("qc")
        with plate():
            if categorical:
                k1 = pyro.sample("z1", dist.Categorical(logits=q1))
                z1 = torch.nn.functional.one_hot(k1, K).to(DTYPE)
            else:
                z1 = pyro.sample("z1", dist.OneHotCategorical(logits=q1))
            pyro.sample("z2", dist.OneHotCategorical(logits=q2 + z1 @ A if dependent else q2))
            pyro.sample("b", dist.Bernoulli(logits=qb))
            pyro.sample("c", dist.Bernoulli(logits=qc).to_event(1))

    return model, guide


def param_grads(names, flat_per_replicate=True) -> torch.Tensor:
    store = pyro.get_param_store()
    rows = []
    for name in names:
        p = store.get_param(name).unconstrained()
        g = torch.zeros_like(p) if p.grad is None else p.grad
        rows.append(g.reshape(g.shape[0], -1) if flat_per_replicate else g.reshape(-1))
    return torch.cat(rows, -1)


def exact_gradient(names=PARAMS, **problem) -> torch.Tensor:
    """The exact gradient of one replicate: the ELBO summed over all
    K * K * 2 * 4 codes with their guide probabilities, by plain autograd."""
    pyro.clear_param_store()
    model, guide = make_problem(1, **problem)
    eye = torch.eye(K, dtype=DTYPE)
    elbo = 0.0
    for i, j, b, c0, c1 in itertools.product(range(K), range(K), (0, 1), (0, 1), (0, 1)):
        z1 = torch.tensor([i]) if problem.get("categorical") else eye[i].expand(1, K)
        values = {
            "z1": z1,
            "z2": eye[j].expand(1, K),
            "b": torch.tensor([float(b)], dtype=DTYPE),
            "c": torch.tensor([[float(c0), float(c1)]], dtype=DTYPE),
        }
        guide_trace = poutine.trace(poutine.condition(guide, values)).get_trace()
        model_trace = poutine.trace(poutine.condition(model, values)).get_trace()
        log_q, log_p = guide_trace.log_prob_sum(), model_trace.log_prob_sum()
        elbo = elbo + log_q.exp() * (log_p - log_q)
    (-elbo).backward()
    out = param_grads(names)[0]
    pyro.clear_param_store()
    return out


def replicated_draws(elbo, reps, seed, names=PARAMS, **problem) -> torch.Tensor:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = make_problem(reps, **problem)
    elbo.loss_and_grads(model, guide)
    out = param_grads(names)
    pyro.clear_param_store()
    return out


def looped_draws(elbo, steps, seed, names=PARAMS) -> torch.Tensor:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = make_problem(None)
    rows = []
    for _ in range(steps):
        for p in pyro.get_param_store().values():
            p.unconstrained().grad = None
        elbo.loss_and_grads(model, guide)
        rows.append(param_grads(names, flat_per_replicate=False))
    pyro.clear_param_store()
    return torch.stack(rows)


def assert_unbiased(draws, exact):
    outliers = bias_outliers(draws, exact)
    assert not outliers, outliers
    # score-function noise is there: the test has something to detect
    assert (draws.std(0) > 1e-3).sum() >= 2 * K


# the relaxed log-mass -------------------------------------------------------------
MASK = torch.tensor([True, False, True])


@pytest.mark.parametrize(
    "make, masked",
    [
        (lambda lg: dist.OneHotCategorical(logits=lg), False),
        (lambda lg: dist.OneHotCategorical(logits=lg).to_event(1), False),
        (lambda lg: dist.Bernoulli(logits=lg), False),
        (lambda lg: dist.Bernoulli(logits=lg).to_event(2), False),
        (lambda lg: dist.Bernoulli(logits=lg).mask(MASK), True),
        (lambda lg: dist.Bernoulli(logits=lg[:1]).expand([4, 3]), False),
    ],
)
def test_relaxed_log_prob_matches_at_vertices_and_is_linear(make, masked):
    torch.manual_seed(0)
    fn = make(torch.randn(4, 3, dtype=DTYPE))
    a, b = fn.sample(), fn.sample()
    assert torch.allclose(relaxed_log_prob(fn, a), fn.log_prob(a))
    mid = relaxed_log_prob(fn, (a + b) / 2)
    assert torch.allclose(mid, (fn.log_prob(a) + fn.log_prob(b)) / 2)
    # the score mask: zero exactly where Pyro's score function drops an entry
    expected = MASK.to(DTYPE).expand(a.shape) if masked else torch.ones_like(a)
    assert torch.equal(score_mask(fn, a), expected)


# MuProp ------------------------------------------------------------------------------
@pytest.mark.parametrize("independent_sites", [False, True])
@pytest.mark.parametrize("vectorize", [False, True])
def test_muprop_unbiased(independent_sites, vectorize):
    exact = exact_gradient()
    elbo = TraceMuProp_ELBO(
        independent_sites=independent_sites,
        num_particles=2,
        vectorize_particles=vectorize,
        max_plate_nesting=1,
    )
    assert_unbiased(replicated_draws(elbo, 4000, seed=1), exact)


def test_muprop_unbiased_for_a_dependent_guide():
    exact = exact_gradient(dependent=True)
    elbo = TraceMuProp_ELBO(max_plate_nesting=1)
    assert_unbiased(replicated_draws(elbo, 4000, seed=2, dependent=True), exact)


def test_muprop_unbiased_without_plates():
    """No plate: scalar costs, separate steps (guide parameters only: with 200
    draws a model weight W[i, j] is hit too rarely for a normal test)."""
    exact = exact_gradient(GUIDE_PARAMS)
    draws = looped_draws(TraceMuProp_ELBO(), steps=200, seed=3, names=GUIDE_PARAMS)
    assert_unbiased(draws, exact)


def test_muprop_is_exact_for_a_linear_objective():
    """For f linear in the one-hot values the expansion is f itself: the guide
    gradient has zero variance and equals the exact one (the defining formula)."""
    exact = exact_gradient(GUIDE_PARAMS, linear=True)
    elbo = TraceMuProp_ELBO(independent_sites=True, max_plate_nesting=1)
    draws = replicated_draws(elbo, 200, seed=4, names=GUIDE_PARAMS, linear=True)
    assert torch.allclose(draws, exact.expand_as(draws), atol=1e-10)
    # while the plain score-function estimator is noisy there
    noisy = replicated_draws(Trace_ELBO(max_plate_nesting=1), 200, 4, GUIDE_PARAMS, linear=True)
    assert noisy.std(0).max() > 0.1


def test_negative_control_muprop_without_its_analytic_term_is_detected(monkeypatch):
    exact = exact_gradient()

    def no_analytic_term(fn, elementwise):
        return torch.zeros(())

    monkeypatch.setattr(muprop_module, "reduce_like_log_prob", no_analytic_term)
    elbo = TraceMuProp_ELBO(independent_sites=True, max_plate_nesting=1)
    assert bias_outliers(replicated_draws(elbo, 4000, seed=1), exact)


# REBAR and RELAX --------------------------------------------------------------------
class PerReplicateCV(nn.Module):
    """A user control variate: one term per plate element, from z1 and z2."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * K, 8), nn.Tanh(), nn.Linear(8, 1)).to(DTYPE)

    def forward(self, zetas):
        return {"z2": self.net(torch.cat([zetas["z1"], zetas["z2"]], -1)).squeeze(-1)}


class ScalarCV(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.full((K,), 0.1, dtype=DTYPE))

    def forward(self, zetas):
        return torch.tanh(zetas["z1"] @ self.w).sum() + (zetas["b"] ** 2).sum()


@pytest.mark.parametrize(
    "make",
    [
        lambda: TraceREBAR_ELBO(tune=False, max_plate_nesting=1),
        lambda: TraceREBAR_ELBO(temperature=0.3, eta=0.7, tune=True, max_plate_nesting=1),
        lambda: TraceREBAR_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1),
        lambda: TraceRELAX_ELBO(max_plate_nesting=1),
        lambda: TraceRELAX_ELBO(PerReplicateCV(), num_particles=2, max_plate_nesting=1),
        lambda: TraceRELAX_ELBO(ScalarCV(), temperature=1.0, max_plate_nesting=1),
    ],
    ids=["rebar", "rebar-tuned", "rebar-vectorized", "relax", "relax-user", "relax-scalar"],
)
def test_rebar_relax_unbiased(make):
    exact = exact_gradient()
    assert_unbiased(replicated_draws(make(), 3000, seed=5), exact)


def test_rebar_unbiased_without_plates():
    """No plate (guide parameters only, as for MuProp)."""
    exact = exact_gradient(GUIDE_PARAMS)
    draws = looped_draws(TraceREBAR_ELBO(tune=False), steps=150, seed=6, names=GUIDE_PARAMS)
    assert_unbiased(draws, exact)


def test_negative_control_rebar_without_conditional_reparameterization_is_detected(monkeypatch):
    """Drawing z~ | b right but dropping its pathwise dependence on the logits
    (the term E[grad c(sigma(z~))]) biases REBAR: the test must see it."""
    exact = exact_gradient()
    onehot, bernoulli = rebar_module.gumbel_given_onehot, rebar_module.logistic_given_bernoulli
    monkeypatch.setattr(rebar_module, "gumbel_given_onehot", lambda lg, b: onehot(lg.detach(), b))
    monkeypatch.setattr(
        rebar_module, "logistic_given_bernoulli", lambda lg, b: bernoulli(lg.detach(), b)
    )
    elbo = TraceREBAR_ELBO(tune=False, max_plate_nesting=1)
    assert bias_outliers(replicated_draws(elbo, 3000, seed=5), exact)


def test_relax_control_variate_is_trained():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = make_problem(50)
    elbo = TraceRELAX_ELBO(tune_lr=1e-2, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss=elbo)
    svi.step()
    params = list(elbo.control_variate.parameters())
    assert len(params) == 4 * 4  # an MLP (2 layers, weight + bias) per discrete site
    before = [p.detach().clone() for p in params]
    eta, temperature = elbo.eta, elbo.temperature
    for _ in range(3):
        svi.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(not torch.equal(p, q) for p, q in zip(params, before, strict=True))
    assert elbo.eta != eta and elbo.temperature != temperature
    assert params[0].dtype == DTYPE
    pyro.clear_param_store()


def test_relax_user_control_variate_is_trained():
    pyro.clear_param_store()
    cv = ScalarCV()
    before = cv.w.detach().clone()
    model, guide = make_problem(20)
    elbo = TraceRELAX_ELBO(cv, tune_lr=1e-2, max_plate_nesting=1)
    elbo.loss_and_grads(model, guide)
    assert cv.w.grad is not None and not torch.equal(cv.w.detach(), before)
    pyro.clear_param_store()


def test_rebar_tune_flag():
    model, guide = make_problem(20)
    fixed = TraceREBAR_ELBO(temperature=0.4, eta=0.8, tune=False, max_plate_nesting=1)
    tuned = TraceREBAR_ELBO(temperature=0.4, eta=0.8, tune=True, max_plate_nesting=1)
    for _ in range(3):
        fixed.loss_and_grads(model, guide)
        tuned.loss_and_grads(model, guide)
    assert fixed.eta == pytest.approx(0.8) and fixed.temperature == pytest.approx(0.4)
    assert tuned.eta != pytest.approx(0.8, abs=1e-5)
    assert tuned.temperature != pytest.approx(0.4, abs=1e-5)
    pyro.clear_param_store()


# losses, errors ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: TraceMuProp_ELBO(max_plate_nesting=1),
        lambda: TraceMuProp_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1),
        lambda: TraceREBAR_ELBO(max_plate_nesting=1),
        lambda: TraceREBAR_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1),
        lambda: TraceRELAX_ELBO(max_plate_nesting=1),
    ],
)
def test_loss_is_the_elbo_estimate(make):
    elbo = make()
    model, guide = make_problem(5)
    kw = dict(num_particles=elbo.num_particles, vectorize_particles=elbo.vectorize_particles)
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    reference = Trace_ELBO(max_plate_nesting=1, **kw).loss(model, guide)
    for method in ("loss", "loss_and_grads"):
        pyro.set_rng_seed(3)
        assert getattr(elbo, method)(model, guide) == pytest.approx(reference, rel=1e-12)
    pyro.set_rng_seed(3)
    value = elbo.differentiable_loss(model, guide)
    assert value.requires_grad and value.item() == pytest.approx(reference, rel=1e-12)
    pyro.clear_param_store()


ALL = [
    lambda: TraceMuProp_ELBO(max_plate_nesting=1),
    lambda: TraceREBAR_ELBO(max_plate_nesting=1),
    lambda: TraceRELAX_ELBO(max_plate_nesting=1),
]


@pytest.mark.parametrize("make", ALL)
def test_integer_categorical_site_raises(make):
    model, guide = make_problem(4, categorical=True)
    with pytest.raises(ValueError, match="integer Categorical site 'z1'"):
        make().loss_and_grads(model, guide)
    pyro.clear_param_store()


@pytest.mark.parametrize("make", ALL)
def test_other_non_reparameterized_sites_raise(make):
    def model():
        pyro.sample("n", dist.Poisson(torch.tensor(3.0, dtype=DTYPE)))

    def guide():
        rate = pyro.param("rate", torch.tensor(2.0, dtype=DTYPE))
        pyro.sample("n", dist.Poisson(rate))

    with pytest.raises(
        ValueError, match="OneHotCategorical or Bernoulli only; site 'n' has Poisson"
    ):
        make().loss_and_grads(model, guide)
    pyro.clear_param_store()


@pytest.mark.parametrize("cls", [TraceREBAR_ELBO, TraceRELAX_ELBO])
def test_rebar_relax_reject_dependent_guides(cls):
    model, guide = make_problem(4, dependent=True)
    with pytest.raises(ValueError, match="one stochastic layer"):
        cls(max_plate_nesting=1).loss_and_grads(model, guide)
    pyro.clear_param_store()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "hot"])
def test_bad_temperature_raises(bad):
    with pytest.raises(ValueError, match="temperature"):
        TraceREBAR_ELBO(temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        TraceRELAX_ELBO(temperature=bad)


def test_relax_argument_checks():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        TraceRELAX_ELBO(control_variate=lambda z: 0.0)
    with pytest.raises(ValueError, match="no `tune`"):
        TraceRELAX_ELBO(tune=False)

    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones((), dtype=DTYPE))

        def forward(self, zetas):
            return self.w * zetas["z1"]

    model, guide = make_problem(4)
    with pytest.raises(ValueError, match="scalar tensor or a dict"):
        TraceRELAX_ELBO(Bad(), max_plate_nesting=1).loss_and_grads(model, guide)
    pyro.clear_param_store()


@pytest.mark.parametrize(
    "make",
    [
        lambda: TraceMuProp_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1),
        lambda: TraceREBAR_ELBO(max_plate_nesting=1),
        lambda: TraceRELAX_ELBO(max_plate_nesting=1),
    ],
)
def test_svi_training_reduces_the_loss(make):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = make_problem(100)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=make())
    first = sum(svi.step() for _ in range(3)) / 3
    for _ in range(15):
        svi.step()
    last = sum(svi.step() for _ in range(3)) / 3
    assert last < first
    pyro.clear_param_store()
