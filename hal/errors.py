"""Every exception and warning hal raises: one-line messages naming the bad value and what is accepted.

One module owns them (pluggy's habit), so a user catches ``hal.HalError`` and a reader finds
every failure mode in one place. Exceptions about a plugin carry it (``PluginError.plugin``).
``describe_exception`` is the one way hal words an exception it caught in a message or report.
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


#: Longest exception summary ``describe_exception`` writes (plugin errors can be megabytes).
MAX_SUMMARY = 2000


def describe_exception(exc: BaseException | None, limit: int = MAX_SUMMARY) -> str:
    """``Type: first line`` of an exception (``Type`` alone when it has no text), control
    characters escaped and cut to about ``limit`` characters; safe against a hostile ``__str__``.
    ``None`` reads ``nothing``."""
    if exc is None:
        return "nothing"
    try:
        lines = str(exc).strip().splitlines()
    except Exception:  # a hostile __str__
        lines = []
    text = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    from hal.console import one_line

    return one_line(text, limit)  # escaped: a plugin's message cannot drive the terminal


_renamed_warned: set[str] = set()


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn once per process (``DeprecationWarning``) that ``hal.<old>`` is now ``hal.<new>``.

    Renamed names stay one release as aliases that call this; CHANGELOG.md lists them.
    """
    if old in _renamed_warned:
        return
    import warnings

    _renamed_warned.add(old)
    warnings.warn(f"hal.{old} is deprecated and will be removed in the next release; use hal.{new}",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_attribute(module: str, name: str, renames: dict[str, str]) -> object:
    """A module ``__getattr__``'s answer: an old name in ``renames`` gives the new one's value
    (warning once); any other name is the usual AttributeError."""
    import sys

    new = renames.get(name)
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    short = module.removeprefix("hal.")
    warn_renamed(f"{short}.{name}", f"{short}.{new}", stacklevel=4)
    return getattr(sys.modules[module], new)
