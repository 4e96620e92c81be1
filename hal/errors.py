"""Errors a user of hal can cause: one-line messages naming the bad value and what is accepted."""

from __future__ import annotations


class HalError(Exception):
    """Base of every error hal raises on purpose."""


class ConfigError(HalError, ValueError):
    """A bad value in an environment variable, argument or file (HAL_DEVICE=bogus, ...)."""


class DeviceUnavailableError(HalError, RuntimeError):
    """The requested backend is not available and fallback is forbidden (HAL_STRICT=1)."""


class PluginError(HalError, RuntimeError):
    """A plugin broke the v1 contract in a way hal cannot skip over."""
