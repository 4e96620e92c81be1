"""A fake ``torch.cuda`` (CUDA and HIP flavours) and ``torch.version``, from spec sheets.

Every public attribute of the fakes mirrors a real name and signature (``hal.testing.contract``
checks the ones backends touch).  Test controls (allocating memory, marking CUDA initialised) live
outside the fake modules, in :func:`state`, so the fakes carry no invented API.  Which devices the
visible-devices variables leave is decided by torch's own parser (``torch.cuda.
_parse_visible_devices``), never by a copy of hal's: tests/data/visible_devices_cases.json holds
the cases both are checked against.
"""

from __future__ import annotations

import types
import uuid as uuid_mod
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from hal.backends.cuda.testing.specs import SPECS, GpuSpec, MiB, device_uuid, pci_bus, uuid_bytes


class FakeCUuuid:
    """Mirrors torch._C._CUuuid: ``bytes`` and a dashed hex ``str()`` without the GPU- prefix."""

    def __init__(self, raw: bytes) -> None:
        self.bytes = raw

    def __str__(self) -> str:
        return str(uuid_mod.UUID(bytes=self.bytes))

    def __repr__(self) -> str:
        return str(self)


class FakeCudaDeviceProperties:
    """Mirrors torch._C._CudaDeviceProperties (the attribute names of the real pybind class)."""

    def __init__(self, spec: GpuSpec, index: int) -> None:
        self.name = spec.name
        self.major = spec.major
        self.minor = spec.minor
        self.multi_processor_count = spec.multi_processor_count
        self.total_memory = spec.total_memory
        self.is_integrated = 0
        self.is_multi_gpu_board = 0
        self.max_threads_per_multi_processor = spec.max_threads_per_multi_processor
        self.gcnArchName = spec.gcnArchName or "NVIDIA"
        self.warp_size = spec.warp_size
        self.uuid = FakeCUuuid(uuid_bytes(spec, index))
        self.L2_cache_size = spec.L2_cache_size
        self.pci_domain_id = 0
        self.pci_bus_id = pci_bus(index)
        self.pci_device_id = 0

    def __repr__(self) -> str:
        arch = f", gcnArchName='{self.gcnArchName}'" if self.gcnArchName != "NVIDIA" else ""
        return (f"_CudaDeviceProperties(name='{self.name}', major={self.major}, "
                f"minor={self.minor}{arch}, total_memory={self.total_memory // MiB}MB, "
                f"multi_processor_count={self.multi_processor_count}, uuid={self.uuid}, "
                f"L2_cache_size={self.L2_cache_size // MiB}MB)")


@dataclass
class FakeGpuState:
    """Mutable runtime state behind a fake module; tests drive it, backends never see it."""

    specs: list[GpuSpec]
    hip: bool
    initialized: bool = False
    current: int = 0
    allocated: list[int] = field(default_factory=list)
    reserved: list[int] = field(default_factory=list)
    peak: list[int] = field(default_factory=list)
    other_processes: list[int] = field(default_factory=list)
    driver_loaded: bool = True
    calls: list[str] = field(default_factory=list)


_STATES: weakref.WeakKeyDictionary[Any, FakeGpuState] = weakref.WeakKeyDictionary()


def state(module: Any) -> FakeGpuState:
    """The state behind a fake module made by :func:`make_cuda` (for test control)."""
    return _STATES[module]


def _fmt_bytes(n: int) -> str:
    """c10's format_size: bytes, KiB, MiB, GiB with two decimals."""
    if n <= 1024:
        return f"{n} bytes"
    if n <= 1048576:
        return f"{n / 1024:.2f} KiB"
    if n <= 1073741824:
        return f"{n / 1048576:.2f} MiB"
    return f"{n / 1073741824:.2f} GiB"


