"""The integer draw of ILSCategorical: exact integer results forward, and the
gradient of an explicit one-hot contraction backward, for each indexing op."""

import copy
import io
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.ops.indexing import Vindex
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pyro_ils import ILSCategorical, ILSIndexTensor, report_dropped_gradients

K = 5


def _draw(batch_shape=(7,), dtype=torch.float64, device="cpu"):
    pyro.set_rng_seed(0)
    logits = torch.randn(batch_shape + (K,), dtype=dtype, device=device, requires_grad=True)
    z = ILSCategorical(logits=logits).rsample()
    return z


def _fresh(z):
    """A copy of the draw whose one-hot is a fresh leaf, and that leaf."""
    oh = z.onehot.detach().clone().requires_grad_()
    return ILSIndexTensor(z.as_subclass(torch.Tensor), oh), oh


def _check(z, with_index, with_onehot):
    """with_index(z) must equal with_onehot(onehot) exactly forward and in d/d onehot."""
    z1, oh1 = _fresh(z)
    out = with_index(z1)
    z2, oh2 = _fresh(z)
    plain = with_index(z2.as_subclass(torch.Tensor))
    ref = with_onehot(oh2)
    assert type(out) is torch.Tensor
    assert torch.equal(out, plain), "forward must be the exact integer-indexing result"
    assert torch.allclose(out, ref)
    weights = torch.randn_like(ref)
    (g_idx,) = torch.autograd.grad((out * weights).sum(), oh1)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), oh2)
    torch.testing.assert_close(g_idx, g_ref)
    assert g_idx.abs().sum() > 0


