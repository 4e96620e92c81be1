"""The device "cuda" stands for while the mode is on: hal's selected backend, reached through its contract.

Every mapped ``torch.cuda`` call ends here, so the backend contract (``hal/contract.py``) and the
backend's own torch device module are the only things asked; a figure a backend does not report
is refused in one line (``UnmappedCallError``), never made up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hal.errors import UnmappedCallError

if TYPE_CHECKING:
    import torch

    from hal.contract import Backend, MemoryInfo

#: What to do instead, for calls that are refused on every backend but the real one.
HINTS = {
    "nvtx": "use torch.profiler.record_function(name) for ranges any backend's profiler shows, "
            "or drop the call",
    "graphs": "run the captured code eagerly, or use torch.compile(mode='reduce-overhead') where "
              "the backend supports it",
    "graph": "run the captured code eagerly, or use torch.compile(mode='reduce-overhead') where "
             "the backend supports it",
    "CUDAGraph": "run the captured code eagerly",
    "make_graphed_callables": "call the callables directly",
    "major": "ask hal.precision.policy() or hal.get_backend().dtypes() what the device runs "
             "natively",
    "memory": "read hal.memory.info(), which says where each figure comes from",
}
DEFAULT_HINT = ("guard the call with `if not hal.cuda_compat.is_enabled():` or ask hal's "
                "backend-neutral API (hal.get_backend(), hal.memory, hal.precision)")


@dataclass(eq=False)  # one object per enable(): hashed by identity (caches key on it)
class Target:
    """The selected backend as the target of "cuda": its device type, current index and devices."""

    backend: Backend
    count: int
    reason: str
    index: int = 0
    #: Device type of the backend's torch devices ("cpu" for the host).
    device_type: str = field(init=False)

    def __post_init__(self) -> None:
        self.device_type = self.backend.device_type

    @property
    def host(self) -> bool:
        """Is the target the host CPU (one device, every index maps to it)."""
        return self.device_type == "cpu"

    @property
    def where(self) -> str:
        """The backend as messages name it: ``cpu`` or ``accelerator (halsim)``."""
        name = self.backend.name
        return name if name == self.device_type else f"{name} ({self.device_type})"

    def refuse(self, call: str, hint: str | None = None) -> UnmappedCallError:
        """The one-line error for ``call`` (e.g. ``torch.cuda.nvtx.range_push``) on this backend."""
        last = call.split(".")[2] if call.count(".") >= 2 else call
        what = hint or HINTS.get(last) or HINTS.get(call.rsplit(".", 1)[-1]) or DEFAULT_HINT
        return UnmappedCallError(f"{call} has no equivalent on {self.where} under hal's "
                                 f"cuda-compat mode: {what}")

    # -- devices -----------------------------------------------------------------------------
    def device(self, index: int | None = None) -> torch.device:
        """The torch.device "cuda" / "cuda:N" stands for (the host ignores the index)."""
        import torch

        if self.host or index is None:
            return torch.device(self.device_type)
        return torch.device(self.device_type, index)

    def index_of(self, device: Any, call: str) -> int:
        """The device index ``device`` (None, an int, "cuda:N", a torch.device) names."""
        if device is None:
            return self.index
        if isinstance(device, bool):
            raise self.refuse(call, f"device {device!r} is not a device index")
        if isinstance(device, int):
            return device
        import torch

        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise self.refuse(call, f"{device!r} is not a device ({exc})") from None
        return self.index if dev.index is None else int(dev.index)

    def checked(self, device: Any, call: str) -> int:
        """``index_of`` for a per-device call, checked against the backend's device count."""
        index = self.index_of(device, call)
        if self.host:
            return 0
        if not 0 <= index < self.count:
            raise self.refuse(call, f"device {index} does not exist: {self.backend.name} sees "
                                    f"{self.count} device(s)")
        return index

    def set_index(self, index: int, call: str) -> None:
        """Make ``index`` current: the backend binds it; the host only records it."""
        if not self.host:
            index = self.checked(index, call)
            self.backend.set_device(index)
        self.index = index

    def device_module(self) -> Any:
        """The backend's torch device module (``torch.cpu`` for the host), None if torch has none."""
        import torch

        try:
            return torch.get_device_module(self.device_type)
        except Exception:
            return None

    # -- memory ------------------------------------------------------------------------------
    def memory(self, device: Any, call: str) -> MemoryInfo:
        """The backend's MemoryInfo for ``device``; refused where the backend reports none."""
        info = self.backend.memory(self.checked(device, call))
        if info.source.startswith("not reported") or (info.total <= 0 and info.allocated <= 0
                                                       and info.peak <= 0):
            raise self.refuse(call, f"{self.backend.name} does not report memory figures "
                                    f"({info.source or 'no source'}); read hal.memory.info() "
                                    "where the backend has them")
        return info


def local_rank() -> int:
    """This process's local rank as its launcher environment gives it (0 outside a launcher)."""
    from hal.distributed.environments import placement

    place = placement(os.environ)
    return place.local_rank if place is not None else 0
