"""Smoke test: examples/semi_supervised_vae.py runs end to end at a tiny size."""

import csv
import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join("examples", "semi_supervised_vae.py")


def _env():
    """The environment, with the repository on PYTHONPATH (``python examples/x.py``
    puts ``examples/``, not the root, on ``sys.path``) in case pyro_ils is not installed."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)


@pytest.mark.slow
def test_semi_supervised_vae_smoke(tmp_path):
    pytest.importorskip("arviz")
    pytest.importorskip("sklearn")
    args = [
        SCRIPT, "--num-steps", "4", "--num-evals", "2", "--eval-samples", "2",
        "--final-eval-samples", "4",
        "--posterior-images", "3", "--posterior-samples", "20", "--num-labels", "20",
        "--no-progress", "--out", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test acc" in proc.stdout and "ArviZ summary" in proc.stdout

    with open(tmp_path / "semi_supervised_vae.json") as f:
        result = json.load(f)
    assert [r["estimator"] for r in result["results"]] == ["ils", "enum"]
    assert result["data"]["labelled"] == 20
    for r in result["results"]:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        # log-probabilities of 64 binary pixels: finite and negative
        for key in ("test_elbo", "test_log_px_is"):
            assert math.isfinite(r[key]) and r[key] < 0, (key, r[key])
        assert len(r["history"]) >= 2
    for name in ("curves", "generated", "classes", "ils_posterior", "enum_posterior"):
        assert os.path.getsize(tmp_path / f"semi_supervised_vae_{name}.png") > 1000
    for name in ("ils", "enum"):
        with open(tmp_path / f"semi_supervised_vae_{name}_summary.csv") as f:
            rows = {row[""]: row for row in csv.DictReader(f)}
        # y_is_true per image (mean = q(true class | x)) and the two most active z dims
        assert [f"y_is_true[{i}]" for i in range(3)] == list(rows)[:3], list(rows)
        assert sum(bool(re.fullmatch(r"z\d+\[\d\]", k)) for k in rows) == 2 * 3, list(rows)
        for k in ("y_is_true[0]", "y_is_true[1]", "y_is_true[2]"):
            assert 0.0 <= float(rows[k]["mean"]) <= 1.0
        posterior = result["posterior"][name]
        assert len(posterior["z_dims"]) == 2
        assert all(0.0 <= p <= 1.0 for p in posterior["q_true_class"])


@pytest.mark.slow
def test_semi_supervised_vae_cuda_flag_errors_clearly_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--cuda", "--num-steps", "1"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr
