"""Gapped straight-through (pyro_ils.estimators.gst) and its distributions.

The backward is checked against Fan et al. (2022)'s estimator written here in plain
autograd with stop-gradients: ``D + y - sg(y)``, ``y = softmax((logits + sg(m1 - m2))
/ tau)``, ``m1`` raising the drawn logit to the maximum and ``m2`` lowering the others
to at least ``kappa`` below it. Statistical tests are seeded and state their
false-alarm rate.
"""

from __future__ import annotations

import pyro
import pytest
import torch
import torch.nn.functional as F
from common import autograd_grad, check_routing_matches_class, paper_gst, st_oracle
from conftest import devices
from test_estimators_straight_through import (
    DTYPES,
    as_index,
    check_goodness_of_fit,
    check_options_kept,
    check_pyro_integration,
    check_rsample_equals_sample,
    check_support,
    check_temperature_validation,
    draw_onehot,
)

from pyro_ils.distributions import GSTBernoulli, GSTCategorical, GSTOneHotCategorical
from pyro_ils.estimators import GST
from pyro_ils.estimators.gst import gapped_logits

pytestmark = pytest.mark.usefixtures("clean_param_store")

CLASSES = [GSTOneHotCategorical, GSTCategorical]
KAPPAS = [0.5, 1.0, 3.0, "p"]


def paper_grad(tau, kappa):
    def grad(logits, onehot, g):
        return autograd_grad(paper_gst(logits, onehot, tau, kappa), logits, g)

    return grad


# --- the backward against the paper's formula -----------------------------------------


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)], ids=str)
@pytest.mark.parametrize("kappa", KAPPAS)
@pytest.mark.parametrize("tau", [0.3, 2.0])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_backward_matches_paper(cls, tau, kappa, batch_shape, dtype, device):
    pyro.set_rng_seed(0)
    logits = (2 * torch.randn(batch_shape + (5,), dtype=dtype, device=device)).requires_grad_()
    z = draw_onehot(cls, cls(logits=logits, temperature=tau, kappa=kappa), (4,))
    assert z.shape == (4,) + batch_shape + (5,) and z.dtype == dtype
    assert z.device == logits.device
    assert ((z.detach() == 0) | (z.detach() == 1)).all() and (z.detach().sum(-1) == 1).all()
    g = torch.randn(z.shape, dtype=dtype, device=device)
    expected = paper_grad(tau, kappa)(logits, z.detach(), g)
    torch.testing.assert_close(autograd_grad(z, logits, g), expected)


@pytest.mark.parametrize("kappa", KAPPAS)
def test_estimator_is_deterministic_given_the_draw_and_honours_weight(kappa):
    """No noise of its own: another RNG state, the same gradient for the same draw;
    weight 0 gives no gradient, other weights no rescaling."""
    torch.manual_seed(1)
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 3, 1, 2, 2, 0])
    weight = torch.tensor([1.0, 0.5, 0.0, 3.0, 1.0, 1.0], dtype=torch.float64)
    g = torch.randn(6, 4, dtype=torch.float64)
    grads = []
    for seed in (2, 3):
        torch.manual_seed(seed)
        grads.append(autograd_grad(GST(0.8, kappa).onehot(logits, index, weight=weight), logits, g))
    assert torch.equal(grads[0], grads[1])
    expected = paper_grad(0.8, kappa)(logits, F.one_hot(index, 4).double(), g)
    expected[2] = 0.0
    torch.testing.assert_close(grads[0], expected)


@pytest.mark.parametrize("kappa", KAPPAS)
def test_gapped_logits_put_the_draw_first_by_the_gap(kappa):
    """The drawn category holds the maximum logit and leads every other by at least
    ``kappa``; logits already that far below are left alone."""
    torch.manual_seed(4)
    logits = 3 * torch.randn(200, 6, dtype=torch.float64)
    index = torch.distributions.Categorical(logits=logits).sample()
    onehot = F.one_hot(index, 6).double()
    gapped = gapped_logits(logits, onehot, kappa)
    top = logits.max(-1).values
    drawn = gapped.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    assert torch.equal(drawn, top)
    if kappa == "p":
        p = logits.softmax(-1).gather(-1, index.unsqueeze(-1))
        kappa = -torch.log1p(-p) / p
        assert (kappa >= 1).all()
    lead = drawn.unsqueeze(-1) - gapped.masked_fill(onehot > 0, -torch.inf)
    assert (lead >= kappa - 1e-12).all()
    far = (logits <= top.unsqueeze(-1) - kappa) & (onehot == 0)
    assert far.any() and torch.equal(gapped[far], logits[far])
    assert (gapped[(onehot == 0) & ~far] < logits[(onehot == 0) & ~far]).all()


