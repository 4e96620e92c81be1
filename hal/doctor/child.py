"""The torch-touching half of ``hal doctor``, run in ONE child process (``python -m hal.doctor.child``).

It imports torch once, then probes and describes every backend, asks each for its findings,
makes the selection and (with ``--smoke``) exercises the selected device.  Before each step it
writes a ``step`` record and after it a result record, one JSON object a line, so the parent can
name the step that hung or crashed and keep everything that finished before it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import IO, Any

from hal.contract import Backend, Finding, Probe

#: Version of the record protocol between parent and child.
PROTOCOL = 1


def finding_dict(finding: Finding, source: str) -> dict[str, Any]:
    """A Finding as the JSON the report carries, with who reported it."""
    return {"id": finding.id, "severity": finding.severity, "message": finding.message,
            "fix": finding.fix, "source": source}


def _method_failed(backend: Backend, method: str, exc: BaseException) -> dict[str, Any]:
    return finding_dict(Finding(
        id="backend-method-failed",
        severity="warn",
        message=f"backend {backend.name!r}: {method} raised {type(exc).__name__}: {exc}",
        fix=f"report this to the maintainers of the plugin that provides {backend.name!r}; "
            "the rest of the report is unaffected",
    ), source="doctor")


def backend_record(backend: Backend) -> dict[str, Any]:
    """Describe one backend (probe, devices, memory, dtypes, versions) and collect its findings.

    Every method is guarded: one that raises becomes a finding, never a crash of the doctor.
    """
    from hal.inventory import describe_backend

    data = describe_backend(backend)
    findings: list[dict[str, Any]] = []
    for error in data.get("errors", []):
        findings.append(finding_dict(Finding(
            id="backend-method-failed", severity="warn",
            message=f"backend {backend.name!r}: {error}",
            fix=f"report this to the maintainers of the plugin that provides {backend.name!r}",
        ), source="doctor"))
    if "versions" not in data:
        try:
            data["versions"] = {str(k): str(v) for k, v in dict(backend.versions()).items()}
        except Exception as exc:
            data["versions"] = {}
            findings.append(_method_failed(backend, "versions()", exc))
    try:
        produced = list(backend.findings())
    except Exception as exc:
        findings.append(_method_failed(backend, "findings()", exc))
    else:
        for f in produced:
            if isinstance(f, Finding):
                findings.append(finding_dict(f, source=backend.name))
            else:
                findings.append(finding_dict(Finding(
                    id="backend-method-failed", severity="warn",
                    message=f"backend {backend.name!r}: findings() returned a "
                            f"{type(f).__name__}, expected hal.Finding",
                    fix=f"report this to the maintainers of the plugin that provides "
                        f"{backend.name!r}",
                ), source="doctor"))
    return {"type": "backend", "name": backend.name, "data": data, "findings": findings}


def _probe_of(record: Mapping[str, Any]) -> Probe:
    """The probe answer a backend record holds (the selection reuses it)."""
    data = record["data"]
    return Probe(bool(data["available"]), str(data["reason"]), int(data["device_count"]))


def selection_record(backends: Sequence[Backend],
                     environ: Mapping[str, str] | None = None,
                     probes: Mapping[str, Probe] | None = None) -> dict[str, Any]:
    """What ``hal.get_device()`` would pick here and why, or the error it would raise.

    ``probes``: the answers the backend records already hold, so no backend is probed twice.
    """
    from hal.errors import HalError
    from hal.selection import decide

    try:
        selection = decide(backends, environ, probes)
    except HalError as exc:
        return {"type": "selection", "data": None,
                "error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"type": "selection", "data": selection.as_dict(), "error": None}


class _Writer:
    """Writes records to the parent, one JSON object a line, flushed at once."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, default=str)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _hung(name: str, timeout: float, what: str, backend: str | None = None) -> dict[str, Any]:
    return {"type": "hung", "step": name, "backend": backend, "what": what,
            "detail": f"no answer within {timeout:g} s"}


