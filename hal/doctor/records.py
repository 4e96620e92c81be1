"""The records the doctor's child sends its parent, as typed values: one class a kind.

Both sides use this module.  The child (``hal.doctor.child``) builds records and writes each as
one JSON line (``encode``); the parent (``hal.doctor.isolate``) turns each line back into a
record once, at the boundary (``decode``), checking every field: a line that is not JSON, names
an unknown kind or carries a malformed field is refused with a reason the report shows.  Each
record is also a read-only mapping of its JSON line (``record["type"]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from hal.contract import SEVERITIES, Finding
from hal.errors import describe_exception

#: Version of the record protocol between parent and child.
PROTOCOL = 1
#: Longest record line the parent reads (a report section is kilobytes).
MAX_LINE = 4 * 2**20
#: A device string as the selection writes it: a device type, optionally ``:index``.
_DEVICE_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,64}(?::[0-9]{1,6})?\Z")


class RecordError(ValueError):
    """A line from the child that is not a valid record; the message says which field and why."""


@dataclass(frozen=True)
class SourcedFinding:
    """A finding with who reported it (a backend, a plugin or ``doctor``), as the report carries it."""

    finding: Finding
    source: str

    def wire(self) -> dict[str, Any]:
        """The JSON the report carries: id, severity, message, fix, source."""
        f = self.finding
        return {"id": f.id, "severity": f.severity, "message": f.message, "fix": f.fix,
                "source": self.source}

    @classmethod
    def from_wire(cls, raw: object, where: str = "finding") -> SourcedFinding:
        """Check one finding's JSON; RecordError names the field that is wrong."""
        if not isinstance(raw, Mapping):
            raise RecordError(f"{where} is a {type(raw).__name__}, expected an object")
        severity = _field(raw, "severity", str, where)
        if severity not in SEVERITIES:
            raise RecordError(f"{where}.severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        return cls(Finding(_field(raw, "id", str, where), severity, _field(raw, "message", str, where),
                           _field(raw, "fix", str, where)), _field(raw, "source", str, where))

    @property
    def severity(self) -> str:
        """The finding's severity, one of ``hal.contract.SEVERITIES``."""
        return self.finding.severity


def sourced(finding: Finding, source: str) -> SourcedFinding:
    """``finding`` as reported by ``source``."""
    return SourcedFinding(finding, source)


T = TypeVar("T")


def _field(raw: Mapping[str, Any], name: str, kind: type[T] | tuple[type, ...], where: str,
           optional: bool = False) -> Any:
    """``raw[name]`` checked against ``kind`` (None allowed when ``optional``)."""
    if name not in raw:
        if optional:
            return None
        raise RecordError(f"{where} has no {name!r}")
    value = raw[name]
    if value is None and optional:
        return None
    if isinstance(value, bool) and kind in (int, float):
        raise RecordError(f"{where}.{name} is a bool, expected a number")
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError(f"{where}.{name} is a {type(value).__name__}, expected {expected}")
    return value


def _object(raw: Mapping[str, Any], name: str, where: str, optional: bool = False) -> Any:
    """A JSON object field whose keys are all strings."""
    value = _field(raw, name, dict, where, optional)
    if value is not None and not all(isinstance(k, str) for k in value):
        raise RecordError(f"{where}.{name} has a key that is not a string")
    return value


def _findings(raw: Mapping[str, Any], where: str) -> tuple[SourcedFinding, ...]:
    items = _field(raw, "findings", list, where)
    return tuple(SourcedFinding.from_wire(f, f"{where}.findings[{i}]") for i, f in enumerate(items))


def _names(raw: Mapping[str, Any], name: str, where: str) -> tuple[str, ...] | None:
    items = _field(raw, name, list, where, optional=True)
    if items is None:
        return None
    if not all(isinstance(i, str) for i in items):
        raise RecordError(f"{where}.{name} holds a value that is not a string")
    return tuple(items)


@dataclass(frozen=True)
class Record(Mapping[str, Any]):
    """One message of the child; ``KIND`` is its ``type`` on the wire."""

    KIND: ClassVar[str] = ""

    def wire(self) -> dict[str, Any]:
        """The record as its JSON line holds it."""
        out: dict[str, Any] = {"type": self.KIND}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and value and isinstance(value[0], SourcedFinding):
                value = [v.wire() for v in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Record:
        """Check the fields of a line of this kind; RecordError says which one is wrong."""
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.wire()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.wire())

    def __len__(self) -> int:
        return len(self.wire())


