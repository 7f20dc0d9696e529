"""Mixture of experts at an equal budget of objective evaluations.

The estimator benchmark trains every estimator for the same number of *steps*
(250 on ``moe``); estimators that evaluate the objective more than once per step
(RLOO, exact enumeration, ILS-diff) then spend more evaluations. This script
gives every estimator the same number of *evaluations* instead: the budget is
what the ILS-family member (``--ils``, default the Rao-Blackwellized ILS-diff
limit) spends in the benchmark's 250 steps, and each estimator runs
``budget / (its evaluations per step)`` steps at the setting the benchmark tuned
for it (``benchmarks/results/estimators.json``; tuned on 100 steps of seed 100).
Seeds 0-4 (``--seeds``), the benchmark's ``moe`` task and data, exact bound per
training point at the end (higher is better)::

    python benchmarks/moe_equal_evals.py            # ~5 min on one CPU thread
    python benchmarks/moe_equal_evals.py --seeds 20 # seeds 0-19 (~30 min; the recorded run)
    python benchmarks/moe_equal_evals.py --quick    # smoke size

The runs have no learning-rate schedule, so each run's curve also gives what a
shorter run of the same seed would have reached: ``benchmarks/ils_goals.py`` reads
the peers' budget (one evaluation per step for the benchmark's 250 steps) off the
same curves.

Writes ``benchmarks/results/moe_equal_evals.json`` (read by
``benchmarks/ils_goals.py`` for goal 1 of ``docs/improving_ils.md``) and
``docs/img/moe_equal_evals.png`` (bound against evaluations).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyro
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from estimator_bench import common, registry, report, training  # noqa: E402
from estimator_bench.tasks import make_tasks  # noqa: E402
from estimators import FULL  # noqa: E402

OUT = common.RESULTS / "moe_equal_evals.json"
PLOT = common.IMG / "moe_equal_evals.png"
#: The peers of goal 1 (issue 5), exact enumeration, and the best first-order ILS member.
DEFAULT_ESTIMATORS = (
    "exact",
    "st",
    "st_gumbel_kl",
    "st_gumbel_pyro",
    "gumbel_kl",
    "gumbel_density",
    "reinmax",
    "rloo2",
    "rloo4",
    "ils_mirror",
    "ils_diff_rb",
    "ils_diff_rb0",
)


def equal_evals(tuned: dict, keys, ils: str, seeds, points: int, steps: int, bar=None) -> dict:
    """Runs every estimator of ``keys`` for the evaluations ``ils`` spends in ``steps``."""
    task = make_tasks({"moe": FULL["tasks"]["moe"]})["moe"]
    budget = registry.REGISTRY[ils].cost(task) * steps
    rows = {}
    for key in keys:
        est = registry.REGISTRY[key]
        hp = tuned[key]["best"]
        per_step = est.cost(task)
        n = budget // per_step
        runs = []
        for seed in seeds:
            runs.append(training.run(task, est, hp, seed, n, points, final=True))
            if bar is not None:
                bar.update()
        rows[key] = {
            "label": est.label,
            "hp": hp,
            "evals_per_step": per_step,
            "steps": n,
            "runs": runs,
        }
    return {"budget": budget, "ils": ils, "estimators": rows}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = ["-", "--", ":", "-."]
    for i, (key, row) in enumerate(results["estimators"].items()):
        curves = report._curves(row, "evals", "bound")
        if curves is None:
            continue
        evals, mean = curves[:2]
        family = registry.REGISTRY[key].family
        width = 2.2 if family == "ILS" else 1.2
        ax.plot(evals, mean, styles[i % 4], lw=width, label=f"{row['label']}")
    ax.set_xlabel("objective evaluations")
    ax.set_ylabel("exact bound per point, train (mean over seeds)")
    ax.set_title(f"Mixture of experts at equal evaluations (budget {results['budget']})")
    ax.set_ylim(bottom=-1.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke size (JSON to --out only)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tuned", type=Path, default=common.RESULTS / "estimators.json")
    parser.add_argument("--ils", default="ils_diff_rb0", help="the ILS member whose budget")
    parser.add_argument("--estimators", nargs="+", default=list(DEFAULT_ESTIMATORS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds 0..N-1 (default: the benchmark's)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    tuned = json.loads(args.tuned.read_text())["training"]["moe"]
    missing = [k for k in args.estimators if k not in tuned]
    if missing:
        parser.error(f"not in the benchmark's moe results (run it first): {missing}")
    steps = 20 if args.quick else FULL["training"]["steps"]["moe"]
    seeds = [0] if args.quick else FULL["training"]["seeds"]
    if args.seeds is not None:
        seeds = list(range(args.seeds))
    points = 4 if args.quick else 10
    env = common.run_environment(torch.device("cpu"))
    t0 = time.perf_counter()
    with tqdm(total=len(args.estimators) * len(seeds), desc="moe equal evals") as bar:
        results = equal_evals(tuned, args.estimators, args.ils, seeds, points, steps, bar)
    results.update(seeds=seeds, ils_steps=steps)
    out = args.out or (Path("/tmp/moe_equal_evals_quick.json") if args.quick else OUT)
    script = "benchmarks/moe_equal_evals.py"
    common.write_results(results, out, script, argv, t0, env, args.quick)
    if not args.quick:
        plot(results, PLOT)
        print(f"wrote {common.rel(PLOT)}")
    for row in results["estimators"].values():
        finals = [r["final"]["bound"] for r in row["runs"] if not r["failed"]]
        mean, sd = common.mean_sd(finals)
        print(f"{row['label']:45s} steps {row['steps']:5d}  bound {mean:.3f} ± {sd:.3f}")
    return results


if __name__ == "__main__":
    main()
