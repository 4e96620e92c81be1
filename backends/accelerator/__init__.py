"""The generic backend plugin: whatever accelerator torch itself reports (``torch.accelerator``).

A Mac's MPS, an out-of-tree PrivateUse1 device loaded through torch's backend autoload, an HPU:
hal drives it through torch's device-agnostic API with no plugin of its own, below every named
backend (which wins where both apply) and above the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import hal
from hal.backends.accelerator.backend import AcceleratorBackend

__all__ = ["AcceleratorBackend", "hal_backends"]


@hal.hookimpl
def hal_backends() -> Sequence[hal.Backend]:
    """Provide the generic torch.accelerator backend."""
    return [AcceleratorBackend()]
