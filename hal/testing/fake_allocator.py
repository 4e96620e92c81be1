"""The device-selection and caching-allocator half that the fake ``torch.npu`` and ``torch.xpu`` share.

torch_npu's ``npu`` package and torch's ``xpu`` module both copy ``torch.cuda``'s shape for these
functions (``set_device``, ``mem_get_info``, ``memory_allocated``, ``empty_cache``, ...), with the
same names and parameters, so one implementation serves both fakes.  Each fake's contract test
still checks every one of these names against its own real module; a vendor whose real function
drifts overrides it in its fake.  The fake ``torch.cuda`` does not use this: it mirrors CUDA's
lazy init, device visibility and 2 MiB block rounding, which these two do not model.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

MiB = 1024**2
GiB = 1024**3

#: Names a fake module defines to drive or build the fake, mirroring nothing real.
CONTROLS = frozenset({"allocate", "_index", "_invalid_device", "_oom_template", "sycl_contexts"})


class _HasTotalMemory(Protocol):
    @property
    def total_memory(self) -> int: ...


SpecT = TypeVar("SpecT", bound=_HasTotalMemory)


@dataclass
class DeviceState(Generic[SpecT]):
    """One fake device: its spec and its allocator counters, in bytes."""

    spec: SpecT
    allocated: int = 0
    reserved: int = 0
    peak: int = 0
    other_processes: int = 0

    @property
    def free(self) -> int:
        """Device-wide free memory, as mem_get_info reports it."""
        return self.spec.total_memory - self.reserved - self.other_processes


def format_size(size: int) -> str:
    """Bytes as the allocators' OOM texts print them: two decimals in GiB, else MiB."""
    return f"{size / GiB:.2f} GiB" if size >= GiB else f"{size / MiB:.2f} MiB"


class FakeAllocatorModule(types.ModuleType, Generic[SpecT]):
    """A fake device module's current device and per-device allocator statistics.

    ``initialized`` turns True on any call that initialises the real runtime, so tests can
    check that a probe stays on the side-effect-free path (``device_count``).
    """

    #: The allocator's OOM text; ``str.format`` gets request, device, total, free, allocated,
    #: reserved and unallocated, and each vendor's text uses the ones it prints.
    _oom_template: ClassVar[str]

    def __init__(self, name: str, specs: list[SpecT]) -> None:
        super().__init__(name)
        self._devices = [DeviceState(s) for s in specs]
        self._current = 0
        self.initialized = False

    def _invalid_device(self, index: int) -> Exception:
        """The error the real module raises for a device index out of range."""
        raise NotImplementedError

    def _index(self, device: Any) -> int:
        if device is None:
            return self._current
        raw = device if isinstance(device, int) else getattr(device, "index", None)
        index = self._current if raw is None else int(raw)
        if not 0 <= index < len(self._devices):
            raise self._invalid_device(index)
        return index

    def allocate(self, nbytes: int, device: int = 0) -> None:
        """Simulate a caching-allocator allocation; raises the real OOM when it does not fit."""
        import torch

        state = self._devices[device]
        free = state.free
        if nbytes > free:
            raise torch.OutOfMemoryError(self._oom_template.format(
                request=format_size(nbytes), device=device,
                total=format_size(state.spec.total_memory), free=format_size(free),
                allocated=format_size(state.allocated), reserved=format_size(state.reserved),
                unallocated=format_size(state.reserved - state.allocated)))
        state.allocated += nbytes
        state.reserved = max(state.reserved, state.allocated)
        state.peak = max(state.peak, state.allocated)

    # -- the mirrored API, common to both real modules ---------------------------------------
    def device_count(self) -> int:
        return len(self._devices)

    def is_available(self) -> bool:
        return self.device_count() > 0

    def is_initialized(self) -> bool:
        return self.initialized

    def current_device(self) -> int:
        return self._current

    def set_device(self, device: Any) -> None:
        self._current = self._index(device)
        self.initialized = True

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        self.initialized = True
        state = self._devices[self._index(device)]
        return state.free, state.spec.total_memory

    def memory_allocated(self, device: Any = None) -> int:
        return self._devices[self._index(device)].allocated

    def memory_reserved(self, device: Any = None) -> int:
        return self._devices[self._index(device)].reserved

    def max_memory_allocated(self, device: Any = None) -> int:
        return self._devices[self._index(device)].peak

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        state = self._devices[self._index(device)]
        state.peak = state.allocated

    def empty_cache(self) -> None:
        for state in self._devices:
            state.reserved = state.allocated

    def synchronize(self, device: Any = None) -> None:
        self._index(device)
        self.initialized = True


def mirrored_names(cls: type, *, private: bool = True) -> list[str]:
    """The names a fake module class (its fake bases included) claims the real module has.

    ``private=False`` leaves out every ``_name`` as well (for a real module read from source,
    where private helpers are not part of the contract).
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("hal.") and ".testing" in klass.__module__:
            names.update(n for n in vars(klass) if not n.startswith("__"))
    if not private:
        names = {n for n in names if not n.startswith("_")}
    return sorted(names - CONTROLS)


def provoke_oom(module: FakeAllocatorModule[Any], request: int = 2 * GiB) -> BaseException:
    """Fill device 0 of ``module`` to 1 GiB short of its total, then the OOM ``request`` raises."""
    module.allocate(module._devices[0].spec.total_memory - GiB)
    try:
        module.allocate(request)
    except BaseException as exc:
        return exc
    raise AssertionError("unreachable: the allocation above must not fit")
