"""hal backend for Apple's Metal Performance Shaders (``torch.backends.mps``, ``torch.mps``).

An out-of-tree plugin written from hal's docs/plugins.md alone: install it with pip and
``hal devices`` lists ``mps``; on a machine without Apple silicon it says why it is unavailable.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import hal

#: The MPS allocator's out-of-memory message (aten/src/ATen/mps/MPSAllocator.mm).
MPS_OOM_MARKER = "MPS backend out of memory"
FALLBACK_ENV = "PYTORCH_ENABLE_MPS_FALLBACK"


class MpsBackend(hal.Backend):
    """The Apple GPU through MPS: one device, unified memory, fp16 and fp32 compute."""

    name = "mps"
    device_type = "mps"
    priority = 70
    dist_backend = "gloo"
    visible_devices_env = ()

    def __init__(self, mps: Any = None, backends_mps: Any = None,
                 system: str | None = None, machine: str | None = None) -> None:
        self._mps = mps
        self._backends_mps = backends_mps
        self._system = system
        self._machine = machine
        self._peak = 0

    # torch modules, imported on first use (never at import time)
    def mps(self) -> Any:
        if self._mps is None:
            import torch.mps

            self._mps = torch.mps
        return self._mps

    def backends_mps(self) -> Any:
        if self._backends_mps is None:
            import torch.backends.mps

            self._backends_mps = torch.backends.mps
        return self._backends_mps

    def _platform(self) -> tuple[str, str]:
        return (self._system or platform.system(), self._machine or platform.machine())

    def probe(self) -> hal.Probe:
        try:
            backends_mps = self.backends_mps()
        except Exception as exc:
            return hal.Probe(False, f"torch is not importable ({type(exc).__name__}: {exc})", 0)
        system, machine = self._platform()
        if not backends_mps.is_built():
            return hal.Probe(False, f"this torch build has no MPS support "
                                    f"(torch.backends.mps.is_built() is False; {system} "
                                    f"{machine}); MPS needs macOS on Apple silicon", 0)
        if not backends_mps.is_available():
            return hal.Probe(False, "torch has MPS support but no MPS device is available "
                                    "(needs macOS 12.3 or later on Apple silicon)", 0)
        count = int(self.mps().device_count())
        if count < 1:
            return hal.Probe(False, "torch.mps.device_count() is 0", 0)
        return hal.Probe(True, f"Apple GPU via Metal Performance Shaders ({machine})", count)

    def devices(self) -> Sequence[hal.DeviceInfo]:
        count = self.probe().device_count
        total = int(self.mps().recommended_max_memory()) if count else 0
        return [hal.DeviceInfo(i, "Apple GPU (MPS)", total, None,
                               {"unified_memory": True}) for i in range(count)]

    def memory(self, index: int = 0) -> hal.MemoryInfo:
        mps = self.mps()
        total = int(mps.recommended_max_memory())
        allocated = int(mps.current_allocated_memory())
        reserved = max(int(mps.driver_allocated_memory()), allocated)
        self._peak = max(self._peak, allocated)
        return hal.MemoryInfo(
            total=total,
            free=max(0, total - reserved),
            allocated=allocated,
            reserved=reserved,
            peak=self._peak,
            source="total: recommended_max_memory (Metal working-set limit); reserved: "
                   "driver_allocated_memory; peak: highest allocation hal observed",
        )

    def dtypes(self, index: int = 0) -> Sequence[Any]:
        import torch

        # bf16 on MPS depends on the macOS release and the chip: not claimed as native.
        return [torch.float16, torch.float32]

    def synchronize(self, index: int | None = None) -> None:
        self.mps().synchronize()

    def empty_cache(self) -> None:
        self.mps().empty_cache()

    def reset_peak_memory(self, index: int | None = None) -> None:
        self._peak = int(self.mps().current_allocated_memory())

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, RuntimeError) and MPS_OOM_MARKER in str(exc)

    def hardware(self) -> Sequence[hal.Hardware]:
        system, machine = self._platform()
        if system == "Darwin" and machine == "arm64":
            return [hal.Hardware("apple", "gpu", "Apple silicon GPU", "")]
        return []

    def versions(self) -> Mapping[str, str]:
        system, _ = self._platform()
        if system == "Darwin":
            return {"macos": platform.mac_ver()[0] or "unknown"}
        return {}

    def findings(self) -> Sequence[hal.Finding]:
        system, machine = self._platform()
        if system != "Darwin" or machine != "arm64":
            return []
        out = []
        try:
            built = bool(self.backends_mps().is_built())
        except Exception:
            built = False
        if not built:
            out.append(hal.Finding("mps-not-built", "warn",
                                   "this Mac has an Apple GPU but torch was built without MPS",
                                   "pip install --upgrade torch (the macOS arm64 wheel)"))
        if os.environ.get(FALLBACK_ENV) != "1":
            out.append(hal.Finding("mps-no-fallback", "info",
                                   "operators without an MPS kernel raise instead of running "
                                   "on the host", f"export {FALLBACK_ENV}=1"))
        return out


@hal.hookimpl
def hal_backends() -> list[hal.Backend]:
    """Provide the MPS backend."""
    return [MpsBackend()]
