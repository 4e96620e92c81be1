"""Torch-free hardware evidence helpers: PCI functions from sysfs, /dev nodes, driver files.

Vendor-free on purpose: backends pass in the vendor ids, device-node patterns and file paths
they own.  Every function takes a filesystem ``root`` so tests can use fake trees.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

#: PCI base classes that hold compute devices: display controllers and processing accelerators.
DISPLAY_CLASS = 0x03
ACCELERATOR_CLASS = 0x12


@dataclass(frozen=True)
class PciDevice:
    """One PCI function from /sys/bus/pci/devices/<address>/."""

    address: str
    vendor_id: int
    device_id: int
    class_id: int
    driver: str | None = None

    @property
    def base_class(self) -> int:
        """The PCI base class (top byte of the 24-bit class code)."""
        return (self.class_id >> 16) & 0xFF


def read_text(root: str, path: str) -> str | None:
    """Contents of ``root``/``path`` stripped, or None when missing or unreadable."""
    try:
        with open(os.path.join(root, path.lstrip("/")), encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _hex(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def pci_devices(root: str = "/", vendor_id: int | None = None,
                classes: tuple[int, ...] | None = None) -> list[PciDevice]:
    """PCI functions, optionally only one vendor's and only the given base classes."""
    base = os.path.join(root, "sys/bus/pci/devices")
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    found = []
    for address in entries:
        rel = f"/sys/bus/pci/devices/{address}"
        vendor = _hex(read_text(root, f"{rel}/vendor"))
        if vendor is None or (vendor_id is not None and vendor != vendor_id):
            continue
        device = _hex(read_text(root, f"{rel}/device")) or 0
        cls = _hex(read_text(root, f"{rel}/class")) or 0
        if classes is not None and ((cls >> 16) & 0xFF) not in classes:
            continue
        driver_link = os.path.join(base, address, "driver")
        driver = os.path.basename(os.readlink(driver_link)) if os.path.islink(driver_link) else None
        found.append(PciDevice(address, vendor, device, cls, driver))
    return found


def dev_nodes(root: str, pattern: str) -> list[str]:
    """Paths (relative to ``root``, starting with /dev) of device nodes matching a glob."""
    prefix = os.path.join(root, "")
    return sorted("/" + p[len(prefix):].lstrip("/")
                  for p in glob.glob(os.path.join(root, pattern.lstrip("/"))))
