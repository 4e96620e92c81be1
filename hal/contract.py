"""The Backend contract (v1) and its value types: what every vendor plugin provides.

A backend is a small object that knows one vendor's runtime.  Only ``name``,
``device_type`` and ``probe`` are required; everything else has a default so a
minimal plugin is about a dozen lines.  Sizes are bytes; dtypes are ``torch.dtype``.
Heavy imports (torch, vendor SDKs) belong inside method bodies, never at module level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import torch

    from hal.telemetry import Telemetry

#: Version of the plugin contract this module defines.
API_VERSION = 1

Severity = Literal["ok", "info", "warn", "error"]
SEVERITIES: tuple[Severity, ...] = ("ok", "info", "warn", "error")


@dataclass(frozen=True)
class Probe:
    """Whether a backend can run here, why (or why not), and how many devices it sees."""

    available: bool
    reason: str
    device_count: int = 0


@dataclass(frozen=True)
class DeviceInfo:
    """One visible device: its index among the visible ones, name, memory and capability."""

    index: int
    name: str
    total_memory: int
    capability: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MemoryInfo:
    """Memory of one device, in bytes; ``source`` says where the figures came from."""

    total: int
    free: int
    allocated: int
    reserved: int
    peak: int
    source: str = ""

    @property
    def used_fraction(self) -> float:
        """Fraction of the device's total memory that is not free (0.0 to 1.0)."""
        return 0.0 if self.total <= 0 else max(0.0, min(1.0, 1.0 - self.free / self.total))


@dataclass(frozen=True)
class Hardware:
    """Torch-free evidence of a vendor's hardware: a PCI function, a /dev node, a driver file."""

    vendor: str
    kind: str
    detail: str
    path: str = ""


@dataclass(frozen=True)
class Finding:
    """A doctor finding: what is wrong (or right), how bad, and the command that fixes it."""

    id: str
    severity: Severity
    message: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"finding severity {self.severity!r} is not one of {', '.join(SEVERITIES)}"
            )


class Backend:
    """Base class of every backend plugin; subclass it and set ``name``, ``device_type``, ``probe``.

    Defaults describe a device with no memory statistics and fp32 compute, so an
    outside vendor can start small and fill in members as its runtime allows.
    """

    api_version: ClassVar[int] = API_VERSION
    name: ClassVar[str] = ""
    device_type: ClassVar[str] = ""
    priority: ClassVar[int] = 10
    dist_backend: ClassVar[str] = "gloo"
    visible_devices_env: ClassVar[tuple[str, ...]] = ()

    def probe(self) -> Probe:
        """Say whether this backend can run here; cheap, no runtime initialisation, never raises."""
        raise NotImplementedError

    def devices(self) -> Sequence[DeviceInfo]:
        """One DeviceInfo per visible device; the default names them by index only."""
        count = self.probe().device_count
        return [DeviceInfo(index=i, name=f"{self.name}:{i}", total_memory=0) for i in range(count)]

    def memory(self, index: int = 0) -> MemoryInfo:
        """Memory figures of device ``index``; the default knows nothing and says so."""
        return MemoryInfo(0, 0, 0, 0, 0, source="not reported by this backend")

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        """Compute dtypes the hardware runs natively, best first; emulated ones do not count."""
        import torch

        return [torch.float32]

    def fast_dtypes(self, index: int = 0) -> Sequence[torch.dtype] | None:
        """Native low-precision dtypes that actually beat fp32 here; None: hal decides.

        hal counts an accelerator's native dtypes as fast and measures a host CPU's once.
        """
        return None

    def emulated_dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        """Dtypes the device runs only by emulation (slow): requesting one warns, not errors."""
        return []

    def torch_device(self, index: int | None = None) -> torch.device:
        """The torch.device for device ``index`` of this backend (no index: the type alone)."""
        import torch

        return torch.device(self.device_type if index is None else f"{self.device_type}:{index}")

    def set_device(self, index: int) -> None:
        """Make ``index`` the current device of this process (used per rank); default: nothing."""

    def synchronize(self, index: int | None = None) -> None:
        """Wait for queued work on the device to finish; default: nothing to wait for."""

    def empty_cache(self) -> None:
        """Return cached, unused device memory to the driver; default: no cache."""

    def reset_peak_memory(self, index: int | None = None) -> None:
        """Restart the peak-memory counter of the device; default: no counter."""

    def is_oom(self, exc: BaseException) -> bool:
        """Does ``exc`` mean this backend's allocator ran out of memory?"""
        return False

    def hardware(self) -> Sequence[Hardware]:
        """Torch-free evidence of this vendor's hardware on the machine (sysfs, /dev, drivers)."""
        return []

    def versions(self) -> Mapping[str, str]:
        """Driver, runtime and extension versions, for reports."""
        return {}

    def findings(self) -> Sequence[Finding]:
        """Backend-specific doctor findings (misconfigurations this vendor knows about)."""
        return []

    def telemetry(self, index: int = 0) -> Telemetry:
        """Live figures of device ``index`` for ``hal watch``: torch-free, no device context.

        The default knows only ``memory()``; vendors override it with their management library.
        """
        from hal.telemetry import from_memory

        return from_memory(self.memory(index))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} device_type={self.device_type!r}>"
