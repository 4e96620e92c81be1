"""A fake ``pynvml`` with telemetry, and a CudaBackend that runs on it (for ``hal watch`` tests).

Function names, argument order and units are pynvml's (nvidia-ml-py 13): power in mW, memory
in bytes, clocks in MHz, ``nvmlDeviceGetComputeRunningProcesses`` items with ``pid`` and
``usedGpuMemory`` (None where the driver cannot say).  Figures are what nvidia-smi shows on
these boards (sources per board in ``BOARDS``).  Written apart from the code under test.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass, field
from typing import Any

MiB = 1 << 20

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2


class NVMLError(Exception):
    """Mirrors pynvml.NVMLError."""


class NVMLError_NotSupported(NVMLError):
    """Mirrors pynvml.NVMLError_NotSupported (NVML_ERROR_NOT_SUPPORTED = 3)."""


@dataclass
class Board:
    """One GPU as NVML reports it; None where the board does not support the query."""

    name: str
    uuid: str
    total: int
    used: int
    gpu_util: int  # percent
    power_mw: int | None
    limit_mw: int | None
    temp_c: int
    sm_mhz: int
    mem_mhz: int
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    source: str = ""


def _boards() -> list[Board]:
    me = os.getpid()
    return [
        Board("NVIDIA A100-SXM4-80GB", "GPU-5f8a3c1e-8b52-4c6f-a1d2-6f0e2b7c9a11",
              81920 * MiB, 4213 * MiB, 37, 87_412, 400_000, 34, 1410, 1593,
              processes=[(me, 4096 * MiB), (2**22 + 1, 1024 * MiB)],
              source="nvidia-smi on A100-SXM4-80GB: 81920MiB total, power cap 400W, "
                     "max clocks SM 1410 MHz / memory 1593 MHz (A100 datasheet)"),
        Board("NVIDIA H100 80GB HBM3", "GPU-0c7e94b2-31d6-4f8e-9a57-d2b1e6f4c803",
              81559 * MiB, 0, 0, None, 700_000, 29, 1980, 2619, processes=[],
              source="nvidia-smi on H100 SXM5: 81559MiB total, power cap 700W, max clocks "
                     "SM 1980 MHz / memory 2619 MHz; power usage NotSupported stands in for "
                     "boards (vGPU guests) where NVML cannot read it"),
    ]


class _Handle:
    def __init__(self, index: int) -> None:
        self.index = index


class _Memory:
    def __init__(self, total: int, used: int) -> None:
        self.total, self.used, self.free = total, used, total - used


class _Util:
    def __init__(self, gpu: int) -> None:
        self.gpu, self.memory = gpu, 0


class _Proc:
    def __init__(self, pid: int, used: int | None) -> None:
        self.pid, self.usedGpuMemory = pid, used
        self.gpuInstanceId = self.computeInstanceId = 0xFFFFFFFF


class FakeNvml(types.ModuleType):
    """The pynvml functions hal uses, over ``boards``; every call counts in ``calls``."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_GRAPHICS = NVML_CLOCK_GRAPHICS
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM

    def __init__(self, boards: list[Board] | None = None) -> None:
        super().__init__("pynvml")
        self.boards = _boards() if boards is None else boards
        self.initialised = 0
        self.calls = 0

    def _b(self, handle: _Handle) -> Board:
        self.calls += 1
        if self.initialised <= 0:
            raise NVMLError("Uninitialized")
        return self.boards[handle.index]

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised = max(0, self.initialised - 1)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.boards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= index < len(self.boards):
            raise NVMLError("Invalid Argument")
        return _Handle(index)

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        return self._b(handle).uuid

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        return 0

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self._b(handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: Any = None) -> _Memory:
        b = self._b(handle)
        return _Memory(b.total, b.used)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> _Util:
        return _Util(self._b(handle).gpu_util)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        b = self._b(handle)
        if b.power_mw is None:
            raise NVMLError_NotSupported("Not Supported")
        return b.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        b = self._b(handle)
        if b.limit_mw is None:
            raise NVMLError_NotSupported("Not Supported")
        return b.limit_mw

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return self._b(handle).temp_c

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        b = self._b(handle)
        return b.mem_mhz if clock_type == NVML_CLOCK_MEM else b.sm_mhz

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[_Proc]:
        return [_Proc(pid, used) for pid, used in self._b(handle).processes]


def make_backend(nvml: FakeNvml | bool | None = None,
                 environ: dict[str, str] | None = None) -> Any:
    """A real CudaBackend on the fake NVML and a CUDA-build torch.version; no torch.cuda call.

    ``nvml=False`` stands for nvidia-ml-py not installed (the count then comes from torch's
    own NVML-based ``_device_count_nvml``, faked to 2).
    """
    from hal.backends.cuda.backend import CudaBackend

    nvml = FakeNvml() if nvml is None or nvml is True else nvml
    n = len(nvml.boards) if isinstance(nvml, FakeNvml) else 2
    module = types.SimpleNamespace(is_initialized=lambda: False, device_count=lambda: n,
                                   _device_count_nvml=lambda: n)
    version = types.SimpleNamespace(cuda="12.4", hip=None, xpu=None,
                                    __version__="2.13.0+cu124")
    kwargs: dict[str, Any] = {"module": module, "version": version, "nvml": nvml}
    if environ is not None:
        kwargs["environ"] = environ
    return CudaBackend(**kwargs)
