"""Every ELBO of :func:`ddp_cases.elbos` through ``lightning.pytorch.Trainer(strategy="ddp",
devices=2, accelerator="cpu")``, a few steps each (run by ``test_distributed.py``).

    python tests/distributed/lightning_worker.py OUT [NAME ...]

Lightning starts the second rank by running this script again; each rank writes the
parameters before and after each fit to ``OUT/NAME.rank{RANK}.pt``.
"""

from __future__ import annotations

import os
import sys

import lightning.pytorch as pl
import pyro
import torch
import torch.distributed as tdist
from ddp_cases import N, build, data, elbos, flat_params
from torch.utils.data import DataLoader, TensorDataset

from pyro_ils.distributed import DistributedELBOModule
from pyro_ils.lightning import ELBOLightningModule


def main() -> None:
    out_dir, names = sys.argv[1], sys.argv[2:] or list(elbos())
    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    x = data()
    # Lightning replaces the shuffling sampler by a DistributedSampler
    loader = DataLoader(TensorDataset(x, torch.arange(N)), batch_size=4, shuffle=True)
    for name in names:
        model, guide, elbo = build(name)
        module = ELBOLightningModule(DistributedELBOModule(model, guide, elbo), lr=0.05)
        init = flat_params(module)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=2,
            strategy="ddp",
            max_steps=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, train_dataloaders=loader)
        result = {"init": init, "final": flat_params(module), "world": trainer.world_size}
        torch.save(result, os.path.join(out_dir, f"{name}.rank{trainer.global_rank}.pt"))
    # Lightning leaves its process group up after ``fit``. Once in CI a rank aborted at
    # interpreter exit ("terminate called without an active exception": a C++ thread
    # still joinable when its destructor ran). So: wait until both ranks have saved,
    # tear the group down, and leave without running the interpreter's exit handlers.
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
