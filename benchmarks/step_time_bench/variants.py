"""The variants of the SVI step-time benchmark (:mod:`benchmarks.step_time`): what each
one runs, the model and guide they time, and the data.

Every variant is ``(model, guide, loss)`` on a K-component Gaussian mixture; see the
benchmark's docstring for what each measures and why.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO

from pyro_ils import TraceILS_ELBO
from pyro_ils.estimators import ILS, ReinMax, StraightThrough

#: The target: an ILS step at most this multiple of straight-through's.
TARGET_RATIO = 1.3
#: The ILS variants of the headline, each over :data:`REFERENCE`.
HEADLINE_ILS = ("ils_midpoint", "ils_euclidean")
REFERENCE = "st_index"
#: The earlier baseline (another writing of the model), a column of context.
ISSUE_BASELINE = "pyro_st_gumbel_matmul"
#: The estimators of the variants run as ``TraceILS_ELBO(estimator=...)``.
ESTIMATORS = {
    "ils_midpoint": lambda: ILS(0.0, "midpoint"),
    "ils_euclidean": lambda: ILS(1.0, "euclidean"),
    "st_index": StraightThrough,
    "reinmax_index": lambda: ReinMax(1.0),
}

VARIANTS = {
    "ils_midpoint": {
        "label": '`TraceILS_ELBO(estimator=ILS(0.0, "midpoint"))`',
        "role": "headline (ILS)",
    },
    "ils_euclidean": {
        "label": '`TraceILS_ELBO(estimator=ILS(1.0, "euclidean"))`',
        "role": "headline (ILS)",
    },
    "st_index": {
        "label": "`TraceILS_ELBO(estimator=StraightThrough())`",
        "role": "headline (reference)",
    },
    "reinmax_index": {
        "label": "`TraceILS_ELBO(estimator=ReinMax(1.0))`",
        "role": "same model",
    },
    "default_index": {
        "label": "`TraceILS_ELBO()`, the default",
        "role": "same model, own row",
    },
    "reinforce_index": {
        "label": "`Trace_ELBO()`, score function",
        "role": "context",
    },
    "pyro_st_gumbel_matmul": {
        "label": "`Trace_ELBO()`, Pyro's `RelaxedOneHotCategoricalStraightThrough`, "
        "model written `z @ locs`",
        "role": "context (the earlier baseline: another writing of the model)",
    },
}


def make_data(n: int, k: int, dim: int, scale: float, seed: int, device: torch.device):
    """N points from a K-component Gaussian mixture, and initial ``locs`` (K data points)."""
    gen = torch.Generator().manual_seed(seed)
    centers = 10.0 * (2.0 * torch.rand(k, dim, generator=gen) - 1.0)
    assign = torch.randint(k, (n,), generator=gen)
    data = centers[assign] + scale * torch.randn(n, dim, generator=gen)
    init_locs = data[torch.randperm(n, generator=gen)[:k]].clone()
    return data.to(device), init_locs.to(device)


def make_variant(name: str, data, init_locs, scale: float, temperature: float):
    """``(model, guide, loss)`` for one variant; its params are prefixed by its name."""
    n, k = data.shape[0], init_locs.shape[0]
    device = data.device
    prior_logits = torch.zeros(k, device=device)
    init_logits = torch.zeros(n, k, device=device)
    temp = torch.tensor(temperature, device=device)

    def locs_param():
        return pyro.param(f"{name}.locs", init_locs.clone())

    def logits_param():
        return pyro.param(f"{name}.logits", init_logits.clone())

    def model_index(data):
        locs = locs_param()
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Categorical(logits=prior_logits))
            pyro.sample("x", dist.Normal(locs[z], scale).to_event(1), obs=data)

    def model_matmul(data):
        locs = locs_param()
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior_logits))
            pyro.sample("x", dist.Normal(z @ locs, scale).to_event(1), obs=data)

    def guide_categorical(data):
        logits = logits_param()
        with pyro.plate("data", n):
            pyro.sample("z", dist.Categorical(logits=logits))

    def guide_st(data):
        logits = logits_param()
        with pyro.plate("data", n):
            # validate_args=False: in float32, clamp_probs leaves the relaxed value a
            # hair off the simplex and Pyro's support check rejects it.
            st = dist.RelaxedOneHotCategoricalStraightThrough(
                temp, logits=logits, validate_args=False
            )
            pyro.sample("z", st)

    if name in ESTIMATORS:
        return model_index, guide_categorical, TraceILS_ELBO(estimator=ESTIMATORS[name]())
    if name == "default_index":
        return model_index, guide_categorical, TraceILS_ELBO()
    if name == "reinforce_index":
        return model_index, guide_categorical, Trace_ELBO()
    if name == ISSUE_BASELINE:
        return model_matmul, guide_st, Trace_ELBO()
    raise ValueError(f"unknown variant {name!r}")
