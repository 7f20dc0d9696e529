"""TraceDisARM_ELBO: the paper's formula on one pair, unbiasedness, variance, errors.

Statistical tests. A "draw" is one gradient estimate; ``M`` independent replicates
of the problem live in ``pyro.plate("rep", M)``, each with its own copy of every
parameter, so one ``loss_and_grads`` call yields ``M`` independent draws (the
plate-wise Rao-Blackwellization keeps each replicate's cost its own). For each of
the ``P`` coordinates, ``tests/common.bias_outliers`` asserts
``|mean - exact| <= z * se`` with ``z = Phi^{-1}(1 - alpha / (2 P))`` (Bonferroni,
family-wise false-alarm rate ``alpha = 1e-3`` under the normal approximation).
Seeds are fixed, so every test is deterministic.
"""

import contextlib
import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from common import bias_outliers
from pyro.infer import Trace_ELBO

import pyro_ils.infer.trace_disarm_elbo as disarm_module
from pyro_ils.infer import TraceDisARM_ELBO

pytestmark = pytest.mark.usefixtures("clean_param_store")

DTYPE = torch.float64
INIT = {
    "a": torch.tensor([0.2, -0.4, 1.0], dtype=DTYPE),  # logits of the binary vector b
    "ac": torch.tensor(-0.3, dtype=DTYPE),  # logit of the binary scalar c
    "theta": torch.tensor(0.8, dtype=DTYPE),  # a model parameter
}
W = torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)
Y = torch.tensor(1.2, dtype=DTYPE)
PARAMS = ["a", "ac", "theta"]


def log_joint(b, c, theta):
    """log p(y, b, c) of one replicate, nonlinear in the bits."""
    prior = dist.Bernoulli(torch.tensor(0.3, dtype=DTYPE)).log_prob(b).sum(-1)
    prior = prior + dist.Bernoulli(torch.tensor(0.6, dtype=DTYPE)).log_prob(c)
    mean = (b * W).sum(-1) + theta * c * b[..., 0]
    return prior + dist.Normal(mean, 1.0).log_prob(Y)


def log_q(b, c, a, ac):
    return dist.Bernoulli(logits=a).log_prob(b).sum(-1) + dist.Bernoulli(logits=ac).log_prob(c)


def make_problem(reps: int | None):
    lead = () if reps is None else (reps,)

    def param(name):
        return pyro.param(name, lambda: INIT[name].expand(lead + INIT[name].shape).clone())

    def plate():
        return contextlib.nullcontext() if reps is None else pyro.plate("rep", reps, dim=-1)

    def model():
        theta = param("theta")
        with plate():
            b = pyro.sample(
                "b", dist.Bernoulli(torch.full(lead + (3,), 0.3, dtype=DTYPE)).to_event(1)
            )
            c = pyro.sample("c", dist.Bernoulli(torch.full(lead, 0.6, dtype=DTYPE)))
            mean = (b * W).sum(-1) + theta * c * b[..., 0]
            pyro.sample("y", dist.Normal(mean, 1.0), obs=Y.expand(lead))

    def guide():
        a, ac = param("a"), param("ac")
        with plate():
            pyro.sample("b", dist.Bernoulli(logits=a).to_event(1))
            pyro.sample("c", dist.Bernoulli(logits=ac))

    return model, guide


def exact_gradient() -> torch.Tensor:
    """d ELBO / d (a, ac, theta) of one replicate by enumerating the 16 configurations."""
    a, ac, theta = (INIT[n].clone().requires_grad_() for n in PARAMS)
    elbo = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=4):
        b, c = torch.tensor(bits[:3], dtype=DTYPE), torch.tensor(bits[3], dtype=DTYPE)
        lq = log_q(b, c, a, ac)
        elbo = elbo + lq.exp() * (log_joint(b, c, theta) - lq)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(elbo, [a, ac, theta])])


