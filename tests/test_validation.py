"""Bad input raises a ValueError that names the problem; nothing is silently wrong."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO

from pyro_ils import (
    ILSBernoulli,
    ILSCategorical,
    ILSOneHotCategorical,
    ILSReparam,
    TraceEnumILS_ELBO,
    TraceGraphILS_ELBO,
    TraceILS_ELBO,
)

ELBOS = [TraceILS_ELBO, TraceGraphILS_ELBO, TraceEnumILS_ELBO]


@pytest.fixture(autouse=True)
def _validation_on():
    pyro.clear_param_store()
    with pyro.validation_enabled(True):
        yield


@pytest.mark.parametrize("cls", [ILSCategorical, ILSOneHotCategorical])
@pytest.mark.parametrize(
    "probs",
    [
        torch.tensor([0.5, -0.1, 0.6]),
        torch.tensor([0.5, float("nan"), 0.5]),
        torch.tensor([0.0, 0.0, 0.0]),
    ],
    ids=["negative", "nan", "zero-sum"],
)
def test_bad_probs(cls, probs):
    with pytest.raises(ValueError, match="probs"):
        cls(probs=probs)


@pytest.mark.parametrize(
    "probs", [torch.tensor([1.5]), torch.tensor([-0.1]), torch.tensor([float("nan")])]
)
def test_bad_bernoulli_probs(probs):
    with pytest.raises(ValueError, match="probs"):
        ILSBernoulli(probs=probs)


def test_validation_off_follows_pyro():
    with pyro.validation_enabled(False):
        ILSCategorical(probs=torch.tensor([0.5, -0.1, 0.6]))
        ILSCategorical(logits=torch.zeros(3)).log_prob(torch.tensor(1.0))


@pytest.mark.parametrize("cls", [ILSCategorical, ILSOneHotCategorical])
def test_scalar_logits(cls):
    with pytest.raises(ValueError, match="one-dimensional"):
        cls(logits=torch.tensor(0.3))


def test_float_value_to_categorical_log_prob():
    d = ILSCategorical(logits=torch.zeros(3))
    with pytest.raises(ValueError, match="integer"):
        d.log_prob(torch.tensor(1.0))
    assert torch.isfinite(d.log_prob(torch.tensor(1)))


def test_out_of_support_and_wrong_shapes():
    d = ILSCategorical(logits=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="broadcastable|size"):
        d.log_prob(torch.tensor([0, 1, 2]))
    oh = ILSOneHotCategorical(logits=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="size|shape|broadcast"):
        oh.log_prob(torch.eye(4)[:2])
    with pytest.raises(ValueError, match="support"):
        oh.log_prob(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))
    b = ILSBernoulli(logits=torch.zeros(3))
    with pytest.raises(ValueError, match="support"):
        b.log_prob(torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("step_size", [-1.0, float("nan"), float("inf"), "1", True])
def test_bad_step_size_everywhere(step_size):
    for make in [
        lambda: ILSCategorical(logits=torch.zeros(3), step_size=step_size),
        lambda: ILSReparam(step_size=step_size),
        *[lambda elbo=elbo: elbo(step_size=step_size) for elbo in ELBOS],
    ]:
        with pytest.raises(ValueError, match="step_size"):
            make()


@pytest.mark.parametrize("projection", ["euclidean", "normalize", "reference", "mirror_rms"])
def test_zero_step_needs_a_target_with_a_limit(projection):
    """``step_size=0`` is the small-step limit, defined for "midpoint" and "mirror" only."""
    for make in [
        lambda: ILSCategorical(logits=torch.zeros(3), step_size=0.0, projection=projection),
        lambda: ILSReparam(step_size=0.0, projection=projection),
        *[lambda elbo=elbo: elbo(step_size=0.0, projection=projection) for elbo in ELBOS],
    ]:
        with pytest.raises(ValueError, match="small-step limit"):
            make()


def test_default_step_follows_the_target():
    """No step given: 0 (the limit) for the default "midpoint", 1.0 for the others,
    also when a site's ``infer`` dict names another target."""
    d = ILSCategorical(logits=torch.zeros(3))
    assert (d.step_size, d.projection) == (0.0, "midpoint")
    e = ILSCategorical(logits=torch.zeros(3), projection="euclidean")
    assert (e.step_size, e.projection) == (1.0, "euclidean")
    assert (d.with_options(projection="mirror").step_size, e.with_options().step_size) == (1.0, 1.0)
    for elbo in ELBOS:
        assert (elbo().step_size, elbo().projection) == (0.0, "midpoint")


