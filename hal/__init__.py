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
import warnings
from typing import TYPE_CHECKING, Any

# public name -> (module, attribute): functions and types only, never modules as values.
_EXPORTS: dict[str, tuple[str, str]] = {
    "hookimpl": ("hal.hookspecs", "hookimpl"),
    "hookspec": ("hal.hookspecs", "hookspec"),
    "API_VERSION": ("hal.contract", "API_VERSION"),
    "Backend": ("hal.contract", "Backend"),
    "Probe": ("hal.contract", "Probe"),
    "DeviceInfo": ("hal.contract", "DeviceInfo"),
    "MemoryInfo": ("hal.contract", "MemoryInfo"),
    "Hardware": ("hal.contract", "Hardware"),
    "Finding": ("hal.contract", "Finding"),
    "Telemetry": ("hal.telemetry", "Telemetry"),
    "HalError": ("hal.errors", "HalError"),
    "ConfigError": ("hal.errors", "ConfigError"),
    "DeviceUnavailableError": ("hal.errors", "DeviceUnavailableError"),
    "PluginError": ("hal.errors", "PluginError"),
    "BatchSizeError": ("hal.errors", "BatchSizeError"),
    "DistributedError": ("hal.errors", "DistributedError"),
    "HalFallbackWarning": ("hal.errors", "HalFallbackWarning"),
    "HalPrecisionWarning": ("hal.errors", "HalPrecisionWarning"),
    "Selection": ("hal.selection", "Selection"),
    "get_device": ("hal.selection", "get_device"),
    "select": ("hal.selection", "select"),
    "get_backend": ("hal.selection", "get_backend"),
    "list_backends": ("hal.selection", "list_backends"),
    "reset": ("hal.selection", "reset"),
    "list_plugins": ("hal.plugins", "list_plugins"),
    "autocast": ("hal.precision", "autocast"),
    "grad_scaler": ("hal.precision", "grad_scaler"),
    "is_oom": ("hal.oom", "is_oom"),
    "optimize": ("hal.optimize", "optimize"),
}

# Submodules reached as ``hal.memory.info()`` etc. are ordinary subpackages: importing them on
# first attribute access keeps ``import hal`` cheap without exporting modules as values.
_SUBMODULES = frozenset(
    {"memory", "precision", "batching", "distributed", "planner", "plugins", "selection",
     "telemetry", "cuda_compat"}
)

# Old name -> (new public name, how to get the old value). Kept one release; each warns once.
_DEPRECATED: dict[str, str] = {
    "backend": "get_backend",
    "plugin_list": "list_plugins",
}

__all__ = [
    "API_VERSION",
    "Backend",
    "BatchSizeError",
    "ConfigError",
    "DeviceInfo",
    "DeviceUnavailableError",
    "DistributedError",
    "Finding",
    "HalError",
    "HalFallbackWarning",
    "HalPrecisionWarning",
    "Hardware",
    "MemoryInfo",
    "PluginError",
    "Probe",
    "Selection",
    "Telemetry",
    "__version__",
    "autocast",
    "get_backend",
    "get_device",
    "grad_scaler",
    "hookimpl",
    "hookspec",
    "is_oom",
    "list_backends",
    "list_plugins",
    "optimize",
    "reset",
    "select",
]

if TYPE_CHECKING:
    from hal import batching as batching
    from hal import cuda_compat as cuda_compat
    from hal import distributed as distributed
    from hal import memory as memory
    from hal import planner as planner
    from hal import plugins as plugins
    from hal import precision as precision
    from hal import selection as selection
    from hal import telemetry as telemetry
    from hal.contract import (
        API_VERSION,
        Backend,
        DeviceInfo,
        Finding,
        Hardware,
        MemoryInfo,
        Probe,
    )
    from hal.errors import (
        BatchSizeError,
        ConfigError,
        DeviceUnavailableError,
        DistributedError,
        HalError,
        HalFallbackWarning,
        HalPrecisionWarning,
        PluginError,
    )
    from hal.hookspecs import hookimpl, hookspec
    from hal.oom import is_oom
    from hal.optimize import optimize
    from hal.plugins import list_plugins
    from hal.precision import autocast, grad_scaler
    from hal.selection import (
        Selection,
        get_backend,
        get_device,
        list_backends,
        reset,
        select,
    )
    from hal.telemetry import Telemetry

    __version__: str


def _version() -> str:
    """The installed distribution's version (one source of truth: pyproject.toml)."""
    from importlib import metadata

    try:
        return metadata.version("torch-hal")
    except metadata.PackageNotFoundError:  # a plain source checkout on PYTHONPATH
        return "0+unknown"


_warned: set[str] = set()


def _deprecated(old: str) -> Any:
    new = _DEPRECATED[old]
    if old not in _warned:
        _warned.add(old)
        warnings.warn(
            f"hal.{old} is deprecated and will be removed in the next release; use hal.{new}",
            DeprecationWarning,
            stacklevel=3,
        )
    target = __getattr__(new)
    if old == "backend":
        # hal.backend() was "the selected backend": the same as get_backend() with no name.
        return lambda: target()
    return target


def __getattr__(name: str) -> Any:
    """Import a public name on first use and cache it in the module namespace."""
    if name in _DEPRECATED:
        return _deprecated(name)  # not cached: every use of an old name is visible
    if name == "__version__":
        value: Any = _version()
    elif name in _SUBMODULES:
        value = importlib.import_module(f"hal.{name}")
    else:
        try:
            module_name, attr = _EXPORTS[name]
        except KeyError:
            raise AttributeError(f"module 'hal' has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
