"""Maps from a stepped one-hot back onto the probability simplex.

Each map ``h`` used by ILS leaves the vertices of the simplex fixed,
``h(onehot) == onehot``, so a zero downstream gradient gives the target
``pi_D == z``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["project_simplex", "PROJECTIONS"]

#: Names accepted by the ``projection`` option.
PROJECTIONS = ("euclidean", "normalize", "reference")


def _project_simplex(v: Tensor) -> Tensor:
    """Sort-based Euclidean projection; ``-inf`` entries are held at zero.

    For each row, the projection is ``max(v - tau, 0)`` where ``tau`` is the
    unique threshold making the result sum to one. With ``u`` the entries
    sorted in decreasing order, ``rho = max{j : u_j - (sum_{i<=j} u_i - 1) / j > 0}``
    and ``tau = (sum_{i<=rho} u_i - 1) / rho`` (Held et al. 1974; Duchi et al. 2008).
    """
    finite = v > -torch.inf
    u, _ = torch.sort(v, dim=-1, descending=True)
    u_finite = u > -torch.inf
    u = torch.where(u_finite, u, torch.zeros_like(u))
    css = u.cumsum(-1)
    ranks = torch.arange(1, v.size(-1) + 1, device=v.device, dtype=v.dtype)
    cond = (u * ranks > css - 1) & u_finite
    # rho is the largest rank satisfying the condition (the first one always does).
    rho = (cond * ranks).amax(-1, keepdim=True).clamp(min=1)
    tau = (css.gather(-1, rho.long() - 1) - 1) / rho
    out = (v - tau).clamp(min=0)
    return torch.where(finite, out, torch.zeros_like(out))


def project_simplex(v: Tensor) -> Tensor:
    r"""Exact Euclidean projection of the last dimension of ``v`` onto the simplex.

    .. math::

        \operatorname{proj}_\Delta(v) = \arg\min_{p \in \Delta^{K-1}} \|p - v\|_2^2,
        \qquad \Delta^{K-1} = \{p \in \mathbb{R}^K : p_i \ge 0,\ \textstyle\sum_i p_i = 1\}.

    The solution is ``max(v - tau, 0)`` for a scalar threshold ``tau`` per row,
    found by sorting (``O(K log K)``). Entries equal to ``-inf`` are treated as
    excluded categories and receive zero mass. The result is not differentiable
    (it is used as a fixed target).

    :param torch.Tensor v: a floating tensor of shape ``batch_shape + (K,)``,
        any dtype and device.
    :returns: a tensor of the same shape, dtype and device as ``v`` whose last
        dimension lies on the probability simplex.
    :raises TypeError: if ``v`` is not a floating tensor.
    :raises ValueError: if ``v`` is 0-dimensional, has an empty last dimension,
        contains NaN or ``+inf``, or has a row whose entries are all ``-inf``.
    """
    if not isinstance(v, Tensor) or not v.is_floating_point():
        raise TypeError(f"project_simplex expects a floating-point tensor, got {type(v)}")
    if v.dim() == 0 or v.size(-1) == 0:
        raise ValueError(
            f"project_simplex needs a non-empty last dimension, got shape {tuple(v.shape)}"
        )
    if torch.isnan(v).any() or (v == torch.inf).any():
        raise ValueError("project_simplex got NaN or +inf entries")
    if (v == -torch.inf).all(-1).any():
        raise ValueError("project_simplex got a row whose entries are all -inf")
    with torch.no_grad():
        return _project_simplex(v)


def _normalize_map(z: Tensor, g: Tensor, step_size: float, support: Tensor) -> Tensor:
    """The original proposal's map: ``new = z - c (g - g[k])``, ``pi_D = new / sum(new)``.

    Rows whose sum is not positive (the step pushed the total mass through
    zero) have no normalized target; they fall back to the Euclidean
    projection of ``new``, which is the nearest distribution.
    """
    g_k = (g * z).sum(-1, keepdim=True)
    new = torch.where(support, z - step_size * (g - g_k), torch.zeros_like(z))
    total = new.sum(-1, keepdim=True)
    ok = total > 0
    normalized = new / torch.where(ok, total, torch.ones_like(total))
    fallback = _project_simplex(torch.where(support, new, torch.full_like(new, -torch.inf)))
    return torch.where(ok, normalized, fallback)


def _euclidean_map(z: Tensor, g: Tensor, step_size: float, support: Tensor) -> Tensor:
    stepped = z - step_size * g
    return _project_simplex(torch.where(support, stepped, torch.full_like(stepped, -torch.inf)))


def intermediate_target(
    z: Tensor, g: Tensor, step_size: float, projection: str, support: Tensor
) -> Tensor:
    """The ILS target ``pi_D = h(z - step_size * g)`` restricted to ``support``.

    ``"reference"`` uses the normalize map (it differs from ``"normalize"`` only
    in the gradient returned from the target).
    """
    if projection == "euclidean":
        return _euclidean_map(z, g, step_size, support)
    return _normalize_map(z, g, step_size, support)
