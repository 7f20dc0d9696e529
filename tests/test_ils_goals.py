"""docs/improving_ils.md is what benchmarks/ils_goals.py computes from the benchmark's
result file: no number on it is typed by hand, and it cannot drift from the JSON."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_improving_ils_page_matches_the_results():
    proc = subprocess.run(
        [sys.executable, "benchmarks/ils_goals.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
