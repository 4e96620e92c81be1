"""The ROCm backend plugin: AMD GPUs through torch.cuda on a HIP build of torch."""

from __future__ import annotations

from collections.abc import Sequence

import hal
from hal.backends.rocm.backend import RocmBackend

__all__ = ["RocmBackend", "hal_backends"]


@hal.hookimpl
def hal_backends() -> Sequence[hal.Backend]:
    """Provide the ROCm backend."""
    return [RocmBackend()]
