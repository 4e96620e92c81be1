"""Out-of-memory resilient batching on every backend: find_batch_size and AdaptiveBatcher.

Both catch only what ``hal.is_oom`` calls an out-of-memory error; any other exception
propagates at once, unchanged, with no retry.  Memory is freed *after* the ``except`` block:
the exception's traceback holds the frames that hold the batch's tensors.
"""

from __future__ import annotations

import builtins
import gc
import itertools
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from hal.errors import BatchSizeError, ConfigError, HalError
from hal.oom import is_oom

T = TypeVar("T")
R = TypeVar("R")


def _check_int(name: str, value: Any, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{name}={value!r} is not valid; expected an integer >= {least}")
    return value


def _check_fraction(name: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            low <= value <= high):
        raise ConfigError(f"{name}={value!r} is not valid; expected a number in [{low}, {high}]")
    return float(value)


def free_memory(device: Any = None) -> None:
    """Drop garbage and return cached device memory; call it outside an ``except`` block."""
    from hal.memory import resolve

    backend, index = resolve(device)
    gc.collect()
    try:
        backend.synchronize(index)
    finally:
        backend.empty_cache()


def _attempt(fn: Callable[[Any], Any], arg: Any) -> tuple[bool, Any, str]:
    """Run ``fn(arg)``: (True, result, "") or, on OOM only, (False, None, its first line)."""
    message = ""
    try:
        return True, fn(arg), ""
    except BaseException as exc:
        if not is_oom(exc):
            raise
        message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    # Here the exception and its frames are gone; only now can their memory be freed.
    free_memory()
    return False, None, message


def _agree_failed(failed: bool) -> bool:
    """In an initialised process group, True if any rank failed (all-reduce MAX of the flag)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return failed
    if not (dist.is_available() and dist.is_initialized()):
        return failed
    import torch

    from hal.selection import get_device

    device = torch.device("cpu") if dist.get_backend() == "gloo" else get_device()
    flag = torch.tensor([1 if failed else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# function -> {(bound instance id, device): size}; weak, so a cached closure's tensors can die.
_cache: weakref.WeakKeyDictionary[Any, dict[tuple[int | None, str], int]] = (
    weakref.WeakKeyDictionary())


def _cache_slot(fn: Callable[..., Any], device: str) -> tuple[Any, tuple[int | None, str]] | None:
    """Where ``fn``'s result lives: the function object (a method's function) and a key."""
    owner = getattr(fn, "__self__", None)
    target = getattr(fn, "__func__", fn) if owner is not None else fn
    try:
        weakref.ref(target)
    except TypeError:
        return None  # not weakly referenceable: not cached
    return target, (id(owner) if owner is not None else None, device)


def clear_cache() -> None:
    """Forget every batch size ``find_batch_size`` found."""
    _cache.clear()


def find_batch_size(fn: Callable[[int], Any], start: int = 1024, min: int = 1, *,
                    margin: float = 0.05, cache: bool = True) -> int:
    """The largest batch size up to ``start`` for which ``fn(batch_size)`` does not run out.

    Tries ``start``; on OOM frees memory, halves until a size works, then binary-searches
    between the last size that worked and the first that failed until they are within
    ``margin`` (a fraction of the failing size, at least 1).  The result is cached per
    (function, device).  In an initialised torch.distributed group every rank must call it
    with the same arguments: the failure flag is all-reduced so all ranks agree.
    """
    from hal.selection import select

    start = _check_int("start", start)
    low_bound = _check_int("min", min)
    if low_bound > start:
        raise ConfigError(f"min={low_bound} is larger than start={start}; expected min <= start")
    margin = _check_fraction("margin", margin, 0.0, 0.5)
    slot = _cache_slot(fn, select().device_string) if cache else None
    if slot is not None and slot[1] in _cache.get(slot[0], {}):
        return _cache[slot[0]][slot[1]]
    good = 0
    bad: int | None = None
    size = start
    last_error = ""
    while True:
        ok, _, message = _attempt(fn, size)
        ok = not _agree_failed(not ok)
        if ok:
            good = size
        else:
            last_error = message or "another rank ran out of memory"
            bad = size
            if size <= low_bound:
                raise BatchSizeError(
                    f"batch size {size} (min={low_bound}) still runs out of memory on "
                    f"{select().device_string}: {last_error}")
        if bad is None:
            break
        if good == 0:
            size = max(low_bound, size // 2)
            continue
        if bad - good <= max(1, int(bad * margin)):
            break
        size = (good + bad) // 2
    if slot is not None:
        _cache.setdefault(slot[0], {})[slot[1]] = good
    return good


class AdaptiveBatcher(Generic[T, R]):
    """Runs ``fn(list_of_items) -> outputs`` over a stream, adapting the batch size to memory.

    A batch that runs out of memory is split in half and retried (the failing size becomes a
    ceiling the batch never grows to again, until ``reset()``); after each batch the size
    halves when memory use is above ``high`` and doubles (up to ``max``, staying below the
    ceiling) when it is below ``low``.  Every output is yielded exactly once, in input order.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, start: int = 8, min: int = 1,
                 max: int = 4096, high: float = 0.9, low: float = 0.3,
                 memory_fraction: Callable[[], float] | None = None) -> None:
        self.fn = fn
        self.min = _check_int("min", min)
        self.max = _check_int("max", max)
        start = _check_int("start", start)
        if not self.min <= start <= self.max:
            raise ConfigError(f"start={start} must lie within min={self.min} and max={self.max}")
        self.high = _check_fraction("high", high)
        self.low = _check_fraction("low", low)
        if self.low >= self.high:
            raise ConfigError(f"low={low} must be below high={high}")
        self.size = start
        self.ceiling: int | None = None
        self.memory_fraction = memory_fraction or _device_fraction
        self.batches = 0
        self.ooms = 0

    def _grow(self) -> None:
        # Doubling only, never to a size that ran out: creeping up to the exact limit would
        # trade a few percent of batch size for repeated OOMs near the edge.
        target = builtins.min(self.max, self.size * 2)
        if self.ceiling is None or target < self.ceiling:
            self.size = target

    def __call__(self, items: Iterable[T]) -> Iterator[R]:
        return self.map(items)

    def map(self, items: Iterable[T]) -> Iterator[R]:
        """Yield ``fn``'s output for every item, in order, batching as memory allows."""
        source = iter(items)
        pending: deque[T] = deque()
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.size:
                try:
                    pending.append(next(source))
                except StopIteration:
                    exhausted = True
            if not pending:
                return
            n = builtins.min(self.size, len(pending))
            batch = list(itertools.islice(pending, n))  # indexing a deque walks it
            ok, outputs, message = _attempt(self.fn, batch)
            if not ok:
                self.ooms += 1
                if n <= self.min:
                    raise BatchSizeError(
                        f"a batch of {n} item(s) (min={self.min}) still runs out of memory: "
                        f"{message}")
                self.ceiling = n if self.ceiling is None else builtins.min(self.ceiling, n)
                self.size = builtins.max(self.min, n // 2)
                continue
            outputs = list(outputs)
            if len(outputs) != n:
                raise HalError(f"the batch function returned {len(outputs)} outputs for "
                               f"{n} inputs; it must return one output per input")
            for _ in range(n):
                pending.popleft()
            self.batches += 1
            used = self.memory_fraction()
            if used > self.high:
                self.size = builtins.max(self.min, self.size // 2)
            elif used < self.low:
                self._grow()
            yield from outputs

    def reset(self, start: int | None = None) -> None:
        """Forget the ceiling learnt from out-of-memory errors (and optionally restart)."""
        self.ceiling = None
        if start is not None:
            self.size = _check_int("start", start)



def _device_fraction() -> float:
    """Memory use of the selected device: the larger of its used fraction and peak/total."""
    from hal.memory import resolve

    backend, index = resolve()
    info = backend.memory(index)
    peak = info.peak / info.total if info.total > 0 else 0.0
    backend.reset_peak_memory(index)
    return builtins.max(info.used_fraction, builtins.min(1.0, peak))
