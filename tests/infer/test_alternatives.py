"""The run over the alternatives in chunks (``TraceILSDiff_ELBO(chunk_size=...)``,
:mod:`pyro_ils.infer.alternatives`).

Oracles: the same ELBO run over all rows at once (``chunk_size=None``), and
``TraceEnum_ELBO`` (exact enumeration) on a mixture, where the default's
Rao-Blackwellized limit is the exact gradient. Memory: the bytes of the tensors that
autograd keeps for the backward pass, counted with
:func:`torch.autograd.graph.saved_tensors_hooks` around the loss (tensors kept inside
a checkpointed chunk are not kept: they are recomputed).
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate
from test_ils_diff_rao_blackwell import K, _randn, mixture_guide, mixture_model
from torch import nn

from pyro_ils import TraceILSDiff_ELBO
from pyro_ils.infer.alternatives import DEFAULT_CHUNK_SIZE, check_chunk_size

DTYPE = torch.float64


pytestmark = pytest.mark.usefixtures("clean_param_store")


def coupled_model():
    """Two sites: ``z`` with three coupled latents (``.to_event``), ``b`` Bernoulli
    latents that share one likelihood: ``3 K + 2 * 2`` rows of alternatives."""
    w = pyro.param("w", lambda: _randn(3, K, seed=5))
    v = pyro.param("v", lambda: _randn(2, seed=6))
    z = pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3, K, dtype=DTYPE)).to_event(1))
    b = pyro.sample("b", dist.Bernoulli(torch.full((2,), 0.5, dtype=DTYPE)).to_event(1))
    loc = (z * w).sum((-1, -2)) + (b * v).sum(-1)
    pyro.sample("x", dist.Normal(loc, 1.0), obs=torch.tensor(1.5, dtype=DTYPE))


def coupled_guide():
    logits = pyro.param("zl", lambda: _randn(3, K, seed=7))
    pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1))
    bl = pyro.param("bl", lambda: _randn(2, seed=8))
    pyro.sample("b", dist.Bernoulli(logits=bl).to_event(1))


def grads(elbo, model, guide, seed=0):
    """The loss and each parameter's gradient of one step of ``elbo`` from ``seed``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    with poutine.trace(param_only=True) as tr:
        loss = elbo.differentiable_loss(model, guide)
    params = {n: s["value"].unconstrained() for n, s in tr.trace.nodes.items()}
    values = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return loss.detach(), dict(zip(params, values, strict=True))


def assert_same(a, b):
    (loss_a, grad_a), (loss_b, grad_b) = a, b
    assert torch.allclose(loss_a, loss_b)
    assert grad_a.keys() == grad_b.keys()
    for name in grad_a:
        assert torch.allclose(grad_a[name], grad_b[name], rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("chunk_size", [1, 2, 4])
@pytest.mark.parametrize("rao_blackwellize", [True, False])
@pytest.mark.parametrize("mean_field", [False, True])
def test_chunks_give_the_unchunked_gradient(chunk_size, rao_blackwellize, mean_field):
    for model, guide in ((mixture_model, mixture_guide), (coupled_model, coupled_guide)):
        opts = dict(rao_blackwellize=rao_blackwellize, mean_field=mean_field)
        whole = grads(TraceILSDiff_ELBO(chunk_size=None, **opts), model, guide)
        assert_same(grads(TraceILSDiff_ELBO(chunk_size=chunk_size, **opts), model, guide), whole)


def test_chunked_default_is_the_enumerated_gradient():
    """The Rao-Blackwellized limit on a mixture is the exact gradient, chunked or not."""
    _, exact = grads(
        TraceEnum_ELBO(max_plate_nesting=1), mixture_model, config_enumerate(mixture_guide)
    )
    _, chunked = grads(TraceILSDiff_ELBO(chunk_size=2), mixture_model, mixture_guide)
    for name in exact:
        assert torch.allclose(chunked[name], exact[name], rtol=1e-8, atol=1e-10), name


def test_chunk_size_option():
    elbo = TraceILSDiff_ELBO(chunk_size=3)
    assert elbo.chunk_size == 3
    assert TraceILSDiff_ELBO().chunk_size == DEFAULT_CHUNK_SIZE


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_bad_chunk_size(bad):
    with pytest.raises(ValueError, match="chunk_size"):
        check_chunk_size(bad)
    with pytest.raises(ValueError, match="chunk_size"):
        TraceILSDiff_ELBO(chunk_size=bad)


# -- memory: a decoder whose activations dominate --------------------------------------

HIDDEN, PIXELS, LATENTS = 256, 64, 4


class _VAE:
    def __init__(self):
        torch.manual_seed(0)
        self.decoder = nn.Sequential(
            nn.Linear(LATENTS * K, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, PIXELS)
        ).double()
        self.x = (torch.rand(8, PIXELS, dtype=DTYPE) > 0.5).to(DTYPE)
        self.runs = 0

    def model(self):
        self.runs += 1
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(self.x)):
            prior = torch.zeros(len(self.x), LATENTS, K, dtype=DTYPE)
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior).to_event(1))
            logits = self.decoder(z.flatten(-2))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=self.x)

    def guide(self):
        logits = pyro.param("q", lambda: _randn(len(self.x), LATENTS, K, seed=9))
        with pyro.plate("data", len(self.x)):
            pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1))


def saved_bytes_and_grads(chunk_size):
    """The bytes that autograd keeps for the backward pass of one loss, and the
    gradients; the model runs counted (the recomputation runs it again)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = _VAE()
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    elbo = TraceILSDiff_ELBO(chunk_size=chunk_size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = elbo.differentiable_loss(vae.model, vae.guide)
    forward_runs = vae.runs
    params = [p for p in vae.decoder.parameters()] + [pyro.param("q").unconstrained()]
    values = torch.autograd.grad(loss, params)
    return sum(saved), values, forward_runs, vae.runs


def test_chunks_bound_the_memory_kept_for_backward():
    """``M = 4 * 4 = 16`` rows of alternatives: run whole, the decoder's activations
    for all 16 rows are kept; in chunks of 4 they are recomputed chunk by chunk."""
    whole, g_whole, fwd_whole, all_whole = saved_bytes_and_grads(None)
    chunked, g_chunked, fwd_chunked, all_chunked = saved_bytes_and_grads(4)
    for a, b in zip(g_whole, g_chunked, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    # one hidden layer of 16 rows x 8 images x 256 units in float64 is 262,144 bytes
    assert whole - chunked > 16 * 8 * HIDDEN * 8
    assert chunked < whole / 3
    # the draw's run and one run over all rows; then the draw's run and four chunks,
    # each run again in the backward pass
    assert (fwd_whole, all_whole) == (2, 2)
    assert (fwd_chunked, all_chunked) == (5, 9)


def test_no_grad_chunks_are_not_recomputed():
    """Under ``torch.no_grad`` (``loss``) the chunks run once each, unchecked."""
    pyro.set_rng_seed(0)
    vae = _VAE()
    TraceILSDiff_ELBO(chunk_size=4).loss(vae.model, vae.guide)
    assert vae.runs == 1  # ``loss`` needs no differences: only the draw's run
    vae.runs = 0
    with torch.no_grad():
        TraceILSDiff_ELBO(chunk_size=4, rao_blackwellize=False).differentiable_loss(
            vae.model, vae.guide
        )
    assert vae.runs == 5
