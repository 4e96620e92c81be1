"""Memory figures that mean the same on every backend: info, summary, empty_cache, track.

Everything asks the selected backend (or the backend owning ``device``) through the Backend
contract, and ``memory()`` through the plugin boundary (checked, bounded in time).  On the
host CPU, allocated/peak are the process's resident set and its high-water mark,
and total/free are the host's (or its memory cgroup's) figures; ``source`` says so.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from hal.contract import Backend, MemoryInfo
from hal.errors import ConfigError, DeviceUnavailableError, PluginError, renamed_attribute
from hal.parse import parse_int
from hal.selection import list_backends, select
from hal.units import format_bytes
from hal.validate import MAX_DEVICES, TIMEOUT_ENV, fetch_memory

if TYPE_CHECKING:
    import torch

DeviceLike = Union[None, int, str, "torch.device", Backend]


def resolve_device(device: DeviceLike = None) -> tuple[Backend, int]:
    """Backend and index for ``device``: None (selected), an index, a device, or a Backend.

    An index the backend does not have (``42``, ``cpu:7`` on a one-device host) is a
    ConfigError, and a backend that is not available a DeviceUnavailableError with its reason.
    """
    if device is None:
        sel = select()
        return sel.backend, sel.index or 0
    if isinstance(device, Backend):
        return device, 0
    torch = sys.modules.get("torch")  # a torch.device implies torch is imported
    is_torch_device = torch is not None and isinstance(device, torch.device)
    if isinstance(device, bool) or not (isinstance(device, (int, str)) or is_torch_device):
        raise ConfigError(f"device {device!r} is not a device; expected an index, a device "
                          "string such as 'cpu' or 'name:0', a torch.device or a hal.Backend")
    sel = select()
    if isinstance(device, int):
        if device < 0:
            raise ConfigError(f"device index {device} is negative; expected 0 or more")
        return _known(sel, sel.backend, device, str(device))
    text = str(device)
    kind, _, idx = text.strip().lower().partition(":")
    try:
        index = parse_int("device index", idx, hi=MAX_DEVICES) if idx else None
    except ConfigError:
        raise ConfigError(f"device {text[:80]!r}: index {idx[:20]!r} is not a non-negative "
                          f"integer (ASCII digits, at most {MAX_DEVICES})") from None
    backends = [sel.backend, *(b for b in list_backends() if b is not sel.backend)]
    for b in backends:
        if kind in (b.name.lower(), b.device_type.lower()):
            if index is None:
                index = (sel.index or 0) if b is sel.backend else 0
            return _known(sel, b, index, text)
    names = sorted({b.name for b in backends} | {b.device_type for b in backends})
    raise ConfigError(f"device {text[:80]!r}: no loaded backend drives it; accepted: "
                      f"{', '.join(names)}")


def _known(sel: Any, backend: Backend, index: int, text: str) -> tuple[Backend, int]:
    """``(backend, index)`` once selection's probe says the backend is there and has ``index``."""
    probe = next((c for c in sel.candidates if c.name == backend.name), None)
    if probe is None:
        return backend, index
    if not probe.available:
        raise DeviceUnavailableError(f"{backend.name}: {probe.reason}")
    count = max(probe.device_count, 1)
    if index >= count:
        raise ConfigError(f"device {text[:80]!r}: {backend.name} has {count} device(s) here "
                          f"(index 0..{count - 1})")
    return backend, index


def _memory(backend: Backend, index: int) -> MemoryInfo:
    """``backend.memory(index)`` through the plugin boundary: checked, bounded in time."""
    outcome = fetch_memory(backend, index)
    if outcome.value is None:
        why = outcome.describe("it").replace(" (recorded, hal keeps running)", "")
        if outcome.state == "hung":
            why += f" ({TIMEOUT_ENV})"
        raise PluginError(f"backend {backend.name!r}: memory({index}) gave no usable answer "
                          f"({why}); `hal doctor` shows more", plugin=backend.name)
    return outcome.value


def info(device: DeviceLike = None) -> MemoryInfo:
    """Total, free, allocated, reserved and peak bytes of ``device`` (default: the selected)."""
    backend, index = resolve_device(device)
    return _memory(backend, index)


def summary(device: DeviceLike = None) -> str:
    """The memory figures of ``device`` as a few readable lines."""
    backend, index = resolve_device(device)
    m = _memory(backend, index)
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
    backend, index = resolve_device(device)
    gc.collect()
    backend.synchronize(index)
    backend.empty_cache()


def reset_peak(device: DeviceLike = None) -> None:
    """Restart the peak counter of ``device`` (on the CPU: the process RSS high-water mark)."""
    backend, index = resolve_device(device)
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
    backend, index = resolve_device(device)
    if collect:
        gc.collect()
    backend.synchronize(index)
    start = _memory(backend, index)
    backend.reset_peak_memory(index)
    tracker = Tracker(backend, index)
    try:
        yield tracker
    finally:
        backend.synchronize(index)
        last = _memory(backend, index)
        peak = max(last.peak, start.allocated)
        if collect:
            gc.collect()
            last = _memory(backend, index)  # after the collection; else the reading above serves
        end = last
        tracker.usage = Usage(start.allocated, max(peak, end.allocated), end.allocated,
                              end.source)


def __getattr__(name: str) -> Any:
    """``resolve``: the deprecated name of ``resolve_device`` (one release; warns once)."""
    return renamed_attribute(__name__, name, {"resolve": "resolve_device"})
