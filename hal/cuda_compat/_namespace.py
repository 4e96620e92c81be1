"""The torch.cuda that CUDA-only code sees while the mode is on: mapped names, refusals, privates.

``MAPPED`` is the one list of the public ``torch.cuda`` names the mode answers (the docs list it
and a test checks both agree, and that each exists in the pinned torch).  Any other public name is
a ``Refused`` stand-in that raises one line when used; private names (``_lazy_init``, ...) are the
real module's, for torch's own internals.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hal.cuda_compat._target import Target

#: Public torch.cuda names the mode answers on the selected backend (``torch.cuda.amp`` apart).
MAPPED = (
    "Event", "OutOfMemoryError", "Stream", "StreamContext", "amp", "current_device",
    "current_stream", "default_stream", "device", "device_count", "empty_cache",
    "get_device_capability", "get_device_name", "get_device_properties", "get_rng_state", "init",
    "initial_seed", "ipc_collect", "is_available",
    "is_bf16_supported", "is_initialized", "is_tf32_supported", "manual_seed", "manual_seed_all",
    "max_memory_allocated", "mem_get_info", "memory_allocated", "memory_cached",
    "memory_reserved", "memory_stats", "memory_summary", "reset_max_memory_allocated",
    "reset_peak_memory_stats", "seed", "seed_all", "set_device", "set_rng_state", "stream",
    "synchronize",
)
#: torch.cuda.amp names the mode answers.
MAPPED_AMP = ("GradScaler", "autocast", "custom_bwd", "custom_fwd")
#: memory_stats() keys with an equivalent in the backend's MemoryInfo.
STATS_KEYS = {"allocated_bytes.all.current": "allocated", "allocated_bytes.all.peak": "peak",
              "reserved_bytes.all.current": "reserved"}


class Refused:
    """A public torch.cuda name with no equivalent here: raises one line when called or entered."""

    def __init__(self, target: Target, call: str) -> None:
        self._target, self._call = target, call

    def __getattr__(self, name: str) -> Refused:
        if name.startswith("__"):
            raise AttributeError(name)
        return Refused(self._target, f"{self._call}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._target.refuse(self._call)

    def __enter__(self) -> Any:
        raise self._target.refuse(self._call)

    def __exit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{self._call}: no equivalent on {self._target.where}>"


def refused_class(target: Target, call: str) -> type:
    """A class name with no equivalent (``torch.cuda.CUDAGraph``): a real class, so annotations
    (``CUDAGraph | None``) and ``isinstance`` work, that refuses to be instantiated."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise target.refuse(call)

    return type(call.rsplit(".", 1)[-1], (), {
        "__init__": __init__, "__module__": call.rsplit(".", 1)[0],
        "__doc__": f"{call}: no equivalent on {target.where} (hal's cuda-compat mode)"})


class Stats(dict):  # type: ignore[type-arg]
    """memory_stats(): the keys the backend has; any other key is refused, not defaulted."""

    def __init__(self, target: Target, values: dict[str, int]) -> None:
        super().__init__(values)
        self._target = target

    def __missing__(self, key: str) -> Any:
        raise self._target.refuse(f"torch.cuda.memory_stats()[{key!r}]",
                                  f"only {', '.join(sorted(STATS_KEYS))} have an equivalent")

    def get(self, key: str, default: Any = None) -> Any:
        return self[key]


class Properties:
    """get_device_properties(): name and total_memory; CUDA-only fields are refused."""

    def __init__(self, target: Target, name: str, total_memory: int) -> None:
        self._target, self.name, self.total_memory = target, name, total_memory

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise self._target.refuse(f"torch.cuda.get_device_properties().{name}",
                                  "only name and total_memory have an equivalent; ask "
                                  "hal.get_backend().devices() for what the backend reports")

    def __repr__(self) -> str:
        return f"_DeviceProperties(name={self.name!r}, total_memory={self.total_memory})"


def _host_event_class(target: Target) -> type:
    """torch.cpu.Event with elapsed_time: host work is synchronous, so record() time is done time."""
    import torch

    class HostEvent(torch.cpu.Event):  # type: ignore[misc]
        def __init__(self, enable_timing: bool = False, blocking: bool = False,
                     interprocess: bool = False) -> None:
            super().__init__()
            self._timing = enable_timing
            self._at: float | None = None

        def record(self, stream: Any = None) -> None:
            super().record(stream)
            self._at = time.perf_counter()

        def elapsed_time(self, end: Any) -> float:
            if not (self._timing and getattr(end, "_timing", False)):
                raise target.refuse("torch.cuda.Event.elapsed_time",
                                    "create both events with enable_timing=True")
            if self._at is None or end._at is None:
                raise target.refuse("torch.cuda.Event.elapsed_time",
                                    "record() both events first")
            return float((end._at - self._at) * 1000.0)

    return HostEvent