def run_steps(emit: Callable[[Mapping[str, Any]], None], *, skip: Iterable[str] = (),
              smoke: bool = False, sections: Callable[[], Mapping[str, Any]] | None = None,
              environ: Mapping[str, str] | None = None, timeout: float = 30.0,
              serial: bool = False) -> None:
    """Every torch-touching step in order, each announced before it runs.

    Backends are described in parallel threads, each with ``timeout`` seconds; one that does
    not answer is reported as hung and left out of the selection.  ``serial`` describes them
    one at a time instead, so a crash can be pinned on one backend.  ``sections`` returns the
    torch-free report sections the parent gathered, so that plugins' ``hal_doctor_findings``
    hooks see the whole report.
    """
    from hal.doctor.isolate import call_in_thread, wait
    from hal.doctor.torchinfo import import_torch
    from hal.errors import ConfigError
    from hal.plugins import load_plugins
    from hal.selection import list_backends

    skipped = set(skip)
    emit({"type": "step", "step": "import torch"})
    torch_info = import_torch()
    emit({"type": "torch", "data": torch_info})

    emit({"type": "step", "step": "load plugins"})
    try:
        host = load_plugins()
        backends = list_backends()
    except ConfigError as exc:
        emit({"type": "plugins_error", "message": str(exc)})
        emit({"type": "done", "protocol": PROTOCOL})
        return
    backends = [b for b in backends if b.name not in skipped]
    answered: list[Backend] = []
    probes: dict[str, Probe] = {}
    if serial:
        for backend in backends:
            emit({"type": "step", "step": f"backend {backend.name}", "backend": backend.name})
            handle = wait(call_in_thread(partial(backend_record, backend)),
                          time.monotonic() + timeout)
            if handle.value is None:
                emit(_hung(f"backend {backend.name}", timeout, "probe", backend.name))
                continue
            emit(handle.value)
            answered.append(backend)
            probes[backend.name] = _probe_of(handle.value)
    else:
        emit({"type": "step", "step": "backends", "backends": [b.name for b in backends]})
        handles = [(b, call_in_thread(partial(backend_record, b))) for b in backends]
        until = time.monotonic() + timeout
        for backend, handle in handles:
            wait(handle, until)
            if handle.value is None:
                emit(_hung(f"backend {backend.name}", timeout, "probe", backend.name))
                continue
            emit(handle.value)
            answered.append(backend)
            probes[backend.name] = _probe_of(handle.value)

    emit({"type": "step", "step": "selection"})
    chosen = wait(call_in_thread(lambda: selection_record(answered, environ, probes)),
                  time.monotonic() + timeout)
    if chosen.value is None:
        emit(_hung("selection", timeout, "selection"))
        selection: dict[str, Any] = {"type": "selection", "data": None, "error": None}
    else:
        selection = chosen.value
        emit(selection)

    if smoke and selection["data"] is not None:
        from hal.doctor.smoke import smoke_test

        picked = next(b for b in answered if b.name == selection["data"]["backend"])
        emit({"type": "step", "step": "smoke", "device_backend": picked.name})
        device = selection["data"]["device"]
        ran = wait(call_in_thread(lambda: smoke_test(picked, device)),
                   time.monotonic() + max(timeout, 60.0))
        if ran.value is None:
            emit(_hung("smoke", timeout, "smoke test"))
        else:
            emit({"type": "smoke", "data": ran.value})

    emit({"type": "step", "step": "plugin findings"})
    report: dict[str, Any] = dict(sections() if sections is not None else {})
    report.update({"torch": torch_info, "selection": selection["data"]})
    hook = wait(call_in_thread(lambda: host.doctor_findings(report)), time.monotonic() + timeout)
    if hook.value is None:
        emit(_hung("plugin findings", timeout, "a plugin's hal_doctor_findings hook"))
    else:
        found = [finding_dict(f, source=plugin) for plugin, f in hook.value]
        emit({"type": "plugin_findings", "findings": found})
    emit({"type": "plugins", "data": host.plugin_list()})
    emit({"type": "done", "protocol": PROTOCOL})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the child: records go to the original stdout, stray prints to stderr."""
    parser = argparse.ArgumentParser(prog="python -m hal.doctor.child")
    parser.add_argument("--skip", action="append", default=[], help="backend to leave out")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--serial", action="store_true", help="one backend at a time")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
    args = parser.parse_args(argv)
    records = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # plugins' and torch's prints

    def sections() -> Mapping[str, Any]:
        text = sys.stdin.read()
        loaded: Mapping[str, Any] = json.loads(text) if text.strip() else {}
        return loaded

    run_steps(_Writer(records), skip=args.skip, smoke=args.smoke, sections=sections,
              timeout=args.timeout, serial=args.serial)
    records.close()
    sys.stderr.flush()
    os._exit(0)  # do not wait for a hung probe's thread at interpreter shutdown


if __name__ == "__main__":
    raise SystemExit(main())