def test_draw_is_int64_and_equals_sample():
    logits = torch.randn(4, K, requires_grad=True)
    pyro.set_rng_seed(3)
    z = ILSCategorical(logits=logits).rsample()
    pyro.set_rng_seed(3)
    k = ILSCategorical(logits=logits).sample()
    assert isinstance(z, ILSIndexTensor) and z.dtype == torch.int64
    assert torch.equal(z, k)
    assert torch.equal(z.onehot.argmax(-1), k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensor_getitem(dtype):
    z = _draw(dtype=dtype)
    locs = torch.randn(K, 3, dtype=dtype)
    _check(z, lambda z: locs[z], lambda oh: oh @ locs)


def test_getitem_second_dim_and_ellipsis():
    z = _draw()
    table = torch.randn(2, K, 3, dtype=torch.float64)
    _check(z, lambda z: table[:, z], lambda oh: torch.einsum("nk,akd->and", oh, table))
    _check(z, lambda z: table[..., z, :], lambda oh: torch.einsum("nk,akd->and", oh, table))


def test_getitem_next_to_other_index_tensor():
    z = _draw((6,))
    x = torch.randn(6, K, dtype=torch.float64)
    rows = torch.arange(6)
    _check(z, lambda z: x[rows, z], lambda oh: (oh * x).sum(-1))


def test_vindex():
    z = _draw((4, 3))
    x = torch.randn(4, 3, K, 2, dtype=torch.float64)
    _check(z, lambda z: Vindex(x)[..., z, :], lambda oh: torch.einsum("abk,abkd->abd", oh, x))


def test_vindex_broadcasting_batch():
    z = _draw((3,))
    x = torch.randn(2, 3, K, dtype=torch.float64)
    _check(z, lambda z: Vindex(x)[..., z], lambda oh: (oh * x).sum(-1))


def test_gather():
    z = _draw((6,))
    x = torch.randn(6, K, dtype=torch.float64)
    _check(
        z,
        lambda z: torch.gather(x, -1, z.unsqueeze(-1)).squeeze(-1),
        lambda oh: (oh * x).sum(-1),
    )
    _check(z, lambda z: x.gather(1, z.unsqueeze(-1)).squeeze(-1), lambda oh: (oh * x).sum(-1))


def test_index_select():
    z = _draw((6,))
    x = torch.randn(3, K, dtype=torch.float64)
    _check(z, lambda z: torch.index_select(x, 1, z), lambda oh: x @ oh.T)
    _check(z, lambda z: x.T.index_select(0, z), lambda oh: oh @ x.T)


def test_embedding():
    z = _draw((2, 3))
    weight = torch.randn(K, 4, dtype=torch.float64)
    _check(z, lambda z: F.embedding(z, weight), lambda oh: oh @ weight)
    emb = torch.nn.Embedding(K, 4).double()
    _check(z, lambda z: emb(z), lambda oh: oh @ emb.weight)


def test_one_hot():
    z = _draw((6,))
    w = torch.randn(K, 2, dtype=torch.float64)
    _check(z, lambda z: F.one_hot(z, K).double() @ w, lambda oh: oh @ w)
    _check(z, lambda z: F.one_hot(z, K).to(torch.float64) @ w, lambda oh: oh @ w)
    _check(z, lambda z: F.one_hot(z, K + 2)[..., :K] * w[:, 0], lambda oh: oh * w[:, 0])


def test_categorical_log_prob():
    z = _draw((6,))
    prior = dist.Categorical(logits=torch.randn(K, dtype=torch.float64))
    _check(z, lambda z: prior.log_prob(z), lambda oh: oh @ prior.logits)
    batched = dist.Categorical(logits=torch.randn(6, K, dtype=torch.float64))
    _check(z, lambda z: batched.log_prob(z), lambda oh: (oh * batched.logits).sum(-1))


def test_gradient_also_reaches_the_indexed_table():
    z = _draw((6,))
    locs = torch.randn(K, 2, dtype=torch.float64, requires_grad=True)
    locs[z].sum().backward()
    counts = torch.bincount(z.as_subclass(torch.Tensor), minlength=K).double()
    torch.testing.assert_close(locs.grad, counts[:, None].expand(K, 2))


def test_shape_ops_keep_the_onehot():
    z = _draw((2, 3))
    for op in [
        lambda z: z.unsqueeze(-1),
        lambda z: z.reshape(6),
        lambda z: z.view(3, 2),
        lambda z: z.expand(4, 2, 3),
        lambda z: z.transpose(0, 1),
        lambda z: z.permute(1, 0),
        lambda z: z[..., :2],
        lambda z: z[1],
        lambda z: z.long(),
        lambda z: torch.broadcast_tensors(z, torch.zeros(5, 2, 3))[0],
        lambda z: torch.cat([z, z], dim=-1),
        lambda z: torch.stack([z, z], dim=0),
    ]:
        out = op(z)
        assert isinstance(out, ILSIndexTensor)
        assert torch.equal(out.onehot.argmax(-1), out.as_subclass(torch.Tensor))


def test_non_indexing_ops_are_plain_and_reported():
    z = _draw((6,))
    with report_dropped_gradients() as report:
        mask = z == 2
        as_float = z.float()
        chosen = torch.where(z > 1, torch.ones(6), torch.zeros(6))
        first = int(z[0])
    assert type(mask) is torch.Tensor and mask.dtype == torch.bool
    assert not as_float.requires_grad and not chosen.requires_grad
    assert isinstance(first, int)
    ops = " ".join(report.operations)
    for name in ("eq", "float", "gt", "__int__"):
        assert name in ops, (name, str(report))
    assert "test_index_tensor.py" in ops


def test_indexing_is_not_reported_as_a_drop():
    z = _draw((6,))
    locs = torch.randn(K, 2)
    with report_dropped_gradients() as report:
        locs[z.unsqueeze(-1)].sum()
        dist.Categorical(logits=torch.zeros(K)).log_prob(z)
    assert not report, str(report)


def test_gradient_drop_warning():
    z = _draw((6,))
    with pytest.warns(UserWarning, match="carries no ILS gradient"):
        with report_dropped_gradients(warn=True):
            z.float()


def test_in_graph_detach_gives_plain_tensor():
    z = _draw((6,))
    assert type(z.detach()) is torch.Tensor


def test_save_pickle_deepcopy_give_plain_integers():
    z = _draw((6,))
    buf = io.BytesIO()
    torch.save({"z": z}, buf)
    buf.seek(0)
    loaded = torch.load(buf)["z"]
    assert type(loaded) is torch.Tensor and torch.equal(loaded, z.as_subclass(torch.Tensor))
    assert type(pickle.loads(pickle.dumps(z))) is torch.Tensor
    assert type(copy.deepcopy(z)) is torch.Tensor


def test_index_out_of_range_categories_raise():
    index = torch.tensor([0, 1, 2, 3])
    onehot = F.one_hot(index, K).double().requires_grad_()
    z = ILSIndexTensor(index, onehot)
    small = torch.randn(K - 1, 2)
    with pytest.raises(IndexError, match="categories"):
        small[z]


def test_no_grad_draw_is_plain():
    logits = torch.randn(3, K, requires_grad=True)
    with torch.no_grad():
        z = ILSCategorical(logits=logits).rsample()
    assert type(z) is torch.Tensor
    z = ILSCategorical(logits=logits.detach()).rsample()
    assert type(z) is torch.Tensor


# ---------------------------------------------------------------------------
# Indexing patterns of x[...] and Vindex: forward exact, gradient of the
# explicit one-hot contraction, and no O(out * K) intermediate in the backward.


def _leaf_draw(shape, num_categories=K, seed=0):
    """An ILS draw of ``shape`` with a fresh one-hot leaf, and that leaf."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(num_categories, shape, generator=gen)
    onehot = F.one_hot(index, num_categories).double().requires_grad_()
    return ILSIndexTensor(index, onehot), onehot


def _check_many(shapes, with_index, with_onehot, seed=0):
    """Like ``_check``, for any number of ILS draws indexing at once."""
    draws = [_leaf_draw(s, seed=seed + i) for i, s in enumerate(shapes)]
    out = with_index(*(z for z, _ in draws))
    plain = with_index(*(z.as_subclass(torch.Tensor) for z, _ in draws))
    refs = [oh.detach().clone().requires_grad_() for _, oh in draws]
    ref = with_onehot(*refs)
    assert type(out) is torch.Tensor
    assert torch.equal(out, plain), "forward must be the exact integer-indexing result"
    torch.testing.assert_close(out, ref)
    weights = torch.randn_like(ref)
    grads = torch.autograd.grad((out * weights).sum(), [oh for _, oh in draws])
    ref_grads = torch.autograd.grad((ref * weights).sum(), refs)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)
        assert g.abs().sum() > 0


def _randn(*shape):
    return torch.randn(shape, dtype=torch.float64)


T_KD = _randn(K, 3)
T_AKD = _randn(2, K, 3)
T_DK = _randn(3, K)
T_NKD = _randn(6, K, 3)
T_M1KD = _randn(4, 1, K, 3)
T_KKD = _randn(K, K, 3)
T_DKK = _randn(3, K, K)
T_AKBD = _randn(2, K, 4, 3)
T_ADBK = _randn(2, 3, 4, K)
ROWS = torch.tensor([0, 1, 1, 0, 1, 0])


@pytest.mark.parametrize(
    "shapes, with_index, with_onehot",
    [
        # Vindex, the draw first / in the middle / last, with Ellipsis and slices.
        ([(6,)], lambda z: Vindex(T_KD)[..., z, :], lambda oh: oh @ T_KD),
        ([(6,)], lambda z: Vindex(T_KD)[z, :], lambda oh: oh @ T_KD),
        ([(6,)], lambda z: Vindex(T_KD)[z], lambda oh: oh @ T_KD),
        (
            [(6,)],
            lambda z: Vindex(T_AKD)[:, z, :],
            lambda oh: torch.einsum("nk,akd->nad", oh, T_AKD),
        ),
        ([(6,)], lambda z: Vindex(T_DK)[..., :, z], lambda oh: oh @ T_DK.T),
        ([(6,)], lambda z: Vindex(T_DK)[:, z], lambda oh: oh @ T_DK.T),
        # Vindex with batch dimensions on the table, broadcasting with the draw.
        (
            [(6,)],
            lambda z: Vindex(T_NKD)[..., z, :],
            lambda oh: torch.einsum("nk,nkd->nd", oh, T_NKD),
        ),
        (
            [(6,)],
            lambda z: Vindex(T_M1KD)[..., z, :],
            lambda oh: torch.einsum("nk,mkd->mnd", oh, T_M1KD[:, 0]),
        ),
        (
            [(2, 1, 6)],
            lambda z: Vindex(T_M1KD)[..., z, :],
            lambda oh: torch.einsum("pnk,mkd->pmnd", oh[:, 0], T_M1KD[:, 0]),
        ),
        (
            [(4, 6)],
            lambda z: Vindex(T_M1KD)[..., z, :],
            lambda oh: torch.einsum("mnk,mkd->mnd", oh, T_M1KD[:, 0]),
        ),
        # Two ILS draws at once.
        (
            [(6,), (6,)],
            lambda z, w: Vindex(T_KKD)[..., z, w, :],
            lambda a, b: torch.einsum("nk,nl,kld->nd", a, b, T_KKD),
        ),
        (
            [(6,), (6,)],
            lambda z, w: Vindex(T_DKK)[..., :, z, w],
            lambda a, b: torch.einsum("nk,nl,dkl->nd", a, b, T_DKK),
        ),
        (
            [(6,), (2, 1)],
            lambda z, w: Vindex(T_KKD)[..., z, w, :],
            lambda a, b: torch.einsum("nk,pl,kld->pnd", a, b[:, 0], T_KKD),
        ),
        (
            [(6,), (6,)],
            lambda z, w: T_KKD[z, :, :][:, w],
            lambda a, b: torch.einsum("nk,ml,kld->nmd", a, b, T_KKD),
        ),
        # Plain indexing: separated index tensors, integers, None, other slices.
        (
            [(6,)],
            lambda z: T_AKBD[:, z, :, :],
            lambda oh: torch.einsum("nk,akbd->anbd", oh, T_AKBD),
        ),
        (
            [(6,)],
            lambda z: T_AKBD[1, z, 2],
            lambda oh: oh @ T_AKBD[1, :, 2],
        ),
        (
            [(6,)],
            lambda z: T_AKBD[..., z, None, 1:3, :],
            lambda oh: torch.einsum("nk,akbd->anbd", oh, T_AKBD[:, :, 1:3]).unsqueeze(2),
        ),
        (
            [(6,)],
            lambda z: T_AKBD[ROWS, z, :, ::2],
            lambda oh: torch.einsum("nk,nkbd->nbd", oh, T_AKBD[ROWS][..., ::2]),
        ),
        (
            [(6,)],
            lambda z: T_AKBD[ROWS, z, torch.tensor([[0], [3]])],
            lambda oh: torch.einsum("nk,nkmd->mnd", oh, T_AKBD[ROWS][:, :, [0, 3]]),
        ),
        (
            [(6,)],
            lambda z: T_AKBD[ROWS, :, torch.tensor([0, 3, 1, 2, 0, 0])][:, z],
            lambda oh: torch.einsum(
                "mk,nkd->nmd", oh, T_AKBD[ROWS, :, torch.tensor([0, 3, 1, 2, 0, 0])]
            ),
        ),
        (
            [(6,)],
            lambda z: T_ADBK[ROWS, :, 2, z],
            lambda oh: torch.einsum("nk,ndk->nd", oh, T_ADBK[ROWS, :, 2]),
        ),
        # 0-dim index tensors (PyTorch reads them as integers), the draw included.
        ([()], lambda z: T_AKD[:, z], lambda oh: torch.einsum("k,akd->ad", oh, T_AKD)),
        (
            [(), (6,)],
            lambda z, w: T_KKD[z, w],
            lambda a, b: torch.einsum("k,nl,kld->nd", a, b, T_KKD),
        ),
        (
            [(6,)],
            lambda z: T_AKBD[torch.tensor(1), z],
            lambda oh: torch.einsum("nk,kbd->nbd", oh, T_AKBD[1]),
        ),
    ],
)
def test_getitem_and_vindex_patterns(shapes, with_index, with_onehot):
    _check_many(shapes, with_index, with_onehot)


class _PeakStorage(TorchDispatchMode):
    """Records the largest storage (in elements) of any tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.peak = 0
        self.largest = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                size = t.untyped_storage().nbytes() // t.element_size()
                if size > self.peak:
                    self.peak, self.largest = size, (str(func), tuple(t.shape))
        return out


NM, KM = 300, 24


@pytest.mark.parametrize(
    "table_shape, shapes, with_index, with_onehot",
    [
        ((KM, KM), [(NM,)], lambda t, z: Vindex(t)[..., z, :], lambda t, a: a @ t),
        ((KM, KM), [(NM,)], lambda t, z: Vindex(t)[..., :, z], lambda t, a: a @ t.T),
        (
            (3, KM, KM),
            [(NM,)],
            lambda t, z: Vindex(t)[..., :, z, :],
            lambda t, a: torch.einsum("nk,akd->nad", a, t),
        ),
        (
            (NM, KM, 8),
            [(NM,)],
            lambda t, z: Vindex(t)[..., z, :],
            lambda t, a: torch.einsum("nk,nkd->nd", a, t),
        ),
        (
            (2, 1, KM, 8),
            [(NM,)],
            lambda t, z: Vindex(t)[..., z, :],
            lambda t, a: torch.einsum("nk,mkd->mnd", a, t[:, 0]),
        ),
        (
            (KM, KM, KM),
            [(NM,), (NM,)],
            lambda t, z, w: Vindex(t)[..., z, w, :],
            lambda t, a, b: torch.einsum("nk,nl,kld->nd", a, b, t),
        ),
        ((KM, KM), [(NM,)], lambda t, z: t[None, z, :], lambda t, a: (a @ t)[None]),
        (
            (NM, KM, 8),
            [(NM,)],
            lambda t, z: t[torch.arange(NM), z, 1:],
            lambda t, a: torch.einsum("nk,nkd->nd", a, t[..., 1:]),
        ),
    ],
)
def test_indexing_backward_has_no_out_times_k_intermediate(
    table_shape, shapes, with_index, with_onehot
):
    # Gathering every category's alternative for every output element would
    # create an intermediate of out.numel() * K >= N * K * K elements; the
    # backward must stay within the sizes of its inputs and outputs.
    table = torch.randn(table_shape, dtype=torch.float64)
    draws = [_leaf_draw(s, num_categories=KM, seed=i) for i, s in enumerate(shapes)]
    out = with_index(table, *(z for z, _ in draws))
    weights = torch.randn_like(out)
    onehots = [oh for _, oh in draws]
    with _PeakStorage() as mode:
        grads = torch.autograd.grad((out * weights).sum(), onehots)
    bound = max(table.numel(), out.numel(), NM * KM)
    assert mode.peak <= bound < NM * KM * KM, (mode.peak, mode.largest, bound)
    # ... and the gradient is still the explicit one-hot contraction's.
    refs = [oh.detach().clone().requires_grad_() for oh in onehots]
    ref = with_onehot(table, *refs)
    torch.testing.assert_close(out, ref)
    expected = torch.autograd.grad((ref * weights).sum(), refs)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)


