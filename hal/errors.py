"""Every exception and warning hal raises: one-line messages naming the bad value and what is accepted.

One module owns them (pluggy's habit), so a user catches ``hal.HalError`` and a reader finds
every failure mode in one place. Exceptions about a plugin carry it (``PluginError.plugin``).
"""

from __future__ import annotations


class HalError(Exception):
    """Base of every error hal raises on purpose."""


class ConfigError(HalError, ValueError):
    """A bad value in an environment variable, argument or file (HAL_DEVICE=bogus, ...)."""


class LaunchError(ConfigError, SystemExit):
    """Inconsistent launcher variables seen by ``hal.distributed.init()``: a ConfigError that,
    left uncaught in a script, ends it with exit status 2 and no traceback (the line is on stderr)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = 2


class DeviceUnavailableError(HalError, RuntimeError):
    """The requested backend is not available and fallback is forbidden (HAL_STRICT=1)."""


class PluginError(HalError, RuntimeError):
    """A plugin broke the contract: refused at load or registration; ``plugin`` names it."""

    def __init__(self, message: str, plugin: str = "") -> None:
        super().__init__(message)
        self.plugin = plugin


class BatchSizeError(HalError, RuntimeError):
    """Even the smallest allowed batch runs out of memory."""


class DistributedError(HalError, RuntimeError):
    """A rank is missing, crashed or stalled, or the rendezvous point cannot be used."""


class UnmappedCallError(HalError, RuntimeError):
    """Code written for one vendor's device API called something the selected backend has no
    equivalent for; the message names the call, the backend and what to do instead."""


class HalFallbackWarning(UserWarning):
    """The requested backend is unavailable, so hal fell back down the chain."""


class HalPrecisionWarning(UserWarning):
    """The requested precision runs only by emulation on this device (slow)."""
