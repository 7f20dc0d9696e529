"""SVI step time: ILS against straight-through on one model, through one mechanism.

The requirement: with one model written one way for both sides (a mixture
indexed by the draw, ``locs[z]``, with a plain ``dist.Categorical`` guide), the step
of ``TraceILS_ELBO(estimator=ILS(...))`` costs at most 1.3x that of
``TraceILS_ELBO(estimator=StraightThrough())`` (the draws of ``STCategorical``, routed
through the same exact-draw function), at N = 10,000 data points and K = 10 and
K = 100 components. Both sides then share the sampler, the index tensor, the
site weight and the ELBO; they differ only in ``estimator.backward``.

Model: a K-component Gaussian mixture on D-dimensional data with learnable component
means ``locs`` (K, D), a fixed isotropic scale and a uniform Categorical prior on the
assignments; the guide holds per-datapoint logits of shape (N, K) inside
``pyro.plate("data", N)`` (no subsampling).

Variants timed (``TraceILS_ELBO(estimator=X)`` on that model and guide, unless said):

* ``ils_midpoint``: ``X = ILS(0.0, "midpoint")``, the default's member for sites
  with many alternatives (at temperature 1 its backward is ReinMax's); headline.
* ``ils_euclidean``: ``X = ILS(1.0, "euclidean")``, the original method; headline.
* ``st_index``: ``X = StraightThrough()``, the reference of the headline ratios.
* ``reinmax_index``: ``X = ReinMax(1.0)``.
* ``default_index``: ``TraceILS_ELBO()``, the default. At K <= 20 it picks exact
  differences (one more run of the model per alternative) and above the midpoint
  limit at temperature 2, both with the analytic KL; its own row, not in the headline.
* ``reinforce_index``: plain ``Trace_ELBO()`` (score function); context.
* ``pyro_st_gumbel_matmul``: ``Trace_ELBO()`` with Pyro's
  ``RelaxedOneHotCategoricalStraightThrough`` guide on the model written with one-hot
  products (``z @ locs``, prior ``OneHotCategorical``): the earlier baseline,
  a different writing of the model; context.

Timing: per variant a warm-up, then ``rounds`` rounds in which every variant runs
``steps`` timed ``svi.step`` calls in turn (interleaving spreads machine drift over
all variants). Reported: median and interquartile range of the per-step wall time and
process CPU time; each headline ratio is the ratio of the medians, with the
interquartile range of the per-round ratios (the median step of a round over the
reference's in the same round). ``--profile`` adds an operator profile per variant
and the time of each estimator's backward alone on tensors of the step's shape.

Usage::

    python -m benchmarks run cost                 # full run, writes JSON + docs/performance.md
    python -m benchmarks run cost --quick         # CI smoke test (small N, few steps)
    python -m benchmarks report cost              # regenerate the markdown from the JSON
    python -m benchmarks run cost --profile       # also profile each variant
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from tqdm import tqdm

import pyro_ils
from benchmarks.cli import command_now
from pyro_ils import TraceILS_ELBO
from pyro_ils.estimators import ILS, ReinMax, StraightThrough

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "step_time.json"
DEFAULT_DOCS = REPO / "docs" / "performance.md"
QUICK_OUT = REPO / "benchmarks" / "results" / "step_time_quick.json"
QUICK_DOCS = REPO / "benchmarks" / "results" / "step_time_quick.md"

#: The target: an ILS step at most this multiple of straight-through's.
TARGET_RATIO = 1.3
#: The ILS variants of the headline, each over :data:`REFERENCE`.
HEADLINE_ILS = ("ils_midpoint", "ils_euclidean")
REFERENCE = "st_index"
#: The earlier baseline (another writing of the model), a column of context.
ISSUE_BASELINE = "pyro_st_gumbel_matmul"

#: Rounds of the estimators' backward alone (``--profile``).
BACKWARD_ROUNDS = 50
#: The estimators of the variants run as ``TraceILS_ELBO(estimator=...)``.
ESTIMATORS = {
    "ils_midpoint": lambda: ILS(0.0, "midpoint"),
    "ils_euclidean": lambda: ILS(1.0, "euclidean"),
    "st_index": StraightThrough,
    "reinmax_index": lambda: ReinMax(1.0),
}

VARIANTS = {
    "ils_midpoint": {
        "label": '`TraceILS_ELBO(estimator=ILS(0.0, "midpoint"))`',
        "role": "headline (ILS)",
    },
    "ils_euclidean": {
        "label": '`TraceILS_ELBO(estimator=ILS(1.0, "euclidean"))`',
        "role": "headline (ILS)",
    },
    "st_index": {
        "label": "`TraceILS_ELBO(estimator=StraightThrough())`",
        "role": "headline (reference)",
    },
    "reinmax_index": {
        "label": "`TraceILS_ELBO(estimator=ReinMax(1.0))`",
        "role": "same model",
    },
    "default_index": {
        "label": "`TraceILS_ELBO()`, the default",
        "role": "same model, own row",
    },
    "reinforce_index": {
        "label": "`Trace_ELBO()`, score function",
        "role": "context",
    },
    "pyro_st_gumbel_matmul": {
        "label": "`Trace_ELBO()`, Pyro's `RelaxedOneHotCategoricalStraightThrough`, "
        "model written `z @ locs`",
        "role": "context (the earlier baseline: another writing of the model)",
    },
}


# ---------------------------------------------------------------------------
# Data, models and guides


def make_data(n: int, k: int, dim: int, scale: float, seed: int, device: torch.device):
    """N points from a K-component Gaussian mixture, and initial ``locs`` (K data points)."""
    gen = torch.Generator().manual_seed(seed)
    centers = 10.0 * (2.0 * torch.rand(k, dim, generator=gen) - 1.0)
    assign = torch.randint(k, (n,), generator=gen)
    data = centers[assign] + scale * torch.randn(n, dim, generator=gen)
    init_locs = data[torch.randperm(n, generator=gen)[:k]].clone()
    return data.to(device), init_locs.to(device)


def make_variant(name: str, data, init_locs, scale: float, temperature: float):
    """``(model, guide, loss)`` for one variant; its params are prefixed by its name."""
    n, k = data.shape[0], init_locs.shape[0]
    device = data.device
    prior_logits = torch.zeros(k, device=device)
    init_logits = torch.zeros(n, k, device=device)
    temp = torch.tensor(temperature, device=device)

    def locs_param():
        return pyro.param(f"{name}.locs", init_locs.clone())

    def logits_param():
        return pyro.param(f"{name}.logits", init_logits.clone())

    def model_index(data):
        locs = locs_param()
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Categorical(logits=prior_logits))
            pyro.sample("x", dist.Normal(locs[z], scale).to_event(1), obs=data)

    def model_matmul(data):
        locs = locs_param()
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior_logits))
            pyro.sample("x", dist.Normal(z @ locs, scale).to_event(1), obs=data)

    def guide_categorical(data):
        logits = logits_param()
        with pyro.plate("data", n):
            pyro.sample("z", dist.Categorical(logits=logits))

    def guide_st(data):
        logits = logits_param()
        with pyro.plate("data", n):
            # validate_args=False: in float32, clamp_probs leaves the relaxed value a
            # hair off the simplex and Pyro's support check rejects it.
            st = dist.RelaxedOneHotCategoricalStraightThrough(
                temp, logits=logits, validate_args=False
            )
            pyro.sample("z", st)

    if name in ESTIMATORS:
        return model_index, guide_categorical, TraceILS_ELBO(estimator=ESTIMATORS[name]())
    if name == "default_index":
        return model_index, guide_categorical, TraceILS_ELBO()
    if name == "reinforce_index":
        return model_index, guide_categorical, Trace_ELBO()
    if name == ISSUE_BASELINE:
        return model_matmul, guide_st, Trace_ELBO()
    raise ValueError(f"unknown variant {name!r}")


# ---------------------------------------------------------------------------
# Timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(svi: SVI, data, device: torch.device) -> tuple[float, float, float]:
    """``(wall seconds, process CPU seconds, loss)`` of one ``svi.step``."""
    _sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    loss = svi.step(data)
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, loss


def summarize(times: list[float], prefix: str = "") -> dict:
    ms = sorted(1e3 * t for t in times)
    q1, q2, q3 = quartiles(ms)
    stats = {
        "median_ms": q2,
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "mean_ms": statistics.fmean(ms),
    }
    return {prefix + key: value for key, value in stats.items()}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)`` (inclusive method; one value: itself three times)."""
    values = sorted(values)
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def ratio_stats(variants: dict, name: str, reference: str) -> dict:
    """``name``'s step over ``reference``'s: the ratio of the medians (wall and CPU
    time), and the quartiles of the per-round ratios of the round medians."""
    num, den = variants[name], variants[reference]
    rounds = [a / b for a, b in zip(num["round_medians_ms"], den["round_medians_ms"], strict=True)]
    q1, q2, q3 = quartiles(rounds)
    ratio = num["median_ms"] / den["median_ms"]
    return {
        "ratio": ratio,
        "cpu_ratio": num["cpu_median_ms"] / den["cpu_median_ms"],
        "round_ratio_q1": q1,
        "round_ratio_median": q2,
        "round_ratio_q3": q3,
        "round_ratios": [round(r, 4) for r in rounds],
        "target_met": ratio <= TARGET_RATIO,
    }


