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

from .common import DOCS, IMG, machine_line, mean_sd, rel
from .summary import _cell, _evals_cell, _fmt, _hp, _primary, summarize, training_table_rows

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


def _supplements_table(results) -> str:
    """The later runs merged into the JSON: one row each."""
    head = ["parts", "estimators", "command (as run today)", "minutes", "started",
            "load average at the start"]  # fmt: skip
    cells = []
    for sup in results["supplements"]:
        every = set(sup["estimators"]) >= set(results["estimators"])
        env = sup["environment"]
        cells.append([
            ", ".join(sup["parts"]),
            "all estimators" if every else ", ".join(sup["estimators"]),
            f"`{command_now(sup['command'])}`",
            f"{sup['seconds'] / 60:.0f}",
            env["started"],
            _loads(env["loadavg_start"]),
        ])  # fmt: skip
    return _table(head, cells, "lllrll")


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


def _task_table(results, task):
    rows = training_table_rows(results, task)
    primary, hib = _primary(results, task)
    extra = sorted({k for r in rows for k in r["metrics"]} - {primary})
    head = ["estimator", "family", "tuned config", primary + (" ↑" if hib else " ↓")] + extra
    head += ["ms / step", "evals / step", "failed runs"]
    cells = []
    for r in rows:
        row = [r["label"], r["family"], _hp(r["best"])]
        for name in [primary] + extra:
            m, sd = r["metrics"].get(name, (None, None))
            d = 3 if abs(m or 0) < 10 else 2
            row.append("n/a" if m is None else f"{_fmt(m, d)} ± {_fmt(sd, d)}")
        row += [_fmt(r["ms_per_step"], 1), str(r["evals"]), f"{r['failed']}/{r['seeds']}"]
        cells.append(row)
    return _table(head, cells, "lll" + "r" * (len(head) - 3))


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


def _proposal_table(results):
    head = ["estimator", "setting", "KL(true ‖ pi)", "E[f] exact", "f on own draws, last interval"]
    cells = []
    for row in results["proposal"]:
        last = [r["curve"][-1] for r in row["runs"] if not r["failed"]]
        out = [row["label"], _hp(row["hp"])]
        for metric in ("kl_true_pi", "objective", "sampled_loss"):
            m, sd = mean_sd([c.get(metric) for c in last])
            out.append(f"{_fmt(m, 3)} ± {_fmt(sd, 3)}")
        cells.append(out)
    return _table(head, cells, "llrrr")


def _tuning_table(results, task):
    head = ["estimator", "configurations tried (final primary metric, tuning seed)", "chosen"]
    cells = []
    for key, entry in results["training"][task].items():
        tried = "; ".join(
            f"{_hp(t['hp'])}: " + ("failed" if t["score"] is None else _fmt(list(t.values())[2], 3))
            for t in entry["tuning"]
        )
        cells.append(
            [results["estimators"][key]["label"], tried or "not tuned", _hp(entry["best"])]
        )
    return _table(head, cells, "lll")


def reading(results, summary) -> str:
    """The written reading; every number comes from ``summary`` (stored in the JSON)."""
    from .reading import text

    return text(results, summary)


#: The plots of each part: (part, name, x key, x label, log x); training has three.
PLOTS = {
    "training": [
        ("steps", "step", "SVI step", False),
        ("walltime", "seconds", "training wall time (s, evaluation excluded)", False),
        ("evals", "evals", "objective evaluations (steps x cost per step; log)", True),
    ],
    "gradients": [("gradients",)],
    "cost": [("cost",)],
    "proposal": [("proposal",)],
}
_IMG_NAME = {
    "gradients": "estimators_gradients.png",
    "cost": "estimators_cost.png",
    "proposal": "estimators_proposal_toy.png",
}


def images(results) -> dict:
    """``{plot name: path}`` of the plots the parts in ``results`` have."""
    imgs = {}
    for part, plots in PLOTS.items():
        if part in results:
            for plot in plots:
                name = plot[0]
                imgs[name] = IMG / _IMG_NAME.get(name, f"estimators_training_{name}.png")
    return imgs


def render(results, json_path) -> str:
    """The page's text from ``results`` (nothing written)."""
    return page(results, summarize(results), json_path, images(results))


def write(results, json_path):
    IMG.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    results["summary"] = summary
    json_path.write_text(json.dumps(results, indent=1))
    from .plots import plot_cost, plot_gradients, plot_proposal, plot_training

    imgs = images(results)
    for name, x, xl, logx in PLOTS["training"] if "training" in results else ():
        plot_training(results, x, imgs[name], xl, logx)
    drawers = {"gradients": plot_gradients, "cost": plot_cost, "proposal": plot_proposal}
    for name, draw in drawers.items():
        if name in imgs:
            draw(results, imgs[name])
    PAGE.write_text(page(results, summary, json_path, imgs))
    return [json_path, *imgs.values(), PAGE]


