"""The small tasks with a closed-form objective: the ILS proposal's toy (``toy``) and
the polynomial (``poly``)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from .. import models as toy_kl  # the proposal toy's functions
from .base import Task

# -- the proposal's toy --------------------------------------------------------------


class ProposalToy(Task):
    name = "toy"
    primary_label = "E[f(z)], exact (lower is better)"

    def __init__(self, size, device=torch.device("cpu")):
        super().__init__(size, device)
        self.N, self.K = size.get("N", 5), size.get("K", 5)
        gen = torch.Generator().manual_seed(size.get("true_seed", 0))
        true = torch.rand(self.N, self.K, generator=gen, dtype=torch.float64).float()
        self.true = (true / true.sum(-1, keepdim=True)).to(device)
        f = toy_kl.onehot_objective(self.true)
        self.title = f"Proposal toy (N={self.N} categoricals, K={self.K})"
        self.optimum = f.min(-1).values.sum().item()
        self.at_true = (self.true * f).sum().item()

    def reset(self, seed):
        gen = torch.Generator().manual_seed(seed)
        self.init = torch.rand(self.N, self.K, generator=gen).to(self.device)
        self._logits()

    def _logits(self):
        return pyro.param("logits", lambda: self.init.clone())

    def model(self):
        logits = self._logits()
        with pyro.plate("cats", self.N, dim=-1):
            z = pyro.sample("z", dist.OneHotCategorical(logits=logits))
            pyro.factor("f", (self.true * torch.log(z + toy_kl.EPS)).sum(-1))

    def guide(self):
        logits = self._logits()
        with pyro.plate("cats", self.N, dim=-1):
            pyro.sample("z", dist.OneHotCategorical(logits=logits))

    baseline_dim = 5

    def baseline_input(self):
        return torch.eye(self.N, device=self.device)

    def exact_loss(self):
        return toy_kl.expected_objective(self.true, pyro.param("logits")[None])[0]

    @torch.no_grad()
    def evaluate(self):
        logits = pyro.param("logits")[None]
        return {
            "objective": toy_kl.expected_objective(self.true, logits)[0].item(),
            "kl_true_pi": toy_kl.kl_true_pi(self.true, logits)[0].item(),
        }

    def is_guide_param(self, name):
        return name == "logits"

    @property
    def num_configs(self):
        return self.K  # the N sites are independent (a plate): K values each

    def describe(self):
        return {
            **super().describe(),
            "optimum": self.optimum,
            "objective_at_pi_true": self.at_true,
            "objective": "-sum(true * log(z + 1e-8)), summed over the N categoricals",
        }


# -- polynomial ----------------------------------------------------------------------


class Polynomial(Task):
    name = "poly"
    primary_label = "E[(z - t)^2] - min (lower is better)"

    def __init__(self, size, device=torch.device("cpu")):
        super().__init__(size, device)
        self.D, self.t = size.get("D", 4), size.get("t", 0.45)
        self.title = f"Polynomial E[(z - {self.t})^2], {self.D} two-category latents"
        self.optimum = self.D * min(self.t, 1 - self.t) ** 2

    def reset(self, seed):
        self.init = torch.zeros(self.D, 2, device=self.device)
        self._logits()

    def _logits(self):
        return pyro.param("logits", lambda: self.init.clone())

    def model(self):
        logits = self._logits()
        with pyro.plate("bits", self.D, dim=-1):
            z = pyro.sample("z", dist.OneHotCategorical(logits=logits))
            pyro.factor("f", -((z[..., 1] - self.t) ** 2))

    def guide(self):
        logits = self._logits()
        with pyro.plate("bits", self.D, dim=-1):
            pyro.sample("z", dist.OneHotCategorical(logits=logits))

    @property
    def baseline_dim(self):
        return self.D

    def baseline_input(self):
        return torch.eye(self.D, device=self.device)

    def exact_loss(self):
        p = torch.softmax(pyro.param("logits"), -1)[..., 1]
        return (p * (1 - self.t) ** 2 + (1 - p) * self.t**2).sum()

    @torch.no_grad()
    def evaluate(self):
        return {"objective": self.exact_loss().item() - self.optimum}

    def is_guide_param(self, name):
        return name == "logits"

    @property
    def num_configs(self):
        return 2

    def describe(self):
        return {**super().describe(), "optimum": self.optimum}
