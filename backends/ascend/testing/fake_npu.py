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

from hal.testing.fake_allocator import FakeAllocatorModule, GiB, MiB, provoke_oom


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


class FakeNpuModule(FakeAllocatorModule[NpuSpec]):
    """A stand-in for ``torch.npu`` with ``len(specs)`` devices (``initialized``: ACL is up)."""

    _oom_template = OOM_TEMPLATE

    def __init__(self, specs: Sequence[NpuSpec], name: str = "torch_npu.npu") -> None:
        super().__init__(name, list(specs))
        self.utils = types.SimpleNamespace(get_soc_version=self._get_soc_version)

    def _invalid_device(self, index: int) -> Exception:
        return AssertionError("Invalid device id")

    def _get_soc_version(self) -> int:
        self.initialized = True
        return self._devices[self._current].spec.soc_version if self._devices else -1

    # -- the rest of the mirrored torch_npu.npu API (the shared part: FakeAllocatorModule) ---
    def get_device_name(self, device_name: Any = None) -> str:
        return self._devices[self._index(device_name)].spec.soc_name

    def get_device_properties(self, device_name: Any = None) -> _NPUDeviceProperties:
        self.initialized = True
        return _NPUDeviceProperties(self._devices[self._index(device_name)].spec)

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
    return provoke_oom(fake_npu(spec).module, request)
