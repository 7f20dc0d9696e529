"""The model code of the estimator benchmark's tasks, kept here so that the
benchmark does not import ``examples/``.

Each piece is the one of the example named below, as that example had it when the
benchmark's first recorded results (now frozen:
``benchmarks/results/frozen/estimators_2026-12.json``) were run; the examples stay
the user-facing programs and may change on their own.

* the ILS proposal's toy (``examples/toy_kl.py``): :data:`EPS`,
  :func:`onehot_objective`, :func:`kl_true_pi`, :func:`expected_objective`;
* the mixture of experts (``examples/mixture_of_experts.py``): :func:`make_data`
  and :class:`MixtureOfExperts` (gate, experts, exact evaluation);
* the categorical VAE (``examples/categorical_vae.py``): :func:`load_binarized_digits`
  and :class:`CategoricalVAE` (encoder and decoder).
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from torch.distributions import constraints

# -- the proposal's toy ---------------------------------------------------------------

EPS = 1e-8


def onehot_objective(true):
    """f(e_k) for every category k of every categorical: shape true.shape."""
    return -true * math.log1p(EPS) - (1 - true) * math.log(EPS)


def kl_true_pi(true, logits):
    """KL(true || pi) summed over the N categoricals: shape (R,)."""
    log_pi = torch.log_softmax(logits, -1)
    return (true * (torch.log(true) - log_pi)).sum((-2, -1))


def expected_objective(true, logits):
    """E_{k ~ pi} f(e_k), exactly, summed over the N categoricals: shape (R,)."""
    return (torch.softmax(logits, -1) * onehot_objective(true)).sum((-2, -1))


# -- the mixture of experts -------------------------------------------------------------

# The four regions (quadrants, indexed 2 * [x1 > 0] + [x2 > 0]) and their lines.
TRUE_W = torch.tensor([[1.5, -1.0], [-2.0, 0.5], [0.5, 2.0], [-1.0, -1.5]])
TRUE_B = torch.tensor([1.0, -1.0, 0.5, -0.5])


def true_region(x):
    return 2 * (x[..., 0] > 0).long() + (x[..., 1] > 0).long()


def true_mean(x):
    r = true_region(x)
    return (TRUE_W.to(x.device)[r] * x).sum(-1) + TRUE_B.to(x.device)[r]


def make_data(n, noise, seed, device):
    gen = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand(n, 2, generator=gen) - 1
    y = true_mean(x) + noise * torch.randn(n, generator=gen)
    return x.to(device), y.to(device)


class MixtureOfExperts(nn.Module):
    """A neural gate over K linear experts (the task writes ``model`` and ``guide``)."""

    def __init__(self, experts=4, hidden=32, dim=2, gate_init_scale=8.0):
        super().__init__()
        self.experts, self.dim = experts, dim
        self.gate = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, experts))
        # A sharp random initial partition: each expert starts with its own territory.
        with torch.no_grad():
            for layer in (self.gate[0], self.gate[2]):
                layer.weight.mul_(gate_init_scale)

    def expert_params(self, device):
        K, D = self.experts, self.dim
        W = pyro.param("W", lambda: 0.5 * torch.randn(K, D, device=device))
        b = pyro.param("b", lambda: torch.zeros(K, device=device))
        sigma = pyro.param(
            "sigma", lambda: torch.ones(K, device=device), constraint=constraints.positive
        )
        return W, b, sigma

    @torch.no_grad()
    def evaluate(self, x, y):
        """Exact bound, mixture log-likelihood, region accuracy and RMSE (per point)."""
        W, b, sigma = (pyro.param(n) for n in ("W", "b", "sigma"))
        log_gate = torch.log_softmax(self.gate(x), -1)  # (N, K)
        means = x @ W.T + b  # (N, K)
        log_lik = dist.Normal(means, sigma).log_prob(y[:, None])  # (N, K)
        bound = (log_gate.exp() * log_lik).sum(-1).mean().item()
        mixture = torch.logsumexp(log_gate + log_lik, -1).mean().item()
        pick = log_gate.argmax(-1)
        region = true_region(x)
        accuracy = 0.0
        for perm in itertools.permutations(range(max(4, self.experts)), 4):
            # experts perm[r] <-> region r; experts beyond 4 match no region
            perm = torch.tensor(perm, device=x.device)
            accuracy = max(accuracy, (pick == perm[region]).float().mean().item())
        predicted = (log_gate.exp() * means).sum(-1)
        rmse = (predicted - true_mean(x)).pow(2).mean().sqrt().item()
        return {"bound": bound, "log_lik": mixture, "region_accuracy": accuracy, "rmse": rmse}


# -- the categorical VAE ----------------------------------------------------------------


def load_binarized_digits(device, dtype=torch.float32, seed=0):
    """scikit-learn's ``load_digits``, pixels binarized at 8/16, split 80/20."""
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().data, dtype=dtype) > 8
    images = images.to(dtype)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(images))
    return images[perm[:n_train]].to(device), images[perm[n_train:]].to(device)


class CategoricalVAE(nn.Module):
    """The encoder and decoder of the example's VAE (the task writes the model)."""

    def __init__(self, latents=3, categories=8, pixels=64, hidden=128):
        super().__init__()
        self.latents, self.categories = latents, categories
        self.encoder = nn.Sequential(
            nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, latents * categories)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latents * categories, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )
