"""A fake ``torch.xpu`` that reproduces real Intel GPUs, for tests and plugin authors.

Every public function and property here exists in the installed torch's ``torch.xpu`` (and
``torch._C._XpuDeviceProperties``) with a compatible signature; tests/test_contract_xpu.py
checks that.  Figures are real ``torch.xpu.get_device_properties()`` prints, cited per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hal.testing.fake_allocator import FakeAllocatorModule, GiB, MiB, provoke_oom


@dataclass(frozen=True)
class XpuSpec:
    """One Intel GPU (one Level Zero device) as torch.xpu reports it."""

    name: str
    total_memory: int
    device_id: int
    max_compute_units: int
    gpu_eu_count: int
    gpu_subslice_count: int
    max_work_group_size: int
    max_num_sub_groups: int
    sub_group_sizes: tuple[int, ...]
    has_fp16: bool
    has_fp64: bool
    has_bfloat16_conversions: bool
    has_subgroup_matrix_multiply_accumulate: bool   # XMX / DPAS engines
    is_integrated_gpu: bool = False
    memory_clock_rate: int = 0
    memory_bus_width: int = 0
    local_mem_size: int = 0
    last_level_cache_size: int = 0
    driver_version: str = ""
    platform_name: str = "Intel(R) oneAPI Unified Runtime over Level-Zero"
    source: str = ""


#: One stack of a Data Center GPU Max 1550 (128 GB HBM2e on two stacks; Level Zero's default
#: FLAT hierarchy shows each stack as a device).  Figures: intel/torch-xpu-ops CI prints,
#: e.g. issue #3888: total_memory=65520MB, device_id=0xBD5, max_compute_units=512, ...
MAX_1550_STACK = XpuSpec(
    "Intel(R) Data Center GPU Max 1550", 65520 * MiB, 0x0BD5, 512, 512, 64, 1024, 64, (16, 32),
    has_fp16=True, has_fp64=True, has_bfloat16_conversions=True,
    has_subgroup_matrix_multiply_accumulate=True, memory_clock_rate=3200, memory_bus_width=64,
    local_mem_size=128 * 1024, last_level_cache_size=196608 * 1024,
    driver_version="1.6.33578+51",
    source="torch.xpu.get_device_properties on Max 1550 (intel/torch-xpu-ops issue #3888)")
#: Intel Arc A770 16 GB: total_memory=15473MB, has_fp64=0 (torch.xpu print in IPEX 2.7 docs).
ARC_A770 = XpuSpec(
    "Intel(R) Arc(TM) A770 Graphics", 15473 * MiB, 0x56A0, 512, 512, 32, 1024, 128, (8, 16, 32),
    has_fp16=True, has_fp64=False, has_bfloat16_conversions=True,
    has_subgroup_matrix_multiply_accumulate=True, driver_version="1.6.32567+18",
    source="torch.xpu.get_device_properties on Arc A770 (torch 2.7.0+xpu)")

#: The pyzes release a fake installation with Level Zero Sysman bindings holds (PyPI, 2026-10).
PYZES_VERSION = "0.1.3"
#: The caching allocator's OOM text (c10/xpu/XPUCachingAllocator.cpp, torch >= 2.5).
OOM_TEMPLATE = ("XPU out of memory. Tried to allocate {request}. GPU {device} has a total "
                "capacity of {total} of which {free} is free. Of the allocated memory "
                "{allocated} is allocated by PyTorch, and {unallocated} is reserved by PyTorch "
                "but unallocated. Please use `empty_cache` to release all unoccupied cached "
                "memory.")


class _XpuDeviceProperties:
    """Mirrors torch._C._XpuDeviceProperties (attribute names as in torch/_C/__init__.pyi)."""

    def __init__(self, spec: XpuSpec, index: int) -> None:
        self.name = spec.name
        self.platform_name = spec.platform_name
        self.vendor = "Intel(R) Corporation"
        self.device_id = spec.device_id
        self.driver_version = spec.driver_version
        self.version = ""
        self.max_compute_units = spec.max_compute_units
        self.gpu_eu_count = spec.gpu_eu_count
        self.gpu_subslice_count = spec.gpu_subslice_count
        self.max_work_group_size = spec.max_work_group_size
        self.max_num_sub_groups = spec.max_num_sub_groups
        self.sub_group_sizes = list(spec.sub_group_sizes)
        self.memory_clock_rate = spec.memory_clock_rate
        self.memory_bus_width = spec.memory_bus_width
        self.local_mem_size = spec.local_mem_size
        self.last_level_cache_size = spec.last_level_cache_size
        self.has_fp16 = spec.has_fp16
        self.has_fp64 = spec.has_fp64
        self.has_atomic64 = True
        self.has_bfloat16_conversions = spec.has_bfloat16_conversions
        self.has_subgroup_matrix_multiply_accumulate = spec.has_subgroup_matrix_multiply_accumulate
        self.has_subgroup_matrix_multiply_accumulate_tensor_float32 = False
        self.has_subgroup_2d_block_io = spec.has_subgroup_matrix_multiply_accumulate
        self.is_integrated_gpu = spec.is_integrated_gpu
        self.total_memory = spec.total_memory
        self.architecture = 0
        self.type = "gpu"
        self.uuid = f"00000000-0000-0000-0000-{index:012d}"

    def __repr__(self) -> str:
        return (f"_XpuDeviceProperties(name='{self.name}', total_memory="
                f"{self.total_memory // MiB}MB, has_fp64={int(self.has_fp64)})")


class FakeXpuModule(FakeAllocatorModule[XpuSpec]):
    """A stand-in for ``torch.xpu``; ``compiled=False`` is a torch built without XPU.

    ``sysman``: the ``pyzes`` package imports, so ``device_count()`` counts through Level Zero
    Sysman (torch >= 2.8) with no SYCL context, seeing every device ``ZE_AFFINITY_MASK`` leaves;
    without it torch asks SYCL, which creates a context (``sycl_contexts`` counts them) and
    applies ``ONEAPI_DEVICE_SELECTOR``: ``sycl_count`` is how many devices the test's selector
    leaves there (None: all).  The fake holds no selector parser of its own.
    """

    _oom_template = OOM_TEMPLATE

    def __init__(self, specs: Sequence[XpuSpec], *, compiled: bool = True, sysman: bool = True,
                 sycl_count: int | None = None) -> None:
        super().__init__("torch.xpu", list(specs))
        self._compiled_flag = compiled
        self._sysman = sysman
        self._sycl_count = sycl_count
        self.sycl_contexts = 0

    def _invalid_device(self, index: int) -> Exception:
        return RuntimeError(f"Invalid device index {index}")

    def _index(self, device: Any) -> int:
        if not self._compiled_flag:  # torch.xpu._lazy_init on a build without XPU
            raise AssertionError("Torch not compiled with XPU enabled")
        return super()._index(device)

    # -- the rest of the mirrored torch.xpu API (the shared part: FakeAllocatorModule) -------
    def _is_compiled(self) -> bool:
        return self._compiled_flag

    def _device_count_zes(self) -> int:
        return len(self._devices) if self._sysman else -1

    def device_count(self) -> int:
        if not self._compiled_flag:
            return 0
        if self.initialized or self._device_count_zes() >= 0:
            return len(self._devices)
        self.sycl_contexts += 1
        return len(self._devices) if self._sycl_count is None else self._sycl_count

    def get_device_properties(self, device: Any = None) -> _XpuDeviceProperties:
        self.initialized = True
        index = self._index(device)
        return _XpuDeviceProperties(self._devices[index].spec, index)

    def get_device_name(self, device: Any = None) -> str:
        return self.get_device_properties(device).name

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        if not self.is_available():
            return False
        return including_emulation or self.get_device_properties().has_bfloat16_conversions


@dataclass
class FakeXpu:
    """A fake XPU-enabled torch: the ``torch.xpu`` module plus installed-package versions."""

    module: FakeXpuModule
    torch_version: str = "2.13.0+xpu"
    ipex_version: str | None = None
    packages: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.packages = {"torch": self.torch_version}
        if self.ipex_version:
            self.packages["intel-extension-for-pytorch"] = self.ipex_version
        if self.module._sysman:
            self.packages["pyzes"] = PYZES_VERSION

    def versions_of(self, name: str) -> str | None:
        """A versions_of for XpuBackend: the fake installation's package versions."""
        return self.packages.get(name)


