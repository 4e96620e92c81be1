"""hal inside the frameworks people already run: Lightning, Accelerate, transformers.

Each integration is its own module and imports its framework when that module is imported, never
before: ``import hal`` and ``import hal.integrations`` import neither torch nor any framework.

    import hal.integrations.lightning        # registers Trainer(accelerator="hal")
    from hal.integrations.accelerate import accelerator
    from hal.integrations.transformers import from_pretrained_kwargs
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hal.contract import Backend


def selected() -> tuple[Backend, int | None]:
    """The selected backend and device index (None for the host), as every integration uses them."""
    from hal.selection import select

    sel = select()
    return sel.backend, sel.index


def device_count() -> int:
    """How many devices the selected backend has here (the host counts as one)."""
    from hal.selection import select

    sel = select()
    if sel.backend.device_type == "cpu":
        return 1
    found = next((c for c in sel.candidates if c.name == sel.backend.name), None)
    return max(found.device_count if found is not None else 1, 1)
