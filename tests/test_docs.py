"""The documentation cannot drift from the code.

* The Sphinx site (``docs/``) builds with warnings as errors (``-W --keep-going``,
  every cross-reference resolved), and its doctests (``sphinx -b doctest``) pass.
  Needs the ``docs`` extras; skipped without them, except under CI (``CI=true``),
  where a missing Sphinx is an error.
* Every Markdown code block marked ``python`` in README.md and docs/*.md runs, the
  blocks of a page in order in one namespace, as a reader would paste them. Loops
  ``for ... in range(N)`` with a literal ``N`` above 50 run 50 times, so that
  training loops stay fast; nothing else is changed.
* Every ``python path/to/script.py --flag`` command shown in a ``bash`` block, or in
  an example's docstring, names a script that exists and flags that it defines.
* Every number quoted in docs/choosing_options.md and docs/benchmarks.md is
  recomputed from benchmarks/results/frozen/guide_log_prob.json (frozen results).
* Every public name of ``pyro_ils`` is in the API reference.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import pyro
import pytest
import torch

import pyro_ils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
LOOP_CAP = 50

PAGES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(DOCS, "*.md"))
)

# Code that a page's fragments assume, run before its first block. Only for pages
# whose blocks are fragments of a larger program (docs/usage.md shows single lines).
PRELUDES = {
    "docs/usage.md": """
import torch, pyro, pyro.distributions as dist
from pyro.infer import SVI
from pyro_ils import TraceILS_ELBO

l = torch.zeros(3)
data = torch.randn(10)


def model(data):
    locs = pyro.param("locs", torch.tensor([-1.0, 0.0, 1.0]))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=data)


def guide(data):
    logits = pyro.param("logits", torch.zeros(len(data), 3))
    with pyro.plate("data", len(data)):
        pyro.sample("z", dist.Categorical(logits=logits))


svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=TraceILS_ELBO())
""",
}
#: diagnostics.md measures the estimators on the same small mixture.
PRELUDES["docs/diagnostics.md"] = PRELUDES["docs/usage.md"]


def _read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def code_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of the fenced blocks of ``language`` in Markdown ``text``."""
    blocks = []
    pattern = re.compile(r"^```" + re.escape(language) + r"[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
    for match in pattern.finditer(text):
        blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


class _CapLoops(ast.NodeTransformer):
    def visit_For(self, node):
        self.generic_visit(node)
        it = node.iter
        if (
            isinstance(it, ast.Call)
            and isinstance(it.func, ast.Name)
            and it.func.id == "range"
            and len(it.args) == 1
            and isinstance(it.args[0], ast.Constant)
            and isinstance(it.args[0].value, int)
            and it.args[0].value > LOOP_CAP
        ):
            it.args[0] = ast.copy_location(ast.Constant(LOOP_CAP), it.args[0])
        return node


def _compile(code: str, filename: str, first_line: int):
    tree = ast.parse(code, filename)
    ast.increment_lineno(tree, first_line - 1)
    tree = ast.fix_missing_locations(_CapLoops().visit(tree))
    return compile(tree, filename, "exec")


@pytest.fixture
def clean_pyro_state():
    rng = torch.get_rng_state()
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
    torch.set_rng_state(rng)


PYTHON_PAGES = [p for p in PAGES if code_blocks(_read(p), "python")]


def test_some_pages_have_python_blocks():
    assert "README.md" in PYTHON_PAGES and "docs/quickstart.md" in PYTHON_PAGES


@pytest.mark.slow
@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_markdown_python_blocks_run(page, tmp_path, monkeypatch, clean_pyro_state, capsys):
    monkeypatch.chdir(tmp_path)  # a snippet that writes files writes them here
    namespace = {"__name__": "__docs__"}
    if page in PRELUDES:
        exec(compile(PRELUDES[page], f"<prelude of {page}>", "exec"), namespace)
    for line, code in code_blocks(_read(page), "python"):
        try:
            exec(_compile(code, os.path.join(ROOT, page), line), namespace)
        except Exception as error:
            raise AssertionError(f"the python block at {page}:{line} failed: {error!r}") from error


@pytest.mark.slow
def test_readme_quickstart_prints_the_right_answer(clean_pyro_state, capsys):
    """The README's quickstart and its check, run as written (500 steps each, no loop
    cap): the default's cluster locations are within 0.5 of the exact gradient's and
    of the true ones, and the numbers the README quotes are what it prints."""
    blocks = [code for _, code in code_blocks(_read("README.md"), "python")][:2]
    namespace = {"__name__": "__docs__"}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)
    printed = re.findall(r"tensor\(\[([^\]]*)\]", capsys.readouterr().out)
    ils, exact = (torch.tensor([float(x) for x in p.split(",")]) for p in printed[:2])
    truth = torch.tensor([-4.0, 0.0, 4.0])
    assert (ils - exact).abs().max() < 0.5 and (ils - truth).abs().max() < 0.5
    quoted = re.findall(r"# tensor\(\[([^\]]*)\]\)", "\n".join(blocks))
    for value, quote in zip((ils, exact), quoted, strict=True):
        q = torch.tensor([float(x) for x in quote.split(",")])
        assert (value - q).abs().max() < 0.006, (value, q)


