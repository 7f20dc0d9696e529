"""The default's per-site choice (``pyro_ils.infer.site_choice``): exact differences where a
site has few alternatives and the model broadcasts over them, the midpoint limit
elsewhere; visible, overridable, and falling back with a log record (a warning where
the site asked for exact differences)."""

import logging
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate

from pyro_ils import TraceEnumILS_ELBO, TraceGraphILS_ELBO, TraceILS_ELBO, TraceILSDiff_ELBO
from pyro_ils.estimators import ReinMaxOneHotCategorical
from pyro_ils.infer.site_choice import (
    DEFAULT_MAX_ALTERNATIVES,
    DEFAULT_TEMPERATURE,
    SiteChoiceWarning,
)

DATA = torch.tensor([-4.1, -3.7, 0.2, 0.4, 3.9, 4.4, -0.3, 4.0])


def mixture_model(data, reshape=False, infer=None):
    locs = pyro.param("locs", torch.tensor([-1.0, 0.0, 1.0]))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(logits=torch.zeros(3)))
        mean = locs[z].view(len(data)) if reshape else locs[z]  # view: no broadcasting
        pyro.sample("x", dist.Normal(mean, 1.0), obs=data)


def mixture_guide(data, reshape=False, infer=None):
    logits = pyro.param("logits", torch.randn(len(data), 3))
    with pyro.plate("data", len(data)):
        pyro.sample("z", dist.Categorical(logits=logits), infer=infer or {})


def grads(elbo, model, guide, *args, seed=0):
    pyro.set_rng_seed(seed)
    with poutine.trace(param_only=True) as tr:
        elbo.loss_and_grads(model, guide, *args)
    params = {n: s["value"].unconstrained() for n, s in tr.trace.nodes.items()}
    out = {n: p.grad.clone() for n, p in params.items()}
    for p in params.values():
        p.grad = None
    return out


def assert_same(got, ref):
    assert got.keys() == ref.keys()
    for name in got:
        torch.testing.assert_close(got[name], ref[name])


@pytest.fixture(autouse=True)
def _store():
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    yield
    pyro.clear_param_store()


def test_a_mixture_gets_exact_differences_and_the_exact_gradient():
    """One latent per data point: the default's gradient is the enumerated gradient
    of ``TraceEnum_ELBO`` (an independent oracle), in every parameter."""
    elbo = TraceILS_ELBO()
    got = grads(elbo, mixture_model, mixture_guide, DATA)
    choice = elbo.site_choices["z"]
    assert choice.member == "exact differences" and choice.alternatives == 3
    exact = grads(
        TraceEnum_ELBO(max_plate_nesting=1), mixture_model, config_enumerate(mixture_guide), DATA
    )
    for name in ("locs", "logits"):
        torch.testing.assert_close(got[name], exact[name], rtol=1e-5, atol=1e-6)


def test_the_default_is_TraceILSDiff_ELBO_where_every_site_qualifies():
    got = grads(TraceILS_ELBO(), mixture_model, mixture_guide, DATA, seed=3)
    ref = grads(TraceILSDiff_ELBO(), mixture_model, mixture_guide, DATA, seed=3)
    assert_same(got, ref)


def vae_model(x, infer=None):
    decoder = pyro.param("decoder", torch.randn(3, 8, 5))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3, 8)).to_event(1))
        logits = torch.einsum("...lk,lkp->...p", z, decoder)
        pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def vae_guide(x, infer=None):
    weight = pyro.param("encoder", torch.randn(5, 3 * 8) * 0.3)
    with pyro.plate("data", len(x)):
        logits = (x @ weight).reshape(len(x), 3, 8)
        pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1), infer=infer or {})


X = (torch.rand(6, 5) > 0.5).float()


def reinmax_vae_guide(x, infer=None):
    """``vae_guide`` with its class swapped for the ReinMax peer at the default's
    temperature (an independent implementation of the same backward)."""
    weight = pyro.param("encoder", torch.randn(5, 3 * 8) * 0.3)
    with pyro.plate("data", len(x)):
        logits = (x @ weight).reshape(len(x), 3, 8)
        site = ReinMaxOneHotCategorical(logits=logits, temperature=DEFAULT_TEMPERATURE)
        pyro.sample("z", site.to_event(1))


