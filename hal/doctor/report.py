"""The doctor's report: the torch-free sections (read in the CHILD) and the assembly (in the PARENT).

Which side of the child boundary each part runs on:

- child (called by ``hal.doctor.child.run_steps``, where the plugins are loaded):
  ``local_sections`` and what it calls (``system_section``, ``environment_section``, each
  backend's ``hardware()``);
- parent (loads no plugin, imports no torch): ``collect``, which runs the child and reruns it
  without what hung or crashed it (``_supervise``), then builds the report from the child's
  typed records (``Report``, ``_assemble``); ``fallback_sections`` is what it knows alone.

The result is one JSON-able dict (schema ``hal.doctor/1``), redacted, with findings and an
exit code.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial, singledispatchmethod
from typing import Any

import hal
from hal.contract import SEVERITIES, Backend, Finding, Hardware
from hal.doctor import engines
from hal.doctor import findings as generic
from hal.doctor.child import run_steps
from hal.doctor.cluster import cluster_findings
from hal.doctor.isolate import ChildResult, child_env, run_child
from hal.doctor.records import (
    BackendDescribed,
    Hung,
    PluginFindings,
    PluginsError,
    PluginsListed,
    Record,
    RecordError,
    Sections,
    SelectionMade,
    SmokeRan,
    SourcedFinding,
    Step,
    StepFailed,
    TorchInfo,
    decode,
    encode,
    sourced,
)
from hal.doctor.redact import is_secret_name, redact_env, redact_tree, secret_values
from hal.doctor.torchinfo import AUTOLOAD_ENV
from hal.plugins import DENY_ENV

SCHEMA = "hal.doctor/1"
#: Seconds a probe step may go without progress before it is declared hung.
DEFAULT_TIMEOUT = 30.0
#: Children started at most: the first, plus retries without a hung or crashed backend.
MAX_RUNS = 5
#: Extra seconds the parent grants a silent child beyond the per-step timeout.
CHILD_MARGIN = 10.0
GENERIC_PREFIXES = ("HAL_", "TORCH_", "PYTORCH_")
GENERIC_NAMES = ("LD_LIBRARY_PATH", "LD_PRELOAD", "OMP_NUM_THREADS", "LOCAL_RANK", "RANK",
                 "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_ISOLATION_IDS = ("probe-", "torch-import-hung", "torch-import-crashed", "doctor-step-")
#: Severities worst first, from the contract's one list: the findings' order and the summary's keys.
WORST_FIRST = tuple(reversed(SEVERITIES))


@dataclass(frozen=True)
class Options:
    """How to run the doctor: smoke test or not, step timeout, isolated child or in-process."""

    smoke: bool = False
    timeout: float = DEFAULT_TIMEOUT
    isolate: bool = True


# -- torch-free sections ------------------------------------------------------


def env_prefixes(backends: Sequence[Backend]) -> list[str]:
    """Variable-name prefixes worth reporting, derived from the backends (none hard-coded).

    A backend named ``x`` with device type ``y``, collectives ``z`` and visible-devices variable
    ``W_VISIBLE_DEVICES`` contributes ``X_``, ``Y_``, ``Z_`` and ``W_``.
    """
    prefixes = set(GENERIC_PREFIXES)
    for b in backends:
        for word in (b.name, b.device_type, b.dist_backend):
            if word:
                prefixes.add(word.upper().replace("-", "_").replace(".", "_") + "_")
        for var in b.visible_devices_env:
            head = var.split("_", 1)[0]
            if head:
                prefixes.add(head.upper() + "_")
    return sorted(prefixes)


def environment_section(backends: Sequence[Backend],
                        environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allowlisted, redacted environment: visible-devices variables, hal/torch/runtime
    prefixes, loader path and launcher variables.

    Names and prefixes that come from plugins never admit a secret-shaped variable name (a
    plugin called ``db`` does not make ``DB_PW`` printable); hal's own ones show it masked.
    """
    env = os.environ if environ is None else environ
    plugin_names: set[str] = set()
    for b in backends:
        plugin_names.update(b.visible_devices_env)
    plugin_prefixes = tuple(p for p in env_prefixes(backends) if p not in GENERIC_PREFIXES)
    picked = {}
    for k, v in env.items():
        ours = k in GENERIC_NAMES or k.startswith(GENERIC_PREFIXES)
        theirs = (k in plugin_names or k.startswith(plugin_prefixes)) and not is_secret_name(k)
        if ours or theirs:
            picked[k] = v
    return redact_env(dict(sorted(picked.items())))


