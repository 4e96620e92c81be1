"""Ascend NPU telemetry through DCMI (``libdcmi.so``, the driver's management library), via ctypes.

DCMI is what npu-smi itself reads; npu-smi has no machine-readable output mode, so hal calls
the library directly (Huawei, "DCMI API Reference"): ``dcmi_get_device_hbm_info`` (HBM total
and used in MB), ``dcmi_get_device_utilization_rate`` (AI Core %, input type 2),
``dcmi_get_device_power_info`` (units of 0.1 W), ``dcmi_get_device_temperature`` (°C),
``dcmi_get_device_frequency`` (MHz; type 7 AI Core current, 6 HBM),
``dcmi_get_device_resource_info`` (pid and bytes per process), ``dcmi_get_device_chip_info``.
A visible index is a logical id through ASCEND_RT_VISIBLE_DEVICES, mapped to DCMI's
(card, device) pair by ``dcmi_get_card_id_device_id_from_logicid``.  No ACL context is made.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Mapping
from typing import Any

from hal.telemetry import Readers, Telemetry, process_usage

MB = 1 << 20
VISIBLE_ENV = "ASCEND_RT_VISIBLE_DEVICES"
#: Where the driver installs libdcmi.so (found through LD_LIBRARY_PATH first).
LIBRARY_PATHS = ("libdcmi.so", "/usr/local/dcmi/libdcmi.so",
                 "/usr/local/Ascend/driver/lib64/driver/libdcmi.so")
UTILIZATION_AICORE = 2
FREQ_HBM = 6
FREQ_AICORE_CURRENT = 7
MAX_PROCESSES = 64


class HbmInfo(ctypes.Structure):
    """struct dcmi_hbm_info (dcmi_interface_api.h)."""

    _fields_ = [("memory_size", ctypes.c_ulonglong), ("freq", ctypes.c_uint),
                ("memory_usage", ctypes.c_ulonglong), ("temp", ctypes.c_int),
                ("bandwith_util_rate", ctypes.c_uint)]


class ProcMemInfo(ctypes.Structure):
    """struct dcmi_proc_mem_info: a process id and its device memory in bytes."""

    _fields_ = [("proc_id", ctypes.c_int), ("proc_mem_usage", ctypes.c_ulong)]


class ChipInfo(ctypes.Structure):
    """struct dcmi_chip_info: chip type ("Ascend"), name ("910B3"), version, AI Core count."""

    _fields_ = [("chip_type", ctypes.c_ubyte * 32), ("chip_name", ctypes.c_ubyte * 32),
                ("chip_ver", ctypes.c_ubyte * 32), ("aicore_cnt", ctypes.c_uint)]


def load_dcmi() -> Any:
    """ctypes handle of libdcmi.so; OSError naming the paths tried when there is none."""
    errors = []
    for path in LIBRARY_PATHS:
        try:
            return ctypes.CDLL(path)
        except OSError as exc:
            errors.append(str(exc))
    raise OSError("libdcmi.so (Ascend driver) cannot be loaded: " + "; ".join(errors[:1]))


def logical_id(value: str | None, index: int) -> int | None:
    """The logical NPU id of visible device ``index`` under ASCEND_RT_VISIBLE_DEVICES."""
    if value is None:
        return index
    ids: list[int] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry.isdigit() or int(entry) in ids:
            break
        ids.append(int(entry))
    return ids[index] if index < len(ids) else None


def _text(raw: Any) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode("ascii", "replace")


class DcmiTelemetry:
    """One initialised DCMI library and the (card, device) pair of each visible NPU."""

    def __init__(self, lib: Any, environ: Mapping[str, str] | None = None) -> None:
        self.lib = lib
        self.environ = os.environ if environ is None else environ
        rc = lib.dcmi_init()
        if rc != 0:
            raise OSError(f"dcmi_init failed with code {rc} (is the NPU driver loaded?)")
        self._ids: dict[int, tuple[int, int]] = {}

    def _call(self, name: str, *args: Any) -> bool:
        fn = getattr(self.lib, name, None)
        if fn is None:  # an older driver without this function: that figure is unknown
            return False
        try:
            return int(fn(*args)) == 0
        except Exception:
            return False

    def ids(self, index: int) -> tuple[int, int]:
        """DCMI's (card_id, device_id) of visible device ``index``."""
        if index not in self._ids:
            logic = logical_id(self.environ.get(VISIBLE_ENV), index)
            card, dev = ctypes.c_int(-1), ctypes.c_int(-1)
            if logic is None or not self._call("dcmi_get_card_id_device_id_from_logicid",
                                               ctypes.pointer(card), ctypes.pointer(dev),
                                               ctypes.c_uint(logic)):
                raise LookupError(f"visible NPU {index} (logical id {logic}) is unknown to DCMI")
            self._ids[index] = (card.value, dev.value)
        return self._ids[index]

    def _uint(self, name: str, card: int, dev: int, *kind: int) -> int | None:
        out = ctypes.c_uint(0)
        return out.value if self._call(name, card, dev, *kind, ctypes.pointer(out)) else None

    def _int(self, name: str, card: int, dev: int) -> int | None:
        out = ctypes.c_int(0)
        return out.value if self._call(name, card, dev, ctypes.pointer(out)) else None

    def read(self, index: int) -> Telemetry:
        """One reading of visible NPU ``index``."""
        card, dev = self.ids(index)
        hbm = HbmInfo()
        has_hbm = self._call("dcmi_get_device_hbm_info", card, dev, ctypes.pointer(hbm))
        util = self._uint("dcmi_get_device_utilization_rate", card, dev, UTILIZATION_AICORE)
        power = self._int("dcmi_get_device_power_info", card, dev)
        temp = self._int("dcmi_get_device_temperature", card, dev)
        aicore = self._uint("dcmi_get_device_frequency", card, dev, FREQ_AICORE_CURRENT)
        hbm_clock = self._uint("dcmi_get_device_frequency", card, dev, FREQ_HBM)
        chip = ChipInfo()
        name = (f"{_text(chip.chip_type)}{_text(chip.chip_name)}"
                if self._call("dcmi_get_device_chip_info", card, dev, ctypes.pointer(chip))
                else None)
        procs = (ProcMemInfo * MAX_PROCESSES)()
        count = ctypes.c_int(MAX_PROCESSES)
        listed = None
        if self._call("dcmi_get_device_resource_info", card, dev, procs, ctypes.pointer(count)):
            listed = [(int(procs[i].proc_id), int(procs[i].proc_mem_usage))
                      for i in range(max(0, min(count.value, MAX_PROCESSES)))]
        total = int(hbm.memory_size) * MB if has_hbm and hbm.memory_size else None
        used = min(int(hbm.memory_usage) * MB, total) if total is not None else None
        return Telemetry(
            source="DCMI (libdcmi.so)", name=name or None,
            memory_used=used, memory_total=total,
            utilization=None if util is None else min(100, util) / 100.0,
            power=None if power is None else power / 10.0,
            temperature=None if temp is None else float(temp),
            clock=None if aicore is None else float(aicore),
            memory_clock=None if hbm_clock is None else float(hbm_clock),
            processes=None if listed is None else process_usage(listed),
        )


_libraries: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_readers: Readers[DcmiTelemetry] = Readers("DCMI")


def use_library(backend: Any, lib: Any) -> None:
    """Make ``backend`` read DCMI through ``lib`` (a fake in tests) instead of libdcmi.so."""
    _libraries[backend] = lib
    _readers.forget(backend)


def read(backend: Any, index: int) -> Telemetry:
    """The Ascend backend's telemetry from DCMI; when DCMI is missing, a reading that says so."""
    def make() -> DcmiTelemetry:
        return DcmiTelemetry(_libraries.get(backend) or load_dcmi(), getattr(backend, "environ", None))

    try:
        return _readers.read(backend, make, lambda reader: reader.read(index))
    except OSError as exc:  # libdcmi.so cannot be loaded (make raised)
        return Telemetry(source=f"none: {exc}; hal watch never creates an ACL context")