def test_a_site_with_many_alternatives_gets_the_midpoint_limit():
    """3 coupled latents x 8 categories = 24 alternatives > 20: the midpoint limit at
    the default temperature with the analytic KL, whose gradient is that of ReinMax
    at that temperature under ``TraceMeanField_ELBO`` (the peer's own classes), and
    of ``TraceILS_ELBO(guide_log_prob="analytic")`` with the temperature asked for."""
    assert DEFAULT_MAX_ALTERNATIVES == 20
    elbo = TraceILS_ELBO()
    grads(elbo, vae_model, vae_guide, X)  # the first step chooses
    choice = elbo.site_choices["z"]
    assert choice.member == "midpoint limit" and choice.alternatives == 24, choice
    assert choice.temperature == DEFAULT_TEMPERATURE
    got = grads(elbo, vae_model, vae_guide, X, seed=5)
    ref = grads(TraceMeanField_ELBO(), vae_model, reinmax_vae_guide, X, seed=5)
    assert_same(got, ref)
    asked = {"ils": {"temperature": DEFAULT_TEMPERATURE}}
    ref = grads(TraceILS_ELBO(guide_log_prob="analytic"), vae_model, vae_guide, X, asked, seed=5)
    assert_same(got, ref)


def test_the_temperature_of_the_midpoint_limit_matters_and_can_be_set_per_site():
    """A site dict with a temperature asks for the midpoint limit at it; temperature 1
    gives ReinMax at 1 (a different gradient, where the default's is not 1)."""
    one = {"ils": {"temperature": 1.0}}
    elbo = TraceILS_ELBO()
    got = grads(elbo, vae_model, vae_guide, X, one, seed=5)
    assert elbo.site_choices["z"] == ("midpoint limit", None, "asked for", 1.0)
    ref = grads(TraceILS_ELBO(guide_log_prob="analytic"), vae_model, vae_guide, X, one, seed=5)
    assert_same(got, ref)
    default = grads(TraceILS_ELBO(), vae_model, vae_guide, X, seed=5)
    differs = not torch.allclose(got["encoder"], default["encoder"])
    assert differs == (DEFAULT_TEMPERATURE != 1.0)
    # A larger budget gives the same site exact differences.
    wide = TraceILS_ELBO(max_alternatives=24)
    got = grads(wide, vae_model, vae_guide, X, seed=5)
    assert wide.site_choices["z"].member == "exact differences"
    ref = grads(TraceILSDiff_ELBO(), vae_model, vae_guide, X, seed=5)
    assert_same(got, ref)


def test_no_exact_differences_with_options_or_max_alternatives_0():
    for elbo in (TraceILS_ELBO(max_alternatives=0), TraceILS_ELBO(projection="midpoint")):
        got = grads(elbo, mixture_model, mixture_guide, DATA, seed=2)
        assert elbo.site_choices == {}
        ref = grads(
            TraceILS_ELBO(step_size=0.0, projection="midpoint"),
            mixture_model,
            mixture_guide,
            DATA,
            seed=2,
        )
        assert_same(got, ref)


@pytest.mark.parametrize(
    "infer, member",
    [
        ({"ils": {"exact_differences": False}}, "midpoint limit"),
        ({"ils": {"projection": "euclidean"}}, "first-order ILS"),
    ],
)
def test_a_site_asks_for_a_first_order_member(infer, member):
    elbo = TraceILS_ELBO()
    got = grads(elbo, mixture_model, mixture_guide, DATA, False, infer, seed=4)
    assert elbo.site_choices["z"].member == member
    # The default takes the analytic KL wherever one is registered: the site's options
    # under guide_log_prob="analytic".
    ref_elbo = TraceILS_ELBO(guide_log_prob="analytic")
    ref = grads(ref_elbo, mixture_model, mixture_guide, DATA, False, infer, seed=4)
    assert_same(got, ref)


def test_a_site_asks_for_exact_differences_past_the_budget():
    elbo = TraceILS_ELBO(max_alternatives=2)
    grads(elbo, vae_model, vae_guide, X, {"ils": {"exact_differences": True}})
    assert elbo.site_choices["z"].member == "exact differences"


def test_a_model_that_does_not_broadcast_falls_back_with_a_log_record(caplog):
    """The rule chose exact differences for a model valid for ``Trace_ELBO``: the
    fallback is a ``WARNING`` record on the ``pyro_ils`` logger, not a warning, so it
    runs where warnings are errors (Pyro's pytest configuration)."""
    elbo = TraceILS_ELBO()
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="pyro_ils"):
        warnings.simplefilter("error")
        got = grads(elbo, mixture_model, mixture_guide, DATA, True, seed=6)
    (record,) = [r for r in caplog.records if "does not broadcast" in r.getMessage()]
    assert record.name == "pyro_ils" and record.levelno == logging.WARNING
    assert "'z' does not broadcast over its 3 alternatives" in record.getMessage()
    assert elbo.site_choices["z"].member == "midpoint limit"
    analytic = TraceILS_ELBO(guide_log_prob="analytic")
    ref = grads(analytic, mixture_model, mixture_guide, DATA, True, seed=6)
    assert torch.isfinite(got["logits"]).all() and got["logits"].abs().sum() > 0
    # Once chosen, the site is drawn by the midpoint limit: the same gradient.
    got = grads(elbo, mixture_model, mixture_guide, DATA, True, seed=6)
    assert_same(got, ref)


def test_a_site_that_asks_for_exact_differences_and_does_not_broadcast_warns():
    """A request not honoured is a warning: a ``SiteChoiceWarning``."""
    elbo = TraceILS_ELBO()
    infer = {"ils": {"exact_differences": True}}
    with pytest.warns(SiteChoiceWarning, match="(?s)'z' does not broadcast.*asked for"):
        grads(elbo, mixture_model, mixture_guide, DATA, True, infer, seed=6)
    assert elbo.site_choices["z"].member == "midpoint limit"


@pytest.mark.parametrize("bad", [-1, 1.5, True, "20"])
def test_max_alternatives_is_checked(bad):
    with pytest.raises(ValueError, match="max_alternatives"):
        TraceILS_ELBO(max_alternatives=bad)


def test_exact_differences_must_be_a_bool():
    with pytest.raises(ValueError, match="exact_differences"):
        TraceILS_ELBO().loss_and_grads(
            mixture_model, mixture_guide, DATA, False, {"ils": {"exact_differences": 1}}
        )


def two_site_model(data, reparam=False, infer=None):
    mixture_model(data)
    pyro.sample("w", dist.Poisson(3.0))


def two_site_guide(data, reparam=False, infer=None):
    mixture_guide(data)
    rate = pyro.param("rate", torch.tensor(2.0), constraint=dist.constraints.positive)
    pyro.sample("w", dist.Poisson(rate))  # no ILS version: the score function


@pytest.mark.parametrize("elbo_class", [TraceGraphILS_ELBO, TraceEnumILS_ELBO])
def test_the_other_elbos_get_the_same_default(elbo_class):
    """With no site left to the score function and none enumerated, TraceGraph's and
    TraceEnum's gradients are Trace's: the same per-site choice, the exact gradient."""
    elbo = elbo_class(max_plate_nesting=1)
    got = grads(elbo, mixture_model, mixture_guide, DATA)
    assert elbo.site_choices["z"].member == "exact differences"
    exact = grads(
        TraceEnum_ELBO(max_plate_nesting=1), mixture_model, config_enumerate(mixture_guide), DATA
    )
    for name in ("locs", "logits"):
        torch.testing.assert_close(got[name], exact[name], rtol=1e-5, atol=1e-6)


def test_tracegraph_keeps_its_baselines_next_to_a_score_function_site():
    elbo = TraceGraphILS_ELBO()
    grads(elbo, two_site_model, two_site_guide, DATA)  # the first step decides
    choice = elbo.site_choices["z"]
    assert choice.member == "midpoint limit" and "score-function sites ['w']" in choice.reason
    got = grads(elbo, two_site_model, two_site_guide, DATA, seed=8)
    ref = grads(
        TraceGraphILS_ELBO(projection="midpoint"), two_site_model, two_site_guide, DATA, seed=8
    )
    assert_same(got, ref)


def test_traceenum_keeps_the_midpoint_limit_next_to_an_enumerated_site():
    def model(data):
        mixture_model(data)
        pyro.sample("c", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})

    elbo = TraceEnumILS_ELBO(max_plate_nesting=1)
    grads(elbo, model, mixture_guide, DATA)
    choice = elbo.site_choices["z"]
    assert choice.member == "midpoint limit" and "enumerated sites ['c']" in choice.reason
    got = grads(elbo, model, mixture_guide, DATA, seed=9)
    ref = grads(
        TraceEnumILS_ELBO(projection="midpoint", max_plate_nesting=1),
        model,
        mixture_guide,
        DATA,
        seed=9,
    )
    assert_same(got, ref)


@pytest.mark.parametrize("elbo_class", [TraceILS_ELBO, TraceGraphILS_ELBO])
def test_choosing_leaves_the_first_steps_draws_alone(elbo_class):
    """The first step's choice (a probe run, a trace drawn again) leaves the random
    state as it was: that step's gradient is already the chosen member's."""
    got = grads(elbo_class(), vae_model, vae_guide, X, seed=11)
    ref = grads(TraceMeanField_ELBO(), vae_model, reinmax_vae_guide, X, seed=11)
    assert_same(got, ref)