def grads() -> torch.Tensor:
    """The ascent direction (minus the loss gradient) per replicate: ``(M, P)``."""
    store = pyro.get_param_store()
    rows = []
    for name in PARAMS:
        g = store.get_param(name).unconstrained().grad
        rows.append(-g.reshape(g.shape[0], -1))
    return torch.cat(rows, -1)


def replicated_draws(elbo, reps: int, seed: int) -> torch.Tensor:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = make_problem(reps)
    elbo.loss_and_grads(model, guide)
    return grads()


def test_one_pair_matches_the_paper_formula():
    """One pair, no plate: the gradient equals the formula computed by hand from the
    same uniforms (regenerated from the seed: the guide draws b's three, then c's)."""
    for seed in range(6):
        pyro.clear_param_store()
        model, guide = make_problem(None)
        pyro.set_rng_seed(seed)
        TraceDisARM_ELBO().loss_and_grads(model, guide)
        store = pyro.get_param_store()
        got = torch.cat([-store.get_param(n).grad.reshape(-1) for n in PARAMS])

        pyro.set_rng_seed(seed)
        u = torch.cat([torch.rand(3, dtype=DTYPE), torch.rand(1, dtype=DTYPE)])
        a, ac, theta = (INIT[n].clone().requires_grad_() for n in PARAMS)
        alpha = torch.cat([a, ac.reshape(1)]).detach()
        b = (u > torch.sigmoid(-alpha)).to(DTYPE)
        bt = (1 - u > torch.sigmoid(-alpha)).to(DTYPE)

        f1, f2 = (log_joint(x[:3], x[3], theta) - log_q(x[:3], x[3], a, ac) for x in (b, bt))
        disarm = 0.5 * (f1 - f2).detach() * (-1) ** bt * (b != bt) * torch.sigmoid(alpha.abs())
        (d_theta,) = torch.autograd.grad(0.5 * (f1 + f2), [theta])
        expected = torch.cat([disarm, d_theta.reshape(1)])
        assert torch.allclose(got, expected, atol=1e-12), (seed, got, expected)
        if seed == 0:
            assert (b != bt).any()  # the seed exercises the nonzero branch


def test_expanded_and_masked_site_matches_the_formula():
    """One logit expanded to three elements, the middle one masked out of ``log q``:
    its gradient is the formula summed over the two unmasked elements (Pyro's score
    function leaves a masked element out; so does DisARM)."""
    mask = torch.tensor([True, False, True])

    def model():
        b = pyro.sample("b", dist.Bernoulli(torch.tensor(0.3, dtype=DTYPE)).expand([3]).to_event(1))
        pyro.sample("y", dist.Normal((b * W).sum(-1), 1.0), obs=Y)

    def guide():
        a0 = pyro.param("a0", torch.tensor(0.4, dtype=DTYPE))
        pyro.sample("b", dist.Bernoulli(logits=a0).expand([3]).mask(mask).to_event(1))

    a0 = torch.tensor(0.4, dtype=DTYPE)

    def f(x):
        lq = (dist.Bernoulli(logits=a0).log_prob(x) * mask).sum()
        lp = dist.Bernoulli(torch.tensor(0.3, dtype=DTYPE)).log_prob(x).sum()
        return lp + dist.Normal((x * W).sum(), 1.0).log_prob(Y) - lq

    hits = 0
    for seed in range(6):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        TraceDisARM_ELBO().loss_and_grads(model, guide)
        got = -pyro.param("a0").grad

        pyro.set_rng_seed(seed)
        u = torch.rand(3, dtype=DTYPE)
        b, bt = ((v > torch.sigmoid(-a0)).to(DTYPE) for v in (u, 1 - u))

        per_element = 0.5 * (f(b) - f(bt)) * (b - bt) * torch.sigmoid(a0.abs())
        expected = (per_element * mask).sum()
        assert torch.allclose(got, expected, atol=1e-12), (seed, got, expected)
        hits += int(bool((b != bt)[mask].any() and (b != bt)[~mask].any()))
    assert hits  # some seed has the pair differ both in and out of the mask


