"""No import circles between fewstep's modules, late (function-level) imports included (#18 item 2).

A circle ``a -> b -> ... -> a`` works today only because some of its imports run late (inside a
function); it still means none of those modules can be understood, tested or moved without the
others, and the first late import made eager breaks ``import``. The graph is built from the source
(``ast``), not by importing, so every ``import`` / ``from ... import`` counts wherever it is: at
module level, inside functions and methods, in ``try`` blocks.

How an import becomes an edge:

* ``import fewstep.a.b`` is an edge to ``fewstep.a.b``; relative imports are resolved against the
  importing module's package;
* ``from fewstep.a import name`` is an edge to ``fewstep.a.name`` when that is a module (a
  submodule), else to ``fewstep.a``;
* **re-exports**: when ``fewstep.a`` is a package whose ``__init__`` re-exports ``name`` from a
  submodule (``from .sub import name``, also inside ``if TYPE_CHECKING:`` where the names are
  provided lazily, or a lazy-export table ``{"name": "sub"}``), the edge goes to ``fewstep.a.sub``
  (followed through nested packages), the module that defines the name. Without this rule every
  package ``__init__`` that re-exports its submodules would close a circle with each of its
  submodules (or their importers) that imports a sibling through the package, which is no real
  dependency;
* imports under ``if TYPE_CHECKING:`` are not edges of the importing module (they never run);
  imports of modules outside ``fewstep`` are ignored.

Circles are looked for twice: between modules, and between *units* (a subpackage such as
``fewstep.train`` with all its modules, or a top-level module such as ``fewstep.plots``), where
``train -> plots -> infer -> train`` was (``fewstep.train.engine`` imported ``fewstep.plots``,
which imported ``fewstep.infer.cutoff`` for ``plot_cutoff``, while ``fewstep.infer.cli`` imports
``fewstep.train.data_feed``).

No circle remains (#18): the registries' lookups, the kernels' shared pieces, the CLI's shared
options and the torch-free :class:`~fewstep.neurons.NeuronSpec` each have a module of their own.
A circle kept on purpose would be listed in :data:`KNOWN_EDGES` by the one import (or two) that
closes it, with the reason: with those imports left out the graph must have no circle at either
level, so any *new* circle fails the test (a new model or dataset module registering itself with
its registry does not). A listed import that is gone fails too, so the list only shrinks.

``python tests/test_import_graph.py`` prints every circle with the imports that close it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "fewstep"

# The imports that close the circles still there on purpose: (importer, imported, why).
KNOWN_EDGES: list[tuple[str, str, str]] = []  # none left (#18): the mechanism stays for a circle kept on purpose


def module_names(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """``{dotted module name: path}`` of every ``.py`` file under ``root`` (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, *, type_checking: bool = False, inside: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every ``Import`` / ``ImportFrom`` node anywhere in ``tree``, each with whether it sits
    under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, inside
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), inside=True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), inside=inside)
        else:
            yield from _imports(node, inside=inside)


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def unit(module: str) -> str:
    """``fewstep.train.engine`` -> ``fewstep.train``; ``fewstep.plots`` -> ``fewstep.plots``."""
    return ".".join(module.split(".")[:2])


