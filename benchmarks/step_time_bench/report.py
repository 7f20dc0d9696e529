"""The page of the SVI step-time benchmark (:mod:`benchmarks.step_time`): where the
results and the page go, and the markdown rendered from the results
(``docs/performance.md``).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.cli import command_now
from benchmarks.environment import machine_line

from .timing import BACKWARD_ROUNDS
from .variants import HEADLINE_ILS, ISSUE_BASELINE, REFERENCE, TARGET_RATIO, VARIANTS

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "step_time.json"
DEFAULT_DOCS = REPO / "docs" / "performance.md"
QUICK_OUT = REPO / "benchmarks" / "results" / "step_time_quick.json"
QUICK_DOCS = REPO / "benchmarks" / "results" / "step_time_quick.md"


def _fmt_load(load) -> str:
    return "n/a" if not load else ", ".join(f"{x:.2f}" for x in load)


def _verdict(target: float, verdicts: list[tuple[int, bool]]) -> str:
    met_ks = [str(k) for k, met in verdicts if met]
    missed_ks = [str(k) for k, met in verdicts if not met]
    if not missed_ks:
        return f"met at every K measured ({', '.join(met_ks)})"
    if not met_ks:
        return f"**NOT met** (K = {', '.join(missed_ks)})"
    return f"met at K = {', '.join(met_ks)} and **NOT met** at K = {', '.join(missed_ks)}"


def _ratio_cells(r: dict) -> str:
    return (
        f"{r['ratio']:.2f}x | {r['round_ratio_q1']:.2f} to {r['round_ratio_q3']:.2f} "
        f"| {r['cpu_ratio']:.2f}x"
    )


def _headline(results: dict, target: float) -> list[str]:
    lines = [
        "## Headline: ILS / straight-through, the same model",
        "",
        "Each ILS variant's median step over straight-through's "
        f"(`{REFERENCE}`) at the same K; the IQR is that of the per-round ratios.",
        "",
        "| K | N | ILS variant | ILS median (ms) | ST median (ms) | ratio (wall) "
        f"| per-round ratio IQR | ratio (CPU time) | target <= {target}x |",
        "|---:|---:|:---|---:|---:|---:|---:|---:|:---|",
    ]
    verdicts = {name: [] for name in HEADLINE_ILS}
    for res in results["results"]:
        ratios = res.get("ratios", {})
        for name in HEADLINE_ILS:
            if name not in ratios:
                continue
            r = ratios[name]
            verdicts[name].append((res["K"], r["target_met"]))
            lines.append(
                f"| {res['K']} | {res['N']:,} | {VARIANTS[name]['label']} "
                f"| {res['variants'][name]['median_ms']:.1f} "
                f"| {res['variants'][REFERENCE]['median_ms']:.1f} | {_ratio_cells(r)} "
                f"| {'met' if r['target_met'] else '**not met**'} |"
            )
    lines.append("")
    for name, found in verdicts.items():
        if found:
            lines.append(
                f"* {VARIANTS[name]['label']}: the {target}x target is {_verdict(target, found)}."
            )
    return lines + [""]


def _default_section(results: dict) -> list[str]:
    rows = [res for res in results["results"] if "default_index" in res.get("ratios", {})]
    if not rows:
        return []
    lines = [
        "## The default, `TraceILS_ELBO()`",
        "",
        "Not part of the headline: the default picks a member per site "
        "(`pyro_ils.site_choice`). Up to 20 alternatives it takes exact differences, "
        "which run the model and the guide once more over all K alternatives of each "
        "draw (stacked along a new batch dim), so its step grows with K and is not a "
        "single-evaluation estimator's; above 20 it takes the midpoint limit at "
        "temperature 2. Both use the analytic KL of the guide to the prior.",
        "",
        "| K | what the default picked | median (ms) | ST median (ms) | ratio (wall) "
        "| per-round ratio IQR | ratio (CPU time) |",
        "|---:|:---|---:|---:|---:|---:|---:|",
    ]
    for res in rows:
        v = res["variants"]["default_index"]
        choice = "; ".join(f"`{site}`: {c}" for site, c in v.get("site_choices", {}).items())
        lines.append(
            f"| {res['K']} | {choice or 'n/a'} | {v['median_ms']:.1f} "
            f"| {res['variants'][REFERENCE]['median_ms']:.1f} "
            f"| {_ratio_cells(res['ratios']['default_index'])} |"
        )
    return lines + [""]


def _variants_section(results: dict) -> list[str]:
    lines = ["## All variants", ""]
    for res in results["results"]:
        variants = res["variants"]
        base = variants.get(REFERENCE)
        issue = variants.get(ISSUE_BASELINE)
        lines += [
            f"### K = {res['K']}, N = {res['N']:,}",
            "",
            "| variant | role | median (ms) | IQR (ms) | min (ms) | CPU median (ms) "
            "| vs ST (wall) | vs Pyro's ST-Gumbel `z @ locs` (wall) |",
            "|:---|:---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, v in variants.items():
            rel = f"{v['median_ms'] / base['median_ms']:.2f}x" if base else "n/a"
            rel_issue = f"{v['median_ms'] / issue['median_ms']:.2f}x" if issue else "n/a"
            lines.append(
                f"| {v['label']} (`{name}`) | {VARIANTS[name]['role']} | {v['median_ms']:.1f} "
                f"| {v['iqr_ms']:.1f} ({v['q1_ms']:.1f} to {v['q3_ms']:.1f}) "
                f"| {v['min_ms']:.1f} | {v['cpu_median_ms']:.1f} | {rel} | {rel_issue} |"
            )
        lines.append("")
    return lines


def _profile_sections(results: dict) -> list[str]:
    lines = []
    backward = results.get("backward_only")
    if backward:
        names = list(next(iter(backward.values())))
        lines += [
            "## The estimators' backward alone",
            "",
            "From the same run (`--profile`): the wall time of `estimator.backward` on "
            "tensors of the step's shape (N, K), each estimator in turn over "
            f"{results.get('backward_rounds', BACKWARD_ROUNDS)} rounds, "
            "median (q1 to q3), in ms. It is the only code in which the same-model "
            "variants differ.",
            "",
            "| K | " + " | ".join(f"`{n}`" for n in names) + " |",
            "|---:|" + "---:|" * len(names),
        ]
        for k, per_name in backward.items():
            cells = [
                f"{t['median_ms']:.2f} ({t['q1_ms']:.2f} to {t['q3_ms']:.2f})"
                for t in per_name.values()
            ]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("")
    profiles = results.get("profiles")
    if profiles:
        lines += [
            "## Where the time goes (operator profile)",
            "",
            "From the same run (`--profile`): `torch.profiler` over a few extra steps per "
            "variant, operators grouped by input shape, the most expensive by self CPU time "
            "per step. Profiling adds overhead; read the shares, not the absolute values.",
            "",
        ]
        for k, per_variant in profiles.items():
            for name in (*HEADLINE_ILS, REFERENCE):
                if name in per_variant:
                    lines += [
                        f"<details><summary>K = {k}, {name}</summary>",
                        "",
                        "```text",
                        per_variant[name],
                        "```",
                        "",
                        "</details>",
                        "",
                    ]
    return lines


def render_markdown(results: dict, json_path: Path, command: str) -> str:
    env, s = results["environment"], results["settings"]
    try:
        json_rel = json_path.resolve().relative_to(REPO)
    except ValueError:
        json_rel = json_path
    target = results.get("target_ratio", TARGET_RATIO)
    if env.get("git_clean"):
        code = f"Measured at commit `{env['git_commit']}`, tracked files clean."
    else:
        code = "Measured with uncommitted changes to the tracked files (see the revision above)."
    listed = "".join(
        f"* `{name}`: {VARIANTS[name]['label']} ({VARIANTS[name]['role']});\n"
        for name in s["variants"]
    )
    lines = [
        "# Performance: SVI step time",
        "",
        f"<!-- Generated by benchmarks/step_time.py from {json_rel}; do not edit by hand. -->",
        "",
        f"This page is generated by `benchmarks/step_time.py` from `{json_rel}`; every "
        "number on it comes from that file. Regenerate (re-run and rewrite) with:",
        "",
        "```bash",
        command_now(command),
        "```",
        "",
        "or rewrite the page from the existing JSON without re-running: "
        + (
            "`python -m benchmarks report cost`."
            if str(json_rel) == str(DEFAULT_OUT.relative_to(REPO))
            else f"`python -m benchmarks run cost --render-only --out {json_rel}`."
        ),
        "",
        f"**Machine:** {machine_line(env)} {code}",
        "",
        f"**Run:** {results['timestamp']}, {env.get('benchmark_wall_s', 'n/a')} s in all; "
        f"load average (1, 5, 15 min) {_fmt_load(env.get('loadavg_start'))} at the start and "
        f"{_fmt_load(env.get('loadavg_end'))} at the end, on {env['cpu_count']} logical CPUs. "
        "A load near or above the CPU count means other processes shared the machine: "
        "absolute times are then inflated and noisy; the ratios, taken from interleaved "
        "rounds, are the robust part.",
        "",
        "## What is measured",
        "",
        f"Wall time of one `svi.step(data)` (forward, backward and Adam update, lr {s['lr']}) "
        f"on a K-component Gaussian mixture over N = {s['n']:,} points in {s['dim']} "
        f"dimensions: learnable `locs` (K, {s['dim']}), fixed scale {s['scale']}, uniform "
        "Categorical prior; the guide holds per-datapoint logits (N, K) in "
        "`pyro.plate('data', N)`, no subsampling. The data are generated in the script "
        f"(seed {s['seed']}).",
        "",
        "The comparison: one model written one way for both sides, the mean "
        "indexed by the draw (`Normal(locs[z], scale)`) with a plain `dist.Categorical` "
        "guide, trained by `TraceILS_ELBO(estimator=X)`. Every estimator then goes "
        "through the same mechanism: the same sampler, the same exact-draw autograd "
        "function (`pyro_ils/ops/exact_draw.py`) and index tensor, the same site weight; "
        "only `X.backward` differs. Straight-through (`StraightThrough()`, the backward "
        "of `STCategorical`) is the reference of the ratios. The variants:",
        "",
        listed,
        f"Each variant gets {s['warmup']} warm-up step(s), then {s['rounds']} interleaved "
        f"rounds (every variant in turn) of {s['steps']} timed steps, "
        f"{s['rounds'] * s['steps']} per variant. Tables give the median and the "
        "interquartile range (IQR) of the per-step wall time, and the median per-step "
        "process CPU time (less sensitive to other load on the machine). A ratio is that "
        "of the medians; its IQR is that of the per-round ratios (a round's median step of "
        "the variant over straight-through's in the same round). "
        f"Pyro's ST-Gumbel (context only) at temperature {s['temperature']}, built with "
        "`validate_args=False` because, in float32, its clamped relaxed value fails "
        f"Pyro's simplex support check. Pyro validation "
        f"{'on' if s.get('validation', True) else 'off'}. One torch thread: the step is "
        "dominated by many small-to-medium tensor ops, and intra-op threading made the "
        "timings several times slower and erratic on small shared VMs. This is a timing "
        "benchmark only: it says nothing about the quality of the gradient estimators.",
        "",
    ]
    lines += _headline(results, target)
    if s.get("quick"):
        lines += ["*Quick (smoke-test) run: small N and few steps; not the benchmark.*", ""]
    lines += _default_section(results)
    lines += _variants_section(results)
    lines += _profile_sections(results)
    return "\n".join(lines).rstrip() + "\n"
