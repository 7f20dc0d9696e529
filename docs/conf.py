"""Sphinx configuration for the pyro-ils documentation.

Build (from the repository root)::

    python -m pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs build/docs/html

``tests/test_docs.py`` runs the same build with warnings as errors and executes
the code blocks of the Markdown pages, so the docs cannot drift from the code.
The build needs no network: intersphinx is not used, and references to torch,
Pyro and Python objects are rendered as plain text (see ``nitpick_ignore_regex``).
"""

from __future__ import annotations

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))  # the package, also when it is not installed
sys.path.insert(0, os.path.join(DOCS, "_ext"))  # this site's own extension

import pyro_ils  # noqa: E402

# -- Project -----------------------------------------------------------------

project = "pyro-ils"
author = "pyro-ils developers"
copyright = "pyro-ils developers, Apache-2.0"
version = release = pyro_ils.__version__

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "examples_page",  # docs/_ext/examples_page.py: the examples page from their docstrings
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
pygments_style = "sphinx"

# Every cross-reference must resolve (with -W a dangling one fails the build),
# except references to objects of other projects: there is no network at build
# time, so intersphinx cannot fetch their inventories, and they stay plain text.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(torch|pyro|collections|typing|contextlib)(\..*)?")]
nitpick_ignore = [
    # pyro_ils/distributions.py, module docstring: `:meth:`score_parts`` names no
    # documented object; `:meth:`~ILSDistributionMixin.score_parts`` would.
    # ``Tensor`` as written in annotations (``from torch import Tensor``) of
    # ILSIndexTensor's signature; torch's objects are not linked anyway.
    ("py:class", "Tensor"),
]

# -- autodoc (Pyro's settings) -----------------------------------------------

autodoc_member_order = "bysource"
autoclass_content = "both"  # class docstring, then __init__'s where it has one
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_inherit_docstrings = False  # torch's docstrings are not written for this site
add_module_names = False

# -- MyST (the Markdown pages) -----------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # links such as usage.md#the-guides-log-q-term
suppress_warnings: list[str] = []

# -- doctest -----------------------------------------------------------------

doctest_global_setup = """
import torch
import pyro
import pyro.distributions as dist
import pyro_ils
"""

# -- Re-exported names -------------------------------------------------------
#
# The API page documents each object under its public name (``pyro_ils.X``),
# while docstrings also refer to it under its defining module
# (``pyro_ils.poutine.routing.to_ils``) or, inside that module, by its bare name.
# Sphinx records the defining name of a class (``:canonical:``) but not of a
# function, so resolve the other spellings here: a reference resolves when it
# names, under any of these spellings, an object that the site documents.
# Private base classes (``_ILSELBOMixin``) are left out of the "Bases:" lines.


def _lookup(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = __import__(".".join(parts[:i]), fromlist=["_"])
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _resolve_alias(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    module = node.get("py:module") or ""
    klass = node.get("py:class") or ""
    candidates = [target, f"{module}.{target}", f"{module}.{klass}.{target}"]
    domain = env.get_domain("py")
    for candidate in candidates:
        if not candidate.startswith("pyro_ils."):
            continue
        obj = _lookup(candidate)
        name = getattr(obj, "__name__", None)
        if obj is None or name is None:
            continue
        defining = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', name)}"
        for alias in (f"pyro_ils.{name}", defining):
            if alias != target and alias in domain.objects and _lookup(alias) is obj:
                return domain.resolve_xref(
                    env, node["refdoc"], app.builder, node["reftype"], alias, node, contnode
                )
    return None


def _public_bases(app, name, obj, options, bases):
    bases[:] = [b for b in bases if not getattr(b, "__name__", "").startswith("_")]


def setup(app):
    app.connect("missing-reference", _resolve_alias)
    app.connect("autodoc-process-bases", _public_bases)


# -- HTML ---------------------------------------------------------------------

html_theme = "sphinx_rtd_theme"  # as Pyro's documentation
html_title = f"pyro-ils {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {"navigation_depth": 3, "collapse_navigation": False}
