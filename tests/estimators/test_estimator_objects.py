"""The estimator objects of ``pyro_ils.estimators``: their backward against plain
autograd of each stated formula (the independent oracle), on Categorical, OneHotCategorical
and Bernoulli sites, inside Pyro's wrappers, and routed into an unchanged guide by ELBO
argument, by ``ILSReparam`` and per site."""

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from common import autograd_grad, paper_gst, paper_reinmax, st_gumbel_oracle, st_oracle
from pyro import poutine
from pyro.distributions.util import is_identically_zero
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_ils import (
    ILSCategorical,
    ILSMessenger,
    ILSReparam,
    TraceEnumILS_ELBO,
    TraceGraphILS_ELBO,
    TraceILS_ELBO,
    TraceILSDiff_ELBO,
)
from pyro_ils.distributions import (
    STCategorical,
    SurrogateBernoulli,
    SurrogateCategorical,
    SurrogateOneHotCategorical,
)
from pyro_ils.estimators import (
    GST,
    ILS,
    DefaultILS,
    GumbelRao,
    ReinMax,
    STGumbel,
    StraightThrough,
)
from pyro_ils.ops.index_tensor import carries_ils_path
from pyro_ils.poutine.routing import surrogate_base

pytestmark = [
    pytest.mark.usefixtures("clean_param_store"),
    pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites configured"),
]

K = 5


def _logits_and_draw(seed=0, batch=(4,)):
    torch.manual_seed(seed)
    logits = torch.randn(batch + (K,), dtype=torch.float64, requires_grad=True)
    index = torch.distributions.Categorical(logits=logits.detach()).sample()
    g = torch.randn(batch + (K,), dtype=torch.float64)
    return logits, index, g


# --- the oracles: each estimator's formula written with stop-gradients ---------------


def test_straight_through_matches_autograd_of_its_formula():
    logits, index, g = _logits_and_draw()
    out = StraightThrough().onehot(logits, index)
    onehot = F.one_hot(index, K).double()
    assert torch.equal(out, onehot)
    expected = autograd_grad(st_oracle(logits, onehot), logits, g)
    assert torch.allclose(autograd_grad(out, logits, g), expected, atol=1e-12)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_reinmax_matches_autograd_of_algorithm_2(tau):
    logits, index, g = _logits_and_draw(1)
    out = ReinMax(tau).onehot(logits, index)
    onehot = F.one_hot(index, K).double()
    expected = autograd_grad(paper_reinmax(logits, onehot, tau), logits, g)
    assert torch.allclose(autograd_grad(out, logits, g), expected, atol=1e-12)


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_st_gumbel_matches_autograd_through_the_relaxation(tau):
    logits, index, g = _logits_and_draw(2)
    from pyro_ils.estimators.straight_through import gumbel_given_argmax

    perturbed = gumbel_given_argmax(logits, index)
    assert torch.equal(perturbed.argmax(-1), index)
    out = STGumbel(tau).onehot_given_noise(logits, index, perturbed)
    onehot = F.one_hot(index, K).double()
    expected = autograd_grad(st_gumbel_oracle(logits, onehot, perturbed, tau), logits, g)
    assert torch.allclose(autograd_grad(out, logits, g), expected, atol=1e-12)


@pytest.mark.parametrize("tau", [0.7, 2.0])
def test_midpoint_limit_is_reinmax(tau):
    """ILS's midpoint target at ``c = 0`` is ReinMax at the same temperature."""
    logits, index, g = _logits_and_draw(3)
    ils = autograd_grad(ILS(0.0, "midpoint", tau).onehot(logits, index), logits, g)
    reinmax = autograd_grad(ReinMax(tau).onehot(logits, index), logits, g)
    assert torch.allclose(ils, reinmax, atol=1e-10)


