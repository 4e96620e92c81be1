"""transformers on hal: ``from_pretrained(**from_pretrained_kwargs())`` on hal's device and memory.

``device_map="auto"`` alone sizes memory through Accelerate's ``get_max_memory`` (psutil's
available memory: the host's, not the memory cgroup a container really has) on the device
Accelerate detects; these give it hal's device, hal's free-memory figures (cgroup-true on the
host) and hal's precision policy instead.
"""

from __future__ import annotations

from typing import Any

from hal.errors import ConfigError
from hal.integrations import selected

#: Share of the free memory a model may take by default (activations and the KV cache need the rest).
FRACTION = 0.9

__all__ = ["FRACTION", "device_map", "from_pretrained_kwargs", "max_memory"]


def _fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"fraction={fraction!r}: expected a number in (0, 1]")
    return float(fraction)


def max_memory(fraction: float = FRACTION) -> dict[int | str, int]:
    """``max_memory`` for ``from_pretrained``: ``fraction`` of the free bytes of hal's device (this
    rank's under torchrun; left out where the device reports no memory figures) and of the host,
    the host's read from its memory cgroup where it has one."""
    from hal.memory import info
    from hal.selection import get_backend

    share = _fraction(fraction)
    backend, index = selected()
    out: dict[int | str, int] = {}
    if backend.device_type != "cpu":
        mem = info(backend.torch_device(index))
        if mem.total > 0:
            out[index or 0] = int(mem.free * share)
    out["cpu"] = int(info(get_backend("cpu")).free * share)
    return out


def device_map(fraction: float = FRACTION) -> str | dict[str, str]:
    """``device_map`` for ``from_pretrained``: ``"auto"`` (sized by ``max_memory``) on the host and
    on an accelerator that reports its memory and that Accelerate places integer keys on; else
    the whole model on hal's device."""
    backend, index = selected()
    if backend.device_type == "cpu":
        return "auto"
    if index in max_memory(fraction) and _accelerate_knows(backend.device_type):
        return "auto"
    return {"": str(backend.torch_device(index))}


def _accelerate_knows(device_type: str) -> bool:
    """Does Accelerate place ``max_memory``'s integer keys on ``device_type``?"""
    try:
        from accelerate.utils import get_torch_accelerator_backend
    except ImportError:
        return False
    found, _ = get_torch_accelerator_backend()
    return bool(found == device_type)


def from_pretrained_kwargs(fraction: float = FRACTION) -> dict[str, Any]:
    """``device_map``, ``max_memory`` (with ``"auto"``) and ``dtype`` (hal's precision policy) for
    ``from_pretrained``."""
    from hal.precision import policy

    kwargs: dict[str, Any] = {"device_map": device_map(fraction), "dtype": policy().compute_dtype}
    if kwargs["device_map"] == "auto":
        kwargs["max_memory"] = max_memory(fraction)
    return kwargs
