"""Fake ``torch.cuda`` modules (CUDA and HIP flavours), ``torch.version`` and NVML, from spec sheets.

Every public attribute of the fakes mirrors a real name and signature (``hal.testing.contract``
checks the ones backends touch).  Test controls (allocating memory, marking CUDA initialised) live
outside the fake modules, in :func:`state`, so the fakes carry no invented API.

Figures are what the runtime reports (``torch.cuda.get_device_properties``), not marketing sizes:
sources are cited per device in ``SPECS`` and in docs/backends-cuda-rocm.md.
"""

from __future__ import annotations

import os
import types
import uuid as uuid_mod
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class GpuSpec:
    """One real device model as ``cudaGetDeviceProperties``/``hipGetDeviceProperties`` report it."""

    key: str
    vendor: str  # "nvidia" or "amd"
    name: str
    total_memory: int
    major: int
    minor: int
    multi_processor_count: int
    gcnArchName: str = ""
    L2_cache_size: int = 0
    warp_size: int = 32
    max_threads_per_multi_processor: int = 2048
    pci_device_ids: tuple[int, int] = (0, 0)  # (PCI vendor id, PCI device id)
    source: str = ""


SPECS: dict[str, GpuSpec] = {
    "A100-80GB": GpuSpec(
        "A100-80GB", "nvidia", "NVIDIA A100-SXM4-80GB", 81050 * MiB, 8, 0, 108,
        L2_cache_size=40 * MiB, pci_device_ids=(0x10DE, 0x20B2),
        source="108 SMs, CC 8.0 (NVIDIA A100 datasheet); 81050 MiB as torch reports it "
               "(about 79.2 GiB of the 80 GB HBM2e after the driver's reservation)"),
    "V100-32GB": GpuSpec(
        "V100-32GB", "nvidia", "Tesla V100-SXM2-32GB", 34089730048, 7, 0, 80,
        L2_cache_size=6 * MiB, pci_device_ids=(0x10DE, 0x1DB5),
        source="80 SMs, CC 7.0; total_memory=32510MB in torch's _CudaDeviceProperties repr"),
    "T4": GpuSpec(
        "T4", "nvidia", "Tesla T4", 15843721216, 7, 5, 40, L2_cache_size=4 * MiB,
        max_threads_per_multi_processor=1024, pci_device_ids=(0x10DE, 0x1EB8),
        source="deviceQuery: 15110 MBytes (15843721216 bytes), (40) Multiprocessors, CC 7.5"),
    "H100": GpuSpec(
        "H100", "nvidia", "NVIDIA H100 80GB HBM3", 81089 * MiB, 9, 0, 132,
        L2_cache_size=50 * MiB, pci_device_ids=(0x10DE, 0x2330),
        source="torch repr: name='NVIDIA H100 80GB HBM3', major=9, minor=0, "
               "total_memory=81089MB, multi_processor_count=132, L2_cache_size=50MB"),
    "MI300X": GpuSpec(
        "MI300X", "amd", "AMD Instinct MI300X", 196592 * MiB, 9, 4, 304,
        gcnArchName="gfx942:sramecc+:xnack-", L2_cache_size=4 * MiB, warp_size=64,
        pci_device_ids=(0x1002, 0x74A1),
        source="torch repr on ROCm (ROCm/ROCm#4203): major=9, minor=4, "
               "gcnArchName='gfx942:sramecc+:xnack-', total_memory=196592MB, "
               "multi_processor_count=304, L2_cache_size=4MB"),
    "MI250X": GpuSpec(
        "MI250X", "amd", "AMD Instinct MI250X", 65520 * MiB, 9, 0, 110,
        gcnArchName="gfx90a:sramecc+:xnack-", L2_cache_size=8 * MiB, warp_size=64,
        pci_device_ids=(0x1002, 0x740C),
        source="torch repr on ROCm: name='AMD Instinct MI250X', major=9, minor=0, "
               "gcnArchName='gfx90a:sramecc+:xnack-', total_memory=65520MB, "
               "multi_processor_count=110 (one GCD; an MI250X board shows as two devices)"),
}


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
        self.uuid = FakeCUuuid(_uuid_bytes(spec, index))
        self.L2_cache_size = spec.L2_cache_size
        self.pci_domain_id = 0
        self.pci_bus_id = _pci_bus(index)
        self.pci_device_id = 0

    def __repr__(self) -> str:
        arch = f", gcnArchName='{self.gcnArchName}'" if self.gcnArchName != "NVIDIA" else ""
        return (f"_CudaDeviceProperties(name='{self.name}', major={self.major}, "
                f"minor={self.minor}{arch}, total_memory={self.total_memory // MiB}MB, "
                f"multi_processor_count={self.multi_processor_count}, uuid={self.uuid}, "
                f"L2_cache_size={self.L2_cache_size // MiB}MB)")


