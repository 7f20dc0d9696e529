r"""The first-step probe of an ILS ELBO's default: which sites keep the per-site choice
of :mod:`pyro_ils.infer.site_choice` from applying.

``TraceGraphILS_ELBO()`` leaves it to the guide's sites that are not
reparameterizable and not routed (they keep the score function);
``TraceEnumILS_ELBO()`` to sites marked for enumeration in the model or the guide. The
probe of the latter runs the guide as :class:`~pyro.infer.TraceEnum_ELBO` does: under
parallel enumeration from ``-1 - max_plate_nesting``, in the first of the traces that
sequential enumeration runs (for each sequentially enumerated site, the value that
Pyro's queue takes first), so that a model or guide that checks its enumerated shapes
(as Pyro's own tests do) sees the shapes it would see in training. Where
``max_plate_nesting`` is not given, it is guessed first, as ``TraceEnum_ELBO`` does, by
running the model and the guide once without enumeration (and left on the ELBO).
"""

from __future__ import annotations

import queue
import warnings

from pyro import poutine
from pyro.infer.enum import iter_discrete_escape, iter_discrete_extend
from pyro.infer.util import is_validation_enabled
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.util import get_rng_state, set_rng_state

from pyro_ils.poutine.routing import GivenValueMessenger, ILSMessenger

__all__ = ["blocking_sites", "latent_sites", "probe", "warn_if_nothing_enumerated"]


def latent_sites(trace):
    """``(name, site)`` of the trace's latent sample sites (subsample sites left out)."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            if not isinstance(site["fn"], _Subsample):
                yield name, site


def blocking_sites(blocker: str, model_trace, guide_trace) -> list[str]:
    """The sites that keep the default from applying to an ELBO: guide sites left to
    the score function (``"score_function"``) or sites marked for enumeration in the
    model or the guide (``"enumeration"``). ``model_trace=None`` looks at the guide
    only."""
    if blocker == "score_function":
        return [n for n, s in latent_sites(guide_trace) if not s["fn"].has_rsample]
    return [
        n
        for t in (guide_trace, model_trace)
        if t is not None
        for n, s in latent_sites(t)
        if s["infer"].get("enumerate")
    ]


def _enumerated(owner, model, guide, args, kwargs):
    """``model`` and ``guide`` under enumeration as ``TraceEnum_ELBO`` runs them (the
    guide's first sequential trace)."""
    if owner.max_plate_nesting == float("inf"):
        owner._guess_max_plate_nesting(model, guide, args, kwargs)
    guide = EnumMessenger(first_available_dim=-1 - owner.max_plate_nesting)(guide)
    model = EnumMessenger()(model)  # after the guide's enumerated dims
    pending = queue.LifoQueue()
    pending.put(poutine.Trace())
    guide = poutine.queue(
        guide, pending, escape_fn=iter_discrete_escape, extend_fn=iter_discrete_extend
    )
    return model, guide


def probe(owner, blocker: str, model, guide, args, kwargs) -> tuple[list[str], object]:
    """The blocking sites (:func:`blocking_sites`) of ``owner`` (the ILS ELBO) and a
    trace of the guide with its sites routed. The model is traced against the guide
    only where the guide alone does not decide (enumeration marked in the model), and
    where ``max_plate_nesting`` has to be guessed (which runs both). Pyro's random state
    (torch's CPU generator, Python's and NumPy's) is restored afterwards, so that on the
    CPU the first step draws what it would have drawn without the probe."""
    state = get_rng_state()
    try:
        with poutine.block():
            if blocker == "enumeration":
                model, guide = _enumerated(owner, model, guide, args, kwargs)
            guide_trace = poutine.trace(ILSMessenger(stl=True)(guide)).get_trace(*args, **kwargs)
            blocking = blocking_sites(blocker, None, guide_trace)
            if not blocking and blocker == "enumeration":
                model = poutine.replay(GivenValueMessenger()(model), trace=guide_trace)
                model_trace = poutine.trace(model).get_trace(*args, **kwargs)
                blocking = blocking_sites(blocker, model_trace, guide_trace)
    finally:
        set_rng_state(state)
    return blocking, guide_trace


def warn_if_nothing_enumerated(owner) -> None:
    """``TraceEnum_ELBO``'s warning (under validation, with
    ``strict_enumeration_warning``) for a trace where no site is marked for
    enumeration, which the default ran for ``owner``."""
    if is_validation_enabled() and getattr(owner, "strict_enumeration_warning", False):
        # The message starts as Pyro's does, so that a filter set for it applies.
        warnings.warn(
            "TraceEnum_ELBO found no sample sites configured for enumeration "
            f"({type(owner).__name__}: mark them with @config_enumerate or "
            "infer={'enumerate': 'parallel'} or 'sequential'; without any, it trains as "
            "TraceILS_ELBO() does).",
            stacklevel=2,
        )
