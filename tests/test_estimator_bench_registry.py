"""The estimator benchmark's site swap (``benchmarks/estimator_bench/registry.py``,
``SiteSwap``) is a Pyro effect handler applied around the prepared guide only: it
changes no class of torch or Pyro (nothing process-wide), the task's own guide keeps
its ``OneHotCategorical`` sites, and the prepared guide's gradient is, draw for draw,
that of the guide written by hand with the estimator's distribution (to float
rounding)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from benchmarks.estimator_bench import registry
from benchmarks.estimator_bench.tasks import make_tasks

METHODS = {
    cls: dict(vars(cls))
    for cls in (torch.distributions.Categorical, dist.OneHotCategorical, dist.Categorical)
}


def _grad(task, model, guide, elbo, seed):
    pyro.clear_param_store()
    task.reset(0)
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(False):  # as the benchmark runs (relaxed draws)
        elbo.loss_and_grads(model, guide)
    return pyro.param("logits").unconstrained().grad.clone()


@pytest.mark.parametrize("key", ["st_gumbel_pyro", "gumbel_kl"])
def test_prepared_guide_is_the_hand_written_guide(key):
    task = make_tasks({"toy": {"N": 5, "K": 5, "true_seed": 0}})["toy"]
    est = registry.REGISTRY[key]
    hp = {"temperature": 0.7}
    model, guide, elbo = registry.prepare(est, task, hp)

    def by_hand():
        logits = task._logits()
        with pyro.plate("cats", task.N, dim=-1):
            pyro.sample("z", est.guide_dist(dist.OneHotCategorical(logits=logits), hp))

    for seed in (0, 1):
        routed = _grad(task, model, guide, elbo, seed)
        hand = _grad(task, model, by_hand, est.elbo(hp, task), seed)
        assert routed.abs().sum() > 0
        # equal up to float rounding: by hand, the plate expands the swapped
        # distribution (which renormalizes its logits once more); routed, the swap
        # comes after the plate
        torch.testing.assert_close(routed, hand, rtol=1e-6, atol=1e-7)
    # the swap stays inside the prepared guide
    pyro.clear_param_store()
    task.reset(0)
    site = poutine.trace(task.guide).get_trace().nodes["z"]
    assert type(site["fn"]) is dist.OneHotCategorical
    site = poutine.trace(guide).get_trace().nodes["z"]
    assert type(site["fn"]) is not dist.OneHotCategorical
    for cls, methods in METHODS.items():
        assert dict(vars(cls)) == methods, cls
