"""Routing discrete guide sites through ILS.

:func:`to_ils` turns a Pyro ``Categorical``, ``OneHotCategorical`` or
``Bernoulli`` (also inside ``Independent``, masked and expanded wrappers) into
its ILS counterpart. :class:`ILSMessenger` does so for every eligible sample
site of the program it wraps; the ILS ELBOs wrap the guide with it.

A site is eligible when it is a latent draw that is about to be sampled: not
observed, no value given (``poutine.condition``, replay), not marked for
enumeration, and not opted out with ``infer={"ils": False}``.
``infer={"ils": {"step_size": c, "projection": h, "temperature": t}}`` overrides
the options for one site (``temperature``: the midpoint target's only);
``"exact_differences"`` (a bool) in that dict is read by the default
:class:`~pyro_ils.TraceILS_ELBO` only (see :mod:`pyro_ils.site_choice`).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from .distributions import ILSBernoulli, ILSCategorical, ILSDistributionMixin, ILSOneHotCategorical
from .index_tensor import ILSIndexTensor
from .options import check_options
from .surrogate import _unwrap

__all__ = ["to_ils", "ILSMessenger", "GivenValueMessenger", "site_options"]

_ILS_TYPES = {
    dist.Categorical: ILSCategorical,
    dist.OneHotCategorical: ILSOneHotCategorical,
    dist.Bernoulli: ILSBernoulli,
}
_SITE_KEYS = {"step_size", "projection", "temperature", "exact_differences"}
#: The key under which a guide site chosen for exact differences keeps its options
#: and, once computed, its target (in the site's ``infer`` dict and node); such a
#: site is drawn plainly and left alone by :class:`ILSMessenger`.
DIFF_KEY = "_ils_diff"


def to_ils(fn, step_size=None, projection=None, *, stl: bool = True, temperature=None):
    """The ILS version of the distribution ``fn``, or ``None`` if it has none.

    ``step_size``/``projection``/``temperature`` of ``None`` keep an ILS
    distribution's own options (and give the defaults to a converted one). ``stl``
    selects the "sticking the landing" treatment of the guide's ``log q`` (the
    default; see :mod:`pyro_ils.elbo`).
    """
    options = {"stl": stl, "temperature": temperature}
    if isinstance(fn, dist.Independent):
        base = to_ils(fn.base_dist, step_size, projection, **options)
        return None if base is None else base.to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, MaskedDistribution):
        base = to_ils(fn.base_dist, step_size, projection, **options)
        return None if base is None else base.mask(fn._mask)
    if isinstance(fn, ExpandedDistribution):
        base = to_ils(fn.base_dist, step_size, projection, **options)
        return None if base is None else base.expand(fn.batch_shape)
    if isinstance(fn, ILSDistributionMixin):
        new = fn.with_options(step_size, projection, temperature)
    elif type(fn) in _ILS_TYPES:
        given = {"step_size": step_size, "projection": projection, "temperature": temperature}
        kwargs = {k: v for k, v in given.items() if v is not None}
        # Keep the user's parametrization: sampling from probs and from logits
        # are not bitwise identical.
        if "logits" in fn.__dict__ or "probs" not in fn.__dict__:
            params = {"logits": fn.logits}
        else:
            params = {"probs": fn.probs}
        new = _ILS_TYPES[type(fn)](**params, validate_args=fn._validate_args, **kwargs)
    else:
        return None
    new._stl = stl
    return new


_PLAIN_TYPES = {ils: plain for plain, ils in _ILS_TYPES.items()}


def to_plain(fn):
    """The Pyro distribution that ``fn`` (an ILS distribution, possibly inside
    wrappers) is the ILS version of; ``fn`` itself when it holds none."""
    if isinstance(fn, dist.Independent):
        base = to_plain(fn.base_dist)
        return fn if base is fn.base_dist else base.to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, MaskedDistribution):
        base = to_plain(fn.base_dist)
        return fn if base is fn.base_dist else base.mask(fn._mask)
    if isinstance(fn, ExpandedDistribution):
        base = to_plain(fn.base_dist)
        return fn if base is fn.base_dist else base.expand(fn.batch_shape)
    plain = _PLAIN_TYPES.get(type(fn))
    if plain is None:
        return fn
    if fn._raw_logits is not None or "probs" not in fn.__dict__:
        params = {"logits": fn._surrogate_logits()}
    else:
        params = {"probs": fn.probs}
    return plain(**params, validate_args=fn._validate_args)


def ils_base(fn):
    """The ILS distribution that ``fn`` is or wraps, or ``None``."""
    while fn is not None and not isinstance(fn, ILSDistributionMixin):
        fn = getattr(fn, "base_dist", None)
    return fn


def _wraps_ils(fn) -> bool:
    """Whether ``fn`` is an ILS distribution, possibly inside wrappers."""
    return ils_base(fn) is not None


def has_ils_version(fn) -> bool:
    """Whether ``fn`` (possibly inside wrappers) is an ILS distribution or has one."""
    while not isinstance(fn, ILSDistributionMixin) and type(fn) not in _ILS_TYPES:
        fn = getattr(fn, "base_dist", None)
        if fn is None:
            return False
    return True


def site_options(msg, step_size, projection, check=check_options):
    """``(enabled, step_size, projection)`` for a site, after its ``infer`` options
    (validated by ``check``)."""
    ils = msg["infer"].get("ils", True)
    if ils is False:
        return False, None, None
    if isinstance(ils, dict):
        unknown = set(ils) - _SITE_KEYS
        if unknown:
            raise ValueError(
                f"site {msg['name']!r}: unknown keys {sorted(unknown)} in infer['ils'] "
                f"(allowed: {sorted(_SITE_KEYS)})"
            )
        step_size, projection = check(
            ils.get("step_size", step_size), ils.get("projection", projection)
        )
    elif ils is not True:
        raise ValueError(
            f"site {msg['name']!r}: infer['ils'] must be a bool or a dict, got {ils!r}"
        )
    return True, step_size, projection


def eligible(msg) -> bool:
    return (
        msg["type"] == "sample"
        and not msg["is_observed"]
        and msg["value"] is None
        and not isinstance(msg["fn"], _Subsample)
        and msg["infer"].get("enumerate") is None
    )


def _strip_given_draw(msg) -> None:
    """Make a surrogate draw given to a site (``poutine.condition``, ``replay`` of an
    earlier trace) plain data: its backward belongs to the step that drew it."""
    value = msg["value"]
    if msg["type"] != "sample" or value is None:
        return
    value = _unwrap(value)
    if isinstance(value, ILSIndexTensor):
        msg["value"] = value.as_subclass(torch.Tensor)
    elif isinstance(value, torch.Tensor) and "_draw_token" in value.__dict__:
        msg["value"] = value.detach()


class GivenValueMessenger(Messenger):
    """Treat surrogate draws given to sample sites as plain data (see
    :class:`ILSMessenger`); the ILS ELBOs wrap the model with it."""

    def _pyro_sample(self, msg) -> None:
        _strip_given_draw(msg)


class ILSMessenger(Messenger):
    """Route every eligible discrete sample site through ILS.

    Plain ``Categorical``/``OneHotCategorical``/``Bernoulli`` sites are
    converted with this messenger's options; sites that already hold an ILS
    distribution keep their own options unless their ``infer["ils"]`` dict
    overrides them. A draw from an earlier trace given to a site (by
    ``poutine.condition`` or ``replay`` inside the wrapped program) is turned
    into plain data: its backward belongs to the step that drew it.
    """

    def __init__(self, step_size=None, projection=None, stl: bool = True, temperature=None):
        super().__init__()
        self.step_size = step_size
        self.projection = projection
        self.stl = stl
        self.temperature = temperature

    def _pyro_sample(self, msg) -> None:
        _strip_given_draw(msg)
        if not eligible(msg) or DIFF_KEY in msg["infer"]:
            return
        if msg["infer"].get("ils") is False:
            # Opting out also applies to a site written with an ILS distribution.
            msg["fn"] = to_plain(msg["fn"])
            return
        fn = msg["fn"]
        own = _wraps_ils(fn)
        default_step, default_proj = (None, None) if own else (self.step_size, self.projection)
        enabled, step_size, projection = site_options(msg, default_step, default_proj)
        ils = msg["infer"].get("ils")
        temperature = ils.get("temperature") if isinstance(ils, dict) else None
        if temperature is None and not own:
            temperature = self.temperature
        new = to_ils(fn, step_size, projection, stl=self.stl, temperature=temperature)
        if new is not None:
            msg["fn"] = new

    def _pyro_post_sample(self, msg) -> None:
        value = _unwrap(msg["value"])
        if isinstance(value, ILSIndexTensor):
            value._ils_site = msg["name"]
