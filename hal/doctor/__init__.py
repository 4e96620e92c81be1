"""``hal doctor``: compare the hardware that is here with the software that is installed, and say
what is wrong and the command that fixes it.

``collect()`` returns the report as JSON-able data (schema ``hal.doctor/1``, see docs/doctor.md);
``render()`` turns it into rich, plain, markdown or JSON text.  All plugin and torch code runs in
one child process with a step timeout, so a hanging or crashing vendor runtime cannot take the
doctor down.  Sides of the child boundary: ``child`` (with ``report.local_sections``,
``smoke`` and ``torchinfo.import_torch``) runs in the child; ``isolate``, ``report.collect``,
``findings``, ``engines``, ``cluster``, ``render`` and ``redact`` run in the parent; ``records``
is the typed protocol both speak.  Submodules load lazily: the child process imports only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hal.doctor.render import FORMATS, render
    from hal.doctor.report import DEFAULT_TIMEOUT, SCHEMA, Options, collect

_EXPORTS = {
    "DEFAULT_TIMEOUT": "hal.doctor.report",
    "SCHEMA": "hal.doctor.report",
    "Options": "hal.doctor.report",
    "collect": "hal.doctor.report",
    "FORMATS": "hal.doctor.render",
    "render": "hal.doctor.render",
}
__all__ = ["DEFAULT_TIMEOUT", "FORMATS", "SCHEMA", "Options", "collect", "render"]


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first use."""
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'hal.doctor' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
