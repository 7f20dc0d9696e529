"""Measure every estimator's gradient on a model before choosing one.

The README's quickstart mixture, with its unchanged guide: ``pyro_ils.compare_estimators``
prints each estimator's gradient quality against the exact gradient (the guide's
``Categorical`` site enumerates), first at the initial parameters and again after
``--num-steps`` steps of training with the default ``TraceILS_ELBO()``. Nothing is
trained by the comparison itself.

Usage::

    python examples/compare_estimators.py                 # 100 draws per estimator
    python examples/compare_estimators.py --num-draws 20 --num-steps 50
    python examples/compare_estimators.py --plot compare_estimators.png
"""

from __future__ import annotations

import argparse
import json

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI

import pyro_ils

K = 3


def model(data):
    locs = pyro.param("locs", torch.tensor([-1.0, 0.0, 1.0]))
    with pyro.plate("data", len(data), subsample_size=100) as idx:
        z = pyro.sample("z", dist.Categorical(torch.ones(K) / K))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=data[idx])


def guide(data):
    logits = pyro.param("logits", torch.zeros(len(data), K))
    with pyro.plate("data", len(data), subsample_size=100) as idx:
        pyro.sample("z", dist.Categorical(logits=logits[idx]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-draws", type=int, default=100)
    parser.add_argument("--num-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the records here")
    parser.add_argument("--plot", help="also save the bias-variance maps here (a .png)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    data = torch.cat([torch.randn(100) - 4, torch.randn(100), torch.randn(100) + 4])
    out, results = {}, []
    for stage in ("initial parameters", f"after {args.num_steps} steps"):
        if stage != "initial parameters":
            svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=pyro_ils.TraceILS_ELBO())
            for _ in range(args.num_steps):
                svi.step(data)
        print(f"\n== {stage} ==")
        result = pyro_ils.compare_estimators(
            model,
            guide,
            data,
            num_draws=args.num_draws,
            seed=args.seed,
            progress=not args.no_progress,
        )
        out[stage] = result.to_dicts()
        results.append((stage, result))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 1, figsize=(10, 10))
        for ax, (stage, result) in zip(axes, results, strict=True):
            result.plot(ax=ax).set_title(stage)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
