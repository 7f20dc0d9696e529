"""Categorical VAEs at an equal budget of training wall time.

The estimator benchmark trains every estimator for the same number of *steps*;
an estimator that costs more per step (ILS-diff evaluates the model on every
alternative of every draw) then also trains for longer. This script gives every
estimator the same *training time* instead, measured back to back in one process
on one CPU thread. Seed by seed, the reference (``--reference``, by default the
best single-evaluation peer of the benchmark on the task's held-out bound) runs the
benchmark's steps, and its training time is that seed's budget; every other
estimator then trains on the same seed, at the setting the benchmark tuned for it
(``benchmarks/results/estimators.json``), until its training time reaches that
budget (evaluation excluded; every estimator first runs a few untimed steps, so
that no run pays the process's one-time costs). Seeds 0-4, the benchmark's
``vae_small`` and ``vae_large`` tasks; at the end, the held-out importance-sampled
bound (100 samples per test image, higher is better)::

    python benchmarks/vae_equal_time.py            # ~10 min on one CPU thread
    python benchmarks/vae_equal_time.py --quick    # smoke size

Wall time depends on the machine and on what else runs on it; the JSON records the
machine, and the numbers hold for it. On the 2-core VM of the recorded run, the
steps that ILS-diff fitted into ReinMax's time varied by up to a quarter between
two runs of the same settings: read the step counts as rough ratios. Writes
``benchmarks/results/vae_equal_time.json`` (read by ``benchmarks/ils_goals.py``
for goal 2 of ``docs/improving_ils.md``) and ``docs/img/vae_equal_time.png``
(training ELBO against training time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ils_goals  # noqa: E402
from estimator_bench import common, registry, report, training  # noqa: E402
from estimator_bench.tasks import make_tasks  # noqa: E402
from estimators import FULL  # noqa: E402

OUT = common.RESULTS / "vae_equal_time.json"
PLOT = common.IMG / "vae_equal_time.png"
TASKS = ("vae_small", "vae_large")
#: The single-evaluation peers of goal 2 (issue 5) and the ILS family, as the report
#: reads them.
PEERS, ILS = ils_goals.SINGLE_EVAL_PEERS, ils_goals.ILS_FAMILY
#: A run stops at the budget or at this many times the benchmark's steps.
STEP_CAP = 20
#: Untimed steps of every estimator before the timed runs.
WARM_UP = 5


def best_peer(tuned: dict) -> str:
    """The single-evaluation peer with the best mean held-out bound at equal steps."""
    finals = ils_goals.finals_by_key({k: tuned[k] for k in PEERS if k in tuned}, "test_is_bound")
    return max(finals, key=lambda k: statistics.fmean(finals[k]))


def equal_time(task, tuned: dict, keys, reference: str, seeds, steps, points, bar=None):
    """Per seed, the reference's ``steps``-step run sets the budget (its training
    time), and every other estimator of ``keys`` then trains for that long on the same
    seed; seed by seed, so that a drift in the machine's speed meets every estimator
    alike. The budget reported is the mean over seeds."""
    est = {k: registry.REGISTRY[k] for k in {reference, *keys}}
    rows = {
        k: {"label": est[k].label, "hp": tuned[k]["best"], "evals_per_step": est[k].cost(task)}
        for k in [reference, *[k for k in keys if k != reference]]
    }
    for row in rows.values():
        row["runs"] = []
    # One-time costs (first calls into torch, Pyro and each ELBO) are paid before
    # any run is timed: the budget is the reference's steady-state training time.
    for key in rows:
        training.run(task, est[key], rows[key]["hp"], seeds[0], WARM_UP, 1)
    budgets = []
    for seed in seeds:
        ref = training.run(task, est[reference], rows[reference]["hp"], seed, steps, points, True)
        rows[reference]["runs"].append(ref)
        budgets.append(ref["train_seconds"])
        for key, row in rows.items():
            if key != reference:
                cap = STEP_CAP * steps
                row["runs"].append(
                    training.run(task, est[key], row["hp"], seed, cap, points, True, budgets[-1])
                )
        if bar is not None:
            bar.update(len(rows))
    for row in rows.values():
        row["steps"] = [r["curve"][-1]["step"] for r in row["runs"]]
    return {
        "reference": reference,
        "budget_seconds": statistics.fmean(budgets),
        "budgets": budgets,
        "estimators": rows,
    }


def plot(results: dict, path: Path) -> None:
    """Training ELBO against training time, one panel per task; one look per estimator
    across the panels (ILS family solid and thick, the peers dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["tasks"])
    present = {k for part in results["tasks"].values() for k in part["estimators"]}
    keys = [k for k in PEERS + ILS if k in present]
    colors = plt.get_cmap("tab20")
    look = {
        k: {
            "color": colors(i % 20),
            "ls": "-" if k in ILS else "--",
            "lw": 2.0 if k in ILS else 1.2,
        }
        for i, k in enumerate(keys)
    }
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 5.6), squeeze=False)
    labels = {}
    for ax, name in zip(axes[0], names, strict=True):
        part = results["tasks"][name]
        for key, row in part["estimators"].items():
            curves = report._curves(row, "seconds", "train_elbo")
            if curves is None:
                continue
            seconds, mean = curves[:2]
            (labels[key],) = ax.plot(seconds, mean, label=row["label"], **look[key])
        ax.axvline(part["budget_seconds"], color="0.5", lw=0.8)
        ax.set_xlabel("training time, s (one CPU thread)")
        ax.set_ylabel("training ELBO per image (mean over seeds)")
        ax.set_title(f"{name}: equal wall time ({part['budget_seconds']:.2f} s)")
        ax.set_ylim(bottom=-30)
        ax.grid(alpha=0.3)
    handles = [labels[k] for k in keys if k in labels]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7.5, frameon=False)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke size (JSON to --out only)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tuned", type=Path, default=common.RESULTS / "estimators.json")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--reference", default=None, help="default: the best peer per task")
    parser.add_argument("--estimators", nargs="+", default=list(PEERS + ILS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the JSON")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(json.loads(OUT.read_text()), PLOT)
        print(f"wrote {common.rel(PLOT)}")
        return None
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    tuned_all = json.loads(args.tuned.read_text())["training"]
    seeds = [0] if args.quick else FULL["training"]["seeds"]
    points = 3 if args.quick else 10
    env = common.run_environment(torch.device("cpu"))
    t0 = time.perf_counter()
    results = {"tasks": {}}
    for name in args.tasks:
        tuned = tuned_all.get(name, {})
        keys = [k for k in args.estimators if k in tuned]
        missing = sorted(set(args.estimators) - set(keys))
        if missing:
            print(f"{name}: not in the benchmark's results, left out: {missing}")
        reference = args.reference or best_peer(tuned)
        if reference not in tuned:
            parser.error(f"{name}: reference {reference!r} not in the benchmark's results")
        size = dict(FULL["tasks"][name])
        if args.quick:
            size.update(is_samples=5, eval_images=50)
        task = make_tasks({name: size})[name]
        steps = 10 if args.quick else FULL["training"]["steps"][name]
        total = len(set(keys) | {reference}) * len(seeds)
        with tqdm(total=total, desc=f"{name} equal time") as bar:
            part = equal_time(task, tuned, keys, reference, seeds, steps, points, bar)
        part["reference_steps"] = steps
        results["tasks"][name] = part
    results.update(seeds=seeds, threads=args.threads)
    out = args.out or (Path("/tmp/vae_equal_time_quick.json") if args.quick else OUT)
    script = "benchmarks/vae_equal_time.py"
    common.write_results(results, out, script, argv, t0, env, args.quick)
    if not args.quick:
        plot(results, PLOT)
        print(f"wrote {common.rel(PLOT)}")
    for name, part in results["tasks"].items():
        print(f"{name}: budget {part['budget_seconds']:.2f} s (reference {part['reference']})")
        finals = ils_goals.finals_by_key(part["estimators"], "test_is_bound")
        for key, row in part["estimators"].items():
            mean, sd = common.mean_sd(finals.get(key, []))
            steps = statistics.fmean(row["steps"])
            print(f"  {row['label']:45s} steps {steps:7.1f}  held-out {mean:.3f} ± {sd:.3f}")
    return results


if __name__ == "__main__":
    main()
