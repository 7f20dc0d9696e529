"""SVI step time: TraceILS_ELBO on an integer-indexed mixture vs straight-through.

The issue's requirement: report the SVI step time of ``TraceILS_ELBO`` on a
mixture model written with integer indexing (``locs[z]``) against ``Trace_ELBO``
with ``RelaxedOneHotCategoricalStraightThrough`` on the same model written with
one-hot matrix products (``z @ locs``), at N = 10,000 data points and K = 10 and
K = 100 components. Target: ILS at most 1.3x the straight-through step time.

Model (both writings): a K-component Gaussian mixture on D-dimensional data with
learnable component means ``locs`` (K, D), a fixed isotropic scale and a uniform
Categorical prior on the assignments; the guide holds per-datapoint logits of
shape (N, K) inside ``pyro.plate("data", N)`` (no subsampling).

Variants timed (the first two are the headline comparison; the others are
extra rows showing where the time goes):

* ``ils_index``: ``dist.Categorical`` guide, ``Normal(locs[z], s)`` model,
  ``TraceILS_ELBO()`` (the guide site is routed to ``ILSCategorical``).
* ``st_matmul``: ``RelaxedOneHotCategoricalStraightThrough`` guide,
  ``OneHotCategorical`` prior, ``Normal(z @ locs, s)`` model, ``Trace_ELBO()``.
* ``reinforce_index``: ``dist.Categorical`` guide on the indexing model,
  plain ``Trace_ELBO()`` (score function).
* ``ils_onehot_matmul``: ``ILSOneHotCategorical`` guide on the matmul model,
  ``TraceILS_ELBO()``.

Timing: per variant a warm-up, then ``rounds`` rounds in which every variant
runs ``steps`` timed ``svi.step`` calls in turn (interleaving spreads machine
drift over all variants). Reported: median and interquartile range of the
per-step wall time and process CPU time (the headline ratio uses wall time).

Usage::

    python benchmarks/step_time.py                 # full run, writes JSON + docs/performance.md
    python benchmarks/step_time.py --quick         # CI smoke test (small N, few steps)
    python benchmarks/step_time.py --render-only   # regenerate the markdown from the JSON
    python benchmarks/step_time.py --profile       # also print an op-level profile per variant
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
from pyro_ils import ILSOneHotCategorical, TraceILS_ELBO

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "step_time.json"
DEFAULT_DOCS = REPO / "docs" / "performance.md"
QUICK_OUT = REPO / "benchmarks" / "results" / "step_time_quick.json"
QUICK_DOCS = REPO / "benchmarks" / "results" / "step_time_quick.md"

#: The target from the issue: ILS step time at most this multiple of straight-through.
TARGET_RATIO = 1.3
HEADLINE = ("ils_index", "st_matmul")

VARIANTS = {
    "ils_index": {
        "label": "TraceILS_ELBO, Categorical guide, `locs[z]`",
        "role": "headline (ILS)",
    },
    "st_matmul": {
        "label": "Trace_ELBO, RelaxedOneHotCategoricalStraightThrough guide, `z @ locs`",
        "role": "headline (baseline)",
    },
    "reinforce_index": {
        "label": "Trace_ELBO, Categorical guide (score function), `locs[z]`",
        "role": "extra",
    },
    "ils_onehot_matmul": {
        "label": "TraceILS_ELBO, ILSOneHotCategorical guide, `z @ locs`",
        "role": "extra",
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

    def guide_ils_onehot(data):
        logits = logits_param()
        with pyro.plate("data", n):
            pyro.sample("z", ILSOneHotCategorical(logits=logits))

    if name == "ils_index":
        return model_index, guide_categorical, TraceILS_ELBO()
    if name == "st_matmul":
        return model_matmul, guide_st, Trace_ELBO()
    if name == "reinforce_index":
        return model_index, guide_categorical, Trace_ELBO()
    if name == "ils_onehot_matmul":
        return model_matmul, guide_ils_onehot, TraceILS_ELBO()
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
    q1, q2, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else ms * 3
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


def benchmark_k(k: int, args, device: torch.device, bar: tqdm) -> dict:
    data, init_locs = make_data(args.n, k, args.dim, args.scale, args.seed, device)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    svis, times, cpu_times, losses = {}, {}, {}, {}
    for name in args.variants:
        model, guide, loss = make_variant(name, data, init_locs, args.scale, args.temperature)
        svis[name] = SVI(model, guide, Adam({"lr": args.lr}), loss=loss)
        times[name], cpu_times[name], losses[name] = [], [], []
    for name, svi in svis.items():
        bar.set_postfix_str(f"K={k} warm-up {name}")
        for _ in range(args.warmup):
            timed_step(svi, data, device)
            bar.update()
    for r in range(args.rounds):
        for name, svi in svis.items():
            bar.set_postfix_str(f"K={k} round {r + 1}/{args.rounds} {name}")
            gc.collect()
            for _ in range(args.steps):
                dt, dc, loss = timed_step(svi, data, device)
                times[name].append(dt)
                cpu_times[name].append(dc)
                losses[name].append(loss)
                bar.update()
    result = {"K": k, "N": args.n, "variants": {}}
    for name in args.variants:
        result["variants"][name] = {
            **VARIANTS[name],
            "num_steps": len(times[name]),
            **summarize(times[name]),
            **summarize(cpu_times[name], prefix="cpu_"),
            "step_times_ms": [round(1e3 * t, 4) for t in times[name]],
            "step_cpu_times_ms": [round(1e3 * t, 4) for t in cpu_times[name]],
            "last_loss": losses[name][-1],
        }
    if all(v in result["variants"] for v in HEADLINE):
        ils, st = (result["variants"][v] for v in HEADLINE)
        result["ratio_ils_over_st"] = ils["median_ms"] / st["median_ms"]
        result["cpu_ratio_ils_over_st"] = ils["cpu_median_ms"] / st["cpu_median_ms"]
        result["target_met"] = result["ratio_ils_over_st"] <= TARGET_RATIO
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


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if dirty:
            # Identify the uncommitted package code that was measured.
            diff = subprocess.run(
                ["git", "diff", "HEAD", "--", "pyro_ils"],
                cwd=REPO,
                capture_output=True,
                check=True,
            ).stdout
            rev += "-dirty"
            if diff:
                rev += f", pyro_ils diff sha1 {hashlib.sha1(diff).hexdigest()[:10]}"
        return rev
    except (OSError, subprocess.CalledProcessError):
        return None


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
        "git_revision": git_revision(),
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


def render_markdown(results: dict, json_path: Path, command: str) -> str:
    env, s = results["environment"], results["settings"]
    try:
        json_rel = json_path.resolve().relative_to(REPO)
    except ValueError:
        json_rel = json_path
    target = results.get("target_ratio", TARGET_RATIO)
    lines = [
        "# Performance: SVI step time",
        "",
        f"<!-- Generated by benchmarks/step_time.py from {json_rel}; do not edit by hand. -->",
        "",
        f"This page is generated by `benchmarks/step_time.py` from `{json_rel}`; every "
        "number on it comes from that file. Regenerate (re-run and rewrite) with:",
        "",
        "```bash",
        command,
        "```",
        "",
        "or rewrite the page from the existing JSON without re-running: "
        "`python benchmarks/step_time.py --render-only"
        + ("" if str(json_rel) == str(DEFAULT_OUT.relative_to(REPO)) else f" --out {json_rel}")
        + "`.",
        "",
        f"**Machine:** {machine_line(env)}",
        "",
        f"**Run:** {results['timestamp']}, {env.get('benchmark_wall_s', 'n/a')} s in all; "
        f"load average (1, 5, 15 min) {_fmt_load(env.get('loadavg_start'))} at the start and "
        f"{_fmt_load(env.get('loadavg_end'))} at the end, on {env['cpu_count']} logical CPUs. "
        "A load above the CPU count means other processes shared the machine: absolute "
        "times are then inflated and noisy; the ratios, taken from interleaved rounds, "
        "are the robust part.",
        "",
        "## What is measured",
        "",
        f"Wall time of one `svi.step(data)` (forward, backward and Adam update, lr {s['lr']}) "
        f"on a K-component Gaussian mixture over N = {s['n']:,} points in {s['dim']} "
        f"dimensions: learnable `locs` (K, {s['dim']}), fixed scale {s['scale']}, uniform "
        "Categorical prior; the guide holds per-datapoint logits (N, K) in "
        "`pyro.plate('data', N)`, no subsampling. The data are generated in the script "
        f"(seed {s['seed']}). Each variant gets {s['warmup']} warm-up step(s), then "
        f"{s['rounds']} interleaved rounds (every variant in turn) of {s['steps']} timed "
        f"steps, {s['rounds'] * s['steps']} per variant. Tables give the median and the "
        "interquartile range (IQR) of the per-step wall time, and the median per-step "
        "process CPU time (less sensitive to other load on the machine). "
        f"Straight-through temperature {s['temperature']}. One torch thread by default: the "
        "step is dominated by many small-to-medium tensor ops, and intra-op threading "
        "made the timings several times slower and erratic on small shared VMs.",
        "",
        f"The issue's target: `TraceILS_ELBO` on the indexing model (`locs[z]`) at most "
        f"{target}x `Trace_ELBO` with `RelaxedOneHotCategoricalStraightThrough` on the "
        "one-hot matmul model (`z @ locs`, prior `OneHotCategorical`). The ST guide is built "
        "with `validate_args=False` because, in float32, its clamped relaxed value fails "
        "Pyro's simplex support check. The other rows show where the time goes. This is a "
        "timing benchmark only: it says nothing about the quality of the gradient "
        "estimators.",
        "",
        "## Headline: ILS / straight-through",
        "",
        "| K | N | ILS `locs[z]` median (ms) | ST `z @ locs` median (ms) | ratio ILS/ST (wall) "
        f"| ratio ILS/ST (CPU time) | target <= {target}x |",
        "|---:|---:|---:|---:|---:|---:|:---|",
    ]
    verdicts = []
    for res in results["results"]:
        if "ratio_ils_over_st" not in res:
            continue
        ils, st = (res["variants"][v]["median_ms"] for v in HEADLINE)
        met = res["target_met"]
        verdicts.append((res["K"], met))
        lines.append(
            f"| {res['K']} | {res['N']:,} | {ils:.1f} | {st:.1f} "
            f"| {res['ratio_ils_over_st']:.2f}x | {res['cpu_ratio_ils_over_st']:.2f}x "
            f"| {'met' if met else '**not met**'} |"
        )
    lines.append("")
    if verdicts:
        met_ks = [str(k) for k, met in verdicts if met]
        missed_ks = [str(k) for k, met in verdicts if not met]
        if not missed_ks:
            lines.append(f"**The {target}x target is met at every K measured.**")
        elif not met_ks:
            lines.append(f"**The {target}x target is NOT met** (K = {', '.join(missed_ks)}).")
        else:
            lines.append(
                f"**The {target}x target is met at K = {', '.join(met_ks)} and NOT met at "
                f"K = {', '.join(missed_ks)}.**"
            )
    if s.get("quick"):
        lines += ["", "*Quick (smoke-test) run: small N and few steps; not the benchmark.*"]
    lines += ["", "## All variants", ""]
    for res in results["results"]:
        base = res["variants"].get("st_matmul")
        lines += [
            f"### K = {res['K']}, N = {res['N']:,}",
            "",
            "| variant | role | median (ms) | IQR (ms) | min (ms) | CPU median (ms) "
            "| vs ST (wall) |",
            "|:---|:---|---:|---:|---:|---:|---:|",
        ]
        for name, v in res["variants"].items():
            rel = f"{v['median_ms'] / base['median_ms']:.2f}x" if base else "n/a"
            lines.append(
                f"| {v['label']} (`{name}`) | {v['role']} | {v['median_ms']:.1f} "
                f"| {v['iqr_ms']:.1f} ({v['q1_ms']:.1f} to {v['q3_ms']:.1f}) "
                f"| {v['min_ms']:.1f} | {v['cpu_median_ms']:.1f} | {rel} |"
            )
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
            for name in HEADLINE:
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
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (4)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (10)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (default 1, see docs)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--scale", type=float, default=0.5, help="mixture component scale")
    p.add_argument("--temperature", type=float, default=0.5, help="straight-through temperature")
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
        "--profile", action="store_true", help="also profile each variant (torch.profiler)"
    )
    args = p.parse_args(argv)
    if args.quick:
        defaults = {"n": 1000, "warmup": 1, "rounds": 1, "steps": 3, "out": QUICK_OUT}
        defaults["docs"] = QUICK_DOCS
    else:
        defaults = {"n": 10_000, "warmup": 5, "rounds": 4, "steps": 10, "out": DEFAULT_OUT}
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
    return " ".join(["python benchmarks/step_time.py", *argv]).strip()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, args = parse_args(argv)
    if args.render_only:
        results = json.loads(args.out.read_text())
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(render_markdown(results, args.out, results["command"]))
        print(f"wrote {args.docs}")
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
        ratio = res.get("ratio_ils_over_st")
        extra = f"  ILS/ST={ratio:.2f}x" if ratio is not None else ""
        print(f"K={res['K']}: {row}{extra}")

    if args.profile:
        out["profiles"] = {}
        for k in args.ks:
            out["profiles"][str(k)] = prof = profile_k(k, args, device)
            for text in prof.values():
                print(text)

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
