"""A fake DCMI library (what ctypes gives for libdcmi.so) with telemetry, and an AscendBackend on it.

Each function has DCMI's C name and argument order, returns 0 on success and writes through
the ctypes pointers it is given, in DCMI's units: HBM in MB, power in 0.1 W, °C, MHz, process
memory in bytes (Huawei, "DCMI API Reference", dcmi_interface_api.h).  Figures are what
``npu-smi info`` prints on an Atlas 800T A2 (910B3: Power 93.7 W, Temp 36 C, HBM-Usage
3378 / 65536 MB, AICore 0 %) and an Atlas 300I Duo (310P3: no HBM, so hbm_info fails and
memory is unknown).  Written apart from the code under test.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DCMI_OK = 0
DCMI_ERR_NOT_SUPPORT = -8255


@dataclass
class Npu:
    """One NPU chip as DCMI reports it; None where the chip does not support the query."""

    chip_type: str
    chip_name: str
    hbm_total_mb: int | None
    hbm_used_mb: int
    aicore_util: int  # percent
    power_decawatt: int  # 0.1 W units
    temp_c: int
    aicore_mhz: int
    hbm_mhz: int | None
    processes: list[tuple[int, int]] = field(default_factory=list)


def _npus() -> list[Npu]:
    me = os.getpid()
    return [
        Npu("Ascend", "910B3", 65536, 3378, 0, 937, 36, 1800, 1600,
            processes=[(me, 3_221_225_472), (2**22 + 5, 1 << 20)]),
        Npu("Ascend", "310P3", None, 0, 12, 201, 52, 1080, None, processes=[]),
    ]


class FakeDcmi:
    """DCMI's functions over ``npus``; logical ids are 0..n-1, each on card i, device 0."""

    def __init__(self, npus: list[Npu] | None = None) -> None:
        self.npus = _npus() if npus is None else npus
        self.initialised = False
        self.calls = 0

    def _n(self, card: int, dev: int) -> Npu | None:
        self.calls += 1
        if not self.initialised or dev != 0 or not 0 <= card < len(self.npus):
            return None
        return self.npus[card]

    def dcmi_init(self) -> int:
        self.initialised = True
        return DCMI_OK

    def dcmi_get_card_id_device_id_from_logicid(self, card_p: Any, dev_p: Any, logic: Any) -> int:
        logic = getattr(logic, "value", logic)
        if not 0 <= logic < len(self.npus):
            return DCMI_ERR_NOT_SUPPORT
        card_p.contents.value, dev_p.contents.value = logic, 0
        return DCMI_OK

    def dcmi_get_device_hbm_info(self, card: int, dev: int, hbm_p: Any) -> int:
        n = self._n(card, dev)
        if n is None or n.hbm_total_mb is None:
            return DCMI_ERR_NOT_SUPPORT
        hbm = hbm_p.contents
        hbm.memory_size, hbm.memory_usage = n.hbm_total_mb, n.hbm_used_mb
        hbm.freq, hbm.temp = n.hbm_mhz or 0, n.temp_c
        return DCMI_OK

    def _scalar(self, card: int, dev: int, out_p: Any, figure: Callable[[Npu], int | None]) -> int:
        n = self._n(card, dev)
        value = None if n is None else figure(n)
        if value is None:
            return DCMI_ERR_NOT_SUPPORT
        out_p.contents.value = value
        return DCMI_OK

    def dcmi_get_device_utilization_rate(self, card: int, dev: int, kind: int, out_p: Any) -> int:
        return self._scalar(card, dev, out_p, lambda n: n.aicore_util if kind == 2 else None)

    def dcmi_get_device_power_info(self, card: int, dev: int, out_p: Any) -> int:
        return self._scalar(card, dev, out_p, lambda n: n.power_decawatt)

    def dcmi_get_device_temperature(self, card: int, dev: int, out_p: Any) -> int:
        return self._scalar(card, dev, out_p, lambda n: n.temp_c)

    def dcmi_get_device_frequency(self, card: int, dev: int, kind: int, out_p: Any) -> int:
        return self._scalar(card, dev, out_p, lambda n: {7: n.aicore_mhz, 6: n.hbm_mhz}.get(kind))

    def dcmi_get_device_chip_info(self, card: int, dev: int, chip_p: Any) -> int:
        n = self._n(card, dev)
        if n is None:
            return DCMI_ERR_NOT_SUPPORT
        chip = chip_p.contents
        for field_name, text in (("chip_type", n.chip_type), ("chip_name", n.chip_name),
                                 ("chip_ver", "V1")):
            raw = text.encode()
            getattr(chip, field_name)[:len(raw)] = list(raw)
        chip.aicore_cnt = 20
        return DCMI_OK

    def dcmi_get_device_resource_info(self, card: int, dev: int, procs: Any, num_p: Any) -> int:
        n = self._n(card, dev)
        if n is None:
            return DCMI_ERR_NOT_SUPPORT
        for i, (pid, mem) in enumerate(n.processes):
            procs[i].proc_id, procs[i].proc_mem_usage = pid, mem
        num_p.contents.value = len(n.processes)
        return DCMI_OK


def make_backend(dcmi: FakeDcmi | None = None, environ: dict[str, str] | None = None) -> Any:
    """A real AscendBackend on a stand-in torch_npu (device count only) reading the fake DCMI."""
    from hal.backends.ascend.backend import AscendBackend
    from hal.backends.ascend.telemetry import use_library

    dcmi = FakeDcmi() if dcmi is None else dcmi
    env = {} if environ is None else environ
    value = env.get("ASCEND_RT_VISIBLE_DEVICES")
    count = len(dcmi.npus) if value is None else len([v for v in value.split(",") if v.strip()])
    npu = types.SimpleNamespace(device_count=lambda: count)
    torch_npu = types.ModuleType("torch_npu")
    torch_npu.__version__ = "2.6.0.post3"  # type: ignore[attr-defined]
    torch_npu.npu = npu  # type: ignore[attr-defined]
    versions = {"torch": "2.6.0", "torch-npu": "2.6.0.post3"}
    backend = AscendBackend(module=npu, loader=lambda: torch_npu, environ=env,
                            versions_of=versions.get)
    use_library(backend, dcmi)
    return backend
