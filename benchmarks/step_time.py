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
import json
import sys
import time
from pathlib import Path

import pyro
import torch
from tqdm import tqdm

from benchmarks.environment import _loadavg, environment, machine_line
from benchmarks.step_time_bench.report import (
    DEFAULT_DOCS,
    DEFAULT_OUT,
    QUICK_DOCS,
    QUICK_OUT,
    render_markdown,
)
from benchmarks.step_time_bench.timing import (
    BACKWARD_ROUNDS,
    benchmark_k,
    profile_k,
    time_backward_k,
)
from benchmarks.step_time_bench.variants import HEADLINE_ILS, TARGET_RATIO, VARIANTS


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