def shm_section(path: str = "/dev/shm") -> dict[str, Any] | None:
    """Size and free space of the shared-memory filesystem; None when it does not exist."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return {"path": path, "total": st.f_blocks * st.f_frsize, "free": st.f_bavail * st.f_frsize}


def system_section(cpu: Backend | None) -> dict[str, Any]:
    """OS, Python, hal, CPU and RAM (capped by the cgroup limit) from the CPU backend."""
    out: dict[str, Any] = {
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "prefix": sys.prefix,
            "virtualenv": sys.prefix != sys.base_prefix,
        },
        "hal": {"version": hal.__version__, "path": os.path.dirname(hal.__file__ or "")},
        "cpu": None,
        "memory": None,
        "shm": shm_section(),
    }
    if cpu is not None:
        from hal.errors import PluginError
        from hal.validate import fetch_devices, fetch_memory

        devices, memory = fetch_devices(cpu), fetch_memory(cpu, 0)  # the one checked fetch path
        if not devices.value or memory.value is None:
            why = (memory.describe("memory(0)") if devices.value else
                   devices.describe("devices()") if devices.state != "ok" else
                   "devices() returned no device")
            raise PluginError(f"backend {cpu.name!r}: {why}", plugin=cpu.name)
        info, mem = devices.value[0], memory.value
        extras = dict(info.extras)
        out["cpu"] = {
            "model": info.name,
            "vendor": extras.get("vendor"),
            "architecture": info.capability,
            "logical_cores": extras.get("logical_cores"),
            "physical_cores": extras.get("physical_cores"),
            "usable_cores": extras.get("usable_cores"),
            "flags": extras.get("flags", []),
        }
        out["memory"] = {"total": mem.total, "available": mem.free,
                         "cgroup_limit": extras.get("cgroup_limit"), "source": mem.source}
    return out


def _hardware(backend: Backend) -> list[dict[str, Any]]:
    from hal.validate import check_text

    out = []
    for h in backend.hardware():
        if not isinstance(h, Hardware):
            raise ValueError(f"hardware() returned a {type(h).__name__}, expected hal.Hardware")
        out.append({"backend": backend.name, "vendor": check_text(h.vendor, "Hardware.vendor"),
                    "kind": check_text(h.kind, "Hardware.kind"),
                    "detail": check_text(h.detail, "Hardware.detail"),
                    "path": check_text(h.path, "Hardware.path")})
    return out


def fallback_sections() -> dict[str, Any]:
    """What the parent knows without loading any plugin: used when the child never reports."""
    return {"system": system_section(None), "hardware": [], "environment": environment_section([]),
            "plugins": []}


def local_sections(backends: Sequence[Backend], timeout: float
                   ) -> tuple[dict[str, Any], list[SourcedFinding], list[Backend]]:
    """The torch-free sections (system, hardware, environment), each plugin call at the plugin
    boundary with a deadline.  Runs where the plugins are loaded: the doctor's child.

    Returns the sections, the findings made while collecting them, and the backends.
    """
    from hal.validate import PendingCall

    found: list[SourcedFinding] = []
    until = time.monotonic() + timeout
    cpu = next((b for b in backends if b.name == "cpu"), None)
    system = PendingCall(lambda: system_section(cpu), "doctor: system facts", plugin=False)
    hardware = [(b, PendingCall(partial(_hardware, b), f"backend {b.name!r}: hardware()"))
                for b in backends]
    environment = environment_section(backends)
    sections: dict[str, Any] = {"system": None, "hardware": [], "environment": environment}
    done = system.wait(until)
    if done.state == "ok" and done.value is not None:
        sections["system"] = done.value
    else:
        sections["system"] = system_section(None)
        found.append(sourced(Finding("system-info-failed", "warn",
                                     done.describe("reading CPU and memory facts")), "doctor"))
    for backend, handle in hardware:
        got = handle.wait(until)
        if got.state == "ok" and isinstance(got.value, list):
            sections["hardware"].extend(got.value)
            continue
        found.append(sourced(Finding(
            "hardware-scan-failed", "warn",
            f"backend {backend.name!r}: {got.describe('hardware()')}",
            f"report this to the maintainers of the plugin that provides {backend.name!r}",
        ), "doctor"))
    return sections, found, list(backends)


# -- the parent: run the child, rerun it without what broke it, assemble the report --


class _Collector:
    """Runs the child (or the steps in-process, through the same encoding) for the parent."""

    def __init__(self, options: Options) -> None:
        self.options = options

    def child(self, skip: Sequence[str], extra_env: Mapping[str, str] | None = None,
              smoke: bool | None = None, serial: bool = False) -> ChildResult:
        argv = [f"--skip={s}" for s in skip] + [f"--timeout={self.options.timeout:g}"]
        if self.options.smoke if smoke is None else smoke:
            argv.append("--smoke")
        if serial:
            argv.append("--serial")
        env = dict(extra_env or {})
        # The child times its own steps out; this is the backstop for a child that is stuck
        # as a whole (a hang holding the interpreter lock, or in ``import torch``).
        return run_child(argv, timeout=self.options.timeout + CHILD_MARGIN, env=child_env(env))

    def in_process(self) -> ChildResult:
        records: list[Record] = []
        rejected: list[str] = []
        start = time.perf_counter()

        def take(record: Record) -> None:
            # Through its JSON line, so in-process reads exactly what a child would send.
            try:
                records.append(decode(encode(record)))
            except RecordError as exc:
                rejected.append(str(exc))

        run_steps(take, smoke=self.options.smoke, timeout=self.options.timeout)
        return ChildResult(tuple(records), "done", seconds=time.perf_counter() - start,
                           rejected=tuple(rejected))


def _doctor(finding: Finding) -> SourcedFinding:
    return sourced(finding, "doctor")


@dataclass
class Report:
    """The report being assembled in the parent from the child's records (schema hal.doctor/1)."""

    system: dict[str, Any] | None
    hardware: list[dict[str, Any]]
    environment: dict[str, str]
    plugins: list[dict[str, Any]]
    torch: dict[str, Any] | None = None
    backends: list[dict[str, Any]] = field(default_factory=list)
    selection: dict[str, Any] | None = None
    selection_error: dict[str, Any] | None = None
    smoke: dict[str, Any] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    found: list[SourcedFinding] = field(default_factory=list)

    @classmethod
    def start(cls) -> Report:
        """What the parent knows before any child reports."""
        return cls(**fallback_sections())

    def provider(self, backend: str | None) -> str | None:
        """The plugin that provides ``backend``, as the child listed them."""
        if not backend:
            return None
        return next((p["name"] for p in self.plugins if backend in p.get("backends", [])), None)

    def fold(self, result: ChildResult) -> None:
        """Take a child's records in order (backends by name, the others replace their part)."""
        for listed in result.of(PluginsListed):  # first: findings below name the providing plugin
            self.take(listed)
        for record in result.records:
            self.take(record)
        self.found.extend(_doctor(Finding(
            "doctor-record-invalid", "warn", f"the doctor's child wrote a line that is not a valid "
            f"record, left out: {why}", "report it with hal doctor --markdown")) for why in result.rejected)

    @singledispatchmethod
    def take(self, record: Record) -> None:
        """One record's part of the report; steps and ``done`` add nothing."""

    @take.register
    def _(self, record: Sections) -> None:
        self.system = record.data["system"]
        self.hardware = record.data["hardware"]
        self.environment = record.data["environment"]
        self.found.extend(record.findings)

    @take.register
    def _(self, record: TorchInfo) -> None:
        self.torch = record.data

    @take.register
    def _(self, record: BackendDescribed) -> None:
        self.backends = [b for b in self.backends if b["name"] != record.name] + [record.data]
        self.found.extend(record.findings)

    @take.register
    def _(self, record: SelectionMade) -> None:
        self.selection, self.selection_error = record.data, record.error

    @take.register
    def _(self, record: SmokeRan) -> None:
        self.smoke = record.data

    @take.register
    def _(self, record: PluginFindings) -> None:
        self.found.extend(record.findings)

    @take.register
    def _(self, record: PluginsListed) -> None:
        self.plugins = list(record.data)

    @take.register
    def _(self, record: Hung) -> None:
        self.found.append(_doctor(generic.isolation_finding(
            "hung", record, record.detail, self.provider(record.backend))))

    @take.register
    def _(self, record: StepFailed) -> None:
        self.found.append(_doctor(generic.isolation_finding(
            record.outcome, record, record.detail, self.provider(record.backend))))

    @take.register
    def _(self, record: PluginsError) -> None:
        self.found.append(_doctor(Finding("plugins-config", "error", record.message,
                                          "fix or unset the variable named above")))

    def as_dict(self) -> dict[str, Any]:
        """The report's sections in schema order (findings and summary are added by ``_assemble``)."""
        return {"schema": SCHEMA, "system": self.system, "hardware": self.hardware,
                "environment": self.environment, "plugins": self.plugins, "torch": self.torch,
                "backends": self.backends, "selection": self.selection,
                "selection_error": self.selection_error, "smoke": self.smoke, "runs": self.runs}


