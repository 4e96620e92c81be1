"""Opt-in: run unmodified CUDA-only code on hal's selected backend (docs/cuda-compat.md).

    hal.cuda_compat.enable()              # in-process; disable() puts torch back as it was
    python -m hal.cuda_compat script.py   # one process
    hal run --cuda-compat -n 2 script.py  # every rank

This package is the one place in hal/ that names torch's CUDA API; it maps that API onto the
selected backend's contract and device module, and refuses in one line what has no equivalent.
Importing it changes nothing: only ``enable()`` does.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hal.errors import HalError, UnmappedCallError

if TYPE_CHECKING:
    from hal.cuda_compat._patches import Patches
    from hal.cuda_compat._target import Target

__all__ = ["ENV_VAR", "Mapping", "UnmappedCallError", "disable", "enable", "is_enabled",
           "mapped_names", "run_path"]

#: Set to 1 by ``hal run --cuda-compat``: each rank's bootstrap enables the mode before the script.
ENV_VAR = "HAL_CUDA_COMPAT"


@dataclass(frozen=True)
class Mapping:
    """What the mode did: the backend "cuda" stands for, its device type, why, and whether it mapped."""

    backend: str
    device_type: str
    reason: str
    active: bool

    @property
    def message(self) -> str:
        """The one stderr line the mode says when it is enabled."""
        if not self.active:
            return (f"hal: cuda-compat: the selected backend {self.backend} drives torch's cuda "
                    f"device itself, so nothing is mapped ({self.reason})")
        where = self.device_type if self.backend == self.device_type else \
            f"{self.device_type} (backend {self.backend})"
        return f"hal: cuda-compat: 'cuda' maps to {where}: {self.reason}"


class _State:
    """The process's one mode: its target and the patches that undo it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mapping: Mapping | None = None
        self.target: Target | None = None
        self.patches: Patches | None = None
        self.said = False


_state = _State()


def mapped_names() -> tuple[str, ...]:
    """Every ``torch.cuda`` name the mode maps (``amp.*`` included), sorted: the docs list these."""
    from hal.cuda_compat._namespace import MAPPED, MAPPED_AMP

    return tuple(sorted([*MAPPED, *(f"amp.{n}" for n in MAPPED_AMP)]))


def is_enabled() -> bool:
    """Is the mode on in this process (mapping, or on a real cuda backend saying so)."""
    return _state.mapping is not None


def enable(*, quiet: bool = False) -> Mapping:
    """Map CUDA-only code to hal's selected backend (idempotent); says once on stderr where.

    On a backend whose torch device type already is ``cuda`` nothing is patched.  Under a
    launcher (LOCAL_RANK set) the rank's own device is bound as the current one.
    """
    from hal.selection import select

    with _state.lock:
        if _state.mapping is not None:
            return _state.mapping
        import torch  # noqa: F401  (the patches replace torch objects)

        from hal.cuda_compat._patches import SOURCE_TYPE, Patches, install
        from hal.cuda_compat._target import Target, local_rank

        sel = select()
        backend = sel.backend
        active = backend.device_type != SOURCE_TYPE
        mapping = Mapping(backend.name, backend.device_type, sel.reason, active)
        if active:
            count = next((c.device_count for c in sel.candidates if c.name == backend.name), 1)
            target = Target(backend, max(count, 1), sel.reason)
            if target.host:
                target.index = local_rank()
            else:
                target.set_index(sel.index or 0, "hal.cuda_compat.enable")
            patches = Patches()
            try:
                install(target, patches)
            except BaseException:
                patches.undo()
                raise
            _state.target, _state.patches = target, patches
        _state.mapping = mapping
        if not quiet and not _state.said and os.environ.get("RANK", "0") == "0":
            _state.said = True
            sys.stderr.write(mapping.message + "\n")
        return mapping


def disable() -> None:
    """Undo ``enable()``: every patched torch object is the original again."""
    with _state.lock:
        if _state.patches is not None:
            _state.patches.undo()
        from hal.cuda_compat._patches import forget_targets

        forget_targets()
        _state.mapping = _state.target = _state.patches = None


def run_path(script: str) -> int:
    """Enable the mode and run ``script`` as ``__main__`` (sys.argv set by the caller).

    A call with no equivalent (or any other hal error) ends as one ``hal: error:`` line and
    exit status 1 instead of a traceback.
    """
    import runpy

    try:
        enable()
        runpy.run_path(script, run_name="__main__")
    except HalError as exc:
        sys.stderr.flush()
        sys.stderr.write(f"hal: error: {exc}\n")
        return 1
    return 0
