"""The one walker over Pyro's distribution wrappers.

A site's distribution may hold the ``Categorical``, ``OneHotCategorical`` or
``Bernoulli`` it draws from inside ``Independent`` (``.to_event``), masked (``.mask``)
and expanded (``.expand``) wrappers. Every part of the package that looks inside them
(routing, the exact-difference plan, the coupled redraw, the multi-evaluation ELBOs)
goes through :func:`wrappers`, :func:`base_of` or :func:`map_base`.
"""

from __future__ import annotations

from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution

__all__ = ["WRAPPERS", "wrappers", "base_of", "map_base"]

#: The wrappers that keep the draw of the distribution they hold.
WRAPPERS = (Independent, MaskedDistribution, ExpandedDistribution)


def wrappers(fn) -> tuple[list, object]:
    """``(outer_to_inner, base)``: the wrappers around ``fn``'s base distribution, from
    the outermost in, and the base itself."""
    chain = []
    while isinstance(fn, WRAPPERS):
        chain.append(fn)
        fn = fn.base_dist
    return chain, fn


def base_of(fn):
    """The distribution inside ``fn``'s ``Independent``, masked and expanded wrappers."""
    return wrappers(fn)[1]


def map_base(fn, convert):
    """``convert`` applied to the distribution inside ``fn``'s wrappers, with the
    wrappers rebuilt around its result; ``None`` where ``convert`` gives ``None``,
    ``fn`` itself where it gives the base unchanged."""
    chain, base = wrappers(fn)
    new = convert(base)
    if new is None or new is base:
        return None if new is None else fn
    for wrapper in reversed(chain):
        if isinstance(wrapper, Independent):
            new = new.to_event(wrapper.reinterpreted_batch_ndims)
        elif isinstance(wrapper, MaskedDistribution):
            new = new.mask(wrapper._mask)
        else:
            new = new.expand(wrapper.batch_shape)
    return new
