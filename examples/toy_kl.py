"""The ILS proposal's toy: learn categoricals from single draws, ILS against Gumbel-Softmax.

The original proposal ("Intermediate Loss Sampling", 2019, reference code
``mshlis/ILSampling``, ``toy_example_1.py``) fixes a random distribution ``true``
for each of N=5 categoricals with K=5 categories, draws ``draw`` from the learned
``pi = softmax(logits)`` and minimizes, one draw at a time,

    f(draw) = -sum(true * log(draw + 1e-8))

with ILS (``pyro_ils.ils_onehot``: the draw is an exact one-hot) and with
Gumbel-Softmax (``torch.distributions.RelaxedOneHotCategorical(...).rsample()``:
the draw is a relaxed point inside the simplex). It plots ``KL(true || pi)``
against steps and reads a falling curve as success. This script reproduces that
figure and adds what the figure leaves out (see also ``docs/method.md``):

* ``KL(true || pi)`` is **not** the objective. For a one-hot draw ``e_k``,
  ``f(e_k) = -true_k log(1 + 1e-8) - (1 - true_k) log(1e-8) ~ 18.4 (1 - true_k)``, so
  the expected objective ``E_{k ~ pi} f(e_k) ~ 18.4 (1 - <pi, true>)`` is minimized
  by a **point mass on the mode of true**, not by ``pi = true``. An estimator that
  drives ``pi`` away from ``true`` towards the mode (Gumbel-Softmax at low
  temperature does) is optimizing the stated objective correctly; one that
  settles at ``pi = true`` is not following the objective's gradient.
* The downstream gradient at a one-hot draw is ``-true_j / (draw_j + 1e-8)``,
  about ``-1e8 true_j`` at the categories not drawn. With the proposal's
  ``"normalize"`` map the ILS target is then ``true`` renormalized without the
  drawn category, almost the answer itself, whatever the step size; the
  Euclidean projection of such a step is the vertex of the largest ``true_j``
  other than the drawn one. So the toy says little about ILS as an estimator.

The second panel plots the objective that is actually minimized, taken exactly
over categorical draws, ``E_{k ~ pi} f(e_k)`` (with its minimum, the mode's point
mass, and its value at ``pi = true``); the third plots ``f`` on each estimator's
own draws (relaxed draws for Gumbel-Softmax), running mean.

Estimators: ILS with step sizes 0.1 / 0.01 / 0.001 and the projections
``euclidean`` (the package default), ``normalize`` (the proposal's map with the
corrected logits gradient ``pi - pi_D``) and ``reference`` (the original code's
incorrect gradient ``-pi_D / pi``, for comparison only), and Gumbel-Softmax at
temperatures 0.1 / 1 / 10. By default all train the logits with Adam (lr 0.01) on
the objective as stated (summed). The original used plain gradient descent
(lr 0.01, 50,000 steps) on the objective averaged over the N*K entries:
``--optimizer sgd --reduction mean`` reproduces that setup.

What it shows (default run, 3,000 Adam steps, 5 replicates; the numbers are
printed at the end):

* The three ILS step sizes give identical curves: with ``g ~ 1e8`` the target
  does not depend on ``c``.
* ILS ``euclidean``: the target is the vertex of the largest ``true_j`` other than
  the drawn ``j``, so ``pi`` ends with about half its mass on the mode and half on
  the runner-up. ``KL(true || pi)`` first falls, then rises (to about 9); the
  stated objective falls most of the way to its minimum.
* ILS ``normalize`` and (under SGD) ``reference``: ``pi`` settles near ``true``
  (KL about 0.03), slightly flatter than ``true``; the stated objective ends a
  little *above* its value at ``pi = true``. Under SGD ``reference`` gets there
  within a few hundred steps while Gumbel-Softmax has barely moved: the figure
  of the proposal. Two things make that figure: the reference gradient ignores
  the loss's scale (the averaged objective shrinks the Gumbel-Softmax gradient
  by N*K = 25, not the ILS one), and its target is ``true`` itself, not the
  objective's minimizer.
* ILS ``reference`` under Adam hardly moves: its gradient ``-pi_D / pi`` is
  negative in every entry (it does not sum to zero over the logits), and Adam,
  normalizing each entry, raises all logits at about the same rate.
* Gumbel-Softmax optimizes the objective on its relaxed draw. At ``tau = 0.1``
  that is close to the one-hot objective, and ``pi`` drifts from ``true`` towards
  the mode after first passing near it: correct behaviour for the stated
  objective. At ``tau = 10`` the relaxed draw is nearly uniform; matching it to
  ``true`` needs ``logits ~ tau log(true)``, a ``pi`` close to the mode's point
  mass: the lowest stated objective of all and the largest KL.

Seeds: ``true`` is drawn once from ``--seed`` and is the same for every estimator
and replicate. ``--replicates`` independent runs (default 5) are trained side by
side: replicate ``r`` starts from logits drawn uniformly in [0, 1) (as the
original) with seed ``seed + 1 + r``, and all draws come from the torch RNG seeded
with ``--seed`` at the start of each estimator's run.

There is no model posterior in this toy (no Pyro model; the logits are point
estimates). The ArviZ summary is of the **learned categorical probabilities** of
the first categorical: the replicates are the chains and the logits iterates of
the last 20% of training (thinned to 100) the draws, so ``sd`` mixes the
iterate jitter with the spread across replicates and ``r_hat`` says whether the
replicates agree.

    python examples/toy_kl.py                       # 3,000 steps, 5 replicates
    python examples/toy_kl.py --num-steps 20000     # longer

Outputs under ``--out``: ``toy_kl.json``, ``toy_kl.png`` (the three panels),
``toy_kl_summary.csv`` and ``toy_kl_posterior.png`` (the ArviZ summary).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

# posterior_summary and run_info are helpers in this folder (a script's folder is on sys.path)
from posterior_summary import summarize_posterior
from run_info import run_info
from tqdm import tqdm

import pyro_ils

EPS = 1e-8
OPT_NAME = {"adam": "Adam", "sgd": "SGD"}


def estimators(args):
    """(label, kind, option) for every estimator compared."""
    out = []
    for projection in args.projections:
        for c in args.step_sizes:
            out.append((f"ILS {projection} c={c:g}", "ils", (projection, c)))
    for tau in args.temperatures:
        out.append((f"Gumbel-Softmax tau={tau:g}", "gumbel", tau))
    return out


def objective(true, draw):
    """The toy's objective on a draw, summed over the N categoricals: shape (R,)."""
    return -(true * torch.log(draw + EPS)).sum((-2, -1))


