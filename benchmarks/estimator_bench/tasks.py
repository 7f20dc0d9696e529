"""The benchmark's problems, written so that every estimator applies to them.

Every guide draws its discrete latents from plain ``dist.OneHotCategorical`` sites
and every model uses the one-hot values in arithmetic (matrix products), so an
estimator only has to change how the guide's sites are drawn. Each task knows its
exact objective (closed form or enumeration), which the gradient-quality
measurement differentiates and the training curves report.

Tasks (``name``):

* ``toy``: the ILS proposal's toy (``examples/toy_kl.py``): N=5 categoricals with
  K=5 categories, objective ``E[-sum(true * log(z + 1e-8))]``;
* ``moe``: the mixture-of-experts bound ``sum_z p(z|x) log p(y|z,x)``
  (``examples/mixture_of_experts.py``: same data, gate network and experts, here with a
  one-hot expert choice ``z @ W``);
* ``vae_small`` / ``vae_large``: categorical VAEs on binarized ``load_digits``
  (``examples/categorical_vae.py``: same data split and networks, one site per latent);
* ``poly``: ``E[(z - t)^2]`` over 2-category latents, t = 0.45 (closed form).

The model's prior on ``z`` in ``toy``, ``moe`` and ``poly`` is the guide's own
distribution (as in the mixture-of-experts example), so ``log p(z) - log q(z) = 0``
and the ELBO is exactly the objective.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from . import models as toy_kl  # the proposal toy's functions
from .models import CategoricalVAE, MixtureOfExperts, load_binarized_digits
from .models import make_data as moe_data


class Task:
    name = ""
    title = ""
    enumerable = True
    max_plate_nesting = 1
    higher_is_better = False
    primary = "objective"
    primary_label = ""
    baseline_dim = 1
    #: ``svi.step`` returns the loss of the whole data set; divided by this: per unit.
    loss_scale = 1.0

    def __init__(self, size: dict, device=torch.device("cpu")):
        self.size = dict(size)
        self.device = device

    # what the benchmark calls
    def reset(self, seed: int) -> None:
        """Fresh parameters for ``seed`` (the param store is cleared by the caller)."""

    def train_args(self, gen: torch.Generator) -> tuple:
        return ()

    def grad_args(self) -> tuple:
        return ()

    def baseline_input(self, *args):
        raise NotImplementedError

    def exact_loss(self, *args) -> torch.Tensor:
        """The exact loss (negative ELBO) that ``svi.step(*args)`` estimates."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        raise NotImplementedError

    def final(self) -> dict:
        return self.evaluate()

    def is_guide_param(self, name: str) -> bool:
        raise NotImplementedError

    @property
    def num_configs(self) -> int:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, **self.size}


# -- 1. the proposal's toy -----------------------------------------------------------


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


# -- 4. polynomial -------------------------------------------------------------------


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


# -- 2. mixture of experts ------------------------------------------------------------


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


# -- 3. categorical VAE on digits ---------------------------------------------------


def bernoulli_loglik(logits, x):
    """``sum_p log Bernoulli(x_p | logits_p)``: logits (..., B or 1, P), x (B, P) -> (..., B).

    Where the logits do not depend on the image (enumerated codes broadcast over the
    data plate) this is one matrix product instead of a (codes, B, P) tensor.
    """
    if logits.dim() >= 2 and logits.shape[-2] == 1 and x.shape[0] != 1:
        return logits.squeeze(-2) @ x.T - F.softplus(logits).sum(-1)
    return (x * logits).sum(-1) - F.softplus(logits).sum(-1)


