"""The layout rules of docs/architecture.md, checked on the source (imports inside functions count)."""

import ast
import re
from pathlib import Path

from conftest import ROOT

CORE = ROOT / "cost_aware_router"


def _module(path: Path) -> str:
    rel = path.relative_to(CORE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def _imports(path: Path) -> set[str]:
    """Core modules imported by ``path`` anywhere in it (relative imports resolved)."""
    mod = _module(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else list(package)
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] + [f"{target}.{a.name}" if target else a.name for a in node.names]
            elif node.module and node.module.startswith("cost_aware_router"):
                target = node.module.removeprefix("cost_aware_router").lstrip(".")
                names = [target] + [f"{target}.{a.name}" if target else a.name for a in node.names]
            else:
                continue
            found.update(n for n in names if n in MODULES)
    found.discard(mod)
    return found


MODULES = {_module(p) for p in CORE.rglob("*.py")}
GRAPH = {_module(p): _imports(p) for p in CORE.rglob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_core_import_graph_has_no_cycle():
    assert "router" in GRAPH and "budget" in GRAPH["router"]  # the graph was really read
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH))


def test_layers():
    """Embedder, predictors and budgets sit below the router; the router below train, evaluate and
    extend; the CLI on top."""
    below_router = {"embed", "predictors", "budget", "reference", "added", "validate", "errors", "cascade"}
    for low in below_router:
        assert not GRAPH[low] & {"router", "router_file", "train", "evaluate", "extend", "cli"}, low
    for mid in ("router", "router_file"):
        assert not GRAPH[mid] & {"train", "evaluate", "extend", "cli", "plots"}, mid
    assert [m for m, deps in GRAPH.items() if "cli" in deps] == ["__main__"]


def test_router_holds_no_file_format_or_budget_code():
    src = (CORE / "router.py").read_text()
    for banned in ("safetensors", "import json", "def load_router", "def save_router", "def budget_mixture",
                   "def calibrate", "class Budget", "extend"):
        assert banned not in src, banned


def test_evaluate_draws_nothing():
    assert "PIL" not in (CORE / "evaluate.py").read_text()


def test_nodes_raise_only_the_projects_error():
    for f in (ROOT / "nodes").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                assert getattr(exc, "id", None) == "RouterError", f"{f.name}:{node.lineno}"
            if isinstance(node, ast.ExceptHandler):
                assert node.type is not None and getattr(node.type, "id", "") != "Exception", f"{f.name}:{node.lineno}"


def test_no_product_file_reaches_outside_the_repository():
    product = list(CORE.rglob("*.py")) + list((ROOT / "nodes").glob("*.py")) + list((ROOT / "scripts").glob("*.py"))
    product.append(ROOT / "__init__.py")
    for f in product:
        assert not re.search(r"\.\./shared|\"shared\"|'shared'", f.read_text()), f


def test_storage_is_the_base_layer():
    """storage.* (the one file gate, locked append, line reader, prompt reader) sits in layer 1 with errors and
    validate: it imports nothing else of the core, and the old fileutil home is gone."""
    storage = {m for m in GRAPH if m == "storage" or m.startswith("storage.")}
    assert {"storage.files", "storage.lines", "storage.prompts", "storage.text"} <= storage
    for m in storage:
        assert all(d in {"errors", "validate"} or d.startswith("storage") for d in GRAPH[m]), (m, GRAPH[m])
    assert "fileutil" not in MODULES
