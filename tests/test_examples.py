"""Smoke tests: the demo and the benchmark scripts run end to end at a tiny size."""

import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_categorical_vae_demo(tmp_path):
    out = _run(
        ["examples/categorical_vae.py", "--num-steps", "30", "--compare", "--no-progress",
         "--out", str(tmp_path)],
        tmp_path,
    )  # fmt: skip
    assert "test ELBO" in out
    with open(tmp_path / "categorical_vae.json") as f:
        result = json.load(f)
    names = [r["estimator"] for r in result["results"]]
    assert names == ["ils", "ils-original", "ils-diff", "reinmax", "reinforce", "exact"]
    # the default's choice: 3 x 8 = 24 alternatives exceed the budget of 20
    choice = result["results"][0]["site_choices"]["z"]
    assert choice.startswith("midpoint limit at temperature 2 (24 alt"), choice
    for r in result["results"]:
        # an ELBO is a log-probability of 64 binary pixels: negative and above 64 log(1/2)...
        assert -200 < r["test_elbo_exact"] < 0
    assert os.path.getsize(tmp_path / "categorical_vae.png") > 1000
    # the ArviZ summary of the ILS-trained guide (examples/posterior_summary.py)
    assert "ArviZ summary" in out
    assert os.path.getsize(tmp_path / "categorical_vae_posterior.png") > 1000
    with open(tmp_path / "categorical_vae_summary.csv") as f:
        rows = {row[""]: row for row in csv.DictReader(f)}
    assert "log_lik[0]" in rows and "z_is_mode[0, 0]" in rows, list(rows)[:5]
    for name, row in rows.items():
        mean = float(row["mean"])
        if name.startswith("log_lik"):
            assert -200 < mean < 0
        else:
            assert 0 < mean <= 1  # the modal code is drawn at least once
    posterior = result["posterior"]
    assert len(posterior["mean_log_lik"]) == len(posterior["q_modal_code"])


@pytest.mark.slow
def test_categorical_vae_cuda_flag_errors_clearly_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    proc = subprocess.run(
        [sys.executable, "examples/categorical_vae.py", "--cuda", "--num-steps", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "CUDA is not available" in proc.stderr


@pytest.mark.slow
def test_step_time_benchmark_quick(tmp_path):
    out = tmp_path / "step_time.json"
    _run(["-m", "benchmarks", "run", "cost", "--quick", "--out", str(out), "--no-docs"], tmp_path)
    with open(out) as f:
        assert json.load(f)


def test_categorical_vae_exact_loss_is_the_enumerated_elbo(monkeypatch):
    # Oracle: TraceEnum_ELBO on the benchmark's rewrite of the same networks with one
    # enumerable site per latent (benchmarks/estimator_bench/tasks/vae.py, OneHotVAE),
    # with the example's weights.
    import pyro
    import torch
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    from benchmarks.estimator_bench.tasks.vae import OneHotVAE

    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples"))
    from categorical_vae import CategoricalVAE, exact_loss

    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = CategoricalVAE(2, 3, hidden=16).double()
    x = (torch.rand(5, 64, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    ours = exact_loss(vae)(None, None, x, num_data=20)
    pyro.clear_param_store()
    net = OneHotVAE(2, 3, hidden=16).double()
    net.load_state_dict(vae.state_dict())
    guide = config_enumerate(net.guide, "parallel", expand=True)
    oracle = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(net.model, guide, x, 20)
    torch.testing.assert_close(ours, oracle)
    ours_grads = torch.autograd.grad(ours, list(vae.parameters()))
    oracle_grads = torch.autograd.grad(oracle, list(net.parameters()))
    for a, b in zip(ours_grads, oracle_grads, strict=True):
        torch.testing.assert_close(a, b)
