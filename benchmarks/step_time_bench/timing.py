"""The timing of the SVI step-time benchmark (:mod:`benchmarks.step_time`): the
interleaved timing loop, its statistics (quartiles, ratios to the reference), and
the ``--profile`` measurements (operator profile, each estimator's backward alone).
"""

from __future__ import annotations

import gc
import statistics
import time

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import Adam
from tqdm import tqdm

from .variants import ESTIMATORS, REFERENCE, TARGET_RATIO, VARIANTS, make_data, make_variant

#: Rounds of the estimators' backward alone (``--profile``).
BACKWARD_ROUNDS = 50


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
