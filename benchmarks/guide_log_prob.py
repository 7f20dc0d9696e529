"""Benchmark: how should TraceILS_ELBO treat the guide's ``log q(z)`` term?

``TraceILS_ELBO(guide_log_prob=...)`` offers three treatments of the guide's
``-log q(z)`` at ILS sites:

* ``"full"``: keep Pyro's fixed-``z`` term ``z - pi``; total logits gradient
  ``w (z - pi_D)``;
* ``"stl"``: drop it ("sticking the landing"); gradient ``w (pi - pi_D)``;
* ``"analytic"``: replace ``log p(z) - log q(z)`` by ``-KL(q || p)``.

On two small models whose exact ELBO gradient is computable (a Gaussian
mixture with a per-point categorical guide and a tiny categorical VAE), this
script measures, for every mode, projection and step size, the distribution of
the per-draw gradient with respect to the guide's logits against the exact
gradient, next to REINFORCE (``Trace_ELBO``) and ``TraceGraph_ELBO``.

Two ways of measuring are used and cross-checked:

* Monte Carlo: ``--draws`` independent seeded draws. They are computed in one
  call by giving each draw its own copy of the logits inside an outer
  ``pyro.plate("reps")``; the gradient with respect to copy ``r`` is exactly the
  single-draw gradient of draw ``r`` (checked below against one-draw calls).
* Exact enumeration of the estimator: every joint value of the guide's draws is
  forced (by temporarily replacing ``torch.distributions.Categorical.sample``)
  in its own replica and weighted by its guide probability. This gives the
  exact mean, variance and mean per-draw cosine of each estimator.

It also checks that the estimator's expectation is invariant to the weight of
the loss: plate subsampling (``subsample_size < N``) and ``poutine.scale``.

Usage::

    python benchmarks/guide_log_prob.py            # full run, writes JSON, docs and plots
    python benchmarks/guide_log_prob.py --quick    # smoke test (< 30 s), JSON only
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO

import pyro_ils
from pyro_ils import TraceILS_ELBO

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "guide_log_prob.md"
IMG = ROOT / "docs" / "img"

SEED = 20240611
MODES = ("full", "stl", "analytic")
PROJECTIONS = ("euclidean", "normalize")
TABLE_STEPS = (0.1, 1.0, 10.0)
GRID_STEPS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
SUBSAMPLE_SIZE = 2
SCALE = 0.01
TRAIN_STEPS = 200
TRAIN_LR = 0.05
BASELINE_WARMUP = 30


# --------------------------------------------------------------------------------------
# Forcing the guide's draws (exact enumeration of an estimator's distribution)
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def forced_draws(values):
    """Make successive ``Categorical.sample`` calls return ``values[0]``, ``values[1]``, ...

    ``dist.Categorical``, ``dist.OneHotCategorical`` and the ILS distributions all
    draw through ``torch.distributions.Categorical.sample``; the guide's sites are
    sampled in a fixed order, so a list in that order forces every draw.
    ``values=None`` leaves sampling alone.
    """
    if values is None:
        yield
        return
    queue = list(values)
    original = torch.distributions.Categorical.sample

    def sample(self, sample_shape=torch.Size()):
        if not queue:
            raise RuntimeError("more Categorical draws than forced values")
        value = queue.pop(0)
        return value.expand(torch.Size(sample_shape) + self.batch_shape).clone()

    torch.distributions.Categorical.sample = sample
    try:
        yield
    finally:
        torch.distributions.Categorical.sample = original
    if queue:
        raise RuntimeError(f"{len(queue)} forced values were not used")


# --------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def data_plates(reps, size, subsample):
    """Outer ``reps`` plate (independent draws) around the data plate."""
    with contextlib.ExitStack() as stack:
        if reps is not None:
            stack.enter_context(pyro.plate("reps", reps, dim=-2))
        kwargs = {}
        if isinstance(subsample, int):
            kwargs["subsample_size"] = subsample
        elif subsample is not None:
            kwargs["subsample"] = subsample
        ind = stack.enter_context(pyro.plate("data", size, dim=-1, **kwargs))
        yield ind


def _guide_infer(enum, baseline):
    if enum:
        return {"enumerate": "parallel"}
    if baseline:
        return {"baseline": {"use_decaying_avg_baseline": True}}
    return {}


@dataclass
class Problem:
    """A model, a guide with per-datapoint logits of shape ``(n, S, K)``, exact ELBO."""

    name: str
    title: str
    n: int
    sites: tuple[str, ...]
    K: int
    tensors: dict
    init_logits: torch.Tensor

    def model(self, logits, reps=None, subsample=None, enum=False, baseline=False):
        raise NotImplementedError

    def guide(self, logits, reps=None, subsample=None, enum=False, baseline=False):
        raise NotImplementedError

    def brute_force_elbo(self, logits):
        raise NotImplementedError


class GaussianMixture(Problem):
    """``z_i ~ Cat(w)``, ``x_i ~ N(locs[z_i], sigma)``; guide ``z_i ~ Cat(logits_i)``."""

    @classmethod
    def build(cls, seed):
        gen = torch.Generator().manual_seed(seed)
        K, n = 4, 5
        tensors = {
            "locs": torch.tensor([-3.0, -1.0, 1.0, 3.0]),
            "sigma": torch.tensor(1.0),
            "weights": torch.softmax(torch.tensor([0.3, -0.2, 0.1, -0.4]), -1),
            "x": torch.tensor([-2.2, -0.6, 0.3, 1.4, 2.7]),
        }
        init = torch.randn(n, 1, K, generator=gen)
        title = f"Gaussian mixture (K={K}, {n} points, `locs[z]` indexing, Categorical)"
        return cls("gmm", title, n, ("z",), K, tensors, init)

    def model(self, logits, reps=None, subsample=None, enum=False, baseline=False):
        t = self.tensors
        with data_plates(reps, self.n, subsample) as ind:
            z = pyro.sample("z", dist.Categorical(t["weights"]))
            pyro.sample("x", dist.Normal(t["locs"][z], t["sigma"]), obs=t["x"][ind])

    def guide(self, logits, reps=None, subsample=None, enum=False, baseline=False):
        with data_plates(reps, self.n, subsample) as ind:
            site_logits = logits.index_select(-3, ind)[..., 0, :]
            pyro.sample(
                "z", dist.Categorical(logits=site_logits), infer=_guide_infer(enum, baseline)
            )

    def brute_force_elbo(self, logits):
        t = self.tensors
        log_q = torch.log_softmax(logits[:, 0], -1)
        log_joint = t["weights"].log() + dist.Normal(t["locs"], t["sigma"]).log_prob(
            t["x"][:, None]
        )
        return (log_q.exp() * (log_joint - log_q)).sum()


class TinyCategoricalVAE(Problem):
    """Two latents with 4 categories each, a linear decoder to 6 Bernoulli pixels.

    ``z_l ~ Cat(1/K)``, ``x ~ Bernoulli(logits = b + sum_l W_l[z_l])``; guide
    ``z_l ~ Cat(logits_{i,l})`` for each data point ``i``. With ``onehot=True`` the
    same model written with ``OneHotCategorical`` and ``z_l @ W_l``.
    """

    onehot = False

    @classmethod
    def build(cls, seed, onehot=False):
        gen = torch.Generator().manual_seed(seed)
        L, K, P, n = 2, 4, 6, 3
        W = 1.5 * torch.randn(L, K, P, generator=gen)
        b = 0.5 * torch.randn(P, generator=gen)
        z = torch.randint(K, (n, L), generator=gen)
        dec = b + sum(W[l][z[:, l]] for l in range(L))
        x = torch.bernoulli(torch.sigmoid(dec), generator=gen)
        init = torch.randn(n, L, K, generator=gen)
        tensors = {"W": W, "b": b, "x": x}
        title = f"Tiny categorical VAE ({L} latents x {K} categories, {P} pixels, {n} points)"
        name = "vae_onehot" if onehot else "vae"
        problem = cls(name, title, n, tuple(f"z{l}" for l in range(L)), K, tensors, init)
        problem.onehot = onehot
        return problem

    def _site_dist(self, **params):
        return (dist.OneHotCategorical if self.onehot else dist.Categorical)(**params)

    def _decode(self, l, z):
        return z @ self.tensors["W"][l] if self.onehot else self.tensors["W"][l][z]

    def model(self, logits, reps=None, subsample=None, enum=False, baseline=False):
        t = self.tensors
        prior = torch.full((self.K,), 1.0 / self.K)
        with data_plates(reps, self.n, subsample) as ind:
            dec = t["b"]
            for l, site in enumerate(self.sites):
                z = pyro.sample(site, self._site_dist(probs=prior))
                dec = dec + self._decode(l, z)
            pyro.sample("x", dist.Bernoulli(logits=dec).to_event(1), obs=t["x"][ind])

    def guide(self, logits, reps=None, subsample=None, enum=False, baseline=False):
        with data_plates(reps, self.n, subsample) as ind:
            batch_logits = logits.index_select(-3, ind)
            for l, site in enumerate(self.sites):
                pyro.sample(
                    site,
                    self._site_dist(logits=batch_logits[..., l, :]),
                    infer=_guide_infer(enum, baseline),
                )

    def brute_force_elbo(self, logits):
        t = self.tensors
        log_q = torch.log_softmax(logits, -1)  # (n, L, K)
        dec = t["b"] + t["W"][0][:, None, :] + t["W"][1][None, :, :]  # (K, K, P)
        log_lik = dist.Bernoulli(logits=dec).log_prob(t["x"][:, None, None, :]).sum(-1)
        log_prior = 2 * math.log(1.0 / self.K)
        q0, q1 = log_q[:, 0].exp(), log_q[:, 1].exp()
        weight = q0[:, :, None] * q1[:, None, :]
        value = log_lik + log_prior - log_q[:, 0][:, :, None] - log_q[:, 1][:, None, :]
        return (weight * value).sum()


# --------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------


def estimator_specs(steps):
    specs = [
        {"label": "REINFORCE (Trace_ELBO)", "kind": "trace"},
        {"label": "TraceGraph_ELBO", "kind": "tracegraph"},
        {"label": "TraceGraph_ELBO + avg baseline", "kind": "tracegraph_avg"},
    ]
    for mode in MODES:
        for projection in PROJECTIONS:
            for c in steps:
                specs.append(
                    {
                        "label": f"ILS {mode} / {projection} / c={c:g}",
                        "kind": "ils",
                        "mode": mode,
                        "projection": projection,
                        "step_size": c,
                    }
                )
    return specs


def make_elbo(spec, step_size=None):
    if spec["kind"] == "ils":
        return TraceILS_ELBO(
            step_size=spec["step_size"] if step_size is None else step_size,
            projection=spec["projection"],
            guide_log_prob=spec["mode"],
        )
    if spec["kind"] == "trace":
        return Trace_ELBO()
    return TraceGraph_ELBO()


def gradients(
    problem,
    spec,
    logits,
    reps,
    *,
    elbo=None,
    forced=None,
    subsample=None,
    scale=None,
):
    """Per-draw gradients of the negative ELBO wrt the guide's logits, shape ``(reps, n*S*K)``.

    With ``reps=None`` a single draw is made with the plain ``(n, S, K)`` logits.
    """
    elbo = make_elbo(spec) if elbo is None else elbo
    shape = logits.shape if reps is None else (reps,) + tuple(logits.shape)
    leaf = logits.detach().expand(shape).clone().requires_grad_()
    model, guide = problem.model, problem.guide
    if scale is not None:
        model = poutine.scale(model, scale=scale)
        guide = poutine.scale(guide, scale=scale)
    kwargs = {"reps": reps, "subsample": subsample, "baseline": spec["kind"] == "tracegraph_avg"}
    with forced_draws(forced):
        if spec["kind"].startswith("tracegraph"):
            # TraceGraph_ELBO has no differentiable_loss; loss_and_grads
            # back-propagates its surrogate into the leaf.
            elbo.loss_and_grads(model, guide, leaf, **kwargs)
            grad = leaf.grad
        else:
            loss = elbo.differentiable_loss(model, guide, leaf, **kwargs)
            (grad,) = torch.autograd.grad(loss, leaf)
    return grad.reshape(1 if reps is None else reps, -1)


def exact_gradient(problem, logits):
    """Exact gradient of the negative ELBO: TraceEnum_ELBO with the guide enumerated."""
    leaf = logits.detach().clone().requires_grad_()
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.differentiable_loss(problem.model, problem.guide, leaf, enum=True)
    (grad,) = torch.autograd.grad(loss, leaf)
    leaf2 = logits.detach().clone().requires_grad_()
    (grad_bf,) = torch.autograd.grad(-problem.brute_force_elbo(leaf2), leaf2)
    return grad.reshape(-1), loss.item(), (grad - grad_bf).abs().max().item()


def joint_configs(problem, logits, points):
    """All joint values of the guide's draws at ``points``, and their guide probabilities.

    Returns ``forced`` (one ``(R, len(points))`` index tensor per site, in
    sampling order) and ``probs`` of shape ``(R,)``.
    """
    S, K, b = len(problem.sites), problem.K, len(points)
    combos = torch.cartesian_prod(*[torch.arange(K)] * (S * b)).reshape(-1, S, b)
    log_q = torch.log_softmax(logits.detach()[points], -1)  # (b, S, K)
    lp = torch.zeros(combos.shape[0])
    for s in range(S):
        for i in range(b):
            lp = lp + log_q[i, s][combos[:, s, i]]
    forced = [combos[:, s, :] for s in range(S)]
    return forced, lp.exp()


def exact_estimator(problem, spec, logits, *, points=None, subsample=None, scale=None, step=None):
    """Gradients of every joint draw and their probabilities (exact distribution)."""
    points = list(range(problem.n)) if points is None else points
    forced, probs = joint_configs(problem, logits, points)
    elbo = make_elbo(spec, step_size=step)
    grads = gradients(
        problem,
        spec,
        logits,
        probs.shape[0],
        elbo=elbo,
        forced=forced,
        subsample=subsample,
        scale=scale,
    )
    return grads, probs


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def _cos(a, b):
    denom = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(denom > 0, (a * b).sum(-1) / denom.clamp_min(1e-300), 0.0)


def summarize(grads, probs, exact):
    """Metrics of an estimator given draws ``grads`` ``(R, D)`` with weights ``probs``."""
    grads = grads.double()
    probs = probs.double() / probs.sum()
    exact = exact.double()
    mean = probs @ grads
    var = (probs @ (grads - mean).pow(2).sum(-1)).item()
    second = (probs @ grads.pow(2).sum(-1)).item()
    exact_sq = exact.pow(2).sum().item()
    inner = (mean @ exact).item()
    return {
        "cos_mean": _cos(mean, exact).item(),
        "cos_per_draw": (probs @ _cos(grads, exact[None])).item(),
        "rel_bias": ((mean - exact).norm() / exact.norm()).item(),
        "total_var": var,
        "rel_var": var / exact_sq,
        "snr": (mean.norm() / math.sqrt(var)).item() if var > 0 else math.inf,
        "rel_mse": (probs @ (grads - exact).pow(2).sum(-1)).item() / exact_sq,
        # relative MSE after the best non-negative rescaling of the estimator
        # (the learning rate can absorb a scale, not a direction or a variance)
        "rel_mse_best_scale": 1.0 - max(inner, 0.0) ** 2 / (exact_sq * second) if second else 1.0,
        "mean_norm_ratio": (mean.norm() / exact.norm()).item(),
        "mean": mean.tolist(),
    }


def mc_summary(grads, exact):
    out = summarize(grads, torch.ones(grads.shape[0]), exact)
    # standard error of the mean, relative: the floor below which rel_bias is noise
    out["rel_bias_noise_floor"] = math.sqrt(out["total_var"] / grads.shape[0]) / exact.norm().item()
    return out


# --------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------


def trained_logits(problem, init):
    """The guide after a few Adam steps on the exact ELBO: small gradient, near the optimum."""
    leaf = init.detach().clone().requires_grad_()
    opt = torch.optim.Adam([leaf], lr=TRAIN_LR)
    for _ in range(TRAIN_STEPS):
        opt.zero_grad()
        (-problem.brute_force_elbo(leaf)).backward()
        opt.step()
    return leaf.detach()


def run_estimators(problem, state, logits, specs, draws, seed0, warmup, log):
    exact, exact_loss, enum_vs_bf = exact_gradient(problem, logits)
    log(
        f"  [{problem.name}/{state}] exact loss {exact_loss:.4f}, |g*| {exact.norm():.4f}, "
        f"TraceEnum vs brute force max diff {enum_vs_bf:.2e}"
    )
    rows = []
    for idx, spec in enumerate(specs):
        seed = seed0 + idx
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        t0 = time.perf_counter()
        elbo = make_elbo(spec)
        if spec["kind"] == "tracegraph_avg":
            for _ in range(warmup):
                gradients(problem, spec, logits, draws, elbo=elbo)
        grads = gradients(problem, spec, logits, draws, elbo=elbo)
        row = {"spec": spec, "seed": seed, "mc": mc_summary(grads, exact)}
        if spec["kind"] != "tracegraph_avg":
            g_all, p_all = exact_estimator(problem, spec, logits)
            row["exact"] = summarize(g_all, p_all, exact)
            se = row["mc"]["rel_bias_noise_floor"]
            dev = torch.tensor(row["mc"]["mean"]) - torch.tensor(row["exact"]["mean"])
            row["mc_vs_exact_mean_in_se"] = (dev.norm() / exact.norm()).item() / se
        pyro.clear_param_store()
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return {
        "state": state,
        "logits": logits.tolist(),
        "exact_grad": exact.tolist(),
        "exact_grad_norm": exact.norm().item(),
        "exact_loss": exact_loss,
        "traceenum_vs_bruteforce_max_abs_diff": enum_vs_bf,
        "rows": rows,
    }


def vectorization_check(problem, logits, specs):
    """The gradient of replica r equals a one-draw call with the same forced draw."""
    worst = 0.0
    forced_all, _ = joint_configs(problem, logits, list(range(problem.n)))
    picks = [0, forced_all[0].shape[0] // 3, forced_all[0].shape[0] - 1]
    for spec in specs:
        if spec["kind"] == "tracegraph_avg":
            continue
        batched = gradients(
            problem, spec, logits, len(picks), forced=[f[picks] for f in forced_all]
        )
        for r, pick in enumerate(picks):
            single = gradients(problem, spec, logits, None, forced=[f[pick] for f in forced_all])
            scale = batched[r].abs().max().clamp_min(1e-12)
            worst = max(worst, ((batched[r] - single[0]).abs().max() / scale).item())
    return worst


def expectation(grads, probs):
    probs = probs.double()
    return probs @ grads.double() / probs.sum()


def full_minus_stl_check(problem, logits, steps=TABLE_STEPS):
    """Per draw, the ``full`` gradient minus the ``stl`` one is ``z - pi`` (w = 1)."""
    forced, _ = joint_configs(problem, logits, list(range(problem.n)))
    worst = 0.0
    for projection in PROJECTIONS:
        for c in steps:
            spec = {"kind": "ils", "projection": projection, "step_size": c}
            g = {}
            for mode in ("full", "stl"):
                g[mode] = gradients(
                    problem, dict(spec, mode=mode), logits, forced[0].shape[0], forced=forced
                )
            onehot = torch.stack(
                [torch.nn.functional.one_hot(f, problem.K) for f in forced], dim=-2
            ).float()  # (R, n, S, K)
            z_minus_pi = (onehot - torch.softmax(logits, -1)).reshape(onehot.shape[0], -1)
            worst = max(worst, (g["full"] - g["stl"] - z_minus_pi).abs().max().item())
    return worst


def onehot_equivalence_check(problem, onehot_problem, logits):
    """Same model written with Categorical and with OneHotCategorical, same forced draws:
    max abs difference of the gradients, per estimator (c = 1)."""
    forced, _ = joint_configs(problem, logits, list(range(problem.n)))
    out = {}
    for spec in estimator_specs((1.0,)):
        if spec["kind"] == "tracegraph_avg":
            continue
        g = [
            gradients(p, spec, logits, forced[0].shape[0], forced=forced)
            for p in (problem, onehot_problem)
        ]
        out[spec["label"]] = (g[0] - g[1]).abs().max().item()
    return out


def scale_invariance(problem, logits, specs, draws, sub_calls, seed0, log):
    """Expected ILS gradient under subsampling and poutine.scale vs the plain one."""
    n, B = problem.n, SUBSAMPLE_SIZE
    weight_sub = n / B
    subsets = [list(s) for s in itertools.combinations(range(n), B)]
    rows = []
    for idx, spec in enumerate(specs):
        if spec["kind"] != "ils":
            continue
        g_full, p_full = exact_estimator(problem, spec, logits)
        e_full = expectation(g_full, p_full)
        # subsampling: exact over every subset of size B and every joint draw in it
        e_sub = torch.zeros_like(e_full)
        e_cond = torch.zeros(n, e_full.numel() // n, dtype=e_full.dtype)
        for subset in subsets:
            g, p = exact_estimator(
                problem, spec, logits, points=subset, subsample=torch.tensor(subset)
            )
            e = expectation(g, p)
            e_sub += e / len(subsets)
            # E[g_i | i in batch] / (N/B), averaged over the subsets holding i
            e_cond[subset] += e.reshape(n, -1)[subset] / weight_sub / (len(subsets) * B / n)
        # poutine.scale on model and guide
        g_sc, p_sc = exact_estimator(problem, spec, logits, scale=SCALE)
        e_scaled = expectation(g_sc, p_sc) / SCALE
        # what an implementation that did not divide w out of g would give:
        # w * ILS with step c*w, i.e. the plain estimator with step c*w
        naive = {}
        for key, w in (("subsample", weight_sub), ("scale", SCALE)):
            g_nv, p_nv = exact_estimator(problem, spec, logits, step=spec["step_size"] * w)
            naive[key] = expectation(g_nv, p_nv)

        def rel(a, b=e_full):
            return ((a - b).norm() / b.norm()).item()

        def min_point_cos(a, b=e_full):
            return _cos(a.reshape(n, -1), b.reshape(n, -1)).min().item()

        # Monte Carlo with random subsample_size=B: the indices are shared by the
        # replicas of one call, so the draws are spread over many calls and the
        # standard error is taken from the call means
        pyro.set_rng_seed(seed0 + idx)
        per_call = max(draws // sub_calls, 1)
        call_means = torch.stack(
            [
                gradients(problem, spec, logits, per_call, subsample=B).double().mean(0)
                for _ in range(sub_calls)
            ]
        )
        mc_sub_mean = call_means.mean(0)
        se_sub = math.sqrt(call_means.var(0).sum().item() / sub_calls) / e_full.norm().item()
        pyro.set_rng_seed(seed0 + idx)
        mc_plain = gradients(problem, spec, logits, draws).double()
        pyro.set_rng_seed(seed0 + idx)
        mc_scaled = gradients(problem, spec, logits, draws, scale=SCALE).double() / SCALE
        rows.append(
            {
                "spec": spec,
                "seed": seed0 + idx,
                "exact": {
                    "subsample_rel_diff": rel(e_sub),
                    "subsample_min_point_cos": min_point_cos(e_sub),
                    "subsample_conditional_rel_diff": rel(e_cond.reshape(-1)),
                    "scale_rel_diff": rel(e_scaled),
                    "scale_min_point_cos": min_point_cos(e_scaled),
                    "naive_subsample_rel_diff": rel(naive["subsample"]),
                    "naive_subsample_min_point_cos": min_point_cos(naive["subsample"]),
                    "naive_scale_rel_diff": rel(naive["scale"]),
                    "naive_scale_min_point_cos": min_point_cos(naive["scale"]),
                    "full_mean": e_full.tolist(),
                    "subsample_mean": e_sub.tolist(),
                    "scaled_mean": e_scaled.tolist(),
                    "naive_subsample_mean": naive["subsample"].tolist(),
                    "naive_scale_mean": naive["scale"].tolist(),
                },
                "mc": {
                    "subsample_rel_diff": rel(mc_sub_mean),
                    "subsample_min_point_cos": min_point_cos(mc_sub_mean),
                    "subsample_noise_floor": se_sub,
                    "subsample_calls": sub_calls,
                    "subsample_draws_per_call": per_call,
                    "plain_rel_diff": rel(mc_plain.mean(0)),
                    "scale_per_draw_max_rel_diff": (
                        (mc_scaled - mc_plain).abs().max() / mc_plain.abs().max()
                    ).item(),
                },
            }
        )
    log(f"  [{problem.name}] scale invariance: {len(rows)} ILS settings")
    return {
        "n": n,
        "subsample_size": B,
        "subsample_weight": weight_sub,
        "scale": SCALE,
        "rows": rows,
    }


def versions():
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "pyro_ils"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "", False
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyro_ils": pyro_ils.__version__,
        "git_commit": commit,
        "pyro_ils_dirty": dirty,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def run(quick, draws, log):
    steps = (1.0,) if quick else GRID_STEPS
    specs = estimator_specs(steps)
    problems = [GaussianMixture.build(SEED), TinyCategoricalVAE.build(SEED + 1)]
    states = ("init0",) if quick else ("init0", "init1", "init2", "trained")
    warmup = 10 if quick else BASELINE_WARMUP
    check_steps = (1.0,) if quick else TABLE_STEPS
    out = {
        "settings": {
            "quick": quick,
            "draws": draws,
            "seed": SEED,
            "step_sizes": list(steps),
            "table_step_sizes": list(TABLE_STEPS),
            "modes": list(MODES),
            "projections": list(PROJECTIONS),
            "subsample_size": SUBSAMPLE_SIZE,
            "scale": SCALE,
            "train_steps": TRAIN_STEPS,
            "train_lr": TRAIN_LR,
            "baseline_warmup_calls": warmup,
            "seeding": "seed of each estimator run = SEED + 10000*problem + 1000*state + index",
        },
        "versions": versions(),
        "problems": {},
    }
    for p_idx, problem in enumerate(problems):
        entry = {
            "title": problem.title,
            "n": problem.n,
            "sites": list(problem.sites),
            "K": problem.K,
            "tensors": {k: v.tolist() for k, v in problem.tensors.items()},
            "states": {},
        }
        for s_idx, state in enumerate(states):
            if state == "init0":
                logits = problem.init_logits
            elif state == "trained":
                logits = trained_logits(problem, problem.init_logits)
            else:
                gen = torch.Generator().manual_seed(SEED + 100 * (p_idx + 1) + s_idx)
                logits = torch.randn(problem.init_logits.shape, generator=gen)
            seed0 = SEED + 10000 * p_idx + 1000 * s_idx
            entry["states"][state] = run_estimators(
                problem, state, logits, specs, draws, seed0, warmup, log
            )
        check_specs = estimator_specs((1.0,))
        entry["vectorization_check_max_rel_diff"] = vectorization_check(
            problem, problem.init_logits, check_specs
        )
        entry["full_minus_stl_check_max_abs_diff"] = full_minus_stl_check(
            problem, problem.init_logits, check_steps
        )
        log(
            f"  [{problem.name}] full - stl - (z - pi) max abs diff "
            f"{entry['full_minus_stl_check_max_abs_diff']:.2e}"
        )
        log(
            f"  [{problem.name}] vectorized vs one-draw max rel diff "
            f"{entry['vectorization_check_max_rel_diff']:.2e}"
        )
        inv_specs = estimator_specs((1.0,) if quick else TABLE_STEPS)
        if quick:
            inv_specs = [sp for sp in inv_specs if sp.get("projection") != "normalize"]
        entry["scale_invariance"] = scale_invariance(
            problem,
            problem.init_logits,
            inv_specs,
            draws,
            20 if quick else 100,
            SEED + 10000 * p_idx + 5000,
            log,
        )
        if isinstance(problem, TinyCategoricalVAE):
            onehot = TinyCategoricalVAE.build(SEED + p_idx, onehot=True)
            entry["onehot_variant"] = {
                "full_minus_stl_check_max_abs_diff": full_minus_stl_check(
                    onehot, onehot.init_logits, check_steps
                ),
                "categorical_vs_onehot_max_abs_diff": onehot_equivalence_check(
                    problem, onehot, problem.init_logits
                ),
            }
            log(f"  [{problem.name}] OneHotCategorical variant: {entry['onehot_variant']}")
        out["problems"][problem.name] = entry
    return out


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

TABLE_STATES = ("init0", "trained")


def _f(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return str(x)
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def _short(spec):
    if spec["kind"] != "ils":
        return spec["label"]
    return f"ILS `{spec['mode']}` {spec['projection'][:4]}. c={spec['step_size']:g}"


def ils_row(state_entry, mode, projection, c):
    for row in state_entry["rows"]:
        spec = row["spec"]
        if (
            spec["kind"] == "ils"
            and spec["mode"] == mode
            and spec["projection"] == projection
            and spec["step_size"] == c
        ):
            return row
    return None


def reference_row(state_entry, kind):
    return next(r for r in state_entry["rows"] if r["spec"]["kind"] == kind)


def best_per_mode(state_entry, key="rel_mse_best_scale", source="exact"):
    """For each (mode, projection): the row whose step size gives the lowest ``key``."""
    best = {}
    for row in state_entry["rows"]:
        spec = row["spec"]
        if spec["kind"] != "ils":
            continue
        k = (spec["mode"], spec["projection"])
        if k not in best or row[source][key] < best[k][source][key]:
            best[k] = row
    return best


def _cases(results, init_only=True):
    for name, entry in results["problems"].items():
        for state, st in entry["states"].items():
            if init_only and not state.startswith("init"):
                continue
            for projection in PROJECTIONS:
                yield name, state, projection, st


def estimator_table(state_entry, table_steps):
    head = (
        "| estimator | cos(ḡ, g*) | per-draw cos | rel. bias (MC floor) | tr Var / ‖g*‖² "
        "| SNR | MSE* | exact cos(E g, g*) | exact rel. bias | exact MSE* |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in state_entry["rows"]:
        spec = row["spec"]
        if spec["kind"] == "ils" and spec["step_size"] not in table_steps:
            continue
        mc, ex = row["mc"], row.get("exact")
        lines.append(
            f"| {_short(spec)} | {_f(mc['cos_mean'])} | {_f(mc['cos_per_draw'])} "
            f"| {_f(mc['rel_bias'])} ({_f(mc['rel_bias_noise_floor'])}) | {_f(mc['rel_var'])} "
            f"| {_f(mc['snr'])} | {_f(mc['rel_mse_best_scale'])} "
            f"| {_f(ex['cos_mean']) if ex else '-'} | {_f(ex['rel_bias']) if ex else '-'} "
            f"| {_f(ex['rel_mse_best_scale']) if ex else '-'} |"
        )
    return head + "\n".join(lines) + "\n"


def mse_summary_table(results, default_c):
    head = (
        f"| problem | state | projection | REINFORCE | `full` c={default_c:g} "
        f"| `stl` c={default_c:g} | `analytic` c={default_c:g} "
        "| `full` best (c) | `stl` best (c) | `analytic` best (c) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for name, state, projection, st in _cases(results):
        ref = reference_row(st, "trace")["exact"]["rel_mse_best_scale"]
        at_c = {
            m: ils_row(st, m, projection, default_c)["exact"]["rel_mse_best_scale"] for m in MODES
        }
        best = best_per_mode(st)
        best_v = {m: best[(m, projection)]["exact"]["rel_mse_best_scale"] for m in MODES}
        win_c, win_b = min(at_c, key=at_c.get), min(best_v, key=best_v.get)
        cells = [f"**{_f(at_c[m])}**" if m == win_c else _f(at_c[m]) for m in MODES]
        cells += [
            (f"**{_f(best_v[m])}**" if m == win_b else _f(best_v[m]))
            + f" ({best[(m, projection)]['spec']['step_size']:g})"
            for m in MODES
        ]
        lines.append(f"| {name} | {state} | {projection} | {_f(ref)} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def variance_ratio_table(results, steps):
    head = (
        "| problem | state | projection | "
        + " | ".join(f"c={c:g}" for c in steps)
        + " |\n|---|---|---|"
        + "---|" * len(steps)
        + "\n"
    )
    lines = []
    for name, state, projection, st in _cases(results):
        ratios = [
            ils_row(st, "full", projection, c)["exact"]["total_var"]
            / ils_row(st, "stl", projection, c)["exact"]["total_var"]
            for c in steps
        ]
        cells = [f"**{_f(r)}**" if r < 1 else _f(r) for r in ratios]
        lines.append(f"| {name} | {state} | {projection} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def trained_table(results, default_c):
    head = (
        "| problem | projection | ‖g*‖ | REINFORCE cos | "
        + " | ".join(f"`{m}` cos (‖E g‖/‖g*‖)" for m in MODES)
        + " |\n|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for name, entry in results["problems"].items():
        st = entry["states"].get("trained")
        if st is None:
            continue
        for projection in PROJECTIONS:
            ref = reference_row(st, "trace")["exact"]["cos_mean"]
            cells = []
            for m in MODES:
                ex = ils_row(st, m, projection, default_c)["exact"]
                cells.append(f"{_f(ex['cos_mean'])} ({_f(ex['mean_norm_ratio'], 1)})")
            lines.append(
                f"| {name} | {projection} | {_f(st['exact_grad_norm'])} | {_f(ref)} | "
                + " | ".join(cells)
                + " |"
            )
    return head + "\n".join(lines) + "\n"


def invariance_table(entry):
    head = (
        "| setting | subsample: rel. diff (exact) | min per-point cos | conditional on "
        "inclusion / (N/B): rel. diff | MC rel. diff (SE) | naive: rel. diff "
        "| scale: rel. diff (exact) | per-draw max rel. diff (MC) | naive: rel. diff |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in entry["scale_invariance"]["rows"]:
        ex, mc = row["exact"], row["mc"]
        lines.append(
            f"| {_short(row['spec'])} | {_f(ex['subsample_rel_diff'])} "
            f"| {_f(ex['subsample_min_point_cos'])} "
            f"| {_f(ex['subsample_conditional_rel_diff'])} "
            f"| {_f(mc['subsample_rel_diff'])} ({_f(mc['subsample_noise_floor'])}) "
            f"| {_f(ex['naive_subsample_rel_diff'])} | {_f(ex['scale_rel_diff'])} "
            f"| {_f(mc['scale_per_draw_max_rel_diff'])} | {_f(ex['naive_scale_rel_diff'])} |"
        )
    return head + "\n".join(lines) + "\n"


def plot(results, state, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("cos_mean", "cos(E g, g*)", "linear"),
        ("noise", "tr Var / ‖E g‖²  (1/SNR²)", "log"),
        ("rel_mse_best_scale", "MSE* (lower is better)", "linear"),
    ]

    def value(metrics_dict, key):
        if key == "noise":
            return 1.0 / metrics_dict["snr"] ** 2
        return metrics_dict[key]

    panels = [(name, proj) for name in results["problems"] for proj in PROJECTIONS]
    fig, axes = plt.subplots(
        len(metrics),
        len(panels),
        figsize=(3.5 * len(panels), 2.7 * len(metrics) + 0.6),
        sharex=True,
        squeeze=False,
    )
    colors = {"full": "tab:blue", "stl": "tab:orange", "analytic": "tab:green"}
    for j, (name, proj) in enumerate(panels):
        st = results["problems"][name]["states"][state]
        refs = [
            (reference_row(st, "trace"), "exact", "REINFORCE (exact)", "k"),
            (reference_row(st, "tracegraph_avg"), "mc", "TraceGraph + avg baseline (MC)", "0.5"),
        ]
        for i, (key, ylabel, yscale) in enumerate(metrics):
            ax = axes[i][j]
            for mode in MODES:
                rows = [
                    r
                    for r in st["rows"]
                    if r["spec"]["kind"] == "ils"
                    and r["spec"]["mode"] == mode
                    and r["spec"]["projection"] == proj
                ]
                cs = [r["spec"]["step_size"] for r in rows]
                ax.plot(
                    cs,
                    [value(r["exact"], key) for r in rows],
                    "-",
                    color=colors[mode],
                    lw=3.5 if mode == "full" else 1.5,
                    alpha=0.6 if mode == "full" else 1.0,
                    label=f"ILS {mode} (exact)",
                )
                ax.plot(
                    cs,
                    [value(r["mc"], key) for r in rows],
                    "o",
                    ms=3,
                    color=colors[mode],
                    alpha=0.6,
                    label=f"ILS {mode} (MC)",
                )
            for ref, source, label, color in refs:
                ax.axhline(value(ref[source], key), ls="--", color=color, lw=1, label=label)
            ax.set_xscale("log")
            ax.set_yscale(yscale)
            if key == "cos_mean":
                ax.set_ylim(-1.05, 1.05)
            if i == 0:
                ax.set_title(f"{name}, {proj}")
            if i == len(metrics) - 1:
                ax.set_xlabel("step size c")
            if j == 0:
                ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        f"Per-draw gradient wrt the guide's logits vs the exact ELBO gradient (state '{state}')"
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_invariance(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["problems"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.0 * len(names), 4.6), squeeze=False)
    series = (
        ("subsample_mean", "tab:blue", "o", "subsample_size=2 (E over batches and draws)"),
        ("scaled_mean", "tab:green", "s", "poutine.scale(0.01), E / 0.01"),
        ("naive_subsample_mean", "tab:red", "x", "if w were not divided out (B=2)"),
        ("naive_scale_mean", "tab:purple", "+", "if w were not divided out (scale 0.01)"),
    )
    for ax, name in zip(axes[0], names, strict=True):
        inv = results["problems"][name]["scale_invariance"]
        rows = [
            r
            for r in inv["rows"]
            if r["spec"]["step_size"] == 1.0 and r["spec"]["projection"] == "euclidean"
        ]
        for k, row in enumerate(rows):
            ex = row["exact"]
            full = torch.tensor(ex["full_mean"])
            norm = full.abs().max().item()
            for key, color, marker, label in series:
                ax.plot(
                    full / norm,
                    torch.tensor(ex[key]) / norm,
                    marker,
                    ms=5,
                    color=color,
                    alpha=0.7,
                    label=label if k == 0 else None,
                )
        ax.plot([-1.1, 1.1], [-1.1, 1.1], "k--", lw=1)
        ax.set_xlabel("E[g], full batch, no scale (each mode normalized)")
        ax.set_ylabel("E[g] with the weight, divided by the weight")
        ax.set_title(f"{name}: every coordinate, modes full/stl/analytic, euclidean, c=1")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def facts(results, default_c=1.0):
    """Numbers quoted in the reading, computed from the results."""
    f = {"default_c": default_c}
    steps = results["settings"]["step_sizes"]
    f["max_full_stl_mean_diff"] = max(
        abs(
            ils_row(st, "full", p, c)["exact"]["cos_mean"]
            - ils_row(st, "stl", p, c)["exact"]["cos_mean"]
        )
        for _, _, p, st in _cases(results, init_only=False)
        for c in steps
    )
    init_cases = list(_cases(results))
    f["n_init"] = len(init_cases)

    def ex(st, m, p, c):
        return ils_row(st, m, p, c)["exact"]

    def mse(st, m, p, c):
        return ex(st, m, p, c)["rel_mse_best_scale"]

    ratios = {
        c: [
            ex(st, "full", p, c)["total_var"] / ex(st, "stl", p, c)["total_var"]
            for *_, p, st in init_cases
        ]
        for c in steps
    }
    f["ratio_small"] = (min(ratios[steps[0]]), max(ratios[steps[0]]), steps[0])
    f["ratio_default"] = (min(ratios[default_c]), max(ratios[default_c]))
    f["full_lower_var_by_c"] = {c: sum(r < 1 for r in ratios[c]) for c in steps}
    f["stl_beats_full_at_default"] = sum(
        mse(st, "stl", p, default_c) < mse(st, "full", p, default_c) for *_, p, st in init_cases
    )
    wins_default = dict.fromkeys(MODES, 0)
    full_worst = 0
    wins_best = {name: dict.fromkeys(MODES, 0) for name in results["problems"]}
    best_c = {m: [] for m in MODES}
    analytic_minus_stl_default, analytic_minus_stl_best = [], []
    analytic_better_aligned = 0
    for name, _, p, st in init_cases:
        at_c = {m: mse(st, m, p, default_c) for m in MODES}
        wins_default[min(at_c, key=at_c.get)] += 1
        full_worst += max(at_c, key=at_c.get) == "full"
        best = best_per_mode(st)
        bv = {m: best[(m, p)]["exact"]["rel_mse_best_scale"] for m in MODES}
        wins_best[name][min(bv, key=bv.get)] += 1
        for m in MODES:
            best_c[m].append(best[(m, p)]["spec"]["step_size"])
        analytic_minus_stl_default.append(at_c["analytic"] - at_c["stl"])
        analytic_minus_stl_best.append(bv["analytic"] - bv["stl"])
        analytic_better_aligned += (
            ex(st, "analytic", p, default_c)["cos_mean"] > ex(st, "stl", p, default_c)["cos_mean"]
        )
    f.update(
        wins_default=wins_default,
        full_worst=full_worst,
        wins_best=wins_best,
        best_c={m: (min(v), max(v)) for m, v in best_c.items()},
        analytic_minus_stl_default=max(analytic_minus_stl_default),
        analytic_minus_stl_best=max(analytic_minus_stl_best),
        analytic_better_aligned=analytic_better_aligned,
    )
    refs = [reference_row(st, "trace")["exact"]["rel_mse_best_scale"] for *_, st in init_cases]
    f["reinforce_mse"] = (min(refs), max(refs))
    ils_best = [
        min(
            r["exact"]["rel_mse_best_scale"]
            for r in best_per_mode(st).values()
            if r["spec"]["projection"] == p
        )
        for *_, p, st in init_cases
    ]
    f["ils_best_mse"] = (min(ils_best), max(ils_best))
    f["ils_beats_reinforce"] = sum(b < r for b, r in zip(ils_best, refs, strict=True))
    ils_rows = [r for *_, st in _cases(results) for r in st["rows"] if r["spec"]["kind"] == "ils"]
    f["max_ils_cos"] = max(r["exact"]["cos_mean"] for r in ils_rows)
    f["median_ils_cos"] = sorted(r["exact"]["cos_mean"] for r in ils_rows)[len(ils_rows) // 2]
    f["max_rel_var"] = {
        proj: max(r["exact"]["rel_var"] for r in ils_rows if r["spec"]["projection"] == proj)
        for proj in PROJECTIONS
    }
    trained = [
        ils_row(e["states"]["trained"], m, p, default_c)["exact"]
        for e in results["problems"].values()
        if "trained" in e["states"]
        for p in PROJECTIONS
        for m in MODES
    ]
    if trained:
        f["trained_cos"] = (
            min(t["cos_mean"] for t in trained),
            max(t["cos_mean"] for t in trained),
        )
        f["trained_negative"] = f"{sum(t['cos_mean'] < 0 for t in trained)}/{len(trained)}"
        f["trained_norm"] = (
            min(t["mean_norm_ratio"] for t in trained),
            max(t["mean_norm_ratio"] for t in trained),
        )
    return f


def reading(results):
    f = facts(results)
    n = f["n_init"]
    lo, hi, c_small = f["ratio_small"]
    wins_default = ", ".join(f"`{m}` {f['wins_default'][m]}" for m in MODES)
    wins_best = "; ".join(
        f"{name}: " + ", ".join(f"`{m}` {k}" for m, k in w.items())
        for name, w in f["wins_best"].items()
    )
    by_c = ", ".join(f"c={c:g}: {k}/{n}" for c, k in f["full_lower_var_by_c"].items())
    bc = f["best_c"]
    text = f"""## Reading

