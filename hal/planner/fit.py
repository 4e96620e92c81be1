"""Does an estimate fit a device, and how far can batch or context grow before it does not.

A device is a catalogue :class:`Accelerator`, a :class:`hal.MemoryInfo` from a backend (total
and free), or a byte count.  Under tensor parallelism of degree N the estimate is already per
device (``estimate(..., tensor_parallel=N)``), so the same check applies to each device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hal.contract import MemoryInfo
from hal.errors import ConfigError
from hal.planner.catalogue import Accelerator
from hal.planner.estimate import Breakdown, estimate
from hal.planner.models import ModelSpec, resolve

Device = Accelerator | MemoryInfo | int


class Headroom:
    """The checks of bytes needed against a device's total and free memory, for any fit row."""

    needed: int
    total: int
    free: int

    @property
    def fits_total(self) -> bool:
        """Fits in the device's whole memory (an empty device)."""
        return self.needed <= self.total

    @property
    def fits_free(self) -> bool:
        """Fits in the memory free right now."""
        return self.needed <= self.free

    @property
    def headroom(self) -> int:
        """Free bytes left after loading (negative: short by that much)."""
        return self.free - self.needed


@dataclass(frozen=True)
class Fit(Headroom):
    """An estimate against one device: the bytes needed, the device's total and free memory."""

    device: str
    needed: int
    total: int
    free: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"device": self.device, "needed": self.needed, "total": self.total,
                "free": self.free, "fits_total": self.fits_total, "fits_free": self.fits_free,
                "headroom": self.headroom}


def capacity(device: Device) -> tuple[str, int, int]:
    """(label, total, free) of a device; a catalogue card is taken as empty."""
    if isinstance(device, Accelerator):
        return device.name, device.memory_bytes, device.memory_bytes
    if isinstance(device, MemoryInfo):
        return device.source or "device", device.total, device.free
    if isinstance(device, int) and not isinstance(device, bool) and device > 0:
        return f"{device} bytes", device, device
    raise ConfigError(f"device {device!r} is not an accelerator, MemoryInfo or byte count")


def fits(breakdown: Breakdown, device: Device) -> Fit:
    """Compare an estimate's total with a device's total and free memory."""
    label, total, free = capacity(device)
    return Fit(label, breakdown.total, total, free)


def _largest(lo: int, hi: int, ok: Any) -> int:
    """Largest n in [lo, hi] with ok(n) true, given ok is monotone; lo - 1 when none."""
    if not ok(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_batch(model: str | int | ModelSpec | Mapping[str, Any], device: Device, *,
              context: int = 4096, use_free: bool = True, limit: int = 1 << 20,
              **kwargs: Any) -> int:
    """The largest batch at ``context`` tokens that fits (0 when batch 1 does not)."""
    spec = resolve(model)
    _, total, free = capacity(device)
    room = free if use_free else total

    def ok(batch: int) -> bool:
        return estimate(spec, batch=batch, context=context, **kwargs).total <= room

    return max(0, _largest(1, limit, ok))


def max_context(model: str | int | ModelSpec | Mapping[str, Any], device: Device, *,
                batch: int = 1, use_free: bool = True, limit: int | None = None,
                **kwargs: Any) -> int:
    """The most tokens of context that fit at ``batch`` (0 when one token does not).

    ``limit`` defaults to 16M tokens; the model's own position limit is not applied here.
    """
    spec = resolve(model)
    _, total, free = capacity(device)
    room = free if use_free else total

    def ok(context: int) -> bool:
        return estimate(spec, batch=batch, context=context, **kwargs).total <= room

    return max(0, _largest(1, limit or (1 << 24), ok))
