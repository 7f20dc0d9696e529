"""Run a zoo model's suite: tune, then train every estimator on the reported seeds.

::

    python -m benchmarks run zoo dp_gaussian            # the full suite
    python -m benchmarks run zoo quickstart --quick     # a smoke-sized run

Protocol (the same for every estimator):

* **Tuning** on seeds disjoint from the reported ones: the learning rate over
  :data:`LR_GRID` (or the model's own grid, :func:`lr_grid`), widened by a factor 5
  at an edge that holds the best mean (up to :data:`MAX_WIDEN` times; an edge
  still best is reported); then, for the
  estimators with a temperature, the temperature over
  :data:`~.estimators.TEMPERATURE_GRID` at that learning rate, widened by a
  factor 2 at a best edge in the same way.
* **Reported seeds**: the task's ``reported_seeds`` (ten on the small tasks, the
  quickstart, the Dirichlet-process mixtures and the mixture of experts; five on the
  MNIST ones; ``--seeds n`` takes the first ``n``): every estimator at its tuned
  setting and "out of the box" (the source's learning rate, temperature 1),
  interleaved seed by seed in one process, with ``torch.set_num_threads(1)``.
* Every run trains to convergence (see :mod:`.training`).
"""

from __future__ import annotations

import argparse
import json

import torch
from tqdm import tqdm

from . import record
from .air import TASKS as _AIR
from .estimators import ESTIMATORS, TEMPERATURE_GRID
from .mixtures import TASKS as _MIXTURES
from .moe import TASKS as _MOE
from .ssvae import TASKS as _SSVAE
from .stats import final_score, finite_mean
from .training import train
from .vaes import TASKS as _VAES

TASKS = {**_MIXTURES, **_MOE, **_VAES, **_SSVAE, **_AIR}
LR_GRID = (0.01, 0.05, 0.25)


def lr_grid(task) -> tuple[float, ...]:
    """The model's learning-rate grid (the same for every estimator): its own
    ``lr_grid`` where it has one (the VAEs, around their sources' 1e-3 and 4.2e-4),
    else :data:`LR_GRID`."""
    return tuple(getattr(task, "lr_grid", LR_GRID))


MAX_WIDEN = 2
TUNING_SEEDS = (100, 101)
#: The reported seeds of a task without its own ``reported_seeds``.
REPORTED_SEEDS = (0, 1, 2, 3, 4)


#: The factor by which each grid is widened at a best edge.
WIDEN_FACTOR = {"lr": 5.0, "temperature": 2.0}


def _grid_search(task, values, make, seeds, bar, key):
    """Mean final metric over ``seeds`` at each value; widen at a best edge."""
    factor = WIDEN_FACTOR[key]
    table, values = {}, list(values)
    for _ in range(MAX_WIDEN + 1):
        for v in values:
            if v in table:
                continue
            est, lr = make(v)
            runs = [train(task, est, lr, s) for s in seeds]
            bar.update(len(seeds))
            table[v] = finite_mean([final_score(r) for r in runs])
        ordered = sorted(table)
        best = max(ordered, key=lambda v: table[v])
        if best not in (ordered[0], ordered[-1]) or len(ordered) < 2:
            break
        values = [best / factor if best == ordered[0] else best * factor]
    ordered = sorted(table)
    best = max(ordered, key=lambda v: table[v])
    edge = best in (ordered[0], ordered[-1])
    return best, edge, {str(v): table[v] for v in ordered}


def tune(task, names, seeds, bar) -> dict:
    tuned = {}
    for name in names:
        est = ESTIMATORS[name]
        lr, lr_edge, lr_table = _grid_search(
            task, lr_grid(task), lambda v, e=est: (e, v), seeds, bar, "lr"
        )
        entry = {"lr": lr, "lr_edge": lr_edge, "lr_table": lr_table}
        if est.temperature is not None:
            t, t_edge, t_table = _grid_search(
                task,
                TEMPERATURE_GRID,
                lambda v, e=est, lr=lr: (e.with_temperature(v), lr),
                seeds,
                bar,
                "temperature",
            )
            entry.update(temperature=t, temperature_edge=t_edge, temperature_table=t_table)
        tuned[name] = entry
    return tuned


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(TASKS))
    parser.add_argument("--quick", action="store_true", help="smoke-sized: tiny budgets")
    parser.add_argument("--estimators", default=None, help="comma-separated subset")
    parser.add_argument(
        "--seeds", type=int, default=None, help="the first N of the task's reported seeds"
    )
    parser.add_argument("--allow-dirty", action="store_true", help="mark the result dirty")
    parser.add_argument("--out", default=None, help="result file (default: results/zoo/)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = TASKS[args.model](quick=args.quick)
    names = [n for n in task.estimators if n in ESTIMATORS]
    if args.estimators:
        names = [n for n in args.estimators.split(",") if n in names]
    seeds = tuple(getattr(task, "reported_seeds", REPORTED_SEEDS))[: args.seeds]
    seeds = seeds[:2] if args.quick else seeds
    tuning_seeds = TUNING_SEEDS if not args.quick else TUNING_SEEDS[:1]
    result = {
        **record.header(
            args.allow_dirty,
            {"tuning": list(tuning_seeds), "reported": list(seeds)},
            argv=argv,
        ),
        "model": task.name,
        "title": task.title,
        "source": task.source,
        "quick": args.quick,
        "protocol": {
            "lr_grid": list(lr_grid(task)),
            "temperature_grid": list(TEMPERATURE_GRID),
            "source_lr": task.lr,
            "max_steps": task.max_steps,
            "min_steps": task.min_steps,
            "eval_every": task.eval_every,
            "tol": task.tol,
            "metric": task.metric_name,
        },
        "estimators": {
            n: {"label": ESTIMATORS[n].label, "about": ESTIMATORS[n].about} for n in names
        },
    }
    bar = tqdm(desc=f"{task.name} tuning", disable=args.no_progress, unit="run")
    result["tuning"] = tune(task, names, tuning_seeds, bar)
    bar.close()
    runs = []
    bar = tqdm(total=None, desc=f"{task.name} seeds", disable=args.no_progress)
    for seed in seeds:  # interleaved: every estimator on a seed before the next seed
        for name in names:
            est, t = ESTIMATORS[name], result["tuning"][name]
            tuned = est.with_temperature(t["temperature"]) if "temperature" in t else est
            settings = [("tuned", tuned, t["lr"])]
            if t["lr"] != task.lr or tuned.temperature != est.temperature:
                settings.append(("source", est, task.lr))
            for setting, e, lr in settings:
                run = train(task, e, lr, seed)
                run["setting"] = setting
                runs.append(run)
                bar.update(1)
    bar.close()
    result["runs"] = runs
    out = args.out or str(record.RESULTS / f"{task.name}{'_quick' if args.quick else ''}.json")
    record.RESULTS.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
