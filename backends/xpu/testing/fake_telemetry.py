"""A fake sysfs + procfs tree of Intel GPUs with telemetry, and an XpuBackend that reads it.

File names and units are the kernel's: hwmon ``energy1_input`` (µJ), ``power1_max`` (µW),
``temp*_input`` (m°C), i915 ``gt_act_freq_mhz``, xe ``tile0/gt0/freq0/act_freq`` (MHz), and DRM
fdinfo keys from Documentation/gpu/drm-usage-stats.rst (``drm-pdev``, ``drm-client-id``,
``drm-total-vram0`` / ``drm-total-local0`` in KiB, i915 ``drm-engine-<class>`` ns, xe
``drm-cycles-<class>`` / ``drm-total-cycles-<class>``).  Figures: a Data Center GPU Max 1550 on
xe (600 W card power limit, 1600 MHz max clock, as xpu-smi reports) and a Flex 170 on i915
(150 W, 2050 MHz).  ``advance()`` moves the counters on, as time passing on a busy GPU would.
Written apart from the code under test.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

MAX_1550 = "0000:3a:00.0"
FLEX_170 = "0000:9b:00.0"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_tree(root: Path, *, pid: int | None = None) -> Path:
    """Write the fake tree under ``root``; ``pid`` (default: this process) holds GPU memory."""
    pid = os.getpid() if pid is None else pid
    drivers = root / "sys/bus/pci/drivers"
    for addr, dev, cls, driver in ((MAX_1550, "0x0bd5", "0x038000", "xe"),
                                   (FLEX_170, "0x56c0", "0x030000", "i915")):
        d = root / "sys/bus/pci/devices" / addr
        _write(d / "vendor", "0x8086\n")
        _write(d / "device", dev + "\n")
        _write(d / "class", cls + "\n")
        (drivers / driver).mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(drivers / driver, d), d / "driver")
    hw = root / "sys/bus/pci/devices" / MAX_1550 / "hwmon/hwmon3"
    _write(hw / "name", "xe\n")
    _write(hw / "energy1_input", "1000000000\n")
    _write(hw / "power1_max", "600000000\n")
    _write(hw / "temp2_input", "41000\n")
    _write(hw / "temp2_label", "pkg\n")
    _write(root / "sys/bus/pci/devices" / MAX_1550 / "tile0/gt0/freq0/act_freq", "1600\n")
    hw = root / "sys/bus/pci/devices" / FLEX_170 / "hwmon/hwmon4"
    _write(hw / "name", "i915\n")
    _write(hw / "energy1_input", "5000000000\n")
    _write(hw / "power1_max", "150000000\n")
    _write(root / "sys/bus/pci/devices" / FLEX_170 / "drm/card1/gt_act_freq_mhz", "2050\n")
    proc = root / "proc" / str(pid)
    _write(proc / "cmdline", "python\0train.py\0")
    (proc / "fd").mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/dri/renderD128", proc / "fd/7")
    os.symlink("/dev/dri/renderD128", proc / "fd/8")  # a dup of the same client: counted once
    os.symlink("/dev/null", proc / "fd/0")
    _fdinfo(root, pid, 0)
    return root


def _fdinfo(root: Path, pid: int, step: int) -> None:
    info = (f"pos:\t0\nflags:\t02100002\ndrm-driver:\txe\ndrm-pdev:\t{MAX_1550}\n"
            f"drm-client-id:\t12\ndrm-total-vram0:\t{2097152 + step * 1024} KiB\n"
            f"drm-resident-vram0:\t2097152 KiB\n"
            f"drm-cycles-ccs:\t{1000 + step * 450}\ndrm-total-cycles-ccs:\t{10000 + step * 1000}\n")
    for fd in ("7", "8"):
        _write(root / "proc" / str(pid) / "fdinfo" / fd, info)


def advance(root: Path, step: int = 1, *, pid: int | None = None) -> None:
    """Move the energy counters and the xe engine cycles on by ``step`` seconds of work."""
    pid = os.getpid() if pid is None else pid
    for addr, watts in ((MAX_1550, 350), (FLEX_170, 60)):
        for f in (root / "sys/bus/pci/devices" / addr / "hwmon").glob("hwmon*/energy1_input"):
            f.write_text(str(int(f.read_text()) + watts * 1_000_000 * step) + "\n")
    _fdinfo(root, pid, step)


def make_backend(root: Path, environ: dict[str, str] | None = None) -> Any:
    """A real XpuBackend on the tree at ``root`` and a stand-in torch.xpu (count only)."""
    from hal.backends.xpu.backend import XpuBackend

    env = {} if environ is None else environ
    count = 2 if "ZE_AFFINITY_MASK" not in env else len(env["ZE_AFFINITY_MASK"].split(","))
    xpu = types.SimpleNamespace(_is_compiled=lambda: True, is_available=lambda: True,
                                is_initialized=lambda: False, device_count=lambda: count)
    return XpuBackend(module=xpu, root=str(root), environ=env,
                      versions_of={"torch": "2.9.0+xpu"}.get)
