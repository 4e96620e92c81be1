"""Versions, read one way everywhere: installed distributions, release tuples, torch-at-least.

Every backend and the core ask here instead of parsing version strings themselves, so
``2.13.0+cpu``, ``2.1.0.post8``, ``8.0.RC2`` and ``550.54.15`` mean the same to all of them.
Nothing here imports torch except ``torch_at_least``, and that only when torch is installed.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable

#: Looks up an installed distribution's version by name (None when not installed); backends
#: take one as a constructor argument so that tests can describe a fake installation.
DistVersion = Callable[[str], "str | None"]

_RELEASE_RE = re.compile(r"\A\s*v?([0-9]+(?:\.[0-9]+)*)")


def dist_version(name: str) -> str | None:
    """Installed version of distribution ``name`` from its metadata (nothing imported), or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def release(text: str | None) -> tuple[int, ...]:
    """The leading numeric release of a version: ``"2.13.0+cpu"`` -> (2, 13, 0); () if none.

    Local labels (``+cu126``), pre/post tags (``rc1``, ``.post8``) and words (``8.0.RC2`` ->
    (8, 0)) end the release, as they do for pip; a non-numeric start gives ().
    """
    if not text:
        return ()
    m = _RELEASE_RE.match(text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def release_text(text: str | None, parts: int = 3) -> str | None:
    """The first ``parts`` numbers of a release as text (``"2.1.0.post8"`` -> ``"2.1.0"``), or None.

    None when the version has fewer numbers than ``parts`` (so two releases compare exactly).
    """
    numbers = release(text)
    return ".".join(map(str, numbers[:parts])) if len(numbers) >= parts else None


def at_least(text: str | None, minimum: tuple[int, ...]) -> bool:
    """Is the release of ``text`` at least ``minimum``? False when ``text`` has no release."""
    numbers = release(text)
    return bool(numbers) and numbers >= minimum


def torch_version() -> str | None:
    """The installed torch's version from its metadata (torch is not imported), or None."""
    return dist_version("torch")


def torch_at_least(minimum: tuple[int, ...], version: str | None = None) -> bool:
    """Is torch (or the version given) at least ``minimum``, e.g. ``torch_at_least((2, 8))``?"""
    return at_least(torch_version() if version is None else version, minimum)
