"""TraceIndeCateR_ELBO: the paper's formula computed independently, unbiasedness.

The oracle loops over the dimensions ``d`` (every element of every categorical site)
and their categories ``k`` with plain autograd:
``(1/N) sum_n sum_d sum_k grad q_d(k) f(x^(n) with x_d = k)`` plus the model
parameter's gradient at each draw, with ``f = log p - log q`` written out by hand.

The statistical test uses ``tests/common.bias_outliers``: per coordinate
``|mean - exact| <= z * se`` with Bonferroni ``z`` (family-wise false-alarm rate
``1e-3`` under the normal approximation); seeds are fixed.
"""

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from common import bias_outliers

from pyro_ils.infer import TraceIndeCateR_ELBO

pytestmark = pytest.mark.usefixtures("clean_param_store")

DTYPE = torch.float64
G = torch.Generator().manual_seed(0)
INIT = {
    "q1": 0.5 * torch.randn(3, generator=G, dtype=DTYPE),
    "qp": 0.5 * torch.randn(2, 3, generator=G, dtype=DTYPE),
    "q2": 0.5 * torch.randn(2, generator=G, dtype=DTYPE),
    "theta": torch.tensor(0.7, dtype=DTYPE),
    "p2": torch.tensor([0.3, -0.2], dtype=DTYPE),  # the prior logits of z2, learned
}
PARAMS = ["q1", "qp", "q2", "theta", "p2"]
A = torch.randn(3, 3, generator=G, dtype=DTYPE)
B = torch.randn(2, generator=G, dtype=DTYPE)
C = torch.randn(3, generator=G, dtype=DTYPE)
X = torch.tensor([0.3, -0.5], dtype=DTYPE)
Y = torch.tensor(0.4, dtype=DTYPE)
PRIOR1, PRIORP = torch.ones(3) / 3, torch.tensor([0.2, 0.3, 0.5])


def y_mean(z1, zp, z2, theta):
    return theta * B[z2] * z1 + C[zp].sum(-1)


def log_joint(z1, zp, z2, theta, p2):
    out = dist.Categorical(PRIOR1.to(DTYPE)).log_prob(z1)
    out = out + dist.Categorical(PRIORP.to(DTYPE)).log_prob(zp).sum()
    out = out + dist.Normal(A[z1, zp], 1.0).log_prob(X).sum()
    out = out + dist.Categorical(logits=p2).log_prob(z2)
    return out + dist.Normal(y_mean(z1, zp, z2, theta), 1.0).log_prob(Y)


def log_q(z1, zp, z2, q1, qp, q2):
    out = dist.Categorical(logits=q1).log_prob(z1)
    out = out + dist.Categorical(logits=qp).log_prob(zp).sum()
    return out + dist.Categorical(logits=q2).log_prob(z2)


def make_problem(draws: list):
    """Three categorical sites, one in a plate of 2 whose terms are coupled by ``y``
    (so each plate element is its own dimension). The guide records its draws."""

    def param(name):
        return pyro.param(name, lambda: INIT[name].clone())

    def model():
        theta, p2 = param("theta"), param("p2")
        z1 = pyro.sample("z1", dist.Categorical(PRIOR1.to(DTYPE)))
        with pyro.plate("p", 2):
            zp = pyro.sample("zp", dist.Categorical(PRIORP.to(DTYPE)))
            pyro.sample("x", dist.Normal(A[z1, zp], 1.0), obs=X)
        z2 = pyro.sample("z2", dist.Categorical(logits=p2))
        # keepdim: z1 and z2 carry the plate's dim of size 1 in the run over the
        # alternatives (a new dim left of the plate), as in parallel enumeration
        mean = theta * B[z2] * z1 + C[zp].sum(-1, keepdim=True)
        pyro.sample("y", dist.Normal(mean, 1.0), obs=Y)

    def guide():
        z1 = pyro.sample("z1", dist.Categorical(logits=param("q1")))
        with pyro.plate("p", 2):
            zp = pyro.sample("zp", dist.Categorical(logits=param("qp")))
        z2 = pyro.sample("z2", dist.Categorical(logits=param("q2")))
        if z1.dim() == 0:  # the draw, not the run over the alternatives
            draws.append((z1, zp, z2))

    return model, guide


