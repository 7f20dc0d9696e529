"""The zoo's mixture-of-experts task (``benchmarks/zoo/moe.py``): its metrics against
Pyro's enumeration and brute force, its minibatches, the default against the exact
gradient, and a ``--quick`` run."""

import json
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import SVI, TraceEnum_ELBO, config_enumerate

from benchmarks.zoo import moe
from benchmarks.zoo.estimators import ESTIMATORS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def task():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    task = moe.MixtureOfExperts(quick=True)
    task.reset(ESTIMATORS["trace"])
    return task


def test_data_follow_the_quadrants():
    x, y = moe._data(0)
    assert x.shape == (moe.N, 2) and y.shape == (moe.N,)
    resid = y - moe._true_mean(x)
    assert abs(float(resid.std()) - moe.NOISE) < 0.02
    assert set(moe._region(x).tolist()) == {0, 1, 2, 3}
    assert not torch.equal(moe._data(1)[0], x)  # the held-out set is another draw


def test_metric_is_the_enumerated_elbo(task):
    """On the held-out set, the bound per point equals ``-TraceEnum_ELBO`` over the
    guide with ``z`` enumerated (the model's ``z`` term cancels the guide's), divided
    by the number of points."""
    idx = torch.arange(moe.N)
    args = (task.x_test, task.y_test, idx)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(task.model, config_enumerate(task.guide), *args)
    assert task.metric() == pytest.approx(-loss / moe.N, rel=1e-5)


def test_evaluate_by_brute_force(task):
    """``log_px`` and ``region_accuracy`` computed point by point."""
    final = task.evaluate()
    W, b, sigma = (pyro.param(n).detach() for n in ("W", "b", "sigma"))
    n = 50
    x, y = task.x_test[:n], task.y_test[:n]
    probs = task.gate(x).detach().softmax(-1)
    log_px = 0.0
    for i in range(n):
        mix = sum(
            probs[i, k]
            * torch.distributions.Normal((W[k] * x[i]).sum() + b[k], sigma[k]).log_prob(y[i]).exp()
            for k in range(moe.K)
        )
        log_px += float(mix.log())
    task.x_test, task.y_test = x, y
    assert task.evaluate()["log_px"] == pytest.approx(log_px / n, rel=1e-5)
    assert 0.25 <= final["region_accuracy"] <= 1.0


def test_minibatches_cover_an_epoch(task):
    seen = torch.cat([task.batch()[2] for _ in range(moe.N // task.batch_size)])
    assert len(seen.unique()) == len(seen) == (moe.N // task.batch_size) * task.batch_size


def test_default_steps_as_the_exact_gradient(task):
    """``TraceILS_ELBO()`` gives this 4-expert site exact differences: its gradient in
    every parameter equals ``TraceEnum_ELBO``'s on a minibatch (independent oracle)."""
    args = task.batch()

    def grads(estimator, seed):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        task.reset(estimator)
        loss = estimator.loss(task)
        guide = config_enumerate(task.guide) if estimator.needs_enumeration else task.guide
        pyro.set_rng_seed(1)
        with pyro.poutine.trace(param_only=True) as tr:
            loss.differentiable_loss(task.model, guide, *args).backward()
        return {k: v["value"].unconstrained().grad for k, v in tr.trace.nodes.items()}

    exact, default = grads(ESTIMATORS["enum"], 0), grads(ESTIMATORS["ils_default"], 0)
    assert exact.keys() == default.keys() and len(exact) >= 5
    for k in exact:
        assert torch.allclose(default[k], exact[k], rtol=1e-4, atol=1e-6), k


@pytest.mark.slow
def test_quick_run_writes_a_complete_record(tmp_path):
    out = tmp_path / "moe.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "zoo", "moe", "--quick", "--allow-dirty"]
        + ["--no-progress", "--out", str(out)],
        cwd=ROOT,
        check=True,
    )
    result = json.loads(out.read_text())
    assert result["model"] == "moe"
    assert set(result["tuning"]) == set(moe.MixtureOfExperts.estimators)
    for run in result["runs"]:
        assert {"elbo", "log_px", "region_accuracy", "rmse"} <= set(run["final"])


def test_svi_step_runs_for_every_estimator(task):
    for name in task.estimators:
        est = ESTIMATORS[name]
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        task.reset(est)
        guide = config_enumerate(task.guide) if est.needs_enumeration else task.guide
        svi = SVI(task.model, guide, pyro.optim.Adam({"lr": 0.01}), loss=est.loss(task))
        assert torch.isfinite(torch.tensor(svi.step(*task.batch()))), name
