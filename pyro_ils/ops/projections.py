"""Maps from a stepped one-hot back onto the probability simplex.

Each map ``h`` used by ILS leaves the vertices of the simplex fixed,
``h(onehot) == onehot``, so a zero downstream gradient gives the target
``pi_D == z``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_ils.ops.softmax import softmax, softmax_vjp

__all__ = [
    "project_simplex",
    "PROJECTIONS",
    "MEAN_START_TARGETS",
    "SECOND_ORDER_TARGETS",
    "TARGETS",
    "LIMIT_TARGETS",
    "midpoint_limit",
]

#: The maps of the original method, whose step starts at the drawn vertex ``z``.
PROJECTIONS = ("euclidean", "normalize", "reference")
#: Targets stepped from the current distribution ``pi`` with the entropic
#: (mirror-descent) map instead; see :func:`intermediate_target`.
MEAN_START_TARGETS = ("mirror", "mirror_rms")
#: The second-order targets: entropic steps from the midpoint of ``pi`` and ``z``
#: and from ``pi``, combined as ReinMax combines its two Jacobians; ``"midpoint_scaled"``
#: divides the difference ``pi - pi_D`` by the step.
SECOND_ORDER_TARGETS = ("midpoint", "midpoint_scaled")
#: Names accepted by the ``projection`` option.
TARGETS = PROJECTIONS + MEAN_START_TARGETS + SECOND_ORDER_TARGETS
#: Targets whose small-step limit ``step_size=0`` is defined: ``(pi - pi_D) / c`` as
#: ``c -> 0``, entered as the "target" ``pi_D = pi - lim (pi - pi_D) / c``.
LIMIT_TARGETS = ("mirror", "midpoint", "midpoint_scaled")


#: Rows are first projected from their top ``_TOP_M`` entries; see ``_project_simplex``.
_TOP_M = 8


def _threshold(u: Tensor) -> tuple[Tensor, Tensor]:
    """For rows ``u`` sorted in decreasing order (``-inf`` = excluded), the
    threshold ``tau`` and whether the last entry of ``u`` is still in the support.

    ``rho = max{j : u_j - (sum_{i<=j} u_i - 1) / j > 0}`` and
    ``tau = (sum_{i<=rho} u_i - 1) / rho`` (Held et al. 1974; Duchi et al. 2008).
    """
    ranks = torch.arange(1, u.size(-1) + 1, device=u.device, dtype=u.dtype)
    present = u > -torch.inf
    u = u.masked_fill(~present, 0.0)
    css = u.cumsum(-1)
    cond = (u * ranks > css - 1) & present
    # The condition holds exactly for ranks 1..rho (the first always holds).
    rho = (cond * ranks).amax(-1, keepdim=True).clamp(min=1)
    tau = (css.gather(-1, rho.long() - 1) - 1) / rho
    return tau, cond[..., -1]


def _project_simplex(v: Tensor, allowed: Tensor | None = None) -> Tensor:
    """Exact Euclidean projection of the rows of ``v``; entries outside
    ``allowed`` (``None``: all allowed) are held at zero.

    The projection is ``max(v - tau, 0)``. ``tau`` depends only on the entries
    in the support, which for ILS targets is small: it is computed from the
    ``_TOP_M`` largest entries (``topk``), and only rows whose support may be
    larger than that are sorted in full. The result is the same as a full sort.
    """
    if allowed is not None:
        v = v.masked_fill(~allowed, -torch.inf)
    num = v.size(-1)
    if num <= 2 * _TOP_M:
        tau, _ = _threshold(torch.sort(v, dim=-1, descending=True).values)
    else:
        tau, maybe_more = _threshold(torch.topk(v, _TOP_M, dim=-1).values)
        if maybe_more.any():
            rows = maybe_more.reshape(-1).nonzero().squeeze(-1)
            flat = v.reshape(-1, num)[rows]
            full_tau, _ = _threshold(torch.sort(flat, dim=-1, descending=True).values)
            tau = tau.reshape(-1, 1).index_copy(0, rows, full_tau).reshape(tau.shape)
    return (v - tau).clamp(min=0)


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
        allowed = v > -torch.inf
        # The projection is invariant to adding a constant to a row; removing
        # the row maximum keeps float32 accurate for large entries.
        v = v - v.amax(-1, keepdim=True)
        return _project_simplex(v, None if bool(allowed.all()) else allowed)


def _normalize_map(z: Tensor, g: Tensor, step_size: float, support: Tensor | None) -> Tensor:
    """The original proposal's map: ``new = z - c (g - g[k])``, ``pi_D = new / sum(new)``.

    Rows whose sum is not positive (the step pushed the total mass through
    zero) have no normalized target; they fall back to the Euclidean
    projection of ``new``, which is the nearest distribution.
    """
    g_k = (g * z).sum(-1, keepdim=True)
    new = z - step_size * (g - g_k)
    if support is not None:
        new = new.masked_fill(~support, 0.0)
    total = new.sum(-1, keepdim=True)
    ok = total > 0
    target = new / torch.where(ok, total, torch.ones_like(total))
    if not ok.all():
        num = new.size(-1)
        rows = (~ok).reshape(-1).nonzero().squeeze(-1)
        allowed = None if support is None else support.reshape(-1, num)[rows]
        fallback = _project_simplex(new.reshape(-1, num)[rows], allowed)
        target = target.reshape(-1, num).index_copy(0, rows, fallback).reshape(target.shape)
    return target


def _euclidean_map(z: Tensor, g: Tensor, step_size: float, support: Tensor | None) -> Tensor:
    return _project_simplex(z - step_size * g, support)


def _mirror_target(logits: Tensor, g: Tensor, step_size: float, rms: bool) -> Tensor:
    if step_size == 0:
        pi = softmax(logits)
        return pi - softmax_vjp(pi, g)
    if rms:
        # The spread of g under pi, root-mean-square over all draws of the site:
        # dividing by it makes the target invariant to the scale of the loss.
        pi = softmax(logits)
        centered = g - (pi * g).sum(-1, keepdim=True)
        spread = (pi * centered.square()).sum(-1).mean().sqrt()
        if not bool(spread > 0):
            return pi
        g = g / spread
    return softmax(logits - step_size * g)


def _midpoint_target(
    z: Tensor,
    logits: Tensor,
    g: Tensor,
    step_size: float,
    temperature: float = 1.0,
    scaled: bool = False,
) -> Tensor:
    # h(p) = p * exp(-c g) / <p, exp(-c g)>, stepped from p1 = (pi_tau + z) / 2 and from pi.
    pi = softmax(logits)
    p1 = 0.5 * ((pi if temperature == 1.0 else softmax(logits / temperature)) + z)
    if step_size == 0:
        # The limit: ReinMax's 2 J(p1)^T g - J(pi)^T g / 2, J(p)^T g = p (g - <p, g>).
        return pi - 2.0 * softmax_vjp(p1, g) + 0.5 * softmax_vjp(pi, g)
    stepped_mid = softmax(p1.log() - step_size * g)
    stepped_pi = _mirror_target(logits, g, step_size, rms=False)
    # pi - pi_D = 2 (p1 - h(p1)) - (pi - h(pi)) / 2, divided by c where scaled.
    difference = 2.0 * (p1 - stepped_mid) - 0.5 * (pi - stepped_pi)
    return pi - (difference / step_size if scaled else difference)


def midpoint_limit(z: Tensor, logits: Tensor, g: Tensor, temperature: float = 1.0) -> Tensor:
    r"""``pi - pi_D`` of the second-order targets at ``c = 0`` (ReinMax's backward), in
    closed form for a vertex ``z`` (a one-hot draw).

    The limit is :math:`2 J(p_1)^\top g - \tfrac12 J(\pi)^\top g` with
    :math:`J(p)^\top g = p \odot (g - \langle p, g \rangle)` and
    :math:`p_1 = (q + z) / 2`, :math:`q = \mathrm{softmax}(\mathrm{logits} / \tau)`
    (``_midpoint_target`` computes it so). With :math:`a = \langle \pi, g \rangle`,
    :math:`a_q = \langle q, g \rangle` and :math:`b = \langle z, g \rangle = g_k`,
    :math:`2 J(p_1)^\top g = (q + z) \odot (g - (a_q + b) / 2)`, and
    :math:`z \odot (g - s) = z\, (b - s)` for a vertex, so

    .. math:: \pi - \pi_D = q \odot \bigl(g - \tfrac{a_q + b}{2}\bigr)
              - \tfrac12\, \pi \odot (g - a) + \tfrac12\, z\, (b - a_q),

    which at :math:`\tau = 1` (:math:`q = \pi`) is
    :math:`\tfrac12 \bigl(\pi \odot (g - b) + z\, (b - a)\bigr)`: the same values to
    rounding, in a third of the passes over the ``(..., K)`` tensors.
    """
    pi = softmax(logits)
    b = (g * z).sum(-1, keepdim=True)
    a = (pi * g).sum(-1, keepdim=True)
    if temperature == 1.0:
        return torch.addcmul(z * (0.5 * (b - a)), pi, g - b, value=0.5)
    q = softmax(logits / temperature)
    a_q = (q * g).sum(-1, keepdim=True)
    first = torch.addcmul(z * (0.5 * (b - a_q)), q, g - 0.5 * (a_q + b))
    return torch.addcmul(first, pi, g - a, value=-0.5)


def intermediate_target(
    z: Tensor,
    g: Tensor,
    step_size: float,
    projection: str,
    support: Tensor | None = None,
    logits: Tensor | None = None,
    temperature: float = 1.0,
) -> Tensor:
    r"""The ILS target ``pi_D``, zero outside ``support`` (``None``: every category allowed).

    The original method's maps step from the drawn vertex, ``pi_D = h(z - c g)``:
    ``"euclidean"`` (exact projection) and ``"normalize"`` (the proposal's map;
    ``"reference"`` uses it too and differs only in the gradient returned).

    The mean-start targets step from ``pi = softmax(logits)`` with the entropic
    (mirror-descent) map, so that the zero-mean, loss-independent part
    ``pi - z`` of the original backward is absent:

    * ``"mirror"``: :math:`\pi_D \propto \pi \odot e^{-c g}`; for small ``c``,
      :math:`\pi - \pi_D \approx c\, \pi \odot (g - \langle \pi, g \rangle)`, the
      straight-through gradient; larger ``c`` adds higher-order terms.
    * ``"mirror_rms"``: the same with ``g`` divided by its spread under ``pi``,
      :math:`s = (\mathrm{mean}_{\mathrm{draws}} \langle \pi, (g - \langle \pi, g
      \rangle)^2 \rangle)^{1/2}`, over all draws of the site: the target no longer
      depends on the scale of the loss (sum or mean, any constant factor).

    The second-order target combines two entropic steps as ReinMax (Liu et al.
    2023) combines its two softmax Jacobians, with :math:`h(p) \propto p \odot
    e^{-c g}` and the midpoint :math:`p_1 = (\pi + z) / 2`:

    * ``"midpoint"``: :math:`\pi - \pi_D = 2\,(p_1 - h(p_1)) - \tfrac12 (\pi -
      h(\pi))`. Since :math:`p - h(p) = c\, p \odot (g - \langle p, g \rangle) +
      O(c^2)`, for small ``c`` this is ``c`` times ReinMax's backward at temperature
      1; larger ``c`` adds higher-order terms in ``g``. ``pi_D`` sums to one but may
      have negative entries.
    * ``"midpoint_scaled"``: the same difference divided by ``c``, so that it stays of
      the size of a gradient as ``c`` grows: for small ``c`` it is ReinMax's backward
      (the same limit at ``c = 0``), and for large ``c`` the steps saturate, each
      entry bounded by about :math:`2.5 / c` (a soft clip of the large incoming
      gradients).

    ``temperature`` :math:`\tau` (the two second-order targets only) moves the midpoint to
    :math:`p_1 = (\mathrm{softmax}(\theta / \tau) + z) / 2`, as ReinMax's
    temperature does: the small-step limit is then ReinMax's backward at
    temperature :math:`\tau`. For :math:`\tau \ne 1` the limit is biased even for
    a loss linear in ``z``; a larger :math:`\tau` moves :math:`p_1` towards the
    middle of the simplex and trades that bias for less variance.
    """
    if projection in SECOND_ORDER_TARGETS:
        if logits is None:
            raise ValueError(f"projection={projection!r} needs the logits")
        scaled = projection == "midpoint_scaled"
        return _midpoint_target(z, logits, g, step_size, temperature, scaled)
    if projection in MEAN_START_TARGETS:
        if logits is None:
            raise ValueError(f"projection={projection!r} needs the logits")
        return _mirror_target(logits, g, step_size, rms=projection == "mirror_rms")
    if projection == "euclidean":
        return _euclidean_map(z, g, step_size, support)
    return _normalize_map(z, g, step_size, support)