# ---------------------------------------------------------------------------
# Shape operations that rearrange the draw keep its one-hot, rearranged alike.


@pytest.mark.parametrize(
    "batch_shape, op, op_onehot",
    [
        ((2, 3), lambda z: z.T, lambda oh: oh.transpose(0, 1)),
        ((2, 3), lambda z: z.H, lambda oh: oh.transpose(0, 1)),
        ((2, 3), lambda z: z.t(), lambda oh: oh.transpose(0, 1)),
        ((2, 3), lambda z: torch.t(z), lambda oh: oh.transpose(0, 1)),
        ((2, 3, 4), lambda z: z.mT, lambda oh: oh.transpose(1, 2)),
        ((2, 3, 4), lambda z: z.mH, lambda oh: oh.transpose(1, 2)),
        ((2, 3, 4), lambda z: z.movedim(0, -1), lambda oh: oh.movedim(0, 2)),
        (
            (2, 3, 4),
            lambda z: torch.movedim(z, (0, 1), (2, 0)),
            lambda oh: oh.movedim((0, 1), (2, 0)),
        ),
        ((2, 3, 4), lambda z: z.moveaxis(-1, 0), lambda oh: oh.movedim(2, 0)),
        ((2, 3, 4), lambda z: torch.moveaxis(z, 1, 2), lambda oh: oh.movedim(1, 2)),
        ((2, 3, 4), lambda z: z.flip(0, -1), lambda oh: oh.flip(0, 2)),
        ((2, 3, 4), lambda z: torch.flip(z, [1]), lambda oh: oh.flip(1)),
        ((2, 3), lambda z: z.fliplr(), lambda oh: oh.flip(1)),
        ((2, 3), lambda z: torch.flipud(z), lambda oh: oh.flip(0)),
        ((2, 3, 4), lambda z: z.narrow(1, 1, 2), lambda oh: oh.narrow(1, 1, 2)),
        ((2, 3, 4), lambda z: torch.narrow(z, -1, 0, 3), lambda oh: oh.narrow(2, 0, 3)),
        ((2, 3, 4), lambda z: z.select(1, 2), lambda oh: oh.select(1, 2)),
        ((2, 3, 4), lambda z: torch.select(z, -1, 0), lambda oh: oh.select(2, 0)),
        ((2, 3, 4), lambda z: z.transpose(0, -1), lambda oh: oh.transpose(0, 2)),
        ((2, 3, 4), lambda z: z.swapaxes(0, 1), lambda oh: oh.transpose(0, 1)),
        ((2, 3, 4), lambda z: torch.swapaxes(z, -1, -2), lambda oh: oh.transpose(1, 2)),
        ((2, 3, 4), lambda z: z.swapdims(2, 0), lambda oh: oh.transpose(2, 0)),
        ((2, 3, 4), lambda z: z.unsqueeze(1).squeeze(1), lambda oh: oh),
        ((2, 1, 4), lambda z: z.squeeze(), lambda oh: oh.squeeze(1)),
        ((2, 1, 4), lambda z: torch.squeeze(z, -2), lambda oh: oh.squeeze(1)),
        ((2, 3, 4), lambda z: z.flatten(), lambda oh: oh.reshape(-1, K)),
        ((2, 3, 4), lambda z: torch.flatten(z, 1), lambda oh: oh.reshape(2, 12, K)),
        ((2, 3, 4), lambda z: z.unbind(1)[2], lambda oh: oh[:, 2]),
        ((2, 3, 4), lambda z: torch.unbind(z, -1)[1], lambda oh: oh[:, :, 1]),
        ((2, 3, 4), lambda z: z.split(3, dim=-1)[1], lambda oh: oh[:, :, 3:]),
        ((2, 3, 4), lambda z: torch.chunk(z, 2, 0)[1], lambda oh: oh[1:]),
    ],
)
def test_rearranging_ops_keep_the_onehot(batch_shape, op, op_onehot):
    z = _draw(batch_shape)
    out = op(z)
    assert isinstance(out, ILSIndexTensor)
    assert out.onehot.shape == out.shape + (K,)
    assert torch.equal(out.onehot.argmax(-1), out.as_subclass(torch.Tensor))
    assert torch.equal(out.onehot, op_onehot(z.onehot))
    locs = torch.randn(K, 2, dtype=torch.float64)
    _check(z, lambda z: locs[op(z)], lambda oh: op_onehot(oh) @ locs)
    with report_dropped_gradients() as report:
        op(z)
    assert not report, str(report)


