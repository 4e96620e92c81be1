"""No module-level import cycle among hal's modules: each module can be imported on its own.

Imports inside functions and under ``TYPE_CHECKING`` are lazy by design and not counted.
"""

from __future__ import annotations

import ast
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
