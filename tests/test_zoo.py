"""The zoo (``benchmarks/zoo``): its stopping rule, its statistics, its result record,
its metrics against Pyro's enumeration, a ``--quick`` run of every model, and the
docs pages against the committed result files."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from benchmarks.zoo import record, report
from benchmarks.zoo.estimators import ESTIMATORS
from benchmarks.zoo.mixtures import TASKS, DPGaussian, DPPoisson
from benchmarks.zoo.training import _converged

ROOT = Path(__file__).resolve().parents[1]


def _curve(values, every=50):
    return [{"step": every * (i + 1), "seconds": i, "metric": v} for i, v in enumerate(values)]


def test_stopping_rule_reads_the_last_fifth():
    # 10 points: the last fifth starts at step 400 (the point nearest 0.8 * 500).
    rising = _curve([-100, -50, -20, -10, -5, -4, -3.5, -3.2, -3.1, -3.0])
    assert not _converged(rising[:5], 1e-3)  # -10 -> -5 over the last fifth
    assert _converged(rising, 0.1)  # -3.2 -> -3.0: 6% < 10%
    assert not _converged(rising, 0.01)
    assert not _converged(_curve([-10.0, math.nan]), 0.5)
    # Flat over the last evaluation but not over the last fifth: not converged.
    stalled = _curve([-100, -50, -20, -10, -5, -4, -3.6, -3.3, -3.0, -3.0])
    assert not _converged(stalled, 0.05)


def test_t_interval_at_n_minus_one_degrees_of_freedom():
    m, hw, n = report.t_interval([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3)
    assert hw == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) = 4.3027


def test_paired_differences_read_both_runs_at_the_smaller_budget():
    a = {"seed": 0, "steps": 100, "seconds": 1.0, "curve": _curve([1, 2], every=50)}
    b = {"seed": 0, "steps": 150, "seconds": 3.0, "curve": _curve([0, 0, 5], every=50)}
    b["curve"][2]["seconds"] = 3.0
    assert report.paired([a], [b], "steps") == [2 - 0]
    assert report.paired([a], [b], "seconds") == [2 - 0]
    # equal evaluations: 2 a step against 1 a step, so 150 evaluations are a's step 75
    # (its step-50 point) and b's step 150
    a["evaluations_per_step"], b["evaluations_per_step"] = 2, 1
    assert report.paired([a], [b], "evaluations") == [1 - 5]
    del b["evaluations_per_step"]  # not known: the pair is left out
    assert report.paired([a], [b], "evaluations") == []


def _run(name, seed, values):
    curve = _curve(values)
    last = curve[-1]
    return {"estimator": name, "setting": "tuned", "seed": seed, "steps": last["step"],
            "seconds": last["seconds"], "stop": "converged", "curve": curve,
            "final": {"elbo": values[-1]}}  # fmt: skip


@pytest.mark.parametrize("model, expected", [("cat_vae_4x8", True), ("dp_gaussian", False)])
def test_reinmax_goal_on_the_categorical_vaes(model, expected):
    """The default against tuned ReinMax at equal wall time, on the categorical VAEs
    only; its verdict follows the paired differences."""
    runs = [_run("ils_default", s, [-200, -190 + s]) for s in range(3)]
    runs += [_run("reinmax", s, [-200, -189]) for s in range(3)]
    result = {"model": model, "runs": runs, "estimators": {
        "ils_default": {"label": "default"}, "reinmax": {"label": "ReinMax"}}}  # fmt: skip
    found = [g for g in report.goals(result) if "ReinMax" in g["goal"]]
    assert bool(found) == expected
    if expected:
        (goal,) = found
        assert goal["difference"] == pytest.approx(0.0)  # -1, 0, +1
        assert goal["n"] == 3 and goal["met"]
        runs[1]["curve"][-1]["metric"] = -192.0  # seed 1: -3 behind
        (goal,) = [g for g in report.goals(result) if "ReinMax" in g["goal"]]
        assert goal["difference"] == pytest.approx(-1.0) and not goal["met"]


def test_record_refuses_a_dirty_tree(monkeypatch):
    def dirty_git(*args):
        return " M pyro_ils/elbo.py" if args[0] == "status" else "abc123"

    monkeypatch.setattr(record, "_git", dirty_git)
    with pytest.raises(SystemExit, match="allow-dirty"):
        record.commit(allow_dirty=False)
    assert record.commit(allow_dirty=True) == {"commit": "abc123", "dirty": True}


@pytest.mark.parametrize("cls", [DPGaussian, DPPoisson])
def test_dp_metric_matches_trace_enum(cls):
    """The ELBO with ``z`` summed out exactly, against ``TraceEnum_ELBO`` over the
    guide with ``z`` enumerated (Monte Carlo in the continuous sites: 300 particles
    there, 4000 here; the tolerance is five standard errors of the former)."""
    task = cls()
    task.reset(ESTIMATORS["trace"])
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    task.guide(task.data)  # initializes the parameters
    task.particles = 4000
    metric = task.metric()
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(1)
    values = torch.tensor(
        [-elbo.loss(task.model, config_enumerate(task.guide), task.data) for _ in range(300)]
    )
    se = values.std() / math.sqrt(len(values))
    assert abs(metric - values.mean()) < 5 * se + 1e-3 * abs(metric), (metric, values.mean(), se)


def test_quickstart_metric_is_the_exact_elbo():
    """No continuous latents: the metric is the exact ELBO, which the full-data
    enumerated loss gives (subsampling off)."""
    task = TASKS["quickstart"]()
    pyro.clear_param_store()
    pyro.param("locs", torch.tensor([-3.0, 0.5, 2.0]))
    pyro.param("logits", torch.randn(300, 3, generator=torch.Generator().manual_seed(0)))
    log_joint, log_q = task._joint()
    brute = sum(
        float(log_q[n, k].exp() * (log_joint[n, k] - log_q[n, k]))
        for n in range(300)
        for k in range(3)
    )
    assert task.metric() == pytest.approx(brute, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(TASKS))
def test_quick_run_writes_a_complete_record(model, tmp_path):
    out = tmp_path / f"{model}.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "zoo", model, "--quick", "--allow-dirty"]
        + ["--no-progress", "--out", str(out)],
        cwd=ROOT,
        check=True,
    )
    result = json.loads(out.read_text())
    assert result["quick"] and result["model"] == model
    assert {"commit", "dirty", "command", "seeds", "machine"} <= set(result)
    assert set(result["seeds"]["tuning"]).isdisjoint(result["seeds"]["reported"])
    names = set(TASKS[model].estimators)
    assert set(result["tuning"]) == names
    members = ("exact differences", "midpoint limit", "first-order ILS")
    for run in result["runs"]:
        # a run that diverges before its first evaluation has no curve, and says so
        # (rloo_matched on dp_poisson at seed 1: Pyro's own Trace_ELBO with as many
        # particles gets a NaN Gamma rsample gradient at the same draws)
        assert run["estimator"] in names and (run["curve"] or run["stop"] == "diverged")
        assert run["stop"] in ("converged", "max_steps", "diverged")
        if run["estimator"] == "ils_default":  # recorded: what each site got
            assert run["site_choices"] and all(
                c.startswith(members) for c in run["site_choices"].values()
            )
        if run["estimator"] in ("trace", "tracegraph", "enum"):
            assert "site_choices" not in run
        # evaluations per step: one for the score function, S for RLOO, the draw plus
        # the alternatives of the sites where the default runs exact differences
        if run["estimator"] in ("trace", "tracegraph"):
            assert run["evaluations_per_step"] == 1
        if run["estimator"] == "rloo_matched":
            assert run["evaluations_per_step"] == run["num_samples"]
        if run["estimator"] == "ils_default" and run["stop"] != "diverged":
            exact = any(c.startswith(members[0]) for c in run["site_choices"].values())
            assert run["evaluations_per_step"] >= (2 if exact else 1)
    tuned = {(r["estimator"], r["seed"]) for r in result["runs"] if r["setting"] == "tuned"}
    assert tuned == {(n, s) for n in names for s in result["seeds"]["reported"]}


def test_docs_pages_are_up_to_date():
    assert report.main(["--check"]) == 0
