"""The zoo-gradients suite: a quick run through the CLI writes a result file that the
page renders, with the declared goal's verdicts and every estimator on its own row."""

from __future__ import annotations

import json

from benchmarks.cli import main as cli
from benchmarks.zoo import gradients


def test_quick_run_and_page(tmp_path):
    out = tmp_path / "g.json"
    cli(
        [
            "run",
            "zoo-gradients",
            "--quick",
            "--models",
            "quickstart",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert result["quick"] and result["commit"] and set(result["models"]) == {"quickstart"}
    points = result["models"]["quickstart"]
    assert list(points) == ["initial", "trained"]
    assert points["initial"]["reference"] == "exact" and points["trained"]["steps"] == 2
    names = [r["name"] for r in points["initial"]["records"]]
    assert set(gradients.VARIANTS) <= set(names) and gradients.DEFAULT in names
    page = gradients.render(result)
    assert "| quickstart | initial |" in page and "| ReinMax(0.5) |" in page
    verdict = gradients.goal(points["initial"])
    assert verdict["met"] == (verdict["default"] >= verdict["peer"])
