"""Visible-devices variables parsed as torch.cuda and the CUDA/HIP runtimes read them.

Indices, ``GPU-`` UUID prefixes and ``MIG-`` ids; a repeated entry hides everything and the first
invalid entry ends the list (torch.cuda._parse_visible_devices semantics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["all", "indices", "uuids", "mig"]


@dataclass(frozen=True)
class VisibleSpec:
    """A parsed visible-devices value: all devices, or a list of indices or id prefixes."""

    value: str | None
    kind: Kind
    indices: tuple[int, ...] = ()
    ids: tuple[str, ...] = ()

    @property
    def hides_all(self) -> bool:
        """True when the value itself leaves no device (``""``, ``-1``, a repeat)."""
        return self.kind != "all" and not self.indices and not self.ids


def _strtoul(text: str) -> int:
    """The leading integer of ``text`` as C strtoul reads it here, or -1."""
    digits = ""
    for i, c in enumerate(text):
        if c.isdigit() or (i == 0 and c in "+-"):
            digits += c
        else:
            break
    if digits in ("", "+", "-"):
        return -1
    return int(digits)


def parse_visible(value: str | None) -> VisibleSpec:
    """Parse one visible-devices value (None: the variable is unset, every device is visible)."""
    if value is None:
        return VisibleSpec(None, "all")
    for prefix, kind in (("GPU-", "uuids"), ("MIG-", "mig")):
        if value.startswith(prefix):
            ids: list[str] = []
            for elem in value.split(","):
                if elem in ids:
                    return VisibleSpec(value, kind)  # type: ignore[arg-type]
                if not elem.startswith(prefix):
                    break
                ids.append(elem)
            return VisibleSpec(value, kind, ids=tuple(ids))  # type: ignore[arg-type]
    indices: list[int] = []
    for elem in value.split(","):
        x = _strtoul(elem.strip())
        if x in indices:
            return VisibleSpec(value, "indices")
        if x < 0:
            break
        indices.append(x)
    return VisibleSpec(value, "indices", indices=tuple(indices))


def resolve(spec: VisibleSpec, count: int, uuids: Sequence[str] | None = None,
            strip_prefix: bool = False) -> list[int] | None:
    """Positions (into a list of ``count`` devices) that ``spec`` exposes, in its order.

    UUID entries match by prefix against ``uuids``; None when they cannot be matched because
    the UUIDs are unknown.  ``strip_prefix`` drops ``GPU-`` first (AMD serials have none).
    """
    if spec.kind == "all":
        return list(range(count))
    if spec.kind == "indices":
        out = []
        for x in spec.indices:
            if x >= count:
                break
            out.append(x)
        return out
    if uuids is None:
        return None
    out = []
    for entry in spec.ids:
        cand = entry.replace("GPU-", "", 1) if strip_prefix else entry
        matches = [i for i, u in enumerate(uuids) if u.lower().startswith(cand.lower())]
        if len(matches) != 1:
            break
        if matches[0] in out:
            return []
        out.append(matches[0])
    return out
