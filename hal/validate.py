"""The plugin boundary: every call into plugin code runs here, bounded in time, and every value
that comes back is checked once before the rest of hal (torch, the JSON encoder) sees it.

Plugin code is untrusted.  ``call_plugin`` runs it in a daemon thread under ``HAL_PROBE_TIMEOUT``
(a hung probe cannot block selection or interpreter exit), marks the thread so that a probe
calling back into hal gets a clear error instead of a deadlock, records ``SystemExit`` against the
plugin and lets ``KeyboardInterrupt`` stop hal.  The ``check_*`` functions turn a wrong type or a
non-finite number into a one-line reason.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Generic, Literal, TypeVar

from hal.contract import Backend, DeviceInfo, Finding, MemoryInfo, Probe
from hal.errors import PluginError, describe_exception
from hal.parse import parse_float
from hal.readings import ProcessUsage, Telemetry

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
U = TypeVar("U")

TIMEOUT_ENV = "HAL_PROBE_TIMEOUT"
#: Seconds one call into plugin code may take: a slow real driver answers well within it.
DEFAULT_TIMEOUT = 10.0
#: Longest timeout accepted from HAL_PROBE_TIMEOUT (an hour).
MAX_TIMEOUT = 3600.0
#: Plugin and backend names: ASCII letters, digits, ``_ . -``; compared case-insensitively.
NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9_.\-]{0,63}\Z", re.IGNORECASE)
ENV_NAME_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
#: Largest device count or index a backend may report.
MAX_DEVICES = 1 << 16
#: Longest reason or message kept from a plugin; the rest is cut.
MAX_TEXT = 2000
MAX_BYTES = 1 << 62

State = Literal["ok", "raised", "exited", "hung", "invalid"]
_local = threading.local()


def inside_plugin() -> str | None:
    """The label of the plugin call this thread is running (None outside plugin code)."""
    label: str | None = getattr(_local, "label", None)
    return label


def forbid_reentry(what: str) -> None:
    """Refuse ``what`` (a hal entry point) when called from inside plugin code: no deadlock."""
    label = inside_plugin()
    if label is not None:
        raise PluginError(
            f"{what} was called from inside {label}; plugin code must not call back into hal "
            "(it would wait for itself)", plugin=label.split("'")[1] if "'" in label else label)


def timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """HAL_PROBE_TIMEOUT in seconds (default 10); a bad value is a one-line ConfigError."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT
    return parse_float(TIMEOUT_ENV, raw, lo=0.0, hi=MAX_TIMEOUT, lo_inclusive=False)


class PluginInterrupt(KeyboardInterrupt):
    """A KeyboardInterrupt raised inside plugin code: it stops hal (exit 130) like Ctrl-C, even
    where a command treats the user's own Ctrl-C as a normal way to quit."""


class _PluginStdout:
    """sys.stdout stand-in: writes from plugin threads go to stderr, everyone else's to stdout."""

    def __init__(self, real: IO[str]) -> None:
        self._real = real

    def _target(self) -> IO[str]:
        return sys.stderr if inside_plugin() is not None else self._real

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def route_plugin_stdout() -> None:
    """From now on, what plugin code prints goes to stderr (``--json`` output stays parseable)."""
    if not isinstance(sys.stdout, _PluginStdout) and sys.stdout is not None:
        sys.stdout = _PluginStdout(sys.stdout)  # type: ignore[assignment]


