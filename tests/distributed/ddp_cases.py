"""What the two-process tests share: a small mixture with an encoder guide, every
exported ELBO, and the process-group setup.

The model has one ``OneHotCategorical`` latent per data point, used in
differentiable arithmetic (``z @ locs``), so that every ELBO of the package applies
(the multi-evaluation estimators need relaxable one-hot sites; ``TraceILSCV_ELBO``
refuses integer ``Categorical`` sites by design). The guide also holds a parameter
that no step uses (``unused``), as a discrete branch that no draw took would.
"""

from __future__ import annotations

import contextlib
import datetime
import os

import pyro
import pyro.distributions as dist
import torch
import torch.distributed as tdist
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from pyro_ils import (
    TraceEnumILS_ELBO,
    TraceGraphILS_ELBO,
    TraceILS_ELBO,
    TraceILSCV_ELBO,
    TraceILSDiff_ELBO,
)
from pyro_ils.estimators import (
    TraceMuProp_ELBO,
    TraceREBAR_ELBO,
    TraceRELAX_ELBO,
    TraceRLOO_ELBO,
)

N, D, K = 16, 2, 3  # data points, dimensions, components


def data() -> torch.Tensor:
    """Two clusters' worth of points (fixed, the same on every rank)."""
    g = torch.Generator().manual_seed(123)
    centers = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]])
    return centers[torch.arange(N) % K] + 0.5 * torch.randn(N, D, generator=g)


@contextlib.contextmanager
def weighted(mask, scale):
    """The sites of one rank's half of the batch in the gradient check: the other
    half masked out, this half scaled as a subsampled plate would scale it."""
    with poutine.mask(mask=True if mask is None else mask), poutine.scale(scale=scale):
        yield


class Model(PyroModule):
    """``x`` is the minibatch ``data[idx]``; the plate has the full size ``N``."""

    def __init__(self) -> None:
        super().__init__()
        self.locs = nn.Parameter(torch.randn(K, D))

    def forward(self, x, idx, mask=None, scale=1.0):
        with pyro.plate("data", N, subsample=idx), weighted(mask, scale):
            z = pyro.sample("z", dist.OneHotCategorical(logits=x.new_zeros(K)))
            pyro.sample("x", dist.Normal(z @ self.locs, 1.0).to_event(1), obs=x)


class Guide(PyroModule):
    def __init__(self, site_infer: dict | None = None) -> None:
        super().__init__()
        self.encoder = nn.Linear(D, K)
        self.unused = nn.Parameter(torch.zeros(2))
        self.site_infer = site_infer or {}

    def forward(self, x, idx, mask=None, scale=1.0):
        logits = self.encoder(x)
        with pyro.plate("data", N, subsample=idx), weighted(mask, scale):
            pyro.sample("z", dist.OneHotCategorical(logits=logits), infer=self.site_infer)


#: For TraceGraphILS_ELBO: the site is left to TraceGraph's score function with a
#: decaying-average baseline (state in the param store), so that its own surrogate,
#: not the default's per-site choice, is exercised.
BASELINE_SITE = {"ils": False, "baseline": {"use_decaying_avg_baseline": True}}


def elbos() -> dict[str, tuple]:
    """``name: (make_elbo, guide site infer)`` for every exported ELBO."""
    return {
        "TraceILS_ELBO": (TraceILS_ELBO, None),
        "TraceILS_ELBO-midpoint": (lambda: TraceILS_ELBO(projection="midpoint"), None),
        "TraceGraphILS_ELBO": (TraceGraphILS_ELBO, BASELINE_SITE),
        "TraceGraphILS_ELBO-default": (TraceGraphILS_ELBO, None),
        "TraceEnumILS_ELBO": (lambda: TraceEnumILS_ELBO(max_plate_nesting=1), None),
        "TraceILSDiff_ELBO": (TraceILSDiff_ELBO, None),
        "TraceILSCV_ELBO": (lambda: TraceILSCV_ELBO(num_samples=2), None),
        "TraceRLOO_ELBO": (lambda: TraceRLOO_ELBO(num_samples=3), None),
        "TraceMuProp_ELBO": (TraceMuProp_ELBO, None),
        "TraceREBAR_ELBO": (TraceREBAR_ELBO, None),
        "TraceRELAX_ELBO": (TraceRELAX_ELBO, None),
    }


def build(name: str, seed: int = 0, device="cpu"):
    """``(model, guide, elbo)`` for the case ``name``, parameters from ``seed``."""
    make_elbo, site_infer = elbos()[name]
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return Model().to(device), Guide(site_infer).to(device), make_elbo()


def init_process_group(rank: int, world: int, port: int, backend: str = "gloo", timeout=30):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    tdist.init_process_group(
        backend,
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout),
    )


def flat_params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def flat_grads(module: torch.nn.Module) -> torch.Tensor:
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in module.parameters()]
    return torch.cat([g.reshape(-1) for g in grads])
