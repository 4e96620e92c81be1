"""AMD telemetry through the amdsmi Python API (ROCm 6+): what amd-smi shows, without HIP init.

Units as amdsmi documents them: VRAM usage in MB (``amdsmi_get_gpu_vram_usage``), socket
power and its limit in W (``amdsmi_get_power_info``), temperatures in °C
(``amdsmi_get_temp_metric``), clocks in MHz (``amdsmi_get_clock_info``), engine activity in
percent (``amdsmi_get_gpu_activity``); a value amdsmi cannot read comes back as ``"N/A"`` and
becomes None.  A visible index maps to an amdsmi handle through ROCR_VISIBLE_DEVICES, then
HIP_VISIBLE_DEVICES (or CUDA_VISIBLE_DEVICES, its alias), indices or serial prefixes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hal.telemetry import Readers, Telemetry, figure_or_none, process_usage

MB = 1 << 20
ROCR_ENV = "ROCR_VISIBLE_DEVICES"
HIP_ENV = "HIP_VISIBLE_DEVICES"
CUDA_ENV = "CUDA_VISIBLE_DEVICES"


def _num(value: Any) -> float | None:
    """A number from an amdsmi field; "N/A", None and non-numbers are None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _pick(value: str | None, items: list[int], serials: list[str]) -> list[int]:
    """Positions ``value`` keeps from ``items`` (indices into them, or serial prefixes)."""
    if value is None:
        return items
    out: list[int] = []
    for entry in (e.strip() for e in value.split(",")):
        if entry.isdigit() and int(entry) < len(items):
            out.append(items[int(entry)])
            continue
        cand = entry.replace("GPU-", "", 1).lower()
        matches = [i for i in items if cand and serials[i].startswith(cand)]
        if len(matches) != 1:
            break  # the runtime stops at the first entry it cannot use
        out.append(matches[0])
    return out


def physical_positions(environ: Mapping[str, str], serials: list[str]) -> list[int]:
    """amdsmi handle positions of the visible devices, in visible order."""
    positions = _pick(environ.get(ROCR_ENV), list(range(len(serials))), serials)
    return _pick(environ.get(HIP_ENV, environ.get(CUDA_ENV)), positions, serials)


class AmdsmiTelemetry:
    """One amdsmi session (initialised once) and the handle of each visible device."""

    def __init__(self, smi: Any, environ: Mapping[str, str] | None = None) -> None:
        self.smi = smi
        self.environ = os.environ if environ is None else environ
        self._handles: list[Any] | None = None

    def _handle(self, index: int) -> Any:
        smi = self.smi
        if self._handles is None:
            flags = getattr(getattr(smi, "AmdSmiInitFlags", None), "INIT_AMD_GPUS", None)
            smi.amdsmi_init(*(() if flags is None else (flags,)))
            handles = list(smi.amdsmi_get_processor_handles())
            serials = []
            for h in handles:
                info = figure_or_none(smi.amdsmi_get_gpu_asic_info, h)
                serial = str(info.get("asic_serial", "")).lower() if isinstance(info, dict) else ""
                serials.append(serial[2:] if serial.startswith("0x") else serial)
            self._handles = [handles[p] for p in physical_positions(self.environ, serials)]
        if index >= len(self._handles):
            raise LookupError(f"visible device {index} cannot be matched to an amdsmi device "
                              f"({ROCR_ENV}/{HIP_ENV} leave {len(self._handles)})")
        return self._handles[index]

    def _temperature(self, h: Any) -> float | None:
        smi = self.smi
        kinds = getattr(smi, "AmdSmiTemperatureType", None)
        metric = getattr(getattr(smi, "AmdSmiTemperatureMetric", None), "CURRENT", None)
        if kinds is None or metric is None:
            return None
        # MI300 has no edge sensor; the hotspot (junction) is what amd-smi shows first.
        for kind in ("HOTSPOT", "EDGE"):
            sensor = getattr(kinds, kind, None)
            value = _num(figure_or_none(smi.amdsmi_get_temp_metric, h, sensor, metric)) if sensor else None
            if value is not None:
                return value
        return None

    def _clock(self, h: Any, kind: str) -> float | None:
        clk = getattr(getattr(self.smi, "AmdSmiClkType", None), kind, None)
        info = figure_or_none(self.smi.amdsmi_get_clock_info, h, clk) if clk is not None else None
        return _num(info.get("clk")) if isinstance(info, dict) else None

    def _processes(self, h: Any) -> list[tuple[int, int | None]] | None:
        smi = self.smi
        listed = figure_or_none(smi.amdsmi_get_gpu_process_list, h)
        if listed is None:
            return None
        out = []
        for item in listed:
            # ROCm 6.1+ returns dicts; earlier releases return handles for *_process_info.
            info = (item if isinstance(item, dict)
                    else figure_or_none(smi.amdsmi_get_gpu_process_info, h, item))
            if not isinstance(info, dict) or _num(info.get("pid")) is None:
                continue  # it exited between the listing and the read
            usage = info.get("memory_usage")
            vram = _num(usage.get("vram_mem")) if isinstance(usage, dict) else None
            if vram is None:
                vram = _num(info.get("mem"))
            out.append((int(info["pid"]), None if vram is None else int(vram)))
        return out

    def read(self, index: int) -> Telemetry:
        """One reading of visible device ``index``."""
        smi = self.smi
        h = self._handle(index)
        asic = figure_or_none(smi.amdsmi_get_gpu_asic_info, h)
        vram = figure_or_none(smi.amdsmi_get_gpu_vram_usage, h)
        activity = figure_or_none(smi.amdsmi_get_gpu_activity, h)
        power = figure_or_none(smi.amdsmi_get_power_info, h)
        used = total = None
        if isinstance(vram, dict):
            u, t = _num(vram.get("vram_used")), _num(vram.get("vram_total"))
            used = None if u is None else int(u * MB)
            total = None if t is None else int(t * MB)
        gfx = _num(activity.get("gfx_activity")) if isinstance(activity, dict) else None
        watts = limit = None
        if isinstance(power, dict):
            # MI200 reports only the average; MI300 the current socket power.
            watts = _num(power.get("current_socket_power"))
            if watts is None:
                watts = _num(power.get("average_socket_power"))
            limit = _num(power.get("power_limit"))
        procs = self._processes(h)
        return Telemetry(
            source="amdsmi",
            name=str(asic.get("market_name")) if isinstance(asic, dict) else None,
            memory_used=used, memory_total=total,
            utilization=None if gfx is None else gfx / 100.0,
            power=watts, power_limit=limit or None,
            temperature=self._temperature(h),
            clock=self._clock(h, "GFX"), memory_clock=self._clock(h, "MEM"),
            processes=None if procs is None else process_usage(procs),
        )


_readers: Readers[AmdsmiTelemetry] = Readers("amdsmi")


def read(backend: Any, index: int) -> Telemetry:
    """The ROCm backend's telemetry: amdsmi when installed, else say so (never HIP)."""
    smi = backend.amdsmi
    if smi is None:
        return Telemetry(source="none: amdsmi is not installed (it ships with ROCm 6: "
                                "pip install /opt/rocm/share/amd_smi); hal watch never "
                                "initialises HIP to ask torch")
    return _readers.read(backend, lambda: AmdsmiTelemetry(smi, getattr(backend, "environ", None)),
                         lambda reader: reader.read(index))
