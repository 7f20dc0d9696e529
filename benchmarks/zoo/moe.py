"""The mixture-of-experts bound of the seed question (Cross Validated, post 383466), as
this repository's ``examples/mixture_of_experts.py`` writes it.

**Model.** A neural gate ``p(z | x)`` (2-32-4, tanh; its initial weights scaled by 8,
the example's sharp random start) picks one of K = 4 linear experts, ``y ~ N(x . W[z]
+ b[z], sigma[z])``, with ``W``, ``b``, ``sigma`` parameters indexed by the integer draw.
**Guide:** the same gate, ``z ~ Categorical(logits=gate(x))``, carrying the
decaying-average baseline that the example gives ``TraceGraph_ELBO`` (the other ELBOs
ignore it). Since ``q(z | x) = p(z | x)``, the ELBO is the bound ``sum_z p(z | x) log
p(y | z, x)``.

**Data** (generated here, as the example does): ``x`` uniform on [-1, 1]^2, the four
quadrants each with its own line plus noise of sd 0.2; 2,000 training points (seed 0)
and 2,000 held-out points (seed 1); minibatches of 256 without replacement, passed to
the plate as ``subsample`` so that every estimator sees the same ones at a seed.

**Metrics**, per held-out point: ``elbo``, the bound computed exactly over the four
experts (the convergence rule reads it); ``log_px``, the mixture log-likelihood
``log sum_z p(z | x) p(y | z, x)`` (exact: z is enumerable); ``region_accuracy``, the
gate's most likely expert against the quadrant under the best matching of experts to
quadrants; ``rmse`` of the predicted mean against the noise-free truth. A model that
knew the truth scores about 0.19 on ``elbo``.

**Estimators**: all of the mixtures' (``TraceEnum_ELBO`` enumerates the guide's ``z``).
Adam at the example's 0.01 out of the box.

**Cap.** 2,000 steps (the example runs 1,500), at least 500, ``elbo`` every 100. Measured
ms per step (300 steps, one thread, the 2-core CPU shared with two other suites): trace
16, tracegraph 29, enum 15, ils_default 20, ils_midpoint 16, ils_original 20, reinmax
19, st_gumbel 20.
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

from benchmarks.estimator_bench.models import make_data
from benchmarks.estimator_bench.models import true_mean as _true_mean
from benchmarks.estimator_bench.models import true_region as _region

from .estimators import Estimator
from .mixtures import _ALL, _MORE_PEERS, _PEERS, SMALL_TASK_SEEDS, Epochs, Task, run_generator

K, HIDDEN, NOISE, N = 4, 32, 0.2, 2000


def _data(seed: int):
    """The data of the example (the estimator benchmark's ``moe`` task's generator)."""
    return make_data(N, NOISE, seed, "cpu")


class MixtureOfExperts(Task):
    name = "moe"
    title = "Mixture of experts, the Jensen bound (seed Q&A)"
    source = "examples/mixture_of_experts.py (this repository); Cross Validated post 383466"
    lr = 0.01
    lr_grid = (0.002, 0.01, 0.05)
    batch_size = 256
    max_steps, min_steps, eval_every, tol = 2000, 500, 100, 1e-3
    estimators = _ALL + _PEERS + _MORE_PEERS
    reported_seeds = SMALL_TASK_SEEDS
    metric_name = "bound per point (z exact)"

    def __init__(self, quick: bool = False):
        self.x, self.y = _data(0)
        self.x_test, self.y_test = _data(1)
        if quick:
            self.max_steps, self.min_steps, self.eval_every = 40, 20, 20

    def reset(self, estimator: Estimator) -> None:
        super().reset(estimator)
        self.gate = nn.Sequential(nn.Linear(2, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, K))
        with torch.no_grad():  # the example's sharp random start
            for layer in (self.gate[0], self.gate[2]):
                layer.weight.mul_(8.0)
        self._experts()  # made from the seed, before any draw
        self._next = Epochs(N, self.batch_size, run_generator())

    def _experts(self):
        W = pyro.param("W", lambda: 0.5 * torch.randn(K, 2))
        b = pyro.param("b", lambda: torch.zeros(K))
        sigma = pyro.param("sigma", lambda: torch.ones(K), constraint=constraints.positive)
        return W, b, sigma

    def batch(self) -> tuple:
        return self.x, self.y, self._next()

    def model(self, x, y, idx):
        pyro.module("moe", self.gate)
        W, b, sigma = self._experts()
        with pyro.plate("data", len(x), subsample=idx):
            xb = x[idx]
            z = pyro.sample("z", dist.Categorical(logits=self.gate(xb)))
            mean = (W[z] * xb).sum(-1) + b[z]
            pyro.sample("y", dist.Normal(mean, sigma[z]), obs=y[idx])

    def guide(self, x, y, idx):
        pyro.module("moe", self.gate)
        with pyro.plate("data", len(x), subsample=idx):
            infer = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}}
            fn = self.estimator.site_dist(dist.Categorical)(logits=self.gate(x[idx]))
            pyro.sample("z", fn, infer={**infer, **self.estimator.site_infer})

    def _terms(self):
        W, b, sigma = (pyro.param(n).detach() for n in ("W", "b", "sigma"))
        x = self.x_test
        log_gate = self.gate(x).detach().log_softmax(-1)
        means = x @ W.T + b
        return log_gate, dist.Normal(means, sigma).log_prob(self.y_test[:, None]), means

    def metric(self) -> float:
        log_gate, log_lik, _ = self._terms()
        return float((log_gate.exp() * log_lik).sum(-1).mean())

    def evaluate(self) -> dict:
        log_gate, log_lik, means = self._terms()
        pick, region = log_gate.argmax(-1), _region(self.x_test)
        accuracy = max(
            float((pick == torch.tensor(p)[region]).float().mean())
            for p in itertools.permutations(range(K))
        )
        predicted = (log_gate.exp() * means).sum(-1)
        return {
            "elbo": self.metric(),
            "log_px": float((log_gate + log_lik).logsumexp(-1).mean()),
            "region_accuracy": accuracy,
            "rmse": float((predicted - _true_mean(self.x_test)).pow(2).mean().sqrt()),
        }


TASKS = {t.name: t for t in (MixtureOfExperts,)}
