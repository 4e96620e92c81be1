"""One way to fetch a backend's devices() and memory(): hal.validate's checked calls (issue 25 item 1).

Inventory (`hal devices`, the doctor), the planner's local probe, `hal bench`, hal.memory,
find_executable_batch_size and the doctor's system facts all go through
``fetch_devices``/``fetch_memory``, so a plugin's garbage is refused the same way everywhere.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import hal
from hal import inventory
from hal.doctor.report import system_section
from hal.errors import PluginError

#: Where hal may touch devices()/memory() itself, and why it is not a fetch that bypasses the boundary.
ALLOWED = {
    "validate.py": "the boundary itself",
    "contract.py": "the default telemetry() reads its own memory(), inside its own plugin call",
    "cuda_compat/_namespace.py": "the torch.cuda shim answers per call on the selected backend "
                                 "(a hot path, as set_device and synchronize are)",
    "cuda_compat/_target.py": "the same shim",
    "testing/conformance.py": "the conformance suite calls the plugin directly, by design",
    "testing/contract.py": "the contract recorder exercises the fake module directly",
}
_RECEIVER = re.compile(r"(^|\.)(backend|b|cpu)$")


def _direct_uses(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        attr = node.func if call else node  # type: ignore[attr-defined]
        if not isinstance(attr, ast.Attribute) or attr.attr not in ("devices", "memory"):
            continue
        if call or _RECEIVER.search(ast.unparse(attr.value)):
            lines.append(node.lineno)
    return lines


def test_no_module_fetches_devices_or_memory_around_the_boundary() -> None:
    root = Path(hal.__file__).parent
    found = {p.relative_to(root).as_posix(): _direct_uses(p) for p in sorted(root.rglob("*.py"))}
    found = {rel: lines for rel, lines in found.items() if lines}
    assert set(found) <= set(ALLOWED), {k: v for k, v in found.items() if k not in ALLOWED}


class Exits(hal.Backend):
    """A plugin backend whose devices() and memory() call sys.exit."""

    name, device_type, priority = "exits", "meta", -1

    def probe(self) -> hal.Probe:
        return hal.Probe(True, "here", 1)

    def devices(self) -> list[hal.DeviceInfo]:
        raise SystemExit(3)

    def memory(self, index: int = 0) -> hal.MemoryInfo:
        raise SystemExit(4)


class Garbage(Exits):
    name = "garbage"

    def devices(self) -> list[hal.DeviceInfo]:
        return [hal.DeviceInfo(0, "toy", 1 << 30)]

    def memory(self, index: int = 0) -> hal.MemoryInfo:
        return "lots"  # type: ignore[return-value]


@pytest.mark.parametrize(("backend", "why"), [
    (Exits(), "devices() called sys.exit(3)"),
    (Garbage(), "memory() returned str, expected hal.MemoryInfo"),
])
def test_inventory_memory_and_the_doctor_refuse_a_plugin_the_same_way(backend: hal.Backend,
                                                                      why: str) -> None:
    described = inventory.describe_backend(backend)
    assert not described["available"] and why in described["reason"], described
    memory_why = why if isinstance(backend, Garbage) else "it called sys.exit(4)"
    with pytest.raises(PluginError, match=re.escape(memory_why)):
        hal.memory.info(backend)
    with pytest.raises(PluginError, match=re.escape(why)):
        system_section(backend)  # the doctor's system facts: a finding, not the child's death
