"""Host CPU telemetry from /proc and sysfs: per-core utilisation, memory, RAPL power, hwmon temperature.

Everything is read from files under ``root`` (a fake tree in tests): ``/proc/stat`` deltas for
utilisation over the cores this process may run on, the memory cgroup and host RAM for memory,
``/sys/class/powercap`` RAPL energy counters for power (root-only on kernels since 5.10, so
often None), ``coretemp``/``k10temp`` hwmon for temperature, cpufreq for the clock, and the
largest resident processes from ``/proc/<pid>/statm`` (refreshed every few seconds: listing all
processes is the expensive part of a sample).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hal.hardware import read_text
from hal.telemetry import ProcessUsage, Readers, Telemetry, process_usage

#: hwmon drivers that report the CPU package temperature.
CPU_HWMON = ("coretemp", "k10temp", "zenpower", "cpu_thermal")
#: How often the process table is re-read (seconds); other figures are fresh every sample.
PROCESS_REFRESH = 5.0
TOP_PROCESSES = 5


@dataclass(frozen=True)
class _Rapl:
    energy: str  # path of energy_uj
    limit: float | None  # watts
    wrap: int  # max_energy_range_uj


class CpuTelemetry:
    """Stateful reader: utilisation and power are rates between two calls (first call primes)."""

    def __init__(self, root: str = "/", *, memory: Callable[[], tuple[int, int]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 cpus: set[int] | None = None) -> None:
        """``memory`` gives (total, free) bytes (the backend's cgroup-aware figures)."""
        self.root = root
        self._memory = memory
        self._clock = clock
        if cpus is None:
            cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        self.cpus = cpus
        self._last_stat: dict[int, tuple[int, int]] | None = None
        self._rapl: list[_Rapl] | None = None
        self._last_energy: tuple[float, list[int]] | None = None
        self._temp_files: list[str] | None = None
        self._procs: tuple[ProcessUsage, ...] | None = None
        self._procs_at = -1e9
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    # -- utilisation -----------------------------------------------------------------------
    def _stat(self) -> dict[int, tuple[int, int]]:
        """(busy, total) jiffies per cpu from /proc/stat."""
        out: dict[int, tuple[int, int]] = {}
        for line in (read_text(self.root, "/proc/stat") or "").splitlines():
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            parts = line.split()
            try:
                cpu = int(parts[0][3:])
                values = [int(v) for v in parts[1:]]
            except ValueError:
                continue
            # user nice system idle iowait irq softirq steal (guest is already in user)
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            total = sum(values[:8])
            out[cpu] = (total - idle, total)
        return out

    def utilization(self) -> tuple[float | None, tuple[float, ...] | None]:
        """(mean, per-core) busy fraction since the previous call, over this process's cores."""
        now = self._stat()
        last, self._last_stat = self._last_stat, now
        if last is None or not now:
            return None, None
        cores = sorted(c for c in now if (not self.cpus or c in self.cpus) and c in last)
        per: list[float] = []
        for c in cores:
            busy = now[c][0] - last[c][0]
            total = now[c][1] - last[c][1]
            per.append(max(0.0, min(1.0, busy / total)) if total > 0 else 0.0)
        if not per:
            return None, None
        return sum(per) / len(per), tuple(round(p, 4) for p in per)

    # -- power (RAPL) ----------------------------------------------------------------------
    def _rapl_domains(self) -> list[_Rapl]:
        if self._rapl is None:
            found = []
            base = os.path.join(self.root, "sys/class/powercap")
            for d in sorted(glob.glob(os.path.join(base, "intel-rapl:[0-9]*"))):
                if os.path.basename(d).count(":") != 1:  # package domains only, not subzones
                    continue
                rel = os.path.relpath(d, self.root)
                if not (read_text(self.root, f"{rel}/name") or "").startswith("package"):
                    continue
                limit = read_text(self.root, f"{rel}/constraint_0_power_limit_uw")
                wrap = read_text(self.root, f"{rel}/max_energy_range_uj")
                found.append(_Rapl(f"{rel}/energy_uj",
                                   int(limit) / 1e6 if limit and limit.isdigit() else None,
                                   int(wrap) if wrap and wrap.isdigit() else 2**32))
            self._rapl = found
        return self._rapl

    def power(self) -> tuple[float | None, float | None]:
        """(package watts since the previous call, package power limit W); None if unreadable."""
        domains = self._rapl_domains()
        if not domains:
            return None, None
        energies = []
        for d in domains:
            text = read_text(self.root, d.energy)  # root-only on kernels >= 5.10
            if text is None or not text.isdigit():
                return None, None
            energies.append(int(text))
        now = self._clock()
        last, self._last_energy = self._last_energy, (now, energies)
        limits = [d.limit for d in domains if d.limit is not None]
        limit = sum(limits) if limits else None
        if last is None or now <= last[0]:
            return None, limit
        joules = 0.0
        for d, e, e0 in zip(domains, energies, last[1]):
            joules += ((e - e0) % d.wrap) / 1e6
        return round(joules / (now - last[0]), 2), limit

    # -- temperature and clock -------------------------------------------------------------
    def _temperature_files(self) -> list[str]:
        if self._temp_files is None:
            files: list[str] = []
            for hw in sorted(glob.glob(os.path.join(self.root, "sys/class/hwmon/hwmon*"))):
                rel = os.path.relpath(hw, self.root)
                if (read_text(self.root, f"{rel}/name") or "") not in CPU_HWMON:
                    continue
                inputs = sorted(glob.glob(os.path.join(hw, "temp*_input")))
                # coretemp: temp1 is "Package id N"; k10temp: temp1 is Tctl.  Prefer labelled ones.
                chosen = []
                for path in inputs:
                    label = read_text(self.root, os.path.relpath(
                        path.replace("_input", "_label"), self.root)) or ""
                    if label.startswith(("Package", "Tctl", "Tdie")):
                        chosen.append(os.path.relpath(path, self.root))
                files.extend(chosen or [os.path.relpath(p, self.root) for p in inputs[:1]])
            self._temp_files = files
        return self._temp_files

    def temperature(self) -> float | None:
        """Hottest CPU package temperature in °C (hwmon reports millidegrees)."""
        values = []
        for rel in self._temperature_files():
            text = read_text(self.root, rel)
            if text and text.lstrip("-").isdigit():
                values.append(int(text) / 1000.0)
        return max(values) if values else None

    def clock(self) -> float | None:
        """Mean current frequency (MHz) of this process's cores, from cpufreq (kHz)."""
        values = []
        for c in sorted(self.cpus) or [0]:
            text = read_text(self.root, f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq")
            if text and text.isdigit():
                values.append(int(text) / 1000.0)
        return round(sum(values) / len(values), 1) if values else None

    # -- processes -------------------------------------------------------------------------
    def processes(self) -> tuple[ProcessUsage, ...] | None:
        """The largest resident processes (RSS bytes), re-read every PROCESS_REFRESH seconds."""
        now = self._clock()
        if self._procs is not None and now - self._procs_at < PROCESS_REFRESH:
            return self._procs
        proc = os.path.join(self.root, "proc")
        try:
            names = os.listdir(proc)
        except OSError:
            return None
        sizes: list[tuple[int, int | None]] = []
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(os.path.join(proc, name, "statm"), "rb") as f:
                    resident = int(f.read().split()[1]) * self._page
            except (OSError, ValueError, IndexError):
                continue  # exited between listing and reading
            if resident > 0:
                sizes.append((int(name), resident))
        sizes.sort(key=lambda p: -(p[1] or 0))
        self._procs = process_usage(sizes[:TOP_PROCESSES * 2], self.root, limit=TOP_PROCESSES)
        self._procs_at = now
        return self._procs

    def read(self, name: str | None = None) -> Telemetry:
        """One Telemetry reading of the host CPU."""
        util, per = self.utilization()
        power, limit = self.power()
        used = total = None
        if self._memory is not None:
            total, free = self._memory()
            used = max(0, total - free)
        sources = ["/proc/stat (cores this process may use)",
                   "memory: min(host RAM, cgroup limit), used = total - available"]
        if self._rapl:
            sources.append("power: RAPL powercap" if power is not None or limit is not None
                           else "power: RAPL present but unreadable (root-only)")
        if self._temp_files:
            sources.append("temperature: hwmon " + "/".join(CPU_HWMON[:2]))
        sources.append("processes: largest RSS from /proc")
        return Telemetry(
            source="; ".join(sources), name=name, memory_used=used, memory_total=total,
            utilization=None if util is None else round(util, 4), unit_utilization=per,
            power=power, power_limit=limit, temperature=self.temperature(), clock=self.clock(),
            processes=self.processes())


_readers: Readers[CpuTelemetry] = Readers("/proc and sysfs")


def read(backend: Any) -> Telemetry:
    """The CPU backend's telemetry: one stateful reader per backend object (rates need history)."""
    def memory() -> tuple[int, int]:
        total, free, _ = backend.ram_figures()
        return int(total), int(free)

    return _readers.read(backend, lambda: CpuTelemetry(backend.root, memory=memory),
                         lambda reader: reader.read(backend.facts.model))
