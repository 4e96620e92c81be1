"""Fork safety for hal's once-per-process state: locks a forked child gets fresh, and the imports
a forked child can never finish.

Another thread of the parent may hold a lock at ``fork()``; the child would then wait forever
on a copy no thread of its own will release (plugin loading and selection both guard with one).
The same holds for Python's per-module import locks, which hal cannot renew: a module another
thread was importing at the fork stays half-initialised in the child, and importing it there
waits forever.  ``orphaned_import`` names such a module so hal can refuse in one line instead.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
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


#: In a forked child: the modules another thread of the parent was importing at the fork.
_orphaned: frozenset[str] = frozenset()


def _initializing(module: object) -> bool:
    """Is ``module`` half-imported (its top-level code still running somewhere)?"""
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _imports_of_other_threads() -> Iterator[str]:
    """Modules being imported now by a thread other than this one.  CPython keeps each module's
    import lock, with its owner's thread id, in ``importlib._bootstrap._module_locks``; where an
    interpreter does not, a half-imported module is counted as another thread's (a fork from a
    module's own top-level import code is the only case that misjudges)."""
    me = threading.get_ident()
    locks = getattr(sys.modules.get("importlib._bootstrap"), "_module_locks", None)
    for name, module in list(sys.modules.items()):
        if not _initializing(module):
            continue
        ref = locks.get(name) if isinstance(locks, dict) else None
        lock = ref() if callable(ref) else None
        if getattr(lock, "owner", None) != me:
            yield name


def _note_orphaned_imports() -> None:
    global _orphaned
    _orphaned = frozenset(_imports_of_other_threads())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_orphaned_imports)


def orphaned_import(*packages: str) -> str | None:
    """In a child forked while another thread of the parent was importing one of ``packages`` (or
    a submodule of one): that module's name, as its import can never finish here; else None."""
    for name in sorted(_orphaned):
        if name.split(".")[0] in packages and _initializing(sys.modules.get(name)):
            return name
    return None
