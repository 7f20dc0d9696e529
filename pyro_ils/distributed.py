r"""Training with the plugin's ELBOs on several processes (PyTorch DDP, Lightning).

Pyro's pattern for data-parallel training is an ``ELBOModule``: with
``pyro.settings.set(module_local_params=True)``, ``elbo(model, guide)`` is a
``torch.nn.Module`` whose ``forward`` returns ``elbo.differentiable_loss(model, guide,
...)``; it is wrapped in ``DistributedDataParallel`` (or handed to
``lightning.pytorch.Trainer(strategy="ddp")``) and trained by a ``torch.optim``
optimizer. Every ELBO of this package has ``differentiable_loss``, whose gradient is
the one ``loss_and_grads`` computes. DDP averages that gradient over the ranks, so
with ``R`` ranks each drawing its own minibatch of ``B`` data points out of ``N``
(``pyro.plate("data", N, subsample=idx)``: each rank's loss is scaled by ``N / B``),
the step follows the mean of ``R`` independent estimates of the full-data gradient.

What this module adds to that pattern:

* :func:`~pyro_ils.seed_rank`: a documented per-rank seed, so that ranks draw different
  samples while the parameters, built before it, are identical;
* :class:`~pyro_ils.DistributedELBOModule`: an ``ELBOModule`` whose loss also reaches every
  parameter (with a zero weight), so that DDP needs no ``find_unused_parameters=True``
  when a step leaves some parameter without a gradient, and whose
  :meth:`~pyro_ils.DistributedELBOModule.sync_state` averages the state that an ELBO keeps
  outside the gradient (:func:`~pyro_ils.sync_elbo_state`);
* :func:`~pyro_ils.save_checkpoint` and :func:`~pyro_ils.load_checkpoint`: the module,
  the optimizer, that state and every rank's random number generators, written
  atomically by rank 0.

``docs/distributed.md`` has the whole pattern, its pitfalls and a measured run.

References:
    * Li et al. (2020), "PyTorch Distributed: Experiences on Accelerating Data
      Parallel Training", VLDB.
    * Pyro's ``examples/svi_lightning.py`` (``ELBOModule`` under Lightning).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro.infer.elbo import ELBOModule
from torch import Tensor

__all__ = [
    "BASELINE_PREFIX",
    "DistributedELBOModule",
    "elbo_state",
    "load_checkpoint",
    "load_elbo_state",
    "rank_and_world_size",
    "save_checkpoint",
    "seed_rank",
    "sync_elbo_state",
]

#: The prefix of the param-store entries in which ``TraceGraph_ELBO`` (and so
#: :class:`~pyro_ils.TraceGraphILS_ELBO`) keeps its decaying-average baselines.
BASELINE_PREFIX = "__baseline_avg_downstream_cost_"


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world size)`` of this process: from ``torch.distributed`` once it is
    initialized, else from the ``RANK`` and ``WORLD_SIZE`` environment variables
    (set by ``torchrun`` and Lightning), else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def seed_rank(seed: int, rank: int | None = None) -> int:
    r"""Seed Pyro, torch, ``random`` and NumPy with ``seed + rank`` and return it.

    Call ``pyro.set_rng_seed(seed)`` first and build the model, the guide and their
    parameters (identical on every rank), then ``seed_rank(seed)`` before the first
    step: each rank then draws its own latent samples (and its own ``subsample_size``
    subsamples, where a plate draws them), and the run is reproducible given
    ``seed`` and the number of ranks. Without it, ranks seeded alike draw the same
    samples for their different minibatches: the estimate is still unbiased, but
    the draws of a step are correlated across ranks.

    :param int seed: the run's seed, the same on every rank.
    :param int rank: this process's rank (default: the rank that
        :func:`~pyro_ils.distributed.rank_and_world_size` finds).
    :returns: the seed used, ``seed + rank``.
    """
    if rank is None:
        rank = rank_and_world_size()[0]
    pyro.set_rng_seed(seed + rank)
    return seed + rank


def _state_tensors(elbo: pyro.infer.elbo.ELBO | None) -> Iterator[tuple[str, Tensor]]:
    """The tensors that an ELBO keeps outside the gradient, by name: the decaying-average
    baselines in Pyro's param store and the ELBO's ``tuned_parameters()`` (REBAR's
    :math:`\\eta` and :math:`\\log\\lambda`, RELAX's control variate)."""
    store = pyro.get_param_store()
    for name in sorted(store.keys()):
        if name.startswith(BASELINE_PREFIX):
            yield name, store.get_param(name)
    tuned = getattr(elbo, "tuned_parameters", None)
    if tuned is not None:
        for i, tensor in enumerate(tuned()):
            yield f"tuned.{i}", tensor


def elbo_state(elbo: pyro.infer.elbo.ELBO | None = None) -> dict[str, Tensor]:
    """A copy of the state that ``elbo`` keeps outside the gradient (see
    :func:`~pyro_ils.sync_elbo_state`), for a checkpoint."""
    return {name: t.detach().clone() for name, t in _state_tensors(elbo)}


def load_elbo_state(
    elbo: pyro.infer.elbo.ELBO | None, state: dict[str, Tensor], strict: bool = True
) -> None:
    """Put back what :func:`~pyro_ils.distributed.elbo_state` returned. Baselines are
    restored into the param store; the ELBO's tuned tensors (REBAR, RELAX) are created
    at its first step, so they are restored only after one (``KeyError`` before, or
    skipped with ``strict=False``)."""
    store = pyro.get_param_store()
    tuned = dict(_state_tensors(elbo))
    for name, value in state.items():
        if name.startswith(BASELINE_PREFIX):
            store[name] = value.clone()
        elif name in tuned:
            with torch.no_grad():
                tuned[name].copy_(value)
        elif strict:
            raise KeyError(f"{name!r}: the ELBO has no such state yet (run one step first)")


def sync_elbo_state(elbo: pyro.infer.elbo.ELBO | None = None, group: Any = None) -> list[str]:
    r"""Average over the ranks the state that ``elbo`` keeps outside the gradient.

    Call it on every rank after each optimizer step (a collective; nothing happens
    without an initialized process group). The state is

    * the decaying-average baselines of :class:`~pyro_ils.TraceGraphILS_ELBO`
      (``infer={"baseline": {"use_decaying_avg_baseline": True}}``), kept in Pyro's
      param store. Each rank updates its own :math:`b \leftarrow \beta b + (1 - \beta)
      c_r` from its own cost :math:`c_r`; the update is linear, so averaging after each
      step makes every rank's :math:`b` the decaying average of the ranks' mean cost.
      Without it, each rank's baseline is still a function of past draws only, so each
      rank's estimate, and their mean, stays unbiased; the averaging makes the state
      identical across ranks, so that rank 0's checkpoint holds all of it;
    * ``elbo.tuned_parameters()`` where the ELBO has them (REBAR's :math:`\eta` and
      temperature, RELAX's control-variate network). Under an ``ELBOModule`` they are
      not tuned (only ``loss_and_grads`` tunes them), so they keep their initial
      values; RELAX's default network is built at the first step from the random
      generator, which :func:`~pyro_ils.seed_rank` makes differ across ranks: averaging it after
      the first step gives all ranks one control variate. (A control variate that
      differs across ranks would still leave every rank's estimate unbiased.)

    Learned baselines (``nn_baseline``) and all other trained tensors are parameters of
    the model or the guide: DDP averages their gradients, nothing else is needed.

    :param elbo: the ELBO (``None``: the param-store baselines only).
    :param group: the process group (default: the world).
    :returns: the names of the averaged tensors.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return []
    tensors = list(_state_tensors(elbo))
    world = dist.get_world_size(group)
    store = pyro.get_param_store()
    with torch.no_grad():
        for name, tensor in tensors:
            buffer = tensor.detach().clone()
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
            if name.startswith(BASELINE_PREFIX):
                store[name] = buffer / world
            else:
                tensor.copy_(buffer / world)
    return [name for name, _ in tensors]


def _touch(parameters: Iterator[Tensor]) -> Tensor | float:
    """A zero that depends on every parameter that requires grad (an empty slice of
    each: its gradient is zero, and stays zero where a parameter holds inf or nan)."""
    out: Tensor | float = 0.0
    for p in parameters:
        if p.requires_grad:
            out = out + p.reshape(-1)[:0].sum()
    return out


class DistributedELBOModule(ELBOModule):
    """Pyro's ``ELBOModule`` (``elbo(model, guide)``) for ``DistributedDataParallel``.

    ``forward(*args, **kwargs)`` returns ``elbo.differentiable_loss(model, guide, *args,
    **kwargs)``; with ``touch_all_parameters`` (default) it also adds a zero that
    depends on every parameter of the model and the guide. DDP (with its default
    ``find_unused_parameters=False``) needs a gradient for every parameter at every
    step; a step in which a parameter is not used (a discrete branch that no draw
    took, an expert that no data point chose, a baseline network of a site left to
    another estimator) would otherwise fail with "Expected to have finished reduction
    in the prior iteration". Such a parameter then gets a zero gradient instead of
    none: SGD leaves it in place, but Adam's moments keep moving it. Where that
    matters, pass ``touch_all_parameters=False`` and wrap with
    ``DistributedDataParallel(..., find_unused_parameters=True)``, which leaves the
    gradient of a parameter unused on every rank at ``None`` (at the cost of a walk
    over the autograd graph at every step).

    Example::

        pyro.settings.set(module_local_params=True)
        pyro.set_rng_seed(0)
        module = DistributedELBOModule(model, guide, TraceILS_ELBO())
        module(first_batch)  # builds lazily created parameters
        ddp = torch.nn.parallel.DistributedDataParallel(module)
        seed_rank(0)
        for batch in loader:
            optimizer.zero_grad()
            ddp(batch).backward()
            optimizer.step()
            module.sync_state()

    :param model: the model, a ``torch.nn.Module`` (a ``PyroModule``).
    :param guide: the guide, a ``torch.nn.Module``.
    :param elbo: any ELBO with ``differentiable_loss`` (all of this package's).
    :param bool touch_all_parameters: add the zero that reaches every parameter.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        guide: torch.nn.Module,
        elbo: pyro.infer.elbo.ELBO,
        touch_all_parameters: bool = True,
    ) -> None:
        super().__init__(model, guide, elbo)
        self.touch_all_parameters = bool(touch_all_parameters)

    def forward(self, *args, **kwargs) -> Tensor:
        loss = super().forward(*args, **kwargs)
        if self.touch_all_parameters:
            loss = loss + _touch(self.parameters())
        return loss

    def sync_state(self, group: Any = None) -> list[str]:
        """:func:`~pyro_ils.sync_elbo_state` of this module's ELBO."""
        return sync_elbo_state(self.elbo, group)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "random": random.getstate()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(
    path: str,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    elbo: pyro.infer.elbo.ELBO | None = None,
    **extra: Any,
) -> None:
    """Save a checkpoint on rank 0; call it on every rank (it gathers their generators).

    The file holds ``module.state_dict()`` (the model and guide of an ``ELBOModule``;
    pass the module, not its DDP wrapper), the optimizer's state, the state kept
    outside the gradient (:func:`~pyro_ils.distributed.elbo_state`; ``elbo`` defaults to
    ``module.elbo``), the random generators of every rank, the world size and ``extra`` (e.g.
    ``step=step``). It is written to a temporary file and renamed, so a process killed
    while saving leaves the previous checkpoint whole.

    :param path: the file to write.
    :param module: the module whose ``state_dict`` to save.
    :param optimizer: the optimizer (optional).
    :param elbo: the ELBO whose state to save (default ``module.elbo`` if any).
    :param extra: more picklable entries.
    """
    if elbo is None:
        elbo = getattr(module, "elbo", None)
    rank, world = rank_and_world_size()
    rng = [_rng_state()]
    if dist.is_available() and dist.is_initialized():
        rng = [None] * world
        dist.all_gather_object(rng, _rng_state())
    if rank != 0:
        return
    state = {
        "module": module.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "elbo_state": elbo_state(elbo),
        "rng": rng,
        "world_size": world,
        "extra": extra,
    }
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: str,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    elbo: pyro.infer.elbo.ELBO | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load what :func:`~pyro_ils.save_checkpoint` wrote, on every rank, and return its ``extra``.

    Restores the module, the optimizer, the ELBO's state and (with ``restore_rng``)
    this rank's random generators, so that the resumed run continues the interrupted
    one exactly. The generators need the same number of ranks as the saved run
    (``ValueError`` otherwise; pass ``restore_rng=False`` and call :func:`~pyro_ils.seed_rank`
    with a new seed to resume on another number).
    """
    if elbo is None:
        elbo = getattr(module, "elbo", None)
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
    module.load_state_dict(state["module"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    load_elbo_state(elbo, state["elbo_state"])
    if restore_rng:
        rank, world = rank_and_world_size()
        if world != state["world_size"]:
            raise ValueError(
                f"the checkpoint holds the generators of {state['world_size']} ranks, this run "
                f"has {world}; pass restore_rng=False (and seed_rank a new seed) to resume"
            )
        _set_rng_state(state["rng"][rank])
    return state["extra"]
