"""The results page ``docs/estimators.md`` and its plots, from the JSON of a run.

Every number on the page is read from the JSON. The numbers quoted in the written
reading are collected in ``results["summary"]`` (rounded as quoted) and written
back into the JSON, so that ``tests/test_estimator_benchmark.py`` can check each
of them against the file.
"""

from __future__ import annotations

import json
import math

from benchmarks.cli import command_now

from .common import DOCS, IMG, machine_line, rel
from .summary import _cell, _evals_cell, _fmt, _hp, summarize

PAGE = DOCS / "estimators.md"


#: The page's "Reproduce" block: (command, what it does).
REPRODUCE = (
    ("python -m benchmarks run estimators", "this page, the JSON, the plots"),
    ("python -m benchmarks run estimators --quick", "CI smoke size, JSON only"),
    ("python -m benchmarks report estimators", "the page and plots from the JSON"),
    ("python -m benchmarks check estimators", "fails if the page is not what the JSON gives"),
)


# -- the page ------------------------------------------------------------------------


def _table(head, rows, align: str) -> str:
    """A markdown table: ``head``, then one line per row of cells; ``align`` has one
    letter per column, ``l`` (left) or ``r`` (right)."""
    rule = {"l": ":---", "r": "---:"}
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def _loads(values) -> str:
    return ", ".join(f"{x:.2f}" for x in values or [])


def _estimators_table(results) -> str:
    """Every estimator: family, evaluations per step, own grid, how it is built."""
    cells = []
    for key, e in results["estimators"].items():
        grid = ", ".join(
            f"{k} ∈ {{{', '.join(f'{v:g}' for v in vals)}}}" for k, vals in e["grid"].items()
        )
        where = f" (tasks: {', '.join(e['tasks'])})" if e["tasks"] else ""
        evals = _evals_cell(e["evals_per_step"]) if key != "exact" else "K^sites"
        cells.append([e["label"], e["family"], evals, grid or "-", _cell(e["note"] + where)])
    return _table(["estimator", "family", "evals / step", "own grid", "how"], cells, "llrll")


def _gradient_table(results, task, point):
    g = results["gradients"][task]["points"][point]
    head = ["estimator", "config", "cos(mean, g*)", "mean cos(draw, g*)", "rel. bias (MC floor)",
            "tr Var / ‖g*‖²", "SNR", "MSE*", "evals"]  # fmt: skip
    cells = []
    for r in g["rows"]:
        row = [r["label"], _hp(r["hp"])]
        if r.get("failed"):
            row += [f"failed: {r['failed'][:60]}"] + [""] * (len(head) - 3)
        else:
            row += [_fmt(r["cos_mean"]), _fmt(r["cos_draw"])]
            row += [f"{_fmt(r['rel_bias'])} ({_fmt(r['mc_floor'])})", _fmt(r["rel_var"])]
            row += [_fmt(r["snr"]), _fmt(r["mse_best_scale"], 3), str(r["evals"])]
        cells.append(row)
    return _table(head, cells, "ll" + "r" * (len(head) - 2))


def _cost_table(results, sweep):
    rows = [r for r in results["cost"]["rows"] if r["sweep"] == sweep]
    xkey = "categories" if sweep == "K" else "latents"
    xs = sorted({r[xkey] for r in rows})
    head = ["estimator"] + [f"{sweep}={x} ms" for x in xs] + [f"{sweep}={x} MiB" for x in xs]
    cells = []
    for key, est in results["estimators"].items():
        by = {r[xkey]: r for r in rows if r["estimator"] == key}
        if not by:
            continue
        row = [est["label"]]
        for metric, d in (("median_ms", 1), ("peak_mib", 2)):
            for x in xs:
                r = by.get(x)
                row.append(
                    "-" if r is None else ("failed" if r.get("failed") else _fmt(r[metric], d))
                )
        cells.append(row)
    return _table(head, cells, "l" + "r" * (len(head) - 1))


def reading(results, summary) -> str:
    """The written reading; every number comes from ``summary`` (stored in the JSON)."""
    from .reading import text

    return text(results, summary)


#: The plot of each part.
_IMG_NAME = {"gradients": "estimators_gradients.png", "cost": "estimators_cost.png"}


def images(results) -> dict:
    """``{part: path}`` of the plots the parts in ``results`` have."""
    return {part: IMG / name for part, name in _IMG_NAME.items() if part in results}


def render(results, json_path) -> str:
    """The page's text from ``results`` (nothing written)."""
    return page(results, summarize(results), json_path, images(results))