@pytest.mark.parametrize(
    "estimator, oracle",
    [
        (StraightThrough(), st_oracle),
        (ReinMax(1.5), lambda lg, oh: paper_reinmax(lg, oh, 1.5)),
        (GST(0.5, 2.0), lambda lg, oh: paper_gst(lg, oh, 0.5, 2.0)),
    ],
)
def test_bernoulli_is_the_two_category_case(estimator, oracle):
    """A Bernoulli logit ``a`` gets the category-1 component of the estimator's gradient
    on the logits ``(0, a)``."""
    torch.manual_seed(4)
    a = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.distributions.Bernoulli(logits=a.detach()).sample()
    g = torch.randn(6, dtype=torch.float64)
    out = estimator.bernoulli(a, b)
    assert torch.equal(out, b)
    pair = torch.stack([torch.zeros_like(a), a], -1)
    onehot = F.one_hot(b.long(), 2).double()
    g_pair = torch.stack([torch.zeros_like(g), g], -1)
    expected = autograd_grad(oracle(pair, onehot), a, g_pair)
    assert torch.allclose(autograd_grad(out, a, g), expected, atol=1e-12)


def test_straight_through_bernoulli_is_sigmoid_derivative():
    a = torch.tensor([-1.0, 0.3, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    g = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64)
    grad = autograd_grad(StraightThrough().bernoulli(a, b), a, g)
    s = a.detach().sigmoid()
    assert torch.allclose(grad, s * (1 - s) * g)


def test_outside_support_and_zero_weight_get_no_gradient():
    logits = torch.tensor([[0.0, -torch.inf, 1.0], [0.5, 0.2, 0.1]], requires_grad=True)
    index = torch.tensor([0, 1])
    weight = torch.tensor([1.0, 0.0])
    g = torch.randn(2, 3)
    for estimator in (
        StraightThrough(),
        ReinMax(),
        STGumbel(),
        GumbelRao(),
        GST(),
        GST(kappa="p"),
        ILS(),
        ILS(0.0, "midpoint"),
    ):
        grad = autograd_grad(estimator.onehot(logits, index, weight=weight), logits, g)
        assert torch.isfinite(grad).all(), estimator
        assert grad[0, 1] == 0 and (grad[1] == 0).all(), estimator


def test_options_are_checked_and_objects_compare():
    assert ReinMax(2) == ReinMax(2.0) and ReinMax(2.0) != ReinMax(1.0)
    assert hash(ILS(0.5, "midpoint")) == hash(ILS(0.5, "midpoint"))
    assert StraightThrough() != ReinMax()
    assert repr(ReinMax(1.5)) == "ReinMax(temperature=1.5)"
    assert ReinMax(1.5).replace(temperature=2.0) == ReinMax(2.0)
    for bad in (0, -1.0, float("nan"), "2", True, torch.ones(2)):
        with pytest.raises(ValueError, match="temperature"):
            ReinMax(bad)
    with pytest.raises(ValueError, match="projection"):
        ILS(1.0, "nope")
    with pytest.raises(ValueError, match="temperature"):
        ILS(1.0, "euclidean", temperature=2.0)
    with pytest.raises(ValueError, match="max_alternatives"):
        DefaultILS(max_alternatives=-1)
    assert ILS(0.0, "midpoint").linear and not ILS(1.0, "euclidean").linear
    assert StraightThrough().linear and ReinMax().linear and STGumbel().linear
    assert GumbelRao().linear and GST().linear
    assert repr(GumbelRao(0.5, 3)) == "GumbelRao(temperature=0.5, num_samples=3)"
    assert GumbelRao(0.5, 3).replace(num_samples=4) == GumbelRao(0.5, 4) != GumbelRao(0.5, 3)
    assert GST(1.0, "p").replace(kappa=2) == GST(1.0, 2.0)
    for bad in (0, 1.5, True, "3"):
        with pytest.raises(ValueError, match="num_samples"):
            GumbelRao(1.0, bad)
    for bad in (0, -1.0, "q", None):
        with pytest.raises(ValueError, match="kappa"):
            GST(1.0, bad)


# --- distributions holding an estimator ----------------------------------------------


@pytest.mark.parametrize(
    "cls, batch",
    [
        (SurrogateCategorical, (3,)),
        (SurrogateOneHotCategorical, (3,)),
        (SurrogateBernoulli, (3, K)),
    ],
)
@pytest.mark.parametrize(
    "estimator",
    [StraightThrough(), ReinMax(1.5), STGumbel(0.5), GumbelRao(0.5, 3), GST(0.5, "p")],
    ids=repr,
)
def test_surrogate_distribution_draws_exactly_and_keeps_its_estimator(cls, batch, estimator):
    torch.manual_seed(5)
    logits = torch.randn(batch if cls is SurrogateBernoulli else batch + (K,), requires_grad=True)
    d = cls(logits=logits, estimator=estimator)
    torch.manual_seed(6)
    value = d.rsample()
    torch.manual_seed(6)
    assert torch.equal(value.detach() if value.is_floating_point() else value, d.sample())
    assert carries_ils_path(value)
    for wrapped in (d.expand((2,) + d.batch_shape), d.to_event(1), d.mask(torch.tensor(True))):
        assert surrogate_base(wrapped).estimator == estimator
    with pytest.raises(TypeError, match="estimator"):
        cls(logits=logits, estimator="st")


# --- an unchanged guide routed through each estimator --------------------------------

ESTIMATORS = [
    StraightThrough(),
    ReinMax(1.5),
    STGumbel(0.5),
    ILS(0.5, "euclidean"),
    GumbelRao(0.5, 3),
    GST(0.5, 1.0),
]
SITES = {
    "categorical": lambda p: dist.Categorical(logits=p),
    "one_hot": lambda p: dist.OneHotCategorical(logits=p),
    "bernoulli": lambda p: dist.Bernoulli(logits=p[..., 0]),
}
WRAPS = {
    "plain": lambda d: d,
    "to_event": lambda d: d.expand((2,) + d.batch_shape).to_event(1),
    "masked": lambda d: d.mask(torch.tensor([True, False, True])),
    "expanded": lambda d: d.expand((2,) + d.batch_shape),
}


def _guide(site, wrap, infer=None):
    def guide():
        logits = pyro.param("logits", torch.zeros(3, K))
        return pyro.sample("z", WRAPS[wrap](SITES[site](logits)), infer=infer or {})

    return guide


def _check_routed(trace, estimator):
    site = trace.nodes["z"]
    assert surrogate_base(site["fn"]).estimator == estimator
    assert carries_ils_path(site["value"])
    trace.compute_score_parts()
    assert is_identically_zero(site["score_parts"].score_function)
    logits = pyro.param("logits").unconstrained()
    if site["value"].is_floating_point():
        loss = (site["value"] * torch.arange(float(site["value"].shape[-1]))).sum()
    else:
        loss = torch.arange(K, dtype=torch.float)[site["value"]].sum()
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("site", list(SITES))
@pytest.mark.parametrize("wrap", list(WRAPS))
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=repr)
@pytest.mark.parametrize("route", ["messenger", "reparam", "per_site"])
def test_unchanged_guide_routed(site, wrap, estimator, route):
    if route == "messenger":
        guide = ILSMessenger(estimator=estimator)(_guide(site, wrap))
    elif route == "reparam":
        guide = poutine.reparam(_guide(site, wrap), config={"z": ILSReparam(estimator=estimator)})
    else:
        guide = ILSMessenger()(_guide(site, wrap, {"ils": estimator}))
    _check_routed(poutine.trace(guide).get_trace(), estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS[:3], ids=repr)