@dataclass
class Outcome(Generic[T]):
    """How one call into plugin code ended: its value, or why there is none.

    ``invalid``: it returned, but its value broke the contract (``error`` is the ValueError).
    """

    state: State
    value: T | None = None
    error: BaseException | None = None
    seconds: float = 0.0

    def describe(self, what: str) -> str:
        """``probe() did not answer within 10 s`` / ``raised X: y`` / ``called sys.exit(3)``."""
        if self.state == "hung":
            return f"{what} did not answer within {self.seconds:g} s"
        if self.state == "exited":
            code = getattr(self.error, "code", None)
            return f"{what} called sys.exit({code!r}) (recorded, hal keeps running)"
        if self.state == "invalid":
            return str(self.error)
        return f"{what} raised {describe_exception(self.error)}"

    def checked(self, check: Callable[[Any], U]) -> Outcome[U]:
        """This outcome with ``check`` applied to an ``ok`` value: a ValueError from ``check``
        makes it ``invalid`` (naming the problem); any other state passes as it is."""
        if self.state != "ok":
            return Outcome(self.state, error=self.error, seconds=self.seconds)
        try:
            return Outcome("ok", check(self.value), seconds=self.seconds)
        except ValueError as exc:
            return Outcome("invalid", error=exc, seconds=self.seconds)


class PendingCall(Generic[T]):
    """A call into plugin code running in its own daemon thread; ``wait()`` collects it."""

    def __init__(self, fn: Callable[[], T], label: str, *, plugin: bool = True) -> None:
        self.label = label
        self._plugin = plugin  # False: hal's own code in a thread (not marked as plugin code)
        self._box: list[Outcome[T]] = []
        self._done = threading.Event()
        self._start = time.monotonic()
        #: monotonic time the call started (how long a hung call has been running)
        self.started = self._start
        thread = threading.Thread(target=self._run, args=(fn,), name=f"hal-plugin {label}"[:60],
                                  daemon=True)
        thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        if self._plugin:
            _local.label = self.label
        try:
            self._box.append(Outcome("ok", fn()))
        except SystemExit as exc:
            self._box.append(Outcome("exited", error=exc))
        except BaseException as exc:  # recorded, never raised in a worker thread
            self._box.append(Outcome("raised", error=exc))
        finally:
            self._done.set()

    def done(self) -> bool:
        """True once the call has returned or raised (a hung call stays False)."""
        return self._done.is_set()

    def wait(self, until: float) -> Outcome[T]:
        """The outcome, waiting at most until the monotonic time ``until`` (then: hung).

        A KeyboardInterrupt inside the plugin is raised here as :class:`PluginInterrupt`.
        """
        if not self._done.wait(max(0.0, until - time.monotonic())):
            return Outcome("hung", seconds=round(until - self._start, 1))
        outcome = self._box[0]
        if isinstance(outcome.error, KeyboardInterrupt):
            raise PluginInterrupt(f"{self.label} raised KeyboardInterrupt") from outcome.error
        return outcome


def call_plugin(fn: Callable[[], T], label: str, timeout: float | None = None) -> Outcome[T]:
    """Run plugin code ``fn`` in a daemon thread for at most ``timeout`` seconds (HAL_PROBE_TIMEOUT).

    ``label`` names the call in errors ("plugin 'x': hal_backends").  Exceptions and SystemExit
    are returned, a KeyboardInterrupt (raised by the plugin or by Ctrl-C while waiting) stops hal.
    """
    if timeout is None:
        timeout = timeout_from_env()
    return PendingCall(fn, label).wait(time.monotonic() + timeout)


def call_checked(fn: Callable[[], Any], label: str, check: Callable[[Any], T],
                 timeout: float | None = None) -> Outcome[T]:
    """:func:`call_plugin`, then ``check`` on the value: the one checked call into plugin code.

    A value that ``check`` rejects (ValueError) is an ``invalid`` outcome naming the problem.
    """
    return call_plugin(fn, label, timeout).checked(check)


# -- values coming back from plugins ------------------------------------------------


def _first(value: Any, n: int) -> list[Any]:
    """At most ``n`` items of a plugin's sequence: an endless iterator cannot hang hal."""
    return list(itertools.islice(iter(value), n))


