"""Real GPU models as the runtimes report them, the facts every CUDA-family fake is built from.

Figures are what the runtime reports (``torch.cuda.get_device_properties``), not marketing sizes:
sources are cited per device in ``SPECS`` and in docs/backends-cuda-rocm.md.  AMD entries are
here too: a ROCm build of torch drives them through the same ``torch.cuda`` module.
"""

from __future__ import annotations

import uuid as uuid_mod
from dataclasses import dataclass, replace
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
        key="MI250X", vendor="amd", name="AMD Instinct MI250X", total_memory=65520 * MiB,
        major=9, minor=0, multi_processor_count=110, gcnArchName="gfx90a:sramecc+:xnack-",
        L2_cache_size=8 * MiB, warp_size=64, pci_device_ids=(0x1002, 0x740C),
        source="torch repr on ROCm: name='AMD Instinct MI250X', major=9, minor=0, "
               "gcnArchName='gfx90a:sramecc+:xnack-', total_memory=65520MB, "
               "multi_processor_count=110 (one GCD; an MI250X board shows as two devices)"),
}


def uuid_bytes(spec: GpuSpec, index: int) -> bytes:
    """The 16 UUID bytes of fake device ``index`` (stable per spec and index)."""
    return uuid_mod.uuid5(uuid_mod.NAMESPACE_DNS, f"{spec.key}-{index}.hal.test").bytes


def pci_bus(index: int) -> int:
    """The PCI bus number of fake device ``index``."""
    return (0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD)[index % 8] + 0x100 * (index // 8)


def device_uuid(spec: GpuSpec, index: int) -> str:
    """The UUID string NVML and nvidia-smi print (``GPU-…``) or amd-smi prints (no prefix)."""
    text = str(uuid_mod.UUID(bytes=uuid_bytes(spec, index)))
    return f"GPU-{text}" if spec.vendor == "nvidia" else text


def pci_address(index: int) -> str:
    """The sysfs PCI address of fake device ``index`` (``0000:07:00.0``)."""
    return f"0000:{pci_bus(index):02x}:00.0"


def with_spec(key: str, **changes: Any) -> GpuSpec:
    """A copy of SPECS[key] with fields changed (e.g. a hypothetical capability)."""
    return replace(SPECS[key], **changes)
