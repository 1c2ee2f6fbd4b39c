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
    assert "router" in GRAPH and "decision.budget" in GRAPH["router"]  # the graph was really read
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH))


# The layer table of docs/architecture.md: a module imports only from its own layer or the layers below.
LAYERS = {
    1: {"__init__", "errors", "validate", "significance", "decision", "decision.rule",
        "storage", "storage.text", "storage.files", "storage.lines", "storage.prompts"},
    2: {"embed", "predictors", "memory", "added", "reference", "cascade", "decision.budget", "decision.hold",
        "decision.hold_state", "decision.explore", "decision.loop"},
    3: {"router", "explain"},
    4: {"router_file", "scored", "scored.record", "scored.png", "scored.dataset", "scored.store", "train",
        "train_run", "extend", "evaluate", "plots", "tables", "subset", "pool", "collect", "scoring",
        "decision_log", "report", "online"},
    5: {"cli", "__main__"},
}
NODE_LAYERS = {  # nodes/: every node file builds on schema and state only (one concern per file)
    1: {"schema"},
    2: {"state"},
    3: {"candidates", "export", "extend", "feedback", "measure", "pool", "route", "save", "scorer", "sweep",
        "train", "verify"},
    4: {"__init__"},
}
NODES = ROOT / "nodes"


def _layer_of(table: dict[int, set[str]]) -> dict[str, int]:
    return {m: n for n, mods in table.items() for m in mods}


def _node_imports(path: Path) -> tuple[set[str], set[str], list[str]]:
    """(sibling node modules, core modules, aliases ComfyUI's own ``nodes`` module is imported as)."""
    siblings, core, comfy = set(), set(), []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            comfy += [a.asname or a.name for a in node.names if a.name == "nodes"]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1:
                siblings.update([mod] if mod else [a.name for a in node.names])
            elif node.level == 2 and mod.startswith("cost_aware_router"):
                target = mod.removeprefix("cost_aware_router").lstrip(".")
                core.update(n for n in [target] + [f"{target}.{a.name}" for a in node.names] if n in MODULES)
            elif node.level == 0 and mod == "nodes":
                comfy.append("from nodes import")
    return siblings, core, comfy


def test_every_core_module_has_one_layer_and_imports_only_below():
    layer = _layer_of(LAYERS)
    assert sum(len(m) for m in LAYERS.values()) == len(layer), "a module is in two layers"
    assert set(layer) == MODULES, f"not in the table: {MODULES - set(layer)}; gone: {set(layer) - MODULES}"
    for mod, deps in GRAPH.items():
        above = {d for d in deps if layer[d] > layer[mod]}
        assert not above, f"{mod} (layer {layer[mod]}) imports {above} from a layer above"
    assert [m for m, deps in GRAPH.items() if "cli" in deps] == ["__main__"]


def test_every_node_module_has_one_layer_and_imports_only_below():
    layer = _layer_of(NODE_LAYERS)
    found = {p.stem for p in NODES.glob("*.py")}
    assert set(layer) == found, f"not in the table: {found - set(layer)}; gone: {set(layer) - found}"
    aliases = {}
    for path in NODES.glob("*.py"):
        siblings, core, comfy = _node_imports(path)
        unknown = siblings - found
        assert not unknown, f"nodes/{path.name} imports {unknown}"
        above = {s for s in siblings if layer[s] >= layer[path.stem] and path.stem != "__init__"}
        assert not above, f"nodes/{path.name} imports {above}: node files share only schema and state"
        assert core <= MODULES
        if comfy:
            aliases[path.name] = comfy
    # ComfyUI's own ``nodes`` module (same name as this folder) is imported in one place under one alias
    assert list(aliases.values()) == [["comfy_nodes"]], aliases


def test_the_docs_diagram_is_the_layer_table():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    found: dict[str, dict[int, set[str]]] = {"core": {}, "nodes": {}}
    for part, n, names in re.findall(r"^\s*(core|nodes) layer (\d) +│ (.+)$", text, flags=re.M):
        found[part].setdefault(int(n), set()).update(names.split())
    assert found["core"] == LAYERS
    assert found["nodes"] == NODE_LAYERS


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


def test_no_product_function_is_over_80_lines():
    """Long functions hide what they do (issue 21): the core and the nodes keep every function readable."""
    long = []
    for f in list(CORE.rglob("*.py")) + list(NODES.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long
