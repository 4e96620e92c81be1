"""The CPU backend plugin: always available, so hal always has a device to fall back to."""

from __future__ import annotations

from collections.abc import Sequence

import hal
from hal.backends.cpu.backend import CpuBackend

__all__ = ["CpuBackend", "hal_backends"]


@hal.hookimpl
def hal_backends() -> Sequence[hal.Backend]:
    """Provide the CPU backend."""
    return [CpuBackend()]
