"""Live device telemetry: the ``Telemetry`` value, safe sampling of every backend, ``watch()``.

A backend's optional ``telemetry(index)`` member answers what vendors' ``*-smi`` tools show
(memory, utilisation, power, temperature, clocks, processes), torch-free and without creating
a device context.  :class:`Sampler` calls it for every device of every backend, each backend in
its own worker thread under a timeout, so one that raises or hangs costs only its own rows.
:func:`watch` samples one device in the background of a ``with`` block (peak and series).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from hal.contract import Backend, MemoryInfo

__all__ = [
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

#: Version of the telemetry JSON form (``Telemetry.as_dict`` and ``hal watch --json``).
SCHEMA = "hal.watch/1"


@dataclass(frozen=True)
class ProcessUsage:
    """One process using a device: pid, owner, the device memory it holds (bytes), its command."""

    pid: int
    user: str | None = None
    memory: int | None = None
    command: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"pid": self.pid, "user": self.user, "memory": self.memory, "command": self.command}


@dataclass(frozen=True)
class Telemetry:
    """One reading of one device; every figure is None where the vendor cannot say.

    Units: bytes, utilisation as a fraction 0..1, watts, degrees Celsius, MHz.  ``processes``
    is None when unknown and ``()`` when the vendor says no process uses the device.
    ``source`` names where the figures came from (a management library, ``/proc/stat``, ...).
    """

    source: str
    name: str | None = None
    memory_used: int | None = None
    memory_total: int | None = None
    utilization: float | None = None
    unit_utilization: tuple[float, ...] | None = None  # per core / engine, 0..1 each
    power: float | None = None
    power_limit: float | None = None
    temperature: float | None = None
    clock: float | None = None  # compute clock, MHz
    memory_clock: float | None = None  # MHz
    processes: tuple[ProcessUsage, ...] | None = None

    @property
    def memory_fraction(self) -> float | None:
        """memory_used / memory_total (0..1), None when either is unknown."""
        if self.memory_used is None or not self.memory_total:
            return None
        return max(0.0, min(1.0, self.memory_used / self.memory_total))

    def as_dict(self) -> dict[str, Any]:
        """JSON form: the fields by name, processes as a list of objects."""
        return {
            "name": self.name,
            "memory_used": self.memory_used,
            "memory_total": self.memory_total,
            "utilization": self.utilization,
            "unit_utilization": None if self.unit_utilization is None
            else list(self.unit_utilization),
            "power": self.power,
            "power_limit": self.power_limit,
            "temperature": self.temperature,
            "clock": self.clock,
            "memory_clock": self.memory_clock,
            "processes": None if self.processes is None
            else [p.as_dict() for p in self.processes],
            "source": self.source,
        }


def unknown(why: str) -> Telemetry:
    """A reading with no figures that says why (``source`` starts with ``none:``)."""
    return Telemetry(source=f"none: {' '.join(why.split())}")


R = TypeVar("R")


def figure_or_none(fn: Callable[..., R], *args: Any) -> R | None:
    """``fn(*args)``, or None when the device library refuses that one figure (not supported,
    no permission, device lost): one missing figure must not cost the rest of a reading."""
    try:
        return fn(*args)
    except Exception:
        return None


class Readers(Generic[R]):
    """One stateful reader per backend object (rates need history, a library stays open), each used
    under its own lock; what a reader raises becomes a ``none: <label>: ...`` reading."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._entries: weakref.WeakKeyDictionary[Any, tuple[threading.Lock, R]] = (
            weakref.WeakKeyDictionary())

    def read(self, backend: Any, make: Callable[[], R], use: Callable[[R], Telemetry]) -> Telemetry:
        """``use`` on ``backend``'s reader, made by ``make`` on first use (what ``make`` raises passes)."""
        entry = self._entries.get(backend)
        if entry is None:
            entry = self._entries.setdefault(backend, (threading.Lock(), make()))
        lock, reader = entry
        with lock:
            try:
                return use(reader)
            except Exception as exc:  # a device the source cannot read: no figures, and why
                return unknown(f"{self.label}: {type(exc).__name__}: {exc}")

    def forget(self, backend: Any) -> None:
        """Drop ``backend``'s reader: the next read makes a new one."""
        self._entries.pop(backend, None)


def from_memory(mem: MemoryInfo) -> Telemetry:
    """The default telemetry: memory figures only, from a backend's ``memory()``."""
    total = mem.total if mem.total > 0 else None
    used = max(0, mem.total - mem.free) if total is not None else None
    return Telemetry(source=f"memory() only ({mem.source})" if mem.source else "memory() only",
                     memory_used=used, memory_total=total)


# -- validation at the boundary -----------------------------------------------------------

_INT_FIELDS = ("memory_used", "memory_total")
_FLOAT_FIELDS = ("utilization", "power", "power_limit", "temperature", "clock", "memory_clock")
#: Plausible ranges: a reading outside them is a unit mistake (mW for W, m°C for °C, kHz ...).
_RANGES = {"power": (0.0, 10_000.0), "power_limit": (0.0, 10_000.0),
           "temperature": (-273.15, 1000.0), "clock": (0.0, 100_000.0),
           "memory_clock": (0.0, 100_000.0)}


