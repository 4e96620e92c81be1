"""What the installed torch is, read without naming any vendor: version, build runtimes, import.

The build flavour comes from torch's own ``torch.version`` module: every public attribute whose
value looks like a version number (``x.y``) names a device runtime the build was compiled
against; none means a CPU-only build.  ``git_version`` and ``debug`` are not runtimes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
import traceback
from importlib import metadata
from typing import Any

from hal.versions import dist_version

#: Entry-point group through which torch imports out-of-tree device extensions at ``import torch``.
AUTOLOAD_GROUP = "torch.backends"
AUTOLOAD_ENV = "TORCH_DEVICE_BACKEND_AUTOLOAD"
_VERSION_RE = re.compile(r"^\d+\.\d+")
_NOT_RUNTIMES = {"git_version", "debug", "__version__"}


def autoload_extensions() -> list[dict[str, Any]]:
    """Entry points in torch's autoload group, with the distribution that declares each."""
    out = []
    for ep in metadata.entry_points(group=AUTOLOAD_GROUP):
        dist = getattr(ep, "dist", None)
        out.append({
            "name": ep.name,
            "value": ep.value,
            "distribution": dist.metadata["Name"] if dist is not None else None,
            "version": dist.version if dist is not None else None,
        })
    return out


def _chain(exc: BaseException) -> list[dict[str, str]]:
    """The exception and its causes, outermost first (``raise ... from`` and implicit context)."""
    out: list[dict[str, str]] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append({"type": type(cur).__name__, "message": str(cur)})
        cur = cur.__cause__ or cur.__context__
    return out


def version_attributes(version_module: Any) -> dict[str, Any]:
    """torch.version's public data attributes (str, bool, None), by name."""
    names = getattr(version_module, "__all__", None) or dir(version_module)
    out: dict[str, Any] = {}
    for name in names:
        if name.startswith("_") and name != "__version__":
            continue
        value = getattr(version_module, name, None)
        if value is None or isinstance(value, (str, bool, int)):
            out[name] = value
    return out


def build_runtimes(attrs: dict[str, Any]) -> dict[str, str]:
    """The device runtimes a torch build targets, from its version attributes."""
    return {k: v for k, v in attrs.items()
            if k not in _NOT_RUNTIMES and isinstance(v, str) and _VERSION_RE.match(v)}


def build_label(runtimes: dict[str, str]) -> str:
    """A one-line build flavour: ``CPU-only`` or ``<runtime> <version>, ...``."""
    if not runtimes:
        return "CPU-only"
    return ", ".join(f"{k} {v}" for k, v in runtimes.items())


def import_torch() -> dict[str, Any]:
    """Import torch once, timed; describe it, or describe exactly how the import failed."""
    try:
        installed = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # an import hook that refuses torch, or a broken entry
        installed = False
    info: dict[str, Any] = {
        "installed": installed,
        "imports": False,
        "version": None,
        "distribution_version": dist_version("torch"),
        "path": None,
        "version_attributes": {},
        "runtimes": {},
        "build": None,
        "import_seconds": None,
        "error": None,
        "autoload": {
            "enabled": os.environ.get(AUTOLOAD_ENV, "1") == "1",
            "extensions": autoload_extensions(),
        },
    }
    if not info["installed"]:
        return info
    start = time.perf_counter()
    try:
        import torch
    except BaseException as exc:  # an extension may even call sys.exit or abort with SystemExit
        if isinstance(exc, KeyboardInterrupt):
            raise
        info["import_seconds"] = time.perf_counter() - start
        if isinstance(exc, ModuleNotFoundError) and exc.name == "torch":
            info["installed"] = False
            return info
        info["error"] = {
            "type": type(exc).__name__,
            "message": str(exc),
            "chain": _chain(exc),
            "traceback": "".join(traceback.format_exception(exc))[-8000:],
        }
        # Re-running a half-initialised torch can crash; later imports fail fast and cleanly.
        sys.modules["torch"] = None  # type: ignore[assignment]
        return info
    info["import_seconds"] = time.perf_counter() - start
    info["imports"] = True
    info["version"] = str(torch.__version__)
    info["path"] = str(getattr(torch, "__file__", "") or "")
    attrs = version_attributes(getattr(torch, "version", None))
    info["version_attributes"] = attrs
    info["runtimes"] = build_runtimes(attrs)
    info["build"] = build_label(info["runtimes"])
    return info
