"""No module-level import cycle among hal's modules: each module can be imported on its own.

Imports inside functions and under ``TYPE_CHECKING`` are lazy by design and not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hal

ROOT = Path(hal.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["hal", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else []:
            if isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (sub.level - 1)]
                    module = ".".join([*base, sub.module] if sub.module else base)
                else:
                    module = sub.module or ""
                found.add(module)
                found.update(f"{module}.{a.name}" for a in sub.names)
    return {m for m in found if m == "hal" or m.startswith("hal.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = _top_level_imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_graph_sees_real_imports() -> None:
    graph = _graph()
    assert "hal.errors" in graph["hal.selection"]  # the checker must not pass by seeing nothing


def test_no_module_level_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _all_imports(name: str, modules: dict[str, Path]) -> set[str]:
    """Every hal module ``name`` imports anywhere: top level, inside functions, TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(modules[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m in modules and m != name}


def test_the_contract_layer_reaches_no_selection_even_lazily() -> None:
    # The Telemetry value (hal.readings) is apart from the sampler (hal.telemetry), which calls
    # selection and memory: the contract and the boundary never close a circle through them.
    modules = {_module_name(p): p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts}
    for start in ("hal.contract", "hal.readings", "hal.validate"):
        via: dict[str, str] = {start: ""}
        todo = [start]
        while todo:
            here = todo.pop()
            for dep in _all_imports(here, modules) - via.keys():
                via[dep] = here
                todo.append(dep)
        assert "hal.telemetry" in _all_imports("hal.commands.watch", modules)  # it sees imports
        chain, node = [], "hal.selection"
        while node in via and node != start:
            chain.append(node)
            node = via[node]
        assert "hal.selection" not in via, f"{start} -> " + " -> ".join(reversed(chain))


def test_importing_the_contract_leaves_selection_out() -> None:
    code = ("import sys, hal.contract, hal.readings; "
            "print(sorted(m for m in ('hal.selection', 'hal.telemetry', 'hal.memory') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60)
    assert out.stdout.strip() == "[]", out
