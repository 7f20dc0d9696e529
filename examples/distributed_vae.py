"""The categorical VAE trained on several processes or devices with Lightning.

The model, the guide and the data are those of ``examples/categorical_vae.py`` (3
latents x 8 categories, binarized 8x8 digits), trained with the plugin's default
``TraceILS_ELBO()`` as Pyro's ``ELBOModule`` (``pyro.settings.set(module_local_params=
True)``) by ``lightning.pytorch.Trainer``: with ``--strategy ddp --devices N`` each of
the N ranks draws its own minibatch (Lightning adds a ``DistributedSampler``) and its
own latent samples (``pyro_ils.seed_rank``), the plate is given the full data size so
that each rank's loss estimates the whole data set's, and DDP averages the gradients.
Lightning writes a checkpoint (``--out``/last.ckpt; ``--resume`` continues from one),
and rank 0 prints the held-out ELBO, computed exactly by enumerating the 512 codes.

    python examples/distributed_vae.py --devices 2 --accelerator cpu --strategy ddp
    python examples/distributed_vae.py --devices 1 --accelerator gpu --max-steps 3000

Needs the ``distributed`` extra (``pip install -e ".[distributed,examples]"``).
``docs/distributed.md`` explains the pattern and has a measured run.
"""

from __future__ import annotations

import argparse
import os
import time

import lightning.pytorch as pl
import pyro
import torch
from categorical_vae import CategoricalVAE, load_binarized_digits
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyro_ils import DistributedELBOModule, TraceILS_ELBO
from pyro_ils.lightning import ELBOLightningModule


class Method(nn.Module):
    """``vae.model`` or ``vae.guide`` as a module, as ``ELBOModule`` wants them."""

    def __init__(self, vae: CategoricalVAE, name: str) -> None:
        super().__init__()
        self.vae, self.name = vae, name

    def forward(self, *args, **kwargs):
        return getattr(self.vae, self.name)(*args, **kwargs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu", "auto"])
    parser.add_argument("--devices", type=int, default=2, help="processes (CPU) or GPUs")
    parser.add_argument("--strategy", default="ddp", help='"ddp", "ddp_spawn" or "auto"')
    parser.add_argument("--max-steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--out", default="results/distributed_vae", help="checkpoint folder")
    parser.add_argument("--resume", default=None, help="a checkpoint to continue from")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(args.seed)  # the same parameters on every rank
    train_x, test_x = load_binarized_digits("cpu")
    vae = CategoricalVAE()
    elbo_module = DistributedELBOModule(Method(vae, "model"), Method(vae, "guide"), TraceILS_ELBO())
    module = ELBOLightningModule(
        elbo_module, lr=args.lr, seed=args.seed, loss_kwargs={"num_data": len(train_x)}
    )
    loader = DataLoader(
        TensorDataset(train_x), batch_size=args.batch_size, shuffle=True, drop_last=True
    )
    checkpoint = ModelCheckpoint(dirpath=args.out, save_last=True)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        max_steps=args.max_steps,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=not args.no_progress,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=args.resume)
    seconds = time.perf_counter() - start
    if trainer.is_global_zero:
        vae.to("cpu")
        print(f"site choices: { {n: str(c) for n, c in elbo_module.elbo.site_choices.items()} }")
        print(
            f"{trainer.global_step} steps of batch {args.batch_size} on {trainer.world_size} "
            f"{args.accelerator} rank(s), {args.threads} thread(s) each: {seconds:.1f} s"
        )
        print(f"held-out ELBO (exact): {vae.exact_elbo(test_x):.2f} nats per image")
        print(f"checkpoint: {os.path.join(args.out, 'last.ckpt')}")


if __name__ == "__main__":
    main()
