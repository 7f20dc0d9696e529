"""Pyro's own Monte Carlo-against-exact gradient tests with ``TraceEnum_ELBO`` rebound
to :class:`~pyro_ils.TraceEnumILS_ELBO` (at its defaults).

Pyro's ``tests/infer/test_enum.py`` checks, among much else, that the gradient of a
guide's sampled (non-enumerated) sites under ``TraceEnum_ELBO`` matches the exact
gradient. Run against ``TraceEnumILS_ELBO()``, those tests measure whether the plugin's
default gives the exact expectation. The script copies the test module and Pyro's test
helpers into a temporary folder, changes the one name, runs them with pytest, once
rebound and once as written (the baseline), and writes the counts and the failing
test ids::

    python -m benchmarks.pyro_enum_tests --pyro PATH   # a Pyro checkout or git dir

Nothing of Pyro's is kept in this repository: the tests are read from ``PATH`` at run
time (for a bare git dir, at its ``HEAD``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.zoo import record

FILES = ("tests/__init__.py", "tests/common.py", "tests/conftest.py",
         "tests/infer/__init__.py", "tests/infer/test_enum.py")  # fmt: skip
IMPORT = "from pyro.infer.traceenum_elbo import TraceEnum_ELBO"
REBOUND = "from pyro_ils import TraceEnumILS_ELBO as TraceEnum_ELBO"
OUT = record.REPO / "benchmarks" / "results" / "pyro_enum_tests.json"


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


def run(pyro: Path, rebind: bool, timeout: int, select: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        for path in FILES:
            text = read(pyro, path)
            if rebind and path.endswith("test_enum.py"):
                if IMPORT not in text:
                    raise SystemExit(f"{path} no longer imports TraceEnum_ELBO as expected")
                text = text.replace(IMPORT, REBOUND).replace(
                    "infer.TraceEnum_ELBO", "TraceEnum_ELBO"
                )
            target = Path(tmp) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-p", "no:warnings", f"--junitxml={junit}",
                   "tests/infer/test_enum.py"] + (["-k", select] if select else [])  # fmt: skip
        subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=timeout)
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
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per pytest run")
    parser.add_argument("-k", dest="select", default=None, help="a pytest -k subset")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args(argv)
    result = record.header(args.allow_dirty, seeds={})
    result["command"] = "python -m benchmarks.pyro_enum_tests " + " ".join(sys.argv[1:])
    result["pyro_tests_commit"] = pyro_commit(args.pyro)
    result["select"] = args.select
    result["rebound"] = run(args.pyro, True, args.timeout, args.select)
    result["as_written"] = run(args.pyro, False, args.timeout, args.select)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for key in ("rebound", "as_written"):
        print(key, result[key]["counts"])
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
