"""Out-of-memory resilient batching on every backend: find_batch_size, find_executable_batch_size
and AdaptiveBatcher.

All three retry only what ``hal.is_oom`` calls an out-of-memory error, and only among
``Exception``s: a ``KeyboardInterrupt``/``SystemExit`` is never retried, whatever a plugin's
``is_oom`` says.  Any other exception propagates at once, unchanged.  Memory is freed *after* the
``except`` block: the exception's traceback holds the frames that hold the batch's tensors.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import gc
import itertools
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from hal.errors import BatchSizeError, ConfigError, HalError, describe_exception
from hal.oom import is_oom
from hal.parse import check_int

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


#: Largest batch size (and probe interval) hal accepts: far beyond any device's memory.
MAX_BATCH = 2**40


def _check_fraction(name: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            low <= value <= high):
        raise ConfigError(f"{name}={value!r} is not valid; expected a number in [{low}, {high}]")
    return float(value)


def free_memory(device: Any = None) -> None:
    """Drop garbage and return cached device memory; call it outside an ``except`` block."""
    from hal.memory import resolve_device

    backend, index = resolve_device(device)
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
    except Exception as exc:  # a BaseException (Ctrl-C, exit) is never an OOM to retry
        if not is_oom(exc):
            raise
        message = describe_exception(exc)
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


class _IdentityCache:
    """Values keyed by an object's identity, held weakly: an entry goes when its object dies,
    so a new object that reuses a dead one's ``id()`` never sees the old value."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Any], dict[Any, int]]] = {}

    def get(self, obj: Any) -> dict[Any, int] | None:
        entry = self._entries.get(id(obj))
        return entry[1] if entry is not None and entry[0]() is obj else None

    def setdefault(self, obj: Any) -> dict[Any, int]:
        found = self.get(obj)
        if found is not None:
            return found
        key = id(obj)
        entries = self._entries

        def drop(ref: weakref.ref[Any]) -> None:
            if key in entries and entries[key][0] is ref:
                del entries[key]

        value: dict[Any, int] = {}
        entries[key] = (weakref.ref(obj, drop), value)
        return value

    def clear(self) -> None:
        self._entries.clear()


# owner (the bound instance, or the function itself) -> {(function, device): size}
_cache = _IdentityCache()


def _cache_slot(fn: Callable[..., Any], device: str) -> tuple[Any, tuple[Any, str]] | None:
    """Where ``fn``'s result lives: the object held weakly (a method's instance, else the
    function) and the key within it; None when that object cannot be referenced weakly."""
    owner = getattr(fn, "__self__", None)
    target = getattr(fn, "__func__", fn) if owner is not None else fn
    holder = owner if owner is not None else fn
    try:
        weakref.ref(holder)
    except TypeError:
        return None  # not weakly referenceable: not cached
    return holder, (target if owner is not None else None, device)


def clear_cache() -> None:
    """Forget every batch size ``find_batch_size`` found."""
    _cache.clear()


