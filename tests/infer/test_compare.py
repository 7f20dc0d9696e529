"""compare_estimators: the reference against a brute-force oracle, the statistics, the
fallback reference, and that nothing of the user's state changes."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate

from pyro_ils import TraceILS_ELBO, compare_estimators
from pyro_ils.estimators import StraightThrough
from pyro_ils.infer.estimator_catalog import default_estimators

N, K1, K2 = 3, 3, 2
X = torch.tensor([-1.5, 0.3, 2.0])


def model(x):
    locs = pyro.param("locs", torch.tensor([-1.0, 0.0, 1.0]))
    shift = pyro.param("shift", torch.tensor([0.0, 0.5]))
    with pyro.plate("data", N):
        z1 = pyro.sample("z1", dist.Categorical(torch.tensor([0.5, 0.3, 0.2])))
        trans = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
        z2 = pyro.sample("z2", dist.Categorical(trans[z1]))
        pyro.sample("x", dist.Normal(locs[z1] + shift[z2], 1.0), obs=x)


def guide(x):
    logits1 = pyro.param(
        "logits1", torch.tensor([[0.2, -0.1, 0.4], [0.0, 0.3, -0.5], [1.0, 0.0, 0.0]])
    )
    logits2 = pyro.param("logits2", 0.3 * torch.arange(float(N * K1 * K2)).reshape(N, K1, K2).sin())
    with pyro.plate("data", N):
        z1 = pyro.sample("z1", dist.Categorical(logits=logits1))
        pyro.sample("z2", dist.Categorical(logits=logits2[torch.arange(N), z1]))


def oracle_gradient() -> dict[str, torch.Tensor]:
    """The ELBO's gradient by brute force over all (K1 K2)^N joint values."""
    store = pyro.get_param_store()
    locs, shift = store["locs"], store["shift"]
    logits1, logits2 = store["logits1"], store["logits2"]
    trans = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    prior = torch.tensor([0.5, 0.3, 0.2])
    elbo = 0.0
    pairs = list(itertools.product(range(K1), range(K2)))
    for joint in itertools.product(pairs, repeat=N):
        log_q, log_p = 0.0, 0.0
        for i, (a, b) in enumerate(joint):
            log_q = log_q + logits1[i].log_softmax(-1)[a] + logits2[i, a].log_softmax(-1)[b]
            log_p = log_p + prior[a].log() + trans[a, b].log()
            log_p = log_p + dist.Normal(locs[a] + shift[b], 1.0).log_prob(X[i])
        elbo = elbo + log_q.exp() * (log_p - log_q)
    names = ["locs", "logits1", "logits2", "shift"]
    grads = torch.autograd.grad(-elbo, [store[n] for n in names])
    return dict(zip(names, grads, strict=True))


@pytest.fixture
def fresh():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def test_exact_reference_matches_brute_force(fresh):
    result = compare_estimators(
        model,
        guide,
        X,
        estimators={"ST": TraceILS_ELBO(estimator=StraightThrough())},
        num_draws=2,
        progress=False,
        verbose=False,
    )
    assert result.reference == "exact" and result.reference_draws == 1
    oracle = oracle_gradient()
    assert set(result.reference_gradient) == set(oracle)
    for name, grad in oracle.items():
        torch.testing.assert_close(result.reference_gradient[name], grad, rtol=1e-5, atol=1e-6)


class DoubledExact(TraceEnum_ELBO):
    """Exactly twice the exact gradient: a deterministic estimator of known bias."""

    def loss_and_grads(self, model, guide, *args, **kwargs):
        scaled = config_enumerate(poutine.scale(guide, scale=2.0), "parallel")
        return super().loss_and_grads(poutine.scale(model, scale=2.0), scaled, *args, **kwargs)


