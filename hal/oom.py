"""Out-of-memory detection that means the same on every backend: ``hal.is_oom(exc)``.

An exception is an out-of-memory error when it is torch's own vendor-free
``torch.OutOfMemoryError`` or when any loaded backend's ``is_oom`` says so; nothing else.
Only the exception itself is judged, never its ``__cause__`` or ``__context__``.
"""

from __future__ import annotations

import sys


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` is an allocator's out-of-memory failure on any loaded backend."""
    if not isinstance(exc, BaseException):
        return False
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    from hal.selection import list_backends as backends

    for backend in backends():
        try:
            if backend.is_oom(exc):
                return True
        except Exception:  # a broken plugin must not turn an error into a different one
            continue
    return False
