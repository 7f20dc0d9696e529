"""Validation of the ILS options shared by every entry point."""

from __future__ import annotations

import math
from numbers import Real

import torch

from .projections import LIMIT_TARGETS, SECOND_ORDER_TARGETS, TARGETS

__all__ = [
    "DEFAULT_STEP_SIZE",
    "DEFAULT_PROJECTION",
    "GUIDE_LOG_PROB_MODES",
    "check_options",
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


def check_step_size(step_size, allow_zero: bool = False) -> float:
    """Return ``step_size`` as a float, or raise ``ValueError`` naming it. With
    ``allow_zero``, ``0`` (the small-step limit) is accepted too."""
    if isinstance(step_size, torch.Tensor):
        if step_size.numel() != 1:
            raise ValueError(
                f"step_size must be a scalar, got a tensor of shape {tuple(step_size.shape)}"
            )
        step_size = step_size.item()
    if isinstance(step_size, bool) or not isinstance(step_size, Real):
        raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
    step_size = float(step_size)
    if allow_zero and step_size == 0:
        return 0.0
    if not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
    return step_size


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
    :data:`~pyro_ils.projections.LIMIT_TARGETS` only."""
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
    from .estimators._surrogate_estimator import check_temperature

    temperature = 1.0 if temperature is None else check_temperature(temperature)
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