# -- commands ------------------------------------------------------------------

_COMMAND = re.compile(r"^\s*python3?\s+(?!-m\b)(\S+\.py)\b(.*)$")


def _script_flags(path: str) -> set[str]:
    """The ``--flags`` that a script's argparse parser defines (read from its source)."""
    tree = ast.parse(_read(path))
    flags = {"--help"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("--"):
                    flags.add(arg.value)
    return flags


def _commands(pattern: re.Pattern = _COMMAND) -> list[tuple[str, str]]:
    """``(where, command line)`` for every command matching ``pattern`` that the docs
    show (by default ``python X.py ...``)."""
    found = []
    for page in PAGES:
        for line, code in code_blocks(_read(page), "bash"):
            for i, text in enumerate(code.splitlines()):
                found.append((f"{page}:{line + i}", text))
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))):
        doc = ast.get_docstring(ast.parse(_read(path))) or ""
        for text in doc.splitlines():
            found.append((os.path.relpath(path, ROOT), text))
    commands = []
    for where, text in found:
        for part in text.split("&&"):
            match = pattern.match(part.split("#")[0])
            if match:
                commands.append((where, part.split("#")[0].strip()))
    return commands


COMMANDS = _commands()
#: ``python -m benchmarks COMMAND [SUITE] ...`` (benchmarks/cli.py)
_BENCHMARKS = re.compile(r"^\s*python3?\s+-m\s+benchmarks\s+(\S+)\s*(\S*)(.*)$")
BENCHMARK_COMMANDS = _commands(_BENCHMARKS)


def test_docs_show_commands():
    scripts = {c.split()[1] for _, c in COMMANDS}
    assert "examples/categorical_vae.py" in scripts
    shown = {tuple(c.split()[3:5]) for _, c in BENCHMARK_COMMANDS}
    assert {("run", "cost"), ("run", "estimators"), ("check",)} <= shown


@pytest.mark.parametrize(
    "where,command", BENCHMARK_COMMANDS, ids=[f"{w}: {c}" for w, c in BENCHMARK_COMMANDS]
)
def test_benchmark_commands_name_existing_suites_and_flags(where, command):
    from benchmarks import cli, suites  # noqa: F401  (suites registers)

    verb, suite, rest = _BENCHMARKS.match(command).groups()
    assert verb in ("run", "report", "check"), f"{where}: no command {verb}"
    assert suite in cli.SUITES or (verb != "run" and not suite), f"{where}: no suite {suite}"
    if verb == "run":
        script = cli.SUITES[suite].module.replace(".", "/") + ".py"
        flags = _script_flags(script)
        used = re.findall(r"(?<!\S)(--[A-Za-z][\w-]*)", rest)
        unknown = [f for f in used if f not in flags]
        assert not unknown, f"{where}: {script} defines no {unknown} (it has {sorted(flags)})"
    else:
        assert not rest.strip(), f"{where}: {verb} takes no options"


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}: {c}" for w, c in COMMANDS])
def test_commands_name_existing_scripts_and_flags(where, command):
    match = _COMMAND.match(command)
    script, rest = match.group(1), match.group(2)
    assert os.path.isfile(os.path.join(ROOT, script)), f"{where}: no script {script}"
    flags = _script_flags(script)
    used = re.findall(r"(?<!\S)(--[A-Za-z][\w-]*)", rest)
    unknown = [f for f in used if f not in flags]
    assert not unknown, f"{where}: {script} defines no {unknown} (it has {sorted(flags)})"


# -- API reference ---------------------------------------------------------------


