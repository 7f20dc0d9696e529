"""ReinMax distributions (pyro_ils.estimators.reinmax).

The backward is checked against Algorithm 2 of Liu et al. (2023), written here
in plain autograd with stop-gradients, and against the authors' ``reinmax``
package where it is installed. Statistical tests are seeded and state their
false-alarm rate.
"""

from __future__ import annotations

import itertools

import pyro
import pytest
import torch
import torch.nn.functional as F
from common import paper_reinmax
from conftest import devices
from scipy.stats import norm
from test_estimators_straight_through import (
    DTYPES,
    P_MIN,
    check_goodness_of_fit,
    check_options_kept,
    check_pyro_integration,
    check_rsample_equals_sample,
    check_support,
    check_temperature_validation,
    draw_onehot,
)

from pyro_ils.estimators import ReinMaxCategorical, ReinMaxOneHotCategorical
from pyro_ils.estimators.reinmax import reinmax_onehot

CLASSES = [ReinMaxOneHotCategorical, ReinMaxCategorical]
TAUS = [0.5, 1.0, 1.3, 2.0]


def paper_grad(logits, onehot, g, tau):
    (grad,) = torch.autograd.grad((paper_reinmax(logits, onehot, tau) * g).sum(), logits)
    return grad


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_forward_goodness_of_fit(cls, dtype, device):
    check_goodness_of_fit(cls, {"temperature": 1.3}, dtype, device)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_rsample_equals_sample(cls):
    check_rsample_equals_sample(cls, {"temperature": 1.3})


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)], ids=str)
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_backward_matches_algorithm(cls, tau, batch_shape, dtype, device):
    pyro.set_rng_seed(0)
    logits = (2 * torch.randn(batch_shape + (5,), dtype=dtype, device=device)).requires_grad_()
    z = draw_onehot(cls, cls(logits=logits, temperature=tau), (4,))
    assert z.shape == (4,) + batch_shape + (5,)
    assert z.dtype == dtype and z.device == logits.device
    assert ((z.detach() == 0) | (z.detach() == 1)).all() and (z.detach().sum(-1) == 1).all()
    g = torch.randn(z.shape, dtype=dtype, device=device)
    (grad,) = torch.autograd.grad((z * g).sum(), logits)
    expected = paper_grad(logits, z.detach(), g, tau)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_function_matches_algorithm_and_honours_weight(dtype):
    torch.manual_seed(1)
    logits = torch.randn(6, 4, dtype=dtype, requires_grad=True)
    index = torch.tensor([0, 3, 1, 2, 2, 0])
    weight = torch.tensor([1.0, 0.5, 0.0, 3.0, 1.0, 1.0], dtype=dtype)
    g = torch.randn(6, 4, dtype=dtype)
    z = reinmax_onehot(logits, index, temperature=1.5, weight=weight)
    (grad,) = torch.autograd.grad((z * g).sum(), logits)
    expected = paper_grad(logits, F.one_hot(index, 4).to(dtype), g, 1.5)
    expected[2] = 0.0  # weight 0: masked out, no gradient; other weights: no rescaling
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("tau", [1.0, 1.3, 2.0])
def test_matches_the_reinmax_package(tau):
    reinmax = pytest.importorskip("reinmax")
    torch.manual_seed(2)
    logits = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    y_hard, _ = reinmax.reinmax(logits, tau)
    g = torch.randn(7, 5, dtype=torch.float64)
    (expected,) = torch.autograd.grad((y_hard * g).sum(), logits)
    index = y_hard.detach().argmax(-1)
    z = reinmax_onehot(logits, index, temperature=tau)
    torch.testing.assert_close(z.detach(), y_hard.detach())
    (grad,) = torch.autograd.grad((z * g).sum(), logits)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_support(cls, dtype):
    def reference(logits, onehot, g):
        return paper_grad(logits, onehot, g, 1.3)

    check_support(cls, {"temperature": 1.3}, dtype, reference)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_options_kept_mask_and_weight(cls):
    check_options_kept(cls, {"temperature": 1.3})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_pyro_integration(cls):
    def reference(logits, onehot):
        return paper_reinmax(logits, onehot, 1.3)

    check_pyro_integration(cls, {"temperature": 1.3}, reference)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_temperature_validation(cls):
    check_temperature_validation(cls)
    d = cls(logits=torch.zeros(2, 3), temperature=1.0).with_temperature(2.0)
    assert type(d) is cls and d.temperature == 2.0


# --- Bias for a linear objective L(z) = <a, z> -------------------------------

LOGITS = torch.tensor([[0.3, -0.7, 1.1, 0.0], [2.0, 0.5, -1.0, 0.2]], dtype=torch.float64)
A = torch.tensor([[1.0, -2.0, 0.5, 3.0], [-1.0, 0.0, 2.0, 1.5]], dtype=torch.float64)


def exact_linear_grad():
    logits = LOGITS.clone().requires_grad_()
    (grad,) = torch.autograd.grad((A * torch.softmax(logits, -1)).sum(), logits)
    return grad


def expected_reinmax_grad(tau):
    """E_D[ReinMax gradient] for g = A, by enumerating the draw of each row."""
    pi = torch.softmax(LOGITS, -1)
    total = torch.zeros_like(LOGITS)
    for ks in itertools.product(range(4), repeat=2):
        index = torch.tensor(ks)
        logits = LOGITS.clone().requires_grad_()
        z = reinmax_onehot(logits, index, temperature=tau)
        (grad,) = torch.autograd.grad((z * A).sum(), logits)
        total += pi[0, ks[0]] * pi[1, ks[1]] * grad
    return total


def test_reinmax_is_unbiased_for_linear_objectives_at_tau_1():
    # Exact expectation over the draw: E[2 J(pi_1)^T a - J(pi_0)^T a / 2] = J(pi)^T a
    # when tau = 1 (E[J(pi_1)^T a] = 3/4 J(pi)^T a), and not for other tau.
    exact = exact_linear_grad()
    torch.testing.assert_close(expected_reinmax_grad(1.0), exact)
    for tau in (0.5, 2.0):
        assert (expected_reinmax_grad(tau) - exact).abs().max() > 1e-2


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_reinmax_monte_carlo_mean_for_linear_objective(cls):
    """Mean of N per-draw gradients (through the distribution, tau = 1) against the
    exact gradient: z-test per coordinate, Bonferroni over the 8 coordinates;
    false-alarm rate P_MIN. At tau = 2 the same test rejects (the bias is real)."""
    n = 20_000
    threshold = norm.isf(P_MIN / 2 / LOGITS.numel())
    exact = exact_linear_grad()
    for tau, unbiased in ((1.0, True), (2.0, False)):
        pyro.set_rng_seed(3)
        logits = LOGITS.expand(n, 2, 4).clone().requires_grad_()
        z = draw_onehot(cls, cls(logits=logits, temperature=tau))
        assert z.shape == (n, 2, 4)
        (grads,) = torch.autograd.grad((z * A).sum(), logits)
        zscore = (grads.mean(0) - exact) / (grads.std(0) / n**0.5)
        assert bool((zscore.abs() <= threshold).all()) == unbiased, zscore
