"""The generic, vendor-free doctor findings, computed in the PARENT from the report's JSON data alone.

Vendor knowledge comes from each backend's own ``findings()``; these checks cover what every
machine shares: torch itself, /dev/shm, plugins, the selection and the requested precision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hal.contract import Finding
from hal.doctor.torchinfo import AUTOLOAD_ENV, AUTOLOAD_GROUP
from hal.units import format_bytes

#: Below this, /dev/shm is too small for DataLoader workers and shared-memory collectives.
SHM_MIN_BYTES = 1 << 30
_EXT_RE = re.compile(r"backend extension: ([^\s.]+)")
_LIB_RE = re.compile(r"\b(lib[\w+\-]+\.so(?:\.[0-9]+)*)")


def _first(pattern: re.Pattern[str], texts: Sequence[str]) -> str | None:
    for text in texts:
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


def torch_findings(torch: Mapping[str, Any], retry: Mapping[str, Any] | None = None,
                   executable: str = "") -> list[Finding]:
    """torch missing, ``import torch`` failing (and why, and the fix), or torch fine.

    ``retry`` is the torch section of a second run with autoloading off, when one was made.
    """
    if not torch.get("installed"):
        return [Finding(
            "torch-missing", "error",
            f"torch is not installed in this Python ({executable or 'the current interpreter'})",
            "pip install torch, choosing the build for the hardware listed in this report "
            "(https://pytorch.org/get-started/locally/)",
        )]
    error = torch.get("error")
    if not error:
        return [Finding("torch-ok", "ok",
                        f"torch {torch.get('version')} imports ({torch.get('build')} build)")]
    chain = [f"{c['type']}: {c['message']}" for c in error.get("chain", [])]
    texts = [*chain, error.get("traceback", "")]
    root = chain[-1] if chain else f"{error['type']}: {error['message']}"
    library = _first(_LIB_RE, texts)
    extensions = list(torch.get("autoload", {}).get("extensions", []))
    name = _first(_EXT_RE, texts)
    culprit = next((e for e in extensions if e["name"] == name), None)
    if culprit is None:
        tb = error.get("traceback", "")
        culprit = next((e for e in extensions
                        if e["value"].split(":")[0].split(".")[0] in tb), None)
    confirmed = ""
    if retry is not None and retry.get("imports"):
        confirmed = (f" (checked: with {AUTOLOAD_ENV}=0, torch {retry.get('version')} "
                     "imports)")
    elif retry is not None:
        confirmed = f" (checked: torch fails even with {AUTOLOAD_ENV}=0)"
    if culprit is not None or name is not None:
        ext = culprit["name"] if culprit else name
        dist = culprit.get("distribution") if culprit else None
        origin = (f" (entry point {ext} = {culprit['value']}, from {dist} "
                  f"{culprit.get('version')})" if culprit else "")
        why = (f"it needs the shared library {library}, which the loader cannot find: "
               "its runtime is not installed or its environment is not set up"
               if library else f"it raised {root}")
        fixes = [f"export {AUTOLOAD_ENV}=0 to import torch without it{confirmed}"]
        if library:
            fixes.append(f"to use that device, install the runtime that provides {library} "
                         "and put its lib folder on LD_LIBRARY_PATH (or source the runtime's "
                         "environment script)")
        if dist:
            fixes.append(f"if you do not need it: pip uninstall {dist}")
        return [Finding(
            "torch-import-failed", "error",
            f"import torch fails: torch autoloads the device extension {ext!r}{origin} "
            f"through the '{AUTOLOAD_GROUP}' entry points, and {why}. Cause: {root}",
            "; ".join(fixes),
        )]
    if library:
        fix = (f"reinstall torch so it matches its libraries "
               f"(pip install --force-reinstall torch=={torch.get('distribution_version')}), "
               f"or put the folder holding {library} on LD_LIBRARY_PATH")
    elif "undefined symbol" in " ".join(texts):
        fix = ("a compiled package does not match this torch: reinstall torch and the packages "
               "built against it with matching versions")
    else:
        fix = (f"pip install --force-reinstall torch=={torch.get('distribution_version')}; "
               "run `python -c 'import torch'` to see the full traceback")
    return [Finding("torch-import-failed", "error", f"import torch fails: {root}", fix)]


def shm_findings(shm: Mapping[str, Any] | None) -> list[Finding]:
    """/dev/shm missing or smaller than SHM_MIN_BYTES (Docker's default is 64 MiB)."""
    fix = ("give the container more shared memory: docker run --shm-size=8g (or --ipc=host); "
           "on Kubernetes mount an emptyDir with medium: Memory at /dev/shm")
    if not shm or shm.get("total") is None:
        return [Finding("shm-missing", "warn",
                        "/dev/shm is missing: DataLoader workers and shared-memory "
                        "collectives will fail", fix)]
    total = int(shm["total"])
    if total < SHM_MIN_BYTES:
        return [Finding(
            "shm-small", "warn",
            f"/dev/shm is {format_bytes(total)} ({format_bytes(shm.get('free'))} free), below "
            f"{format_bytes(SHM_MIN_BYTES)}: DataLoader workers fail with 'bus error' and "
            "collectives fall back or crash", fix)]
    return [Finding("shm-ok", "ok", f"/dev/shm is {format_bytes(total)}")]


def plugin_findings(plugins: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Plugins that failed to load or misbehaved, and allow-listed ones that are not installed."""
    out = []
    for p in plugins:
        dist = f" ({p['distribution']} {p['version']})" if p.get("distribution") else ""
        if p.get("status") == "failed" and "@" in str(p["name"]):  # refused before import
            out.append(Finding(
                "plugin-failed", "error", f"plugin {p['name']!r}{dist} refused: {p.get('error')}",
                f"uninstall it (pip uninstall {p.get('distribution')}) or ask its maintainers to "
                "rename its entry point; hal's own plugin of that name is used meanwhile",
            ))
        elif p.get("status") == "failed":
            out.append(Finding(
                "plugin-failed", "error",
                f"plugin {p['name']!r}{dist} failed: {p.get('error')}",
                f"reinstall or upgrade it (pip install -U {p.get('distribution') or p['name']}), "
                f"or skip it with HAL_DISABLE_PLUGINS={p['name']}",
            ))
        if p.get("notes"):
            out.append(Finding(
                "plugin-changed-environment", "warn",
                f"plugin {p['name']!r}{dist}: {'; '.join(p['notes'])}",
                "a plugin must not change the environment when imported: report it to its "
                f"maintainers, or skip it with HAL_DISABLE_PLUGINS={p['name']}"))
        if p.get("status") == "missing":
            out.append(Finding(
                "plugin-missing", "warn", f"plugin {p['name']!r}: {p.get('error')}",
                f"install the plugin or remove {p['name']!r} from HAL_PLUGINS"))
    return out


def selection_findings(selection: Mapping[str, Any] | None,
                       error: Mapping[str, Any] | None) -> list[Finding]:
    """The selection: what ``hal.get_device()`` picks, a fallback, or why it fails."""
    if error:
        return [Finding("selection-failed", "error",
                        f"hal.get_device() fails here: {error['message']}",
                        "fix or unset HAL_DEVICE / HAL_STRICT as the message says")]
    if not selection:
        return []
    if selection.get("fell_back"):
        return [Finding("selection-fell-back", "warn", str(selection.get("warning")),
                        "make the requested backend available, or change HAL_DEVICE")]
    return [Finding("selection", "ok",
                    f"hal.get_device() selects {selection['device']} ({selection['backend']})")]


def precision_findings(environ: Mapping[str, str], selection: Mapping[str, Any] | None,
                       backends: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """bf16 requested through HAL_PRECISION where the selected device only emulates it."""
    from hal.errors import ConfigError
    from hal.precision import ACCEPTED, PRECISION_ENV, parse_precision

    raw = environ.get(PRECISION_ENV)
    if raw is None:
        return []
    try:
        wanted = parse_precision(raw)
    except ConfigError as exc:
        return [Finding("precision-invalid", "error", str(exc),
                        f"set {PRECISION_ENV} to one of {', '.join(ACCEPTED)}, or unset it")]
    if wanted != "bf16" or not selection:
        return []
    chosen = next((b for b in backends if b.get("name") == selection.get("backend")), None)
    if chosen is None or not chosen.get("devices"):
        return []
    device = selection.get("device", "")
    index = int(device.split(":")[1]) if ":" in device else 0
    dev = next((d for d in chosen["devices"] if d.get("index") == index), chosen["devices"][0])
    native = list(dev.get("dtypes", []))
    if not native or "bfloat16" in native:
        return []
    half = "float16" if "float16" in native else None
    fix = (f"set {PRECISION_ENV}=fp16 (native here)" if half
           else f"unset {PRECISION_ENV} to compute in float32")
    return [Finding(
        "bf16-emulated", "warn",
        f"{PRECISION_ENV}={environ.get(PRECISION_ENV)} asks for bfloat16, but {device} "
        f"({dev.get('name')}) only emulates it (native: {', '.join(native)}): slower, "
        "not faster, than float32",
        fix + ", or run on a device with native bfloat16",
    )]


#: How each outcome of an isolated step reads in a sentence.
OUTCOME_WORDS = {"hung": "hung", "crashed": "crashed", "exited": "ended",
                 "raised": "raised an exception in", "returned nothing": "returned nothing in"}


def _verb(outcome: str) -> str:
    return {"hung": "hung", "crashed": "crashed", "exited": "exited", "raised": "raised",
            "returned nothing": "returned nothing"}.get(outcome, outcome)


def _id_word(outcome: str) -> str:
    return {"returned nothing": "no-answer", "raised": "failed"}.get(outcome, outcome)


def isolation_finding(outcome: str, step: Mapping[str, Any] | None, detail: str,
                      provider: str | None, stderr_tail: str = "") -> Finding:
    """A step of the isolated child that hung, crashed, exited, raised or returned nothing.

    ``hung`` is used only when the step ran out of time; a step that ended at once without a
    value says how it ended.
    """
    name = str((step or {}).get("step", "start-up"))
    backend = (step or {}).get("backend")
    verb = _verb(outcome)
    last = stderr_tail.strip().splitlines()[-1:] if stderr_tail.strip() else []
    tail = f"; last output: {last[0][:300]}" if last else ""
    if backend:
        plugin = provider or backend
        return Finding(
            f"probe-{_id_word(outcome)}", "error",
            f"backend {backend!r} {verb} while being probed ({detail}){tail}; "
            "hal.get_device() in your programs would do the same"
            if outcome in ("hung", "crashed", "exited") else
            f"backend {backend!r} {verb} while being described ({detail}){tail}",
            f"skip it with HAL_DISABLE_PLUGINS={plugin} and report it to the plugin's "
            "maintainers; the rest of this report was made without it",
        )
    if name == "import torch":
        return Finding(
            f"torch-import-{_id_word(outcome)}", "error", f"import torch {verb} ({detail}){tail}",
            f"if a device extension is autoloaded, try {AUTOLOAD_ENV}=0; "
            "see which module it stops in with: python -X importtime -c 'import torch'",
        )
    return Finding(f"doctor-step-{_id_word(outcome)}", "error",
                   f"step {name!r} {verb} ({detail}){tail}",
                   "rerun with --timeout larger; report it with hal doctor --markdown")


def plugin_process_finding(plugin: str, outcome: str, step: str, detail: str,
                           stderr_tail: str = "") -> Finding:
    """A plugin whose code killed, ended or hung the doctor's child (an import or a hook)."""
    last = stderr_tail.strip().splitlines()[-1:] if stderr_tail.strip() else []
    tail = f"; last output: {last[0][:300]}" if last else ""
    what = {"hung": "hung", "crashed": "crashed", "exited": "ended"}.get(outcome, outcome)
    return Finding(
        f"plugin-{_id_word(outcome)}", "error",
        f"plugin {plugin!r} {what} the doctor's probe process during {step!r} ({detail}){tail}; "
        "hal devices and hal.get_device() in your programs would be affected the same way",
        f"skip it with HAL_DISABLE_PLUGINS={plugin} (or uninstall it) and report it to its "
        "maintainers; the rest of this report was made without it",
    )
