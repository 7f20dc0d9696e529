"""Cost: wall time per SVI step and peak memory against K and the number of sites.

On :class:`~.tasks.cost.CostTask` (a linear-decoder VAE with free per-image logits:
``L`` latent sites of ``K`` categories, a batch of ``B`` images of 64 pixels), every
estimator runs ``warmup`` untimed steps, then ``steps`` timed ``svi.step`` calls;
the median is reported. Peak memory is that of one further step: on CPU the peak of
the running sum of the allocations and frees that ``torch.profiler`` records
(``profile_memory=True``) during the step, i.e. the largest amount of tensor memory
held at once beyond what was allocated before it; on CUDA
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
memory allocated before the step. The exact estimator runs only where ``K^L`` is at
most 4,096.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import time

import pyro
import torch
from pyro.infer import SVI

from .registry import prepare
from .tasks.cost import CostTask


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _quiet_fd(fd=2):
    """Silence a file descriptor (the profiler's C++ start/stop lines on stderr)."""
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _cpu_peak_bytes(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fd(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    ]
    events.sort(key=lambda e: e.start_ns())
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak


def _cuda_peak_bytes(fn, device) -> int:
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - before


def measure(est, latents, categories, settings, device):
    task = CostTask(
        {"latents": latents, "categories": categories, "batch_size": settings["batch_size"]},
        device,
    )
    if not est.runs_on(task):
        return None
    hp = {"lr": 0.01, **est.default}
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    task.reset(0)
    model, guide, elbo = prepare(est, task, hp)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss=elbo)
    try:
        for _ in range(settings["warmup"]):
            svi.step()
        gc.collect()
        times = []
        for _ in range(settings["steps"]):
            _sync(device)
            t0 = time.perf_counter()
            svi.step()
            _sync(device)
            times.append(time.perf_counter() - t0)
        if device.type == "cuda":
            peak = _cuda_peak_bytes(svi.step, device)
        else:
            peak = _cpu_peak_bytes(svi.step)
    except Exception as error:  # noqa: BLE001 - recorded
        return {"failed": f"{type(error).__name__}: {error}"[:300]}
    return {
        "failed": None,
        "median_ms": 1e3 * statistics.median(times),
        "min_ms": 1e3 * min(times),
        "peak_mib": peak / 2**20,
        "evals": est.cost(task),
    }


def sweeps(settings):
    """(sweep name, L, K) for every size measured."""
    out = [("K", settings["fixed_latents"], k) for k in settings["categories"]]
    out += [("L", l, settings["fixed_categories"]) for l in settings["latents"]]
    return out


def cost(ests, settings, device, bar=None):
    rows = []
    for sweep, latents, categories in sweeps(settings):
        for est in ests:
            r = measure(est, latents, categories, settings, device)
            if bar is not None:
                bar.update()
            if r is None:
                continue
            r.update(sweep=sweep, latents=latents, categories=categories, estimator=est.key)
            rows.append(r)
    pyro.clear_param_store()
    return {"device": str(device), "rows": rows}
