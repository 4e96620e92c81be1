"""AcceleratorBackend: the device torch itself reports through ``torch.accelerator``, no plugin needed.

torch >= 2.6 names one current accelerator (MPS, a PrivateUse1 extension such as torch_openreg or
an HPU) and drives its memory, streams and synchronisation through device-agnostic calls; this
backend uses only those (falling back to ``torch.get_device_module(type)`` where an older torch
lacks one).  It declines device types a named hal backend drives, so those always win.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hal.contract import Backend, DeviceInfo, MemoryInfo, Probe, is_collective_error
from hal.errors import DeviceUnavailableError

if TYPE_CHECKING:
    import torch

#: Torch device types that hal's built-in named backends drive (device type -> backend names).
NAMED_DEVICE_TYPES: Mapping[str, str] = {"cuda": "cuda/rocm", "npu": "ascend", "xpu": "xpu"}
#: The device type reported before torch is imported (reading the real one must not import it).
UNKNOWN_TYPE = "accelerator"
#: torch.accelerator name -> the device-module name an older torch has instead.
_MODULE_NAMES = {"get_memory_info": "mem_get_info"}

Owners = Callable[[], Mapping[str, str]]


class AcceleratorBackend(Backend):
    """Whatever accelerator torch reports (``torch.accelerator.current_accelerator()``)."""

    name = "accelerator"
    priority = 5  # below every named vendor backend, above the CPU (0)
    dist_backend = "gloo"
    visible_devices_env = ()

    def __init__(self, torch_module: Any = None, *, owners: Owners | None = None) -> None:
        """``torch_module`` stands in for torch (``accelerator``, ``get_device_module``,
        ``__version__``); ``owners`` adds device types other backends drive (type -> name).

        The built-in named types are always declined; a plugin's own type need not be listed,
        since any named backend outranks this one. No call back into hal's plugin registry:
        plugin code must not re-enter it."""
        self._torch = torch_module
        self._owners = owners or dict

    def _torch_module(self) -> Any:
        if self._torch is not None:
            return self._torch
        import torch

        return torch

    def _current_type(self) -> str | None:
        """The accelerator's device type from torch's registration alone (no runtime init)."""
        device = self._torch_module().accelerator.current_accelerator()
        return None if device is None else str(device.type)

    @property  # type: ignore[override]
    def device_type(self) -> str:  # type: ignore[override]
        """The torch device type of the current accelerator; ``accelerator`` until torch is loaded
        and while a named backend drives that type (so HAL_DEVICE=<its type> does not match here)."""
        if self._torch is None and "torch" not in sys.modules:
            return UNKNOWN_TYPE
        try:
            kind = self._current_type()
        except Exception:
            return UNKNOWN_TYPE
        return UNKNOWN_TYPE if kind is None or kind in self._owned() else kind

    def _fn(self, name: str) -> Callable[..., Any] | None:
        """``torch.accelerator.<name>``, else the device module's equivalent, else None."""
        t = self._torch_module()
        fn = getattr(t.accelerator, name, None)
        if fn is not None:
            return fn  # type: ignore[no-any-return]
        module = t.get_device_module(self._checked_type())
        return getattr(module, _MODULE_NAMES.get(name, name), None)  # type: ignore[no-any-return]

    def _checked_type(self) -> str:
        """The device type when this backend is usable; DeviceUnavailableError with the reason."""
        try:
            kind = self._current_type()
        except Exception:
            kind = None
        if kind is None or kind in self._owned():
            raise DeviceUnavailableError(f"{self.name}: {self.probe().reason}")
        return kind

    def _owned(self) -> dict[str, str]:
        owned = dict(NAMED_DEVICE_TYPES)
        with contextlib.suppress(Exception):  # a broken plugin must not hide this backend
            for kind, name in self._owners().items():
                owned.setdefault(kind, name)
        return owned

    # -- the contract --------------------------------------------------------------------
    def probe(self) -> Probe:
        try:
            t = self._torch_module()
        except Exception as exc:
            return Probe(False, f"torch cannot be imported: {type(exc).__name__}: {exc}")
        version = str(getattr(t, "__version__", "?"))
        acc = getattr(t, "accelerator", None)
        if acc is None or not hasattr(acc, "current_accelerator"):
            return Probe(False, f"torch {version} has no torch.accelerator API (added in torch 2.6)")
        try:
            device = acc.current_accelerator()
        except Exception as exc:
            return Probe(False, f"torch.accelerator.current_accelerator() failed: "
                                f"{type(exc).__name__}: {exc}")
        if device is None:
            return Probe(False, f"torch {version} reports no accelerator "
                                "(torch.accelerator.current_accelerator() is None): no MPS, "
                                "out-of-tree PrivateUse1 extension or other accelerator is registered")
        kind = str(device.type)
        owner = self._owned().get(kind)
        if owner is not None:
            return Probe(False, f"torch's accelerator is {kind!r}, which hal's {owner} backend "
                                "drives (named backends take precedence)")
        try:
            count = int(acc.device_count())
        except Exception as exc:
            return Probe(False, f"torch.accelerator.device_count() failed for {kind!r}: "
                                f"{type(exc).__name__}: {exc}")
        if count <= 0:
            return Probe(False, f"torch's accelerator {kind!r} is registered but sees no device")
        return Probe(True, f"torch {version} reports accelerator {kind!r} with {count} device(s) "
                           "(torch.accelerator, no hal plugin)", count)

    def devices(self) -> Sequence[DeviceInfo]:
        kind = self._checked_type()
        t = self._torch_module()
        module = t.get_device_module(kind)
        name_of = getattr(module, "get_device_name", None)
        infos = []
        for index in range(int(t.accelerator.device_count())):
            try:
                name = str(name_of(index)) if name_of is not None else f"{kind}:{index}"
            except Exception:
                name = f"{kind}:{index}"
            total = 0
            info = self._fn("get_memory_info")
            if info is not None:
                try:
                    total = int(info(index)[1])
                except Exception:
                    total = 0
            infos.append(DeviceInfo(index, name, total, None, {"device_type": kind}))
        return infos

    def memory(self, index: int = 0) -> MemoryInfo:
        self._checked_type()
        fns = {n: self._fn(n) for n in ("memory_allocated", "memory_reserved",
                                        "max_memory_allocated", "get_memory_info")}
        try:
            allocated, reserved, peak = (int(fns[n](index)) if fns[n] is not None else 0  # type: ignore[misc]
                                         for n in ("memory_allocated", "memory_reserved",
                                                   "max_memory_allocated"))
        except Exception as exc:
            # A Python-only PrivateUse1 device has no C++ device allocator to ask.
            return MemoryInfo(0, 0, 0, 0, 0, source=f"not reported: torch's allocator statistics "
                                                     f"failed ({type(exc).__name__}: {exc})")
        source = "allocated/reserved/peak: torch.accelerator allocator statistics"
        total = free = 0
        info = fns["get_memory_info"]
        try:
            if info is None:
                raise AttributeError("no get_memory_info/mem_get_info")
            free, total = (int(v) for v in info(index))
            source = "total/free: torch.accelerator.get_memory_info; " + source
        except Exception as exc:
            source = f"total/free: not reported ({type(exc).__name__}); " + source
        return MemoryInfo(total, free, allocated, reserved, peak, source)

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        """bf16 where the device module says it is supported, then fp32; nothing else is known."""
        import torch

        module = self._torch_module().get_device_module(self._checked_type())
        bf16 = getattr(module, "is_bf16_supported", None)
        try:
            native = bool(bf16()) if bf16 is not None else False
        except Exception:
            native = False
        return [torch.bfloat16, torch.float32] if native else [torch.float32]

    def set_device(self, index: int) -> None:
        self._checked_type()
        self._torch_module().accelerator.set_device_index(index)

    def synchronize(self, index: int | None = None) -> None:
        self._checked_type()
        sync = self._fn("synchronize")
        if sync is None:
            return
        try:
            sync(index)
        except RuntimeError as exc:
            # torch's own statement that the device has no streams to wait for.
            if "doesn't support synchronizing" not in str(exc):
                raise

    def empty_cache(self) -> None:
        self._checked_type()
        fn = self._fn("empty_cache")
        if fn is not None:
            with contextlib.suppress(RuntimeError):  # no device allocator: nothing cached
                fn()

    def reset_peak_memory(self, index: int | None = None) -> None:
        self._checked_type()
        fn = self._fn("reset_peak_memory_stats")
        if fn is not None:
            with contextlib.suppress(RuntimeError):  # no device allocator: no counter
                fn(index)

    def is_oom(self, exc: BaseException) -> bool:
        # torch.OutOfMemoryError is what every device allocator raises through c10; a collective
        # library's error is never claimed, whatever its text (as DeviceModuleBackend does).
        if is_collective_error(exc):
            return False
        return type(exc).__name__ == "OutOfMemoryError" or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())

    def versions(self) -> Mapping[str, str]:
        try:
            kind = self._current_type()
        except Exception:
            kind = None
        return {"accelerator": kind or "none"}