def benchmark_k(k: int, args, device: torch.device, bar: tqdm) -> dict:
    data, init_locs = make_data(args.n, k, args.dim, args.scale, args.seed, device)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    svis, elbos, times, cpu_times, round_medians, losses = {}, {}, {}, {}, {}, {}
    for name in args.variants:
        model, guide, elbos[name] = make_variant(
            name, data, init_locs, args.scale, args.temperature
        )
        svis[name] = SVI(model, guide, Adam({"lr": args.lr}), loss=elbos[name])
        times[name], cpu_times[name], round_medians[name], losses[name] = [], [], [], []
    for name, svi in svis.items():
        bar.set_postfix_str(f"K={k} warm-up {name}")
        for _ in range(args.warmup):
            timed_step(svi, data, device)
            bar.update()
    for r in range(args.rounds):
        for name, svi in svis.items():
            bar.set_postfix_str(f"K={k} round {r + 1}/{args.rounds} {name}")
            gc.collect()
            this_round = []
            for _ in range(args.steps):
                dt, dc, loss = timed_step(svi, data, device)
                this_round.append(dt)
                cpu_times[name].append(dc)
                losses[name].append(loss)
                bar.update()
            times[name] += this_round
            round_medians[name].append(statistics.median(this_round))
    result = {"K": k, "N": args.n, "variants": {}}
    for name in args.variants:
        entry = result["variants"][name] = {
            **VARIANTS[name],
            "num_steps": len(times[name]),
            **summarize(times[name]),
            **summarize(cpu_times[name], prefix="cpu_"),
            "round_medians_ms": [round(1e3 * t, 4) for t in round_medians[name]],
            "step_times_ms": [round(1e3 * t, 4) for t in times[name]],
            "step_cpu_times_ms": [round(1e3 * t, 4) for t in cpu_times[name]],
            "last_loss": losses[name][-1],
        }
        choices = getattr(elbos[name], "site_choices", None)
        if name == "default_index" and choices:
            entry["site_choices"] = {site: str(choice) for site, choice in choices.items()}
    if REFERENCE in result["variants"]:
        result["ratios"] = {
            name: ratio_stats(result["variants"], name, REFERENCE)
            for name in args.variants
            if name != REFERENCE
        }
    return result