def check_telemetry(value: object) -> str | None:
    """What is wrong with a plugin's telemetry value (type, unit, range), or None if it is fine."""
    if not isinstance(value, Telemetry):
        return f"returned {type(value).__name__}, expected hal.Telemetry"
    if not isinstance(value.source, str) or not value.source.strip():
        return "source must be a non-empty str naming where the figures came from"
    if value.name is not None and not isinstance(value.name, str):
        return f"name {value.name!r} must be a str or None"
    for name in _INT_FIELDS:
        v = getattr(value, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            return f"{name} = {v!r}; expected an int >= 0 (bytes) or None"
    if (value.memory_used is not None and value.memory_total is not None
            and value.memory_used > value.memory_total):
        return f"memory_used {value.memory_used} > memory_total {value.memory_total}"
    for name in _FLOAT_FIELDS:
        v = getattr(value, name)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return f"{name} = {v!r}; expected a finite number or None"
        lo, hi = _RANGES.get(name, (0.0, 1.0))
        if not lo <= v <= hi:
            unit = {"utilization": "a fraction 0..1", "power": "watts", "power_limit": "watts",
                    "temperature": "degrees Celsius"}.get(name, "MHz")
            return f"{name} = {v!r} is outside {lo:g}..{hi:g}; expected {unit}"
    if value.unit_utilization is not None:
        if not isinstance(value.unit_utilization, tuple):
            return "unit_utilization must be a tuple of fractions or None"
        for v in value.unit_utilization:
            if not isinstance(v, (int, float)) or not (0.0 <= v <= 1.0):
                return f"unit_utilization holds {v!r}; expected fractions 0..1"
    if value.processes is not None:
        if not isinstance(value.processes, tuple):
            return "processes must be a tuple of hal.telemetry.ProcessUsage or None"
        for p in value.processes:
            if not isinstance(p, ProcessUsage):
                return f"processes holds a {type(p).__name__}, expected ProcessUsage"
            if not isinstance(p.pid, int) or p.pid < 0:
                return f"process pid {p.pid!r} must be an int >= 0"
            if p.memory is not None and (not isinstance(p.memory, int) or p.memory < 0):
                return f"process {p.pid} memory {p.memory!r} must be an int >= 0 (bytes)"
    return None


# -- process details from /proc -----------------------------------------------------------

_users: dict[int, str] = {}


def _user(uid: int) -> str:
    name = _users.get(uid)
    if name is None:
        try:
            import pwd

            name = pwd.getpwuid(uid).pw_name
        except (KeyError, ImportError):
            name = str(uid)
        _users[uid] = name
    return name


def _command(proc: str) -> str | None:
    with open(os.path.join(proc, "cmdline"), "rb") as f:
        raw = f.read(4096)
    if raw:
        return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    with open(os.path.join(proc, "comm"), "rb") as f:  # kernel threads have no cmdline
        return "[" + f.read().strip().decode("utf-8", "replace") + "]"


def process_usage(pids: Iterable[tuple[int, int | None]], root: str = "/",
                  limit: int | None = None) -> tuple[ProcessUsage, ...]:
    """ProcessUsage for (pid, device bytes) pairs, largest first, with user and command from /proc.

    A process that exits between the vendor's listing and this read is skipped, never an error;
    one in another PID namespace (a container) keeps its pid with user and command unknown.
    """
    pairs = sorted(pids, key=lambda p: -(p[1] or 0))
    out: list[ProcessUsage] = []
    for pid, mem in pairs:
        if limit is not None and len(out) >= limit:
            break
        proc = os.path.join(root, "proc", str(pid))
        try:
            uid = os.stat(proc).st_uid
            command = _command(proc)
        except FileNotFoundError:
            if os.path.isdir(os.path.join(root, "proc", "self")):
                continue  # it exited meanwhile (or lives in another PID namespace)
            out.append(ProcessUsage(pid, None, mem, None))
            continue
        except OSError:  # hidepid=2 and the like: the process is there, its details are not
            out.append(ProcessUsage(pid, None, mem, None))
            continue
        out.append(ProcessUsage(pid, _user(uid), mem, command))
    return tuple(out)


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


class _Worker:
    """One daemon thread per backend: runs its calls one at a time; a hung call blocks only it."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], _Job] | None] = queue.SimpleQueue()
        self.busy_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"hal-telemetry-{name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            fn, job = item
            try:
                job.result = fn()
            except BaseException as exc:  # a plugin's failure is data, never the monitor's
                job.error = exc
            finally:
                self.busy_since = None
                job.done.set()

    def close(self) -> None:
        """Let the thread end once its current call (if any) returns."""
        self._jobs.put(None)

    def submit(self, fn: Callable[[], Any]) -> _Job:
        job = _Job()
        self.busy_since = time.monotonic()
        self._jobs.put((fn, job))
        return job


@dataclass
class _Job:
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Sampler:
    """Reads every device of every available backend, each backend in its own worker thread.

    ``timeout`` bounds how long one tick waits for a backend; a backend still busy from an
    earlier tick is not called again until it answers (its rows say how long it has hung).
    """

    def __init__(self, backends: Sequence[Backend], *, timeout: float = 2.0) -> None:
        self.backends = list(backends)
        self.timeout = timeout
        self._workers = {b.name: _Worker(b.name) for b in self.backends}
        self._pending: dict[str, _Job] = {}
        self.devices: dict[str, int] = {}
        self.unavailable: dict[str, str] = {}

    def close(self) -> None:
        """Let every worker thread end (a hung one ends when its call returns)."""
        for w in self._workers.values():
            w.close()

    def discover(self, timeout: float | None = None) -> None:
        """Probe every backend (under ``timeout``, default the sampler's) and count its devices."""
        from hal.selection import safe_probe

        timeout = self.timeout if timeout is None else timeout

        jobs = {b.name: self._workers[b.name].submit(lambda b=b: safe_probe(b))  # type: ignore[misc]
                for b in self.backends}
        deadline = time.monotonic() + timeout
        for name, job in jobs.items():
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                self.unavailable[name] = f"probe did not answer within {timeout:g} s"
                self._pending[name] = job
                continue
            probe = job.result
            if job.error is not None or probe is None:
                self.unavailable[name] = _describe(job.error or RuntimeError("no probe"))
            elif probe.available and probe.device_count > 0:
                self.devices[name] = int(probe.device_count)
            else:
                self.unavailable[name] = probe.reason

    def _read_all(self, backend: Backend, count: int) -> list[tuple[Telemetry | None, str | None,
                                                                    float]]:
        out: list[tuple[Telemetry | None, str | None, float]] = []
        for index in range(count):
            start = time.perf_counter()
            try:
                value = backend.telemetry(index)
            except Exception as exc:
                out.append((None, f"telemetry raised {_describe(exc)}",
                            time.perf_counter() - start))
                continue
            problem = check_telemetry(value)
            if problem is not None:
                out.append((None, f"telemetry {problem}", time.perf_counter() - start))
            else:
                out.append((value, None, time.perf_counter() - start))
        return out

    def sample(self) -> list[DeviceReading]:
        """One reading per device; a backend that raises or hangs yields rows that say so."""
        now = time.time()
        jobs: dict[str, _Job] = {}
        stuck: dict[str, float] = {}
        for b in self.backends:
            count = self.devices.get(b.name, 0)
            if count <= 0:
                continue
            pending = self._pending.get(b.name)
            if pending is not None and not pending.done.is_set():
                since = self._workers[b.name].busy_since
                stuck[b.name] = time.monotonic() - since if since is not None else 0.0
                continue
            job = self._workers[b.name].submit(lambda b=b, n=count: self._read_all(b, n))  # type: ignore[misc]
            self._pending[b.name] = job
            jobs[b.name] = job
        deadline = time.monotonic() + self.timeout
        readings: list[DeviceReading] = []
        for b in self.backends:
            count = self.devices.get(b.name, 0)
            if count <= 0:
                continue
            if b.name in stuck:
                why = (f"telemetry has not answered for {stuck[b.name]:.0f} s "
                       "(hung); other backends keep updating")
                readings.extend(DeviceReading(b.name, i, now, None, why) for i in range(count))
                continue
            job = jobs[b.name]
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                why = f"telemetry did not answer within {self.timeout:g} s"
                readings.extend(DeviceReading(b.name, i, now, None, why) for i in range(count))
                continue
            if job.error is not None:
                why = f"telemetry raised {_describe(job.error)}"
                readings.extend(DeviceReading(b.name, i, now, None, why) for i in range(count))
                continue
            for i, (value, error, elapsed) in enumerate(job.result):
                readings.append(DeviceReading(b.name, i, now, value, error, elapsed))
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
    from hal.memory import resolve
    from hal.parse import parse_float

    interval = parse_float("interval", interval, lo=0.0, hi=86400.0, lo_inclusive=False)
    backend, index = resolve(device)
    result = WatchResult(backend=backend.name, index=index, interval=interval)
    stop = threading.Event()
    start = time.monotonic()
    worker = _Worker(backend.name)

    def one() -> None:
        job = worker.submit(lambda: backend.telemetry(index))
        if not job.done.wait(timeout):
            result.errors.append(f"telemetry did not answer within {timeout:g} s")
            return
        problem = _describe(job.error) if job.error is not None else check_telemetry(job.result)
        if problem is not None:
            result.errors.append(problem)
            return
        result.times.append(time.monotonic() - start)
        result.samples.append(job.result)

    def loop() -> None:
        while not stop.wait(interval):
            one()

    one()
    thread = threading.Thread(target=loop, name="hal-telemetry-watch", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(timeout + interval)
        one()
        worker.close()
