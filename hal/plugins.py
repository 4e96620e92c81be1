"""The plugin manager: entry-point loading with allow/deny lists, isolation and a record of failures.

Plugins load on first use (``load_plugins()`` is called by every public getter), never at
``import hal``.  Each entry point is imported, registered and called in isolation: a plugin that
fails to import, raises in a hook or returns the wrong type is recorded and skipped.
"""

from __future__ import annotations

import importlib
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from functools import partial
from importlib import metadata
from typing import Any, Literal

import pluggy

from hal import hookspecs
from hal.contract import Backend, Finding
from hal.errors import ConfigError, HalError, PluginError, describe_exception, warn_renamed
from hal.locks import ForkSafeLock
from hal.validate import (
    NAME_RE,
    call_plugin,
    check_backend,
    check_findings,
    forbid_reentry,
    timeout_from_env,
)

ENTRY_POINT_GROUP = "hal"
ALLOW_ENV = "HAL_PLUGINS"
DENY_ENV = "HAL_DISABLE_PLUGINS"
#: hal's own distribution: its entry points are the built-in plugins, and their names are reserved.
HAL_DISTRIBUTION = "torch-hal"
#: Plugins that load whatever the allow/deny lists say, so there is always a device.
ALWAYS_LOADED = ("cpu",)
_BUILTIN_MODULES = {"cpu": "hal.backends.cpu"}
#: A plugin's import may take this many times HAL_PROBE_TIMEOUT (it may import torch or an SDK).
IMPORT_TIMEOUT_FACTOR = 3
#: Variables a plugin may not set at import: they steer hal's own decisions.
_PROTECTED_PREFIX = "HAL_"

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
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by ``hal plugins`` and ``hal doctor --json``: every field by name,
        tuples as lists."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}


def parse_name_list(var: str, value: str | None, *, allow_empty: bool) -> list[str] | None:
    """Parse a comma-separated plugin list from env var ``var`` (lower-cased); None when unset."""
    if value is None:
        return None
    if not value.strip():
        if allow_empty:
            return []
        raise ConfigError(f"{var} is set but empty; expected comma-separated plugin names")
    names = [part.strip() for part in value.split(",")]
    for name in names:
        if not NAME_RE.match(name):
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise ConfigError(
                f"{var}={shown!r}: {name[:40]!r} is not a plugin name; "
                "expected comma-separated names such as 'cpu,myaccel'"
            )
    return [name.lower() for name in names]


def _meta_text(value: object) -> str | None:
    """A distribution's Name or Version as hal shows it: escaped, one line, bounded (None kept)."""
    if value is None:
        return None
    from hal.console import one_line

    return one_line(value, 200)


def _is_hal_dist(dist_name: str | None) -> bool:
    return dist_name is not None and re.sub(r"[-_.]+", "-", dist_name).lower() == HAL_DISTRIBUTION


def _environ_changes(before: Mapping[str, str]) -> list[str]:
    """What plugin code changed in os.environ; undo changes to the user's variables and HAL_*."""
    after = dict(os.environ)
    notes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None:
            notes.append(f"set {name}")
            if name.upper().startswith(_PROTECTED_PREFIX):
                os.environ.pop(name, None)
        elif new is None:
            notes.append(f"removed {name}")
            os.environ[name] = old
        else:
            notes.append(f"changed {name}")
            os.environ[name] = old
    return notes