def profile_k(k: int, args, device: torch.device, steps: int = 3, top: int = 15) -> dict:
    """Operator-level profile (``torch.profiler``, grouped by input shapes) of every variant.

    For each variant: one untimed step, then ``steps`` profiled steps; returns the
    ``top`` operators by self CPU time per step, as text.
    """
    from torch.profiler import ProfilerActivity, profile

    data, init_locs = make_data(args.n, k, args.dim, args.scale, args.seed, device)
    pyro.clear_param_store()
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    out = {}
    for name in args.variants:
        model, guide, loss = make_variant(name, data, init_locs, args.scale, args.temperature)
        svi = SVI(model, guide, Adam({"lr": args.lr}), loss=loss)
        svi.step(data)
        with profile(activities=activities, record_shapes=True) as prof:
            for _ in range(steps):
                svi.step(data)
            _sync(device)
        events = sorted(
            prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total
        )
        total = sum(e.self_cpu_time_total for e in events) / steps / 1e3
        lines = [f"{name}, K={k}: self CPU time {total:.1f} ms/step (profiled, {steps} steps)"]
        for e in events[:top]:
            lines.append(
                f"  {e.self_cpu_time_total / steps / 1e3:8.2f} ms/step "
                f"{e.count / steps:5.1f}x  {e.key:28s} {str(e.input_shapes)[:80]}"
            )
        out[name] = "\n".join(lines)
    return out