**In short.** `full` and `stl` have the same expected gradient (the largest
difference of `cos(E g, g*)` between them, over every case and step size, is
{_f(f["max_full_stl_mean_diff"])}), so choosing between them is a question of
variance only, and which one has less depends on the step size. `full` removes
the order-one noise `pi - z` of the plain ILS backward only while the step
`c g / w` leaves the target `pi_D` near the drawn vertex `z`; once the step
carries `pi_D` to another vertex, `full = z - pi_D` is a difference of two random
vertices and is noisier than `stl = pi - pi_D`.

**At the package's default step size c = {f["default_c"]:g}, `full` is not the best
mode.** Over the {n} cases (2 problems x 3 random guide states x 2 projections),
by MSE*: `stl` beats `full` in {f["stl_beats_full_at_default"]}/{n}; the best mode
is {wins_default}; `full` is the worst of the three in {f["full_worst"]}/{n}.
`full` is best only with small steps: the best step for `full` is
c = {bc["full"][0]:g} to {bc["full"][1]:g}, for `stl` {bc["stl"][0]:g} to {bc["stl"][1]:g}, for
`analytic` {bc["analytic"][0]:g} to {bc["analytic"][1]:g}. With each mode at its own
best step size the winners are {wins_best}.

Details:

* Variance, `tr Var(full) / tr Var(stl)` (bold: `full` is quieter). At
  c = {c_small:g}, `full` has {_f(1 / hi, 1)} to {_f(1 / lo, 1)} times less variance than
  `stl`; at c = {f["default_c"]:g} it has {_f(f["ratio_default"][0], 2)} to
  {_f(f["ratio_default"][1], 2)} times the variance of `stl`. Cases where `full` is
  quieter, by step size: {by_c}.

