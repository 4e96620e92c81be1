"""Torch-free facts about the Intel GPU stack: which PCI functions are GPUs, render nodes and
their drivers, the visible-devices variables, and intel-extension-for-pytorch's version.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from hal.hardware import ACCELERATOR_CLASS, DISPLAY_CLASS, PciDevice, dev_nodes, pci_devices

INTEL_PCI_VENDOR = 0x8086
#: Only display (0x03) and processing-accelerator (0x12) functions: Intel also makes host
#: bridges, NICs, audio and USB controllers under the same vendor id.
GPU_CLASSES = (DISPLAY_CLASS, ACCELERATOR_CLASS)
#: Kernel drivers of Intel GPUs that Level Zero (and so torch.xpu) drives.
GPU_DRIVERS = ("i915", "xe")
#: Ponte Vecchio (Data Center GPU Max) PCI ids from Linux's i915_pciids.h; up to two stacks
#: each, exposed as two devices under Level Zero's default FLAT hierarchy.
PVC_DEVICE_IDS = frozenset({0x0BD0, 0x0BD5, 0x0BD6, 0x0BD7, 0x0BD8, 0x0BD9, 0x0BDA, 0x0BDB})
#: The integrated GPU's customary PCI address on Intel client platforms.
IGPU_ADDRESS_SUFFIX = ":00:02.0"
IPEX_DIST = "intel-extension-for-pytorch"
XPU_INDEX_URL = "https://download.pytorch.org/whl/xpu"
_MAJOR_MINOR = re.compile(r"^(\d+)\.(\d+)")


def intel_gpus(root: str = "/") -> list[PciDevice]:
    """Intel PCI functions of the display or accelerator class (not every Intel function)."""
    return pci_devices(root, INTEL_PCI_VENDOR, classes=GPU_CLASSES)


def is_integrated(dev: PciDevice) -> bool:
    """Heuristic: Intel's integrated GPU sits at bus 0, device 2, function 0."""
    return dev.address.endswith(IGPU_ADDRESS_SUFFIX)


def render_nodes(root: str = "/") -> list[tuple[str, str]]:
    """(``/dev/dri/renderD*``, driver) pairs whose DRM device is bound to i915 or xe."""
    found = []
    for node in dev_nodes(root, "/dev/dri/renderD*"):
        name = os.path.basename(node)
        link = os.path.join(root, "sys/class/drm", name, "device/driver")
        driver = os.path.basename(os.path.realpath(link)) if os.path.exists(link) else ""
        if driver in GPU_DRIVERS:
            found.append((node, driver))
    return found


def device_upper_bound(gpus: list[PciDevice], environ: Mapping[str, str]) -> int:
    """How many Level Zero devices the GPUs can expose at most (two per Max stack pair)."""
    flat = environ.get("ZE_FLAT_DEVICE_HIERARCHY", "FLAT").upper() != "COMPOSITE"
    return sum(2 if flat and g.device_id in PVC_DEVICE_IDS else 1 for g in gpus)


def affinity_hides_all(value: str | None, count: int) -> bool:
    """Does ZE_AFFINITY_MASK list only indices at or above ``count`` (so every device is hidden)?

    Only plain index lists are judged (as torch parses them); ``0.1`` sub-device forms are not.
    """
    if value is None or count <= 0 or not value.strip():
        return False
    tokens = [t.strip() for t in value.split(",") if t.strip()]
    if not tokens or not all(t.isdigit() for t in tokens):
        return False
    return all(int(t) >= count for t in tokens)


def selector_hides_all(value: str | None, count: int) -> bool:
    """Does ONEAPI_DEVICE_SELECTOR keep no Level Zero GPU (the only backend torch.xpu uses)?

    Grammar (oneAPI DPC++ docs): ``;``-separated ``backend:devices`` terms, ``!`` negates;
    backends ``level_zero``, ``opencl``, ``cuda``, ``hip``, ``*``; devices ``*``, ``gpu``,
    ``cpu``, ``fpga`` or indices.
    """
    if value is None or not value.strip():
        return False
    positive = []
    for term in (t.strip() for t in value.split(";") if t.strip()):
        backend, _, devices = term.partition(":")
        backend = backend.strip().lower()
        targets = [d.strip().lower() for d in devices.split(",") if d.strip()]
        if backend.startswith("!"):
            if backend[1:] in ("level_zero", "*") and any(t in ("*", "gpu") for t in targets):
                return True
            continue
        positive.append((backend, targets))
    if not positive:
        return False
    for backend, targets in positive:
        if backend not in ("level_zero", "*"):
            continue
        for target in targets:
            if target in ("*", "gpu"):
                return False
            head = target.split(".")[0]
            if head.isdigit() and (count <= 0 or int(head) < count):
                return False
    return True


def major_minor(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version such as ``2.8.10+xpu``; None if it does not parse."""
    m = _MAJOR_MINOR.match(version.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None
