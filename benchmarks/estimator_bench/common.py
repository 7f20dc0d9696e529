"""Shared helpers: environment record, seeding, JSON-safe numbers, statistics."""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
import time
from pathlib import Path

import pyro
import torch

# The machine/versions record of the existing benchmarks (one implementation).
from benchmarks.environment import _loadavg, environment, machine_line

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
RESULTS = BENCH / "results"
DOCS = REPO / "docs"
IMG = DOCS / "img"


def run_environment(device: torch.device) -> dict:
    env = environment(None, device)
    env["started"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    env["loadavg_start"] = _loadavg()
    return env


def finish_environment(env: dict) -> dict:
    env["loadavg_end"] = _loadavg()
    return env


def write_results(results: dict, out: Path, script: str, argv, started: float, env: dict, quick):
    """Stamp a supplementary run's results with its duration (since ``started``,
    a ``time.perf_counter()``), the machine and the command line, and write them."""
    results.update(
        seconds=time.perf_counter() - started,
        quick=quick,
        environment=finish_environment(env),
        command=f"python {script} " + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out} ({results['seconds']:.0f} s)")


def seed_all(seed: int) -> None:
    pyro.set_rng_seed(seed)


def finite(x):
    """A JSON-safe float (NaN and inf become None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def mean_sd(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


__all__ = [
    "BENCH",
    "DOCS",
    "IMG",
    "REPO",
    "RESULTS",
    "finish_environment",
    "finite",
    "machine_line",
    "mean_sd",
    "rel",
    "run_environment",
    "seed_all",
]
