"""Which backend and device this process uses: HAL_DEVICE, priorities, fallback, and the reasons.

The decision is made once per process under a lock (32 threads asking at once probe once)
and cached; ``reset()`` forgets it for code that changes HAL_DEVICE at run time.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hal.contract import Backend, Probe
from hal.errors import ConfigError, DeviceUnavailableError, HalFallbackWarning, renamed_attribute
from hal.locks import ForkSafeLock, orphaned_import
from hal.parse import parse_bool, parse_int
from hal.plugins import fail_backend, load_plugins, reset_plugins
from hal.validate import MAX_DEVICES, PendingCall, check_probe, forbid_reentry, timeout_from_env

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "HAL_DEVICE"
STRICT_ENV = "HAL_STRICT"
_TOKEN_RE = re.compile(r"\A(?P<name>[A-Za-z0-9_.\-]{1,64})(?::(?P<index>[^:]*))?\Z")


@dataclass(frozen=True)
class Candidate:
    """One backend as selection saw it: available or not, and why."""

    name: str
    device_type: str
    priority: int
    available: bool
    reason: str
    device_count: int
    requested: bool = False

    @property
    def probe(self) -> Probe:
        """The probe answer this candidate was judged on (so callers need not probe again)."""
        return Probe(self.available, self.reason, self.device_count)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class DeviceRequest:
    """One parsed HAL_DEVICE entry: a backend or device-type name and an optional index."""

    text: str
    name: str
    index: int | None


@dataclass(frozen=True)
class Selection:
    """The whole decision: the chosen backend and index, why, and every backend considered."""

    backend: Backend
    index: int | None
    reason: str
    candidates: tuple[Candidate, ...]
    requested: str | None = None
    fell_back: bool = False
    warning: str | None = None
    _device: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def device_string(self) -> str:
        """The torch device string, e.g. ``cpu`` or ``meta:1``."""
        t = self.backend.device_type
        return t if self.index is None else f"{t}:{self.index}"

    @property
    def device(self) -> torch.device:
        """The selected ``torch.device`` (constructed once)."""
        if not self._device:
            self._device.append(self.backend.torch_device(self.index))
        result: torch.device = self._device[0]
        return result

    def as_dict(self) -> dict[str, Any]:
        """JSON form for ``hal devices --json`` and ``hal doctor --json``."""
        return {
            "backend": self.backend.name,
            "device": self.device_string,
            "reason": self.reason,
            "requested": self.requested,
            "fell_back": self.fell_back,
            "warning": self.warning,
            "candidates": [c.as_dict() for c in self.candidates],
        }


def safe_probe(backend: Backend, timeout: float | None = None) -> Probe:
    """Probe a backend under the plugin timeout; an exception, sys.exit, a hang or a wrong
    return value becomes an unavailable Probe with the reason (and is recorded on the plugin)."""
    return probe_all([backend], timeout)[backend.name]


def probe_all(backends: Sequence[Backend], timeout: float | None = None,
              states: dict[str, str] | None = None) -> dict[str, Probe]:
    """Probe every backend at once, each in its own daemon thread, all within one ``timeout``
    (HAL_PROBE_TIMEOUT): a probe that does not answer makes its backend unavailable.

    ``states``, when given, receives how each call ended (ok, raised, exited, hung)."""
    if timeout is None:
        timeout = timeout_from_env()
    _import_torch_first()
    pending = [(b, PendingCall(b.probe, f"backend {b.name!r}: probe()")) for b in backends]
    until = time.monotonic() + timeout
    out: dict[str, Probe] = {}
    for backend, call in pending:
        outcome = call.wait(until)
        if states is not None:
            states[backend.name] = outcome.state
        problem = None
        if outcome.state != "ok":
            problem = outcome.describe("probe")
        else:
            try:
                out[backend.name] = check_probe(outcome.value)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            out[backend.name] = Probe(False, problem, 0)
            if outcome.state != "raised":  # a raising probe is reported, not a breach of trust
                fail_backend(backend.name, problem)
    return out


def _import_torch_first() -> None:
    """Import torch here, once, before probes that use it run in parallel threads: torch's own
    import is not safe to run from several threads at once (partly initialised module)."""
    if "torch" in sys.modules:
        return
    with contextlib.suppress(Exception):  # not installed or broken: each probe says so
        import torch  # noqa: F401


def parse_device_env(value: str) -> list[DeviceRequest]:
    """Parse HAL_DEVICE: ``name``, ``name:index`` or a comma-separated ordered list of those."""
    if not value.strip():
        raise ConfigError(
            f"{DEVICE_ENV} is set but empty; expected a backend name, a device such as "
            "'cpu' or 'name:0', or an ordered list such as 'name1,name2,cpu'"
        )
    requests = []
    for raw in value.split(",")[:64]:
        text = raw.strip()
        m = _TOKEN_RE.match(text)
        if not text or m is None:
            raise ConfigError(
                f"{DEVICE_ENV}={_short(value)!r}: {text[:40]!r} is not a backend name or device string "
                "(expected e.g. 'cpu', 'name:1' or 'name1,name2,cpu')"
            )
        index_text = m.group("index")
        index = None
        if index_text is not None:
            try:
                index = parse_int(DEVICE_ENV, index_text, hi=MAX_DEVICES)
            except ConfigError:
                raise ConfigError(
                    f"{DEVICE_ENV}={_short(value)!r}: device index {index_text[:40]!r} in "
                    f"{text[:50]!r} is not a non-negative integer (ASCII digits, at most "
                    f"{MAX_DEVICES})") from None
        requests.append(DeviceRequest(text, m.group("name").lower(), index))
    return requests


def _is_torch_device_type(name: str) -> bool:
    try:
        import torch

        torch.device(name)
    except Exception:
        return False
    return True


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def decide(
    backends: Sequence[Backend], environ: Mapping[str, str] | None = None,
    probes: Mapping[str, Probe] | None = None,
) -> Selection:
    """Pure selection policy over ``backends`` and an environment; probes each backend once.

    ``probes`` (by backend name) are answers already obtained, so a caller that has probed
    does not probe again; backends missing from it are probed here.
    """
    env = os.environ if environ is None else environ
    ordered = sorted(backends, key=lambda b: (-b.priority, b.name))
    known = dict(probes or {})
    missing_probes = [b for b in ordered if b.name not in known]
    if missing_probes:
        known.update(probe_all(missing_probes, timeout_from_env(env)))
    probes = known
    raw = env.get(DEVICE_ENV)
    requests = parse_device_env(raw) if raw is not None else []
    strict = parse_bool(STRICT_ENV, env.get(STRICT_ENV))

    by_name = {b.name.lower(): b for b in ordered}
    names_accepted = sorted(set(by_name) | {b.device_type.lower() for b in ordered})
    chain: list[tuple[Backend, int | None, DeviceRequest | None]] = []
    missing: list[str] = []
    for req in requests:
        # A backend name first, then every backend whose torch device type it also is: two
        # backends can drive one torch device type, and a device string means either of them.
        matches = [by_name[req.name]] if req.name in by_name else []
        matches += [b for b in ordered
                    if b.device_type.lower() == req.name and b.name.lower() != req.name]
        if not matches:
            if _is_torch_device_type(req.name):
                missing.append(f"{req.name}: no installed hal backend drives torch device "
                               f"type {req.name!r} (install its hal plugin)")
                continue
            raise ConfigError(
                f"{DEVICE_ENV}={_short(raw or '')!r}: unknown backend or device type {req.name!r}; "
                f"accepted: {', '.join(names_accepted)} (optionally with ':index'), "
                "or a comma-separated list of them"
            )
        chain.extend((b, req.index, req) for b in matches)

    requested_names = {b.name for b, _, _ in chain}
    candidates = tuple(
        Candidate(b.name, b.device_type, b.priority, probes[b.name].available,
                  probes[b.name].reason, probes[b.name].device_count, b.name in requested_names)
        for b in ordered
    )
    unavailable = [f"{b.name}: {probes[b.name].reason}" for b, _, _ in chain
                   if not probes[b.name].available]
    why_not = "; ".join(missing + unavailable)

    for backend, index, wanted in chain:
        probe = probes[backend.name]
        if not probe.available:
            continue
        if index is not None and index >= max(probe.device_count, 1):
            raise ConfigError(
                f"{DEVICE_ENV}={raw!r}: index {index} in {wanted.text if wanted else ''!r} is out of "
                f"range; {backend.name} has {probe.device_count} device(s) "
                f"(indices 0..{max(probe.device_count - 1, 0)})"
            )
        note = ""
        if index is None:
            index, note = _default_index(backend, probe, env)
        reason = f"{DEVICE_ENV}={raw}: {backend.name} is available ({probe.reason})"
        if why_not:
            reason += f"; skipped {why_not}"
        return Selection(backend, index, reason + note, candidates, requested=raw)

    if requests:
        message = f"{DEVICE_ENV}={raw} cannot be used ({why_not})"
        if strict:
            raise DeviceUnavailableError(f"{message}; {STRICT_ENV}=1 forbids falling back")
    for backend in ordered:
        probe = probes[backend.name]
        if not probe.available:
            continue
        index, note = _default_index(backend, probe, env)
        skipped = [f"{c.name}: {c.reason}" for c in candidates
                   if not c.available and c.priority >= backend.priority]
        if requests:
            reason = f"fell back to {backend.name}: {message}"
            warning = f"{message}; falling back to {backend.name}"
            return Selection(backend, index, reason + note, candidates, raw, True, warning)
        reason = f"{backend.name} is the highest-priority available backend ({probe.reason})"
        if skipped:
            reason += f"; not available: {'; '.join(skipped)}"
        return Selection(backend, index, reason + note, candidates)
    raise DeviceUnavailableError(
        "no backend is available, not even cpu: " + "; ".join(
            f"{c.name}: {c.reason}" for c in candidates)
    )


def _default_index(backend: Backend, probe: Probe, env: Mapping[str, str]) -> tuple[int | None, str]:
    """Device index when none was asked for, and a note for the reason: the launcher
    environment's local rank (hal.distributed.environments: torchrun, Slurm, MPI...), else 0
    (None for the host).  A launcher that bound this rank to its own devices through the
    backend's visible-devices variable (Slurm ``--gpus-per-task``, per-task visible-device
    lists) gives index 0; more ranks on the node than devices without such a binding is refused."""
    if backend.device_type == "cpu":
        return None, ""
    from hal.distributed.environments import placement

    place = placement(env)
    if place is None:
        return 0, ""
    rank, var, count = place.local_rank, place.local_rank_var, probe.device_count
    bound = [v for v in backend.visible_devices_env if env.get(v, "").strip()]
    fix = (f"launch at most {count} processes per node, or bind one device per rank through "
           f"{' or '.join(backend.visible_devices_env) or 'the launcher'}")
    if count and not bound and (place.local_world_size or 0) > count:
        raise ConfigError(
            f"{place.local_world_size_var}={place.local_world_size} ranks on this node "
            f"({place.environment}) but {backend.name} has only {count} visible device(s); {fix}")
    if count and rank >= count:
        if bound:
            return 0, (f"; {var}={rank} but {bound[0]} gives this rank "
                       f"{count} device(s) of its own: using index 0")
        raise ConfigError(f"{var}={rank} but {backend.name} has only {count} visible "
                          f"device(s); {fix}")
    if place.environment != "torchrun":
        return rank, f"; index {rank} is this rank's local rank ({var}={rank}, {place.environment})"
    return rank, ""


_lock = ForkSafeLock(threading.Lock)
_selection: Selection | None = None
_device: torch.device | None = None


def select() -> Selection:
    """The whole decision (made once per process): backend, device, reason, every candidate."""
    global _selection
    sel = _selection
    if sel is not None:
        return sel
    if compiling():  # cold inside torch.compile/export: decide outside the traced region
        _decided_outside_trace()
        return _selection  # type: ignore[return-value]
    forbid_reentry("hal.select()/hal.get_device()")
    _refuse_orphaned_imports()
    with _lock:
        if _selection is None:
            sel = decide(load_plugins().backends())
            if sel.warning:
                warnings.warn(sel.warning, HalFallbackWarning, stacklevel=3)
            _selection = sel
        return _selection


def _refuse_orphaned_imports() -> None:
    """In a child forked while another thread was importing torch or hal (inside ``select()``,
    say), selecting would wait forever on that import's lock: say so in one line instead."""
    name = orphaned_import("torch", "hal")
    if name is not None:
        raise DeviceUnavailableError(
            f"this process was forked while another thread was importing {name!r}; that import "
            "cannot finish in the child (its lock belongs to a thread that is not here), so no "
            "device can be selected: import torch (or call hal.get_device()) before starting "
            "threads, or start processes with 'spawn' or 'forkserver'")