def test_site_estimator_overrides_the_elbo_estimator_and_hand_written_distribution(estimator):
    def guide():
        logits = pyro.param("logits", torch.zeros(3, K))
        pyro.sample("a", dist.Categorical(logits=logits), infer={"ils": estimator})
        pyro.sample("b", ILSCategorical(logits=logits), infer={"ils": estimator})
        pyro.sample("c", STCategorical(logits=logits))
        pyro.sample("d", dist.Categorical(logits=logits))

    trace = poutine.trace(ILSMessenger(estimator=ReinMax(3.0))(guide)).get_trace()
    est = {name: surrogate_base(trace.nodes[name]["fn"]).estimator for name in "abcd"}
    assert est == {"a": estimator, "b": estimator, "c": StraightThrough(), "d": ReinMax(3.0)}


def model_gmm(data):
    locs = torch.tensor([-2.0, 0.0, 2.0])
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(logits=torch.zeros(3)))
        pyro.sample("x", dist.Normal(locs[z], 0.5), obs=data)


def guide_gmm(data):
    logits = pyro.param("logits", torch.zeros(len(data), 3))
    with pyro.plate("data", len(data)):
        pyro.sample("z", dist.Categorical(logits=logits))


@pytest.mark.parametrize(
    "elbo_cls, estimator",
    [
        (elbo_cls, estimator)
        for elbo_cls in (TraceILS_ELBO, TraceGraphILS_ELBO, TraceEnumILS_ELBO)
        for estimator in ESTIMATORS[:3] + [DefaultILS()]
    ]
    + [(TraceILS_ELBO, estimator) for estimator in ESTIMATORS[4:]],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v),
)
def test_elbo_estimator_trains_unchanged_guide(elbo_cls, estimator):
    """A Gaussian mixture with fixed centres: the guide's most probable component
    is right for every point after training, which an untrained guide (uniform) is not.
    (The points sit near the outer centres: a point near the middle one defeats
    straight-through's first-order signal, which is not what this test is about.)"""
    pyro.set_rng_seed(0)
    data = torch.tensor([-2.3, -1.8, 2.2, 1.9, -2.1, 2.4])
    kwargs = {"max_plate_nesting": 1} if elbo_cls is TraceEnumILS_ELBO else {}
    elbo = elbo_cls(estimator=estimator, **kwargs)
    assert elbo.estimator == estimator
    svi = SVI(model_gmm, guide_gmm, Adam({"lr": 0.1}), loss=elbo)
    for _ in range(150):
        svi.step(data)
    assert torch.equal(pyro.param("logits").argmax(-1), torch.tensor([0, 0, 2, 2, 0, 2]))