"""
    text += variance_ratio_table(results, results["settings"]["step_sizes"])
    text += f"""
  (Ratios near 1 at large steps with `normalize` are cases where both variances
  are dominated by rare huge draws: the `normalize` map divides by the sum of
  `z - c (g - g_k)`, which can be close to 0 without crossing it. The largest
  relative variance `tr Var / ‖g*‖²` at the random states is
  {_f(f["max_rel_var"]["normalize"])} with `normalize` against
  {_f(f["max_rel_var"]["euclidean"])} with `euclidean`.)

* Quality, MSE* (relative mean squared error of one draw after the best
  rescaling; lower is better; bold: best ILS mode of the row), at c = {f["default_c"]:g}
  and at each mode's best step size (in brackets):

"""
    text += mse_summary_table(results, f["default_c"])
    text += f"""
* `analytic` changes the expectation, not only the variance (the KL gradient is
  exact; the ILS step then sees the likelihood only). At c = {f["default_c"]:g} its
  expectation is better aligned with `g*` than that of `full`/`stl` in
  {f["analytic_better_aligned"]}/{n} cases. Its MSE* exceeds that of `stl` by at most
  {_f(f["analytic_minus_stl_default"])} at c = {f["default_c"]:g} and
  {_f(f["analytic_minus_stl_best"])} at the best step sizes.

