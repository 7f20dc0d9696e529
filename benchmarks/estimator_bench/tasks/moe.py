"""The mixture-of-experts task (``moe``): the example's gate and experts with a
one-hot expert choice."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from ..models import MixtureOfExperts
from ..models import make_data as moe_data
from .base import Task


class OneHotMoE(MixtureOfExperts):
    """The example's gate and experts with a one-hot expert choice (``z @ W``)."""

    def model(self, x, y, idx):
        pyro.module("moe", self)
        W, b, sigma = self.expert_params(x.device)
        with pyro.plate("data", len(x), subsample=idx, dim=-1):
            xb = x[idx]
            z = pyro.sample("z", dist.OneHotCategorical(logits=self.gate(xb)))
            mean = (xb * (z @ W)).sum(-1) + z @ b
            pyro.sample("y", dist.Normal(mean, z @ sigma), obs=y[idx])

    def guide(self, x, y, idx):
        pyro.module("moe", self)
        with pyro.plate("data", len(x), subsample=idx, dim=-1):
            pyro.sample("z", dist.OneHotCategorical(logits=self.gate(x[idx])))


class MixtureTask(Task):
    name = "moe"
    higher_is_better = True
    primary = "bound"
    primary_label = "exact bound per point, train (higher is better)"
    baseline_dim = 2

    def __init__(self, size, device=torch.device("cpu")):
        super().__init__(size, device)
        s = self.size
        s.setdefault("experts", 4)
        s.setdefault("num_data", 2000)
        s.setdefault("noise", 0.2)
        s.setdefault("batch_size", 64)
        s.setdefault("hidden", 32)
        s.setdefault("gate_init_scale", 8.0)
        s.setdefault("data_seed", 0)
        self.x, self.y = moe_data(s["num_data"], s["noise"], s["data_seed"], device)
        self.test_x, self.test_y = moe_data(
            s["num_data"], s["noise"], s["data_seed"] + 10_000, device
        )
        self.title = (
            f"Mixture of {s['experts']} linear experts, 2-D data (N={s['num_data']}, "
            f"batch {s['batch_size']})"
        )
        self.true_model_bound = -0.5 * math.log(2 * math.pi * s["noise"] ** 2) - 0.5
        self.loss_scale = float(s["num_data"])
        self._grad_idx = torch.arange(s["batch_size"], device=device)

    def reset(self, seed):
        torch.manual_seed(seed)
        s = self.size
        self.net = OneHotMoE(s["experts"], s["hidden"], gate_init_scale=s["gate_init_scale"]).to(
            self.device
        )
        self.net.expert_params(self.device)

    def model(self, idx):
        self.net.model(self.x, self.y, idx)

    def guide(self, idx):
        self.net.guide(self.x, self.y, idx)

    def train_args(self, gen):
        idx = torch.randperm(len(self.x), generator=gen)[: self.size["batch_size"]]
        return (idx.to(self.device),)

    def grad_args(self):
        return (self._grad_idx,)

    def baseline_input(self, idx):
        return self.x[idx]

    def exact_loss(self, idx):
        W, b, sigma = (pyro.param(n) for n in ("W", "b", "sigma"))
        x, y = self.x[idx], self.y[idx]
        log_gate = torch.log_softmax(self.net.gate(x), -1)
        log_lik = dist.Normal(x @ W.T + b, sigma).log_prob(y[:, None])
        bound = (log_gate.exp() * log_lik).sum()
        return -bound * len(self.x) / len(idx)

    def evaluate(self):
        return {"bound": self.net.evaluate(self.x, self.y)["bound"]}

    def final(self):
        train = self.net.evaluate(self.x, self.y)
        test = self.net.evaluate(self.test_x, self.test_y)
        return {
            "bound": train["bound"],
            "test_bound": test["bound"],
            "test_log_lik": test["log_lik"],
            "test_region_accuracy": test["region_accuracy"],
        }

    def is_guide_param(self, name):
        return name.startswith("moe$$$gate")

    @property
    def num_configs(self):
        return self.size["experts"]

    def describe(self):
        return {**super().describe(), "true_model_bound": self.true_model_bound}