def write(results, json_path):
    IMG.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    results["summary"] = summary
    json_path.write_text(json.dumps(results, indent=1))
    from .plots import plot_cost, plot_gradients

    imgs = images(results)
    drawers = {"gradients": plot_gradients, "cost": plot_cost}
    for name, path in imgs.items():
        drawers[name](results, path)
    PAGE.write_text(page(results, summary, json_path, imgs))
    return [json_path, *imgs.values(), PAGE]


#: Why the suite makes no training comparison (the page says it once).
ZOO_NOTE = (
    "**Training comparisons are not made here.** They are in the [zoo](zoo/index.md) "
    "(`python -m benchmarks run zoo MODEL`), which covers the same mixture-of-experts and "
    "categorical-VAE models under the review protocol: the same learning-rate grid for "
    "every estimator and a temperature grid for the peers, both widened at a best edge, "
    "tuning seeds apart from the reported seeds, and runs trained to convergence. The "
    "short, coarsely tuned training and proposal runs this page once had did not meet "
    "that protocol and were retired (their results are frozen in "
    "`benchmarks/results/frozen/estimators_2026-12.json`).\n\n"
)


def page(results, summary, json_path, imgs) -> str:
    s, env = results["settings"], results["environment"]
    gs, cs = s["gradients"], s["cost"]
    out = [
        "# Estimator benchmark: gradient quality and cost\n\n",
        f"<!-- Generated by benchmarks/estimators.py from {rel(json_path)}; "
        "do not edit by hand. -->\n\n",
    ]
    if results.get("quick"):
        out.append(
            "**These are quick-size (smoke) results, not a benchmark:** this page was "
            "generated from a `--quick` run (few draws, two trajectory points, a small cost "
            "sweep), which checks that every estimator runs. Do not quote its numbers; the "
            "full run (`python -m benchmarks run estimators`, at a clean commit) replaces "
            "it.\n\n"
        )
    out += [
        f"*Generated by `benchmarks/estimators.py` from `{rel(json_path)}`; every number on this "
        "page comes from that file. Regenerate with `python -m benchmarks run estimators` "
        "or rewrite the page from the JSON with `python -m benchmarks report estimators`.*\n\n",
        ZOO_NOTE,
        f"**Machine:** {machine_line(env)}\n\n",
        f"**Run:** {env['started']} at `{env.get('git_revision')}`, "
        f"{results['seconds'] / 60:.0f} min; load average "
        f"{_loads(env['loadavg_start'])} at the start and "
        f"{_loads(env['loadavg_end'])} at the end on "
        f"{env['cpu_count']} logical CPUs (other jobs may share the machine: read time "
        "ratios, not absolute times). Pyro validation off.\n\n",
    ]
    if results.get("missing_estimators"):
        out.append(
            "**Not measured** (their module did not provide them when this ran): "
            + ", ".join(f"`{k}` ({v})" for k, v in results["missing_estimators"].items())
            + ".\n\n"
        )
    out.append("<!-- reading -->\n")
    out.append(reading(results, summary))
    out.append("<!-- /reading -->\n\n")
    out.append(
        "## Estimators\n\n"
        "Each is one entry of `benchmarks/estimator_bench/registry.py` or `peers.py`: how "
        "the guide's `OneHotCategorical` sites are drawn (a messenger swaps the site's "
        "distribution), which ELBO differentiates the result, objective evaluations per "
        "step, and its own hyper-parameter grid. The tasks' guides use plain "
        "`OneHotCategorical` sites and their models use the one-hot values in matrix "
        "products, so every estimator runs on every task. *Pyro path* rows are what a Pyro "
        "user gets by swapping the guide's distribution and keeping `Trace_ELBO` (relaxed "
        "densities in the ELBO); *analytic KL* rows are the same estimators with "
        "`TraceMeanField_ELBO` taking `KL(q || p)` of the categoricals exactly. ILS rows: "
        "`euclidean` and `normalize` are the proposal's step from the sampled vertex with "
        "the two maps onto the simplex; `reference` is the original code's incorrect "
        "gradient (toy and polynomial only, for comparison); `mirror` and `mirror_rms` take "
        "the step from `pi` with the entropic map (the mean-start variants of "
        "`docs/method.md`; `mirror_rms` scales `g` by its spread under `pi`). *ILS-diff* "
        "rows (`TraceILSDiff_ELBO`) replace `g` by the exact differences `L(k) - L(z)` over "
        "every alternative of each draw, at one evaluation per alternative; IndeCateR and "
        "the matched RLOO are counted at the same number of evaluations per step.\n\n"
    )
    out.append(_estimators_table(results))
    out.append("\n## Tasks\n\n")
    cells = [[f"`{name}`", t["title"]] for name, t in results["tasks"].items()]
    out.append(_table(["task", "problem"], cells, "ll"))
    out.append(
        "\n`toy`: the proposal's objective `f(z) = -sum(true * log(z + 1e-8))` with "
        "`examples/toy_kl.py`'s `true` and initialization; its metric is the exact "
        "`E[f]` (its minimum, a point mass on each mode, is "
        f"{_fmt(results['tasks']['toy']['optimum'], 2)}; at `pi = true` it is "
        f"{_fmt(results['tasks']['toy']['objective_at_pi_true'], 2)}). `poly`: excess of the "
        "exact `E[(z - t)^2]` over its minimum. `moe`: `examples/mixture_of_experts.py`'s "
        "data, gate and experts with a one-hot expert choice; exact bound per point "
        f"(the true model scores about {_fmt(results['tasks']['moe']['true_model_bound'], 3)}). "
        "`vae_small`: `examples/categorical_vae.py`'s split and networks (one-hot latents, "
        "decoder `sum_l z_l @ W_l`), the exact ELBO by enumeration and the held-out "
        "importance-sampled bound `log mean_s p(x, z_s) / q(z_s | x)` "
        f"({s['tasks']['vae_small'].get('is_samples')} samples).\n\n"
    )
    if "gradients" in results:
        out.append(
            "## Gradient quality\n\n"
            f"![gradient quality](img/{imgs['gradients'].name})\n\n"
            f"At steps {', '.join(map(str, gs['points']))} of a trajectory that follows the "
            f"exact gradient (Adam, lr {gs['trajectory_lr']}, seed {gs['seed']}), each "
            f"estimator draws {gs['draws']} gradients of the loss on one fixed minibatch with "
            "respect to the guide's parameters (logits, gate, encoder) and is compared with "
            "the exact gradient `g*` (autograd of the closed-form or enumerated loss). "
            "Columns: cosine of the mean with `g*`; mean cosine of one draw with `g*`; "
            "`‖mean - g*‖ / ‖g*‖` with the Monte Carlo floor `sqrt(tr Var / M) / ‖g*‖` "
            "(bias below the floor cannot be seen); variance of one draw relative to "
            "`‖g*‖²`; `‖mean‖ / sqrt(tr Var)`; MSE* `= 1 - <E g, g*>² / (‖g*‖² E‖g‖²)`, "
            "the error of one draw after the best rescaling (0 exact, 1 useless), which "
            "ignores the overall scale that a learning rate absorbs. Stateful estimators are "
            f"warmed up for {gs['warmup']} steps first (task parameters restored). Every "
            "estimator that has a grid of its own is shown at every value of it (step "
            "sizes for ILS, temperatures for Gumbel-Softmax, ST-Gumbel, ReinMax, Gumbel-Rao "
            "and GST, `eta` for ILS-CV), the others once.\n\n"
        )
        for task, g in results["gradients"].items():
            for point, p in g["points"].items():
                m = ", ".join(f"{k} {_fmt(v, 3)}" for k, v in p["metrics"].items())
                out.append(f"### {task}, step {p['step']} ({m})\n\n")
                out.append(_gradient_table(results, task, point) + "\n")
    if "cost" in results:
        out.append(
            "## Cost\n\n"
            f"![cost](img/{imgs['cost'].name})\n\n"
            f"A linear-decoder VAE with free per-image logits (batch {cs['batch_size']}, 64 "
            f"pixels): K swept at {cs['fixed_latents']} latent sites, the number of sites swept "
            f"at K = {cs['fixed_categories']}. Median of {cs['steps']} timed steps after "
            f"{cs['warmup']} warm-up steps; peak memory of one more step "
            "(CPU: the peak of the running sum of tensor allocations recorded by "
            "`torch.profiler`, beyond what was held before the step). Device "
            f"`{results['cost']['device']}`; exact enumeration only where K^sites ≤ 4,096. "
            "A CUDA run: `python -m benchmarks run estimators --parts cost --cuda --out "
            "benchmarks/results/estimators_cuda.json` (the GPU is recorded in the JSON).\n\n"
        )
        for sweep in ("K", "L"):
            out.append(_cost_table(results, sweep) + "\n")
    out.append(
        "## Reproduce\n\n```bash\n"
        + "".join(f"{cmd:<46}# {what}\n" for cmd, what in REPRODUCE)
        + "```\n\nCommand of this run (as run today): `"
        + command_now(results["command"])
        + "`.\n"
    )
    return "".join(out)


__all__ = ["images", "math", "page", "render", "summarize", "write"]
