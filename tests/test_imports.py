"""The shape of gapkit's source: no import cycles, nothing imports the package root, and one module knows the
run-folder layout. Read from the source with ``ast`` (no module is imported), so the checks hold for
imports inside functions too.

The import graph, precisely:
- nodes: the modules under ``gapkit/`` (a package is its ``__init__``: ``gapkit.sweep``);
- edges: every ``import`` statement that runs (at module level, in a function, in a class, under
  ``try``), except those under ``if TYPE_CHECKING:`` (annotations only, never run). ``import a.b.c`` and
  ``from a.b import c`` are an edge to ``a.b.c`` when that is a module, else to ``a.b``; relative imports
  are resolved against the importing module's package. The parent packages Python initialises on the way
  (``gapkit``, ``gapkit.sweep`` for ``gapkit.sweep.plan``) are not edges: a package ``__init__`` that
  re-exports its submodules is fine, and a submodule importing its own package ``__init__`` back is an edge
  that closes a cycle, so it is caught.
- a package's lazy re-exports (``lazy_exports(__name__, {".trainer": (...)})``, gapkit.lazy) are edges to
  those submodules too: they are imports that run on first use of a name, as an import in a function does;
- the graph must be acyclic, and no module may import ``gapkit`` itself (``from gapkit import x`` or
  ``from .. import x`` that names no submodule).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "gapkit"


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _runtime_imports(tree: ast.AST):
    """Import nodes that run, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    graph = {}
    for name, (path, package) in modules.items():
        here = name if package else name.rpartition(".")[0]
        edges = set()
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
            for target in targets:
                while target and target not in modules and "." in target:  # import a.b.func -> a.b
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    edges.add(target)
        edges |= {target for target in _lazy_targets(ast.parse(path.read_text(), str(path)), here)
                  if target in modules and target != name}
        graph[name] = edges
    return graph


def _lazy_targets(tree: ast.AST, here: str):
    """The submodules a package's ``lazy_exports(__name__, {".module": names})`` call names."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports" and len(node.args) > 1
                and isinstance(node.args[1], ast.Dict)):
            for key in node.args[1].keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    yield here + key.value if key.value.startswith(".") else key.value


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


GRAPH = import_graph(_modules())


def test_the_graph_sees_the_imports_it_must():
    """The parser itself: edges it must find (module level, in a function, relative, package re-export)."""
    assert "gapkit.distill.runfiles" in GRAPH["gapkit.sweep.status"]  # from ..distill.runfiles import ...
    assert "gapkit.distill.result" in GRAPH["gapkit.distill.runfiles"]  # from .result import ...
    assert "gapkit.sweep.table" in GRAPH["gapkit.cli"]  # inside a function
    assert "gapkit.sweep.execute" in GRAPH["gapkit.sweep"]  # a package re-exporting its submodule (lazily)
    assert "gapkit.sweep.plan" in GRAPH["gapkit.sweep"]  # ... and eagerly
    assert "gapkit.models.layout" in GRAPH["gapkit.models.student"]  # from . import layout
    assert "gapkit.models.student" not in GRAPH["gapkit.models.layout"]  # only under TYPE_CHECKING


def test_a_cycle_is_found_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_gapkit_has_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_the_package_root():
    importers = sorted(name for name, edges in GRAPH.items() if "gapkit" in edges)
    assert importers == [], f"these modules import the package root gapkit: {importers}"


# ----------------------------------------------------------------------------------------------------
# One module knows where each file of a run folder lives
# ----------------------------------------------------------------------------------------------------
RUN_FILES = ("result.json", "failure.json", "predictions.safetensors", "routing.parquet", "metrics.jsonl", "progress.json",
             "tracking.json")
RUN_DIRS = ("best", "checkpoint")
LAYOUT_MODULE = ROOT / "distill" / "runfiles.py"


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def layout_uses(source: str, where: str = "<source>") -> list[str]:
    """Where ``source`` spells the run-folder layout: a string that is a run file's name (or a path ending
    in one, ``best/predictions.safetensors``, ``f"{d}/result.json"``), or ``... / "best"`` and
    ``... / "checkpoint"``. Names in prose (messages, docstrings, comments) are not uses."""
    tree = ast.parse(source, where)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value.strip()
            if any(text == f or text.endswith("/" + f) for f in RUN_FILES):
                found.append(f"line {node.lineno}: {node.value!r}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value in RUN_DIRS + RUN_FILES:
            found.append(f"line {node.lineno}: / {node.right.value!r}")
    return found


def test_the_layout_check_sees_a_path_and_not_prose():
    assert layout_uses('p = run / "best" / "config.json"') == ["line 1: / 'best'"]
    assert layout_uses('p = f"{d}/result.json"') == ["line 1: '/result.json'"]
    assert layout_uses('x = ("result.json", "best/predictions.safetensors")') == [
        "line 1: 'result.json'", "line 1: 'best/predictions.safetensors'"]
    assert layout_uses('def f():\n    """Reads result.json."""\n    raise ValueError("see failure.json")') == []


@pytest.mark.parametrize("path", [p for p in sorted(ROOT.rglob("*.py")) if p != LAYOUT_MODULE],
                         ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_only_runfiles_spells_the_run_folder_layout(path):
    uses = layout_uses(path.read_text(), str(path))
    assert not uses, (f"{path.relative_to(ROOT.parent)} spells the run-folder layout ({'; '.join(uses)}): ask "
                      f"gapkit.distill.runfiles.RunDir instead")


def test_runfiles_does_spell_it():
    assert layout_uses(LAYOUT_MODULE.read_text())  # the check would see it, were it anywhere else