def _unfinished(result: ChildResult) -> list[str]:
    """Backends the child had started but not answered for when it hung or crashed."""
    started = result.step.started() if result.step else []
    answered: set[str | None] = {r.name for r in result.of(BackendDescribed)}
    answered |= {r.backend for r in result.of(Hung)} | {r.backend for r in result.of(StepFailed)}
    return [b for b in started if b not in answered]


def _run_entry(result: ChildResult, skip: Sequence[str]) -> dict[str, Any]:
    return {"outcome": result.outcome, "seconds": round(result.seconds, 3),
            "step": result.step.step if result.step else None, "detail": result.detail,
            "returncode": result.returncode, "skipped": list(skip)}


def _smoke_findings(smoke: Mapping[str, Any] | None) -> list[Finding]:
    if not smoke:
        return []
    out = []
    for step in smoke["steps"]:
        if step["ok"]:
            out.append(Finding(f"smoke-{step['name'].replace(' ', '-')}", "ok",
                               f"{step['name']} on {smoke['device']}: {step['detail']} "
                               f"in {step['seconds'] * 1000:.1f} ms"))
        else:
            out.append(Finding(f"smoke-{step['name'].replace(' ', '-')}", "error",
                               f"{step['name']} on {smoke['device']} failed: {step['error']}",
                               "see the backend's findings above; rerun with HAL_DEVICE set to "
                               "another backend to compare"))
    return out


