"""The estimator benchmark (``python -m benchmarks run estimators``) and its page
``docs/estimators.md``.

* ``--quick`` runs end to end into a temporary directory (a few minutes), writes JSON
  with the settings, seeds, versions and machine and the two parts (gradients, cost),
  a gradient row for every estimator at every value of its grid on every task it
  applies to, and the exact-gradient estimator has no bias against the closed-form /
  enumerated gradient; the newer peers (Gumbel-Rao, GST, IndeCateR, matched RLOO)
  give finite gradients, and the unbiased ones no bias beyond the Monte Carlo error;
* every number in the page's written reading is a value of
  ``benchmarks/results/estimators*.json`` (as rounded in the text), the reading's
  summary is what the raw results give, and the page is what the generator writes
  from the JSON.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "estimators.md"
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("estimators*.json"))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("estimators") / "estimators_quick.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "estimators", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_quick_run_records_settings_versions_and_machine(quick):
    for key in ("settings", "estimators", "tasks", "environment", "seconds", "command"):
        assert key in quick, key
    assert quick["quick"] is True
    env = quick["environment"]
    for key in ("python", "torch", "pyro", "pyro_ils", "cpu_model", "device", "git_revision"):
        assert env.get(key) is not None, key
    assert quick["parts"] == ["gradients", "cost"]
    assert "training" not in quick and "proposal" not in quick and "supplements" not in quick
    for key in ("draws", "points", "seed", "warmup"):
        assert quick["settings"]["gradients"][key] is not None, key


@pytest.mark.slow
def test_quick_run_measures_every_estimator_at_every_grid_value(quick):
    from benchmarks.estimator_bench import registry
    from benchmarks.estimator_bench.tasks import make_tasks

    tasks = make_tasks(quick["settings"]["tasks"])
    ests = registry.estimators()
    for key in ("gumbel_rao", "gst", "indecater", "rloo_matched"):
        assert key in quick["estimators"], key
    for name in quick["settings"]["gradients"]["tasks"]:
        task = tasks[name]
        for point in quick["gradients"][name]["points"].values():
            rows = point["rows"]
            got = sorted((r["estimator"], json.dumps(r["hp"], sort_keys=True)) for r in rows)
            want = sorted(
                (e.key, json.dumps({e.hyper: v} if e.hyper else e.default, sort_keys=True))
                for e in ests
                if e.runs_on(task)
                for v in (e.grid[e.hyper] if e.hyper else [None])
            )
            assert got == want, name
    ok = [r for r in quick["cost"]["rows"] if not r["failed"]]
    assert ok and all(r["median_ms"] > 0 and r["peak_mib"] >= 0 for r in ok)
    costed = {r["estimator"] for r in quick["cost"]["rows"]}
    assert {"gumbel_rao", "gst", "indecater", "rloo_matched"} <= costed


@pytest.mark.slow
def test_quick_run_exact_gradient_has_no_bias(quick):
    """TraceEnum_ELBO against the closed-form / enumerated gradient: equal to float precision."""
    for task, g in quick["gradients"].items():
        for point in g["points"].values():
            (row,) = [r for r in point["rows"] if r["estimator"] == "exact"]
            assert row["failed"] is None
            assert row["rel_bias"] < 1e-4, (task, row["rel_bias"])
            assert row["rel_var"] < 1e-8 and row["cos_mean"] > 0.9999, task
            others = [r for r in point["rows"] if r["estimator"] != "exact" and not r["failed"]]
            assert others and all(r["draws"] if "draws" in r else True for r in others)


NEW_PEERS = ("gumbel_rao", "gst", "indecater", "rloo_matched")
#: Bias of an unbiased estimator's mean, in Monte Carlo floors, beyond which the
#: test fails (see the docstring below).
UNBIASED_FLOORS = 5.0


@pytest.mark.slow
def test_quick_run_new_peers_are_finite_and_the_unbiased_ones_have_no_bias(quick):
    """Every gradient row of the newer peers ran and is finite on every task; on the
    toy, IndeCateR and the matched RLOO (both unbiased) have ``rel_bias`` within
    ``UNBIASED_FLOORS`` = 5 Monte Carlo floors of 0.

    Why 5: for an unbiased estimator, ``rel_bias / mc_floor = |mean - g*| /
    sqrt(tr Var_hat / M)``; with the mean's error approximately normal, the worst case
    (one direction carrying all the variance) makes this ratio a Student t with
    ``M - 1`` degrees of freedom (M = 16 draws in the quick run: 15), and more
    directions only concentrate it near 1. P(|t_15| > 5) = 1.6e-4, so the 4 checks
    (2 estimators x 2 points) fail a correct estimator with probability below 1e-3,
    while a bias of several floors fails them.
    """
    for task, g in quick["gradients"].items():
        for point in g["points"].values():
            rows = [r for r in point["rows"] if r["estimator"] in NEW_PEERS]
            assert {r["estimator"] for r in rows} == set(NEW_PEERS), task
            for r in rows:
                assert r["failed"] is None, (task, r["estimator"], r["failed"])
                for key in ("rel_bias", "mc_floor", "rel_var", "cos_mean", "cos_draw"):
                    assert r[key] is not None and math.isfinite(r[key]), (task, r, key)
    for point in quick["gradients"]["toy"]["points"].values():
        for r in point["rows"]:
            if r["estimator"] in ("indecater", "rloo_matched"):
                assert r["mc_floor"] > 0
                assert r["rel_bias"] < UNBIASED_FLOORS * r["mc_floor"], r


# -- the page ------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _numbers(obj, out):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        if math.isfinite(obj):
            out.append(float(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _numbers(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _numbers(v, out)
    elif isinstance(obj, str):
        # numbers inside strings (labels such as "RLOO (S=4)", settings)
        out.extend(float(m) for m in NUMBER.findall(obj))


def _reading():
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(r"<!-- reading -->(.*?)<!-- /reading -->", text, re.S)
    assert match, "docs/estimators.md has no <!-- reading --> section"
    return match.group(1)


def _page_json():
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(r"Generated by benchmarks/estimators.py from (\S+?);", text)
    assert match, "the page does not name its JSON"
    return ROOT / match.group(1)


needs_page = pytest.mark.skipif(
    not PAGE.exists() or not RESULTS, reason="docs/estimators.md or its results are missing"
)


@needs_page
def test_every_number_in_the_reading_is_in_the_results():
    values = []
    for path in RESULTS:
        _numbers(json.loads(path.read_text()), values)
    rounded = {d: {round(v, d) for v in values} for d in range(0, 7)}
    missing = []
    for token in NUMBER.findall(_reading()):
        x = float(token)
        if "e" in token:
            if not any(math.isclose(x, v, rel_tol=5e-2) for v in values):
                missing.append(token)
            continue
        d = len(token.split(".")[1]) if "." in token else 0
        if round(x, d) not in rounded[min(d, 6)]:
            missing.append(token)
    assert not missing, f"numbers in the reading that no results file contains: {missing}"


@needs_page
def test_reading_summary_is_recomputed_from_raw_results():
    from benchmarks.estimator_bench import report

    results = json.loads(_page_json().read_text())
    assert results["summary"] == json.loads(json.dumps(report.summarize(results)))


@needs_page
def test_page_is_what_the_generator_writes():
    from benchmarks.estimator_bench import report

    path = _page_json()
    results = json.loads(path.read_text())
    img = ROOT / "docs" / "img"
    imgs = {name: img / f"estimators_{name}.png" for name in ("gradients", "cost")}
    for img in imgs.values():
        assert img.is_file(), img
    assert PAGE.read_text(encoding="utf-8") == report.page(results, results["summary"], path, imgs)
