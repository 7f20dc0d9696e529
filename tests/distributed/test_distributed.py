"""Every exported ELBO under PyTorch DDP (two CPU processes, gloo) and Lightning.

The two-process runs are subprocesses (``ddp_worker.py``, ``lightning_worker.py``)
on a free port, each with a timeout, so that a hang fails the test instead of
blocking it. One run covers every ELBO (the start of a process costs more than the
steps); the tests below read what each rank measured:

* **gradient**: two ranks, each on half of the batch (the other half masked out and
  its own half scaled by 2, as a subsampled plate scales it), with the same draws
  (the same seed on both ranks and in the single process; the draws are made for the
  whole batch, so they coincide), average to the single-process gradient on the full
  batch. Masking rather than replaying keeps each estimator's own path (a replayed
  draw would be plain data, scored by the score function);
* **training** with the DistributedSampler pattern: the parameters are identical on
  both ranks before and after the steps and have moved; the draws after
  :func:`~pyro_ils.distributed.seed_rank` differ between the ranks; the state kept
  outside the gradient is identical after :meth:`sync_state`;
* Pyro's plain ``ELBOModule`` fails under DDP when a parameter gets no gradient,
  :class:`~pyro_ils.distributed.DistributedELBOModule` does not;
* **checkpoint and resume** reproduce the uninterrupted run exactly;
* **a rank killed mid-run** makes the other fail within the timeout, and the last
  checkpoint loads.

Under Lightning (``lightning_worker.py``, ``Trainer(strategy="ddp", devices=2,
accelerator="cpu")``) every ELBO trains and keeps the ranks identical, and
``examples/distributed_vae.py`` runs on two CPU processes. These need the
``distributed`` extra (``lightning``): skipped without it, an error under CI.

NCCL variants run the same worker on two GPUs where present (marked ``cuda``).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pyro
import pytest
import torch
from ddp_cases import build, data, elbos, flat_grads, flat_params

from pyro_ils.distributed import DistributedELBOModule, load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORLD = 2
NAMES = list(elbos())


@pytest.fixture
def module_local_params():
    before = pyro.settings.get("module_local_params")
    pyro.settings.set(module_local_params=True)
    yield
    pyro.settings.set(module_local_params=before)
    pyro.clear_param_store()


def _steps(name, use_differentiable_loss, steps):
    """Gradients of ``steps`` SGD steps from the same seeds, by either interface."""
    model, guide, elbo = build(name)
    module = DistributedELBOModule(model, guide, elbo)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01)
    x, idx, grads = data(), torch.arange(8), []
    for step in range(steps):
        optimizer.zero_grad()
        pyro.set_rng_seed(10 + step)
        if use_differentiable_loss:
            loss = module(x[idx], idx)
            loss.backward()
            loss = loss.item()
        else:
            loss = elbo.loss_and_grads(model, guide, x[idx], idx)
        grads.append((loss, flat_grads(module)))
        optimizer.step()
    return grads


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_loss_gives_the_gradient_of_loss_and_grads(module_local_params, name):
    """Same draws (seeded), same gradient and loss; for TraceGraph this includes the
    score-function term and its decaying-average baseline (nonzero from step 2).
    REBAR and RELAX tune their control variate in ``loss_and_grads`` only, so only the
    first step (before any tuning) is compared for them."""
    steps = 1 if "REBAR" in name or "RELAX" in name else 3
    by_grads = _steps(name, False, steps)
    by_loss = _steps(name, True, steps)
    for (loss_a, grad_a), (loss_b, grad_b) in zip(by_grads, by_loss, strict=True):
        assert grad_a.abs().max() > 1e-3
        torch.testing.assert_close(grad_b, grad_a, rtol=1e-5, atol=1e-6)
        assert loss_b == pytest.approx(loss_a, rel=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(mode: str, out_dir, backend: str = "gloo", timeout: float = 240):
    """Run both ranks of ``ddp_worker.py MODE``; return their completed processes."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "ddp_worker.py"), mode, str(rank), str(WORLD)]
            + [str(port), str(out_dir), backend],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in range(WORLD)
    ]
    deadline = time.monotonic() + timeout
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def ranks(out_dir) -> list[dict]:
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _run_elbos(tmp_path_factory, backend):
    out_dir = tmp_path_factory.mktemp(f"ddp_{backend}")
    for code, out, err in launch("elbos", out_dir, backend):
        assert code == 0, f"a rank failed:\n{out}\n{err[-4000:]}"
    return ranks(out_dir)


@pytest.fixture(scope="module")
def gloo_run(tmp_path_factory):
    return _run_elbos(tmp_path_factory, "gloo")


def needs_lightning():
    try:
        import lightning  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail('CI must install the distributed extra (pip install -e ".[distributed]")')
        pytest.skip('lightning is not installed (pip install -e ".[distributed]")')