def test_api_reference_lists_every_public_name():
    api = _read("docs/api.rst")
    documented = set(re.findall(r"^\.\. auto\w+:: ([\w.]+)", api, re.M))
    missing = [
        name
        for name in pyro_ils.__all__
        if not any(d == f"pyro_ils.{name}" or d.endswith(f".{name}") for d in documented)
    ]
    assert not missing, f"public names missing from docs/api.rst: {missing}"


# -- numbers quoted from the benchmark results -----------------------------------


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\\", ""))


def _guide_log_prob_claims() -> dict[str, list[str]]:
    """For each page, text fragments that quote guide_log_prob.json, recomputed here."""
    with open(os.path.join(ROOT, "benchmarks", "results", "frozen", "guide_log_prob.json")) as f:
        result = json.load(f)
    problems = result["problems"]
    states = ["init0", "init1", "init2"]  # the random guide states
    projections = result["settings"]["projections"]
    step_sizes = result["settings"]["step_sizes"]

    def ils_rows(problem, state, mode=None, projection=None, step_size=None):
        for row in problems[problem]["states"][state]["rows"]:
            spec = row["spec"]
            if spec.get("kind") != "ils":
                continue
            if mode is not None and spec["mode"] != mode:
                continue
            if projection is not None and spec["projection"] != projection:
                continue
            if step_size is not None and spec["step_size"] != step_size:
                continue
            yield row

    def mse(row):
        return row["exact"]["rel_mse_best_scale"]

    def one(rows):
        (row,) = list(rows)
        return row

    cases = [(p, s) for p in problems for s in states]  # 6
    cases_proj = [(p, s, h) for p, s in cases for h in projections]  # 12

    def best_step(p, s, mode, h):
        return min(ils_rows(p, s, mode, h), key=mse)["spec"]["step_size"]

    def span(values, fmt):
        lo, hi = min(values), max(values)
        return (
            format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}} to {hi:{fmt}}"
        )

    claims = []
    # weight invariance (exact expectations)
    inv = [r["exact"] for p in problems for r in problems[p]["scale_invariance"]["rows"]]
    claims.append(f"subsampling agreed to {max(r['subsample_rel_diff'] for r in inv):.1e}")
    claims.append(f"to {max(r['scale_rel_diff'] for r in inv):.1e} in relative norm")
    # small steps: stl and full at the smallest step size
    c0 = min(step_sizes)
    stl0 = [mse(one(ils_rows(p, s, "stl", h, c0))) for p, s, h in cases_proj]
    full0 = [mse(one(ils_rows(p, s, "full", h, c0))) for p, s, h in cases_proj]
    claims.append(f"gradient at c = {c0:g} had an MSE*")
    claims.append(f"of {span(stl0, '.3f')} over the {len(cases_proj)} measured cases")
    claims.append(f"at c = {c0:g} its MSE* was {span(full0, '.3f')}")
    # saturation of the Euclidean target, stl
    big = [c for c in step_sizes if c >= 10]
    change = max(
        abs(
            mse(one(ils_rows(p, s, "stl", "euclidean", c)))
            - mse(one(ils_rows(p, s, "stl", "euclidean", max(step_sizes))))
        )
        for p, s in cases
        for c in big
    )
    claims.append(
        f"changed by at most {change:.3f} between c = {min(big):g} and c = {max(step_sizes):g}"
    )

    # best step size of stl, per problem and projection
    def best_span(problem, h):
        return span([best_step(problem, s, "stl", h) for s in states], "g")

    claims.append(
        f"lowest MSE* was {best_span('gmm', 'euclidean')} on the Gaussian mixture and "
        f'{best_span("vae", "euclidean")} on the tiny VAE with "euclidean", and '
        f'{span([best_step(p, s, "stl", "normalize") for p, s in cases], "g")} with "normalize"'
    )
    # where the expectation is best aligned (stl and full share it)
    aligned = [
        max(ils_rows(p, s, "stl", h), key=lambda r: r["exact"]["cos_mean"])["spec"]["step_size"]
        for p, s, h in cases_proj
    ]
    claims.append(f"c <= {max(aligned):g}, in {len(aligned)}/{len(cases_proj)} cases")
    # euclidean against normalize, stl
    at1 = sum(
        mse(one(ils_rows(p, s, "stl", "normalize", 1.0)))
        < mse(one(ils_rows(p, s, "stl", "euclidean", 1.0)))
        for p, s in cases
    )
    at_best = sum(
        min(map(mse, ils_rows(p, s, "stl", "normalize")))
        < min(map(mse, ils_rows(p, s, "stl", "euclidean")))
        for p, s in cases
    )
    claims.append(
        f"had the lower MSE* in {at1}/{len(cases)} cases, and at each projection's own best "
        f"step size in {at_best}/{len(cases)}"
    )

    def max_var(h):
        return max(r["exact"]["rel_var"] for p, s in cases for r in ils_rows(p, s, "stl", h))

    claims.append(
        f'was {max_var("normalize"):.1e} with "normalize" against {max_var("euclidean"):.2f} '
        f'with "euclidean"'
    )
    # guide_log_prob at c = 1
    stl_wins = sum(
        mse(one(ils_rows(p, s, "stl", h, 1.0))) < mse(one(ils_rows(p, s, "full", h, 1.0)))
        for p, s, h in cases_proj
    )
    full_best = span([best_step(p, s, "full", h) for p, s, h in cases_proj], "g")
    claims.append(
        f'"stl" had the lower MSE* in {stl_wins}/{len(cases_proj)} cases; the best step for '
        f'"full" was c = {full_best}'
    )
    analytic_best = sum(
        min(ils_rows(p, s, None, h, 1.0), key=mse)["spec"]["mode"] == "analytic"
        for p, s, h in cases_proj
    )
    claims.append(f"best mode at c = 1 in {analytic_best}/{len(cases_proj)} cases")
    # bias
    best_cos = max(r["exact"]["cos_mean"] for p, s in cases for r in ils_rows(p, s))
    claims.append(f"had a cosine of {best_cos:.3f} with the exact gradient")
    reinforce = [
        r["exact"]["rel_mse_best_scale"]
        for p, s in cases
        for r in problems[p]["states"][s]["rows"]
        if r["spec"]["label"] == "REINFORCE (Trace_ELBO)"
    ]
    claims.append(f"(MSE* {span(reinforce, '.3f')}), is unbiased")
    trained = [
        one(ils_rows(p, "trained", "stl", h, 1.0))["exact"]["cos_mean"]
        for p in problems
        for h in projections
    ]
    assert max(trained) < 0, "the page says the trained-state expectation points away"
    claims.append(f"(cosine {span(trained, '.3f')}, with either projection)")
    claims.append(f"the study used {min(step_sizes):g} to {max(step_sizes):g}")
    return {
        "docs/choosing_options.md": claims,
        "docs/benchmarks.md": [f"step sizes from {min(step_sizes):g} to {max(step_sizes):g}"],
    }


