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