def run_script(args, timeout):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory):
    needs_lightning()
    out_dir = tmp_path_factory.mktemp("lightning")
    run_script([os.path.join(HERE, "lightning_worker.py"), str(out_dir)], timeout=420)
    return out_dir


def _needs_two_gpus():
    return pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs two CUDA devices")


@pytest.fixture(scope="module")
def nccl_run(tmp_path_factory):
    return _run_elbos(tmp_path_factory, "nccl")


def check_gradient(run, name):
    result = run[0][name]
    single, averaged = result["grad_single"], result["grad_ddp"]
    assert single.abs().max() > 1e-3  # a gradient, not zeros
    torch.testing.assert_close(averaged, single, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result["grad_ranks"][0], result["grad_ranks"][1])


def check_training(run, name):
    result = run[0][name]
    init, final = result["init_ranks"], result["final_ranks"]
    assert torch.equal(init[0], init[1])  # built from one seed
    assert torch.equal(final[0], final[1])  # DDP kept them identical
    assert not torch.equal(final[0], init[0])  # and they trained
    assert all(torch.isfinite(torch.tensor(r[name]["losses"])).all() for r in run)
    draws = result["draws_ranks"]
    assert not torch.equal(draws[0], draws[1])  # seed_rank: each rank its own draws
    for state in result["state_ranks"]:
        torch.testing.assert_close(state[0], state[1])


@pytest.mark.parametrize("name", NAMES)
def test_gradient_of_two_half_batches_is_the_full_batch_gradient(gloo_run, name):
    check_gradient(gloo_run, name)


@pytest.mark.parametrize("name", NAMES)
def test_training_keeps_ranks_identical(gloo_run, name):
    check_training(gloo_run, name)


def test_state_outside_the_gradient_is_synchronized(gloo_run):
    graph = gloo_run[0]["TraceGraphILS_ELBO"]
    assert graph["synced"] == ["__baseline_avg_downstream_cost_z"]
    assert len(gloo_run[0]["TraceRELAX_ELBO"]["synced"]) > 2  # eta, log T, the network
    assert gloo_run[0]["TraceILS_ELBO"]["synced"] == []


def test_plain_elbo_module_needs_every_parameter_used(gloo_run):
    """The reason for DistributedELBOModule: the guide's ``unused`` parameter."""
    for result in gloo_run:
        assert "finished reduction" in result["plain_error"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_lightning_ddp_trains_every_elbo(lightning_run, name):
    rank0, rank1 = (
        torch.load(lightning_run / f"{name}.rank{r}.pt", weights_only=False) for r in range(WORLD)
    )
    assert rank0["world"] == rank1["world"] == WORLD
    assert torch.equal(rank0["init"], rank1["init"])
    assert torch.equal(rank0["final"], rank1["final"])
    assert not torch.equal(rank0["final"], rank0["init"])


@pytest.mark.slow
def test_distributed_vae_example_on_two_cpu_processes(tmp_path):
    needs_lightning()
    out = run_script(
        ["examples/distributed_vae.py", "--devices", "2", "--accelerator", "cpu"]
        + ["--strategy", "ddp", "--max-steps", "6", "--batch-size", "32", "--no-progress"]
        + ["--out", str(tmp_path)],
        timeout=300,
    )
    match = re.search(r"held-out ELBO \(exact\): (-?[\d.]+) nats per image", out)
    assert match and -60 < float(match.group(1)) < 0, out
    assert os.path.isfile(tmp_path / "last.ckpt"), os.listdir(tmp_path)


@pytest.mark.cuda
@_needs_two_gpus()
@pytest.mark.parametrize("name", NAMES)
def test_nccl(nccl_run, name):
    check_gradient(nccl_run, name)
    check_training(nccl_run, name)


def test_checkpoint_and_resume_reproduce_the_uninterrupted_run(tmp_path):
    for code, out, err in launch("resume", tmp_path):
        assert code == 0, f"a rank failed:\n{out}\n{err[-4000:]}"
    for result in ranks(tmp_path):
        for name, runs in result.items():
            assert torch.equal(runs["whole"], runs["resumed"]), name


def test_a_killed_rank_fails_the_other_and_leaves_the_checkpoint(tmp_path, module_local_params):
    start = time.monotonic()
    (code0, out0, err0), (code1, out1, _) = launch("kill", tmp_path, timeout=120)
    assert code1 == 17 and "dying at step 3" in out1
    assert code0 != 0, f"rank 0 did not fail:\n{out0}\n{err0[-2000:]}"
    assert "step 2 saved" in out0 and "step 3 saved" not in out0
    assert time.monotonic() - start < 120
    # the last checkpoint loads into a fresh module
    model, guide, elbo = build("TraceILS_ELBO", seed=5)
    module = DistributedELBOModule(model, guide, elbo)
    before = flat_params(module)
    extra = load_checkpoint(tmp_path / "last.ckpt", module, restore_rng=False)
    assert extra == {"step": 2}
    assert not torch.equal(before, flat_params(module))
