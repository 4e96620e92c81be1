"""The plugin- and torch-touching half of ``hal doctor``; everything here runs in the CHILD.

One child process (``python -m hal.doctor.child``, started by ``hal.doctor.isolate``) loads the
plugins, reads the torch-free sections (system, hardware, environment), imports torch once,
probes and describes every backend, asks each for its findings, makes the selection and (with
``--smoke``) exercises the selected device.  Before each step it writes a ``Step`` record and
after it a result record (``hal.doctor.records``, one JSON line each), so the parent can name the
step that hung or crashed and keep everything that finished before it.  With ``--in-process``
the same ``run_steps`` runs in the doctor's own process instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import IO, Any

from hal.contract import Backend, Finding, Probe
from hal.doctor.records import (
    BackendDescribed,
    Done,
    Hung,
    PluginFindings,
    PluginsError,
    PluginsListed,
    Record,
    Sections,
    SelectionMade,
    SmokeRan,
    SourcedFinding,
    Step,
    StepFailed,
    TorchInfo,
    encode,
    sourced,
)
from hal.errors import describe_exception
from hal.validate import Outcome, PendingCall

Emit = Callable[[Record], None]


def _method_failed(backend: Backend, what: str) -> SourcedFinding:
    return sourced(Finding(
        id="backend-method-failed",
        severity="warn",
        message=f"backend {backend.name!r}: {what}",
        fix=f"report this to the maintainers of the plugin that provides {backend.name!r}; "
            "the rest of the report is unaffected",
    ), source="doctor")


def backend_record(backend: Backend) -> BackendDescribed | None:
    """Describe one backend (probe, devices, memory, dtypes, versions) and collect its findings.

    Every method goes through the plugin boundary: one that raises becomes a finding, one that
    hangs or returns garbage makes the backend unavailable; never a crash of the doctor.  None
    when its probe hung.
    """
    from hal.inventory import describe_backend
    from hal.plugins import fail_backend
    from hal.selection import probe_all
    from hal.validate import call_plugin, check_findings

    states: dict[str, str] = {}
    probe = probe_all([backend], states=states)[backend.name]
    if states.get(backend.name) == "hung":
        return None
    data = describe_backend(backend, probe)
    findings: list[SourcedFinding] = []
    for error in data.pop("errors", []):
        findings.append(sourced(Finding(
            id="backend-method-failed", severity="warn",
            message=f"backend {backend.name!r}: {error}",
            fix=f"report this to the maintainers of the plugin that provides {backend.name!r}",
        ), source="doctor"))
    data.setdefault("versions", {})
    outcome = call_plugin(backend.findings, f"backend {backend.name!r}: findings()")
    if outcome.state == "ok":
        try:
            produced = check_findings(outcome.value)
        except ValueError as exc:
            fail_backend(backend.name, str(exc))
            findings.append(_method_failed(backend, str(exc)))
        else:
            findings.extend(sourced(f, backend.name) for f in produced)
    else:
        if outcome.state != "raised":
            fail_backend(backend.name, outcome.describe("findings()"))
        findings.append(_method_failed(backend, outcome.describe("findings()")))
    return BackendDescribed(backend.name, data, tuple(findings))


def _probe_of(record: BackendDescribed) -> Probe:
    """The probe answer a backend record holds (the selection reuses it)."""
    data = record.data
    return Probe(bool(data["available"]), str(data["reason"]), int(data["device_count"]))


def selection_record(backends: Sequence[Backend],
                     environ: Mapping[str, str] | None = None,
                     probes: Mapping[str, Probe] | None = None) -> SelectionMade:
    """What ``hal.get_device()`` would pick here and why, or the error it would raise.

    ``probes``: the answers the backend records already hold, so no backend is probed twice.
    """
    from hal.errors import HalError
    from hal.selection import decide

    try:
        selection = decide(backends, environ, probes)
    except HalError as exc:
        return SelectionMade(None, {"type": type(exc).__name__, "message": str(exc)})
    return SelectionMade(selection.as_dict(), None)


class _Writer:
    """Writes records to the parent, one JSON line each, flushed at once."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, record: Record) -> None:
        line = encode(record)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _no_answer(name: str, outcome: Outcome[Any], what: str,
               backend: str | None = None) -> Hung | StepFailed:
    """The record for a step that gave no value: hung, exited, raised or returned nothing."""
    if outcome.state == "hung":
        return Hung(name, backend, what, f"no answer within {outcome.seconds:g} s")
    if outcome.state == "ok":
        label, detail = "returned nothing", "it returned no value"
    elif outcome.state == "exited":
        label, detail = "exited", f"it called sys.exit({getattr(outcome.error, 'code', None)!r})"
    else:
        label, detail = "raised", f"it raised {describe_exception(outcome.error)}"
    return StepFailed(name, backend, what, label, detail)


def _announced_host(emit: Emit) -> Any:
    """Load plugins into the process's host, announcing each import and hook call as a step, so
    a plugin that kills the process is named by the parent."""
    from hal import plugins

    host = plugins.PluginHost()
    host.on_call = lambda plugin, hook: emit(Step(f"plugin {plugin}: {hook}", plugin=plugin))
    host.load_entry_points(on_import=lambda name: emit(Step(f"import plugin {name}", plugin=name)))
    plugins.install_host(host)
    return host


