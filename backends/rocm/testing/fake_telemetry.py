"""A fake ``amdsmi`` Python module with telemetry, and a RocmBackend that runs on it.

Function names, enums and return shapes follow the amdsmi Python API (ROCm 6.x docs,
py-interface README): dicts with ``"N/A"`` for unreadable values, VRAM in MB, power in W,
temperatures in °C, clocks in MHz, process lists as dicts (``pid``, ``name``, ``mem``,
``memory_usage.vram_mem`` in bytes).  Figures are amd-smi's on these boards (see ``_boards``).
Written apart from the code under test.
"""

from __future__ import annotations

import enum
import os
import types
from dataclasses import dataclass, field
from typing import Any


class AmdSmiInitFlags(enum.IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1 << 0
    INIT_AMD_GPUS = 1 << 1


class AmdSmiTemperatureType(enum.IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2


class AmdSmiTemperatureMetric(enum.IntEnum):
    CURRENT = 0
    MAX = 1


class AmdSmiClkType(enum.IntEnum):
    SYS = 0
    GFX = 0
    DF = 1
    DCEF = 2
    SOC = 3
    MEM = 4


class AmdSmiLibraryException(Exception):
    """Mirrors amdsmi's exception for a failed library call (err_code 2: not supported)."""

    def __init__(self, err_code: int) -> None:
        super().__init__(f"Error code:\n\t{err_code} | AMDSMI_STATUS_NOT_SUPPORTED")
        self.err_code = err_code


@dataclass
class Gpu:
    """One GPU as amdsmi reports it; "N/A" where amd-smi prints N/A."""

    market_name: str
    serial: str
    vram_total_mb: int
    vram_used_mb: int
    gfx_activity: Any
    current_power: Any
    average_power: Any
    power_limit: Any
    edge: Any
    hotspot: Any
    gfx_mhz: int
    mem_mhz: int
    processes: list[tuple[int, int]] = field(default_factory=list)
    source: str = ""


def _gpus() -> list[Gpu]:
    me = os.getpid()
    return [
        Gpu("AMD Instinct MI300X", "0x460ACD8F1E7B2C44", 196592, 11834, 62, 398, "N/A", 750,
            "N/A", 48, 2100, 1300, processes=[(me, 11_264 << 20), (2**22 + 3, 512 << 20)],
            source="amd-smi metric on MI300X: VRAM 196592 MB, POWER socket 398 W of a 750 W "
                   "cap, EDGE N/A (no edge sensor on MI300), HOTSPOT 48 C, GFX clock up to "
                   "2100 MHz, MEM 1300 MHz"),
        Gpu("AMD Instinct MI250X", "0x2F6B19A3C5D70E81", 65520, 10, 0, "N/A", 92, 560, 34,
            37, 800, 1600, processes=[],
            source="amd-smi metric on MI250X (one GCD): VRAM 65520 MB, power cap 560 W, "
                   "current socket power N/A on MI200 (average 92 W), EDGE 34 C, "
                   "MEM 1600 MHz"),
    ]


class FakeAmdsmi(types.ModuleType):
    """The amdsmi functions hal uses, over ``gpus``; calls before amdsmi_init fail as in amdsmi."""

    AmdSmiInitFlags = AmdSmiInitFlags
    AmdSmiTemperatureType = AmdSmiTemperatureType
    AmdSmiTemperatureMetric = AmdSmiTemperatureMetric
    AmdSmiClkType = AmdSmiClkType
    AmdSmiLibraryException = AmdSmiLibraryException

    def __init__(self, gpus: list[Gpu] | None = None) -> None:
        super().__init__("amdsmi")
        self.gpus = _gpus() if gpus is None else gpus
        self.initialised = 0

    def _g(self, handle: int) -> Gpu:
        if self.initialised <= 0:
            raise AmdSmiLibraryException(32)  # AMDSMI_STATUS_NOT_INIT
        return self.gpus[handle]

    def amdsmi_init(self, flags: int = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        self.initialised += 1

    def amdsmi_shut_down(self) -> None:
        self.initialised = max(0, self.initialised - 1)

    def amdsmi_get_processor_handles(self) -> list[int]:
        if self.initialised <= 0:
            raise AmdSmiLibraryException(32)
        return list(range(len(self.gpus)))

    def amdsmi_get_gpu_asic_info(self, h: int) -> dict[str, Any]:
        g = self._g(h)
        return {"market_name": g.market_name, "vendor_id": "0x1002", "asic_serial": g.serial,
                "device_id": "0x74a1", "rev_id": "0x00", "family": 148}

    def amdsmi_get_gpu_vram_usage(self, h: int) -> dict[str, Any]:
        g = self._g(h)
        return {"vram_total": g.vram_total_mb, "vram_used": g.vram_used_mb}

    def amdsmi_get_gpu_activity(self, h: int) -> dict[str, Any]:
        return {"gfx_activity": self._g(h).gfx_activity, "umc_activity": "N/A",
                "mm_activity": "N/A"}

    def amdsmi_get_power_info(self, h: int) -> dict[str, Any]:
        g = self._g(h)
        return {"current_socket_power": g.current_power, "average_socket_power": g.average_power,
                "gfx_voltage": "N/A", "soc_voltage": "N/A", "mem_voltage": "N/A",
                "power_limit": g.power_limit}

    def amdsmi_get_temp_metric(self, h: int, sensor: int, metric: int) -> int:
        g = self._g(h)
        value = {AmdSmiTemperatureType.EDGE: g.edge, AmdSmiTemperatureType.HOTSPOT: g.hotspot
                 }.get(AmdSmiTemperatureType(sensor), "N/A")
        if value == "N/A":
            raise AmdSmiLibraryException(2)
        return int(value)

    def amdsmi_get_clock_info(self, h: int, clk_type: int) -> dict[str, Any]:
        g = self._g(h)
        clk = g.mem_mhz if clk_type == AmdSmiClkType.MEM else g.gfx_mhz
        return {"clk": clk, "min_clk": 500, "max_clk": clk, "clk_locked": False,
                "clk_deep_sleep": False}

    def amdsmi_get_gpu_process_list(self, h: int) -> list[dict[str, Any]]:
        return [{"name": "python", "pid": pid, "mem": vram,
                 "engine_usage": {"gfx": 0, "enc": 0},
                 "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": vram},
                 "cu_occupancy": "N/A"} for pid, vram in self._g(h).processes]


def make_backend(smi: FakeAmdsmi | None = None, environ: dict[str, str] | None = None) -> Any:
    """A real RocmBackend on the fake amdsmi and a HIP-build torch.version; no HIP call."""
    from hal.backends.cuda.testing.fake_torch_cuda import counting_cuda, make_version
    from hal.backends.rocm.backend import RocmBackend

    smi = FakeAmdsmi() if smi is None else smi
    return RocmBackend(counting_cuda(len(smi.gpus)), make_version(cuda=None, hip="6.4.43482"), smi,
                       environ=environ)
