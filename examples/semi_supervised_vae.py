"""Semi-supervised VAE (M2, Kingma et al. 2014) on digits: ILS against enumeration.

The M2 model, with the class written the Pyro way (an integer ``dist.Categorical``
site, used through ``F.one_hot``)::

    model:  y ~ Categorical(uniform)          (observed for labelled images)
            z ~ Normal(0, I)
            x ~ Bernoulli(decoder(one_hot(y), z))
    guide:  y ~ Categorical(classifier(x))    (unlabelled images only)
            z ~ Normal(encoder(x, one_hot(y)))

plus the paper's auxiliary classification term, ``alpha * log q(y | x)`` per
labelled image (``--alpha``, default 200), written as a ``pyro.factor`` in the
model so that every estimator trains exactly the same objective. Each SVI step
takes a labelled and an unlabelled minibatch, in two plates rescaled to the full
data. The unlabelled class is the discrete guide site, and its gradient is
estimated two ways (same seed, initialization, minibatches and steps):

* ``ils``: ``TraceILS_ELBO`` with the guide unchanged (plain ``dist.Categorical``):
  one class is drawn per image and the classifier's logits get the ILS gradient.
  Step size ``--step-size`` 0.1 (see the results for the package default 1.0);
* ``enum``: ``TraceEnum_ELBO`` with the guide's class enumerated
  (``config_enumerate``, i.e. ``infer={"enumerate": "parallel"}``), as Pyro's
  SS-VAE tutorial does: the exact sum over the 10 classes, at 10 times the
  encoder and decoder work on unlabelled images.

Optional extra estimators (``--estimators``): ``ils_analytic`` (ILS with the
analytic KL between the class's guide and prior, ``guide_log_prob="analytic"``),
``reinforce`` (``TraceGraph_ELBO``: the score function, Rao-Blackwellized by
Pyro's dependency tracking, no baseline) and ``labels_only`` (the same model and
objective on the labelled images alone, ``Trace_ELBO``: what the unlabelled
images add).

    python examples/semi_supervised_vae.py                      # ils and enum
    python examples/semi_supervised_vae.py --estimators ils,enum,reinforce,labels_only
    python examples/semi_supervised_vae.py --step-size 1.0 --estimators ils

Data: scikit-learn's bundled ``load_digits`` (1,797 8x8 images, no download),
pixels binarized at 8/16 and modelled as Bernoulli, split 80/20 into 1,437
training and 360 held-out images (the split of ``categorical_vae.py``);
``--num-labels`` training images (default 100), balanced over the classes and
chosen with ``--seed``, keep their labels.

Printed at the end, per estimator, on the held-out images treated as unlabelled:
the classifier's accuracy (argmax of ``q(y | x)``), the ELBO computed exactly over
``y`` with ``z`` sampled (``--final-eval-samples`` draws per image and class), an
importance-sampled ``log p(x)`` (the same draws, stratified over ``y``), the
number of active ``z`` dims, and the training time per step. Before that, the
posterior is summarized through ArviZ (``examples/posterior_summary.py``):
``pyro.infer.Predictive`` draws ``y`` and ``z`` from the guide for
``--posterior-images`` held-out images; the table gives ``y_is_true`` (1 where the
drawn class is the true one, so its mean is ``q(true class | x)``) and the two most
active ``z`` dims, the forest plot the ``z`` dims.

Outputs under ``--out``: ``semi_supervised_vae.json`` (settings, results, curves),
``semi_supervised_vae_curves.png`` (held-out accuracy and ELBO during training),
``semi_supervised_vae_classes.png`` (the guide's class distribution for the shown
images), ``semi_supervised_vae_generated.png`` (decoded digits per class), and per
estimator ``semi_supervised_vae_<estimator>_summary.csv`` and ``_posterior.png``
(ArviZ).

Result of the default run (3,000 steps, 100 labels, batches of 128 unlabelled and
32 labelled images, ``ClippedAdam`` at 3e-3 decayed 10x over the run, seed 0; a
2-core CPU, no GPU, 3 to 5 minutes in all), held-out images:

    estimator                       accuracy   ELBO (nats/image)   log p(x) IS
    ILS (TraceILS_ELBO), c=0.1         0.756         -20.66            -19.38
    enumeration (TraceEnum_ELBO)       0.842         -18.82            -18.41

**ILS loses to enumeration** on both accuracy and ELBO. With ``--seed 1`` (another
labelled subset and initialization) it lost again: ILS 0.806 and -20.79,
enumeration 0.842 and -19.04. Same settings and seed 0, other estimators: the
package default step size c = 1.0 (``--step-size 1.0``) gave 0.714 and -20.82;
REINFORCE (``--estimators reinforce``) 0.836 and -20.31, better than ILS on both;
the classifier trained on the 100 labelled images alone (``labels_only``) reached
0.792, so on seed 0 the unlabelled images lowered the accuracy under ILS and raised
it under enumeration and REINFORCE. Timings per step varied between runs on this
shared machine (ILS 20 to 43 ms, enumeration 33 to 46 ms) and are rough. The
figures on the documentation page (``semi_supervised_vae_curves.png`` and
``semi_supervised_vae_classes.png``) are from the seed-0 default run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F

# posterior_summary and run_info are helpers in this folder (a script's folder is on sys.path)
from posterior_summary import summarize_posterior
from pyro.infer import (
    SVI,
    Predictive,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    config_enumerate,
)
from run_info import run_info
from tqdm import tqdm

import pyro_ils
from pyro_ils import TraceILS_ELBO

NUM_CLASSES = 10
ESTIMATORS = ("ils", "enum", "ils_analytic", "reinforce", "labels_only")
LABELS = {
    "ils": "ILS (TraceILS_ELBO)",
    "ils_analytic": "ILS, analytic KL for y",
    "enum": "enumeration (TraceEnum_ELBO)",
    "reinforce": "REINFORCE (TraceGraph_ELBO)",
    "labels_only": "labelled images only",
}


def load_digits_split(device, num_labels, dtype=torch.float32, seed=0, label_seed=0):
    """Binarized digits: (labelled x, labelled y, unlabelled x, test x, test y)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (torch.as_tensor(digits.data, dtype=dtype) > 8).to(dtype)
    targets = torch.as_tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(images))
    train, test = perm[:n_train], perm[n_train:]
    # a class-balanced labelled subset of the training images
    gen = torch.Generator().manual_seed(label_seed)
    order = train[torch.randperm(len(train), generator=gen)]
    per_class = [num_labels // NUM_CLASSES + (c < num_labels % NUM_CLASSES) for c in range(10)]
    labelled = torch.cat([order[targets[order] == c][: per_class[c]] for c in range(NUM_CLASSES)])
    is_labelled = torch.zeros(len(images), dtype=torch.bool)
    is_labelled[labelled] = True
    unlabelled = train[~is_labelled[train]]
    return tuple(
        t.to(device)
        for t in (
            images[labelled],
            targets[labelled],
            images[unlabelled],
            images[test],
            targets[test],
        )
    )


def mlp(n_in, hidden, n_out):
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(),
        nn.Linear(hidden, n_out),
    )  # fmt: skip


