"""Which backend and device this process uses: HAL_DEVICE, priorities, fallback, and the reasons.

The decision is made once per process under a lock (32 threads asking at once probe once)
and cached; ``reset()`` forgets it for code that changes HAL_DEVICE at run time.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hal.contract import Backend, Probe
from hal.errors import ConfigError, DeviceUnavailableError, HalFallbackWarning
from hal.plugins import load_plugins, reset_plugins

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "HAL_DEVICE"
STRICT_ENV = "HAL_STRICT"
_TOKEN_RE = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)(?::(?P<index>[^:]*))?$")


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
class Request:
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


def safe_probe(backend: Backend) -> Probe:
    """Probe a backend; an exception or a wrong return type becomes an unavailable Probe."""
    try:
        probe = backend.probe()
    except Exception as exc:
        return Probe(False, f"probe raised {type(exc).__name__}: {exc}", 0)
    if not isinstance(probe, Probe):
        return Probe(False, f"probe returned {type(probe).__name__}, expected hal.Probe", 0)
    return probe


def parse_device_env(value: str) -> list[Request]:
    """Parse HAL_DEVICE: ``name``, ``name:index`` or a comma-separated ordered list of those."""
    if not value.strip():
        raise ConfigError(
            f"{DEVICE_ENV} is set but empty; expected a backend name, a device such as "
            "'cpu' or 'name:0', or an ordered list such as 'name1,name2,cpu'"
        )
    requests = []
    for raw in value.split(","):
        text = raw.strip()
        m = _TOKEN_RE.match(text)
        if not text or m is None:
            raise ConfigError(
                f"{DEVICE_ENV}={value!r}: {text!r} is not a backend name or device string "
                "(expected e.g. 'cpu', 'name:1' or 'name1,name2,cpu')"
            )
        index_text = m.group("index")
        index = None
        if index_text is not None:
            if not index_text.isdigit():
                raise ConfigError(
                    f"{DEVICE_ENV}={value!r}: device index {index_text!r} in {text!r} "
                    "is not a non-negative integer"
                )
            index = int(index_text)
        requests.append(Request(text, m.group("name").lower(), index))
    return requests


def _is_torch_device_type(name: str) -> bool:
    try:
        import torch

        torch.device(name)
    except Exception:
        return False
    return True


def _local_rank(environ: Mapping[str, str]) -> int | None:
    value = environ.get("LOCAL_RANK")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ConfigError(f"LOCAL_RANK={value!r} is not a non-negative integer")
    return int(value)


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
    known = probes or {}
    probes = {b.name: known[b.name] if b.name in known else safe_probe(b) for b in ordered}
    raw = env.get(DEVICE_ENV)
    requests = parse_device_env(raw) if raw is not None else []
    strict = env.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")

    by_name = {b.name: b for b in ordered}
    names_accepted = sorted(set(by_name) | {b.device_type for b in ordered})
    chain: list[tuple[Backend, int | None, Request | None]] = []
    missing: list[str] = []
    for req in requests:
        # A backend name first, then every backend whose torch device type it also is: two
        # backends can drive one torch device type, and a device string means either of them.
        matches = [by_name[req.name]] if req.name in by_name else []
        matches += [b for b in ordered if b.device_type == req.name and b.name != req.name]
        if not matches:
            if _is_torch_device_type(req.name):
                missing.append(f"{req.name}: no installed hal backend drives torch device "
                               f"type {req.name!r} (install its hal plugin)")
                continue
            raise ConfigError(
                f"{DEVICE_ENV}={raw!r}: unknown backend or device type {req.name!r}; "
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
        if index is None:
            index = _default_index(backend, probe, env)
        reason = f"{DEVICE_ENV}={raw}: {backend.name} is available ({probe.reason})"
        if why_not:
            reason += f"; skipped {why_not}"
        return Selection(backend, index, reason, candidates, requested=raw)

    if requests:
        message = f"{DEVICE_ENV}={raw} cannot be used ({why_not})"
        if strict:
            raise DeviceUnavailableError(f"{message}; {STRICT_ENV}=1 forbids falling back")
    for backend in ordered:
        probe = probes[backend.name]
        if not probe.available:
            continue
        index = _default_index(backend, probe, env)
        skipped = [f"{c.name}: {c.reason}" for c in candidates
                   if not c.available and c.priority >= backend.priority]
        if requests:
            reason = f"fell back to {backend.name}: {message}"
            warning = f"{message}; falling back to {backend.name}"
            return Selection(backend, index, reason, candidates, raw, True, warning)
        reason = f"{backend.name} is the highest-priority available backend ({probe.reason})"
        if skipped:
            reason += f"; not available: {'; '.join(skipped)}"
        return Selection(backend, index, reason, candidates)
    raise DeviceUnavailableError(
        "no backend is available, not even cpu: " + "; ".join(
            f"{c.name}: {c.reason}" for c in candidates)
    )


def _default_index(backend: Backend, probe: Probe, env: Mapping[str, str]) -> int | None:
    """Device index when none was asked for: LOCAL_RANK under torchrun, else 0 (None for host)."""
    if backend.device_type == "cpu":
        return None
    rank = _local_rank(env)
    if rank is None:
        return 0
    if probe.device_count and rank >= probe.device_count:
        raise ConfigError(
            f"LOCAL_RANK={rank} but {backend.name} has only {probe.device_count} visible "
            f"device(s); launch at most {probe.device_count} processes per node"
        )
    return rank


_lock = threading.Lock()
_selection: Selection | None = None
_device: torch.device | None = None


def select() -> Selection:
    """The whole decision (made once per process): backend, device, reason, every candidate."""
    global _selection
    sel = _selection
    if sel is not None:
        return sel
    with _lock:
        if _selection is None:
            sel = decide(load_plugins().backends())
            if sel.warning:
                warnings.warn(sel.warning, HalFallbackWarning, stacklevel=3)
            _selection = sel
        return _selection


def get_device() -> torch.device:
    """The best available ``torch.device`` for this process, with fallback; see ``select()``."""
    device = _device
    if device is not None:
        return device
    return _cache_device()


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
        if b.name == name:
            return b
    names = ", ".join(sorted(b.name for b in load_plugins().backends()))
    raise ConfigError(f"unknown backend {name!r}; installed: {names}")


def reset(*, plugins: bool = False) -> None:
    """Forget the decision (and with ``plugins=True`` the loaded plugins) so it is made anew."""
    global _selection, _device
    with _lock:
        _selection = None
        _device = None
        if plugins:
            reset_plugins()