def fake_xpu(*specs: XpuSpec, count: int = 1, compiled: bool = True,
             torch_version: str = "2.13.0+xpu", ipex_version: str | None = None,
             sysman: bool = True, sycl_count: int | None = None) -> FakeXpu:
    """``count`` devices of ``specs[0]`` (or the given specs); a Max 1550 card is two stacks.

    ``sysman=False``: pyzes is not installed (see FakeXpuModule).
    """
    chosen = list(specs) if len(specs) > 1 else [specs[0] if specs else MAX_1550_STACK] * count
    module = FakeXpuModule(chosen, compiled=compiled, sysman=sysman, sycl_count=sycl_count)
    return FakeXpu(module, torch_version, ipex_version)


def max_1550_card(cards: int = 1) -> FakeXpu:
    """``cards`` Max 1550 cards under the default FLAT hierarchy: two 64 GB devices each."""
    return fake_xpu(MAX_1550_STACK, count=2 * cards)


def max_1550_composite() -> XpuSpec:
    """One Max 1550 under ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE: both stacks as one device."""
    return replace(MAX_1550_STACK, total_memory=2 * MAX_1550_STACK.total_memory,
                   max_compute_units=1024, gpu_eu_count=1024, gpu_subslice_count=128)


def oom_error(spec: XpuSpec = MAX_1550_STACK, request: int = 2 * GiB) -> BaseException:
    """The OOM a real device of ``spec`` raises when nothing fits (torch.OutOfMemoryError)."""
    return provoke_oom(fake_xpu(spec).module, request)
