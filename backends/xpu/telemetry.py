"""Intel GPU telemetry from the kernel: hwmon (power, temperature), sysfs clocks, DRM fdinfo.

The i915 and xe drivers expose what xpu-smi shows without any library: under the GPU's PCI
directory ``hwmon/hwmon*/energy1_input`` (µJ counter: power is its rate between two reads),
``power1_max`` (µW limit), ``temp*_input`` (m°C; xe only), the actual clock in
``drm/cardN/gt_act_freq_mhz`` (i915) or ``tile0/gt0/freq0/act_freq`` (xe), and per process the
DRM fdinfo keys of the kernel's drm-usage-stats: ``drm-pdev``, ``drm-client-id``,
``drm-total-local0``/``drm-total-vram0`` (device memory) and ``drm-engine-*`` (busy ns).  The
process scan walks every process's fds, so it runs every few seconds, not every sample;
utilisation is the busiest engine class over that window.  Device memory total is not in
sysfs: it stays None.  No SYCL or Level Zero context is created.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from hal.hardware import PciDevice, pci_devices, read_text
from hal.telemetry import Readers, Telemetry, process_usage

INTEL_PCI_VENDOR = 0x8086
GPU_CLASSES = (0x03, 0x12)
AFFINITY_ENV = "ZE_AFFINITY_MASK"
PROCESS_REFRESH = 5.0
_UNITS = {"": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_MEMORY_KEYS = re.compile(r"drm-total-(?:local0|vram0)")


def visible_gpus(root: str, environ: Mapping[str, str]) -> list[PciDevice]:
    """The Intel GPUs torch.xpu counts, in order: discrete ones (the integrated GPU only if
    alone), narrowed by ZE_AFFINITY_MASK's device numbers ("1" or "0.1" keep device 1)."""
    gpus = pci_devices(root, INTEL_PCI_VENDOR, classes=GPU_CLASSES)
    discrete = [g for g in gpus if not g.address.endswith(":00:02.0")]
    gpus = discrete or gpus
    mask = environ.get(AFFINITY_ENV)
    if mask is None:
        return gpus
    out: list[PciDevice] = []
    for entry in (e.strip() for e in mask.split(",")):
        head = entry.split(".", 1)[0]
        if not head.isdigit() or int(head) >= len(gpus):
            break
        if gpus[int(head)] not in out:
            out.append(gpus[int(head)])
    return out


def _size(text: str) -> int | None:
    parts = text.split()
    if not parts or not parts[0].isdigit():
        return None
    return int(parts[0]) * _UNITS.get(parts[1] if len(parts) > 1 else "", 1)