def strongly_connected(edges: dict[str, dict[str, list[int]]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.add(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(frozenset(scc))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out, key=sorted)


def reachable(edges: dict[str, dict[str, list[int]]], start: str) -> set[str]:
    """Every node that ``start`` imports, directly or not."""
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo.extend(edges.get(v, ()))
    return seen


class ImportGraph:
    """The import graph of the ``fewstep`` modules: :attr:`edges` ``{module: {imported module: [line, ...]}}``."""

    def __init__(self, root: Path = PACKAGE_DIR, without: list[tuple[str, str, str]] | None = None) -> None:
        """``without``: ``(importer, imported, why)`` imports to leave out (see :data:`KNOWN_EDGES`)."""
        self.paths = module_names(root)
        self.trees = {m: ast.parse(p.read_text(encoding="utf-8"), str(p)) for m, p in self.paths.items()}
        self.packages = {m for m, p in self.paths.items() if p.name == "__init__.py"}
        self.reexports = {pkg: self._reexports(pkg) for pkg in self.packages}
        self.edges: dict[str, dict[str, list[int]]] = {m: {} for m in self.paths}
        for module, tree in self.trees.items():
            for node, type_only in _imports(tree):
                if type_only:
                    continue
                for target in self._targets(module, node):
                    if target != module:
                        self.edges[module].setdefault(target, []).append(node.lineno)
        self.left_out = {}
        for a, b, _ in without or ():
            if b in self.edges.get(a, {}):
                self.left_out[a, b] = self.edges[a].pop(b)

    def _reexports(self, pkg: str) -> dict[str, str]:
        """``{name: submodule}`` that the package ``__init__`` re-exports (eagerly, under
        ``TYPE_CHECKING`` for lazy names, or through a ``{"name": "submodule"}`` table)."""
        out: dict[str, str] = {}
        tree = self.trees[pkg]
        for node, _ in _imports(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                sub = f"{pkg}.{node.module}"
                if sub in self.paths:
                    out.update({a.asname or a.name: sub for a in node.names})
        for node in tree.body:  # lazy-export tables: {"name": "submodule", ...}
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Dict):
                try:
                    table = ast.literal_eval(value)
                except ValueError:
                    continue
                if table and all(isinstance(v, str) and f"{pkg}.{v}" in self.paths for v in table.values()):
                    out.update({k: f"{pkg}.{v}" for k, v in table.items() if isinstance(k, str)})
        return out

    def _resolve(self, base: str, name: str) -> str:
        """The module that ``from base import name`` depends on (see the module docstring)."""
        if f"{base}.{name}" in self.paths:
            return f"{base}.{name}"
        seen = set()
        while base in self.packages and name in self.reexports[base] and base not in seen:
            seen.add(base)
            base = self.reexports[base][name]
        return base

    def _targets(self, module: str, node: ast.stmt) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names if a.name in self.paths]
        assert isinstance(node, ast.ImportFrom)
        base = _base(module, module in self.packages, node)
        if base not in self.paths:
            return []
        return [self._resolve(base, a.name) for a in node.names]

    def circles(self) -> list[frozenset[str]]:
        """Module circles: the strongly connected components of :attr:`edges` with more than one module."""
        return strongly_connected(self.edges)

    def unit_edges(self) -> dict[str, dict[str, list[int]]]:
        """The graph between *units*: ``fewstep.<first name>`` (a subpackage such as
        ``fewstep.train`` with all its modules, or a top-level module such as ``fewstep.plots``)."""
        out: dict[str, dict[str, list[int]]] = {}
        for a, targets in self.edges.items():
            ua = unit(a)
            out.setdefault(ua, {})
            for b, where in targets.items():
                if unit(b) != ua and b != "fewstep":
                    out[ua].setdefault(unit(b), []).extend(where)
        return out

    def unit_circles(self) -> list[frozenset[str]]:
        """Circles between subpackages / top-level modules (e.g. ``train -> plots -> infer -> train``)."""
        return strongly_connected(self.unit_edges())

    def describe(self, scc: frozenset[str]) -> str:
        """The imports inside one circle, ``a -> b (lines)``, one a line."""
        lines = [f"circle of {len(scc)} modules: {', '.join(sorted(scc))}"]
        for a in sorted(scc):
            for b, where in sorted(self.edges[a].items()):
                if b in scc:
                    lines.append(f"  {a} -> {b}  (line {', '.join(map(str, sorted(set(where))))})")
        return "\n".join(lines)


def test_graph_sees_late_relative_and_reexported_imports():
    graph = ImportGraph()
    # a function-level relative import (PlotsCallback._raster imports reset_net late), resolved
    # through fewstep.neurons' re-export to the module that defines it
    assert "fewstep.neurons.modules" in graph.edges["fewstep.plots"]
    assert "fewstep.neurons" not in graph.edges["fewstep.plots"]
    # fewstep.train.engine imports fewstep.plots inside a function
    assert "fewstep.plots" in graph.edges["fewstep.train.engine"]
    # lazy re-exports (TYPE_CHECKING block) are followed; the TYPE_CHECKING imports are no edges
    assert graph.reexports["fewstep.infer"]["cutoff_sweep"] == "fewstep.infer.cutoff"
    assert "fewstep.infer.cutoff" not in graph.edges["fewstep.infer"]
    # a lazy-export table
    assert graph.reexports["fewstep.convert"]["convert"] == "fewstep.convert.converter"
    # a two-module circle is found, at both levels
    graph.edges["fewstep.plots"]["fewstep.train.engine"] = [0]
    assert any({"fewstep.plots", "fewstep.train.engine"} <= c for c in graph.circles())
    assert any({"fewstep.plots", "fewstep.train"} <= c for c in graph.unit_circles())


def test_plots_depend_on_plain_data_only():
    """Plotting draws numbers, arrays and dicts: nothing it imports, directly or not, is training,
    inference, evaluation, the run report or a command line (#18 item 2)."""
    graph = ImportGraph()
    units = graph.unit_edges()
    bad = {"fewstep.train", "fewstep.infer", "fewstep.evaluate", "fewstep.report", "fewstep.cli"}
    assert not reachable(units, "fewstep.plots") & bad, sorted(reachable(units, "fewstep.plots") & bad)
    assert "fewstep.plots" in reachable(units, "fewstep.train")  # training does draw its plots


def test_no_new_import_circles():
    graph = ImportGraph(without=KNOWN_EDGES)
    circles = [graph.describe(c) for c in graph.circles()]
    assert not circles, "import circles between modules:\n" + "\n".join(circles)
    units = graph.unit_edges()
    unit_circles = [f"{sorted(c)}: " + "; ".join(f"{a} -> {b}" for a in sorted(c) for b in sorted(units[a]) if b in c)
                    for c in graph.unit_circles()]
    assert not unit_circles, "import circles between subpackages:\n" + "\n".join(unit_circles)
    gone = [(a, b) for a, b, _ in KNOWN_EDGES if (a, b) not in graph.left_out]
    assert not gone, f"these imports are gone: remove them from KNOWN_EDGES: {gone}"


if __name__ == "__main__":
    g = ImportGraph()
    cs = g.circles()
    print("\n\n".join(g.describe(c) for c in cs) if cs else "no circles between modules")
    print("circles between subpackages:", [sorted(c) for c in g.unit_circles()] or "none")
    h = ImportGraph(without=KNOWN_EDGES)
    print("without KNOWN_EDGES:", [sorted(c) for c in h.circles() + h.unit_circles()] or "no circles")
