"""CpuBackend: the always-available backend, with cgroup-aware memory and flag-based dtypes."""

from __future__ import annotations

import importlib
import os
import platform
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from hal.backends.cpu.sysinfo import (
    CgroupFiles,
    CpuFacts,
    cgroup_memory_files,
    cpu_facts,
    process_memory,
    read_cgroup_memory,
)
from hal.contract import Backend, DeviceInfo, Hardware, MemoryInfo, Probe
from hal.versions import dist_version, release

if TYPE_CHECKING:
    import torch

    from hal.telemetry import Telemetry

M = TypeVar("M")
#: intel-extension-for-pytorch, used by optimize() only when installed for this torch's major.minor.
IPEX_DIST, IPEX_MODULE = "intel-extension-for-pytorch", "intel_extension_for_pytorch"

#: Substrings of the CPU allocator's out-of-memory errors (c10 DefaultCPUAllocator).
CPU_OOM_MARKERS = (
    "DefaultCPUAllocator: can't allocate memory",
    "DefaultCPUAllocator: not enough memory",
)


class CpuBackend(Backend):
    """The host CPU as a torch device; always available."""

    name = "cpu"
    device_type = "cpu"
    priority = 0
    dist_backend = "gloo"
    visible_devices_env = ()

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self._facts: CpuFacts | None = None
        self._cgroup_files: CgroupFiles | None = None

    @property
    def facts(self) -> CpuFacts:
        """Parsed /proc/cpuinfo, read once."""
        if self._facts is None:
            self._facts = cpu_facts(self.root)
        return self._facts

    def probe(self) -> Probe:
        return Probe(True, "the host CPU is always available", 1)

    def ram_figures(self) -> tuple[int, int, int | None]:
        """(total, available, cgroup limit or None) in bytes, capped by the cgroup; read fresh."""
        import psutil

        vm = psutil.virtual_memory()
        total, free = int(vm.total), int(vm.available)
        # The cgroup's files are found once; their figures are read fresh on every call.
        if self._cgroup_files is None:
            self._cgroup_files, (limit, usage) = cgroup_memory_files(self.root)
        else:
            limit, usage = read_cgroup_memory(self.root, self._cgroup_files)
        if limit is not None:
            total = min(total, limit)
            free = min(free, max(0, limit - (usage or 0)))
        return total, free, limit

    def devices(self) -> Sequence[DeviceInfo]:
        import psutil

        total, _, limit = self.ram_figures()
        facts = self.facts
        extras = {
            "vendor": facts.vendor,
            "physical_cores": psutil.cpu_count(logical=False) or 0,
            "logical_cores": psutil.cpu_count(logical=True) or 0,
            "usable_cores": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else psutil.cpu_count(logical=True) or 0,
            "flags": sorted(facts.flags),
            "cgroup_limit": limit,
        }
        return [DeviceInfo(0, facts.model, total, platform.machine(), extras)]

    def memory(self, index: int = 0) -> MemoryInfo:
        total, free, limit = self.ram_figures()
        rss, hwm = process_memory(self.root)
        capped = "min(host RAM, cgroup limit)" if limit is not None else "host RAM (no cgroup limit)"
        return MemoryInfo(
            total=total,
            free=free,
            allocated=rss,
            reserved=rss,
            peak=hwm,
            source=f"total/free: {capped}; allocated/reserved: process RSS; peak: RSS high-water",
        )

    def reset_peak_memory(self, index: int | None = None) -> None:
        # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
        try:
            with open(os.path.join(self.root, "proc/self/clear_refs"), "w") as f:
                f.write("5")
        except OSError:
            pass

    def native_dtype_names(self) -> list[str]:
        """Native compute dtypes by name, best first, from the CPU flags."""
        flags = self.facts.flags
        names = []
        if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
            names.append("bfloat16")
        if flags & {"avx512_fp16", "amx_fp16"} or (
            platform.machine() in ("aarch64", "arm64") and flags & {"fphp", "asimdhp"}
        ):
            names.append("float16")
        names.append("float32")
        return names

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        import torch

        return [getattr(torch, n) for n in self.native_dtype_names()]

    def fast_dtype_names(self) -> list[str] | None:
        """Native dtypes that beat fp32 here, from the flags where that is known; else None.

        Matrix units decide it: on this project's Xeon with AMX (bench/bench_precision.py) a
        bf16 matmul ran 3.5-7x fp32 while fp16 through avx512_fp16 alone ran 0.9-1.0x.  With
        no native low-precision dtype nothing is fast.  Dot-product-only CPUs (avx512_bf16
        without AMX, Arm bf16) vary, so hal's precision policy measures them once (None).
        """
        flags = self.facts.flags
        native = self.native_dtype_names()
        if native == ["float32"]:
            return []
        if not flags & {"amx_bf16", "amx_fp16"}:
            return None
        fast = []
        if "bfloat16" in native and "amx_bf16" in flags:
            fast.append("bfloat16")
        if "float16" in native and "amx_fp16" in flags:
            fast.append("float16")
        return fast

    def fast_dtypes(self, index: int = 0) -> Sequence[torch.dtype] | None:
        import torch

        names = self.fast_dtype_names()
        return None if names is None else [getattr(torch, n) for n in names]

    def emulated_dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        import torch

        # torch's CPU kernels run bf16 and fp16 everywhere, converting to fp32 where the
        # instructions are missing: usable, but slower than fp32.
        native = self.native_dtype_names()
        return [getattr(torch, n) for n in ("bfloat16", "float16") if n not in native]

    def is_oom(self, exc: BaseException) -> bool:
        if isinstance(exc, MemoryError):
            return True
        return isinstance(exc, RuntimeError) and any(m in str(exc) for m in CPU_OOM_MARKERS)

    def optimize(self, model: M) -> M:
        """``ipex.optimize(model)`` for an eval-mode model when IPEX matches torch; else ``model``.

        Versions are compared before the import: IPEX exits the interpreter on a mismatch.
        """
        ipex_v, torch_v = dist_version(IPEX_DIST), dist_version("torch")
        if not ipex_v or release(ipex_v)[:2] != release(torch_v)[:2] or getattr(
                model, "training", False):
            return model
        optimized: M = importlib.import_module(IPEX_MODULE).optimize(model)
        return optimized

    def hardware(self) -> Sequence[Hardware]:
        facts = self.facts
        return [Hardware(vendor=facts.vendor or "unknown", kind="cpu", detail=facts.model,
                         path="/proc/cpuinfo")]

    def versions(self) -> Mapping[str, str]:
        return {"kernel": platform.release(), "machine": platform.machine()}

    def telemetry(self, index: int = 0) -> Telemetry:
        """Host CPU figures from /proc and sysfs (per-core use, RAPL, hwmon); see its module."""
        from hal.backends.cpu.telemetry import read

        return read(self)
