"""The hal hook specifications: the table of contents of hal's extension surface (v1).

Every hook is prefixed ``hal_``.  Plugin authors implement them with ``@hal.hookimpl``
and register a module through the ``hal`` entry-point group.

Plugin code is untrusted (docs/security.md): each import, hook call and backend method runs in a
daemon thread under ``HAL_PROBE_TIMEOUT`` (10 s), every returned value is checked, a plugin may
not use a built-in name, must not call back into hal from a hook or probe, and what it prints
goes to stderr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from hal.contract import Backend, Finding

PROJECT_NAME = "hal"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- Backends ---------------------------------------------------------------


@hookspec
def hal_backends() -> Sequence[Backend]:
    """Return the backends this plugin provides (instances of :class:`hal.Backend`).

    Import vendor libraries inside backend methods, not at module level.
    """


# -- Diagnostics ------------------------------------------------------------


@hookspec
def hal_doctor_findings(report: Mapping[str, Any]) -> Sequence[Finding]:
    """Return extra findings for ``hal doctor`` beyond the backends' own.

    :param report: the doctor's report so far, as the JSON-able mapping ``--json`` prints.
    """


# -- Planning ---------------------------------------------------------------


@hookspec
def hal_accelerators() -> Sequence[Mapping[str, Any]]:
    """Return accelerator catalogue entries (same fields as hal's own catalogue file).

    Each entry needs at least ``id``, ``name``, ``memory_bytes``, ``backend`` and ``source``.
    """
