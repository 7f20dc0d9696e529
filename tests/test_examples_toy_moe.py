"""Smoke tests: the toy (examples/toy_kl.py), the mixture of experts
(examples/mixture_of_experts.py) and the shared ArviZ helper run end to end at a tiny size."""

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _run(args, timeout=120):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _table_rows(out, first_header_word, n_rows):
    """The rows following the header line of a printed result table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first_header_word])
    return lines[start + 1 : start + 1 + n_rows]


def _floats(line):
    values = []
    for token in line.replace("+-", " ").split():
        try:
            values.append(float(token))
        except ValueError:
            pass
    return values


def _check_summary_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        assert math.isfinite(float(row["mean"]))


@pytest.mark.slow
def test_toy_kl_smoke(tmp_path):
    out = _run(
        ["examples/toy_kl.py", "--num-steps", "20", "--replicates", "2", "--no-progress",
         "--out", str(tmp_path)],
    )  # fmt: skip
    # 3 projections x 3 step sizes + 3 temperatures, each row: KL, E f, f own draws, pi(mode)
    rows = _table_rows(out, "estimator", 12)
    assert [r.split()[0] for r in rows] == ["ILS"] * 9 + ["Gumbel-Softmax"] * 3
    for row in rows:
        values = _floats(row)  # the label's "c=0.1" / "tau=1" are not parsed
        assert len(values) == 7, row
        assert all(math.isfinite(v) for v in values), row
    with open(tmp_path / "toy_kl.json") as f:
        result = json.load(f)
    assert len(result["results"]) == 12
    for r in result["results"].values():
        for key in ("kl_true_pi", "expected_objective", "sampled_objective_last10pct"):
            assert all(math.isfinite(v) for v in r["final"][key])
        # E_{k~pi} f is at least its minimum (a point mass on each mode)
        minimum = result["objective_minimum"]
        assert all(v >= minimum - 1e-3 for v in r["final"]["expected_objective"])
    for name in ("toy_kl.png", "toy_kl_posterior.png"):
        assert os.path.getsize(tmp_path / name) > 1000
    _check_summary_csv(tmp_path / "toy_kl_summary.csv")


@pytest.mark.slow
def test_mixture_of_experts_smoke(tmp_path):
    out = _run(
        ["examples/mixture_of_experts.py", "--num-steps", "15", "--num-seeds", "1",
         "--num-data", "300", "--batch-size", "64", "--num-samples", "50", "--no-progress",
         "--out", str(tmp_path)],
    )  # fmt: skip
    names = ["default", "ils", "ils-diff", "reinforce", "exact"]
    rows = _table_rows(out, "estimator", len(names))
    assert [r.split()[0] for r in rows] == names
    for row in rows:
        values = _floats(row)
        assert len(values) == 9, row  # 3 x (mean, sd), regions, RMSE, seconds
        assert all(math.isfinite(v) for v in values), row
    with open(tmp_path / "mixture_of_experts.json") as f:
        result = json.load(f)
    for r in result["results"]:
        for split in ("train", "test"):
            m = r[split]
            # the bound is below the mixture log-likelihood (Jensen), both finite
            assert math.isfinite(m["bound"]) and m["bound"] <= m["log_lik"] + 1e-4
            assert 0 <= m["region_accuracy"] <= 1
    assert os.path.getsize(tmp_path / "mixture_of_experts.png") > 1000
    for name in names:
        assert os.path.getsize(tmp_path / f"mixture_of_experts_{name}_posterior.png") > 1000
        _check_summary_csv(tmp_path / f"mixture_of_experts_{name}_summary.csv")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["toy_kl.py", "mixture_of_experts.py"])
def test_cuda_flag_errors_clearly_without_cuda(script):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    proc = subprocess.run(
        [sys.executable, f"examples/{script}", "--cuda", "--num-steps", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize(
    "args",
    [
        ["examples/toy_kl.py", "--num-steps", "5", "--replicates", "2"],
        ["examples/mixture_of_experts.py", "--num-steps", "5", "--num-seeds", "1",
         "--num-data", "200", "--num-samples", "20"],
    ],
)  # fmt: skip
def test_examples_run_on_cuda(args, tmp_path):
    _run([*args, "--cuda", "--no-progress", "--out", str(tmp_path)])


def test_posterior_summary_helper(tmp_path):
    path = os.path.join(EXAMPLES, "posterior_summary.py")
    spec = importlib.util.spec_from_file_location("example_posterior_summary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summarize_posterior = module.summarize_posterior
    gen = torch.Generator().manual_seed(0)
    samples = {
        "z": torch.randint(0, 3, (200, 4), generator=gen),
        "y": torch.randn(200, 2, generator=gen),
    }
    prefix = str(tmp_path / "sub" / "demo")
    idata = summarize_posterior(samples, prefix, print_table=False)
    assert idata.posterior["y"].shape == (1, 200, 2)
    assert os.path.getsize(prefix + "_posterior.png") > 1000
    with open(prefix + "_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and "r_hat" not in rows[0]  # one chain: no r_hat
    # with a chain dimension, and a subset of variables
    chains = {"y": torch.randn(3, 50, 2, generator=gen), "w": torch.randn(3, 50, generator=gen)}
    idata = summarize_posterior(
        chains, prefix + "2", var_names=["y"], chain_dim=True, print_table=False
    )
    assert idata.posterior["y"].shape == (3, 50, 2)
    with open(prefix + "2_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and "r_hat" in rows[0]
