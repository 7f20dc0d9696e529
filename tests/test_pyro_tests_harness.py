"""``benchmarks/pyro_enum_tests.py`` on a stand-in for a Pyro checkout: each suite
rebinds Pyro's ELBOs to the plugin's in the copied test module only, and the
``valid_models`` suite runs under the pytest section of Pyro's ``setup.cfg``, where a
warning fails a test.

The target of the ``valid_models`` suite: every test that passes as written passes
rebound. The recorded run (``benchmarks/results/pyro_valid_models_tests.json``) is
checked here; the slow test runs Pyro's suite itself, from the Pyro checkout or git dir
that ``PYRO_SOURCE`` names (by default the bare mirror of this workplace), and is
skipped where there is none."""

import json
import os
from pathlib import Path

import pytest

from benchmarks import pyro_enum_tests as harness

PYRO = Path(os.environ.get("PYRO_SOURCE", "/work/.mirror/pyro-ppl+pyro/repo"))
SETUP_CFG = """[metadata]
name = pyro-ppl

[tool:pytest]
filterwarnings = error

[yapf]
based_on_style = google
"""

VALID_MODELS = """import warnings

from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.infer.tracetmc_elbo import TraceTMC_ELBO


def test_rebound():
    names = (Trace_ELBO.__name__, TraceGraph_ELBO.__name__, TraceEnum_ELBO.__name__)
    assert names == ("TraceILS_ELBO", "TraceGraphILS_ELBO", "TraceEnumILS_ELBO")
    assert TraceTMC_ELBO.__module__.startswith("pyro.")


def test_warnings_fail():
    warnings.warn("a warning")
"""

ENUM = """import warnings

from pyro.infer.traceenum_elbo import TraceEnum_ELBO


def test_rebound():
    warnings.warn("a warning, which this suite does not count")
    assert TraceEnum_ELBO.__name__ == "TraceEnumILS_ELBO"
"""


@pytest.fixture
def pyro_checkout(tmp_path) -> Path:
    for path in harness.HELPERS:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    (tmp_path / "setup.cfg").write_text(SETUP_CFG)
    (tmp_path / "tests/infer/test_valid_models.py").write_text(VALID_MODELS)
    (tmp_path / "tests/infer/test_enum.py").write_text(ENUM)
    return tmp_path


def test_pytest_section_is_pyros_only():
    section = harness.pytest_section(SETUP_CFG)
    assert section.startswith("[tool:pytest]\nfilterwarnings = error")
    assert "yapf" not in section and "metadata" not in section


@pytest.mark.slow
def test_valid_models_rebinds_three_elbos_and_fails_on_warnings(pyro_checkout):
    rebound = harness.run(pyro_checkout, True, 120, suite="valid_models")
    as_written = harness.run(pyro_checkout, False, 120, suite="valid_models")
    warned = "tests.infer.test_valid_models::test_warnings_fail"
    assert rebound["counts"] == {"passed": 1, "failed": 1, "skipped": 0}
    assert rebound["failed"] == [warned]
    assert as_written["counts"]["failed"] == 2  # not rebound, and the warning


@pytest.mark.slow
def test_enum_rebinds_trace_enum_and_ignores_warnings(pyro_checkout):
    assert harness.run(pyro_checkout, True, 120)["counts"]["passed"] == 1
    assert harness.run(pyro_checkout, False, 120)["counts"]["failed"] == 1


def test_a_changed_import_line_stops_the_run(pyro_checkout):
    path = pyro_checkout / "tests/infer/test_valid_models.py"
    path.write_text(VALID_MODELS.replace("from pyro.infer.tracetmc_elbo", "from pyro.infer"))
    with pytest.raises(SystemExit, match="no longer has the line"):
        harness.run(pyro_checkout, True, 120, suite="valid_models")


def test_the_recorded_valid_models_run_passes_all_that_pass_as_written():
    result = json.loads((harness.RESULTS / "pyro_valid_models_tests.json").read_text())
    assert result["suite"] == "valid_models" and result["select"] is None
    assert not result["dirty"] and result["pyro_pytest_config"]
    assert result["rebound"]["failed"] == [] == result["as_written"]["failed"]
    assert result["rebound"]["counts"] == result["as_written"]["counts"]
    assert result["rebound"]["counts"]["passed"] > 500


@pytest.mark.slow
@pytest.mark.skipif(not PYRO.exists(), reason=f"no Pyro source at {PYRO} (set PYRO_SOURCE)")
def test_pyros_valid_models_pass_rebound():
    """Pyro's ``test_valid_models.py``, rebound, under Pyro's configuration: no failure
    (a warning of the plugin's would be one)."""
    rebound = harness.run(PYRO, True, 3600, suite="valid_models")
    assert rebound["failed"] == []
    assert rebound["counts"]["passed"] > 500
