"""A Lightning module that trains a :class:`~pyro_ils.distributed.DistributedELBOModule`.

Needs the ``distributed`` extra (``pip install "pyro-ils[distributed]"``, that is
``lightning``); importing this module without it raises ``ImportError``. It is
Pyro's ``examples/svi_lightning.py`` pattern with what several ranks need: the
per-rank seed (:func:`~pyro_ils.distributed.seed_rank`) when training starts, the
state kept outside the gradient averaged after every optimizer step
(:func:`~pyro_ils.distributed.sync_elbo_state`) and saved in Lightning's checkpoints.

Example (``examples/distributed_vae.py`` is the whole program)::

    pyro.settings.set(module_local_params=True)
    module = ELBOLightningModule(DistributedELBOModule(model, guide, TraceILS_ELBO()))
    trainer = lightning.pytorch.Trainer(accelerator="cpu", devices=2, strategy="ddp")
    trainer.fit(module, train_dataloaders=loader)  # a DistributedSampler is added

References:
    * Pyro's ``examples/svi_lightning.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule

from pyro_ils.distributed import DistributedELBOModule, elbo_state, load_elbo_state, seed_rank

__all__ = ["ELBOLightningModule"]


class ELBOLightningModule(LightningModule):
    """Train ``elbo_module`` with a ``torch.optim`` optimizer under any Lightning strategy.

    Each training batch (a tuple of tensors, as a ``TensorDataset`` yields) is passed
    as the positional arguments of the model and the guide, with ``loss_kwargs`` as
    keyword arguments (e.g. ``num_data=N`` for a plate of the full size, so that each
    rank's minibatch is scaled to the whole data set). The logged ``loss`` is the
    rank's negative ELBO estimate.

    :param elbo_module: the model, the guide and the ELBO.
    :param float lr: the learning rate.
    :param int seed: passed to :func:`~pyro_ils.distributed.seed_rank` when training
        starts (``None``: leave the generators alone).
    :param optimizer: the ``torch.optim`` class (default ``Adam``).
    :param loss_kwargs: keyword arguments of every step.
    """

    def __init__(
        self,
        elbo_module: DistributedELBOModule,
        lr: float = 1e-3,
        seed: int | None = 0,
        optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
        loss_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.elbo_module = elbo_module
        self.lr, self.seed, self.optimizer_class = lr, seed, optimizer
        self.loss_kwargs = dict(loss_kwargs or {})

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.elbo_module(*batch, **self.loss_kwargs)
        self.log("loss", loss.detach(), prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        if self.seed is not None:
            seed_rank(self.seed, self.global_rank)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.elbo_module.sync_state()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_class(self.elbo_module.parameters(), lr=self.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pyro_ils_elbo_state"] = elbo_state(self.elbo_module.elbo)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("pyro_ils_elbo_state", {})
        load_elbo_state(self.elbo_module.elbo, state, strict=False)
