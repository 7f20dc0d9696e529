"""The zoo's AIR task (``benchmarks/zoo/air.py``): its data, its spatial transformer
against direct pasting, its prior, its metrics, and one training step per estimator."""

import logging
import math
import warnings

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO

from benchmarks.zoo import air
from benchmarks.zoo.estimators import ESTIMATORS
from benchmarks.zoo.training import train
from pyro_ils.infer.site_choice import MIDPOINT, SiteChoiceWarning


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As the zoo's runner (two threads on a shared 2-core CPU are many times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task():
    return air.AIR(quick=True)


def test_digits_are_split_and_in_range():
    train_digits, test_digits = air.digits()
    assert train_digits.shape == (4000, air.WINDOW, air.WINDOW)
    assert test_digits.shape == (1000, air.WINDOW, air.WINDOW)
    for x in (train_digits, test_digits):
        assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9


def test_canvases_hold_their_placed_digits():
    source = air.digits()[1]
    images, counts, placements = air.make_canvases(source, 300, seed=3)
    assert images.shape == (300, air.CANVAS, air.CANVAS) and counts.shape == (300,)
    assert images.min() >= 0 and images.max() <= 1
    assert set(counts.tolist()) == {0, 1, 2}
    w = air.WINDOW
    for image, count, placed in zip(images, counts, placements, strict=True):
        used = placed[placed[:, 0] >= 0]
        assert len(used) == count  # the true count is the number of placed digits
        assert (placed[count:] == -1).all()
        rebuilt = torch.zeros(air.CANVAS, air.CANVAS)
        for idx, r, c in used.tolist():
            assert 0 <= r <= air.CANVAS - w and 0 <= c <= air.CANVAS - w
            rebuilt[r : r + w, c : c + w] += source[idx]
        torch.testing.assert_close(image, rebuilt)
    again = air.make_canvases(source, 300, seed=3)
    assert torch.equal(again[0], images) and torch.equal(again[2], placements)


def test_dataset_counts_are_roughly_uniform(task):
    assert task.data.shape == (air.N_TRAIN, air.CANVAS, air.CANVAS)
    assert len(task.test_data) == len(task.test_counts) == 64  # quick
    share = task.counts.bincount(minlength=3).float() / len(task.counts)
    assert (share - 1 / 3).abs().max() < 0.03


def test_transformer_writes_a_window_at_its_placement():
    gen = torch.Generator().manual_seed(0)
    w, c = air.WINDOW, air.CANVAS
    windows = torch.rand(6, w, w, generator=gen)
    rows = torch.tensor([0, 20, 7, 13, 0, 20])
    cols = torch.tensor([0, 20, 3, 11, 20, 0])
    written = air.window_to_image(air.placement_to_where(rows, cols), windows)
    pasted = torch.zeros(6, c, c)
    for i, (r, col) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        pasted[i, r : r + w, col : col + w] = windows[i]
    torch.testing.assert_close(written, pasted, atol=1e-5, rtol=0)
    # ... and the inverse transform reads it back off the canvas
    read = air.image_to_window(air.placement_to_where(rows, cols), pasted)
    torch.testing.assert_close(read, windows, atol=1e-5, rtol=0)
    # scale 1, no shift: a canvas-sized window is copied as it is
    full = torch.rand(2, c, c, generator=gen)
    identity = air.window_to_image(torch.tensor([[1.0, 0.0, 0.0]] * 2), full)
    torch.testing.assert_close(identity, full, atol=1e-5, rtol=0)


def test_transformer_grid_is_affine_grids():
    gen = torch.Generator().manual_seed(1)
    z_where = torch.randn(5, 3, generator=gen)
    z_where[:, 0] = z_where[:, 0].abs() + 0.5
    windows = torch.rand(5, air.WINDOW, air.WINDOW, generator=gen)
    s, x, y = z_where.unbind(-1)
    zero = torch.zeros_like(s)
    theta = torch.stack([torch.stack([s, zero, x], -1), torch.stack([zero, s, y], -1)], -2)
    grid = F.affine_grid(theta, [5, 1, air.CANVAS, air.CANVAS], align_corners=False)
    expected = F.grid_sample(windows[:, None], grid, align_corners=False)[:, 0]
    torch.testing.assert_close(air.window_to_image(z_where, windows), expected)


def test_z_pres_prior_is_geometric_like():
    k = 0.3
    p = air.z_pres_prior(k, 3)
    mass = [1 - p[0], p[0] * (1 - p[1]), p[0] * p[1] * (1 - p[2]), p[0] * p[1] * p[2]]
    z = sum(k**n for n in range(4))
    assert mass == pytest.approx([k**n / z for n in range(4)])


def test_count_accuracy_on_a_hand_built_case():
    z_pres = [
        torch.tensor([[1.0], [1.0], [0.0], [1.0]]),
        torch.tensor([[1.0], [0.0], [0.0], [1.0]]),
    ]
    z_pres.append(torch.tensor([[0.0], [0.0], [0.0], [1.0]]))
    assert air.count_accuracy(z_pres, torch.tensor([2, 1, 1, 3])) == 0.75
    assert air.count_accuracy(z_pres, torch.tensor([2, 0, 0, 3])) == 0.75
    assert air.count_accuracy(z_pres, torch.tensor([0, 0, 0, 0])) == 0.25


