"""Estimator benchmark: ILS against the discrete gradient estimators a user would pick instead.

Every estimator of ``benchmarks/estimator_bench/registry.py`` (exact enumeration,
REINFORCE, baselines, RLOO, MuProp, REBAR, RELAX, Gumbel-Softmax, ST-Gumbel,
straight-through, ReinMax, ILS) on the tasks of ``estimator_bench/tasks.py`` (the ILS
proposal's toy, a mixture-of-experts bound, two categorical VAEs on binarized digits,
a polynomial), measuring

* gradient quality against the exact gradient (``estimator_bench/gradients.py``);
* training: objective against steps, wall time and objective evaluations, each
  estimator tuned over the same grid, then 5 seeds (``estimator_bench/training.py``);
* cost: time per step and peak memory against K and the number of sites
  (``estimator_bench/cost.py``), on CPU, or on CUDA with ``--cuda``;

and the proposal's own comparison on its toy (ILS step sizes against Gumbel-Softmax
temperatures). Writes ``benchmarks/results/estimators.json`` (settings, seeds,
versions, machine, every run) and renders ``docs/estimators.md`` with its plots
``docs/img/estimators_*.png`` (``estimator_bench/report.py``).

Usage::

    python -m benchmarks run estimators           # full run (26 min on a shared 2-core VM), docs
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

from benchmarks.estimator_bench import common, cost, gradients, registry, training
from benchmarks.estimator_bench.tasks import make_tasks

PARTS = ("gradients", "training", "proposal", "cost")

FULL = {
    "tasks": {
        "toy": {"N": 5, "K": 5, "true_seed": 0},
        "poly": {"D": 4, "t": 0.45},
        "moe": {"experts": 4, "num_data": 2000, "batch_size": 64},
        "vae_small": {"latents": 4, "categories": 8, "batch_size": 64, "is_samples": 100},
        "vae_large": {"latents": 20, "categories": 10, "batch_size": 64, "is_samples": 100},
    },
    "gradients": {
        "tasks": ["toy", "poly", "moe", "vae_small"],
        "draws": 64,
        "points": [0, 100, 200],
        "trajectory_lr": 0.01,
        "warmup": 30,
        "seed": 7,
    },
    "training": {
        "steps": {"toy": 200, "poly": 200, "moe": 250, "vae_small": 250, "vae_large": 250},
        "tune_steps": {"toy": 100, "poly": 100, "moe": 100, "vae_small": 100, "vae_large": 100},
        "points": 8,
        "seeds": [0, 1, 2, 3, 4],
        "tune_seed": 100,
        "tune": True,
    },
    "proposal": {
        "steps": 500,
        "points": 15,
        "seeds": [0, 1, 2, 3, 4],
        "lr": 0.01,
        "step_sizes": [0.1, 0.01, 0.001],
        "temperatures": [0.1, 1.0, 10.0],
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
    for name in ("vae_small", "vae_large"):
        s["tasks"][name].update(is_samples=10, eval_images=100)
    s["gradients"].update(draws=16, points=[0, 20], warmup=5)
    s["training"].update(
        steps={k: 30 for k in s["training"]["steps"]},
        tune_steps={k: 10 for k in s["training"]["steps"]},
        points=3,
        seeds=[0, 1],
    )
    s["proposal"].update(steps=40, points=4, seeds=[0, 1])
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
        "lr_grid": list(registry.LR_GRID),
        "tasks": {name: t.describe() for name, t in tasks.items()},
    }
    gs, ts, ps, cs = (settings[p] for p in PARTS)
    total = 0
    if "gradients" in parts:
        total += gradients.count([tasks[n] for n in gs["tasks"]], ests, gs)
    if "training" in parts:
        total += sum(
            training.count_runs(t, e, ts) for t in tasks.values() for e in ests if e.runs_on(t)
        )
    if "proposal" in parts:
        total += len(ps["seeds"]) * (3 * len(ps["step_sizes"]) + len(ps["temperatures"]))
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
    if "proposal" in parts:
        bar.set_postfix_str("proposal toy grid")
        results["proposal"] = training.proposal_grid(tasks["toy"], registry.REGISTRY, ps, bar)
    if "training" in parts:
        results["training"] = {}
        for name, task in tasks.items():
            per_task = dict(ts)
            per_task["steps"] = ts["steps"][name]
            per_task["tune_steps"] = ts["tune_steps"][name]
            results["training"][name] = {}
            for est in ests:
                if not est.runs_on(task):
                    continue
                bar.set_postfix_str(f"train {name} {est.key}")
                results["training"][name][est.key] = training.tune_and_train(
                    task, est, per_task, bar=bar, log=log
                )
    if "cost" in parts:
        bar.set_postfix_str("cost")
        results["cost"] = cost.cost(ests, cs, device, bar)
    bar.close()
    return results


def merge(base: dict, extra: dict) -> dict:
    """Add the estimators of a later run (same settings) to ``base``.

    Used when estimators became available after the main run: run only those
    (``--estimators ... --merge-into BASE``); their training runs, gradient rows and
    cost rows are added (a ``proposal`` part replaces the base's), and the record of
    both runs is kept.
    """
    for part in ("tasks", "lr_grid"):
        if base[part] != extra[part]:
            raise ValueError(f"cannot merge runs with different {part}")
    for part in ("gradients", "training", "cost"):
        if part in extra and base["settings"][part] != extra["settings"][part]:
            raise ValueError(f"cannot merge runs with different {part} settings")
    keys = [k for k in registry.ORDER if k in base["estimators"] or k in extra["estimators"]]
    both = {**base["estimators"], **extra["estimators"]}
    base["estimators"] = {k: both[k] for k in keys} | {
        k: v for k, v in both.items() if k not in keys
    }
    order = {k: i for i, k in enumerate(base["estimators"])}
    for task, per in extra.get("training", {}).items():
        merged = {**base["training"][task], **per}
        base["training"][task] = dict(sorted(merged.items(), key=lambda kv: order[kv[0]]))
    for task, g in extra.get("gradients", {}).items():
        for point, p in g["points"].items():
            rows = base["gradients"][task]["points"][point]["rows"]
            new = {r["estimator"] for r in p["rows"]}
            rows = [r for r in rows if r["estimator"] not in new] + p["rows"]
            rows.sort(key=lambda r: order[r["estimator"]])
            base["gradients"][task]["points"][point]["rows"] = rows
    if "proposal" in extra:
        if base["settings"]["proposal"] != extra["settings"]["proposal"]:
            raise ValueError("cannot merge runs with different proposal settings")
        base["proposal"] = extra["proposal"]
    if "cost" in extra:
        new = {r["estimator"] for r in extra["cost"]["rows"]}
        rows = [r for r in base["cost"]["rows"] if r["estimator"] not in new]
        base["cost"]["rows"] = rows + extra["cost"]["rows"]
    base["missing_estimators"] = extra["missing_estimators"]
    base.setdefault("supplements", []).append(
        {k: extra[k] for k in ("command", "seconds", "environment", "parts")}
        | {"estimators": list(extra["estimators"])}
    )
    base["seconds"] += extra["seconds"]
    return base


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
    parser.add_argument(
        "--no-tune",
        action="store_true",
        help="no tuning: every estimator at the middle learning rate and its default",
    )
    parser.add_argument("--cuda", action="store_true", help="cost measurements on the GPU")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--merge-into",
        type=Path,
        default=None,
        help="add this run's estimators to the results in this JSON (same settings)",
    )
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
        if args.no_tune:
            settings["training"]["tune"] = False
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
        if args.merge_into is not None:
            results = merge(json.loads(args.merge_into.read_text()), results)
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
