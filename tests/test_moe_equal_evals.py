"""benchmarks/moe_equal_evals.py at its smoke size: every estimator gets the same
budget of objective evaluations (steps = budget / evaluations per step)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_equal_evaluation_budget(tmp_path):
    out = tmp_path / "eq.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/moe_equal_evals.py", "--quick", "--out", str(out),
         "--estimators", "exact", "st", "rloo2", "ils_diff_rb0"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    budget = result["budget"]
    assert result["ils"] == "ils_diff_rb0" and budget == 5 * result["ils_steps"]
    for row in result["estimators"].values():
        assert row["steps"] == budget // row["evals_per_step"]
        for run in row["runs"]:
            assert run["failed"] is None
            assert run["curve"][-1]["evals"] == row["steps"] * row["evals_per_step"] <= budget
    assert result["estimators"]["st"]["steps"] == budget  # one evaluation per step


def test_a_longer_run_passes_through_the_shorter_run():
    """The report reads the peers' budget off the equal-evaluations runs' curves: with
    no schedule, a run's point at step 250 is where the benchmark's 250-step run of
    the same seed and setting ended."""
    results = os.path.join(ROOT, "benchmarks", "results")
    with open(os.path.join(results, "estimators.json")) as f:
        bench = json.load(f)["training"]["moe"]
    with open(os.path.join(results, "moe_equal_evals.json")) as f:
        equal = json.load(f)["estimators"]
    checked = 0
    for key, row in equal.items():
        if row["evals_per_step"] != 1:
            continue
        steps = bench[key]["runs"][0]["steps"]
        longer = {r["seed"]: r for r in row["runs"]}
        for run in bench[key]["runs"]:
            point = [p for p in longer[run["seed"]]["curve"] if p["step"] == steps]
            assert point and point[0]["bound"] == run["final"]["bound"], (key, run["seed"])
            checked += 1
    assert checked >= 25
