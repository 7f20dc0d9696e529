"""What an example ran with (versions, machine, device), for its result JSON.

The example scripts import it as ``from run_info import run_info``: Python puts a
script's own folder on ``sys.path``.
"""

from __future__ import annotations

import platform

import pyro
import torch

import pyro_ils


def run_info(device: torch.device) -> dict:
    """``{"versions": ..., "machine": ..., "device": ...}`` of this run."""
    return {
        "versions": {
            "torch": torch.__version__,
            "pyro": pyro.__version__,
            "pyro_ils": pyro_ils.__version__,
            "python": platform.python_version(),
        },
        "machine": platform.machine() + " " + platform.processor(),
        "device": str(device),
    }