class OneHotVAE(CategoricalVAE):
    """The example's encoder/decoder with ``OneHotCategorical`` latents.

    ``plate=False``: one site per latent (``z0``, ``z1``, ...), enumerable.
    ``plate=True``: one site ``z`` in a ``latents`` plate (batch shape (L, B)), which
    costs one site's overhead instead of L; not enumerable (the image depends on all
    latents jointly). The decoder's first layer is applied latent by latent
    (``sum_l z_l @ W_l``), the same function as ``decoder(cat(z))``, so enumerated
    values broadcast. The Bernoulli likelihood of the image enters as a
    ``pyro.factor`` (the same log-likelihood, computed as a matrix product).
    """

    def __init__(self, latents, categories, hidden=128, plate=False):
        super().__init__(latents, categories, hidden=hidden)
        self.plate = plate

    def decode_onehot(self, zs):
        lin = self.decoder[0]
        K = self.categories
        if not isinstance(zs, (list, tuple)):  # (L, ..., K) from the latents plate
            W = lin.weight.reshape(-1, self.latents, K)  # (H, L, K)
            h = lin.bias + torch.einsum("l...k,hlk->...h", zs, W)
        else:
            h = lin.bias
            for l, z in enumerate(zs):
                h = h + z @ lin.weight[:, l * K : (l + 1) * K].T
        return self.decoder[2](torch.relu(h))

    def model(self, x, num_data):
        pyro.module("vae", self)
        prior = torch.zeros(self.categories, dtype=x.dtype, device=x.device)
        with pyro.plate("data", num_data, subsample=torch.arange(len(x), device=x.device)):
            if self.plate:
                with pyro.plate("latents", self.latents, dim=-2):
                    zs = pyro.sample("z", dist.OneHotCategorical(logits=prior))
                # zs: (..., L, B, K); the likelihood is outside the latents plate, so it
                # keeps that dim as size 1 and dims left of the plates stay in place.
                loglik = bernoulli_loglik(self.decode_onehot(zs.movedim(-3, 0)), x)
                loglik = loglik.unsqueeze(-2)
            else:
                zs = [
                    pyro.sample(f"z{l}", dist.OneHotCategorical(logits=prior))
                    for l in range(self.latents)
                ]
                loglik = bernoulli_loglik(self.decode_onehot(zs), x)
            pyro.factor("x", loglik)

    def guide(self, x, num_data):
        pyro.module("vae", self)
        logits = self.encoder(x).reshape(len(x), self.latents, self.categories)
        with pyro.plate("data", num_data, subsample=torch.arange(len(x), device=x.device)):
            if self.plate:
                with pyro.plate("latents", self.latents, dim=-2):
                    pyro.sample("z", dist.OneHotCategorical(logits=logits.transpose(0, 1)))
            else:
                for l in range(self.latents):
                    pyro.sample(f"z{l}", dist.OneHotCategorical(logits=logits[:, l]))


def _bernoulli_loglik(x, logits):
    """``sum_p log Bernoulli(x_p | logits_p)`` for every (x, logits) pair: (B, C)."""
    return x @ logits.T - F.softplus(logits).sum(-1)


