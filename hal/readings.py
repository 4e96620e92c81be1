"""The ``Telemetry`` value a backend's ``telemetry(index)`` returns, and the helpers vendors build
it with (``Readers``, ``process_usage``, ``figure_or_none``).

What vendors' ``*-smi`` tools show (memory, utilisation, power, temperature, clocks, processes),
torch-free.  This module imports only hal.errors (a leaf), so the contract layer can name it without
pulling in selection; the sampler and ``watch()`` live in :mod:`hal.telemetry`.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from hal.errors import describe_exception

if TYPE_CHECKING:
    from hal.contract import MemoryInfo

__all__ = [
    "SCHEMA",
    "ProcessUsage",
    "Readers",
    "Telemetry",
    "figure_or_none",
    "from_memory",
    "process_usage",
    "unknown",
]

#: Version of the telemetry JSON form (``Telemetry.as_dict`` and ``hal watch --json``).
SCHEMA = "hal.watch/1"


@dataclass(frozen=True)
class ProcessUsage:
    """One process using a device: pid, owner, the device memory it holds (bytes), its command."""

    pid: int
    user: str | None = None
    memory: int | None = None
    command: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"pid": self.pid, "user": self.user, "memory": self.memory, "command": self.command}


@dataclass(frozen=True)
class Telemetry:
    """One reading of one device; every figure is None where the vendor cannot say.

    Units: bytes, utilisation as a fraction 0..1, watts, degrees Celsius, MHz.  ``processes``
    is None when unknown and ``()`` when the vendor says no process uses the device.
    ``source`` names where the figures came from (a management library, ``/proc/stat``, ...).
    """

    source: str
    name: str | None = None
    memory_used: int | None = None
    memory_total: int | None = None
    utilization: float | None = None
    unit_utilization: tuple[float, ...] | None = None  # per core / engine, 0..1 each
    power: float | None = None
    power_limit: float | None = None
    temperature: float | None = None
    clock: float | None = None  # compute clock, MHz
    memory_clock: float | None = None  # MHz
    processes: tuple[ProcessUsage, ...] | None = None

    @property
    def memory_fraction(self) -> float | None:
        """memory_used / memory_total (0..1), None when either is unknown."""
        if self.memory_used is None or not self.memory_total:
            return None
        return max(0.0, min(1.0, self.memory_used / self.memory_total))

    def as_dict(self) -> dict[str, Any]:
        """JSON form: the fields by name, processes as a list of objects."""
        return {
            "name": self.name,
            "memory_used": self.memory_used,
            "memory_total": self.memory_total,
            "utilization": self.utilization,
            "unit_utilization": None if self.unit_utilization is None
            else list(self.unit_utilization),
            "power": self.power,
            "power_limit": self.power_limit,
            "temperature": self.temperature,
            "clock": self.clock,
            "memory_clock": self.memory_clock,
            "processes": None if self.processes is None
            else [p.as_dict() for p in self.processes],
            "source": self.source,
        }


def unknown(why: str) -> Telemetry:
    """A reading with no figures that says why (``source`` starts with ``none:``)."""
    return Telemetry(source=f"none: {' '.join(why.split())}")


R = TypeVar("R")


def figure_or_none(fn: Callable[..., R], *args: Any) -> R | None:
    """``fn(*args)``, or None when the device library refuses that one figure (not supported,
    no permission, device lost): one missing figure must not cost the rest of a reading."""
    try:
        return fn(*args)
    except Exception:
        return None


class Readers(Generic[R]):
    """One stateful reader per backend object (rates need history, a library stays open), each used
    under its own lock; what a reader raises becomes a ``none: <label>: ...`` reading."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._entries: weakref.WeakKeyDictionary[Any, tuple[threading.Lock, R]] = (
            weakref.WeakKeyDictionary())

    def read(self, backend: Any, make: Callable[[], R], use: Callable[[R], Telemetry]) -> Telemetry:
        """``use`` on ``backend``'s reader, made by ``make`` on first use (what ``make`` raises passes)."""
        entry = self._entries.get(backend)
        if entry is None:
            entry = self._entries.setdefault(backend, (threading.Lock(), make()))
        lock, reader = entry
        with lock:
            try:
                return use(reader)
            except Exception as exc:  # a device the source cannot read: no figures, and why
                return unknown(f"{self.label}: {describe_exception(exc)}")

    def forget(self, backend: Any) -> None:
        """Drop ``backend``'s reader: the next read makes a new one."""
        self._entries.pop(backend, None)


def from_memory(mem: MemoryInfo) -> Telemetry:
    """The default telemetry: memory figures only, from a backend's ``memory()``."""
    total = mem.total if mem.total > 0 else None
    used = max(0, mem.total - mem.free) if total is not None else None
    return Telemetry(source=f"memory() only ({mem.source})" if mem.source else "memory() only",
                     memory_used=used, memory_total=total)


# -- process details from /proc -----------------------------------------------------------

_users: dict[int, str] = {}


def _user(uid: int) -> str:
    name = _users.get(uid)
    if name is None:
        try:
            import pwd

            name = pwd.getpwuid(uid).pw_name
        except (KeyError, ImportError):
            name = str(uid)
        _users[uid] = name
    return name


def _command(proc: str) -> str | None:
    with open(os.path.join(proc, "cmdline"), "rb") as f:
        raw = f.read(4096)
    if raw:
        return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    with open(os.path.join(proc, "comm"), "rb") as f:  # kernel threads have no cmdline
        return "[" + f.read().strip().decode("utf-8", "replace") + "]"


def process_usage(pids: Iterable[tuple[int, int | None]], root: str = "/",
                  limit: int | None = None) -> tuple[ProcessUsage, ...]:
    """ProcessUsage for (pid, device bytes) pairs, largest first, with user and command from /proc.

    A process that exits between the vendor's listing and this read is skipped, never an error;
    one in another PID namespace (a container) keeps its pid with user and command unknown.
    """
    pairs = sorted(pids, key=lambda p: -(p[1] or 0))
    out: list[ProcessUsage] = []
    for pid, mem in pairs:
        if limit is not None and len(out) >= limit:
            break
        proc = os.path.join(root, "proc", str(pid))
        try:
            uid = os.stat(proc).st_uid
            command = _command(proc)
        except FileNotFoundError:
            if os.path.isdir(os.path.join(root, "proc", "self")):
                continue  # it exited meanwhile (or lives in another PID namespace)
            out.append(ProcessUsage(pid, None, mem, None))
            continue
        except OSError:  # hidepid=2 and the like: the process is there, its details are not
            out.append(ProcessUsage(pid, None, mem, None))
            continue
        out.append(ProcessUsage(pid, _user(uid), mem, command))
    return tuple(out)


