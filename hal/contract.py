"""The Backend contract (v1) and its value types: what every vendor plugin provides.

A backend is a small object that knows one vendor's runtime.  Only ``name``,
``device_type`` and ``probe`` are required; everything else has a default so a
minimal plugin is about a dozen lines.  Sizes are bytes; dtypes are ``torch.dtype``.
Heavy imports (torch, vendor SDKs) belong inside method bodies, never at module level.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from hal.errors import DeviceUnavailableError, HalError
from hal.versions import DistVersion, dist_version

if TYPE_CHECKING:
    import torch

    from hal.readings import Telemetry

T = TypeVar("T")
M = TypeVar("M")

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

    def optimize(self, model: M) -> M:
        """Optional: a vendor's model optimiser behind ``hal.optimize(model)``; default: unchanged.

        The result must be usable exactly like ``model`` (same call signature and outputs
        within tolerance); a backend without an optimiser keeps this default.
        """
        return model

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
        from hal.readings import from_memory

        return from_memory(self.memory(index))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} device_type={self.device_type!r}>"


def quiet(fn: Callable[[], T], default: T) -> T:
    """Call ``fn`` with warnings silenced; any exception gives ``default`` (probes never raise)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except Exception:
        return default


def is_collective_error(exc: BaseException) -> bool:
    """Does ``exc`` come from a collective library? Never an OOM to split: its communicator is broken."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and isinstance(exc, getattr(dist, "DistBackendError", ()))


#: torch.accelerator's memory calls (2.13 has them all, 2.8 none): memory() takes them together
#: or not at all, so its figures never mix two sources.
ACCELERATOR_MEMORY_CALLS = ("memory_allocated", "memory_reserved", "max_memory_allocated",
                            "get_memory_info")
#: Device-module name -> torch.accelerator's name, where they differ.
_ACCELERATOR_NAMES = {"set_device": "set_device_index", "mem_get_info": "get_memory_info"}


def _read_memory(calls: Any, info: Callable[[int], Any] | None, index: int, source: str,
                 fallback: str) -> MemoryInfo:
    """One device's MemoryInfo from ``calls``' allocator counters and ``info`` (free, total);
    without ``info`` (older runtimes) total from the device properties, free = total - reserved."""
    allocated = int(calls.memory_allocated(index))
    reserved = int(calls.memory_reserved(index))
    peak = int(calls.max_memory_allocated(index))
    if info is not None:
        free, total = (int(v) for v in info(index))
    else:
        total = int(calls.get_device_properties(index).total_memory)
        free, source = max(0, total - reserved), fallback
    return MemoryInfo(total, free, allocated, reserved, peak, source)


class DeviceModuleBackend(Backend):
    """Base of backends that drive a torch device module, found by ``device_type``.

    The module is ``torch.get_device_module(device_type)`` unless one is given (a fake in
    tests); memory and device calls go through ``torch.accelerator`` where the installed torch
    has them for this device type, else the module (older torch: docs/backends-accelerator.md); the
    environment is ``os.environ`` read at call time unless a mapping is given.
    Subclasses declare data (``oom_markers``, ``memory_source``, ...) and keep only what is
    theirs: probes, tables, findings.  Per-device calls that fail on an unavailable backend
    raise ``DeviceUnavailableError`` with the probe's reason (the probe runs only on failure).
    """

    #: Substrings of this runtime's out-of-memory messages (allocator, runtime, libraries).
    oom_markers: ClassVar[tuple[str, ...]] = ()
    #: Classes an out-of-memory error arrives as: the right words in any other class (a
    #: ValueError, an AssertionError) are user code talking, not an allocator.
    oom_types: ClassVar[tuple[type[BaseException], ...]] = (RuntimeError,)
    #: MemoryInfo.source of ``memory()``: with the device-wide ``mem_get_info``, and without it.
    memory_source: ClassVar[str] = (
        "total/free: mem_get_info (device-wide, other processes included); "
        "allocated/reserved/peak: this process's caching allocator")
    memory_fallback_source: ClassVar[str] = (
        "mem_get_info is missing in this runtime: total from get_device_properties()"
        ".total_memory, free = total - memory_reserved (this process only)")
    #: MemoryInfo.source of ``memory()`` when torch.accelerator answers (one path, every vendor).
    accelerator_memory_source: ClassVar[str] = (
        "total/free: torch.accelerator.get_memory_info (device-wide, other processes included); "
        "allocated/reserved/peak: this process's caching allocator (torch.accelerator)")
    #: Torch-free evidence of the vendor for the default ``hardware()``: (label, PCI vendor id),
    #: (/dev glob, what the node is) pairs, and the driver's version file.
    pci_vendor: ClassVar[tuple[str, int] | None] = None
    dev_evidence: ClassVar[tuple[tuple[str, str], ...]] = ()
    driver_version_file: ClassVar[str] = ""

    def __init__(self, module: Any = None, *, root: str = "/",
                 environ: Mapping[str, str] | None = None,
                 versions_of: DistVersion | None = None, version: Any = None,
                 accelerator: Any = None, **libraries: Any) -> None:
        """``module`` stands in for the device module, ``root`` for /, ``environ`` for
        os.environ, ``versions_of`` for installed-package lookup, ``version`` for torch.version,
        ``accelerator`` for torch.accelerator (False, or a stand-in module alone: not used);
        ``libraries`` for optional vendor libraries by name (False: not installed)."""
        self._module = module
        self._accelerator = False if accelerator is None and module is not None else accelerator
        self.root = root
        self._environ = environ
        self.versions_of: DistVersion = versions_of or dist_version
        self._version = version
        self._libraries: dict[str, Any] = dict(libraries)

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment this backend reads (os.environ, at call time, unless one was given)."""
        return os.environ if self._environ is None else self._environ

    def load_module(self) -> Any:
        """The real device module (imports torch): ``torch.get_device_module(device_type)``."""
        import torch

        return torch.get_device_module(self.device_type)

    @property
    def module(self) -> Any:
        """The device module (the one given, else ``load_module()``, loaded once)."""
        if self._module is None:
            self._module = self.load_module()
        return self._module

    @property
    def accelerator(self) -> Any:
        """torch.accelerator when it drives this backend's ``device_type``, else None (loaded once)."""
        if self._accelerator is None:
            self._accelerator = quiet(self.load_accelerator, None) or False
        return self._accelerator or None

    def load_accelerator(self) -> Any:
        """The real torch.accelerator if torch's current accelerator is ``device_type`` (no
        runtime init: the build's registration alone), else None."""
        import torch

        acc = getattr(torch, "accelerator", None)
        current = getattr(acc, "current_accelerator", None)
        device = current() if current is not None else None
        return acc if device is not None and str(device.type) == self.device_type else None

    def device_fn(self, module: Any, name: str) -> Any:
        """Device call ``name`` (the device module's name): torch.accelerator's where it has
        it (``set_device`` is its ``set_device_index``), else ``module``'s; None when neither."""
        acc = self.accelerator
        fn = getattr(acc, _ACCELERATOR_NAMES.get(name, name), None) if acc is not None else None
        return fn if fn is not None else getattr(module, name, None)

    def optional_module(self, key: str, name: str) -> Any:
        """The optional library ``key`` (the stand-in given at construction; False: not
        installed), else module ``name`` imported once; None when it is not installed."""
        value = self._libraries.get(key)
        if value is None:
            try:
                value = importlib.import_module(name)
            except Exception:  # absent, or installed without its native library
                value = False
            self._libraries[key] = value
        return value or None

    @property
    def version(self) -> Any:
        """The ``torch.version`` module (or the stand-in given): the build's runtimes."""
        if self._version is None:
            import torch.version

            self._version = torch.version
        return self._version

    @property
    def torch_version(self) -> str:
        """torch's version string as the build reports it, e.g. ``2.13.0+cpu``."""
        return str(getattr(self.version, "__version__", "") or "unknown")

    @contextmanager
    def device_call(self) -> Iterator[Any]:
        """Yield the device module for a per-device call; a failure while this backend is not
        available becomes ``DeviceUnavailableError`` with the probe's reason."""
        try:
            yield self.module
        except HalError:
            raise
        except Exception as exc:
            probe = quiet(self.probe, None)
            if probe is None or probe.available:
                raise
            raise DeviceUnavailableError(f"{self.name}: {probe.reason}") from exc

    def memory(self, index: int = 0) -> MemoryInfo:
        """Device-wide total/free plus this process's allocator counters: torch.accelerator's
        memory calls where torch has them all, else the device module's (``source`` says which)."""
        with self.device_call() as module:
            acc, note = self.accelerator, ""
            if acc is not None and all(getattr(acc, n, None) is not None
                                       for n in ACCELERATOR_MEMORY_CALLS):
                try:
                    return _read_memory(acc, acc.get_memory_info, index,
                                        self.accelerator_memory_source, "")
                except Exception as exc:  # an extension whose allocator torch cannot ask
                    note = f"torch.accelerator failed ({type(exc).__name__}); "
            return _read_memory(module, getattr(module, "mem_get_info", None), index,
                                note + self.memory_source, note + self.memory_fallback_source)

    def _device_call(self, name: str, *args: Any) -> None:
        with self.device_call() as module:
            fn = self.device_fn(module, name)
            if fn is None:
                raise AttributeError(f"neither torch.accelerator nor the {self.device_type!r} "
                                     f"device module has {name}()")
            fn(*args)

    def set_device(self, index: int) -> None:
        self._device_call("set_device", index)

    def synchronize(self, index: int | None = None) -> None:
        self._device_call("synchronize", index)

    def empty_cache(self) -> None:
        self._device_call("empty_cache")

    def reset_peak_memory(self, index: int | None = None) -> None:
        self._device_call("reset_peak_memory_stats", index)

    def is_oom(self, exc: BaseException) -> bool:
        """True when ``exc`` is one of ``oom_types`` and its text holds one of ``oom_markers``.

        A collective library's error is never claimed, whatever its text: its communicator is
        broken, and a smaller batch does not repair it.
        """
        if not isinstance(exc, self.oom_types) or is_collective_error(exc):
            return False
        text = str(exc)
        return any(marker in text for marker in self.oom_markers)

    def pci_evidence(self, vendor: str, vendor_id: int) -> list[Hardware]:
        """One ``pci`` Hardware record per display/accelerator PCI function of ``vendor_id``."""
        from hal.hardware import ACCELERATOR_CLASS, DISPLAY_CLASS, pci_devices

        return [
            Hardware(vendor, "pci", f"PCI device 0x{d.device_id:04x} (class 0x{d.class_id:06x}"
                     f", driver {d.driver or 'none'}) at {d.address}",
                     f"/sys/bus/pci/devices/{d.address}")
            for d in pci_devices(self.root, vendor_id, (DISPLAY_CLASS, ACCELERATOR_CLASS))
        ]

    def hardware(self) -> Sequence[Hardware]:
        """Evidence from the declared data: ``pci_vendor``'s PCI functions, ``dev_evidence``
        nodes and the ``driver_version_file`` (described by ``describe_driver``)."""
        if self.pci_vendor is None:
            return []
        from hal.hardware import dev_nodes, read_text

        vendor, vendor_id = self.pci_vendor
        found = self.pci_evidence(vendor, vendor_id)
        found += [Hardware(vendor, "dev", what, node) for pattern, what in self.dev_evidence
                  for node in dev_nodes(self.root, pattern)]
        text = read_text(self.root, self.driver_version_file) if self.driver_version_file else None
        if text:
            found.append(Hardware(vendor, "driver", self.describe_driver(text),
                                  self.driver_version_file))
        return found

    def describe_driver(self, text: str) -> str:
        """How ``hardware()`` shows the driver version file's text; default: its first line."""
        return text.splitlines()[0]


