"""The mode's patches: the entry points that take a device, and the few CUDA-named ones.

Devices: torch's device-constructor list (``torch.utils._device``) and the ``*_like`` factories,
``Tensor.to``/``.cuda``/``.pin_memory``/``new_*`` and ``DeviceContext`` map a "cuda" device to the
target; a TorchFunctionMode would catch every call without a list, but costs a Python call per
torch operation (0.5-0.8 of native speed on small CPU models, docs/cuda-compat.md).  Then
``torch.cuda`` (module attribute and ``sys.modules``), ``torch.autocast``/``torch.amp.autocast``,
``torch.amp.GradScaler``, ``torch.load``'s ``map_location``, the process-group backend name and
DDP's ``device_ids``.  Every replacement is recorded in ``Patches`` so ``disable()`` undoes it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hal.cuda_compat._target import Target

#: The device type and collective names CUDA-only code writes.
SOURCE_TYPE = "cuda"
SOURCE_COLLECTIVES = ("nccl",)


@dataclass
class Patches:
    """Every (object, attribute, original) the mode replaced, undone last-first."""

    done: list[tuple[Any, str, Any, bool]] = field(default_factory=list)

    def set(self, owner: Any, name: str, value: Any) -> None:
        """Replace ``owner.name`` (a module, class or mapping such as ``os.environ``) by ``value``,
        remembering the original."""
        if isinstance(owner, MutableMapping):
            had = name in owner
            self.done.append((owner, name, owner.get(name), had))
            owner[name] = value
            return
        had = name in vars(owner)
        self.done.append((owner, name, vars(owner).get(name), had))
        setattr(owner, name, value)

    def undo(self) -> None:
        """Put every replaced object back (deleting what was not there before)."""
        while self.done:
            owner, name, original, had = self.done.pop()
            if isinstance(owner, MutableMapping):
                if had:
                    owner[name] = original
                else:
                    owner.pop(name, None)
            elif had:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def is_source(value: Any) -> bool:
    """Is ``value`` a "cuda" device: ``"cuda"``, ``"cuda:N"`` or ``torch.device("cuda"[, N])``."""
    if isinstance(value, str):
        return value == SOURCE_TYPE or value.startswith(SOURCE_TYPE + ":")
    return getattr(value, "type", None) == SOURCE_TYPE and type(value).__name__ == "device"


def device_mapper(target: Target) -> Callable[[Any], Any]:
    """value -> the target device for a "cuda" device, else the value itself (cached per value)."""
    import torch

    cache: dict[Any, Any] = {}

    def mapped(value: Any) -> Any:
        if not is_source(value):
            return value
        hit = cache.get(value)
        if hit is None:
            dev = torch.device(value)
            hit = cache[value] = target.device(dev.index)
        return hit

    return mapped


def device_entry_points() -> tuple[list[str], list[str]]:
    """The torch functions and Tensor methods that take a device, found by torch's own rules.

    Functions: torch's device-constructor list (``torch.utils._device``, what
    ``torch.set_default_device`` redirects) plus the ``*_like`` factories; methods: ``to``,
    ``cuda``, ``pin_memory`` and the ``new_*`` factories.
    """
    import torch
    from torch.utils._device import _device_constructors

    ctors = _device_constructors()
    functions = sorted(name for name, fn in vars(torch).items()
                       if callable(fn) and not name.startswith("_")
                       and (fn in ctors or name.endswith("_like")))
    methods = sorted(["to", "cuda", "pin_memory",
                      *(n for n in vars(torch._C.TensorBase) if n.startswith("new_"))])
    return functions, methods


def wrap_factory(fn: Callable[..., Any], mapped: Callable[[Any], Any]) -> Callable[..., Any]:
    """A torch factory whose ``device="cuda..."`` means the target."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        dev = kwargs.get("device")
        if dev is not None and is_source(dev):
            kwargs["device"] = mapped(dev)
        return fn(*args, **kwargs)

    return call


def wrap_to(fn: Callable[..., Any], mapped: Callable[[Any], Any]) -> Callable[..., Any]:
    """Tensor.to with a "cuda" device, positional or keyword, meaning the target."""
    @functools.wraps(fn)
    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args and is_source(args[0]):
            args = (mapped(args[0]), *args[1:])
        dev = kwargs.get("device")
        if dev is not None and is_source(dev):
            kwargs["device"] = mapped(dev)
        return fn(self, *args, **kwargs)

    return to


