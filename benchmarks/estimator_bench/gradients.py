"""Gradient quality against the exact gradient.

For a task whose exact loss is known (closed form or enumeration), at several
points of a training trajectory that follows the exact gradient, each estimator
draws ``draws`` independent gradients of the loss on one fixed minibatch with
respect to the guide's parameters (the parameters upstream of the discrete draws:
the toy's and the polynomial's logits, the gate network, the encoder). Each is
compared with the exact gradient ``g*`` of the same loss (``task.exact_loss``,
differentiated by autograd, independent of Pyro's ELBOs):

* ``rel_bias``: ``|mean(g) - g*| / |g*|``; ``mc_floor``: ``sqrt(tr Var / M) / |g*|``,
  the size of the Monte Carlo error of the mean (bias below it cannot be seen);
* ``rel_var``: ``tr Var(g) / |g*|^2`` (one draw);
* ``snr``: ``|mean(g)| / sqrt(tr Var(g))``;
* ``cos_mean``: cosine of ``mean(g)`` with ``g*``; ``cos_draw``: mean cosine of one draw;
* ``mse_best_scale``: ``1 - <E g, g*>^2 / (|g*|^2 E|g|^2)``, the relative mean squared
  error of one draw after the best rescaling (0 exact, 1 no better than zero).

Every estimator that has a grid of its own (temperatures, step sizes) is measured
at every value of it (:func:`configs`), the others at their default.

Stateful estimators (baselines, learned control variates, online tuning) are first
warmed up with ``warmup`` SVI steps whose updates of the task's own parameters are
undone, so that only their own state moves.
"""

from __future__ import annotations

import time

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI

from .common import finite
from .registry import prepare


def _ensure_params(task, args):
    guide_tr = poutine.trace(task.guide).get_trace(*args)
    poutine.trace(poutine.replay(task.model, trace=guide_tr)).get_trace(*args)


def _guide_params(task):
    store = pyro.get_param_store()
    names = sorted(n for n in store.keys() if task.is_guide_param(n))
    return names, [store._params[n] for n in names]


def snapshot():
    store = pyro.get_param_store()
    return {n: v.detach().clone() for n, v in store._params.items()}


def restore(snap):
    """Put the snapshot's values back and drop parameters created since."""
    store = pyro.get_param_store()
    for name in list(store.keys()):
        if name not in snap:
            del store[name]
    with torch.no_grad():
        for name, value in snap.items():
            store._params[name].copy_(value)


def exact_trajectory(task, seed, steps, points, lr):
    """Adam on the exact loss (random minibatches); snapshots at ``points`` steps."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    task.reset(seed)
    gen = torch.Generator().manual_seed(seed)
    _ensure_params(task, task.grad_args())
    _, params = _guide_params(task)
    all_params = list(pyro.get_param_store()._params.values())
    optim = torch.optim.Adam(all_params, lr=lr)
    snaps = {}
    for step in range(steps + 1):
        if step in points:
            snaps[step] = (snapshot(), task.evaluate())
        if step == steps:
            break
        optim.zero_grad()
        task.exact_loss(*task.train_args(gen)).backward()
        optim.step()
    return snaps


def stats(grads: torch.Tensor, exact: torch.Tensor) -> dict:
    g = grads.double()
    e = exact.double()
    M = len(g)
    mean = g.mean(0)
    e2 = e.dot(e)
    tr_var = ((g - mean) ** 2).sum(1).sum() / max(M - 1, 1)
    cos_draw = (g @ e) / (g.norm(dim=1) * e.norm()).clamp_min(1e-300)
    second = (g**2).sum(1).mean()
    return {
        "rel_bias": finite((mean - e).norm() / e.norm()),
        "mc_floor": finite(torch.sqrt(tr_var / M) / e.norm()),
        "rel_var": finite(tr_var / e2),
        "snr": finite(mean.norm() / tr_var.sqrt()) if tr_var > 0 else None,
        "cos_mean": finite(mean.dot(e) / (mean.norm() * e.norm()).clamp_min(1e-300)),
        "cos_draw": finite(cos_draw.mean()),
        "mse_best_scale": finite(1 - mean.dot(e) ** 2 / (e2 * second)) if second > 0 else None,
        "rel_mse": finite(((g - e) ** 2).sum(1).mean() / e2),
        "grad_norm_ratio": finite(mean.norm() / e.norm()),
    }


def configs(est) -> list[dict]:
    """Every estimator with a grid at every value of it (temperatures, step sizes,
    ``eta``), whatever its family; one without a grid at its default."""
    if est.hyper:
        return [{est.hyper: v} for v in est.grid[est.hyper]]
    return [dict(est.default)]


def measure(task, est, hp, snap, draws, warmup, seed, lr=0.01):
    restore(snap)
    pyro.set_rng_seed(seed)
    model, guide, elbo = prepare(est, task, hp)
    args = task.grad_args()
    if est.stateful and warmup:
        task_snap = {n: v for n, v in snap.items()}
        svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss=elbo)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(warmup):
            svi.step(*task.train_args(gen))
            store = pyro.get_param_store()
            with torch.no_grad():
                for name, value in task_snap.items():
                    store._params[name].copy_(value)
    names, params = _guide_params(task)
    exact = torch.autograd.grad(task.exact_loss(*args), params)
    exact = torch.cat([g.reshape(-1) for g in exact])
    rows = []
    t0 = time.perf_counter()
    for _ in range(draws):
        for p in params:
            p.grad = None
        elbo.loss_and_grads(model, guide, *args)
        rows.append(
            torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                    for p in params
                ]
            )
        )
    seconds = time.perf_counter() - t0
    out = stats(torch.stack(rows), exact)
    out["exact_grad_norm"] = finite(exact.norm())
    out["seconds_per_draw"] = seconds / draws
    return out


def gradient_quality(task, ests, settings, bar=None, log=print):
    """Rows for every (point, estimator, config) of ``task``."""
    points = settings["points"]
    snaps = exact_trajectory(
        task, settings["seed"], max(points), set(points), settings["trajectory_lr"]
    )
    out = {"points": {}, "draws": settings["draws"]}
    for point in points:
        snap, metrics = snaps[point]
        rows = []
        for est in ests:
            if not est.runs_on(task):
                continue
            for hp in configs(est):
                try:
                    row = measure(
                        task, est, hp, snap, settings["draws"], settings["warmup"], settings["seed"]
                    )
                    row["failed"] = None
                except Exception as error:  # noqa: BLE001 - recorded, not hidden
                    row = {"failed": f"{type(error).__name__}: {error}"[:300]}
                    log(f"  gradient {task.name} {est.key} {hp}: {row['failed']}")
                row.update(
                    estimator=est.key, label=est.label, family=est.family, hp=hp,
                    evals=est.cost(task),
                )  # fmt: skip
                if row.get("rel_var") is not None:
                    row["rel_var_x_evals"] = row["rel_var"] * row["evals"]
                rows.append(row)
                if bar is not None:
                    bar.update()
        out["points"][str(point)] = {"step": point, "metrics": metrics, "rows": rows}
    pyro.clear_param_store()
    return out


def count(tasks, ests, settings) -> int:
    return sum(
        len(settings["points"]) * sum(len(configs(e)) for e in ests if e.runs_on(t)) for t in tasks
    )


__all__ = ["gradient_quality", "count", "stats", "configs"]
