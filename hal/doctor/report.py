"""Assemble the doctor's report: torch-free sections here, torch-touching ones from the child.

The child process (``hal.doctor.child``) is started first, so its ``import torch`` overlaps
everything this process does meanwhile: plugins, hardware evidence, system facts, environment.
The result is one JSON-able dict (schema ``hal.doctor/1``), redacted, with findings and an
exit code.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import hal
from hal.contract import Backend, Finding, Hardware
from hal.doctor import engines
from hal.doctor import findings as generic
from hal.doctor.child import finding_dict, run_steps
from hal.doctor.cluster import cluster_findings
from hal.doctor.isolate import ChildResult, child_env, run_child
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
SEVERITY_ORDER = {"error": 0, "warn": 1, "info": 2, "ok": 3}


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
        info = cpu.devices()[0]
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
        mem = cpu.memory(0)
        out["memory"] = {"total": mem.total, "available": mem.free,
                         "cgroup_limit": extras.get("cgroup_limit"), "source": mem.source}
    return out


def _hardware(backend: Backend) -> list[dict[str, Any]]:
    from hal.validate import _text

    out = []
    for h in backend.hardware():
        if not isinstance(h, Hardware):
            raise ValueError(f"hardware() returned a {type(h).__name__}, expected hal.Hardware")
        out.append({"backend": backend.name, "vendor": _text(h.vendor, "Hardware.vendor"),
                    "kind": _text(h.kind, "Hardware.kind"), "detail": _text(h.detail, "Hardware.detail"),
                    "path": _text(h.path, "Hardware.path")})
    return out


def fallback_sections() -> dict[str, Any]:
    """What the parent knows without loading any plugin: used when the child never reports."""
    return {"system": system_section(None), "hardware": [], "environment": environment_section([]),
            "plugins": []}


def local_sections(backends: Sequence[Backend], timeout: float
                   ) -> tuple[dict[str, Any], list[dict[str, Any]], list[Backend]]:
    """The torch-free sections (system, hardware, environment), each plugin call at the plugin
    boundary with a deadline.  Runs where the plugins are loaded: the doctor's child.

    Returns the sections, the findings made while collecting them, and the backends.
    """
    from hal.validate import PendingCall

    found: list[dict[str, Any]] = []
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
        found.append(finding_dict(Finding("system-info-failed", "warn",
                                          done.describe("reading CPU and memory facts")), "doctor"))
    for backend, handle in hardware:
        got = handle.wait(until)
        if got.state == "ok" and isinstance(got.value, list):
            sections["hardware"].extend(got.value)
            continue
        found.append(finding_dict(Finding(
            "hardware-scan-failed", "warn",
            f"backend {backend.name!r}: {got.describe('hardware()')}",
            f"report this to the maintainers of the plugin that provides {backend.name!r}",
        ), "doctor"))
    return sections, found, list(backends)


# -- the torch-touching half -----------------------------------------------------


def _provider(plugins: Sequence[Mapping[str, Any]], backend: str) -> str | None:
    return next((p["name"] for p in plugins if backend in p.get("backends", [])), None)


class _Collector:
    """Runs the child (or the steps in-process) and folds its records into the report."""

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
        records: list[Mapping[str, Any]] = []
        start = time.perf_counter()
        run_steps(records.append, smoke=self.options.smoke, timeout=self.options.timeout)
        return ChildResult(tuple(records), "done", seconds=time.perf_counter() - start)


def _fold(result: ChildResult, report: dict[str, Any], found: list[dict[str, Any]]) -> None:
    """Copy a child's records into the report: backends by name, the others by type."""
    for r in result.of_type("plugins"):  # first: findings below name the providing plugin
        report["plugins"] = r["data"]
    for r in result.records:
        kind = r.get("type")
        if kind == "sections":
            report.update(r["data"])
            found.extend(r["findings"])
        elif kind == "torch":
            report["torch"] = r["data"]
        elif kind == "backend":
            report["backends"] = [b for b in report["backends"] if b["name"] != r["name"]]
            report["backends"].append(r["data"])
            found.extend(r["findings"])
        elif kind == "selection":
            report["selection"] = r["data"]
            report["selection_error"] = r["error"]
        elif kind == "smoke":
            report["smoke"] = r["data"]
        elif kind == "plugin_findings":
            found.extend(r["findings"])
        elif kind == "plugins":
            report["plugins"] = r["data"]
        elif kind in ("hung", "step_failed"):
            outcome = "hung" if kind == "hung" else str(r.get("outcome"))
            found.append(finding_dict(generic.isolation_finding(
                outcome, r, str(r.get("detail")),
                _provider(report["plugins"], r["backend"]) if r.get("backend") else None,
            ), "doctor"))
        elif kind == "plugins_error":
            found.append(finding_dict(Finding("plugins-config", "error", str(r["message"]),
                                              "fix or unset the variable named above"),
                                      "doctor"))


