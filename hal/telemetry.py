"""Live device telemetry: safe sampling of every backend (``hal watch``) and ``watch()``.

:class:`Sampler` calls each backend's ``telemetry(index)`` for every device through the plugin
boundary (``hal.validate``), each backend in its own call under a timeout, so one that raises or
hangs costs only its own rows.  :func:`watch` samples one device in the background of a ``with``
block (peak and series).  The ``Telemetry`` value itself lives in :mod:`hal.readings` and is
importable from here as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from hal.errors import describe_exception
from hal.readings import (
    SCHEMA,
    ProcessUsage,
    Readers,
    Telemetry,
    figure_or_none,
    from_memory,
    process_usage,
    unknown,
)
from hal.validate import Outcome, PendingCall, check_telemetry

if TYPE_CHECKING:
    from hal.contract import Backend

__all__ = [
    "SCHEMA",
    "DeviceReading",
    "ProcessUsage",
    "Readers",
    "Sampler",
    "Telemetry",
    "WatchResult",
    "check_telemetry",
    "figure_or_none",
    "from_memory",
    "process_usage",
    "unknown",
    "watch",
]

# -- sampling every backend safely --------------------------------------------------------


@dataclass(frozen=True)
class DeviceReading:
    """One device's reading at ``time`` (Unix seconds): its telemetry, or why there is none."""

    backend: str
    index: int
    time: float
    telemetry: Telemetry | None
    error: str | None = None
    elapsed: float = 0.0  # seconds the backend took for this tick

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``hal watch --json`` writes per device in each tick's ``devices``."""
        out: dict[str, Any] = {"backend": self.backend, "index": self.index,
                               "device": f"{self.backend}:{self.index}", "error": self.error}
        t = self.telemetry
        out.update(t.as_dict() if t is not None else Telemetry(source="").as_dict())
        if t is None:
            out["source"] = None
        return out


def _label(backend: Backend) -> str:
    return f"backend {backend.name!r}: telemetry()"


def _why_not(backend: Backend, outcome: Outcome[Any], timeout: float) -> str:
    """Why ``outcome`` gave no reading; a sys.exit or a wrong value is also recorded on the plugin,
    a raise or a hang is not (``timeout``, the telemetry deadline, is a display deadline, not
    HAL_PROBE_TIMEOUT, and is what a hang is said to have exceeded)."""
    if outcome.state == "hung":
        return f"telemetry did not answer within {timeout:g} s"
    problem = outcome.describe("telemetry()")
    if outcome.state in ("exited", "invalid"):
        from hal.plugins import fail_backend

        fail_backend(backend.name, problem)
    return problem


def read_devices(backend: Backend, count: int) -> list[tuple[Telemetry | None, str | None, float]]:
    """``backend.telemetry(i)`` for each of ``count`` devices, checked: (value, why not, seconds).

    Run as one plugin call (PendingCall): SystemExit and KeyboardInterrupt go to the boundary."""
    out: list[tuple[Telemetry | None, str | None, float]] = []
    for index in range(count):
        start = time.perf_counter()
        try:
            raw = backend.telemetry(index)
        except Exception as exc:  # the plugin's own ValueError too: it raised, it did not mislabel
            out.append((None, f"telemetry raised {describe_exception(exc)}",
                        time.perf_counter() - start))
            continue
        try:
            out.append((check_telemetry(raw), None, time.perf_counter() - start))
        except ValueError as exc:
            out.append((None, f"telemetry {exc}", time.perf_counter() - start))
    return out


