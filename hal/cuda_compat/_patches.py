"""The mode's patches: a TorchFunctionMode for devices, and the few entry points torch calls no hook for.

Device strings and ``torch.device("cuda"[, N])`` reach torch functions and Tensor methods
(factories, ``.to()``, ``.cuda()``, ``new_*``) through ``__torch_function__``, so no list of
function names is kept.  What torch offers no hook for is patched by attribute and recorded in
``Patches`` so ``disable()`` puts every object back: ``torch.cuda`` (module attribute and
``sys.modules``), ``torch.autocast``/``torch.amp.autocast``, ``torch.amp.GradScaler``,
``torch.load``'s ``map_location``, the process-group backend name and DDP's ``device_ids``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
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
        """Replace ``owner.name`` (a module, class or dict) by ``value``, remembering the original."""
        if isinstance(owner, dict):
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
            if isinstance(owner, dict):
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


def make_mode(target: Target) -> Any:
    """A TorchFunctionMode that maps "cuda" devices in every torch call's arguments."""
    import torch
    from torch.overrides import TorchFunctionMode

    mapped = device_mapper(target)
    tensor_cuda = torch.Tensor.cuda
    pin = torch.Tensor.pin_memory
    device_type = torch.device

    class CudaCompatMode(TorchFunctionMode):
        """Rewrites "cuda" devices to hal's selected device; every other call passes through."""

        def __torch_function__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            if kwargs:
                dev = kwargs.get("device")
                if dev is not None and is_source(dev):
                    kwargs = {**kwargs, "device": mapped(dev)}
            else:
                kwargs = {}
            if func is device_type:  # torch.device("cuda"[, N]) itself goes through the mode
                made = func(*args, **kwargs)
                return target.device(made.index) if made.type == SOURCE_TYPE else made
            if func is tensor_cuda:
                tensor, *rest = args
                where = rest[0] if rest else kwargs.pop("device", None)
                index = where if isinstance(where, int) else (
                    None if where is None else device_type(where).index)
                return tensor.to(target.device(index), **kwargs)
            if func is pin and target.host:
                return args[0]  # host memory is already where a host device reads it
            for i, arg in enumerate(args):
                if (arg.__class__ is str or arg.__class__ is device_type) and is_source(arg):
                    args = (*args[:i], mapped(arg), *args[i + 1:])
            return func(*args, **kwargs)

    return CudaCompatMode()


def precision_kwargs(target: Target, enabled: bool) -> tuple[Any, bool]:
    """(dtype, enabled) of hal's precision policy for an autocast CUDA code asked for."""
    from hal.precision import policy

    pol = policy(target.backend if target.host else target.device(target.index))
    return pol.autocast_dtype, bool(enabled and pol.autocast_dtype is not None)


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


def install(target: Target, patches: Patches) -> Any:
    """Apply every patch for ``target``; returns the entered TorchFunctionMode."""
    import torch
    import torch.amp
    import torch.distributed as dist
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
    if dist.is_available():
        for name in ("init_process_group", "new_group"):
            patches.set(dist, name, wrap_collectives(target, getattr(dist, name)))
        want = target.backend.dist_backend
        patches.set(dist, "is_nccl_available", lambda: dist.is_backend_available(want))
        ddp = torch.nn.parallel.DistributedDataParallel
        patches.set(ddp, "__init__", wrap_ddp_init(target, ddp.__init__))
    mode = make_mode(target)
    mode.__enter__()
    return mode