def make_optimizer(params, args):
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr)
    return torch.optim.SGD(params, lr=args.lr)


def onehot_objective(true):
    """f(e_k) for every category k of every categorical: shape true.shape."""
    return -true * math.log1p(EPS) - (1 - true) * math.log(EPS)


def kl_true_pi(true, logits):
    """KL(true || pi) summed over the N categoricals: shape (R,)."""
    log_pi = torch.log_softmax(logits, -1)
    return (true * (torch.log(true) - log_pi)).sum((-2, -1))


def expected_objective(true, logits):
    """E_{k ~ pi} f(e_k), exactly, summed over the N categoricals: shape (R,)."""
    return (torch.softmax(logits, -1) * onehot_objective(true)).sum((-2, -1))


def train(label, kind, option, true, init_logits, args):
    """Train R replicates side by side; return per-step histories and the final logits."""
    torch.manual_seed(args.seed)
    logits = init_logits.clone().requires_grad_(True)
    optim = make_optimizer([logits], args)
    scale = 1.0 / (true.shape[-2] * true.shape[-1]) if args.reduction == "mean" else 1.0
    steps = args.num_steps
    R = len(init_logits)
    history = {
        name: torch.empty(steps, R, device=true.device) for name in ("kl", "expected", "sampled")
    }
    tail_start = steps - max(1, steps // 5)
    thin = max(1, (steps - tail_start) // 100)
    tail = []
    bar = tqdm(range(steps), desc=f"{label:>26}", disable=args.no_progress, leave=False)
    for step in bar:
        if kind == "ils":
            projection, c = option
            draw = pyro_ils.ils_onehot(logits, step_size=c, projection=projection)
        else:
            temperature = torch.tensor(option, device=logits.device)
            relaxed = torch.distributions.RelaxedOneHotCategorical(temperature, logits=logits)
            draw = relaxed.rsample()
        f = objective(true, draw)
        optim.zero_grad()
        (scale * f).sum().backward()
        optim.step()
        with torch.no_grad():
            history["sampled"][step] = f.detach()
            history["kl"][step] = kl_true_pi(true, logits)
            history["expected"][step] = expected_objective(true, logits)
            if step >= tail_start and (step - tail_start) % thin == 0:
                tail.append(torch.softmax(logits, -1).clone())
        if step % max(1, steps // 50) == 0:
            bar.set_postfix(kl=f"{history['kl'][step].mean():.3f}")
    bar.close()
    return {k: v.cpu() for k, v in history.items()}, logits.detach(), torch.stack(tail, 1)


def running_mean(x, window):
    """Trailing running mean along dim 0 of a (steps, R) tensor."""
    window = max(1, min(window, len(x)))
    c = torch.cumsum(torch.cat([torch.zeros(1, *x.shape[1:]), x]), 0)
    out = torch.empty_like(x)
    idx = torch.arange(1, len(x) + 1)
    lo = (idx - window).clamp(min=0)
    out[:] = (c[idx] - c[lo]) / (idx - lo).unsqueeze(-1)
    return out


def style(label):
    import matplotlib.pyplot as plt

    if label.startswith("Gumbel"):
        temps = {"0.1": 0, "1": 1, "10": 2}
        tau = label.split("=")[1]
        return {"color": plt.cm.Reds(0.45 + 0.25 * temps.get(tau, 1)), "ls": "-", "lw": 2.0}
    projection = label.split()[1]
    c = label.split("=")[1]
    cmap = {"euclidean": plt.cm.Blues, "normalize": plt.cm.Greens, "reference": plt.cm.Purples}
    shade = {"0.1": 0.9, "0.01": 0.7, "0.001": 0.5}.get(c, 0.7)
    ls = {"0.1": "-", "0.01": "--", "0.001": ":"}.get(c, "-.")
    return {"color": cmap.get(projection, plt.cm.Greys)(shade), "ls": ls, "lw": 1.4}


def save_figure(results, true, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = torch.arange(1, args.num_steps + 1)
    window = max(1, args.num_steps // 50)
    f_onehot = onehot_objective(true)
    at_true = (true * f_onehot).sum().item()
    at_mode = f_onehot.min(-1).values.sum().item()
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6))
    for label, r in results.items():
        kw = style(label)
        axes[0].plot(steps, r["history"]["kl"].mean(1).clamp(min=1e-6), label=label, **kw)
        axes[1].plot(steps, r["history"]["expected"].mean(1), label=label, **kw)
        sampled = running_mean(r["history"]["sampled"], window).mean(1)
        axes[2].plot(steps, sampled, label=label, **kw)
    axes[0].set_yscale("log")
    axes[0].set_title("What the proposal plots: KL(true || pi)")
    axes[0].set_ylabel("KL(true || pi), summed over the 5 categoricals")
    axes[1].axhline(at_true, color="k", ls="--", lw=1, label="at pi = true")
    axes[1].axhline(at_mode, color="k", ls=":", lw=1.5, label="minimum: pi = point mass on mode")
    axes[1].set_title("What is minimized: E over exact draws k ~ pi of f(onehot(k))")
    axes[1].set_ylabel("-sum(true * log(draw + 1e-8)), expected")
    axes[2].set_yscale("log")
    axes[2].set_title(f"f on each estimator's own draws (running mean, {window} steps)")
    axes[2].set_ylabel("f(draw); Gumbel-Softmax draws are relaxed")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel(f"{OPT_NAME[args.optimizer]} step")
        ax.grid(alpha=0.3, which="both")
    if any(label.startswith("ILS") for label in results):
        axes[0].text(
            0.02,
            0.9,
            "ILS: the step sizes' curves coincide (g ~ 1e8 off the drawn\n"
            "category, so the target pi_D does not depend on c)",
            transform=axes[0].transAxes,
            fontsize=8,
        )
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(
        f"Toy 1 of the ILS proposal: N={args.N} categoricals, K={args.K}, "
        f"mean of {args.replicates} replicates, {OPT_NAME[args.optimizer]} lr {args.lr}, "
        f"objective {args.reduction}-reduced"
    )
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def var_name(label):
    return label.replace("Gumbel-Softmax", "gumbel").replace(" ", "_").replace("=", "").lower()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cuda", action="store_true", help="run on the GPU")
    parser.add_argument("--replicates", type=int, default=5, help="independent runs")
    parser.add_argument("--N", type=int, default=5, help="number of categoricals")
    parser.add_argument("--K", type=int, default=5, help="categories per categorical")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate")
    parser.add_argument(
        "--reduction",
        choices=["sum", "mean"],
        default="sum",
        help="the objective as stated (sum) or averaged over the N*K entries (the original)",
    )
    parser.add_argument("--step-sizes", type=float, nargs="+", default=[0.1, 0.01, 0.001])
    parser.add_argument("--projections", nargs="+", default=["euclidean", "normalize", "reference"])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (tiny tensors)")
    parser.add_argument("--out", default="results", help="folder for the JSON, CSV and PNGs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda was given but CUDA is not available on this machine")
    if args.num_steps < 1 or args.replicates < 1:
        parser.error("--num-steps and --replicates must be positive")
    for p in args.projections:
        if p not in pyro_ils.TARGETS:
            parser.error(f"unknown projection {p!r}; choose from {pyro_ils.TARGETS}")
    device = torch.device("cuda" if args.cuda else "cpu")
    if not args.cuda:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(args.seed)
    true = torch.rand(args.N, args.K, generator=gen, dtype=torch.float64).float()
    true = (true / true.sum(-1, keepdim=True)).to(device)
    init_logits = torch.stack(
        [
            torch.rand(args.N, args.K, generator=torch.Generator().manual_seed(args.seed + 1 + r))
            for r in range(args.replicates)
        ]
    ).to(device)

    results = {}
    todo = estimators(args)
    for label, kind, option in tqdm(todo, desc="estimators", disable=args.no_progress):
        start = time.perf_counter()
        history, logits, tail = train(label, kind, option, true, init_logits, args)
        pi = torch.softmax(logits, -1)
        mode = true.argmax(-1)
        n_tail = max(1, args.num_steps // 10)
        results[label] = {
            "kind": kind,
            "option": option,
            "history": history,
            "tail_pi": tail.cpu(),
            "final": {
                "kl_true_pi": history["kl"][-1].tolist(),
                "expected_objective": history["expected"][-1].tolist(),
                "sampled_objective_last10pct": history["sampled"][-n_tail:].mean(0).tolist(),
                "prob_of_mode": pi.gather(-1, mode.expand(pi.shape[:-1]).unsqueeze(-1))
                .squeeze(-1)
                .mean(-1)
                .tolist(),
                "pi": pi.cpu().tolist(),
            },
            "seconds": time.perf_counter() - start,
        }

    os.makedirs(args.out, exist_ok=True)
    fig_path = os.path.join(args.out, "toy_kl.png")
    save_figure(results, true.cpu(), args, fig_path)

    # ArviZ: the learned probabilities of the first categorical, replicates as chains.
    print("\nArviZ summary of the learned probabilities pi of categorical 0")
    true0 = [round(v, 3) for v in true[0].tolist()]
    print(f"(chains = replicates, draws = iterates of the last 20%); true = {true0}")
    samples = {var_name(label): r["tail_pi"][:, :, 0, :] for label, r in results.items()}
    summarize_posterior(
        samples,
        os.path.join(args.out, "toy_kl"),
        chain_dim=True,
        title="Learned pi of categorical 0 (replicates combined)",
    )

    f_onehot = onehot_objective(true)
    at_true = (true * f_onehot).sum().item()
    at_mode = f_onehot.min(-1).values.sum().item()
    print(
        f"\nToy 1 (ILS proposal): N={args.N} categoricals x K={args.K}, {args.num_steps} "
        f"{OPT_NAME[args.optimizer]} steps (lr {args.lr}, objective {args.reduction}-reduced), "
        f"{args.replicates} replicates, seed {args.seed}, {device}"
    )
    print("Values summed over the N categoricals; mean +- sd over replicates.")
    print(
        f"Reference points: pi = true gives KL 0 and E f = {at_true:.3f}; "
        f"pi = point mass on each mode gives E f = {at_mode:.3f} (the minimum); "
        f"pi = true gives pi(mode) = {true.max(-1).values.mean().item():.3f}."
    )
    header = ("estimator", "KL(true||pi)", "E_{k~pi} f", "f own draws", "pi(mode)")
    print("{:>26}  {:>16}  {:>16}  {:>16}  {:>8}".format(*header))

    def ms(values):
        t = torch.tensor(values)
        sd = t.std().item() if len(t) > 1 else 0.0
        return f"{t.mean().item():8.3f} +- {sd:5.3f}"

    for label, r in results.items():
        fin = r["final"]
        print(
            f"{label:>26}  {ms(fin['kl_true_pi']):>16}  {ms(fin['expected_objective']):>16}  "
            f"{ms(fin['sampled_objective_last10pct']):>16}  "
            f"{torch.tensor(fin['prob_of_mode']).mean().item():8.3f}"
        )
    print(
        "KL and E f: after the last step; f own draws: mean over the last 10% of steps "
        "(relaxed draws for Gumbel-Softmax); pi(mode): mean probability given to the mode."
    )

    json_path = os.path.join(args.out, "toy_kl.json")
    with open(json_path, "w") as f:
        json.dump(
            {
                "settings": vars(args),
                **run_info(device),
                "true": true.cpu().tolist(),
                "objective_at_true": at_true,
                "objective_minimum": at_mode,
                "results": {
                    label: {
                        "final": r["final"],
                        "seconds": r["seconds"],
                        "kl_mean_every_step": r["history"]["kl"]
                        .mean(1)
                        .tolist()[:: max(1, args.num_steps // 200)],
                    }
                    for label, r in results.items()
                },
            },
            f,
            indent=1,
        )
    print(f"results: {json_path}, figures: {fig_path}, {os.path.join(args.out, 'toy_kl_*')}")
    return results


if __name__ == "__main__":
    main()