class VAETask(Task):
    name = "vae"
    higher_is_better = True
    primary = "train_elbo"
    baseline_dim = 64

    def __init__(self, size, device=torch.device("cpu")):
        super().__init__(size, device)
        s = self.size
        s.setdefault("hidden", 128)
        s.setdefault("batch_size", 64)
        s.setdefault("eval_images", 300)
        s.setdefault("eval_samples", 8)
        s.setdefault("is_samples", 100)
        self.L, self.K = s["latents"], s["categories"]
        self.enumerable = self.K**self.L <= s.get("max_configs", 4096)
        self.name = s.get("name", "vae_small" if self.enumerable else "vae_large")
        self.train_x, self.test_x = load_binarized_digits(device)
        self.loss_scale = float(len(self.train_x))
        gen = torch.Generator().manual_seed(1)
        self.eval_x = self.train_x[torch.randperm(len(self.train_x), generator=gen)][
            : s["eval_images"]
        ]
        self.title = (
            f"Categorical VAE, binarized digits 8x8, {self.L} latents x {self.K} categories"
            + (" (enumerable)" if self.enumerable else " (not enumerable)")
        )
        self.primary_label = (
            "exact ELBO per image, train subset (higher is better)"
            if self.enumerable
            else f"ELBO per image, train subset, {s['eval_samples']} samples (higher is better)"
        )
        self.log_prior = -self.L * math.log(self.K)
        if self.enumerable:
            codes = torch.tensor(list(itertools.product(range(self.K), repeat=self.L)))
            self.codes = codes.to(device)
            self.code_onehots = F.one_hot(self.codes, self.K).float()  # (C, L, K)

    def reset(self, seed):
        torch.manual_seed(seed)
        self.net = OneHotVAE(
            self.L, self.K, hidden=self.size["hidden"], plate=not self.enumerable
        ).to(self.device)

    def model(self, x):
        self.net.model(x, len(self.train_x))

    def guide(self, x):
        self.net.guide(x, len(self.train_x))

    def train_args(self, gen):
        idx = torch.randint(len(self.train_x), (self.size["batch_size"],), generator=gen)
        return (self.train_x[idx.to(self.device)],)

    def grad_args(self):
        return (self.train_x[: self.size["batch_size"]],)

    def baseline_input(self, x):
        return x.expand(self.L, *x.shape) if self.net.plate else x

    @property
    def max_plate_nesting(self):
        return 1 if self.enumerable else 2

    def _log_q(self, x):
        return torch.log_softmax(self.net.encoder(x).reshape(len(x), self.L, self.K), -1)

    def exact_elbo(self, x):
        """Per-image exact ELBO (enumerating the K^L codes), differentiable: (B,)."""
        dec = self.net.decode_onehot(self.code_onehots.movedim(1, 0))  # (C, 64)
        log_px = _bernoulli_loglik(x, dec)
        log_q_all = self._log_q(x)
        log_q = sum(log_q_all[:, l, self.codes[:, l]] for l in range(self.L))
        q = log_q.exp()
        return (q * (log_px + self.log_prior - log_q)).sum(-1)

    def exact_loss(self, x):
        return -self.exact_elbo(x).sum() * len(self.train_x) / len(x)

    @torch.no_grad()
    def _sampled(self, x, samples, gen):
        """Per-image ELBO estimate and importance-sampled bound from ``samples`` draws."""
        log_q_all = self._log_q(x)  # (B, L, K)
        u = torch.rand((samples,) + log_q_all.shape, generator=gen).to(x.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))
        k = (log_q_all + gumbel).argmax(-1)  # (S, B, L)
        onehot = F.one_hot(k, self.K).to(x.dtype)
        dec = self.net.decode_onehot(onehot.movedim(-2, 0))  # (S, B, 64)
        log_px = (x * dec - F.softplus(dec)).sum(-1)
        expanded = log_q_all.expand(samples, *log_q_all.shape)
        log_q = torch.gather(expanded, -1, k.unsqueeze(-1)).squeeze(-1).sum(-1)  # (S, B)
        log_w = log_px + self.log_prior - log_q  # (S, B)
        elbo = log_w.mean(0)
        iwae = torch.logsumexp(log_w, 0) - math.log(samples)
        return elbo, iwae

    def _batched(self, fn, x, chunk=256):
        return torch.cat([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)])

    def evaluate(self):
        if self.enumerable:
            with torch.no_grad():
                return {"train_elbo": self.exact_elbo(self.eval_x).mean().item()}
        gen = torch.Generator().manual_seed(2)
        elbo, _ = self._sampled(self.eval_x, self.size["eval_samples"], gen)
        return {"train_elbo": elbo.mean().item()}

    def final(self):
        out = self.evaluate()
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            if self.enumerable:
                out["train_elbo_full"] = self._batched(self.exact_elbo, self.train_x).mean().item()
                out["test_elbo"] = self._batched(self.exact_elbo, self.test_x).mean().item()
            else:
                elbos = [
                    self._sampled(self.train_x[i : i + 256], self.size["eval_samples"], gen)[0]
                    for i in range(0, len(self.train_x), 256)
                ]
                out["train_elbo_full"] = torch.cat(elbos).mean().item()
            iw = [
                self._sampled(self.test_x[i : i + 64], self.size["is_samples"], gen)[1]
                for i in range(0, len(self.test_x), 64)
            ]
            out["test_is_bound"] = torch.cat(iw).mean().item()
        return out

    def is_guide_param(self, name):
        return name.startswith("vae$$$encoder")

    @property
    def num_configs(self):
        return self.K**self.L

    def describe(self):
        return {
            **super().describe(),
            "train_images": len(self.train_x),
            "test_images": len(self.test_x),
        }


# -- cost sweeps ------------------------------------------------------------------


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


def make_tasks(sizes: dict, device=torch.device("cpu")) -> dict[str, Task]:
    classes = {"toy": ProposalToy, "poly": Polynomial, "moe": MixtureTask}
    tasks = {}
    for name, size in sizes.items():
        if name.startswith("vae"):
            tasks[name] = VAETask({"name": name, **size}, device)
        else:
            tasks[name] = classes[name](size, device)
    return tasks
