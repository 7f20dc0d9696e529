"""Routing discrete guide sites through ILS.

:func:`to_ils` turns a Pyro ``Categorical``, ``OneHotCategorical`` or
``Bernoulli`` (also inside ``Independent``, masked and expanded wrappers) into
its ILS counterpart. :class:`ILSMessenger` does so for every eligible sample
site of the program it wraps; the ILS ELBOs wrap the guide with it.

A site is eligible when it is a latent draw that is about to be sampled: not
observed, no value given (``poutine.condition``, replay), not marked for
enumeration, and not opted out with ``infer={"ils": False}``.
``infer={"ils": estimator}`` (an object of :mod:`pyro_ils.estimators`) routes one
site through that estimator, whatever the messenger's own.
``infer={"ils": {"step_size": c, "projection": h, "temperature": t}}`` overrides
the ILS options for one site (``temperature``: the midpoint target's only);
``"exact_differences"`` (a bool) in that dict is read by the default
:class:`~pyro_ils.TraceILS_ELBO` only (see :mod:`pyro_ils.infer.site_choice`).

:func:`map_base` is the one walker over Pyro's ``Independent``, masked and expanded
wrappers: every conversion here goes through it.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from pyro_ils.distributions import (
    ILSBernoulli,
    ILSCategorical,
    ILSDistributionMixin,
    ILSOneHotCategorical,
    SurrogateBernoulli,
    SurrogateCategorical,
    SurrogateDistributionMixin,
    SurrogateOneHotCategorical,
)
from pyro_ils.distributions.surrogate import unwrap_provenance
from pyro_ils.distributions.util import base_of, map_base
from pyro_ils.estimators import ILS, DefaultILS, Estimator
from pyro_ils.ops.index_tensor import ILSIndexTensor
from pyro_ils.options import check_options

__all__ = [
    "to_ils",
    "to_surrogate",
    "to_plain",
    "map_base",
    "base_of",
    "ILSMessenger",
    "GivenValueMessenger",
    "site_options",
]


_ILS_TYPES = {
    dist.Categorical: ILSCategorical,
    dist.OneHotCategorical: ILSOneHotCategorical,
    dist.Bernoulli: ILSBernoulli,
}
#: The distribution of each Pyro type that carries an estimator other than ILS.
_SURROGATE_TYPES = {
    dist.Categorical: SurrogateCategorical,
    dist.OneHotCategorical: SurrogateOneHotCategorical,
    dist.Bernoulli: SurrogateBernoulli,
}
_SITE_KEYS = {"step_size", "projection", "temperature", "exact_differences"}
#: The key under which a guide site chosen for exact differences keeps its options
#: and, once computed, its target (in the site's ``infer`` dict and node); such a
#: site is drawn plainly and left alone by :class:`ILSMessenger`.
DIFF_KEY = "_ils_diff"


def _params(fn) -> dict:
    """``fn``'s parameter as the user gave it: sampling from probs and from logits are
    not bitwise identical."""
    if "logits" in fn.__dict__ or "probs" not in fn.__dict__:
        return {"logits": fn.logits}
    return {"probs": fn.probs}


def to_ils(fn, step_size=None, projection=None, *, stl: bool = True, temperature=None):
    """The ILS version of the distribution ``fn``, or ``None`` if it has none.

    ``step_size``/``projection``/``temperature`` of ``None`` keep an ILS
    distribution's own options (and give the defaults to a converted one). ``stl``
    selects the "sticking the landing" treatment of the guide's ``log q`` (the
    default; see :mod:`pyro_ils.infer.ils_elbo`).
    """

    def convert(fn):
        if isinstance(fn, ILSDistributionMixin):
            new = fn.with_options(step_size, projection, temperature)
        elif type(fn) in _ILS_TYPES:
            given = {"step_size": step_size, "projection": projection, "temperature": temperature}
            kwargs = {k: v for k, v in given.items() if v is not None}
            new = _ILS_TYPES[type(fn)](**_params(fn), validate_args=fn._validate_args, **kwargs)
        else:
            return None
        new._stl = stl
        return new

    return map_base(fn, convert)


def to_surrogate(fn, estimator: Estimator | None = None, *, stl: bool = True):
    """``fn`` (possibly inside wrappers) with draws that carry ``estimator``'s backward,
    or ``None`` where it has no such version (not a ``Categorical``,
    ``OneHotCategorical`` or ``Bernoulli``).

    ``estimator=None`` keeps a surrogate distribution's own estimator and gives a plain
    one ILS's default options. :class:`~pyro_ils.estimators.ILS` gives the ILS classes;
    :class:`~pyro_ils.estimators.DefaultILS` (where no per-site choice applies) the
    midpoint limit at its temperature; any other estimator the ``Surrogate*`` classes.
    ``stl`` is as for :func:`to_ils`.
    """
    foreign = surrogate_base(fn) is not None and ils_base(fn) is None
    if estimator is None:
        if not foreign:
            return to_ils(fn, stl=stl)
        estimator = surrogate_base(fn).estimator
    if isinstance(estimator, DefaultILS):
        estimator = ILS._checked(0.0, "midpoint", estimator.temperature)
    if isinstance(estimator, ILS):
        fn = to_plain(fn) if foreign else fn
        options = estimator.step_size, estimator.projection
        return to_ils(fn, *options, stl=stl, temperature=estimator.temperature)

    def convert(base):
        if isinstance(base, SurrogateDistributionMixin):
            base = _plain(base)
        if type(base) not in _SURROGATE_TYPES:
            return None
        new = _SURROGATE_TYPES[type(base)](
            **_params(base), validate_args=base._validate_args, estimator=estimator
        )
        new._stl = stl
        return new

    return map_base(fn, convert)


def _plain(fn):
    """The Pyro distribution a surrogate distribution ``fn`` (no wrappers) is a version of."""
    plain = next(
        t for t in (dist.OneHotCategorical, dist.Categorical, dist.Bernoulli) if isinstance(fn, t)
    )
    if fn._raw_logits is not None or "probs" not in fn.__dict__:
        params = {"logits": fn._surrogate_logits()}
    else:
        params = {"probs": fn.probs}
    return plain(**params, validate_args=fn._validate_args)


def to_plain(fn):
    """The Pyro distribution that ``fn`` (a surrogate distribution, possibly inside
    wrappers) is a version of; ``fn`` itself when it holds none."""
    new = map_base(fn, lambda b: _plain(b) if isinstance(b, SurrogateDistributionMixin) else b)
    return fn if new is None else new


def ils_base(fn):
    """The ILS distribution that ``fn`` is or wraps, or ``None``."""
    base = base_of(fn)
    return base if isinstance(base, ILSDistributionMixin) else None


def surrogate_base(fn):
    """The surrogate distribution (any estimator) that ``fn`` is or wraps, or ``None``."""
    base = base_of(fn)
    return base if isinstance(base, SurrogateDistributionMixin) else None


def _wraps_ils(fn) -> bool:
    """Whether ``fn`` is an ILS distribution, possibly inside wrappers."""
    return ils_base(fn) is not None


def has_ils_version(fn) -> bool:
    """Whether ``fn`` (possibly inside wrappers) is an ILS distribution or has one."""
    base = base_of(fn)
    return isinstance(base, ILSDistributionMixin) or type(base) in _ILS_TYPES


def site_estimator(msg) -> Estimator | None:
    """The estimator object a site names in ``infer={"ils": ...}``, or ``None``."""
    ils = msg["infer"].get("ils")
    return ils if isinstance(ils, Estimator) else None


def named_estimator(infer: dict) -> Estimator | None:
    """The estimator a site's ``infer`` names in place of the default's per-site rule:
    any estimator object but :class:`~pyro_ils.estimators.DefaultILS` (which names the
    rule itself), or ``None``."""
    ils = infer.get("ils")
    return ils if isinstance(ils, Estimator) and not isinstance(ils, DefaultILS) else None


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
    elif ils is not True and not isinstance(ils, Estimator):
        raise ValueError(
            f"site {msg['name']!r}: infer['ils'] must be a bool, a dict or an estimator "
            f"of pyro_ils.estimators, got {ils!r}"
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
    value = unwrap_provenance(value)
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
    """Route every eligible discrete sample site through an estimator (ILS by default).

    Plain ``Categorical``/``OneHotCategorical``/``Bernoulli`` sites are
    converted with this messenger's ``estimator``, or with its ILS options where it
    has none; sites that already hold a surrogate distribution (ILS, straight-through,
    ReinMax, ...) keep their own estimator unless their ``infer["ils"]`` overrides
    it: an estimator object there routes the site through that estimator, a dict
    sets ILS options. A draw from an earlier trace given to a site (by
    ``poutine.condition`` or ``replay`` inside the wrapped program) is turned
    into plain data: its backward belongs to the step that drew it.

    :param step_size: ILS step for converted sites (``None``: the default).
    :param projection: ILS target for converted sites (``None``: the default).
    :param bool stl: the "sticking the landing" treatment of ``log q`` at routed sites.
    :param temperature: the midpoint target's temperature for converted sites.
    :param Estimator estimator: the estimator for converted sites (instead of the
        three ILS options).
    """

    def __init__(
        self,
        step_size=None,
        projection=None,
        stl: bool = True,
        temperature=None,
        *,
        estimator: Estimator | None = None,
    ):
        super().__init__()
        self.step_size = step_size
        self.projection = projection
        self.stl = stl
        self.temperature = temperature
        self.estimator = estimator

    def _pyro_sample(self, msg) -> None:
        _strip_given_draw(msg)
        if not eligible(msg) or DIFF_KEY in msg["infer"]:
            return
        if msg["infer"].get("ils") is False:
            # Opting out also applies to a site written with an ILS distribution.
            msg["fn"] = to_plain(msg["fn"])
            return
        fn = msg["fn"]
        chosen = site_estimator(msg)
        ils = msg["infer"].get("ils")
        if chosen is None and self.estimator is not None and not isinstance(ils, dict):
            chosen = None if surrogate_base(fn) is not None else self.estimator
        if chosen is not None or (surrogate_base(fn) is not None and ils_base(fn) is None):
            new = to_surrogate(fn, chosen, stl=self.stl)
            if new is not None:
                msg["fn"] = new
            return
        own = _wraps_ils(fn)
        default_step, default_proj = (None, None) if own else (self.step_size, self.projection)
        enabled, step_size, projection = site_options(msg, default_step, default_proj)
        temperature = ils.get("temperature") if isinstance(ils, dict) else None
        if temperature is None and not own:
            temperature = self.temperature
        new = to_ils(fn, step_size, projection, stl=self.stl, temperature=temperature)
        if new is not None:
            msg["fn"] = new

    def _pyro_post_sample(self, msg) -> None:
        value = unwrap_provenance(msg["value"])
        if isinstance(value, ILSIndexTensor):
            value._ils_site = msg["name"]