def _unfinished(result: ChildResult) -> list[str]:
    """Backends the child had started but not answered for when it hung or crashed."""
    step = result.step or {}
    started = list(step.get("backends", [])) or ([step["backend"]] if step.get("backend") else [])
    answered = {r.get("name") for r in result.of_type("backend")}
    answered |= {r.get("backend") for r in result.of_type("hung")}
    answered |= {r.get("backend") for r in result.of_type("step_failed")}
    return [b for b in started if b not in answered]


def _run_entry(result: ChildResult, skip: Sequence[str]) -> dict[str, Any]:
    return {"outcome": result.outcome, "seconds": round(result.seconds, 3),
            "step": (result.step or {}).get("step"), "detail": result.detail,
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


def _mark_plugins(report: dict[str, Any], broken: Mapping[str, str]) -> None:
    """Plugins that killed or hung a child are failed in the report, whatever a rerun saw."""
    plugins = [p for p in report["plugins"] if p["name"] not in broken]
    for name, why in broken.items():
        old = next((p for p in report["plugins"] if p["name"] == name), None)
        plugins.append({"name": name, "distribution": (old or {}).get("distribution"),
                        "version": (old or {}).get("version"), "status": "failed", "error": why,
                        "hooks": [], "backends": [], "notes": (old or {}).get("notes", [])})
    report["plugins"] = sorted(plugins, key=lambda p: str(p["name"]))


def collect(options: Options | None = None) -> dict[str, Any]:
    """Run every check and return the redacted report (schema ``hal.doctor/1``).

    With ``isolate`` (the default) this process loads no plugin and imports no torch: all of
    that runs in the isolated child, rerun without a plugin or backend that kills or hangs it.
    """
    opts = options or Options()
    start = time.perf_counter()
    collector = _Collector(opts)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        **fallback_sections(),
        "torch": None,
        "backends": [],
        "selection": None,
        "selection_error": None,
        "smoke": None,
        "runs": [],
    }
    found: list[dict[str, Any]] = []
    results = [collector.child(()) if opts.isolate else collector.in_process()]
    skip: list[str] = []
    denied: list[str] = []
    broken_plugins: dict[str, str] = {}
    crashed_backends: dict[str, str] = {}
    retry_torch: Mapping[str, Any] | None = None

    def deny_env() -> dict[str, str]:
        if not denied:
            return {}
        old = os.environ.get(DENY_ENV, "").strip()
        return {DENY_ENV: ",".join([old, *denied] if old else denied)}

    while True:
        result = results[-1]
        _fold(result, report, found)
        report["runs"].append(dict(_run_entry(result, skip), **({"env": deny_env()} if denied else {})))
        if result.outcome == "done":
            break
        culprits = _unfinished(result)
        step = result.step or {}
        step_name = step.get("step")
        plugin = step.get("plugin")
        if plugin:
            why = f"{generic.OUTCOME_WORDS.get(result.outcome, result.outcome)} the doctor's " \
                  f"probe process during {step_name!r} ({result.detail})"
            broken_plugins[str(plugin)] = why
            found.append(finding_dict(generic.plugin_process_finding(
                str(plugin), result.outcome, str(step_name), result.detail, result.stderr_tail),
                "doctor"))
        elif len(culprits) == 1:
            crashed_backends[culprits[0]] = (f"backend {culprits[0]!r} "
                                             f"{generic.OUTCOME_WORDS.get(result.outcome, result.outcome)} "
                                             f"the doctor's probe process ({result.detail})")
            found.append(finding_dict(generic.isolation_finding(
                result.outcome, {"step": f"backend {culprits[0]}", "backend": culprits[0]},
                result.detail, _provider(report["plugins"], culprits[0]),
                result.stderr_tail), "doctor"))
        elif not culprits:
            found.append(finding_dict(generic.isolation_finding(
                result.outcome, result.step, result.detail, None, result.stderr_tail),
                "doctor"))
        if len(results) >= MAX_RUNS:
            break
        if plugin:
            denied.append(str(plugin))
            results.append(collector.child(skip, deny_env()))
        elif len(culprits) == 1:
            skip.append(culprits[0])
            results.append(collector.child(skip, deny_env()))
        elif culprits:  # several were running at once: one at a time says which
            results.append(collector.child(skip, deny_env(), serial=True))
        elif step_name == "smoke":
            results.append(collector.child(skip, deny_env(), smoke=False))
        else:
            break
    torch = report["torch"]
    if (opts.isolate and torch and torch.get("error") and torch["autoload"]["enabled"]
            and torch["autoload"]["extensions"]):
        # Confirm the diagnosis and still describe the backends: the same run, autoload off.
        again = collector.child(skip, {AUTOLOAD_ENV: "0", **deny_env()}, smoke=False)
        retry_torch = next((r["data"] for r in again.of_type("torch")), None)
        kept_torch = report["torch"]
        found = [f for f in found if f["id"].startswith(_ISOLATION_IDS)]
        _fold(again, report, found)
        report["torch"] = dict(kept_torch, autoload_disabled=retry_torch)
        report["runs"].append(dict(_run_entry(again, skip), env={AUTOLOAD_ENV: "0"}))
    # Reruns set these for the child; the report shows the user's own environment.
    environment = dict(report.get("environment") or {})
    for key in (DENY_ENV, AUTOLOAD_ENV):
        if key in os.environ:
            environment[key] = os.environ[key]
        else:
            environment.pop(key, None)
    report["environment"] = environment
    for backend, why in crashed_backends.items():
        owner = _provider(report["plugins"], backend)
        if owner and owner not in broken_plugins:
            broken_plugins[owner] = why
    if broken_plugins:
        _mark_plugins(report, broken_plugins)

    core: list[Finding] = []
    if report["torch"] is not None:
        core += generic.torch_findings(report["torch"], retry_torch, sys.executable)
    core += generic.shm_findings((report.get("system") or {}).get("shm"))
    core += generic.plugin_findings([p for p in report["plugins"] if p["name"] not in broken_plugins])
    core += generic.selection_findings(report["selection"], report["selection_error"])
    core += generic.precision_findings(os.environ, report["selection"], report["backends"])
    core += engines.findings()  # serving engines whose pinned torch stack is not installed
    core += _smoke_findings(report["smoke"])
    core += cluster_findings(os.environ, report)  # hal/doctor/cluster.py
    if retry_torch is not None:  # what was probed is what works once autoloading is off
        core = [replace(f, severity="info", message=f"with {AUTOLOAD_ENV}=0, {f.message}")
                if f.id == "selection" else f for f in core]
    found = [finding_dict(f, "doctor") for f in core] + found
    unique: list[dict[str, Any]] = []
    for f in found:
        if f not in unique:
            unique.append(f)
    unique.sort(key=lambda f: SEVERITY_ORDER.get(f["severity"], 9))
    report["findings"] = unique
    report["summary"] = {s: sum(f["severity"] == s for f in unique) for s in SEVERITY_ORDER}
    report["exit_code"] = 1 if report["summary"]["error"] else 0
    report["seconds"] = round(time.perf_counter() - start, 3)
    redacted: dict[str, Any] = redact_tree(report, secrets=secret_values(os.environ))
    return redacted
