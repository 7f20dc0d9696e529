"""``report_dropped_gradients``: which uses of an ILS integer draw are reported
as dropping its gradient, and which are not."""

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI
from pyro.ops.indexing import Vindex
from pyro.optim import Adam

from pyro_ils import ILSCategorical, ILSIndexTensor, TraceILS_ELBO, report_dropped_gradients

K = 4


def _draw(shape=(6,)):
    pyro.set_rng_seed(0)
    logits = torch.randn(shape + (K,), requires_grad=True)
    z = ILSCategorical(logits=logits).rsample()
    assert isinstance(z, ILSIndexTensor)
    return z


@pytest.mark.parametrize(
    "table",
    [
        torch.tensor([2, 0, 3, 1]),  # a label remap
        torch.tensor([2, 0, 3, 1], dtype=torch.int32),
        torch.tensor([True, False, True, False]),  # a mask per category
    ],
)
def test_indexing_an_integer_table_is_reported(table):
    z = _draw()
    with report_dropped_gradients() as report:
        remapped = table[z]
    assert type(remapped) is torch.Tensor and not remapped.requires_grad
    assert torch.equal(remapped, table[z.as_subclass(torch.Tensor)])
    ops = " ".join(report.operations)
    assert "__getitem__" in ops and "test_debug_report.py" in ops, str(report)


def test_integer_table_through_other_indexing_ops_is_reported():
    z = _draw()
    table = torch.arange(2 * K).reshape(2, K)
    with report_dropped_gradients() as report:
        table[:, z]
        Vindex(torch.arange(6 * K).reshape(6, K))[..., z]
        table.index_select(1, z)
        torch.gather(table[:1].expand(6, K), -1, z.unsqueeze(-1))
        F.embedding(z, torch.arange(K)[:, None])
    ops = [op.split(" at ")[0] for op in report.operations]
    for name in ("__getitem__", "index_select", "gather", "embedding"):
        assert name in ops, (name, str(report))
    assert sum(report.counts.values()) == 5, str(report)


def test_float_table_indexing_is_not_reported():
    z = _draw()
    with report_dropped_gradients() as report:
        torch.randn(K, 2)[z]
        Vindex(torch.randn(6, K))[..., z]
        torch.randn(K, 3).index_select(0, z)
    assert not report, str(report)


@pytest.mark.parametrize(
    "make",
    [
        torch.zeros_like,
        torch.ones_like,
        torch.empty_like,
        lambda z: torch.full_like(z, 7),
        lambda z: torch.randint_like(z, 3),
        lambda z: z.new_zeros(3),
        lambda z: z.new_ones(3),
        lambda z: z.new_full((3,), 2),
        lambda z: z.new_empty(3),
    ],
)
def test_new_tensors_shaped_like_the_draw_are_not_reported(make):
    z = _draw()
    with report_dropped_gradients() as report:
        out = make(z)
    assert type(out) is torch.Tensor
    assert not report, str(report)


@pytest.mark.parametrize(
    "op",
    [
        lambda z: z.T,
        lambda z: z.mT,
        lambda z: z.movedim(0, 1),
        lambda z: z.moveaxis(0, 1),
        lambda z: z.flip(0),
        lambda z: z.narrow(1, 0, 2),
        lambda z: z.select(0, 1),
        lambda z: z.transpose(0, 1),
        lambda z: z.swapaxes(0, 1),
        lambda z: z.unsqueeze(0).squeeze(0),
        lambda z: z.flatten(),
    ],
)
def test_shape_ops_are_not_reported(op):
    z = _draw((2, 3))
    with report_dropped_gradients() as report:
        out = op(z)
    assert isinstance(out, ILSIndexTensor)
    assert not report, str(report)


def test_report_names_the_site_in_a_model():
    data = torch.randn(8)
    remap = torch.tensor([1, 0, 2])

    def model(data):
        locs = torch.tensor([-1.0, 0.0, 1.0])
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Categorical(logits=torch.zeros(3)))
            pyro.deterministic("label", remap[z])  # an integer remap: no gradient
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=data)

    def guide(data):
        logits = pyro.param("logits", torch.zeros(len(data), 3))
        with pyro.plate("data", len(data)):
            pyro.sample("z", dist.Categorical(logits=logits))

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, Adam({"lr": 0.01}), loss=TraceILS_ELBO(projection="midpoint"))
    with report_dropped_gradients() as report:
        svi.step(data)
    assert [site for site, _ in report.counts] == ["z"], str(report)
    (op,) = report.operations
    assert op.startswith("__getitem__ at test_debug_report.py:"), str(report)
