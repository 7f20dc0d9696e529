"""The zoo's docs pages, generated from its result files.

::

    python -m benchmarks report zoo    # writes docs/zoo/*.md and docs/img/zoo_*.png
    python -m benchmarks check zoo     # fails if a page is not what the files give

Per model: the tuning tables (with the edges hit), the final table at the tuned
settings and out of the box, paired differences of the default against each peer at
equal steps, equal wall time and equal objective evaluations (t-intervals at ``n - 1``
degrees of freedom), the declared goals with their verdicts (:mod:`.goals`), and the
training curves against steps and against wall time. ``docs/zoo/index.md`` has the
"which estimator for which model" table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from benchmarks.cli import command_now

from .estimators import ESTIMATORS
from .goals import DEFAULT, _digits, _runs, goal_lines, goals  # noqa: F401 (goals: API)
from .record import REPO, RESULTS
from .run import TASKS
from .stats import _mean_sd, paired, t_interval
from .temperature import grid_section

DOCS = REPO / "docs" / "zoo"
IMG = REPO / "docs" / "img"


def _source_runs(result, name):
    return _runs(result, name, "source") or _runs(result, name, "tuned")


def _fmt(m, sd=None, digits=1):
    if m is None or not math.isfinite(m):
        return "–"
    return f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def _final_table(result, names, getter, extra_keys):
    head = ["estimator", "ELBO", "bound on log p(x)"] + extra_keys + ["steps", "seconds", "stops"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        runs = getter(result, name)
        if not runs:
            continue
        cells = [result["estimators"][name]["label"]]
        for key in ["elbo", "bound"] + extra_keys:
            values = [_bound(r) if key == "bound" else r["final"].get(key) for r in runs]
            m, sd, _ = _mean_sd(values)
            cells.append(_fmt(m, sd, 2 if key not in ("elbo", "bound") else _digits(result)))
        steps, _, _ = _mean_sd([r["steps"] for r in runs])
        secs, _, _ = _mean_sd([r["seconds"] for r in runs])
        stops = {}
        for r in runs:
            stops[r["stop"]] = stops.get(r["stop"], 0) + 1
        cells += [f"{steps:.0f}", f"{secs:.1f}", ", ".join(f"{k} {v}" for k, v in stops.items())]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _bound(run):
    final = run["final"]
    return final.get("iw_bound", final.get("log_px"))


def _extra_keys(result):
    keys = set()
    for r in result["runs"]:
        keys |= {k for k, v in r["final"].items() if isinstance(v, int | float)}
    return sorted(keys - {"elbo", "iw_bound", "log_px"})


def _paired_table(result, names):
    rows = [
        "| default − peer | at equal steps | at equal wall time | at equal evaluations |",
        "|---|---|---|---|",
    ]
    default, d = _runs(result, DEFAULT), _digits(result)
    for name in names:
        if name == DEFAULT:
            continue
        cells = [result["estimators"][name]["label"]]
        for budget in ("steps", "seconds", "evaluations"):
            m, hw, n = t_interval(paired(default, _runs(result, name), budget))
            cells.append(f"{m:+.{d}f} ± {hw:.{d}f} (n={n})" if math.isfinite(hw) else "–")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _tuning_table(result, names):
    rows = ["| estimator | learning rates (mean final ELBO) | chosen | edge |", "|---|---|---|---|"]
    d = _digits(result)
    for name in names:
        t = result["tuning"][name]
        table = ", ".join(f"{k}: {v:.{d}f}" for k, v in t["lr_table"].items())
        chosen = f"lr {t['lr']:g}"
        edge = "lr at an edge" if t["lr_edge"] else "interior"
        if "temperature" in t:
            table += "; temperature " + ", ".join(
                f"{k}: {v:.{d}f}" for k, v in t["temperature_table"].items()
            )
            chosen += f", τ {t['temperature']:g}"
            if t["temperature_edge"]:
                edge += "; τ at an edge"
        rows.append(f"| {result['estimators'][name]['label']} | {table} | {chosen} | {edge} |")
    return "\n".join(rows)


def plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = plt.get_cmap("tab10" if len(result["estimators"]) <= 10 else "tab20").colors
    for j, name in enumerate(result["estimators"]):
        label = result["estimators"][name]["label"]
        for i, r in enumerate(_runs(result, name)):
            for ax, key in zip(axes, ("step", "seconds"), strict=True):
                xs = [p[key] for p in r["curve"]]
                ys = [p["metric"] for p in r["curve"]]
                color = colors[j % len(colors)]
                ax.plot(xs, ys, lw=1, alpha=0.8, color=color, label=None if i else label)
    values = [p["metric"] for r in result["runs"] for p in r["curve"] if r["setting"] == "tuned"]
    values = sorted(v for v in values if math.isfinite(v))
    if values:
        low = values[len(values) // 10]
        axes[0].set_ylim(low, values[-1] + 0.05 * (values[-1] - low))
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("training seconds (one thread)")
    axes[0].set_ylabel(result["protocol"]["metric"])
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{result['title']}: tuned settings, seeds {result['seeds']['reported']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _capped(result) -> str:
    capped = [
        result["estimators"][n]["label"]
        for n in result["estimators"]
        if any(r["stop"] == "max_steps" for r in _runs(result, n))
    ]
    if not capped:
        return "Every other run met the convergence rule."
    return (
        "Runs of " + ", ".join(capped) + " reached the step cap before the convergence "
        "rule: their values are where training stopped, not where it would converge."
    )


def page(result) -> str:
    names = list(result["estimators"])
    extra = _extra_keys(result)
    p = result["protocol"]
    m = result["machine"]
    about = "\n".join(f"* **{e['label']}**: {e['about']}." for e in result["estimators"].values())
    return f"""# {result["title"]}