def _mark_plugins(report: Report, broken: Mapping[str, str]) -> None:
    """Plugins that killed or hung a child are failed in the report, whatever a rerun saw."""
    plugins = [p for p in report.plugins if p["name"] not in broken]
    for name, why in broken.items():
        old = next((p for p in report.plugins if p["name"] == name), None)
        plugins.append({"name": name, "distribution": (old or {}).get("distribution"),
                        "version": (old or {}).get("version"), "status": "failed", "error": why,
                        "hooks": [], "backends": [], "notes": (old or {}).get("notes", [])})
    report.plugins = sorted(plugins, key=lambda p: str(p["name"]))


@dataclass
class _Supervisor:
    """Runs the child and reruns it without the plugin or backend that hung, crashed or ended it
    (at most ``MAX_RUNS`` children); records whom it blamed."""

    collector: _Collector
    report: Report
    skip: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    broken_plugins: dict[str, str] = field(default_factory=dict)
    crashed_backends: dict[str, str] = field(default_factory=dict)
    retry_torch: dict[str, Any] | None = None

    def deny_env(self) -> dict[str, str]:
        """``HAL_DISABLE_PLUGINS`` for a rerun: the user's own list plus the plugins blamed."""
        if not self.denied:
            return {}
        old = os.environ.get(DENY_ENV, "").strip()
        return {DENY_ENV: ",".join([old, *self.denied] if old else self.denied)}

    def run(self, first: ChildResult) -> None:
        """Fold ``first`` and every rerun into the report; then the autoload check if it applies."""
        result, started = first, 1
        while True:
            self.report.fold(result)
            self.report.runs.append(dict(_run_entry(result, self.skip),
                                         **({"env": self.deny_env()} if self.denied else {})))
            if result.outcome == "done":
                break
            rerun = self._blame(result)
            if started >= MAX_RUNS or rerun is None:
                break
            result, started = rerun(), started + 1
        self._without_autoload()

    def _blame(self, result: ChildResult) -> Callable[[], ChildResult] | None:
        """Say what ended ``result`` (a finding) and return the rerun without it, or None."""
        culprits = _unfinished(result)
        step = result.step or Step("start-up")
        happened = generic.OUTCOME_WORDS.get(result.outcome, result.outcome)
        if step.plugin:
            self.broken_plugins[step.plugin] = (f"{happened} the doctor's probe process during "
                                                f"{step.step!r} ({result.detail})")
            self.report.found.append(_doctor(generic.plugin_process_finding(
                step.plugin, result.outcome, step.step, result.detail, result.stderr_tail)))
            return partial(self._rerun, deny=step.plugin)
        if len(culprits) == 1:
            (backend,) = culprits
            self.crashed_backends[backend] = (f"backend {backend!r} {happened} the doctor's probe "
                                              f"process ({result.detail})")
            self.report.found.append(_doctor(generic.isolation_finding(
                result.outcome, Step(f"backend {backend}", backend=backend), result.detail,
                self.report.provider(backend), result.stderr_tail)))
            return partial(self._rerun, skip=backend)
        if culprits:  # several were running at once: one at a time says which
            return partial(self._rerun, serial=True)
        self.report.found.append(_doctor(generic.isolation_finding(
            result.outcome, result.step, result.detail, None, result.stderr_tail)))
        if step.step == "smoke":
            return partial(self._rerun, smoke=False)
        return None

    def _rerun(self, deny: str | None = None, skip: str | None = None, serial: bool = False,
               smoke: bool | None = None) -> ChildResult:
        """One more child: without the plugin ``deny`` or the backend ``skip`` from now on."""
        self.denied += [deny] if deny else []
        self.skip += [skip] if skip else []
        return self.collector.child(self.skip, self.deny_env(), smoke=smoke, serial=serial)

    def _without_autoload(self) -> None:
        """``import torch`` failed with device extensions autoloaded: confirm the diagnosis and
        still describe the backends, in one more run with autoload off."""
        report, torch = self.report, self.report.torch
        if not (self.collector.options.isolate and torch and torch.get("error")
                and torch["autoload"]["enabled"] and torch["autoload"]["extensions"]):
            return
        again = self.collector.child(self.skip, {AUTOLOAD_ENV: "0", **self.deny_env()}, smoke=False)
        self.retry_torch = next((r.data for r in again.of(TorchInfo)), None)
        report.found = [f for f in report.found if f.finding.id.startswith(_ISOLATION_IDS)]
        report.fold(again)
        report.torch = dict(torch, autoload_disabled=self.retry_torch)
        report.runs.append(dict(_run_entry(again, self.skip), env={AUTOLOAD_ENV: "0"}))

    def blamed_plugins(self) -> dict[str, str]:
        """Plugins to mark failed: those blamed directly, and the providers of crashed backends."""
        broken = dict(self.broken_plugins)
        for backend, why in self.crashed_backends.items():
            owner = self.report.provider(backend)
            if owner and owner not in broken:
                broken[owner] = why
        return broken


