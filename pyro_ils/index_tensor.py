"""The integer draw that is differentiable through indexing: moved to
``pyro_ils.ops.index_tensor``, whose names this module re-exports for the
imports that name this module."""

from .ops.index_tensor import ILSIndexTensor, ILSOneHotTensor, carries_ils_path
from .ops.index_tensor import link_gradient as link_gradient

__all__ = ["ILSIndexTensor", "ILSOneHotTensor", "carries_ils_path"]