def test_statistics(fresh):
    """A deterministic estimator with bias ``r``: bias 1, no variance, cosine 1. REINFORCE
    is unbiased: its ``bias`` is Monte Carlo noise, whose square has expectation
    ``bias_noise**2``; by Markov's inequality ``bias > 3 bias_noise`` has probability at
    most 1/9 for any seed (far less in 22 dimensions, where the ratio concentrates near
    1; the seed is fixed)."""
    estimators = {"doubled": DoubledExact(), "reinforce": Trace_ELBO()}
    result = compare_estimators(
        model, guide, X, estimators=estimators, num_draws=300, seed=1, progress=False, verbose=False
    )
    doubled, reinforce = result["doubled"], result["reinforce"]
    assert doubled.relative_bias == pytest.approx(1.0, rel=1e-5)
    assert doubled.cosine == pytest.approx(1.0) and doubled.draw_cosine == pytest.approx(1.0)
    assert doubled.relative_variance < 1e-10 and doubled.bias_noise < 1e-5
    assert 0.3 * reinforce.bias_noise < reinforce.relative_bias < 3 * reinforce.bias_noise
    assert reinforce.relative_variance > 0.1 and reinforce.cosine > 0.9
    for r in (doubled, reinforce):
        assert r.error is None and r.num_draws == 300 and r.seconds_per_step > 0
        assert -1 <= r.draw_cosine <= r.cosine + 1e-9 <= 1 + 1e-9


def test_parameters_gradients_and_store_restored(fresh):
    guide(X)
    model(X)
    store = pyro.get_param_store()
    before = {k: (v, v.detach().clone()) for k, v in store._params.items()}
    store._params["locs"].grad = torch.full((3,), 7.0)
    result = compare_estimators(model, guide, X, num_draws=3, seed=0, progress=False, verbose=False)
    assert set(store._params) == set(before)
    for name, (tensor, value) in before.items():
        assert store._params[name] is tensor
        assert torch.equal(tensor.detach(), value)
    assert torch.equal(store._params["locs"].grad, torch.full((3,), 7.0))
    assert store._params["logits1"].grad is None
    # every default estimator is measured or says why it cannot run
    defaults = list(default_estimators())
    names = [r.name for r in result]
    assert names[: len(defaults)] == defaults
    # the exact differences evaluate 1 + 3 + 2 rows: z1 and z2 in a plate that splits
    assert names[len(defaults) :] == ["TraceRLOO_ELBO(6) (= ILS-diff's evaluations)"]
    applicable = [r for r in result if r.error is None]
    assert {"TraceILS_ELBO() (default)", "Trace_ELBO (REINFORCE)"} <= {r.name for r in applicable}
    # the default ran exact differences on both sites: counted as ILS-diff is
    assert result["TraceILS_ELBO() (default)"].evaluations == 6
    assert all(math.isfinite(r.cosine) for r in applicable)
    for r in result:
        if r.error is not None:
            assert math.isnan(r.cosine) and f"{r.name}: n/a" in result.table()


def scalar_model():
    p = pyro.param("p", torch.tensor([0.2, 0.5, 0.3]), constraint=dist.constraints.simplex)
    z = pyro.sample("z", dist.Categorical(p))
    pyro.sample("x", dist.Normal(float(int(z)), 1.0), obs=torch.tensor(1.3))  # no broadcast


def scalar_guide():
    logits = pyro.param("logits", torch.tensor([0.1, -0.2, 0.3]))
    pyro.sample("z", dist.Categorical(logits=logits))


def test_rloo_reference_where_enumeration_fails(fresh):
    """``int(z)`` cannot take an enumerated batch: the reference is RLOO's mean, which
    must match the brute-force gradient within 4.5 standard errors per coordinate
    (a normal test, Bonferroni over 5 coordinates: false-alarm rate 3e-5)."""
    result = compare_estimators(
        scalar_model,
        scalar_guide,
        estimators=[Trace_ELBO()],
        num_draws=2,
        reference_draws=3000,
        seed=0,
        progress=False,
        verbose=False,
    )
    assert result.reference == "RLOO, Monte Carlo" and result.reference_draws == 3000
    store = pyro.get_param_store()
    logits, p = store["logits"], store["p"]
    q = logits.softmax(-1)
    log_lik = dist.Normal(torch.arange(3.0), 1.0).log_prob(torch.tensor(1.3))
    elbo = (q * (p.log() + log_lik - q.log())).sum()
    unconstrained = store._params["p"]
    g_logits, g_p = torch.autograd.grad(-elbo, [logits, unconstrained])
    ref = result.reference_gradient
    # the reference's per-coordinate standard error, from its stated relative error
    se = result.reference_error * result.reference_norm
    assert se > 0
    assert (ref["logits"] - g_logits).abs().max() < 4.5 * se
    assert (ref["p"] - g_p).abs().max() < 4.5 * se