def _uuid_bytes(spec: GpuSpec, index: int) -> bytes:
    return uuid_mod.uuid5(uuid_mod.NAMESPACE_DNS, f"{spec.key}-{index}.hal.test").bytes


def _pci_bus(index: int) -> int:
    return (0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD)[index % 8] + 0x100 * (index // 8)


def device_uuid(spec: GpuSpec, index: int) -> str:
    """The UUID string NVML and nvidia-smi print (``GPU-…``) or amd-smi prints (no prefix)."""
    text = str(uuid_mod.UUID(bytes=_uuid_bytes(spec, index)))
    return f"GPU-{text}" if spec.vendor == "nvidia" else text


def pci_address(index: int) -> str:
    """The sysfs PCI address of fake device ``index`` (``0000:07:00.0``)."""
    return f"0000:{_pci_bus(index):02x}:00.0"


# -- the fake modules ------------------------------------------------------------------------


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
    """torch.cuda._parse_visible_devices + _transform_uuid_to_ordinals, as torch does it."""
    env = os.environ
    var = env.get("CUDA_VISIBLE_DEVICES")
    if st.hip:
        hip, rocr = env.get("HIP_VISIBLE_DEVICES"), env.get("ROCR_VISIBLE_DEVICES")
        if rocr is not None:
            if hip is not None:
                if len(hip.split(",")) > len(rocr.split(",")):
                    raise RuntimeError(
                        "HIP_VISIBLE_DEVICES contains more devices than ROCR_VISIBLE_DEVICES")
                var = hip
            else:
                return list(range(len(rocr.split(","))))
        elif hip is not None:
            var = hip
    if var is None:
        return list(range(len(st.specs)))
    for prefix in ("GPU-", "MIG-"):
        if var.startswith(prefix):
            if prefix == "MIG-" and not st.hip:
                return None  # torch: "Skip MIG parsing" -> NVML count fails
            out: list[int] = []
            for elem in var.split(","):
                if not elem.startswith(prefix):
                    break
                cand = elem.replace("GPU-", "", 1) if st.hip else elem
                matches = [i for i, u in enumerate(uuids) if u.startswith(cand)]
                if len(matches) != 1:
                    break
                if matches[0] in out:
                    return []
                out.append(matches[0])
            return out
    rc: list[int] = []
    for elem in var.split(","):
        elem = elem.strip()
        digits = ""
        for i, c in enumerate(elem):
            if c.isdigit() or (i == 0 and c in "+-"):
                digits += c
            else:
                break
        try:
            x = int(digits) if digits not in ("", "+", "-") else -1
        except ValueError:
            x = -1
        if x in rc:
            return []
        if x < 0:
            break
        rc.append(x)
    for i, x in enumerate(rc):
        if x >= len(st.specs):
            return rc[:i]
    return rc


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


# -- fake NVML (the pynvml module of nvidia-ml-py) --------------------------------------------


class FakeNVMLError(Exception):
    """Mirrors pynvml.NVMLError (``value`` holds the NVML return code)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {9: "Driver Not Loaded", 12: "NVML Shared Library Not Found",
                6: "Not Found"}.get(self.value, f"NVML error {self.value}")


@dataclass(frozen=True)
class _Handle:
    index: int
    mig: int | None = None


@dataclass(frozen=True)
class FakeMemory:
    """Mirrors pynvml's c_nvmlMemory_t fields."""

    total: int
    free: int
    used: int


class _FakeNvml:
    """A fake ``pynvml``: the functions hal uses, with pynvml's names and signatures."""

    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_NOT_FOUND = 6

    def __init__(self, specs: list[GpuSpec], driver: str | None, mig: dict[int, int]) -> None:
        self.NVMLError = FakeNVMLError
        self._specs = specs
        self._driver = driver
        self._mig = mig
        self.inits = 0

    def nvmlInit(self) -> None:
        if self._driver is None:
            raise FakeNVMLError(self.NVML_ERROR_DRIVER_NOT_LOADED)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        assert self._driver is not None
        return self._driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self._specs)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= index < len(self._specs):
            raise FakeNVMLError(2)
        return _Handle(index)

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        base = device_uuid(self._specs[handle.index], handle.index)
        if handle.mig is None:
            return base
        return "MIG-" + str(uuid_mod.uuid5(uuid_mod.NAMESPACE_OID, f"{base}/{handle.mig}"))

    def nvmlDeviceGetMaxMigDeviceCount(self, device: _Handle) -> int:
        return 7 if device.index in self._mig else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: _Handle, index: int) -> _Handle:
        if index >= self._mig.get(device.index, 0):
            raise FakeNVMLError(self.NVML_ERROR_NOT_FOUND)
        return _Handle(device.index, index)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self._specs[handle.index].name

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: Any = None) -> FakeMemory:
        total = self._specs[handle.index].total_memory
        return FakeMemory(total=total, free=total, used=0)