def build(target: Target, real: types.ModuleType, autocast: type,
          grad_scaler: type) -> tuple[types.ModuleType, types.ModuleType]:
    """The stand-in ``torch.cuda`` and ``torch.cuda.amp`` modules for ``target``."""
    import torch

    t = target
    module = t.device_module()

    def mem(call: str) -> Callable[..., int]:
        def read(device: Any = None) -> int:
            return int(getattr(t.memory(device, f"torch.cuda.{call}"), field))
        field = {"memory_allocated": "allocated", "max_memory_allocated": "peak",
                 "memory_reserved": "reserved", "memory_cached": "reserved"}[call]
        read.__name__ = call
        read.__doc__ = f"torch.cuda.{call} as the backend's MemoryInfo.{field}."
        return read

    def mem_get_info(device: Any = None) -> tuple[int, int]:
        info = t.memory(device, "torch.cuda.mem_get_info")
        if info.total <= 0:
            raise t.refuse("torch.cuda.mem_get_info", f"{t.backend.name} does not report "
                           f"total/free memory ({info.source})")
        return int(info.free), int(info.total)

    def memory_stats(device: Any = None) -> Stats:
        info = t.memory(device, "torch.cuda.memory_stats")
        return Stats(t, {key: int(getattr(info, f)) for key, f in STATS_KEYS.items()})

    def memory_summary(device: Any = None, abbreviated: bool = False) -> str:
        from hal.memory import summary

        t.memory(device, "torch.cuda.memory_summary")  # refuses where nothing is reported
        return summary(t.backend if t.host else t.checked(device, "torch.cuda.memory_summary"))

    def reset_peak(device: Any = None) -> None:
        t.backend.reset_peak_memory(t.checked(device, "torch.cuda.reset_peak_memory_stats"))

    def device_count() -> int:
        return t.count

    def current_device() -> int:
        return t.index

    def set_device(device: Any) -> None:
        t.set_index(t.index_of(device, "torch.cuda.set_device"), "torch.cuda.set_device")

    class device_ctx:
        """torch.cuda.device(N): make N current inside the block."""

        def __init__(self, device: Any) -> None:
            self.idx = -1 if device is None or (isinstance(device, int) and device < 0) else \
                t.index_of(device, "torch.cuda.device")
            self.prev = t.index

        def __enter__(self) -> None:
            self.prev = t.index
            if self.idx >= 0:
                t.set_index(self.idx, "torch.cuda.device")

        def __exit__(self, *exc: object) -> None:
            if self.idx >= 0:
                t.set_index(self.prev, "torch.cuda.device")

    def synchronize(device: Any = None) -> None:
        t.backend.synchronize(None if t.host else t.checked(device, "torch.cuda.synchronize"))

    def empty_cache() -> None:
        t.backend.empty_cache()

    def get_device_name(device: Any = None) -> str:
        index = t.checked(device, "torch.cuda.get_device_name")
        return str(t.backend.devices()[index].name)

    def get_device_capability(device: Any = None) -> tuple[int, int]:
        # No compute capability (one vendor's GPU version): (0, 0) fails every
        # ``>= (major, minor)`` feature check, so a library takes its portable path.
        t.checked(device, "torch.cuda.get_device_capability")
        return (0, 0)

    def get_device_properties(device: Any = None) -> Properties:
        index = t.checked(device, "torch.cuda.get_device_properties")
        info = t.backend.devices()[index]
        return Properties(t, str(info.name), int(info.total_memory))

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        import torch

        native = list(t.backend.dtypes(t.checked(None, "torch.cuda.is_bf16_supported")))
        emulated = list(t.backend.emulated_dtypes(0)) if including_emulation else []
        return torch.bfloat16 in native or torch.bfloat16 in emulated

    def from_module(name: str, host: Callable[..., Any] | None = None) -> Callable[..., Any]:
        """The backend device module's ``name`` (``host`` on the CPU), else a refusal."""
        fn = host if t.host and host is not None else getattr(module, name, None)
        if fn is None:
            return Refused(t, f"torch.cuda.{name}")
        return fn  # type: ignore[no-any-return]

    def current_stream(device: Any = None) -> Any:
        if t.host:
            return torch.cpu.current_stream()
        return torch.accelerator.current_stream(t.checked(device, "torch.cuda.current_stream"))

    def default_stream(device: Any = None) -> Any:
        if t.host:
            return torch.cpu.current_stream()  # the host has one stream
        fn = getattr(module, "default_stream", None)
        if fn is None:
            raise t.refuse("torch.cuda.default_stream")
        return fn(t.checked(device, "torch.cuda.default_stream"))

    def stream_class() -> Any:
        if t.host:
            return torch.cpu.Stream
        cls = getattr(module, "Stream", None)
        return cls if cls is not None else Refused(t, "torch.cuda.Stream")

    def event_class() -> Any:
        if t.host:
            return _host_event_class(t)
        cls = getattr(module, "Event", None)
        return cls if cls is not None else Refused(t, "torch.cuda.Event")

    @contextmanager
    def stream(s: Any) -> Iterator[None]:
        if s is None or t.host:
            yield
            return
        ctx = getattr(module, "stream", None)
        if ctx is None:
            raise t.refuse("torch.cuda.stream")
        with ctx(s):
            yield

    def custom_fwd(fwd: Any = None, *, cast_inputs: Any = None) -> Any:
        return torch.amp.custom_fwd(fwd, device_type=t.device_type, cast_inputs=cast_inputs)

    def custom_bwd(bwd: Any = None) -> Any:
        return torch.amp.custom_bwd(bwd, device_type=t.device_type)

    def cuda_amp_autocast(enabled: bool = True, dtype: Any = None,
                          cache_enabled: bool = True) -> Any:
        return autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    def cuda_amp_scaler(init_scale: float = 2.0**16, growth_factor: float = 2.0,
                        backoff_factor: float = 0.5, growth_interval: int = 2000,
                        enabled: bool = True) -> Any:
        return grad_scaler("cuda", init_scale, growth_factor, backoff_factor, growth_interval,
                           enabled)

    amp = _Namespace("torch.cuda.amp", t, real.amp, {
        "autocast": cuda_amp_autocast, "GradScaler": cuda_amp_scaler,
        "custom_fwd": custom_fwd, "custom_bwd": custom_bwd})
    # The host's generator itself: torch.manual_seed calls torch.cuda.manual_seed_all back.
    host_gen = torch.default_generator
    rng_state = from_module("get_rng_state", torch.get_rng_state)
    mapped: dict[str, Any] = {
        "is_available": lambda: True,
        "is_initialized": lambda: True,
        "init": lambda: None,
        "device_count": device_count,
        "current_device": current_device,
        "set_device": set_device,
        "device": device_ctx,
        "synchronize": synchronize,
        "empty_cache": empty_cache,
        "ipc_collect": lambda: None,  # memory shared with other processes: none off CUDA
        "memory_allocated": mem("memory_allocated"),
        "max_memory_allocated": mem("max_memory_allocated"),
        "memory_reserved": mem("memory_reserved"),
        "memory_cached": mem("memory_cached"),
        "mem_get_info": mem_get_info,
        "memory_stats": memory_stats,
        "memory_summary": memory_summary,
        "reset_peak_memory_stats": reset_peak,
        "reset_max_memory_allocated": reset_peak,
        "get_device_capability": get_device_capability,
        "get_device_name": get_device_name,
        "get_device_properties": get_device_properties,
        "is_bf16_supported": is_bf16_supported,
        "is_tf32_supported": lambda: False,  # TF32 is one vendor's format: no other device has it
        "manual_seed": from_module("manual_seed", host_gen.manual_seed),
        "manual_seed_all": from_module("manual_seed_all", host_gen.manual_seed),
        "seed": from_module("seed", host_gen.seed),
        "seed_all": from_module("seed_all", host_gen.seed),
        "initial_seed": from_module("initial_seed", host_gen.initial_seed),
        "get_rng_state": rng_state,
        "set_rng_state": from_module("set_rng_state", torch.set_rng_state),
        "Stream": stream_class(),
        "StreamContext": stream,
        "Event": event_class(),
        "current_stream": current_stream,
        "default_stream": default_stream,
        "stream": stream,
        "OutOfMemoryError": torch.OutOfMemoryError,
        "amp": amp,
    }
    assert set(mapped) == set(MAPPED), sorted(set(mapped) ^ set(MAPPED))
    return _Namespace("torch.cuda", t, real, mapped), amp


class _Namespace(types.ModuleType):
    """A stand-in module: mapped names, then the real module's private names, else ``Refused``."""

    def __init__(self, name: str, target: Target, real: types.ModuleType,
                 mapped: dict[str, Any]) -> None:
        super().__init__(name, f"{name} mapped to {target.where} by hal's cuda-compat mode")
        self.__dict__.update(mapped)
        self.__dict__["_hal_real"] = real
        self.__dict__["_hal_target"] = target
        self.__dict__["__path__"] = getattr(real, "__path__", [])
        self.__dict__["__file__"] = getattr(real, "__file__", None)

    def __getattr__(self, name: str) -> Any:
        real = self.__dict__["_hal_real"]
        if name.startswith("_"):
            return getattr(real, name)
        target, call = self.__dict__["_hal_target"], f"{self.__name__}.{name}"
        value = refused_class(target, call) if name[:1].isupper() else Refused(target, call)
        self.__dict__[name] = value  # one object per name, as a module attribute is
        return value
