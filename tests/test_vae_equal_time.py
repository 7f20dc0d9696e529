"""benchmarks/vae_equal_time.py: every estimator trains for the reference's training
time, and goal 2 of docs/improving_ils.md reads the result.

* the schedule of a run with a time budget records its first point at time 0, one
  whenever the training time passes an evenly spaced mark, and stops at the first
  step at which the budget is reached (a fake clock, so exact);
* at its smoke size the script runs the reference for its steps and every other
  estimator until its training time reaches the reference's mean;
* the report's table and verdict are what the JSON gives.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ils_goals  # noqa: E402
from estimator_bench.training import _Schedule  # noqa: E402


def test_step_schedule_is_the_benchmark_one():
    schedule = _Schedule(steps=10, n_points=4)
    due = [s for s in range(11) if schedule.due(s, 0.0)]
    assert due == [0, 2, 5, 8, 10]
    assert [s for s in range(11) if schedule.done(s, 1e9)] == [10]


def test_time_schedule_records_marks_and_stops_at_the_budget():
    schedule = _Schedule(steps=1000, n_points=4, seconds=1.0)
    clock, step, points = 0.0, 0, []
    while True:
        if schedule.due(step, clock):
            points.append(step)
        if schedule.done(step, clock):
            break
        clock += 0.375  # every step takes 3/8 s (exact in binary)
        step += 1
    # marks 0, 0.25, 0.5, 0.75, 1: clock 0 (mark 0), 0.375 (passes 0.25), 0.75 (passes
    # 0.5 and 0.75: one point), 1.125 (passes 1: the budget, the run stops there)
    assert points == [0, 1, 2, 3]
    assert step == 3 and clock >= 1.0 > clock - 0.375
    # the step cap still holds
    capped = _Schedule(steps=3, n_points=2, seconds=100.0)
    assert [s for s in range(5) if capped.done(s, 0.0)][0] == 3


@pytest.mark.slow
def test_equal_time_smoke(tmp_path):
    out = tmp_path / "eq.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/vae_equal_time.py", "--quick", "--out", str(out),
         "--tasks", "vae_small", "--estimators", "reinmax", "st", "ils_diff_rb"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    part = result["tasks"]["vae_small"]
    rows = part["estimators"]
    assert part["reference"] == "reinmax"  # the best peer of the benchmark's results
    assert set(rows) == {"reinmax", "st", "ils_diff_rb"}
    ref_runs = rows["reinmax"]["runs"]
    assert rows["reinmax"]["steps"] == [part["reference_steps"]] * len(ref_runs)
    # each seed's budget is the reference's training time on that seed
    assert part["budgets"] == [r["train_seconds"] for r in ref_runs]
    assert part["budget_seconds"] == statistics.fmean(part["budgets"])
    for key in ("st", "ils_diff_rb"):
        runs = rows[key]["runs"]
        assert [r["seed"] for r in runs] == [r["seed"] for r in ref_runs]
        for run, steps, budget in zip(runs, rows[key]["steps"], part["budgets"], strict=True):
            assert run["failed"] is None and run["train_seconds"] >= budget
            assert run["curve"][-1]["step"] == steps and run["curve"][-1]["seconds"] >= budget
            assert "test_is_bound" in run["final"]

    lines, ok = ils_goals._equal_time({}, "vae_small", result)
    text = "\n".join(lines)
    finals = {
        k: statistics.fmean(r["final"]["test_is_bound"] for r in v["runs"]) for k, v in rows.items()
    }
    peer = max(("reinmax", "st"), key=finals.get)
    assert ok == (finals["ils_diff_rb"] >= finals[peer])
    assert ("**met**" in text) == ok and ("**not met**" in text) != ok
    for row in rows.values():
        assert f"| {row['label']} |" in text


def test_goal_without_the_measurement_says_so():
    lines, ok = ils_goals._equal_time({}, "vae_small", None)
    assert ok is False and "not measured" in lines[0]


def test_first_reaching_interpolates_between_curve_points():
    curve = [(0, -40.0), (100, -22.0), (200, -20.0)]
    assert ils_goals._first_reaching(curve, -21.0, higher=True) == 150.0
    assert ils_goals._first_reaching(curve, -19.0, higher=True) is None
    assert ils_goals._first_reaching(curve, -50.0, higher=True) == 0.0
    assert ils_goals._first_reaching([(0, 5.0), (10, 1.0)], 3.0, higher=False) == 5.0


def test_break_even_reads_the_equal_steps_curves():
    def entry(values):
        curve = [{"step": s, "train_elbo": v} for s, v in zip((0, 100, 200), values, strict=True)]
        return {"runs": [{"curve": curve, "failed": None}]}

    data = {
        "training": {"vae_small": {"peer": entry([-40, -25, -21]), "ils": entry([-40, -23, -20])}},
        "summary": {"tasks": {"vae_small": {"primary": "train_elbo", "higher_is_better": True}}},
    }
    part = {
        "reference": "peer",
        "reference_steps": 200,
        "estimators": {
            "peer": {"label": "Peer", "steps": [200]},
            "ils": {"label": "ILS", "steps": [100, 120]},
        },
    }
    (line,) = ils_goals._break_even(data, "vae_small", part, "ils")
    # -21 is reached at step 100 + 100 * (2 / 3): a step may cost 200 / 166.7 = 1.20
    assert "at step 167" in line and "at most 1.20 times" in line
    assert "cost 1.82 times" in line  # 200 / mean(100, 120)
    assert "Exact enumeration" not in line  # no exact runs in this data
    assert ils_goals._break_even({}, "vae_small", part, "ils") == []
    data["training"]["vae_small"]["exact"] = entry([-40, -21, -19])
    (line,) = ils_goals._break_even(data, "vae_small", part, "ils")
    # exact reaches -21 at step 100: at most 200 / 100 = 2.00 times
    assert "reaches it at step 100" in line and "at most 2.00 times" in line
