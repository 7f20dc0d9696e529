"""One rank of the two-process tests (run by ``test_distributed.py`` as a subprocess).

    python tests/distributed/ddp_worker.py MODE RANK WORLD PORT OUT [BACKEND]

MODE ``elbos``: for every ELBO of :func:`ddp_cases.elbos`, the gradient check (two ranks
on two half-batches against one process on the full batch, same draws), then training
with the DistributedSampler pattern; ``resume``: checkpoint and resume against the
uninterrupted run; ``kill``: rank 1 dies in the middle of training. Each rank writes
what it measured to ``OUT/rank{RANK}.pt``.
"""

from __future__ import annotations

import os
import sys
import time

import pyro
import torch
import torch.distributed as tdist
from ddp_cases import N, build, data, elbos, flat_grads, flat_params, init_process_group
from pyro.infer.elbo import ELBOModule
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pyro_ils.distributed import (
    DistributedELBOModule,
    load_checkpoint,
    save_checkpoint,
    seed_rank,
)

DRAW_SEED = 100  # the draws of the gradient check: the same on both ranks


def gathered(t: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(tdist.get_world_size())]
    tdist.all_gather(out, t)
    return [o.cpu() for o in out]


def loader(rank: int, world: int, batch_size: int = 4) -> DataLoader:
    """Pyro's pattern: each rank gets its own minibatch indices from a
    DistributedSampler; the plate gets the full size N and ``subsample=idx``."""
    sampler = DistributedSampler(
        TensorDataset(torch.arange(N)), num_replicas=world, rank=rank, shuffle=True, seed=0
    )
    return DataLoader(TensorDataset(torch.arange(N)), batch_size=batch_size, sampler=sampler)


def batches(rank: int, world: int, start: int, stop: int, device):
    """The minibatches of steps ``start .. stop - 1`` (epochs replayed deterministically)."""
    data_loader, step, epoch = loader(rank, world), 0, 0
    while True:
        data_loader.sampler.set_epoch(epoch)
        for (idx,) in data_loader:
            if step >= stop:
                return
            if step >= start:
                yield step, idx.to(device)
            step += 1
        epoch += 1


def gradient_check(name, rank, world, x, device) -> dict:
    model, guide, elbo = build(name, device=device)
    module = DistributedELBOModule(model, guide, elbo)
    ddp = DDP(module)
    half = (torch.arange(N, device=device) % world) == rank
    idx = torch.arange(N, device=device)
    pyro.set_rng_seed(DRAW_SEED)
    ddp(x, idx, mask=half, scale=float(world)).backward()
    averaged = flat_grads(module)
    # one process, the full batch, the same draws (same seed, same shapes)
    model, guide, elbo = build(name, device=device)
    single = DistributedELBOModule(model, guide, elbo)
    pyro.set_rng_seed(DRAW_SEED)
    single(x, idx).backward()
    full = flat_grads(single)
    return {
        "grad_ddp": averaged.cpu(),
        "grad_single": full.cpu(),
        "grad_ranks": gathered(averaged),
    }


def train(name, rank, world, x, device, steps: int = 4) -> dict:
    model, guide, elbo = build(name, device=device)
    module = DistributedELBOModule(model, guide, elbo)
    init = flat_params(module)
    init_ranks = gathered(init)
    ddp = DDP(module)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    seed_rank(0)
    draws = gathered(torch.rand(3, device=device))
    losses, synced = [], []
    for _, idx in batches(rank, world, 0, steps, device):
        optimizer.zero_grad()
        loss = ddp(x[idx], idx)
        loss.backward()
        optimizer.step()
        synced = module.sync_state()
        losses.append(loss.item())
    return {
        "init_ranks": init_ranks,
        "draws_ranks": draws,
        "final_ranks": gathered(flat_params(module)),
        "init": init.cpu(),
        "losses": losses,
        "synced": synced,
        "state_ranks": [gathered(t.detach().reshape(-1)) for t in _state(elbo)],
    }