* Against REINFORCE. One REINFORCE draw is noisier (MSE* {_f(f["reinforce_mse"][0])} to
  {_f(f["reinforce_mse"][1])} at the random states) than one draw of the best ILS
  setting ({_f(f["ils_best_mse"][0])} to {_f(f["ils_best_mse"][1])}; lower in
  {f["ils_beats_reinforce"]}/{n}), but it is unbiased (cos(E g, g*) = 1), while the
  best-aligned ILS expectation has cos {_f(f["max_ils_cos"])} and the median over all
  ILS settings {_f(f["median_ils_cos"])}. Averaging draws removes noise, not bias.
"""
    if "trained_cos" in f:
        text += f"""
* Near the optimum (state `trained`, exact gradient small), at c = {f["default_c"]:g},
  every ILS mode's expectation is badly aligned with the exact gradient (cos
  {_f(f["trained_cos"][0])} to {_f(f["trained_cos"][1])}, negative in {f["trained_negative"]}) and
  {_f(f["trained_norm"][0], 0)} to {_f(f["trained_norm"][1], 0)} times larger: ILS's fixed
  point is not the ELBO optimum. This is the bias of ILS itself (its step uses
  `dL/dz` at the drawn vertex, a linearization that ignores how `log p(x | z)`
  changes between categories), shared by the three modes; `guide_log_prob` does
  not fix it.

