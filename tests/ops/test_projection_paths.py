"""The projection's two code paths (top-m threshold, and full sort for rows whose
support may be larger) both agree with a plain sort-based projection in NumPy."""

import numpy as np
import pytest
import torch

from pyro_ils import project_simplex
from pyro_ils.ops.projections import _TOP_M, intermediate_target


def _numpy_projection(v):
    out = np.empty_like(v)
    for i, row in enumerate(v.reshape(-1, v.shape[-1])):
        u = np.sort(row)[::-1]
        css = np.cumsum(u)
        j = np.arange(1, len(u) + 1)
        rho = j[u * j > css - 1].max()
        out.reshape(-1, v.shape[-1])[i] = np.maximum(row - (css[rho - 1] - 1) / rho, 0)
    return out


@pytest.mark.parametrize("num", [3 * _TOP_M, 100])
def test_small_and_large_supports(num):
    gen = torch.Generator().manual_seed(0)
    onehot = torch.nn.functional.one_hot(torch.randint(num, (64,), generator=gen), num).double()
    noise = torch.rand(64, num, generator=gen, dtype=torch.float64)
    small = onehot - (1 - onehot) * (0.5 + 0.1 * noise) - 0.3 * onehot * noise
    large = torch.randn(64, num, generator=gen, dtype=torch.float64) * 0.01
    mixed = torch.cat([small, large])
    for v in (small, large, mixed):
        np.testing.assert_allclose(
            project_simplex(v).numpy(), _numpy_projection(v.numpy()), atol=1e-12
        )
    # the ILS targets of small steps have small supports: the fast path alone serves them
    assert (project_simplex(small) > 0).sum(-1).max() < _TOP_M
    assert (project_simplex(large) > 0).sum(-1).min() > _TOP_M


def test_masked_rows_with_large_support():
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(8, 40, generator=gen, dtype=torch.float64) * 0.01
    allowed = torch.rand(8, 40, generator=gen) > 0.3
    target = intermediate_target(torch.zeros_like(v), -v, 1.0, "euclidean", allowed)
    masked = v.masked_fill(~allowed, -np.inf)
    np.testing.assert_allclose(target.numpy(), _numpy_projection(masked.numpy()), atol=1e-12)
    assert (target[~allowed] == 0).all()
