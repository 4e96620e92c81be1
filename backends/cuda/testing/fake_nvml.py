"""A fake ``pynvml`` (nvidia-ml-py): the NVML functions hal calls, with pynvml's names and signatures.

One fake for discovery (counts, UUIDs, MIG, driver) and for ``hal watch``'s live figures.  Units
are pynvml's (nvidia-ml-py 13): power in mW, memory in bytes, clocks in MHz; running processes
carry ``pid`` and ``usedGpuMemory`` (None where the driver cannot say).  A board without a
``Load`` answers NVML's "Not Supported" for every live figure, as a board that does not report
them; ``busy_nvml()`` gives two boards with the figures nvidia-smi shows (sources in ``Load``).
Written apart from the code under test.
"""

from __future__ import annotations

import os
import types
import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hal.backends.cuda.testing.specs import SPECS, GpuSpec, MiB, device_uuid

#: pynvml's return codes (nvml.h) and the text ``nvmlErrorString`` gives for each.
_ERRORS = {1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported", 6: "Not Found",
           9: "Driver Not Loaded", 12: "NVML Shared Library Not Found"}


class FakeNVMLError(Exception):
    """Mirrors pynvml.NVMLError (``value`` holds the NVML return code)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _ERRORS.get(self.value, f"NVML error {self.value}")


class FakeNVMLNotSupported(FakeNVMLError):
    """Mirrors pynvml.NVMLError_NotSupported, the class pynvml raises for code 3."""

    def __init__(self) -> None:
        super().__init__(3)


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


@dataclass(frozen=True)
class _Utilization:
    gpu: int
    memory: int = 0


@dataclass(frozen=True)
class _Process:
    pid: int
    usedGpuMemory: int | None
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


@dataclass(frozen=True)
class Load:
    """A board's live figures as nvidia-smi shows them; None where NVML says Not Supported."""

    memory_total: int  # NVML's total, what nvidia-smi prints (above torch's total_memory)
    memory_used: int
    gpu_util: int  # percent
    power_mw: int | None
    limit_mw: int | None
    temp_c: int
    sm_mhz: int
    mem_mhz: int
    processes: tuple[tuple[int, int | None], ...] = ()
    source: str = ""


class FakeNvml(types.ModuleType):
    """The pynvml functions hal uses, over one GpuSpec (and optional Load) a board.

    Device calls before ``nvmlInit`` fail with "Uninitialized", as NVML's do.
    """

    NVMLError = FakeNVMLError
    NVMLError_NotSupported = FakeNVMLNotSupported
    NVML_ERROR_UNINITIALIZED = 1
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_GRAPHICS = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, specs: list[GpuSpec], loads: list[Load | None], driver: str | None,
                 mig: dict[int, int]) -> None:
        super().__init__("pynvml")
        self.specs, self.loads = specs, loads
        self._driver = driver
        self._mig = mig
        self.inits = 0

    def _check(self) -> None:
        if self.inits <= 0:
            raise FakeNVMLError(self.NVML_ERROR_UNINITIALIZED)

    def _load(self, handle: _Handle) -> Load:
        self._check()
        load = self.loads[handle.index]
        if load is None:
            raise FakeNVMLNotSupported()
        return load

    def nvmlInit(self) -> None:
        if self._driver is None:
            raise FakeNVMLError(self.NVML_ERROR_DRIVER_NOT_LOADED)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits = max(0, self.inits - 1)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        assert self._driver is not None
        return self._driver

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.specs)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check()
        if not 0 <= index < len(self.specs):
            raise FakeNVMLError(2)
        return _Handle(index)

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._check()
        return _uuid(self, handle)

    def nvmlDeviceGetMaxMigDeviceCount(self, device: _Handle) -> int:
        self._check()
        return 7 if device.index in self._mig else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: _Handle, index: int) -> _Handle:
        self._check()
        if index >= self._mig.get(device.index, 0):
            raise FakeNVMLError(self.NVML_ERROR_NOT_FOUND)
        return _Handle(device.index, index)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        self._check()
        return self.specs[handle.index].name

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: Any = None) -> FakeMemory:
        self._check()
        load = self.loads[handle.index]
        if load is None:  # an idle board: nothing used
            total = self.specs[handle.index].total_memory
            return FakeMemory(total=total, free=total, used=0)
        return FakeMemory(load.memory_total, load.memory_total - load.memory_used, load.memory_used)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> _Utilization:
        return _Utilization(self._load(handle).gpu_util)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return _supported(self._load(handle).power_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return _supported(self._load(handle).limit_mw)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return self._load(handle).temp_c

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        load = self._load(handle)
        return load.mem_mhz if clock_type == self.NVML_CLOCK_MEM else load.sm_mhz

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[_Process]:
        return [_Process(pid, used) for pid, used in self._load(handle).processes]


def _supported(value: int | None) -> int:
    if value is None:
        raise FakeNVMLNotSupported()
    return value


def _uuid(nvml: FakeNvml, handle: _Handle) -> str:
    base = device_uuid(nvml.specs[handle.index], handle.index)
    if handle.mig is None:
        return base
    return "MIG-" + str(uuid_mod.uuid5(uuid_mod.NAMESPACE_OID, f"{base}/{handle.mig}"))


def make_nvml(devices: Sequence[str | GpuSpec] = ("A100-80GB",), *,
              driver: str | None = "550.54.15", mig: dict[int, int] | None = None,
              loads: Sequence[Load | None] = ()) -> FakeNvml:
    """A fake ``pynvml``; ``driver=None`` makes nvmlInit fail as without a loaded driver.

    ``mig``: physical index -> number of MIG instances configured on it.  ``loads``: the live
    figures of the first boards (a board beyond them answers "Not Supported").
    """
    specs = [SPECS[d] if isinstance(d, str) else d for d in devices]
    padded = [*loads, *[None] * (len(specs) - len(loads))]
    return FakeNvml(specs, padded[:len(specs)], driver, dict(mig or {}))


def busy_nvml() -> FakeNvml:
    """An A100 with this process and an exited one on it, and an idle H100 that cannot read power."""
    a100 = Load(81920 * MiB, 4213 * MiB, 37, 87_412, 400_000, 34, 1410, 1593,
                processes=((os.getpid(), 4096 * MiB), (2**22 + 1, 1024 * MiB)),
                source="nvidia-smi on A100-SXM4-80GB: 81920MiB total, power cap 400W, "
                       "max clocks SM 1410 MHz / memory 1593 MHz (A100 datasheet)")
    h100 = Load(81559 * MiB, 0, 0, None, 700_000, 29, 1980, 2619,
                source="nvidia-smi on H100 SXM5: 81559MiB total, power cap 700W, max clocks "
                       "SM 1980 MHz / memory 2619 MHz; power usage NotSupported stands in for "
                       "boards (vGPU guests) where NVML cannot read it")
    return make_nvml(["A100-80GB", "H100"], loads=[a100, h100])


def gpu_uuid(nvml: FakeNvml, index: int) -> str:
    """The GPU-… UUID fake NVML reports for physical GPU ``index``."""
    return _uuid(nvml, _Handle(index))


def mig_uuids(nvml: FakeNvml, index: int) -> list[str]:
    """The MIG-… UUIDs fake NVML reports for physical GPU ``index``."""
    return [_uuid(nvml, _Handle(index, m)) for m in range(nvml._mig.get(index, 0))]