Source: `{result["source"]}`; the model and guide as written there, with only the ELBO
or the guide site's distribution class swapped (see `benchmarks/zoo/`).

Generated by `python -m benchmarks report zoo` from
`benchmarks/results/zoo/{result["model"]}.json`: commit `{result["commit"][:10]}`
{"(**dirty tree**)" if result["dirty"] else "(clean tree)"}, command
`{command_now(result["command"])}`, tuning seeds {result["seeds"]["tuning"]}, reported seeds
{result["seeds"]["reported"]}; {m["cpu"]}, {m["logical_cpus"]} logical CPUs,
`torch.set_num_threads({m["torch_threads"]})`, torch {m["torch"]}, Pyro {m["pyro"]}.
Other runs shared the machine's two cores, so absolute seconds are noisy; the
estimators of a seed ran one after another in one process.

**Protocol.** The same learning-rate grid {p["lr_grid"]} for every estimator (widened
by 5x at a best edge), then the temperature over {p["temperature_grid"]} for the peers
(widened by 2x at a best edge);
each run trains until the metric ({p["metric"]}) improves by less than {p["tol"]:g}
(relative) over the last fifth of the run, checked every {p["eval_every"]} steps from
step {p["min_steps"]}, or up to {p["max_steps"]} steps. "Out of the box" is the
source's learning rate {p["source_lr"]:g} (temperature 1).

## The estimators

{about}

## Goals for the default (`TraceILS_ELBO()`)

{goal_lines(result)}

## Final values, tuned settings (mean ± sd over the reported seeds)

Runs that diverged (see the stops column) are left out of the means. {_capped(result)}

{_final_table(result, names, _runs, extra)}

## Out of the box (learning rate {p["source_lr"]:g}, temperature 1)

{_final_table(result, names, _source_runs, extra)}

## Paired differences of the default (ELBO, nats; 95% t-intervals)

Per seed, both runs read at the smaller of their two budgets (steps, or training
seconds), from their curves.

{_paired_table(result, names)}

## Tuning (seeds {result["seeds"]["tuning"]})

{_tuning_table(result, names)}

## Curves

