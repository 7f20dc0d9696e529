"""Choose the temperature of the default's midpoint limit on the zoo's VAEs (and try
steps of the scaled midpoint target there).

::

    python -m benchmarks.zoo.temperature               # the grid on every VAE
    python -m benchmarks.zoo.temperature --quick       # a smoke-sized run
    python -m benchmarks.zoo.temperature --param step_size   # steps c at DEFAULT_TEMPERATURE

``TraceILS_ELBO()`` gives a site with more than ``max_alternatives`` alternatives the
midpoint limit, whose temperature ``tau`` (:mod:`pyro_ils.infer.site_choice`) is one number
for every model. This script trains the default on each VAE of the zoo (the models
whose sites are that large) with the site's temperature set through
``infer={"ils": {"temperature": tau}}``, at the model's own learning rate, on the
zoo's **tuning seeds** only (disjoint from the reported seeds), to convergence or the
model's cap (:mod:`.training`), with ``torch.set_num_threads(1)``.

The rule, fixed before the run: for each model the shortfall of each ``tau`` is the
best mean final held-out ELBO over the grid minus that ``tau``'s mean; the choice is
the ``tau`` whose largest shortfall over the models is smallest (minimax regret). A
choice at an edge of the grid is reported as such.

``--param step_size`` runs the same protocol and rule over the step ``c`` of
``projection="midpoint_scaled"`` at the default's temperature
(:data:`STEP_GRID`; ``c = 0`` is the default's own member), written to
``default_step_size.json``: whether steps of the second-order target, kept at the
size of a gradient, do better than its limit on the models where the default uses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from tqdm import tqdm

from pyro_ils.infer.site_choice import DEFAULT_TEMPERATURE

from . import record
from .estimators import ESTIMATORS
from .run import TUNING_SEEDS
from .stats import final_score, finite_mean
from .training import train
from .vaes import TASKS as VAES

GRID = (1.0, 2.0, 4.0, 8.0)
#: The steps of ``--param step_size`` (``projection="midpoint_scaled"``).
STEP_GRID = (0.0, 0.03, 0.1, 0.3, 1.0)


def default_at(temperature: float, step_size: float | None = None):
    """The default estimator with its sites' midpoint limit at ``temperature`` or,
    with ``step_size``, the scaled midpoint target at that step."""
    ils = {"temperature": temperature}
    label = f"TraceILS_ELBO(), temperature {temperature:g}"
    if step_size is not None:
        ils.update(projection="midpoint_scaled", step_size=step_size)
        label += f", midpoint_scaled step {step_size:g}"
    return dataclasses.replace(ESTIMATORS["ils_default"], label=label, site_infer={"ils": ils})


def tuned_lr(model: str) -> float:
    """The default's learning rate chosen by ``model``'s suite (on the tuning seeds),
    from its result file."""
    path = record.RESULTS / f"{model}.json"
    if not path.exists():
        raise SystemExit(f"--tuned-lr: no suite result for {model} ({path})")
    return float(json.loads(path.read_text())["tuning"]["ils_default"]["lr"])


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
    parser.add_argument("--param", choices=("temperature", "step_size"), default="temperature")
    parser.add_argument("--temperatures", default=",".join(f"{t:g}" for t in GRID))
    parser.add_argument("--step-sizes", default=",".join(f"{c:g}" for c in STEP_GRID))
    parser.add_argument(
        "--tuned-lr",
        action="store_true",
        help="at the default's tuned learning rate of each model's suite (its result file)",
    )
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
    values = args.temperatures if args.param == "temperature" else args.step_sizes
    grid = [float(v) for v in values.split(",")]

    def estimator(v):
        if args.param == "temperature":
            return default_at(v)
        return default_at(DEFAULT_TEMPERATURE, step_size=v)

    seeds = TUNING_SEEDS[:1] if args.quick else TUNING_SEEDS
    result = {
        **record.header(args.allow_dirty, {"tuning": list(seeds)}, "benchmarks.zoo.temperature"),
        "quick": args.quick,
        "param": args.param,
        "lr": "tuned" if args.tuned_lr else "source",
        "grid": grid,
        "rule": "minimax regret over the models of the mean final held-out ELBO",
        "models": {},
    }
    bar = tqdm(total=len(models) * len(grid) * len(seeds), disable=args.no_progress)
    table = {}
    for name in models:
        task = VAES[name](quick=args.quick)
        lr = tuned_lr(name) if args.tuned_lr else task.lr
        runs, means = [], {}
        for t in grid:
            scores = []
            for seed in seeds:
                run = train(task, estimator(t), lr, seed)
                run.update({args.param: t, "seed": seed})
                runs.append(run)
                scores.append(final_score(run))
                bar.update(1)
            means[str(t)] = finite_mean(scores)
        table[name] = means
        result["models"][name] = {"title": task.title, "lr": lr, "means": means, "runs": runs}
    bar.close()
    best, worst = choose(table)
    result.update(choice=best, worst_shortfall=worst, edge=best in (min(grid), max(grid)))
    if args.param == "step_size":
        result.update(temperature=DEFAULT_TEMPERATURE, projection="midpoint_scaled")
    stem = f"default_{args.param}{'_tuned_lr' if args.tuned_lr else ''}"
    out = args.out or str(record.RESULTS / f"{stem}{'_quick' if args.quick else ''}.json")
    record.RESULTS.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    for name, means in table.items():
        print(name, " ".join(f"{args.param} {t}: {m:.2f}" for t, m in means.items()))
    print(f"choice: {args.param} = {best:g} (largest shortfall {worst[str(best)]:.2f})")
    print(f"wrote {out}")
    return result


def grid_section(result) -> str:
    """A grid of the default's member on the VAEs (``benchmarks/zoo/temperature.py``):
    the temperature that was chosen, or the steps of the scaled midpoint target."""
    param = result.get("param", "temperature")
    name = "tau" if param == "temperature" else "c"
    grid = [f"{t:g}" for t in result["grid"]]
    rows = [
        "| model | " + " | ".join(f"{name} {t}" for t in grid) + " | steps (cap) |",
        "|---|" + "---|" * (len(grid) + 1),
    ]
    for m in result["models"].values():
        steps = sorted({r["steps"] for r in m["runs"]})
        capped = sum(r["stop"] == "max_steps" for r in m["runs"])
        means = [f"{m['means'][str(float(t))]:.1f}" for t in grid]
        rows.append(
            f"| {m['title']} | " + " | ".join(means) + f" | {'/'.join(map(str, steps))} "
            f"({capped} of {len(m['runs'])} at the cap) |"
        )
    worst = ", ".join(f"{float(t):g}: {w:.1f}" for t, w in result["worst_shortfall"].items())
    edge = " It is at an edge of the grid." if result["edge"] else " It is inside the grid."
    if param == "step_size" and result["choice"] == 0:
        edge = " (`c = 0` is the smallest step there is, not an edge to widen.)"
    tuned = result.get("lr") == "tuned"
    if param == "temperature" and len(result["models"]) == 1:
        (title,) = (m["title"] for m in result["models"].values())
        head = (
            f"## The temperature on one model: {title}\n\n"
            "A check of one model's own best temperature (not used for the default), run by "
        )
        verdict = (
            f"its best is **tau = {result['choice']:g}**.{edge} The default keeps one "
            "temperature for every site past the budget; one per kind of site is not "
            "measured on the reported seeds."
        )
    elif param == "temperature" and tuned:
        head = (
            "## The default's temperature at the tuned learning rates\n\n"
            "A check of the choice above (not used to make it): the same grid and rule at "
            "the learning rate each model's suite chose for the default, run by "
        )
        verdict = f"the rule would choose **tau = {result['choice']:g}**.{edge}"
    elif param == "temperature":
        head = (
            "## The default's temperature\n\n"
            "Sites past `max_alternatives` get the midpoint limit at one temperature for "
            "every model (`pyro_ils.infer.site_choice.DEFAULT_TEMPERATURE`). It was chosen by "
        )
        verdict = f"the choice is **tau = {result['choice']:g}**.{edge}"
    else:
        head = (
            "## Steps of the scaled midpoint target\n\n"
            f"The default's member for large sites is the limit `c = 0` at temperature "
            f"{result['temperature']:g}. Steps `c > 0` of "
            f'`projection="{result["projection"]}"` (the midpoint target\'s difference '
            "divided by `c`, the same limit) at that temperature were tried by "
        )
        keep = "the default keeps its limit" if result["choice"] == 0 else "not yet acted on"
        verdict = (
            f"the rule's choice is **c = {result['choice']:g}** ({keep}; a change of the "
            f"default would be measured on the reported seeds first).{edge}"
        )
    lrs = ", ".join(f"{m['lr']:g}" for m in result["models"].values())
    at = f"at the tuned learning rates ({lrs})" if tuned else "at each model's own learning rate"
    return (
        head + f"`{result['command']}` at commit `{(result['commit'] or '?')[:7]}`, on the tuning "
        f"seeds {result['seeds']['tuning']} only, {at}: mean final held-out ELBO per image,\n\n"
        + "\n".join(rows)
        + f"\n\nRule ({result['rule']}): the largest shortfall from a model's best is "
        f"{worst}; {verdict}"
    )


if __name__ == "__main__":
    main()