@pytest.mark.parametrize("page", ["docs/choosing_options.md", "docs/benchmarks.md"])
def test_quoted_numbers_match_benchmark_results(page):
    text = _normalize(_read(page)).replace("`", "")
    claims = _guide_log_prob_claims()[page]
    missing = [c for c in claims if _normalize(c) not in text]
    assert not missing, f"{page} does not say (or no longer matches the results): {missing}"


# -- the Sphinx build ------------------------------------------------------------


def _sphinx_available() -> bool:
    needed = ("sphinx", "myst_parser", "sphinx_rtd_theme")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f'CI must install the docs extras (pip install -e ".[docs]"): no {missing}')
    if missing:
        pytest.skip(f'the docs extras are not installed (pip install -e ".[docs]"): no {missing}')
    return True


def _sphinx(builder: str, out, doctrees) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder]
    command += ["-d", str(doctrees), DOCS, str(out)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sphinx_build_without_warnings_and_doctests(tmp_path):
    _sphinx_available()
    doctrees = tmp_path / "doctrees"
    html = _sphinx("html", tmp_path / "html", doctrees)
    assert html.returncode == 0, (
        f"sphinx -W html failed:\n{html.stdout[-5000:]}\n{html.stderr[-5000:]}"
    )
    assert "WARNING" not in html.stderr, html.stderr[-5000:]
    for page in ("index", "quickstart", "choosing_options", "examples", "benchmarks", "api"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    for name in ("TraceILS_ELBO", "ILSCategorical", "project_simplex", "ILSReparam"):
        assert f'id="pyro_ils.{name}"' in api, name
    doctest = _sphinx("doctest", tmp_path / "doctest", doctrees)
    assert doctest.returncode == 0, f"sphinx doctest failed:\n{doctest.stdout[-5000:]}"
