"""Memory figures that mean the same on every backend: info, summary, empty_cache, track.

Everything asks the selected backend (or the backend owning ``device``) through the Backend
contract.  On the host CPU, allocated/peak are the process's resident set and its high-water
mark, and total/free are the host's (or its memory cgroup's) figures; ``source`` says so.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from hal.contract import Backend, MemoryInfo
from hal.errors import ConfigError
from hal.selection import list_backends, select
from hal.units import format_bytes

if TYPE_CHECKING:
    import torch

DeviceLike = Union[None, int, str, "torch.device", Backend]


def resolve(device: DeviceLike = None) -> tuple[Backend, int]:
    """Backend and index for ``device``: None (selected), an index, a device, or a Backend."""
    if device is None:
        sel = select()
        return sel.backend, sel.index or 0
    if isinstance(device, Backend):
        return device, 0
    sel = select()
    backends = list_backends
    if isinstance(device, bool):
        raise ConfigError(f"device {device!r} is not a device; expected an index or a device")
    if isinstance(device, int):
        if device < 0:
            raise ConfigError(f"device index {device} is negative; expected 0 or more")
        return sel.backend, device
    text = str(device)
    kind, _, idx = text.partition(":")
    if idx and not idx.isdigit():
        raise ConfigError(f"device {text!r}: index {idx!r} is not a non-negative integer")
    index = int(idx) if idx else (sel.index or 0)
    if kind in (sel.backend.name, sel.backend.device_type):
        return sel.backend, index
    for b in backends():
        if kind in (b.name, b.device_type):
            return b, index
    names = sorted({b.name for b in backends()} | {b.device_type for b in backends()})
    raise ConfigError(f"device {text!r}: no loaded backend drives it; accepted: {', '.join(names)}")


def info(device: DeviceLike = None) -> MemoryInfo:
    """Total, free, allocated, reserved and peak bytes of ``device`` (default: the selected)."""
    backend, index = resolve(device)
    return backend.memory(index)


def summary(device: DeviceLike = None) -> str:
    """The memory figures of ``device`` as a few readable lines."""
    backend, index = resolve(device)
    m = backend.memory(index)
    where = backend.device_type if backend.device_type == "cpu" else f"{backend.device_type}:{index}"
    lines = [
        f"{backend.name} ({where}) memory",
        f"  total      {format_bytes(m.total)}",
        f"  free       {format_bytes(m.free)} ({100 * (1 - m.used_fraction):.0f}% of total)",
        f"  allocated  {format_bytes(m.allocated)}",
        f"  reserved   {format_bytes(m.reserved)}",
        f"  peak       {format_bytes(m.peak)}",
    ]
    if m.source:
        lines.append(f"  source: {m.source}")
    return "\n".join(lines)


def empty_cache(device: DeviceLike = None) -> None:
    """Collect garbage, wait for queued work, and return cached unused memory to the driver."""
    backend, index = resolve(device)
    gc.collect()
    backend.synchronize(index)
    backend.empty_cache()


def reset_peak(device: DeviceLike = None) -> None:
    """Restart the peak counter of ``device`` (on the CPU: the process RSS high-water mark)."""
    backend, index = resolve(device)
    backend.reset_peak_memory(index)


@dataclass(frozen=True)
class Usage:
    """What a ``track()`` block did: bytes at its start, its peak, what stayed after it."""

    before: int
    peak: int
    after: int
    source: str = ""

    @property
    def peak_increase(self) -> int:
        """How far the peak rose above the allocation at the start of the block."""
        return max(0, self.peak - self.before)

    @property
    def retained(self) -> int:
        """Bytes still allocated after the block that were not before it (a leak check)."""
        return self.after - self.before

    def __str__(self) -> str:
        return (f"peak {format_bytes(self.peak)} (+{format_bytes(self.peak_increase)}), "
                f"retained {'-' if self.retained < 0 else '+'}{format_bytes(abs(self.retained))}")


class Tracker:
    """Handle yielded by ``track()``; ``usage`` is filled in when the block ends."""

    def __init__(self, backend: Backend, index: int) -> None:
        self.backend = backend
        self.index = index
        self.usage: Usage | None = None

    def __getattr__(self, name: str) -> Any:
        if name in ("before", "peak", "after", "peak_increase", "retained"):
            if self.usage is None:
                raise AttributeError(f"{name} is known only after the track() block ends")
            return getattr(self.usage, name)
        raise AttributeError(name)


@contextmanager
def track(device: DeviceLike = None, *, collect: bool = True) -> Iterator[Tracker]:
    """Measure a block: the peak inside it and what stayed allocated after it (a leak check).

    The peak counter is reset on entry, so nested blocks share it. With ``collect`` the
    garbage collector runs before each reading so that unreachable cycles do not count.
    """
    backend, index = resolve(device)
    if collect:
        gc.collect()
    backend.synchronize(index)
    start = backend.memory(index)
    backend.reset_peak_memory(index)
    tracker = Tracker(backend, index)
    try:
        yield tracker
    finally:
        backend.synchronize(index)
        last = backend.memory(index)
        peak = max(last.peak, start.allocated)
        if collect:
            gc.collect()
            last = backend.memory(index)  # after the collection; else the reading above serves
        end = last
        tracker.usage = Usage(start.allocated, max(peak, end.allocated), end.allocated,
                              end.source)