@pytest.mark.parametrize("bias, count", [(20.0, 3), (-20.0, 0)])
def test_most_likely_counts_follow_z_pres(task, bias, count):
    pyro.set_rng_seed(0)
    task.reset(ESTIMATORS["trace"])
    last = task.net.out[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = bias
    pres = task.most_likely_pres(task.test_data)
    assert torch.stack(pres).sum(0).eq(count).all()
    final = task.evaluate()
    expected = float((task.test_counts == count).float().mean())
    assert final["count_accuracy"] == pytest.approx(expected)
    assert final["mean_count"] == count


def test_elbo_metric_is_one_particle_of_trace_elbo(task):
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    task.reset(ESTIMATORS["trace"])
    x = task.test_data[:16]
    metric = task.elbo(x, seed=7)
    torch.manual_seed(7)
    loss = Trace_ELBO().loss(task.model, task.guide, x, torch.arange(len(x)))
    assert metric == pytest.approx(-loss / len(x), rel=1e-5)
    assert task.elbo(x, seed=7) == metric  # fixed noise


def _grads(task, name):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    est = ESTIMATORS[name]
    task.reset(est)
    loss = est.loss(task)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = loss.loss_and_grads(task.model, task.guide, *task.batch())
    grads = {k: p.grad for k, p in pyro.get_param_store().named_parameters()}
    return loss, value, grads, caught


@pytest.mark.parametrize("name", air.AIR.estimators)
def test_one_step_of_each_estimator_is_finite(task, name, caplog):
    with caplog.at_level(logging.WARNING, logger="pyro_ils"):
        loss, value, grads, caught = _grads(task, name)
    assert math.isfinite(value)
    assert grads and all(g is None or torch.isfinite(g).all() for g in grads.values())
    # the z_pres predictor gets a gradient from every estimator
    pres_weight = grads["guide$$$out.2.weight"][0]
    assert pres_weight.abs().sum() > 0
    if name == "tracegraph":
        assert any(k.startswith("baseline$$$") and g is not None for k, g in grads.items())
    else:
        assert not any(k.startswith("baseline$$$") for k in grads)
    if name == "ils_default":
        choices = loss.site_choices
        assert {n: c.member for n, c in choices.items()} == {
            f"z_pres_{t}": MIDPOINT for t in range(air.STEPS)
        }
        # the rule chose exact differences: the fallback is a log record, not a warning
        assert not any(issubclass(w.category, SiteChoiceWarning) for w in caught)
        fell_back = [r for r in caplog.records if "does not broadcast" in r.getMessage()]
        assert fell_back and all(r.levelno == logging.WARNING for r in fell_back)
    result = train(task, ESTIMATORS[name], lr=1e-3, seed=0)
    assert result["stop"] in ("max_steps", "converged") and result["steps"] == task.max_steps
    assert all(math.isfinite(p["metric"]) for p in result["curve"])
    assert set(result["final"]) == {"elbo", "count_accuracy", "mean_count"}
    assert 0 <= result["final"]["count_accuracy"] <= 1


def test_baselines_only_on_tracegraph(task):
    for name, expected in (("tracegraph", True), ("trace", False)):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        task.reset(ESTIMATORS[name])
        trace = pyro.poutine.trace(task.guide).get_trace(*task.batch())
        for t in range(air.STEPS):
            site = trace.nodes[f"z_pres_{t}"]
            assert ("baseline" in site["infer"]) is expected
            if expected:
                assert site["infer"]["baseline"]["baseline_value"].shape == (task.batch_size,)


def test_training_is_deterministic(task):
    runs = [train(task, ESTIMATORS["ils_midpoint"], lr=1e-3, seed=1) for _ in range(2)]
    assert runs[0]["curve"][-1]["metric"] == runs[1]["curve"][-1]["metric"]
    assert runs[0]["final"] == runs[1]["final"]


def test_registration():
    assert air.TASKS == {"air": air.AIR}
    task = air.AIR()
    assert task.max_steps > task.min_steps and task.max_steps % task.eval_every == 0
    assert "enum" not in task.estimators


def test_svi_step_runs_on_a_batch(task):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    task.reset(ESTIMATORS["trace"])
    svi = SVI(task.model, task.guide, pyro.optim.Adam({"lr": 1e-3}), loss=Trace_ELBO())
    data, idx = task.batch()
    assert len(idx) == task.batch_size and data is task.data
    assert math.isfinite(svi.step(data, idx))


def test_a_zero_z_pres_ends_the_chain(task):
    """After ``z_pres_0 = 0`` every later step is absent: its ``z_pres`` is 0 and its
    ``z_where``/``z_what`` are masked out of the joint, and the canvas is empty."""
    pyro.set_rng_seed(0)
    task.reset(ESTIMATORS["trace"])
    data, idx = task.batch()
    zeros = torch.zeros(len(idx), 1)
    model = pyro.poutine.condition(task.model, data={"z_pres_0": zeros})
    trace = pyro.poutine.trace(model).get_trace(data, idx)
    trace.compute_log_prob()
    for t in range(air.STEPS):
        assert (trace.nodes[f"z_pres_{t}"]["value"] == 0).all()
        for kind in ("z_where", "z_what"):
            assert (trace.nodes[f"{kind}_{t}"]["log_prob"] == 0).all()
    obs = trace.nodes["obs"]["fn"].base_dist
    assert (obs.loc == 0).all()
