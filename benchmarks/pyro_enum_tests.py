"""Pyro's own inference tests with Pyro's ELBOs rebound to the plugin's (at their
defaults), once rebound and once as written (the baseline).

Two suites of Pyro's ``tests/infer/``:

* ``enum`` (``test_enum.py``): among much else, that the gradient of a guide's
  sampled (non-enumerated) sites under ``TraceEnum_ELBO`` matches the exact gradient.
  With ``TraceEnum_ELBO`` rebound to :class:`~pyro_ils.TraceEnumILS_ELBO()`, those
  tests measure whether the plugin's default gives the exact expectation;
* ``valid_models`` (``test_valid_models.py``): that inference runs, without warnings
  or errors, on the models Pyro calls valid, and fails on the ones it calls invalid,
  with ``Trace_ELBO``, ``TraceGraph_ELBO`` and ``TraceEnum_ELBO`` rebound to
  :class:`~pyro_ils.TraceILS_ELBO`, :class:`~pyro_ils.TraceGraphILS_ELBO` and
  :class:`~pyro_ils.TraceEnumILS_ELBO`. It runs under the pytest section of Pyro's
  ``setup.cfg`` (warnings are errors), as Pyro runs it.

The script copies the test module and Pyro's test helpers into a temporary folder,
changes the names, runs them with pytest and writes the counts and the failing test
ids::

    python -m benchmarks run pyro-tests --pyro PATH                        # enum
    python -m benchmarks run pyro-tests --pyro PATH --suite valid_models

Nothing of Pyro's is kept in this repository: the tests are read from ``PATH`` at run
time (for a bare git dir, at its ``HEAD``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.zoo import record

HELPERS = ("tests/__init__.py", "tests/common.py", "tests/conftest.py",
           "tests/infer/__init__.py")  # fmt: skip
#: suite: (test module, the import line it must have, what follows it once rebound,
#: whether Pyro's pytest configuration applies)
SUITES = {
    "enum": (
        "tests/infer/test_enum.py",
        "from pyro.infer.traceenum_elbo import TraceEnum_ELBO",
        "from pyro_ils import TraceEnumILS_ELBO as TraceEnum_ELBO",
        False,
    ),
    "valid_models": (
        "tests/infer/test_valid_models.py",
        "from pyro.infer.tracetmc_elbo import TraceTMC_ELBO",
        "from pyro.infer.tracetmc_elbo import TraceTMC_ELBO\n"
        "from pyro_ils import TraceEnumILS_ELBO as TraceEnum_ELBO  # noqa\n"
        "from pyro_ils import TraceGraphILS_ELBO as TraceGraph_ELBO  # noqa\n"
        "from pyro_ils import TraceILS_ELBO as Trace_ELBO  # noqa",
        True,
    ),
}
RESULTS = record.REPO / "benchmarks" / "results"
OUT = RESULTS / "pyro_enum_tests.json"


def pytest_section(setup_cfg: str) -> str:
    """The ``[tool:pytest]`` section of Pyro's ``setup.cfg``."""
    lines, keep = [], False
    for line in setup_cfg.splitlines():
        if line.startswith("["):
            keep = line.strip() == "[tool:pytest]"
        if keep:
            lines.append(line)
    return "\n".join(lines) + "\n"


def read(pyro: Path, path: str) -> str:
    """A file of the Pyro checkout, or of a bare git dir's ``HEAD``."""
    if (pyro / path).is_file():
        return (pyro / path).read_text()
    out = subprocess.run(["git", "--git-dir", str(pyro), "show", f"HEAD:{path}"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout


def pyro_commit(pyro: Path) -> str | None:
    git = (
        ["git", "--git-dir", str(pyro)]
        if not (pyro / ".git").exists()
        else ["git", "-C", str(pyro)]
    )
    try:
        return subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


def run(
    pyro: Path, rebind: bool, timeout: int, select: str | None = None, suite: str = "enum"
) -> dict:
    module, line, rebound, pyro_config = SUITES[suite]
    with tempfile.TemporaryDirectory() as tmp:
        for path in HELPERS + (module,):
            text = read(pyro, path)
            if rebind and path == module:
                if line not in text:
                    raise SystemExit(f"{path} no longer has the line {line!r}")
                text = text.replace(line, rebound).replace("infer.TraceEnum_ELBO", "TraceEnum_ELBO")
            target = Path(tmp) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        if pyro_config:
            (Path(tmp) / "setup.cfg").write_text(pytest_section(read(pyro, "setup.cfg")))
        junit = Path(tmp) / "junit.xml"
        quiet = [] if pyro_config else ["-p", "no:warnings"]  # Pyro's config: warnings fail
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *quiet,
                   f"--junitxml={junit}", module] + (["-k", select] if select else [])  # fmt: skip
        # the plugin of this checkout, whatever an installed copy points to
        path = os.pathsep.join(filter(None, [str(record.REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        cases = ET.parse(junit).getroot().iter("testcase")
        outcome = {"passed": [], "failed": [], "skipped": []}
        for case in cases:
            name = f"{case.get('classname')}::{case.get('name')}"
            if case.find("skipped") is not None:
                outcome["skipped"].append(name)
            elif case.find("failure") is not None or case.find("error") is not None:
                outcome["failed"].append(name)
            else:
                outcome["passed"].append(name)
    return {
        "counts": {k: len(v) for k, v in outcome.items()},
        "failed": outcome["failed"],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyro", required=True, type=Path, help="a Pyro checkout or git dir")
    parser.add_argument("--suite", choices=sorted(SUITES), default="enum")
    parser.add_argument("--out", default=None, help="default: results/pyro_SUITE_tests.json")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per pytest run")
    parser.add_argument("-k", dest="select", default=None, help="a pytest -k subset")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args(argv)
    result = record.header(args.allow_dirty, {}, "benchmarks run pyro-tests", argv)
    result["pyro_tests_commit"] = pyro_commit(args.pyro)
    result["select"] = args.select
    result["suite"] = args.suite
    result["pyro_pytest_config"] = SUITES[args.suite][3]
    result["rebound"] = run(args.pyro, True, args.timeout, args.select, args.suite)
    result["as_written"] = run(args.pyro, False, args.timeout, args.select, args.suite)
    args.out = args.out or str(RESULTS / f"pyro_{args.suite}_tests.json")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for key in ("rebound", "as_written"):
        print(key, result[key]["counts"])
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
