"""The suites of ``python -m benchmarks`` (see :mod:`benchmarks.cli`).

Each entry only dispatches to its suite's module; the modules are imported when a
suite is used, so ``--help`` stays fast.

* ``estimators``: every estimator on the benchmark's tasks, gradient quality and cost
  (:mod:`benchmarks.estimators`,
  page ``docs/estimators.md``);
* ``gradients``: the gradient-quality part of that benchmark alone
  (:mod:`benchmarks.estimator_bench.gradients`); its recorded results are those of
  ``estimators.json``, so its page is ``docs/estimators.md``;
* ``zoo``: Pyro's own models (``run zoo MODEL``; :mod:`benchmarks.zoo`, pages
  ``docs/zoo/``);
* ``zoo-gradients``: every estimator's gradient on every zoo model, measured by
  :func:`pyro_ils.compare_estimators` (:mod:`benchmarks.zoo.gradients`, page
  ``docs/gradients.md``);
* ``cost``: SVI step time (:mod:`benchmarks.step_time`, page ``docs/performance.md``);
* ``pyro-tests``: Pyro's own inference tests rebound to the plugin's ELBOs
  (:mod:`benchmarks.pyro_enum_tests`); no page is generated from its results (the
  README quotes them);
* ``frozen``: the retired one-off studies and the retired parts of the estimator
  benchmark, whose result files are frozen (``benchmarks/results/frozen/``): nothing
  to run or report; ``check`` verifies that the README's table lists every frozen file
  and no other, each with the SHA-256 of its content (:func:`frozen_stale`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from benchmarks.cli import Suite, register


def _call(module: str, function: str) -> Callable:
    """``module.function``, imported when first called (so that ``--help`` stays fast)."""

    def call(*args):
        return getattr(importlib.import_module(module), function)(*args)

    return call


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


# -- estimators and gradients ---------------------------------------------------------


def _estimators_run(argv):
    from benchmarks import estimators

    estimators.main(argv)


def _estimators_report():
    from benchmarks.estimator_bench import common, report

    out = common.RESULTS / "estimators.json"
    return report.write(_read(out), out)


def _estimators_check():
    from benchmarks.estimator_bench import common, report

    out = common.RESULTS / "estimators.json"
    return [] if report.render(_read(out), out) == report.PAGE.read_text() else [report.PAGE]


def _gradients_run(argv):
    from benchmarks import estimators
    from benchmarks.estimator_bench import common

    name = "gradients_quick.json" if "--quick" in argv else "gradients.json"
    # its own result file: the estimators' default (estimators.json) holds every part
    out = [] if "--out" in argv else ["--out", common.rel(common.RESULTS / name)]
    estimators.main(["--parts", "gradients", "--no-docs", *out, *argv])


register(
    Suite(
        "estimators",
        "every gradient estimator on the benchmark's tasks: gradient quality and cost "
        "-> docs/estimators.md",
        "benchmarks.estimators",
        _estimators_run,
        _estimators_report,
        _estimators_check,
    )
)
register(
    Suite(
        "gradients",
        "gradient quality against the exact gradient (the estimators' gradients part; "
        "JSON only, its recorded results are in estimators.json)",
        "benchmarks.estimators",
        _gradients_run,
        lambda: [],
        lambda: [],
    )
)


# -- zoo ---------------------------------------------------------------------------------


register(
    Suite(
        "zoo",
        "Pyro's own models, every estimator to convergence (run zoo MODEL) -> docs/zoo/",
        "benchmarks.zoo.run",
        _call("benchmarks.zoo.run", "main"),
        _call("benchmarks.zoo.report", "write"),
        _call("benchmarks.zoo.report", "stale"),
    )
)
register(
    Suite(
        "zoo-gradients",
        "every estimator's gradient on every zoo model, by pyro_ils.compare_estimators "
        "-> docs/gradients.md",
        "benchmarks.zoo.gradients",
        _call("benchmarks.zoo.gradients", "main"),
        _call("benchmarks.zoo.gradients", "write"),
        _call("benchmarks.zoo.gradients", "stale"),
    )
)


# -- cost ----------------------------------------------------------------------------


def _cost_report():
    from benchmarks import step_time

    return [step_time.write_page()]


register(
    Suite(
        "cost",
        "SVI step time, ILS against straight-through -> docs/performance.md",
        "benchmarks.step_time",
        _call("benchmarks.step_time", "main"),
        _cost_report,
        _call("benchmarks.step_time", "stale_pages"),
    )
)


# -- Pyro's tests --------------------------------------------------------------------


register(
    Suite(
        "pyro-tests",
        "Pyro's own inference tests rebound to the plugin's ELBOs (needs --pyro PATH; JSON only)",
        "benchmarks.pyro_enum_tests",
        _call("benchmarks.pyro_enum_tests", "main"),
        lambda: [],
        lambda: [],
    )
)


# -- frozen results --------------------------------------------------------------------

FROZEN = Path(__file__).resolve().parent / "results" / "frozen"
#: A row of the README's table: the file in backticks first, its SHA-256 last.
_FROZEN_ROW = re.compile(r"^\| `([^`/]+\.json)` \|.*\| `([0-9a-f]{64})` \|$")


def frozen_stale(folder: Path = FROZEN) -> list[Path]:
    """The frozen files that are not as ``folder/README.md`` lists them: a file the
    table does not list, a listed file that is missing, or one whose SHA-256 differs
    from the table's."""
    listed = {}
    for line in (folder / "README.md").read_text().splitlines():
        match = _FROZEN_ROW.match(line)
        if match:
            listed[match.group(1)] = match.group(2)
    present = {p.name for p in folder.glob("*.json")}
    stale = [folder / name for name in sorted(present ^ set(listed))]
    for name in sorted(present & set(listed)):
        if hashlib.sha256((folder / name).read_bytes()).hexdigest() != listed[name]:
            stale.append(folder / name)
    return stale


def _frozen_run(argv):
    print("frozen: nothing to run (these results are frozen; see benchmarks/results/frozen/)")
    return 2


register(
    Suite(
        "frozen",
        "the retired studies' frozen result files: check verifies them against their README",
        "benchmarks.suites",
        _frozen_run,
        lambda: [],
        frozen_stale,
    )
)