def test_continuous_latents_give_a_monte_carlo_reference(fresh):
    def model_c(x):
        z = pyro.sample("z", dist.Bernoulli(0.3))
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(loc + z, 1.0), obs=x)

    def guide_c(x):
        pyro.sample("z", dist.Bernoulli(logits=pyro.param("a", torch.tensor(0.1))))
        pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.2)), 1.0))

    result = compare_estimators(
        model_c,
        guide_c,
        torch.tensor(0.5),
        estimators=[Trace_ELBO()],
        num_draws=5,
        reference_draws=20,
        progress=False,
        verbose=False,
    )
    assert result.reference == "enumeration, Monte Carlo" and result.reference_draws == 20
    assert result.reference_error > 0


def test_bad_input(fresh):
    with pytest.raises(ValueError, match="num_draws"):
        compare_estimators(model, guide, X, num_draws=1, verbose=False)
    with pytest.raises(ValueError, match="no parameter"):
        compare_estimators(lambda: None, lambda: None, num_draws=2, verbose=False)
    with pytest.raises(TypeError, match="not a Pyro ELBO"):
        compare_estimators(model, guide, X, estimators={"x": object()}, verbose=False)


def test_only_the_parameters_the_model_and_guide_use(fresh):
    pyro.param("unrelated", torch.ones(50))
    result = compare_estimators(
        model, guide, X, estimators=[Trace_ELBO()], num_draws=2, progress=False, verbose=False
    )
    assert set(result.reference_gradient) == {"locs", "shift", "logits1", "logits2"}
    assert result.num_parameters == 3 + 2 + 9 + 18


def test_plot(fresh):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    estimators = {"reinforce": Trace_ELBO(), "st": TraceILS_ELBO(estimator=StraightThrough())}
    result = compare_estimators(
        model, guide, X, estimators=estimators, num_draws=3, progress=False, verbose=False
    )
    ax = result.plot()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["reinforce", "st"]
    assert len(ax.collections) == 4  # a point and its noise mark per estimator
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    matplotlib.pyplot.close(ax.figure)


def test_every_estimator_starts_from_the_same_random_state(fresh):
    """Drawn round-robin, each estimator keeps its own stream from a common start: the
    same ELBO twice gives the same draws."""
    result = compare_estimators(
        model,
        guide,
        X,
        estimators={"a": Trace_ELBO(), "b": Trace_ELBO()},
        num_draws=5,
        progress=False,
        verbose=False,
    )
    a, b = result["a"], result["b"]
    assert (a.cosine, a.relative_bias, a.relative_variance) == (
        b.cosine,
        b.relative_bias,
        b.relative_variance,
    )


class NaNEverySecond(Trace_ELBO):
    """REINFORCE whose every second gradient has a NaN entry."""

    calls = 0

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = super().loss_and_grads(model, guide, *args, **kwargs)
        NaNEverySecond.calls += 1
        if NaNEverySecond.calls % 2 == 0:
            pyro.get_param_store()._params["locs"].grad[0] = math.nan
        return loss


def test_nonfinite_draws_are_counted_and_left_out(fresh):
    NaNEverySecond.calls = 0  # the warm-up draw is call 1; the kept draws are 2..7
    result = compare_estimators(
        model,
        guide,
        X,
        estimators={"nan": NaNEverySecond()},
        num_draws=6,
        progress=False,
        verbose=False,
    )
    r = result["nan"]
    assert (r.nonfinite_draws, r.num_draws) == (3, 3) and math.isfinite(r.cosine)
    assert "non-finite" in result.table()
