"""NVIDIA telemetry through NVML (nvidia-ml-py's ``pynvml``): what nvidia-smi shows, no CUDA context.

NVML is initialised once per reader and kept (NVML reference-counts ``nvmlInit``); every
figure NVML cannot give on a board (``NVMLError_NotSupported``) is None.  A visible index maps
to an NVML (physical) index through CUDA_VISIBLE_DEVICES: indices or ``GPU-`` UUID prefixes.
Units: NVML reports power in milliwatts and memory in bytes; clocks in MHz.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hal.telemetry import Readers, Telemetry, figure_or_none, process_usage

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def physical_index(value: str | None, index: int, uuids: list[str]) -> int | None:
    """The NVML index of visible device ``index`` under CUDA_VISIBLE_DEVICES=``value``.

    None when it cannot be told (MIG instances, an entry that matches nothing).
    """
    if value is None:
        return index
    entries = [e.strip() for e in value.split(",")]
    positions: list[int] = []
    for entry in entries:
        if entry.startswith("GPU-"):
            matches = [i for i, u in enumerate(uuids) if u.lower().startswith(entry.lower())]
            if len(matches) != 1:
                break
            positions.append(matches[0])
        elif entry.isdigit() and int(entry) < len(uuids):
            positions.append(int(entry))
        else:
            break  # the runtime stops at the first invalid entry (MIG- ids included)
    return positions[index] if index < len(positions) else None


class NvmlTelemetry:
    """One NVML session and the handle of each visible device, resolved on first use."""

    def __init__(self, nvml: Any, environ: Mapping[str, str] | None = None) -> None:
        self.nvml = nvml
        self.environ = os.environ if environ is None else environ
        self._handles: dict[int, Any] = {}
        self._started = False

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            nvml = self.nvml
            if not self._started:
                nvml.nvmlInit()
                self._started = True
            n = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
            uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
            phys = physical_index(self.environ.get(VISIBLE_ENV), index, uuids)
            if phys is None:
                raise LookupError(f"{VISIBLE_ENV}={self.environ.get(VISIBLE_ENV)!r}: visible "
                                  f"device {index} cannot be matched to an NVML device")
            self._handles[index] = handles[phys]
        return self._handles[index]

    def read(self, index: int) -> Telemetry:
        """One reading of visible device ``index``."""
        nvml = self.nvml
        h = self._handle(index)
        mem = figure_or_none(nvml.nvmlDeviceGetMemoryInfo, h)
        util = figure_or_none(nvml.nvmlDeviceGetUtilizationRates, h)
        power = figure_or_none(nvml.nvmlDeviceGetPowerUsage, h)
        limit = figure_or_none(nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        temp = figure_or_none(nvml.nvmlDeviceGetTemperature, h, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        sm = figure_or_none(nvml.nvmlDeviceGetClockInfo, h, getattr(nvml, "NVML_CLOCK_SM", 1))
        memclk = figure_or_none(nvml.nvmlDeviceGetClockInfo, h, getattr(nvml, "NVML_CLOCK_MEM", 2))
        procs = figure_or_none(nvml.nvmlDeviceGetComputeRunningProcesses, h)
        name = figure_or_none(nvml.nvmlDeviceGetName, h)
        return Telemetry(
            source="NVML (nvidia-ml-py)",
            name=_text(name) if name is not None else None,
            memory_used=int(mem.used) if mem is not None else None,
            memory_total=int(mem.total) if mem is not None else None,
            utilization=int(util.gpu) / 100.0 if util is not None else None,
            power=int(power) / 1000.0 if power is not None else None,
            power_limit=int(limit) / 1000.0 if limit is not None else None,
            temperature=float(temp) if temp is not None else None,
            clock=float(sm) if sm is not None else None,
            memory_clock=float(memclk) if memclk is not None else None,
            processes=None if procs is None else process_usage(
                (int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
                for p in procs),
        )


_readers: Readers[NvmlTelemetry] = Readers("NVML")


def read(backend: Any, index: int) -> Telemetry:
    """The CUDA backend's telemetry: NVML when nvidia-ml-py is installed, else say so."""
    nvml = backend.nvml
    if nvml is None:
        return Telemetry(source="none: NVML is not available (pip install nvidia-ml-py); "
                                "hal watch never creates a CUDA context to ask torch")
    return _readers.read(backend, lambda: NvmlTelemetry(nvml, getattr(backend, "environ", None)),
                         lambda reader: reader.read(index))
