"""hal: one device, precision, memory and collectives API for PyTorch on every vendor's hardware.

Everything is imported lazily (PEP 562): ``import hal`` loads neither torch nor any plugin.

    import hal
    device = hal.get_device()          # best available device, with fallback and a reason
    model = model.to(device)
    with hal.autocast():               # the right dtype and device type for this hardware
        out = model(batch.to(device))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute); attribute None means the module itself.
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "hookimpl": ("hal.hookspecs", "hookimpl"),
    "hookspec": ("hal.hookspecs", "hookspec"),
    "API_VERSION": ("hal.backend", "API_VERSION"),
    "Backend": ("hal.backend", "Backend"),
    "Probe": ("hal.backend", "Probe"),
    "DeviceInfo": ("hal.backend", "DeviceInfo"),
    "MemoryInfo": ("hal.backend", "MemoryInfo"),
    "Hardware": ("hal.backend", "Hardware"),
    "Finding": ("hal.backend", "Finding"),
    "HalError": ("hal.errors", "HalError"),
    "ConfigError": ("hal.errors", "ConfigError"),
    "DeviceUnavailableError": ("hal.errors", "DeviceUnavailableError"),
    "PluginError": ("hal.errors", "PluginError"),
    "HalFallbackWarning": ("hal.selection", "HalFallbackWarning"),
    "Selection": ("hal.selection", "Selection"),
    "get_device": ("hal.selection", "get_device"),
    "select": ("hal.selection", "select"),
    "backend": ("hal.selection", "backend"),
    "list_backends": ("hal.selection", "list_backends"),
    "get_backend": ("hal.selection", "get_backend"),
    "reset": ("hal.selection", "reset"),
    "plugin_list": ("hal.plugins", "plugin_list"),
    "plugins": ("hal.plugins", None),
}
_OPTIONAL_EXPORTS: dict[str, tuple[str, str | None]] = {
    "memory": ("hal.memory", None),
    "precision": ("hal.precision", None),
    "autocast": ("hal.precision", "autocast"),
    "grad_scaler": ("hal.precision", "grad_scaler"),
    "is_oom": ("hal.oom", "is_oom"),
    "batching": ("hal.batching", None),
    "distributed": ("hal.distributed", None),
    "planner": ("hal.planner", None),
    "optimize": ("hal.optimize", "optimize"),
}
_EXPORTS.update(_OPTIONAL_EXPORTS)

__all__ = [
    "API_VERSION",
    "Backend",
    "ConfigError",
    "DeviceInfo",
    "DeviceUnavailableError",
    "Finding",
    "HalError",
    "HalFallbackWarning",
    "Hardware",
    "MemoryInfo",
    "PluginError",
    "Probe",
    "Selection",
    "__version__",
    "autocast",
    "backend",
    "batching",
    "distributed",
    "get_backend",
    "get_device",
    "grad_scaler",
    "hookimpl",
    "hookspec",
    "is_oom",
    "list_backends",
    "memory",
    "optimize",
    "planner",
    "plugin_list",
    "plugins",
    "precision",
    "reset",
    "select",
]

if TYPE_CHECKING:
    from hal.backend import (
        API_VERSION,
        Backend,
        DeviceInfo,
        Finding,
        Hardware,
        MemoryInfo,
        Probe,
    )
    from hal.errors import ConfigError, DeviceUnavailableError, HalError, PluginError
    from hal.hookspecs import hookimpl, hookspec
    from hal.plugins import plugin_list
    from hal.selection import (
        HalFallbackWarning,
        Selection,
        backend,
        get_backend,
        get_device,
        list_backends,
        reset,
        select,
    )


def __getattr__(name: str) -> Any:
    """Import a public name on first use and cache it in the module namespace."""
    try:
        module_name, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'hal' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