def time_backward_k(k: int, args, device: torch.device, rounds: int = BACKWARD_ROUNDS) -> dict:
    """Wall time (ms, median and quartiles) of each estimator's ``backward`` alone, on
    tensors of the step's shape (N, K), interleaved over ``rounds``: the only code in
    which the same-model variants differ."""
    gen = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(args.n, k, generator=gen).to(device)
    index = torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(-1).to(device)
    onehot = torch.nn.functional.one_hot(index, k).to(logits.dtype)
    g = torch.randn(args.n, k, generator=gen).to(device)
    weight = torch.ones((), device=device).expand(args.n)
    estimators = {name: make() for name, make in ESTIMATORS.items() if name in args.variants}
    times = {name: [] for name in estimators}
    for _ in range(rounds):
        for name, estimator in estimators.items():
            _sync(device)
            t0 = time.perf_counter()
            estimator.backward(logits, onehot, g, None, weight)
            _sync(device)
            times[name].append(1e3 * (time.perf_counter() - t0))
    return {
        name: dict(zip(("q1_ms", "median_ms", "q3_ms"), quartiles(ts), strict=True))
        for name, ts in times.items()
    }


# ---------------------------------------------------------------------------
# Environment


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _git(*argv: str) -> str:
    return subprocess.run(
        ["git", *argv], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_state() -> dict:
    """The commit checked out, whether the tracked files are clean, and a short
    revision string (``-dirty`` plus the hash of the package diff when they are not)."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return {"git_revision": None, "git_commit": None, "git_clean": None}
    rev = commit[:7]
    if dirty:
        # Identify the uncommitted package code that was measured.
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", "pyro_ils"], cwd=REPO, capture_output=True
        ).stdout
        rev += "-dirty"
        if diff:
            rev += f", pyro_ils diff sha1 {hashlib.sha1(diff).hexdigest()[:10]}"
    return {"git_revision": rev, "git_commit": commit, "git_clean": not dirty}


def environment(args, device: torch.device) -> dict:
    env = {
        "device": str(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyro_ils": pyro_ils.__version__,
        **git_state(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "pyro_validation": pyro.infer.util.is_validation_enabled(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


# ---------------------------------------------------------------------------
# Markdown


def machine_line(env: dict) -> str:
    where = env["cpu_model"]
    if env.get("gpu"):
        where = f"{env['gpu']} (CUDA {env['cuda']}), host CPU {where}"
    return (
        f"{where}; device `{env['device']}`; `torch.set_num_threads({env['torch_num_threads']})` "
        f"({env['cpu_count']} logical CPUs visible); Python {env['python']}, "
        f"torch {env['torch']}, pyro-ppl {env['pyro']}, pyro-ils {env['pyro_ils']}"
        + (f" (git `{env['git_revision']}`)" if env.get("git_revision") else "")
        + f"; Pyro validation {'on' if env['pyro_validation'] else 'off'}."
    )


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


# ---------------------------------------------------------------------------
# CLI


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--quick", action="store_true", help="small N, few steps (CI smoke test)")
    p.add_argument("--n", type=int, default=None, help="data points (default 10000; quick 1000)")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 100], help="components K")
    p.add_argument("--dim", type=int, default=2, help="data dimension (default 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per variant (5)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (60)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (3)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (default 1, see docs)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--scale", type=float, default=0.5, help="mixture component scale")
    p.add_argument(
        "--temperature",
        type=float,
        default=0.5,
        help="temperature of Pyro's ST-Gumbel (context row)",
    )
    p.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME"
    )
    p.add_argument(
        "--no-validation", action="store_true", help="pyro.enable_validation(False) (default on)"
    )
    p.add_argument("--out", type=Path, default=None, help=f"JSON output (default {DEFAULT_OUT})")
    p.add_argument(
        "--docs", type=Path, default=None, help=f"markdown output (default {DEFAULT_DOCS})"
    )
    p.add_argument("--no-docs", action="store_true", help="do not write the markdown")
    p.add_argument(
        "--render-only", action="store_true", help="rewrite the markdown from --out; no run"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile each variant (torch.profiler) and time each estimator's backward",
    )
    args = p.parse_args(argv)
    if args.quick:
        defaults = {"n": 1000, "warmup": 1, "rounds": 1, "steps": 3, "out": QUICK_OUT}
        defaults["docs"] = QUICK_DOCS
    else:
        defaults = {"n": 10_000, "warmup": 5, "rounds": 60, "steps": 3, "out": DEFAULT_OUT}
        defaults["docs"] = DEFAULT_DOCS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("n", "warmup", "rounds", "steps", "threads", "dim"):
        if getattr(args, key) < (0 if key == "warmup" else 1):
            p.error(f"--{key} must be positive")
    if any(k < 2 for k in args.ks):
        p.error("--ks: every K must be at least 2")
    return p, args


def reproduce_command(args, argv) -> str:
    return " ".join(["python -m benchmarks run cost", *argv]).strip()


def write_page(out: Path = DEFAULT_OUT, docs: Path = DEFAULT_DOCS) -> Path:
    """Rewrite the page ``docs`` from the results in ``out``; no run."""
    results = json.loads(out.read_text())
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(render_markdown(results, out, results["command"]))
    return docs


def stale_pages(out: Path = DEFAULT_OUT, docs: Path = DEFAULT_DOCS) -> list[Path]:
    """``[docs]`` if the page is not what the results in ``out`` give, else ``[]``."""
    results = json.loads(out.read_text())
    text = render_markdown(results, out, results["command"])
    return [] if docs.exists() and docs.read_text() == text else [docs]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, args = parse_args(argv)
    if args.render_only:
        print(f"wrote {write_page(args.out, args.docs)}")
        return 0

    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device must be cpu or cuda[:i], got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            f"--device {args.device}: CUDA is not available in this torch build/machine "
            f"(torch {torch.__version__}, torch.version.cuda={torch.version.cuda})"
        )
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda[:i], got {args.device!r}")
    torch.set_num_threads(args.threads)
    pyro.enable_validation(not args.no_validation)

    settings = {
        k: getattr(args, k)
        for k in (
            "quick", "n", "ks", "dim", "warmup", "rounds", "steps", "threads", "seed", "lr",
            "scale", "temperature", "variants",
        )
    }  # fmt: skip
    settings["validation"] = not args.no_validation
    env = environment(args, device)
    print(machine_line(env))

    total = len(args.ks) * len(args.variants) * (args.warmup + args.rounds * args.steps)
    results = []
    env["loadavg_start"] = _loadavg()
    t_start = time.perf_counter()
    with tqdm(total=total, unit="step", desc="SVI steps") as bar:
        for k in args.ks:
            results.append(benchmark_k(k, args, device, bar))
    env["loadavg_end"] = _loadavg()
    env["benchmark_wall_s"] = round(time.perf_counter() - t_start, 1)

    command = reproduce_command(args, argv)
    out = {
        "benchmark": "step_time",
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "target_ratio": TARGET_RATIO,
        "environment": env,
        "settings": settings,
        "results": results,
    }
    for res in results:
        row = "  ".join(f"{n}={v['median_ms']:.1f}ms" for n, v in res["variants"].items())
        ratios = "  ".join(
            f"{n}/ST={res['ratios'][n]['ratio']:.2f}x"
            for n in HEADLINE_ILS
            if n in res.get("ratios", {})
        )
        print(f"K={res['K']}: {row}  {ratios}".rstrip())

    if args.profile:
        out["profiles"], out["backward_only"] = {}, {}
        out["backward_rounds"] = BACKWARD_ROUNDS
        for k in args.ks:
            out["profiles"][str(k)] = prof = profile_k(k, args, device)
            for text in prof.values():
                print(text)
            out["backward_only"][str(k)] = backward = time_backward_k(k, args, device)
            for name, t in backward.items():
                print(f"K={k}: {name}.backward alone {t['median_ms']:.2f} ms")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    if not args.no_docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(render_markdown(out, args.out, command))
        print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
