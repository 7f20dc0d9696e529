"""A discrete VAE on binarized handwritten digits, trained with ILS.

The guide is written with plain ``dist.Categorical`` and trained with
``TraceILS_ELBO`` (by default ``TraceILS_ELBO()``, which chooses per site: here the
site's 3 x 8 = 24 alternatives exceed its budget of 20, so it gets the second-order ILS
target in its small-step limit, ReinMax's estimator at the default's temperature 2, with
the analytic KL to the uniform prior; the run prints the choice); the model uses the
integer codes through ``F.one_hot``.
The latent space (``--latents`` x ``--categories``, 3 x 8 = 512 codes by
default) is small enough to compute the held-out ELBO exactly by enumeration,
so the result printed at the end is exact, not a sampled estimate.

With ``--compare`` the same model is also trained, under the same seed and steps,
with the original ILS method (``step_size=1.0, projection="euclidean"``, the
previous default), with the ILS family's exact-difference member
(``TraceILSDiff_ELBO`` at its defaults, ``mean_field=True``: the encoder's guide is
mean field), with ReinMax (the best single-evaluation peer of the estimator
benchmark on the small VAE; analytic KL through ``TraceMeanField_ELBO``,
temperature ``--reinmax-temperature``), with the score-function estimator
(``TraceGraph_ELBO``) and with the exact gradient (the negative ELBO summed over
every code, differentiated by autograd).

    python examples/categorical_vae.py                  # ILS only
    python examples/categorical_vae.py --compare        # and ILS-original, ILS-diff, ReinMax, ...

After training, the ILS-trained guide is summarized through ArviZ
(``examples/posterior_summary.py``): ``pyro.infer.Predictive`` draws codes
``z ~ q(z | x)`` for ``--posterior-images`` held-out images (``--posterior-samples``
draws each), and the table gives, per image, ``log_lik = log p(x | z)`` at those
draws (its mean is the reconstruction term of the ELBO) and, per image and latent,
``z_is_mode``, whose mean is the guide's probability of that latent's most
frequent code (a code's index has no order, so the codes themselves are kept in
the ``InferenceData`` but not averaged).

Outputs under ``--out``: ``categorical_vae.json`` (settings, exact ELBOs, training
curves), ``categorical_vae.png`` (held-out digits and their reconstructions),
``categorical_vae_summary.csv`` (the ArviZ table) and ``categorical_vae_posterior.png``
(ArviZ forest plot of ``log_lik``).

Data: scikit-learn's bundled ``load_digits`` (1,797 8x8 images), pixels
binarized at 8/16, split 80/20 into train and held-out sets.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F

# posterior_summary and run_info are helpers in this folder (a script's folder is on sys.path)
from posterior_summary import summarize_posterior
from pyro.infer import SVI, Predictive, TraceGraph_ELBO, TraceMeanField_ELBO
from run_info import run_info
from tqdm import tqdm

from pyro_ils import TraceILS_ELBO, TraceILSDiff_ELBO
from pyro_ils.estimators import ReinMaxCategorical


def load_binarized_digits(device, dtype=torch.float32, seed=0):
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().data, dtype=dtype) > 8
    images = images.to(dtype)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(images))
    return images[perm[:n_train]].to(device), images[perm[n_train:]].to(device)


class CategoricalVAE(nn.Module):
    def __init__(self, latents=3, categories=8, pixels=64, hidden=128, latent_dist=None):
        super().__init__()
        self.latents, self.categories = latents, categories
        #: the guide's distribution of the codes (``dist.Categorical`` by default)
        self.latent_dist = latent_dist or dist.Categorical
        self.encoder = nn.Sequential(
            nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, latents * categories)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latents * categories, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )

    def decode(self, z):
        onehot = F.one_hot(z, self.categories).to(self.decoder[0].weight.dtype)
        return self.decoder(onehot.flatten(-2))

    def model(self, x, num_data=None):
        pyro.module("vae", self)
        prior = torch.zeros(self.latents, self.categories, dtype=x.dtype, device=x.device)
        with pyro.plate(
            "data", num_data or len(x), subsample=torch.arange(len(x), device=x.device)
        ):
            z = pyro.sample("z", dist.Categorical(logits=prior).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decode(z)).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        pyro.module("vae", self)
        logits = self.encoder(x).reshape(len(x), self.latents, self.categories)
        with pyro.plate(
            "data", num_data or len(x), subsample=torch.arange(len(x), device=x.device)
        ):
            pyro.sample("z", self.latent_dist(logits=logits).to_event(1))

    def exact_elbo_per_image(self, x):
        """The ELBO of each image, summing over all categories**latents codes
        (differentiable: its gradient is the exact ELBO gradient)."""
        codes = torch.tensor(
            list(itertools.product(range(self.categories), repeat=self.latents)), device=x.device
        )
        log_px_z = dist.Bernoulli(logits=self.decode(codes)).log_prob(x[:, None, :]).sum(-1)
        log_q_all = torch.log_softmax(
            self.encoder(x).reshape(len(x), self.latents, self.categories), -1
        )
        log_q = sum(log_q_all[:, i, codes[:, i]] for i in range(self.latents))
        log_p = -self.latents * torch.log(torch.tensor(float(self.categories)))
        return (log_q.exp() * (log_px_z + log_p - log_q)).sum(-1)

    @torch.no_grad()
    def exact_elbo(self, x):
        """Mean ELBO per image, summing over all categories**latents codes."""
        return self.exact_elbo_per_image(x).mean().item()


def exact_loss(vae):
    """The negative ELBO summed over all codes, as an SVI loss: the exact gradient.

    (``TraceEnum_ELBO`` cannot enumerate the guide's one site here: a
    ``Categorical(...).to_event(1)`` has no enumerable support, and the image depends
    on all latents jointly.)"""

    def loss(model, guide, x, num_data=None):
        pyro.module("vae", vae)
        return -vae.exact_elbo_per_image(x).sum() * (num_data or len(x)) / len(x)

    return loss


def make_loss(name, args):
    if name == "ils":
        return TraceILS_ELBO(step_size=args.step_size, projection=args.projection)
    if name == "ils-original":
        return TraceILS_ELBO(step_size=1.0, projection="euclidean")
    if name == "ils-diff":
        return TraceILSDiff_ELBO(mean_field=True, max_plate_nesting=1)
    if name == "reinmax":
        return TraceMeanField_ELBO()
    if name == "reinforce":
        return TraceGraph_ELBO()
    raise ValueError(name)


def train(name, args, train_x, test_x, device):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    latent_dist = None
    if name == "reinmax":

        def latent_dist(logits):
            return ReinMaxCategorical(logits=logits, temperature=args.reinmax_temperature)

    vae = CategoricalVAE(args.latents, args.categories, latent_dist=latent_dist).to(device)
    loss = exact_loss(vae) if name == "exact" else make_loss(name, args)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": args.lr}), loss=loss)
    elbo = loss
    start = time.perf_counter()
    history = []
    bar = tqdm(range(args.num_steps), desc=f"{name:>9}", disable=args.no_progress)
    for step in bar:
        idx = torch.randint(len(train_x), (args.batch_size,), device=device)
        loss = svi.step(train_x[idx], num_data=len(train_x))
        if step % max(1, args.num_steps // 20) == 0 or step == args.num_steps - 1:
            test_elbo = vae.exact_elbo(test_x)
            history.append({"step": step, "test_elbo": test_elbo})
            bar.set_postfix(loss=f"{loss / len(train_x):.2f}", test_elbo=f"{test_elbo:.2f}")
    choices = {n: str(c) for n, c in getattr(elbo, "site_choices", {}).items()}
    if choices:
        print(f"{name}: {choices}")
    return {
        "estimator": name,
        "site_choices": choices,
        "train_elbo_exact": vae.exact_elbo(train_x),
        "test_elbo_exact": vae.exact_elbo(test_x),
        "seconds": time.perf_counter() - start,
        "history": history,
    }, vae


def save_figure(vae, test_x, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        x = test_x[:10]
        z = vae.encoder(x).reshape(len(x), vae.latents, vae.categories).argmax(-1)
        recon = torch.sigmoid(vae.decode(z))
    fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
    for i in range(10):
        axes[0, i].imshow(x[i].reshape(8, 8).cpu(), cmap="gray_r")
        axes[1, i].imshow(recon[i].reshape(8, 8).cpu(), cmap="gray_r")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("data")
    axes[1, 0].set_ylabel("ILS")
    fig.suptitle("Held-out digits and their reconstructions from the most likely code")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def posterior_summary(vae, x, num_samples, seed, out_prefix, num_chains=4):
    """ArviZ summary of guide draws for a few held-out images (``Predictive``).

    ``z`` holds the drawn codes (in the ``InferenceData``, not in the table: a code's
    index has no order, so its mean means nothing). Summarized instead, per image:
    ``log_lik`` = ``log p(x | z)`` at each drawn code (its posterior mean is the
    reconstruction term of the ELBO), and per image and latent ``z_is_mode`` = 1 where
    the draw is that latent's most frequent code (its mean is the guide's probability
    of that code: near 1 for a confident encoder). The independent draws are split
    into ``num_chains`` blocks, so r_hat and ESS are sanity checks, not MCMC diagnostics.
    """
    pyro.set_rng_seed(seed)
    predictive = Predictive(
        vae.model, guide=vae.guide, num_samples=num_samples, return_sites=["z"], parallel=True
    )  # parallel: one vectorized pass over the draws
    with torch.no_grad():
        z = predictive(x)["z"]  # (num_samples, images, latents)
        log_lik = dist.Bernoulli(logits=vae.decode(z)).log_prob(x).sum(-1)
    n = (num_samples // num_chains) * num_chains

    def chains(t):
        return t[:n].detach().cpu().reshape(num_chains, -1, *t.shape[1:])

    draws = {
        "z": chains(z),
        "log_lik": chains(log_lik),
        "z_is_mode": chains((z == z.mode(0).values).double()),
    }
    idata = summarize_posterior(
        draws, out_prefix, ["log_lik", "z_is_mode"], chain_dim=True,
        title="ILS-trained guide: draws for held-out images", plot_var_names=["log_lik"],
        xlabel="log p(x | z) at guide draws z ~ q(z | x)  (nats per image)",
    )  # fmt: skip
    return idata, draws


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cuda", action="store_true", help="run on the GPU")
    parser.add_argument("--latents", type=int, default=3)
    parser.add_argument("--categories", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--step-size", type=float, default=None,
        help="ILS step for every site (default: TraceILS_ELBO()'s per-site choice)",
    )  # fmt: skip
    parser.add_argument(
        "--projection", default=None,
        help="ILS target for every site (default: TraceILS_ELBO()'s per-site choice)",
    )  # fmt: skip
    parser.add_argument(
        "--compare", action="store_true", help="also ILS-diff, ReinMax, REINFORCE and exact"
    )
    parser.add_argument(
        "--reinmax-temperature", type=float, default=1.3,
        help="ReinMax's temperature (1.3: the estimator benchmark's tuned value on its small VAE)",
    )  # fmt: skip
    parser.add_argument("--posterior-images", type=int, default=6,
                        help="held-out images in the ArviZ summary")  # fmt: skip
    parser.add_argument("--posterior-samples", type=int, default=400,
                        help="Predictive draws per image for the ArviZ summary")  # fmt: skip
    parser.add_argument("--out", default="results", help="folder for the JSON and PNG")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda was given but CUDA is not available on this machine")
    if not 1 <= args.posterior_images <= 300 or args.posterior_samples < 4:
        parser.error("--posterior-images must be in 1..300 and --posterior-samples at least 4")
    device = torch.device("cuda" if args.cuda else "cpu")

    train_x, test_x = load_binarized_digits(device)
    names = ["ils", "ils-original", "ils-diff", "reinmax", "reinforce", "exact"]
    names = names if args.compare else ["ils"]
    results = []
    for name in names:
        result, vae = train(name, args, train_x, test_x, device)
        results.append(result)
        if name == "ils":
            ils_vae = vae
            os.makedirs(args.out, exist_ok=True)
            save_figure(vae, test_x, os.path.join(args.out, "categorical_vae.png"))

    # ArviZ summary of the ILS-trained guide (examples/posterior_summary.py)
    shown = test_x[: args.posterior_images]
    prefix = os.path.join(args.out, "categorical_vae")
    print(
        f"\nArviZ summary of the ILS-trained guide: {args.posterior_samples} draws "
        f"z ~ q(z | x) (Predictive, 4 blocks as chains) for held-out images "
        f"0..{len(shown) - 1}; log_lik = log p(x | z) in nats, z_is_mode = 1 where a "
        f"latent's draw is its most frequent code"
    )
    _, draws = posterior_summary(ils_vae, shown, args.posterior_samples, args.seed, prefix)
    posterior = {
        "summary_csv": prefix + "_summary.csv",
        "forest_png": prefix + "_posterior.png",
        "mean_log_lik": draws["log_lik"].mean((0, 1)).tolist(),
        "q_modal_code": draws["z_is_mode"].mean((0, 1)).tolist(),
    }

    print(
        f"\nCategorical VAE, {args.latents} latents x {args.categories} categories, "
        f"{args.num_steps} steps, batch {args.batch_size}, seed {args.seed}, {device}"
    )
    header = ("estimator", "train ELBO", "test ELBO", "seconds")
    print("{:>10}  {:>10}  {:>10}  {:>8}   (exact, nats per image)".format(*header))
    for r in results:
        print(
            f"{r['estimator']:>10}  {r['train_elbo_exact']:>10.2f}  "
            f"{r['test_elbo_exact']:>10.2f}  {r['seconds']:>8.1f}"
        )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "categorical_vae.json")
    with open(path, "w") as f:
        json.dump(
            {
                "settings": vars(args),
                **run_info(device),
                "results": results,
                "posterior": posterior,
            },
            f,
            indent=2,
        )
    print(f"results: {path}, figure: {os.path.join(args.out, 'categorical_vae.png')}")
    print(f"ArviZ: {posterior['summary_csv']}, {posterior['forest_png']}")
    return results


if __name__ == "__main__":
    main()
