"""The plugin manager: entry-point loading with allow/deny lists, isolation and a record of failures.

Plugins load on first use (``load_plugins()`` is called by every public getter), never at
``import hal``.  Each entry point is imported, registered and called in isolation: a plugin that
fails to import, raises in a hook or returns the wrong type is recorded and skipped.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any, Literal

import pluggy

from hal import hookspecs
from hal.contract import Backend, Finding
from hal.errors import ConfigError, HalError, PluginError

ENTRY_POINT_GROUP = "hal"
ALLOW_ENV = "HAL_PLUGINS"
DENY_ENV = "HAL_DISABLE_PLUGINS"
#: Plugins that load whatever the allow/deny lists say, so there is always a device.
ALWAYS_LOADED = ("cpu",)
_BUILTIN_MODULES = {"cpu": "hal.backends.cpu"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

Status = Literal["loaded", "failed", "blocked", "missing"]


@dataclass(frozen=True)
class PluginRecord:
    """What hal knows about one plugin: where it came from, whether it works and why not."""

    name: str
    distribution: str | None
    version: str | None
    status: Status
    error: str | None = None
    hooks: tuple[str, ...] = ()
    backends: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by ``hal plugins`` and ``hal doctor --json``."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "hooks": list(self.hooks),
            "backends": list(self.backends),
        }


def parse_name_list(var: str, value: str | None, *, allow_empty: bool) -> list[str] | None:
    """Parse a comma-separated plugin list from env var ``var``; None when unset."""
    if value is None:
        return None
    if not value.strip():
        if allow_empty:
            return []
        raise ConfigError(f"{var} is set but empty; expected comma-separated plugin names")
    names = [part.strip() for part in value.split(",")]
    for name in names:
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"{var}={value!r}: {name!r} is not a plugin name; "
                "expected comma-separated names such as 'cpu,myaccel'"
            )
    return names


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class PluginHost:
    """A typed facade over the pluggy manager: one method per hook, each plugin called alone."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._backends: list[Backend] | None = None

    # -- loading ----------------------------------------------------------

    def load_entry_points(self, environ: Mapping[str, str] | None = None) -> None:
        """Load every ``hal`` entry point the allow/deny lists admit, before importing any."""
        env = os.environ if environ is None else environ
        allow = parse_name_list(ALLOW_ENV, env.get(ALLOW_ENV), allow_empty=False)
        deny = parse_name_list(DENY_ENV, env.get(DENY_ENV), allow_empty=True) or []
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.records:  # every branch below records the name
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            always = ep.name in ALWAYS_LOADED
            if not always and ((allow is not None and ep.name not in allow) or ep.name in deny):
                why = f"not in {ALLOW_ENV}" if ep.name not in deny else f"listed in {DENY_ENV}"
                self.records[ep.name] = PluginRecord(
                    ep.name, dist_name, version, "blocked", error=why
                )
                self.pm.set_blocked(ep.name)
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # a plugin must never take hal down, even SystemExit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.records[ep.name] = PluginRecord(
                    ep.name, dist_name, version, "failed", error=f"import failed: {_describe(exc)}"
                )
                continue
            self.register(plugin, ep.name, distribution=dist_name, version=version)
        for name in ALWAYS_LOADED:
            if name not in self.records:  # running from a source tree without metadata
                try:
                    module = importlib.import_module(_BUILTIN_MODULES[name])
                except ModuleNotFoundError as exc:
                    raise HalError(
                        "hal is not installed (hal.backends is missing in a plain source "
                        "checkout): run `pip install -e .` in the checkout"
                    ) from exc
                self.register(module, name, distribution=None, version=None)
        for name in allow or []:
            if name not in self.records:
                self.records[name] = PluginRecord(
                    name, None, None, "missing", error=f"named in {ALLOW_ENV} but not installed"
                )

    def register(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> bool:
        """Register one plugin object; record and skip it if it breaks the hook specs."""
        unknown = [
            attr
            for attr in dir(plugin)
            if attr.startswith("hal_") and not hasattr(self.pm.hook, attr)
        ]
        error = None
        if unknown:
            error = f"unknown hook(s) {', '.join(sorted(unknown))}; is the name misspelled?"
        else:
            try:
                self.pm.register(plugin, name=name)
            except Exception as exc:
                error = f"registration failed: {_describe(exc)}"
        hooks = tuple(
            sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        ) if error is None else ()
        status: Status = "loaded" if error is None else "failed"
        self.records[name] = PluginRecord(name, distribution, version, status, error, hooks)
        self._backends = None
        return error is None

    def unregister(self, name: str) -> None:
        """Forget a plugin registered under ``name`` (tests use this in ``finally``)."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.records.pop(name, None)
        self._backends = None

    # -- calling, one plugin at a time ----------------------------------------

    def _fail(self, plugin_name: str, message: str) -> None:
        record = self.records.get(plugin_name)
        if record is None:
            record = PluginRecord(plugin_name, None, None, "failed")
        previous = f"{record.error}; " if record.error and record.status == "failed" else ""
        self.records[plugin_name] = replace(record, status="failed", error=previous + message)

    def _call_each(
        self, hook_name: str, check: Callable[[Any], str | None], **kwargs: Any
    ) -> Iterator[tuple[str, Any]]:
        """Call ``hook_name`` on each plugin separately, in pluggy's order; skip the broken ones."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                self._fail(impl.plugin_name, f"{hook_name} raised {_describe(exc)}")
                continue
            if result is None:
                continue
            problem = check(result)
            if problem is not None:
                self._fail(impl.plugin_name, f"{hook_name} returned {problem}")
                continue
            yield impl.plugin_name, result

    def backends(self) -> list[Backend]:
        """Every valid backend from every plugin, each name once (first provider wins)."""
        if self._backends is not None:
            return list(self._backends)
        found: list[Backend] = []
        for plugin_name, result in self._call_each("hal_backends", _check_backends):
            names = []
            for backend in result:
                if any(b.name == backend.name for b in found):
                    self._fail(plugin_name, f"backend name {backend.name!r} is already taken")
                    continue
                found.append(backend)
                names.append(backend.name)
            record = self.records.get(plugin_name)
            if record is not None:
                self.records[plugin_name] = replace(
                    record, backends=record.backends + tuple(names)
                )
        self._backends = found
        return list(found)

    def doctor_findings(self, report: Mapping[str, Any]) -> list[tuple[str, Finding]]:
        """Findings contributed by plugins through ``hal_doctor_findings``, with their source."""
        out: list[tuple[str, Finding]] = []
        for plugin_name, result in self._call_each(
            "hal_doctor_findings", _check_findings, report=report
        ):
            out.extend((plugin_name, f) for f in result)
        return out

    def accelerators(self) -> list[tuple[str, Mapping[str, Any]]]:
        """Catalogue entries contributed by plugins through ``hal_accelerators``."""
        out: list[tuple[str, Mapping[str, Any]]] = []
        for plugin_name, result in self._call_each("hal_accelerators", _check_accelerators):
            out.extend((plugin_name, entry) for entry in result)
        return out

    def plugin_list(self) -> list[dict[str, Any]]:
        """Every plugin hal saw, with distribution, version, hooks and status, sorted by name."""
        self.backends()  # calling the hook is what reveals a plugin broken inside it
        return [self.records[name].as_dict() for name in sorted(self.records)]


def _check_backends(result: Any) -> str | None:
    if not isinstance(result, Sequence) or isinstance(result, (str, bytes)):
        return f"{type(result).__name__}, expected a list of hal.Backend"
    for item in result:
        if not isinstance(item, Backend):
            return f"a {type(item).__name__} in its list, expected hal.Backend instances"
        if not (isinstance(item.name, str) and item.name and _NAME_RE.match(item.name)):
            return f"a backend with invalid name {item.name!r}"
        if not (isinstance(item.device_type, str) and item.device_type):
            return f"backend {item.name!r} without a device_type"
        if type(item).probe is Backend.probe:
            return f"backend {item.name!r} that does not implement probe()"
    return None


def _check_findings(result: Any) -> str | None:
    if not isinstance(result, Sequence) or isinstance(result, (str, bytes)):
        return f"{type(result).__name__}, expected a list of hal.Finding"
    bad = [type(f).__name__ for f in result if not isinstance(f, Finding)]
    return f"a {bad[0]} in its list, expected hal.Finding" if bad else None


def _check_accelerators(result: Any) -> str | None:
    if not isinstance(result, Sequence) or isinstance(result, (str, bytes)):
        return f"{type(result).__name__}, expected a list of mappings"
    for entry in result:
        if not isinstance(entry, Mapping):
            return f"a {type(entry).__name__} in its list, expected a mapping"
        missing = [k for k in ("id", "name", "memory_bytes", "backend", "source") if k not in entry]
        if missing:
            return f"an entry without {', '.join(missing)}"
    return None


_host: PluginHost | None = None
_lock = threading.RLock()


def load_plugins() -> PluginHost:
    """Load plugins once per process (thread-safe) and return the host; cheap after the first."""
    global _host
    host = _host
    if host is not None:
        return host
    with _lock:
        if _host is None:
            new = PluginHost()
            new.load_entry_points()
            _host = new
        return _host


def reset_plugins() -> None:
    """Forget loaded plugins so the next use reloads them (tests, or a changed HAL_PLUGINS)."""
    global _host
    with _lock:
        _host = None


def list_plugins() -> list[dict[str, Any]]:
    """Every plugin with distribution, version, hooks and status: feeds ``hal plugins`` and tests."""
    return load_plugins().plugin_list()


@contextmanager
def registered(plugin: object, name: str) -> Iterator[PluginHost]:
    """Register ``plugin`` for the duration of a ``with`` block; for tests and notebooks."""
    host = load_plugins()
    if not host.register(plugin, name):
        error = host.records[name].error
        host.records.pop(name, None)
        raise PluginError(f"plugin {name!r} could not be registered: {error}", plugin=name)
    try:
        yield host
    finally:
        host.unregister(name)
