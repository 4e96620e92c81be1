"""Batching under faults (issue 13, finding 7): interrupts never retried, no stale cache hits,
finished outputs never dropped, and a stream that fails can be resumed."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator

import pytest
import torch
from helpers import BackendsPlugin, UnavailableBackend

import hal
from hal import batching
from hal.batching import AdaptiveBatcher, find_batch_size, find_executable_batch_size
from hal.errors import BatchSizeError
from hal.plugins import registered


@pytest.fixture(autouse=True)
def _no_cache() -> None:
    batching.clear_cache()


class _Greedy(UnavailableBackend):
    """A plugin backend whose is_oom says True for every exception, interrupts included."""

    name = "greedyoom"

    def is_oom(self, exc: BaseException) -> bool:
        return True


@pytest.fixture
def greedy_plugin() -> Iterator[None]:
    with registered(BackendsPlugin(_Greedy()), "test-greedy-oom"):
        assert hal.is_oom(KeyboardInterrupt())  # the plugin really claims it
        yield


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_a_base_exception_is_never_retried_whatever_is_oom_says(
        greedy_plugin: None, interrupt: type[BaseException]) -> None:
    calls: list[int] = []

    def fn(batch_size: int) -> int:
        calls.append(batch_size)
        raise interrupt()

    with pytest.raises(interrupt):
        find_batch_size(fn, start=64)
    assert calls == [64]

    calls.clear()
    with pytest.raises(interrupt):
        find_executable_batch_size(fn, start=64)()
    assert calls == [64]

    seen: list[int] = []

    def batch_fn(batch: list[int]) -> list[int]:
        seen.append(len(batch))
        raise interrupt()

    with pytest.raises(interrupt):
        list(AdaptiveBatcher(batch_fn, start=8, memory_fraction=lambda: 0.0)(range(20)))
    assert seen == [8]


def test_an_ordinary_exception_the_plugin_claims_is_still_retried(greedy_plugin: None) -> None:
    calls: list[int] = []

    def fn(batch_size: int) -> int:
        calls.append(batch_size)
        if batch_size > 10:
            raise RuntimeError("the plugin calls this an OOM")
        return batch_size

    assert find_batch_size(fn, start=16, margin=0.5) <= 10 and calls[0] == 16


class _Model:
    """A bound method's owner: its cached size must die with it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.calls = 0

    def step(self, batch_size: int) -> None:
        self.calls += 1
        if batch_size > self.capacity:
            raise torch.OutOfMemoryError("out of memory")


def test_the_cache_never_answers_for_a_dead_instance_whose_id_is_reused() -> None:
    first = _Model(64)
    assert find_batch_size(first.step, start=64) == 64
    assert find_batch_size(first.step, start=64) == 64 and first.calls == 1  # a real hit
    dead_id = id(first)
    del first
    gc.collect()
    # Allocate until an instance reuses the dead one's id (CPython reuses freed slots at once).
    reused = None
    keep = []
    for _ in range(10000):
        m = _Model(8)
        if id(m) == dead_id:
            reused = m
            break
        keep.append(m)
    if reused is None:
        pytest.skip("the interpreter did not reuse the id; nothing to check")
    assert find_batch_size(reused.step, start=64, margin=0.0) == 8
    assert reused.calls > 1  # it was called, not answered from the dead instance's entry


def test_the_cache_is_held_weakly_and_keyed_by_the_function_object() -> None:
    def make(capacity: int):  # type: ignore[no-untyped-def]
        def fn(batch_size: int) -> None:
            if batch_size > capacity:
                raise torch.OutOfMemoryError("out of memory")
        return fn

    fn = make(10)
    assert find_batch_size(fn, start=16, margin=0.0) == 10
    holder_count = len(batching._cache._entries)
    del fn
    gc.collect()
    assert len(batching._cache._entries) == holder_count - 1  # gone with the function
    other = make(3)
    assert find_batch_size(other, start=16, margin=0.0) == 3


def test_a_failing_memory_probe_never_drops_finished_outputs() -> None:
    reads = [0]

    def probe() -> float:
        reads[0] += 1
        if reads[0] == 2:
            raise OSError("cannot read memory counters")
        return 0.0

    b: AdaptiveBatcher[int, int] = AdaptiveBatcher(
        lambda batch: [x * 10 for x in batch], start=4, max=4, memory_fraction=probe, tune=False)
    out: list[int] = []
    with pytest.raises(OSError, match="memory counters"):
        for y in b(range(20)):
            out.append(y)
    assert out == [x * 10 for x in range(8)]  # the second batch finished: its outputs came out
    assert b.pending == []  # nothing was pulled beyond it


def test_a_non_oom_error_leaves_the_pulled_items_in_pending_and_the_stream_resumes() -> None:
    fail = {"on": True}

    def fn(batch: list[int]) -> list[int]:
        if fail["on"] and 13 in batch:
            raise ValueError("a bad item")
        return [x + 1 for x in batch]

    source = iter(range(40))
    b = AdaptiveBatcher(fn, start=4, max=4, memory_fraction=lambda: 0.5, tune=False)
    out: list[int] = []
    with pytest.raises(ValueError, match="bad item"):
        for y in b(source):
            out.append(y)
    assert out == [x + 1 for x in range(12)]
    assert b.pending == [12, 13, 14, 15]  # pulled from the source, no output yet
    fail["on"] = False
    out.extend(b(itertools.chain(b.pending, source)))
    assert out == [x + 1 for x in range(40)]  # nothing lost, nothing twice


def test_a_batch_size_error_also_leaves_pending_for_a_resume() -> None:
    def fn(batch: list[int]) -> list[int]:
        if 5 in batch:
            raise torch.OutOfMemoryError("out of memory")
        return batch

    b = AdaptiveBatcher(fn, start=4, max=4, memory_fraction=lambda: 0.0, tune=False)
    out: list[int] = []
    with pytest.raises(BatchSizeError):
        out.extend(b(range(10)))
    assert out == [0, 1, 2, 3, 4]
    assert b.pending[0] == 5 and b.pending == list(range(5, 5 + len(b.pending)))
