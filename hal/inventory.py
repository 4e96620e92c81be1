"""A JSON-able inventory of every backend: availability, devices, memory, dtypes, versions.

Feeds ``hal devices`` and ``hal doctor``; a backend method that raises is reported, not fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from hal.contract import Backend, Probe
from hal.selection import safe_probe

T = TypeVar("T")


def _guard(fn: Callable[[], T], errors: list[str], what: str) -> T | None:
    try:
        return fn()
    except Exception as exc:
        errors.append(f"{what} raised {type(exc).__name__}: {exc}")
        return None


def describe_backend(backend: Backend, probe: Probe | None = None) -> dict[str, Any]:
    """One backend as a dict; devices, memory and dtypes only when it is available.

    ``probe``: the backend's answer when the caller already has it (not probed again).
    """
    if probe is None:
        probe = safe_probe(backend)
    errors: list[str] = []
    out: dict[str, Any] = {
        "name": backend.name,
        "device_type": backend.device_type,
        "priority": backend.priority,
        "dist_backend": backend.dist_backend,
        "visible_devices_env": list(backend.visible_devices_env),
        "available": probe.available,
        "reason": probe.reason,
        "device_count": probe.device_count,
        "devices": [],
    }
    if probe.available:
        infos = _guard(backend.devices, errors, "devices()") or []
        for info in infos:
            mem = _guard(partial(backend.memory, info.index), errors, "memory()")
            dtypes = _guard(partial(backend.dtypes, info.index), errors, "dtypes()") or []
            out["devices"].append({
                "index": info.index,
                "name": info.name,
                "total_memory": info.total_memory,
                "capability": info.capability,
                "extras": dict(info.extras),
                "memory": None if mem is None else {
                    "total": mem.total, "free": mem.free, "allocated": mem.allocated,
                    "reserved": mem.reserved, "peak": mem.peak, "source": mem.source,
                },
                "dtypes": [str(d).removeprefix("torch.") for d in dtypes],
            })
        out["versions"] = dict(_guard(backend.versions, errors, "versions()") or {})
    out["errors"] = errors
    return out