"""
        text += trained_table(results, f["default_c"])
    text += f"""
## Decision

* **`"stl"` is the default** of `TraceILS_ELBO` and `TraceGraphILS_ELBO` (and of
  the `ILS*` distributions under a plain ELBO), with the default step size
  {f["default_c"]:g}. It has exactly the expectation of `"full"` and, at
  c = {f["default_c"]:g}, a lower MSE* in {f["stl_beats_full_at_default"]}/{n} cases here.
  `"full"` helps only when `c |dL/dz| / w` is well below 1 (here c <= 0.1), and the
  scale of `dL/dz` is the model's, which users do not see.
* `"full"` is the choice for small step sizes, where it removes most of the noise
  (up to {_f(1 / lo, 0)} times less variance than `"stl"` at c = {c_small:g}).
* `"analytic"` is recommended where the model site has a matching prior: it was the
  best mode at c = {f["default_c"]:g} in {f["wins_default"]["analytic"]}/{n} cases. Its
  other ILS sites use `"stl"`.
* None of the modes removes ILS's bias, which dominates near the optimum.

"""
    return text


def write_doc(results, doc_path, img_names):
    s = results["settings"]
    v = results["versions"]
    gmm, vae = results["problems"]["gmm"], results["problems"]["vae"]
    enum_diff = max(
        st["traceenum_vs_bruteforce_max_abs_diff"]
        for e in (gmm, vae)
        for st in e["states"].values()
    )
    parts = [
        "# The guide's `log q(z)` term in `TraceILS_ELBO`: `full`, `stl` or `analytic`?\n\n"
        "*Generated by `benchmarks/guide_log_prob.py` from "
        "`benchmarks/results/guide_log_prob.json`; do not edit by hand.*\n\n",
        reading(results),
        "## What is measured\n\n"
        "For a discrete guide site drawn by ILS, Pyro's surrogate differentiates the "
        "guide's `log q(z)` through the draw and through the logits at fixed `z`; for "
        "logits the second part is `z - pi`. The three modes of "
        "`TraceILS_ELBO(guide_log_prob=...)` give the logits\n\n"
        "* `full`: `w (z - pi_D)` (the ILS backward `w (pi - pi_D)` plus `w (z - pi)`);\n"
        "* `stl`: `w (pi - pi_D)` (the ILS backward alone);\n"
        "* `analytic`: the ILS backward of the likelihood alone, plus the exact gradient "
        "of `-KL(q || p)`,\n\n"
        "with `pi_D = h(z - c g / w)`, `g = dL/dz`, `c` the step size, `h` the projection "
        "and `w` the draw's weight in the loss.\n\n"
        "Each estimator's per-draw gradient of the negative ELBO with respect to the "
        "guide's logits (all data points and sites, flattened into one vector) is "
        "compared with the exact gradient `g*` from `TraceEnum_ELBO` with the guide sites "
        f"enumerated (it agrees with a brute-force sum to {_f(enum_diff)}).\n\n"
        "Columns:\n\n"
        f"* `cos(ḡ, g*)`: cosine of the mean of {s['draws']:,} seeded draws with `g*`;\n"
        "* `per-draw cos`: mean over draws of the cosine of one draw with `g*`;\n"
        "* `rel. bias`: `‖ḡ - g*‖ / ‖g*‖`; in brackets the Monte Carlo floor "
        "`sqrt(tr Var / M) / ‖g*‖` under which bias and noise cannot be told apart;\n"
        "* `tr Var / ‖g*‖²`: total variance of one draw, relative to `‖g*‖²`;\n"
        "* `SNR`: `‖ḡ‖ / sqrt(tr Var)`;\n"
        "* `MSE*`: relative mean squared error of one draw after the best non-negative "
        "rescaling, `min_a E‖a g - g*‖² / ‖g*‖² = 1 - <E g, g*>² / (‖g*‖² E‖g‖²)`. The "
        "magnitude of an ILS gradient is set by `c` more than by the loss; a learning "
        "rate can absorb a scale but not a wrong direction or noise, so this is the "
        "fairest single number (0: exact; 1: no better than a zero gradient);\n"
        "* `exact ...`: the same quantities without sampling error, from forcing every "
        "joint value of the guide's draws (one replica each) and weighting it by its "
        "guide probability.\n\n"
        "Guide states: `init0`, `init1`, `init2` (random logits, large gradient) and "
        f"`trained` ({s['train_steps']} Adam steps, lr {s['train_lr']}, on the exact ELBO "
        "from `init0`: near the optimum, small gradient). References: REINFORCE is "
        "`Trace_ELBO` with the plain `dist.Categorical` / `dist.OneHotCategorical` guide "
        "(score function, Rao-Blackwellized by plate); `TraceGraph_ELBO` the same with "
        "dependency tracking; `+ avg baseline` adds "
        "`infer={'baseline': {'use_decaying_avg_baseline': True}}`, warmed up for "
        f"{s['baseline_warmup_calls']} calls (stateful, so Monte Carlo only). Gradients "
        "are `torch.autograd.grad` of `elbo.differentiable_loss(model, guide, logits)` "
        "(`TraceGraph_ELBO`, which has no `differentiable_loss`, uses `loss_and_grads`).\n\n"
        "## Problems\n\n",
    ]
    for entry in (gmm, vae):
        parts.append(f"* **{entry['title']}**.\n")
    parts.append(
        "\n`gmm`: `z_i ~ Categorical(w)`, `x_i ~ Normal(locs[z_i], 1)`, locs (-3, -1, 1, "
        "3), 1-D data; guide `z_i ~ Categorical(logits_i)`. `vae`: "
        "`z_l ~ Categorical(1/4)`, `x ~ Bernoulli(logits = b + sum_l W_l[z_l])`; guide "
        "`z_l ~ Categorical(logits_{i,l})`. Model parameters are fixed; only the guide's "
        "logits are differentiated. (The same VAE written with `OneHotCategorical` and "
        "`z_l @ W_l` is used only in the consistency checks, see there.)\n\n"
        "## Plots\n\n"
    )
    for state in ("init0", "trained"):
        parts.append(f"![estimators vs step size, {state}](img/{img_names[state]})\n\n")
    parts.append(
        "Lines: exact values; dots: Monte Carlo; dashed: REINFORCE (black, exact) and "
        "TraceGraph with a decaying average baseline (grey, MC). In the top row the wide "
        "blue line of `full` lies under the orange one of `stl` (same expectation). "
        "The middle row, "
        "`tr Var / ‖E g‖²`, is the noise of one draw relative to its own mean: `full` and "
        "`stl` share the mean, so it compares their variance directly.\n\n"
        "## Full tables\n\n"
        f"Step sizes {', '.join(f'{c:g}' for c in s['table_step_sizes'])} (the JSON has "
        f"{', '.join(f'{c:g}' for c in s['step_sizes'])} and states "
        f"{', '.join(gmm['states'])}).\n\n"
    )
    for name, entry in results["problems"].items():
        for state, st in entry["states"].items():
            if state not in TABLE_STATES:
                continue
            parts.append(
                f"### {name}, guide state `{state}` (‖g*‖ = {_f(st['exact_grad_norm'])})\n\n"
            )
            parts.append(estimator_table(st, s["table_step_sizes"]))
            worst = max(r.get("mc_vs_exact_mean_in_se", 0.0) for r in st["rows"])
            parts.append(
                f"\nMonte Carlo mean vs exact mean: at most {worst:.1f} Monte Carlo "
                "standard errors apart.\n\n"
            )
    parts.append(invariance_section(results, img_names["invariance"]))
    parts.append(
        "## Consistency checks\n\n"
        "* exact gradient: `TraceEnum_ELBO` with the guide enumerated agrees with a "
        f"brute-force sum to {_f(enum_diff)};\n"
        "* vectorization: the gradient of replica `r` of one `reps`-plate call equals a "
        "separate one-draw call with the same (forced) draw, for every estimator at "
        f"c = 1: max relative diff {_f(gmm['vectorization_check_max_rel_diff'])} (gmm), "
        f"{_f(vae['vectorization_check_max_rel_diff'])} (vae);\n"
        "* draw by draw, the `full` gradient minus the `stl` gradient is `z - pi` "
        "(every joint draw, both projections, c = 0.1, 1, 10): max abs diff "
        f"{_f(gmm['full_minus_stl_check_max_abs_diff'])} (gmm), "
        f"{_f(vae['full_minus_stl_check_max_abs_diff'])} (vae);\n"
        "* Monte Carlo vs exact enumeration: see the line under each table.\n"
        + onehot_check_text(vae)
        + "\n"
        "## Reproduce\n\n"
        "```\npython benchmarks/guide_log_prob.py          # this page, the JSON, the plots\n"
        "python benchmarks/guide_log_prob.py --quick  # smoke test, JSON only\n```\n\n"
        f"Seed {s['seed']} ({s['seeding']}); {s['draws']:,} draws per estimator. "
        f"Python {v['python']}, torch {v['torch']}, pyro-ppl {v['pyro']}, pyro-ils "
        f"{v['pyro_ils']} (commit `{v['git_commit'][:10]}`"
        f"{', with local changes to pyro_ils' if v['pyro_ils_dirty'] else ''}), "
        f"{v['platform']}, {v['torch_threads']} torch thread(s); run time "
        f"{results['seconds']:.0f} s.\n"
    )
    doc_path.write_text("".join(parts))


def onehot_check_text(vae):
    variant = vae.get("onehot_variant")
    if variant is None:
        return ""
    diffs = variant["categorical_vs_onehot_max_abs_diff"]
    bad = {k: v for k, v in diffs.items() if v > 1e-4}
    identity = variant["full_minus_stl_check_max_abs_diff"]
    text = (
        "* the VAE written with `OneHotCategorical` (`z_l @ W_l`) against the one written "
        "with `Categorical` (`W_l[z_l]`), every joint draw forced, c = 1: "
    )
    if not bad and identity < 1e-4:
        return text + (
            f"same gradients (max abs diff {_f(max(diffs.values()))}), and `full - stl = "
            f"z - pi` holds (max abs diff {_f(identity)}).\n"
        )
    good = [k for k in diffs if k not in bad]
    return text + (
        "**FAILS**. Equal for "
        + ", ".join(f"{k} ({_f(diffs[k])})" for k in good)
        + "; different for "
        + ", ".join(f"{k} ({_f(v)})" for k, v in bad.items())
        + f"; and `full - stl - (z - pi)` reaches {_f(identity)}. With `OneHotCategorical` "
        "the `stl` mode loses the guide's `-log q(z)` gradient through the draw as well: "
        "`ILSOneHotCategorical._detached_params()` returns a plain `OneHotCategorical`, "
        "whose `log_prob` reads the value by `argmax` and is not differentiable in it. "
        "(`ILSCategorical` keeps it, through the index tensor's `gather`.) A package "
        "bug; the `vae` numbers above use `Categorical` and are not affected.\n"
    )


def invariance_section(results, img_name):
    s = results["settings"]
    parts = [
        "## Invariance to the loss weight (subsampling, `poutine.scale`)\n\n",
        "ILS divides the draw's weight `w` (plate subsampling factor `N/B`, "
        "`poutine.scale`, mask, `1/num_particles`) out of `g` before the step and "
        "multiplies the result by `w`, so the expected gradient should not depend on "
        "the weight once it is accounted for. Checked at guide state `init0`:\n\n",
        f"* subsampling: the plate of N points with `subsample_size={s['subsample_size']}` "
        "(weight N/B); the minibatch estimator's expectation over batches and draws is "
        "compared with the full-batch one (exact: every subset, every joint draw; MC: "
        "random subsets, standard error from the per-call means). Also, per point, the "
        "expectation given that the point is in the batch, divided by N/B;\n",
        f"* `poutine.scale(scale={s['scale']})` on model and guide: the expectation "
        "divided by the scale against the unscaled one (MC: the same seeded draws, "
        "compared draw by draw);\n",
        "* `naive`: what an implementation that did not divide `w` out would give (its "
        "step would be `c w`), to show that the check can tell.\n\n",
        "`rel. diff` is `‖E_weighted / w - E_plain‖ / ‖E_plain‖`.\n\n",
    ]
    for name, entry in results["problems"].items():
        inv = entry["scale_invariance"]
        parts.append(f"### {name} (N = {inv['n']}, B = {inv['subsample_size']})\n\n")
        parts.append(invariance_table(entry))
        parts.append("\n")
    rows = [r for e in results["problems"].values() for r in e["scale_invariance"]["rows"]]
    worst_sub = max(
        max(r["exact"]["subsample_rel_diff"], r["exact"]["subsample_conditional_rel_diff"])
        for r in rows
    )
    worst_scale = max(r["exact"]["scale_rel_diff"] for r in rows)
    worst_z = max(r["mc"]["subsample_rel_diff"] / r["mc"]["subsample_noise_floor"] for r in rows)
    naive = [
        r["exact"][k] for r in rows for k in ("naive_subsample_rel_diff", "naive_scale_rel_diff")
    ]
    parts.append(
        f"Exact expectations agree to {_f(worst_sub)} (subsampling) and {_f(worst_scale)} "
        "(scale) in relative norm for every mode, projection and step size, i.e. to "
        "floating-point precision: **the estimator's expectation is invariant to the loss "
        "weight**, and so is each scaled draw. The random-subsample Monte Carlo means "
        f"are within {worst_z:.1f} standard errors of the full-batch expectation. Not "
        f"dividing the weight out would have moved the expectation by up to {_f(max(naive))} "
        f"in relative norm (by {_f(min(naive))} where both steps saturate the projection).\n\n"
        f"![invariance](img/{img_name})\n\n"
    )
    return "".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test, JSON only")
    parser.add_argument("--draws", type=int, default=None, help="Monte Carlo draws (2000)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs and plots")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="regenerate docs and plots from the existing JSON without rerunning",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the tensors are tiny)"
    )
    args = parser.parse_args(argv)
    if args.quick and args.report_only:
        parser.error("--report-only writes the docs from the full run's JSON; drop --quick")
    torch.set_num_threads(args.threads)
    draws = args.draws or (200 if args.quick else 2000)
    out_path = args.out or RESULTS / (
        "guide_log_prob_quick.json" if args.quick else "guide_log_prob.json"
    )
    if args.report_only:
        results = json.loads(out_path.read_text())
    else:
        t0 = time.perf_counter()
        results = run(args.quick, draws, log=lambda msg: print(msg, flush=True))
        results["seconds"] = time.perf_counter() - t0
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))
        print(f"wrote {out_path} ({results['seconds']:.1f} s)")
        if args.quick or args.no_docs:
            return results
    IMG.mkdir(parents=True, exist_ok=True)
    img_names = {
        "init0": "guide_log_prob_init.png",
        "trained": "guide_log_prob_trained.png",
        "invariance": "guide_log_prob_invariance.png",
    }
    for state in ("init0", "trained"):
        plot(results, state, IMG / img_names[state])
    plot_invariance(results, IMG / img_names["invariance"])
    write_doc(results, DOC, img_names)
    print(f"wrote {DOC} and {', '.join(img_names.values())}")
    return results


if __name__ == "__main__":
    main()