@dataclass(frozen=True)
class Step(Record):
    """A step is about to run: the parent names it if the child hangs or dies in it."""

    KIND: ClassVar[str] = "step"
    step: str
    plugin: str | None = None
    backend: str | None = None
    backends: tuple[str, ...] | None = None
    device_backend: str | None = None

    def wire(self) -> dict[str, Any]:
        """Only the fields this step has, as the protocol has always written it."""
        return {k: v for k, v in super().wire().items() if v is not None}

    def started(self) -> list[str]:
        """The backends this step was describing when it stopped."""
        return list(self.backends or ()) or ([self.backend] if self.backend else [])

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Step:
        w = "step record"
        return cls(_field(raw, "step", str, w), _field(raw, "plugin", str, w, True),
                   _field(raw, "backend", str, w, True), _names(raw, "backends", w),
                   _field(raw, "device_backend", str, w, True))


@dataclass(frozen=True)
class Sections(Record):
    """The torch-free sections (system, hardware, environment) and the findings made on the way."""

    KIND: ClassVar[str] = "sections"
    data: dict[str, Any]
    findings: tuple[SourcedFinding, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Sections:
        w = "sections record"
        data = _object(raw, "data", w)
        _object(data, "system", f"{w}.data", optional=True)
        _field(data, "hardware", list, f"{w}.data")
        environment = _object(data, "environment", f"{w}.data")
        if not all(isinstance(v, str) for v in environment.values()):
            raise RecordError(f"{w}.data.environment holds a value that is not a string")
        return cls(data, _findings(raw, w))


@dataclass(frozen=True)
class TorchInfo(Record):
    """What ``import torch`` did: version, build, timing, or the exception chain."""

    KIND: ClassVar[str] = "torch"
    data: dict[str, Any]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> TorchInfo:
        return cls(_object(raw, "data", "torch record"))


@dataclass(frozen=True)
class BackendDescribed(Record):
    """One backend described (probe, devices, memory, dtypes, versions) and its findings."""

    KIND: ClassVar[str] = "backend"
    name: str
    data: dict[str, Any]
    findings: tuple[SourcedFinding, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> BackendDescribed:
        w = "backend record"
        data = _object(raw, "data", w)
        for key, kind in (("name", str), ("available", bool), ("reason", str), ("device_count", int)):
            _field(data, key, kind, f"{w}.data")
        return cls(_field(raw, "name", str, w), data, _findings(raw, w))


@dataclass(frozen=True)
class SelectionMade(Record):
    """What ``hal.get_device()`` would pick (``data``) or the error it would raise."""

    KIND: ClassVar[str] = "selection"
    data: dict[str, Any] | None
    error: dict[str, Any] | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SelectionMade:
        w = "selection record"
        data = _object(raw, "data", w, optional=True)
        if data is not None:
            _field(data, "backend", str, f"{w}.data")
            device = _field(data, "device", str, f"{w}.data")
            if not _DEVICE_RE.match(device):
                raise RecordError(f"{w}.data.device {device[:40]!r} is not a device such as 'x' or 'x:0'")
            for i, c in enumerate(_field(data, "candidates", list, f"{w}.data")):
                where = f"{w}.data.candidates[{i}]"
                if not isinstance(c, Mapping):
                    raise RecordError(f"{where} is a {type(c).__name__}, expected an object")
                _field(c, "name", str, where)
                _field(c, "device_count", int, where)
        error = _object(raw, "error", w, optional=True)
        if error is not None:
            _field(error, "type", str, f"{w}.error")
            _field(error, "message", str, f"{w}.error")
        return cls(data, error)


@dataclass(frozen=True)
class SmokeRan(Record):
    """The timed smoke steps on the selected device."""

    KIND: ClassVar[str] = "smoke"
    data: dict[str, Any]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SmokeRan:
        w = "smoke record"
        data = _object(raw, "data", w)
        _field(data, "device", str, f"{w}.data")
        for i, step in enumerate(_field(data, "steps", list, f"{w}.data")):
            where = f"{w}.data.steps[{i}]"
            if not isinstance(step, Mapping):
                raise RecordError(f"{where} is a {type(step).__name__}, expected an object")
            _field(step, "name", str, where)
            ok = _field(step, "ok", bool, where)
            _field(step, "seconds", (int, float), where)
            _field(step, "detail" if ok else "error", str, where)
        return cls(data)


@dataclass(frozen=True)
class PluginFindings(Record):
    """Findings the plugins' ``hal_doctor_findings`` hooks contributed."""

    KIND: ClassVar[str] = "plugin_findings"
    findings: tuple[SourcedFinding, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> PluginFindings:
        return cls(_findings(raw, "plugin_findings record"))


@dataclass(frozen=True)
class PluginsListed(Record):
    """Every plugin the child saw: name, distribution, version, status, hooks, backends."""

    KIND: ClassVar[str] = "plugins"
    data: tuple[dict[str, Any], ...]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> PluginsListed:
        w = "plugins record"
        items = _field(raw, "data", list, w)
        for i, item in enumerate(items):
            where = f"{w}.data[{i}]"
            if not isinstance(item, dict):
                raise RecordError(f"{where} is a {type(item).__name__}, expected an object")
            _field(item, "name", str, where)
            _names(item, "backends", where)
        return cls(tuple(items))


@dataclass(frozen=True)
class Hung(Record):
    """A step of the child that gave no answer within its timeout (the child carried on)."""

    KIND: ClassVar[str] = "hung"
    step: str
    backend: str | None
    what: str
    detail: str

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Hung:
        w = "hung record"
        return cls(_field(raw, "step", str, w), _field(raw, "backend", str, w, True),
                   _field(raw, "what", str, w), _field(raw, "detail", str, w))


@dataclass(frozen=True)
class StepFailed(Record):
    """A step that ended at once without a value: it exited, raised or returned nothing."""

    KIND: ClassVar[str] = "step_failed"
    step: str
    backend: str | None
    what: str
    outcome: str
    detail: str

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> StepFailed:
        w = "step_failed record"
        outcome = _field(raw, "outcome", str, w)
        if outcome not in ("exited", "raised", "returned nothing"):
            raise RecordError(f"{w}.outcome {outcome!r} is not exited, raised or returned nothing")
        return cls(_field(raw, "step", str, w), _field(raw, "backend", str, w, True),
                   _field(raw, "what", str, w), outcome, _field(raw, "detail", str, w))


@dataclass(frozen=True)
class PluginsError(Record):
    """``HAL_PLUGINS`` or ``HAL_DISABLE_PLUGINS`` is malformed: no plugin was loaded."""

    KIND: ClassVar[str] = "plugins_error"
    message: str

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> PluginsError:
        return cls(_field(raw, "message", str, "plugins_error record"))


@dataclass(frozen=True)
class Done(Record):
    """The child finished every step."""

    KIND: ClassVar[str] = "done"
    protocol: int = PROTOCOL

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Done:
        protocol = _field(raw, "protocol", int, "done record")
        if protocol != PROTOCOL:
            raise RecordError(f"done record: protocol {protocol}, this hal speaks {PROTOCOL}")
        return cls(protocol)


#: Every kind of record, by its ``type`` on the wire.
KINDS: dict[str, type[Record]] = {cls.KIND: cls for cls in (
    Step, Sections, TorchInfo, BackendDescribed, SelectionMade, SmokeRan, PluginFindings,
    PluginsListed, Hung, StepFailed, PluginsError, Done)}


def encode(record: Record) -> str:
    """One JSON line for ``record`` (values JSON cannot hold are written as text)."""
    return json.dumps(record.wire(), default=str)


def decode(line: str) -> Record:
    """The record one line of the child holds, every field checked; RecordError when it is not."""
    if len(line) > MAX_LINE:
        raise RecordError(f"a line of {len(line)} characters, over the {MAX_LINE} cap")
    try:
        raw = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RecordError(f"not JSON ({describe_exception(exc, 120)}): {line[:80]!r}") from None
    if not isinstance(raw, dict):
        raise RecordError(f"a JSON {type(raw).__name__}, expected an object with a 'type'")
    kind = raw.get("type")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RecordError(f"unknown record type {str(kind)[:40]!r}; expected one of "
                          f"{', '.join(sorted(KINDS))}")
    return cls.parse(raw)