def run_steps(emit: Emit, *, skip: Iterable[str] = (),
              smoke: bool = False, environ: Mapping[str, str] | None = None,
              timeout: float = 30.0, serial: bool = False, announce: bool = False) -> None:
    """Every plugin-touching and torch-touching step in order, each announced before it runs.

    Plugins are loaded first (``announce``: each import and hook call is a step of its own),
    then the torch-free sections (system, hardware, environment), then ``import torch``.
    Backends are described in parallel threads within ``timeout`` seconds; one that does not
    answer is reported as hung and left out of the selection.  ``serial`` describes them one at
    a time instead, so a crash can be pinned on one backend.
    """
    from hal.doctor.report import local_sections
    from hal.doctor.torchinfo import import_torch
    from hal.errors import ConfigError
    from hal.plugins import load_plugins
    from hal.selection import list_backends

    skipped = set(skip)
    emit(Step("load plugins"))
    try:
        host = _announced_host(emit) if announce else load_plugins()
        emit(Step("plugin hooks"))
        backends = list_backends()
    except ConfigError as exc:
        emit(PluginsError(str(exc)))
        emit(Done())
        return
    emit(Step("system and hardware"))
    sections, found, _ = local_sections(backends, timeout)
    emit(Sections(sections, tuple(found)))

    emit(Step("import torch"))
    torch_info = import_torch()
    emit(TorchInfo(torch_info))

    backends = [b for b in backends if b.name not in skipped]
    answered: list[Backend] = []
    probes: dict[str, Probe] = {}
    label = "doctor: describing"

    def take(backend: Backend, outcome: Outcome[BackendDescribed | None]) -> None:
        """Emit one backend's record, or why none came; keep the backends that answered."""
        if outcome.value is None:
            hung = outcome.state == "ok"  # its probe hung: backend_record said so with None
            outcome = Outcome("hung", seconds=timeout) if hung else outcome
            emit(_no_answer(f"backend {backend.name}", outcome, "probe", backend.name))
            return
        emit(outcome.value)
        answered.append(backend)
        probes[backend.name] = _probe_of(outcome.value)

    if serial:
        for backend in backends:
            emit(Step(f"backend {backend.name}", backend=backend.name))
            take(backend, PendingCall(partial(backend_record, backend), label, plugin=False).wait(
                time.monotonic() + timeout + 1.0))
    else:
        emit(Step("backends", backends=tuple(b.name for b in backends)))
        handles = [(b, PendingCall(partial(backend_record, b), label, plugin=False)) for b in backends]
        until = time.monotonic() + timeout + 1.0  # the probes' own timeout fires first
        for backend, handle in handles:
            take(backend, handle.wait(until))

    emit(Step("selection"))
    chosen = PendingCall(lambda: selection_record(answered, environ, probes), "doctor: selection",
                         plugin=False).wait(time.monotonic() + timeout)
    if chosen.value is None:
        emit(_no_answer("selection", chosen, "selection"))
        selection = SelectionMade(None, None)
    else:
        selection = chosen.value
        emit(selection)

    if smoke and selection.data is not None:
        from hal.doctor.smoke import smoke_test

        picked = next(b for b in answered if b.name == selection.data["backend"])
        emit(Step("smoke", device_backend=picked.name))
        device = selection.data["device"]
        ran = PendingCall(lambda: smoke_test(picked, device), f"backend {picked.name!r}: smoke",
                          plugin=False).wait(time.monotonic() + max(timeout, 60.0))
        if ran.value is None:
            emit(_no_answer("smoke", ran, "smoke test"))
        else:
            emit(SmokeRan(ran.value))

    emit(Step("plugin findings"))
    report: dict[str, Any] = dict(sections)
    report.update({"torch": torch_info, "selection": selection.data})
    hook = PendingCall(lambda: host.doctor_findings(report), "doctor: plugin findings",
                       plugin=False).wait(time.monotonic() + timeout)
    if hook.value is None:
        emit(_no_answer("plugin findings", hook, "a plugin's hal_doctor_findings hook"))
    else:
        emit(PluginFindings(tuple(sourced(f, plugin) for plugin, f in hook.value)))
    emit(PluginsListed(tuple(host.list_plugins())))
    emit(Done())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the child: records go to the original stdout, stray prints to stderr."""
    parser = argparse.ArgumentParser(prog="python -m hal.doctor.child")
    parser.add_argument("--skip", action="append", default=[], help="backend to leave out")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--serial", action="store_true", help="one backend at a time")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
    args = parser.parse_args(argv)
    from hal import validate

    validate.DEFAULT_TIMEOUT = args.timeout  # plugin calls, unless HAL_PROBE_TIMEOUT says
    records = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # plugins' and torch's prints
    code = 0
    try:
        run_steps(_Writer(records), skip=args.skip, smoke=args.smoke, timeout=args.timeout,
                  serial=args.serial, announce=True)
    except Exception as exc:  # hal's own bug: say it on stderr, the parent reports a crash
        sys.stderr.write(f"hal doctor child: {describe_exception(exc)}\n")
        code = 3
    records.close()
    sys.stderr.flush()
    os._exit(code)  # do not wait for a hung probe's thread at interpreter shutdown


if __name__ == "__main__":
    raise SystemExit(main())