def params():
    return [INIT[n].clone().requires_grad_() for n in PARAMS]


def paper_formula(draws) -> torch.Tensor:
    """IndeCateR's estimate by a loop over the draws, the dimensions and the categories."""
    q1, qp, q2, theta, p2 = ps = params()
    sizes = {"z1": 3, ("zp", 0): 3, ("zp", 1): 3, "z2": 2}
    total = 0.0
    for z1, zp, z2 in draws:
        total = total + log_joint(z1, zp, z2, theta, p2)  # pathwise: theta, p2 at the draw
        for dim, num in sizes.items():
            for k in range(num):
                x1, xp, x2 = z1.clone(), zp.clone(), z2.clone()
                if dim == "z1":
                    x1, prob = torch.tensor(k), q1.softmax(-1)[k]
                elif dim == "z2":
                    x2, prob = torch.tensor(k), q2.softmax(-1)[k]
                else:
                    xp[dim[1]], prob = k, qp[dim[1]].softmax(-1)[k]
                with torch.no_grad():
                    f = log_joint(x1, xp, x2, theta, p2) - log_q(x1, xp, x2, q1, qp, q2)
                total = total + prob * f
    grads = torch.autograd.grad(total / len(draws), ps)
    return torch.cat([g.reshape(-1) for g in grads])


def exact_gradient() -> torch.Tensor:
    q1, qp, q2, theta, p2 = ps = params()
    elbo = 0.0
    for z1, a, b, z2 in itertools.product(range(3), range(3), range(3), range(2)):
        z1, zp, z2 = torch.tensor(z1), torch.tensor([a, b]), torch.tensor(z2)
        lq = log_q(z1, zp, z2, q1, qp, q2)
        elbo = elbo + lq.exp() * (log_joint(z1, zp, z2, theta, p2) - lq)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(elbo, ps)])


def ascent() -> torch.Tensor:
    store = pyro.get_param_store()
    return torch.cat([-store.get_param(n).grad.reshape(-1) for n in PARAMS])


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("mean_field", [True, False])
def test_matches_the_paper_formula(num_samples, mean_field):
    elbo = TraceIndeCateR_ELBO(num_samples, mean_field=mean_field, max_plate_nesting=1)
    for seed in range(3):  # the first step checks the mean field, the later ones assume it
        draws = []
        pyro.clear_param_store()
        model, guide = make_problem(draws)
        pyro.set_rng_seed(seed)
        elbo.loss_and_grads(model, guide)
        assert len(draws) == num_samples
        expected = paper_formula(draws)
        assert torch.allclose(ascent(), expected, atol=1e-10), (ascent(), expected)


def test_unbiased_against_enumeration():
    exact = exact_gradient()
    elbo = TraceIndeCateR_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(1)
    rows = []
    for _ in range(120):
        pyro.clear_param_store()
        model, guide = make_problem([])
        elbo.loss_and_grads(model, guide)
        rows.append(ascent())
    draws = torch.stack(rows)
    assert not bias_outliers(draws, exact), bias_outliers(draws, exact)


def test_structured_guide_is_refused():
    def model():
        z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
        pyro.sample("w", dist.Categorical(torch.ones(3) / 3))
        pyro.sample("y", dist.Normal(z.double(), 1.0), obs=torch.tensor(0.0, dtype=DTYPE))

    def guide():
        z = pyro.sample("z", dist.Categorical(logits=pyro.param("l", torch.zeros(3))))
        pyro.sample("w", dist.Categorical(logits=torch.nn.functional.one_hot(z, 3).double()))

    with pytest.raises(ValueError, match="not mean field"):
        TraceIndeCateR_ELBO(max_plate_nesting=0).loss_and_grads(model, guide)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_samples, not num_particles"):
        TraceIndeCateR_ELBO(num_particles=2)
    with pytest.raises(ValueError, match="num_samples"):
        TraceIndeCateR_ELBO(num_samples=0)
