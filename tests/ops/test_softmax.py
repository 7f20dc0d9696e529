"""pyro_ils.ops.softmax against torch.softmax (the oracle): values and gradients."""

import pytest
import torch

from pyro_ils.ops.softmax import softmax


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num", [1, 2, 10, 31, 32, 100])
def test_values_and_gradient_match_torch(num, dtype):
    gen = torch.Generator().manual_seed(num)
    logits = (10 * torch.randn(3, 5, num, generator=gen)).to(dtype)
    weights = torch.randn(3, 5, num, generator=gen).to(dtype)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    pa, pb = softmax(a), torch.softmax(b, dim=-1)
    assert pa.dtype == dtype and pa.shape == logits.shape
    # float32: torch.testing's own defaults (a few ulps); float64: far tighter than them.
    tol = {} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-15}
    torch.testing.assert_close(pa, pb, **tol)
    (ga,) = torch.autograd.grad((pa * weights).sum(), a)
    (gb,) = torch.autograd.grad((pb * weights).sum(), b)
    torch.testing.assert_close(ga, gb, **tol)


def test_minus_infinity_gets_no_mass_and_large_logits_stay_finite():
    logits = torch.tensor([[0.0, -torch.inf, 1.0], [1e4, 1e4 - 1.0, -1e4]])
    p = softmax(logits)
    torch.testing.assert_close(p, torch.softmax(logits, -1))
    assert p[0, 1] == 0 and torch.isfinite(p).all()
