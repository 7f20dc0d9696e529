"""The backward of ``x[index]`` to the one-hot of one index tensor, as one contraction.

:func:`_contraction_grad` (through :func:`_canonical_index`) computes the gradient
to the one-hot of the draw at ``index[position]`` with one :func:`torch.einsum` of
the incoming gradient and ``x`` indexed by the *other* index tensors only, never
building the ``out.numel() * K`` tensor of all alternatives. Plain tensors in,
plain tensors out: :mod:`pyro_ils.ops.index_backward` calls it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_ils.ops.softmax import finite

_K_LABEL = 51  # torch.einsum's sublist labels run over 0..51


def _canonical_index(x: Tensor, index: tuple, position: int):
    """Rewrite ``x[index]`` as ``x2[idx2]`` where ``idx2`` holds one entry per
    dimension of ``x2``, each ``slice(None)`` or an index tensor with ``dim() > 0``.

    Integers (and 0-dim index tensors, which PyTorch reads as integers) become
    a selection, ``None`` an ``unsqueeze`` and other slices are applied to
    ``x2``. If ``index[position]`` is a 0-dim tensor, its dimension is instead
    moved last in ``x2``, past the dimensions that ``idx2`` indexes. Returns
    ``(x2, idx2, where)`` with ``where`` mapping a position in ``index`` to its
    position in ``idx2`` (or to ``x2.dim() - 1`` for the held 0-dim index), or
    ``None`` for index forms not handled here.
    """
    if sum(a is Ellipsis for a in index) > 1:
        return None
    consumed = sum(a is not None and a is not Ellipsis for a in index)
    idx2, where, d, held = [], {}, 0, 0
    for p, a in enumerate(index):
        if isinstance(a, Tensor) and a.dim() == 0 and a.dtype != torch.bool:
            if p == position:
                x = x.movedim(d, -1)
                held = 1
            else:
                x = x.index_select(d, a.reshape(1)).squeeze(d)
            continue
        if a is Ellipsis:
            idx2.extend([slice(None)] * (x.dim() - consumed))
            d += x.dim() - consumed
        elif a is None:
            x = x.unsqueeze(d)
            idx2.append(slice(None))
            d += 1
        elif isinstance(a, slice):
            if a != slice(None):
                x = x[(slice(None),) * d + (a,)]
            idx2.append(slice(None))
            d += 1
        elif isinstance(a, int) and not isinstance(a, bool):
            x = x.select(d, a)
        elif isinstance(a, Tensor) and a.dim() > 0 and a.dtype != torch.bool:
            where[p] = len(idx2)
            idx2.append(a)
            d += 1
        else:
            return None
    if d > x.dim() - held:
        return None
    idx2.extend([slice(None)] * (x.dim() - held - d))  # implicit trailing ``:``
    if held:
        where[position] = x.dim() - 1
    return x, tuple(idx2), where


def _contraction_grad(x: Tensor, index: tuple, position: int, num_categories: int, grad_out):
    """Backward of ``x[index]`` to the one-hot of ``index[position]`` as one contraction.

    The gradient is ``g[b, k] = sum grad_out[b, ...] * x[index with k in place of
    the draw]``. Rather than gathering all ``k`` alternatives of every output
    element (``out.numel() * K`` numbers), this moves the draw's dimension of
    ``x`` last, applies only the *other* index tensors to ``x`` and contracts
    with ``grad_out`` in one :func:`torch.einsum`. Index tensors that are an
    ``arange`` along their own broadcast dimension (how
    :class:`~pyro.ops.indexing.Vindex` spells ``:`` and batch dimensions) are
    read as labelled dimensions, not gathered, so ``Vindex(T)[..., z, :]`` costs
    ``O(T.numel() + out.numel() + z.numel() * K)`` memory. Gathering by other
    index tensors is done in chunks of categories so that no intermediate
    exceeds that size either.

    Returns the gradient shaped ``index[position].shape + (K,)``, or ``None``
    where the index form is not handled (the caller falls back).
    """
    canonical = _canonical_index(x, index, position)
    if canonical is None:
        return None
    x2, idx2, where = canonical
    i = where[position]
    adv = [j for j, a in enumerate(idx2) if isinstance(a, Tensor)]
    free = [j for j, a in enumerate(idx2) if not isinstance(a, Tensor)]
    bshape = torch.broadcast_shapes(*(idx2[j].shape for j in adv))
    m = len(bshape)
    if m + x2.dim() >= _K_LABEL:
        return None
    # The output's dimensions (PyTorch follows NumPy: adjacent index tensors put
    # the broadcast dimensions in their place, separated ones put them first).
    blabels = list(range(m))
    if not adv:
        out_labels = [m + j for j in free]
    elif adv == list(range(adv[0], adv[-1] + 1)):
        out_labels = [m + j for j in free if j < adv[0]] + blabels
        out_labels += [m + j for j in free if j > adv[-1]]
    else:
        out_labels = blabels + [m + j for j in free]
    sizes = {t: bshape[t] for t in blabels}
    sizes.update({m + j: x2.shape[j] for j in free})
    if tuple(sizes[t] for t in out_labels) != tuple(grad_out.shape):
        return None

    def nonunit(a):
        return [m - a.dim() + q for q, n in enumerate(a.shape) if n != 1]

    others = [j for j in adv if j != i]
    arange_dims, general = {}, []
    for j in others:
        a, dims = idx2[j], nonunit(idx2[j])
        if (
            len(dims) == 1
            and a.numel() == x2.shape[j]
            and all(dims[0] not in nonunit(idx2[o]) for o in others if o != j)
            and torch.equal(a.reshape(-1), torch.arange(a.numel(), dtype=a.dtype, device=a.device))
        ):
            arange_dims[j] = dims[0]
        else:
            general.append(j)
    xm = x2.permute(general + list(arange_dims) + free + [i]).narrow(-1, 0, num_categories)
    gshape = torch.broadcast_shapes(*(idx2[j].shape for j in general)) if general else ()
    glabels = [m - len(gshape) + q for q, n in enumerate(gshape) if n != 1]
    y_labels = glabels + list(arange_dims.values()) + [m + j for j in free] + [_K_LABEL]
    z = index[position]
    res_labels = nonunit(z) + [_K_LABEL]

    def contract(y):
        if general:
            y = y[tuple(idx2[j] for j in general)]
            y = y.reshape([n for n in gshape if n != 1] + list(y.shape[len(gshape) :]))
        return torch.einsum(grad_out, out_labels, finite(y), y_labels, res_labels)

    if not general:
        grad = contract(xm)
    else:
        per_category = torch.Size(gshape).numel() * xm.shape[len(general) : -1].numel()
        budget = max(grad_out.numel(), x2.numel(), z.numel() * num_categories)
        step = max(1, budget // max(per_category, 1))
        grad = torch.cat(
            [contract(xm[..., k : k + step]) for k in range(0, num_categories, step)], dim=-1
        )
    return grad.reshape(z.shape + (num_categories,))
