"""Torch-free facts about the Intel GPU stack: which PCI functions are GPUs, render nodes and
their drivers, the visible-devices variables, and intel-extension-for-pytorch's version.
"""

from __future__ import annotations

import os
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


def _selector_terms(value: str) -> tuple[list[tuple[str, list[str]]], list[tuple[str, list[str]]]]:
    """ONEAPI_DEVICE_SELECTOR's ``;``-separated ``backend:devices`` terms: (positive, negative)."""
    positive, negative = [], []
    for term in (t.strip() for t in value.split(";") if t.strip()):
        backend, _, devices = term.partition(":")
        backend = backend.strip().lower()
        targets = [d.strip().lower() for d in devices.split(",") if d.strip()]
        if backend.startswith("!"):
            negative.append((backend[1:], targets))
        else:
            positive.append((backend, targets))
    # Only negative filters: the runtime starts from every device (an implicit "*:*").
    return positive or [("*", ["*"])], negative


def _term_keeps(term: tuple[str, list[str]], index: int, whole_only: bool) -> bool:
    """Does a term name Level Zero GPU ``index``? Sub-device forms (``0.1``) count for device
    0 in a positive term, and are skipped in a negative one (``whole_only``)."""
    backend, targets = term
    if backend not in ("level_zero", "*"):
        return False
    for target in targets:
        if target in ("*", "gpu"):
            return True
        head, dot, _ = target.partition(".")
        if head.isascii() and head.isdigit() and int(head) == index and not (dot and whole_only):
            return True
    return False


def selector_count(value: str | None, count: int) -> int | None:
    """How many of ``count`` Level Zero GPUs ONEAPI_DEVICE_SELECTOR keeps; None when unset.

    Grammar (oneAPI DPC++ "Environment Variables", ONEAPI_DEVICE_SELECTOR): ``;``-separated
    ``backend:devices`` terms, ``!`` discards; backends ``level_zero``, ``opencl``, ``cuda``,
    ``hip``, ``*``; devices ``*``, ``gpu``, ``cpu``, ``fpga``, indices, ``N.M`` sub-devices.
    torch.xpu uses Level Zero GPUs only, so ``opencl:*`` alone keeps none.  A listed
    sub-device counts as one device (``0.*`` may expose several: an estimate from below).
    """
    if value is None or not value.strip():
        return None
    positive, negative = _selector_terms(value)
    kept = 0
    for index in range(count):
        if any(_term_keeps(t, index, False) for t in positive) and not any(
                _term_keeps(t, index, True) for t in negative):
            kept += 1
    return kept