class XpuTelemetry:
    """Reads one machine's Intel GPUs; keeps the previous energy and engine counters for rates."""

    def __init__(self, root: str = "/", environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.environ = os.environ if environ is None else environ
        self._clock = clock
        self._energy: dict[str, tuple[float, int]] = {}
        self._scan_at = -1e9
        self._scan: dict[str, tuple[list[tuple[int, int | None]], dict[str, int]]] = {}
        self._busy: dict[str, tuple[float, dict[str, int]]] = {}
        self._util: dict[str, float | None] = {}

    def _rel(self, *parts: str) -> str:
        return os.path.join(*parts)

    def _hwmon(self, pci: str) -> str | None:
        found = sorted(glob.glob(os.path.join(self.root, pci.lstrip("/"), "hwmon", "hwmon*")))
        return "/" + os.path.relpath(found[0], self.root) if found else None

    def _power(self, hwmon: str | None, key: str) -> tuple[float | None, float | None]:
        if hwmon is None:
            return None, None
        limit_text = read_text(self.root, f"{hwmon}/power1_max") or read_text(
            self.root, f"{hwmon}/power1_rated_max")
        limit = int(limit_text) / 1e6 if limit_text and limit_text.isdigit() else None
        energy = read_text(self.root, f"{hwmon}/energy1_input")
        if energy is None or not energy.isdigit():
            return None, limit or None
        now, value = self._clock(), int(energy)
        last = self._energy.get(key)
        self._energy[key] = (now, value)
        if last is None or now <= last[0] or value < last[1]:
            return None, limit or None
        return round((value - last[1]) / 1e6 / (now - last[0]), 2), limit or None

    def _temperature(self, hwmon: str | None) -> float | None:
        if hwmon is None:
            return None
        values = []
        for path in sorted(glob.glob(os.path.join(self.root, hwmon.lstrip("/"), "temp*_input"))):
            text = read_text(self.root, "/" + os.path.relpath(path, self.root))
            if text and text.lstrip("-").isdigit():
                values.append(int(text) / 1000.0)
        return max(values) if values else None

    def _frequency(self, pci: str) -> float | None:
        cards = sorted(glob.glob(os.path.join(self.root, pci.lstrip("/"), "drm", "card*")))
        for card in cards:
            text = read_text(self.root, "/" + os.path.relpath(card, self.root) + "/gt_act_freq_mhz")
            if text and text.isdigit():
                return float(text)
        text = read_text(self.root, f"{pci}/tile0/gt0/freq0/act_freq")
        return float(text) if text and text.isdigit() else None

    def _scan_processes(self) -> None:
        """Per PCI address: [(pid, device bytes)] and the summed busy ns per engine class."""
        scan: dict[str, tuple[list[tuple[int, int | None]], dict[str, int]]] = {}
        proc = os.path.join(self.root, "proc")
        try:
            pids = [p for p in os.listdir(proc) if p.isdigit()]
        except OSError:
            pids = []
        for pid in pids:
            fd_dir = os.path.join(proc, pid, "fd")
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue  # exited, or not ours to read
            seen: set[tuple[str, str]] = set()
            per_dev: dict[str, int] = {}
            for fd in fds:
                try:
                    if not os.readlink(os.path.join(fd_dir, fd)).startswith("/dev/dri/"):
                        continue
                    with open(os.path.join(proc, pid, "fdinfo", fd), encoding="ascii",
                              errors="replace") as f:
                        info = dict(line.split(":", 1) for line in f if ":" in line)
                except OSError:
                    continue
                pdev = info.get("drm-pdev", "").strip()
                client = info.get("drm-client-id", "").strip()
                if not pdev or (pdev, client) in seen:
                    continue  # dup'ed fds of one DRM client count once
                seen.add((pdev, client))
                entry = scan.setdefault(pdev, ([], {}))
                mem = sum(_size(v) or 0 for k, v in info.items() if _MEMORY_KEYS.fullmatch(k))
                per_dev[pdev] = per_dev.get(pdev, 0) + mem
                for k, v in info.items():
                    # i915: drm-engine-<class> busy ns; xe: drm-cycles-<class> of
                    # drm-total-cycles-<class> (GPU timestamp cycles).
                    if k.startswith(("drm-engine-", "drm-cycles-", "drm-total-cycles-")) and \
                            not k.startswith("drm-engine-capacity"):
                        n = v.split()[0] if v.split() else ""
                        if n.isdigit():
                            entry[1][k] = entry[1].get(k, 0) + int(n)
            for pdev, mem in per_dev.items():
                scan[pdev][0].append((int(pid), mem))
        now = self._clock()
        for pdev, (_, busy) in scan.items():
            last = self._busy.get(pdev)
            if last is not None and now > last[0]:
                rates = []
                for k, count in busy.items():
                    delta = count - last[1].get(k, 0)
                    if k.startswith("drm-engine-") and delta >= 0:
                        rates.append(delta / 1e9 / (now - last[0]))
                    elif k.startswith("drm-cycles-"):
                        total = k.replace("drm-cycles-", "drm-total-cycles-", 1)
                        span = busy.get(total, 0) - last[1].get(total, 0)
                        if span > 0 and delta >= 0:
                            rates.append(delta / span)
                self._util[pdev] = max(0.0, min(1.0, max(rates))) if rates else 0.0
            self._busy[pdev] = (now, busy)
        self._scan = scan
        self._scan_at = now

    def read(self, index: int) -> Telemetry:
        """One reading of visible GPU ``index``."""
        gpus = visible_gpus(self.root, self.environ)
        if index >= len(gpus):
            raise LookupError(f"visible XPU {index} has no Intel GPU in sysfs ({len(gpus)} found)")
        dev = gpus[index]
        pci = f"/sys/bus/pci/devices/{dev.address}"
        hwmon = self._hwmon(pci)
        power, limit = self._power(hwmon, dev.address)
        if self._clock() - self._scan_at >= PROCESS_REFRESH:
            self._scan_processes()
        listed, _ = self._scan.get(dev.address, ([], {}))
        used = sum(m or 0 for _, m in listed) if dev.address in self._scan else None
        return Telemetry(
            source=f"sysfs ({dev.driver or 'no driver'}): hwmon power/temperature, clock; "
                   "DRM fdinfo for processes, memory and engine busy time",
            name=f"Intel GPU [8086:{dev.device_id:04x}] at {dev.address}",
            memory_used=used, memory_total=None,
            utilization=self._util.get(dev.address),
            power=power, power_limit=limit, temperature=self._temperature(hwmon),
            clock=self._frequency(pci),
            processes=process_usage(listed, self.root),
        )


_readers: Readers[XpuTelemetry] = Readers("sysfs")


def read(backend: Any, index: int) -> Telemetry:
    """The XPU backend's telemetry from sysfs and fdinfo under ``backend.root``."""
    return _readers.read(backend, lambda: XpuTelemetry(backend.root, getattr(backend, "environ", None)),
                         lambda reader: reader.read(index))
