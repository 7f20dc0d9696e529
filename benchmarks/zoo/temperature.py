"""Choose the temperature of the default's midpoint limit on the zoo's VAEs.

::

    python -m benchmarks.zoo.temperature               # the grid on every VAE
    python -m benchmarks.zoo.temperature --quick       # a smoke-sized run

``TraceILS_ELBO()`` gives a site with more than ``max_alternatives`` alternatives the
midpoint limit, whose temperature ``tau`` (:mod:`pyro_ils.site_choice`) is one number
for every model. This script trains the default on each VAE of the zoo (the models
whose sites are that large) with the site's temperature set through
``infer={"ils": {"temperature": tau}}``, at the model's own learning rate, on the
zoo's **tuning seeds** only (disjoint from the reported seeds), to convergence or the
model's cap (:mod:`.training`), with ``torch.set_num_threads(1)``.

The rule, fixed before the run: for each model the shortfall of each ``tau`` is the
best mean final held-out ELBO over the grid minus that ``tau``'s mean; the choice is
the ``tau`` whose largest shortfall over the models is smallest (minimax regret). A
choice at an edge of the grid is reported as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from tqdm import tqdm

from . import record
from .estimators import ESTIMATORS
from .run import TUNING_SEEDS, _mean, _score
from .training import train
from .vaes import TASKS as VAES

GRID = (1.0, 2.0, 4.0, 8.0)


def default_at(temperature: float):
    """The default estimator with its sites' midpoint limit at ``temperature``."""
    return dataclasses.replace(
        ESTIMATORS["ils_default"],
        label=f"TraceILS_ELBO(), temperature {temperature:g}",
        site_infer={"ils": {"temperature": temperature}},
    )


def choose(table: dict[str, dict[str, float]]) -> tuple[float, dict[str, float]]:
    """The minimax-regret temperature of ``{model: {tau: mean}}`` and each tau's
    largest shortfall."""
    taus = sorted({float(t) for means in table.values() for t in means})
    worst = {}
    for t in taus:
        worst[t] = max(max(m.values()) - m[str(t)] for m in table.values())
    best = min(taus, key=lambda t: worst[t])
    return best, {str(t): w for t, w in worst.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(VAES), help="comma-separated")
    parser.add_argument("--temperatures", default=",".join(f"{t:g}" for t in GRID))
    parser.add_argument("--quick", action="store_true", help="smoke-sized: tiny budgets")
    parser.add_argument("--allow-dirty", action="store_true", help="mark the result dirty")
    parser.add_argument("--out", default=None, help="result file (default: results/zoo/)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = args.models.split(",")
    unknown = set(models) - set(VAES)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {sorted(VAES)}")
    grid = [float(t) for t in args.temperatures.split(",")]
    seeds = TUNING_SEEDS[:1] if args.quick else TUNING_SEEDS
    result = {
        **record.header(args.allow_dirty, {"tuning": list(seeds)}, "benchmarks.zoo.temperature"),
        "quick": args.quick,
        "grid": grid,
        "rule": "minimax regret over the models of the mean final held-out ELBO",
        "models": {},
    }
    bar = tqdm(total=len(models) * len(grid) * len(seeds), disable=args.no_progress)
    table = {}
    for name in models:
        task = VAES[name](quick=args.quick)
        runs, means = [], {}
        for t in grid:
            scores = []
            for seed in seeds:
                run = train(task, default_at(t), task.lr, seed)
                run.update(temperature=t, seed=seed)
                runs.append(run)
                scores.append(_score(run))
                bar.update(1)
            means[str(t)] = _mean(scores)
        table[name] = means
        result["models"][name] = {"title": task.title, "lr": task.lr, "means": means, "runs": runs}
    bar.close()
    best, worst = choose(table)
    result.update(choice=best, worst_shortfall=worst, edge=best in (min(grid), max(grid)))
    out = args.out or str(
        record.RESULTS / f"default_temperature{'_quick' if args.quick else ''}.json"
    )
    record.RESULTS.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    for name, means in table.items():
        print(name, " ".join(f"tau {t}: {m:.2f}" for t, m in means.items()))
    print(f"choice: tau = {best:g} (largest shortfall {worst[str(best)]:.2f})")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
