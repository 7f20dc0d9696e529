"""The mean-start targets (``projection="mirror"`` and ``"mirror_rms"``): the backward
equals autograd of ``KL(pi_D || softmax(logits))`` with ``pi_D`` computed here
independently; small steps give the straight-through gradient; ``"mirror_rms"``
does not depend on the scale of the loss."""

import pytest
import torch

from pyro_ils import ILSOneHotCategorical, ils_onehot
from pyro_ils.ops.projections import MEAN_START_TARGETS

DTYPES = [torch.float32, torch.float64]


def _draw_and_grad(logits, g, c, projection, seed=0):
    logits = logits.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    z = ils_onehot(logits, c, projection)
    (z * g).sum().backward()
    return z.detach(), logits.grad


def _oracle_target(logits, g, c, projection):
    log_pi = logits.log_softmax(-1)
    if projection == "mirror_rms":
        pi = log_pi.exp()
        centered = g - (pi * g).sum(-1, keepdim=True)
        g = g / (pi * centered**2).sum(-1).mean().sqrt()
    # pi_D proportional to pi * exp(-c g), in log space
    return (log_pi - c * g).log_softmax(-1).exp()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("projection", MEAN_START_TARGETS)
@pytest.mark.parametrize("shape", [(5,), (3, 4, 6)])
def test_backward_is_the_kl_gradient_to_the_target(projection, dtype, shape):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(shape, generator=gen, dtype=dtype)
    g = 2 * torch.randn(shape, generator=gen, dtype=dtype)
    _, grad = _draw_and_grad(logits, g, 0.7, projection)
    target = _oracle_target(logits, g, 0.7, projection).detach()
    leaf = logits.clone().requires_grad_()
    kl = (target * (target.log() - leaf.log_softmax(-1))).sum()
    (expected,) = torch.autograd.grad(kl, leaf)
    torch.testing.assert_close(grad, expected)


def test_small_mirror_step_is_straight_through():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    g = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    c = 1e-6
    _, grad = _draw_and_grad(logits, g, c, "mirror")
    pi = logits.softmax(-1)
    straight_through = pi * (g - (pi * g).sum(-1, keepdim=True))
    torch.testing.assert_close(grad / c, straight_through, rtol=1e-4, atol=1e-8)


def test_mirror_rms_is_invariant_to_the_scale_of_the_loss():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    g = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    _, a = _draw_and_grad(logits, g, 1.0, "mirror_rms")
    _, b = _draw_and_grad(logits, 1000 * g, 1.0, "mirror_rms")
    _, c = _draw_and_grad(logits, g, 1.0, "mirror")
    _, d = _draw_and_grad(logits, 1000 * g, 1.0, "mirror")
    torch.testing.assert_close(a, b)
    assert not torch.allclose(c, d)


def test_minus_inf_logits_get_no_mass_and_finite_gradients():
    logits = torch.tensor([[0.0, -torch.inf, 1.0, 0.5]] * 3)
    g = torch.tensor([[1.0, 5.0, -2.0, 0.0]] * 3)
    for projection in MEAN_START_TARGETS:
        z, grad = _draw_and_grad(logits, g, 1.0, projection)
        assert (z[:, 1] == 0).all()
        assert torch.isfinite(grad).all() and (grad[:, 1] == 0).all()


def test_distribution_option_matches_ils_onehot():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(7, 3, generator=gen)
    g = torch.randn(7, 3, generator=gen)
    z1, grad1 = _draw_and_grad(logits, g, 0.5, "mirror_rms", seed=9)
    leaf = logits.clone().requires_grad_()
    torch.manual_seed(9)
    z2 = ILSOneHotCategorical(logits=leaf, step_size=0.5, projection="mirror_rms").rsample()
    (z2 * g).sum().backward()
    assert torch.equal(z1, z2.detach())
    torch.testing.assert_close(leaf.grad, grad1)