@dataclass(frozen=True)
class VisibleSpec:
    """A parsed visible-devices value: every device, a list of indices, or a list of id prefixes."""

    value: str | None
    kind: Literal["all", "indices", "ids"]
    indices: tuple[int, ...] = ()
    ids: tuple[str, ...] = ()
    prefix: str = ""  # for kind "ids": the id prefix the list starts with

    @property
    def hides_all(self) -> bool:
        """True when the value itself leaves no device (``""``, ``-1``, a repeat)."""
        return self.kind != "all" and not self.indices and not self.ids


def _strtoul(text: str) -> int:
    """The leading integer of ``text`` as C strtoul reads it in a device list, or -1."""
    end = 0
    while end < len(text) and (text[end].isdigit() or (end == 0 and text[end] in "+-")):
        end += 1
    digits = text[:end]
    return int(digits) if digits not in ("", "+", "-") and digits.isascii() else -1


def parse_visible(value: str | None, id_prefixes: Sequence[str] = ()) -> VisibleSpec:
    """Parse a visible-devices value as the device runtimes do (None: unset, all visible).

    A value starting with one of ``id_prefixes`` is a list of ids with that prefix (the first
    other entry ends it); otherwise a list of indices read like strtoul (``1gpu`` is 1, the
    first negative or non-number ends it).  A repeated entry hides everything.
    """
    if value is None:
        return VisibleSpec(None, "all")
    prefix = next((p for p in id_prefixes if value.startswith(p)), None)
    if prefix is not None:
        ids: list[str] = []
        for elem in value.split(","):
            if elem in ids:
                return VisibleSpec(value, "ids", prefix=prefix)
            if not elem.startswith(prefix):
                break
            ids.append(elem)
        return VisibleSpec(value, "ids", ids=tuple(ids), prefix=prefix)
    indices: list[int] = []
    for elem in value.split(","):
        x = _strtoul(elem.strip())
        if x in indices:
            return VisibleSpec(value, "indices")
        if x < 0:
            break
        indices.append(x)
    return VisibleSpec(value, "indices", indices=tuple(indices))


def resolve_visible(spec: VisibleSpec, count: int, ids: Sequence[str] | None = None,
                    strip: str = "") -> list[int] | None:
    """Positions (into ``count`` devices) that ``spec`` exposes, in its order.

    Indices stop at the first one ``>= count``.  Id entries match by unique prefix against
    ``ids`` (after removing ``strip`` from the entry); None when ``ids`` are unknown.
    """
    if spec.kind == "all":
        return list(range(count))
    if spec.kind == "indices":
        out = []
        for x in spec.indices:
            if x >= count:
                break
            out.append(x)
        return out
    if ids is None:
        return None
    positions: list[int] = []
    for entry in spec.ids:
        cand = (entry.replace(strip, "", 1) if strip else entry).lower()
        matches = [i for i, u in enumerate(ids) if u.lower().startswith(cand)]
        if len(matches) != 1:
            break
        if matches[0] in positions:
            return []
        positions.append(matches[0])
    return positions
