"""The weight that the loss puts on the sample site being drawn.

A Pyro ELBO multiplies a site's log-probability terms by the site's scale
(``poutine.scale``, plate subsampling ``N / B``), by its mask, and by
``1 / num_particles``. The downstream gradient ``g = dL/dz`` arriving at an ILS
draw carries that weight ``w``. ILS divides it out before taking the step,
``pi_D = h(z - c * g / w)``, so that the target means the same thing whether or
not the user subsamples, and multiplies the returned gradient by ``w`` so that
the site is weighted like every other term of the loss:

.. math:: \\nabla_{\\text{logits}} = w \\, (\\pi - h(z - c\\, g / w)).

The weight is read from the Pyro handlers active when the draw is made.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
from pyro.poutine.mask_messenger import MaskMessenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.scale_messenger import ScaleMessenger
from pyro.poutine.subsample_messenger import SubsampleMessenger

__all__ = ["current_site_weight", "particle_weight"]

_PARTICLE_WEIGHT: ContextVar[float] = ContextVar("pyro_ils_particle_weight", default=1.0)


@contextlib.contextmanager
def particle_weight(weight: float):
    """Declare that each draw made inside is weighted by ``weight`` in the loss
    (the ILS ELBOs use ``1 / num_particles``)."""
    token = _PARTICLE_WEIGHT.set(float(weight))
    try:
        yield
    finally:
        _PARTICLE_WEIGHT.reset(token)


def current_site_weight(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Product of the scales, subsampling factors and masks of the active handlers.

    Returns a tensor broadcastable against the site's batch shape (0-dim when
    no tensor-valued scale or mask is active).
    """
    weight = torch.tensor(_PARTICLE_WEIGHT.get(), dtype=dtype, device=device)
    for messenger in _PYRO_STACK:
        if isinstance(messenger, ScaleMessenger):
            weight = weight * torch.as_tensor(messenger.scale, dtype=dtype, device=device)
        elif isinstance(messenger, SubsampleMessenger):
            if messenger.subsample_size != messenger.size:
                weight = weight * (messenger.size / messenger.subsample_size)
        elif isinstance(messenger, MaskMessenger):
            weight = weight * torch.as_tensor(messenger.mask, device=device).to(dtype)
    return weight
