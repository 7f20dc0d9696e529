"""The machine and versions record shared by the benchmarks: the CPU (and GPU), the load
average, the versions, the git state of the code measured, and its one-line summary.

Used by the SVI step-time benchmark (:mod:`benchmarks.step_time`), the estimator
benchmark (:mod:`benchmarks.estimator_bench.common`) and the zoo
(:mod:`benchmarks.zoo.record`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

import pyro
import torch

import pyro_ils

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _git(*argv: str) -> str:
    return subprocess.run(
        ["git", *argv], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_state() -> dict:
    """The commit checked out, whether the tracked files are clean, and a short
    revision string (``-dirty`` plus the hash of the package diff when they are not)."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return {"git_revision": None, "git_commit": None, "git_clean": None}
    rev = commit[:7]
    if dirty:
        # Identify the uncommitted package code that was measured.
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", "pyro_ils"], cwd=REPO, capture_output=True
        ).stdout
        rev += "-dirty"
        if diff:
            rev += f", pyro_ils diff sha1 {hashlib.sha1(diff).hexdigest()[:10]}"
    return {"git_revision": rev, "git_commit": commit, "git_clean": not dirty}


def environment(args, device: torch.device) -> dict:
    env = {
        "device": str(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyro_ils": pyro_ils.__version__,
        **git_state(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "pyro_validation": pyro.infer.util.is_validation_enabled(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def machine_line(env: dict) -> str:
    where = env["cpu_model"]
    if env.get("gpu"):
        where = f"{env['gpu']} (CUDA {env['cuda']}), host CPU {where}"
    return (
        f"{where}; device `{env['device']}`; `torch.set_num_threads({env['torch_num_threads']})` "
        f"({env['cpu_count']} logical CPUs visible); Python {env['python']}, "
        f"torch {env['torch']}, pyro-ppl {env['pyro']}, pyro-ils {env['pyro_ils']}"
        + (f" (git `{env['git_revision']}`)" if env.get("git_revision") else "")
        + f"; Pyro validation {'on' if env['pyro_validation'] else 'off'}."
    )