def test_elbo_estimator_argument_checks():
    with pytest.raises(TypeError, match="estimator"):
        TraceILS_ELBO(estimator="reinmax")
    with pytest.raises(ValueError, match="not both"):
        TraceILS_ELBO(step_size=0.5, estimator=ReinMax())
    with pytest.raises(ValueError, match="not both"):
        ILSReparam(step_size=0.5, estimator=ReinMax())
    assert TraceILS_ELBO().estimator == DefaultILS()
    assert TraceILS_ELBO(step_size=0.5, projection="euclidean").estimator == ILS(0.5, "euclidean")
    assert TraceILS_ELBO(estimator=ILS(0.5, "midpoint")).site_choices == {}


def test_unrouted_guide_keeps_its_score_function():
    """Sanity of the routing test: without routing the site has a score-function term."""
    trace = poutine.trace(_guide("categorical", "plain")).get_trace()
    trace.compute_score_parts()
    assert not is_identically_zero(trace.nodes["z"]["score_parts"].score_function)


@pytest.mark.parametrize("elbo_cls", [TraceILS_ELBO, TraceILSDiff_ELBO])
def test_site_estimator_next_to_exact_differences(elbo_cls):
    """Under the exact-difference ELBOs (the default and ``TraceILSDiff_ELBO``), a site
    that names an estimator is routed through it; the other site gets exact differences."""
    data = torch.tensor([-2.3, 2.2, -1.9])

    def guide(data):
        logits = pyro.param("logits", torch.zeros(len(data), 3))
        with pyro.plate("data", len(data)):
            pyro.sample("z", dist.Categorical(logits=logits))
            pyro.sample("w", dist.Categorical(logits=logits), infer={"ils": ReinMax(1.5)})

    def model(data):
        locs = torch.tensor([-2.0, 0.0, 2.0])
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Categorical(logits=torch.zeros(3)))
            w = pyro.sample("w", dist.Categorical(logits=torch.zeros(3)))
            pyro.sample("x", dist.Normal(locs[z] + locs[w], 0.5), obs=data)

    elbo = elbo_cls()
    elbo.loss_and_grads(model, guide, data)  # the default chooses at its first step
    runner = elbo._delegate(model, guide, (data,), {}) if elbo_cls is TraceILS_ELBO else elbo
    _, guide_trace = next(iter(runner._get_traces(model, guide, (data,), {})))
    w = guide_trace.nodes["w"]
    assert surrogate_base(w["fn"]).estimator == ReinMax(1.5)
    guide_trace.compute_score_parts()
    assert is_identically_zero(w["score_parts"].score_function)
    assert surrogate_base(guide_trace.nodes["z"]["fn"]) is None  # drawn plainly, differenced
    if elbo_cls is TraceILS_ELBO:
        assert elbo.site_choices["w"].member == "ReinMax(temperature=1.5)"
        assert elbo.site_choices["z"].member == "exact differences"
    grad = pyro.param("logits").unconstrained().grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
