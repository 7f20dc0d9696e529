"""``python -m benchmarks`` (``benchmarks/cli.py``, ``benchmarks/suites.py``): the help
lists every suite, ``check`` passes on the committed pages and fails on a stale one,
``run`` dispatches to the suite's module with its options, recorded commands are
quoted in today's form; and the estimator benchmark's task models
(``benchmarks/estimator_bench/models.py``) are the examples' (same data, same initial
parameters), so that moving them out of ``examples/`` changed no task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import cli, step_time, suites  # noqa: F401  (suites registers)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_help_lists_every_suite():
    proc = _cli("--help")
    assert proc.returncode == 0, proc.stderr
    for name in ("estimators", "gradients", "zoo", "cost", "pyro-tests", "frozen"):
        assert name in cli.SUITES
        assert f"  {name} " in proc.stdout, name


def test_check_passes_on_the_committed_pages():
    assert cli.main(["check"]) == 0


def test_check_fails_on_a_stale_page(monkeypatch, tmp_path, capsys):
    page = tmp_path / "performance.md"
    page.write_text(step_time.DEFAULT_DOCS.read_text() + "edited by hand\n")
    assert step_time.stale_pages(docs=page) == [page]
    page.write_text(step_time.DEFAULT_DOCS.read_text())
    assert step_time.stale_pages(docs=page) == []
    stale = cli.Suite("stale", "a suite whose page is stale", "x", None, None, lambda: [page])
    monkeypatch.setitem(cli.SUITES, "stale", stale)
    assert cli.main(["check", "stale"]) == 1
    assert "stale: " in capsys.readouterr().err


def test_frozen_check_fails_on_an_unlisted_or_changed_file(tmp_path):
    import shutil

    for path in suites.FROZEN.iterdir():
        shutil.copy(path, tmp_path / path.name)
    assert suites.frozen_stale(tmp_path) == []
    assert "estimators_2026-12.json" in (tmp_path / "README.md").read_text()
    (tmp_path / "extra.json").write_text("{}")
    assert suites.frozen_stale(tmp_path) == [tmp_path / "extra.json"]
    (tmp_path / "extra.json").unlink()
    changed = tmp_path / "estimators_2026-12.json"
    changed.write_text(changed.read_text() + " ")
    assert suites.frozen_stale(tmp_path) == [changed]
    changed.unlink()
    assert suites.frozen_stale(tmp_path) == [changed]


def test_run_dispatches_to_the_suite_with_its_options(tmp_path):
    out = tmp_path / "step_time.json"
    args = ["--quick", "--ks", "3", "--variants", "st_index", "ils_midpoint"]
    proc = _cli("run", "cost", *args, "--out", str(out), "--no-docs", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["K"] for r in result["results"]] == [3]
    assert set(result["results"][0]["variants"]) == {"st_index", "ils_midpoint"}
    assert result["command"].startswith("python -m benchmarks run cost --quick --ks 3")


def test_recorded_commands_are_quoted_as_run_today():
    now = cli.command_now
    assert (
        now("python benchmarks/step_time.py --profile") == "python -m benchmarks run cost --profile"
    )
    assert now("python benchmarks/estimators.py --report-only") == (
        "python -m benchmarks report estimators"
    )
    assert (
        now("python -m benchmarks.zoo.run moe --quick")
        == "python -m benchmarks run zoo moe --quick"
    )
    assert now("python -m benchmarks run zoo moe") == "python -m benchmarks run zoo moe"
    assert now("python benchmarks/estimators.pyx") == "python benchmarks/estimators.pyx"
    noted = "python benchmarks/estimators.py --no-docs (then reported)"
    assert now(noted) == "python -m benchmarks run estimators --no-docs (then reported)"


# -- the task models are the examples' ---------------------------------------------


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))


def test_moe_data_and_initial_parameters_are_the_examples(examples):
    import mixture_of_experts as ex

    from benchmarks.estimator_bench import models

    for a, b in zip(
        models.make_data(50, 0.2, 3, "cpu"), ex.make_data(50, 0.2, 3, "cpu"), strict=True
    ):
        assert torch.equal(a, b)
    torch.manual_seed(4)
    ours = models.MixtureOfExperts(4, 32, gate_init_scale=8.0).state_dict()
    torch.manual_seed(4)
    theirs = ex.MixtureOfExperts(4, 32, gate_init_scale=8.0).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_vae_data_and_initial_parameters_are_the_examples(examples):
    pytest.importorskip("sklearn")
    import categorical_vae as ex

    from benchmarks.estimator_bench import models

    for a, b in zip(
        models.load_binarized_digits("cpu"), ex.load_binarized_digits("cpu"), strict=True
    ):
        assert torch.equal(a, b)
    torch.manual_seed(5)
    ours = models.CategoricalVAE(4, 8, hidden=128).state_dict()
    torch.manual_seed(5)
    theirs = ex.CategoricalVAE(4, 8, hidden=128).state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs) and ours.keys() == theirs.keys()


def test_toy_objective_is_the_examples(examples):
    import toy_kl as ex

    from benchmarks.estimator_bench import models

    true = torch.softmax(torch.randn(5, 5, generator=torch.Generator().manual_seed(0)), -1)
    logits = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(models.onehot_objective(true), ex.onehot_objective(true))
    assert torch.equal(models.expected_objective(true, logits), ex.expected_objective(true, logits))
    assert torch.equal(models.kl_true_pi(true, logits), ex.kl_true_pi(true, logits))
