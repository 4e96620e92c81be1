"""The CUDA backend plugin: NVIDIA GPUs through torch.cuda, discovered without a CUDA context."""

from __future__ import annotations

from collections.abc import Sequence

import hal
from hal.backends.cuda.backend import CudaBackend

__all__ = ["CudaBackend", "hal_backends"]


@hal.hookimpl
def hal_backends() -> Sequence[hal.Backend]:
    """Provide the CUDA backend."""
    return [CudaBackend()]
