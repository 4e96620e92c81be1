"""Accelerate on hal: ``accelerator()`` gives an ``accelerate.Accelerator`` on hal's device and precision.

Accelerate picks its own device (``torch.accelerator``) and ``mixed_precision='no'`` unless told;
this call tells it hal's choice (HAL_DEVICE, HAL_PRECISION, LOCAL_RANK, fallback with a reason) and
gives its batch-size finder hal's out-of-memory test, which knows every loaded vendor's texts.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import accelerate
import accelerate.utils.memory as _memory

from hal.integrations import selected

#: hal's policy (compute dtype short name) -> Accelerate's ``mixed_precision`` value.
MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}
#: Accelerate's own variable for the device its state uses.
DEVICE_ENV = "ACCELERATE_TORCH_DEVICE"

__all__ = ["MIXED_PRECISION", "accelerator", "mixed_precision", "should_reduce_batch_size",
           "use_hal_oom_test"]

_accelerates_own = _memory.should_reduce_batch_size
_env_lock = threading.Lock()


def mixed_precision(device: Any = None) -> str:
    """Accelerate's ``mixed_precision`` value for hal's policy on ``device`` (HAL_PRECISION respected)."""
    from hal.precision import policy

    return MIXED_PRECISION[policy(device).name]


def should_reduce_batch_size(exception: BaseException) -> bool:
    """Accelerate's test, or hal's: an out-of-memory error of any loaded backend."""
    from hal.oom import is_oom

    return is_oom(exception) or bool(isinstance(exception, Exception) and _accelerates_own(exception))


def use_hal_oom_test() -> None:
    """Make ``accelerate.utils.find_executable_batch_size`` shrink on hal's out-of-memory test
    (it looks the test up in its module at each failure); idempotent."""
    _memory.should_reduce_batch_size = should_reduce_batch_size


@contextlib.contextmanager
def _device_env(device: str) -> Iterator[None]:
    """Accelerate's device variable set to hal's device while its state is made, then restored."""
    with _env_lock:
        saved = os.environ.get(DEVICE_ENV)
        os.environ[DEVICE_ENV] = device
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(DEVICE_ENV, None)
            else:
                os.environ[DEVICE_ENV] = saved


def accelerator(**kwargs: Any) -> accelerate.Accelerator:
    """An ``accelerate.Accelerator`` on hal's device, precision and process-group backend.

    ``kwargs`` go to ``Accelerator`` and win over hal's (``mixed_precision=``, ``cpu=``,
    ``kwargs_handlers=``). Under torchrun each rank gets its LOCAL_RANK's device.
    """
    from hal.distributed.env import backend_string

    backend, index = selected()
    device = str(backend.torch_device(index))
    kwargs.setdefault("mixed_precision", mixed_precision())
    kwargs.setdefault("cpu", backend.device_type == "cpu")
    if os.environ.get("LOCAL_RANK") is not None and not any(
            isinstance(h, accelerate.utils.InitProcessGroupKwargs)
            for h in kwargs.get("kwargs_handlers") or ()):
        handler = accelerate.utils.InitProcessGroupKwargs(backend=backend_string(backend))
        kwargs["kwargs_handlers"] = [*(kwargs.get("kwargs_handlers") or ()), handler]
    use_hal_oom_test()
    if index is not None:  # Accelerate skips its own set_device when given a device
        backend.set_device(index)
    with _device_env(device):
        return accelerate.Accelerator(**kwargs)