def with_class(h, y):
    """Concatenate features ``h`` with ``one_hot(y)``, broadcasting (enumeration adds dims).

    ``y`` is the integer class, as Pyro's ``Categorical`` gives it; under ILS
    its one-hot (converted to float) carries the ILS gradient.
    """
    onehot = F.one_hot(y, NUM_CLASSES).to(h.dtype)
    shape = torch.broadcast_shapes(h.shape[:-1], onehot.shape[:-1])
    return torch.cat([h.expand(shape + h.shape[-1:]), onehot.expand(shape + (NUM_CLASSES,))], -1)


class M2(nn.Module):
    def __init__(self, z_dim=8, hidden=128, pixels=64, alpha=200.0):
        super().__init__()
        self.z_dim, self.alpha = z_dim, alpha
        self.classifier = mlp(pixels, hidden, NUM_CLASSES)
        self.encoder_z = mlp(pixels + NUM_CLASSES, hidden, 2 * z_dim)
        self.decoder = mlp(z_dim + NUM_CLASSES, hidden, pixels)

    def encode_z(self, x, y):
        loc, raw_scale = self.encoder_z(with_class(x, y)).chunk(2, -1)
        return loc, F.softplus(raw_scale) + 1e-3

    def decode(self, z, y):
        return self.decoder(with_class(z, y))

    # The data come in two plates, labelled and unlabelled; either may be absent.
    # ``n_lab`` / ``n_unl`` are the full sizes, so that minibatches are rescaled.

    def model(self, x_lab=None, y_lab=None, x_unl=None, n_lab=None, n_unl=None):
        pyro.module("m2", self)
        for tag, x, y, n in (("l", x_lab, y_lab, n_lab), ("u", x_unl, None, n_unl)):
            if x is None:
                continue
            zero = x.new_zeros(())
            idx = torch.arange(len(x), device=x.device)
            with pyro.plate(f"data_{tag}", n or len(x), subsample=idx):
                y = pyro.sample(
                    f"y_{tag}", dist.Categorical(logits=x.new_zeros(NUM_CLASSES)), obs=y
                )
                z = pyro.sample(f"z_{tag}", dist.Normal(zero, 1.0).expand([self.z_dim]).to_event(1))
                logits = self.decode(z, y)
                pyro.sample(f"x_{tag}", dist.Bernoulli(logits=logits).to_event(1), obs=x)
                if tag == "l" and self.alpha:
                    # the auxiliary classification loss: alpha * log q(y | x), labelled only
                    log_q_y = dist.Categorical(logits=self.classifier(x)).log_prob(y)
                    pyro.factor("aux_classification", self.alpha * log_q_y)

    def guide(self, x_lab=None, y_lab=None, x_unl=None, n_lab=None, n_unl=None):
        pyro.module("m2", self)
        for tag, x, y, n in (("l", x_lab, y_lab, n_lab), ("u", x_unl, None, n_unl)):
            if x is None:
                continue
            idx = torch.arange(len(x), device=x.device)
            with pyro.plate(f"data_{tag}", n or len(x), subsample=idx):
                if y is None:
                    y = pyro.sample(f"y_{tag}", dist.Categorical(logits=self.classifier(x)))
                loc, scale = self.encode_z(x, y)
                pyro.sample(f"z_{tag}", dist.Normal(loc, scale).to_event(1))

    # ----- evaluation on held-out images (treated as unlabelled) -----

    @torch.no_grad()
    def z_activity(self, x):
        """Variance over images of E_q[z | x, y_hat] per z dim (active units, Burda et al.)."""
        loc, _ = self.encode_z(x, self.classifier(x).argmax(-1))
        return loc.var(0)

    @torch.no_grad()
    def accuracy(self, x, y):
        return (self.classifier(x).argmax(-1) == y).double().mean().item()

    @torch.no_grad()
    def evaluate(self, x, y, num_samples=10, chunk=200):
        """Accuracy, ELBO (exact over y, z sampled) and importance-sampled log p(x).

        For each image and each class ``k``, ``num_samples`` draws
        ``z ~ q(z | x, k)`` give ``w = p(x | k, z) p(k) p(z) / q(z | x, k)``.
        ELBO = sum_k q(k | x) [mean log w - log q(k | x)]  (exact over y, MC over z);
        log p(x) ~= log mean_s sum_k w_{s,k}   (stratified over y; its expectation is
        a lower bound on log p(x) that tightens as num_samples grows).
        """
        elbos, log_pxs = [], []
        for start in range(0, len(x), chunk):
            xb = x[start : start + chunk]
            classes = torch.arange(NUM_CLASSES, device=x.device)[:, None].expand(-1, len(xb))
            loc, scale = self.encode_z(xb, classes)  # (K, B, D)
            q_z = dist.Normal(loc, scale).to_event(1)
            z = q_z.sample((num_samples,))  # (S, K, B, D)
            log_px = dist.Bernoulli(logits=self.decode(z, classes)).to_event(1).log_prob(xb)
            p_z = dist.Normal(torch.zeros_like(z), 1.0).to_event(1)
            log_w = log_px + p_z.log_prob(z) - q_z.log_prob(z) - math.log(NUM_CLASSES)
            log_q_y = torch.log_softmax(self.classifier(xb), -1).T  # (K, B)
            elbo = (log_q_y.exp() * (log_w.mean(0) - log_q_y)).sum(0)
            log_px_hat = torch.logsumexp(log_w, 1).logsumexp(0) - math.log(num_samples)
            elbos.append(elbo)
            log_pxs.append(log_px_hat)
        return {
            "accuracy": self.accuracy(x, y),
            "elbo": torch.cat(elbos).mean().item(),
            "log_px_is": torch.cat(log_pxs).mean().item(),
        }


