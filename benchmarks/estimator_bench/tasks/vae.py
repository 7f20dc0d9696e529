"""The categorical VAEs on binarized digits (``vae_small``, ``vae_large``): the
example's networks with ``OneHotCategorical`` latents."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ..models import CategoricalVAE, load_binarized_digits
from .base import Task


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
