"""Mixtures: the README quickstart and Pyro's Dirichlet-process mixture tutorial.

Each task keeps its source's model and guide; only the discrete guide site's class
and ``infer`` come from the estimator (see :mod:`.estimators`). The metric is the
ELBO with the discrete sites summed out exactly (``sum_k q(z = k) ...``) and the
continuous ones averaged over fixed noise (common random numbers, so that a curve
is not jittered by the evaluation), and the importance-weighted bound on
``log p(x)`` with ``z`` marginalized exactly, from 1,000 draws of the guide.
"""

from __future__ import annotations

import contextlib
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import constraints

from .estimators import Estimator

#: ``TraceILSDiff_ELBO()`` is not run on its own: on these models the default gives
#: every site exact differences, with the very gradients of ``TraceILSDiff_ELBO()``
#: (``tests/infer/test_site_choice.py``).
_ALL = ("trace", "tracegraph", "enum", "ils_default", "ils_midpoint", "ils_original")
_PEERS = ("reinmax", "st_gumbel")
#: The peers added with Gumbel-Rao, GST, IndeCateR and matched-cost RLOO (every
#: small task's guide is mean field, and the exact differences run on it).
_MORE_PEERS = ("gumbel_rao", "gst", "indecater", "rloo_matched")
#: Reported seeds on the small tasks (the MNIST ones keep :attr:`Task.reported_seeds`).
SMALL_TASK_SEEDS = tuple(range(10))


class Task:
    """What the runner needs of a zoo model."""

    name = ""
    title = ""
    source = ""
    lr = 0.05  #: the learning rate of the source (the "out of the box" column)
    max_steps, min_steps, eval_every, tol = 2000, 500, 50, 1e-3
    max_plate_nesting = 1
    estimators: tuple[str, ...] = _ALL + _PEERS
    metric_name = "ELBO (z exact)"
    #: the seeds of the reported runs (``python -m benchmarks run zoo``; ``--seeds n``
    #: takes the first ``n``)
    reported_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def reset(self, estimator: Estimator) -> None:
        self.estimator = estimator

    def site(self, name, cls, **params):
        """The discrete guide site, drawn as the estimator asks."""
        fn = self.estimator.site_dist(cls)(**params)
        return pyro.sample(name, fn, infer=dict(self.estimator.site_infer))

    def batch(self) -> tuple:
        return (self.data,)


class Epochs:
    """Minibatches of ``size`` indices out of ``n``, without replacement, epoch by
    epoch, from ``generator`` (seeded from the run's seed, so that every estimator
    sees the same minibatches at a seed)."""

    def __init__(self, n: int, size: int, generator: torch.Generator):
        self.n, self.size, self.generator = n, size, generator
        self._order = torch.empty(0, dtype=torch.long)

    def __call__(self) -> torch.Tensor:
        if len(self._order) < self.size:  # a new epoch
            self._order = torch.randperm(self.n, generator=self.generator)
        idx, self._order = self._order[: self.size], self._order[self.size :]
        return idx


def run_generator() -> torch.Generator:
    """A generator seeded from the run's seed (``torch.initial_seed()`` after
    ``pyro.set_rng_seed``)."""
    return torch.Generator().manual_seed(torch.initial_seed())


