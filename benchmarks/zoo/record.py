"""What every zoo result file records: the clean commit it ran at, the command, the
seeds and the machine."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path

import pyro
import torch

import pyro_ils
from benchmarks.environment import cpu_model

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results" / "zoo"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit(allow_dirty: bool) -> dict:
    """``{"commit": sha, "dirty": bool}``; raises ``SystemExit`` on a dirty tree
    unless ``allow_dirty`` (the result is then marked dirty)."""
    try:
        sha = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        sha, dirty = None, True
    if dirty and not allow_dirty:
        raise SystemExit(
            "the working tree has uncommitted changes: commit them, or pass --allow-dirty "
            "to write a result marked dirty"
        )
    return {"commit": sha, "dirty": dirty}


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyro_ils": pyro_ils.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def header(allow_dirty: bool, seeds: dict, module: str = "benchmarks run zoo", argv=None) -> dict:
    """The record's head; ``command`` is ``python -m MODULE ARGV`` (default: the
    command line's arguments)."""
    argv = sys.argv[1:] if argv is None else argv
    return {
        **commit(allow_dirty),
        "command": " ".join([f"python -m {module}", *argv]),
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seeds": seeds,
        "machine": machine(),
    }
