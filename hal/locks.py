"""A process-wide lock that a forked child gets fresh, for hal's once-per-process caches.

Another thread of the parent may hold the lock at ``fork()``; the child would then wait forever
on a copy no thread of its own will release (plugin loading and selection both guard with one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import Protocol


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


class ForkSafeLock:
    """A ``with`` lock made by ``factory`` (Lock or RLock), made anew in a forked child."""

    def __init__(self, factory: Callable[[], _Lock]) -> None:
        self._factory = factory
        self._lock = factory()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        """A forked child gets a fresh lock: another thread of the parent may have held it."""
        self._lock = self._factory()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.release()
