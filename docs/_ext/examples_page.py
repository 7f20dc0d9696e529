"""The ``examples-from-docstrings`` directive: one section per script in ``examples/``.

Each section is the script's module docstring, so the page lists exactly the
examples that exist and says what their own docstrings say (commands, flags,
outputs). Indented blocks that the docstring does not introduce with ``::``
(commands, formulas) are shown as literal blocks. Figures are shown when a
file ``docs/img/<script name>*.png`` exists; the examples write theirs under
``results/``, which is not part of the repository.
"""

from __future__ import annotations

import ast
import glob
import os

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: Scripts listed first, in this order; any other script follows alphabetically.
ORDER = ("categorical_vae", "semi_supervised_vae", "mixture_of_experts", "toy_kl")


def example_files(root: str) -> tuple[list[str], list[str]]:
    """``(scripts, helpers)``: paths of ``examples/*.py``, scripts in page order."""
    paths = sorted(glob.glob(os.path.join(root, "examples", "*.py")))
    scripts, helpers = [], []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        (scripts if '__name__ == "__main__"' in source else helpers).append(path)

    def rank(path):
        stem = os.path.splitext(os.path.basename(path))[0]
        return (ORDER.index(stem) if stem in ORDER else len(ORDER), stem)

    return sorted(scripts, key=rank), helpers


def docstring(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read())) or ""


def literal_blocks(text: str) -> list[str]:
    """The docstring's lines, with bare indented blocks turned into code blocks."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        starts_block = (
            line.startswith("    ")
            and (i == 0 or not lines[i - 1].strip())
            and not _introduced(out)
            and not _in_list_item(out)
        )
        if not starts_block:
            out.append(line)
            i += 1
            continue
        block = []
        while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        language = "bash" if block[0].strip().startswith("python ") else "text"
        out += [f".. code-block:: {language}", ""] + block + [""]
    return out


def _introduced(out: list[str]) -> bool:
    previous = [line for line in out if line.strip()]
    return bool(previous) and previous[-1].rstrip().endswith("::")


def _in_list_item(out: list[str]) -> bool:
    """Whether the paragraph before the blank line is (a continuation of) a list item."""
    for line in reversed(out):
        if not line.strip():
            continue
        return line.startswith(("* ", "- ", "  "))
    return False


class ExamplesFromDocstrings(SphinxDirective):
    has_content = False

    def run(self):
        root = os.path.dirname(self.env.srcdir)
        scripts, helpers = example_files(root)
        rst: list[str] = []
        for path in scripts:
            stem = os.path.splitext(os.path.basename(path))[0]
            self.env.note_dependency(path)
            title = f"``examples/{stem}.py``"
            rst += [title, "-" * len(title), ""]
            rst += literal_blocks(docstring(path)) + [""]
            for image in sorted(glob.glob(os.path.join(self.env.srcdir, "img", f"{stem}*.png"))):
                rel = os.path.relpath(image, self.env.srcdir).replace(os.sep, "/")
                rst += [f".. image:: /{rel}", f"   :alt: {stem}", ""]
        if helpers:
            rst += ["Helpers", "-------", ""]
            for path in helpers:
                self.env.note_dependency(path)
                stem = os.path.splitext(os.path.basename(path))[0]
                first = docstring(path).split("\n\n")[0].replace("\n", " ")
                rst += [f"* ``examples/{stem}.py``: {first}"]
            rst += [""]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(rst, source="examples/"), container)
        return container.children


def setup(app):
    app.add_directive("examples-from-docstrings", ExamplesFromDocstrings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
