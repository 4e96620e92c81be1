"""Build fake filesystem roots (sysfs PCI functions, /dev nodes, driver files) for hardware() tests.

Every backend's ``hardware()`` and ``findings()`` take a ``root``; these trees stand in for ``/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: PCI class codes (24-bit: base class, subclass, programming interface) seen on accelerators.
VGA_CLASS = 0x030000
DISPLAY_3D_CLASS = 0x030200
DISPLAY_OTHER_CLASS = 0x038000
ACCELERATOR_CLASS = 0x120000
ETHERNET_CLASS = 0x020000


@dataclass(frozen=True)
class FakePci:
    """One PCI function to write under /sys/bus/pci/devices/<address>/."""

    address: str
    vendor: int
    device: int
    pci_class: int = DISPLAY_3D_CLASS
    driver: str | None = None


def _as_pci(entry: FakePci | Mapping[str, Any]) -> FakePci:
    if isinstance(entry, FakePci):
        return entry
    return FakePci(
        address=str(entry["address"]),
        vendor=int(entry["vendor"]),
        device=int(entry.get("device", 0)),
        pci_class=int(entry.get("class", entry.get("pci_class", DISPLAY_3D_CLASS))),
        driver=entry.get("driver"),
    )


def make_fake_tree(
    tmp_path: str | os.PathLike[str],
    pci: Iterable[FakePci | Mapping[str, Any]] = (),
    dev: Iterable[str] = (),
    files: Mapping[str, str] | None = None,
    *,
    name: str = "fakeroot",
) -> str:
    """Create (or add to) a fake root ``tmp_path/name`` and return its path (pass it as ``root=``).

    ``pci``: FakePci or mappings with address, vendor, device, class (or pci_class), driver.
    ``dev``: device node names relative to /dev (``nvidia0``, ``kfd``, ``dri/renderD128``).
    ``files``: absolute paths inside the tree mapped to their contents.
    ``name=""``: ``tmp_path`` itself is the root.
    """
    root = Path(tmp_path) / name
    devices_dir = root / "sys/bus/pci/devices"
    devices_dir.mkdir(parents=True, exist_ok=True)
    for entry in map(_as_pci, pci):
        d = devices_dir / entry.address
        d.mkdir(parents=True, exist_ok=True)
        (d / "vendor").write_text(f"0x{entry.vendor:04x}\n")
        (d / "device").write_text(f"0x{entry.device:04x}\n")
        (d / "class").write_text(f"0x{entry.pci_class:06x}\n")
        if entry.driver:
            drv = root / "sys/bus/pci/drivers" / entry.driver
            drv.mkdir(parents=True, exist_ok=True)
            link = d / "driver"
            if not link.is_symlink():
                link.symlink_to(drv)
    for node_name in dev:
        node = root / "dev" / node_name.lstrip("/").removeprefix("dev/")
        node.parent.mkdir(parents=True, exist_ok=True)
        node.touch()
    for path, content in (files or {}).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return str(root)
