"""``pyro_ils.project_simplex`` against a sorting-free oracle.

The oracle finds the threshold ``tau`` of ``p = max(v - tau, 0)`` by bisection
in float64: ``f(tau) = sum(max(v - tau, 0)) - 1`` is continuous and decreasing,
``f(max v - 1) >= 0`` and ``f(max v) = -1``, so 100 halvings pin ``tau`` to
machine precision. ``p = max(v - tau, 0)`` with ``sum(p) = 1`` is exactly the
KKT characterization of the Euclidean projection onto the simplex, so the
oracle shares nothing with the package's sort-and-cumsum algorithm.
"""

import pytest
import torch
from common import oracle_project
from conftest import devices

import pyro_ils
from pyro_ils import project_simplex

BATCH_SHAPES = [(), (4,), (2, 3)]
KS = [1, 2, 3, 7, 50]
DTYPES = [torch.float32, torch.float64]


def tolerances(dtype, scale=1.0):
    if dtype == torch.float64:
        return dict(rtol=0.0, atol=1e-12 * scale)
    return dict(rtol=0.0, atol=2e-6 * scale)


def random_input(shape, dtype, device, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(device, dtype)


def assert_on_simplex(p, dtype, scale=1.0):
    assert (p >= 0).all()
    ones = torch.ones(p.shape[:-1], dtype=torch.float64)
    torch.testing.assert_close(p.double().sum(-1).cpu(), ones, **tolerances(dtype, 10.0 * scale))


def test_oracle_sanity():
    # The oracle itself on hand-computed projections.
    v = torch.tensor(
        [
            [0.5, 0.5, 0.5, 0.5],  # uniform
            [2.0, 0.0, 0.0, 0.0],  # far beyond a vertex -> the vertex
            [1.0, 0.5, -3.0, -3.0],  # tau = 0.25 -> (0.75, 0.25, 0, 0)
            [0.3, -float("inf"), 0.1, -float("inf")],  # tau = -0.3 -> (0.6, 0, 0.4, 0)
        ],
        dtype=torch.float64,
    )
    expected = torch.tensor(
        [[0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0], [0.75, 0.25, 0, 0], [0.6, 0, 0.4, 0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(oracle_project(v), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_matches_oracle(batch_shape, K, dtype, device, scale):
    seed = 1000 * len(batch_shape) + 10 * K + int(10 * scale)
    v = random_input(batch_shape + (K,), dtype, device, scale, seed)
    p = project_simplex(v)
    assert p.shape == v.shape and p.dtype == dtype and p.device == v.device
    assert not p.requires_grad
    assert_on_simplex(p, dtype)
    torch.testing.assert_close(p.double().cpu(), oracle_project(v), **tolerances(dtype, scale))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_oracle_shifted_and_tied(dtype, device):
    # Large common offsets and exact ties: the projection is shift-invariant.
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(-3, 4, (64, 9), generator=gen).double() / 4  # many ties
    for offset in [0.0, -100.0, 1000.0]:
        v = (base + offset).to(device, dtype)
        p = project_simplex(v)
        # The rounding of v - tau is relative to |v|, hence tolerances scaled by the offset.
        assert_on_simplex(p, dtype, 1.0 + abs(offset))
        tol = tolerances(dtype, 1.0 + abs(offset))
        torch.testing.assert_close(p.double().cpu(), oracle_project(base), **tol)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_input_gives_uniform_distribution(dtype, device):
    for K in KS:
        p = project_simplex(torch.full((K,), 3.7, dtype=dtype, device=device))
        torch.testing.assert_close(p, torch.full_like(p, 1.0 / K))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", KS)
def test_vertices_are_fixed_exactly(K, dtype, device):
    # h(onehot) == onehot, bitwise, for every vertex, also in a batch.
    eye = torch.eye(K, dtype=dtype, device=device)
    assert torch.equal(project_simplex(eye), eye)
    for k in range(K):
        assert torch.equal(project_simplex(eye[k]), eye[k])
    # A vertex with excluded (-inf) categories elsewhere is still fixed.
    if K > 2:
        v = eye[0].clone()
        v[-1] = -torch.inf
        expected = eye[0]
        assert torch.equal(project_simplex(v), expected)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_idempotent(batch_shape, K, dtype, device):
    v = random_input(batch_shape + (K,), dtype, device, 2.0, seed=K)
    p = project_simplex(v)
    q = project_simplex(p)
    torch.testing.assert_close(q, p, **tolerances(dtype))
    # Points already on the simplex are left where they are.
    inside = torch.softmax(v, -1)
    torch.testing.assert_close(project_simplex(inside), inside, **tolerances(dtype))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [2, 3, 7, 50])
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_neg_inf_entries_get_exactly_zero(batch_shape, K, dtype, device):
    gen = torch.Generator().manual_seed(1000 + K)
    shape = batch_shape + (K,)
    # Negative finite values: an implementation that read -inf as 0 (or any moderate
    # value) would give the excluded slots mass.
    v = 0.5 * torch.randn(shape, generator=gen, dtype=torch.float64) - 1.0
    excluded = torch.rand(shape, generator=gen) < 0.4
    excluded[..., 0] = False  # keep at least one finite entry per row
    v = v.masked_fill(excluded, -torch.inf).to(device, dtype)
    p = project_simplex(v)
    assert_on_simplex(p, dtype)
    excluded = excluded.to(device)
    assert (p[excluded] == 0).all()
    torch.testing.assert_close(p.double().cpu(), oracle_project(v), **tolerances(dtype, 10.0))


@pytest.mark.parametrize("device", devices)
def test_errors(device):
    ok = torch.zeros(3, device=device)
    project_simplex(ok)  # the base case is accepted

    with pytest.raises(ValueError, match="NaN"):
        project_simplex(torch.tensor([0.0, float("nan"), 1.0], device=device))
    with pytest.raises(ValueError, match=r"\+inf"):
        project_simplex(torch.tensor([0.0, float("inf"), 1.0], device=device))
    with pytest.raises(ValueError, match="all -inf"):
        rows = torch.tensor([[0.0, 1.0], [-float("inf"), -float("inf")]], device=device)
        project_simplex(rows)
    with pytest.raises(ValueError, match="non-empty last dimension"):
        project_simplex(torch.tensor(1.0, device=device))
    with pytest.raises(ValueError, match="non-empty last dimension"):
        project_simplex(torch.zeros(3, 0, device=device))
    with pytest.raises(TypeError, match="floating-point"):
        project_simplex(torch.tensor([0, 1, 2], device=device))
    with pytest.raises(TypeError, match="floating-point"):
        project_simplex(torch.tensor([True, False], device=device))
    with pytest.raises(TypeError, match="floating-point"):
        project_simplex([0.0, 1.0])


def test_projection_names():
    assert set(pyro_ils.PROJECTIONS) == {"euclidean", "normalize", "reference"}
