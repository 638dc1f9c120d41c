"""The documentation: builds with ``mkdocs build --strict`` offline, and says what it should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
METHOD_PAGES = ["stc-scb-mtlif.md", "stcb.md", "anytime.md", "conversion.md"]
PLACEHOLDER = "to be measured: see benchmarks/RESULTS.md"


def test_method_pages_mark_reconstructions_and_unmeasured_numbers():
    for name in METHOD_PAGES:
        text = (DOCS / "methods" / name).read_text()
        assert "reconstruction" in text.lower(), name
        assert PLACEHOLDER in text, name
        assert "## Recipes" in text or "## Recipes and models" in text, name


def test_recipes_named_in_the_docs_exist():
    from fewstep.config import builtin_recipes

    shipped = set(builtin_recipes())
    pattern = re.compile(r"`((?:[a-z0-9]+-)+(?:t\d+|dnn|events))`")
    named = {m for page in DOCS.rglob("*.md") for m in pattern.findall(page.read_text())}
    assert named, "expected recipe names in the docs"
    assert named <= shipped, f"docs name recipes that do not exist: {sorted(named - shipped)}"


def test_every_package_has_an_api_page():
    import fewstep

    pkg = Path(fewstep.__file__).parent
    packages = {p.name for p in pkg.iterdir() if (p / "__init__.py").exists() and p.name not in ("kernels", "recipes")}
    pages = {p.stem for p in (DOCS / "api").glob("*.md")}
    assert packages <= pages, f"packages without an API page: {sorted(packages - pages)}"
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in pages:
        assert f"api/{page}.md" in nav


#: reST that Markdown leaves as it is: a directive, a role (Markdown turns its backticks into
#: <code>), a literal-block marker ending a paragraph.
RAW_REST = re.compile(r"\.\. [a-z-]+::|:(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|math|ref):(?:<code>|`)"
                      r"|\w::</p>")


def _rest_extension():
    pytest.importorskip("griffe", reason="the docs extension needs griffe: pip install 'fewstep[docs]'")
    pytest.importorskip("latex2mathml", reason="the docs extension needs latex2mathml: pip install 'fewstep[docs]'")
    import importlib.util

    spec = importlib.util.spec_from_file_location("rest_docstrings", ROOT / "tools" / "rest_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rest_docstrings_become_markdown():
    ext = _rest_extension()
    paths = {"train": "fewstep.train.engine.train", "fewstep.errors.ConfigError": "fewstep.errors.ConfigError"}
    text = "\n".join([
        "Charge, then fire:", "", ".. math::", "", "    h_t = \\lambda v_{t-1} + x_t", "",
        "with :math:`\\lambda` the decay; see :func:`train`, :class:`~fewstep.errors.ConfigError`,",
        ":class:`torch.nn.Module` and :func:`the loop <train>`. Run it::", "", "    fewstep train quickstart", "",
        ".. note::", "    Time-major.",
    ])
    md = ext.rest_to_markdown(text, paths.get)
    assert not RAW_REST.search(md), md
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in md
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">' in md and "&#x003BB;" in md
    assert '<autoref identifier="fewstep.train.engine.train" optional><code>train()</code></autoref>' in md
    assert '<autoref identifier="fewstep.errors.ConfigError" optional><code>ConfigError</code></autoref>' in md
    assert "<code>torch.nn.Module</code>" in md and "autoref identifier=\"torch" not in md  # not ours: plain code
    assert "<code>the loop</code></autoref>" in md
    assert "Run it:\n\n```\nfewstep train quickstart\n```" in md
    assert "!!! note\n    Time-major." in md


def test_rest_docstrings_refuse_what_they_cannot_render():
    ext = _rest_extension()
    with pytest.raises(ValueError, match="directive"):
        ext.rest_to_markdown(".. automodule:: fewstep", lambda name: None)


def test_mkdocs_builds_strict_and_offline(tmp_path):
    pytest.importorskip("mkdocs", reason="docs build needs mkdocs: pip install 'fewstep[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python", reason="docs build needs mkdocstrings[python]")
    site = tmp_path / "site"
    env = dict(os.environ)
    # No network: any fetch during the build goes to a closed local port and fails.
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[key] = "http://127.0.0.1:9"
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = (site / "index.html").read_text()
    assert "fewstep" in index
    api = (site / "api" / "neurons" / "index.html").read_text()
    assert "SpikingNeuron" in api and "reset_net" in api  # generated from the docstrings
    assert "export_nir" in (site / "api" / "nir_io" / "index.html").read_text()
    # The docstrings are reST: their math, roles and literal blocks reach the pages rendered.
    pages = {page: page.read_text() for page in (site / "api").rglob("*.html")}
    for page, text in pages.items():
        for raw in RAW_REST.findall(text):
            pytest.fail(f"{page} shows raw reST: {raw!r}")
    allhtml = "\n".join(pages.values())
    assert allhtml.count('display="block"') >= 10  # the .. math:: blocks, as MathML
    assert allhtml.count("autorefs-internal") >= 200  # :func: / :class: roles, as links
    # The pages load nothing from the internet (no CDN scripts, stylesheets or fonts).
    remote = re.compile(r"""<(?:script|link|img)[^>]+(?:src|href)=["']https?://""")
    for page in site.rglob("*.html"):
        assert not remote.search(page.read_text()), f"{page} loads a remote resource"
