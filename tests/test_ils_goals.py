"""docs/improving_ils.md is what benchmarks/ils_goals.py computes from the benchmark's
result file: no number on it is typed by hand, and it cannot drift from the JSON."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_improving_ils_page_matches_the_results():
    proc = subprocess.run(
        [sys.executable, "benchmarks/ils_goals.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_best_exact_draw_leaves_out_the_relaxed_forward_estimators():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import ils_goals

    finals = {
        "gumbel_kl": [0.0, 0.1, 0.2],  # best overall, but its forward is relaxed
        "ils_mirror": [-0.2, -0.1, -0.3],
        "st": [-0.5, -0.4, -0.6],
        "reinmax": [-0.9, -0.8, -1.0],
    }
    labels = {k: k.upper() for k in finals}
    line = ils_goals._best_exact_draw(finals, labels)
    assert "all here but GUMBEL_KL)" in line
    assert "the best at this budget is ILS_MIRROR (-0.2), then ST (-0.5)" in line
    assert "difference is 0.3 ± " in line and "more than two standard errors" in line
    assert ils_goals._best_exact_draw({"gumbel_kl": [0.0], "st": [0.1]}, labels) == ""