def check_text(value: Any, what: str) -> str:
    """A plugin's string, or ValueError naming ``what``: control characters escaped (no terminal
    sequence or extra line reaches any output) and cut to about ``MAX_TEXT`` characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what} is a {type(value).__name__}, expected str")
    from hal.console import one_line

    return one_line(value, MAX_TEXT)


def _count(value: Any, what: str, hi: int = MAX_DEVICES) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is {value!r} ({type(value).__name__}), expected an int")
    if not 0 <= value <= hi:
        raise ValueError(f"{what} is {value}, expected 0..{hi}")
    return int(value)


def _bytes(value: Any, what: str) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return _count(value, what, MAX_BYTES)


def _scalar(value: Any, what: str) -> Any:
    """A JSON-safe scalar (str, bool, int, finite float, None) or a list of them."""
    if value is None or isinstance(value, (str, bool, int)):
        return check_text(value, what) if isinstance(value, str) else value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} is {value!r}, expected a finite number")
        return value
    if isinstance(value, (list, tuple)) and len(value) <= 4096:
        return [_scalar(v, what) for v in value if not isinstance(v, (list, tuple))]
    raise ValueError(f"{what} is a {type(value).__name__}, expected a string or number")


def check_probe(value: Any) -> Probe:
    """A well-formed Probe (a copy with checked fields) or ValueError naming the problem."""
    if not isinstance(value, Probe):
        raise ValueError(f"probe() returned {type(value).__name__}, expected hal.Probe")
    if not isinstance(value.available, bool):
        raise ValueError(f"probe() returned available={value.available!r}, expected True or False")
    reason = check_text(value.reason, "probe() reason")
    count = _count(value.device_count, "probe() device_count")
    return Probe(value.available, reason, count)


def check_devices(value: Any) -> list[DeviceInfo]:
    """devices(): a list of well-formed DeviceInfo (checked copies), or ValueError."""
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ValueError(f"devices() returned {type(value).__name__}, expected a list of hal.DeviceInfo")
    out = []
    for item in _first(value, MAX_DEVICES):
        if not isinstance(item, DeviceInfo):
            raise ValueError(f"devices() returned a {type(item).__name__} in its list, "
                             "expected hal.DeviceInfo")
        capability = item.capability
        if capability is not None:
            capability = check_text(capability, "DeviceInfo.capability")
        extras = item.extras
        if not isinstance(extras, Mapping):
            raise ValueError(f"DeviceInfo.extras is a {type(extras).__name__}, expected a mapping")
        checked = {check_text(k, "DeviceInfo.extras key"): _scalar(v, f"DeviceInfo.extras[{k!r}]")
                   for k, v in extras.items()}
        out.append(DeviceInfo(_count(item.index, "DeviceInfo.index"),
                              check_text(item.name, "DeviceInfo.name"),
                              _bytes(item.total_memory, "DeviceInfo.total_memory"), capability, checked))
    return out


def check_memory(value: Any) -> MemoryInfo:
    """memory(): a MemoryInfo with non-negative whole byte counts, or ValueError."""
    if not isinstance(value, MemoryInfo):
        raise ValueError(f"memory() returned {type(value).__name__}, expected hal.MemoryInfo")
    total, free, allocated, reserved, peak = (
        _bytes(getattr(value, f), f"MemoryInfo.{f}")
        for f in ("total", "free", "allocated", "reserved", "peak"))
    return MemoryInfo(total, free, allocated, reserved, peak,
                      source=check_text(value.source, "MemoryInfo.source"))


def check_versions(value: Any) -> dict[str, str]:
    """versions(): a mapping of names to versions; scalars become strings, anything else fails."""
    if not isinstance(value, Mapping):
        raise ValueError(f"versions() returned {type(value).__name__}, expected a mapping of str")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"versions()[{key!r}] is {item!r}, expected a version string")
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise ValueError(f"versions()[{key!r}] is a {type(item).__name__}, expected str")
        out[check_text(key, "versions() key")] = check_text(str(item), "versions() value")
    return out


def check_dtypes(value: Any, what: str = "dtypes()") -> list[torch.dtype]:
    """dtypes(): a list of torch.dtype, or ValueError."""
    import torch

    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ValueError(f"{what} returned {type(value).__name__}, expected a list of torch.dtype")
    items = _first(value, 64)
    bad = [type(d).__name__ for d in items if not isinstance(d, torch.dtype)]
    if bad:
        raise ValueError(f"{what} returned a {bad[0]} in its list, expected torch.dtype")
    return items


def check_findings(value: Any, what: str = "findings()") -> list[Finding]:
    """A list of well-formed Finding (str fields, known severity), or ValueError."""
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ValueError(f"{what} returned {type(value).__name__}, expected a list of hal.Finding")
    out = []
    for item in _first(value, 1000):
        if not isinstance(item, Finding):
            raise ValueError(f"{what} returned a {type(item).__name__} in its list, expected hal.Finding")
        out.append(Finding(check_text(item.id, "Finding.id"), item.severity,
                           check_text(item.message, "Finding.message"), check_text(item.fix, "Finding.fix")))
    return out


_TELEMETRY_INTS = ("memory_used", "memory_total")
_TELEMETRY_FLOATS = ("utilization", "power", "power_limit", "temperature", "clock", "memory_clock")
#: Plausible ranges: a reading outside them is a unit mistake (mW for W, m°C for °C, kHz ...).
_TELEMETRY_RANGES = {"power": (0.0, 10_000.0), "power_limit": (0.0, 10_000.0),
                     "temperature": (-273.15, 1000.0), "clock": (0.0, 100_000.0),
                     "memory_clock": (0.0, 100_000.0)}
_TELEMETRY_UNITS = {"utilization": "a fraction 0..1", "power": "watts", "power_limit": "watts",
                    "temperature": "degrees Celsius"}


def check_telemetry(value: Any) -> Telemetry:
    """telemetry(): the Telemetry itself when its types, units and ranges are right, else
    ValueError naming the problem (``memory_used 5 > memory_total 4``, ``power ... watts``)."""
    if not isinstance(value, Telemetry):
        raise ValueError(f"returned {type(value).__name__}, expected hal.Telemetry")
    if not isinstance(value.source, str) or not value.source.strip():
        raise ValueError("source must be a non-empty str naming where the figures came from")
    if value.name is not None and not isinstance(value.name, str):
        raise ValueError(f"name {value.name!r} must be a str or None")
    for name in _TELEMETRY_INTS:
        v = getattr(value, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise ValueError(f"{name} = {v!r}; expected an int >= 0 (bytes) or None")
    if (value.memory_used is not None and value.memory_total is not None
            and value.memory_used > value.memory_total):
        raise ValueError(f"memory_used {value.memory_used} > memory_total {value.memory_total}")
    for name in _TELEMETRY_FLOATS:
        v = getattr(value, name)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name} = {v!r}; expected a finite number or None")
        lo, hi = _TELEMETRY_RANGES.get(name, (0.0, 1.0))
        if not lo <= v <= hi:
            raise ValueError(f"{name} = {v!r} is outside {lo:g}..{hi:g}; "
                             f"expected {_TELEMETRY_UNITS.get(name, 'MHz')}")
    if value.unit_utilization is not None:
        if not isinstance(value.unit_utilization, tuple):
            raise ValueError("unit_utilization must be a tuple of fractions or None")
        for v in value.unit_utilization:
            if not isinstance(v, (int, float)) or not (0.0 <= v <= 1.0):
                raise ValueError(f"unit_utilization holds {v!r}; expected fractions 0..1")
    if value.processes is not None:
        if not isinstance(value.processes, tuple):
            raise ValueError("processes must be a tuple of hal.telemetry.ProcessUsage or None")
        for p in value.processes:
            if not isinstance(p, ProcessUsage):
                raise ValueError(f"processes holds a {type(p).__name__}, expected ProcessUsage")
            if not isinstance(p.pid, int) or p.pid < 0:
                raise ValueError(f"process pid {p.pid!r} must be an int >= 0")
            if p.memory is not None and (not isinstance(p.memory, int) or p.memory < 0):
                raise ValueError(f"process {p.pid} memory {p.memory!r} must be an int >= 0 (bytes)")
            for text in ("user", "command"):
                if getattr(p, text) is not None and not isinstance(getattr(p, text), str):
                    raise ValueError(f"process {p.pid} {text} must be a str or None")
    return _safe_telemetry(value)


#: Most processes one reading may list (a runaway listing cannot flood the display).
MAX_PROCESSES = 1000


def _safe_telemetry(value: Telemetry) -> Telemetry:
    """``value`` with its strings escaped and bounded (check_text) and at most MAX_PROCESSES
    processes: what a reader returns reaches watch's table, CSV and JSON safe."""
    from dataclasses import replace

    def text(s: str | None, what: str) -> str | None:
        return None if s is None else check_text(s, what)

    processes = value.processes
    if processes is not None:
        processes = tuple(replace(p, user=text(p.user, "ProcessUsage.user"),
                                  command=text(p.command, "ProcessUsage.command"))
                          for p in processes[:MAX_PROCESSES])
    safe = replace(value, source=check_text(value.source, "Telemetry.source"),
                   name=text(value.name, "Telemetry.name"), processes=processes)
    return value if safe == value else safe  # a clean reading is returned as it came