def test_bernoulli_is_the_two_category_case():
    torch.manual_seed(5)
    a = torch.randn(8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(8, dtype=torch.float64)
    pyro.set_rng_seed(6)
    b = GSTBernoulli(logits=a, temperature=0.5, kappa="p").rsample()
    pyro.set_rng_seed(6)
    assert torch.equal(b.detach(), GSTBernoulli(logits=a).sample())
    pair = torch.stack([torch.zeros_like(a), a], -1)
    onehot = F.one_hot(b.detach().long(), 2).double()
    g_pair = torch.stack([torch.zeros_like(g), g], -1)
    expected = autograd_grad(paper_gst(pair, onehot, 0.5, "p"), a, g_pair)
    torch.testing.assert_close(autograd_grad(b, a, g), expected)


def test_differs_from_straight_through():
    """Power of the oracle tests: GST's gradient is not straight-through's."""
    torch.manual_seed(7)
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 1, 2, 3, 1])
    g = torch.randn(5, 4, dtype=torch.float64)
    onehot = F.one_hot(index, 4).double()
    gst = autograd_grad(GST().onehot(logits, index), logits, g)
    assert not torch.allclose(gst, autograd_grad(st_oracle(logits, onehot), logits, g))


# --- the forward is the exact draw ------------------------------------------------------


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_forward_goodness_of_fit(cls, dtype, device):
    """Pooled chi-square against Categorical(softmax(logits)); false-alarm rate P_MIN."""
    check_goodness_of_fit(cls, {"temperature": 0.5, "kappa": 1.0}, dtype, device)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_rsample_equals_sample(cls):
    check_rsample_equals_sample(cls, {"temperature": 0.5, "kappa": "p"})


# --- support, weights, options, Pyro ------------------------------------------------------


@pytest.mark.parametrize("kappa", [1.0, "p"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_support(cls, dtype, kappa):
    check_support(cls, {"temperature": 0.5, "kappa": kappa}, dtype, paper_grad(0.5, kappa))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_options_kept_mask_and_weight(cls):
    check_options_kept(cls, {"temperature": 0.5, "kappa": 2.0})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_pyro_integration(cls):
    def reference(logits, onehot):
        return paper_gst(logits, onehot, 0.5, 2.0)

    check_pyro_integration(cls, {"temperature": 0.5, "kappa": 2.0}, reference)


@pytest.mark.parametrize("cls", CLASSES + [GSTBernoulli], ids=lambda c: c.__name__)
def test_option_validation(cls):
    check_temperature_validation(cls)
    for bad in (0.0, -1.0, float("inf"), float("nan"), "q", "P", None, True):
        with pytest.raises(ValueError, match="kappa"):
            cls(logits=torch.zeros(3), kappa=bad)
    d = cls(logits=torch.zeros(2, 3), kappa="p").with_temperature(2.0)
    assert type(d) is cls and d.temperature == 2.0 and d.kappa == "p"
    assert d.estimator == GST(2.0, "p") and GST(1, 2) == GST(1.0, 2.0) != GST(1.0, "p")
    assert repr(GST(0.5, "p")) == "GST(temperature=0.5, kappa='p')"


@pytest.mark.parametrize(
    "site, cls",
    [
        ("categorical", GSTCategorical),
        ("one_hot", GSTOneHotCategorical),
        ("bernoulli", GSTBernoulli),
    ],
)
@pytest.mark.parametrize("kappa", [1.5, "p"])
def test_routing_matches_the_distribution_class(site, cls, kappa):
    opts = {"temperature": 0.5, "kappa": kappa}
    check_routing_matches_class(GST(**opts), cls, site, opts)


def test_draws_index_a_table():
    """Integer draws carry the backward through indexing as the one-hot does."""
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    table = torch.randn(4, 2, dtype=torch.float64)
    pyro.set_rng_seed(8)
    k = GSTCategorical(logits=logits, kappa="p").rsample()
    grad = autograd_grad(table[k], logits, torch.ones(3, 2, dtype=torch.float64))
    onehot = F.one_hot(as_index(GSTCategorical, k), 4).double()
    expected = autograd_grad(
        paper_gst(logits, onehot, 1.0, "p"), logits, table.sum(-1).expand(3, 4)
    )
    torch.testing.assert_close(grad, expected)
