"""Validation of the ILS options shared by every entry point."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch

from pyro_ils.ops.projections import LIMIT_TARGETS, SECOND_ORDER_TARGETS, TARGETS

__all__ = [
    "DEFAULT_STEP_SIZE",
    "DEFAULT_PROJECTION",
    "GUIDE_LOG_PROB_MODES",
    "check_options",
    "check_positive",
    "check_count",
    "check_ils_temperature",
]

#: The default target, the second-order (midpoint) one.
DEFAULT_PROJECTION = "midpoint"
#: Default step size ``c`` of the default target: ``0``, its small-step limit (which
#: is ReinMax's estimator at temperature 1). See :func:`default_step_size` for the
#: other targets.
DEFAULT_STEP_SIZE = 0.0
#: How the ILS ELBOs treat the guide's ``log q(z)`` term at ILS sites.
GUIDE_LOG_PROB_MODES = ("full", "stl", "analytic")


def check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    """``value`` as a finite float, ``> 0`` (or ``>= 0`` with ``allow_zero``), else
    ``ValueError`` naming ``name``. One-element tensors are accepted."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    what = "a non-negative" if allow_zero else "a positive"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be {what} finite number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{name} must be {what} finite number, got {value!r}")
    return number


def check_count(name: str, value: Any) -> int:
    """``value`` as an int ``>= 0``, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


def check_step_size(step_size, allow_zero: bool = False) -> float:
    """Return ``step_size`` as a float, or raise ``ValueError`` naming it. With
    ``allow_zero``, ``0`` (the small-step limit) is accepted too."""
    return check_positive("step_size", step_size, allow_zero)


def check_projection(projection) -> str:
    """Return ``projection`` if it is a known map name, else raise ``ValueError``."""
    if projection not in TARGETS:
        raise ValueError(f"projection must be one of {TARGETS}, got {projection!r}")
    return projection


def default_step_size(projection: str) -> float:
    """The step a target gets when none is given: ``0`` (the small-step limit) for
    the second-order targets, ``1.0`` (the proposal's) for every other target."""
    return DEFAULT_STEP_SIZE if projection in SECOND_ORDER_TARGETS else 1.0


def check_options(step_size, projection) -> tuple[float, str]:
    """Validate both ILS options at once; ``None`` gives the default (the default
    target, and :func:`default_step_size` of the target). ``step_size=0`` is the
    small-step limit, defined for the targets in
    :data:`~pyro_ils.ops.projections.LIMIT_TARGETS` only."""
    projection = check_projection(DEFAULT_PROJECTION if projection is None else projection)
    if step_size is None:
        return default_step_size(projection), projection
    step_size = check_step_size(step_size, allow_zero=True)
    if step_size == 0 and projection not in LIMIT_TARGETS:
        raise ValueError(
            f"step_size=0 (the small-step limit) needs projection in {LIMIT_TARGETS}, "
            f"got {projection!r}"
        )
    return step_size, projection


def check_ils_temperature(temperature, projection: str) -> float:
    """The second-order targets' ``temperature`` as a positive finite float
    (``None``: 1.0); any other target takes only 1.0. Raises ``ValueError`` otherwise."""
    temperature = 1.0 if temperature is None else check_positive("temperature", temperature)
    if temperature != 1.0 and projection not in SECOND_ORDER_TARGETS:
        raise ValueError(
            f"temperature applies to projection in {SECOND_ORDER_TARGETS} only, got "
            f"temperature={temperature!r} with projection={projection!r}"
        )
    return temperature


def check_guide_log_prob(mode) -> str:
    if mode not in GUIDE_LOG_PROB_MODES:
        raise ValueError(f"guide_log_prob must be one of {GUIDE_LOG_PROB_MODES}, got {mode!r}")
    return mode