def _assemble(supervisor: _Supervisor, seconds: float) -> dict[str, Any]:
    """The report as JSON-able data: the child's parts, the core findings, the summary."""
    report = supervisor.report
    # Reruns set these for the child; the report shows the user's own environment.
    environment = dict(report.environment or {})
    for key in (DENY_ENV, AUTOLOAD_ENV):
        if key in os.environ:
            environment[key] = os.environ[key]
        else:
            environment.pop(key, None)
    report.environment = environment
    broken = supervisor.blamed_plugins()
    if broken:
        _mark_plugins(report, broken)

    retry_torch = supervisor.retry_torch
    core: list[Finding] = []
    if report.torch is not None:
        core += generic.torch_findings(report.torch, retry_torch, sys.executable)
    core += generic.shm_findings((report.system or {}).get("shm"))
    core += generic.plugin_findings([p for p in report.plugins if p["name"] not in broken])
    core += generic.selection_findings(report.selection, report.selection_error)
    core += generic.precision_findings(os.environ, report.selection, report.backends)
    core += engines.findings()  # serving engines whose pinned torch stack is not installed
    core += _smoke_findings(report.smoke)
    out = report.as_dict()
    core += cluster_findings(os.environ, out)  # hal/doctor/cluster.py
    if retry_torch is not None:  # what was probed is what works once autoloading is off
        core = [replace(f, severity="info", message=f"with {AUTOLOAD_ENV}=0, {f.message}")
                if f.id == "selection" else f for f in core]
    unique: list[SourcedFinding] = []
    for f in [_doctor(f) for f in core] + report.found:
        if f not in unique:
            unique.append(f)
    unique.sort(key=lambda f: WORST_FIRST.index(f.severity))
    out["findings"] = [f.wire() for f in unique]
    out["summary"] = {s: sum(f.severity == s for f in unique) for s in WORST_FIRST}
    out["exit_code"] = 1 if out["summary"]["error"] else 0
    out["seconds"] = round(seconds, 3)
    return out


def collect(options: Options | None = None) -> dict[str, Any]:
    """Run every check and return the redacted report (schema ``hal.doctor/1``).

    With ``isolate`` (the default) this process loads no plugin and imports no torch: all of
    that runs in the isolated child, rerun without a plugin or backend that kills or hangs it.
    """
    opts = options or Options()
    start = time.perf_counter()
    collector = _Collector(opts)
    supervisor = _Supervisor(collector, Report.start())
    supervisor.run(collector.child(()) if opts.isolate else collector.in_process())
    report = _assemble(supervisor, time.perf_counter() - start)
    redacted: dict[str, Any] = redact_tree(report, secrets=secret_values(os.environ))
    return redacted