def make_loss(name, args):
    if name == "ils":
        return TraceILS_ELBO(step_size=args.step_size, projection=args.projection)
    if name == "ils_analytic":
        return TraceILS_ELBO(
            step_size=args.step_size, projection=args.projection, guide_log_prob="analytic"
        )
    if name == "enum":
        return TraceEnum_ELBO(max_plate_nesting=1)
    if name == "labels_only":
        return Trace_ELBO()  # no discrete latent site left
    if name == "reinforce":
        return TraceGraph_ELBO()
    raise ValueError(name)


def train(name, args, data, device):
    x_lab, y_lab, x_unl, test_x, test_y = data
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    m2 = M2(args.z_dim, args.hidden, alpha=args.alpha).to(device)
    guide = m2.guide
    if name == "enum":
        guide = config_enumerate(m2.guide, "parallel", expand=False)
    optim = pyro.optim.ClippedAdam({"lr": args.lr, "lrd": args.lr_decay ** (1 / args.num_steps)})
    svi = SVI(m2.model, guide, optim, loss=make_loss(name, args))
    b_lab = min(args.batch_size_labelled, len(x_lab))
    every = max(1, args.num_steps // args.num_evals)
    history, seconds = [], 0.0
    bar = tqdm(range(args.num_steps), desc=f"{name:>11}", disable=args.no_progress)
    for step in bar:
        start = time.perf_counter()
        i_lab = torch.randint(len(x_lab), (b_lab,), device=device)
        batch = {"x_lab": x_lab[i_lab], "y_lab": y_lab[i_lab], "n_lab": len(x_lab)}
        if name != "labels_only":
            i_unl = torch.randint(len(x_unl), (args.batch_size,), device=device)
            batch.update(x_unl=x_unl[i_unl], n_unl=len(x_unl))
        loss = svi.step(**batch)
        seconds += time.perf_counter() - start
        if step % every == 0 or step == args.num_steps - 1:
            metrics = m2.evaluate(test_x, test_y, num_samples=args.eval_samples)
            history.append({"step": step + 1, "train_loss": loss, **metrics})
            bar.set_postfix(acc=f"{metrics['accuracy']:.3f}", test_elbo=f"{metrics['elbo']:.2f}")
    pyro.set_rng_seed(args.seed)
    final = m2.evaluate(test_x, test_y, num_samples=args.final_eval_samples)
    activity = m2.z_activity(test_x)
    return {
        "estimator": name,
        "description": LABELS[name] + (f", c={args.step_size:g}" if name.startswith("ils") else ""),
        "test_accuracy": final["accuracy"],
        "test_elbo": final["elbo"],
        "test_log_px_is": final["log_px_is"],
        "z_activity": activity.tolist(),
        "active_z_dims": int((activity > 0.01).sum()),
        "train_seconds": seconds,
        "ms_per_step": 1000 * seconds / args.num_steps,
        "history": history,
    }, m2


def posterior_draws(m2, x, num_samples, seed):
    """Guide draws of the class and of z for a few held-out images, via Predictive."""
    pyro.set_rng_seed(seed)
    predictive = Predictive(
        m2.model,
        guide=m2.guide,
        num_samples=num_samples,
        return_sites=["y_u", "z_u"],
        parallel=True,  # one vectorized pass over the draws
    )
    with torch.no_grad():
        samples = predictive(x_unl=x)
    return {k: v.detach().cpu() for k, v in samples.items()}


def arviz_draws(samples, true_y, z_dims, num_chains):
    """Predictive draws -> arrays of shape ``(chains, draws, images)`` for ArviZ.

    ``y``: the class drawn from the guide; ``y_is_true``: 1 where that draw is
    the image's true class, so its posterior mean is ``q(true class | x)`` (the
    mean of a class index would mean nothing); ``z<d>``: z dim ``d``. The draws
    are independent guide samples, split into ``num_chains`` blocks so that
    ArviZ's r_hat and ESS act as a sanity check (near 1, and near the number of
    draws), not as MCMC diagnostics. A quantity that is the same in every draw
    has zero variance, and r_hat is NaN there.
    """
    y, z = samples["y_u"], samples["z_u"]
    n_draws = (len(y) // num_chains) * num_chains

    def chains(t):
        return t[:n_draws].reshape(num_chains, -1, *t.shape[1:])

    out = {"y": chains(y), "y_is_true": chains((y == true_y.to(y.device)).double())}
    for d in z_dims:
        out[f"z{d}"] = chains(z[:, :, d])
    return out


def save_class_posteriors(posteriors, true_y, path):
    """Bar charts of the guide's class draws, rows = estimators, columns = images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, n = len(posteriors), len(true_y)
    fig, axes = plt.subplots(rows, n, figsize=(1.7 * n, 1.5 * rows + 0.6), squeeze=False)
    for row, (name, y) in zip(axes, posteriors.items(), strict=True):
        flat = y.reshape(-1, n)
        for i, ax in enumerate(row):
            freq = [(flat[:, i] == k).double().mean().item() for k in range(NUM_CLASSES)]
            colors = ["C2" if k == int(true_y[i]) else "C0" for k in range(NUM_CLASSES)]
            ax.bar(range(NUM_CLASSES), freq, color=colors)
            ax.set_ylim(0, 1)
            ax.set_xticks(range(NUM_CLASSES))
            ax.tick_params(labelsize=6)
            if ax is axes[0, i]:
                ax.set_title(f"image {i} (true {int(true_y[i])})", fontsize=8)
        row[0].set_ylabel(f"{name}\nq(y = k | x)", fontsize=8)
    fig.suptitle(
        "Guide class posterior q(y|x) on held-out images, Predictive draws (green = true class)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_curves(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in results:
        steps = [h["step"] for h in r["history"]]
        axes[0].plot(steps, [h["accuracy"] for h in r["history"]], label=r["description"])
        axes[1].plot(steps, [h["elbo"] for h in r["history"]], label=r["description"])
    axes[0].set_ylabel("held-out accuracy")
    axes[1].set_ylabel("held-out ELBO (nats/image)\nexact over y, z sampled")
    lows = [h["elbo"] for r in results for h in r["history"][len(r["history"]) // 4 :]]
    if lows:
        axes[1].set_ylim(min(lows) - 2, max(lows) + 1)
    for ax in axes:
        ax.set_xlabel("SVI step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Semi-supervised VAE (M2) on binarized digits")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_generated(models, path, columns=8, seed=0):
    """Decoder means for each class (rows) and shared z draws (columns), per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 4.0), squeeze=False)
    gen = torch.Generator().manual_seed(seed)
    for ax, (name, m2) in zip(axes[0], models.items(), strict=True):
        device = next(m2.parameters()).device
        z = torch.randn(columns, m2.z_dim, generator=gen).to(device)
        y = torch.arange(NUM_CLASSES, device=device)
        with torch.no_grad():
            means = torch.sigmoid(m2.decode(z[None, :, :], y[:, None]))  # (10, columns, 64)
        grid = F.pad(means.reshape(NUM_CLASSES, columns, 8, 8), (0, 1, 0, 1), value=0.5)
        grid = grid.permute(0, 2, 1, 3).reshape(NUM_CLASSES * 9, columns * 9)
        ax.imshow(grid.cpu(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_yticks([9 * k + 4 for k in range(NUM_CLASSES)], [str(k) for k in range(10)])
        ax.set_xticks([])
        ax.set_ylabel("class y")
        ax.set_title(LABELS[name], fontsize=9)
    fig.suptitle("Generated digits: rows = class, columns = shared z ~ N(0, I)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cuda", action="store_true", help="run on the GPU")
    parser.add_argument("--num-labels", type=int, default=100, help="labelled training images")
    parser.add_argument(
        "--estimators", default="ils,enum", help=f"comma-separated, from {', '.join(ESTIMATORS)}"
    )
    parser.add_argument("--alpha", type=float, default=200.0,
                        help="weight of the auxiliary log q(y|x) per labelled image")  # fmt: skip
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128, help="unlabelled per step")
    parser.add_argument("--batch-size-labelled", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lr-decay", type=float, default=0.1, help="total decay over the run")
    parser.add_argument("--step-size", type=float, default=0.1,
                        help="ILS step c (0.1 was better here, euclidean)")  # fmt: skip
    parser.add_argument("--projection", default="euclidean",
                        help="ILS target (the original method's, for which the step was tuned; "
                        "the package default is 'midpoint' at step 0)")  # fmt: skip
    parser.add_argument("--num-evals", type=int, default=25, help="evaluations during training")
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=10,
        help="z draws per image and class, evaluations during training",
    )
    parser.add_argument("--final-eval-samples", type=int, default=100,
                        help="z draws per image and class, final evaluation")  # fmt: skip
    parser.add_argument("--posterior-images", type=int, default=6)
    parser.add_argument("--posterior-samples", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (small tensors)")
    parser.add_argument("--out", default="results", help="folder for the JSON, CSV and PNGs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda was given but CUDA is not available on this machine")
    if not 1 <= args.posterior_images <= 300 or args.posterior_samples < 4:
        parser.error("--posterior-images must be in 1..300 and --posterior-samples at least 4")
    names = [s.strip() for s in args.estimators.split(",") if s.strip()]
    for name in names:
        if name not in ESTIMATORS:
            parser.error(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
    if not NUM_CLASSES <= args.num_labels <= 1000:
        parser.error("--num-labels must be between 10 and 1000")
    if args.num_steps < 1:
        parser.error("--num-steps must be positive")
    if args.projection not in pyro_ils.TARGETS:
        parser.error(f"unknown projection {args.projection!r}; choose from {pyro_ils.TARGETS}")
    device = torch.device("cuda" if args.cuda else "cpu")
    if not args.cuda:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    data = load_digits_split(device, args.num_labels, seed=0, label_seed=args.seed)
    results, models = [], {}
    for name in names:
        result, m2 = train(name, args, data, device)
        results.append(result)
        models[name] = m2

    # posterior summaries through ArviZ (examples/posterior_summary.py), a few held-out images
    test_x, test_y = data[3], data[4]
    shown_y = test_y[: args.posterior_images].cpu()
    posterior, class_draws = {}, {}
    for name, m2 in models.items():
        # the two z dims the encoder uses most on held-out images (largest activity)
        activity = torch.tensor(results[names.index(name)]["z_activity"])
        z_dims = sorted(activity.argsort(descending=True)[:2].tolist())
        samples = posterior_draws(
            m2, test_x[: args.posterior_images], args.posterior_samples, args.seed
        )
        draws = arviz_draws(samples, shown_y, z_dims, num_chains=4)
        class_draws[name] = draws["y"]
        prefix = os.path.join(args.out, f"semi_supervised_vae_{name}")
        print(
            f"\nArviZ summary, {results[names.index(name)]['description']}: "
            f"{args.posterior_samples} guide draws (Predictive, 4 blocks as chains) for "
            f"held-out images 0..{args.posterior_images - 1}, true classes {shown_y.tolist()}; "
            f"y_is_true = 1 if the drawn class is the true one (mean = q(true class | x)), "
            f"z<d> = z dim d (the {len(z_dims)} dims with the largest activity)"
        )
        # table: y_is_true and z; forest plot: z only (the median and HDI of a 0/1
        # indicator say little; the class probabilities are in the _classes.png bar charts)
        z_names = [f"z{d}" for d in z_dims]
        summarize_posterior(
            draws, prefix, ["y_is_true", *z_names], chain_dim=True,
            title=f"{LABELS[name]}: z draws for held-out images", plot_var_names=z_names,
            xlabel="z<d>: dim d of z ~ q(z | x, y), y ~ q(y | x)",
        )  # fmt: skip
        posterior[name] = {
            "summary_csv": prefix + "_summary.csv",
            "forest_png": prefix + "_posterior.png",
            "z_dims": z_dims,
            "q_true_class": draws["y_is_true"].mean((0, 1)).tolist(),
        }
    classes_png = os.path.join(args.out, "semi_supervised_vae_classes.png")
    save_class_posteriors(
        {
            n + (f", c={args.step_size:g}" if n.startswith("ils") else ""): y
            for n, y in class_draws.items()
        },
        shown_y, classes_png,
    )  # fmt: skip

    curves = os.path.join(args.out, "semi_supervised_vae_curves.png")
    generated = os.path.join(args.out, "semi_supervised_vae_generated.png")
    save_curves(results, curves)
    save_generated(models, generated, seed=args.seed)

    x_lab, _, x_unl = data[:3]
    print(
        f"\nM2 semi-supervised VAE on binarized digits: {len(x_lab)} labelled + {len(x_unl)} "
        f"unlabelled training images, {len(test_x)} held out; {args.num_steps} steps, "
        f"seed {args.seed}, {device}"
    )
    print(
        f"test ELBO: exact sum over y, {args.final_eval_samples} z draws per image and class; "
        f"log p(x): importance-sampled with the same draws (nats per image)"
    )
    header = ("estimator", "test acc", "test ELBO", "log p(x) IS", "active z", "ms/step")
    print("{:<36}  {:>8}  {:>9}  {:>11}  {:>8}  {:>7}".format(*header))
    for r in results:
        print(
            f"{r['description']:<36}  {r['test_accuracy']:>8.3f}  {r['test_elbo']:>9.2f}  "
            f"{r['test_log_px_is']:>11.2f}  {r['active_z_dims']:>4}/{args.z_dim:<3}  "
            f"{r['ms_per_step']:>7.1f}"
        )
    print(
        "active z: z dims with Var_x E_q[z | x, y_hat] > 0.01 on held-out images; "
        "ms/step: training time per SVI step, evaluations excluded"
    )
    path = os.path.join(args.out, "semi_supervised_vae.json")
    with open(path, "w") as f:
        json.dump(
            {
                "settings": vars(args),
                "data": {
                    "labelled": len(x_lab),
                    "unlabelled": len(x_unl),
                    "test": len(test_x),
                    "pixels": "binarized at 8/16, Bernoulli likelihood",
                },
                "evaluation": {
                    "test_accuracy": "argmax of the classifier q(y|x) on held-out images",
                    "test_elbo": "exact sum over y, z sampled "
                    "(final_eval_samples per image and class; eval_samples in history)",
                    "active_z_dims": "z dims with Var_x E_q[z] > 0.01 on held-out images",
                    "test_log_px_is": "importance-sampled log p(x), stratified over y",
                },
                **run_info(device),
                "results": results,
                "posterior": posterior,
            },
            f,
            indent=2,
        )
    print(f"results: {path}\nfigures: {curves}, {generated}, {classes_png}")
    print(f"ArviZ: {args.out}/semi_supervised_vae_<estimator>_summary.csv and _posterior.png")
    return results


if __name__ == "__main__":
    main()