def check_backend(item: Any) -> str | None:
    """Why a backend object's class attributes are unusable (None when they are fine).

    Checked once, when the backend is registered: name, device type, priority, collectives,
    visible-devices variables and an implemented probe().
    """
    if not isinstance(item, Backend):
        return f"a {type(item).__name__} in its list, expected hal.Backend instances"
    name = getattr(item, "name", None)
    if not (isinstance(name, str) and NAME_RE.match(name)):
        return (f"a backend with invalid name {name!r} (expected letters, digits, '_', '.', '-', "
                "starting with a letter or digit, at most 64 characters)")
    device_type = getattr(item, "device_type", None)
    if not (isinstance(device_type, str) and device_type.isascii() and device_type.isidentifier()
            and len(device_type) <= 64):
        return f"backend {name!r} with invalid device_type {device_type!r} (expected an identifier)"
    priority = getattr(item, "priority", None)
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) \
            or not math.isfinite(priority) or abs(priority) > 1e9:
        return f"backend {name!r} with invalid priority {priority!r} (expected a finite int or float)"
    dist_backend = getattr(item, "dist_backend", None)
    if not (isinstance(dist_backend, str) and len(dist_backend) <= 64 and dist_backend.isprintable()):
        return f"backend {name!r} with invalid dist_backend {dist_backend!r} (expected a str)"
    env = getattr(item, "visible_devices_env", ())
    if not isinstance(env, (tuple, list)) or not all(
            isinstance(v, str) and ENV_NAME_RE.match(v) for v in env):
        return f"backend {name!r} with invalid visible_devices_env {env!r} (expected variable names)"
    if type(item).probe is Backend.probe:
        return f"backend {name!r} that does not implement probe()"
    return None


def fetch_devices(backend: Backend, timeout: float | None = None) -> Outcome[list[DeviceInfo]]:
    """``backend.devices()`` through the boundary, checked: the one way hal fetches devices
    (inventory, planner, bench, hal.memory, doctor); the outcome says why when there are none."""
    return call_checked(backend.devices, f"backend {backend.name!r}: devices()", check_devices,
                        timeout)


def fetch_memory(backend: Backend, index: int, timeout: float | None = None) -> Outcome[MemoryInfo]:
    """``backend.memory(index)`` through the boundary, checked: the one way hal fetches memory."""
    return call_checked(lambda: backend.memory(index), f"backend {backend.name!r}: memory()",
                        check_memory, timeout)


def checked_devices(backend: Backend, timeout: float | None = None) -> list[DeviceInfo] | None:
    """:func:`fetch_devices`' value: checked DeviceInfo, or None when it raised, hung, exited or
    returned garbage (for callers that only leave the backend out)."""
    return fetch_devices(backend, timeout).value


def checked_memory(backend: Backend, index: int, timeout: float | None = None) -> MemoryInfo | None:
    """:func:`fetch_memory`' value: a checked MemoryInfo, or None."""
    return fetch_memory(backend, index, timeout).value