@pytest.mark.parametrize("projection", ["euclid", "", 3])
def test_bad_projection_everywhere(projection):
    for make in [
        lambda: ILSCategorical(logits=torch.zeros(3), projection=projection),
        *[lambda elbo=elbo: elbo(projection=projection) for elbo in ELBOS],
    ]:
        with pytest.raises(ValueError, match="projection"):
            make()
    with pytest.raises(ValueError, match="projection"):
        ILSReparam(projection=projection)


def test_guide_log_prob_modes():
    with pytest.raises(ValueError, match="guide_log_prob"):
        TraceILS_ELBO(guide_log_prob="none")
    with pytest.raises(ValueError, match="guide_log_prob"):
        TraceGraphILS_ELBO(guide_log_prob="analytic")
    with pytest.raises(ValueError, match="guide_log_prob"):
        TraceEnumILS_ELBO(guide_log_prob="stl")


def _model():
    pyro.sample("z", dist.Categorical(logits=torch.zeros(3)))


def _guide_with(infer):
    def guide():
        logits = pyro.param("logits", torch.zeros(3))
        pyro.sample("z", dist.Categorical(logits=logits), infer=infer)

    return guide


@pytest.mark.parametrize(
    "infer,match",
    [({"ils": {"step": 1.0}}, "unknown keys"), ({"ils": {"step_size": -1}}, "step_size"),
     ({"ils": "yes"}, "bool, a dict or an estimator")],
)  # fmt: skip
def test_bad_site_options(infer, match):
    with pytest.raises(ValueError, match=match):
        TraceILS_ELBO().differentiable_loss(_model, _guide_with(infer))


def test_reparam_on_unsupported_site():
    def guide():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(TypeError, match="no ILS version"):
        poutine.reparam(guide, config={"x": ILSReparam()})()


def test_jit_gives_a_clear_error_not_wrong_gradients():
    def guide():
        logits = pyro.param("logits", torch.zeros(3))
        pyro.sample("z", ILSCategorical(logits=logits))

    svi = SVI(_model, guide, pyro.optim.Adam({"lr": 0.1}), loss=JitTrace_ELBO())
    with pytest.raises(NotImplementedError, match="JIT"):
        svi.step()


@pytest.mark.parametrize(
    "logits", [torch.tensor([0.0, float("nan")]), torch.tensor([float("-inf"), float("-inf")])]
)
def test_ils_onehot_bad_logits(logits):
    from pyro_ils import ils_onehot

    with pytest.raises(ValueError, match="logits"):
        ils_onehot(logits.requires_grad_())


def test_to_event_keeps_ils_score_parts():
    d = ILSCategorical(logits=torch.zeros(2, 3, requires_grad=True)).to_event(1)
    plain = torch.tensor([0, 2])
    assert isinstance(d.score_parts(plain).score_function, torch.Tensor)
    z = d.rsample()
    assert d.score_parts(z).score_function == 0
    assert d.score_parts(z).log_prob.shape == ()


def test_option_precedence_through_two_wrappers():
    from pyro_ils import ILSMessenger

    def guide():
        logits = pyro.param("logits", torch.zeros(2, 2, 3))
        fn = ILSCategorical(logits=logits, step_size=0.1).to_event(2).mask(torch.tensor(True))
        pyro.sample("z", fn)

    tr = poutine.trace(ILSMessenger(step_size=1.0)(guide)).get_trace()
    fn = tr.nodes["z"]["fn"]
    while not isinstance(fn, ILSCategorical):
        fn = fn.base_dist
    assert fn.step_size == 0.1