def make_nvml(devices: Sequence[str | GpuSpec] = ("A100-80GB",), *,
              driver: str | None = "550.54.15", mig: dict[int, int] | None = None) -> Any:
    """A fake ``pynvml``; ``driver=None`` makes nvmlInit fail as without a loaded driver.

    ``mig``: physical index -> number of MIG instances configured on it.
    """
    specs = [SPECS[d] if isinstance(d, str) else d for d in devices]
    return _FakeNvml(specs, driver, dict(mig or {}))


def mig_uuids(nvml: Any, index: int) -> list[str]:
    """The MIG-… UUIDs fake NVML reports for physical GPU ``index``."""
    return [nvml.nvmlDeviceGetUUID(_Handle(index, m)) for m in range(nvml._mig.get(index, 0))]


def with_spec(key: str, **changes: Any) -> GpuSpec:
    """A copy of SPECS[key] with fields changed (e.g. a hypothetical capability)."""
    return replace(SPECS[key], **changes)


def kfd_files(devices: Sequence[str | GpuSpec]) -> dict[str, str]:
    """KFD topology files (for make_fake_tree's ``files``): node 0 a CPU, then one node a GPU."""
    specs = [SPECS[d] if isinstance(d, str) else d for d in devices]
    base = "/sys/class/kfd/kfd/topology/nodes"
    files = {f"{base}/0/properties": "cpu_cores_count 64\nsimd_count 0\ngfx_target_version 0\n"}
    for i, s in enumerate(specs, start=1):
        arch = s.gcnArchName.split(":")[0].removeprefix("gfx")
        target = int(arch[:-2]) * 10000 + int(arch[-2], 16) * 100 + int(arch[-1], 16)
        files[f"{base}/{i}/properties"] = (
            f"cpu_cores_count 0\nsimd_count {s.multi_processor_count * 4}\n"
            f"gfx_target_version {target}\n")
    return files
