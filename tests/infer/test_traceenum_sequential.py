"""``TraceEnumILS_ELBO`` with a guide site enumerated sequentially next to ILS sites,
and one ELBO instance reused across models.

Oracles:

* a routed site drawn *before* the sequentially enumerated one is replayed into each
  enumerated trace as plain data, so its gradient is Pyro's own ``TraceEnum_ELBO``
  score function: the same numbers as ``TraceEnum_ELBO`` at the same seed (ILS draws
  are exact: the same values under the same random state);
* a routed site drawn *after* it is drawn by ILS in each enumerated trace. With a
  backward linear in the incoming gradient (the default's midpoint limit), the
  expected gradient equals that of parallel enumeration of the same site: a
  two-sample test over independent seeds (Welch, Bonferroni over the parameters,
  family-wise false-alarm rate 1e-3 under the normal approximation).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from scipy.stats import norm

from pyro_ils import TraceEnumILS_ELBO

LOCS = torch.tensor([-2.0, 0.0, 2.0])
X = torch.tensor(2.5)
ALPHA = 1e-3


pytestmark = pytest.mark.usefixtures("clean_param_store")


def model():
    z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
    w = pyro.sample("w", dist.Bernoulli(0.5))
    pyro.sample("x", dist.Normal(LOCS[z] + 2 * w, 1.0), obs=X)


def make_guide(mode, z_first):
    def guide():
        lz = pyro.param("lz", lambda: torch.tensor([0.3, -0.2, 0.1]))
        lw = pyro.param("lw", lambda: torch.tensor(0.4))

        def z():
            pyro.sample("z", dist.Categorical(logits=lz))

        def w():
            pyro.sample("w", dist.Bernoulli(logits=lw), infer={"enumerate": mode})

        for site in (z, w) if z_first else (w, z):
            site()

    return guide


def gradient(elbo, guide, seed) -> torch.Tensor:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    elbo.loss_and_grads(model, guide)
    return torch.cat([pyro.param(n).grad.reshape(-1) for n in ("lz", "lw")])


@pytest.mark.parametrize("seed", range(5))
def test_site_before_the_sequential_one_gets_pyros_gradient(seed):
    guide = make_guide("sequential", z_first=True)
    ours = gradient(TraceEnumILS_ELBO(max_plate_nesting=0), guide, seed)
    pyros = gradient(TraceEnum_ELBO(max_plate_nesting=0), guide, seed)
    assert torch.allclose(ours, pyros, rtol=1e-6, atol=1e-7)
    assert ours[:3].abs().sum() > 0  # z gets a gradient: the comparison means something


def test_site_after_the_sequential_one_matches_parallel_enumeration_in_expectation():
    n = 600
    draws = {}
    for mode in ("sequential", "parallel"):
        guide = make_guide(mode, z_first=False)
        elbo = TraceEnumILS_ELBO(max_plate_nesting=0)
        draws[mode] = torch.stack([gradient(elbo, guide, 1000 + s) for s in range(n)])
        assert elbo.site_choices["z"].member == "midpoint limit"
    a, b = draws["sequential"], draws["parallel"]
    se = (a.var(0) / n + b.var(0) / n).sqrt()
    assert (se > 1e-4).all()  # both are noisy: the test has something to detect
    z = (a.mean(0) - b.mean(0)) / se
    assert z.abs().max() < norm.isf(ALPHA / (2 * z.numel())), z
    # the two are not the same estimator draw for draw
    assert not torch.allclose(a, b)


def test_first_order_ils_next_to_sequential_enumeration_raises():
    """Step sizes > 0 have a backward that is not linear in the incoming gradient,
    which TraceEnum weights by the enumerated value's probability."""
    pyro.set_rng_seed(0)
    elbo = TraceEnumILS_ELBO(max_plate_nesting=0, step_size=1.0, projection="euclidean")
    with pytest.raises(NotImplementedError, match="sequentially"):
        elbo.loss_and_grads(model, make_guide("sequential", z_first=False))
    pyro.clear_param_store()
    elbo.loss_and_grads(model, make_guide("parallel", z_first=False))


def test_one_instance_decides_per_model():
    """One ``TraceEnumILS_ELBO()`` for a model with nothing enumerated, then for one
    whose site is enumerated in the model: the second gets TraceEnum's exact loss, not
    the first model's decision (Pyro's ``test_elbo_zip`` does this)."""
    data = torch.tensor([0.0, 1.0, 2.0])

    def zip_model():
        with pyro.plate("data", 3):
            pyro.sample(
                "obs", dist.ZeroInflatedPoisson(torch.tensor(1.5), gate=torch.tensor(0.3)), obs=data
            )

    def composite_model():
        with pyro.plate("data", 3):
            mask = pyro.sample("mask", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
            mixture = dist.MaskedMixture(
                mask.bool(), dist.Poisson(1.5), dist.Delta(torch.zeros(()))
            )
            pyro.sample("obs", mixture, obs=data)

    def guide():
        pass

    elbo = TraceEnumILS_ELBO(max_plate_nesting=1)
    zip_loss = elbo.loss(zip_model, guide)
    composite_loss = elbo.loss(composite_model, guide)
    assert math.isclose(zip_loss, composite_loss, rel_tol=1e-6)
    exact = TraceEnum_ELBO(max_plate_nesting=1).loss(composite_model, guide)
    assert math.isclose(composite_loss, exact, rel_tol=1e-6)


def test_probe_runs_the_model_only_where_the_guide_does_not_decide():
    """A guide that enumerates decides TraceEnumILS_ELBO()'s default alone: the model
    runs once per enumerated value, as under TraceEnum_ELBO (Pyro's
    ``test_enumerate_sequential_guide``)."""
    values = []

    def count_model():
        values.append(float(pyro.sample("x", dist.Bernoulli(0.5))))

    def guide():
        pyro.sample("x", dist.Bernoulli(0.5), infer={"enumerate": "sequential"})

    TraceEnumILS_ELBO(max_plate_nesting=0).loss(count_model, guide)
    assert len(values) == 2, values
