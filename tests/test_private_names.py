"""No module of hal (core, backends, the pytest plugin) reaches into another one's private names.

A private name (``_x``) is read or written only in the module that defines it; what another
module needs is a public function of the owner (``plugins.install_host``, ``fail_backend``,
``PluginHost.fail_plugin``, ``validate.check_text``).  Checked with the ast module: every
``from hal... import _x``, and every ``obj._x`` whose name this module does not define but
another hal module does.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("hal", "backends")

#: Private names of other projects that hal uses on purpose, each with why.
FOREIGN = {
    ("backends/cuda/backend.py", "cuda._device_count_nvml"):
        "torch.cuda's own NVML device count, read so that probe() never initialises CUDA",
    ("backends/rocm/backend.py", "cuda._device_count_amdsmi"):
        "torch.cuda's own amdsmi device count, read so that probe() never initialises HIP",
    ("hal/cuda_compat/_patches.py", "torch.utils._device"):
        "torch's device-constructor list lives only in torch.utils._device",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, globals, arguments, self attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
    return {n for n in names if _private(n)}


@functools.cache
def _modules() -> dict[str, ast.Module]:
    return {path.relative_to(ROOT).as_posix(): ast.parse(path.read_text(encoding="utf-8"))
            for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))}


def reach_ins(modules: dict[str, ast.Module]) -> list[str]:
    """``path:line: expression`` for each private name used outside the module defining it."""
    own = {path: _defined(tree) for path, tree in modules.items()}
    ours = set().union(*own.values())
    found = []
    for path, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("hal")):
                found += [f"{path}:{node.lineno}: from {node.module} import {a.name}"
                          for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                if node.attr in own[path] or node.attr not in ours:
                    continue  # its own name, or another project's (checked below)
                text = ast.unparse(node)
                if (path, text) not in FOREIGN:
                    found.append(f"{path}:{node.lineno}: {text}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    assert reach_ins(_modules()) == []


def test_the_check_sees_a_reach_in() -> None:
    modules = {
        "hal/a.py": ast.parse("_host = None\ndef _record(): pass\n"),
        "hal/b.py": ast.parse("from hal.a import _record\nfrom hal import a\na._host = 1\n"
                              "def f(host):\n    host._fail('x')\n"),
        "hal/c.py": ast.parse("class H:\n    def _fail(self):\n        self._fail()\n"),
    }
    assert reach_ins(modules) == ["hal/b.py:1: from hal.a import _record", "hal/b.py:3: a._host",
                                  "hal/b.py:5: host._fail"]


def test_every_foreign_exception_is_still_used() -> None:
    modules = _modules()
    used = {(path, ast.unparse(node)) for path, tree in modules.items() for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)}
    assert set(FOREIGN) <= used
