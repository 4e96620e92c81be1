"""The Ascend backend plugin: Huawei NPUs through torch_npu (``npu`` devices, ``hccl``)."""

from __future__ import annotations

from collections.abc import Sequence

import hal
from hal.backends.ascend.backend import AscendBackend

__all__ = ["AscendBackend", "hal_backends"]


@hal.hookimpl
def hal_backends() -> Sequence[hal.Backend]:
    """Provide the Ascend backend."""
    return [AscendBackend()]
