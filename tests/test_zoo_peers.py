"""The zoo's newer peers (``benchmarks/zoo/estimators.py``): Gumbel-Rao, GST, IndeCateR,
DisARM, matched-cost RLOO, the ReinMax authors' package beside the plugin's ReinMax,
the per-task reported seeds, and pages that render whatever estimators a result holds."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI

from benchmarks.zoo import report, run
from benchmarks.zoo.estimators import ESTIMATORS, RLOO_CAP, matched_samples
from benchmarks.zoo.reinmax_official import OfficialReinMaxOneHotCategorical
from pyro_ils.distributions import (
    GSTBernoulli,
    GumbelRaoOneHotCategorical,
    ReinMaxOneHotCategorical,
)
from pyro_ils.estimators.reinmax import reinmax_onehot

pytest.importorskip("reinmax")

SMALL = ("quickstart", "dp_gaussian", "dp_poisson", "moe")
NEW = ("gumbel_rao", "gst", "indecater", "disarm", "rloo_matched", "reinmax_official")


@pytest.mark.parametrize("tau", [1.0, 1.5])
def test_official_reinmax_has_the_plugins_draw_and_gradient(tau):
    """Under the same RNG state the package and the plugin draw the same one-hot, and
    the logits get the same gradient for the same downstream ``g`` (the package centres
    it over the categories, which changes only rounding)."""
    logits = torch.randn(64, 3, 5, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(64, 3, 5, generator=torch.Generator().manual_seed(1))
    grads, draws = [], []
    for cls in (OfficialReinMaxOneHotCategorical, ReinMaxOneHotCategorical):
        theta = logits.clone().requires_grad_()
        pyro.set_rng_seed(7)
        z = cls(logits=theta, temperature=tau).rsample()
        ((z * weights).sum() + (z * weights).square().sum()).backward()  # g depends on z
        grads.append(theta.grad)
        draws.append(z.detach())
    assert torch.equal(draws[0], draws[1])
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    # and against the plugin's rule at the package's draw, directly
    theta = logits.clone().requires_grad_()
    z = reinmax_onehot(theta, draws[0].argmax(-1), temperature=tau)
    ((z * weights).sum() + (z * weights).square().sum()).backward()
    assert torch.allclose(grads[0], theta.grad, atol=1e-6, rtol=1e-5)
    assert grads[0].abs().max() > 1e-3  # not trivially zero


def test_official_reinmax_shapes_and_expand():
    d = OfficialReinMaxOneHotCategorical(logits=torch.zeros(2, 4), temperature=1.3)
    assert d.rsample((5,)).shape == (5, 2, 4)
    e = d.expand((3, 2))
    assert type(e) is OfficialReinMaxOneHotCategorical and e.temperature == 1.3
    assert e.rsample().shape == (3, 2, 4)


def test_peers_swap_to_the_sites_kind():
    gr = ESTIMATORS["gumbel_rao"]
    assert gr.for_site(dist.Categorical) is gr
    fn = gr.for_site(dist.OneHotCategorical).site_dist(dist.OneHotCategorical)(
        logits=torch.zeros(3)
    )
    assert type(fn) is GumbelRaoOneHotCategorical and fn.num_samples == 10
    fn = ESTIMATORS["gst"].for_site(dist.Bernoulli).site_dist(dist.Bernoulli)(logits=torch.zeros(3))
    assert type(fn) is GSTBernoulli and fn.kappa == 1.0
    with pytest.raises(ValueError, match="no Bernoulli version"):
        ESTIMATORS["reinmax"].for_site(dist.Bernoulli)
    assert ESTIMATORS["trace"].for_site(dist.Bernoulli) is ESTIMATORS["trace"]


def test_matched_samples_count_and_leave_no_trace():
    task = run.TASKS["quickstart"](quick=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    task.reset(ESTIMATORS["rloo_matched"])
    first = task.batch()[0]  # the data; the quickstart subsamples inside its plate
    before = torch.get_rng_state()
    assert matched_samples(task) == 1 + 3  # the draw and its K = 3 alternatives
    assert torch.equal(torch.get_rng_state(), before)
    assert not list(pyro.get_param_store().keys())
    assert torch.equal(task.batch()[0], first)
    vae = run.TASKS["cat_vae_20x10"](quick=True)
    vae.reset(ESTIMATORS["trace"])
    before = torch.get_rng_state()
    assert matched_samples(vae) == RLOO_CAP  # 1 + 20 x 10, capped
    assert torch.equal(torch.get_rng_state(), before)  # the probe's networks drew


def test_reported_seeds_per_task():
    for name in SMALL:
        assert len(run.TASKS[name].reported_seeds) >= 10
    for name in ("cat_vae_20x10", "cat_vae_4x8", "cat_vae_24x4", "bernoulli_vae_200", "ss_vae"):
        assert len(run.TASKS[name].reported_seeds) >= 5
    for task in run.TASKS.values():
        assert set(task.reported_seeds).isdisjoint(run.TUNING_SEEDS)


def _cases():
    for name, task in run.TASKS.items():
        if name in SMALL + ("cat_vae_4x8", "bernoulli_vae_200", "ss_vae"):
            yield from ((name, e) for e in task.estimators if e in NEW)


@pytest.mark.parametrize("model, estimator", sorted(_cases()))
def test_listed_new_peers_take_a_finite_step(model, estimator):
    task = run.TASKS[model](quick=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    task.reset(ESTIMATORS[estimator])
    loss = ESTIMATORS[estimator].loss(task)
    svi = SVI(task.model, task.guide, pyro.optim.Adam({"lr": 1e-3}), loss=loss)
    assert math.isfinite(svi.step(*task.batch()))


def test_new_peers_are_listed_where_they_apply():
    tasks = run.TASKS
    for name in SMALL:
        assert {"gumbel_rao", "gst", "indecater", "rloo_matched"} <= set(tasks[name].estimators)
    for name in ("cat_vae_20x10", "cat_vae_4x8", "cat_vae_24x4"):
        assert {"gumbel_rao", "gst", "reinmax", "reinmax_official"} <= set(tasks[name].estimators)
    assert "disarm" in tasks["bernoulli_vae_200"].estimators
    assert [n for n, t in tasks.items() if "disarm" in t.estimators] == ["bernoulli_vae_200"]
    assert "indecater" not in tasks["ss_vae"].estimators  # not mean field: it refuses


def test_indecater_refuses_the_ss_vae_guide():
    task = run.TASKS["ss_vae"](quick=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    task.reset(ESTIMATORS["indecater"])
    svi = SVI(
        task.model, task.guide, pyro.optim.Adam({"lr": 1e-3}), ESTIMATORS["indecater"].loss(task)
    )
    with pytest.raises(ValueError, match="not mean field"):
        svi.step(*task.batch())


def _run(name, seed, values):
    curve = [{"step": 50 * (i + 1), "seconds": float(i), "metric": v} for i, v in enumerate(values)]
    return {"estimator": name, "setting": "tuned", "seed": seed, "steps": curve[-1]["step"],
            "seconds": curve[-1]["seconds"], "stop": "converged", "curve": curve,
            "final": {"elbo": values[-1]}}  # fmt: skip


def test_a_page_renders_every_estimator_of_its_result():
    names = ("ils_default", "trace", "gumbel_rao", "rloo_matched", "reinmax_official")
    result = {
        "model": "quickstart", "title": "t", "source": "s", "commit": "0" * 40,
        "dirty": False, "command": "python -m benchmarks run zoo quickstart",
        "seeds": {"tuning": [100], "reported": [0, 1]},
        "machine": {"cpu": "c", "logical_cpus": 2, "torch_threads": 1, "torch": "t",
                    "pyro": "p"},
        "protocol": {"lr_grid": [0.05], "temperature_grid": [1.0], "source_lr": 0.05,
                     "max_steps": 100, "min_steps": 50, "eval_every": 50, "tol": 1e-3,
                     "metric": "m"},
        "estimators": {n: {"label": ESTIMATORS[n].label, "about": ESTIMATORS[n].about}
                       for n in names},
        "tuning": {n: {"lr": 0.05, "lr_edge": False, "lr_table": {"0.05": -1.0}}
                   for n in names},
        "runs": [_run(n, s, [-10.0, -5.0 - s]) for n in names for s in (0, 1)],
    }  # fmt: skip
    text = report.page(result)
    for n in names:
        assert f"**{ESTIMATORS[n].label}**" in text
        assert f"| {ESTIMATORS[n].label} |" in text