def wrap_cuda(target: Target, to: Callable[..., Any]) -> Callable[..., Any]:
    """Tensor.cuda(device=None, non_blocking=False, ...) as ``.to()`` the target device."""
    import torch

    def cuda(self: Any, device: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
        index = device if isinstance(device, int) or device is None else torch.device(device).index
        return to(self, target.device(index), non_blocking=non_blocking, **kwargs)

    cuda.__doc__ = f"Tensor.cuda mapped to {target.where} by hal's cuda-compat mode."
    return cuda


def wrap_device_context(init: Callable[..., Any], mapped: Callable[[Any], Any]) -> Callable[..., Any]:
    """torch.utils._device.DeviceContext (``with torch.device("cuda")``, set_default_device)."""
    @functools.wraps(init)
    def call(self: Any, device: Any) -> None:
        init(self, mapped(device))

    return call


def precision_kwargs(target: Target, enabled: bool) -> tuple[Any, bool]:
    """(dtype, enabled) of hal's precision policy for an autocast CUDA code asked for."""
    from hal.precision import PRECISION_ENV

    dtype = _autocast_dtype(target, target.index, os.environ.get(PRECISION_ENV))
    return dtype, bool(enabled and dtype is not None)


@functools.lru_cache(maxsize=64)
def _autocast_dtype(target: Target, index: int, requested: str | None) -> Any:
    """The policy's autocast dtype for the target's device ``index``, per HAL_PRECISION value
    (asked once each; hal's policy would warn once per value anyway)."""
    from hal.precision import policy

    return policy(target.backend if target.host else target.device(index),
                  requested=requested).autocast_dtype


def forget_targets() -> None:
    """Drop the cached autocast dtypes, and with them the targets they hold (on ``disable()``)."""
    _autocast_dtype.cache_clear()


def autocast_class(target: Target, original: type) -> type:
    """torch.autocast whose "cuda" means the target, in the precision hal's policy picks."""

    class autocast(original):  # type: ignore[misc, valid-type]
        __doc__ = original.__doc__

        def __init__(self, device_type: str, dtype: Any = None, enabled: bool = True,
                     cache_enabled: bool | None = None) -> None:
            if device_type == SOURCE_TYPE:
                device_type = target.device_type
                dtype, enabled = precision_kwargs(target, enabled)
            super().__init__(device_type, dtype=dtype, enabled=enabled,
                             cache_enabled=cache_enabled)

    autocast.__qualname__ = autocast.__name__ = original.__name__
    autocast.__module__ = original.__module__
    return autocast


def scaler_class(target: Target, original: type) -> type:
    """torch.amp.GradScaler whose "cuda" means the target, enabled only for an fp16 policy."""

    class GradScaler(original):  # type: ignore[misc, valid-type]
        __doc__ = original.__doc__

        def __init__(self, device: str = SOURCE_TYPE, init_scale: float = 2.0**16,
                     growth_factor: float = 2.0, backoff_factor: float = 0.5,
                     growth_interval: int = 2000, enabled: bool = True) -> None:
            if device == SOURCE_TYPE:
                from hal.precision import policy

                pol = policy(target.backend if target.host else target.device(target.index))
                device, enabled = target.device_type, bool(enabled and pol.needs_scaler)
            super().__init__(device, init_scale, growth_factor, backoff_factor,
                             growth_interval, enabled)

    GradScaler.__qualname__ = GradScaler.__name__ = original.__name__
    GradScaler.__module__ = original.__module__
    return GradScaler


def collective_name(target: Target, backend: Any) -> Any:
    """"nccl" (alone or in "cuda:nccl,cpu:gloo") -> the target's collective library."""
    if not isinstance(backend, str):
        return backend
    want = target.backend.dist_backend
    parts = []
    for part in backend.split(","):
        kind, sep, name = part.rpartition(":")
        lib = name.strip().lower()
        if lib in SOURCE_COLLECTIVES:
            if kind.strip() in (SOURCE_TYPE, ""):
                if not sep:
                    return want
                kind = target.device_type
            lib = want
        parts.append(f"{kind}{sep}{lib}" if sep else lib)
    seen: dict[str, str] = {}
    for p in parts:  # "cuda:nccl,cpu:gloo" on the host: one entry per device type
        seen.setdefault(p.partition(":")[0] if ":" in p else p, p)
    return ",".join(seen.values())


def wrap_collectives(target: Target, fn: Callable[..., Any]) -> Callable[..., Any]:
    """init_process_group/new_group with "nccl" mapped and a "cuda" ``device_id`` bound."""
    mapped = device_mapper(target)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if args:
            args = (collective_name(target, args[0]), *args[1:])
        if "backend" in kwargs:
            kwargs["backend"] = collective_name(target, kwargs["backend"])
        if is_source(kwargs.get("device_id")):
            kwargs["device_id"] = None if target.host else mapped(kwargs["device_id"])
        return fn(*args, **kwargs)

    return call


def wrap_ddp_init(target: Target, init: Callable[..., Any]) -> Callable[..., Any]:
    """DistributedDataParallel.__init__ with ``device_ids``/``output_device`` given as CUDA code does."""
    import torch

    def index(value: Any) -> Any:
        return torch.device(value).index if is_source(value) else value

    @functools.wraps(init)
    def call(self: Any, module: Any, device_ids: Any = None, output_device: Any = None,
             *args: Any, **kwargs: Any) -> None:
        if target.host:  # DDP takes no device ids for a host module
            device_ids = output_device = None
        else:
            device_ids = None if device_ids is None else [index(d) for d in device_ids]
            output_device = index(output_device)
        init(self, module, device_ids, output_device, *args, **kwargs)

    return call


def wrap_load(target: Target, load: Callable[..., Any]) -> Callable[..., Any]:
    """torch.load with a "cuda" ``map_location`` (a device, or a dict's values) mapped."""
    mapped = device_mapper(target)

    @functools.wraps(load)
    def call(*args: Any, **kwargs: Any) -> Any:
        loc = kwargs.get("map_location", args[1] if len(args) > 1 else None)
        if isinstance(loc, dict):
            loc = {k: str(mapped(v)) if is_source(v) else v for k, v in loc.items()}
        elif is_source(loc):
            loc = mapped(loc)
        if len(args) > 1:
            args = (args[0], loc, *args[2:])
        elif "map_location" in kwargs:
            kwargs["map_location"] = loc
        return load(*args, **kwargs)

    return call


def wrap_method(fn: Callable[..., Any], mapped: Callable[[Any], Any]) -> Callable[..., Any]:
    """A Tensor ``new_*`` factory whose ``device="cuda..."`` means the target."""
    @functools.wraps(fn)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        dev = kwargs.get("device")
        if dev is not None and is_source(dev):
            kwargs["device"] = mapped(dev)
        return fn(self, *args, **kwargs)

    return call


class InChild:
    """A ``torch.multiprocessing.spawn`` target that enables the mode in the child first: spawned
    children are fresh interpreters, and a CUDA-only script's workers need the mapping too."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from hal.cuda_compat import enable

        enable(quiet=True)
        return self.fn(*args, **kwargs)


def wrap_start_processes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """torch.multiprocessing's start_processes with each child's function run under the mode."""
    @functools.wraps(fn)
    def call(target_fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(InChild(target_fn), *args, **kwargs)

    return call


def install(target: Target, patches: Patches) -> None:
    """Apply every patch for ``target``, each recorded in ``patches``."""
    import torch
    import torch.amp
    import torch.distributed as dist
    import torch.multiprocessing
    import torch.nn.parallel

    from hal.cuda_compat._namespace import build

    autocast = autocast_class(target, torch.amp.autocast_mode.autocast)
    scaler = scaler_class(target, torch.amp.GradScaler)
    real = sys.modules["torch.cuda"]
    namespace, amp = build(target, real, autocast, scaler)
    patches.set(torch, "cuda", namespace)
    patches.set(sys.modules, "torch.cuda", namespace)
    patches.set(sys.modules, "torch.cuda.amp", amp)
    patches.set(torch, "autocast", autocast)
    patches.set(torch.amp, "autocast", autocast)
    patches.set(torch.amp, "GradScaler", scaler)
    patches.set(torch, "load", wrap_load(target, torch.load))
    if "USE_HUB_KERNELS" not in os.environ:
        # transformers fetches CUDA kernels from the Hub for a model on "cuda" (its `kernels`
        # dependency): they cannot run on the target device, so its portable layers are kept.
        patches.set(os.environ, "USE_HUB_KERNELS", "NO")
    if dist.is_available():
        for name in ("init_process_group", "new_group"):
            patches.set(dist, name, wrap_collectives(target, getattr(dist, name)))
        want = target.backend.dist_backend
        patches.set(dist, "is_nccl_available", lambda: dist.is_backend_available(want))
        ddp = torch.nn.parallel.DistributedDataParallel
        patches.set(ddp, "__init__", wrap_ddp_init(target, ddp.__init__))
    mapped = device_mapper(target)
    functions, methods = device_entry_points()
    for name in functions:
        patches.set(torch, name, wrap_factory(getattr(torch, name), mapped))
    for name in methods:
        method = getattr(torch.Tensor, name)
        if name == "cuda":
            patches.set(torch.Tensor, name, wrap_cuda(target, torch.Tensor.to))
        elif name == "pin_memory" and target.host:
            patches.set(torch.Tensor, name, lambda self, *a, **k: self)  # no device to copy to
        else:
            patches.set(torch.Tensor, name, (wrap_to if name == "to" else wrap_method)(method, mapped))
    spawn = sys.modules["torch.multiprocessing.spawn"]  # spawn() calls this module's global
    starter = wrap_start_processes(spawn.start_processes)
    patches.set(spawn, "start_processes", starter)
    patches.set(torch.multiprocessing, "start_processes", starter)
    context = torch.utils._device.DeviceContext
    patches.set(context, "__init__", wrap_device_context(context.__init__, mapped))