@contextlib.contextmanager
def _noise(seed: int = 12345):
    """Fixed noise for an evaluation, leaving the training's RNG state as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


class Quickstart(Task):
    """The README quickstart: three unit-variance Gaussian clusters at -4, 0 and 4
    (100 points each), ``locs`` a parameter, a per-point ``Categorical`` guide with
    its own logits, minibatches of 100, Adam 0.05, 500 steps in the README."""

    name = "quickstart"
    title = "README quickstart mixture"
    source = "README.md (this repository)"
    lr = 0.05
    max_steps, min_steps, eval_every, tol = 2000, 500, 50, 1e-3
    estimators = _ALL + _PEERS + _MORE_PEERS
    reported_seeds = SMALL_TASK_SEEDS
    K = 3

    def __init__(self, quick: bool = False):
        gen = torch.Generator().manual_seed(0)
        self.data = torch.cat([torch.randn(100, generator=gen) + c for c in (-4.0, 0.0, 4.0)])
        if quick:
            self.max_steps, self.min_steps, self.eval_every = 60, 20, 20

    def model(self, data):
        locs = pyro.param("locs", torch.tensor([-1.0, 0.0, 1.0]))
        with pyro.plate("data", len(data), subsample_size=100) as idx:
            z = pyro.sample("z", dist.Categorical(torch.ones(self.K) / self.K))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=data[idx])

    def guide(self, data):
        logits = pyro.param("logits", torch.zeros(len(data), self.K))
        with pyro.plate("data", len(data), subsample_size=100) as idx:
            self.site("z", dist.Categorical, logits=logits[idx])

    def _joint(self):
        locs = pyro.param("locs").detach()
        log_joint = dist.Normal(locs, 1.0).log_prob(self.data.unsqueeze(-1)) - math.log(self.K)
        return log_joint, pyro.param("logits").detach().log_softmax(-1)

    def metric(self) -> float:
        log_joint, log_q = self._joint()
        return float((log_q.exp() * (log_joint - log_q)).sum())

    def evaluate(self) -> dict:
        log_joint, _ = self._joint()
        locs = pyro.param("locs").detach().sort().values
        return {
            "elbo": self.metric(),
            "log_px": float(log_joint.logsumexp(-1).sum()),  # exact: z is enumerable
            "locs": locs.tolist(),
            "locs_error": float((locs - torch.tensor([-4.0, 0.0, 4.0])).abs().max()),
        }


def mix_weights(beta):
    """Stick-breaking weights of the ``T - 1`` fractions ``beta``: ``T`` weights."""
    beta1m_cumprod = (1 - beta).cumprod(-1)
    return F.pad(beta, (0, 1), value=1) * F.pad(beta1m_cumprod, (1, 0), value=1)


class _DPMixture(Task):
    """The stick-breaking DP mixture of the tutorial: ``beta ~ Beta(1, alpha)``,
    ``T`` component parameters, ``z ~ Categorical(mix_weights(beta))`` per point; the
    guide is mean field with a free ``phi`` per point (``constraints.simplex``)."""

    source = "pyro tutorial/source/dirichlet_process_mixture.ipynb"
    T, alpha = 6, 0.1
    particles, iw_samples = 64, 1000
    max_steps, min_steps, eval_every, tol = 1500, 300, 50, 1e-3
    estimators = tuple(n for n in _ALL + _PEERS if n != "ils_original") + _MORE_PEERS
    reported_seeds = SMALL_TASK_SEEDS

    def _quick(self, quick: bool) -> None:
        if quick:
            self.max_steps, self.min_steps, self.eval_every = 40, 20, 20
            self.particles, self.iw_samples = 4, 16

    def _priors(self):
        raise NotImplementedError

    def model(self, data):
        with pyro.plate("beta_plate", self.T - 1):
            beta = pyro.sample("beta", dist.Beta(1, self.alpha))
        with pyro.plate(self.component_plate, self.T):
            theta = pyro.sample(self.component_site, self.component_prior())
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Categorical(mix_weights(beta)))
            pyro.sample("obs", self.likelihood(theta[z]), obs=data)

    def guide(self, data):
        kappa = pyro.param(
            "kappa",
            lambda: dist.Uniform(0, 2).sample([self.T - 1]),
            constraint=constraints.positive,
        )
        self.component_params()
        phi = pyro.param(
            "phi",
            lambda: dist.Dirichlet(1 / self.T * torch.ones(self.T)).sample([len(data)]),
            constraint=constraints.simplex,
        )
        with pyro.plate("beta_plate", self.T - 1):
            pyro.sample("beta", dist.Beta(torch.ones(self.T - 1), kappa))
        with pyro.plate(self.component_plate, self.T):
            pyro.sample(self.component_site, self.component_guide())
        with pyro.plate("data", len(data)):
            self.site("z", dist.Categorical, probs=phi)

    def _terms(self, samples: int):
        """Per draw of the continuous sites: ``log p(beta, theta) - log q(beta, theta)``
        and the data's ``log p(x_n, z_n = k | beta, theta)``, shapes ``(S,)``, ``(S, N, T)``."""
        kappa = pyro.param("kappa").detach()
        q_beta = dist.Beta(torch.ones(self.T - 1), kappa)
        q_theta = self.component_guide(detach=True)
        beta = q_beta.sample([samples]).clamp(1e-6, 1 - 1e-6)
        theta = q_theta.sample([samples])
        log_w = dist.Beta(1.0, self.alpha).log_prob(beta).sum(-1) - q_beta.log_prob(beta).sum(-1)
        log_w = log_w + self.component_prior().log_prob(theta).sum(-1)
        log_w = log_w - q_theta.log_prob(theta).sum(-1)
        log_mix = mix_weights(beta).clamp(min=1e-30).log()  # (S, T)
        x = self.data.reshape((1, -1, 1) + self.data.shape[1:])
        log_lik = self.likelihood(theta.unsqueeze(1)).log_prob(x)  # (S, N, T)
        return log_w, log_mix.unsqueeze(1) + log_lik

    def metric(self) -> float:
        with _noise():
            log_w, log_joint = self._terms(self.particles)
        phi = pyro.param("phi").detach()
        log_phi = phi.clamp(min=1e-30).log()
        local = (phi * (log_joint - log_phi)).sum((-1, -2))
        return float((log_w + local).mean())

    def evaluate(self) -> dict:
        with _noise(54321):
            log_w, log_joint = self._terms(self.iw_samples)
        log_px = log_w + log_joint.logsumexp(-1).sum(-1)
        phi = pyro.param("phi").detach()
        used = int((phi.sum(0) > 1.0).sum())  # components holding more than one point's mass
        return {
            "elbo": self.metric(),
            "iw_bound": float(log_px.logsumexp(0) - math.log(self.iw_samples)),
            "components_used": used,
        }


