"""One command line for every benchmark: ``python -m benchmarks COMMAND [SUITE] ...``.

::

    python -m benchmarks --help                    # the commands and the suites
    python -m benchmarks run SUITE [--quick] ...   # run a suite (its own options follow)
    python -m benchmarks run SUITE --help          # a suite's own options
    python -m benchmarks report [SUITE]            # rewrite the pages from the result files
    python -m benchmarks check [SUITE]             # exit 1 if a page is not what they give

Run it from the repository root. A suite is a :class:`Suite` (its name, what it
measures, and its ``run``, ``report`` and ``check``), registered with
:func:`register` in :mod:`benchmarks.suites`; each only dispatches to the suite's
own module, so the CLI holds no benchmark logic. ``report`` and ``check`` without a
suite cover every suite.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Suite:
    """A benchmark suite as the CLI sees it.

    :param name: the name on the command line;
    :param about: one line: what it measures and where its results go;
    :param module: the module whose command-line options ``run`` takes;
    :param run: ``run(argv)`` runs the suite with its own command-line options;
    :param report: ``report()`` rewrites the suite's pages from its result files and
        returns the paths written;
    :param check: ``check()`` returns the pages that are not what the result files
        give (empty: up to date); it writes nothing.
    """

    name: str
    about: str
    module: str
    run: Callable[[list[str]], object]
    report: Callable[[], list[Path]]
    check: Callable[[], list[Path]]


SUITES: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    SUITES[suite.name] = suite
    return suite


#: The scripts that each suite's recorded commands name, before this CLI: the
#: pages quote a result's recorded command as it is run today (see :func:`command_now`).
_RECORDED = {
    "python benchmarks/estimators.py": "estimators",
    "python benchmarks/step_time.py": "cost",
    "python -m benchmarks.zoo.run": "zoo",
    "python -m benchmarks.pyro_enum_tests": "pyro-tests",
}
#: Options that rewrote a page instead of running (now ``report SUITE``).
_REPORT_FLAGS = ("--report-only", "--render-only")


def command_now(recorded: str) -> str:
    """The command that does today what ``recorded`` (a result's stored command) did.

    >>> command_now("python benchmarks/step_time.py --profile")
    'python -m benchmarks run cost --profile'
    >>> command_now("python benchmarks/estimators.py --report-only")
    'python -m benchmarks report estimators'
    """
    recorded = recorded.strip()
    for script, suite in _RECORDED.items():
        if recorded == script or recorded.startswith(script + " "):
            rest = recorded[len(script) :]  # kept as recorded (it may hold a note)
            if any(a in _REPORT_FLAGS for a in rest.split()):
                return f"python -m benchmarks report {suite}"
            return f"python -m benchmarks run {suite}{rest}"
    return recorded


def _selected(name: str | None) -> list[Suite]:
    return list(SUITES.values()) if name is None else [SUITES[name]]


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {s.name:<11} {s.about}" for s in SUITES.values())
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the benchmarks, rewrite their docs pages, check the pages.",
        epilog="suites:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run a suite; its own options follow (run SUITE --help lists them)",
        add_help=False,
    )
    run.add_argument("suite", choices=list(SUITES), metavar="SUITE")
    for name, what in (("report", "rewrite the pages"), ("check", "check the pages")):
        p = sub.add_parser(name, help=f"{what} of SUITE (default: every suite)")
        p.add_argument("suite", nargs="?", choices=list(SUITES), metavar="SUITE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks import suites  # noqa: F401  (registers the suites)

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "run" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "run":
        out = SUITES[args.suite].run(rest)
        return out if isinstance(out, int) else 0
    if args.command == "report":
        for suite in _selected(args.suite):
            written = suite.report()
            for path in written:
                print(f"{suite.name}: wrote {_rel(path)}")
            if not written:
                print(f"{suite.name}: no page of its own")
        return 0
    stale = [(s.name, p) for s in _selected(args.suite) for p in s.check()]
    for name, path in stale:
        print(f"{name}: stale: {_rel(path)}", file=sys.stderr)
    if not stale:
        print("every page is what its result files give")
    return 1 if stale else 0


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


__all__ = ["SUITES", "Suite", "command_now", "main", "register"]
