"""A fake sysfs + procfs tree of Intel GPUs with telemetry, and an XpuBackend that reads it.

File names and units are the kernel's: hwmon ``energy1_input`` (µJ), ``power1_max`` (µW),
``temp*_input`` (m°C), i915 ``gt_act_freq_mhz``, xe ``tile0/gt0/freq0/act_freq`` (MHz), and DRM
fdinfo keys from Documentation/gpu/drm-usage-stats.rst (``drm-pdev``, ``drm-client-id``,
``drm-total-vram0`` / ``drm-total-local0`` in KiB, i915 ``drm-engine-<class>`` ns, xe
``drm-cycles-<class>`` / ``drm-total-cycles-<class>``).  Figures: a Data Center GPU Max 1550 on
xe (600 W card power limit, 1600 MHz max clock, as xpu-smi reports) and a Flex 170 on i915
(150 W, 2050 MHz).  ``advance()`` moves the counters on, as time passing on a busy GPU would.
The PCI functions and files are written by ``hal.testing.fake_tree``, the one sysfs tree
writer of the fakes.  Written apart from the code under test.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

from hal.testing.fake_tree import DISPLAY_OTHER_CLASS, VGA_CLASS, FakePci, make_fake_tree

MAX_1550 = "0000:3a:00.0"
FLEX_170 = "0000:9b:00.0"


def make_tree(root: Path, *, pid: int | None = None) -> Path:
    """Write the fake tree under ``root``; ``pid`` (default: this process) holds GPU memory."""
    pid = os.getpid() if pid is None else pid
    dev = "sys/bus/pci/devices"
    make_fake_tree(root, pci=[FakePci(MAX_1550, 0x8086, 0x0BD5, DISPLAY_OTHER_CLASS, "xe"),
                              FakePci(FLEX_170, 0x8086, 0x56C0, VGA_CLASS, "i915")], name="", files={
        f"{dev}/{MAX_1550}/hwmon/hwmon3/name": "xe\n",
        f"{dev}/{MAX_1550}/hwmon/hwmon3/energy1_input": "1000000000\n",
        f"{dev}/{MAX_1550}/hwmon/hwmon3/power1_max": "600000000\n",
        f"{dev}/{MAX_1550}/hwmon/hwmon3/temp2_input": "41000\n",
        f"{dev}/{MAX_1550}/hwmon/hwmon3/temp2_label": "pkg\n",
        f"{dev}/{MAX_1550}/tile0/gt0/freq0/act_freq": "1600\n",
        f"{dev}/{FLEX_170}/hwmon/hwmon4/name": "i915\n",
        f"{dev}/{FLEX_170}/hwmon/hwmon4/energy1_input": "5000000000\n",
        f"{dev}/{FLEX_170}/hwmon/hwmon4/power1_max": "150000000\n",
        f"{dev}/{FLEX_170}/drm/card1/gt_act_freq_mhz": "2050\n",
        f"proc/{pid}/cmdline": "python\0train.py\0",
    })
    fds = root / "proc" / str(pid) / "fd"
    fds.mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/dri/renderD128", fds / "7")
    os.symlink("/dev/dri/renderD128", fds / "8")  # a dup of the same client: counted once
    os.symlink("/dev/null", fds / "0")
    _fdinfo(root, pid, 0)
    return root


def _fdinfo(root: Path, pid: int, step: int) -> None:
    info = (f"pos:\t0\nflags:\t02100002\ndrm-driver:\txe\ndrm-pdev:\t{MAX_1550}\n"
            f"drm-client-id:\t12\ndrm-total-vram0:\t{2097152 + step * 1024} KiB\n"
            f"drm-resident-vram0:\t2097152 KiB\n"
            f"drm-cycles-ccs:\t{1000 + step * 450}\ndrm-total-cycles-ccs:\t{10000 + step * 1000}\n")
    make_fake_tree(root, files={f"proc/{pid}/fdinfo/{fd}": info for fd in ("7", "8")}, name="")


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
