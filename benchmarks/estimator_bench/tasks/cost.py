"""The problem of the cost sweeps (:mod:`benchmarks.estimator_bench.cost`)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from .base import Task


class CostTask(Task):
    """A linear-decoder VAE with free per-image logits: L sites x K categories, 64 pixels.

    ``x ~ Bernoulli(b + sum_l z_l @ W_l)``, uniform prior, guide logits a (B, L, K)
    parameter. Only used to time steps and measure memory.
    """

    name = "cost"

    def __init__(self, size, device=torch.device("cpu")):
        super().__init__(size, device)
        self.L, self.K, self.B = size["latents"], size["categories"], size["batch_size"]
        self.enumerable = self.K**self.L <= size.get("max_configs", 4096)
        gen = torch.Generator().manual_seed(0)
        self.x = (torch.rand(self.B, 64, generator=gen) < 0.3).float().to(device)
        self.title = f"cost: {self.L} sites x {self.K} categories"

    @property
    def baseline_dim(self):
        return 64

    def reset(self, seed):
        gen = torch.Generator().manual_seed(seed)
        self.W0 = 0.1 * torch.randn(self.L, self.K, 64, generator=gen).to(self.device)
        self.l0 = 0.1 * torch.randn(self.B, self.L, self.K, generator=gen).to(self.device)

    def model(self):
        W = pyro.param("W", lambda: self.W0.clone())
        b = pyro.param("b", lambda: torch.zeros(64, device=self.device))
        prior = torch.zeros(self.K, device=self.device)
        with pyro.plate("data", self.B, dim=-1):
            h = b
            for l in range(self.L):
                h = h + pyro.sample(f"z{l}", dist.OneHotCategorical(logits=prior)) @ W[l]
            pyro.sample("x", dist.Bernoulli(logits=h).to_event(1), obs=self.x)

    def guide(self):
        logits = pyro.param("logits", lambda: self.l0.clone())
        with pyro.plate("data", self.B, dim=-1):
            for l in range(self.L):
                pyro.sample(f"z{l}", dist.OneHotCategorical(logits=logits[:, l]))

    def baseline_input(self):
        return self.x

    @property
    def num_configs(self):
        return self.K**self.L
