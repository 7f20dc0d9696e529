"""The default's first-step probe (``pyro_ils.infer.site_probe``) runs a model and a guide as
the ELBO that owns it would: under enumeration for ``TraceEnumILS_ELBO``, so that code
that checks its enumerated shapes sees them; ``TraceEnum_ELBO``'s warning where nothing
is enumerated, after the traces; Pyro's ``max_plate_nesting=inf`` as "not given"; and a
model that asserts its shapes falls back to the midpoint limit with a log record."""

import logging
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_ils import TraceEnumILS_ELBO, TraceGraphILS_ELBO, TraceILS_ELBO
from pyro_ils.infer.site_choice import DIFFERENCES, MIDPOINT

pytestmark = pytest.mark.usefixtures("clean_param_store")
NO_ENUMERATION = "TraceEnum_ELBO found no sample sites configured for enumeration"


def step(model, guide, elbo, *args):
    """One SVI step; the warnings it raised (all of them recorded)."""
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, Adam({"lr": 0.01}), elbo)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = svi.step(*args)
    assert torch.isfinite(torch.tensor(loss))
    return [str(w.message) for w in caught]


def fallbacks(caplog) -> list[str]:
    """The messages of the default's fallbacks, at ``WARNING`` on the ``pyro_ils``
    logger, that ``caplog`` holds."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pyro_ils"
        and r.levelno == logging.WARNING
        and "does not broadcast" in r.getMessage()
    ]


def coin_guide(strategy, expand, shape):
    """A guide of one enumerated Bernoulli site that checks the shape it is given, and
    one routed site."""

    def guide():
        p = pyro.param("p", torch.tensor(0.4), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", 5):
            infer = {"enumerate": strategy, "expand": expand}
            x = pyro.sample("x", dist.Bernoulli(p), infer=infer)
        assert x.shape == shape, x.shape
        c = pyro.param("c", torch.zeros(3))
        pyro.sample("y", dist.Categorical(logits=c))  # routed by ILS

    return guide


def coin_model():
    with pyro.plate("data", 5):
        pyro.sample("x", dist.Bernoulli(0.5))
    pyro.sample("y", dist.Categorical(logits=torch.zeros(3)))


@pytest.mark.parametrize(
    "strategy, expand, shape",
    [("parallel", False, (2, 1)), ("sequential", False, (1,)), ("sequential", True, (5,))],
)
def test_an_enumerated_guide_is_probed_under_enumeration(strategy, expand, shape):
    """Under ``TraceEnum_ELBO`` an enumerated site takes the shape of its enumeration
    at every run; the probe must not run the guide plainly (it would fail the
    guide's own check) where ``max_plate_nesting`` is given."""
    elbo = TraceEnumILS_ELBO(max_plate_nesting=1)
    with pyro.validation_enabled(True):
        messages = step(coin_model, coin_guide(strategy, expand, shape), elbo)
    assert elbo.site_choices["y"].member == MIDPOINT  # kept: the guide enumerates x
    assert not any(NO_ENUMERATION in m for m in messages)


def test_enumeration_in_the_model_only_is_probed_under_enumeration():
    def model():
        x = pyro.sample("x", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
        assert x.shape == (2,), x.shape
        y = pyro.sample("y", dist.Categorical(logits=torch.zeros(3)))
        pyro.sample("obs", dist.Normal(x + y.float(), 1.0), obs=torch.tensor(1.0))

    def guide():
        pyro.sample("y", dist.Categorical(logits=pyro.param("c", torch.zeros(3))))

    elbo = TraceEnumILS_ELBO(max_plate_nesting=0)
    with pyro.validation_enabled(True):
        messages = step(model, guide, elbo)
    assert elbo.site_choices["y"].member == MIDPOINT  # kept: the model enumerates
    assert not any(NO_ENUMERATION in m for m in messages)


def test_nothing_enumerated_warns_as_trace_enum_does_after_its_traces():
    def guide():
        pyro.sample("y", dist.Categorical(logits=pyro.param("c", torch.zeros(3))))

    def model():
        pyro.sample("y", dist.Categorical(logits=torch.zeros(3)))

    with pyro.validation_enabled(True):
        messages = step(model, guide, TraceEnumILS_ELBO(num_particles=3))
        assert sum(NO_ENUMERATION in m for m in messages) == 3  # per trace, as Pyro
        messages = step(model, guide, TraceEnumILS_ELBO(strict_enumeration_warning=False))
        assert not any(NO_ENUMERATION in m for m in messages)
        assert not any(NO_ENUMERATION in m for m in step(model, guide, TraceGraphILS_ELBO()))

        def guide_with_a_plate():  # a plate the model does not have: Pyro warns first
            with pyro.plate("extra", 2):
                pass
            guide()

        messages = step(model, guide_with_a_plate, TraceEnumILS_ELBO())
    assert "Found plate statements in guide but not model" in messages[0]
    assert any(NO_ENUMERATION in m for m in messages[1:])
    with pyro.validation_enabled(False):
        assert not any(NO_ENUMERATION in m for m in step(model, guide, TraceEnumILS_ELBO()))


def test_infinite_max_plate_nesting_means_not_given():
    """Pyro's ``max_plate_nesting=float("inf")`` (its default) leaves the nesting to the
    traces, as no value does, here with sites in sequential plates."""

    def model():
        for i in pyro.plate("outer", 2):
            pyro.sample(f"z_{i}", dist.Categorical(logits=torch.zeros(3)))

    def guide():
        c = pyro.param("c", torch.zeros(3))
        for i in pyro.plate("outer", 2):
            pyro.sample(f"z_{i}", dist.Categorical(logits=c))

    grads = []
    for elbo in (TraceILS_ELBO(max_plate_nesting=float("inf")), TraceILS_ELBO()):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            elbo.loss_and_grads(model, guide)
        assert {c.member for c in elbo.site_choices.values()} == {DIFFERENCES}
        grads.append(pyro.param("c").unconstrained().grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_a_model_that_asserts_its_shapes_falls_back_to_the_midpoint_limit(caplog):
    """Exact differences run the model over the alternatives along a new batch dim; a
    model that checks its shapes raises ``AssertionError`` there, which is a model that
    does not broadcast: the site falls back, with a ``WARNING`` record on the
    ``pyro_ils`` logger and no warning, and training goes on."""

    def model():
        with pyro.plate("data", 4):
            z = pyro.sample("z", dist.Categorical(logits=torch.zeros(3)))
            assert z.shape == (4,), z.shape
            pyro.sample("obs", dist.Normal(z.float(), 1.0), obs=torch.ones(4))

    def guide():
        c = pyro.param("c", torch.zeros(4, 3))
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Categorical(logits=c))

    elbo = TraceILS_ELBO()
    assert step(model, guide, elbo) == []
    (message,) = fallbacks(caplog)
    assert "AssertionError" in message
    assert elbo.site_choices["z"].member == MIDPOINT
    caplog.clear()
    step(model, guide, elbo)
    assert fallbacks(caplog) == []  # chosen once


def test_a_site_past_max_plate_nesting_falls_back_with_a_readable_record(caplog):
    """A site with more batch dims than ``max_plate_nesting`` has no plan over its
    alternatives; the log record names the error, not a count it does not have."""

    def model():
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Categorical(logits=torch.zeros(3)))

    def guide():
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Categorical(logits=pyro.param("c", torch.zeros(4, 3))))

    elbo = TraceILS_ELBO(max_plate_nesting=0)
    step(model, guide, elbo)
    (message,) = fallbacks(caplog)
    assert "over its alternatives (ValueError" in message and "None" not in message
    assert elbo.site_choices["z"].member == MIDPOINT