def _state(elbo):
    from pyro_ils.distributed import _state_tensors

    return [t for _, t in _state_tensors(elbo)]


def plain_elbo_module_fails(rank, world, x, device) -> str:
    """Pyro's own ELBOModule leaves ``unused`` without a gradient: DDP's error."""
    model, guide, elbo = build("TraceILS_ELBO", device=device)
    ddp = DDP(ELBOModule(model, guide, elbo))
    try:
        for _, idx in batches(rank, world, 0, 3, device):
            ddp(x[idx], idx).backward()
    except RuntimeError as error:
        return str(error)
    return ""


def run_elbos(rank, world, device) -> dict:
    x = data().to(device)
    out = {}
    for name in elbos():
        start = time.perf_counter()
        out[name] = {**gradient_check(name, rank, world, x, device)}
        out[name].update(train(name, rank, world, x, device))
        out[name]["seconds"] = time.perf_counter() - start
    out["plain_error"] = plain_elbo_module_fails(rank, world, x, device)
    return out


def resumed_run(name, rank, world, x, device, path, stop_at, steps) -> torch.Tensor:
    """Train ``steps`` steps; with ``stop_at``, save a checkpoint there, rebuild
    everything from another seed and continue from the checkpoint."""
    model, guide, elbo = build(name, device=device)
    module = DistributedELBOModule(model, guide, elbo)
    ddp = DDP(module)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    seed_rank(0)
    for step, idx in batches(rank, world, 0, steps, device):
        if step == stop_at:
            save_checkpoint(path, module, optimizer, step=step)
            model, guide, elbo = build(name, seed=7, device=device)  # other parameters
            module = DistributedELBOModule(model, guide, elbo)
            module(x[idx], idx)  # the state that is created at the first step
            ddp = DDP(module)
            optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
            pyro.set_rng_seed(99)  # other generators
            tdist.barrier()
            assert load_checkpoint(path, module, optimizer)["step"] == step
        optimizer.zero_grad()
        ddp(x[idx], idx).backward()
        optimizer.step()
        module.sync_state()
    return flat_params(module).cpu()


def run_resume(rank, world, device, out_dir) -> dict:
    x = data().to(device)
    out = {}
    for name in ("TraceGraphILS_ELBO", "TraceRELAX_ELBO", "TraceILS_ELBO"):
        path = os.path.join(out_dir, f"{name}.ckpt")
        whole = resumed_run(name, rank, world, x, device, path, None, 6)
        resumed = resumed_run(name, rank, world, x, device, path, 3, 6)
        out[name] = {"whole": whole, "resumed": resumed}
    return out


def run_kill(rank, world, device, out_dir) -> dict:
    x = data().to(device)
    model, guide, elbo = build("TraceILS_ELBO", device=device)
    module = DistributedELBOModule(model, guide, elbo)
    ddp = DDP(module)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    seed_rank(0)
    path = os.path.join(out_dir, "last.ckpt")
    for step, idx in batches(rank, world, 0, 1000, device):
        if rank == 1 and step == 3:
            print("rank 1: dying at step 3", flush=True)
            os._exit(17)  # no clean-up, as a killed process
        optimizer.zero_grad()
        ddp(x[idx], idx).backward()
        optimizer.step()
        save_checkpoint(path, module, optimizer, step=step)
        print(f"rank {rank}: step {step} saved", flush=True)
    return {}


def main() -> None:
    mode, rank, world, port, out_dir = sys.argv[1:6]
    backend = sys.argv[6] if len(sys.argv) > 6 else "gloo"
    rank, world = int(rank), int(world)
    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    init_process_group(rank, world, int(port), backend, timeout=30 if mode == "kill" else 120)
    runs = {"elbos": run_elbos, "resume": run_resume, "kill": run_kill}
    args = (rank, world, device) if mode == "elbos" else (rank, world, device, out_dir)
    result = runs[mode](*args)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    tdist.destroy_process_group()


if __name__ == "__main__":
    main()
