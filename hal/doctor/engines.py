"""Serving engines in ``hal doctor``: an installed engine whose pinned torch stack is not installed.

An engine (vLLM, SGLang) or an engine's platform plugin pins the torch it was built against and
the torch extensions and kernel packages built with it; a mismatch surfaces only as an import error
deep inside the engine. Everything here is read from installed distributions' metadata
(``importlib.metadata``): no engine, torch or extension is imported.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from collections.abc import Iterable, Mapping, Sequence

from hal.contract import Finding

#: Distributions that are serving engines.
ENGINES = ("vllm", "sglang")
#: Entry-point groups whose distributions extend an engine for a device (vLLM's platform plugins).
ENGINE_PLUGIN_GROUPS = ("vllm.platform_plugins",)
#: The torch stack: torch itself and its domain libraries; packages that require torch count too.
_TORCH_NAMES = re.compile(r"\Atorch([-_.].*|vision|audio)?\Z")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(path: Sequence[str] | None = None) -> dict[str, md.Distribution]:
    """Installed distributions by normalised name (first on ``path``, default sys.path, wins)."""
    out: dict[str, md.Distribution] = {}
    found = md.distributions() if path is None else md.distributions(path=list(path))
    for dist in found:
        name = dist.name  # None for a broken dist-info without a Name
        if name:
            out.setdefault(_norm(name), dist)
    return out


def engine_names(dists: Mapping[str, md.Distribution]) -> list[str]:
    """Installed engines and engine plugins (normalised names), sorted."""
    found = {n for n in ENGINES if n in dists}
    for name, dist in dists.items():
        if any(ep.group in ENGINE_PLUGIN_GROUPS for ep in dist.entry_points):
            found.add(name)
    return sorted(found)


def _requires_torch(dist: md.Distribution) -> bool:
    """Is ``dist`` built against torch (torch among its requirements, extras aside)?"""
    return any(name == "torch" for name, _ in _requirements(dist))


def _requirements(dist: md.Distribution) -> Iterable[tuple[str, str]]:
    """(normalised name, specifier) of each requirement that applies here (markers, no extras)."""
    from packaging.requirements import InvalidRequirement, Requirement

    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        yield _norm(req.name), str(req.specifier)


def _pins(dist: md.Distribution) -> Iterable[tuple[str, str]]:
    """The requirements of ``dist`` that name versions."""
    return ((name, spec) for name, spec in _requirements(dist) if spec)


def findings(dists: Mapping[str, md.Distribution] | None = None) -> list[Finding]:
    """One finding per installed engine: its torch-stack pins all met (ok), or each one that is not,
    with the command that fixes it."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    dists = installed() if dists is None else dists
    out: list[Finding] = []
    for engine in engine_names(dists):
        dist = dists[engine]
        label = f"{dist.name} {dist.version}"
        wrong: list[str] = []
        fixes: list[str] = []
        for name, spec in _pins(dist):
            have = dists.get(name)
            if have is None:
                if _TORCH_NAMES.match(name):  # torch, its extensions and domain libraries
                    wrong.append(f"{name}{spec} is not installed")
                    fixes.append(f"'{name}{spec}'")
                continue
            if not (_TORCH_NAMES.match(name) or _requires_torch(have)):
                continue  # not built against torch: pip's own resolver's business
            try:
                ok = Version(have.version) in SpecifierSet(spec)
            except InvalidVersion:
                continue
            if not ok:
                wrong.append(f"{name}{spec} but {have.version} is installed")
                fixes.append(f"'{name}{spec}'")
        if wrong:
            out.append(Finding(
                f"engine-pins-{engine}", "error",
                f"{label} was built for another torch stack: needs {'; '.join(wrong)} "
                "(it would fail on import, deep inside the engine)",
                f"pip install {' '.join(fixes)} (the build for this machine's accelerator), or "
                f"install the {dist.name} release built for the installed torch stack"))
        else:
            out.append(Finding(f"engine-pins-{engine}", "ok",
                               f"{label}: the torch stack it pins is installed"))
    return out

