"""TraceILSDiff_ELBO: ILS with exact discrete differences.

Oracles: plain autograd of the stated formula (a site whose terms lie in its
plate: the gradient is deterministic), the conditional posterior by enumeration
(``step_size=1``, entropic map), and brute-force enumeration of the expected
objective for a coupled site (unbiasedness of the local expectation gradient at
small ``c``: Bonferroni z-test of ``test_estimators_control_variates.py``,
family-wise false-alarm rate 1e-3 under the normal approximation; fixed seeds).
"""

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from common import bias_outliers
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_ils import ILSCategorical, TraceILS_ELBO, TraceILSDiff_ELBO

DTYPE = torch.float64
N, K = 3, 4
SMALL = 1e-6


pytestmark = pytest.mark.usefixtures("clean_param_store")


def _table(seed=0):
    return torch.randn(N, K, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


TABLE = _table()
PRIOR = torch.log_softmax(_table(1)[0], -1)


def model(coupled=False, onehot=True):
    with pyro.plate("p", N):
        if onehot:
            z = pyro.sample("z", dist.OneHotCategorical(logits=PRIOR))
        else:
            z = torch.nn.functional.one_hot(pyro.sample("z", dist.Categorical(logits=PRIOR)), K).to(
                DTYPE
            )
        per = (z * TABLE).sum(-1)
        if not coupled:
            pyro.factor("f", per)
    if coupled:
        # A likelihood outside the plate: the draws are coupled.
        pyro.factor("g", per.sum(-1, keepdim=True) ** 2)


def guide(coupled=False, onehot=True):
    logits = pyro.param(
        "l", lambda: torch.randn(N, K, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    )
    with pyro.plate("p", N):
        if onehot:
            pyro.sample("z", dist.OneHotCategorical(logits=logits))
        else:
            pyro.sample("z", dist.Categorical(logits=logits))


def _grad(elbo, *args, seed=0, m=model, g=guide):
    pyro.clear_param_store()
    g(*args)
    pyro.set_rng_seed(seed)
    param = pyro.param("l").unconstrained()
    loss = elbo.differentiable_loss(m, g, *args)
    return torch.autograd.grad(loss, param)[0]


def _exact_parts(coupled):
    """(gradient of -E_q[likelihood terms], gradient of KL(q || p)) by enumeration."""
    guide()
    logits = pyro.param("l").detach().requires_grad_()
    q, log_q = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
    kl = (q * (log_q - PRIOR)).sum()
    if coupled:
        lik = 0.0
        for ks in itertools.product(range(K), repeat=N):
            mass = torch.stack([q[n, k] for n, k in enumerate(ks)]).prod()
            lik = lik + mass * sum(TABLE[n, k] for n, k in enumerate(ks)) ** 2
    else:
        lik = (q * TABLE).sum()
    g_lik = torch.autograd.grad(-lik, logits, retain_graph=True)[0]
    return g_lik, torch.autograd.grad(kl, logits)[0]


@pytest.mark.parametrize("onehot", [True, False])
@pytest.mark.parametrize("analytic_kl", [True, False])
def test_small_step_is_the_exact_gradient_when_terms_are_in_the_plate(analytic_kl, onehot):
    g_lik, g_kl = _exact_parts(coupled=False)
    elbo = TraceILSDiff_ELBO(step_size=SMALL, analytic_kl=analytic_kl)
    got = _grad(elbo, False, onehot)
    # The backward is divided by c: its small-step limit is the gradient itself.
    torch.testing.assert_close(got, g_lik + g_kl, atol=1e-5, rtol=1e-5)


def test_step_one_targets_the_conditional_posterior():
    guide()
    logits = pyro.param("l").detach()
    posterior = torch.softmax(PRIOR + TABLE, -1)  # p(z_n | x) for each plate element
    got = _grad(TraceILSDiff_ELBO(step_size=1.0, analytic_kl=False))
    torch.testing.assert_close(got, torch.softmax(logits, -1) - posterior)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_coupled_draws_give_the_unbiased_local_expectation_gradient(analytic_kl):
    g_lik, g_kl = _exact_parts(coupled=True)
    elbo = TraceILSDiff_ELBO(step_size=SMALL, analytic_kl=analytic_kl)
    draws = torch.stack([_grad(elbo, True, seed=s) for s in range(600)]).flatten(1)
    want = (g_lik + g_kl).flatten()
    assert not bias_outliers(draws, want)
    assert draws.std(0).min() > 1e-3  # the estimate is random: the test can fail


def test_negative_control_first_order_signal_is_detected():
    """The test above detects a biased estimate: the first-order signal (ILS's
    ``dL/dz`` with the same map and step, straight-through at small ``c``) on the
    same coupled, quadratic objective is far off."""
    g_lik, g_kl = _exact_parts(coupled=True)
    elbo = TraceILS_ELBO(step_size=SMALL, projection="mirror", guide_log_prob="analytic")
    draws = torch.stack([_grad(elbo, True, seed=s) for s in range(600)])
    want = (SMALL * g_lik + g_kl) / SMALL
    assert bias_outliers((draws / SMALL).flatten(1), want.flatten())


def test_to_event_is_the_same_as_a_coupled_plate():
    def guide_event(coupled=True):
        logits = pyro.param(
            "l",
            lambda: torch.randn(N, K, generator=torch.Generator().manual_seed(5), dtype=DTYPE),
        )
        pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1))

    def model_event(coupled=True):
        z = pyro.sample("z", dist.OneHotCategorical(logits=PRIOR).expand([N]).to_event(1))
        pyro.factor("g", ((z * TABLE).sum(-1).sum(-1)) ** 2)

    elbo = TraceILSDiff_ELBO(step_size=1.0)
    for seed in range(5):
        a = _grad(elbo, True, seed=seed)
        b = _grad(elbo, True, seed=seed, m=model_event, g=guide_event)
        torch.testing.assert_close(a, b)


