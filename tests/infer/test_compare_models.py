"""compare_estimators on every zoo model and every example with a Pyro model and guide
(``examples/toy_kl.py`` optimises a function of draws, not a Pyro model, and
``examples/distributed_vae.py`` trains ``categorical_vae``'s model).

Each run is small (2 draws per estimator, 20 reference evaluations): what is checked is
that every default estimator is measured or says why it cannot run, that the default
ELBO is measured, and which reference each model gets."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pyro
import pytest
import torch

from benchmarks.zoo.estimators import ESTIMATORS
from benchmarks.zoo.run import TASKS
from pyro_ils import compare_estimators
from pyro_ils.infer.estimator_catalog import default_estimators

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: The reference each zoo model gets: exact where the guide's discrete sites enumerate
#: and nothing else is latent; with drawn continuous sites (the DP mixtures' sticks and
#: components, M2's z); RLOO where a discrete site is ``.to_event`` (the VAEs' codes,
#: AIR's presence flags).
ZOO_REFERENCE = {
    "quickstart": "exact",
    "moe": "exact",
    "dp_gaussian": "enumeration, Monte Carlo",
    "dp_poisson": "enumeration, Monte Carlo",
    "ss_vae": "enumeration, Monte Carlo",
    "air": "RLOO, Monte Carlo",
    "cat_vae_20x10": "RLOO, Monte Carlo",
    "cat_vae_4x8": "RLOO, Monte Carlo",
    "cat_vae_24x4": "RLOO, Monte Carlo",
    "bernoulli_vae_200": "RLOO, Monte Carlo",
}


def _check(result, default_name="TraceILS_ELBO() (default)"):
    names = [r.name for r in result]
    assert names[: len(default_estimators())] == list(default_estimators())
    default = result[default_name]
    assert default.error is None
    assert all(math.isfinite(v) for v in (default.cosine, default.relative_variance))
    for r in result:
        assert (r.error is None) == math.isfinite(r.cosine)


@pytest.fixture(autouse=True)
def fresh():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def test_every_zoo_model_is_listed():
    assert set(ZOO_REFERENCE) == set(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_zoo_model(name):
    task = TASKS[name](quick=True)
    task.reset(ESTIMATORS["trace"])  # the guide as its source writes it
    result = compare_estimators(
        task.model,
        task.guide,
        *task.batch(),
        num_draws=2,
        reference_draws=20,
        max_plate_nesting=task.max_plate_nesting,
        progress=False,
        verbose=False,
    )
    assert result.reference == ZOO_REFERENCE[name]
    _check(result)


def _example(name, monkeypatch):
    """Load ``examples/NAME.py`` as a module, with ``examples/`` on ``sys.path`` for this
    test only (run as a script, an example finds its helpers there)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_categorical_vae(monkeypatch):
    ex = _example("categorical_vae", monkeypatch)
    vae = ex.CategoricalVAE()
    x = (torch.rand(16, 64) > 0.5).float()
    result = compare_estimators(
        vae.model, vae.guide, x, num_draws=2, reference_draws=20, progress=False, verbose=False
    )
    assert result.reference == "RLOO, Monte Carlo"
    _check(result)


def test_example_mixture_of_experts(monkeypatch):
    ex = _example("mixture_of_experts", monkeypatch)
    moe = ex.MixtureOfExperts()
    x, y = ex.make_data(64, 0.1, 0, torch.device("cpu"))
    result = compare_estimators(
        moe.model, moe.guide, x, y, batch_size=32, num_draws=2, progress=False, verbose=False
    )
    assert result.reference == "exact"
    _check(result)


def test_example_semi_supervised_vae(monkeypatch):
    ex = _example("semi_supervised_vae", monkeypatch)
    m2 = ex.M2(z_dim=4, hidden=16)
    x = (torch.rand(24, 64) > 0.5).float()
    result = compare_estimators(
        m2.model,
        m2.guide,
        x_lab=x[:8],
        y_lab=torch.arange(8) % 10,
        x_unl=x[8:],
        num_draws=2,
        reference_draws=20,
        progress=False,
        verbose=False,
    )
    assert result.reference == "enumeration, Monte Carlo"
    _check(result)


def test_example_compare_estimators(monkeypatch):
    out = _example("compare_estimators", monkeypatch).main(
        ["--num-draws", "2", "--num-steps", "2", "--no-progress"]
    )
    assert list(out) == ["initial parameters", "after 2 steps"]
    for records in out.values():
        default = next(r for r in records if r["name"] == "TraceILS_ELBO() (default)")
        assert default["error"] is None and math.isfinite(default["cosine"])
