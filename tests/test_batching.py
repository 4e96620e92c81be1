"""hal.batching: find_batch_size and AdaptiveBatcher, with property tests over OOM patterns."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hal import batching
from hal.batching import AdaptiveBatcher, find_batch_size, find_executable_batch_size
from hal.errors import BatchSizeError, ConfigError, HalError

# Each OOM costs a full gc.collect() (tens of ms with torch loaded): keep examples few.
PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.fixture(autouse=True)
def _no_cache() -> None:
    batching.clear_cache()


def capacity_fn(capacity: int, calls: list[int]) -> Callable[[int], int]:
    def fn(batch_size: int) -> int:
        calls.append(batch_size)
        if batch_size > capacity:
            raise oom()
        return batch_size
    return fn


def test_start_that_fits_is_returned_after_one_call() -> None:
    calls: list[int] = []
    assert find_batch_size(capacity_fn(100, calls), start=64) == 64
    assert calls == [64]


def test_backs_off_then_binary_searches_within_the_margin() -> None:
    calls: list[int] = []
    size = find_batch_size(capacity_fn(300, calls), start=1024, margin=0.01)
    assert 296 <= size <= 300
    assert calls[:3] == [1024, 512, 256]
    assert len(calls) <= 12


def test_result_is_cached_per_function_and_device() -> None:
    calls: list[int] = []
    fn = capacity_fn(50, calls)
    first = find_batch_size(fn, start=64)
    n = len(calls)
    assert find_batch_size(fn, start=64) == first and len(calls) == n
    other: list[int] = []
    assert find_batch_size(capacity_fn(10, other), start=64) <= 10 and other
    assert find_batch_size(fn, start=64, cache=False) == first and len(calls) > n


def test_a_real_cpu_allocator_failure_is_survived() -> None:
    def fn(batch_size: int) -> None:
        # beyond 2**20 rows the allocation asks for petabytes and the allocator refuses
        torch.empty(batch_size, 1 << 32 if batch_size > (1 << 20) else 1, dtype=torch.uint8)

    assert find_batch_size(fn, start=1 << 22, margin=0.5) <= 1 << 20


@pytest.mark.parametrize("kwargs", [{"start": 0}, {"start": -4}, {"start": True},
                                    {"start": 2.5}, {"min": 0}, {"min": -1},
                                    {"start": 4, "min": 8}, {"margin": 0.9}, {"margin": -0.1}])
def test_bad_arguments_are_config_errors(kwargs: dict[str, object]) -> None:
    calls: list[int] = []
    with pytest.raises(ConfigError) as info:
        find_batch_size(capacity_fn(10, calls), **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert calls == []


def test_a_non_oom_error_propagates_at_once_unchanged() -> None:
    calls: list[int] = []
    error = ValueError("CUDA out of memory, says user code")

    def fn(batch_size: int) -> None:
        calls.append(batch_size)
        raise error

    with pytest.raises(ValueError) as info:
        find_batch_size(fn, start=64)
    assert info.value is error and calls == [64]


def test_even_min_running_out_is_a_batch_size_error() -> None:
    calls: list[int] = []
    with pytest.raises(BatchSizeError, match="min=4"):
        find_batch_size(capacity_fn(2, calls), start=16, min=4)
    assert calls == [16, 8, 4]


@PROPERTY
@given(capacity=st.integers(0, 600), start=st.integers(1, 1000),
       margin=st.sampled_from([0.0, 0.05, 0.2]))
def test_find_batch_size_property(capacity: int, start: int, margin: float) -> None:
    batching.clear_cache()
    calls: list[int] = []
    fn = capacity_fn(capacity, calls)
    if capacity == 0:
        with pytest.raises(BatchSizeError):
            find_batch_size(fn, start=start, margin=margin)
        return
    size = find_batch_size(fn, start=start, margin=margin)
    assert 1 <= size <= min(capacity, start)
    if start <= capacity:
        assert size == start
    else:
        assert capacity - size <= max(1, int((2 * capacity + 2) * margin))
    assert len(calls) <= 2 * start.bit_length() + 2


# ---- AdaptiveBatcher --------------------------------------------------------------------

def square_batches(fails: Callable[[Sequence[int]], bool], log: list[int] | None = None
                   ) -> Callable[[list[int]], list[int]]:
    def fn(batch: list[int]) -> list[int]:
        if log is not None:
            log.append(len(batch))
        if fails(batch):
            raise oom()
        return [x * x for x in batch]
    return fn


def test_outputs_in_order_and_growth_when_memory_is_low() -> None:
    log: list[int] = []
    b = AdaptiveBatcher(square_batches(lambda _: False, log), start=2, max=16,
                        memory_fraction=lambda: 0.1, tune=False)
    assert list(b(range(100))) == [x * x for x in range(100)]
    assert log[:4] == [2, 4, 8, 16] and max(log) == 16


def test_halves_when_memory_is_high_and_holds_in_between() -> None:
    log: list[int] = []
    b = AdaptiveBatcher(square_batches(lambda _: False, log), start=16,
                        memory_fraction=lambda: 0.95, tune=False)
    list(b(range(40)))
    assert log[:4] == [16, 8, 4, 2]
    log.clear()
    b = AdaptiveBatcher(square_batches(lambda _: False, log), start=8,
                        memory_fraction=lambda: 0.5, tune=False)
    list(b(range(40)))
    assert set(log) == {8}


def test_an_oom_batch_is_split_and_the_size_settles_below_the_ceiling() -> None:
    log: list[int] = []
    b = AdaptiveBatcher(square_batches(lambda batch: len(batch) > 20, log), start=64,
                        memory_fraction=lambda: 0.0, tune=False)
    assert list(b(range(500))) == [x * x for x in range(500)]
    assert b.ceiling is not None and b.ceiling > 20
    assert 16 <= b.size <= 20
    assert b.ooms <= 6


def test_a_single_item_that_runs_out_is_a_batch_size_error() -> None:
    b = AdaptiveBatcher(square_batches(lambda batch: 7 in batch), start=4,
                        memory_fraction=lambda: 0.0)
    out = []
    with pytest.raises(BatchSizeError, match="1 item"):
        for y in b(range(10)):
            out.append(y)
    assert out == [x * x for x in range(7)]


def test_a_non_oom_error_in_a_batch_propagates_at_once() -> None:
    log: list[int] = []
    error = KeyError("boom")

    def fn(batch: list[int]) -> list[int]:
        log.append(len(batch))
        raise error

    with pytest.raises(KeyError) as info:
        list(AdaptiveBatcher(fn, start=8, memory_fraction=lambda: 0.0)(range(20)))
    assert info.value is error and log == [8]


def test_wrong_output_count_is_an_error() -> None:
    with pytest.raises(HalError, match="one output per input"):
        b: AdaptiveBatcher[int, int] = AdaptiveBatcher(lambda batch: batch[:1], start=4,
                                                       memory_fraction=lambda: 0.5)
        list(b(range(8)))


@pytest.mark.parametrize("kwargs", [{"min": 0}, {"max": -1}, {"start": 0},
                                    {"start": 10, "max": 8}, {"start": 2, "min": 4},
                                    {"high": 1.5}, {"low": -0.1}, {"low": 0.9, "high": 0.5},
                                    {"min": True}, {"tune": 1}, {"probe_every": 0}])
def test_bad_bounds_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AdaptiveBatcher(lambda batch: batch, **kwargs)  # type: ignore[arg-type]


def test_default_memory_probe_reads_the_selected_backend() -> None:
    b: AdaptiveBatcher[int, int] = AdaptiveBatcher(lambda batch: [x + 1 for x in batch], start=4)
    assert list(b(range(10))) == list(range(1, 11))
    assert 1 <= b.size <= 4096


@PROPERTY
@given(
    items=st.lists(st.integers(-1000, 1000), max_size=120),
    pattern=st.lists(st.booleans(), min_size=1, max_size=50),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
    start=st.integers(1, 64),
    bounds=st.tuples(st.integers(1, 4), st.integers(64, 256)),
    single_ok=st.booleans(),
    tune=st.booleans(),
)
def test_nothing_lost_nothing_duplicated_order_kept(
        items: list[int], pattern: list[bool], fractions: list[float], start: int,
        bounds: tuple[int, int], single_ok: bool, tune: bool) -> None:
    """Arbitrary OOMs on arbitrary calls: every output once, in order, or a clean error."""
    calls = [0]
    low, high = bounds

    def fails(batch: Sequence[int]) -> bool:
        calls[0] += 1
        if single_ok and len(batch) <= low:
            return False
        return pattern[calls[0] % len(pattern)]

    step = [0]

    def fraction() -> float:
        step[0] += 1
        return fractions[step[0] % len(fractions)]

    ticks = [0.0]

    def clock() -> float:  # a deterministic clock: every reading is one more second
        ticks[0] += 1.0
        return ticks[0]

    b = AdaptiveBatcher(square_batches(fails), start=max(low, start), min=low, max=high,
                        memory_fraction=fraction, tune=tune, clock=clock)
    out: list[int] = []
    try:
        for y in b(items):
            out.append(y)
    except BatchSizeError:
        assert not single_ok
        assert out == [x * x for x in items[:len(out)]] and len(out) < len(items)
        return
    assert out == [x * x for x in items]
    assert low <= b.size <= high


# ---- throughput tuning (a simulated cost per batch: deterministic) ------------------------

class CostModel:
    """A clock that advances by ``cost(batch size)`` whenever the batch function runs."""

    def __init__(self, cost: Callable[[int], float]) -> None:
        self.cost = cost
        self.now = 0.0
        self.sizes: list[int] = []

    def clock(self) -> float:
        return self.now

    def fn(self, batch: list[int]) -> list[int]:
        self.sizes.append(len(batch))
        self.now += self.cost(len(batch))
        return [x * x for x in batch]


def peak_at(best: int) -> Callable[[int], float]:
    """Seconds per batch: a fixed cost amortised up to ``best`` rows, slower per row beyond."""
    return lambda n: 1.0 + 0.01 * n if n <= best else 1.0 + 0.01 * best + 0.05 * (n - best)


def test_growth_stops_where_a_larger_batch_is_not_faster() -> None:
    model = CostModel(peak_at(128))
    b = AdaptiveBatcher(model.fn, start=8, max=4096, memory_fraction=lambda: 0.0,
                        clock=model.clock)
    assert list(b(range(5000))) == [x * x for x in range(5000)]
    assert model.sizes[:11] == [8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256]  # two per probe
    assert b.size == 128 and max(model.sizes) == 256
    assert b.rates[128] > b.rates[256]


def test_a_start_above_the_best_size_moves_down() -> None:
    model = CostModel(peak_at(64))
    b = AdaptiveBatcher(model.fn, start=512, max=4096, memory_fraction=lambda: 0.0,
                        clock=model.clock)
    list(b(range(10000)))
    assert b.size == 64


def test_re_probing_follows_inputs_that_change() -> None:
    model = CostModel(peak_at(32))
    b = AdaptiveBatcher(model.fn, start=8, max=4096, memory_fraction=lambda: 0.0,
                        clock=model.clock, probe_every=4)
    list(b(range(2000)))
    assert b.size == 32
    model.cost = peak_at(256)  # the stream's items became cheaper to batch
    list(b(range(20000)))
    assert b.size == 256


def test_the_memory_guard_wins_over_speed() -> None:
    model = CostModel(peak_at(1 << 20))  # larger is always faster
    b = AdaptiveBatcher(model.fn, start=64, memory_fraction=lambda: 0.95, clock=model.clock)
    list(b(range(200)))
    assert model.sizes[:3] == [64, 32, 16]
    model.sizes.clear()
    b = AdaptiveBatcher(model.fn, start=8, memory_fraction=lambda: 0.5, clock=model.clock)
    list(b(range(200)))
    assert max(model.sizes) == 8  # between low and high: never grows, however fast


def test_an_oom_ceiling_holds_while_tuning() -> None:
    model = CostModel(peak_at(1 << 20))

    def fn(batch: list[int]) -> list[int]:
        if len(batch) > 100:
            raise oom()
        return model.fn(batch)

    b = AdaptiveBatcher(fn, start=8, memory_fraction=lambda: 0.0, clock=model.clock)
    assert list(b(range(3000))) == [x * x for x in range(3000)]
    assert b.ceiling == 128 and b.size == 64 and max(model.sizes) <= 100


# ---- find_executable_batch_size --------------------------------------------------------

def test_the_decorator_returns_the_result_of_the_first_size_that_fits() -> None:
    calls: list[tuple[int, str]] = []

    @batching.find_executable_batch_size(start=64)
    def work(batch_size: int, tag: str) -> str:
        calls.append((batch_size, tag))
        if batch_size > 20:
            raise oom()
        return f"{tag}:{batch_size}"

    assert work("a") == "a:16"
    assert calls == [(64, "a"), (32, "a"), (16, "a")]
    assert work.batch_size == 16 and vars(work)["__name__"] == "work"
    calls.clear()
    assert work(tag="b") == "b:16" and calls == [(16, "b")]  # starts where it last worked


def test_the_bare_decorator_and_its_errors() -> None:
    @batching.find_executable_batch_size
    def always(batch_size: int) -> int:
        raise oom()

    with pytest.raises(BatchSizeError, match="batch size 1"):
        always()
    error = KeyError("not memory")

    @batching.find_executable_batch_size(start=8)
    def broken(batch_size: int) -> int:
        raise error

    with pytest.raises(KeyError) as info:
        broken()
    assert info.value is error
    for kwargs in ({"start": 0}, {"min": 4, "start": 2}, {"start": 2.5}):
        with pytest.raises(ConfigError):
            batching.find_executable_batch_size(**kwargs)  # type: ignore[call-overload]


def test_short_streams_still_learn_a_probe_ending_with_the_stream_is_decided() -> None:
    model = CostModel(peak_at(1 << 20))  # larger is always faster
    b = AdaptiveBatcher(model.fn, start=4, max=16, memory_fraction=lambda: 0.0,
                        clock=model.clock)
    for _ in range(6):  # 24 items: a probe's two batches rarely fit in one stream
        assert list(b(range(24))) == [x * x for x in range(24)]
    assert b.size == 16


def _gen(batch_size: int) -> Iterator[int]:
    yield batch_size


async def _coro(batch_size: int) -> int:
    return batch_size


async def _agen(batch_size: int) -> AsyncIterator[int]:
    yield batch_size


class _GenCall:
    def __call__(self, batch_size: int) -> Iterator[int]:
        yield batch_size


@pytest.mark.parametrize(("fn", "kind"), [
    (_gen, "generator"), (_coro, "coroutine"), (_agen, "async generator"),
    (functools.partial(_gen), "generator"), (_GenCall(), "generator")])
def test_a_generator_function_is_refused_at_decoration(fn: Any, kind: str) -> None:
    # Issue 20: the decorator returned the generator, so the OOM escaped at the first step
    # with one size tried.
    with pytest.raises(ConfigError, match=f"it is a {kind} function.*return its results") as info:
        find_executable_batch_size(fn)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=f"a {kind} function"):
        find_executable_batch_size(start=8)(fn)


def test_a_function_returning_a_generator_is_refused_when_called() -> None:
    wrapped = find_executable_batch_size(lambda n: (i for i in range(n)), start=4)
    with pytest.raises(ConfigError, match="generator function"):
        wrapped()