def test_loss_scale_leaves_the_target_unchanged():
    """The whole loss times s (poutine.scale): the gradient is s times the gradient,
    also at a step where the map is far from linear."""
    elbo = TraceILSDiff_ELBO(step_size=3.0, analytic_kl=False)
    base = _grad(elbo, False)
    scaled = _grad(elbo, False, m=poutine.scale(model, 7.0), g=poutine.scale(guide, 7.0))
    torch.testing.assert_close(scaled, 7.0 * base)


@pytest.mark.parametrize(
    "projection, step_size", [("mirror", 0.1), ("euclidean", 0.1), ("mirror", 0.0)]
)
def test_masked_elements_get_no_gradient(projection, step_size):
    # With the euclidean map a zero difference still gives the target z (and the
    # gradient pi - z): only the mask in the draw's weight zeroes it.
    mask = torch.tensor([True, False, True])

    def masked_model():
        with pyro.plate("p", N), poutine.mask(mask=mask):
            z = pyro.sample("z", dist.OneHotCategorical(logits=PRIOR))
            pyro.factor("f", (z * TABLE).sum(-1))

    def masked_guide():
        logits = pyro.param("l", lambda: torch.zeros(N, K, dtype=DTYPE))
        with pyro.plate("p", N), poutine.mask(mask=mask):
            pyro.sample("z", dist.OneHotCategorical(logits=logits))

    elbo = TraceILSDiff_ELBO(step_size=step_size, projection=projection)
    got = _grad(elbo, m=masked_model, g=masked_guide)
    assert (got[1] == 0).all() and (got[0] != 0).any() and (got[2] != 0).any()


def test_bernoulli_site():
    t = torch.tensor([1.5, -0.5, 0.3], dtype=DTYPE)

    def bmodel():
        with pyro.plate("p", 3):
            b = pyro.sample("b", dist.Bernoulli(logits=torch.zeros(3, dtype=DTYPE)))
            pyro.factor("f", b * t)

    def bguide():
        a = pyro.param("l", lambda: torch.tensor([0.2, -1.0, 0.5], dtype=DTYPE))
        with pyro.plate("p", 3):
            pyro.sample("b", dist.Bernoulli(logits=a))

    got = _grad(TraceILSDiff_ELBO(step_size=SMALL, analytic_kl=False), m=bmodel, g=bguide)
    a = pyro.param("l").detach().requires_grad_()
    p = torch.sigmoid(a)
    elbo = (p * t).sum() - (p * torch.log(p / 0.5) + (1 - p) * torch.log((1 - p) / 0.5)).sum()
    (want,) = torch.autograd.grad(-elbo, a)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_ils_distribution_in_the_guide_is_drawn_plainly():
    def ils_guide(coupled=False, onehot=False):
        logits = pyro.param(
            "l",
            lambda: torch.randn(N, K, generator=torch.Generator().manual_seed(5), dtype=DTYPE),
        )
        with pyro.plate("p", N):
            pyro.sample("z", ILSCategorical(logits=logits))

    elbo = TraceILSDiff_ELBO(step_size=SMALL)
    a = _grad(elbo, False, False)
    b = _grad(elbo, False, False, g=ils_guide)
    torch.testing.assert_close(a, b)


def test_opted_out_site_keeps_the_score_function():
    def opt_out_guide():
        logits = pyro.param("l", lambda: torch.zeros(N, K, dtype=DTYPE))
        with pyro.plate("p", N):
            pyro.sample("z", dist.OneHotCategorical(logits=logits), infer={"ils": False})

    a = _grad(TraceILSDiff_ELBO(), g=opt_out_guide, seed=3)
    b = _grad(Trace_ELBO(), g=opt_out_guide, seed=3)
    torch.testing.assert_close(a, b)


