"""A fake ``torch.npu`` (torch_npu's ``npu`` package) that reproduces real Ascend devices.

Every public function and property here exists in torch_npu 2.13's ``torch_npu/npu`` sources
with the same name and parameters (tests/test_contract_npu.py checks that against the wheel).
Figures come from spec sheets and real outputs, cited per device in ``NpuSpec.source``.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class NpuSpec:
    """One Ascend SoC as the runtime reports it."""

    soc_name: str          # aclrtGetSocName(): what torch.npu.get_device_name() returns
    soc_version: int       # c10_npu::SocVersion (torch_npu/csrc/core/npu/NpuVariables.h)
    total_memory: int      # bytes, aclrtGetMemInfo(ACL_HBM_MEM) total
    cube_core_num: int     # platform_config/<soc>.ini ai_core_cnt / cube_core_cnt
    vector_core_num: int   # platform_config/<soc>.ini vector_core_cnt
    L2_cache_size: int     # platform_config/<soc>.ini l2_size, bytes
    pci_device_id: int     # PCI device id under vendor 0x19e5
    bf16: bool             # torch_npu IsBF16Supported(): SocVersion >= Ascend910B1
    source: str = ""


#: Ascend 910B2C (Atlas A2, 64 GB HBM2e). total_memory: a real
#: ``_NPUDeviceProperties(name='Ascend910B2C', total_memory=62432MB)`` print; cores and L2 from
#: CANN's platform_config/Ascend910B2.ini (ai_core_cnt=24, vector_core_cnt=48, l2_size=192 MiB).
ASCEND_910B2C = NpuSpec("Ascend910B2C", 222, 62432 * MiB, 24, 48, 201326592, 0xD802, True,
                        "total_memory: torch_npu print on 910B2C (62432 MiB of 64 GiB HBM); "
                        "cores/L2: CANN platform_config Ascend910B2.ini")
#: Ascend 910B2 (64 GB HBM2e; npu-smi shows 65536 MB HBM): same memory SKU as 910B2C.
ASCEND_910B2 = NpuSpec("Ascend910B2", 221, 62432 * MiB, 24, 48, 201326592, 0xD802, True,
                       "64 GiB HBM SKU (npu-smi 65536 MB); runtime total as on 910B2C; "
                       "cores/L2: CANN platform_config Ascend910B2.ini")
#: Ascend 910B4 (32 GB HBM2e): platform_config/Ascend910B4.ini memory_size=34359738368,
#: ai_core_cnt=20, vector_core_cnt=40, support_bf16=1; L2 half of 910B2's.
ASCEND_910B4 = NpuSpec("Ascend910B4", 224, 34359738368, 20, 40, 100663296, 0xD802, True,
                       "CANN platform_config Ascend910B4.ini (memory_size, cores); "
                       "npu-smi shows 32768 MB HBM")
#: Ascend 310P3 (Atlas 300I Pro, 24 GB LPDDR4X per chip; npu-smi shows 21534 MB usable).
#: Cores from platform_config/Ascend310P3.ini (ai_core_cnt=8, vector_core_cnt=7).
ASCEND_310P3 = NpuSpec("Ascend310P3", 202, 21534 * MiB, 8, 7, 0, 0xD500, False,
                       "npu-smi on 310P3: 21534 MB; cores: CANN platform_config "
                       "Ascend310P3.ini; L2 not in our sources (0)")
#: The default "910B" of the issue: the 64 GB SKU.
ASCEND_910B = ASCEND_910B2C

#: torch_npu's allocator OOM text (RuntimeError before torch 2.4, torch.OutOfMemoryError after).
OOM_TEMPLATE = ("NPU out of memory. Tried to allocate {request} (NPU {device}; {total} total "
                "capacity; {allocated} already allocated; {allocated} current active; "
                "{free} free; {reserved} reserved in total by PyTorch)")
#: What the dynamic loader says when CANN is not on LD_LIBRARY_PATH.
MISSING_LIB_TEMPLATE = "{lib}: cannot open shared object file: No such file or directory"


def _fmt(size: int) -> str:
    return f"{size / GiB:.2f} GiB" if size >= GiB else f"{size / MiB:.2f} MiB"


class _NPUDeviceProperties:
    """Mirrors torch_npu._C._NPUDeviceProperties (name, total_memory, cores, L2)."""

    def __init__(self, spec: NpuSpec) -> None:
        self.name = spec.soc_name
        self.total_memory = spec.total_memory
        self.cube_core_num = spec.cube_core_num
        self.vector_core_num = spec.vector_core_num
        self.L2_cache_size = spec.L2_cache_size

    def __repr__(self) -> str:
        return (f"_NPUDeviceProperties(name='{self.name}', "
                f"total_memory={self.total_memory // MiB}MB)")


@dataclass
class _DeviceState:
    spec: NpuSpec
    allocated: int = 0
    reserved: int = 0
    peak: int = 0
    other_processes: int = 0


class FakeNpuModule(types.ModuleType):
    """A stand-in for ``torch.npu`` with ``len(specs)`` devices.

    ``initialized`` turns True on any call that initialises the real runtime (ACL), so tests
    can check that a probe stays on the side-effect-free path (``device_count``).
    """

    def __init__(self, specs: Sequence[NpuSpec], name: str = "torch_npu.npu") -> None:
        super().__init__(name)
        self._devices = [_DeviceState(s) for s in specs]
        self._current = 0
        self.initialized = False
        self.utils = types.SimpleNamespace(get_soc_version=self._get_soc_version)

    # -- helpers ------------------------------------------------------------------------
    def _index(self, device: Any) -> int:
        if device is None:
            return self._current
        raw = device if isinstance(device, int) else getattr(device, "index", None)
        index = self._current if raw is None else int(raw)
        if not 0 <= index < len(self._devices):
            raise AssertionError("Invalid device id")
        return int(index)

    def _get_soc_version(self) -> int:
        self.initialized = True
        return self._devices[self._current].spec.soc_version if self._devices else -1

    def allocate(self, nbytes: int, device: int = 0) -> None:
        """Simulate a caching-allocator allocation; raises the real OOM when it does not fit."""
        import torch

        state = self._devices[device]
        total = state.spec.total_memory
        free = total - state.reserved - state.other_processes
        if nbytes > free:
            raise torch.OutOfMemoryError(OOM_TEMPLATE.format(
                request=_fmt(nbytes), device=device, total=_fmt(total),
                allocated=_fmt(state.allocated), free=_fmt(free), reserved=_fmt(state.reserved)))
        state.allocated += nbytes
        state.reserved = max(state.reserved, state.allocated)
        state.peak = max(state.peak, state.allocated)

    # -- the mirrored torch_npu.npu API -----------------------------------------------------
    def device_count(self) -> int:
        return len(self._devices)

    def is_available(self) -> bool:
        return self.device_count() > 0

    def is_initialized(self) -> bool:
        return self.initialized

    def current_device(self) -> int:
        return self._current

    def set_device(self, device: Any) -> None:
        self._current = self._index(device)
        self.initialized = True

    def get_device_name(self, device_name: Any = None) -> str:
        return self._devices[self._index(device_name)].spec.soc_name

    def get_device_properties(self, device_name: Any = None) -> _NPUDeviceProperties:
        self.initialized = True
        return _NPUDeviceProperties(self._devices[self._index(device_name)].spec)

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        self.initialized = True
        state = self._devices[self._index(device)]
        total = state.spec.total_memory
        return total - state.reserved - state.other_processes, total

    def memory_allocated(self, device: Any = None) -> int:
        return self._devices[self._index(device)].allocated

    def memory_reserved(self, device: Any = None) -> int:
        return self._devices[self._index(device)].reserved

    def max_memory_allocated(self, device: Any = None) -> int:
        return self._devices[self._index(device)].peak

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        state = self._devices[self._index(device)]
        state.peak = state.allocated

    def empty_cache(self) -> None:
        for state in self._devices:
            state.reserved = state.allocated

    def synchronize(self, device: Any = None) -> None:
        self._index(device)
        self.initialized = True

    def is_bf16_supported(self, including_emulation: bool = False) -> bool:
        return bool(self._devices) and self._devices[self._current].spec.bf16


class _EarlyNpuModule(FakeNpuModule):
    """torch_npu 2.1 before mem_get_info existed: the attribute is simply absent."""

    def __getattribute__(self, item: str) -> Any:
        if item == "mem_get_info":
            raise AttributeError("module 'torch_npu.npu' has no attribute 'mem_get_info'")
        return object.__getattribute__(self, item)


@dataclass
class FakeNpu:
    """A fake torch_npu installation: the ``npu`` module, the package and its version."""

    module: FakeNpuModule
    version: str = "2.13.0"
    package: types.ModuleType = field(init=False)

    def __post_init__(self) -> None:
        self.package = types.ModuleType("torch_npu")
        self.package.__version__ = self.version  # type: ignore[attr-defined]
        self.package.npu = self.module  # type: ignore[attr-defined]

    def loader(self) -> types.ModuleType:
        """A loader for AscendBackend(loader=...): 'imports' this fake torch_npu."""
        return self.package

    def versions_of(self, torch_version: str = "2.13.0") -> Any:
        """A versions_of for AscendBackend: this torch_npu and the given torch release."""
        table = {"torch-npu": self.version, "torch": torch_version}
        return table.get


def fake_npu(*specs: NpuSpec, count: int = 1, version: str = "2.13.0",
             mem_get_info: bool = True) -> FakeNpu:
    """``count`` devices of ``specs[0]`` (or the given specs) behind a fake torch_npu ``version``."""
    chosen = list(specs) if len(specs) > 1 else [specs[0] if specs else ASCEND_910B] * count
    module = FakeNpuModule(chosen) if mem_get_info else _EarlyNpuModule(chosen)
    return FakeNpu(module, version)


def absent_loader() -> None:
    """A loader for a machine without torch_npu installed."""
    return None


def missing_cann_loader(lib: str = "libhccl.so", *, autoload: bool = True) -> Any:
    """A loader that fails as a real torch_npu does without CANN on LD_LIBRARY_PATH.

    With ``autoload`` the ImportError arrives wrapped the way ``import torch`` (>= 2.5) wraps it.
    """
    def load() -> types.ModuleType:
        err = ImportError(MISSING_LIB_TEMPLATE.format(lib=lib))
        if not autoload:
            raise err
        raise RuntimeError(
            "Failed to load the backend extension: torch_npu. You can disable extension "
            "auto-loading with TORCH_DEVICE_BACKEND_AUTOLOAD=0.") from err
    return load


def oom_error(spec: NpuSpec = ASCEND_910B, request: int = 2 * GiB) -> BaseException:
    """The OOM a real device of ``spec`` raises when nothing fits (torch.OutOfMemoryError)."""
    fake = fake_npu(spec)
    fake.module.allocate(spec.total_memory - GiB)
    try:
        fake.module.allocate(request)
    except BaseException as exc:
        return exc
    raise AssertionError("unreachable: the allocation above must not fit")