def test_rearranging_a_broadcast_draw():
    # The one-hot of an expanded draw is kept compact; narrowing or selecting
    # along a broadcast dimension must still give the right one-hot.
    z = _draw((3,)).expand(4, 3)
    for out in (z.narrow(0, 1, 2), z.select(0, 3), z.T, z.flip(0), z.movedim(0, 1)):
        assert isinstance(out, ILSIndexTensor)
        assert torch.equal(out.onehot.argmax(-1), out.as_subclass(torch.Tensor))


# ---------------------------------------------------------------------------
# In-place operations on a draw are refused: they would leave the one-hot stale.


def _iadd(z):
    z += 1


def _setitem(z):
    z[0] = 2


def _set_data(z):
    z.data = torch.zeros_like(z.as_subclass(torch.Tensor))


@pytest.mark.parametrize(
    "mutate, name",
    [
        (_iadd, "add_"),
        (lambda z: z.add_(1), "add_"),
        (_setitem, "__setitem__"),
        (lambda z: z.copy_(torch.zeros(6, dtype=torch.long)), "copy_"),
        (lambda z: z.clamp_(0, 1), "clamp_"),
        (lambda z: z.zero_(), "zero_"),
        (lambda z: z.fill_(1), "fill_"),
        (lambda z: z.masked_fill_(torch.ones(6, dtype=torch.bool), 0), "masked_fill_"),
        (lambda z: z.scatter_(0, torch.tensor([0]), torch.tensor([1])), "scatter_"),
        (lambda z: z.unsqueeze_(0), "unsqueeze_"),
        (lambda z: torch.add(z, 1, out=z), "add"),
        (lambda z: torch.clamp_(z, max=1), "clamp_"),
        (_set_data, "setting .data"),
        (lambda z: z[:3].sub_(1), "sub_"),
        (lambda z: z.unsqueeze(0).T.mul_(2), "mul_"),
    ],
)
def test_in_place_ops_on_a_draw_raise(mutate, name):
    z = _draw((6,))
    before = z.as_subclass(torch.Tensor).clone()
    with pytest.raises(RuntimeError, match=r"in place.*z\.detach\(\)\.clone\(\)") as info:
        mutate(z)
    assert str(info.value).startswith(name)
    assert torch.equal(z.as_subclass(torch.Tensor), before), "the draw must be left unchanged"
    assert torch.equal(z.onehot.argmax(-1), before)


def test_in_place_on_one_hot_result_raises():
    z = _draw((6,))
    h = F.one_hot(z, K)
    with pytest.raises(RuntimeError, match="in place"):
        h[0, 0] = 1


def test_in_place_on_a_plain_copy_is_fine():
    z = _draw((6,))
    before = z.as_subclass(torch.Tensor).clone()
    copy_ = z.detach().clone()
    copy_ += 1
    copy_[0] = 0
    assert type(copy_) is torch.Tensor
    assert torch.equal(z.as_subclass(torch.Tensor), before)
    # Reading the draw into a plain tensor in place is a read, not a write.
    buf = torch.zeros(6, dtype=torch.long)
    buf.add_(z)
    assert torch.equal(buf, before)
