"""The draw's weight in the loss (scale, subsampling, mask, particles) is divided
out of the step and multiplied back into the gradient, so that subsampling does
not change what the target means."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pyro_ils import ILSCategorical, ILSMessenger, project_simplex
from pyro_ils.estimators import StraightThrough
from pyro_ils.poutine.site_weight import particle_weight

K, N, B = 4, 10, 5
C = 0.02


def _logits():
    torch.manual_seed(1)
    return torch.randn(B, K, dtype=torch.float64, requires_grad=True)


def _per_point_loss(z):
    # A loss whose gradient differs per point and per category.
    table = torch.linspace(-2, 3, K, dtype=torch.float64)
    weights = torch.arange(1, B + 1, dtype=torch.float64)
    return (weights * (table**2)[z]).sum()


def _grad(context, loss_factor):
    logits = _logits()
    pyro.set_rng_seed(0)
    with context():
        z = ILSCategorical(logits=logits, step_size=C, projection="euclidean").rsample()
    (loss_factor * _per_point_loss(z)).backward()
    return z, logits.grad


def _expected(z, logits, factor):
    """factor * (pi - proj(onehot - c * g)) with g the per-point (unit) gradient."""
    table = torch.linspace(-2, 3, K, dtype=torch.float64)
    weights = torch.arange(1, B + 1, dtype=torch.float64)
    g = weights[:, None] * table[None, :] ** 2
    onehot = torch.nn.functional.one_hot(z.as_subclass(torch.Tensor), K).double()
    pi = torch.softmax(logits.detach(), -1)
    return factor * (pi - project_simplex(onehot - C * g))


def _nothing():
    return torch.enable_grad()


def test_unweighted_draw_matches_formula():
    z, grad = _grad(_nothing, 1.0)
    torch.testing.assert_close(grad, _expected(z, _logits(), 1.0))


def test_subsampling_keeps_the_target():
    # In a subsampled plate the loss carries N / B; the target must not change.
    z, grad = _grad(lambda: pyro.plate("data", N, subsample=torch.arange(B)), N / B)
    torch.testing.assert_close(grad, _expected(z, _logits(), N / B))
    # ... which differs from stepping with the scaled gradient (the test can fail):
    table = torch.linspace(-2, 3, K, dtype=torch.float64)
    g = torch.arange(1, B + 1, dtype=torch.float64)[:, None] * table**2
    onehot = torch.nn.functional.one_hot(z.as_subclass(torch.Tensor), K).double()
    pi = torch.softmax(_logits().detach(), -1)
    naive = (N / B) * (pi - project_simplex(onehot - C * (N / B) * g))
    assert not torch.allclose(grad, naive)


@pytest.mark.parametrize("scale", [0.01, 3.0])
def test_poutine_scale_keeps_the_target(scale):
    z, grad = _grad(lambda: poutine.scale(scale=scale), scale)
    torch.testing.assert_close(grad, _expected(z, _logits(), scale))


def test_mask_zeroes_masked_draws():
    mask = torch.tensor([True, False, True, False, True])
    z, grad = _grad(lambda: poutine.mask(mask=mask), 1.0)
    expected = _expected(z, _logits(), 1.0) * mask[:, None]
    torch.testing.assert_close(grad, expected)
    assert (grad[~mask] == 0).all()


def test_distribution_mask_zeroes_masked_draws():
    mask = torch.tensor([True, False, True, False, True])
    logits = _logits()
    pyro.set_rng_seed(0)
    z = ILSCategorical(logits=logits, step_size=C).mask(mask).rsample()
    _per_point_loss(z).backward()
    assert (logits.grad[~mask] == 0).all()
    assert (logits.grad[mask] != 0).any()


def test_particle_weight():
    z, grad = _grad(lambda: particle_weight(0.25), 0.25)
    torch.testing.assert_close(grad, _expected(z, _logits(), 0.25))


# ---------------------------------------------------------------------------
# Weights under .to_event: handler scales and masks are aligned with the batch
# dims left after .to_event, so they must be aligned with the draw's batch dims.


def _event_grad(build, scale=None):
    torch.manual_seed(1)
    logits = torch.randn(2, 3, K, dtype=torch.float64, requires_grad=True)
    table = 3 * torch.randn(K, dtype=torch.float64)
    pyro.set_rng_seed(0)
    with poutine.trace() as tr, pyro.plate("b", 2):
        with poutine.scale(scale=1.0 if scale is None else scale):
            z = pyro.sample("z", build(logits))
    site_scale = tr.trace.nodes["z"]["scale"]
    # What Pyro's ELBO does: the site's scale weights each batch element's loss.
    loss = (site_scale * table[z].sum(-1)).sum()
    (grad,) = torch.autograd.grad(loss, logits)
    return grad


@pytest.mark.parametrize("scale", [torch.tensor([1.0, 10.0]), torch.tensor([0.5, 3.0])])
def test_tensor_scale_is_aligned_with_batch_dims_under_to_event(scale):
    """Shapes (2,) batch x (3,) event: a per-batch-element scale multiplies that
    element's gradient (the per-draw target is unchanged)."""

    def build(logits):
        return ILSCategorical(logits=logits, step_size=0.5).to_event(1)

    unit = _event_grad(build)
    scaled = _event_grad(build, scale)
    assert torch.allclose(scaled, scale[:, None, None] * unit)


