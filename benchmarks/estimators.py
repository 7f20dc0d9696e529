"""Estimator benchmark: ILS against the discrete gradient estimators a user would pick instead.

Every estimator of ``benchmarks/estimator_bench/registry.py`` and ``peers.py`` (exact
enumeration, REINFORCE, baselines, RLOO, IndeCateR, MuProp, REBAR, RELAX,
Gumbel-Softmax, ST-Gumbel, straight-through, ReinMax, Gumbel-Rao, GST, ILS) on the
tasks of ``estimator_bench/tasks/`` (the ILS proposal's toy, a mixture-of-experts
bound, a categorical VAE on binarized digits, a polynomial), measuring two things:

* ``gradients``: gradient quality against the exact gradient, every estimator at
  every value of its own grid (``estimator_bench/gradients.py``);
* ``cost``: time per step and peak memory against K and the number of sites
  (``estimator_bench/cost.py``), on CPU, or on CUDA with ``--cuda``.

Training comparisons are not made here: they are in the zoo suite
(``python -m benchmarks run zoo MODEL``, ``benchmarks/zoo/``), under the review
protocol (learning-rate grids, budgets and seeds declared per model). Writes
``benchmarks/results/estimators.json`` (settings, seeds, versions, machine, every
measurement; one run at one commit: runs are never merged) and renders
``docs/estimators.md`` with its plots ``docs/img/estimators_*.png``
(``estimator_bench/report.py``).

Usage::

    python -m benchmarks run estimators           # full run, JSON, page and plots
    python -m benchmarks run estimators --quick   # CI smoke size (a few minutes), JSON only
    python -m benchmarks report estimators        # rewrite the page from the JSON
    python -m benchmarks run estimators --parts cost --cuda --out cuda.json  # cost on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import pyro
import torch
from tqdm import tqdm

from benchmarks.estimator_bench import common, cost, gradients, registry
from benchmarks.estimator_bench.tasks import make_tasks

PARTS = ("gradients", "cost")

FULL = {
    "tasks": {
        "toy": {"N": 5, "K": 5, "true_seed": 0},
        "poly": {"D": 4, "t": 0.45},
        "moe": {"experts": 4, "num_data": 2000, "batch_size": 64},
        "vae_small": {"latents": 4, "categories": 8, "batch_size": 64, "is_samples": 100},
    },
    "gradients": {
        "tasks": ["toy", "poly", "moe", "vae_small"],
        "draws": 64,
        "points": [0, 100, 200],
        "trajectory_lr": 0.01,
        "warmup": 30,
        "seed": 7,
    },
    "cost": {
        "batch_size": 32,
        "fixed_latents": 4,
        "categories": [2, 8, 32, 128],
        "fixed_categories": 8,
        "latents": [1, 4, 16, 64],
        "warmup": 2,
        "steps": 10,
    },
}


def quick_settings():
    s = copy.deepcopy(FULL)
    s["tasks"]["vae_small"].update(is_samples=10, eval_images=100)
    s["gradients"].update(draws=16, points=[0, 20], warmup=5)
    s["cost"].update(categories=[2, 8], latents=[1, 4], steps=3, warmup=1)
    return s


def run(settings, parts, keys, device, log):
    ests = registry.estimators(keys)
    tasks = make_tasks(settings["tasks"])
    results = {
        "settings": settings,
        "parts": list(parts),
        "estimators": {
            e.key: {
                "label": e.label,
                "family": e.family,
                "evals_per_step": e.evals
                if not callable(e.evals)
                else {name: e.cost(t) for name, t in tasks.items() if e.runs_on(t)},
                "grid": {k: list(v) for k, v in e.grid.items()},
                "default": e.default,
                "stateful": e.stateful,
                "tasks": list(e.tasks) if e.tasks else None,
                "note": e.note,
            }
            for e in ests
        },
        "missing_estimators": dict(registry.MISSING),
        "tasks": {name: t.describe() for name, t in tasks.items()},
    }
    gs, cs = settings["gradients"], settings["cost"]
    total = 0
    if "gradients" in parts:
        total += gradients.count([tasks[n] for n in gs["tasks"]], ests, gs)
    if "cost" in parts:
        total += len(cost.sweeps(cs)) * len(ests)
    bar = tqdm(total=total, desc="estimators", smoothing=0.05)
    if "gradients" in parts:
        results["gradients"] = {}
        for name in gs["tasks"]:
            bar.set_postfix_str(f"gradients {name}")
            results["gradients"][name] = gradients.gradient_quality(
                tasks[name], ests, gs, bar=bar, log=log
            )
    if "cost" in parts:
        bar.set_postfix_str("cost")
        results["cost"] = cost.cost(ests, cs, device, bar)
    bar.close()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke size, JSON only")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    parser.add_argument("--no-docs", action="store_true", help="do not write the page and plots")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the page and plots from the JSON"
    )
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--estimators", nargs="+", default=None, help="registry keys")
    parser.add_argument("--cuda", action="store_true", help="cost measurements on the GPU")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda was given but CUDA is not available on this machine")
    if args.cuda and set(args.parts) != {"cost"}:
        parser.error("--cuda applies to the cost measurements: add --parts cost")
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    default_name = "estimators_quick.json" if args.quick else "estimators.json"
    out = args.out or common.RESULTS / default_name
    if args.report_only:
        results = json.loads(out.read_text())
    else:
        device = torch.device("cuda" if args.cuda else "cpu")
        settings = quick_settings() if args.quick else copy.deepcopy(FULL)
        env = common.run_environment(device)
        t0 = time.perf_counter()
        results = run(settings, args.parts, args.estimators, device, log=tqdm.write)
        results["seconds"] = time.perf_counter() - t0
        results["quick"] = args.quick
        results["environment"] = common.finish_environment(env)
        results["environment"]["pyro_validation"] = False
        results["command"] = " ".join(
            ["python -m benchmarks run estimators", *(argv if argv is not None else sys.argv[1:])]
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        print(f"wrote {out} ({results['seconds']:.0f} s)")
        if args.quick or args.no_docs:
            return results
    from benchmarks.estimator_bench import report

    written = report.write(results, out)
    print("wrote " + ", ".join(common.rel(p) for p in written))
    return results


if __name__ == "__main__":
    main()