def get_device() -> torch.device:
    """The best available ``torch.device`` for this process, with fallback; see ``select()``."""
    device = _device
    if device is not None:
        return device
    if compiling():
        import torch

        return torch.device(_decided_outside_trace())
    return _cache_device()


def compiling() -> bool:
    """Is torch.compile or torch.export tracing this call (torch not imported: no)?"""
    if getattr(_outside_trace, "active", False):
        return False
    torch = sys.modules.get("torch")
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


_outside_trace = threading.local()


def _decided_outside_trace() -> str:
    """The selected device string, decided by the real Python at trace time: Dynamo runs this
    function instead of tracing it (its lock, threads and plugin calls) and keeps the result as a
    constant of the graph (docs/torch-compile.md)."""
    with outside_trace():
        return str(_cache_device())


@contextlib.contextmanager
def outside_trace() -> Iterator[None]:
    """Inside: hal's real Python, run by Dynamo at trace time (is_compiling() stays True there)."""
    saved = getattr(_outside_trace, "active", False)
    _outside_trace.active = True
    try:
        yield
    finally:
        _outside_trace.active = saved


# What torch.compiler.assume_constant_result sets; written here so hal need not import torch.
_decided_outside_trace._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _cache_device() -> torch.device:
    global _device
    sel = select()
    device = sel.device
    with _lock:
        if _selection is sel:  # a reset() meanwhile must not be undone by a stale device
            _device = device
    return device


def list_backends() -> list[Backend]:
    """Every backend the loaded plugins provide, highest priority first."""
    return sorted(load_plugins().backends(), key=lambda b: (-b.priority, b.name))


def get_backend(name: str | None = None) -> Backend:
    """The backend called ``name``, or with no name the selected one (llm's ``get_model`` shape).

    An unknown name is a ConfigError naming the installed backends.
    """
    if name is None:
        return select().backend
    for b in load_plugins().backends():
        if b.name.lower() == name.lower():
            return b
    names = ", ".join(sorted(b.name for b in load_plugins().backends()))
    raise ConfigError(f"unknown backend {name!r}; installed: {names}")


def reset(*, plugins: bool = False) -> None:
    """Forget the decision (and with ``plugins=True`` the loaded plugins) so it is made anew."""
    global _selection, _device
    forbid_reentry("hal.reset()")
    with _lock:
        _selection = None
        _device = None
        if plugins:
            reset_plugins()


def __getattr__(name: str) -> Any:
    """``Request``: the deprecated name of ``DeviceRequest`` (one release; warns once)."""
    return renamed_attribute(__name__, name, {"Request": "DeviceRequest"})