def test_loss_is_the_sampled_elbo():
    elbo = TraceILSDiff_ELBO()
    guide()
    pyro.set_rng_seed(2)
    a = elbo.loss(model, guide)
    pyro.set_rng_seed(2)
    b = Trace_ELBO().loss(model, guide)
    assert a == pytest.approx(b)


def test_model_that_does_not_broadcast_over_alternatives_raises():
    def bad_model():
        with pyro.plate("p", N):
            z = pyro.sample("z", dist.OneHotCategorical(logits=PRIOR))
        pyro.factor("g", (z * TABLE).sum(-1).sum(-1))  # drops the plate dim: not broadcastable

    with pytest.raises(ValueError):
        _grad(TraceILSDiff_ELBO(), m=bad_model)


@pytest.mark.parametrize("coupled", [False, True])
@pytest.mark.parametrize("analytic_kl", [True, False])
@pytest.mark.parametrize("rao_blackwellize", [True, False])
def test_mean_field_gives_the_same_gradient_without_the_guide_run(
    coupled, analytic_kl, rao_blackwellize
):
    options = {"step_size": 0.5, "analytic_kl": analytic_kl, "rao_blackwellize": rao_blackwellize}
    plain = TraceILSDiff_ELBO(**options)
    mean_field = TraceILSDiff_ELBO(mean_field=True, **options)
    # the first step checks against the guide's run; the later ones skip that run
    for seed in range(3):
        expected = _grad(plain, coupled, seed=seed)
        torch.testing.assert_close(_grad(mean_field, coupled, seed=seed), expected)
    assert mean_field._mean_field_checked


def test_mean_field_declared_for_a_structured_guide_raises():
    second = torch.randn(K, K, generator=torch.Generator().manual_seed(7), dtype=DTYPE)

    def structured_model():
        a = pyro.sample("a", dist.Categorical(logits=PRIOR))
        b = pyro.sample("b", dist.Categorical(logits=PRIOR))
        pyro.factor("f", TABLE[0][a] * TABLE[1][b])

    def structured_guide():
        la = pyro.param("l", torch.zeros(K, dtype=DTYPE))
        a = pyro.sample("a", dist.Categorical(logits=la))
        pyro.sample("b", dist.Categorical(logits=second[a]))  # depends on the draw of a

    _grad(TraceILSDiff_ELBO(), m=structured_model, g=structured_guide)  # fine without
    with pytest.raises(ValueError, match="not mean field"):
        _grad(TraceILSDiff_ELBO(mean_field=True), m=structured_model, g=structured_guide)


def test_validation_checks_the_users_model_and_is_restored():
    # The run over the alternatives skips validation (its values are valid by
    # construction); the draw's run still validates the user's model, and the
    # global setting is left as it was.
    def bad_observation():
        model()
        pyro.sample("x", dist.Bernoulli(torch.tensor(0.5, dtype=DTYPE)), obs=torch.tensor(2.0))

    with pyro.validation_enabled(True):
        with pytest.raises(ValueError, match="support"):
            _grad(TraceILSDiff_ELBO(), m=bad_observation)
        _grad(TraceILSDiff_ELBO())
        assert dist.is_validation_enabled()
        assert pyro.infer.util.is_validation_enabled()


def test_bad_options():
    with pytest.raises(ValueError):
        TraceILSDiff_ELBO(projection="reference")
    with pytest.raises(ValueError):
        TraceILSDiff_ELBO(step_size=-0.1)
    with pytest.raises(NotImplementedError):
        TraceILSDiff_ELBO(vectorize_particles=True, num_particles=2)


def test_svi_reaches_the_exact_optimum():
    """Training the guide alone, without analytic KL: each step moves q towards the
    conditional posterior, which is the optimum of the ELBO here."""
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, Adam({"lr": 0.05}), TraceILSDiff_ELBO(analytic_kl=False))
    for _ in range(300):
        svi.step()
    q = torch.softmax(pyro.param("l").detach(), -1)
    torch.testing.assert_close(q, torch.softmax(PRIOR + TABLE, -1), atol=2e-2, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    table = TABLE.cuda()
    prior = PRIOR.cuda()

    def cmodel():
        with pyro.plate("p", N):
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior))
            pyro.factor("f", (z * table).sum(-1))

    def cguide():
        logits = pyro.param("l", lambda: torch.zeros(N, K, dtype=DTYPE, device="cuda"))
        with pyro.plate("p", N):
            pyro.sample("z", dist.OneHotCategorical(logits=logits))

    got = _grad(TraceILSDiff_ELBO(step_size=1.0, analytic_kl=False), m=cmodel, g=cguide)
    assert got.device.type == "cuda"
    want = torch.softmax(torch.zeros(N, K, dtype=DTYPE), -1) - torch.softmax(PRIOR + TABLE, -1)
    torch.testing.assert_close(got.cpu(), want)
