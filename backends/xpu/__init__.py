"""The Intel XPU backend plugin: Intel GPUs through native torch.xpu (``xpu`` devices, ``xccl``)."""

from __future__ import annotations

from collections.abc import Sequence

import hal
from hal.backends.xpu.backend import XpuBackend

__all__ = ["XpuBackend", "hal_backends"]


@hal.hookimpl
def hal_backends() -> Sequence[hal.Backend]:
    """Provide the Intel XPU backend."""
    return [XpuBackend()]
