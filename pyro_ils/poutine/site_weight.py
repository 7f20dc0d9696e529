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
``poutine.scale`` counts: a loss scaled as a whole (a mean instead of a sum, a
hand-written ``N / B`` minibatch factor) leaves the target unchanged.

KL annealing is the exception: a factor ``beta`` that scales only the latent
sites (model prior and guide) is not the weight of the draw's data point, since
the likelihood that depends on the draw is not scaled. Apply it with
:func:`anneal` instead of ``poutine.scale``: the ELBO terms are scaled the same,
and the ILS weight ignores it, so ``g`` keeps the likelihood's signal at full
strength and carries ``beta`` on the prior and entropy terms, as it should.

Known limit: the weight is read from the handlers on Pyro's stack, so a
``poutine.scale`` outside a ``poutine.block`` that hides the site still counts.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
from pyro.poutine.mask_messenger import MaskMessenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.scale_messenger import ScaleMessenger
from pyro.poutine.subsample_messenger import SubsampleMessenger

__all__ = ["current_site_weight", "particle_weight", "event_dims", "anneal", "AnnealMessenger"]

_PARTICLE_WEIGHT: ContextVar[float] = ContextVar("pyro_ils_particle_weight", default=1.0)
_EVENT_DIMS: ContextVar[int] = ContextVar("pyro_ils_event_dims", default=0)


@contextlib.contextmanager
def _event_dims_context(n: int):
    token = _EVENT_DIMS.set(_EVENT_DIMS.get() + n)
    try:
        yield
    finally:
        _EVENT_DIMS.reset(token)


def event_dims(n: int | None = None):
    """With ``n``: a context in which draws are made under ``n`` more reinterpreted
    batch dims (``.to_event(n)``). Without: the number of such dims now."""
    if n is None:
        return _EVENT_DIMS.get()
    return _event_dims_context(n)


@contextlib.contextmanager
def particle_weight(weight: float):
    """Declare that each draw made inside is weighted by ``weight`` in the loss
    (the ILS ELBOs use ``1 / num_particles``)."""
    token = _PARTICLE_WEIGHT.set(float(weight))
    try:
        yield
    finally:
        _PARTICLE_WEIGHT.reset(token)


class AnnealMessenger(ScaleMessenger):
    """``poutine.scale`` for an annealing factor: scales the sites inside it, and is
    not counted in the ILS weight of their draws (see the module docstring)."""


def anneal(beta):
    """Scale the enclosed sites by ``beta`` (KL annealing) without changing ILS targets.

    Use it around the latent sites of the model and the guide, as one would use
    ``poutine.scale(scale=beta)``::

        with pyro.plate("data", N), pyro_ils.anneal(beta):
            z = pyro.sample("z", dist.Categorical(logits=logits))
    """
    return AnnealMessenger(scale=beta)


def current_site_weight(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Product of the scales, subsampling factors and masks of the active handlers.

    Returns a tensor broadcastable against the site's batch shape (0-dim when
    no tensor-valued scale or mask is active).
    """
    weight = torch.tensor(_PARTICLE_WEIGHT.get(), dtype=dtype, device=device)
    for messenger in _PYRO_STACK:
        if isinstance(messenger, AnnealMessenger):
            continue
        if isinstance(messenger, ScaleMessenger):
            weight = weight * torch.as_tensor(messenger.scale, dtype=dtype, device=device)
        elif isinstance(messenger, SubsampleMessenger):
            if messenger.subsample_size != messenger.size:
                weight = weight * (messenger.size / messenger.subsample_size)
        elif isinstance(messenger, MaskMessenger):
            weight = weight * torch.as_tensor(messenger.mask, device=device).to(dtype)
    return weight
