"""Validation of the ILS options shared by every entry point."""

from __future__ import annotations

import math
from numbers import Real

import torch

from .projections import TARGETS

__all__ = ["DEFAULT_STEP_SIZE", "DEFAULT_PROJECTION", "GUIDE_LOG_PROB_MODES", "check_options"]

#: Default step size ``c`` of the ILS target ``h(z - c * g)``.
DEFAULT_STEP_SIZE = 1.0
#: Default map back onto the simplex.
DEFAULT_PROJECTION = "euclidean"
#: How the ILS ELBOs treat the guide's ``log q(z)`` term at ILS sites.
GUIDE_LOG_PROB_MODES = ("full", "stl", "analytic")


def check_step_size(step_size) -> float:
    """Return ``step_size`` as a float, or raise ``ValueError`` naming it."""
    if isinstance(step_size, torch.Tensor):
        if step_size.numel() != 1:
            raise ValueError(
                f"step_size must be a scalar, got a tensor of shape {tuple(step_size.shape)}"
            )
        step_size = step_size.item()
    if isinstance(step_size, bool) or not isinstance(step_size, Real):
        raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
    step_size = float(step_size)
    if not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
    return step_size


def check_projection(projection) -> str:
    """Return ``projection`` if it is a known map name, else raise ``ValueError``."""
    if projection not in TARGETS:
        raise ValueError(f"projection must be one of {TARGETS}, got {projection!r}")
    return projection


def check_options(step_size, projection) -> tuple[float, str]:
    """Validate both ILS options at once."""
    return check_step_size(step_size), check_projection(projection)


def check_guide_log_prob(mode) -> str:
    if mode not in GUIDE_LOG_PROB_MODES:
        raise ValueError(f"guide_log_prob must be one of {GUIDE_LOG_PROB_MODES}, got {mode!r}")
    return mode
