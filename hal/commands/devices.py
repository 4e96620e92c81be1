"""``hal devices``: every backend, available or not and why, its devices, and the selection."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hal.contract import Probe

if TYPE_CHECKING:
    from hal.errors import HalError


#: Where a selection reason starts listing the backends it passed over (hal.selection words it so).
_PASSED_OVER = ("; not available: ", "; skipped ")


def why_line(reason: str, backends: Sequence[Mapping[str, Any]]) -> str:
    """The ``why:`` line under a listing that already gives every backend's reason: the decision,
    then the names of the backends passed over, not their reasons a second time."""
    from hal.console import one_line

    cut = min((i for i in (reason.find(m) for m in _PASSED_OVER) if i >= 0), default=-1)
    if cut >= 0:
        head, tail = reason[:cut], reason[cut:]
        names = [str(b.get("name")) for b in backends
                 if not b.get("available") and f"{b.get('name')}: " in tail]
        reason = head + (f"; not available: {', '.join(names)} (reasons above)" if names else tail)
    return one_line(f"why: {reason}")


def add_parser(sub: Any) -> None:
    """Register the ``devices`` command."""
    p = sub.add_parser("devices", help="list backends, their devices and the selected device")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def _require_torch() -> None:
    """Import torch once up front: if it is installed but its import raises, say so in one line.

    A half-initialised torch re-imported by every backend's probe gives misleading errors (and
    can crash at exit), so ``hal devices`` stops here and points to ``hal doctor``.
    """
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            return  # not installed: the backends say so themselves
        raise _torch_broken(exc) from None
    except Exception as exc:  # an autoloaded device extension that cannot find its runtime, ...
        raise _torch_broken(exc) from None


def _torch_broken(exc: BaseException) -> HalError:
    """The one-line error for an ``import torch`` that raises: the error and its root cause."""
    from hal.errors import HalError, describe_exception

    root, seen = exc, {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        root = nxt
        seen.add(id(nxt))
    text = describe_exception(exc, 500)
    if root is not exc:
        text += f" (caused by {describe_exception(root, 500)})"
    return HalError(f"torch is installed but `import torch` fails: {text}; "
                    "run `hal doctor` for the cause and the fix")


def collect() -> dict[str, Any]:
    """Backends and the selection as one JSON-able dict (the ``--json`` output).

    Backends are probed once, in parallel under the plugin timeout, and described; one that
    breaks the contract while being described is unavailable for this selection too.
    """
    import warnings

    from hal.errors import HalFallbackWarning
    from hal.inventory import describe_backend
    from hal.plugins import load_plugins
    from hal.selection import decide, list_backends, probe_all

    backends = list_backends()
    probes = probe_all(backends)
    described = [describe_backend(b, probes[b.name]) for b in backends]
    final = {d["name"]: Probe(d["available"], d["reason"], d["device_count"]) for d in described}
    selection = decide(backends, probes=final)
    if selection.warning:
        warnings.warn(selection.warning, HalFallbackWarning, stacklevel=2)
    return {
        "schema": "hal.devices/1",
        "backends": described,
        "selection": selection.as_dict(),
        "failed_plugins": load_plugins().failed(),
    }


def failed_plugins_line(failed: list[str]) -> str | None:
    """The closing hint naming plugins that failed to load (None when all loaded)."""
    if not failed:
        return None
    return (f"plugins that failed to load: {', '.join(failed)} "
            "(see `hal plugins` for why)")


def run(args: argparse.Namespace) -> int:
    """Print the inventory; exit 0 (selection errors and a broken torch surface as HalError)."""
    from hal.validate import route_plugin_stdout

    route_plugin_stdout()  # what plugin code prints goes to stderr: --json stays parseable
    _require_torch()
    data = collect()
    if args.json:
        json.dump(data, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    from hal.units import format_bytes

    lines = []
    for b in data["backends"]:
        state = "available" if b["available"] else "not available"
        lines.append(f"{b['name']} (priority {b['priority']}, {b['device_type']}, "
                     f"collectives {b['dist_backend']}): {state}: {b['reason']}")
        for d in b["devices"]:
            mem = d["memory"] or {}
            cap = f", {d['capability']}" if d["capability"] else ""
            lines.append(
                f"  [{d['index']}] {d['name']}{cap}: {format_bytes(d['total_memory'])} total, "
                f"{format_bytes(mem.get('free'))} free; native dtypes: {', '.join(d['dtypes'])}"
            )
        lines.extend(f"  error: {e}" for e in b["errors"])
    sel = data["selection"]
    lines.append("")
    lines.append(f"selected: {sel['device']} ({sel['backend']})")
    lines.append(why_line(sel["reason"], data["backends"]))
    hint = failed_plugins_line(data["failed_plugins"])
    if hint:
        lines.append(hint)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
