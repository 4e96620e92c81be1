"""``hal.optimize(model)``: the selected backend's optional, vendor-specific model optimisation.

A backend may define ``optimize(model) -> model``; hal calls it when present and otherwise
returns the model unchanged, so model code can always call ``hal.optimize`` and stay portable.
The hook must return a model usable exactly like the one given (same call signature).
"""

from __future__ import annotations

from typing import Any, TypeVar

M = TypeVar("M")


def optimize(model: M) -> M:
    """The model optimised by the selected backend's ``optimize`` hook, or ``model`` itself."""
    from hal.selection import get_backend

    hook: Any = getattr(get_backend(), "optimize", None)
    if not callable(hook):
        return model
    result: M = hook(model)
    return result