def test_unbiased_against_enumeration():
    exact = exact_gradient()
    draws = replicated_draws(TraceDisARM_ELBO(max_plate_nesting=1), 4000, seed=1)
    assert draws.shape == (4000, 5)
    assert not bias_outliers(draws, exact), bias_outliers(draws, exact)


def test_unbiased_with_several_pairs():
    exact = exact_gradient()
    draws = replicated_draws(TraceDisARM_ELBO(num_pairs=3, max_plate_nesting=1), 1500, seed=2)
    assert not bias_outliers(draws, exact), bias_outliers(draws, exact)


def test_negative_control_without_the_sigma_factor(monkeypatch):
    """The same test rejects the estimate without its sigma(|a|) factor."""
    exact = exact_gradient()

    def without_sigma(b, b_tilde, logits):
        return (1 - 2 * b_tilde) * (b != b_tilde).to(logits.dtype)

    monkeypatch.setattr(disarm_module, "disarm_factor", without_sigma)
    draws = replicated_draws(TraceDisARM_ELBO(max_plate_nesting=1), 4000, seed=1)
    assert bias_outliers(draws, exact)


def test_less_variance_than_reinforce_at_equal_evaluations():
    """Two evaluations each: DisARM against Trace_ELBO's score function with two
    particles, on the binary logits (the model parameter is pathwise in both)."""
    disarm = replicated_draws(TraceDisARM_ELBO(max_plate_nesting=1), 4000, seed=3)[:, :4]
    reinforce = replicated_draws(Trace_ELBO(num_particles=2, max_plate_nesting=1), 4000, 3)
    ratio = disarm.var(0) / reinforce[:, :4].var(0)
    assert (ratio < 0.9).all(), ratio  # measured 0.18-0.86


def test_categorical_site_is_refused():
    def model():
        pyro.sample("z", dist.Categorical(torch.ones(3)))

    def guide():
        pyro.sample("z", dist.Categorical(logits=pyro.param("l", torch.zeros(3))))

    with pytest.raises(ValueError, match="TraceRLOO_ELBO or TraceIndeCateR_ELBO"):
        TraceDisARM_ELBO().loss_and_grads(model, guide)


@pytest.mark.parametrize("dependent", ["bernoulli", "normal"])
def test_dependent_guide_is_refused(dependent):
    """A later site whose distribution depends on a binary draw is detected (the
    seed makes the pair differ at the parent)."""

    def model():
        b = pyro.sample("b", dist.Bernoulli(0.5))
        if dependent == "bernoulli":
            pyro.sample("b2", dist.Bernoulli(0.5))
        else:
            pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(b, 1.0), obs=torch.tensor(0.0))

    def guide():
        b = pyro.sample("b", dist.Bernoulli(logits=pyro.param("l", torch.tensor(0.0))))
        if dependent == "bernoulli":
            pyro.sample("b2", dist.Bernoulli(logits=2 * b - 1))
        else:
            pyro.sample("z", dist.Normal(b, 1.0))

    elbo = TraceDisARM_ELBO(num_pairs=20)
    with pytest.raises(ValueError, match="not factorized"):
        elbo.loss_and_grads(model, guide)


def test_continuous_parent_is_allowed():
    """A binary site whose logits depend on a reparameterized parent drawn before it
    is DisARM given the parent: it runs and the parent is replayed."""

    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Bernoulli(logits=z))
        pyro.sample("y", dist.Normal(b + z, 1.0), obs=torch.tensor(0.5))

    def guide():
        z = pyro.sample("z", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))
        pyro.sample("b", dist.Bernoulli(logits=z))

    pyro.set_rng_seed(0)
    loss = TraceDisARM_ELBO(num_pairs=4).loss_and_grads(model, guide)
    assert isinstance(loss, float)
    assert pyro.param("m").grad is not None


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_pairs"):
        TraceDisARM_ELBO(num_pairs=0)
    with pytest.raises(ValueError, match="num_pairs, not num_particles"):
        TraceDisARM_ELBO(num_particles=2)
    with pytest.raises(NotImplementedError):
        TraceDisARM_ELBO(vectorize_particles=True)