![curves](../img/zoo_{result["model"]}.png)
"""


def _final_means(result) -> dict[str, float]:
    """Each estimator's mean final ELBO over its tuned runs (``nan`` where none is
    finite)."""
    return {
        n: _mean_sd([x["final"].get("elbo") for x in _runs(result, n)])[0]
        for n in result["estimators"]
    }


def _not_in(result) -> str:
    """The estimators the model's task lists now that its result file does not have
    (added after it ran): ``–`` where there are none."""
    task = TASKS.get(result["model"])
    missing = [n for n in getattr(task, "estimators", ()) if n not in result["estimators"]]
    return ", ".join(ESTIMATORS[n].label for n in missing if n in ESTIMATORS) or "–"


def _matrix(results) -> str:
    """Every estimator (rows) on every model (columns): the mean final ELBO of its tuned
    runs and its rank on that model (1 best); ``–`` where it was not run."""
    names = [n for n in ESTIMATORS if any(n in r["estimators"] for r in results)]
    finals = {}
    for r in results:
        means = _final_means(r)
        ranked = sorted((n for n in means if math.isfinite(means[n])), key=lambda n: -means[n])
        finals[r["model"]] = {n: (means[n], ranked.index(n) + 1) for n in ranked}
    rows = [
        "| estimator | " + " | ".join(f"[{r['model']}]({r['model']}.md)" for r in results) + " |",
        "|---" * (len(results) + 1) + "|",
    ]
    for n in names:
        cells = [ESTIMATORS[n].label]
        for r in results:
            got = finals[r["model"]].get(n)
            cells.append(f"{got[0]:.{_digits(r)}f} ({got[1]})" if got else "–")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def index(results, not_run=(), grids=()) -> str:
    rows = [
        "| model | exact referee | default − exact | best of the rest (final ELBO) |"
        " default's goals met | reported seeds | not in this result | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        finals = _final_means(r)
        best = max((n for n in finals if n != DEFAULT), key=lambda n: finals[n])
        gs = goals(r)
        met = sum(g["met"] for g in gs)
        exact = "enum" in r["estimators"]
        d = _digits(r)
        gap = f"{finals[DEFAULT] - finals['enum']:.{d}f}" if exact else "–"
        rows.append(
            f"| [{r['title']}]({r['model']}.md) | {'yes' if exact else 'no'} | {gap} | "
            f"{r['estimators'][best]['label']} ({finals[best]:.{d}f}; default "
            f"{finals[DEFAULT]:.{d}f}) | {met} of {len(gs)} | {len(r['seeds']['reported'])} | "
            f"{_not_in(r)} | `{(r['commit'] or '?')[:7]}` |"
        )
    pending = ""
    if not_run:
        pending = (
            "\n\nIn `benchmarks/zoo/` but without a result file yet (their suites have not "
            "been run): " + ", ".join(f"`{name}`" for name in not_run) + "."
        )
    chosen = "".join("\n\n" + grid_section(g) for g in grids)
    return (
        "# The zoo\n\nPyro's own models with discrete guide sites, each trained with "
        "every relevant estimator to convergence (`benchmarks/zoo/`). Which estimator "
        "for which model, read off the result files (`python -m benchmarks report zoo`):\n\n"
        + "\n".join(rows)
        + "\n\nThe protocol asks for 10 reported seeds on the small models (the mixtures "
        "and the mixture of experts) and 5 on the MNIST ones; a model's page states its "
        "own. *Not in this result*: estimators the model's suite runs now that were added "
        "after its result file was written (run its suite again to add them)."
        + pending
        + "\n\n## Every estimator on every model\n\nThe final held-out ELBO of each "
        "estimator's tuned runs (mean over the model's reported seeds; runs that diverged "
        "left out) and, in brackets, its rank on that model (1 is best). Means over seeds, "
        "not paired differences: the model pages give those, with their intervals.\n\n"
        + _matrix(results)
        + chosen
        + "\n\n```{toctree}\n:maxdepth: 1\n\n"
        + "\n".join(r["model"] for r in results)
        + "\n```\n"
    )


def _results() -> tuple[list[dict], list[dict]]:
    """The models' result files and the default's grids (quick runs left out)."""
    files = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    files = [r for r in files if not r.get("quick")]
    results = [r for r in files if "model" in r]  # a model's suite (benchmarks.zoo.run)
    # the grids of the default's member (temperature first, one-model checks last)
    grids = [r for r in files if "choice" in r]
    grids.sort(
        key=lambda r: (
            r.get("param", "temperature") != "temperature",
            len(r["models"]) == 1,
            r.get("lr") == "tuned",
        )
    )
    return results, grids


def pages() -> dict[Path, str]:
    """``{page: text}`` of every zoo page, from the result files (nothing written)."""
    results, grids = _results()
    out = {DOCS / f"{r['model']}.md": page(r) for r in results}
    from .run import TASKS

    done = {r["model"] for r in results}
    out[DOCS / "index.md"] = index(results, sorted(set(TASKS) - done), grids)
    return out


def stale() -> list[Path]:
    """The pages that are not what the result files give."""
    return [p for p, text in pages().items() if not p.exists() or p.read_text() != text]


def write() -> list[Path]:
    """Write every page and every model's plot."""
    DOCS.mkdir(parents=True, exist_ok=True)
    written = []
    for p, text in pages().items():
        p.write_text(text)
        written.append(p)
    for r in _results()[0]:
        plot(r, IMG / f"zoo_{r['model']}.png")
        written.append(IMG / f"zoo_{r['model']}.png")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="write the zoo's docs pages")
    parser.add_argument("--check", action="store_true", help="fail if a page differs")
    args = parser.parse_args(argv)
    if args.check:
        out = stale()
        for p in out:
            print(f"stale: {p.relative_to(REPO)}")
        return 1 if out else 0
    print(f"wrote {len(write())} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