def test_mask_after_to_event_zeroes_the_masked_draws():
    mask = torch.tensor([True, False])

    def before(logits):
        return ILSCategorical(logits=logits).mask(mask[:, None]).to_event(1)

    def after(logits):
        return ILSCategorical(logits=logits).to_event(1).mask(mask)

    g_before, g_after = _event_grad(before), _event_grad(after)
    assert g_after[1].abs().sum() == 0
    assert g_after[0].abs().sum() > 0
    assert torch.equal(g_before, g_after)


def test_anneal_scales_the_terms_but_not_the_ils_weight():
    """KL annealing: ``pyro_ils.anneal(beta)`` scales the site like ``poutine.scale``
    but leaves the draw's gradient as without it (the likelihood is not annealed)."""
    from pyro_ils import anneal

    def grad(context):
        logits = _logits()
        pyro.set_rng_seed(0)
        with poutine.trace() as tr, context():
            z = pyro.sample("z", ILSCategorical(logits=logits, step_size=C))
        _per_point_loss(z).backward()
        return tr.trace.nodes["z"]["scale"], logits.grad

    scale_plain, g_plain = grad(lambda: poutine.scale(scale=1.0))
    scale_anneal, g_anneal = grad(lambda: anneal(0.1))
    _, g_scaled = grad(lambda: poutine.scale(scale=0.1))
    assert scale_plain == 1.0 and scale_anneal == 0.1
    assert torch.equal(g_anneal, g_plain)
    # poutine.scale counts in the weight: the same unit gradient, times 0.1.
    assert not torch.allclose(g_scaled, g_plain)


class _RecordingST(StraightThrough):
    """Straight-through that records the weight each draw is given (for the check below)."""

    def __init__(self):
        self.weights = []

    def backward(self, logits, onehot, g, support, weight, *aux):
        self.weights.append(weight.detach().clone())
        return super().backward(logits, onehot, g, support, weight, *aux)


@pytest.mark.parametrize("handlers", ["subsample", "scale", "mask", "scale_subsample_mask"])
def test_routed_draw_weight_is_the_sites_scale_and_mask(handlers):
    """For a routed site the weight read from Pyro's handler stack is the one the
    message itself carries, ``scale * mask`` (times ``1 / num_particles``): the two
    ways of reading it agree wherever ``anneal`` is not used."""
    mask = torch.tensor([True, False, True, True, False, True, True, False, True, True])
    estimator = _RecordingST()

    def guide():
        logits = pyro.param("w_logits", torch.zeros(N, K, dtype=torch.float64))
        # a fixed subsample, so that it holds draws the mask keeps
        subsample = torch.tensor([0, 1, 2]) if "subsample" in handlers else None
        scale = 2.5 if "scale" in handlers else 1.0
        with pyro.plate("data", N, subsample=subsample) as idx:
            site_mask = mask[idx] if "mask" in handlers else True
            with poutine.scale(scale=scale), poutine.mask(mask=site_mask):
                return pyro.sample("z", dist.Categorical(logits=logits[idx]))

    pyro.set_rng_seed(0)
    with particle_weight(0.5):
        trace = poutine.trace(ILSMessenger(estimator=estimator)(guide)).get_trace()
    z = trace.nodes["z"]
    torch.arange(K, dtype=torch.float64)[z["value"]].sum().backward()
    (weight,) = estimator.weights
    site_mask = torch.tensor(True) if z["mask"] is None else torch.as_tensor(z["mask"])
    expected = 0.5 * torch.as_tensor(z["scale"], dtype=torch.float64) * site_mask.double()
    assert (weight != 0).any(), "no kept draw: the check could not see a wrong scale"
    assert torch.equal(weight, expected.expand(weight.shape)), (weight, expected)
