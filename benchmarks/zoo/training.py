"""Training to convergence, with a curve against steps and against wall time.

The stopping rule: the held-out metric (higher is better) is evaluated every
``task.eval_every`` steps; a run stops at the first evaluation at step ``t >=
task.min_steps`` where the metric improved by less than ``task.tol`` (relative)
over the last fifth of the run, that is between the evaluation nearest ``0.8 t``
and ``t``, or at ``task.max_steps``. Evaluation time is not counted in the run's
wall time.
"""

from __future__ import annotations

import math
import time

import pyro
import torch
from pyro.infer import SVI

from .estimators import Estimator, evaluations


def _converged(curve: list[dict], tol: float) -> bool:
    t = curve[-1]["step"]
    earlier = min(curve, key=lambda p: abs(p["step"] - 0.8 * t))
    now, then = curve[-1]["metric"], earlier["metric"]
    if not (math.isfinite(now) and math.isfinite(then)):
        return False
    return now - then < tol * abs(then)


def train(task, estimator: Estimator, lr: float, seed: int, progress=None) -> dict:
    """Train ``task`` with ``estimator`` at learning rate ``lr`` from ``seed``; return
    the curve, the final metrics, the steps, the training seconds, why it stopped and,
    for the plugin's ELBOs, what each discrete site got (``site_choices``), and the
    objective evaluations per step (``evaluations_per_step``, ``None`` where not known)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    task.reset(estimator)
    loss = estimator.loss(task)
    svi = SVI(task.model, task.guide, pyro.optim.Adam({"lr": lr}), loss=loss)
    curve, seconds, stop = [], 0.0, "max_steps"
    for step in range(1, task.max_steps + 1):
        start = time.perf_counter()
        try:
            value = svi.step(*task.batch())
        except ValueError:  # a distribution built from non-finite parameters
            value = math.nan
        seconds += time.perf_counter() - start
        if not math.isfinite(value):
            stop = "diverged"
            break
        if step % task.eval_every == 0 or step == task.max_steps:
            with torch.no_grad():
                metric = task.metric()
            curve.append({"step": step, "seconds": seconds, "metric": metric})
            if progress is not None:
                progress(step, metric)
            if not math.isfinite(metric):
                stop = "diverged"
                break
            if step >= task.min_steps and len(curve) >= 2 and _converged(curve, task.tol):
                stop = "converged"
                break
    final = {}
    if stop != "diverged":
        with torch.no_grad():
            final = task.evaluate()
    run = {
        "estimator": estimator.name,
        "lr": lr,
        "seed": seed,
        "steps": curve[-1]["step"] if curve else 0,
        "seconds": seconds,
        "stop": stop,
        "curve": curve,
        "final": final,
    }
    # counted after the run, from a restored random state: the run is as it was without it
    run["evaluations_per_step"] = evaluations(task, estimator, loss)
    if hasattr(loss, "num_samples"):  # RLOO's matched samples, IndeCateR's draws
        run["num_samples"] = loss.num_samples
    if hasattr(loss, "site_choices"):  # what the plugin's default gave each site
        run["site_choices"] = {name: str(c) for name, c in loss.site_choices.items()}
    return run
