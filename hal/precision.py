"""Mixed precision that means the same on every backend: policy, autocast, grad_scaler.

The policy is grounded in what the backend runs natively (``Backend.dtypes``) and in what is
faster than fp32 there.  Rule, in order:

1. ``HAL_PRECISION=fp32|fp16|bf16`` forces a dtype: an error when the device cannot run it,
   a warning when it only emulates it (``emulated_dtypes``, below); ``auto`` (the default)
   applies 2-4.
2. bf16 when it is native and fast: no gradient scaler needed, fp32's exponent range.
3. fp16 with a gradient scaler when bf16 is not, and fp16 is native and fast.
4. fp32 otherwise.

"Fast" comes from the optional backend method ``fast_dtypes(index)`` (the native dtypes
that beat fp32 there).  Without it, an accelerator's native dtypes count as fast, and a host
CPU's are measured once per process (a bf16 vs fp32 matmul, kept when at least
``HOST_SPEEDUP`` times faster), because a CPU's bf16 instructions alone do not make bf16
pay (see docs/memory-precision-batching.md and bench/bench_precision.py).

Optional backend method ``emulated_dtypes(index)``: dtypes the device runs, but only by
emulation (slow); requesting one warns.  Anything neither native nor emulated is an error.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal import dtypes
from hal.contract import Backend
from hal.errors import ConfigError, HalPrecisionWarning
from hal.selection import compiling, select
from hal.selection import outside_trace as _outside_trace

if TYPE_CHECKING:
    import torch

PRECISION_ENV = "HAL_PRECISION"
#: HAL_PRECISION values: auto and the registry's compute dtypes (aliases parse through hal.dtypes).
ACCEPTED = ("auto", *dtypes.names(dtypes.COMPUTE))
#: A host CPU's low-precision dtype is used by ``auto`` only if a matmul in it beats fp32 by this.
HOST_SPEEDUP = 1.5


@dataclass(frozen=True)
class Policy:
    """The precision to train or serve with on one device, and why."""

    compute_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    needs_scaler: bool
    reason: str
    device_type: str
    requested: str = "auto"

    @property
    def name(self) -> str:
        """Short name of the compute dtype: fp32, fp16 or bf16."""
        return _short(self.compute_dtype)


def _short(dtype: torch.dtype) -> str:
    return dtypes.short(dtype)


def parse_precision(value: str | None) -> str:
    """Normalise a HAL_PRECISION value to auto|fp32|fp16|bf16 (any alias hal.dtypes knows)."""
    if value is None or value.strip().lower() == "auto":
        return "auto"
    entry = dtypes.lookup(value)
    shown = value if len(value) <= 40 else value[:37] + "..."
    if entry is not None and entry.has(dtypes.COMPUTE):
        return entry.short
    if entry is not None:
        raise ConfigError(
            f"{PRECISION_ENV}={shown!r} is not a mixed-precision compute dtype; "
            f"accepted: {', '.join(ACCEPTED)}")
    raise ConfigError(f"{PRECISION_ENV}={shown!r} is not a precision; accepted: "
                      f"{', '.join(ACCEPTED)}")


def _optional(backend: Backend, method: str, index: int) -> list[torch.dtype] | None:
    fn: Callable[[int], Sequence[torch.dtype] | None] | None = getattr(backend, method, None)
    if fn is None or not callable(fn):
        return None
    result = fn(index)
    return None if result is None else list(result)


_measured: dict[tuple[str, int], tuple[float, str]] = {}
_measure_lock = threading.Lock()


def measure_host_speedup(dtype: str | torch.dtype, size: int = 256, repeats: int = 5) -> float:
    """fp32 matmul time over ``dtype`` matmul time on one host core (best of ``repeats``);
    ``dtype`` is any matmul dtype name hal.dtypes knows, or a torch.dtype."""
    import torch

    dtype = dtypes.to_torch(dtypes.parse(dtype, role=dtypes.MATMUL, what="dtype"))

    def once(x: torch.Tensor) -> float:
        start = time.perf_counter()
        for _ in range(3):
            x @ x
        return time.perf_counter() - start

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = a.to(dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-core speed: a busy machine's thread contention is not the dtype
    try:
        once(a), once(b)  # warm-up: kernels, packing
        slow, fast = [], []
        for _ in range(repeats):  # interleaved, so a busy neighbour slows both alike
            slow.append(once(a))
            fast.append(once(b))
    finally:
        torch.set_num_threads(threads)
    return min(slow) / min(fast)


def _fast(backend: Backend, index: int, native: Sequence[torch.dtype]) -> tuple[list[Any], str]:
    """The native low-precision dtypes that beat fp32 here, and how that is known."""
    import torch

    declared = _optional(backend, "fast_dtypes", index)
    if declared is not None:
        return [d for d in declared if d in native], "the backend's fast_dtypes"
    if backend.device_type != "cpu":
        return list(native), "native on an accelerator"
    fast: list[Any] = []
    notes = []
    for dtype in (torch.bfloat16, torch.float16):
        if dtype not in native:
            continue
        key = (str(dtype), index)
        with _measure_lock:
            if key not in _measured:
                ratio = measure_host_speedup(dtype)
                _measured[key] = (ratio, f"{_short(dtype)} matmul {ratio:.2f}x fp32 (measured)")
        ratio, note = _measured[key]
        notes.append(note)
        if ratio >= HOST_SPEEDUP:
            fast.append(dtype)
    return fast, "; ".join(notes) or "no low-precision dtype is native"


def _resolve_device(device: Any) -> tuple[Backend, int]:
    if device is None:
        sel = select()
        return sel.backend, sel.index or 0
    from hal.memory import resolve_device

    return resolve_device(device)


# (HAL_PRECISION, id(backend), index) -> (backend, policy); holding the backend keeps its id
# from being reused by another object.
_policies: dict[tuple[str | None, int, int], tuple[Backend, Policy]] = {}


def policy(device: Any = None, *, requested: str | None = None) -> Policy:
    """The precision policy of ``device`` (default: the selected one); see the module doc.

    Cached per (HAL_PRECISION value, backend, index), so an emulation warning is given once.
    """
    backend, index = _resolve_device(device)
    raw = os.environ.get(PRECISION_ENV) if requested is None else requested
    key = (raw, id(backend), index)
    cached = _policies.get(key)
    if cached is not None and cached[0] is backend:
        return cached[1]
    result = _policy(backend, index, raw)
    _policies[key] = (backend, result)
    return result


def _policy(backend: Backend, index: int, raw: str | None) -> Policy:
    import torch

    want = parse_precision(raw)
    native = list(backend.dtypes(index))
    dt = backend.device_type
    names = ", ".join(_short(d) for d in native)
    if want != "auto":
        dtype = dtypes.to_torch(want)
        scaler = dtype == torch.float16
        autocast = None if dtype == torch.float32 else dtype
        if dtype == torch.float32 or dtype in native:
            return Policy(dtype, autocast, scaler,
                          f"{PRECISION_ENV}={want}: native on {backend.name}", dt, want)
        emulated = _optional(backend, "emulated_dtypes", index) or []
        if dtype in emulated:
            warnings.warn(
                f"{PRECISION_ENV}={want}: {backend.name} runs {want} only by emulation "
                f"(slower than native; native: {names})", HalPrecisionWarning, stacklevel=2)
            return Policy(dtype, autocast, scaler,
                          f"{PRECISION_ENV}={want}: emulated on {backend.name}", dt, want)
        raise ConfigError(
            f"{PRECISION_ENV}={want}: {backend.name} cannot run {want}; its native dtypes "
            f"are {names}; use one of them or {PRECISION_ENV}=auto")
    fast, how = _fast(backend, index, native)
    if torch.bfloat16 in native and torch.bfloat16 in fast:
        return Policy(torch.bfloat16, torch.bfloat16, False,
                      f"bf16 is native and fast on {backend.name} ({how})", dt)
    if torch.float16 in native and torch.float16 in fast:
        return Policy(torch.float16, torch.float16, True,
                      f"fp16 with a gradient scaler: bf16 is not native and fast on "
                      f"{backend.name}, fp16 is ({how})", dt)
    return Policy(torch.float32, None, False,
                  f"fp32: no low-precision dtype is both native and faster on {backend.name} "
                  f"(native: {names}; {how})", dt)


def autocast_dtype(value: object) -> torch.dtype:
    """The ``torch.dtype`` for an autocast ``dtype`` argument: any name hal.dtypes knows
    (``'bf16'``, ``'float16'``) or a torch.dtype, autocast ones or fp32 (autocast off); anything
    else (``'float64'``, ``torch.int8``, ``42``) is a one-line ConfigError naming those."""
    entry = dtypes.parse(value, what="autocast dtype")
    if entry.short != "fp32" and not entry.has(dtypes.AUTOCAST):
        accepted = ", ".join(dtypes.names(dtypes.AUTOCAST))
        raise ConfigError(f"autocast dtype {dtypes.short(value)[:40]!r} is not an autocast dtype; "
                          f"expected one of: {accepted} (or fp32 for no autocast)")
    return dtypes.to_torch(entry)


def autocast(dtype: str | torch.dtype | None = None, *, device: Any = None,
             enabled: bool = True) -> AbstractContextManager[Any]:
    """``torch.autocast`` for the selected device with the policy's dtype (or ``dtype``, a hal or
    torch name or a torch.dtype; see ``autocast_dtype``); a no-op for fp32."""
    if dtype is None and device is None and compiling():
        # Decided outside the trace; reading HAL_PRECISION here, in the trace, makes Dynamo guard
        # on it, so a change recompiles (docs/torch-compile.md).
        short, device_type = _policy_outside_trace(os.environ.get(PRECISION_ENV))
        dtype = dtypes.to_torch(short) if short else None
    elif dtype is None:
        pol = policy(device)
        dtype, device_type = pol.autocast_dtype, pol.device_type
    else:
        dtype = autocast_dtype(dtype)
        device_type = _resolve_device(device)[0].device_type
    import torch

    if dtype is None or dtype == torch.float32 or not enabled:
        return nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def _policy_outside_trace(requested: str | None) -> tuple[str, str]:
    """The selected device's autocast dtype (short name, '' for none) and device type for the
    HAL_PRECISION value ``requested``: run for real by Dynamo at trace time, a graph constant."""
    with _outside_trace():
        pol = policy(requested=requested)
    return (_short(pol.autocast_dtype) if pol.autocast_dtype is not None else "", pol.device_type)


# What torch.compiler.assume_constant_result sets; written here so hal need not import torch.
_policy_outside_trace._dynamo_marked_constant = True  # type: ignore[attr-defined]


def grad_scaler(device: Any = None, **kwargs: Any) -> torch.amp.GradScaler:
    """``torch.amp.GradScaler`` for the selected device type, enabled only for an fp16 policy."""
    import torch

    pol = policy(device)
    kwargs.setdefault("enabled", pol.needs_scaler)
    return torch.amp.GradScaler(device=pol.device_type, **kwargs)


@contextmanager
def _forget_measurements() -> Iterator[None]:
    """Tests: measure the host again inside the block."""
    saved = dict(_measured)
    _measured.clear()
    _policies.clear()
    try:
        yield
    finally:
        _measured.clear()
        _measured.update(saved)
        _policies.clear()