def page(results, summary, json_path, imgs) -> str:
    s, env = results["settings"], results["environment"]
    ts, gs, cs, ps = s["training"], s["gradients"], s["cost"], s["proposal"]
    later = sum(x["seconds"] for x in results.get("supplements", []))
    main_minutes = (results["seconds"] - later) / 60
    out = [
        "# Estimator benchmark: ILS against the alternatives\n\n",
        f"<!-- Generated by benchmarks/estimators.py from {rel(json_path)}; "
        "do not edit by hand. -->\n\n",
        f"*Generated by `benchmarks/estimators.py` from `{rel(json_path)}`; every number on this "
        "page comes from that file. Regenerate with `python -m benchmarks run estimators` "
        "(the run times are below) or rewrite the page from the JSON with "
        "`python -m benchmarks report estimators`.*\n\n",
        f"**Machine:** {machine_line(env)}\n\n",
        f"**Run:** {env['started']}, {main_minutes:.0f} min (main run); load average "
        f"{_loads(env['loadavg_start'])} at the start and "
        f"{_loads(env['loadavg_end'])} at the end on "
        f"{env['cpu_count']} logical CPUs (other jobs shared the machine: wall times are "
        "inflated and noisy: read ratios, not absolute times). Pyro validation off.\n\n",
    ]
    sups = results.get("supplements", [])
    if sups:
        out.append(
            "**Later runs, merged into the same JSON** (same settings; `merge()` of "
            "`benchmarks/estimators.py`, which `--merge-into` applies; a later part "
            "replaces the same part of an earlier run): estimators that became available "
            "after the main run had started, a re-run of the proposal grid, and a re-run "
            "of the cost sweep with every estimator in one process (so that step times are "
            "comparable):\n\n"
        )
        out.append(_supplements_table(results) + "\n")
    if results.get("missing_estimators"):
        out.append(
            "**Not measured** (not available in `pyro_ils.estimators` when this ran): "
            + ", ".join(f"`{k}` ({v})" for k, v in results["missing_estimators"].items())
            + ".\n\n"
        )
    out.append("<!-- reading -->\n")
    out.append(reading(results, summary))
    out.append("<!-- /reading -->\n\n")
    out.append(
        "## Estimators\n\n"
        "Each is one entry of `benchmarks/estimator_bench/registry.py`: how the guide's "
        "`OneHotCategorical` sites are drawn (a messenger swaps the site's distribution), "
        "which ELBO differentiates the result, objective evaluations per step, and its own "
        "hyper-parameter grid. The tasks' guides use plain `OneHotCategorical` sites and "
        "their models use the one-hot values in matrix products, so every estimator runs "
        "on every task. *Pyro path* rows are what a Pyro user gets by swapping the guide's "
        "distribution and keeping `Trace_ELBO` (relaxed densities in the ELBO); *analytic KL* "
        "rows are the same estimators at their best, with `TraceMeanField_ELBO` taking "
        "`KL(q || p)` of the categoricals exactly. ILS rows: `euclidean` and `normalize` "
        "are the proposal's step from the sampled vertex with the two maps onto the "
        "simplex; `reference` is the original code's incorrect gradient (toy and "
        "polynomial only, for comparison); `mirror` and `mirror_rms`, where present, take "
        "the step from `pi` with the entropic map (the mean-start variants of "
        "`docs/method.md`; `mirror_rms` scales `g` by its spread under `pi`). *ILS-diff* "
        "rows (`TraceILSDiff_ELBO`) replace `g` by the exact differences `L(k) - L(z)` over "
        "every alternative of each draw, at one evaluation per alternative.\n\n"
    )
    out.append(_estimators_table(results))
    out.append(
        "\nEvery estimator's learning rate is tuned over "
        f"{{{', '.join(f'{x:g}' for x in results['lr_grid'])}}} "
        "(Adam), together with its own grid: coordinate search on one tuning seed "
        f"(seed {ts['tune_seed']}) with shorter runs, first its own values at the middle "
        "learning rate, then the other learning rates at the best value; the best "
        f"configuration (final primary metric on training data) then runs on seeds "
        f'{", ".join(map(str, ts["seeds"]))}. ILS uses `guide_log_prob="analytic"` '
        "(the model's prior is the guide's own distribution in `toy`, `moe` and `poly`, "
        "and uniform in the VAEs, so the KL is exact).\n\n"
    )
    out.append("## Tasks\n\n")
    head = ["task", "problem", "training steps", "tuning steps"]
    cells = [
        [f"`{name}`", t["title"], str(ts["steps"].get(name)), str(ts["tune_steps"].get(name))]
        for name, t in results["tasks"].items()
    ]
    out.append(_table(head, cells, "llrr"))
    out.append(
        "\n`toy`: the proposal's objective `f(z) = -sum(true * log(z + 1e-8))` with "
        "`examples/toy_kl.py`'s `true` and initialization; the primary metric is the exact "
        "`E[f]` (its minimum, a point mass on each mode, is "
        f"{_fmt(results['tasks']['toy']['optimum'], 2)}; at `pi = true` it is "
        f"{_fmt(results['tasks']['toy']['objective_at_pi_true'], 2)}). `poly`: excess of the "
        "exact `E[(z - t)^2]` over its minimum. `moe`: `examples/mixture_of_experts.py`'s "
        "data, gate and experts with a one-hot expert choice; exact bound per point "
        f"(the true model scores about {_fmt(results['tasks']['moe']['true_model_bound'], 3)}). "
        "VAEs: `examples/categorical_vae.py`'s split and networks (one-hot latents, "
        "decoder `sum_l z_l @ W_l`); `vae_small` reports the exact ELBO by enumeration "
        "(curve: a fixed subset of training images; final: all training images and the "
        "held-out images), `vae_large` a sampled ELBO; both report the held-out "
        "importance-sampled bound `log mean_s p(x, z_s) / q(z_s | x)` "
        f"({s['tasks']['vae_small'].get('is_samples')} samples).\n\n"
    )
    if "training" in results:
        out.append("## Training\n\n")
        for name in ("steps", "walltime", "evals"):
            out.append(f"![training against {name}](img/{imgs[name].name})\n\n")
        out.append(
            "The last plot puts estimators at equal objective evaluations: RLOO with S "
            "samples costs S per step, MuProp 2, REBAR and RELAX 3, exact enumeration the "
            "number of joint values its tensors hold.\n\n"
        )
        for task in results["training"]:
            out.append(f"### {task}: {results['tasks'][task]['title']}\n\n")
            out.append(
                f"Mean ± sd over {len(ts['seeds'])} seeds after {ts['steps'][task]} steps, "
                "sorted by the primary metric (↑ higher is better, ↓ lower). `ms / step` is "
                "the training wall time under the machine's load at the time"
                + (
                    " (the estimators added by a later run ran partly alongside the main "
                    "run, so compare step times in the cost section, not here)"
                    if results.get("supplements")
                    else ""
                )
                + ".\n\n"
            )
            out.append(_task_table(results, task) + "\n")
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
            f"warmed up for {gs['warmup']} steps first (task parameters restored). ILS is "
            "shown at every step size of its grid, the others at their default.\n\n"
        )
        for task, g in results["gradients"].items():
            for point, p in g["points"].items():
                m = ", ".join(f"{k} {_fmt(v, 3)}" for k, v in p["metrics"].items())
                out.append(f"### {task}, step {p['step']} ({m})\n\n")
                out.append(_gradient_table(results, task, point) + "\n")
    if "proposal" in results:
        out.append(
            "## The proposal's toy, its own settings\n\n"
            f"![proposal toy](img/{imgs['proposal'].name})\n\n"
            f"ILS step sizes {', '.join(f'{c:g}' for c in ps['step_sizes'])} with each projection "
            "against Gumbel-Softmax temperatures "
            f"{', '.join(f'{c:g}' for c in ps['temperatures'])} "
            f"(relaxed forward; the KL term is zero here), Adam lr {ps['lr']}, {ps['steps']} "
            "steps, "
            f"seeds {', '.join(map(str, ps['seeds']))}; no tuning. `KL(true ‖ pi)` is what the "
            "proposal plotted; the objective it minimizes is `E[f]`, whose minimum is a point "
            "mass on the mode of `true`, not `pi = true` (see `docs/method.md`). Final values, "
            "mean ± sd over seeds:\n\n"
        )
        out.append(_proposal_table(results) + "\n")
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
    if "training" in results:
        out.append("## Tuning\n\nThe tuning seed's runs (shorter than the final runs).\n\n")
        for task in results["training"]:
            out.append(f"### {task}\n\n" + _tuning_table(results, task) + "\n")
    out.append(
        "## Reproduce\n\n```bash\n"
        + "".join(f"{cmd:<46}# {what}\n" for cmd, what in REPRODUCE)
        + "```\n\nCommand of this run (as run today): `"
        + command_now(results["command"])
        + "`.\n"
    )
    return "".join(out)


__all__ = ["images", "math", "page", "render", "summarize", "write"]
