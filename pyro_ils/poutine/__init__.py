"""Messengers: routing discrete sample sites through an estimator
(:class:`~pyro_ils.ILSMessenger`), given draws as plain data, and the draw's weight
(:func:`~pyro_ils.anneal`).

The routing messengers are imported on first use: the distributions read the draw's
weight from :mod:`pyro_ils.poutine.site_weight`, and the routing converts to them.
"""

import importlib

from pyro_ils.poutine.site_weight import AnnealMessenger, anneal

_ROUTING = ("GivenValueMessenger", "ILSMessenger")


def __getattr__(name: str):
    if name in _ROUTING:
        return getattr(importlib.import_module("pyro_ils.poutine.routing"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AnnealMessenger", "GivenValueMessenger", "ILSMessenger", "anneal"]