def oom_message(st: FakeGpuState, index: int, request: int) -> str:
    """The caching allocator's out-of-memory text (torch 2.x), for CUDA or HIP builds."""
    spec = st.specs[index]
    free = spec.total_memory - st.reserved[index] - st.other_processes[index]
    prefix, conf = ("HIP", "PYTORCH_HIP_ALLOC_CONF") if st.hip else ("CUDA", "PYTORCH_CUDA_ALLOC_CONF")
    in_use = st.reserved[index]
    return (
        f"{prefix} out of memory. Tried to allocate {_fmt_bytes(request)}. GPU {index} has a "
        f"total capacity of {_fmt_bytes(spec.total_memory)} of which {_fmt_bytes(max(free, 0))} "
        f"is free. Including non-PyTorch memory, this process has {_fmt_bytes(in_use)} memory in "
        f"use. Of the allocated memory {_fmt_bytes(st.allocated[index])} is allocated by PyTorch, "
        f"and {_fmt_bytes(st.reserved[index] - st.allocated[index])} is reserved by PyTorch but "
        f"unallocated. If reserved but unallocated memory is large try setting "
        f"{conf}=expandable_segments:True to avoid fragmentation.  See documentation for Memory "
        f"Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )


def allocate(module: Any, nbytes: int, device: int = 0) -> None:
    """Simulate a caching-allocator allocation; raises the real torch.OutOfMemoryError when full."""
    import torch

    st = state(module)
    st.initialized = True
    rounded = (nbytes + 2 * MiB - 1) // (2 * MiB) * (2 * MiB)
    free = st.specs[device].total_memory - st.reserved[device] - st.other_processes[device]
    if rounded > free:
        raise torch.OutOfMemoryError(oom_message(st, device, nbytes))
    st.allocated[device] += nbytes
    st.reserved[device] += rounded
    st.peak[device] = max(st.peak[device], st.allocated[device])


def _visible_ordinals(st: FakeGpuState, uuids: list[str]) -> list[int] | None:
    """Physical positions the visible-devices variables leave, decided by torch's own parser.

    ``torch.cuda._parse_visible_devices`` and ``_transform_uuid_to_ordinals`` run as a build of
    this flavour runs them (``torch.version.hip`` set for HIP); indices are then cut at the
    first one past the device count, as ``_device_count_nvml``/``_amdsmi`` do.  None where torch
    skips the variable (MIG ids on a CUDA build).
    """
    import torch.cuda
    import torch.version

    with mock.patch.object(torch.version, "hip", "6.2.41133" if st.hip else None):
        visible: list[Any] = list(torch.cuda._parse_visible_devices())
        if visible and isinstance(visible[0], str):
            if visible[0].startswith("MIG-") and not st.hip:
                return None  # torch: "Skip MIG parsing" -> the NVML count fails
            return list(torch.cuda._transform_uuid_to_ordinals(visible, uuids))
    out: list[int] = []
    for x in visible:
        if x >= len(st.specs):
            break
        out.append(int(x))
    return out


def _uuids(st: FakeGpuState) -> list[str]:
    return [device_uuid(s, i) for i, s in enumerate(st.specs)]


def _visible(st: FakeGpuState) -> list[int]:
    uuids = [u.replace("GPU-", "") if st.hip else u for u in _uuids(st)]
    ordinals = _visible_ordinals(st, uuids)
    return list(range(len(st.specs))) if ordinals is None else ordinals


def _phys(st: FakeGpuState, device: Any) -> int:
    """Physical index of a device argument (int, 'cuda:N', torch.device or None)."""
    if device is None:
        idx = st.current
    elif isinstance(device, int):
        idx = device
    elif isinstance(device, str):
        idx = int(device.split(":")[1]) if ":" in device else st.current
    else:
        idx = device.index if device.index is not None else st.current
    visible = _visible(st)
    if not 0 <= idx < len(visible):
        raise AssertionError("Invalid device id")
    return visible[idx]


class _FakeCuda:
    """A fake ``torch.cuda``; methods mirror the real functions' names and signatures."""

    def __init__(self, st: FakeGpuState) -> None:
        import torch

        self.__st = st
        self.OutOfMemoryError = torch.OutOfMemoryError
        self.memory = types.SimpleNamespace(
            mem_get_info=self.mem_get_info,
            memory_allocated=self.memory_allocated,
            memory_reserved=self.memory_reserved,
            max_memory_allocated=self.max_memory_allocated,
            reset_peak_memory_stats=self.reset_peak_memory_stats,
            empty_cache=self.empty_cache,
        )
        self.nccl = types.SimpleNamespace(version=_nccl_version)

    # visibility and counts (never initialise, like the real NVML-based count)
    def _device_count_nvml(self) -> int:
        st = self.__st
        if st.hip or not st.driver_loaded:
            return -1
        ordinals = _visible_ordinals(st, _uuids(st))
        return -1 if ordinals is None else len(ordinals)

    def _device_count_amdsmi(self) -> int:
        st = self.__st
        if not st.hip or not st.driver_loaded:
            return -1
        uuids = [u.replace("GPU-", "") for u in _uuids(st)]
        ordinals = _visible_ordinals(st, uuids)
        return -1 if ordinals is None else len(ordinals)

    def is_available(self) -> bool:
        return self.device_count() > 0

    def is_initialized(self) -> bool:
        return self.__st.initialized

    def device_count(self) -> int:
        st = self.__st
        st.calls.append("device_count")
        if not st.driver_loaded:
            return 0
        count = self._device_count_amdsmi() if st.hip else self._device_count_nvml()
        return len(_visible(st)) if count < 0 else count

    def current_device(self) -> int:
        self._lazy_init()
        return self.__st.current

    # everything below needs a context, as in torch (via _lazy_init)
    def _lazy_init(self) -> None:
        st = self.__st
        if not st.driver_loaded:
            raise RuntimeError("Found no NVIDIA driver on your system. Please check that you have "
                               "an NVIDIA GPU and installed a driver from "
                               "http://www.nvidia.com/Download/index.aspx")
        st.initialized = True

    def set_device(self, device: Any) -> None:
        self._lazy_init()
        _phys(self.__st, device)
        self.__st.current = device if isinstance(device, int) else int(str(device).split(":")[-1])

    def get_device_properties(self, device: Any = None) -> FakeCudaDeviceProperties:
        self._lazy_init()
        phys = _phys(self.__st, device)
        return FakeCudaDeviceProperties(self.__st.specs[phys], phys)

    def get_device_capability(self, device: Any = None) -> tuple[int, int]:
        p = self.get_device_properties(device)
        return p.major, p.minor

    def get_device_name(self, device: Any = None) -> str:
        return self.get_device_properties(device).name

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        self._lazy_init()
        st = self.__st
        phys = _phys(self.__st, device)
        total = st.specs[phys].total_memory
        return total - st.reserved[phys] - st.other_processes[phys], total

    def memory_allocated(self, device: Any = None) -> int:
        return self.__st.allocated[_phys(self.__st, device)] if self.__st.initialized else 0

    def memory_reserved(self, device: Any = None) -> int:
        return self.__st.reserved[_phys(self.__st, device)] if self.__st.initialized else 0

    def max_memory_allocated(self, device: Any = None) -> int:
        return self.__st.peak[_phys(self.__st, device)] if self.__st.initialized else 0

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        phys = _phys(self.__st, device)
        self.__st.peak[phys] = self.__st.allocated[phys]

    def synchronize(self, device: Any = None) -> None:
        self._lazy_init()
        _phys(self.__st, device)
        self.__st.calls.append("synchronize")

    def empty_cache(self) -> None:
        st = self.__st
        if st.initialized:
            st.reserved = [
                (a + 2 * MiB - 1) // (2 * MiB) * (2 * MiB) for a in st.allocated
            ]
        st.calls.append("empty_cache")

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        # torch: True on any CUDA device with emulation; natively from CC 8.0 (ROCm: always).
        if self.__st.hip:
            return True
        major = self.get_device_capability()[0]
        return including_emulation or major >= 8


def _nccl_version() -> tuple[int, int, int]:
    return (2, 21, 5)


def make_cuda(devices: Sequence[str | GpuSpec] = ("A100-80GB",), *, hip: bool | None = None,
              driver_loaded: bool = True) -> Any:
    """A fake ``torch.cuda`` with the given devices (SPECS keys); HIP flavour for AMD devices."""
    specs = [SPECS[d] if isinstance(d, str) else d for d in devices]
    if hip is None:
        hip = bool(specs) and specs[0].vendor == "amd"
    n = len(specs)
    st = FakeGpuState(specs=list(specs), hip=hip, allocated=[0] * n, reserved=[0] * n,
                      peak=[0] * n, other_processes=[0] * n, driver_loaded=driver_loaded)
    module = _FakeCuda(st)
    _STATES[module] = st
    return module


def counting_cuda(count: int) -> Any:
    """A ``torch.cuda`` that only counts ``count`` devices, as torch's NVML/amdsmi counts do,
    and is never initialised: any other call fails, so a test sees it made no context."""
    return types.SimpleNamespace(is_initialized=lambda: False, device_count=lambda: count,
                                 _device_count_nvml=lambda: count,
                                 _device_count_amdsmi=lambda: count)


def make_version(*, cuda: str | None = "12.4", hip: str | None = None,
                 torch_version: str = "2.13.0") -> Any:
    """A fake ``torch.version``: ``cuda`` and ``hip`` as the real module has them (str or None)."""
    suffix = "+cpu" if cuda is None and hip is None else (
        f"+rocm{'.'.join(hip.split('.')[:2])}" if hip else f"+cu{cuda.replace('.', '')}"
        if cuda else "")
    return types.SimpleNamespace(
        __version__=torch_version + suffix, cuda=None if hip else cuda, hip=hip, git_version="0")


def cuda_version() -> Any:
    """A CUDA 12.4 build's torch.version."""
    return make_version(cuda="12.4")


def hip_version() -> Any:
    """A ROCm 6.2 build's torch.version (torch.version.cuda is None there)."""
    return make_version(cuda=None, hip="6.2.41133-dd7f95766")


def cpu_version() -> Any:
    """A CPU-only build's torch.version."""
    return make_version(cuda=None, hip=None)
