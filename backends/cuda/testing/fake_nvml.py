"""A fake ``pynvml`` (nvidia-ml-py): the NVML functions hal calls, with pynvml's names and signatures."""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hal.backends.cuda.testing.specs import SPECS, GpuSpec, device_uuid


class FakeNVMLError(Exception):
    """Mirrors pynvml.NVMLError (``value`` holds the NVML return code)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {9: "Driver Not Loaded", 12: "NVML Shared Library Not Found",
                6: "Not Found", 3: "Not Supported"}.get(self.value, f"NVML error {self.value}")


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
    """A fake ``pynvml``: the functions hal uses, with pynvml's names and signatures.

    It models discovery (counts, UUIDs, MIG, memory totals); the live figures of ``hal watch``
    (utilisation, power, temperature, clocks, processes) answer NVML's "Not Supported", as on a
    board that does not report them; ``fake_telemetry`` models boards that do.
    """

    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_NOT_SUPPORTED = 3

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

    def _not_supported(self, *args: Any) -> Any:
        raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)

    nvmlDeviceGetUtilizationRates = nvmlDeviceGetPowerUsage = _not_supported
    nvmlDeviceGetEnforcedPowerLimit = nvmlDeviceGetTemperature = _not_supported
    nvmlDeviceGetClockInfo = nvmlDeviceGetComputeRunningProcesses = _not_supported


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
