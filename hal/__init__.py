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

# THE export list: public name -> the module defining it (functions and types, never modules).
# ``__all__`` and the lazy ``__getattr__`` derive from it; the TYPE_CHECKING imports below
# restate it for type checkers, and tests/test_exports.py checks that they agree.
_EXPORTS: dict[str, str] = {
    "hookimpl": "hal.hookspecs",
    "hookspec": "hal.hookspecs",
    "API_VERSION": "hal.contract",
    "Backend": "hal.contract",
    "Probe": "hal.contract",
    "DeviceInfo": "hal.contract",
    "MemoryInfo": "hal.contract",
    "Hardware": "hal.contract",
    "Finding": "hal.contract",
    "Telemetry": "hal.readings",
    "HalError": "hal.errors",
    "ConfigError": "hal.errors",
    "DeviceUnavailableError": "hal.errors",
    "PluginError": "hal.errors",
    "BatchSizeError": "hal.errors",
    "DistributedError": "hal.errors",
    "HalFallbackWarning": "hal.errors",
    "HalPrecisionWarning": "hal.errors",
    "Selection": "hal.selection",
    "get_device": "hal.selection",
    "select": "hal.selection",
    "get_backend": "hal.selection",
    "list_backends": "hal.selection",
    "reset": "hal.selection",
    "list_plugins": "hal.plugins",
    "autocast": "hal.precision",
    "grad_scaler": "hal.precision",
    "is_oom": "hal.oom",
    "optimize": "hal.optimize",
}

# Submodules reached as ``hal.memory.info()`` etc. are ordinary subpackages: importing them on
# first attribute access keeps ``import hal`` cheap without exporting modules as values.
_SUBMODULES = frozenset(
    {"memory", "precision", "batching", "distributed", "planner", "plugins", "selection",
     "telemetry", "cuda_compat"}
)

# Old name -> new public name. Kept one release; each warns once (hal.errors.warn_renamed).
_DEPRECATED: dict[str, str] = {
    "backend": "get_backend",
    "plugin_list": "list_plugins",
}

__all__ = sorted([*_EXPORTS, "__version__"])

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
    from hal.contract import API_VERSION as API_VERSION
    from hal.contract import Backend as Backend
    from hal.contract import DeviceInfo as DeviceInfo
    from hal.contract import Finding as Finding
    from hal.contract import Hardware as Hardware
    from hal.contract import MemoryInfo as MemoryInfo
    from hal.contract import Probe as Probe
    from hal.errors import BatchSizeError as BatchSizeError
    from hal.errors import ConfigError as ConfigError
    from hal.errors import DeviceUnavailableError as DeviceUnavailableError
    from hal.errors import DistributedError as DistributedError
    from hal.errors import HalError as HalError
    from hal.errors import HalFallbackWarning as HalFallbackWarning
    from hal.errors import HalPrecisionWarning as HalPrecisionWarning
    from hal.errors import PluginError as PluginError
    from hal.hookspecs import hookimpl as hookimpl
    from hal.hookspecs import hookspec as hookspec
    from hal.oom import is_oom as is_oom
    from hal.optimize import optimize as optimize
    from hal.plugins import list_plugins as list_plugins
    from hal.precision import autocast as autocast
    from hal.precision import grad_scaler as grad_scaler
    from hal.readings import Telemetry as Telemetry
    from hal.selection import Selection as Selection
    from hal.selection import get_backend as get_backend
    from hal.selection import get_device as get_device
    from hal.selection import list_backends as list_backends
    from hal.selection import reset as reset
    from hal.selection import select as select

    __version__: str


def _version() -> str:
    """The installed distribution's version (one source of truth: pyproject.toml)."""
    from importlib import metadata

    try:
        return metadata.version("torch-hal")
    except metadata.PackageNotFoundError:  # a plain source checkout on PYTHONPATH
        return "0+unknown"


def _deprecated(old: str) -> Any:
    from hal.errors import warn_renamed

    new = _DEPRECATED[old]
    warn_renamed(old, new, stacklevel=4)
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
            module_name = _EXPORTS[name]
        except KeyError:
            raise AttributeError(f"module 'hal' has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