class DPGaussian(_DPMixture):
    """The tutorial's synthetic part: 200 points from four unit 2-D Gaussians at
    (-8, -8), (8, 8), (1.5, 2) and (-0.5, 1); ``T = 6``, ``alpha = 0.1``, Gaussian
    components with a ``N(0, 5 I)`` prior, unit-covariance guide; Adam 0.05."""

    name = "dp_gaussian"
    title = "Dirichlet-process mixture, Gaussian (Pyro tutorial)"
    component_plate, component_site = "mu_plate", "mu"
    T, alpha = 6, 0.1

    def __init__(self, quick: bool = False):
        gen = torch.Generator().manual_seed(0)
        centers = torch.tensor([[-8.0, -8.0], [8.0, 8.0], [1.5, 2.0], [-0.5, 1.0]])
        self.data = torch.cat([c + torch.randn(50, 2, generator=gen) for c in centers])
        self._quick(quick)

    def component_prior(self):
        return dist.MultivariateNormal(torch.zeros(2), 5 * torch.eye(2))

    def component_params(self):
        pyro.param(
            "tau",
            lambda: dist.MultivariateNormal(torch.zeros(2), 3 * torch.eye(2)).sample([self.T]),
        )

    def component_guide(self, detach=False):
        tau = pyro.param("tau")
        return dist.MultivariateNormal(tau.detach() if detach else tau, torch.eye(2))

    def likelihood(self, mu):
        return dist.MultivariateNormal(mu, torch.eye(2))


class DPPoisson(_DPMixture):
    """The tutorial's sunspot part, on counts generated here in the range of the yearly
    sunspot series (0 to about 270, 11-year cycles; that file cannot be downloaded
    here): ``T = 20``, ``alpha = 1.1``, ``Gamma(3, 0.05)`` rates, Gamma guide; Adam 0.05."""

    name = "dp_poisson"
    title = "Dirichlet-process mixture, Poisson (Pyro tutorial, generated counts)"
    component_plate, component_site = "lambda_plate", "lambda"
    T, alpha = 20, 1.1

    def __init__(self, quick: bool = False):
        gen = torch.Generator().manual_seed(0)
        years = torch.arange(319.0)  # 1700 to 2018, as the yearly series
        amplitude = 60 + 60 * torch.rand(len(years) // 11 + 1, generator=gen)
        cycle = amplitude.repeat_interleave(11)[: len(years)]
        rate = 5 + cycle * torch.sin(math.pi * (years % 11) / 11).square()
        self.data = torch.poisson(rate, generator=gen)
        self._quick(quick)

    def component_prior(self):
        return dist.Gamma(3.0, 0.05)

    def component_params(self):
        pyro.param(
            "tau_0", lambda: dist.Uniform(0, 5).sample([self.T]), constraint=constraints.positive
        )
        pyro.param(
            "tau_1", lambda: dist.LogNormal(-1, 1).sample([self.T]), constraint=constraints.positive
        )

    def component_guide(self, detach=False):
        a, b = pyro.param("tau_0"), pyro.param("tau_1")
        return dist.Gamma(a.detach(), b.detach()) if detach else dist.Gamma(a, b)

    def likelihood(self, lam):
        return dist.Poisson(lam)


TASKS = {t.name: t for t in (Quickstart, DPGaussian, DPPoisson)}