class Sampler:
    """Reads every device of every available backend, each backend in its own plugin call.

    ``timeout`` bounds how long one tick waits for a backend; a backend still busy from an
    earlier tick is not called again until it answers (its rows say how long it has hung).
    A KeyboardInterrupt inside a backend's telemetry stops hal (:class:`~hal.validate.PluginInterrupt`).
    """

    def __init__(self, backends: Sequence[Backend], *, timeout: float = 2.0) -> None:
        self.backends = list(backends)
        self.timeout = timeout
        self._pending: dict[str, PendingCall[list[tuple[Telemetry | None, str | None, float]]]] = {}
        self.devices: dict[str, int] = {}
        self.unavailable: dict[str, str] = {}

    def close(self) -> None:
        """Forget the calls in flight (a hung one's daemon thread ends when its call returns)."""
        self._pending.clear()

    def discover(self, timeout: float | None = None) -> None:
        """Probe every backend (under ``timeout``, default the sampler's) and count its devices."""
        from hal.selection import probe_all

        probes = probe_all(self.backends, self.timeout if timeout is None else timeout)
        for b in self.backends:
            probe = probes[b.name]
            if probe.available and probe.device_count > 0:
                self.devices[b.name] = int(probe.device_count)
            else:
                self.unavailable[b.name] = probe.reason

    def sample(self) -> list[DeviceReading]:
        """One reading per device; a backend that raises, exits or hangs yields rows that say so."""
        now = time.time()
        stuck: dict[str, float] = {}
        for b in self.backends:
            count = self.devices.get(b.name, 0)
            if count <= 0:
                continue
            pending = self._pending.get(b.name)
            if pending is not None and not pending.done():
                stuck[b.name] = time.monotonic() - pending.started
                continue
            self._pending[b.name] = PendingCall(partial(read_devices, b, count), _label(b))
        deadline = time.monotonic() + self.timeout
        readings: list[DeviceReading] = []
        for b in self.backends:
            count = self.devices.get(b.name, 0)
            if count <= 0:
                continue
            if b.name in stuck:
                why = (f"telemetry has not answered for {stuck[b.name]:.0f} s "
                       "(hung); other backends keep updating")
            else:
                outcome = self._pending[b.name].wait(deadline)
                if outcome.state == "ok" and outcome.value is not None:
                    readings.extend(DeviceReading(b.name, i, now, value, error, elapsed)
                                    for i, (value, error, elapsed) in enumerate(outcome.value))
                    continue
                why = _why_not(b, outcome, self.timeout)
            readings.extend(DeviceReading(b.name, i, now, None, why) for i in range(count))
        return readings


# -- in-process watching ------------------------------------------------------------------


@dataclass
class WatchResult:
    """What :func:`watch` saw: every (time, Telemetry) sample and the peaks over the block.

    Filled in while the block runs; complete once it ends.  ``times`` are seconds since start.
    """

    backend: str = ""
    index: int = 0
    interval: float = 0.0
    times: list[float] = field(default_factory=list)
    samples: list[Telemetry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def _peak(self, attr: str) -> Any:
        values = [getattr(s, attr) for s in self.samples if getattr(s, attr) is not None]
        return max(values) if values else None

    @property
    def peak_memory(self) -> int | None:
        """Highest memory_used seen (bytes), None when the device never reported it."""
        value: int | None = self._peak("memory_used")
        return value

    @property
    def peak_utilization(self) -> float | None:
        """Highest utilisation seen (0..1)."""
        value: float | None = self._peak("utilization")
        return value

    @property
    def peak_power(self) -> float | None:
        """Highest power draw seen (W)."""
        value: float | None = self._peak("power")
        return value

    def series(self, attr: str) -> list[tuple[float, Any]]:
        """(seconds since start, value) for one Telemetry field, e.g. ``series("memory_used")``."""
        return [(t, getattr(s, attr)) for t, s in zip(self.times, self.samples)]


@contextmanager
def watch(device: Any = None, *, interval: float = 0.5, timeout: float = 5.0) -> Iterator[WatchResult]:
    """Sample ``device`` (default: the selected one) every ``interval`` s while the block runs.

        with hal.telemetry.watch(interval=0.2) as w:
            train_one_epoch()
        print(w.peak_memory, w.series("utilization"))

    Telemetry is torch-free and creates no device context; a sample is also taken at the start
    and at the end, so even a short block has two.  A bad interval is a ConfigError.
    """
    from hal.memory import resolve_device
    from hal.parse import parse_float

    interval = parse_float("interval", interval, lo=0.0, hi=86400.0, lo_inclusive=False)
    backend, index = resolve_device(device)
    result = WatchResult(backend=backend.name, index=index, interval=interval)
    stop = threading.Event()
    start = time.monotonic()
    pending: list[PendingCall[Telemetry]] = []  # the call in flight: a hung one is not repeated

    def one() -> None:
        if pending and not pending[0].done():
            result.errors.append(f"telemetry has not answered for "
                                 f"{time.monotonic() - pending[0].started:.0f} s (hung)")
            return
        pending[:] = [PendingCall(lambda: backend.telemetry(index), _label(backend))]
        outcome = pending[0].wait(time.monotonic() + timeout).checked(check_telemetry)
        if outcome.state == "ok" and outcome.value is not None:
            result.times.append(time.monotonic() - start)
            result.samples.append(outcome.value)
            return
        result.errors.append(_why_not(backend, outcome, timeout))

    def loop() -> None:
        try:
            while not stop.wait(interval):
                one()
        except KeyboardInterrupt:  # raised by the telemetry reader: it stops hal, as Ctrl-C would
            import _thread

            _thread.interrupt_main()

    one()
    thread = threading.Thread(target=loop, name="hal-telemetry-watch", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(timeout + interval)
        one()