def _first_fit(fn: Callable[[int], Any], start: int, low_bound: int
               ) -> tuple[int, Any, int | None, str]:
    """Call ``fn`` at ``start``, halving on OOM (agreed across ranks) until a size works:
    (that size, its result, the smallest size that failed or None, the last OOM's line)."""
    from hal.selection import select

    size, bad, last_error = start, None, ""
    while True:
        ok, result, message = _attempt(fn, size)
        if not _agree_failed(not ok):
            return size, result, bad, last_error
        del result
        last_error = message or "another rank ran out of memory"
        bad = size
        if size <= low_bound:
            raise BatchSizeError(
                f"batch size {size} (min={low_bound}) still runs out of memory on "
                f"{select().device_string}: {last_error}")
        size = builtins.max(low_bound, size // 2)


def find_batch_size(fn: Callable[[int], Any], start: int = 1024, min: int = 1, *,
                    margin: float = 0.05, cache: bool = True) -> int:
    """The largest batch size up to ``start`` for which ``fn(batch_size)`` does not run out.

    Tries ``start``; on OOM frees memory, halves until a size works, then binary-searches
    between the last size that worked and the first that failed until they are within
    ``margin`` (a fraction of the failing size, at least 1).  The result is cached per
    (function object, bound instance, device), held weakly.  In an initialised
    torch.distributed group every rank must call it with the same arguments: the failure flag
    is all-reduced so all ranks agree.
    """
    from hal.selection import select

    start = check_int("start", start, lo=1, hi=MAX_BATCH)
    low_bound = check_int("min", min, lo=1, hi=MAX_BATCH)
    if low_bound > start:
        raise ConfigError(f"min={low_bound} is larger than start={start}; expected min <= start")
    margin = _check_fraction("margin", margin, 0.0, 0.5)
    slot = _cache_slot(fn, select().device_string) if cache else None
    if slot is not None:
        found = _cache.get(slot[0])
        if found is not None and slot[1] in found:
            return found[slot[1]]
    good, _, bad, _ = _first_fit(fn, start, low_bound)
    while bad is not None and bad - good > builtins.max(1, int(bad * margin)):
        size = (good + bad) // 2
        ok, _, _ = _attempt(fn, size)
        if _agree_failed(not ok):
            bad = size
        else:
            good = size
    if slot is not None:
        _cache.setdefault(slot[0])[slot[1]] = good
    return good


def _lazy_kind(fn: Any) -> str | None:
    """"generator"/"coroutine"/"async generator" when calling ``fn`` only makes an object whose
    body runs later (when iterated or awaited), None for a plain function."""
    import inspect

    for target in (fn, getattr(fn, "__call__", None)):  # noqa: B004 - a callable object's method
        if target is None:
            continue
        if inspect.isasyncgenfunction(target):
            return "async generator"
        if inspect.isgeneratorfunction(target):
            return "generator"
        if inspect.iscoroutinefunction(target):
            return "coroutine"
    return None


def _lazy_result(value: Any) -> str | None:
    """The kind of a generator, coroutine or async generator object (None for anything else)."""
    import inspect

    if inspect.isgenerator(value):
        return "generator"
    if inspect.iscoroutine(value):
        return "coroutine"
    if inspect.isasyncgen(value):
        return "async generator"
    return None


def _lazy_refusal(fn: Any, kind: str) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return (f"find_executable_batch_size cannot retry {name!r}: it is a {kind} function, so its "
            "body (where memory runs out) runs only after the wrapper has returned, and a retry "
            "at a smaller size would repeat what it already yielded; make it return its results "
            "(a list), or stream with hal.AdaptiveBatcher")


class ExecutableBatchSize(Generic[P, R]):
    """``fn(batch_size, *args, **kwargs)`` called as ``wrapper(*args, **kwargs)``: retried at half
    the size on OOM, returning the result of the first size that works (made by
    :func:`find_executable_batch_size`)."""

    def __init__(self, fn: Callable[Concatenate[int, P], R], start: int, min: int) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.min = min
        #: The size the next call starts with: ``start``, then the last size that worked.
        self.batch_size = start

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        def attempt(n: int) -> R:
            out = self.fn(n, *args, **kwargs)
            kind = _lazy_result(out)
            if kind is not None:  # a lambda or partial returning a generator, say
                with contextlib.suppress(Exception):
                    out.close()  # type: ignore[attr-defined]
                raise ConfigError(_lazy_refusal(self.fn, kind))
            return out

        size, result, _, _ = _first_fit(attempt, self.batch_size, self.min)
        self.batch_size = size
        return result  # type: ignore[no-any-return]


@overload
def find_executable_batch_size(fn: Callable[Concatenate[int, P], R], *, start: int = 128,
                               min: int = 1) -> ExecutableBatchSize[P, R]: ...


@overload
def find_executable_batch_size(fn: None = None, *, start: int = 128, min: int = 1
                               ) -> Callable[[Callable[Concatenate[int, P], R]],
                                             ExecutableBatchSize[P, R]]: ...


def find_executable_batch_size(fn: Callable[Concatenate[int, P], R] | None = None, *,
                               start: int = 128, min: int = 1) -> Any:
    """Decorator (Accelerate's ``find_executable_batch_size``, on every backend): the wrapped
    ``fn(batch_size, ...)`` is called as ``fn(...)`` and returns its result.

    The first call tries ``start``; on an OOM memory is freed and the call is retried at half
    the size, down to ``min`` (then ``BatchSizeError``).  Later calls start at the last size
    that worked (``wrapper.batch_size``).  In an initialised torch.distributed group each
    attempt's failure is all-reduced, so every rank retries together and returns from the same
    size; every rank must call it.  ``@find_executable_batch_size`` or
    ``@find_executable_batch_size(start=64)``.
    """
    start = check_int("start", start, lo=1, hi=MAX_BATCH)
    low_bound = check_int("min", min, lo=1, hi=MAX_BATCH)
    if low_bound > start:
        raise ConfigError(f"min={low_bound} is larger than start={start}; expected min <= start")

    def wrap(f: Callable[Concatenate[int, P], R]) -> ExecutableBatchSize[P, R]:
        if not callable(f):
            raise ConfigError(f"find_executable_batch_size wraps a function, not {f!r}")
        lazy = _lazy_kind(f)
        if lazy is not None:
            raise ConfigError(_lazy_refusal(f, lazy))
        return ExecutableBatchSize(f, start, low_bound)

    return wrap if fn is None else wrap(fn)


class AdaptiveBatcher(Generic[T, R]):
    """Runs ``fn(list_of_items) -> outputs`` over a stream, adapting the batch size to memory
    and to throughput.

    Memory: a batch that runs out of memory is split in half and retried (the failing size
    becomes a ceiling the batch never grows to again, until ``reset()``); after each batch the
    size halves when memory use is above ``high``.  Throughput (``tune=True``): items/s is
    measured per size; the size doubles (up to ``max``, below the ceiling, only while memory
    use is below ``low``) only while the larger batch is faster, moves down when a smaller one
    is, and every ``probe_every`` batches tries a neighbour again, as inputs change.
    Every output is yielded exactly once, in input order.
    """

    #: Batches run at a probed size before it is compared (the better of them counts).
    PROBE_BATCHES = 2
    #: Recent batches per size whose best rate is that size's rate.
    SAMPLES = 4

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, start: int = 8, min: int = 1,
                 max: int = 4096, high: float = 0.9, low: float = 0.3,
                 memory_fraction: Callable[[], float] | None = None, tune: bool = True,
                 probe_every: int = 32, clock: Callable[[], float] | None = None) -> None:
        self.fn = fn
        self.min = check_int("min", min, lo=1, hi=MAX_BATCH)
        self.max = check_int("max", max, lo=1, hi=MAX_BATCH)
        start = check_int("start", start, lo=1, hi=MAX_BATCH)
        if not self.min <= start <= self.max:
            raise ConfigError(f"start={start} must lie within min={self.min} and max={self.max}")
        self.high = _check_fraction("high", high)
        self.low = _check_fraction("low", low)
        if self.low >= self.high:
            raise ConfigError(f"low={low} must be below high={high}")
        if not isinstance(tune, bool):
            raise ConfigError(f"tune={tune!r} is not valid; expected True or False")
        self.tune = tune
        self.probe_every = check_int("probe_every", probe_every, lo=1, hi=MAX_BATCH)
        self.size = start
        self.ceiling: int | None = None
        self.memory_fraction = memory_fraction or _device_fraction
        self.clock = clock or time.perf_counter
        self.batches = 0
        self.ooms = 0
        #: Items/s per batch size: the best of its latest ``SAMPLES`` batches (noise only slows).
        self.rates: dict[int, float] = {}
        self._samples: dict[int, deque[float]] = {}
        self._probe_from: int | None = None  # the size a probe is compared with
        self._probe_left = 0  # batches still to run at the probe size before deciding
        self._cap: int | None = None  # a size measured slower than a smaller one
        self._floor: int | None = None  # a size measured slower than a larger one
        self._since_probe = 0
        self._reprobe_up = True
        self._used = 0.0  # the latest memory use measured, for a probe decided at a stream's end
        self._pending: deque[T] = deque()
        self._sync: Callable[[], None] | None = None

    @property
    def pending(self) -> list[T]:
        """Items the latest ``map`` pulled from its iterable but yielded no output for, in
        input order: after an error propagates, ``map(itertools.chain(pending, rest))``
        resumes where it stopped."""
        return list(self._pending)

    def _grow(self) -> None:
        # Doubling only, never to a size that ran out: creeping up to the exact limit would
        # trade a few percent of batch size for repeated OOMs near the edge.
        target = builtins.min(self.max, self.size * 2)
        if self.ceiling is None or target < self.ceiling:
            self.size = target

    def _can_grow(self, used: float) -> bool:
        target = self.size * 2
        return (used < self.low and target <= self.max
                and (self.ceiling is None or target < self.ceiling)
                and (self._cap is None or target < self._cap))

    def _can_shrink(self) -> bool:
        target = self.size // 2
        return target >= self.min and (self._floor is None or target > self._floor)

    def _probe(self, size: int) -> None:
        self._probe_from, self.size = self.size, size
        self._probe_left = self.PROBE_BATCHES
        self._samples.pop(size, None)  # measured afresh: the inputs may have changed
        self.rates.pop(size, None)

    def _guard(self, used: float) -> bool:
        """The memory guard, first after every batch: halve above ``high`` (True if it did)."""
        if used > self.high:
            self._probe_from = None
            self.size = builtins.max(self.min, self.size // 2)
            return True
        if not self.tune and used < self.low:
            self._grow()
        return False

    def _tune(self, n: int, seconds: float, used: float) -> None:
        """Choose the next size from a batch's speed: ``n`` items in ``seconds``."""
        if n != self.size:  # a short last batch says nothing about this size
            return
        samples = self._samples.setdefault(n, deque(maxlen=self.SAMPLES))
        samples.append(n / seconds if seconds > 0 else float("inf"))
        self.rates[n] = builtins.max(samples)
        self._used = used
        if self._probe_from is not None:
            self._probe_left -= 1
            if self._probe_left <= 0:
                self._conclude(n, used)
            return
        self._since_probe += 1
        if self._can_grow(used):
            self._probe(n * 2)
        elif self._can_shrink() and (n // 2) not in self.rates:
            self._probe(n // 2)  # first look below, e.g. when ``start`` was too large
        elif self._since_probe >= self.probe_every:  # re-probe a neighbour: inputs change
            self._since_probe = 0
            self._reprobe_up = not self._reprobe_up
            if self._reprobe_up:
                self._cap = None
            else:
                self._floor = None
            self._probe_toward(n, used, up=self._reprobe_up)

    def _probe_toward(self, n: int, used: float, *, up: bool) -> None:
        """Probe twice ``n`` (``up``) or half of it, if the bounds and memory allow that way."""
        if up:
            if self._can_grow(used):
                self._probe(n * 2)
        elif self._can_shrink():
            self._probe(n // 2)

    def _conclude(self, n: int, used: float) -> None:
        """End the probe of size ``n``: stay and go on the same way if it was faster, else
        go back and remember the size as a limit (until a re-probe)."""
        base, self._probe_from = self._probe_from, None
        if base is None:
            return
        if self.rates[n] > self.rates.get(base, 0.0):  # faster: stay, keep going that way
            if n > base:
                self._floor = base
            else:
                self._cap = base
            self._probe_toward(n, used, up=n > base)
            return
        if n > base:
            self._cap = n
        else:
            self._floor = n
        self.size = base

    def _synchronize(self) -> None:
        """Wait for the device, so a batch's time is its work and not its queueing."""
        if self._sync is None:
            from hal.memory import resolve_device

            backend, index = resolve_device()
            self._sync = functools.partial(backend.synchronize, index)
        self._sync()

    def __call__(self, items: Iterable[T]) -> Iterator[R]:
        return self.map(items)

    def map(self, items: Iterable[T]) -> Iterator[R]:
        """Yield ``fn``'s output for every item, in order, batching as memory allows.

        When an error propagates (not an OOM, or a ``BatchSizeError``), the outputs of every
        finished batch have been yielded, and ``pending`` holds the items pulled but not done.
        """
        source = iter(items)
        pending: deque[T] = deque()
        self._pending = pending
        exhausted = False
        # A batch's time runs from its start to the next one's: the memory probe, the consumer
        # and the time the process was not scheduled between batches are counted too.
        measured: tuple[int, float, float] | None = None
        while True:
            if measured is not None:
                self._tune(measured[0], self.clock() - measured[1], measured[2])
                measured = None
            while not exhausted and len(pending) < self.size:
                try:
                    pending.append(next(source))
                except StopIteration:
                    exhausted = True
            if not pending:
                if self._probe_from is not None:  # the stream ended during a probe
                    if self.size in self.rates:  # measured at least once: decide on that
                        self._conclude(self.size, self._used)
                    else:
                        self.size, self._probe_from = self._probe_from, None
                return
            n = builtins.min(self.size, len(pending))
            batch = list(itertools.islice(pending, n))  # indexing a deque walks it
            began = self.clock()
            ok, outputs, message = _attempt(self.fn, batch)
            if not ok:
                self.ooms += 1
                self._probe_from = None
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
            failure: Exception | None = None
            try:
                if self.tune:
                    self._synchronize()
                used = self.memory_fraction()
                if not self._guard(used) and self.tune:
                    measured = (n, began, used)
            except Exception as exc:  # the finished batch's outputs still go out first
                failure = exc
            for _ in range(n):
                pending.popleft()
            self.batches += 1
            yield from outputs
            if failure is not None:
                raise failure

    def reset(self, start: int | None = None) -> None:
        """Forget the ceiling learnt from OOMs and the speeds measured (optionally restart)."""
        self.ceiling = None
        self.rates.clear()
        self._samples.clear()
        self._probe_from = self._cap = self._floor = None
        self._since_probe = 0
        if start is not None:
            self.size = check_int("start", start, lo=1, hi=MAX_BATCH)


def _device_fraction() -> float:
    """Memory use of the selected device: the larger of its used fraction and peak/total."""
    from hal.memory import info as memory_info
    from hal.memory import resolve_device

    backend, index = resolve_device()
    info = memory_info()  # through the plugin boundary, as every memory() read
    peak = info.peak / info.total if info.total > 0 else 0.0
    backend.reset_peak_memory(index)
    return builtins.max(info.used_fraction, builtins.min(1.0, peak))