class PluginHost:
    """A typed facade over the pluggy manager: one method per hook, each plugin called alone."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._backends: list[Backend] | None = None
        #: plugins whose code is hal's own or was registered in-process (may use built-in names)
        self.trusted: set[str] = set()
        #: backend name (lower-case) -> the plugin that provides it
        self.providers: dict[str, str] = {}
        #: names reserved for hal's built-in plugins and backends (lower-case)
        self.reserved: set[str] = set(_BUILTIN_MODULES)
        #: called as ``on_call(plugin, hook)`` before each hook call (the doctor's child announces it)
        self.on_call: Callable[[str, str], None] | None = None

    # -- loading ----------------------------------------------------------

    def load_entry_points(self, environ: Mapping[str, str] | None = None,
                          on_import: Callable[[str], None] | None = None) -> None:
        """Load every ``hal`` entry point the allow/deny lists admit, before importing any.

        hal's own entry points come first whatever the enumeration order, and their names are
        reserved.  ``on_import(name)`` is called before each outside plugin is imported (the
        doctor's child announces it, so a crash is pinned on the plugin).
        """
        env = os.environ if environ is None else environ
        allow = parse_name_list(ALLOW_ENV, env.get(ALLOW_ENV), allow_empty=False)
        deny = parse_name_list(DENY_ENV, env.get(DENY_ENV), allow_empty=True) or []
        entries = []
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            # a distribution's metadata is the plugin's text too: escaped and bounded here
            dist_name = _meta_text(dist.metadata["Name"]) if dist is not None else None
            entries.append((not _is_hal_dist(dist_name), ep, dist_name,
                            _meta_text(dist.version) if dist is not None else None))
        entries.sort(key=lambda e: e[0])  # stable: hal's own first, the others in their order
        self.reserved |= {ep.name.lower() for outside, ep, _, _ in entries if not outside}
        # An import may load torch or a vendor SDK (slow on a busy node): three plugin-call timeouts.
        timeout = IMPORT_TIMEOUT_FACTOR * timeout_from_env(env)
        for outside, ep, dist_name, version in entries:
            name = ep.name.lower()
            if not NAME_RE.match(ep.name):
                self._refuse(f"{ep.name[:40]!r}@{dist_name}", dist_name, version,
                             f"entry point name {ep.name[:40]!r} is not a valid plugin name")
                continue
            if outside and name in self.reserved:
                self._refuse(f"{name}@{dist_name}", dist_name, version,
                             f"plugin name {name!r} is reserved for hal's built-in plugin; refused")
                continue
            if name in self.records:
                self._refuse(f"{name}@{dist_name}", dist_name, version,
                             f"plugin name {name!r} is already used by "
                             f"{self.records[name].distribution}; refused")
                continue
            always = not outside and name in ALWAYS_LOADED
            if not always and ((allow is not None and name not in allow) or name in deny):
                why = f"not in {ALLOW_ENV}" if name not in deny else f"listed in {DENY_ENV}"
                self.records[name] = PluginRecord(name, dist_name, version, "blocked", error=why)
                self.pm.set_blocked(name)
                continue
            if not outside:
                try:
                    plugin = ep.load()
                except Exception as exc:
                    self.records[name] = PluginRecord(
                        name, dist_name, version, "failed", error=f"import failed: {describe_exception(exc)}")
                    continue
                self.register(plugin, name, distribution=dist_name, version=version)
                continue
            if on_import is not None:
                on_import(name)
            before = dict(os.environ)
            outcome = call_plugin(ep.load, f"plugin {name!r}: import", timeout)
            notes = tuple(_environ_changes(before))
            if outcome.state != "ok":
                why = (describe_exception(outcome.error) if outcome.state == "raised"
                       else outcome.describe("its import"))
                self.records[name] = PluginRecord(name, dist_name, version, "failed",
                                                  error=f"import failed: {why}", notes=notes)
                continue
            self.register(outcome.value, name, distribution=dist_name, version=version,
                          outside=True)
            if notes:
                self.records[name] = replace(self.records[name], notes=tuple(
                    f"its import changed the environment: {n} (undone unless a new non-HAL_ variable)"
                    for n in notes))
        for name in ALWAYS_LOADED:
            record = self.records.get(name)
            # Running from a source tree: without metadata, or with a stale egg-info whose entry
            # points name hal.backends, which a plain checkout does not have.
            if record is None or (record.status == "failed" and _backends_missing()):
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

    def _refuse(self, key: str, dist_name: str | None, version: str | None, why: str) -> None:
        """Record an entry point that was refused before import (a PluginError, not raised)."""
        self.records[key] = PluginRecord(key, dist_name, version, "failed", error=why)

    def register(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
        outside: bool = False,
    ) -> bool:
        """Register one plugin object; record and skip it if it breaks the hook specs.

        Objects registered directly (tests, notebooks) are the caller's own code and may use
        any backend name not taken yet; ``outside`` entry points may not use a built-in name.
        """
        if self.pm.get_plugin(name) is not None:
            return False  # the name is taken: the plugin registered under it stays as it is
        if not outside:
            self.trusted.add(name)
        try:
            unknown = [
                attr
                for attr in dir(plugin)
                if attr.startswith("hal_") and not hasattr(self.pm.hook, attr)
            ]
        except Exception as exc:  # a hostile __dir__
            unknown = [f"<dir() raised {type(exc).__name__}>"]
        error = None
        if unknown:
            error = f"unknown hook(s) {', '.join(sorted(unknown))}; is the name misspelled?"
        else:
            try:
                self.pm.register(plugin, name=name)
            except Exception as exc:
                error = f"registration failed: {describe_exception(exc)}"
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
        self.trusted.discard(name)
        self._backends = None

    # -- calling, one plugin at a time ----------------------------------------

    def fail_plugin(self, plugin_name: str, message: str) -> None:
        """Mark plugin ``plugin_name`` failed with ``message`` (appended to earlier errors, once)."""
        record = self.records.get(plugin_name)
        if record is None:
            record = PluginRecord(plugin_name, None, None, "failed")
        previous = f"{record.error}; " if record.error and record.status == "failed" else ""
        if message in (record.error or ""):
            return
        self.records[plugin_name] = replace(record, status="failed", error=previous + message)

    def fail_backend(self, backend_name: str, message: str) -> None:
        """Record a contract breach of backend ``backend_name`` against the plugin providing it."""
        plugin = self.providers.get(backend_name.lower())
        if plugin is not None:
            self.fail_plugin(plugin, f"backend {backend_name!r}: {message}")

    def provider(self, backend_name: str) -> str | None:
        """The plugin that provides backend ``backend_name`` (None when unknown)."""
        return self.providers.get(backend_name.lower())

    def _call_each(
        self, hook_name: str, check: Callable[[Any], str | None], **kwargs: Any
    ) -> Iterator[tuple[str, Any]]:
        """Call ``hook_name`` on each plugin separately, in registration order, under the plugin
        timeout; record and skip the broken ones (an exception, sys.exit, a hang, a wrong type)."""
        caller = getattr(self.pm.hook, hook_name)
        timeout = timeout_from_env()
        for impl in reversed(caller.get_hookimpls()):
            args = [kwargs[arg] for arg in impl.argnames]
            if self.on_call is not None:
                self.on_call(impl.plugin_name, hook_name)
            outcome = call_plugin(partial(impl.function, *args),
                                  f"plugin {impl.plugin_name!r}: {hook_name}", timeout)
            if outcome.state != "ok":
                self.fail_plugin(impl.plugin_name, outcome.describe(hook_name))
                continue
            result = outcome.value
            if result is None:
                continue
            try:
                problem = check(result)
            except Exception as exc:  # a hostile __len__/__iter__/__eq__
                problem = f"a value that cannot be read ({describe_exception(exc)})"
            if problem is not None:
                self.fail_plugin(impl.plugin_name, f"{hook_name} returned {problem}")
                continue
            yield impl.plugin_name, result

    def backends(self) -> list[Backend]:
        """Every valid backend from every plugin, each name once (built-in names reserved)."""
        if self._backends is not None:
            return list(self._backends)
        forbid_reentry("hal's plugin hooks (list_backends/list_plugins)")
        found: list[Backend] = []
        providers: dict[str, str] = {}
        calls = list(self._call_each("hal_backends", _check_backend_list))
        calls.sort(key=lambda c: c[0] not in self.trusted)  # hal's own and in-process first
        for plugin_name, result in calls:
            names = []
            try:
                items = list(itertools.islice(result, 64))  # an endless iterator cannot hang us
            except Exception as exc:  # a hostile sequence
                self.fail_plugin(plugin_name,
                           f"hal_backends returned a list that cannot be read ({describe_exception(exc)})")
                continue
            for backend in items:
                try:
                    problem = check_backend(backend)
                except Exception as exc:  # a property that raises
                    problem = f"a backend whose attributes cannot be read ({describe_exception(exc)})"
                if problem is not None:
                    self.fail_plugin(plugin_name, f"hal_backends returned {problem}")
                    continue
                key = backend.name.lower()
                if plugin_name not in self.trusted and key in self.reserved:
                    self.fail_plugin(plugin_name, f"backend name {backend.name!r} is reserved for "
                                            "hal's built-in backend; refused")
                    continue
                if key in providers:
                    self.fail_plugin(plugin_name, f"backend name {backend.name!r} is already taken")
                    continue
                found.append(backend)
                providers[key] = plugin_name
                names.append(backend.name)
            record = self.records.get(plugin_name)
            if record is not None:
                self.records[plugin_name] = replace(
                    record, backends=record.backends + tuple(n for n in names
                                                             if n not in record.backends)
                )
        self.providers = providers
        self._backends = found
        return list(found)

    def doctor_findings(self, report: Mapping[str, Any]) -> list[tuple[str, Finding]]:
        """Findings contributed by plugins through ``hal_doctor_findings``, with their source."""
        out: list[tuple[str, Finding]] = []
        for plugin_name, result in self._call_each(
            "hal_doctor_findings", _check_findings, report=report
        ):
            out.extend((plugin_name, f) for f in check_findings(result, "hal_doctor_findings"))
        return out

    def accelerators(self) -> list[tuple[str, Mapping[str, Any]]]:
        """Catalogue entries contributed by plugins through ``hal_accelerators``."""
        out: list[tuple[str, Mapping[str, Any]]] = []
        for plugin_name, result in self._call_each("hal_accelerators", _check_accelerators):
            out.extend((plugin_name, entry) for entry in itertools.islice(result, 10000))
        return out

    def list_plugins(self) -> list[dict[str, Any]]:
        """Every plugin hal saw, with distribution, version, hooks and status, sorted by name."""
        self.backends()  # calling the hook is what reveals a plugin broken inside it
        return [self.records[name].as_dict() for name in sorted(self.records)]

    def plugin_list(self) -> list[dict[str, Any]]:
        """Deprecated name of ``list_plugins`` (warns once per process)."""
        warn_renamed("plugins.PluginHost.plugin_list", "plugins.PluginHost.list_plugins")
        return self.list_plugins()

    def failed(self) -> list[str]:
        """Names of the plugins that failed to load or broke the contract."""
        return sorted(n for n, r in self.records.items() if r.status == "failed")


def _check_backend_list(result: Any) -> str | None:
    if not isinstance(result, Sequence) or isinstance(result, (str, bytes)):
        return f"{type(result).__name__}, expected a list of hal.Backend"
    return None


def _check_findings(result: Any) -> str | None:
    try:
        check_findings(result, "")
    except ValueError as exc:
        return str(exc).removeprefix(" returned ")
    return None


def _check_accelerators(result: Any) -> str | None:
    if not isinstance(result, Sequence) or isinstance(result, (str, bytes)):
        return f"{type(result).__name__}, expected a list of mappings"
    for entry in itertools.islice(result, 10000):
        if not isinstance(entry, Mapping):
            return f"a {type(entry).__name__} in its list, expected a mapping"
        missing = [k for k in ("id", "name", "memory_bytes", "backend", "source") if k not in entry]
        if missing:
            return f"an entry without {', '.join(missing)}"
    return None


_host: PluginHost | None = None
_lock = ForkSafeLock(threading.RLock)


def load_plugins() -> PluginHost:
    """Load plugins once per process (thread-safe) and return the host; cheap after the first."""
    global _host
    host = _host
    if host is not None:
        return host
    forbid_reentry("hal's plugin loading")
    with _lock:
        if _host is None:
            new = PluginHost()
            new.load_entry_points()
            _host = new
        return _host


def install_host(host: PluginHost | None) -> PluginHost | None:
    """Make ``host`` the process's plugin host (None: load afresh on next use); returns the old one.

    For the doctor's child (a host that announces each step) and the pytest fixture.
    """
    global _host
    with _lock:
        previous, _host = _host, host
    return previous


def fail_backend(backend_name: str, message: str) -> None:
    """Record a contract breach of backend ``backend_name`` against its plugin in the loaded host.

    Nothing happens when no plugins are loaded (a backend built by hand, outside any host).
    """
    host = _host
    if host is not None:
        host.fail_backend(backend_name, message)


def reset_plugins() -> None:
    """Forget loaded plugins so the next use reloads them (tests, or a changed HAL_PLUGINS)."""
    global _host
    with _lock:
        _host = None


def list_plugins() -> list[dict[str, Any]]:
    """Every plugin with distribution, version, hooks and status: feeds ``hal plugins`` and tests."""
    return load_plugins().list_plugins()


@contextmanager
def registered(plugin: object, name: str) -> Iterator[PluginHost]:
    """Register ``plugin`` for the duration of a ``with`` block; for tests and notebooks."""
    host = load_plugins()
    if host.pm.get_plugin(name) is not None or name.lower() in host.records:
        raise PluginError(f"plugin name {name!r} is already used; choose another", plugin=name)
    if not host.register(plugin, name):
        error = host.records[name].error
        host.records.pop(name, None)
        raise PluginError(f"plugin {name!r} could not be registered: {error}", plugin=name)
    try:
        yield host
    finally:
        host.unregister(name)


def _backends_missing() -> bool:
    """Whether ``hal.backends`` cannot be found: hal runs from a plain source checkout."""
    import importlib.util

    try:
        return importlib.util.find_spec("hal.backends") is None
    except (ImportError, ValueError):
        return True
