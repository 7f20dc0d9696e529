"""Training runs: tuning on one seed, then the best configuration on fresh seeds.

Every estimator is tuned over the same grid: the learning rates of
:data:`~.registry.LR_GRID` and, where it has one, its own hyper-parameter
(temperature, step size). The search is coordinate-wise, on one tuning seed and a
shorter run (``tune_steps``): first the hyper-parameter's values at the middle
learning rate, then the other learning rates at the best value. The best
configuration (by the task's primary metric at the end, on training data) is then
run on ``seeds`` fresh seeds for ``steps`` steps. Adam throughout.

A run records, at ``evals`` evenly spaced points, the step, the objective
evaluations so far (steps x the estimator's cost per step), the training wall time
so far (evaluation excluded), the task's exact (or sampled) objective, and the mean
of the sampled loss since the previous point. A run with a time budget
(``seconds``) stops at the first step at which its training time reaches the budget,
and spaces its points evenly in training time instead of steps.
"""

from __future__ import annotations

import math
import time

import pyro
import torch
from pyro.infer import SVI

from .common import finite
from .registry import LR_GRID, prepare


class _Schedule:
    """When a run records a point and when it stops: at ``n_points + 1`` evenly
    spaced steps of ``steps``; or, with a time budget ``seconds``, whenever the
    training time passes one of ``n_points + 1`` evenly spaced times, stopping at the
    first step at which it reaches the budget (``steps`` is then only a cap)."""

    def __init__(self, steps: int, n_points: int, seconds: float | None = None):
        self.steps, self.seconds = steps, seconds
        if seconds is None:
            self.marks = sorted({round(i * steps / n_points) for i in range(n_points + 1)})
        else:
            self.marks = [i * seconds / n_points for i in range(n_points + 1)]
        self.next = 0

    def done(self, step: int, train_seconds: float) -> bool:
        return step == self.steps or (self.seconds is not None and train_seconds >= self.seconds)

    def due(self, step: int, train_seconds: float) -> bool:
        if self.seconds is None:
            return step in self.marks
        passed = self.next
        while self.next < len(self.marks) and train_seconds >= self.marks[self.next]:
            self.next += 1
        return self.next > passed or self.done(step, train_seconds)


def run(task, est, hp, seed, steps, n_points, final=False, seconds=None):
    """One training run of ``steps`` steps (or of ``seconds`` of training time, at
    most ``steps`` steps) at the setting ``hp``; the final metrics with ``final``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    task.reset(seed)
    model, guide, elbo = prepare(est, task, hp)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": hp["lr"]}), loss=elbo)
    gen = torch.Generator().manual_seed(seed)
    schedule = _Schedule(steps, n_points, seconds)
    curve, losses, train_seconds, failed = [], [], 0.0, None
    cost = est.cost(task)
    step = 0
    while True:
        if schedule.due(step, train_seconds):
            with torch.no_grad():
                metrics = task.evaluate()
            point = {
                "step": step,
                "evals": step * cost,
                "seconds": train_seconds,
                "sampled_loss": finite(sum(losses) / len(losses)) if losses else None,
            }
            point.update({k: finite(v) for k, v in metrics.items()})
            curve.append(point)
            losses = []
            if point.get(task.primary) is None:
                failed = failed or "non-finite objective"
                break
        if schedule.done(step, train_seconds):
            break
        args = task.train_args(gen)
        t0 = time.perf_counter()
        try:
            loss = svi.step(*args)
        except Exception as error:  # noqa: BLE001 - a diverged or broken run is recorded
            failed = f"{type(error).__name__}: {error}"[:300]
            break
        train_seconds += time.perf_counter() - t0
        if not math.isfinite(loss):
            failed = "non-finite loss"
            break
        losses.append(loss / task.loss_scale)
        step += 1
    result = {
        "seed": seed,
        "hp": hp,
        "steps": steps,
        "failed": failed,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(1, curve[-1]["step"] if curve else 1),
        "curve": curve,
    }
    if final and failed is None:
        with torch.no_grad():
            result["final"] = {k: finite(v) for k, v in task.final().items()}
    else:
        result["final"] = {task.primary: curve[-1].get(task.primary)} if curve else {}
    if failed is not None:
        result["final"] = {task.primary: None}
    return result


def score(task, result):
    value = result["final"].get(task.primary)
    if value is None:
        return None
    return value if task.higher_is_better else -value


def tuning_configs(est):
    """The coordinate search, as (stage, hp-without-lr) lists."""
    mid = LR_GRID[len(LR_GRID) // 2]
    if est.hyper:
        first = [{"lr": mid, est.hyper: v} for v in est.grid[est.hyper]]
    else:
        first = [{"lr": mid, **est.default}]
    return mid, first


def count_runs(task, est, settings):
    n = len(tuning_configs(est)[1]) + len(LR_GRID) - 1 if settings["tune"] else 0
    return n + len(settings["seeds"])


def tune_and_train(task, est, settings, bar=None, log=print):
    """Tuning runs, best configuration, final runs on ``settings['seeds']``."""
    tuning = []

    def tried(hp):
        r = run(task, est, hp, settings["tune_seed"], settings["tune_steps"], 4)
        entry = {"hp": hp, "score": score(task, r), task.primary: r["final"][task.primary]}
        entry["failed"] = r["failed"]
        tuning.append(entry)
        if bar is not None:
            bar.update()
        return entry

    mid, first = tuning_configs(est)
    if settings["tune"]:
        for hp in first:
            tried(hp)
        ok = [t for t in tuning if t["score"] is not None]
        best = max(ok, key=lambda t: t["score"])["hp"] if ok else first[0]
        for lr in LR_GRID:
            if lr != mid:
                tried({**best, "lr": lr})
        ok = [t for t in tuning if t["score"] is not None]
        best = max(ok, key=lambda t: t["score"])["hp"] if ok else first[0]
    elif est.default:
        best = {"lr": mid, **est.default}
    else:
        best = first[len(first) // 2] if est.hyper else first[0]
    runs = []
    for seed in settings["seeds"]:
        r = run(task, est, best, seed, settings["steps"], settings["points"], final=True)
        if r["failed"]:
            log(f"  {task.name} {est.key} seed {seed}: {r['failed']}")
        runs.append(r)
        if bar is not None:
            bar.update()
    return {"tuning": tuning, "best": best, "runs": runs, "cost_per_step": est.cost(task)}


def proposal_grid(task, registry, settings, bar=None):
    """The proposal's own comparison on its toy: fixed settings, no tuning.

    ILS step sizes x projections against Gumbel-Softmax temperatures (relaxed
    forward, as ``torch.distributions.RelaxedOneHotCategorical.rsample`` in the
    original; the ``gumbel_kl`` entry, whose KL term is exactly zero here because the
    model's prior is the guide's distribution, so the loss is the relaxed draw's
    objective alone, as in the original), Adam with a fixed learning rate.
    """
    rows = []
    configs = [
        (f"ils_{proj}", {"step_size": c})
        for proj in ("euclidean", "normalize", "reference")
        for c in settings["step_sizes"]
    ] + [("gumbel_kl", {"temperature": t}) for t in settings["temperatures"]]
    for key, hp in configs:
        est = registry[key]
        hp = {"lr": settings["lr"], **hp}
        runs = []
        for seed in settings["seeds"]:
            runs.append(run(task, est, hp, seed, settings["steps"], settings["points"]))
            if bar is not None:
                bar.update()
        rows.append({"estimator": key, "label": est.label, "hp": hp, "runs": runs})
    return rows
