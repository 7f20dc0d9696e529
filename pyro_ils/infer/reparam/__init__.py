"""Reparameterizers for ``poutine.reparam``: :class:`~pyro_ils.ILSReparam`."""

from pyro_ils.infer.reparam.ils import ILSReparam

__all__ = ["ILSReparam"]
