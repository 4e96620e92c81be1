"""A JSON-able inventory of every backend: availability, devices, memory, dtypes, versions.

Feeds ``hal devices`` and ``hal doctor``.  Every backend method runs through the plugin boundary
(``hal.validate``): one that raises is reported; one that hangs, exits or returns a wrong type or
a non-finite number makes its backend unavailable with that reason and is recorded on its plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from hal.contract import Backend, Probe
from hal.plugins import fail_backend
from hal.selection import safe_probe
from hal.validate import (
    Outcome,
    call_checked,
    check_dtypes,
    check_versions,
    fetch_devices,
    fetch_memory,
    timeout_from_env,
)

T = TypeVar("T")


class _Broken(Exception):
    """The backend broke the contract: it is unavailable from here on, with this reason."""


def _value(outcome: Outcome[T], what: str, errors: list[str]) -> T | None:
    """A checked call's value; a raise is reported in ``errors``, anything else breaks the backend."""
    if outcome.state == "raised":
        errors.append(outcome.describe(what))
        return None
    if outcome.state != "ok":
        raise _Broken(outcome.describe(what))
    return outcome.value


def _call(backend: Backend, fn: Callable[[], Any], what: str, check: Callable[[Any], T],
          errors: list[str], timeout: float) -> T | None:
    return _value(call_checked(fn, f"backend {backend.name!r}: {what}", check, timeout), what,
                  errors)


def describe_backend(backend: Backend, probe: Probe | None = None) -> dict[str, Any]:
    """One backend as a dict; devices, memory and dtypes only when it is available.

    ``probe``: the backend's answer when the caller already has it (not probed again).
    """
    timeout = timeout_from_env()
    if probe is None:
        probe = safe_probe(backend, timeout)
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
        try:
            infos = _value(fetch_devices(backend, timeout), "devices()", errors) or []
            for info in infos:
                mem = _value(fetch_memory(backend, info.index, timeout), "memory()", errors)
                dtypes = _call(backend, partial(backend.dtypes, info.index), "dtypes()",
                               check_dtypes, errors, timeout) or []
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
            out["versions"] = _call(backend, backend.versions, "versions()", check_versions,
                                    errors, timeout) or {}
        except _Broken as exc:
            fail_backend(backend.name, str(exc))
            out.update(available=False, reason=f"unavailable: {exc}", devices=[], versions={})
    out["errors"] = errors
    return out
